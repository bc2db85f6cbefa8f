"""BitFit: "BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked Language-models",
Ben Zaken et al., 2021 (arXiv:2106.10199). Only the backbone's bias vectors train (found structurally: the
`bias` parameter of each module). Nothing is added, so the tuned model already is a plain backbone.
Parameters on ViT-B/16: 102,912.
"""
from __future__ import annotations

import torch.nn as nn

from petlbench.method import PETLMethod, own_biases, register_method


@register_method("bitfit")
class BitFit(PETLMethod):
    paper = "Ben Zaken et al. 2021, arXiv:2106.10199"
    display_name = "BitFit"

    def trainable_parameters(self, model: nn.Module) -> set[str]:
        return own_biases(model)
