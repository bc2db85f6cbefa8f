"""RepAdapter: "Towards Efficient Visual Adaption via Structural Re-parameterization", Luo et al., 2023
(arXiv:2302.08106).

A linear adapter in front of a Linear layer (eq. 4 of the paper):

    x' = x + s * B(dropout(A x + b_A)) + s * b_B,      A: dense d -> h,  B: group-wise h -> d (g groups)

placed before `attn.qkv` ("attn"), before `mlp.fc1` ("mlp"), or both (the paper's RepAdapter). There is no
nonlinearity, so in eval mode the adapter is an affine map x' = M x + c with M = I + s W_B W_A and
c = s (W_B b_A + b_B), W_B block-diagonal; it folds into the next Linear (eq. 7):
W' = W M, b' = b + W c (`folding.fold_input_affine`). B starts at zero, so training starts from the backbone.

Parameters per adapter: d*h + h (A) + d*h/g + d (B). ViT-B/16, h=8, g=2, both places: 24 adapters,
239,808 with biases; 221,184 weights only (the paper's "0.22M").

Backbones: ViT and Swin (before the fused qkv and fc1 Linears), open_clip's CLIP (before the fused in_proj of
its nn.MultiheadAttention, folded into in_proj_weight, and before mlp.c_fc) and ConvNeXt, where the token mixer is the
depthwise 7x7 conv: the "attn" adapter sits before `conv_dw` (on channels, a 1x1 adapter as in the paper's
code), the "mlp" one before the first pointwise layer (Linear on NHWC, or a 1x1 conv on NCHW). What merges on
ConvNeXt: the MLP-side adapter always (into fc1); the dense adapter before the depthwise conv does not (it
mixes channels, and a depthwise conv cannot absorb that: the result would be a dense 7x7 conv), so the
published configuration stays unmerged. `dw_adapter="channel"` replaces it by a per-channel scale
x' = x * (1 + s a), which folds exactly into the depthwise conv (no shift: it would not commute with the
conv's zero padding).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

from petlbench.backbones import head_parameters
from petlbench.folding import fold_input_affine
from petlbench.method import PETLMethod, Wrapper, own_biases, register_method
from petlbench.sites import Site, channels_first


@dataclass
class RepAdapterConfig:
    dim: int = 8  # hidden size h (paper: 8 for images, 2 for video)
    groups: int = 2  # groups g of B (paper: 2)
    scale: float = 1.0  # s; searched per dataset over {0.1, 0.5, 1, 5, 10} (tasks carry the published values)
    where: Literal["both", "attn", "mlp"] = "both"  # paper's RepAdapter = both; RepAdapter_attn = attn
    dropout: float = 0.1  # on the hidden activations (paper's code: 0.1)
    # ConvNeXt only: the adapter before the depthwise conv; "dense" as published (does not merge), or
    # "channel": a per-channel scale that merges exactly
    dw_adapter: Literal["dense", "channel"] = "dense"
    # Also train every bias of the backbone (each module's own `bias` parameter: Linear, conv, LayerNorm), as
    # the paper does for ADE20K segmentation; biases stay in place when merging, so the model still merges.
    train_bias: bool = False

    def validate(self) -> str | None:
        if self.dim < 1 or self.groups < 1:
            return f"dim ({self.dim}) and groups ({self.groups}) must be positive"
        if self.dim % self.groups:
            return f"dim ({self.dim}) must be divisible by groups ({self.groups})"
        return None


class RepAdapterLinear(Wrapper):
    """`base(adapter(x))` for a Linear, a 1x1 Conv2d or a depthwise Conv2d `base` (the adapter acts on the
    channel dim: last for Linear, 1 for convs); `merged()` is one layer of `base`'s type where that is exact."""

    def __init__(self, base: nn.Module, hidden: int, groups: int, scale: float, dropout: float):
        super().__init__(base)
        self.channels_first = channels_first(base)
        if isinstance(base, nn.MultiheadAttention):  # open_clip: the adapter feeds the fused in_proj
            d = base.embed_dim
        else:
            d = base.in_channels if self.channels_first else base.in_features
        if d % groups:
            raise ValueError(f"RepAdapter: in_features {d} is not divisible by groups={groups}")
        self.groups, self.scale = groups, scale
        self.down = nn.Linear(d, hidden)
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        # B as g blocks of shape (d/g, h/g): block-diagonal when written as a d x h matrix.
        self.up_weight = nn.Parameter(torch.zeros(groups, d // groups, hidden // groups))
        self.up_bias = nn.Parameter(torch.zeros(d))
        self.drop = nn.Dropout(dropout)

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_first:  # NCHW: the same map on the channel dim
            x = x.movedim(1, -1)
        h = self.drop(self.down(x)).unflatten(-1, (self.groups, -1))
        h = torch.einsum("...gi,goi->...go", h, self.up_weight).flatten(-2) + self.up_bias
        out = x + self.scale * h
        return out.movedim(-1, 1) if self.channels_first else out

    def forward(self, x: torch.Tensor, *rest, **kwargs) -> torch.Tensor:
        if not rest:
            return self.base(self.adapt(x), **kwargs)
        # nn.MultiheadAttention(query, key, value, ...): self-attention passes one tensor three times
        adapted = self.adapt(x)
        rest = tuple(adapted if r is x else self.adapt(r) if isinstance(r, torch.Tensor) else r for r in rest)
        return self.base(adapted, *rest, **kwargs)

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, c) with adapt(x) == M x + c in eval mode."""
        B = torch.block_diag(*self.up_weight.detach().double())  # (d, h)
        A, b_A = self.down.weight.detach().double(), self.down.bias.detach().double()
        M = torch.eye(B.shape[0], dtype=torch.float64, device=B.device) + self.scale * (B @ A)
        c = self.scale * (B @ b_A + self.up_bias.detach().double())
        return M, c

    def merged(self) -> nn.Module:
        return fold_input_affine(self.base, *self.affine())


class RepAdapterChannel(Wrapper):
    """`base(x * (1 + s a))` per channel, for ConvNeXt's depthwise conv; merges exactly into it."""

    def __init__(self, base: nn.Conv2d, scale: float):
        super().__init__(base)
        self.scale = scale
        self.a = nn.Parameter(torch.zeros(base.in_channels))  # zero: starts as the backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x * (1 + self.scale * self.a).view(1, -1, 1, 1))

    def merged(self) -> nn.Conv2d:
        return fold_input_affine(self.base, torch.diag(1 + self.scale * self.a.detach().double()))


@register_method("repadapter")
class RepAdapter(PETLMethod):
    config_cls = RepAdapterConfig
    mergeable = True
    families = ("vit", "swin", "convnext", "openclip")
    paper = "Luo et al. 2023, arXiv:2302.08106"

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
        return None

    def mark_trainable(self, model: nn.Module) -> None:
        super().mark_trainable(model)
        if self.cfg.train_bias:
            for bias in own_biases(model):
                bias.requires_grad_(True)

    def paper_count(self, model: nn.Module, trainable: int) -> int:
        """The paper counts adapter weights only (0.22M on ViT-B/16), neither adapter nor backbone biases."""
        adapters = [m for m in model.modules() if isinstance(m, RepAdapterLinear)]
        biases = sum(m.down.bias.numel() + m.up_bias.numel() for m in adapters)
        if self.cfg.train_bias:
            own = {id(p) for m in adapters for p in (m.down.bias, m.up_bias)}
            own |= {id(p) for p in head_parameters(model)}  # the head is counted apart
            biases += sum(p.numel() for p in own_biases(model) if p.requires_grad and id(p) not in own)
        return trainable - biases

