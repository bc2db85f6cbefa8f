"""Where methods attach: logical sites per backbone family, found by module name pattern and type.

A method asks for a site kind ("attn_in", "mlp_in", ...); this module knows which modules of which family
that means. Nothing here knows any method. A family's table is also what decides which methods it supports: one
that has every site kind a method requires (`PETLMethod.supported_families`). Adding a family is one entry in
`FAMILY_SITES` plus a detector. A backbone no family covers, or one whose modules miss a site its family has,
is a `ConfigError`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch.nn as nn

from .errors import ConfigError


@dataclass(frozen=True)
class SitePattern:
    """Modules whose full name matches `pattern` and that are instances of `types` (empty: any type)."""

    pattern: str
    types: tuple[type, ...] = ()
    doc: str = ""


# timm VisionTransformer (and its relatives that keep the `blocks.N.{norm1,attn,mlp}` layout).
_VIT = {
    "block": SitePattern(r"blocks\.\d+", (), "a transformer block (input: the residual stream)"),
    "attn_in": SitePattern(r"blocks\.\d+\.attn\.qkv", (nn.Linear,), "the fused qkv projection"),
    "attn_out": SitePattern(r"blocks\.\d+\.attn\.proj", (nn.Linear,), "the attention output projection"),
    "attn": SitePattern(r"blocks\.\d+\.attn", (), "the whole attention (input: norm1 output)"),
    "mlp": SitePattern(r"blocks\.\d+\.mlp", (), "the whole MLP (input: norm2 output)"),
    "mlp_in": SitePattern(r"blocks\.\d+\.mlp\.fc1", (nn.Linear,), "the first MLP linear"),
    "mlp_out": SitePattern(r"blocks\.\d+\.mlp\.fc2", (nn.Linear,), "the second MLP linear"),
    # timm's Block: x + drop_path2(ls2(mlp(norm2(x)))); a wrapper here sees the MLP branch after LayerScale and
    # stochastic depth (nn.Identity when drop_path_rate is 0)
    "mlp_drop_path": SitePattern(r"blocks\.\d+\.drop_path2", (), "the drop path behind the MLP (and LayerScale)"),
    "block_norm": SitePattern(r"blocks\.\d+\.norm[12]", (nn.LayerNorm,), "pre-attention and pre-MLP norms"),
    "final_norm": SitePattern(r"(norm|fc_norm)", (nn.LayerNorm,), "the norm before the head"),
    "patch_embed": SitePattern(r"patch_embed\.proj", (nn.Conv2d, nn.Conv3d), "the patch (or video tubelet) projection"),
}

# timm SwinTransformer: the ViT's block layout inside `layers.N.blocks.M` (window attention's fused qkv).
_B = r"layers\.\d+\.blocks\.\d+"
_SWIN = {
    "block": SitePattern(_B, (), "a Swin block"),
    "attn_in": SitePattern(_B + r"\.attn\.qkv", (nn.Linear,), "window attention's fused qkv projection"),
    "attn_out": SitePattern(_B + r"\.attn\.proj", (nn.Linear,), "window attention's output projection"),
    "mlp": SitePattern(_B + r"\.mlp", (), "the whole MLP (input: norm2 output)"),
    "mlp_in": SitePattern(_B + r"\.mlp\.fc1", (nn.Linear,), "the first MLP linear"),
    "mlp_out": SitePattern(_B + r"\.mlp\.fc2", (nn.Linear,), "the second MLP linear"),
    "mlp_drop_path": SitePattern(_B + r"\.drop_path2", (), "the drop path behind the MLP"),  # x + dp2(mlp(norm2(x)))
    "block_norm": SitePattern(_B + r"\.norm[12]", (nn.LayerNorm,), "pre-attention and pre-MLP norms"),
    "final_norm": SitePattern(r"norm", (nn.LayerNorm,), "the norm before the head"),
    "patch_embed": SitePattern(r"patch_embed\.proj", (nn.Conv2d,), "the patch projection"),
}

# timm ConvNeXt: the token mixer is the depthwise 7x7 conv, so "attn_in" is that conv; the MLP is Linear on
# NHWC (conv_mlp=False, convnext_tiny/small/base/large) or 1x1 Conv2d on NCHW (conv_mlp=True, atto..nano).
_C = r"stages\.\d+\.blocks\.\d+"
_CONVNEXT = {
    "block": SitePattern(_C, (), "a ConvNeXt block"),
    "attn_in": SitePattern(_C + r"\.conv_dw", (nn.Conv2d,), "the depthwise 7x7 conv (the token mixer)"),
    "mlp": SitePattern(_C + r"\.mlp", (), "the whole MLP (input: the block norm's output)"),
    "mlp_in": SitePattern(_C + r"\.mlp\.fc1", (nn.Linear, nn.Conv2d), "the first pointwise layer"),
    "mlp_out": SitePattern(_C + r"\.mlp\.fc2", (nn.Linear, nn.Conv2d), "the second pointwise layer"),
    "block_norm": SitePattern(_C + r"\.norm", (nn.LayerNorm,), "the block norm (LayerNorm or LayerNorm2d)"),
    "final_norm": SitePattern(r"head\.norm", (nn.LayerNorm,), "the norm before the head (LayerNorm2d)"),
    "patch_embed": SitePattern(r"stem\.0", (nn.Conv2d,), "the 4x4 stem conv"),
    "spatial_conv": SitePattern(_C + r"\.conv_dw", (nn.Conv2d,), "the block's spatial conv (the depthwise 7x7)"),
    "downsample": SitePattern(r"stages\.\d+\.downsample\.1", (nn.Conv2d,),
                              "the 2x2 stride-2 conv between stages (input: its LayerNorm2d's output)"),
}

# timm ResNet (BasicBlock or Bottleneck blocks in `layerN.M`). No "patch_embed": the stem conv has no bias for a
# shift to fold into (as open_clip's); no final norm.
_RN = r"layer\d+\.\d+"
_RESNET = {
    "block": SitePattern(_RN, (), "a residual block (input: the residual stream)"),
    "spatial_conv": SitePattern(_RN + r"\.conv2", (nn.Conv2d,),
                                "the block's spatial 3x3 conv (a Bottleneck's middle conv, a BasicBlock's second)"),
    "conv_out": SitePattern(_RN + r"\.conv3", (nn.Conv2d,),
                            "a Bottleneck's last 1x1 conv (input: the 3x3 conv after its BN and activation)"),
}

# open_clip's VisionTransformer inside petlbench's CLIPClassifier (`visual.`): attention is torch's
# nn.MultiheadAttention with a fused in_proj weight, so "attn_in" is that module and methods fold into
# in_proj_weight. Its patch conv (conv1) has no bias: an added shift there would not merge into a plain CLIP,
# so this family has no "patch_embed" site.
_R = r"visual\.transformer\.resblocks\.\d+"
_OPENCLIP = {
    "block": SitePattern(_R, (), "a residual attention block"),
    "attn_in": SitePattern(_R + r"\.attn", (nn.MultiheadAttention,), "attention with its fused in_proj"),
    # no "attn_out": nn.MultiheadAttention reads out_proj's tensors instead of calling it, so a wrapper there
    # would be bypassed; methods reach it through "attn_in" (SSF does)
    "mlp": SitePattern(_R + r"\.mlp", (), "the whole MLP (input: ln_2 output)"),
    "mlp_in": SitePattern(_R + r"\.mlp\.c_fc", (nn.Linear,), "the first MLP linear"),
    "mlp_out": SitePattern(_R + r"\.mlp\.c_proj", (nn.Linear,), "the second MLP linear"),
    "block_norm": SitePattern(_R + r"\.ln_[12]", (nn.LayerNorm,), "pre-attention and pre-MLP norms"),
    "final_norm": SitePattern(r"visual\.ln_post", (nn.LayerNorm,), "the norm before the projection"),
}

FAMILY_SITES: dict[str, dict[str, SitePattern]] = {"vit": _VIT, "swin": _SWIN, "convnext": _CONVNEXT,
                                                   "openclip": _OPENCLIP, "resnet": _RESNET}


def detect_family(model: nn.Module) -> str:
    """The family name of `model` ('vit', 'swin', 'convnext', 'openclip', 'resnet'), by isinstance; ConfigError for a
    backbone no family covers."""
    from timm.models.convnext import ConvNeXt
    from timm.models.resnet import ResNet
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.vision_transformer import VisionTransformer

    from .backbones import CLIPClassifier

    for cls, family in ((VisionTransformer, "vit"), (SwinTransformer, "swin"), (ConvNeXt, "convnext"),
                        (CLIPClassifier, "openclip"), (ResNet, "resnet")):
        if isinstance(model, cls):
            return family
    raise ConfigError(
        f"backbone of type {type(model).__name__} belongs to no known family; known: {', '.join(FAMILY_SITES)}"
    )


@dataclass(frozen=True)
class Site:
    """One place a method attaches: the module's full name, its site kind, and the module itself."""

    name: str
    kind: str
    module: nn.Module


def find_sites(model: nn.Module, family: str, kind: str, required: bool = True) -> list[Site]:
    """All modules of `model` at site `kind`, in model order. Raises when `required` and none match."""
    table = FAMILY_SITES[family]
    if kind not in table:
        known = sorted({k for t in FAMILY_SITES.values() for k in t})
        if kind not in known:  # a typo in a method's site list
            raise ConfigError(f"no backbone family has a site {kind!r}; sites: {', '.join(known)}")
        return []  # a site this family does not have (its table says so: ConvNeXt has no attn_out)
    spec = table[kind]
    rx = re.compile(spec.pattern + r"\Z")
    found = [
        Site(name, kind, mod)
        for name, mod in model.named_modules()
        if name and rx.match(name) and (not spec.types or isinstance(mod, spec.types))
    ]
    if required and not found:
        raise ConfigError(
            f"no module of this {family} backbone ({type(model).__name__}) matches site {kind!r} "
            f"(pattern {spec.pattern!r}, types {[t.__name__ for t in spec.types] or 'any'})"
        )
    return found


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` at dotted path `name` inside `model` (works through Sequential/ModuleList indices)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def channels_first(module: nn.Module) -> bool:
    """True when `module` takes and returns channels at dim 1 (NCHW): convolutions and timm's LayerNorm2d;
    False for channels-last layers (Linear, LayerNorm)."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return True
    return type(module).__name__ in ("LayerNorm2d", "LayerNormExp2d", "RmsNorm2d")
