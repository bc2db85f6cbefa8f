"""What Tip-Adapter and Tip-Adapter-F share (Zhang et al. 2022, arXiv:2207.09519): the cache model, its logits,
the alpha / beta search, the authors' per-dataset settings, and the run both methods execute.

Line numbers are of github.com/gaopengcuhk/Tip-Adapter@d0e2d6f. With f the normalised image embedding, W the
zero-shot classifier (normalised class text embeddings, no logit scale), K the cache keys (one normalised
feature per k-shot training image, averaged over `augment_epoch` augmented passes) and V their one-hot labels:

    clip logits   100 f W^T                                      (main.py:32; CLIP's exp(logit_scale) = 100)
    cache logits  exp(-beta (1 - f K^T)) V                       (main.py:39-40; paper Eq. 5)
    Tip-Adapter   clip + alpha * cache                           (main.py:42; paper Eq. 6)

alpha and beta are searched on a validation split (utils.py:99-129): beta outer over search_step[0] values, alpha
inner over search_step[1], value i of n is i * (scale - 0.1) / n + 0.1, the first strictly better accuracy kept.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from petlbench.errors import ConfigError

log = logging.getLogger(__name__)

# configs/<dataset>.yaml (RN50, the paper's main backbone), per tasks/coop name: init_beta :20, init_alpha :21,
# search_scale :17, search_step :18, lr :29, augment_epoch :30, train_epoch :31. fgvc_aircraft is fgvc.yaml.
_COMMON = dict(init_beta=1.0, search_step=(200, 20), lr=0.001, augment_epoch=10, train_epoch=20)
AUTHORS: dict[str, dict[str, Any]] = {
    "caltech101": dict(_COMMON, init_alpha=3.0, search_scale=(12.0, 5.0)),
    "dtd": dict(_COMMON, init_alpha=2.0, search_scale=(13.0, 13.0)),
    "eurosat": dict(_COMMON, init_alpha=2.0, search_scale=(12.0, 10.0), train_epoch=100),
    "fgvc_aircraft": dict(_COMMON, init_alpha=5.0, search_scale=(30.0, 30.0)),
    "food101": dict(_COMMON, init_alpha=1.17, search_scale=(10.0, 10.0)),
    "imagenet": dict(_COMMON, init_alpha=1.17, search_scale=(7.0, 3.0)),
    "oxford_flowers": dict(_COMMON, init_alpha=10.0, search_scale=(50.0, 50.0)),
    "oxford_pets": dict(_COMMON, init_alpha=1.17, search_scale=(7.0, 3.0)),
    "stanford_cars": dict(_COMMON, init_alpha=3.0, search_scale=(20.0, 10.0)),
    "sun397": dict(_COMMON, init_alpha=1.17, search_scale=(12.0, 10.0)),
    "ucf101": dict(_COMMON, init_alpha=3.0, search_scale=(7.0, 3.0)),
}
FALLBACK = "imagenet"  # a task outside CoOp's eleven takes ImageNet's settings


@dataclass
class TipConfig:
    """Options of Tip-Adapter; None takes the authors' value for the run's dataset (`AUTHORS`)."""

    init_beta: float | None = None  # beta during Tip-Adapter-F's training and before the search
    init_alpha: float | None = None
    search_scale_beta: float | None = None  # search_scale[0]: the beta grid runs from 0.1 up to (not incl.) it
    search_scale_alpha: float | None = None  # search_scale[1]
    search_step_beta: int | None = None  # search_step[0]: grid points
    search_step_alpha: int | None = None  # search_step[1]
    augment_epoch: int | None = None  # augmented passes averaged into the cache keys
    search: bool = True  # cfg['search_hp']; False keeps init_beta / init_alpha
    # the split alpha / beta are searched on: "val" = the full val split, as the authors' datasets/*.py give it
    # (they cut only the training set to k shots, e.g. eurosat.py:35-38; on ImageNet main_imagenet.py:43,110 search
    # on its test images, which CoOp's ImageNet val is); "" = val_shot<k>_seed<s> of the training split's k and s
    search_split: str = "val"
    train_batch: int = 256  # main.py:180-181 batch 256 for the cache and Tip-Adapter-F's training

    def validate(self) -> str | None:
        for k in ("search_step_beta", "search_step_alpha", "augment_epoch"):
            if getattr(self, k) is not None and getattr(self, k) < 1:
                return f"{k} must be positive"
        return None


def settings(cfg: Any, dataset: str) -> dict[str, Any]:
    """The options of `cfg` with None replaced by the authors' value for `dataset` (a tasks/coop name)."""
    a = AUTHORS.get(dataset, AUTHORS[FALLBACK])
    out = dataclasses.asdict(cfg)
    filled = dict(init_beta=a["init_beta"], init_alpha=a["init_alpha"], search_scale_beta=a["search_scale"][0],
                  search_scale_alpha=a["search_scale"][1], search_step_beta=a["search_step"][0],
                  search_step_alpha=a["search_step"][1], augment_epoch=a["augment_epoch"],
                  train_lr=a["lr"], train_epoch=a["train_epoch"])
    for k, v in filled.items():
        if out.get(k, v) is None or k not in out:
            out[k] = v
    return out


# --- the equations ----------------------------------------------------------------------------------------------
def cache_logits(affinity: torch.Tensor, values: torch.Tensor, beta: float) -> torch.Tensor:
    """exp(-beta (1 - A)) V, A = f K^T (paper Eq. 5; main.py:40)."""
    return (-beta * (1 - affinity)).exp() @ values


def tip_logits(f: torch.Tensor, clip_weights: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
               alpha: float, beta: float) -> torch.Tensor:
    """100 f W^T + alpha exp(-beta (1 - f K^T)) V (paper Eq. 6; main.py:32, 39-42)."""
    return 100.0 * f @ clip_weights.t() + alpha * cache_logits(f @ keys.t(), values, beta)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 in %, as utils.py:10-15 cls_acc computes it."""
    return 100 * float((logits.argmax(1) == labels).sum().item()) / labels.shape[0]


def grid(scale: float, steps: int) -> list[float]:
    """utils.py:103-104: [i * (scale - 0.1) / steps + 0.1 for i in range(steps)]."""
    return [i * (scale - 0.1) / steps + 0.1 for i in range(steps)]


@torch.no_grad()
def search_hp(f: torch.Tensor, labels: torch.Tensor, clip_weights: torch.Tensor, keys: torch.Tensor,
              values: torch.Tensor, scale: tuple[float, float], steps: tuple[int, int]) -> tuple[float, float, float]:
    """(beta, alpha, accuracy) of utils.py:99-129 search_hp: beta outer, alpha inner, the first strictly better
    accuracy kept, starting from accuracy 0 at (0, 0)."""
    clip = 100.0 * f @ clip_weights.t()
    affinity = f @ keys.t()  # beta-independent (utils.py:112/114 recomputes it per point)
    best = (0.0, 0.0, 0.0)
    for beta in grid(scale[0], steps[0]):
        cache = cache_logits(affinity, values, beta)
        for alpha in grid(scale[1], steps[1]):
            acc = accuracy(clip + cache * alpha, labels)
            if acc > best[2]:
                best = (beta, alpha, acc)
    return best


class TipAdapterHead(nn.Module):
    """The classifier on the normalised image embedding f: `tip_logits(f, W, keys, values, alpha, beta)`.

    `keys` (cache entries x embed_dim) is its one parameter (what Tip-Adapter-F trains; main.py:69-70 makes it a
    bias-free Linear's weight); W (`clip_weights`) and the one-hot `values` are buffers, not saved with the tuned
    tensors. Until `set_cache` the cache is one zero key per class with identity values: every class gets the
    same cache logit exp(-beta), so the head predicts as zero-shot CLIP (a model built through the API)."""

    def __init__(self, clip_weights: torch.Tensor, alpha: float, beta: float):
        super().__init__()
        n_cls, dim = clip_weights.shape
        self.register_buffer("clip_weights", clip_weights, persistent=False)
        self.keys = nn.Parameter(clip_weights.new_zeros(n_cls, dim))
        self.register_buffer("values", torch.eye(n_cls, device=clip_weights.device), persistent=False)
        self.alpha, self.beta = float(alpha), float(beta)
        self.out_features = n_cls

    @torch.no_grad()
    def set_cache(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        """Cache keys (normalised features) and their integer labels (made one-hot over the head's classes)."""
        self.keys = nn.Parameter(keys.to(self.clip_weights), requires_grad=self.keys.requires_grad)
        self.values = F.one_hot(labels.long().to(self.keys.device), self.out_features).to(self.clip_weights)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return tip_logits(f, self.clip_weights.to(f.dtype), self.keys.to(f.dtype), self.values.to(f.dtype),
                          self.alpha, self.beta)


def attach_head(model: nn.Module, alpha: float, beta: float) -> nn.Module:
    """Replace a CLIPClassifier's zero-shot head (rows: normalised text embeddings times the logit scale) by a
    TipAdapterHead whose W is that head's rows normalised."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(head, nn.Linear) or not getattr(model, "normalize", False):
        raise ConfigError("tip_adapter needs a CLIPClassifier with its linear head on normalised embeddings "
                          "(an open_clip backbone; head_init=zeroshot for CLIP's text classifier)")
    model.head = TipAdapterHead(F.normalize(head.weight.detach(), dim=-1), alpha, beta)
    return model


# --- data --------------------------------------------------------------------------------------------------------
def tip_transform(img_size: int, interpolation: str):
    """main.py:173-178: RandomResizedCrop(scale=(0.5, 1)), bicubic in the authors' code, + horizontal flip;
    normalisation is done on the device (engine convention), to a uint8 tensor here."""
    from torchvision import transforms as T

    return T.Compose([T.RandomResizedCrop(img_size, scale=(0.5, 1), interpolation=T.InterpolationMode(interpolation)),
                      T.RandomHorizontalFlip(p=0.5), T.PILToTensor()])


@torch.no_grad()
def embed(model: nn.Module, batches, device, norm, amp: str, normalize: bool = True, encoder: nn.Module | None = None):
    """(features, labels) of every batch: CLIP's image embedding (`encoder`'s, when given; normalised unless
    told), in float32."""
    from petlbench.batches import norm_tensors, to_input
    from petlbench.engine import autocast_for

    mean, std = norm_tensors(device, norm)
    autocast = autocast_for(device, amp)
    encoder = model.visual if encoder is None else encoder
    feats, labels = [], []
    for x, y in batches:
        with autocast():
            f = encoder(to_input(x, device, mean, std, False)).float()
        feats.append(F.normalize(f, dim=-1) if normalize else f)
        labels.append(y.to(device))
    return torch.cat(feats), torch.cat(labels)


def build_cache(model, batches, passes: int, device, norm, amp: str, encoder: nn.Module | None = None):
    """utils.py:38-62: `passes` augmented passes over the k-shot split (unshuffled), the raw embeddings (of
    `encoder`, default CLIP's image tower) averaged over passes, then normalised; the labels of the first pass."""
    keys, labels = [], None
    for _ in range(passes):
        f, y = embed(model, batches, device, norm, amp, normalize=False, encoder=encoder)
        keys.append(f)
        labels = y if labels is None else labels
    return F.normalize(torch.stack(keys).mean(0), dim=-1), labels


_TRAIN = re.compile(r"train_shot(\d+)_seed(\d+)$")


def search_split_of(task, p, cfg: dict) -> str:
    if cfg["search_split"]:
        return cfg["search_split"]
    m = _TRAIN.match(p.train_split)
    if m and f"val_shot{m[1]}_seed{m[2]}" in task.splits:
        return f"val_shot{m[1]}_seed{m[2]}"
    return p.val_split


# --- the run -----------------------------------------------------------------------------------------------------
def run_tip(spec, data_root: str, store, out_dir: str, force: bool = False, progress=None,
            fit_keys=None) -> dict[str, Any]:
    """Tip-Adapter's main.py:144-203 as one run (`run.execute`'s signature): zero-shot classifier, cache, val and
    test features, (Tip-Adapter-F: the keys trained by `fit_keys`, tip_adapter_f.train_keys), the alpha / beta
    search on the search split, the test split evaluated with the chosen pair. The record holds the pair, the
    search accuracy and zero-shot CLIP's test accuracy."""
    from petlbench.decode import ImageDataset
    from petlbench.loaders import LoaderBatches, input_normalization, load_split, loader_workers
    from petlbench.run import base_record, start_own_run

    task, p, ex = spec.task, spec.protocol, spec.execution
    cfg = settings(spec.method.cfg, task.name.split("/", 1)[-1])
    fine_tune = fit_keys is not None
    if fine_tune and p.selection == "trial":
        raise ConfigError("tip_adapter_f: selection=trial is not supported (reproduction, clean or final)")
    train, search, test = p.train_split, search_split_of(task, p, cfg), p.test_split
    run = start_own_run(spec, data_root, store, (train, search, test), force)
    if run.done is not None:
        return run.done
    samples, data, device, model = run.samples, run.data, run.device, run.model
    head: TipAdapterHead = model.head
    norm = input_normalization(p, model)
    t0 = time.perf_counter()
    ds = ImageDataset(samples[train], tip_transform(p.img_size, p.interpolation), ex.on_bad_image)
    workers = loader_workers(ex)
    keys, labels = build_cache(model, LoaderBatches(ds, cfg["train_batch"], False, workers, p.seed),
                               cfg["augment_epoch"], device, norm, ex.amp)
    head.set_cache(keys, labels)
    feats, bad = {}, []
    for split in dict.fromkeys((search, test)):
        batches, b = load_split(task, data_root, split, p, ex, False, device, samples[split])
        feats[split] = embed(model, batches, device, norm, ex.amp)
        bad += b.items
    W, V = head.clip_weights, head.values
    init_beta, init_alpha = cfg["init_beta"], cfg["init_alpha"]
    history, extra = [], {}
    if fine_tune:
        select_on = {"reproduction": test, "clean": search}.get(p.selection)
        extra = {"select_split": select_on, "train_lr": cfg["train_lr"], "train_epoch": cfg["train_epoch"]}
        history, fitted = fit_keys(model, head, LoaderBatches(ds, cfg["train_batch"], True, workers, p.seed),
                                    feats.get(select_on), cfg, device, norm, ex.amp, progress)
        extra.update(fitted)
    K = head.keys.detach()
    fs, ys = feats[search]
    ft, yt = feats[test]
    with torch.no_grad():
        init_val = accuracy(tip_logits(fs, W, K, V, init_alpha, init_beta), ys)
        if cfg["search"]:
            beta, alpha, val = search_hp(fs, ys, W, K, V, (cfg["search_scale_beta"], cfg["search_scale_alpha"]),
                                         (cfg["search_step_beta"], cfg["search_step_alpha"]))
        else:
            beta, alpha, val = init_beta, init_alpha, init_val
        top1 = accuracy(tip_logits(ft, W, K, V, alpha, beta), yt)
        zero_shot = accuracy(100.0 * ft @ W.t(), yt)
    head.alpha, head.beta = float(alpha), float(beta)
    value = top1
    if fine_tune and p.selection == "reproduction":
        value = max(extra["best_select_top1"], top1)  # main.py:141 prints max(best epoch's test acc, searched acc)
    n_keys, n_values = K.numel(), V.numel()
    metrics = {"top1": value, "split": test, "epoch": extra.get("best_epoch", 0), "alpha": alpha, "beta": beta,
               "val_top1": val, "val_split": search, "val_top1_init": init_val, "init_alpha": init_alpha,
               "init_beta": init_beta, "zero_shot_top1": zero_shot, "tip_top1": top1, "cache_entries": K.shape[0],
               "augment_epoch": cfg["augment_epoch"], **{k: v for k, v in extra.items() if k != "best_state"}}
    record = {
        **base_record(spec, data), "status": "ok", "metric": "top1", "value": value,
        "selection": _selection_text(fine_tune, p, search, test),
        "metrics": metrics, "history": history,
        "params": {"trainable": n_keys if fine_tune else 0, "paper": n_keys if fine_tune else n_keys + n_values,
                   "head": 0, "cache_keys": n_keys, "cache_values": n_values,
                   "backbone_total": sum(q.numel() for n, q in model.named_parameters() if not n.startswith("head."))},
        "device": str(device), "seconds": round(time.perf_counter() - t0, 1),
        "skipped_images": {"train": len(ds.bad), "eval": len(bad), "paths": [q for q, _ in (ds.bad.items + bad)[:20]]},
    }
    store.append(record)  # (no tuned file: the cache's values are data, not tensors save_tuned stores)
    if progress:
        progress("evaluate", 1, 1, {test: value})
    return record


def _selection_text(fine_tune: bool, p, search: str, test: str) -> str:
    hp = f"alpha, beta searched on {search} (utils.py:99-129), {test} evaluated once with them"
    if not fine_tune:
        return f"training-free: {hp}"
    epoch = {"reproduction": f"the epoch of best {test} accuracy at init alpha, beta (main.py:111-126, selected on "
                             f"test, as the authors); value = max(that accuracy, the searched one) (main.py:141)",
             "clean": f"the epoch of best {search} accuracy at init alpha, beta",
             "final": "the last epoch"}[p.selection]
    return f"keys trained; {epoch}; {hp}"
