"""Bottleneck adapter. Sequential (Houlsby et al. 2019, arXiv:1902.00751, in the single-adapter-after-MLP form
of the NOAH / RepAdapter VTAB baselines) or parallel (AdaptFormer, Chen et al. 2022, arXiv:2205.13535):

    sequential:  mlp'(x) = h + s * up(act(down(h))),   h = mlp(x)
    parallel:    mlp'(x) = mlp(x) + s * up(act(down(x)))

By default it wraps each block's `mlp`, whose input is norm2's output. (AdaptFormer's own code feeds the
parallel branch the block input before norm2; with the wrapper the branch sees the normalised input and passes
through LayerScale / drop-path with the MLP.) `up` starts at zero (init="zero_up"). The nonlinearity is the
point of the comparison: this method is not mergeable.

`placement="after_drop_path"` wraps the MLP branch's drop path instead (timm's `drop_path2`, site
"mlp_drop_path"): x + adapter(drop_path(mlp(norm2(x)))), the adapter outside stochastic depth, as NOAH's Block
(model/supernet_vision_transformer_timm.py:365); with LayerScale (which NOAH's ViT has not) after it too. Only
families with that site support it (ViT, Swin); the default placement runs on every family with an MLP.
With `act="quickgelu", dropout=0.1, init="trunc_normal"` it is NOAH's AdapterSuper (model/module/adapter_super.py
:8-10, 28-34, 68-74), whose xavier/normal(1e-6) init (adapter_super.py:38-45) the ViT's
`self.apply(_init_vit_weights)` redraws (supernet_vision_transformer_timm.py:462, :531, :686-688): weights
trunc_normal(std 0.02), biases zero, so `up` is not zero at the start.
Parameters per block: d*h + h + h*d + d; ViT-B/16, h=8: 156,768.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
from timm.layers import QuickGELU, trunc_normal_

from petlbench.config import added_later
from petlbench.errors import ConfigError
from petlbench.method import PETLMethod, Wrapper, register_method
from petlbench.sites import Site, channels_first, find_sites, replace_module


@dataclass
class AdapterConfig:
    dim: int = 8  # bottleneck width (NOAH's adapter baseline: 8)
    style: Literal["sequential", "parallel"] = "sequential"
    scale: float | None = None  # output scale s; None: 1.0 sequential, 0.1 parallel (AdaptFormer)
    # AdaptFormer's code: ReLU; NOAH's: QuickGELU, x * sigmoid(1.702 x)
    act: Literal["relu", "gelu", "quickgelu"] = "relu"
    dropout: float = 0.0  # between act and up (NOAH: --drop_rate_adapter, default 0.1)
    # "zero_up": down Kaiming-uniform, up and biases zero; "trunc_normal": both weights trunc_normal(std 0.02),
    # biases zero (what NOAH's ViT init leaves them at)
    init: Literal["zero_up", "trunc_normal"] = added_later("zero_up")
    # "mlp": wrap the MLP (inside LayerScale / drop path); "after_drop_path": wrap the MLP branch's drop path
    # (NOAH's order; ViT and Swin, sequential only)
    placement: Literal["mlp", "after_drop_path"] = added_later("mlp")

    def validate(self) -> str | None:
        if self.dim < 1:
            return f"dim must be positive, got {self.dim}"
        if self.placement == "after_drop_path" and self.style != "sequential":
            return "placement='after_drop_path' feeds the adapter the MLP branch's output: style must be sequential"
        return None


class AdapterMLP(Wrapper):
    """`base` (a block's MLP, or the drop path behind it) followed by, or in parallel with, a bottleneck of
    `width`. `in_dim` is the model width: read from the MLP's first layer when None."""

    def __init__(self, base: nn.Module, width: int, cfg: AdapterConfig, in_dim: int | None = None):
        super().__init__(base)
        if in_dim is None:
            first = _first_layer(base)
            self.channels_first = channels_first(first)  # ConvNeXt's 1x1-conv MLP works on NCHW
            d = first.in_channels if self.channels_first else first.in_features
        else:
            self.channels_first, d = False, in_dim
        self.parallel = cfg.style == "parallel"
        self.scale = cfg.scale if cfg.scale is not None else (0.1 if self.parallel else 1.0)
        self.down, self.up = nn.Linear(d, width), nn.Linear(width, d)
        if cfg.init == "trunc_normal":  # timm's trunc_normal_ (bounds +-2, i.e. ~100 std), as NOAH's init calls it
            trunc_normal_(self.down.weight, std=0.02)
            trunc_normal_(self.up.weight, std=0.02)
        else:
            nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
            nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.bias)
        self.act = {"relu": nn.ReLU, "gelu": nn.GELU, "quickgelu": QuickGELU}[cfg.act]()
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
        raise ConfigError(f"adapter: no Linear or Conv2d inside {type(mlp).__name__} to read the width from")
    return first


@register_method("adapter")
class Adapter(PETLMethod):
    config_cls = AdapterConfig
    mergeable = False  # the bottleneck's nonlinearity is the point of the comparison
    paper = "Houlsby et al. 2019, arXiv:1902.00751; AdaptFormer, arXiv:2205.13535"
    display_name = "Adapter"
    # AdaptFormer itself is `adaptformer` (its branch reads the block's stream and bypasses LayerScale / drop path)
    variants = {"adapter_parallel": ({"style": "parallel"}, "Adapter (parallel)")}

    def target_sites(self) -> tuple[str, ...]:
        return ("mlp",) if self.cfg.placement == "mlp" else ("mlp_drop_path",)

    def apply(self, model: nn.Module, family: str) -> nn.Module:
        if self.cfg.placement == "mlp":
            return super().apply(model, family)
        # the drop path has no width of its own: take it from the MLP of the same block
        width = {s.name.rpartition(".")[0]: _first_layer(s.module).in_features
                 for s in find_sites(model, family, "mlp")}
        for site in find_sites(model, family, "mlp_drop_path"):
            replace_module(model, site.name, AdapterMLP(site.module, self.cfg.dim, self.cfg,
                                                        in_dim=width[site.name.rpartition(".")[0]]))
        return model

    def wrap(self, site: Site) -> nn.Module:
        return AdapterMLP(site.module, self.cfg.dim, self.cfg)
