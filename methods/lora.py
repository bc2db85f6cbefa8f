"""LoRA: "LoRA: Low-Rank Adaptation of Large Language Models", Hu et al., 2021 (arXiv:2106.09685), on the
query and value parts of a ViT's fused qkv projection (the setting of the NOAH / RepAdapter VTAB tables).

    q = W_q x + (alpha / r) * B_q A_q x,   v likewise;  A: r x d (Kaiming-uniform), B: d x r (zeros)

Merge: W_qkv' = W_qkv + (alpha / r) [B_q A_q; 0; B_v A_v] (`folding.add_weight_delta`).
Parameters per block: 2 * len(targets) * r * d; ViT-B/16, r=8, q and v: 294,912.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from petlbench.folding import add_weight_delta
from petlbench.method import PETLMethod, Wrapper, register_method
from petlbench.sites import Site


@dataclass
class LoRAConfig:
    rank: int = 8  # r (NOAH's LoRA baseline: 8)
    alpha: float = 8.0  # scaling alpha / r = 1
    targets: str = "qv"  # which of q, k, v of the fused qkv get an update
    dropout: float = 0.0  # on the LoRA input

    def validate(self) -> str | None:
        if self.rank < 1:
            return f"rank must be positive, got {self.rank}"
        if not self.targets or set(self.targets) - set("qkv") or len(set(self.targets)) != len(self.targets):
            return f"targets must be letters of 'qkv' without repeats, got {self.targets!r}"
        return None


class LoRAQKV(Wrapper):
    """A fused qkv Linear plus low-rank updates on the chosen thirds of its output."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, targets: str, dropout: float):
        super().__init__(base)
        self.mha = isinstance(base, nn.MultiheadAttention)  # open_clip: q, k, v are thirds of in_proj_weight
        if self.mha and dropout > 0:
            raise ValueError("LoRA on nn.MultiheadAttention updates in_proj_weight directly: dropout must be 0")
        d = base.embed_dim if self.mha else base.in_features
        if not self.mha and base.out_features != 3 * d:
            raise ValueError(f"LoRA expects a fused qkv Linear (out = 3 * in), got {base.out_features} x {d}")
        self.dim, self.scaling = d, alpha / rank
        self.slots = ["qkv".index(t) for t in targets]
        self.lora_A = nn.ParameterList(nn.Parameter(torch.empty(rank, d)) for _ in self.slots)
        self.lora_B = nn.ParameterList(nn.Parameter(torch.zeros(d, rank)) for _ in self.slots)
        for a in self.lora_A:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.drop = nn.Dropout(dropout)

    def delta(self) -> torch.Tensor:
        """The (3d, d) weight update: scaling * B A on the chosen thirds, zeros elsewhere."""
        rows = [torch.zeros(self.dim, self.dim, dtype=self.lora_A[0].dtype, device=self.lora_A[0].device)] * 3
        for slot, a, b in zip(self.slots, self.lora_A, self.lora_B):
            rows[slot] = self.scaling * (b @ a)
        return torch.cat(rows)

    def forward(self, x: torch.Tensor, *rest, **kwargs) -> torch.Tensor:
        if self.mha:  # the module itself, called with the updated weight (its forward is untouched)
            return torch.func.functional_call(self.base, {"in_proj_weight": self.base.in_proj_weight + self.delta()},
                                              (x, *rest), kwargs)
        parts = list(self.base(x).split(self.dim, dim=-1))
        h = self.drop(x)
        for slot, a, b in zip(self.slots, self.lora_A, self.lora_B):
            parts[slot] = parts[slot] + self.scaling * ((h @ a.t()) @ b.t())
        return torch.cat(parts, dim=-1)

    def merged(self) -> nn.Module:
        w = self.base.in_proj_weight if self.mha else self.base.weight
        delta = torch.zeros(w.shape, dtype=torch.float64, device=w.device)
        for slot, a, b in zip(self.slots, self.lora_A, self.lora_B):
            delta[slot * self.dim:(slot + 1) * self.dim] = self.scaling * (b.detach().double() @ a.detach().double())
        return add_weight_delta(self.base, delta)


@register_method("lora")
class LoRA(PETLMethod):
    config_cls = LoRAConfig
    sites = ("attn_in",)
    mergeable = True
    families = ("vit", "swin", "openclip")  # a fused qkv projection; ConvNeXt has no attention
    paper = "Hu et al. 2021, arXiv:2106.09685"

    def wrap(self, site: Site) -> nn.Module:
        c = self.cfg
        return LoRAQKV(site.module, c.rank, c.alpha, c.targets, c.dropout)
