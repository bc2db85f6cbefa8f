"""Decoding: samples -> (uint8 image tensor, label) through a transform, in DataLoader workers or once for a
whole split (`decode_all`, for protocols without augmentation). Undecodable images are skipped and recorded or
fail with their list line (`on_bad`), never dropped silently."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset

from .config import cache_dir
from .data import BadImages, DataError, OnBad, Sample, WorkerFailure, bad_input, load_rgb

log = logging.getLogger(__name__)


class ImageDataset(Dataset):
    """(image tensor, label) for each sample, through `transform` (a PIL -> tensor callable).

    A sample that does not decode raises DataError (on_bad="fail"; in a DataLoader worker it travels as a
    `WorkerFailure`, so batch with `collate_skip`) or yields None (on_bad="skip"), which `collate_skip` drops
    and `bad` records."""

    def __init__(self, samples: Sequence[Sample], transform: Callable, on_bad: OnBad = "fail"):
        self.samples, self.transform, self.on_bad = list(samples), transform, on_bad
        self.bad = BadImages()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s = self.samples[i]
        try:
            img = load_rgb(s.path)
        except Exception as e:  # PIL raises many types for a corrupt file
            if self.on_bad == "fail":
                return bad_input(f"{s.path} ({s.source}): image does not decode: {e}")
            return None, s.path, f"{type(e).__name__}: {e}"
        return self.transform(img), s.label


def collate_skip(batch):
    """Default collate over the decoded items; undecodable ones (None, path, reason) are returned apart. A
    `WorkerFailure` among the items is returned instead of the batch (its unpacking raises the DataError)."""
    failed = next((b for b in batch if isinstance(b, WorkerFailure)), None)
    if failed is not None:
        return failed
    good = [b for b in batch if b[0] is not None]
    bad = [(b[1], b[2]) for b in batch if b[0] is None]
    if not good:
        return None, None, bad
    images = torch.stack([b[0] for b in good])
    labels = torch.tensor([b[1] for b in good], dtype=torch.long)
    return images, labels, bad


def resize_to_uint8(size: int, interpolation: str = "bicubic", crop_pct: float = 1.0) -> Callable:
    """PIL -> uint8 CHW tensor at size x size: a square resize to size / crop_pct, then a centre crop of size
    (crop_pct 1: the VTAB protocol's plain resize; 0.875 at 224: NOAH's Resize((256, 256)) + CenterCrop(224))."""
    from torchvision.transforms import InterpolationMode, PILToTensor, Resize

    mode = InterpolationMode(interpolation)
    to_tensor = PILToTensor()
    if crop_pct >= 1.0:
        resize = Resize((size, size), interpolation=mode, antialias=True)
        return lambda img: to_tensor(resize(img))
    from torchvision.transforms import CenterCrop

    scaled = int(size / crop_pct + 1e-6)  # NOAH: int((256 / 224) * input_size)
    resize, crop = Resize((scaled, scaled), interpolation=mode, antialias=True), CenterCrop(size)
    return lambda img: to_tensor(crop(resize(img)))


@dataclass
class TensorData:
    """A split decoded once: uint8 images (N, 3, H, W) and int64 labels, plus what did not decode."""

    images: torch.Tensor
    labels: torch.Tensor
    bad: BadImages = field(default_factory=BadImages)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def decode_all(samples: Sequence[Sample], size: int, interpolation: str = "bicubic", on_bad: OnBad = "fail",
               num_workers: int = 0, progress: Callable[[int, int], None] | None = None,
               crop_pct: float = 1.0) -> TensorData:
    """Decode and resize (`resize_to_uint8`) every sample once into a uint8 tensor (the no-augmentation
    protocols: VTAB-1k; every evaluation split). Workers decode in parallel; undecodable images fail or are
    skipped and counted, by `on_bad`. Without a `progress` of its own it reports to `reporting`'s."""
    progress = progress or _reporting.get()
    ds = ImageDataset(samples, resize_to_uint8(size, interpolation, crop_pct), on_bad)
    loader = DataLoader(ds, batch_size=64, num_workers=num_workers, collate_fn=collate_skip)
    images = torch.empty((len(ds), 3, size, size), dtype=torch.uint8)
    labels = torch.empty(len(ds), dtype=torch.long)
    bad, n = BadImages(), 0
    for imgs, labs, skipped in loader:
        bad.items.extend(skipped)
        if imgs is not None:
            images[n:n + len(labs)] = imgs
            labels[n:n + len(labs)] = labs
            n += len(labs)
        if progress:
            progress(n + len(bad), len(ds))
    for path, reason in bad.items:
        log.warning("skipped undecodable image %s (%s)", path, reason)
    if n == 0:
        raise DataError(f"none of the {len(ds)} images decoded (first: {bad.items[0][0]})")
    return TensorData(images[:n].clone() if n < len(ds) else images, labels[:n].clone() if n < len(ds) else labels, bad)


# --- the decoded-split cache: a split decoded once per machine, not once per run ------------------------------
DECODE_CACHE_FORMAT = "1"  # bump when what an entry holds, or how it is keyed, changes


def decode_cache_dir() -> str | None:
    """Where decoded splits are cached: $PETLBENCH_DECODE_CACHE (a folder, or "off": no cache), else
    $PETLBENCH_CACHE/decoded, else ~/.cache/petlbench/decoded."""
    chosen = os.environ.get("PETLBENCH_DECODE_CACHE", "")
    if chosen.lower() in ("off", "0", "no", "false"):
        return None
    if chosen:
        return chosen
    return cache_dir("decoded")


def decode_cache_key(samples: Sequence[Sample], size: int, interpolation: str = "bicubic", on_bad: OnBad = "fail",
                     crop_pct: float = 1.0) -> str:
    """The cache key of `decode_all(samples, size, interpolation, on_bad, crop_pct=crop_pct)`: a digest over
    everything that sets its pixels and labels. Per sample, in order: the absolute path, the label, the file's
    size and modification time (so another list, another order, a relabelled line and a file rewritten in place
    are all new keys); then the size, interpolation, crop, `on_bad` (a skipping decode leaves images out),
    the uint8 output, and the Pillow and torchvision versions (their resize is the pixels). Unlike the record's
    `store.data_identity`, it is tied to this disk: the same files copied elsewhere are decoded again."""
    import PIL
    import torchvision

    h = hashlib.sha256(json.dumps({
        "format": DECODE_CACHE_FORMAT, "size": size, "interpolation": interpolation, "crop_pct": crop_pct,
        "on_bad": on_bad, "dtype": "uint8", "pillow": PIL.__version__, "torchvision": torchvision.__version__,
    }, sort_keys=True).encode())
    for s in samples:
        try:
            st = os.stat(s.path)
            stamp = f"{st.st_size}\t{st.st_mtime_ns}"
        except OSError:  # absent: on_bad="skip" records it; it appearing later is another key
            stamp = "absent"
        h.update(f"{os.path.abspath(s.path)}\t{s.label}\t{stamp}\n".encode())
    return h.hexdigest()[:32]


def save_decoded(path: str, data: TensorData) -> None:
    """Write `data` to `path` atomically: a temporary file beside it renamed onto it, so a concurrent reader sees
    the whole entry or none, and of two concurrent writers of one key the last rename wins with an entry as valid
    as the other. One .npz (uncompressed) holds the images, labels, skipped images and their count and shape, so
    one rename publishes them all; zip keeps a CRC-32 of each member, which is the entry's digest."""
    import numpy as np

    from .atomic import atomic_write_bytes

    meta = {"n": len(data), "shape": list(data.images.shape)}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, images=data.images.numpy(), labels=data.labels.numpy(), meta=np.array(json.dumps(meta)),
                     bad=np.array(json.dumps(data.bad.items)))
            f.flush()
            os.fsync(f.fileno())

    atomic_write_bytes(path, write)


def load_decoded(path: str) -> TensorData | None:
    """The entry at `path`, or None when there is none or it does not read back whole: cut short, damaged (a
    member whose bytes do not match its CRC-32: Python's zipfile checks it as the member is read to its end), or
    not holding the count, shape and dtype written with it."""
    import numpy as np

    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            images, labels = torch.from_numpy(z["images"]), torch.from_numpy(z["labels"])
            bad = [tuple(item) for item in json.loads(str(z["bad"]))]
    except Exception as e:  # zipfile, numpy and json each raise their own types for a damaged file
        log.warning("decode cache entry %s does not read (%s: %s); decoding again", path, type(e).__name__, e)
        return None
    if (list(images.shape) != meta["shape"] or images.dtype != torch.uint8 or labels.dtype != torch.int64
            or labels.shape != (meta["n"],) or meta["n"] != meta["shape"][0]):
        log.warning("decode cache entry %s does not hold what was written (count, shape or dtype); decoding again",
                    path)
        return None
    return TensorData(images, labels, BadImages(bad))


def decode_all_cached(samples: Sequence[Sample], size: int, interpolation: str = "bicubic", on_bad: OnBad = "fail",
                      num_workers: int = 0, progress: Callable[[int, int], None] | None = None,
                      crop_pct: float = 1.0, cache_dir: str | None = None) -> TensorData:
    """`decode_all`, through the cache at `cache_dir/<decode_cache_key>.npz` (none: `cache_dir` None): an entry
    that reads back whole is returned without decoding an image; otherwise the split is decoded and the entry
    written (or rewritten), unless the disk would keep less free than the entry's size. A hit advances torch's
    global generator as a decode does, and logs the skipped images as a decode does."""
    import shutil

    if cache_dir is None:
        return decode_all(samples, size, interpolation, on_bad, num_workers, progress, crop_pct)
    path = os.path.join(cache_dir, decode_cache_key(samples, size, interpolation, on_bad, crop_pct) + ".npz")
    data = load_decoded(path)
    if data is not None:
        # Iterating a DataLoader draws its workers' base seed from torch's global generator (torch/utils/data/
        # dataloader.py, _BaseDataLoaderIter.__init__: `_base_seed`, from `loader.generator`, None here), so
        # `decode_all` advances it by one int64. A hit draws the same, and what a run draws after loading its data
        # (dropout, drop path) is the same with the cache as without it.
        torch.empty((), dtype=torch.int64).random_()
        for bad_path, reason in data.bad.items:
            log.warning("skipped undecodable image %s (%s)", bad_path, reason)
        log.info("decoded split from the cache: %s (%d images)", path, len(data))
        return data
    data = decode_all(samples, size, interpolation, on_bad, num_workers, progress, crop_pct)
    try:  # a full or read-only cache costs the next run a decode, not this run
        os.makedirs(cache_dir, exist_ok=True)
        need, free = data.images.numel() + 8 * len(data), shutil.disk_usage(cache_dir).free
        if free < 2 * need:  # leave the disk at least as much again as the entry
            log.warning("decode cache entry %s not written: %d MB free in %s for %d MB", path, free >> 20,
                        cache_dir, need >> 20)
        else:
            save_decoded(path, data)
    except OSError as e:
        log.warning("decode cache entry %s not written: %s", path, e.strerror or e)
    return data


# Where `decode_all` reports when its caller passes no `progress`: the one who shows progress to a person (the
# CLI) sets it around a run, so the loaders between need not pass a callback along.
_reporting: ContextVar[Callable[[int, int], None] | None] = ContextVar("decode_progress", default=None)


@contextlib.contextmanager
def reporting(progress: Callable[[int, int], None] | None):
    """Within the block, `decode_all` without a `progress` of its own calls `progress(decoded, total)` after each
    batch of images."""
    token = _reporting.set(progress)
    try:
        yield
    finally:
        _reporting.reset(token)
