"""Batches: where the engine's come from (`TensorBatches` over a decoded split, `EvalSet`) and what happens to a
training batch on the device (`BatchAugment`: uint8 -> float, normalisation, random erasing, Mixup / CutMix, and
the loss it is scored with)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import distributed

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = INCEPTION_STD = (0.5, 0.5, 0.5)


class TensorBatches:
    """Batches of a decoded split (uint8 images and labels), shuffled per epoch by a seeded generator;
    `drop_last`: the last partial batch of each epoch is dropped (RepAdapter's and NOAH's training loaders).
    `drop_single` (loaders.load_split sets it for training splits): a last partial batch that would leave a process
    exactly one sample is dropped, since BatchNorm in training mode cannot normalise one sample (the video head's
    BatchNorm1d raises "Expected more than 1 value per channel"). One process: a last batch of one; `world`
    processes: a last batch of fewer than 2 x world samples. A split of a single batch is always kept.

    `batch_size` is the global batch. With `world` > 1 processes (default: the process group's), process
    `rank` yields only its slice of each batch (slice sizes differ by at most one; a slice may be empty), so
    the slices of one step over all ranks are exactly the batch a single process takes: every rank draws the
    same permutation from the same seed, and all ranks yield the same number of batches."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0,
                 rank: int | None = None, world: int | None = None, drop_last: bool = False,
                 drop_single: bool = False):
        self.images, self.labels, self.batch_size, self.shuffle = images, labels, batch_size, shuffle
        self.drop_last = drop_last and len(labels) >= batch_size  # a split smaller than one batch keeps it
        self.drop_single = drop_single
        self.gen = torch.Generator().manual_seed(seed)
        self.rank = distributed.rank() if rank is None else rank
        self.world = distributed.world_size() if world is None else world

    def __len__(self) -> int:
        full, last = divmod(len(self.labels), self.batch_size)
        if self.drop_last or (self.drop_single and full and 0 < last < 2 * self.world):
            return full  # (0 < last < 2 * world: the slice of some process would hold one sample)
        return full + (last > 0)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.gen) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for i in range(0, min(n, len(self) * self.batch_size), self.batch_size):
            idx = order[i:i + self.batch_size]
            if self.world > 1:
                idx = idx.tensor_split(self.world)[self.rank]
            yield self.images[idx], self.labels[idx]


@dataclass
class EvalSet:
    """A named evaluation split; `logit_subset` selects the classes it is scored on (ImageNet-A/-R)."""

    name: str
    batches: Iterable
    logit_subset: tuple[int, ...] | None = None


def norm_tensors(device: torch.device, normalize):
    """(mean, std) tensors for `normalize`: True = ImageNet's, False/None = none, or a (mean, std) pair."""
    if normalize is None or normalize is False:
        return None, None
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if normalize is True else normalize
    return (torch.tensor(mean, device=device).view(1, 3, 1, 1),
            torch.tensor(std, device=device).view(1, 3, 1, 1))


def to_input(x: torch.Tensor, device: torch.device, mean: torch.Tensor | None, std: torch.Tensor | None,
             channels_last: bool) -> torch.Tensor:
    """A batch as the model takes it: on `device`, uint8 scaled to [0, 1], normalised with (mean, std) when
    given, and in channels-last layout for 4-D images when asked."""
    x = x.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    if mean is not None:  # channels at dim 1: images (B, 3, H, W), clips (B, 3, T, H, W)
        shape = (1, 3) + (1,) * (x.dim() - 2)
        x = (x - mean.view(shape)) / std.view(shape)
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def make_mixup(mixup: float, cutmix: float, label_smoothing: float, num_classes: int):
    """timm's Mixup as RepAdapter (train.py:137-140) and NOAH (supernet_train_prompt.py:294) build it: prob 1,
    switch_prob 0.5, mode "batch", smoothing folded into the soft targets; None when both alphas are 0."""
    if mixup <= 0 and cutmix <= 0:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, cutmix_minmax=None, prob=1.0, switch_prob=0.5,
                 mode="batch", label_smoothing=label_smoothing, num_classes=num_classes)


def classification_loss(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0,
                        reduction: str = "mean") -> torch.Tensor:
    """Soft targets (Mixup's, 2-D `y`): timm's SoftTargetCrossEntropy, sum(-y * log_softmax). Class indices:
    cross-entropy with label smoothing, which equals timm's LabelSmoothingCrossEntropy (and nn.CrossEntropyLoss
    at 0)."""
    if y.dim() == 2:
        loss = torch.sum(-y * F.log_softmax(logits, dim=-1), dim=-1)
        return loss.sum() if reduction == "sum" else loss.mean()
    return F.cross_entropy(logits, y, label_smoothing=label_smoothing, reduction=reduction)


class BatchAugment:
    """What happens to a training batch on the device, in this order: uint8 -> float, normalisation
    (`normalize`: True = ImageNet mean/std, False, or a (mean, std) pair), channels-last layout, timm's
    RandomErasing with probability `random_erasing` on the normalised batch (timm's prefetcher path: erased pixels
    are N(0, 1) noise there under mode "pixel"), and timm's Mixup / CutMix (`make_mixup`) with label smoothing
    folded into its soft targets; `loss` is `classification_loss`. Mixup pairs samples, so `prepare` drops the
    last sample of an odd batch when it mixes. `to(device, channels_last)` says where batches go (default: the
    CPU, contiguous)."""

    def __init__(self, normalize=True, random_erasing: float = 0.0, re_mode: str = "pixel", re_count: int = 1,
                 mixup: float = 0.0, cutmix: float = 0.0, label_smoothing: float = 0.0, num_classes: int = 0):
        self.normalize, self.label_smoothing = normalize, label_smoothing
        self.random_erasing, self.re_mode, self.re_count = random_erasing, re_mode, re_count
        self.mixer = make_mixup(mixup, cutmix, label_smoothing, num_classes)
        self.to(torch.device("cpu"))

    def to(self, device: torch.device, channels_last: bool = False) -> BatchAugment:
        """Prepare batches on `device` (in channels-last layout when asked); returns self."""
        self.device, self.channels_last = device, channels_last
        self.mean, self.std = norm_tensors(device, self.normalize)
        self.eraser = None
        if self.random_erasing > 0:
            from timm.data.random_erasing import RandomErasing

            self.eraser = RandomErasing(self.random_erasing, mode=self.re_mode, max_count=self.re_count,
                                        device=device)
        return self

    def prepare(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch on the device, normalised and erased; even-sized when it will be mixed."""
        x = to_input(x, self.device, self.mean, self.std, self.channels_last)
        y = y.to(self.device, non_blocking=True)
        if self.eraser is not None and len(x):
            x = self.eraser(x)
        if self.mixer is not None and len(x) % 2:
            x, y = x[:-1], y[:-1]
        return x, y

    def mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup / CutMix of the batch: mixed images and soft targets (the batch itself without mixing)."""
        return self.mixer(x, y) if self.mixer is not None else (x, y)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """The training loss of fp32 `logits` against `y` (class indices or soft targets)."""
        return classification_loss(logits, y, self.label_smoothing, reduction)
