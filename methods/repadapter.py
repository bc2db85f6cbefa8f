"""RepAdapter: "Towards Efficient Visual Adaption via Structural Re-parameterization", Luo et al., 2023
(arXiv:2302.08106). A linear adapter in front of a layer (eq. 4 of the paper):

    x' = x + s * B(dropout(A x + b_A)) + s * b_B,      A: dense d -> h,  B: group-wise h -> d (g groups)

before the attention input ("attn"), the first MLP layer ("mlp"), or both (the paper's RepAdapter). With no
nonlinearity it is, in eval mode, x' = M x + c, M = I + s W_B W_A, c = s (W_B b_A + b_B), W_B block-diagonal,
which folds into the next layer (eq. 7): W' = W M, b' = b + W c. It is an input residual
(`method.InputResidual`): this file gives the residual and its (F, c); the form base applies it before a
Linear, a conv (on channels) or nn.MultiheadAttention (open_clip's fused in_proj) and merges it. B starts at
zero, so training starts from the backbone. Parameters per adapter: d*h + h (A) + d*h/g + d (B); ViT-B/16,
h=8, g=2, both places: 239,808 with biases, 221,184 weights only (the paper's "0.22M", `paper_count`).

ConvNeXt: the token mixer is the depthwise 7x7 conv, so the "attn" adapter sits before `conv_dw` (a 1x1
adapter, as in the paper's code). It mixes channels, which a depthwise conv cannot absorb, so the published
configuration does not merge there (`merge_blocker`); `dw_adapter="channel"` puts a per-channel scale
x' = x * (1 + s a) there instead (`method.InputScale`), which folds exactly (no shift: it would not commute
with the conv's zero padding). The MLP-side adapter always merges.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

from petlbench.backbones import head_parameters
from petlbench.config import added_later
from petlbench.errors import ConfigError
from petlbench.method import InputResidual, InputScale, PETLMethod, own_biases, register_method
from petlbench.sites import Site


@dataclass
class RepAdapterConfig:
    dim: int = 8  # hidden size h (paper: 8 for images, 2 for video)
    groups: int = 2  # groups g of B (paper: 2)
    scale: float = 1.0  # s; searched per dataset over {0.1, 0.5, 1, 5, 10} (tasks carry the published values)
    where: Literal["both", "attn", "mlp"] = "both"  # paper's RepAdapter = both; RepAdapter_attn = attn
    dropout: float = 0.1  # on the hidden activations (paper's code: 0.1)
    # ConvNeXt only: the adapter before the depthwise conv; "dense" as published (does not merge), or
    # "channel": a per-channel scale that merges exactly
    dw_adapter: Literal["dense", "channel"] = added_later("dense")
    # Also train every bias of the backbone (each module's own `bias` parameter: Linear, conv, LayerNorm), as
    # the paper does for ADE20K segmentation; biases stay in place when merging, so the model still merges.
    train_bias: bool = added_later(False)

    def validate(self) -> str | None:
        if self.dim < 1 or self.groups < 1:
            return f"dim ({self.dim}) and groups ({self.groups}) must be positive"
        if self.dim % self.groups:
            return f"dim ({self.dim}) must be divisible by groups ({self.groups})"
        return None


class RepAdapterLinear(InputResidual):
    """`base(x + s * B(dropout(A x + b_A)) + s * b_B)` on the channels of `base`'s input (a Linear, a 1x1 or
    depthwise Conv2d, or nn.MultiheadAttention's fused in_proj); the form base does the module-type plumbing and
    the merge, exact where `folding.fold_input_affine` allows it."""

    def __init__(self, base: nn.Module, hidden: int, groups: int, scale: float, dropout: float):
        super().__init__(base)
        d = self.width
        if d % groups:
            raise ConfigError(f"repadapter: input width {d} is not divisible by groups={groups}")
        self.groups, self.scale = groups, scale
        self.down = nn.Linear(d, hidden)
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        # B as g blocks of shape (d/g, h/g): block-diagonal when written as a d x h matrix.
        self.up_weight = nn.Parameter(torch.zeros(groups, d // groups, hidden // groups))
        self.up_bias = nn.Parameter(torch.zeros(d))
        self.drop = nn.Dropout(dropout)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.down(x)).unflatten(-1, (self.groups, -1))
        h = torch.einsum("...gi,goi->...go", h, self.up_weight).flatten(-2) + self.up_bias
        return self.scale * h

    def residual_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(F, c), float64, with residual(x) == F x + c in eval mode: F = s B A, c = s (B b_A + b_B)."""
        B = torch.block_diag(*self.up_weight.detach().double())  # (d, h)
        A, b_A = self.down.weight.detach().double(), self.down.bias.detach().double()
        return self.scale * (B @ A), self.scale * (B @ b_A + self.up_bias.detach().double())


class RepAdapterChannel(InputScale):
    """`base(x * (1 + s a))` per channel, for ConvNeXt's depthwise conv; merges exactly into it."""

    def __init__(self, base: nn.Conv2d, scale: float):
        super().__init__(base)
        self.scale = scale
        self.a = nn.Parameter(torch.zeros(base.in_channels))  # zero: starts as the backbone

    def input_scale_shift(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, None]:
        return 1 + self.scale * self.a.to(dtype or self.a.dtype), None


@register_method("repadapter")
class RepAdapter(PETLMethod):
    config_cls = RepAdapterConfig
    paper = "Luo et al. 2023, arXiv:2302.08106"
    display_name = "RepAdapter"
    variants = {"repadapter_attn": ({"where": "attn"}, "RepAdapter_attn")}  # the paper's attention-only row

    def target_sites(self) -> tuple[str, ...]:
        return {"both": ("attn_in", "mlp_in"), "attn": ("attn_in",), "mlp": ("mlp_in",)}[self.cfg.where]

    def wrap(self, site: Site) -> nn.Module:
        c = self.cfg
        if c.dw_adapter == "channel" and isinstance(site.module, nn.Conv2d) and site.module.groups > 1:
            return RepAdapterChannel(site.module, c.scale)
        return RepAdapterLinear(site.module, c.dim, c.groups, c.scale, c.dropout)

    def merge_blocker(self, family: str) -> str | None:
        if family == "convnext" and "attn_in" in self.target_sites() and self.cfg.dw_adapter == "dense":
            return ("the dense adapter before the depthwise conv mixes channels, which a depthwise conv cannot "
                    "absorb; use dw_adapter=channel (per-channel, merges exactly) or where=mlp")
        return super().merge_blocker(family)

    def trainable_parameters(self, model: nn.Module) -> set[str]:
        return super().trainable_parameters(model) | (own_biases(model) if self.cfg.train_bias else set())

    def paper_count(self, model: nn.Module, trainable: int) -> int:
        """The paper counts adapter weights only (0.22M on ViT-B/16): no adapter or (train_bias) backbone bias."""
        adapters = [m for m in model.modules() if isinstance(m, RepAdapterLinear)]
        biases = {id(p): p for m in adapters for p in (m.down.bias, m.up_bias)}
        if self.cfg.train_bias:
            head = {id(p) for p in head_parameters(model)}  # the head is counted apart
            params = dict(model.named_parameters(remove_duplicate=False))
            biases.update({id(params[n]): params[n] for n in own_biases(model) if id(params[n]) not in head})
        return trainable - sum(p.numel() for p in biases.values())
