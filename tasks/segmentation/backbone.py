"""`PETLViT`: a timm ViT with any petlbench method applied, as an mmsegmentation backbone (mmseg's MODELS
registry; mmseg configs select it with `backbone=dict(type="PETLViT", method="lora", ...)`).

The model inside is exactly what `petlbench.create_model` builds (wrapped sites, everything frozen except the
method's parameters), without a classification head, so counting, saving and merging are the suite's own.
`forward` returns the patch tokens after the blocks in `out_indices` as NCHW maps (B, C, H/16, W/16), the
multi-level features SETR, UperNet and FCN heads take. They are read by forward hooks on the blocks, so a method
that wraps a block (VPT's prompts) or a layer inside it works unchanged: the patch tokens are the last H*W of
each block's output, after the class / register / prompt tokens.

Inputs of any size: timm's dynamic image size (position embedding resampled to the grid) with padding to a
multiple of the patch size, as mmseg's own ViT pads ("corner"), so whole-image inference works as well as
512x512 sliding windows.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmseg.registry import MODELS

import petlbench
from petlbench.errors import ConfigError
from petlbench.weights import resolve_weights

VIT_MODULES = ("timm.models.vision_transformer", "timm.models.deit")  # timm's VisionTransformer class


def _require_vit(name: str) -> None:
    import timm

    from petlbench.backbones import check_backbone

    check_backbone(name)  # an unknown name: the suite's error with close matches
    module = timm.models.model_entrypoint(name.split(".")[0]).__module__
    if module not in VIT_MODULES:
        raise ConfigError(f"PETLViT: backbone {name!r} comes from {module}; PETLViT takes timm's plain ViTs "
                          f"(vit_*, deit_*)")


@MODELS.register_module()
class PETLViT(BaseModule):
    """mmseg backbone: timm ViT `backbone` (hub name) with petlbench method `method` applied.

    backbone, weights  timm name and weights (a timm pretrained tag, a local checkpoint file, or "" / "none" for a
                       random initialisation), as the `backbone` and `weights` protocol fields of petlbench.
    method, method_cfg any registered method and its options (RepAdapter: train_bias=True trains every backbone
                       bias, as the paper's segmentation setting).
    out_indices        blocks whose outputs are returned (0-based).
    final_norm         apply the ViT's final norm to the last returned level (mmseg's ViT option; off in
                       mmseg's SETR and UperNet configs).
    backbone_kwargs    further timm arguments (depth, embed_dim, patch_size, ...: the tests' tiny ViT).
    """

    def __init__(self, backbone: str = "vit_base_patch16_224", weights: str = "", method: str = "full",
                 method_cfg: dict[str, Any] | None = None, img_size: int = 512,
                 out_indices: Sequence[int] = (2, 5, 8, 11), drop_path_rate: float = 0.0, final_norm: bool = False,
                 backbone_kwargs: dict[str, Any] | None = None, init_cfg=None):
        super().__init__(init_cfg=None)
        if init_cfg:
            raise ConfigError("PETLViT: give the weights as weights=... (a timm tag or checkpoint file), not "
                              "init_cfg (mmseg's Pretrained loader knows mmseg's ViT keys, not timm's)")
        name, pretrained = resolve_weights(backbone, weights or "none")
        _require_vit(name)
        kwargs = dict(img_size=img_size, drop_path_rate=drop_path_rate, dynamic_img_size=True,
                      dynamic_img_pad=True, **(backbone_kwargs or {}))
        self.model = petlbench.create_model(name, method=method, num_classes=0, pretrained=pretrained,
                                            method_cfg=method_cfg, **kwargs)
        depth = len(self.model.blocks)
        out = [i if i >= 0 else depth + i for i in out_indices]
        if not out or any(not 0 <= i < depth for i in out):
            raise ConfigError(f"PETLViT: out_indices {tuple(out_indices)} outside the {depth} blocks of {backbone}")
        self.out_indices = tuple(out)
        self.final_norm = final_norm
        self.embed_dim = self.model.embed_dim

    def init_weights(self) -> None:
        """Nothing: the weights come from `create_model` (pretrained backbone, the method's own init). mmengine's
        default would call timm's `init_weights` and overwrite the pretrained backbone."""
        self._is_init = True

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, _, h, w = x.shape
        ph, pw = self.model.patch_embed.patch_size
        gh, gw = -(-h // ph), -(-w // pw)  # padded to a multiple of the patch size
        feats: dict[int, torch.Tensor] = {}

        def keep(i: int):
            def hook(_module, _inputs, output):
                feats[i] = output

            return hook

        handles = [self.model.blocks[i].register_forward_hook(keep(i)) for i in self.out_indices]
        try:
            self.model.forward_features(x)
        finally:
            for handle in handles:
                handle.remove()
        outs = []
        for i in self.out_indices:
            t = feats[i]
            if self.final_norm and i == self.out_indices[-1]:
                t = self.model.norm(t)
            t = t[:, t.shape[1] - gh * gw:]  # patch tokens: after class / register / prompt tokens
            outs.append(t.transpose(1, 2).reshape(b, -1, gh, gw).contiguous())
        return tuple(outs)


def merged_segmentor(segmentor: nn.Module) -> nn.Module:
    """A deep copy of an mmseg segmentor whose PETLViT backbone is merged (zero-cost inference); its heads are
    the same tensors' copies. mIoU of the two is equal up to float rounding (tests/test_segmentation.py)."""
    if not isinstance(getattr(segmentor, "backbone", None), PETLViT):
        raise ConfigError(f"merged_segmentor: {type(segmentor).__name__} has no PETLViT backbone")
    out = copy.deepcopy(segmentor)
    out.backbone.model = petlbench.merge(out.backbone.model)  # MergeError for a method that does not merge
    out.backbone.model.requires_grad_(False)
    return out
