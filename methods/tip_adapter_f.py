"""Tip-Adapter-F: Tip-Adapter with the cache keys fine-tuned (Zhang et al. 2022, arXiv:2207.09519, Sec. 3.3;
github.com/gaopengcuhk/Tip-Adapter@d0e2d6f main.py:66-141).

The keys K become a trainable bias-free Linear initialised with the cache (main.py:69-70); the values, W and
CLIP stay frozen. `train_epoch` epochs over the augmented k-shot images (batch 256, shuffled, main.py:181) through
the frozen image encoder, cross-entropy on the Tip-Adapter logits at init alpha / beta (main.py:91-96), AdamW
(lr `train_lr`, eps 1e-4, torch's default weight decay 0.01) with CosineAnnealingLR over train_epoch x batches,
stepped per batch (main.py:72-73, 103-106). The authors evaluate on test after each epoch and keep the best
(main.py:111-126): `selection=reproduction` does that, `clean` keeps the best epoch on the search split, `final`
the last epoch. Then the alpha / beta search and one test evaluation, as Tip-Adapter (methods/tip_adapter.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from petlbench.method import register_method

from ._tip import TipAdapterHead, TipConfig, accuracy, run_tip, tip_logits
from .tip_adapter import TipAdapter


@dataclass
class TipFConfig(TipConfig):
    train_lr: float | None = None  # cfg['lr'] (configs/*.yaml:29, 0.001 everywhere)
    train_epoch: int | None = None  # configs/*.yaml:31: 20; EuroSAT 100


def train_keys(model: nn.Module, head: TipAdapterHead, batches, select, cfg: dict, device, norm, amp: str,
               progress=None) -> tuple[list[dict], dict[str, Any]]:
    """main.py:68-126: train `head.keys`; with `select` = (features, labels) the epoch of best accuracy there (at
    init alpha / beta, strictly better kept) is restored, else the last epoch's keys stay."""
    from petlbench.batches import norm_tensors, to_input
    from petlbench.engine import autocast_for

    head.keys.requires_grad_(True)
    opt = torch.optim.AdamW([head.keys], lr=cfg["train_lr"], eps=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg["train_epoch"] * len(batches))
    mean, std = norm_tensors(device, norm)
    autocast = autocast_for(device, amp)
    alpha, beta = cfg["init_alpha"], cfg["init_beta"]
    history, best = [], {"best_select_top1": 0.0, "best_epoch": cfg["train_epoch"] - 1, "best_state": None}
    for epoch in range(cfg["train_epoch"]):
        losses, correct, seen = [], 0, 0
        for x, y in batches:
            y = y.to(device)
            with torch.no_grad(), autocast():
                f = model.visual(to_input(x, device, mean, std, False)).float()
            f = F.normalize(f, dim=-1)
            logits = tip_logits(f, head.clip_weights, head.keys, head.values, alpha, beta)
            loss = F.cross_entropy(logits, y)
            if not math.isfinite(loss.item()):
                from petlbench.engine import NonFiniteLoss

                raise NonFiniteLoss(f"tip_adapter_f: loss {loss.item()} at epoch {epoch}")
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        entry = {"epoch": epoch + 1, "loss": sum(losses) / max(1, len(losses)), "lr": sched.get_last_lr()[0],
                 "train_top1": 100.0 * correct / max(1, seen)}
        if select is not None:
            with torch.no_grad():
                acc = accuracy(tip_logits(select[0], head.clip_weights, head.keys, head.values, alpha, beta),
                               select[1])
            entry["select_top1"] = acc
            if acc > best["best_select_top1"]:
                best.update(best_select_top1=acc, best_epoch=epoch + 1, best_state=head.keys.detach().clone())
        history.append(entry)
        if progress:
            progress("train", epoch + 1, cfg["train_epoch"], entry)
    if best["best_state"] is not None:
        with torch.no_grad():
            head.keys.copy_(best["best_state"])
    else:
        best["best_epoch"] = cfg["train_epoch"]
    return history, best


@register_method("tip_adapter_f")
class TipAdapterF(TipAdapter):
    config_cls = TipFConfig
    display_name = "Tip-Adapter-F"

    def paper_count(self, model: nn.Module, trainable: int) -> int:
        return sum(m.keys.numel() for m in model.modules() if isinstance(m, TipAdapterHead))

    def runner(self, protocol: Any):
        return lambda *a, **k: run_tip(*a, **k, fit_keys=train_keys)
