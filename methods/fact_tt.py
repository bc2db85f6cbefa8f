"""FacT-TT: "FacT: Factor-Tuning for Lightweight Adaptation on Vision Transformer", Jie & Deng, AAAI 2023
(arXiv:2212.03145), Tensor-Train format.

The ViT's weights (qkv as q, k, v; proj; fc1 and fc2 as m = 4 slices each: 12 d x d slices per block) form one
tensor whose increment is U^T x Sigma x V^T: U, V shared by every slice, one r x r core per slice:

    W' = W + s * V S U      per d x d slice (methods/_fact.py lays the slices out as the authors do)

U (r x d, nn.Linear init), V (d x r, zeros), each block's cores S as nn.Linear weights: q/k/v/proj r x r, fc1
(4r x r), fc2 (r x 4r) (PETL-ViT FacT/fact_tt.py:103-128); dropout 0.1 on S U x. A weight delta
(`method.WeightDelta`): it merges exactly, W + s dW (`folding.add_weight_delta`); dropout is off in eval.
Parameters: 2 d r + L (4 + 2m) r^2; ViT-B/16 (d 768, L 12, m 4): 1536 r + 144 r^2 = 21,504 (r 8), 61,440 (r 16),
8,448 (r 4: the abstract's "8K" tiny FacT-TT_4). The paper's 0.040M (FacT-TT_<=16) is the mean over its 19
VTAB-1k ranks (FacT/configs/tt/*.yaml): 39,734.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from petlbench.method import register_method

from ._fact import FacTConfig, FacTFactors, FacTLinear, FacTMethod


class FacTTTLinear(FacTLinear):
    """A Linear plus s * dW from the shared U, V and this weight's own cores (`core`, the stacked S)."""

    def __init__(self, base: nn.Module, factors: FacTFactors, chunks: int, chunk_input: bool, scale: float,
                 dropout: float, owner: bool):
        super().__init__(base, factors, chunks, chunk_input, scale, dropout, owner)
        r = factors.u.shape[0]
        self.core = nn.Parameter(torch.empty((r, chunks * r) if chunk_input else (chunks * r, r)))
        # as nn.Linear's weight (fan-in: its second dim), what the authors' q/k/v/proj/fc1/fc2_FacTs are
        nn.init.kaiming_uniform_(self.core, a=math.sqrt(5))

    def core_matrix(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return self.core if dtype is None else self.core.to(dtype)


@register_method("fact_tt")
class FacTTT(FacTMethod):
    config_cls = FacTConfig
    paper = "Jie & Deng 2023, arXiv:2212.03145"
    display_name = "FacT-TT"

    def make_factors(self, dim: int, layers: int, mlp_ratio: int) -> FacTFactors:
        return FacTFactors(dim, self.cfg.rank)

    def make_wrapper(self, base, factors, weight, first, chunks, chunk_input, owner) -> FacTLinear:
        c = self.cfg
        return FacTTTLinear(base, factors, chunks, chunk_input, c.scale, c.dropout, owner)
