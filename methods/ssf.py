"""SSF: "Scaling & Shifting Your Features", Lian et al., 2022 (arXiv:2210.08823).

    y' = gamma * y + beta     (per channel), after every Linear (qkv, proj, fc1, fc2), every LayerNorm
                              (norm1, norm2, the final norm) and the patch-embedding conv; on open_clip,
                              after the fused in_proj of nn.MultiheadAttention (same weights, scaled)

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


class SSFAttention(Wrapper):
    """SSF after both projections of an nn.MultiheadAttention (open_clip): the fused q/k/v in_proj (3d channels)
    and out_proj (d). The module reads those tensors itself instead of calling layers, so the scale and shift are
    applied to its weights for the call (`torch.func.functional_call`): the same function as SSF after each
    projection, and exactly what `merged()` folds in."""

    def __init__(self, base: nn.MultiheadAttention):
        super().__init__(base)
        d = base.embed_dim
        self.gamma = nn.Parameter(torch.empty(3 * d).normal_(1.0, 0.02))
        self.beta = nn.Parameter(torch.empty(3 * d).normal_(0.0, 0.02))
        self.gamma_out = nn.Parameter(torch.empty(d).normal_(1.0, 0.02))
        self.beta_out = nn.Parameter(torch.empty(d).normal_(0.0, 0.02))

    def forward(self, query: torch.Tensor, *rest, **kwargs):
        m = self.base
        zero = torch.zeros_like(self.beta)
        params = {"in_proj_weight": m.in_proj_weight * self.gamma[:, None],
                  "in_proj_bias": (m.in_proj_bias if m.in_proj_bias is not None else zero) * self.gamma + self.beta,
                  "out_proj.weight": m.out_proj.weight * self.gamma_out[:, None],
                  "out_proj.bias": (m.out_proj.bias if m.out_proj.bias is not None else zero[:len(self.beta_out)])
                  * self.gamma_out + self.beta_out}
        return torch.func.functional_call(m, params, (query, *rest), kwargs)

    def merged(self) -> nn.MultiheadAttention:
        out = fold_output_affine(self.base, self.gamma, self.beta)
        out.out_proj = fold_output_affine(out.out_proj, self.gamma_out, self.beta_out)
        return out


@register_method("ssf")
class SSF(PETLMethod):
    sites = ("attn_in", "attn_out", "mlp_in", "mlp_out", "block_norm", "patch_embed")
    # Sites a family does not have are skipped (sites.FAMILY_SITES says which: ConvNeXt has no attn_out, its token
    # mixer being the depthwise conv; open_clip has no patch_embed, its conv1 having no bias for SSF's shift).
    optional_sites = ("final_norm",)
    families = ("vit", "swin", "convnext", "openclip")
    mergeable = True
    paper = "Lian et al. 2022, arXiv:2210.08823"

    def wrap(self, site: Site) -> nn.Module:
        if isinstance(site.module, nn.MultiheadAttention):
            return SSFAttention(site.module)
        return SSFLayer(site.module)
