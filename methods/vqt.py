"""VQT: "Visual Query Tuning: Towards Effective Usage of Intermediate Representations for Parameter and Memory
Efficient Transfer Learning", Tu et al., CVPR 2023 (arXiv:2212.03220).

Each block l gets T learnable query tokens P_l (T x d). They go through the block with its own weights, but
their attention reads the keys and values of the block's tokens only (the queries attend neither to each other
nor to themselves), and the tokens never see the queries, so the backbone computes exactly what it computed
before (its tokens run under `torch.no_grad()`: only the queries' path builds a graph):

    z_l = P_l + LS1(Attn(q = W_q LN1(P_l), k, v = W_k, W_v LN1(X_{l-1})));  q_l = z_l + LS2(MLP(LN2(z_l)))

The head is a linear classifier on [n(f); n(q_1); ...; n(q_L)], f the pooled feature timm hands its head (the
class token after the final norm), q_l the flattened T x d query outputs of block l ("concat"; or their mean, or
a weighted sum with learnable weights w_l in R^T), n the L2 normalisation (`normalize`).

Not mergeable: the queries are extra tokens and the head reads more than the pooled feature.
Parameters: L * T * d query tokens (+ L * T with weighted_sum); ViT-B/16, T=1: 9,216. The head, counted as
the head, has (d + L * T * d) inputs instead of d: (768 + 12 * 768 * T) * classes + classes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Attention
from timm.models.vision_transformer import Block

from petlbench.errors import ConfigError
from petlbench.method import PETLMethod, Wrapper, register_method
from petlbench.sites import find_sites, replace_module

SRC = "andytu28/VQT@9bca87e"  # line numbers below are of this commit; "h2t_vit.py" is src/models/vit_backbones/


@dataclass
class VQTConfig:
    # T, query tokens per block: the script's ${Q_LEN}, "can be simply set to 1" (README.md:42); run_demo_exp.sh
    # uses 1 for 12 VTAB tasks (:7-29), 10 (:33-34) and 20 (:37-41) for 7 structured ones; config.py:84 says 5
    tokens: int = 1
    # on the query tokens (h2t_vit.py:261, :290): scripts/VQT/run_vqt_vtab.sh:24 MODEL.H2T.DROPOUT "0.1"
    dropout: float = 0.1
    # how a block's T outputs become one feature: concat (the default path, h2t_vit.py:380, no POOLING_FEATS or
    # WEIGHTED_SUM_FEATS: config.py:87-88), mean (:375, POOLING_FEATS) or weighted_sum (:376-378)
    combine: Literal["concat", "mean", "weighted_sum"] = "concat"
    normalize: bool = True  # L2-normalise each feature group before the head (config.py:86, h2t_vit.py:381-382)

    def validate(self) -> str | None:
        return None if self.tokens >= 1 else f"tokens must be positive, got {self.tokens}"


class _Slots:
    """The query features of the current forward, one slot per block. Blocks write them and the head reads them
    (and empties the slots): timm's forward passes only the token tensor from the blocks to the head."""

    def __init__(self, n: int):
        self.values: list[torch.Tensor | None] = [None] * n

    def take(self, batch: int) -> list[torch.Tensor]:
        vals, self.values = self.values, [None] * len(self.values)
        if any(v is None or v.shape[0] != batch for v in vals):
            raise RuntimeError("the VQT head needs the query features of this batch: call the model, not its head")
        return vals


class QueryBlock(Wrapper):
    """A timm ViT block that also runs its own query tokens (see the module docstring) and stores their
    aggregated output in `slots`; it returns the block's tokens unchanged."""

    def __init__(self, base: Block, index: int, slots: _Slots, cfg: VQTConfig, bound: float):
        super().__init__(base)
        d = base.norm1.normalized_shape[-1]
        self.index, self.slots, self.combine_mode, self.normalize = index, slots, cfg.combine, cfg.normalize
        self.queries = nn.Parameter(torch.empty(1, cfg.tokens, d).uniform_(-bound, bound))
        self.drop = nn.Dropout(cfg.dropout)
        # h2t_vit.py:349-350: torch.ones(num_layers, NUM_QUERY_TOKENS)
        self.combine = nn.Parameter(torch.ones(cfg.tokens)) if cfg.combine == "weighted_sum" else None

    @staticmethod
    def _attn_out(attn: Attention, a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """timm Attention after its softmax: merge heads, its norm and gate, proj."""
        a = attn.norm(a.transpose(1, 2).flatten(2))
        if getattr(attn, "gate", None) is not None:
            a = a * attn.gate(h).sigmoid()
        return attn.proj_drop(attn.proj(a))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False):
        if attn_mask is not None or is_causal:
            raise NotImplementedError("VQT does not support attention masks")
        blk, attn = self.base, self.base.attn
        heads, hd = attn.num_heads, attn.head_dim
        p_drop = attn.attn_drop.p if attn.training else 0.0
        with torch.no_grad():  # the frozen tokens: no graph (the paper's memory saving)
            h = blk.norm1(x)
            q, k, v = attn.qkv(h).unflatten(-1, (3, heads, hd)).permute(2, 0, 3, 1, 4).unbind(0)
            q, k = attn.q_norm(q), attn.k_norm(k)
            a = F.scaled_dot_product_attention(q, k, v, dropout_p=p_drop)
            x = x + blk.drop_path1(blk.ls1(self._attn_out(attn, a, h)))
            x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
        p = self.drop(self.queries).expand(x.shape[0], -1, -1).to(x.dtype)
        if not torch.is_grad_enabled():  # no graph either way; a view of the parameter would still carry
            p = p.detach()               # requires_grad into module hooks (FlopCounterMode's tracker)
        hp = blk.norm1(p)
        w, b = attn.qkv.weight, attn.qkv.bias  # only the query third of qkv: the queries give no keys or values
        qp = F.linear(hp, w[:heads * hd], None if b is None else b[:heads * hd]).unflatten(-1, (heads, hd))
        qp = attn.q_norm(qp.transpose(1, 2))
        aq = F.scaled_dot_product_attention(qp, k, v, dropout_p=p_drop)  # k, v: the tokens' (no graph)
        z = p + blk.drop_path1(blk.ls1(self._attn_out(attn, aq, hp)))
        z = z + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(z))))
        if self.combine_mode == "concat":
            f = z.flatten(1)
        elif self.combine_mode == "mean":
            f = z.mean(1)
        else:
            f = (self.combine.to(z.dtype)[:, None] * z).sum(1)
        self.slots.values[self.index] = F.normalize(f, dim=-1) if self.normalize else f
        return x


class VQTHead(nn.Linear):
    """The classifier on the pooled feature and every block's query feature (concatenated, in block order)."""

    def __init__(self, pooled: int, extra: int, num_classes: int, slots: _Slots, normalize: bool):
        super().__init__(pooled + extra, num_classes)
        self.slots, self.normalize = slots, normalize
        # the authors' head (src/models/mlp.py:52-57, MLP_NUM 0: config.py:40, special_bias: build_h2t_model.py:115)
        nn.init.kaiming_normal_(self.weight, a=0, mode="fan_out")
        nn.init.constant_(self.bias, -math.log((1 - 0.01) / 0.01))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.slots.take(x.shape[0])
        x = F.normalize(x, dim=-1) if self.normalize else x
        return super().forward(torch.cat([x] + [f.to(x.dtype) for f in feats], dim=-1))


@register_method("vqt")
class VQT(PETLMethod):
    config_cls = VQTConfig
    sites = ("block",)
    # The queries are tokens of one flat sequence attending through timm's ViT Attention (q, k, v from one qkv):
    # Swin windows, ConvNeXt grids and open_clip's nn.MultiheadAttention have no such tokens or projections.
    only_families = ("vit",)
    mergeable = False  # extra tokens, and a head on more than the pooled feature
    feeds_head = True  # the head reads every block's query feature
    paper = "Tu et al. 2023, arXiv:2212.03220"
    display_name = "VQT"

    def apply(self, model: nn.Module, family: str) -> nn.Module:
        blocks = find_sites(model, family, "block")
        for s in blocks:  # the forward above is timm's Block / Attention computation: other layouts differ
            if type(s.module) is not Block or type(s.module.attn) is not Attention:
                raise ConfigError(f"method 'vqt' needs timm's ViT Block and Attention, {s.name} is a "
                                  f"{type(s.module).__name__} with {type(getattr(s.module, 'attn', None)).__name__}")
        head = model.get_classifier()
        if not isinstance(head, nn.Linear):
            raise ConfigError("method 'vqt' needs a linear classification head (num_classes > 0)")
        d = blocks[0].module.norm1.normalized_shape[-1]
        patch = getattr(getattr(model, "patch_embed", None), "patch_size", (16, 16))
        bound = math.sqrt(6.0 / float(3 * patch[0] * patch[1] + d))  # h2t_vit.py:268-269
        slots = _Slots(len(blocks))
        for i, s in enumerate(blocks):
            replace_module(model, s.name, QueryBlock(s.module, i, slots, self.cfg, bound))
        per_block = d * (self.cfg.tokens if self.cfg.combine == "concat" else 1)
        name = next(n for n, m in model.named_modules() if m is head)
        replace_module(model, name, VQTHead(head.in_features, len(blocks) * per_block, head.out_features, slots,
                                            self.cfg.normalize))
        return model
