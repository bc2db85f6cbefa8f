"""Full fine-tuning baseline: every backbone parameter trains. Nothing is added; nothing to merge."""
from __future__ import annotations

import torch.nn as nn

from petlbench.method import PETLMethod, register_method


@register_method("full")
class Full(PETLMethod):
    paper = "baseline"
    display_name = "Full fine-tuning"

    def trainable_parameters(self, model: nn.Module) -> set[str]:
        return {name for name, _ in model.named_parameters()}
