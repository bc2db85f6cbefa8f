"""LoRA: "LoRA: Low-Rank Adaptation of Large Language Models", Hu et al., 2021 (arXiv:2106.09685), on a ViT's
fused qkv projection.

    split (default): q = W_q x + (alpha / r) * B_q A_q x,  v likewise;  A: r x d, B: d x r per target
    fused:           qkv = W_qkv x + (alpha / r) * B A x;              A: r x d, B: 3d x r, one pair

The default (split, q and v, A Kaiming-uniform, B zeros) is the LoRA paper's. `fused=True, init="trunc_normal",
dropout=0.1` (alpha = rank: scale 1) is NOAH's LoRA baseline, the one behind its published VTAB rows: one
update of the whole qkv output (NOAH model/supernet_vision_transformer_timm.py:225-228, 277-281), whose
kaiming/zeros init is redrawn by the ViT's `self.apply(_init_vit_weights)` (same file :462, :531, :686) as
trunc_normal(std 0.02) for A and B, so B is not zero at the start.

A weight delta (`method.WeightDelta`): the file gives dW, the form base does the forward on nn.Linear and
nn.MultiheadAttention (open_clip's fused in_proj_weight; no dropout there) and the merge
W_qkv' = W_qkv + (alpha / r) [B_q A_q; 0; B_v A_v]  or  + (alpha / r) B A  (`folding.add_weight_delta`).
Parameters per block: 2 * len(targets) * r * d (split), 4 * r * d (fused); ViT-B/16, r=8: 294,912 for both
q/v split and fused, so a parameter count cannot tell the two apart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
from timm.layers import trunc_normal_

from petlbench.config import added_later
from petlbench.errors import ConfigError
from petlbench.method import PETLMethod, WeightDelta, input_width, register_method
from petlbench.sites import Site


@dataclass
class LoRAConfig:
    rank: int = 8  # r (NOAH's LoRA baseline: 8)
    alpha: float = 8.0  # scaling alpha / r = 1 (NOAH's LoRA has no scaling)
    targets: str = "qv"  # which of q, k, v of the fused qkv get an update
    dropout: float = 0.0  # on the LoRA input (NOAH: --drop_rate_LoRA, default 0.1)
    fused: bool = added_later(False)  # one A (r x d), B (3d x r) over the whole qkv output (NOAH); needs targets "qkv"
    # "lora": A Kaiming-uniform, B zeros (the LoRA paper); "trunc_normal": A and B trunc_normal(std 0.02), what
    # NOAH's ViT init leaves them at (B not zero)
    init: Literal["lora", "trunc_normal"] = added_later("lora")

    def validate(self) -> str | None:
        if self.rank < 1:
            return f"rank must be positive, got {self.rank}"
        if not self.targets or set(self.targets) - set("qkv") or len(set(self.targets)) != len(self.targets):
            return f"targets must be letters of 'qkv' without repeats, got {self.targets!r}"
        if self.fused and self.targets != "qkv":
            return f"fused=True updates the whole qkv output: targets must be 'qkv', got {self.targets!r}"
        return None


class LoRAQKV(WeightDelta):
    """A fused qkv Linear (or nn.MultiheadAttention) plus low-rank updates: one per chosen third of its
    output, or with `fused` one over all of it. A weight delta: the form base does forward and merge."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, targets: str, dropout: float,
                 fused: bool = False, init: str = "lora"):
        super().__init__(base)
        mha = isinstance(base, nn.MultiheadAttention)  # open_clip: q, k, v are thirds of in_proj_weight
        if mha and dropout > 0:
            raise ConfigError("lora: dropout must be 0 on nn.MultiheadAttention (open_clip), whose in_proj_weight "
                              "the update is added to")
        d = input_width(base)
        if not mha and base.out_features != 3 * d:
            raise ConfigError(f"lora: expects a fused qkv Linear (out = 3 * in), got {base.out_features} x {d}")
        self.dim, self.scaling, self.fused = d, alpha / rank, fused
        self.slots = [0] if fused else ["qkv".index(t) for t in targets]
        rows = 3 * d if fused else d
        self.lora_A = nn.ParameterList(nn.Parameter(torch.empty(rank, d)) for _ in self.slots)
        self.lora_B = nn.ParameterList(nn.Parameter(torch.zeros(rows, rank)) for _ in self.slots)
        for a, b in zip(self.lora_A, self.lora_B):
            if init == "trunc_normal":  # timm's trunc_normal_ (bounds +-2, i.e. ~100 std), as NOAH's init calls it
                trunc_normal_(a, std=0.02)
                trunc_normal_(b, std=0.02)
            else:
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.drop = nn.Dropout(dropout)

    def weight_delta(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The (3d, d) weight update: scaling * B A on the chosen thirds (zeros elsewhere), or on all of it."""
        a0 = self.lora_A[0]
        dtype = dtype or a0.dtype
        if self.fused:
            return self.scaling * (self.lora_B[0].to(dtype) @ a0.to(dtype))
        delta = torch.zeros(3 * self.dim, self.dim, dtype=dtype, device=a0.device)
        for slot, a, b in zip(self.slots, self.lora_A, self.lora_B):
            delta[slot * self.dim:(slot + 1) * self.dim] = self.scaling * (b.to(dtype) @ a.to(dtype))
        return delta

    def delta_output(self, x: torch.Tensor) -> torch.Tensor:
        """The update on a Linear's output through the rank-r path (dropout on its input), never forming B A."""
        h = self.drop(x)
        if self.fused:
            return self.scaling * ((h @ self.lora_A[0].t()) @ self.lora_B[0].t())
        parts = [None] * 3
        for slot, a, b in zip(self.slots, self.lora_A, self.lora_B):
            parts[slot] = self.scaling * ((h @ a.t()) @ b.t())
        zero = torch.zeros_like(next(p for p in parts if p is not None))  # its dtype too (autocast)
        return torch.cat([p if p is not None else zero for p in parts], dim=-1)


@register_method("lora")
class LoRA(PETLMethod):
    config_cls = LoRAConfig
    sites = ("attn_in",)
    # ConvNeXt's attn_in is its depthwise conv: there is no fused q/k/v projection to update
    only_families = ("vit", "swin", "openclip")
    paper = "Hu et al. 2021, arXiv:2106.09685"
    display_name = "LoRA"

    def wrap(self, site: Site) -> nn.Module:
        c = self.cfg
        return LoRAQKV(site.module, c.rank, c.alpha, c.targets, c.dropout, fused=c.fused, init=c.init)
