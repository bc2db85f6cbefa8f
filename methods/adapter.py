"""Bottleneck adapter. Sequential (Houlsby et al. 2019, arXiv:1902.00751, in the single-adapter-after-MLP form
of the NOAH / RepAdapter VTAB baselines) or parallel (AdaptFormer, Chen et al. 2022, arXiv:2205.13535):

    sequential:  mlp'(x) = h + s * up(act(down(h))),   h = mlp(x)
    parallel:    mlp'(x) = mlp(x) + s * up(act(down(x)))

It wraps each block's `mlp`, whose input is norm2's output. (AdaptFormer's own code feeds the parallel
branch the block input before norm2; with the wrapper the branch sees the normalised input and passes
through LayerScale / drop-path with the MLP.) `up` starts at zero. The nonlinearity is the point of the
comparison: this method is not mergeable.
Parameters per block: d*h + h + h*d + d; ViT-B/16, h=8: 156,768.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

from petlbench.method import PETLMethod, Wrapper, register_method
from petlbench.sites import Site, channels_first


@dataclass
class AdapterConfig:
    dim: int = 8  # bottleneck width (NOAH's adapter baseline: 8)
    style: Literal["sequential", "parallel"] = "sequential"
    scale: float | None = None  # output scale s; None: 1.0 sequential, 0.1 parallel (AdaptFormer)
    act: Literal["relu", "gelu"] = "relu"  # AdaptFormer's code: ReLU
    dropout: float = 0.0

    def validate(self) -> str | None:
        return None if self.dim >= 1 else f"dim must be positive, got {self.dim}"


class AdapterMLP(Wrapper):
    def __init__(self, base: nn.Module, width: int, cfg: AdapterConfig):
        super().__init__(base)
        first = _first_layer(base)
        self.channels_first = channels_first(first)  # ConvNeXt's 1x1-conv MLP works on NCHW
        d = first.in_channels if self.channels_first else first.in_features
        self.parallel = cfg.style == "parallel"
        self.scale = cfg.scale if cfg.scale is not None else (0.1 if self.parallel else 1.0)
        self.down, self.up = nn.Linear(d, width), nn.Linear(width, d)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.act = nn.ReLU() if cfg.act == "relu" else nn.GELU()
        self.drop = nn.Dropout(cfg.dropout)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_first:  # NCHW: the same bottleneck on the channel dim
            x = x.movedim(1, -1)
        h = self.scale * self.up(self.drop(self.act(self.down(x))))
        return h.movedim(-1, 1) if self.channels_first else h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base(x)
        return h + self.branch(x if self.parallel else h)


def _first_layer(mlp: nn.Module) -> nn.Module:
    """The MLP's first Linear or 1x1 conv (ConvNeXt's conv_mlp), whose input width is the model's width."""
    first = next((m for m in mlp.modules() if isinstance(m, (nn.Linear, nn.Conv2d))), None)
    if first is None:
        raise ValueError(f"adapter: no Linear or Conv2d inside {type(mlp).__name__} to read the width from")
    return first


@register_method("adapter")
class Adapter(PETLMethod):
    config_cls = AdapterConfig
    sites = ("mlp",)
    mergeable = False
    families = ("vit", "swin", "convnext", "openclip")
    paper = "Houlsby et al. 2019, arXiv:1902.00751; AdaptFormer, arXiv:2205.13535"

    def wrap(self, site: Site) -> nn.Module:
        return AdapterMLP(site.module, self.cfg.dim, self.cfg)
