"""The optimizer and its learning-rate schedule, written once: which lr every epoch and optimizer step trains at,
and the step itself (with fp16's grad scaler).

    OptimRecipe           the protocol's fields (optimizer, lr, weight decay and its filter, schedule, warm-up,
                          min_lr, cooldown): data, with `epoch_lr(e)` / `step_lr(s)`
    ScheduledOptimizer    built from a recipe for one model: sets the lr, backward, step, state for resume

Schedules: "per_step" (linear warm-up, then cosine to min_lr, at every optimizer step), "per_epoch" (that curve
at the epoch index, held for the epoch: VPT), "timm_epoch" / "timm_next_epoch" (timm's CosineLRScheduler stepped
with step(epoch) / step(epoch + 1) after each epoch: RepAdapter and NOAH / timm's train.py), "dassl_cosine" (Dassl's
ConstantWarmupScheduler over torch's CosineAnnealingLR(T_max=epochs, eta_min=min_lr), stepped after each epoch:
CoOp and the CLIP methods built on Dassl: warmup_epochs at warmup_lr, then the cosine from lr). The timm and
torch curves are read from the schedulers themselves once (`epoch_lrs`), so the loop sets an epoch's lr the same
way for every epoch-wise schedule; cooldown epochs train at min_lr.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn as nn

from .errors import PETLBenchError

SCHEDULES = ("per_step", "per_epoch", "timm_epoch", "timm_next_epoch", "dassl_cosine")


def build_optimizer(model: nn.Module, optimizer: str, lr: float, weight_decay: float, momentum: float = 0.9,
                    decay_filter: str = "all", fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer over the trainable parameters. decay_filter "all": one group, every trainable tensor decays
    (RepAdapter's `AdamW(trainable, ...)`); "timm": timm's create_optimizer_v2 with filter_bias_and_bn=True (1-D
    tensors, biases and `model.no_weight_decay()` names get no decay; NOAH's `create_optimizer`; note timm's "sgd"
    is Nesterov SGD); "no_bias": no decay for names containing "bias" (VPT's optimizer.py).

    Only parameters with requires_grad are given to it, so frozen weights get no optimizer state: that is where
    PETL's training memory comes from."""
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
    "per_step": the lr of each epoch's first step with one step per epoch), as `train` sets it. The timm
    schedules are timm's CosineLRScheduler itself, stepped as the authors' loops step it."""
    total = epochs + cooldown_epochs
    if schedule in ("per_step", "per_epoch"):
        curve = lr_schedule(epochs, warmup_epochs, lr, warmup_lr, min_lr)
        return [curve[e] if e < epochs else min_lr for e in range(total)]
    if schedule == "dassl_cosine":
        return _dassl_epoch_lrs(epochs, lr, warmup_epochs, warmup_lr, min_lr) + [min_lr] * cooldown_epochs
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = epoch_scheduler(opt, epochs, warmup_epochs, warmup_lr, min_lr)
    out = []
    for epoch in range(total):
        out.append(opt.param_groups[0]["lr"])
        sched.step(epoch + 1 if schedule == "timm_next_epoch" else epoch)
    return out


def _dassl_epoch_lrs(epochs: int, lr: float, warmup_epochs: int, cons_lr: float, eta_min: float) -> list[float]:
    """Dassl's build_lr_scheduler("cosine", WARMUP_TYPE "constant", WARMUP_RECOUNT True: dassl/optim/
    lr_scheduler.py@27eb2f4:103-115): the first `warmup_epochs` epochs at `cons_lr`, then torch's
    CosineAnnealingLR(T_max=epochs) from `lr`, first stepped when the warm-up is over (_BaseWarmupScheduler.step,
    :21-26); the trainer steps the scheduler after every epoch."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=float(epochs), eta_min=eta_min)
    out = []
    for epoch in range(epochs):
        out.append(cons_lr if epoch < warmup_epochs else opt.param_groups[0]["lr"])
        if epoch >= warmup_epochs:
            cosine.step()
    return out


@dataclass
class OptimRecipe:
    """What an optimizer step does and at which learning rate: the protocol's fields of the same names
    (`from_protocol`). `epochs` are the schedule's; `cooldown_epochs` more follow at min_lr."""

    epochs: int
    lr: float
    weight_decay: float
    optimizer: str = "adamw"  # "adamw" or "sgd"
    momentum: float = 0.9  # sgd only
    decay_filter: str = "all"  # see build_optimizer
    schedule: str = "per_step"  # see the module docstring
    warmup_epochs: int = 0
    warmup_lr: float = 1e-6
    min_lr: float = 0.0
    cooldown_epochs: int = 0

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise PETLBenchError(f"unknown schedule {self.schedule!r}; known: {', '.join(SCHEDULES)}")

    @classmethod
    def from_protocol(cls, protocol) -> OptimRecipe:
        """The recipe of a task protocol (any object with these fields, e.g. task.Protocol)."""
        return cls(**{f.name: getattr(protocol, f.name) for f in fields(cls)})

    @property
    def total_epochs(self) -> int:
        """Epochs trained in all: the schedule's and the cooldown's."""
        return self.epochs + self.cooldown_epochs

    @property
    def per_step(self) -> bool:
        """Whether the lr changes at every optimizer step (else once per epoch)."""
        return self.schedule == "per_step"

    def epoch_lrs(self) -> list[float]:
        """The lr of each of the total_epochs under an epoch-wise schedule (see `epoch_lrs`)."""
        return epoch_lrs(self.epochs, self.lr, self.warmup_epochs, self.warmup_lr, self.min_lr, self.schedule,
                         self.cooldown_epochs)

    def step_lrs(self, steps_per_epoch: int) -> list[float]:
        """The lr of each optimizer step of the schedule's epochs under "per_step" (the cooldown's: min_lr)."""
        return lr_schedule(self.epochs * steps_per_epoch, self.warmup_epochs * steps_per_epoch, self.lr,
                           self.warmup_lr, self.min_lr)

    def build(self, model: nn.Module, steps_per_epoch: int, device: torch.device,
              fp16: bool = False) -> ScheduledOptimizer:
        """The optimizer of this recipe over `model`'s trainable parameters (on `device`: fused on CUDA)."""
        return ScheduledOptimizer(self, model, steps_per_epoch, device, fp16)


class ScheduledOptimizer:
    """An optimizer that sets its own learning rate: `start_epoch(e)` before each epoch, `backward(loss)` per
    micro-batch, `step()` per optimizer step (the lr of that step first, under "per_step"). With `fp16` the loss
    is scaled by a GradScaler (fp16 gradients underflow; bf16 has fp32's range and needs none), which skips a
    step whose scaled gradients overflowed. `state_dict` / `load_state_dict`: the optimizer's and the scaler's
    state, for a resume state."""

    def __init__(self, recipe: OptimRecipe, model: nn.Module, steps_per_epoch: int, device: torch.device,
                 fp16: bool = False):
        self.recipe, self.steps_per_epoch = recipe, steps_per_epoch
        self.opt = build_optimizer(model, recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.momentum,
                                   recipe.decay_filter, fused=device.type == "cuda")
        self.scaler = torch.amp.GradScaler(device.type) if fp16 else None
        self._lrs = recipe.step_lrs(steps_per_epoch) if recipe.per_step else recipe.epoch_lrs()
        self.steps = 0  # optimizer steps taken, earlier processes of a resumed run included

    @property
    def lr(self) -> float:
        """The learning rate the optimizer is set to (of its first parameter group)."""
        return self.opt.param_groups[0]["lr"]

    def _set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr

    def start_epoch(self, epoch: int) -> None:
        """Before 0-based `epoch`: no gradients, and (epoch-wise schedules) the lr of that epoch."""
        if not self.recipe.per_step:
            self._set_lr(self._lrs[epoch])
        self.opt.zero_grad(set_to_none=True)

    def resume_at(self, epoch: int) -> None:
        """The step count of a run that resumes at the start of 0-based `epoch`."""
        self.steps = epoch * self.steps_per_epoch

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate the gradient of `loss` (scaled, under fp16)."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self) -> None:
        """One optimizer step on the accumulated gradients, then zero them."""
        if self.recipe.per_step:  # past the schedule (cooldown): min_lr
            self._set_lr(self._lrs[self.steps] if self.steps < len(self._lrs) else self.recipe.min_lr)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.steps += 1

    def state_dict(self) -> dict:
        """The optimizer's state and (fp16) the scaler's."""
        out = {"optimizer": self.opt.state_dict()}
        if self.scaler is not None:
            out["scaler"] = self.scaler.state_dict()
        return out

    def load_state_dict(self, state: dict) -> None:
        """Load a `state_dict`; the optimizer checks its groups against the model's before changing anything."""
        self.opt.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
