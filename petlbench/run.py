"""One run: task + method + overrides -> a trained model, its tuned tensors, and one result record.

    config (task protocol <- method defaults from the task <- key=value overrides)
      -> backbone + method (create_model) -> data (decoded once, or augmented per epoch)
      -> engine.train -> selection (reproduction: best periodic test; clean: best val, test once)
      -> save_tuned -> ResultStore.append(record)
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import platform
import subprocess
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import torch

from . import distributed
from .api import count_paper, count_trainable, create_model, get_method
from .checkpoint import save_tuned
from .config import build_config
from .data import DataError, ImageDataset, Sample, collate_skip, decode_all
from .engine import EvalSet, Execution, NonFiniteLoss, TensorBatches, evaluate, resolve_device, seed_everything, train
from .errors import ConfigError, PETLBenchError
from .method import METHODS, PETLMethod
from .registry import did_you_mean
from .store import ResultStore, check_writable, config_hash, data_identity
from .task import TASKS, Protocol, Task
from .weights import resolve_weights

log = logging.getLogger(__name__)


# Protocol fields added after records were first written, with their defaults: hashed only when set otherwise,
# so every existing record keeps its config hash (and is still found, not rerun).
HASHED_WHEN_SET = {"protocol": {"head_init": "random", "num_frames": 8, "frame_sampling": "dense", "frame_stride": 4,
                                 "test_clips": 1, "test_crops": 1, "seg_config": "", "max_iters": 0,
                                 "eval_phase": "end", "recipe": "", "schedule": "per_step", "decay_filter": "all",
                                 "augment": "petlbench", "color_jitter": 0.0, "re_mode": "pixel", "re_count": 1,
                                 "test_crop_pct": 1.0, "drop_last": False, "cooldown_epochs": 0},
                   # "METHOD.KEY": an option of that method only (two methods' "init" differ)
                   "method_cfg": {"dw_adapter": "dense", "train_bias": False, "lora.fused": False,
                                  "lora.init": "lora", "adapter.init": "zero_up", "adapter.placement": "mlp"}}


@dataclass
class RunSpec:
    """Everything that defines a run's result. Execution options are recorded, not hashed, except the numerics
    (mixed precision, torch.compile): a bf16 result is never returned for an fp32 request.

    A run's identity has two parts. The configuration (`identity`, `config_hash`: task, method, protocol,
    numerics) is known before any data is read; it names the record's file, so one configuration has one record.
    The data (`data_identity`: a digest of the samples of the splits the run reads, see store.data_identity) is
    known once the lists are read; it is stored in the record, and `finished_record` returns a stored record only
    when its data digest is the current one: a run on other data (another root, a list with fewer lines) reruns
    and replaces the record instead of being answered with another data set's number."""

    task: Task
    method: PETLMethod
    protocol: Protocol
    execution: Execution
    # Where each resolved value came from (protocol field or "method.KEY" -> "task ...", "recipe ...: file:line",
    # "override"); for `petlbench run --dry-run`, not part of the identity.
    sources: dict[str, str] = dataclasses.field(default_factory=dict)

    def numerics(self) -> dict[str, Any]:
        """{"amp": "bf16"|"fp16", "compile": True} where the run computes other than in eager fp32; {} otherwise."""
        out: dict[str, Any] = {}
        amp = effective_amp(self.execution)
        if amp != "off":
            out["amp"] = amp
        if self.execution.compile:
            out["compile"] = True
        return out

    def identity(self) -> dict[str, Any]:
        out = {"task": self.task.name, "method": self.method.name,
               "method_cfg": dataclasses.asdict(self.method.cfg), "protocol": dataclasses.asdict(self.protocol)}
        for part, fields in HASHED_WHEN_SET.items():  # fields added later: old records keep their hashes
            for key, default in fields.items():
                owner, dot, name = key.rpartition(".")
                if dot and owner != self.method.name:
                    continue
                if out[part].get(name, default) == default:
                    out[part].pop(name, None)
        numerics = self.numerics()
        if numerics:  # eager fp32 runs keep the hashes they had before numerics were part of the identity
            out["numerics"] = numerics
        return out

    @property
    def config_hash(self) -> str:
        """The configuration's hash (not the data's): the record's file name, computable before data is read."""
        return config_hash(self.identity())

    def data_splits(self) -> tuple[str, ...]:
        """The splits a run reads, per protocol: reproduction: the train split and the test split (selected on);
        clean: the clean train split, the val split (selected on) and the test split (evaluated once)."""
        p = self.protocol
        names = (p.clean_train_split, p.val_split, p.test_split) if p.selection == "clean" else (
            p.train_split, p.test_split)
        return tuple(dict.fromkeys(names))

    def data_identity(self, data_root: str, samples: dict[str, list[Sample]] | None = None) -> dict[str, Any]:
        """The record's "data" part for `data_root` (store.data_identity over `data_splits`); `samples`: splits
        already read. Raises DataError, as the run would, when a split cannot be read."""
        samples = dict(samples or {})
        for split in self.data_splits():
            if split not in samples:
                samples[split] = self.task.samples(data_root, split)
        return data_identity(data_root, {s: samples[s] for s in self.data_splits()})


def effective_amp(ex: Execution) -> str:
    """The autocast mode a run uses: "off", "bf16" or "fp16" ("auto": bf16 on CUDA, off on the CPU)."""
    if ex.amp != "auto":
        return ex.amp
    try:
        return "bf16" if resolve_device(ex.device).type == "cuda" else "off"
    except PETLBenchError:
        return "off"


def task_method_defaults(task: Task, method: str, explicit: dict[str, Any]) -> dict[str, Any]:
    """The task's published defaults for `method`. A key "method key=value" applies only when the chosen
    config has key=value (RepAdapter_attn's scale differs from RepAdapter's)."""
    out: dict[str, Any] = {}
    cls = METHODS.get(method)
    base = {**dataclasses.asdict(cls.config_cls()), **explicit}
    for key, values in task.method_defaults.items():
        name, _, cond = key.partition(" ")
        if name != method:
            continue
        if cond:
            k, _, v = cond.partition("=")
            if str(base.get(k)) != v:
                continue
        out.update(values)
    return out


def variant_of_spec(task_name: str, method: str, cfg: dict[str, Any], proto: dict[str, Any]) -> dict[str, Any]:
    """The record's "variant": its published-table key and what differs from the defaults of the task under the
    record's recipe (see tables.variant_fields). A task, method or recipe not registered here compares with
    nothing."""
    from .tables import variant_fields

    defaults: dict[str, Any] = {}
    task_proto: dict[str, Any] = {}
    if method in METHODS:
        defaults = dataclasses.asdict(METHODS.get(method).config_cls())
        if task_name in TASKS:
            try:
                base = resolve(task_name, method, {"recipe": proto["recipe"]} if "recipe" in proto else {})
            except PETLBenchError:
                base = None
            if base is not None:
                defaults = dataclasses.asdict(base.method.cfg)
                task_proto = dataclasses.asdict(base.protocol)
    return variant_fields(method, cfg, proto, defaults, task_proto)


def recipe_for(task: Task, name: str):
    """The registered recipe `name` for `task` (None for ""); ConfigError when it is written for another
    benchmark, UnknownNameError (listing the recipes) when there is none of that name."""
    if not name:
        return None
    from .recipe import RECIPES

    recipe = RECIPES.get(name)
    if task.benchmark not in recipe.benchmarks:
        fitting = [n for n in RECIPES.names() if task.benchmark in RECIPES.get(n).benchmarks]
        raise ConfigError(f"recipe={name}: written for {', '.join(recipe.benchmarks)} tasks, not {task.name!r}; "
                          f"recipes for {task.benchmark}: {', '.join(fitting) or 'none'}")
    return recipe


def resolve(task_name: str, method: str, overrides: dict[str, Any] | None = None) -> RunSpec:
    """Build a RunSpec. Override keys: protocol fields (epochs, lr, selection, recipe, ...), execution fields
    (device, amp, compile, ...), method options (dim, scale, ... or method.dim); an unknown or ambiguous key is an
    error listing the accepted ones.

    Resolution order (later wins): the task's protocol, the recipe's protocol (`recipe=NAME`, default the task's
    `recipe`) and its per-method and per-dataset values, the overrides; method options: the method's defaults,
    the recipe's settings for the method, the task's per-dataset defaults, the overrides. open_clip backbones
    normalise with their weights' own mean/std (normalize=model) unless the recipe or an override says otherwise."""
    task = TASKS.get(task_name)
    cls = METHODS.get(method)
    proto_keys = {f.name for f in dataclasses.fields(Protocol)}
    exec_keys = {f.name for f in dataclasses.fields(Execution)}
    method_keys = {f.name for f in dataclasses.fields(cls.config_cls)}
    proto, exe, meth = {}, {}, {}
    for key, value in (overrides or {}).items():
        if key.startswith("method."):
            meth[key[len("method."):]] = value
            continue
        owners = [n for n, ks in (("protocol", proto_keys), ("execution", exec_keys), ("method", method_keys))
                  if key in ks]
        if len(owners) > 1:
            raise ConfigError(f"override {key}=...: ambiguous ({' and '.join(owners)}); write method.{key}=...")
        if not owners:
            known = sorted(proto_keys | exec_keys | {f"method.{k}" for k in method_keys} | method_keys)
            raise ConfigError(f"override {key}=...: unknown key; accepted: {', '.join(known)}"
                              f"{did_you_mean(key, known)}")
        {"protocol": proto, "execution": exe, "method": meth}[owners[0]][key] = value
    recipe_name = proto.get("recipe", task.recipe)
    if not isinstance(recipe_name, str):
        raise ConfigError(f"override recipe={recipe_name!r}: a recipe name (see `petlbench recipes`)")
    recipe = recipe_for(task, recipe_name)
    sources = {k: f"task {task.name}" for k in proto_keys}
    values = dataclasses.asdict(task.protocol)
    if recipe is not None:
        values.update(recipe.protocol_values(method, task.name), recipe=recipe.name)
        sources.update(recipe.sources(method, task.name))
        sources["recipe"] = f"task {task.name} default"
    backbone = proto.get("backbone", values["backbone"])
    if isinstance(backbone, str) and backbone.startswith("openclip:") and "normalize" not in proto and (
            recipe is None or "normalize" not in recipe.protocol_cited(method, task.name)):
        values["normalize"] = "model"  # CLIP's own mean/std, from open_clip's pretrained config
        sources["normalize"] = "open_clip backbone: the weights' own mean/std"
    values.update(proto)
    sources.update({k: "override" for k in proto})
    protocol = build_config(Protocol, values, f"task {task.name!r} protocol")
    execution = build_config(Execution, exe, "execution")
    recipe_meth = recipe.method_values(method, task.name) if recipe is not None else {}
    task_meth = task_method_defaults(task, method, {**recipe_meth, **meth})
    m = get_method(method, {**recipe_meth, **task_meth, **meth})
    for k in dataclasses.asdict(m.cfg):
        sources[f"method.{k}"] = ("override" if k in meth else f"task {task.name}" if k in task_meth else
                                  sources.get(f"method.{k}", f"method {method} default"))
    return RunSpec(task, m, protocol, execution, sources)


# --- data -------------------------------------------------------------------------------------------------
def loader_workers(ex: Execution) -> int:
    """Decode worker processes: `num_workers`, or min(8, cpus) when it is -1."""
    return min(8, os.cpu_count() or 1) if ex.num_workers < 0 else ex.num_workers


def augmented(p: Protocol) -> bool:
    return bool(p.randaugment) or p.mixup > 0 or p.cutmix > 0 or p.random_erasing > 0


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


def train_transform(p: Protocol) -> Callable:
    """The augmenting train transform on PIL images, ending in a uint8 CHW tensor: normalisation and random
    erasing happen on the device, on the normalised batch (engine.train), as in timm's prefetcher path.

    augment="timm": timm's create_transform(is_training=True) with the protocol's input size, scale and ratio
    defaults, hflip, color_jitter, auto_augment, interpolation (the authors' call), in its uint8 form
    (use_prefetcher=True). augment="petlbench": RandomResizedCrop + flip + RandAugment."""
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
    if p.randaugment:
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


def input_normalization(p: Protocol, model=None):
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

    def __init__(self, owner: "LoaderBatches", sampler, batch_size: int, drop_last: bool, drop_single: bool):
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


def load_split(task: Task, root: str, split: str, p: Protocol, ex: Execution, train_mode: bool, device,
               samples: list[Sample] | None = None):
    """Batches of one split: augmented per epoch through workers, or decoded once into uint8 tensors (kept on
    the GPU when asked or when they fit comfortably). `samples`: the split's samples if already read.

    In a distributed run every process decodes the whole split and takes its share of each batch: a train
    batch is p.batch_size over all processes (each grad_accum micro-batches), an eval batch
    ex.eval_batch_size per process. Training batches drop a last batch that would leave a process one sample
    (`drop_single`: BatchNorm, e.g. the video head's, cannot train on one sample)."""
    samples = samples if samples is not None else task.samples(root, split)
    world = distributed.world_size()
    if train_mode and p.batch_size % (ex.grad_accum * world):
        raise ConfigError(f"batch_size={p.batch_size} does not split into grad_accum={ex.grad_accum} micro-batches "
                          f"on {world} process(es): choose grad_accum and the number of processes so that "
                          f"grad_accum x processes divides {p.batch_size}")
    bs = p.batch_size // ex.grad_accum if train_mode else ex.eval_batch_size * world  # over all processes
    if task.benchmark == "video":  # clips decoded per epoch by decord in the loader's workers
        from .tasks.video import dataset as video_dataset

        # every path checked before any decoding: fail naming the list line, or skip and record (on_bad_image)
        exists = [os.path.isfile(s.path) for s in samples]
        present = [s for s, ok in zip(samples, exists) if ok]
        missing = [s for s, ok in zip(samples, exists) if not ok]
        if missing and ex.on_bad_image == "fail":
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(f"{missing[0].path} ({missing[0].source}): file does not exist{more}; "
                            "on_bad_image=skip skips and records missing videos")
        ds = video_dataset(task, present, p, train_mode, ex.on_bad_image)
        ds.bad.items.extend((s.path, "file does not exist") for s in missing)
        return LoaderBatches(ds, bs // world if train_mode else ex.eval_batch_size, train_mode, loader_workers(ex),
                             p.seed, drop_last=train_mode and p.drop_last, drop_single=train_mode), ds.bad
    if train_mode and augmented(p):
        ds = ImageDataset(samples, train_transform(p), ex.on_bad_image)
        return LoaderBatches(ds, bs // world, True, loader_workers(ex), p.seed, drop_last=p.drop_last,
                             drop_single=True), ds.bad
    # Decoded once: the train split as the test transform (no augmentation), or an evaluation split.
    data = decode_all(samples, p.img_size, p.interpolation, ex.on_bad_image, loader_workers(ex),
                      crop_pct=p.test_crop_pct)
    on_device = ex.data_on_device == "yes" or (
        ex.data_on_device == "auto" and device.type == "cuda"
        and data.images.numel() < 0.25 * torch.cuda.mem_get_info(device)[0])
    images, labels = (data.images.to(device), data.labels.to(device)) if on_device else (data.images, data.labels)
    return TensorBatches(images, labels, bs, shuffle=train_mode, seed=p.seed,
                         drop_last=train_mode and p.drop_last, drop_single=train_mode), data.bad


def evaluate_targets(task: Task, model, data_root: str, p: Protocol, ex: Execution, device) -> dict[str, Any]:
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


# --- the run ----------------------------------------------------------------------------------------------
def _git_commit() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    import timm

    from . import __version__

    return {"petlbench": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "python": platform.python_version(), "git": _git_commit()}


def build_model(spec: RunSpec):
    p = spec.protocol
    name, pretrained = resolve_weights(p.backbone, p.weights)
    extra: dict[str, Any] = {}
    if p.head_init == "zeroshot":
        if not p.backbone.startswith("openclip:"):
            raise ConfigError(f"head_init=zeroshot needs an open_clip backbone (backbone=openclip:ViT-B-16 ...), "
                              f"not {p.backbone!r}")
        if not spec.task.classnames:
            raise ConfigError(f"head_init=zeroshot: task {spec.task.name!r} has no class names (Task.classnames)")
        extra["zero_shot_classnames"] = list(spec.task.classnames)
    if spec.task.benchmark == "video":
        extra["num_frames"] = p.num_frames
    return create_model(name, method=spec.method.name, num_classes=spec.task.num_classes, pretrained=pretrained,
                        method_cfg=dataclasses.asdict(spec.method.cfg), drop_path_rate=p.drop_path,
                        img_size=p.img_size, **extra)


def execute(spec: RunSpec, data_root: str, store: ResultStore, out_dir: str, force: bool = False,
            progress: Callable | None = None) -> dict[str, Any]:
    """Run `spec` unless the store already holds a finished record of it (then return that record).

    A run that fails (non-finite loss, an exception while training) is recorded with status "failed" and the
    reason, and its exception is re-raised for the caller. User errors before training (bad data root, bad
    list file) raise without a record.

    Under torchrun (several processes) every process calls this and trains its share of each batch; only the
    main process (rank 0) writes files (store record, tuned weights, log, resume state) and reports progress,
    and every process returns the main process's record (with "world_size")."""
    task, p, ex = spec.task, spec.protocol, spec.execution
    if task.runner is not None:
        return task.runner(spec, data_root, store, out_dir, force=force, progress=progress)
    if task.eval_only:
        raise PETLBenchError(f"task {task.name!r} is evaluation-only (a target set); train its source task")
    device = resolve_device(ex.device)
    distributed.setup(device)  # joins the other processes of a torchrun launch; nothing otherwise
    main = distributed.is_main()
    progress = progress if main else None
    clean = p.selection == "clean"
    train_split = p.clean_train_split if clean else p.train_split
    select_split = p.val_split if clean else p.test_split
    # Cheap checks first: the list files (every line and image path), the store, the weights, before any decoding.
    # The lists are read before the store is asked: a stored record stands only if it was made on this data.
    samples = {split: task.samples(data_root, split) for split in spec.data_splits()}
    train_samples, select_samples = samples[train_split], samples[select_split]
    data = spec.data_identity(data_root, samples)
    done = finished_record(spec, store, force, data)
    if done is not None:
        return done
    run_dir = os.path.join(out_dir, task.benchmark)
    if main:  # a read-only or full store / output folder fails here in one line, not after training
        store.check_writable(task.benchmark)
        check_writable(run_dir, "output folder")
    # Per-rank seeds, so ranks draw different dropout masks; rank 0's model is the one trained (DDP copies it).
    seed_everything(p.seed + distributed.rank())
    model = build_model(spec)
    norm = input_normalization(p, model)
    train_batches, train_bad = load_split(task, data_root, train_split, p, ex, True, device, train_samples)
    select_batches, select_bad = load_split(task, data_root, select_split, p, ex, False, device, select_samples)
    evals = [EvalSet(select_split, select_batches, task.logit_subset)]
    stem = os.path.join(run_dir, run_name(spec))
    record: dict[str, Any] = {
        **base_record(spec, data),
        "selection": ("clean: epoch selected on " + p.val_split + ", test evaluated once") if clean else
                     ("reproduction: best of the periodic test evaluations (every "
                      f"{p.eval_every} epochs), as the published VTAB-1k tables"),
        "params": {"trainable": count_trainable(model, include_head=False), "paper": count_paper(model),
                   "head": count_trainable(model) - count_trainable(model, include_head=False),
                   "backbone_total": sum(q.numel() for q in model.parameters())},
        "device": str(device), "world_size": distributed.world_size(),
    }
    t0 = time.perf_counter()
    try:
        res = train(model, train_batches, evals, epochs=p.epochs, lr=p.lr, weight_decay=p.weight_decay,
                    optimizer=p.optimizer, momentum=p.momentum, warmup_epochs=p.warmup_epochs,
                    warmup_lr=p.warmup_lr, min_lr=p.min_lr, label_smoothing=p.label_smoothing, mixup=p.mixup,
                    cutmix=p.cutmix, num_classes=task.num_classes, eval_every=p.eval_every,
                    eval_phase=p.eval_phase, normalize=norm, schedule=p.schedule, decay_filter=p.decay_filter,
                    cooldown_epochs=p.cooldown_epochs,
                    random_erasing=p.random_erasing if augmented(p) else 0.0, re_mode=p.re_mode,
                    re_count=p.re_count, select_on=select_split, execution=ex, seed=p.seed,
                    log_path=stem + ".log.jsonl", resume_path=stem + ".resume.pt", resume=not force,
                    progress=progress)
    except (NonFiniteLoss, RuntimeError, DataError) as e:
        record.update(status="failed", reason=f"{type(e).__name__}: {e}",
                      traceback=traceback.format_exc(limit=5), seconds=round(time.perf_counter() - t0, 1))
        if main:
            store.append(record)
        raise
    if distributed.is_distributed() and isinstance(train_batches, LoaderBatches):
        train_bad.items[:] = [b for items in distributed.gather_objects(train_bad.items) for b in items]  # all shares
    # Restore the selected evaluation's tuned tensors (reproduction: best test; clean: best val).
    with torch.no_grad():
        named = dict(model.named_parameters())
        for n, t in (res.best_state or {}).items():
            named[n].copy_(t)
    selected = max((h for h in res.history if select_split in h), key=lambda h: h[select_split])
    metrics = {"top1": selected[select_split], "epoch": selected["epoch"], "split": select_split}
    if clean:
        test_batches, test_bad = load_split(task, data_root, p.test_split, p, ex, False, device,
                                            samples[p.test_split])
        metrics = {"top1": evaluate(model, EvalSet(p.test_split, test_batches, task.logit_subset), device,
                                    norm, ex.amp)["top1"],
                   "epoch": selected["epoch"], "split": p.test_split, "val_top1": selected[select_split]}
        select_bad.items.extend(test_bad.items)
    targets = evaluate_targets(task, model, data_root, p, ex, device)
    if targets:
        metrics["targets"] = targets
    if main:
        save_tuned(model, stem + ".safetensors")
    record.update(
        status="ok", metric="top1", value=metrics["top1"], metrics=metrics,
        history=res.history, final_loss=res.history[-1]["loss"] if res.history else None,
        seconds=round(time.perf_counter() - t0 + res.earlier_seconds, 1), resumed_from_epoch=res.resumed_epoch,
        train_images_per_second=round(res.images_per_second, 1),
        tuned_file=os.path.relpath(stem + ".safetensors", out_dir),
        skipped_images={"train": len(train_bad), "eval": len(select_bad),
                        "paths": [p_ for p_, _ in (train_bad.items + select_bad.items)[:20]]},
    )
    if main:
        path = store.append(record)
        if os.path.exists(stem + ".resume.pt"):
            os.unlink(stem + ".resume.pt")  # the record is written: the run is finished
        log.info("%s %s: top1 %.2f (%s) -> %s", task.name, spec.method.name, record["value"], metrics["split"], path)
    # Every process returns the main one's record (theirs differ in device and timings), once it is written.
    return distributed.broadcast_object(record)


def finished_record(spec: RunSpec, store: ResultStore, force: bool = False,
                    data: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The store's finished record of `spec` (a run to skip), or None when there is none, when `force`, or when
    `data` (the run's `RunSpec.data_identity`) is given and the record was made on other data.

    The record's file is found by the configuration's hash; its "data" digest must then equal the current one.
    A record written before records named their data (no "data") is taken only for a mini-benchmark task whose
    folder is the generator's own output, untouched (`_generated_mini_data`): that data is deterministic, so a
    user re-running the mini-benchmark finds their records. Any other such record is rerun (and replaced): its
    data cannot be told from a 20-image test copy, and a silently wrong number costs more than a rerun.
    `data=None` (the segmentation runner, which does not compute one yet) checks the configuration only."""
    done = store.get(spec.task.benchmark, spec.config_hash)
    if done is None or done.get("status") != "ok" or force:
        return None
    if data is not None:
        stored = done.get("data")
        same = (stored.get("digest") == data["digest"] if isinstance(stored, dict) else
                stored is None and _generated_mini_data(spec, data))
        if not same:
            log.info("%s/%s: the stored record (%s) was made on other data (%s, now %s): running again",
                     spec.task.name, spec.method.name, spec.config_hash,
                     stored.get("root", "?") if isinstance(stored, dict) else "not recorded", data["root"])
            return None
    log.info("%s/%s already in the store (%s): skipped", spec.task.name, spec.method.name, spec.config_hash)
    return done


def _generated_mini_data(spec: RunSpec, data: dict[str, Any]) -> bool:
    """Whether `data` is a mini-benchmark folder as its generator wrote it: the stamp of generator version 1,
    seed 0 (what `petlbench mini` generates; every record without "data" was written while the generator was at
    version 1) and no list file the run reads changed since the stamp was written."""
    if spec.task.benchmark != "mini":
        return False
    stamp = os.path.join(data["root"], ".generated")
    try:
        with open(stamp, encoding="utf-8") as f:
            if f.read().strip() != "1 0":
                return False
        written = os.path.getmtime(stamp)
        return all(os.path.getmtime(os.path.join(data["root"], src)) <= written
                   for split in data["splits"].values() for src in split["sources"])
    except (OSError, UnicodeDecodeError):
        return False


def run_name(spec: RunSpec) -> str:
    """The file stem of a run's outputs under <out>/<benchmark>/: "<dataset>_<method>_<config hash>"."""
    return f"{spec.task.name.split('/', 1)[1]}_{spec.method.name}_{spec.config_hash}"


def base_record(spec: RunSpec, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """What every record of `spec` starts with, finished or failed: identity (hash, task, method, config,
    protocol, variant label), the data it read (`data`, RunSpec.data_identity, when known), execution options,
    versions and start time."""
    cfg, proto = dataclasses.asdict(spec.method.cfg), dataclasses.asdict(spec.protocol)
    return {"config_hash": spec.config_hash, "benchmark": spec.task.benchmark, "task": spec.task.name,
            "group": spec.task.group, "method": spec.method.name, "method_cfg": cfg, "protocol": proto,
            "variant": variant_of_spec(spec.task.name, spec.method.name, cfg, proto),
            "execution": dataclasses.asdict(spec.execution), "numerics": spec.numerics(),
            "seed": spec.protocol.seed, "versions": versions(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **({"data": data} if data is not None else {})}


def record_failure(spec: RunSpec, store: ResultStore, exc: BaseException,
                   data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record a run that failed before training could start (a bad image list, absent weights, ...) with its
    reason, so a sweep's summary and tables can say what failed and why. Training failures are recorded by
    `execute` itself, with the run's details. A store that cannot be written (the failure may be just that) is
    logged, not raised: the caller has the reason, and a sweep goes on."""
    record = {**base_record(spec, data), "status": "failed", "reason": f"{type(exc).__name__}: {exc}",
              "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=5))}
    if distributed.is_main():
        try:
            store.append(record)
        except PETLBenchError as e:
            log.warning("%s/%s: failure not recorded: %s", spec.task.name, spec.method.name, e)
    return record
