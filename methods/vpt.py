"""Visual Prompt Tuning: Jia et al., 2022 (arXiv:2203.12119).

Shallow: `tokens` learnable prompt tokens are inserted after the prefix tokens (class / register tokens)
before the first block. Deep: each block gets its own prompts, replacing the previous block's prompt
outputs. After the last block the prompt positions are dropped, so the final norm and the head's pooling
(class token, average, attention) see the backbone's own tokens only.

Implemented by wrapping each block (`block` site) of a timm ViT (the only family); no `forward` is replaced.
Not mergeable: the prompts lengthen the sequence. Published keys: vpt_deep / vpt_shallow (option `deep`).
Parameters: tokens * d (shallow), depth * tokens * d (deep); ViT-B/16, 50 deep: 460,800.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from petlbench.method import PETLMethod, Wrapper, register_method
from petlbench.sites import find_sites, replace_module


@dataclass
class VPTConfig:
    tokens: int = 50  # prompt length (VPT searches it per dataset; 50 is within its grid)
    deep: bool = True  # VPT-Deep (True) or VPT-Shallow (False)
    # on the prompts. 0.1 is NOAH's VPT baseline (configs/VPT/VTAB/slurm_train_vpt_vtab.sh:34,
    # --drop_rate_prompt=0.1) and what VPT's demo.ipynb final-training commands pass (MODEL.PROMPT.DROPOUT "0.1");
    # VPT's own config default is 0.0 (KMnP/vpt src/configs/config.py:74, _C.MODEL.PROMPT.DROPOUT = 0.0)
    dropout: float = 0.1

    def validate(self) -> str | None:
        return None if self.tokens >= 1 else f"tokens must be positive, got {self.tokens}"


class PromptedBlock(Wrapper):
    """A block that inserts (first), replaces (deep) and/or strips (last) prompt tokens around `base`."""

    def __init__(self, base: nn.Module, prompts: nn.Parameter | None, tokens: int, prefix: int,
                 insert: bool, strip: bool, dropout: float):
        super().__init__(base)
        self.prompts = prompts
        self.tokens, self.prefix, self.insert, self.strip = tokens, prefix, insert, strip
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if kwargs.get("attn_mask") is not None:
            raise NotImplementedError("VPT does not support attention masks (prompts change the sequence length)")
        n, t = self.prefix, self.tokens
        if self.prompts is not None:
            p = self.drop(self.prompts).expand(x.shape[0], -1, -1).to(x.dtype)
            rest = x[:, n:] if self.insert else x[:, n + t:]
            x = torch.cat([x[:, :n], p, rest], dim=1)
        x = self.base(x, *args, **kwargs)
        if self.strip:
            x = torch.cat([x[:, :n], x[:, n + t:]], dim=1)
        return x


@register_method("vpt")
class VPT(PETLMethod):
    config_cls = VPTConfig
    sites = ("block",)
    # Prompts are tokens of one flat sequence: Swin and ConvNeXt blocks take a spatial grid instead. open_clip's
    # sequence could take them, but `apply` reads the prefix count, width and patch size from timm's ViT only.
    only_families = ("vit",)
    mergeable = False  # prompts lengthen the sequence
    paper = "Jia et al. 2022, arXiv:2203.12119"
    display_name = "VPT"
    variants = {"vpt_deep": ({"deep": True}, "VPT-Deep"), "vpt_shallow": ({"deep": False}, "VPT-Shallow")}

    def apply(self, model: nn.Module, family: str) -> nn.Module:
        blocks = find_sites(model, family, "block")
        d = getattr(model, "embed_dim", None) or blocks[0].module.norm1.normalized_shape[-1]
        prefix = int(getattr(model, "num_prefix_tokens", 1))
        patch = getattr(getattr(model, "patch_embed", None), "patch_size", (16, 16))
        bound = math.sqrt(6.0 / float(3 * patch[0] * patch[1] + d))  # VPT's xavier-style init
        t = self.cfg.tokens
        for i, site in enumerate(blocks):
            prompts = None
            if i == 0 or self.cfg.deep:
                prompts = nn.Parameter(torch.empty(1, t, d).uniform_(-bound, bound))
            wrapped = PromptedBlock(site.module, prompts, t, prefix, insert=(i == 0),
                                    strip=(i == len(blocks) - 1), dropout=self.cfg.dropout)
            replace_module(model, site.name, wrapped)
        return model
