"""`petlbench_vit_mini`: a 32 px ViT (patch 8, width 96, depth 6, 3 heads; 0.67M parameters) for the offline
mini-benchmark, built by timm's own ViT builder so every method and loader treats it as any timm ViT."""
from __future__ import annotations

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

default_cfgs = generate_default_cfgs({"petlbench_vit_mini": {
    "url": "", "num_classes": 0, "input_size": (3, 32, 32), "interpolation": "bicubic", "crop_pct": 1.0,
    "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "first_conv": "patch_embed.proj",
    "classifier": "head"}})


@register_model
def petlbench_vit_mini(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """The mini-benchmark's ViT; weights: the shipped petlbench:vit_mini_procedural file or none."""
    args = dict(img_size=32, patch_size=8, embed_dim=96, depth=6, num_heads=3, mlp_ratio=4.0)
    args.update(kwargs)
    return build_model_with_cfg(VisionTransformer, "petlbench_vit_mini", pretrained,
                                pretrained_filter_fn=checkpoint_filter_fn, **args)
