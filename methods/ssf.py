"""SSF: "Scaling & Shifting Your Features", Lian et al., 2022 (arXiv:2210.08823).

    y' = gamma * y + beta     (per channel), after every Linear (qkv, proj, fc1, fc2), every LayerNorm
                              (norm1, norm2, the final norm) and the patch-embedding conv; on open_clip,
                              after the fused in_proj of nn.MultiheadAttention (same weights, scaled)

gamma ~ N(1, 0.02), beta ~ N(0, 0.02) as in SSF's code. Each (gamma, beta) follows a linear layer, so it folds
into it exactly (eq. 5 of the paper): W' = diag(gamma) W, b' = gamma b + beta. An output affine
(`method.OutputAffine`): this file gives (gamma, beta); the form base does the forward on every layer type (on
nn.MultiheadAttention through its projections' tensors) and the merge (`folding.fold_output_affine`).
Parameters on ViT-B/16: 2 * (12 * (2304 + 768 + 3072 + 768 + 768 + 768) + 768 + 768) = 205,824.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from petlbench.method import OutputAffine, PETLMethod, register_method
from petlbench.sites import Site


class SSFLayer(OutputAffine):
    """`gamma * base(x) + beta` per output channel; on nn.MultiheadAttention after each projection (in_proj:
    gamma, beta; out_proj: gamma_out, beta_out). An output affine: the form base does forward and merge."""

    def __init__(self, base: nn.Module):
        super().__init__(base)
        for proj, c in self.widths.items():  # drawn in this order: in_proj's pair, then out_proj's
            suffix = "_out" if proj == "out_proj" else ""
            setattr(self, "gamma" + suffix, nn.Parameter(torch.empty(c).normal_(1.0, 0.02)))
            setattr(self, "beta" + suffix, nn.Parameter(torch.empty(c).normal_(0.0, 0.02)))

    def output_affine(self, proj: str) -> tuple[torch.Tensor, torch.Tensor]:
        if proj == "out_proj":
            return self.gamma_out, self.beta_out
        return self.gamma, self.beta


@register_method("ssf")
class SSF(PETLMethod):
    sites = ("attn_in", "attn_out", "mlp_in", "mlp_out", "block_norm", "patch_embed", "final_norm")
    # Wrapped where a family has them: ConvNeXt has no attn_out (its token mixer is the depthwise conv, SSF'd as
    # attn_in; open_clip's out_proj is reached through attn_in); open_clip has no patch_embed (conv1 has no bias
    # for SSF's shift); the final norm is absent where a backbone replaces it.
    optional_sites = ("attn_out", "patch_embed", "final_norm")
    paper = "Lian et al. 2022, arXiv:2210.08823"
    display_name = "SSF"

    def wrap(self, site: Site) -> nn.Module:
        return SSFLayer(site.module)
