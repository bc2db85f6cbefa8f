"""The training loop: `fit`, one function a reader can follow top to bottom (nanoGPT / DINO style).

    for epoch:                        the epoch's lr (optim.py: per step, per epoch, or timm's CosineLRScheduler)
        for batch:                    on the device: uint8 -> float, normalise, (random erasing), (Mixup / CutMix)
                                      (batches.py); autocast (fp16: with a GradScaler)
            loss / grad_accum -> backward; every grad_accum micro-batches: optimizer step
            non-finite loss -> NonFiniteLoss (the run is recorded as failed, with the reason)
            the step's progress       (RunLog: for a progress object with a `step` method; no device sync)
        every epoch:                  one JSON line (epoch, lr, loss; top-1s when it evaluated); with log=tensorboard
                                      the same scalars as TensorBoard events
        evaluation epochs:            top-1 on each evaluation set (EvalPlan: RepAdapter's or NOAH's cadence), the
                                      selected evaluation's tuned tensors kept
        after each evaluation:        a resume state (resume.py), written atomically

`fit` takes the pieces as objects: an `OptimRecipe` (optimizer and schedule), a `BatchAugment`, the `Execution`,
an `EvalPlan`, a `RunLog` and a `ResumeFile`; `train` builds them from the protocol's fields as keywords.

Under torchrun (several processes, see distributed.py) the same loop runs on every rank: the model is wrapped in
DistributedDataParallel (distributed.DataParallel), each rank takes its share of every batch (batch_size stays
the global batch), losses and accuracies are summed over ranks, and only rank 0 writes files.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn

from . import distributed
from .batches import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    BatchAugment,
    EvalSet,
    TensorBatches,
    classification_loss,
    make_mixup,
    norm_tensors,
    to_input,
)
from .errors import PETLBenchError
from .optim import OptimRecipe, ScheduledOptimizer, build_optimizer, epoch_lrs, lr_schedule
from .resume import ResumeFile, trainable_state

# The pieces of a run, importable from here as before they had modules of their own.
__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "INCEPTION_MEAN", "INCEPTION_STD", "BatchAugment", "EvalPlan", "EvalSet",
           "Execution", "NonFiniteLoss", "OptimRecipe", "ResumeFile", "RunLog", "ScheduledOptimizer", "TensorBatches",
           "TrainResult", "amp_mode", "autocast_for", "build_optimizer", "classification_loss", "epoch_lrs",
           "evaluate", "fit", "is_eval_epoch", "lr_schedule", "make_mixup", "place", "resolve_device",
           "seed_everything", "train", "trainable_state"]

log = logging.getLogger(__name__)


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
    log: Literal["jsonl", "tensorboard"] = "jsonl"  # tensorboard: the JSON lines' scalars also as TensorBoard events

    def validate(self) -> str | None:
        if self.grad_accum < 1:
            return f"grad_accum must be positive, got {self.grad_accum}"
        if self.log == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
            return "log=tensorboard needs the tensorboard package: pip install 'petlbench[tensorboard]'"
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



def amp_mode(device: torch.device, amp: str) -> str:
    """The autocast mode `amp` means on `device`: "auto" is bf16 on CUDA and off elsewhere."""
    return ("bf16" if device.type == "cuda" else "off") if amp == "auto" else amp


def autocast_for(device: torch.device, amp: str):
    """A factory of autocast contexts for `amp` on `device` (a no-op context when it is off)."""
    mode = amp_mode(device, amp)
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
    mean, std = norm_tensors(device, normalize)
    autocast = autocast_for(device, amp)
    correct = total = 0
    subset = torch.tensor(ev.logit_subset, device=device) if ev.logit_subset is not None else None
    for x, y in ev.batches:
        if not len(y):  # an empty shard (the last batch of a distributed run); flash attention refuses it
            continue
        views = x.shape[1] if x.dim() == 6 else 0  # video test views: (B, clips x crops, 3, T, H, W)
        with autocast():
            if views:  # a video's score: the mean of its views' softmax probabilities (VideoMAE's test merge)
                logits = model(to_input(x.flatten(0, 1), device, mean, std, channels_last)).float()
                logits = logits.softmax(-1).view(len(y), views, -1).mean(1)
            else:
                logits = model(to_input(x, device, mean, std, channels_last))
        if subset is not None:
            logits = logits.index_select(1, subset)
        correct += (logits.argmax(1) == y.to(device)).sum().item()
        total += len(y)
    if distributed.is_distributed():
        correct, total = distributed.all_reduce_sum(correct, total)
        total = int(total)
    return {"top1": 100.0 * correct / max(1, total), "n": total}


@dataclass
class EvalPlan:
    """Which epochs evaluate (`is_eval_epoch` with `every` and `phase`), on which sets, and which evaluation's
    tuned tensors are kept: the best top-1 on the set named `select_on`, or with None the last evaluation's."""

    evals: list[EvalSet]
    every: int = 1
    phase: str = "end"
    select_on: str | None = None

    def due(self, epoch: int, epochs: int) -> bool:
        """Whether 0-based `epoch` of `epochs` ends with an evaluation."""
        return is_eval_epoch(epoch, epochs, self.every, self.phase)

    def run(self, model: nn.Module, epoch: int, info: dict, result: TrainResult, augment: BatchAugment,
            ex: Execution) -> None:
        """Evaluate after 0-based `epoch`: each set's top-1 into `info`, which joins `result.history`; marked
        "selected" (and its tuned tensors kept in `result.best_state`) when it is the best so far."""
        for ev in self.evals:
            info[ev.name] = evaluate(model, ev, augment.device, augment.normalize, ex.amp, ex.channels_last)["top1"]
        score = info.get(self.select_on, 0.0) if self.select_on else float(epoch)
        if self.select_on is None or score > result.best_score:
            result.best_score, result.best_state = score, trainable_state(model)
            info["selected"] = True
        result.history.append(info)


@dataclass
class RunLog:
    """Where a run reports: one JSON line per epoch at `path` (rank 0 only), with `tensorboard` the same
    scalars as TensorBoard events in the folder `events_dir` beside it, an INFO line per evaluation, and
    `progress(stage, done, total, info)` after each epoch.

    A `progress` object that also has a method `step(done, total, info)` is told after every micro-batch: `done`
    and `total` count micro-batches over the whole run, `info` holds the epoch, the epoch's mean loss so far, the
    learning rate and the micro-batch's images (over all processes). These are numbers the loop holds already,
    so reporting a step costs no device synchronisation."""

    path: str | None = None
    progress: Callable[[str, int, int, dict], None] | None = None
    tensorboard: bool = False
    _writer: Any = field(default=None, init=False, repr=False)

    @property
    def events_dir(self) -> str | None:
        """The TensorBoard folder: `<stem>.tb` beside `<stem>.log.jsonl`; None without a path."""
        if not self.path:
            return None
        stem = self.path[:-len(".log.jsonl")] if self.path.endswith(".log.jsonl") else os.path.splitext(self.path)[0]
        return stem + ".tb"

    def epoch(self, info: dict) -> None:
        """The epoch's JSON line (and its TensorBoard scalars: train/loss, train/lr, top1/<evaluation set>)."""
        if self.path and distributed.is_main():
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(info) + "\n")
            if self.tensorboard:
                self._scalars(info)

    def _scalars(self, info: dict) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(self.events_dir)
        for key, value in info.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                tag = f"train/{key}" if key in ("loss", "lr") else f"top1/{key}"
                self._writer.add_scalar(tag, value, info["epoch"])
        self._writer.flush()  # each epoch on disk, as its JSON line is: a killed run keeps what it logged

    def close(self) -> None:
        """Close the TensorBoard writer, if one was opened."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def evaluated(self, info: dict) -> None:
        """The evaluation's INFO line."""
        log.info("epoch %d: %s", info["epoch"], {k: v for k, v in info.items() if k != "epoch"})

    def done(self, epochs_done: int, epochs: int, info: dict) -> None:
        """Report progress after an epoch (the callback may raise to stop the run)."""
        if self.progress:
            self.progress("train", epochs_done, epochs, info)


@dataclass
class TrainResult:
    """What a training run leaves: its evaluations, the selected tuned tensors, its time and images."""

    history: list[dict] = field(default_factory=list)  # one entry per evaluation: epoch, {set: top1}, loss
    train_seconds: float = 0.0  # in the training loop, earlier processes of a resumed run included
    images_seen: int = 0  # likewise
    best_state: dict[str, torch.Tensor] | None = None  # tuned tensors at the selected evaluation
    best_score: float = -1.0  # the selection score of best_state (EvalPlan.run)
    resumed_epoch: int = 0  # the epoch a resume state took the run from (0: started fresh)
    earlier_seconds: float = 0.0  # wall seconds spent in `train` by the earlier processes of a resumed run

    @property
    def images_per_second(self) -> float:
        return self.images_seen / self.train_seconds if self.train_seconds else 0.0


def place(model: nn.Module, ex: Execution) -> torch.device:
    """Move `model` to the execution's device (channels-last for conv backbones when asked); returns the device."""
    device = resolve_device(ex.device)
    model.to(device)
    if ex.channels_last and not any(p.dim() == 5 for p in model.parameters()):  # (video Conv3d: no 2-D layout)
        model.to(memory_format=torch.channels_last)
    return device


def fit(model: nn.Module, batches: Iterable, plan: EvalPlan, recipe: OptimRecipe, augment: BatchAugment,
        ex: Execution, run_log: RunLog | None = None, resume: ResumeFile | None = None) -> TrainResult:
    """Train the trainable parameters of `model` on `batches` for recipe.total_epochs epochs, evaluating after
    the epochs `plan` picks; see the module docstring. In a distributed run every rank calls this with its own
    shard of the batches (TensorBatches, or a loader with a `set_epoch(epoch)` hook, called every epoch); each
    optimizer step then follows the gradient of the mean loss over the global batch, as in one process, and
    every rank returns the same history and best_state."""
    device = place(model, ex)
    augment.to(device, ex.channels_last)
    optim = recipe.build(model, math.ceil(len(batches) / ex.grad_accum), device, amp_mode(device, ex.amp) == "fp16")
    par = distributed.DataParallel(model, device)  # par.net trains; `model` is what is evaluated and saved
    forward, autocast = torch.compile(par.net) if ex.compile else par.net, autocast_for(device, ex.amp)
    run_log, result, t_start = run_log or RunLog(), TrainResult(), time.perf_counter()
    report_step = getattr(run_log.progress, "step", None)  # per-step progress, for a progress object that asks
    start = resume.restore(model, optim, result, batches, device) if resume else 0
    for epoch in range(start, recipe.total_epochs):
        optim.start_epoch(epoch)
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(epoch)  # a loader's order and augmentations: a function of the epoch alone
        par.net.train()
        t0, loss_sum, n_batches = time.perf_counter(), 0.0, 0
        for i, (x, y) in enumerate(batches):
            x, y = augment.prepare(x, y)
            n_local, n = len(x), 0  # this rank's samples; n: the micro-batch's, over all ranks
            step = (i + 1) % ex.grad_accum == 0 or i + 1 == len(batches)
            if par.joins(n_local):
                x, y = par.pad(x, y)
                with par.sync(step):  # under DDP: one all-reduce per optimizer step, not per micro-batch
                    x, y = augment.mix(x, y)
                    with autocast():
                        logits = forward(x)
                    loss, batch_loss, n = par.mean_loss(augment.loss(logits.float(), y, par.reduction), n_local)
                    if not math.isfinite(batch_loss):
                        raise NonFiniteLoss(f"loss is {batch_loss} at epoch {epoch + 1}, batch {i + 1}")
                    optim.backward(loss / ex.grad_accum)
                if n:
                    loss_sum, n_batches = loss_sum + batch_loss, n_batches + 1
                result.images_seen += n_local
            if step:
                optim.step()
            if report_step:
                report_step(epoch * len(batches) + i + 1, recipe.total_epochs * len(batches),
                            {"epoch": epoch + 1, "loss": loss_sum / max(1, n_batches), "lr": optim.lr, "images": n})
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        result.train_seconds += time.perf_counter() - t0
        info = {"epoch": epoch + 1, "loss": loss_sum / max(1, n_batches), "lr": optim.lr}
        evaluated = plan.due(epoch, recipe.total_epochs)
        if evaluated:
            plan.run(model, epoch, info, result, augment, ex)
        run_log.epoch(info)  # before the resume state: a run resumed from it has logged every epoch it holds
        if evaluated:
            if resume:
                resume.save(model, optim, epoch + 1, result, batches, device,
                            wall_seconds=result.earlier_seconds + time.perf_counter() - t_start)
            run_log.evaluated(info)
        run_log.done(epoch + 1, recipe.total_epochs, info)
    run_log.close()
    result.images_seen = par.total(result.images_seen)
    return result


def train(model: nn.Module, train_batches: Iterable, evals: list[EvalSet], *, epochs: int, lr: float,
          weight_decay: float, optimizer: str = "adamw", momentum: float = 0.9, warmup_epochs: int = 0,
          warmup_lr: float = 1e-6, min_lr: float = 0.0, label_smoothing: float = 0.0, mixup: float = 0.0,
          cutmix: float = 0.0, num_classes: int = 0, eval_every: int = 1, eval_phase: str = "end",
          normalize=True, schedule: str = "per_step", decay_filter: str = "all", cooldown_epochs: int = 0,
          random_erasing: float = 0.0, re_mode: str = "pixel", re_count: int = 1, select_on: str | None = None,
          execution: Execution | None = None, seed: int = 0, log_path: str | None = None,
          resume_path: str | None = None, resume: bool = True,
          progress: Callable[[str, int, int, dict], None] | None = None) -> TrainResult:
    """`fit` with its pieces given as the protocol's fields: OptimRecipe's (epochs, lr, weight_decay, optimizer,
    momentum, decay_filter, schedule, warmup_epochs, warmup_lr, min_lr, cooldown_epochs), BatchAugment's
    (normalize, random_erasing, re_mode, re_count, mixup, cutmix, label_smoothing, num_classes), EvalPlan's
    (evals, eval_every, eval_phase, select_on), RunLog's (log_path, progress) and ResumeFile's (resume_path,
    resume). `seed` is accepted for callers that pass the protocol's; the generators are the caller's to seed."""
    recipe = OptimRecipe(epochs, lr, weight_decay, optimizer, momentum, decay_filter, schedule, warmup_epochs,
                         warmup_lr, min_lr, cooldown_epochs)
    augment = BatchAugment(normalize, random_erasing, re_mode, re_count, mixup, cutmix, label_smoothing,
                           num_classes)
    execution = execution or Execution()
    return fit(model, train_batches, EvalPlan(evals, eval_every, eval_phase, select_on), recipe, augment,
               execution, RunLog(log_path, progress, tensorboard=execution.log == "tensorboard"),
               ResumeFile(resume_path, resume) if resume_path else None)
