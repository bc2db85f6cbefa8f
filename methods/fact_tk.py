"""FacT-TK: "FacT: Factor-Tuning for Lightweight Adaptation on Vision Transformer", Jie & Deng, AAAI 2023
(arXiv:2212.03145), Tucker format.

The ViT's weights, as 12 L slices of d x d (per block q, k, v, proj, then fc1 and fc2 as m = 4 slices each),
form one tensor whose increment is the Tucker product C x1 U^T x2 V x3 P: one core C (r x r x r), U, V shared,
P (r x 12 L) a column per slice. Slice j's core is C_j = sum_c C[:, :, c] P[c, j], and

    W' = W + s * V C_j^T U    per slice (fc1 / fc2's m slices laid out as the authors' reshape, methods/_fact.py)

U (nn.Linear init), V zeros, C and P xavier-uniform (PETL-ViT FacT/fact_tk.py:107-116); dropout 0.1 on
C_j^T U x. All parameters are shared: the wrappers own none (the first holds the factors). A weight delta
(`method.WeightDelta`): it merges exactly, W + s dW (`folding.add_weight_delta`); dropout is off in eval.
Parameters: 2 d r + r^3 + L (4 + 2m) r; ViT-B/16 (d 768, L 12, m 4): 1536 r + r^3 + 144 r = 13,952 (r 8),
30,976 (r 16), 86,528 (r 32). The paper's 0.069M (FacT-TK_<=32) is the mean over its 19 VTAB-1k ranks
(FacT/configs/tk/*.yaml): 68,985.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from petlbench.method import register_method

from ._fact import FacTConfig, FacTFactors, FacTLinear, FacTMethod


class FacTTKFactors(FacTFactors):
    """U, V and the Tucker core `core` (r x r x r) and slice factor `p` (r x slices): FacTc, FacTp."""

    def __init__(self, dim: int, rank: int, slices: int):
        super().__init__(dim, rank)
        self.core = nn.Parameter(torch.empty(rank, rank, rank))
        self.p = nn.Parameter(torch.empty(rank, slices))
        nn.init.xavier_uniform_(self.core)  # FacT/fact_tk.py:115-116, in this order
        nn.init.xavier_uniform_(self.p)


class FacTTKLinear(FacTLinear):
    """A Linear plus s * dW, its cores C_j (j = `first` ... `first` + chunks - 1) from the shared C and P."""

    def __init__(self, base: nn.Module, factors: FacTTKFactors, weight: str, first: int, chunks: int,
                 chunk_input: bool, scale: float, dropout: float, owner: bool):
        super().__init__(base, factors, chunks, chunk_input, scale, dropout, owner)
        self.weight_name, self.first = weight, first

    def core_matrix(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        f = self.shared
        dtype = dtype or f.core.dtype
        t = f.core.to(dtype) @ f.p.to(dtype)[:, self.first:self.first + self.chunks]  # (r, r, k): C_j = t[..., j]
        r = t.shape[0]
        if self.weight_name in ("qkv", "proj"):  # fact_tk.py:66-69,83: FacTu(x) @ C_j per q, k, v, proj
            return t.permute(2, 1, 0).reshape(self.chunks * r, r)
        flat = t.reshape(r, self.chunks * r)  # fact_tk.py:91-92: FacTc[:, :, :4].reshape(dim, dim * 4)
        return flat if self.chunk_input else flat.t()  # fc2: @ fc2_FacTc.t() (:102); fc1: FacTu(x) @ fc1 (:94)


@register_method("fact_tk")
class FacTTK(FacTMethod):
    config_cls = FacTConfig
    paper = "Jie & Deng 2023, arXiv:2212.03145"
    display_name = "FacT-TK"

    def make_factors(self, dim: int, layers: int, mlp_ratio: int) -> FacTFactors:
        return FacTTKFactors(dim, self.cfg.rank, layers * (4 + 2 * mlp_ratio))

    def make_wrapper(self, base, factors, weight, first, chunks, chunk_input, owner) -> FacTLinear:
        c = self.cfg
        return FacTTKLinear(base, factors, weight, first, chunks, chunk_input, c.scale, c.dropout, owner)
