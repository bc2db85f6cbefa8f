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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

from petlbench.folding import fold_input_affine
from petlbench.method import PETLMethod, Wrapper, register_method
from petlbench.sites import Site


@dataclass
class RepAdapterConfig:
    dim: int = 8  # hidden size h (paper: 8 for images, 2 for video)
    groups: int = 2  # groups g of B (paper: 2)
    scale: float = 1.0  # s; searched per dataset over {0.1, 0.5, 1, 5, 10} (tasks carry the published values)
    where: Literal["both", "attn", "mlp"] = "both"  # paper's RepAdapter = both; RepAdapter_attn = attn
    dropout: float = 0.1  # on the hidden activations (paper's code: 0.1)

    def validate(self) -> str | None:
        if self.dim < 1 or self.groups < 1:
            return f"dim ({self.dim}) and groups ({self.groups}) must be positive"
        if self.dim % self.groups:
            return f"dim ({self.dim}) must be divisible by groups ({self.groups})"
        return None


class RepAdapterLinear(Wrapper):
    """`base(adapter(x))` for a Linear `base`; `merged()` is one Linear."""

    def __init__(self, base: nn.Linear, hidden: int, groups: int, scale: float, dropout: float):
        super().__init__(base)
        d = base.in_features
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
        h = self.drop(self.down(x)).unflatten(-1, (self.groups, -1))
        h = torch.einsum("...gi,goi->...go", h, self.up_weight).flatten(-2) + self.up_bias
        return x + self.scale * h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(self.adapt(x))

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, c) with adapt(x) == M x + c in eval mode."""
        B = torch.block_diag(*self.up_weight.detach().double())  # (d, h)
        A, b_A = self.down.weight.detach().double(), self.down.bias.detach().double()
        M = torch.eye(B.shape[0], dtype=torch.float64, device=B.device) + self.scale * (B @ A)
        c = self.scale * (B @ b_A + self.up_bias.detach().double())
        return M, c

    def merged(self) -> nn.Linear:
        return fold_input_affine(self.base, *self.affine())


@register_method("repadapter")
class RepAdapter(PETLMethod):
    config_cls = RepAdapterConfig
    mergeable = True
    paper = "Luo et al. 2023, arXiv:2302.08106"

    def target_sites(self) -> tuple[str, ...]:
        return {"both": ("attn_in", "mlp_in"), "attn": ("attn_in",), "mlp": ("mlp_in",)}[self.cfg.where]

    def wrap(self, site: Site) -> nn.Module:
        c = self.cfg
        return RepAdapterLinear(site.module, c.dim, c.groups, c.scale, c.dropout)

    def paper_count(self, model: nn.Module, trainable: int) -> int:
        """The paper counts adapter weights only (0.22M on ViT-B/16)."""
        biases = sum(m.down.bias.numel() + m.up_bias.numel() for m in model.modules() if isinstance(m, RepAdapterLinear))
        return trainable - biases
