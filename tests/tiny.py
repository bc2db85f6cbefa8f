"""Tiny backbones for the method matrix: every registered method runs on each of these ViT variants."""
from __future__ import annotations

import torch

import petlbench

TINY = dict(img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=2)

# name -> timm kwargs. Variants cover class token / average pooling / register tokens / LayerScale.
VIT_VARIANTS = {
    "vit_cls": dict(TINY),
    "vit_gap": dict(TINY, class_token=False, global_pool="avg"),
    "vit_reg_ls": dict(TINY, reg_tokens=2, init_values=1e-2),
}
BACKBONE = "vit_tiny_patch16_224"
NUM_CLASSES = 5


def build(method: str, variant: str = "vit_cls", method_cfg=None):
    return petlbench.create_model(BACKBONE, method=method, num_classes=NUM_CLASSES, pretrained=False,
                                  method_cfg=method_cfg, **VIT_VARIANTS[variant])


def randomize_trainable(model, std: float = 0.05) -> None:
    """Give every trainable tensor random non-zero values (a zero-initialised B makes merging trivially exact)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * std)


def images(n: int = 4, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size)
