"""Tiny backbones for the method matrix: every registered method runs on each variant of the families it
supports (ViT variants, Swin, ConvNeXt with Linear and with 1x1-conv MLPs, a Bottleneck ResNet)."""
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

# Other families, small enough for the matrix: name -> (timm name, kwargs).
OTHER_VARIANTS = {
    "swin": ("swin_tiny_patch4_window7_224",
             dict(img_size=32, embed_dim=32, depths=(1, 1), num_heads=(2, 4), window_size=4)),
    # convnext_tiny's MLP is Linear on NHWC; conv_mlp=True (atto..nano) makes it 1x1 convs on NCHW. Layer scale
    # starts at 0.5, not timm's 1e-6 (a random block would otherwise hide its branch, and every check with it).
    "convnext": ("convnext_tiny", dict(dims=(16, 32, 32, 32), depths=(1, 1, 1, 1), ls_init_value=0.5)),
    "convnext_convmlp": ("convnext_tiny", dict(dims=(16, 32, 32, 32), depths=(1, 1, 1, 1), ls_init_value=0.5,
                                               conv_mlp=True)),
    # Bottleneck blocks (resnet50's), one per stage, 16-wide 3x3 convs. zero_init_last=False: timm zeroes each
    # block's last BN by default, which would hide the block's branch from every check.
    "resnet": ("resnet50", dict(layers=(1, 1, 1, 1), channels=(16, 16, 16, 16), stem_width=8, zero_init_last=False)),
}
VARIANTS = {**{v: (BACKBONE, kw) for v, kw in VIT_VARIANTS.items()}, **OTHER_VARIANTS}
FAMILY = {**{v: "vit" for v in VIT_VARIANTS}, "swin": "swin", "convnext": "convnext", "convnext_convmlp": "convnext",
          "resnet": "resnet"}


def build(method: str, variant: str = "vit_cls", method_cfg=None):
    backbone, kwargs = VARIANTS[variant]
    return petlbench.create_model(backbone, method=method, num_classes=NUM_CLASSES, pretrained=False,
                                  method_cfg=method_cfg, **kwargs)


def plain(variant: str):
    """The plain backbone of a variant, as timm (or open_clip) builds it (what a merged model must equal)."""
    from petlbench.backbones import create_backbone

    backbone, kwargs = VARIANTS[variant]
    return create_backbone(backbone, NUM_CLASSES, False, **kwargs)


def randomize_trainable(model, std: float = 0.05) -> None:
    """Give every trainable tensor random non-zero values (a zero-initialised B makes merging trivially exact)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * std)


def images(n: int = 4, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size)


def has_open_clip() -> bool:
    import importlib.util

    return importlib.util.find_spec("open_clip") is not None


# open_clip's ViT-B-16 architecture made small (the vision config replaced; text tower tiny, dropped after use).
OPENCLIP_TINY = dict(embed_dim=32, vision_cfg=dict(image_size=32, layers=2, width=64, patch_size=8, head_width=32),
                     text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))
if has_open_clip():
    OTHER_VARIANTS["openclip"] = ("openclip:ViT-B-16", OPENCLIP_TINY)
    VARIANTS["openclip"] = OTHER_VARIANTS["openclip"]
    FAMILY["openclip"] = "openclip"


def list_folder(root, name: str, classes: int, splits: dict[str, tuple[int, int]], n: int = 24) -> str:
    """A VTAB-format task folder `root/name`: `n` random 32x32 PNGs under images/, image i labelled i % classes,
    and one list file per split of `splits` (split -> (first, stop) image indices, as `lines[first:stop]`).
    Returns `root` as a string."""
    import numpy as np
    from PIL import Image

    folder = root / name
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "images" / f"{i}.png")
        lines.append(f"images/{i}.png {i % classes}\n")
    for split, (first, stop) in splits.items():
        (folder / f"{split}.txt").write_text("".join(lines[first:stop]))
    return str(root)
