"""Full fine-tuning baseline: every backbone parameter trains. Nothing is added; nothing to merge."""
from __future__ import annotations

import torch.nn as nn

from petlbench.method import PETLMethod, register_method


@register_method("full")
class Full(PETLMethod):
    mergeable = True  # nothing to merge
    families = ("vit", "swin", "convnext", "openclip")
    paper = "baseline"

    def mark_trainable(self, model: nn.Module) -> None:
        model.requires_grad_(True)
