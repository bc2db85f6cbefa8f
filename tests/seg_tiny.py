"""A tiny ADE20K-layout dataset and a tiny SETR config for the segmentation tests (CPU, seconds)."""
from __future__ import annotations

import os
import textwrap

import numpy as np
from PIL import Image

# Class k (1-based, as ADE20K's PNGs) is drawn in COLORS[k - 1]; the model learns colour -> class.
COLORS = [(220, 40, 40), (40, 200, 60), (50, 60, 220)]
TINY_VIT = dict(depth=4, embed_dim=64, num_heads=2, patch_size=8)


def make_ade(root: str, n_train: int = 8, n_val: int = 4, size: int = 64, seed: int = 0) -> str:
    """<root>/ADEChallengeData2016/{images,annotations}/{training,validation}: each image has two halves (top /
    bottom, or left / right) of two class colours with noise; the annotation holds their ADE20K values
    (1..3), with a 4-pixel unlabelled (0) border between the halves. Returns `root`."""
    rng = np.random.default_rng(seed)
    base = os.path.join(root, "ADEChallengeData2016")
    for split, n in (("training", n_train), ("validation", n_val)):
        os.makedirs(os.path.join(base, "images", split), exist_ok=True)
        os.makedirs(os.path.join(base, "annotations", split), exist_ok=True)
        for i in range(n):
            a, b = rng.choice(len(COLORS), size=2, replace=False) + 1
            ann = np.full((size, size), a, np.uint8)
            cut = int(rng.integers(size // 4, 3 * size // 4))
            if rng.random() < 0.5:
                ann[cut:] = b
                ann[cut - 2: cut + 2] = 0
            else:
                ann[:, cut:] = b
                ann[:, cut - 2: cut + 2] = 0
            img = np.zeros((size, size, 3), np.float32)
            for k in (a, b):
                img[ann == k] = COLORS[k - 1]
            img[ann == 0] = 128
            img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
            stem = f"ADE_{split[:5]}_{i:08d}"
            Image.fromarray(img).save(os.path.join(base, "images", split, stem + ".jpg"), quality=95)
            Image.fromarray(ann).save(os.path.join(base, "annotations", split, stem + ".png"))
    return root


def tiny_config(path: str, base: str = "setr_pup_vit-l16_ade20k_512", size: int = 64) -> str:
    """A user config inheriting a shipped one, shrunk for the CPU: a 4-block ViT of width 64 at patch 8, heads of
    16 channels, pipelines at `size`. Returns `path`."""
    from petlbench.tasks.segmentation import CONFIG_DIR

    heads = {
        "setr_pup_vit-l16_ade20k_512": """
            decode_head=dict(in_channels=64, channels=16, num_convs=2),
            auxiliary_head=[dict(type="SETRUPHead", in_channels=64, channels=16, in_index=i, num_classes=150,
                                 dropout_ratio=0, norm_cfg=dict(type="SyncBN", requires_grad=True), num_convs=1,
                                 kernel_size=3, align_corners=False,
                                 loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.4))
                            for i in (0, 1, 2)],""",
        "upernet_vit-b16_ade20k_512": """
            neck=dict(in_channels=[64, 64, 64, 64], out_channels=32),
            decode_head=dict(in_channels=[32, 32, 32, 32], channels=16),
            auxiliary_head=dict(in_channels=32, channels=16),""",
    }[base]
    text = f"""
        _base_ = [{os.path.join(CONFIG_DIR, base + ".py")!r}]
        train_pipeline = [
            dict(type="LoadImageFromFile"),
            dict(type="LoadAnnotations", reduce_zero_label=True),
            dict(type="RandomResize", scale=({2 * size}, {size}), ratio_range=(0.75, 1.5), keep_ratio=True),
            dict(type="RandomCrop", crop_size=({size}, {size}), cat_max_ratio=0.75),
            dict(type="RandomFlip", prob=0.5),
            dict(type="PackSegInputs"),
        ]
        test_pipeline = [
            dict(type="LoadImageFromFile"),
            dict(type="Resize", scale=({2 * size}, {size}), keep_ratio=True),
            dict(type="LoadAnnotations", reduce_zero_label=True),
            dict(type="PackSegInputs"),
        ]
        train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
        val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
        test_dataloader = val_dataloader
        model = dict(
            backbone=dict(out_indices=(0, 1, 2, 3), backbone_kwargs={TINY_VIT!r}),{heads}
        )
        default_hooks = dict(visualization=dict(type="SegVisualizationHook", draw=False))
        """
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(text))
    return path


TINY_OVERRIDES = dict(backbone="vit_tiny_patch16_224", weights="none", img_size=64, batch_size=4, max_iters=30,
                      eval_every=15, num_workers=0)
