"""Backbone creation: timm names (and later open_clip / video), weights from a hub tag or a local file."""
from __future__ import annotations

import os
from typing import Any

import torch.nn as nn

from .errors import PETLBenchError, UnknownNameError
from .registry import did_you_mean


def check_backbone(name: str) -> None:
    """UnknownNameError for a name timm does not know, with the closest one."""
    import timm

    if not isinstance(name, str) or not timm.is_model(name):
        raise UnknownNameError(
            f"unknown backbone {name!r}{did_you_mean(str(name), timm.list_models())}; "
            f"list them with: python -c \"import timm; print(timm.list_models('vit_*'))\""
        )


def create_backbone(name: str, num_classes: int, pretrained: bool | str = False, **kwargs: Any) -> nn.Module:
    """A timm model `name` with a fresh `num_classes` head.

    `pretrained`: False (random init), True (timm's default tag for `name`, from the hub or its cache), or a
    path to a local checkpoint (.npz as Google released ViT-B_16.npz, .pth, .bin or .safetensors), which timm
    loads with its own key mapping. Extra keyword arguments go to `timm.create_model` (img_size, depth,
    drop_path_rate, class_token, ...).
    """
    import timm

    check_backbone(name)
    if isinstance(pretrained, str):
        path = os.path.expanduser(pretrained)
        if not os.path.isfile(path):
            raise PETLBenchError(f"pretrained checkpoint {pretrained!r} does not exist")
        kwargs["pretrained_cfg_overlay"] = dict(file=path)
        pretrained = True
    try:
        return timm.create_model(name, pretrained=bool(pretrained), num_classes=num_classes, **kwargs)
    except TypeError as e:  # an unknown timm kwarg
        raise PETLBenchError(f"backbone {name!r} does not accept {sorted(kwargs)}: {e}") from None


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the classification head (timm's `get_classifier()`)."""
    get = getattr(model, "get_classifier", None)
    head = get() if get is not None else None
    return list(head.parameters()) if isinstance(head, nn.Module) else []


def _register_mini() -> None:
    """`petlbench_vit_mini`: a 32 px ViT (patch 8, width 96, depth 6, 3 heads; 0.67M parameters) for the offline
    mini-benchmark, built by timm's own ViT builder so every method and loader treats it as any timm ViT."""
    from timm.models import register_model
    from timm.models._builder import build_model_with_cfg
    from timm.models._registry import generate_default_cfgs
    from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

    global default_cfgs  # timm's register_model reads the module's `default_cfgs`
    default_cfgs = generate_default_cfgs({"petlbench_vit_mini": {
        "url": "", "num_classes": 0, "input_size": (3, 32, 32), "interpolation": "bicubic", "crop_pct": 1.0,
        "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "first_conv": "patch_embed.proj",
        "classifier": "head"}})

    @register_model
    def petlbench_vit_mini(pretrained: bool = False, **kwargs):
        args = dict(img_size=32, patch_size=8, embed_dim=96, depth=6, num_heads=3, mlp_ratio=4.0)
        args.update(kwargs)
        return build_model_with_cfg(VisionTransformer, "petlbench_vit_mini", pretrained,
                                    pretrained_filter_fn=checkpoint_filter_fn, **args)


_register_mini()
