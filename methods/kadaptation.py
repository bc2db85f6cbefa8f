"""KAdaptation: "Parameter-efficient Model Adaptation for Vision Transformers", He et al., AAAI 2023
(arXiv:2203.16329), on a ViT's fused qkv projection. Authors' code: eric-ai-lab/PEViT @ be6fb43,
vision_benchmark/evaluation/model.py (cited as model.py:line below).

    q = W_q x + c_q * s * dW_q x + c_q * b,   v = W_v x + s * dW_v x + b,
    dW_t = (sum_{i=1..n} A_{t,i} (x) B_{t,i})^T,   A_{t,i} = a_{t,i} a'_{t,i}^T (n x n, "slow"),
                                                    B_{t,i} = u_{t,i} v_{t,i}^T (d/n x d/n, "fast")

with (x) the Kronecker product (model.py:406-417, :575), s = 160 (= 128 / 4 * 5, model.py:564), b a per-block
bias shared by q and v (model.py:514, :584), the slow factors shared by all blocks (one set for q, one for v:
model.py:984-1009) and c_q = sqrt(head_dim): the authors add q's update after q is divided by sqrt(head_dim)
(model.py:786-798); timm scales q inside attention, so the same function puts c_q on q's third of qkv. In
training, dropout (p 0.5) acts on the Kronecker sum itself (model.py:516, :582), not on the input.

Where we differ from the authors' forward, each because theirs is not the paper's weight update:
- their (N, B, C) updates are `.reshape`d to (B * heads, N, C / heads) (model.py:796-797) without the transpose
  the head split needs, mixing tokens, heads and images of the batch; we add the update to the weight;
- their v branch reads q's fast matrices (`Wq`, model.py:580): their v fast factors are counted, never used;
  ours are v's own (the paper's per-matrix update), so the count is the same;
- they zero both fast factors (model.py:536-539), a point where every Kronecker factor has zero gradient (only
  b trains); `init="glorot"` (default) draws u with their Glorot-uniform (gain sqrt 2, model.py:419-420) and
  zeros v, so dW starts at zero and trains; `init="zeros"` is theirs.

Merges exactly (a weight delta, `method.WeightDelta`): W_qkv' = W_qkv + [c_q s dW_q; 0; s dW_v] and
b_qkv' = b_qkv + [c_q b; 0; b] (`folding.add_weight_delta`); dropout is off in eval.
Parameters: per block 4 d r_fast (u, v for q and v) + d (b); slow 4 n^2 r_slow, once (`shared_slow`) or per
block. ViT-B/16 (d 768, 12 blocks, n 32, ranks 1): 12 * (3,072 + 768) + 4,096 = 50,176, the authors' count too:
their README's 79,699 for KAdaptation less 29,523 for linear probing (the head alone), CLIP ViT-B/32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

from petlbench.errors import ConfigError
from petlbench.method import PETLMethod, WeightDelta, input_width, register_method
from petlbench.sites import find_sites, replace_module


@dataclass
class KAdaptationConfig:
    n: int = 32  # Kronecker summands, and the slow matrices' size n x n (phm_dim: model.py:485, :984)
    fast_rank: int = 1  # rank of each fast d/n x d/n matrix u v^T (phm_rank: model.py:489, :500-507)
    slow_rank: int = 1  # rank of each slow n x n matrix (phm_rule shapes (n, n, 1) @ (n, 1, n): model.py:987-999)
    shared_slow: bool = True  # one set of slow matrices for every block (set_phm_rule: model.py:1002-1009)
    scale: float = 160.0  # lora_attn_alpha / lora_attn_dim * 5 = 128 / 4 * 5 (model.py:477-479, :564)
    q_head_scale: bool = True  # q's update times sqrt(head_dim): theirs is added to q / sqrt(head_dim) (:786-798)
    dropout: float = 0.5  # on the Kronecker sum in training (kdropout: model.py:516, :582)
    bias: bool = True  # the per-block b added to q and v (model.py:514, :554, :584)
    init: Literal["glorot", "zeros"] = "glorot"  # fast u: Glorot (v zero); "zeros": both zero, theirs (:536-539)

    def validate(self) -> str | None:
        if min(self.n, self.fast_rank, self.slow_rank) < 1:
            return f"n, fast_rank and slow_rank must be positive, got {self.n}, {self.fast_rank}, {self.slow_rank}"
        if not 0.0 <= self.dropout < 1.0:
            return f"dropout must be in [0, 1), got {self.dropout}"
        return None


class KronSlow(nn.Module):
    """The slow matrices A_{t,i} = left[t, i] @ right[t, i] (n x n) for t = q, v; uniform(-0.01, 0.01) as
    the authors' (model.py:991-999). Shared by several wrappers, it is registered in the first only."""

    def __init__(self, n: int, rank: int):
        super().__init__()
        self.left = nn.Parameter(torch.empty(2, n, n, rank).uniform_(-0.01, 0.01))
        self.right = nn.Parameter(torch.empty(2, n, rank, n).uniform_(-0.01, 0.01))


class KronQKV(WeightDelta):
    """A fused qkv Linear (or nn.MultiheadAttention) whose q and v thirds get the KAdaptation update."""

    def __init__(self, base: nn.Module, slow: KronSlow, owns_slow: bool, head_dim: int, cfg: KAdaptationConfig):
        super().__init__(base)
        d = input_width(base)
        if isinstance(base, nn.Linear) and base.out_features != 3 * d:
            raise ConfigError(f"kadaptation: expects a fused qkv Linear (out = 3 * in), got {base.out_features} x {d}")
        if d % cfg.n:
            raise ConfigError(f"kadaptation: n={cfg.n} must divide the width {d} (the fast matrices are d/n x d/n)")
        p, r = d // cfg.n, cfg.fast_rank
        self.dim = d
        self.fast_left = nn.Parameter(torch.zeros(2, cfg.n, p, r))  # u (q, v)
        self.fast_right = nn.Parameter(torch.zeros(2, cfg.n, r, p))  # v^T (q, v)
        if cfg.init == "glorot":  # xavier_uniform_ with gain sqrt(2) on each (d/n, r) slice (model.py:419-420)
            bound = math.sqrt(2.0) * math.sqrt(6.0 / (p + r))
            nn.init.uniform_(self.fast_left, -bound, bound)
        self.b = nn.Parameter(torch.zeros(d)) if cfg.bias else None
        if owns_slow:
            self.slow = slow
        else:
            self._shared = (slow,)  # a tuple: not registered here, so each tensor has one name in the model
        c_q = math.sqrt(head_dim) if cfg.q_head_scale else 1.0
        self.q_gain, self.gains = c_q, (cfg.scale * c_q, cfg.scale)
        self.drop = nn.Dropout(cfg.dropout)

    def _slow(self) -> KronSlow:
        return self.slow if "slow" in self._modules else self._shared[0]

    def _delta(self, dtype: torch.dtype | None, drop: bool) -> torch.Tensor:
        slow = self._slow()
        dtype = dtype or self.fast_left.dtype
        a = slow.left.to(dtype) @ slow.right.to(dtype)  # (2, n, n, n): the slow matrices
        f = self.fast_left.to(dtype) @ self.fast_right.to(dtype)  # (2, n, p, p): the fast matrices
        n, p = f.shape[1], f.shape[2]
        # sum_i A_i (x) B_i, laid out (in, out) as the authors' x @ H; transposed to the weight's (out, in)
        kron = torch.einsum("tiac,tikp->takcp", a, f).reshape(2, n * p, n * p).transpose(1, 2)
        out = torch.zeros(3 * self.dim, self.dim, dtype=dtype, device=kron.device)
        for t, slot in enumerate((0, 2)):
            out[slot * self.dim:(slot + 1) * self.dim] = self.gains[t] * (self.drop(kron[t]) if drop else kron[t])
        return out

    def weight_delta(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The (3d, d) update without dropout (eval and merging): gains times dW on the q and v thirds."""
        return self._delta(dtype, drop=False)

    def bias_delta(self, dtype: torch.dtype | None = None) -> torch.Tensor | None:
        if self.b is None:
            return None
        b = self.b.to(dtype or self.b.dtype)
        return torch.cat([self.q_gain * b, torch.zeros_like(b), b])

    def forward(self, x: torch.Tensor, *rest, **kwargs) -> torch.Tensor:
        # one product with W + dW (dW is formed whole anyway), so the unmerged model rounds as the merged one
        # does (s c_q = 1280 on q makes dW large); in training, dropout on dW
        m, dw, db = self.base, self._delta(None, drop=True), self.bias_delta()
        mha = isinstance(m, nn.MultiheadAttention)
        w, b = (m.in_proj_weight, m.in_proj_bias) if mha else (m.weight, m.bias)
        if db is not None:
            b = db if b is None else b + db
        if not mha:
            return nn.functional.linear(x, w + dw, b)
        params = {"in_proj_weight": w + dw} | ({} if b is None else {"in_proj_bias": b})
        return torch.func.functional_call(m, params, (x, *rest), kwargs)


@register_method("kadaptation")
class KAdaptation(PETLMethod):
    config_cls = KAdaptationConfig
    sites = ("attn_in",)
    # ConvNeXt's attn_in is its depthwise conv: there is no fused q/k/v projection to update
    only_families = ("vit", "swin", "openclip")
    paper = "He et al. 2023, arXiv:2203.16329"
    display_name = "KAdaptation"

    def apply(self, model: nn.Module, family: str) -> nn.Module:
        """Wrap every attn_in site; the slow matrices are created once (or per block) and live in the first."""
        slow = None
        for site in find_sites(model, family, "attn_in"):
            owns = slow is None or not self.cfg.shared_slow
            if owns:
                slow = KronSlow(self.cfg.n, self.cfg.slow_rank)
            replace_module(model, site.name, KronQKV(site.module, slow, owns, self._head_dim(model, site), self.cfg))
        return model

    @staticmethod
    def _head_dim(model: nn.Module, site) -> int:
        if isinstance(site.module, nn.MultiheadAttention):
            return site.module.head_dim
        attn = model.get_submodule(site.name.rsplit(".", 1)[0])  # timm Attention / WindowAttention
        return getattr(attn, "head_dim", None) or site.module.in_features // attn.num_heads
