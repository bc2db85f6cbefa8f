"""Decoding: samples -> (uint8 image tensor, label) through a transform, in DataLoader workers or once for a
whole split (`decode_all`, for protocols without augmentation). Undecodable images are skipped and recorded or
fail with their list line (`on_bad`), never dropped silently."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset

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
    skipped and counted, by `on_bad`."""
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
