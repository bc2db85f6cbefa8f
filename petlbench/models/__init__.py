"""Backbones petlbench defines, registered with timm the way timm's own model files are: each module holds its
`default_cfgs` and `@register_model` entry points, so importing this package makes `timm.create_model(name)` and
`timm.models.get_pretrained_cfg(name)` know them.

    petlbench_vit_mini              vit_mini.py   the offline mini-benchmark's 32 px ViT
    videomae_vit_base_patch16_224   videomae.py   VideoMAE ViT-B/16 (AdaptFormer's video backbone)
"""
from . import videomae, vit_mini

__all__ = ["videomae", "vit_mini"]
