"""Linear probing baseline: only the classification head trains (the core always trains the head), so this
method adds and unfreezes nothing."""
from __future__ import annotations

import torch.nn as nn

from petlbench.method import PETLMethod, register_method


@register_method("linear")
class Linear(PETLMethod):
    paper = "baseline"
    display_name = "Linear probing"

    def trainable_parameters(self, model: nn.Module) -> set[str]:
        return set()
