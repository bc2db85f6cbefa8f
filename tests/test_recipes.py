"""Recipes against the authors' code, without data: every recipe field as the authors' scripts set it, the lr
of every epoch, which tensors decay, the train and test transforms against timm's / torchvision's with the
authors' arguments, the loss with Mixup and smoothing, the evaluation cadence, and the run-level plumbing
(identity with numerics, fp16 scaling, a JSON line per epoch, --dry-run).

The expected values quote the authors' files at the commits the recipes name (luogen1996/RepAdapter@360992f,
ZhangYuanhan-AI/NOAH@e9c55f3): changing a recipe field makes a test here fail."""
from __future__ import annotations

import dataclasses
import json
import math
import random

import numpy as np
import pytest
import torch

from petlbench.engine import (
    EvalSet,
    Execution,
    TensorBatches,
    build_optimizer,
    classification_loss,
    epoch_lrs,
    is_eval_epoch,
    make_mixup,
    train,
)
from petlbench.errors import ConfigError
from petlbench.recipe import RECIPES, check_recipe
from petlbench.run import resolve

from tiny import build

# Every protocol field each recipe sets, as the authors' code sets it (a field added to or changed in a recipe
# fails here until this table says so, with its source).
EXPECTED = {
    "repadapter-vtab": {
        "backbone": "vit_base_patch16_224",  # train.py:75 --model default 'vit_base_patch16_224_in21k'
        "weights": "vit_base_patch16_224.orig_in21k",  # train.py:95 checkpoint_path='./ViT-B_16.npz'
        "drop_path": 0.1,  # train.py:95 drop_path_rate=0.1
        "epochs": 100,  # train.py:145 epoch=100
        "batch_size": 64,  # dataset.py:64 batch_size=64
        "drop_last": True,  # dataset.py:102 drop_last=True
        "optimizer": "adamw",  # train.py:133 AdamW(trainable, lr=args.lr, weight_decay=args.wd)
        "lr": 1e-3,  # train.py:73 --lr default 1e-3
        "weight_decay": 1e-4,  # train.py:74 --wd default 1e-4
        "decay_filter": "all",  # train.py:133 one parameter group
        "schedule": "timm_epoch",  # train.py:134 CosineLRScheduler; train.py:46 scheduler.step(ep)
        "warmup_epochs": 10, "warmup_lr": 1e-6, "min_lr": 1e-5,  # train.py:135 warmup_t=10, warmup_lr_init, lr_min
        "img_size": 224, "interpolation": "bicubic",  # dataset.py:91 Resize((224, 224), interpolation=3)
        "normalize": "imagenet",  # dataset.py:64 mean=[0.485, ...], std=[0.229, ...]
        "test_crop_pct": 1.0,  # dataset.py:95 val_transform Resize((224, 224)), no crop
        "eval_every": 10, "eval_phase": "end",  # train.py:47 if ep % 10 == 9
        "selection": "reproduction",  # train.py:48-50 best test accuracy kept
        "seed": 42,  # train.py:72 --seed default 42
        "label_smoothing": 0.0, "mixup": 0.0, "cutmix": 0.0,  # train.py:142-144 CrossEntropyLoss, no mixup
        "randaugment": "", "random_erasing": 0.0,  # dataset.py:90-93 Resize + ToTensor + Normalize
        "train_split": "train800val200", "test_split": "test",  # dataset.py:86, :89
    },
    "noah-vtab": {
        "backbone": "vit_base_patch16_224", "weights": "vit_base_patch16_224.orig_in21k",  # --resume ViT-B_16.npz
        "drop_path": 0.1,  # supernet_train_prompt.py:59 --drop-path default 0.1
        "epochs": 100, "batch_size": 64,  # configs/*/VTAB/*.sh --epochs=100 --batch-size=64
        "drop_last": True,  # supernet_train_prompt.py:280
        "optimizer": "adamw",  # :74 --opt default 'adamw'
        "lr": 1e-3, "weight_decay": 1e-4,  # VTAB scripts LR in 0.001, WEIGHT_DECAY=0.0001
        "decay_filter": "timm",  # :365 create_optimizer (timm 0.5.4: filter_bias_and_bn=True)
        "schedule": "timm_epoch",  # :367 create_scheduler; :414 lr_scheduler.step(epoch)
        "warmup_epochs": 10, "warmup_lr": 1e-6, "min_lr": 1e-5,  # :107, :98, :100
        "img_size": 224, "interpolation": "bicubic",  # :54; lib/datasets.py:233 interpolation=3
        "normalize": "imagenet",  # lib/datasets.py:241
        "eval_every": 10, "eval_phase": "start",  # :205 --val_interval 10; :427 epoch % 10 == 0 or last
        "selection": "reproduction",  # :430 max_accuracy
        "seed": 0,  # :170 --seed default 0
        "label_smoothing": 0.0, "mixup": 0.0, "cutmix": 0.0,  # --smoothing=0 --mixup=0 --cutmix=0
        "randaugment": "", "random_erasing": 0.0,  # --no_aug
        "test_crop_pct": 1.0,  # --direct_resize
        "train_split": "train800val200", "test_split": "test",  # lib/datasets.py:26, :29
    },
    "noah-fewshot": {
        "backbone": "vit_base_patch16_224", "weights": "vit_base_patch16_224.orig_in21k",
        "drop_path": 0.1, "epochs": 100, "batch_size": 64, "drop_last": True, "optimizer": "adamw",
        "lr": 5e-3, "weight_decay": 1e-4,  # configs/*/few-shot/*.sh LR in 0.005, WEIGHT_DECAY=0.0001
        "decay_filter": "timm", "schedule": "timm_epoch", "warmup_epochs": 10, "warmup_lr": 1e-6, "min_lr": 1e-5,
        "img_size": 224, "interpolation": "bicubic", "normalize": "imagenet", "eval_every": 10,
        "eval_phase": "start", "selection": "reproduction", "seed": 0,
        "augment": "timm",  # lib/datasets.py:213-223 create_transform
        "color_jitter": 0.4,  # :117 --color-jitter default 0.4
        "randaugment": "rand-m9-mstd0.5-inc1",  # :119 --aa default
        "random_erasing": 0.25, "re_mode": "pixel", "re_count": 1,  # :133, :135, :137
        "mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1,  # :143, :145, :122
        "test_crop_pct": 224 / 256,  # no --direct_resize: lib/datasets.py:230-235 Resize((256, 256)), CenterCrop
    },
}
EXPECTED["noah-domain"] = EXPECTED["noah-fewshot"]  # configs/*/domain-generalization/*.sh: the same arguments
EXPECTED["repadapter-fewshot"] = {
    **{k: v for k, v in EXPECTED["repadapter-vtab"].items() if k not in (
        "label_smoothing", "mixup", "cutmix", "randaugment", "random_erasing", "train_split", "test_split")},
    "augment": "timm", "color_jitter": 0.4, "randaugment": "rand-m9-mstd0.5-inc1",  # dataset.py:72-77
    "random_erasing": 0.25, "re_mode": "pixel", "re_count": 1,  # dataset.py:78-80
    "mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1,  # train.py:138-140
}
# The baseline settings of NOAH's tables (NOAH's model file, model/supernet_vision_transformer_timm.py).
NOAH_METHODS = {
    "lora": {"rank": 8, "alpha": 8.0, "targets": "qkv", "fused": True, "init": "trunc_normal", "dropout": 0.1},
    "adapter": {"dim": 8, "act": "quickgelu", "dropout": 0.1, "scale": 1.0, "init": "trunc_normal",
                "placement": "after_drop_path"},
    "vpt": {"dropout": 0.1},  # --drop_rate_prompt default 0.1 (VPT's own default is 0.0)
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_fields_equal_the_authors_code(name):
    r = RECIPES.get(name)
    check_recipe(r)
    assert {k: c.value for k, c in r.protocol.items()} == EXPECTED[name]
    assert all(c.source and any(ch.isdigit() for ch in c.source) or "scripts" in c.source
               for c in r.protocol.values()), "every field cites a file and line"


@pytest.mark.parametrize("name", ["noah-vtab", "noah-fewshot", "noah-domain"])
def test_noah_baseline_settings(name):
    r = RECIPES.get(name)
    # NOAH on VTAB-1k searches the space its released sub-networks come from (supernet-B_prompt_VTAB.yaml)
    own = {"noah": {f"{k}_dims": "1,5,10" for k in ("prompt", "lora", "adapter")}} if name == "noah-vtab" else {}
    assert {m: r.method_values(m) for m in r.methods} == {**NOAH_METHODS, **own}
    if name == "noah-vtab":  # configs/VPT/VTAB/slurm_train_vpt_vtab.sh --inception
        assert r.protocol_values("vpt")["normalize"] == "inception"
        assert r.protocol_values("lora")["normalize"] == "imagenet"


def test_every_registered_recipe_is_well_formed():
    for name in RECIPES.names():
        check_recipe(RECIPES.get(name))


def test_task_defaults_and_recipe_override():
    assert resolve("vtab/cifar", "repadapter").protocol.recipe == "repadapter-vtab"
    assert resolve("fewshot/food101", "lora").protocol.recipe == "noah-fewshot"
    assert resolve("domain/imagenet", "lora").protocol.recipe == "noah-domain"
    spec = resolve("vtab/cifar", "lora", {"recipe": "noah-vtab"})
    assert dataclasses.asdict(spec.method.cfg) == NOAH_METHODS["lora"]
    assert spec.protocol.seed == 0 and spec.protocol.decay_filter == "timm"
    # the task's per-dataset value wins over the recipe's general one; an override wins over both
    assert resolve("vtab/cifar", "repadapter").method.cfg.scale == 0.1  # configs/repblock/cifar.yaml scale: 0.1
    assert resolve("vtab/cifar", "repadapter", {"scale": 5.0}).method.cfg.scale == 5.0
    assert resolve("vtab/cifar", "lora", {"recipe": "noah-vtab", "dropout": 0.0}).method.cfg.dropout == 0.0
    # the q/v LoRA stays, named as what it is, under RepAdapter's recipe
    assert resolve("vtab/cifar", "lora").method.cfg.fused is False
    with pytest.raises(ConfigError, match="recipe=noah-fewshot: written for fewshot tasks, not 'vtab/cifar'"):
        resolve("vtab/cifar", "lora", {"recipe": "noah-fewshot"})
    with pytest.raises(Exception, match="unknown recipe 'noah-vtb'.*did you mean 'noah-vtab'"):
        resolve("vtab/cifar", "lora", {"recipe": "noah-vtb"})
    # recipe="" is the task's own protocol: the per-step schedule stays available
    assert resolve("vtab/cifar", "lora", {"recipe": ""}).protocol.schedule == "per_step"


# --- schedule ----------------------------------------------------------------------------------------------
def authors_epoch_lrs(epochs, lr=1e-3, warmup_t=10, warmup_lr_init=1e-6, lr_min=1e-5):
    """The lr each epoch trains at in RepAdapter's loop (train.py:134-135, 45-46; NOAH's :367, :414): timm's
    CosineLRScheduler sets warmup_lr_init at construction, then step(ep) after epoch ep sets the lr of epoch
    ep + 1 to f(ep), f being timm's warm-up (t < warmup_t) or cosine at t (no warm-up prefix) over t_initial."""
    def f(t):
        if t < warmup_t:
            return warmup_lr_init + t * (lr - warmup_lr_init) / warmup_t
        return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * t / epochs))
    return [warmup_lr_init] + [f(t) for t in range(epochs - 1)]


def test_vpt_and_ssf_epoch_lrs():
    """VPT: WarmupCosineSchedule(warmup_steps=10, t_total=100) stepped once per epoch (src/solver/lr_scheduler.py:
    56-65, src/engine/trainer.py:221): epoch e trains at lr * e / 10, then lr * 0.5 * (1 + cos(pi * (e - 10) / 90)).
    SSF: timm's cosine stepped with step(epoch + 1) (train.py:709) plus 10 cooldown epochs at min_lr."""
    lr = 0.25
    vpt = epoch_lrs(100, lr, 10, 0.0, 0.0, "per_epoch")
    ref = [lr * e / 10 if e < 10 else lr * 0.5 * (1 + math.cos(math.pi * (e - 10) / 90)) for e in range(100)]
    assert vpt == pytest.approx(ref, abs=1e-12) and vpt[0] == 0.0
    ssf = epoch_lrs(100, 5e-3, 10, 1e-7, 1e-8, "timm_next_epoch", cooldown_epochs=10)
    def f(t):  # timm's cosine over t_initial=100, then min_lr once the cycle is over
        if t < 10:
            return 1e-7 + t * (5e-3 - 1e-7) / 10
        return 1e-8 + 0.5 * (5e-3 - 1e-8) * (1 + math.cos(math.pi * t / 100)) if t < 100 else 1e-8
    assert len(ssf) == 110 and ssf == pytest.approx([1e-7] + [f(t) for t in range(1, 110)], rel=1e-12)


def authors_schedule(schedule, epochs, lr, warmup, warmup_lr, min_lr, cooldown=0):
    """The lr of each epoch as the authors' loops produce it: timm's CosineLRScheduler (warm-up below warmup_t,
    cosine over t_initial=epochs, min_lr after) read after step(epoch) (RepAdapter train.py:46, NOAH :414) or
    step(epoch + 1) (SSF train.py:709); VPT's WarmupCosineSchedule(warmup, epochs) at the epoch index
    (src/solver/lr_scheduler.py:56-65, stepped once per epoch, trainer.py:221)."""
    def timm(t):
        if t < warmup:
            return warmup_lr + t * (lr - warmup_lr) / warmup
        return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t / epochs)) if t < epochs else min_lr
    total = epochs + cooldown
    if schedule == "timm_epoch":
        return [warmup_lr] + [timm(t) for t in range(total - 1)]
    if schedule == "timm_next_epoch":
        return [warmup_lr] + [timm(t) for t in range(1, total)]
    if schedule == "dassl_cosine":  # CoOp on Dassl: constant warm-up, then torch's cosine over `epochs` from lr,
        # first stepped when the warm-up ends (Dassl lr_scheduler.py@27eb2f4:21-26, :29-39; test_dassl_protocol.py)
        return [warmup_lr if e < warmup else min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * (e - warmup) /
                                                                                         epochs))
                for e in range(epochs)] + [min_lr] * cooldown
    assert schedule == "per_epoch"
    return [warmup_lr + (lr - warmup_lr) * e / warmup if e < warmup else
            min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * (e - warmup) / (epochs - warmup)))
            if e < epochs else min_lr for e in range(total)]


EPOCHWISE = [n for n in RECIPES.names() if RECIPES.get(n).protocol.get("schedule") and
             RECIPES.get(n).protocol["schedule"].value != "per_step"]


@pytest.mark.parametrize("name", EPOCHWISE)
@pytest.mark.parametrize("length", ["default", "overridden"])
def test_every_recipe_trains_each_epoch_at_the_authors_lr(name, length):
    """For every recipe with an epoch-wise schedule, at its default length and at an overridden one."""
    r = RECIPES.get(name)
    p = r.protocol_values(task=next(iter(r.per_task), None))  # SSF: the lr is per dataset
    epochs, warmup = (p["epochs"], p["warmup_epochs"]) if length == "default" else (24, 4)
    args = (p["schedule"], epochs, p["lr"], warmup, p["warmup_lr"], p["min_lr"], p.get("cooldown_epochs", 0))
    got = epoch_lrs(epochs, p["lr"], warmup, p["warmup_lr"], p["min_lr"], p["schedule"], p.get("cooldown_epochs", 0))
    assert got == pytest.approx(authors_schedule(*args), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("epochs,warmup", [(100, 10), (40, 10), (30, 3)])
def test_epoch_lrs_equal_the_authors_loop(epochs, warmup):
    got = epoch_lrs(epochs, 1e-3, warmup, 1e-6, 1e-5, "timm_epoch")
    assert got == pytest.approx(authors_epoch_lrs(epochs, warmup_t=warmup), rel=1e-12, abs=1e-15)
    if (epochs, warmup) == (100, 10):
        assert got[0] == got[1] == 1e-6 and max(got) < 1e-3  # the reading of train.py
        per_step = epoch_lrs(epochs, 1e-3, warmup, 1e-6, 1e-5, "per_step")
        assert abs(sum(per_step) / sum(got) - 1) > 0.05  # the per-step curve is another schedule


def test_the_training_loop_trains_each_epoch_at_the_recipe_lr(tmp_path):
    """engine.train itself, with the recipe's schedule fields (short, overridden length): the lr in each epoch's
    JSON line is the authors' lr of that epoch, and every epoch writes a line (epoch, lr, loss)."""
    p = resolve("vtab/cifar", "repadapter", {"epochs": 6, "warmup_epochs": 2}).protocol
    x, y = torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 5, (8,))
    log = tmp_path / "log.jsonl"
    train(build("repadapter"), TensorBatches(x, y, 4, True), [EvalSet("test", TensorBatches(x, y, 8, False))],
          epochs=p.epochs, lr=p.lr, weight_decay=p.weight_decay, warmup_epochs=p.warmup_epochs, warmup_lr=p.warmup_lr,
          min_lr=p.min_lr, schedule=p.schedule, eval_every=p.eval_every, eval_phase=p.eval_phase,
          execution=Execution(device="cpu"), log_path=str(log))
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert all({"epoch", "lr", "loss"} <= set(line) for line in lines)
    assert [line["lr"] for line in lines] == pytest.approx(authors_epoch_lrs(6, warmup_t=2), rel=1e-12)
    assert [line["epoch"] for line in lines if "test" in line] == [6]  # eval_every 10 > 6: the last only


@pytest.mark.parametrize("epochs", [100, 37])
def test_evaluation_epochs(epochs):
    end = [e for e in range(epochs) if is_eval_epoch(e, epochs, 10, "end")]
    start = [e for e in range(epochs) if is_eval_epoch(e, epochs, 10, "start")]
    assert end == sorted({e for e in range(epochs) if e % 10 == 9} | {epochs - 1})  # RepAdapter train.py:47
    assert start == [e for e in range(epochs) if e % 10 == 0 or e == epochs - 1]  # NOAH :427
    if epochs == 100:
        assert len(end) == 10 and len(start) == 11


# --- optimizer groups --------------------------------------------------------------------------------------
def noah_decay_split(model):
    """timm 0.5.4's add_weight_decay (NOAH's create_optimizer): trainable 1-D tensors, names ending in ".bias" and
    model.no_weight_decay() names get weight_decay 0."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") or name in skip else decay).append(name)
    return decay, no_decay


@pytest.mark.parametrize("method", ["ssf", "bitfit", "lora", "repadapter", "full"])
def test_which_tensors_decay(method):
    model = build(method)
    names = {id(p): n for n, p in model.named_parameters()}
    opt = build_optimizer(model, "adamw", 1e-3, 1e-4, decay_filter="timm")
    groups = {g["weight_decay"]: sorted(names[id(p)] for p in g["params"]) for g in opt.param_groups}
    decay, no_decay = noah_decay_split(model)
    assert groups.get(1e-4, []) == sorted(decay) and groups.get(0.0, []) == sorted(no_decay)
    if method in ("ssf", "bitfit"):  # all their tensors are 1-D: NOAH decays only the head's weight
        assert decay == ["head.weight"]
    opt = build_optimizer(model, "adamw", 1e-3, 1e-4, decay_filter="all")  # RepAdapter train.py:133
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 1e-4
    assert len(opt.param_groups[0]["params"]) == sum(p.requires_grad for p in model.parameters())


# --- transforms ---------------------------------------------------------------------------------------------
def _image(seed=0, size=(300, 240)):
    rng = np.random.default_rng(seed)
    from PIL import Image

    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("recipe,task",
                         [("noah-fewshot", "fewshot/food101"), ("repadapter-fewshot", "fewshot/food101")])
def test_train_transform_equals_timm_with_the_authors_arguments(recipe, task):
    """Our uint8 path (timm create_transform in its prefetcher form, ImageNet normalisation and RandomErasing on
    the normalised batch) gives, for a fixed seed and image, exactly timm's create_transform with NOAH's
    lib/datasets.py:214-223 / RepAdapter's dataset.py:72-81 arguments (which normalise and erase per image)."""
    from timm.data import create_transform
    from timm.data.random_erasing import RandomErasing

    from petlbench.engine import IMAGENET_MEAN, IMAGENET_STD
    from petlbench.loaders import _keep_posterize_bits, train_transform

    p = resolve(task, "linear", {"recipe": recipe}).protocol
    ours = train_transform(p)
    theirs = create_transform(input_size=224, is_training=True, color_jitter=0.4, auto_augment="rand-m9-mstd0.5-inc1",
                              interpolation="bicubic", re_prob=0.25, re_mode="pixel", re_count=1)
    for t in theirs.transforms:
        _keep_posterize_bits(t)  # the same 0-bit posterize fix on both sides (current Pillow rejects 0 bits)
    eraser = RandomErasing(p.random_erasing, mode=p.re_mode, max_count=p.re_count, device="cpu")
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    erased = 0
    for seed in range(12):
        img = _image(seed)
        random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
        a = ours(img)
        assert a.dtype == torch.uint8 and a.shape == (3, 224, 224)
        plain = (a[None].float() / 255 - mean) / std
        a = eraser(plain.clone())[0]
        erased += not torch.equal(a, plain[0])
        random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
        b = theirs(img)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert 0 < erased < 12  # erasing (p = 0.25) happened on some images, and matched there too


def test_erased_pixels_are_normal_noise_in_normalised_space():
    """Erasing after normalisation: an erased block is N(0, 1) noise there (not clamped [0, 1] pixels, which
    came out half black)."""
    from timm.data.random_erasing import RandomErasing

    torch.manual_seed(0), random.seed(0)
    x = torch.full((64, 3, 32, 32), 7.0)  # far from anything N(0, 1) draws
    out = RandomErasing(1.0, mode="pixel", device="cpu")(x.clone())
    noise = out[out != 7.0]
    assert noise.numel() > 1000 and abs(noise.mean().item()) < 0.05 and abs(noise.std().item() - 1) < 0.05


def test_test_transform_equals_the_authors():
    """NOAH few-shot (no --direct_resize): Resize((256, 256), 3) + CenterCrop(224) (lib/datasets.py:229-235);
    RepAdapter / NOAH VTAB: Resize((224, 224), 3) (dataset.py:95)."""
    from torchvision import transforms as T

    from petlbench.decode import resize_to_uint8

    img = _image(3, (333, 250))
    for crop_pct, ref in [(224 / 256, T.Compose([T.Resize((256, 256), interpolation=3), T.CenterCrop(224)])),
                          (1.0, T.Resize((224, 224), interpolation=3))]:
        ours = resize_to_uint8(224, "bicubic", crop_pct)(img)
        assert torch.equal(ours, T.PILToTensor()(ref(img)))
    assert resolve("fewshot/food101", "lora").protocol.test_crop_pct == 224 / 256


# --- loss ---------------------------------------------------------------------------------------------------
def test_loss_with_mixup_and_smoothing_equals_timm():
    """RepAdapter train.py:137-141 / NOAH :294-372: Mixup(0.8, 1.0, prob 1, switch 0.5, 'batch', smoothing 0.1)
    with SoftTargetCrossEntropy; without mixup, LabelSmoothingCrossEntropy (NOAH :373-374) / CrossEntropyLoss."""
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    mixer = make_mixup(0.8, 1.0, 0.1, 10)
    ref = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, cutmix_minmax=None, prob=1.0, switch_prob=0.5, mode="batch",
                label_smoothing=0.1, num_classes=10)
    for k in ("mixup_alpha", "cutmix_alpha", "cutmix_minmax", "mix_prob", "switch_prob", "mode", "label_smoothing",
              "num_classes"):
        assert getattr(mixer, k) == getattr(ref, k), k
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    logits = torch.randn(8, 10)
    for seed in range(4):
        np.random.seed(seed)
        xm, ym = mixer(x.clone(), y.clone())
        np.random.seed(seed)
        xr, yr = ref(x.clone(), y.clone())
        assert torch.equal(xm, xr) and torch.equal(ym, yr)
        torch.testing.assert_close(classification_loss(logits, ym), SoftTargetCrossEntropy()(logits, yr))
    torch.testing.assert_close(classification_loss(logits, y, 0.1), LabelSmoothingCrossEntropy(0.1)(logits, y))
    torch.testing.assert_close(classification_loss(logits, y), torch.nn.CrossEntropyLoss()(logits, y))
    assert make_mixup(0.0, 0.0, 0.1, 10) is None


# --- batches, numerics, identity ----------------------------------------------------------------------------
def test_drop_last_drops_the_partial_batch():
    x, y = torch.zeros(10, 3, 4, 4, dtype=torch.uint8), torch.arange(10)
    kept = TensorBatches(x, y, 4, True, drop_last=True)
    assert len(kept) == 2 and [len(b) for _, b in kept] == [4, 4]
    assert [len(b) for _, b in TensorBatches(x, y, 4, True)] == [4, 4, 2]
    assert len(TensorBatches(x[:3], y[:3], 4, True, drop_last=True)) == 1  # smaller than one batch: kept


def test_numerics_are_part_of_the_identity():
    fp32 = resolve("vtab/cifar", "lora", {"device": "cpu"})
    assert "numerics" not in fp32.identity()
    assert resolve("vtab/cifar", "lora", {"device": "cpu", "amp": "auto"}).config_hash == fp32.config_hash
    others = {resolve("vtab/cifar", "lora", {"device": "cpu", **o}).config_hash
              for o in ({"amp": "bf16"}, {"amp": "fp16"}, {"compile": True})}
    assert len(others) == 3 and fp32.config_hash not in others
    # execution options that do not change the numbers do not change the identity
    assert resolve("vtab/cifar", "lora", {"device": "cpu", "num_workers": 3}).config_hash == fp32.config_hash


def test_fp16_trains_with_a_grad_scaler(tmp_path):
    x, y = torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 5, (8,))
    model = build("lora")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    res = train(model, TensorBatches(x, y, 4, True), [], epochs=2, lr=1e-2, weight_decay=0.0,
                execution=Execution(device="cpu", amp="fp16"), resume_path=str(tmp_path / "r.pt"))
    assert all(math.isfinite(h["loss"]) for h in res.history)
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed  # the scaler unscaled and stepped (an unscaled fp16 step would often underflow to nothing)
    state = torch.load(tmp_path / "r.pt", weights_only=True)
    assert "scale" in state["scaler"]  # the resume state carries the scaler


def test_dry_run_prints_the_resolved_recipe_with_sources(tmp_path, capsys):
    from petlbench.cli import main

    rc = main(["run", "--task", "vtab/cifar", "--method", "lora", "--dry-run", "recipe=noah-vtab",
               "--store", str(tmp_path / "store")])
    out = capsys.readouterr().out
    assert rc == 0 and "recipe noah-vtab" in out
    assert "supernet_train_prompt.py:414 lr_scheduler.step(epoch)" in out  # the schedule's source
    assert "--drop_rate_LoRA default 0.1" in out  # the baseline setting's source
    assert not (tmp_path / "store").exists()  # nothing ran, nothing was written


def test_recipes_command_lists_and_shows(capsys):
    from petlbench.cli import main

    assert main(["recipes"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in EXPECTED)
    assert main(["recipes", "repadapter-vtab"]) == 0
    shown = capsys.readouterr().out
    assert "train.py:134-135 CosineLRScheduler" in shown and "luogen1996/RepAdapter@" in shown


def test_docs_list_the_recipes_side_by_side(capsys):
    """docs/recipes.md carries `petlbench recipes --markdown` as it is now: a changed recipe changes the docs."""
    import os

    from petlbench.cli import main

    assert main(["recipes", "--markdown"]) == 0
    table = capsys.readouterr().out.strip()
    docs = open(os.path.join(os.path.dirname(__file__), "..", "docs", "recipes.md"), encoding="utf-8").read()
    assert table in docs, "regenerate it: .venv/bin/python scripts/update_recipe_docs.py"


@pytest.mark.clip
def test_clip_towers_normalise_with_their_own_statistics():
    """open_clip backbones default to normalize=model: CLIP's mean/std from open_clip's pretrained config, not
    ImageNet's; a recipe or an override still decides when it says so."""
    pytest.importorskip("open_clip")
    from petlbench.loaders import input_normalization

    clip = {"backbone": "openclip:ViT-B-16", "weights": "openai", "drop_path": 0.0}
    p = resolve("mini/digits", "linear", clip).protocol
    assert p.normalize == "model"
    mean, std = input_normalization(p)
    assert mean == pytest.approx((0.48145466, 0.4578275, 0.40821073)) and std == pytest.approx(
        (0.26862954, 0.26130258, 0.27577711))
    assert resolve("mini/digits", "linear", {**clip, "normalize": "imagenet"}).protocol.normalize == "imagenet"
    assert resolve("mini/digits", "linear").protocol.normalize == "imagenet"  # timm backbones: unchanged
    assert input_normalization(resolve("vtab/cifar", "vpt", {"recipe": "noah-vtab"}).protocol) == (
        (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # NOAH's VPT: --inception
