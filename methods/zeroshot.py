"""Zero-shot CLIP: Radford et al. 2021 (arXiv:2103.00020), the baseline row of every CLIP adaptation table.

The classifier is CLIP's text tower applied to prompts of the class names: per class, the normalised mean of the
normalised text embeddings of its templates (one hand-crafted prompt, e.g. CoOp's "a photo of a {}, a type of
pet." for OxfordPets, or CLIP's 80-template ImageNet ensemble: `head_templates=NAME`, a template set of the
task), times CLIP's logit scale (`backbones.zero_shot_weights`); logits = that matrix times the normalised image
embedding. Nothing trains: a run builds the model, evaluates the test split once and records it (`runner`), so
its record has no history and 0 trainable parameters. open_clip backbones only (`backbone=openclip:ViT-B-16
weights=openai`), on tasks that know their class names (`Task.classnames`, or the data's: `Task.classnames_fn`).
"""
from __future__ import annotations

import time
from typing import Any

import torch.nn as nn

from petlbench.method import PETLMethod, register_method


def evaluate_only(spec, data_root: str, store, out_dir: str, force: bool = False, progress=None) -> dict[str, Any]:
    """A run that trains nothing: the model as built, the test split evaluated once (`run.execute`'s signature)."""
    from petlbench.engine import EvalSet, evaluate
    from petlbench.loaders import input_normalization, load_split
    from petlbench.run import base_record, start_own_run

    task, p, ex = spec.task, spec.protocol, spec.execution
    run = start_own_run(spec, data_root, store, (p.test_split,), force)
    if run.done is not None:
        return run.done
    device, model, data = run.device, run.model, run.data
    batches, bad = load_split(task, data_root, p.test_split, p, ex, False, device, run.samples[p.test_split])
    t0 = time.perf_counter()
    top1 = evaluate(model, EvalSet(p.test_split, batches, task.logit_subset), device, input_normalization(p, model),
                    ex.amp)["top1"]
    record = {
        **base_record(spec, data), "status": "ok", "metric": "top1", "value": top1,
        "selection": "zero-shot: nothing trained; test evaluated once",
        "metrics": {"top1": top1, "split": p.test_split, "epoch": 0}, "history": [],
        "params": {"trainable": 0, "paper": 0, "head": 0, "backbone_total": sum(q.numel() for q in model.parameters())},
        "device": str(device), "seconds": round(time.perf_counter() - t0, 1),
        "skipped_images": {"train": 0, "eval": len(bad), "paths": [path for path, _ in bad.items[:20]]},
    }
    store.append(record)  # (nothing is tuned: no file under out_dir)
    if progress:
        progress("evaluate", 1, 1, {p.test_split: top1})
    return record


@register_method("zeroshot")
class ZeroShot(PETLMethod):
    # the head is CLIP's zero-shot classifier (`head_init=zeroshot`): only open_clip backbones have the text tower
    only_families = ("openclip",)
    protocol = {"head_init": "zeroshot"}
    paper = "Radford et al. 2021, arXiv:2103.00020"
    display_name = "Zero-shot CLIP"

    def trainable_parameters(self, model: nn.Module) -> set[str]:
        return set()  # (a run trains nothing: `runner`; trained as a model, only its head would)

    def runner(self, protocol: Any):
        return evaluate_only
