"""SSF: "Scaling & Shifting Your Features", Lian et al., 2022 (arXiv:2210.08823).

    y' = gamma * y + beta     (per channel), after every Linear (qkv, proj, fc1, fc2), every LayerNorm
                              (norm1, norm2, the final norm) and the patch-embedding conv

gamma ~ N(1, 0.02), beta ~ N(0, 0.02) as in SSF's code. Each (gamma, beta) follows a linear layer, so it folds
into it exactly (eq. 5 of the paper; `folding.fold_output_affine`): W' = diag(gamma) W, b' = gamma b + beta.
Parameters on ViT-B/16: 2 * (12 * (2304 + 768 + 3072 + 768 + 768 + 768) + 768 + 768) = 205,824.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from petlbench.folding import fold_output_affine
from petlbench.method import PETLMethod, Wrapper, register_method
from petlbench.sites import Site, channels_first


def _out_channels(layer: nn.Module) -> int:
    if isinstance(layer, nn.Linear):
        return layer.out_features
    if isinstance(layer, nn.LayerNorm):
        return layer.normalized_shape[-1]
    if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return layer.out_channels
    raise ValueError(f"SSF cannot follow a {type(layer).__name__}")


class SSFLayer(Wrapper):
    """`gamma * base(x) + beta`, per output channel (channel dim 1 for convs, last dim otherwise)."""

    def __init__(self, base: nn.Module):
        super().__init__(base)
        c = _out_channels(base)
        self.gamma = nn.Parameter(torch.empty(c).normal_(1.0, 0.02))
        self.beta = nn.Parameter(torch.empty(c).normal_(0.0, 0.02))
        self.channel_dim = 1 if channels_first(base) else -1  # convs and LayerNorm2d: NCHW

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.channel_dim == 1:
            shape = (1, -1) + (1,) * (y.dim() - 2)
            return y * self.gamma.view(shape) + self.beta.view(shape)
        return y * self.gamma + self.beta

    def merged(self) -> nn.Module:
        return fold_output_affine(self.base, self.gamma, self.beta)


@register_method("ssf")
class SSF(PETLMethod):
    sites = ("attn_in", "mlp_in", "mlp_out", "block_norm", "patch_embed")
    # ConvNeXt has no attention output projection (its token mixer is the depthwise conv, "attn_in")
    optional_sites = ("attn_out", "final_norm")
    families = ("vit", "swin", "convnext")
    mergeable = True
    paper = "Lian et al. 2022, arXiv:2210.08823"

    def wrap(self, site: Site) -> nn.Module:
        return SSFLayer(site.module)
