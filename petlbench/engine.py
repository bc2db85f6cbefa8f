"""The training loop: one function a reader can follow top to bottom (nanoGPT / DINO style).

    for epoch:                        lr: per step (precomputed warm-up + cosine), or timm's CosineLRScheduler
                                      stepped with step(epoch) after the epoch (the authors' scripts)
        for batch:                    uint8 -> float on the device, normalise, (random erasing), (mixup/cutmix),
                                      autocast (fp16: with a GradScaler)
            loss / grad_accum -> backward; every grad_accum micro-batches: optimizer step
            non-finite loss -> NonFiniteLoss (the run is recorded as failed, with the reason)
        every epoch:                  one JSON line (epoch, lr, loss; top-1s when it evaluated)
        evaluation epochs:            top-1 on each evaluation set (is_eval_epoch: RepAdapter's or NOAH's cadence)
        after each evaluation:        a resume state (tuned tensors + optimizer + epoch), written atomically

Under torchrun (several processes, see distributed.py) the same loop runs on every rank: the model is wrapped in
DistributedDataParallel, each rank takes its share of every batch (batch_size stays the global batch), losses
and accuracies are summed over ranks, and only rank 0 writes files.

Only parameters with requires_grad are given to the optimizer, so frozen weights get no gradient buffers
and no optimizer state: that is where PETL's training speed and memory come from.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import distributed
from .errors import PETLBenchError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = INCEPTION_STD = (0.5, 0.5, 0.5)


class NonFiniteLoss(PETLBenchError):
    """The loss became NaN or infinite; the run stops and is recorded as failed."""


@dataclass
class Execution:
    """How a run executes (not part of the published protocol; never changes what is measured)."""

    device: str = "auto"  # auto: cuda if available, else cpu; under torchrun auto/cuda is cuda:LOCAL_RANK
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"  # auto: bf16 on CUDA, off on CPU
    compile: bool = False  # torch.compile the model
    channels_last: bool = True  # for conv backbones; harmless for ViTs
    grad_accum: int = 1  # micro-batches per optimizer step (batch_size is the effective batch)
    eval_batch_size: int = 256  # per process
    num_workers: int = -1  # decode workers; -1: min(8, cpus)
    on_bad_image: Literal["fail", "skip"] = "fail"  # an image that does not decode: stop, or skip and count
    data_on_device: Literal["auto", "yes", "no"] = "auto"  # keep decoded uint8 splits on the GPU when they fit

    def validate(self) -> str | None:
        if self.grad_accum < 1:
            return f"grad_accum must be positive, got {self.grad_accum}"
        return None


def resolve_device(name: str) -> torch.device:
    """The torch device for `name` ("auto": CUDA if available, else CPU). Under a torchrun launch, "auto" and
    "cuda" are this process's own GPU, cuda:LOCAL_RANK."""
    if name in ("auto", "cuda") and distributed.launched() and torch.cuda.is_available():
        return torch.device("cuda", distributed.local_rank())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PETLBenchError(f"device={name}: no CUDA device is available here; use device=cpu")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def is_eval_epoch(epoch: int, epochs: int, eval_every: int, phase: str = "end") -> bool:
    """Whether 0-based `epoch` ends with an evaluation: phase "end" after epochs k, 2k, ... (RepAdapter's
    `ep % 10 == 9`), "start" after epochs 1, k+1, ... (NOAH's `epoch % val_interval == 0`); always after the last."""
    if epoch + 1 == epochs:
        return True
    return (epoch + 1) % eval_every == 0 if phase == "end" else epoch % eval_every == 0


def build_optimizer(model: nn.Module, optimizer: str, lr: float, weight_decay: float, momentum: float = 0.9,
                    decay_filter: str = "all", fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer over the trainable parameters. decay_filter "all": one group, every trainable tensor decays
    (RepAdapter's `AdamW(trainable, ...)`); "timm": timm's create_optimizer_v2 with filter_bias_and_bn=True (1-D
    tensors, biases and `model.no_weight_decay()` names get no decay; NOAH's `create_optimizer`; note timm's "sgd"
    is Nesterov SGD); "no_bias": no decay for names containing "bias" (VPT's optimizer.py)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise PETLBenchError("the model has no trainable parameters")
    extra = {"fused": True} if fused else {}
    if decay_filter == "no_bias":  # VPT's optimizer.py: names containing "bias" do not decay
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        groups = [{"params": [p for n, p in named if "bias" not in n], "weight_decay": weight_decay},
                  {"params": [p for n, p in named if "bias" in n], "weight_decay": 0.0}]
        params = [g for g in groups if g["params"]]
    elif decay_filter == "timm":
        from timm.optim import create_optimizer_v2

        return create_optimizer_v2(model, opt=optimizer, lr=lr, weight_decay=weight_decay, momentum=momentum,
                                   filter_bias_and_bn=True, **extra)
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **extra)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **extra)


def epoch_scheduler(opt: torch.optim.Optimizer, epochs: int, warmup_epochs: int, warmup_lr: float, min_lr: float):
    """timm's CosineLRScheduler as RepAdapter (train.py:134-135) and NOAH / SSF (timm create_scheduler) build it;
    the caller steps it with step(epoch) (RepAdapter, NOAH: the first two epochs train at warmup_lr) or
    step(epoch + 1) (timm's train.py) after each epoch. It sets the lr to warmup_lr at construction, and the cosine
    starts at t = warmup_epochs (no warm-up prefix): the peak is below lr. Past `epochs` it holds min_lr."""
    from timm.scheduler import CosineLRScheduler

    return CosineLRScheduler(opt, t_initial=epochs, lr_min=min_lr, warmup_t=warmup_epochs,
                             warmup_lr_init=warmup_lr, cycle_decay=0.1, t_in_epochs=True)


def epoch_lrs(epochs: int, lr: float, warmup_epochs: int, warmup_lr: float, min_lr: float,
              schedule: str = "timm_epoch", cooldown_epochs: int = 0) -> list[float]:
    """The learning rate each of the epochs + cooldown_epochs trains at under an epoch-wise `schedule` (for
    "per_step": the lr of each epoch's first step with one step per epoch), as `train` sets it."""
    total = epochs + cooldown_epochs
    if schedule in ("per_step", "per_epoch"):
        curve = lr_schedule(epochs, warmup_epochs, lr, warmup_lr, min_lr)
        return [curve[e] if e < epochs else min_lr for e in range(total)]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = epoch_scheduler(opt, epochs, warmup_epochs, warmup_lr, min_lr)
    out = []
    for epoch in range(total):
        out.append(opt.param_groups[0]["lr"])
        sched.step(epoch + 1 if schedule == "timm_next_epoch" else epoch)
    return out


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


def lr_schedule(total_steps: int, warmup_steps: int, lr: float, warmup_lr: float, min_lr: float) -> list[float]:
    """Per-step learning rates: linear warm-up from warmup_lr to lr, then cosine from lr to min_lr."""
    out = []
    for s in range(total_steps):
        if s < warmup_steps:
            out.append(warmup_lr + (lr - warmup_lr) * s / max(1, warmup_steps))
        else:
            t = (s - warmup_steps) / max(1, total_steps - warmup_steps)
            out.append(min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t)))
    return out


class TensorBatches:
    """Batches of a decoded split (uint8 images and labels), shuffled per epoch by a seeded generator;
    `drop_last`: the last partial batch of each epoch is dropped (RepAdapter's and NOAH's training loaders).
    `drop_single` (run.load_split sets it for training splits): a last partial batch that would leave a process
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


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one entry per evaluation: epoch, {set: top1}, loss
    train_seconds: float = 0.0  # in the training loop, earlier processes of a resumed run included
    images_seen: int = 0  # likewise
    best_state: dict[str, torch.Tensor] | None = None  # tuned tensors at the selected evaluation
    resumed_epoch: int = 0  # the epoch a resume state took the run from (0: started fresh)
    earlier_seconds: float = 0.0  # wall seconds spent in `train` by the earlier processes of a resumed run

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.train_seconds if self.train_seconds else 0.0


def _to_input(x: torch.Tensor, device: torch.device, mean: torch.Tensor | None, std: torch.Tensor | None,
              channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    if mean is not None:  # channels at dim 1: images (B, 3, H, W), clips (B, 3, T, H, W)
        shape = (1, 3) + (1,) * (x.dim() - 2)
        x = (x - mean.view(shape)) / std.view(shape)
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def autocast_for(device: torch.device, amp: str):
    mode = ("bf16" if device.type == "cuda" else "off") if amp == "auto" else amp
    if mode == "off":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


@torch.inference_mode()
def evaluate(model: nn.Module, ev: EvalSet, device: torch.device, normalize=True, amp: str = "auto",
             channels_last: bool = False) -> dict[str, float]:
    """Top-1 accuracy (%) and sample count of `model` on `ev`. In a distributed run each rank passes its
    shard of the set (TensorBatches does that) and every rank gets the top-1 and count of the whole set."""
    model.eval()
    mean, std = _norm_tensors(device, normalize)
    autocast = autocast_for(device, amp)
    correct = total = 0
    subset = torch.tensor(ev.logit_subset, device=device) if ev.logit_subset is not None else None
    for x, y in ev.batches:
        if not len(y):  # an empty shard (the last batch of a distributed run); flash attention refuses it
            continue
        views = x.shape[1] if x.dim() == 6 else 0  # video test views: (B, clips x crops, 3, T, H, W)
        with autocast():
            if views:  # a video's score: the mean of its views' softmax probabilities (VideoMAE's test merge)
                logits = model(_to_input(x.flatten(0, 1), device, mean, std, channels_last)).float()
                logits = logits.softmax(-1).view(len(y), views, -1).mean(1)
            else:
                logits = model(_to_input(x, device, mean, std, channels_last))
        if subset is not None:
            logits = logits.index_select(1, subset)
        correct += (logits.argmax(1) == y.to(device)).sum().item()
        total += len(y)
    if distributed.is_distributed():
        correct, total = distributed.all_reduce_sum(correct, total)
        total = int(total)
    return {"top1": 100.0 * correct / max(1, total), "n": total}


def _norm_tensors(device: torch.device, normalize):
    """(mean, std) tensors for `normalize`: True = ImageNet's, False/None = none, or a (mean, std) pair."""
    if normalize is None or normalize is False:
        return None, None
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if normalize is True else normalize
    return (torch.tensor(mean, device=device).view(1, 3, 1, 1),
            torch.tensor(std, device=device).view(1, 3, 1, 1))


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def train(model: nn.Module, train_batches: Iterable, evals: list[EvalSet], *, epochs: int, lr: float,
          weight_decay: float, optimizer: str = "adamw", momentum: float = 0.9, warmup_epochs: int = 0,
          warmup_lr: float = 1e-6, min_lr: float = 0.0, label_smoothing: float = 0.0, mixup: float = 0.0,
          cutmix: float = 0.0, num_classes: int = 0, eval_every: int = 1, eval_phase: str = "end",
          normalize=True, schedule: str = "per_step", decay_filter: str = "all", cooldown_epochs: int = 0,
          random_erasing: float = 0.0,
          re_mode: str = "pixel", re_count: int = 1, select_on: str | None = None,
          execution: Execution | None = None, seed: int = 0, log_path: str | None = None,
          resume_path: str | None = None, resume: bool = True,
          progress: Callable[[str, int, int, dict], None] | None = None) -> TrainResult:
    """Train the trainable parameters of `model`; evaluate after the epochs `is_eval_epoch` picks.

    `schedule`: "per_step" (warm-up + cosine at every optimizer step), "per_epoch" (that curve at the epoch index,
    held for the epoch), "timm_epoch" / "timm_next_epoch" (timm's CosineLRScheduler stepped with step(epoch) /
    step(epoch + 1) after each epoch). `cooldown_epochs` more epochs follow `epochs`, at min_lr. `decay_filter`: see `build_optimizer`. `normalize`: True
    (ImageNet mean/std), False, or a (mean, std) pair. `random_erasing` > 0: timm's RandomErasing on the
    normalised batch, on the device (timm's prefetcher path), before Mixup. `select_on`: the evaluation set whose
    best top-1 picks `best_state` (the tuned tensors kept for the report); None keeps the last. `log_path`: one
    JSON line per epoch (epoch, lr the epoch trained at, mean loss; top-1s where it evaluated). `resume_path`:
    where a resume state is written after each evaluation and, unless `resume` is False (start fresh, e.g.
    `--force`), read at start if present; an unreadable or mismatched one is logged as a warning naming it and
    the run starts fresh. The state holds everything that draws random numbers in this process (torch's CPU and
    CUDA generators, Python's `random`, NumPy's global generator, the batches' generator), so a resumed run
    computes what the uninterrupted one does, and the time and images of the epochs before it.

    In a distributed run (distributed.setup done) every rank calls this with its own shard of the batches
    (TensorBatches, or a loader with a `set_epoch(epoch)` hook, called every epoch); each optimizer step then
    follows the gradient of the mean loss over the global batch, as in one process. Every rank returns the
    same history and best_state; only rank 0 writes `log_path` and `resume_path`."""
    ex = execution or Execution()
    device = resolve_device(ex.device)
    amp_mode = ("bf16" if device.type == "cuda" else "off") if ex.amp == "auto" else ex.amp
    autocast = autocast_for(device, ex.amp)
    # fp16 needs loss scaling (its gradients underflow); bf16 has fp32's range and needs none.
    scaler = torch.amp.GradScaler(device.type) if amp_mode == "fp16" else None
    model.to(device)
    if ex.channels_last and not any(p.dim() == 5 for p in model.parameters()):  # (video Conv3d: no 2-D layout)
        model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model, optimizer, lr, weight_decay, momentum, decay_filter, fused=device.type == "cuda")
    steps_per_epoch = math.ceil(len(train_batches) / ex.grad_accum)
    step_lrs = lr_schedule(epochs * steps_per_epoch, warmup_epochs * steps_per_epoch, lr, warmup_lr, min_lr)
    per_epoch = epoch_lrs(epochs, lr, warmup_epochs, warmup_lr, min_lr, "per_epoch", cooldown_epochs)
    timm_sched = schedule in ("timm_epoch", "timm_next_epoch")
    sched = epoch_scheduler(opt, epochs, warmup_epochs, warmup_lr, min_lr) if timm_sched else None
    total_epochs = epochs + cooldown_epochs
    mixer = make_mixup(mixup, cutmix, label_smoothing, num_classes)
    eraser = None
    if random_erasing > 0:
        from timm.data.random_erasing import RandomErasing

        eraser = RandomErasing(random_erasing, mode=re_mode, max_count=re_count, device=device)
    ddp, world = distributed.is_distributed(), distributed.world_size()
    net = model  # what trains; `model` (unwrapped) is what is evaluated and saved
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        # DDP all-reduces only parameters with requires_grad: frozen backbone weights cost no communication.
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    fwd = torch.compile(net) if ex.compile else net
    mean, std = _norm_tensors(device, normalize)
    result = TrainResult()
    start_epoch, best = 0, -1.0
    t_train, t_start = 0.0, time.perf_counter()
    state = _read_resume(resume_path, model, opt, scaler) if resume_path and resume else None
    if state is not None:
        with torch.no_grad():
            named = dict(model.named_parameters())
            for n, t in state["tuned"].items():
                named[n].copy_(t)
        start_epoch, best = state["epoch"], state["best"]
        if sched is not None and start_epoch > 0:  # the lr of the epoch that resumes
            sched.step(start_epoch if schedule == "timm_next_epoch" else start_epoch - 1)
        result.history = state["history"]
        result.best_state = state.get("best_state") or None
        mine = _set_rng_state(state, train_batches, device, world)
        t_train, result.images_seen = float(mine.get("train_seconds", 0.0)), int(mine.get("images_seen", 0))
        result.resumed_epoch, result.earlier_seconds = start_epoch, float(state.get("wall_seconds", 0.0))
        log.info("resumed from %s at epoch %d", resume_path, start_epoch)
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, total_epochs):
        if schedule == "per_epoch":
            for g in opt.param_groups:
                g["lr"] = per_epoch[epoch]
        if hasattr(train_batches, "set_epoch"):
            train_batches.set_epoch(epoch)  # a DistributedSampler's shuffle: new each epoch, the same on all ranks
        net.train()
        t0, loss_sum, n_batches = time.perf_counter(), 0.0, 0
        epoch_lr = opt.param_groups[0]["lr"]
        opt.zero_grad(set_to_none=True)
        for i, (x, y) in enumerate(train_batches):
            x = _to_input(x, device, mean, std, ex.channels_last)
            y = y.to(device, non_blocking=True)
            if eraser is not None and len(x):
                x = eraser(x)  # in normalised space: erased pixels are N(0, 1) noise there (mode "pixel")
            if mixer is not None and len(x) % 2:  # timm's Mixup pairs samples: an odd batch (shard) loses one
                x, y = x[:-1], y[:-1]
            do_step = (i + 1) % ex.grad_accum == 0 or i + 1 == len(train_batches)
            n_local = len(x)  # this rank's samples; n (below): the micro-batch's, over all ranks
            if ddp and not n_local:
                # Every rank joins every backward (it carries DDP's all-reduce): an empty shard forwards two
                # zero images (two: Mixup pairs samples; not zero: flash attention refuses a batch of 0) and
                # weighs them 0.
                x, y = x.new_zeros((2, *x.shape[1:])), y.new_zeros((2, *y.shape[1:]))
            if n_local or ddp:
                # no_sync: micro-batch gradients stay local until the one all-reduce before the optimizer step
                with net.no_sync() if ddp and not do_step else contextlib.nullcontext():
                    if mixer is not None:
                        x, y = mixer(x, y)
                    with autocast():
                        logits = fwd(x)
                    loss = classification_loss(logits.float(), y, label_smoothing, "sum" if ddp else "mean")
                    if ddp:
                        # `loss` sums this rank's samples; the micro-batch's mean is over all ranks' samples.
                        # Scaled by world / n, DDP's average of the ranks' gradients is the gradient of that
                        # mean (uneven shards included), and every rank sees the same batch_loss.
                        loss = loss if n_local else loss * 0.0
                        total, n = distributed.all_reduce_sum(loss.detach(), n_local)
                        batch_loss, loss = total / max(n, 1), loss * (world / max(n, 1))
                    else:
                        batch_loss, n = loss.item(), n_local
                    if not math.isfinite(batch_loss):
                        raise NonFiniteLoss(f"loss is {batch_loss} at epoch {epoch + 1}, batch {i + 1}")
                    scaled = loss / ex.grad_accum
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                if n:
                    loss_sum += batch_loss
                    n_batches += 1
                result.images_seen += n_local
            if do_step:
                if schedule == "per_step":  # past the schedule (cooldown): min_lr
                    for g in opt.param_groups:
                        g["lr"] = step_lrs[step] if step < len(step_lrs) else min_lr
                    epoch_lr = opt.param_groups[0]["lr"]
                if scaler is not None:
                    scaler.step(opt)  # skips the step when the scaled gradients overflowed
                    scaler.update()
                else:
                    opt.step()
                opt.zero_grad(set_to_none=True)
                step += 1
        if sched is not None:  # the next epoch's lr, as the authors' loops step it
            sched.step(epoch + 1 if schedule == "timm_next_epoch" else epoch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t_train += time.perf_counter() - t0
        info = {"epoch": epoch + 1, "loss": loss_sum / max(1, n_batches), "lr": epoch_lr}
        evaluated = is_eval_epoch(epoch, total_epochs, eval_every, eval_phase)
        if evaluated:
            for ev in evals:
                info[ev.name] = evaluate(model, ev, device, normalize, ex.amp, ex.channels_last)["top1"]
            score = info.get(select_on, 0.0) if select_on else float(epoch)
            if select_on is None or score > best:
                best = score
                result.best_state = trainable_state(model)
                info["selected"] = True
            result.history.append(info)
        if log_path and distributed.is_main():
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(info) + "\n")
        if evaluated:
            if resume_path:
                _save_resume(resume_path, model, opt, epoch + 1, best, result, train_batches, scaler, device,
                             train_seconds=t_train,
                             wall_seconds=result.earlier_seconds + time.perf_counter() - t_start)
            log.info("epoch %d: %s", epoch + 1, {k: v for k, v in info.items() if k != "epoch"})
        if progress:
            progress("train", epoch + 1, total_epochs, info)
    result.train_seconds = t_train
    if ddp:
        result.images_seen = int(distributed.all_reduce_sum(result.images_seen)[0])
    return result


def _rng_state(train_batches, device: torch.device) -> dict:
    """Every generator this process draws from during training, as tensors and plain numbers (weights_only)."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    out = {"torch": torch.get_rng_state(),
           "python": [version, list(internal), gauss],
           "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                     "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                     "gauss": float(np_state["gauss"])}}
    if hasattr(train_batches, "gen"):
        out["data"] = train_batches.gen.get_state()
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def _set_rng_state(state: dict, train_batches, device: torch.device, world: int) -> dict:
    """Restore this process's generators from a resume state; returns its per-process entry (with its
    train_seconds and images_seen). A state saved with another number of processes gives every process rank
    0's generators. States written before Python's and NumPy's generators were saved restore what they hold."""
    ranks = state.get("rngs")
    if ranks:
        mine = ranks[distributed.rank()] if len(ranks) == world else ranks[0]
    else:  # written by an earlier petlbench: torch's generator and the batches' only
        rng, data_rng = state["rng"], state["data_rng"]
        if len(state.get("rng_ranks", ())) == world:
            rng, data_rng = state["rng_ranks"][distributed.rank()]
        mine = {"torch": rng, "data": data_rng}
    torch.set_rng_state(mine["torch"])
    if "python" in mine:
        version, internal, gauss = mine["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in mine:
        npst = mine["numpy"]
        np.random.set_state(("MT19937", npst["key"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                             npst["gauss"]))
    if "cuda" in mine and device.type == "cuda":
        torch.cuda.set_rng_state(mine["cuda"], device)
    if hasattr(train_batches, "gen") and "data" in mine:
        train_batches.gen.set_state(mine["data"])
    return mine


def _read_resume(path: str, model: nn.Module, opt, scaler) -> dict | None:
    """The resume state at `path` with the optimizer (and grad scaler) state loaded, or None when there is none
    or it cannot be used (truncated, corrupt, another model's): then a warning names the file and the run starts
    fresh; the file is replaced at the next evaluation. Nothing is changed unless the state is usable."""
    if not os.path.isfile(path):
        return None
    try:
        # On the CPU: generator states must be CPU tensors; tuned tensors and optimizer state move on copy / load.
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"a {type(state).__name__}, not a resume state")
        named = dict(model.named_parameters())
        tuned = state["tuned"]
        trainable = {n for n, p in named.items() if p.requires_grad}
        if set(tuned) != trainable:
            raise ValueError(f"its tensors are not this model's trainable ones ({len(tuned)} vs {len(trainable)})")
        for n, t in tuned.items():
            if t.shape != named[n].shape:
                raise ValueError(f"{n} has shape {tuple(t.shape)}, the model {tuple(named[n].shape)}")
        state["epoch"], state["best"] = int(state["epoch"]), float(state["best"])
        state["history"] = json.loads(state["history"])
        if not isinstance(state["history"], list):
            raise ValueError("its history is not a list")
        if not (state.get("rngs") or ("rng" in state and "data_rng" in state)):
            raise ValueError("no generator states")
        opt.load_state_dict(state["optimizer"])  # checks its groups against the model's before changing anything
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    except Exception as e:  # whatever is wrong with the file, the run can start fresh
        log.warning("%s: unusable resume state (%s: %s); starting the run fresh", path, type(e).__name__,
                    str(e).splitlines()[0][:300] if str(e) else "")
        return None
    return state


def _save_resume(path: str, model: nn.Module, opt, epoch: int, best: float, result: TrainResult,
                 train_batches, scaler=None, device: torch.device | None = None, train_seconds: float = 0.0,
                 wall_seconds: float = 0.0) -> None:
    """Write the resume state (rank 0 only; called on every rank, for the generators and counts of each)."""
    from .checkpoint import atomic_write_bytes

    mine = {**_rng_state(train_batches, device or torch.device("cpu")), "images_seen": result.images_seen,
            "train_seconds": train_seconds}
    ranks = distributed.gather_objects(mine)  # ranks draw different dropout / augmentation numbers
    if not distributed.is_main():
        return
    state = {"tuned": trainable_state(model), "optimizer": opt.state_dict(), "epoch": epoch, "best": best,
             "history": json.dumps(result.history), "best_state": result.best_state or {},
             "rngs": ranks, "wall_seconds": wall_seconds}  # rngs: each rank's generators and counts
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    atomic_write_bytes(path, lambda tmp: torch.save(state, tmp))
