"""Tip-Adapter (training-free): Zhang et al. 2022, "Tip-Adapter: Training-free Adaption of CLIP for Few-shot
Classification" (ECCV; arXiv:2207.09519), from github.com/gaopengcuhk/Tip-Adapter@d0e2d6f.

CLIP's zero-shot classifier plus a key-value cache of the k-shot training set: logits = 100 f W^T +
alpha exp(-beta (1 - f K^T)) V (paper Eq. 6; methods/_tip.py has the equations, the search and the run). Nothing
trains. A run (`runner`) builds the zero-shot head (`head_init=zeroshot`, Tip-Adapter's templates:
`head_templates=tip_adapter`, the task's set; they equal CoOp's prompt on ten datasets and are CLIP's 7 selected
templates on ImageNet, tasks/coop/prompts.py), the cache from `augment_epoch` passes of the training split under
the authors' RandomResizedCrop(scale=(0.5, 1)) + flip (main.py:173-178), the features of the search and test
splits, searches alpha / beta on the search split (utils.py:99-129) and evaluates the test split once with them.

Per-dataset defaults (init_beta, init_alpha, search_scale, search_step, augment_epoch) are the authors'
configs/<dataset>.yaml (`_tip.AUTHORS`), taken where an option is left None. open_clip backbones only.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from petlbench.method import PETLMethod, register_method

from ._tip import TipConfig, attach_head, run_tip, settings


@register_method("tip_adapter")
class TipAdapter(PETLMethod):
    config_cls = TipConfig
    # the classifier is CLIP's text classifier plus a cache of CLIP image features: open_clip backbones only
    only_families = ("openclip",)
    # a task without a "tip_adapter" template set is refused by build_model: override head_templates there
    protocol = {"head_init": "zeroshot", "head_templates": "tip_adapter"}
    mergeable = False  # the cache's exp(-beta (1 - f K^T)) is no linear layer
    paper = "Zhang et al. 2022, arXiv:2207.09519"
    display_name = "Tip-Adapter"

    def apply(self, model: nn.Module, family: str) -> nn.Module:
        s = settings(self.cfg, "")  # the dataset is not known here: the run sets alpha / beta on the head
        return attach_head(model, s["init_alpha"], s["init_beta"])

    def trainable_parameters(self, model: nn.Module) -> set[str]:
        return set()  # the head (the cache keys) is all a model built through the API trains

    def paper_count(self, model: nn.Module, trainable: int) -> int:
        return 0  # (a run records the cache: keys + values)

    def runner(self, protocol: Any):
        return run_tip
