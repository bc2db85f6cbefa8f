"""Convpass: "Convolutional Bypasses Are Better Vision Transformer Adapters", Jie & Deng, 2022 (arXiv:2207.07039).

A convolutional bypass beside attention and beside the MLP of every block, fed the same norm output:

    x = x + attn(norm1(x)) + s * C_a(norm1(x)),   x = x + mlp(norm2(x)) + s * C_m(norm2(x))
    C(h) = up(drop(act(conv3x3(act(down(h))))))        act = QuickGELU, drop = Dropout(0.1)

(the authors' JieShibo/PETL-ViT@026e4f1 convpass/vtab/convpass.py:7-10, :129-149; line numbers here are of
that commit). The 3x3 conv runs on the patch tokens laid out as the patch grid; the class token goes through
the same conv as a 1x1 grid (:139-141), where zero padding leaves only the centre tap and the bias.
`where="attn"` is their Convpass-attn (:13-16): the attention bypass only.
Init (:110-123): down Xavier-uniform, up zero, biases zero; the conv is the identity on its centre tap, or
Xavier-uniform with `xavier_init` (their per-dataset yaml says which).

Ours wraps each block's `attn` and `mlp` (their input is norm1 / norm2's output), so the sum passes through
the block's LayerScale (absent from the authors' ViT) and one drop-path mask (theirs: an independent mask for the
bypass, the same rate); in eval without LayerScale the outputs are the same. Beyond the authors' code, which
fixes a 14 x 14 grid and one class token: the grid is the backbone's `patch_embed.grid_size` (any H x W), and
every prefix token (class and register tokens) is a 1x1 grid as the class token is; a ViT without prefix tokens
convolves all its tokens; a video ViT's tubelet grid (T, H, W) is T grids of H x W (the conv stays spatial).
With `dynamic_img_size` the grid of each input is taken as square (as the authors' Swin bypass does,
convpass.py:175). A token count the grid does not explain (a non-square input there, another input size) and
patch dropout are ConfigErrors.
Not mergeable: the 3x3 conv sits between two QuickGELUs, so no plain layer computes the bypass.
Parameters per bypass: d*k + k + 9*k*k + k + k*d + d; ViT-B/16 (d=768, k=8): 13,648 each, 24 of them:
327,552 (the paper's 0.33M); Convpass-attn: 163,776 (0.16M).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
from timm.layers import QuickGELU

from petlbench.config import not_positive, not_probability
from petlbench.errors import ConfigError
from petlbench.method import PETLMethod, Wrapper, register_method
from petlbench.sites import find_sites, replace_module


@dataclass
class ConvpassConfig:
    dim: int = 8  # bottleneck channels k (convpass/vtab/train.py:69 set_Convpass(model, ..., dim=8, ...))
    scale: float = 1.0  # s (convpass.py:188 set_Convpass(..., s=1, ...); per dataset: configs/*/<task>.yaml:3)
    xavier_init: bool = False  # conv init (convpass.py:188 xavier_init=False, :111-115; per dataset: yaml:4)
    where: Literal["attn_mlp", "attn"] = "attn_mlp"  # run.sh:3 --method convpass, run.sh:8 convpass_attn
    dropout: float = 0.1  # before up (convpass.py:126 nn.Dropout(0.1))

    def validate(self) -> str | None:
        return not_positive(dim=self.dim) or not_probability(dropout=self.dropout)


class ConvpassBranch(Wrapper):
    """`base(h) + scale * C(h)` on tokens (B, N, width): the last T*H*W tokens are the patch grid (`grid`: T
    slices of H x W, T = 1 but for video), the first `prefix` tokens each a 1x1 grid."""

    def __init__(self, base: nn.Module, width: int, grid: tuple[int, int, int] | None, prefix: int,
                 cfg: ConvpassConfig):
        super().__init__(base)
        k = cfg.dim
        self.grid, self.prefix, self.scale = grid, prefix, cfg.scale
        # created in the authors' order (conv, down, up: convpass.py:110, :118-119)
        self.conv = nn.Conv2d(k, k, 3, 1, 1)
        if cfg.xavier_init:
            nn.init.xavier_uniform_(self.conv.weight)
        else:  # the identity on the centre tap (convpass.py:114-115)
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.weight[:, :, 1, 1] = torch.eye(k)
        nn.init.zeros_(self.conv.bias)
        self.down, self.up = nn.Linear(width, k), nn.Linear(k, width)
        nn.init.xavier_uniform_(self.down.weight)
        for t in (self.down.bias, self.up.weight, self.up.bias):
            nn.init.zeros_(t)
        self.act = QuickGELU()
        self.drop = nn.Dropout(cfg.dropout)

    def bypass(self, h: torch.Tensor) -> torch.Tensor:
        B, N, _ = h.shape
        p = self.prefix
        if self.grid is None:  # dynamic image size: a square grid, as the authors' Swin bypass (convpass.py:175)
            side = math.isqrt(N - p)
            if side * side != N - p:
                raise ConfigError(f"convpass on a dynamic-size ViT: {N - p} patch tokens are not a square grid")
            T, H, W = 1, side, side
        else:
            T, H, W = self.grid
        if N != p + T * H * W:
            grid = "x".join(map(str, (H, W) if T == 1 else (T, H, W)))
            raise ConfigError(f"convpass: {N} tokens, but the backbone was built for {p} prefix tokens and a "
                              f"{grid} patch grid (use the img_size the model was created with)")
        z = self.act(self.down(h))
        k = z.shape[-1]
        # a video's tubelet grid (T, H, W): each of the T slices is a grid of its own (the conv is spatial)
        patches = z[:, p:].reshape(B * T, H, W, k).permute(0, 3, 1, 2)
        parts = [self.conv(patches).permute(0, 2, 3, 1).reshape(B, T * H * W, k)]
        if p:  # each prefix token alone: a 1x1 grid (convpass.py:139-141)
            parts.insert(0, self.conv(z[:, :p].reshape(B * p, k, 1, 1)).reshape(B, p, k))
        return self.up(self.drop(self.act(torch.cat(parts, dim=1))))

    def forward(self, h: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.base(h, *args, **kwargs) + self.scale * self.bypass(h)


def _token_layout(model: nn.Module) -> tuple[tuple[int, int, int] | None, int]:
    """(patch grid (T, H, W), T = 1 but for a video's tubelets, None for a dynamic image size; number of prefix
    tokens) of a timm VisionTransformer, or ConfigError when patch tokens can be dropped."""
    if not isinstance(getattr(model, "patch_drop", nn.Identity()), nn.Identity):
        raise ConfigError("convpass needs every patch token on its grid: build the backbone with patch_drop_rate=0")
    if getattr(model, "dynamic_img_size", False):
        return None, int(model.num_prefix_tokens)  # the grid of each input, taken as square
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if grid is None or len(grid) not in (2, 3) or not hasattr(model, "num_prefix_tokens"):
        raise ConfigError(f"convpass: {type(model).__name__} has no 2-D (or video T x H x W) "
                          f"patch_embed.grid_size and num_prefix_tokens")
    t, h, w = (1, *grid) if len(grid) == 2 else grid
    return (int(t), int(h), int(w)), int(model.num_prefix_tokens)


@register_method("convpass")
class Convpass(PETLMethod):
    config_cls = ConvpassConfig
    # the bypass needs the patch grid and the prefix tokens of a plain timm ViT (the authors' Swin bypass is
    # another module, without a class token)
    only_families = ("vit",)
    mergeable = False  # the 3x3 conv between two QuickGELUs: no plain layer computes the bypass
    paper = "Jie & Deng 2022, arXiv:2207.07039"
    display_name = "Convpass"
    variants = {"convpass_attn": ({"where": "attn"}, "Convpass-attn")}

    def target_sites(self) -> tuple[str, ...]:
        return ("attn",) if self.cfg.where == "attn" else ("attn", "mlp")

    def apply(self, model: nn.Module, family: str) -> nn.Module:
        grid, prefix = _token_layout(model)
        width = model.embed_dim
        sites = [s for kind in self.target_sites() for s in find_sites(model, family, kind)]
        # block by block, attention's bypass before the MLP's (the authors' order: convpass.py:192-193)
        block = {s.name: s.name.rpartition(".")[0] for s in sites}
        for site in sorted(sites, key=lambda s: (int(block[s.name].rpartition(".")[2]), s.kind != "attn")):
            replace_module(model, site.name, ConvpassBranch(site.module, width, grid, prefix, self.cfg))
        return model
