"""Data of a run: a task's split -> batches. Images are decoded once into uint8 tensors, or augmented per epoch
through workers; a benchmark that reads its samples itself (`Benchmark.dataset`) gets the same reproducible
per-epoch loader. Every sample's augmentation is a function of (seed, epoch, sample)."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch

from . import distributed
from .benchmark import of as benchmark_of
from .data import DataError, Sample
from .decode import ImageDataset, collate_skip, decode_all_cached, decode_cache_dir
from .engine import EvalSet, Execution, TensorBatches, evaluate
from .errors import ConfigError
from .task import TASKS, ClassificationProtocol, Task
from .weights import resolve_weights

log = logging.getLogger(__name__)

def loader_workers(ex: Execution) -> int:
    """Decode worker processes: `num_workers`, or min(8, cpus) when it is -1."""
    return min(8, os.cpu_count() or 1) if ex.num_workers < 0 else ex.num_workers


def augmented(p: ClassificationProtocol) -> bool:
    return (bool(p.randaugment) or p.mixup > 0 or p.cutmix > 0 or p.random_erasing > 0
            or getattr(p, "augment", "") == "crop_flip")


def posterize_keep_bits(img, bits: int, **_):
    """Posterize keeping `bits` most significant bits, 0 included (a black image), as Pillow did when NOAH's
    few-shot protocol was published. "rand-m9-mstd0.5-inc1" draws magnitude 10 a few percent of the time, which
    asks timm's increasing posterize for 0 bits; Pillow >= 12 raises on that, killing the data worker."""
    from PIL import ImageOps

    if bits >= 8:
        return img
    if bits <= 0:
        return img.point(lambda _: 0)
    return ImageOps.posterize(img, bits)


def train_transform(p: ClassificationProtocol) -> Callable:
    """The augmenting train transform on PIL images, ending in a uint8 CHW tensor: normalisation and random
    erasing happen on the device, on the normalised batch (engine.train), as in timm's prefetcher path.

    augment="timm": timm's create_transform(is_training=True) with the protocol's input size, scale and ratio
    defaults, hflip, color_jitter, auto_augment, interpolation (the authors' call), in its uint8 form
    (use_prefetcher=True). augment="petlbench": RandomResizedCrop + flip + RandAugment; "crop_flip": the first
    two alone (a randaugment spec is not applied)."""
    from torchvision import transforms as T

    if p.augment == "timm":
        from timm.data import create_transform

        tf = create_transform(input_size=p.img_size, is_training=True, color_jitter=p.color_jitter,
                              auto_augment=p.randaugment or None, interpolation=p.interpolation,
                              re_prob=0.0, use_prefetcher=True)
        ops = [_keep_posterize_bits(t) for t in tf.transforms]
        return T.Compose(ops + [_to_uint8_tensor])
    from timm.data import rand_augment_transform

    mode = T.InterpolationMode(p.interpolation)
    ops = [T.RandomResizedCrop(p.img_size, interpolation=mode), T.RandomHorizontalFlip()]
    if p.randaugment and p.augment != "crop_flip":
        ra = rand_augment_transform(p.randaugment, {"translate_const": int(p.img_size * 0.45),
                                                    "img_mean": (124, 116, 104)})
        ops.append(_keep_posterize_bits(ra))
    ops.append(T.PILToTensor())
    return T.Compose(ops)


def _keep_posterize_bits(t):
    """A RandAugment transform with posterize allowed 0 bits (see posterize_keep_bits); others unchanged."""
    for op in getattr(t, "ops", ()):
        if op.name.startswith("Posterize"):
            op.aug_fn = posterize_keep_bits
    return t


def _to_uint8_tensor(x) -> torch.Tensor:
    """timm's prefetcher-path output (a uint8 CHW numpy array, or a tensor) as a uint8 CHW tensor."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(x)
    return t.to(torch.uint8)


def input_normalization(p: ClassificationProtocol, model=None):
    """What engine.train / evaluate take as `normalize` for `p.normalize`: True (ImageNet), None, or the
    (mean, std) of Inception or of the backbone's weights ("model": open_clip's pretrained config)."""
    from .engine import INCEPTION_MEAN, INCEPTION_STD

    if p.normalize == "imagenet":
        return True
    if p.normalize == "none":
        return None
    if p.normalize == "inception":
        return INCEPTION_MEAN, INCEPTION_STD
    from .backbones import input_normalization as backbone_normalization

    name, pretrained = resolve_weights(p.backbone, p.weights)
    return backbone_normalization(name, pretrained, model)


class _EpochSeeded(torch.utils.data.Dataset):
    """`ds[i]` for a key (epoch, i), computed with Python's `random`, NumPy's global generator and torch's CPU
    generator seeded from (seed, epoch, i): a sample's augmentation is a function of the run's seed, the epoch
    and the sample, whichever worker computes it and whatever that worker computed before (persistent workers,
    a resumed run, another number of workers or processes). In the main process (num_workers=0) the three
    generators are restored afterwards, so the training loop's own draws (dropout, Mixup, erasing) are untouched."""

    def __init__(self, ds, seed: int):
        self.ds, self.seed = ds, seed % 2**64

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key: tuple[int, int]):
        import random

        import numpy as np

        epoch, i = key
        s = np.random.SeedSequence([self.seed, epoch, i]).generate_state(4, np.uint64)
        main = torch.utils.data.get_worker_info() is None
        if main:
            saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(int(s[0]))
        np.random.seed(int(s[1]) & 0xFFFFFFFF)
        torch.random.default_generator.manual_seed(int(s[2]))
        try:
            return self.ds[i]
        finally:
            if main:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])


class _EpochBatches(torch.utils.data.Sampler):
    """Batches of (epoch, index) keys over `sampler`'s order for the epoch `owner` is at; the shuffle generator
    is re-seeded from (seed, epoch) first, so the order too is a function of the epoch alone. `drop_last` drops a
    last partial batch (a split of less than one batch is kept); `drop_single` drops a last batch of one sample
    (BatchNorm cannot train on it)."""

    def __init__(self, owner: LoaderBatches, sampler, batch_size: int, drop_last: bool, drop_single: bool):
        self.owner, self.sampler, self.batch_size = owner, sampler, batch_size
        self.drop_last, self.drop_single = drop_last, drop_single

    def __len__(self) -> int:
        full, last = divmod(len(self.sampler), self.batch_size)
        if full and last and (self.drop_last or (self.drop_single and last == 1)):
            return full
        return full + (last > 0)

    def __iter__(self):
        epoch = self.owner._begin_epoch()
        keys = [(epoch, int(i)) for i in self.sampler]
        for b in range(len(self)):
            yield keys[b * self.batch_size:(b + 1) * self.batch_size]


class LoaderBatches:
    """A DataLoader over an ImageDataset that drops (and counts) undecodable images.

    Reproducible whatever the process history: the order of epoch e and each sample's augmentation are functions
    of (seed, e) and (seed, e, sample) (`_EpochBatches`, `_EpochSeeded`), so persistent workers, a resumed run
    and another number of workers all draw the same augmentations. The engine calls `set_epoch(e)` before each
    epoch; without it each pass over the loader is the next epoch. `drop_single` (training): a last batch of one
    sample is dropped, since BatchNorm in training mode cannot normalise one sample.

    In a distributed run each process reads its share of every epoch through a DistributedSampler (same seed
    on every rank, reshuffled by `set_epoch`; `batch_size` is then this process's micro-batch)."""

    def __init__(self, ds: ImageDataset, batch_size: int, shuffle: bool, workers: int, seed: int,
                 drop_last: bool = False, drop_single: bool = False):
        from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

        self.ds, self.seed, self.shuffle = ds, seed, shuffle
        self.epoch, self._next_epoch = 0, 0
        self.gen = torch.Generator().manual_seed(seed)  # the shuffle's; re-seeded per epoch (_begin_epoch)
        if distributed.is_distributed():
            self.sampler = DistributedSampler(ds, distributed.world_size(), distributed.rank(), shuffle=shuffle,
                                              seed=seed)
            order = self.sampler
        else:
            self.sampler = None
            order = RandomSampler(ds, generator=self.gen) if shuffle else SequentialSampler(ds)
        # The loader's own generator only seeds its workers, whose draws _EpochSeeded replaces per sample; kept
        # apart so that it never touches torch's global generator (dropout) nor the shuffle.
        self.loader = DataLoader(_EpochSeeded(ds, seed), batch_sampler=_EpochBatches(
                                     self, order, batch_size, drop_last, drop_single),
                                 num_workers=workers, collate_fn=collate_skip,
                                 generator=torch.Generator().manual_seed(seed), persistent_workers=workers > 0)

    def set_epoch(self, epoch: int) -> None:
        """Called by the engine before each epoch: the order and augmentations of that epoch (and the distributed
        sampler's shuffle)."""
        self._next_epoch = epoch

    def _begin_epoch(self) -> int:
        """The epoch a pass that starts now reads (the next one unless `set_epoch` said otherwise)."""
        import numpy as np

        self.epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)
        self.gen.manual_seed(int(np.random.SeedSequence([self.seed % 2**64, self.epoch, 1]).generate_state(
            1, np.uint64)[0]))
        return self.epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels, bad in self.loader:
            self.ds.bad.items.extend(bad)
            if images is not None:
                yield images, labels


def load_split(task: Task, root: str, split: str, p: ClassificationProtocol, ex: Execution, train_mode: bool, device,
               samples: list[Sample] | None = None):
    """Batches of one split: augmented per epoch through workers, or decoded once into uint8 tensors (kept on
    the GPU when asked or when they fit comfortably; cached on disk, `decode.decode_all_cached`, unless
    PETLBENCH_DECODE_CACHE=off). `samples`: the split's samples if already read.

    In a distributed run every process decodes the whole split and takes its share of each batch: a train
    batch is p.batch_size over all processes (each grad_accum micro-batches), an eval batch
    ex.eval_batch_size per process. Training batches drop a last batch that would leave a process one sample
    (`drop_single`: BatchNorm, e.g. in a classification head, cannot train on one sample)."""
    samples = samples if samples is not None else task.samples(root, split)
    world = distributed.world_size()
    if train_mode and p.batch_size % (ex.grad_accum * world):
        raise ConfigError(f"batch_size={p.batch_size} does not split into grad_accum={ex.grad_accum} micro-batches "
                          f"on {world} process(es): choose grad_accum and the number of processes so that "
                          f"grad_accum x processes divides {p.batch_size}")
    bs = p.batch_size // ex.grad_accum if train_mode else ex.eval_batch_size * world  # over all processes
    make = benchmark_of(task).dataset
    if make is not None:  # the family reads its samples itself, per epoch (video: clips decoded by decord)
        ds = make(task, samples, p, train_mode, ex.on_bad_image)
        return LoaderBatches(ds, bs // world if train_mode else ex.eval_batch_size, train_mode, loader_workers(ex),
                             p.seed, drop_last=train_mode and p.drop_last, drop_single=train_mode), ds.bad
    if train_mode and augmented(p):
        ds = ImageDataset(samples, train_transform(p), ex.on_bad_image)
        return LoaderBatches(ds, bs // world, True, loader_workers(ex), p.seed, drop_last=p.drop_last,
                             drop_single=True), ds.bad
    # Decoded once: the train split as the test transform (no augmentation), or an evaluation split; once per
    # machine through the decode cache, so the runs of a sweep that read one split decode it once between them.
    data = decode_all_cached(samples, p.img_size, p.interpolation, ex.on_bad_image, loader_workers(ex),
                             crop_pct=p.test_crop_pct, cache_dir=decode_cache_dir())
    on_device = ex.data_on_device == "yes" or (
        ex.data_on_device == "auto" and device.type == "cuda"
        and data.images.numel() < 0.25 * torch.cuda.mem_get_info(device)[0])
    images, labels = (data.images.to(device), data.labels.to(device)) if on_device else (data.images, data.labels)
    return TensorBatches(images, labels, bs, shuffle=train_mode, seed=p.seed,
                         drop_last=train_mode and p.drop_last, drop_single=train_mode), data.bad


def evaluate_targets(task: Task, model, data_root: str, p: ClassificationProtocol, ex: Execution,
                     device) -> dict[str, Any]:
    """Top-1 of the trained model on each of `task.eval_targets` whose data is present; an absent target is
    recorded as absent (with the reason), not as 0."""
    out: dict[str, Any] = {}
    for name in task.eval_targets:
        target = TASKS.get(name)
        try:
            batches, bad = load_split(target, data_root, target.protocol.test_split, p, ex, False, device)
        except DataError as e:
            out[name] = {"status": "absent", "reason": str(e)}
            log.info("target %s skipped: %s", name, e)
            continue
        res = evaluate(model, EvalSet(name, batches, target.logit_subset), device, input_normalization(p, model),
                       ex.amp)
        out[name] = {"status": "ok", "top1": res["top1"], "n": res["n"], "skipped_images": len(bad)}
    return out


