"""The Dassl pieces of CoOp's protocol. schedule=dassl_cosine equals Dassl's scheduler as CoOp trains with it
(KaiyangZhou/Dassl.pytorch at 27eb2f4, dassl/optim/lr_scheduler.py; CoOp configs/trainers/CoOp/vit_b16.yaml:
cosine, WARMUP_EPOCH 1, WARMUP_TYPE constant, WARMUP_CONS_LR 1e-5), transcribed here and stepped as Dassl's
trainer steps it: once after every epoch (dassl/engine/trainer.py after_epoch -> update_lr); augment=crop_flip is
its "random_resized_crop" + "random_flip"."""
from __future__ import annotations

import math

import pytest
import torch
from torch.optim.lr_scheduler import _LRScheduler

from petlbench.optim import OptimRecipe, epoch_lrs


class BaseWarmup(_LRScheduler):  # lr_scheduler.py:10-26
    def __init__(self, optimizer, successor, warmup_epoch, last_epoch=-1):
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        super().__init__(optimizer, last_epoch)

    def step(self, epoch=None):
        if self.last_epoch >= self.warmup_epoch:  # :21-23
            self.successor.step(epoch)
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step(epoch)  # :25-26


class ConstantWarmup(BaseWarmup):  # lr_scheduler.py:29-39
    def __init__(self, optimizer, successor, warmup_epoch, cons_lr, last_epoch=-1):
        self.cons_lr = cons_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return [self.cons_lr for _ in self.base_lrs]


def dassl_lrs(epochs, lr, warmup, cons_lr):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, float(epochs))  # :103-106 (eta_min 0)
    sched = ConstantWarmup(opt, cosine, warmup, cons_lr)  # :108-115 (WARMUP_RECOUNT True: no last_epoch shift)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])  # the lr the epoch trains at
        sched.step()
    return out


@pytest.mark.parametrize("epochs,warmup", [(200, 1), (50, 1), (10, 2), (5, 0)])
def test_dassl_cosine_is_dassls_constant_warmup_cosine(epochs, warmup):
    want = dassl_lrs(epochs, 0.002, warmup, 1e-5) if warmup else [
        0.002 * (1 + math.cos(math.pi * e / epochs)) / 2 for e in range(epochs)]  # no warm-up: the cosine alone
    got = epoch_lrs(epochs, 0.002, warmup, 1e-5, 0.0, "dassl_cosine")
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15)
    if warmup:
        assert got[:warmup] == [1e-5] * warmup and got[warmup] == pytest.approx(0.002)  # the peak after warm-up


def test_dassl_cosine_through_the_recipe():
    r = OptimRecipe(epochs=4, lr=0.01, weight_decay=5e-4, optimizer="sgd", schedule="dassl_cosine", warmup_epochs=1,
                    warmup_lr=1e-5, min_lr=0.0, cooldown_epochs=1)
    assert r.epoch_lrs() == pytest.approx([1e-5, 0.01, 0.01 * (1 + 2 ** -0.5) / 2, 0.005, 0.0])


def test_crop_flip_is_dassls_random_resized_crop_and_flip():
    """augment=crop_flip: Dassl's "random_resized_crop" (torchvision RandomResizedCrop, INPUT.RRCROP_SCALE
    (0.08, 1.0), the config's interpolation) and "random_flip" (RandomHorizontalFlip), always on, nothing else."""
    import dataclasses

    from torchvision import transforms as T

    from petlbench.loaders import augmented, train_transform
    from petlbench.task import ClassificationProtocol

    p = dataclasses.replace(ClassificationProtocol(), augment="crop_flip", img_size=32, interpolation="bicubic")
    assert augmented(p) and not augmented(dataclasses.replace(p, augment="petlbench"))
    ops = train_transform(p).transforms
    assert [type(o) for o in ops] == [T.RandomResizedCrop, T.RandomHorizontalFlip, T.PILToTensor]
    assert ops[0].scale == (0.08, 1.0) and ops[0].size == (32, 32)
    assert ops[0].interpolation == T.InterpolationMode.BICUBIC and ops[1].p == 0.5
    with_ra = dataclasses.replace(p, randaugment="rand-m9-mstd0.5-inc1")  # crop_flip never adds RandAugment
    assert [type(o) for o in train_transform(with_ra).transforms] == [type(o) for o in ops]
