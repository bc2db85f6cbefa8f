"""The video and segmentation recipes against the authors' files, without data: every protocol field each recipe
sets (the expected values quote the authors' lines: synbol/Parameter-Efficient-Transfer-Learning-Benchmark@c188fad,
ShoufaChen/AdaptFormer@6967d67, mmsegmentation 1.2.2's configs as installed), V-PETL's per-iteration lr and frame
indices against petlbench's, and the mmseg recipes against the shipped tasks' protocols, the shipped mmengine
configs and mmseg's own configs, so that none of them can drift from the others."""
from __future__ import annotations

import dataclasses
import math
import os
import random

import pytest

from petlbench.recipe import RECIPES, check_recipe
from petlbench.run import resolve
from petlbench.task import TASKS

T = "VideoActionRecognition/train/train_model_*.py"

# Every protocol field each recipe sets, as the authors' files set it (a field added to or changed in a recipe
# fails here until this table says so, with its source).
EXPECTED = {
    "vpetl-video": {
        "backbone": "videomae_vit_base_patch16_224",  # T:293-306 create_model(..., all_frames=, tubelet_size=2)
        "drop_path": 0.0,  # T:133 --drop_path default 0.0
        "epochs": 90,  # T:61 --epochs default 90; AdaptFormer README.md:49 --epochs 90
        "batch_size": 1024,  # AdaptFormer README.md:44 --nproc_per_node=8 --nnodes=8, :49 --batch_size 16
        "drop_last": True,  # T:233 drop_last=True
        "optimizer": "sgd", "momentum": 0.9,  # T:51-54 torch.optim.SGD(..., momentum=0.9)
        "lr": 0.4,  # T:73 --blr default 0.1; T:377 args.lr = args.blr * eff_batch_size / 256
        "weight_decay": 0.0,  # T:69 --weight_decay default 0
        "schedule": "per_step",  # engine_finetune.py:49-50 adjust_learning_rate(..., data_iter_step / len + epoch)
        "warmup_epochs": 10,  # T:79 --warmup_epochs default 10
        "warmup_lr": 0.0,  # utils/lr_sched.py:12 lr = args.lr * epoch / args.warmup_epochs
        "min_lr": 0.0,  # T:76 --min_lr default 0.
        "label_smoothing": 0.0,  # T:392 criterion = torch.nn.CrossEntropyLoss()
        "mixup": 0.0, "cutmix": 0.0,  # T:420-426 train_one_epoch(...) without mixup_fn
        "randaugment": "", "random_erasing": 0.0,  # kinetics.py:593-599 GroupMultiScaleCrop, Stack, ..., normalize
        "img_size": 224,  # T:151 --input_size default 224
        "interpolation": "bilinear",  # videomae_transforms.py:100 Image.BILINEAR; kinetics.py:83 'bilinear'
        "normalize": "imagenet",  # kinetics.py:589-590 IMAGENET_DEFAULT_MEAN unless --inception (T:159)
        "num_frames": 8,  # T:143 --num_frames default 8
        "frame_sampling": "dense",  # kinetics.py:620-621 new_length=args.num_frames, new_step=args.sampling_rate
        "frame_stride": 4,  # T:144 --sampling_rate default 4
        "test_clips": 4, "test_crops": 3,  # T:149 --test_num_segment default 4, T:150 --test_num_crop default 3
        "eval_every": 90,  # T:435 model_best = model; T:460 final_test(data_loader_test, model_best, ...)
        "eval_phase": "end",  # T:458-466 after the training loop
        "selection": "reproduction",  # T:460 the last epoch's weights, no selection
        "seed": 0,  # T:102 --seed default 0
    },
    "mmseg-setr-ade20k": {
        "seg_config": "setr_pup_vit-l16_ade20k_512",  # tasks/segmentation/configs/setr_pup_vit-l16_ade20k_512.py
        "backbone": "vit_large_patch16_224",  # _base_/models/setr_pup.py:20-22 embed_dims=1024, num_layers=24
        "weights": "vit_large_patch16_224.orig_in21k",  # ours :11 (mmseg: pretrain/vit_large_p16.pth, setr:15)
        "drop_path": 0.0,  # mmseg/models/backbones/vit.py:199 drop_path_rate=0.
        "img_size": 512,  # setr:5 crop_size = (512, 512)
        "batch_size": 16,  # setr:69 # num_gpus: 8 -> batch_size: 16; :70 train_dataloader = dict(batch_size=2)
        "max_iters": 160_000, "eval_every": 16_000,  # schedule_160k.py:16 max_iters=160000, val_interval=16000
        "optimizer": "sgd", "momentum": 0.9,  # schedule_160k.py:2 dict(type='SGD', lr=0.01, momentum=0.9, ...)
        "lr": 1e-3, "weight_decay": 0.0,  # setr:64 optimizer = dict(lr=0.001, weight_decay=0.0)
    },
    "mmseg-upernet-ade20k": {
        "seg_config": "upernet_vit-b16_ade20k_512",  # tasks/segmentation/configs/upernet_vit-b16_ade20k_512.py
        "backbone": "vit_base_patch16_224",  # _base_/models/upernet_vit-b16_ln_mln.py:19-21 768, 12 layers
        "weights": "vit_base_patch16_224.orig_in21k",  # ours :9 (mmseg: pretrain/vit_base_patch16_224.pth, :10)
        "drop_path": 0.0,  # _base_/models/upernet_vit-b16_ln_mln.py:27 drop_path_rate=0.0
        "img_size": 512,  # vit:6 crop_size = (512, 512)
        "batch_size": 16,  # vit:41 "8 GPUs with 2 images per GPU", :42 train_dataloader = dict(batch_size=2)
        "max_iters": 160_000, "eval_every": 16_000,  # schedule_160k.py:16
        "optimizer": "adamw",  # vit:19-20 optimizer=dict(type='AdamW', lr=0.00006, ..., weight_decay=0.01)
        "lr": 6e-5, "weight_decay": 0.01,  # vit:20
    },
    "vpetl-dense": {
        "backbone": "swin_large_patch4_window7_224",  # README.md:478 "Swin-L models pre-trained on ImageNet-22K"
        "weights": "swin_large_patch4_window7_224.ms_in22k",  # README.md:208 swin_large_patch4_window7_224_22k.pth
    },
}
REPOS = {
    "vpetl-video": "synbol/Parameter-Efficient-Transfer-Learning-Benchmark@c188fad2930fa2d1c07a8a64848427fd24ce6006",
    "vpetl-dense": "synbol/Parameter-Efficient-Transfer-Learning-Benchmark@c188fad2930fa2d1c07a8a64848427fd24ce6006",
    "mmseg-setr-ade20k": "open-mmlab/mmsegmentation@v1.2.2",
    "mmseg-upernet-ade20k": "open-mmlab/mmsegmentation@v1.2.2",
}
BENCHMARKS = {"vpetl-video": ("video",), "vpetl-dense": ("seg",), "mmseg-setr-ade20k": ("seg",),
              "mmseg-upernet-ade20k": ("seg",)}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_fields_equal_the_authors_files(name):
    r = RECIPES.get(name)
    check_recipe(r)
    assert {k: c.value for k, c in r.protocol.items()} == EXPECTED[name]
    assert r.repo == REPOS[name] and r.benchmarks == BENCHMARKS[name]
    cited = [c for c in r.protocol.values()] + [c for m in r.methods.values() for c in m.values()]
    assert all(c.source and any(ch.isdigit() for ch in c.source) for c in cited), "every field cites a file:line"
    assert r.deviations, "every recipe says what petlbench does differently"
    assert protocol_is_valid(r)


def protocol_is_valid(r) -> bool:
    """The recipe's values build a valid protocol of each task it is written for (its family's class)."""
    from petlbench.task import TASKS

    tasks = [TASKS.get(n) for n in TASKS.names() if TASKS.get(n).benchmark in r.benchmarks]
    return bool(tasks) and all(type(t.protocol)(**r.protocol_values()).validate() is None for t in tasks)


# --- video ----------------------------------------------------------------------------------------------------
def test_vpetl_video_adaptformer_setting():
    r = RECIPES.get("vpetl-video")
    # T:155 --ffn_num 64; T:256 ffn_option="parallel" (AdaptFormer's own module); T:259 ffn_adapter_scalar="0.1";
    # T:129 --drop 0.0 -> Adapter(dropout=drop)
    assert {m: r.method_values(m) for m in r.methods} == {"adaptformer": {"dim": 64, "scale": 0.1, "dropout": 0.0}}
    assert r.per_task == {}  # T:192-197: only --data_set and the class count differ between SSv2 and HMDB51


def test_vpetl_video_lr_follows_the_scaling_rule():
    p = RECIPES.get("vpetl-video").protocol_values()
    blr = 0.1  # T:73 --blr default 0.1
    assert p["lr"] == pytest.approx(blr * p["batch_size"] / 256)  # T:377


@pytest.mark.parametrize("task", ["video/ssv2", "video/hmdb51"])
def test_vpetl_video_resolves_on_both_tasks(task):
    spec = resolve(task, "adaptformer", {"recipe": "vpetl-video"})
    p = dataclasses.asdict(spec.protocol)
    assert p["recipe"] == "vpetl-video"
    assert {k: p[k] for k in EXPECTED["vpetl-video"]} == EXPECTED["vpetl-video"]
    # the dataset facts stay the task's
    tp = TASKS.get(task).protocol
    assert (p["train_split"], p["test_split"]) == (tp.train_split, tp.test_split)
    cfg = dataclasses.asdict(spec.method.cfg)
    assert (cfg["dim"], cfg["scale"], cfg["dropout"]) == (64, 0.1, 0.0)
    # a task's per-dataset method default still wins for another method (RepAdapter's video hidden size)
    assert resolve(task, "repadapter", {"recipe": "vpetl-video"}).method.cfg.dim == 2


def authors_lr(t: float, lr=0.4, warmup=10, epochs=90, min_lr=0.0) -> float:
    """utils/lr_sched.py:9-15 adjust_learning_rate at fractional epoch t = data_iter_step / len + epoch
    (engine_finetune.py:49-50)."""
    if t < warmup:
        return lr * t / warmup
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (t - warmup) / (epochs - warmup)))


def test_vpetl_video_per_step_schedule_equals_the_authors():
    from petlbench.engine import lr_schedule

    p = RECIPES.get("vpetl-video").protocol_values()
    steps = 7  # iterations per epoch
    got = lr_schedule(p["epochs"] * steps, p["warmup_epochs"] * steps, p["lr"], p["warmup_lr"], p["min_lr"])
    want = [authors_lr(e + i / steps) for e in range(p["epochs"]) for i in range(steps)]
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert got[0] == 0.0 and max(got) == pytest.approx(0.4)


def authors_train_indices(n: int, rng: random.Random, length=8, step=4) -> list[int]:
    """kinetics.py:543-584 VideoMAE._sample_train_indices + _video_TSN_decord_batch_loader with num_segments=1,
    new_length=8, new_step=4, temporal_jitter=False (build_training_dataset, kinetics.py:612-626)."""
    skip = length * step
    average_duration = n - skip + 1
    if average_duration > 0:
        offset = rng.randrange(average_duration)
    elif n > max(1, skip):
        offset = rng.randrange(n - skip + 1)
    else:
        offset = 0
    offset, ids = offset + 1, []
    for _ in range(0, skip, step):
        ids.append(offset - 1)  # skip_offsets are 0: offset + 0 <= n, or offset - 1 anyway
        if offset + step < n:
            offset += step
    return ids


def authors_test_indices(n: int, clip: int, clips=4, length=8, step=4) -> list[int]:
    """kinetics.py:269-275 every step-th frame, padded with the last to `length`; kinetics.py:170-176 clip `clip`
    starts int(clip * temporal_step) into them."""
    all_index = list(range(0, n, step))
    while len(all_index) < length:
        all_index.append(all_index[-1])
    temporal_step = max(1.0 * (len(all_index) - length) / (clips - 1), 0)
    start = int(clip * temporal_step)
    return all_index[start:start + length]


def test_vpetl_video_frame_indices_equal_the_authors():
    """Videos of at least num_frames x stride frames: the same train windows (a start uniform over the same range,
    frames 4 apart) and the same 4 test clips. Shorter videos differ (see the recipe's deviations): the authors
    repeat the last strided frame, petlbench clamps to the last frame."""
    from petlbench.tasks.video.clips import sample_indices

    p = RECIPES.get("vpetl-video").protocol_values()
    nf, stride, clips = p["num_frames"], p["frame_stride"], p["test_clips"]
    for n in range(nf * stride, 400):
        for k in range(clips):
            assert sample_indices(n, nf, "dense", stride, False, clip=k, num_clips=clips) == \
                authors_test_indices(n, k), (n, k)
        a, b = random.Random(n), random.Random(n)
        for _ in range(3):
            assert sample_indices(n, nf, "dense", stride, True, rng=a) == authors_train_indices(n, b), n
    # a 10-frame video: the authors' [0, 4, 8, 8, ...], petlbench's [0, 4, 8, 9, ...]
    assert authors_train_indices(10, random.Random(0)) == [0, 4, 8, 8, 8, 8, 8, 8]
    assert sample_indices(10, nf, "dense", stride, True, rng=random.Random(0)) == [0, 4, 8, 9, 9, 9, 9, 9]
    assert any("shorter" in d for d in RECIPES.get("vpetl-video").deviations)


def test_vpetl_video_published_rows_are_the_vit_b_rows():
    import pandas as pd

    from petlbench.tables import REFERENCE_DIR

    df = pd.read_csv(os.path.join(REFERENCE_DIR, "video_published.csv"))
    vit = df[df["backbone"] == "ViT-B (VideoMAE)"]
    assert sorted(set(vit["method"])) == ["AdaptFormer", "BAPAT", "Frozen", "Full fine-tuning"]
    assert set(vit["dataset"]) == {"ssv2", "hmdb51"}
    assert "ViT-B (VideoMAE)" in RECIPES.get("vpetl-video").protocol["backbone"].source


# --- segmentation ---------------------------------------------------------------------------------------------
SEG = {"seg/ade20k": ("mmseg-setr-ade20k", "setr/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py"),
       "seg/ade20k-upernet": ("mmseg-upernet-ade20k", "vit/vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py")}


@pytest.mark.parametrize("task", sorted(SEG))
def test_mmseg_recipe_equals_the_task_protocol(task):
    """The recipe's values are the shipped task's (so making it the task's default changes no number)."""
    from petlbench.tasks.segmentation.runner import SEG_FIELDS

    name, _ = SEG[task]
    values = RECIPES.get(name).protocol_values()
    tp = dataclasses.asdict(TASKS.get(task).protocol)
    assert values == {k: tp[k] for k in values}
    # only fields the segmentation runner sets, and the optimizer it checks against the config
    assert set(values) <= SEG_FIELDS | {"optimizer"}
    p = dataclasses.asdict(resolve(task, "lora", {"recipe": name}).protocol)
    assert {k: v for k, v in p.items() if k != "recipe"} == {k: v for k, v in tp.items() if k != "recipe"}


@pytest.mark.segmentation
@pytest.mark.parametrize("task", sorted(SEG))
def test_mmseg_recipe_equals_the_shipped_and_mmseg_configs(task):
    pytest.importorskip("mmengine")
    mmseg = pytest.importorskip("mmseg")
    from mmengine.config import Config

    from petlbench.tasks.segmentation import config_path

    name, theirs = SEG[task]
    p = RECIPES.get(name).protocol_values()
    ours = Config.fromfile(config_path(p["seg_config"]))
    mm = Config.fromfile(os.path.join(os.path.dirname(mmseg.__file__), ".mim", "configs", theirs))
    for cfg in (ours, mm):
        opt = cfg.optim_wrapper.optimizer
        assert (opt.type.lower(), opt.lr, opt.weight_decay) == (p["optimizer"], p["lr"], p["weight_decay"])
        if p["optimizer"] == "sgd":
            assert opt.momentum == p["momentum"]
        assert (cfg.train_cfg.max_iters, cfg.train_cfg.val_interval) == (p["max_iters"], p["eval_every"])
        assert 8 * cfg.train_dataloader.batch_size == p["batch_size"]  # the configs' 8 GPUs x 2
        assert tuple(cfg.crop_size) == (p["img_size"], p["img_size"])
        assert cfg.param_scheduler[-1].end == p["max_iters"]
        assert (cfg.optim_wrapper.get("paramwise_cfg") or {}) == (ours.optim_wrapper.get("paramwise_cfg") or {})
        assert [dict(s) for s in cfg.param_scheduler] == [dict(s) for s in ours.param_scheduler]
    assert ours.global_batch_size == p["batch_size"]
    bb = ours.model.backbone
    assert (bb.backbone, bb.weights, bb.drop_path_rate) == (p["backbone"], p["weights"], p["drop_path"])
    assert mm.model.backbone.get("drop_path_rate", 0.0) == p["drop_path"]  # mmseg's VisionTransformer default 0.
    depth = {"vit_large_patch16_224": 24, "vit_base_patch16_224": 12}[p["backbone"]]
    assert mm.model.backbone.get("num_layers") == depth
    # the one value that differs from mmseg's config, named in the recipe's deviations
    pretrained = mm.model.backbone.get("init_cfg", {}).get("checkpoint") or mm.model.pretrained
    assert pretrained in ("pretrain/vit_large_p16.pth", "pretrain/vit_base_patch16_224.pth")
    assert any(pretrained in d for d in RECIPES.get(name).deviations)


@pytest.mark.segmentation
@pytest.mark.parametrize("task", sorted(SEG))
def test_mmseg_recipe_reaches_the_runner_config(task):
    """build_config puts the recipe's values into the mmengine config a run trains with."""
    pytest.importorskip("mmengine")
    pytest.importorskip("mmseg")
    from petlbench.tasks.segmentation.runner import build_config

    name, _ = SEG[task]
    p = RECIPES.get(name).protocol_values()
    cfg = build_config(resolve(task, "lora", {"recipe": name}), "/nonexistent/ade", "/nonexistent/work")
    opt = cfg.optim_wrapper.optimizer
    assert (opt.lr, opt.weight_decay, opt.get("momentum", 0.9)) == (p["lr"], p["weight_decay"], p.get("momentum", 0.9))
    assert (cfg.train_cfg.max_iters, cfg.train_cfg.val_interval) == (p["max_iters"], p["eval_every"])
    assert cfg.train_dataloader.batch_size == p["batch_size"]  # one process: the global batch


@pytest.mark.parametrize("task", sorted(SEG))
def test_a_seg_run_accepts_its_recipe(task):
    from petlbench.tasks.segmentation.runner import check_protocol

    check_protocol(resolve(task, "lora", {"recipe": SEG[task][0]}))


def test_vpetl_dense_is_published_rows_only():
    import pandas as pd

    from petlbench.tables import REFERENCE_DIR

    r = RECIPES.get("vpetl-dense")
    df = pd.read_csv(os.path.join(REFERENCE_DIR, "dense_published.csv"))
    ade = df[df["dataset"] == "ade20k"]
    assert set(ade["backbone"]) == {"Swin-L"} and set(ade["pretraining"]) == {"ImageNet-22K"}
    assert len(ade) == 11
    assert set(r.protocol) == {"backbone", "weights"}  # nothing else is stated by the authors' files
    assert any("Published rows only" in d for d in r.deviations)
    assert any("Coming Soon" in d for d in r.deviations)
