"""AdaptFormer (Chen et al., "AdaptFormer: Adapting Vision Transformers for Scalable Visual Recognition",
NeurIPS 2022, arXiv:2205.13535): a trainable bottleneck in parallel with each block's frozen MLP, placed as the
authors' code places it (ShoufaChen/AdaptFormer@6967d67 models/custom_modules.py:76-94, ffn_option="parallel",
ffn_adapter_layernorm_option="none"). With x the residual stream after attention,

    x_out = x + drop_path(ls(mlp(norm2(x)))) + s * up(dropout(relu(down(x))))

The branch reads x itself, not norm2(x) (the authors' adapter has no norm of its own with option "none",
models/adapter.py:28, :52), and its output joins the residual sum outside LayerScale and stochastic depth
(custom_modules.py:83-93). `adapter style=parallel` differs on both counts (it wraps the MLP). timm's Block
computes x + drop_path2(ls2(mlp(norm2(x)))), and no one module sees both x and that sum, so two wrappers share the
branch: one around norm2 keeps its input (a pass-through), one around drop_path2 adds the branch of that input.
Not mergeable: no plain layer computes the ReLU bottleneck.

Parameters per block: d*h + h + h*d + d. ViT-B/16 (d=768, 12 blocks): h=64 (the default) 1,189,632; h=8 156,768.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from petlbench.config import not_positive, not_probability
from petlbench.errors import ConfigError
from petlbench.method import PETLMethod, Wrapper, register_method
from petlbench.methods.adapter import AdapterConfig, AdapterMLP
from petlbench.sites import Site, find_sites, replace_module


@dataclass
class AdaptFormerConfig:
    dim: int = 64  # bottleneck width: main_image.py:114 (and main_video.py:154) --ffn_num default 64
    scale: float = 0.1  # output scale s: main_image.py:190 ffn_adapter_scalar="0.1"
    dropout: float = 0.1  # after the ReLU: custom_modules.py:70 Adapter(dropout=0.1); adapter.py:57
    # (the video model passes its --drop instead, default 0.0: vit_video.py:124, main_video.py:129)

    def validate(self) -> str | None:
        return not_positive(dim=self.dim) or not_probability(dropout=self.dropout)


class NormInputTap(Wrapper):
    """`base` (a block's norm2) unchanged; keeps its input, the residual stream x, for the block's branch."""

    def __init__(self, base: nn.Module):
        super().__init__(base)
        self.pending: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.pending = x
        return self.base(x)

    def take(self) -> torch.Tensor:
        x, self.pending = self.pending, None
        if x is None:
            raise RuntimeError("adaptformer: the block called drop_path2 without norm2 first; this block's forward "
                               "is not x + drop_path2(ls2(mlp(norm2(x))))")
        return x


class AdaptMLPBranch(AdapterMLP):
    """`base` (the drop path behind the MLP) plus s * up(dropout(relu(down(x)))), x the tapped input of norm2:
    the adapter module's parallel bottleneck, its init the authors' "lora" (adapter.py:41-48: down
    kaiming_uniform(a=sqrt(5)), up and both biases zero)."""

    def __init__(self, base: nn.Module, tap: NormInputTap, width: int, cfg: AdaptFormerConfig):
        shared = AdapterConfig(dim=cfg.dim, style="parallel", scale=cfg.scale, act="relu", dropout=cfg.dropout,
                               init="zero_up")
        super().__init__(base, cfg.dim, shared, in_dim=width)
        # a plain reference, not a submodule: the tap stays at norm2 in the module tree and the state dict
        self.__dict__["tap"] = tap

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.base(y) + self.branch(self.tap.take())


@register_method("adaptformer")
class AdaptFormer(PETLMethod):
    config_cls = AdaptFormerConfig
    # norm2 for the branch's input, drop_path2 for its output: families whose blocks have both (ViT, Swin)
    sites = ("block_norm", "mlp_drop_path")
    mergeable = False  # the ReLU bottleneck is not linear: no plain layer computes it
    paper = "AdaptFormer, Chen et al. 2022, arXiv:2205.13535"
    display_name = "AdaptFormer"

    def apply(self, model: nn.Module, family: str) -> nn.Module:
        norms = {s.name.rpartition(".")[0]: s for s in find_sites(model, family, "block_norm")
                 if s.name.endswith(".norm2")}
        for site in find_sites(model, family, "mlp_drop_path"):
            block = site.name.rpartition(".")[0]
            norm = norms.get(block)
            if norm is None:
                raise ConfigError(f"adaptformer: block {block} has no LayerNorm norm2 to take the branch's input from")
            tap = NormInputTap(norm.module)
            replace_module(model, norm.name, tap)
            replace_module(model, site.name, AdaptMLPBranch(site.module, tap, norm.module.normalized_shape[-1],
                                                            self.cfg))
        return model

    def wrap(self, site: Site) -> nn.Module:
        raise NotImplementedError("adaptformer wraps norm2 and drop_path2 together, in apply")
