"""CaFo: CLIP and DINO caches blended by their agreement with zero-shot CLIP (Zhang et al., "Prompt, Generate, then
Cache: Cascade of Foundation Models makes Strong Few-shot Learners", CVPR 2023, arXiv:2303.02151), from
github.com/OpenGVLab/CaFo@a805a2a (main.py, utils.py, configs/<dataset>/<k>shot.yaml; lines cited).

Tip-Adapter-F's cache (methods/_tip.py) twice: one of CLIP image features, one of a self-supervised DINO
encoder's (CaFo: a torchvision ResNet-50 with DINO's weights, fc removed, main.py:167-171) on the same images.
With f / g the normalised CLIP / DINO features, W the CLIP classifier and K_c, K_d, V the caches:

    zero   = 100 f W^T                                                      (main.py:84)
    c_c    = exp(-beta (1 - f K_c^T)) V,  c_d = exp(-beta (1 - g K_d^T)) V (main.py:80-83)
    fused  = sum_i softmax_i(<n(c_i), n(zero)>) n(c_i)                      (utils.py logits_fuse, 'mean')
    logits = zero + alpha * fused                                           (main.py:86-87)

where n(x) standardises each row (minus its mean, over its unbiased std). Both key sets are trained (AdamW, eps
1e-4, cosine over epochs x batches, main.py:40-48) at init alpha / beta; the epoch of best test accuracy is kept
(main.py:129-134, as Tip-Adapter-F; `selection=reproduction`); then alpha / beta are searched on val with the
*untrained* keys (main.py:141 calls search_ensemble_hp without the adapters) and the test split is evaluated once
with the trained keys at that pair; the authors print max(best epoch's, searched) (main.py:153).

What the paper adds beside the caches, and how it stands here:
- GPT-3 prompts: CaFo's classifier W is CLIP's text embedding of GPT-3-written descriptions per class
  (utils.py gpt_clip_classifier; gpt_file/<dataset>_prompt.json). `gpt_prompts=PATH` reads such a file (a JSON
  object: class name with spaces -> list of prompts); left empty, W is the task's template set (head_templates,
  Tip-Adapter's), which is Tip-Adapter's classifier rather than CaFo's.
- DALL-E images: CaFo adds `dalle_shots` generated images per class to both caches and to every training
  epoch (main.py:97-123, 218-236). `generated=PATH` takes them (a CoOp split JSON like CaFo's
  dalle_<dataset>.json with `generated_root` its image folder, or a "<relative path> <label>" list file), off by
  default: no generator runs offline. Without them CaFo is its CLIP + DINO cache alone; the authors' main.py
  always adds them, so their numbers include the generated images (and the GPT-3 classifier).
Per-dataset and per-shot settings (init_alpha, search_scale, train_epoch, augment_epoch, dalle_shots) are the
authors' configs (`AUTHORS`), taken where an option is left None. open_clip backbones only; not mergeable.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from petlbench.data import DataError
from petlbench.errors import ConfigError
from petlbench.method import PETLMethod, register_method

from . import _tip
from ._tip import TipConfig, accuracy, cache_logits, grid

log = logging.getLogger(__name__)

# configs/<dataset>/<k>shot.yaml, per tasks/coop name and shots: (init_alpha :21, dalle_shots :33, augment_epoch
# :36, train_epoch :37). Every config: init_beta 1 (:20), search_step [200, 20] (:18), lr 0.001 (:35), clip RN50.
_DIRS = {"caltech101": "caltech101", "stanford_cars": "cars", "dtd": "dtd", "eurosat": "eurosat",
         "fgvc_aircraft": "fgvc", "food101": "food101", "imagenet": "imagenet", "oxford_flowers": "oxford_flowers",
         "oxford_pets": "pets", "sun397": "sun", "ucf101": "ucf"}
_SHOTS = (1, 2, 4, 8, 16)
_PER_SHOT = {  # shots 1, 2, 4, 8, 16
    "caltech101": [(0.5, 8, 10, 20), (0.8, 16, 10, 20), (1.1, 2, 10, 20), (1.1, 4, 10, 20), (1.3, 1, 10, 20)],
    "stanford_cars": [(0.4, 16, 10, 100), (0.4, 16, 10, 200), (0.8, 16, 10, 400), (0.5, 1, 10, 200),
                      (0.6, 1, 10, 200)],
    "dtd": [(2.0, 1, 10, 20)] * 5,
    "eurosat": [(3.0, 4, 10, 20), (1.5, 8, 10, 100), (2.0, 4, 10, 100), (2.0, 8, 10, 100), (2.0, 8, 10, 100)],
    "fgvc_aircraft": [(1.0, 8, 10, 100), (0.8, 4, 10, 100), (0.9, 2, 10, 100), (1.0, 1, 10, 100),
                      (1.0, 1, 10, 100)],
    "food101": [(0.2, 4, 10, 200), (0.2, 4, 10, 200), (0.22, 4, 10, 200), (0.22, 4, 10, 200), (0.22, 16, 10, 200)],
    "imagenet": [(0.3, 8, 1, 20), (0.3, 2, 1, 20), (0.4, 8, 1, 20), (0.5, 2, 1, 20), (0.6, 2, 1, 20)],
    "oxford_flowers": [(1.2, 1, 10, 20), (0.7, 1, 10, 20), (2.2, 1, 10, 20), (3.7, 1, 10, 20), (4.0, 1, 10, 20)],
    "oxford_pets": [(0.4, 4, 10, 20), (0.4, 2, 10, 20), (0.4, 4, 10, 20), (0.6, 8, 10, 20), (1.5, 8, 10, 20)],
    "sun397": [(0.5, 1, 10, 20), (0.5, 1, 10, 20), (0.6, 1, 10, 20), (0.7, 1, 10, 20), (0.8, 1, 10, 20)],
    "ucf101": [(1.0, 8, 10, 20), (1.0, 1, 10, 20), (1.0, 4, 10, 20), (1.5, 4, 10, 40), (2.0, 2, 10, 40)],
}
# search_scale (:17) per dataset; food101's 1-shot config alone has [20, 10]
_SCALE = {"caltech101": (12.0, 5.0), "stanford_cars": (20.0, 10.0), "dtd": (13.0, 13.0), "eurosat": (12.0, 10.0),
          "fgvc_aircraft": (30.0, 30.0), "food101": (10.0, 10.0), "imagenet": (7.0, 3.0),
          "oxford_flowers": (50.0, 50.0), "oxford_pets": (7.0, 3.0), "sun397": (12.0, 10.0), "ucf101": (7.0, 3.0)}
AUTHORS: dict[tuple[str, int], dict[str, Any]] = {
    (d, k): dict(init_beta=1.0, init_alpha=a, dalle_shots=ds, augment_epoch=ae, train_epoch=te, train_lr=0.001,
                 search_step=(200, 20), search_scale=(20.0, 10.0) if (d, k) == ("food101", 1) else _SCALE[d])
    for d, rows in _PER_SHOT.items() for k, (a, ds, ae, te) in zip(_SHOTS, rows)}
FALLBACK = ("imagenet", 16)


@dataclass
class CaFoConfig(TipConfig):
    dino: str = "resnet50"  # the DINO encoder, a timm model name (CaFo: torchvision resnet50, main.py:167)
    # DINO's checkpoint file (dino_resnet50_pretrain.pth, main.py:170); "random" keeps the encoder's random init
    # (the run's record says so); "": random for a model built through the API, refused by a run
    dino_weights: str = ""
    dino_key: str = "teacher"  # the checkpoint's entry to load, if present (main.py:170; dino/utils.py:74-76)
    fuse: str = "mean"  # logits_fuse's normalize: "mean" (CaFo's call), "softmax" or "linear"
    gpt_prompts: str = ""  # CaFo's gpt_file JSON: W from these prompts instead of the template set
    generated: str = ""  # generated images (a CoOp split JSON's train list, or a list file); "" = none
    generated_root: str = ""  # the folder the generated list's paths are relative to (default: the file's folder)
    generated_shots: int | None = None  # per class drawn from `generated` (configs' dalle_shots)
    train_lr: float | None = None
    train_epoch: int | None = None

    def validate(self) -> str | None:
        if self.fuse not in ("mean", "softmax", "linear"):
            return f"fuse must be mean, softmax or linear, not {self.fuse!r}"
        if self.generated_shots is not None and self.generated_shots < 1:
            return "generated_shots must be positive"
        return super().validate()


_SHOT_SPLIT = re.compile(r"train_shot(\d+)_seed(\d+)$")


def settings(cfg: Any, dataset: str, train_split: str) -> dict[str, Any]:
    """The options of `cfg` with None replaced by the authors' value for `dataset` at the shots of `train_split`
    (a split named train_shot<k>_seed<s>; any other takes the 16-shot config)."""
    import dataclasses

    m = _SHOT_SPLIT.match(train_split)
    shots = int(m[1]) if m else 16
    a = AUTHORS.get((dataset, shots)) or AUTHORS.get((dataset, 16)) or AUTHORS[FALLBACK]
    out = dataclasses.asdict(cfg)
    filled = dict(init_beta=a["init_beta"], init_alpha=a["init_alpha"], search_scale_beta=a["search_scale"][0],
                  search_scale_alpha=a["search_scale"][1], search_step_beta=a["search_step"][0],
                  search_step_alpha=a["search_step"][1], augment_epoch=a["augment_epoch"], train_lr=a["train_lr"],
                  train_epoch=a["train_epoch"], generated_shots=a["dalle_shots"])
    for k, v in filled.items():
        if out.get(k) is None:
            out[k] = v
    out["shots"] = shots
    return out


# --- the equations ----------------------------------------------------------------------------------------------
def _normalize(x: torch.Tensor, how: str) -> torch.Tensor:
    if how == "softmax":
        return x.softmax(dim=1)
    if how == "linear":
        return x / x.norm(p=2, dim=1, keepdim=True)
    std = x.std(dim=1, keepdim=True)  # torch.std: unbiased, as utils.py
    # a constant row (a cache before `set_cache`) standardises to 0 where utils.py divides 0 by 0
    return torch.where(std > 0, (x - x.mean(dim=1, keepdim=True)) / std, torch.zeros_like(x))


def fuse(zero: torch.Tensor, caches: list[torch.Tensor], how: str = "mean") -> torch.Tensor:
    """utils.py logits_fuse: each cache's logits normalised (`how`), weighted per image by the softmax over caches
    of their dot product with the normalised zero-shot logits, and summed."""
    z = _normalize(zero, how)
    normed = torch.stack([_normalize(c, how) for c in caches], dim=1)  # (B, caches, C)
    weights = (normed * z.unsqueeze(1)).sum(-1, keepdim=True).softmax(dim=1)  # (B, caches, 1)
    return (normed * weights).sum(dim=1)


def cafo_logits(f, g, clip_weights, clip_keys, dino_keys, values, alpha: float, beta: float, how: str = "mean"):
    """100 f W^T + alpha fuse(100 f W^T, [exp(-beta (1 - f K_c^T)) V, exp(-beta (1 - g K_d^T)) V])."""
    zero = 100.0 * f @ clip_weights.t()
    caches = [cache_logits(f @ clip_keys.t(), values, beta), cache_logits(g @ dino_keys.t(), values, beta)]
    return zero + alpha * fuse(zero, caches, how)


@torch.no_grad()
def search_hp(f, g, labels, clip_weights, clip_keys, dino_keys, values, scale, steps, how: str = "mean"):
    """(beta, alpha, accuracy) of utils.py search_ensemble_hp: beta outer, alpha inner, the first strictly better
    accuracy kept, from accuracy 0 at (0, 0)."""
    zero = 100.0 * f @ clip_weights.t()
    a_c, a_d = f @ clip_keys.t(), g @ dino_keys.t()
    best = (0.0, 0.0, 0.0)
    for beta in grid(scale[0], steps[0]):
        fused = fuse(zero, [cache_logits(a_c, values, beta), cache_logits(a_d, values, beta)], how)
        for alpha in grid(scale[1], steps[1]):
            acc = accuracy(zero + fused * alpha, labels)
            if acc > best[2]:
                best = (beta, alpha, acc)
    return best


class CaFoHead(nn.Module):
    """The classifier on [f, g], the normalised CLIP and DINO features side by side (`PairEncoder`'s output):
    `cafo_logits`. The two key sets are its parameters (what training changes); W and the one-hot values are
    buffers. Until `set_cache`, one zero key per class in each cache: every class gets the same cache logits, and
    the head predicts as zero-shot CLIP."""

    def __init__(self, clip_weights: torch.Tensor, dino_dim: int, alpha: float, beta: float, how: str = "mean"):
        super().__init__()
        n_cls, dim = clip_weights.shape
        self.register_buffer("clip_weights", clip_weights, persistent=False)
        self.clip_keys = nn.Parameter(clip_weights.new_zeros(n_cls, dim))
        self.dino_keys = nn.Parameter(clip_weights.new_zeros(n_cls, dino_dim))
        self.register_buffer("values", torch.eye(n_cls, device=clip_weights.device), persistent=False)
        self.alpha, self.beta, self.how = float(alpha), float(beta), how
        self.out_features = n_cls

    @torch.no_grad()
    def set_cache(self, clip_keys: torch.Tensor, dino_keys: torch.Tensor, labels: torch.Tensor) -> None:
        grad = self.clip_keys.requires_grad
        self.clip_keys = nn.Parameter(clip_keys.to(self.clip_weights), requires_grad=grad)
        self.dino_keys = nn.Parameter(dino_keys.to(self.clip_weights), requires_grad=grad)
        self.values = F.one_hot(labels.long().to(self.clip_weights.device), self.out_features).to(self.clip_weights)

    def forward(self, fg: torch.Tensor) -> torch.Tensor:
        f, g = fg.split([self.clip_keys.shape[1], self.dino_keys.shape[1]], dim=-1)
        return cafo_logits(f, g, self.clip_weights.to(f.dtype), self.clip_keys.to(f.dtype),
                           self.dino_keys.to(f.dtype), self.values.to(f.dtype), self.alpha, self.beta, self.how)


class PairEncoder(nn.Module):
    """CLIP's image tower (`clip`) and the DINO encoder (`dino`) on the same input, CaFo feeding DINO the
    CLIP-preprocessed images (main.py:186-187, 256): [normalise(clip(x)), normalise(dino(x))]."""

    def __init__(self, clip: nn.Module, dino: nn.Module):
        super().__init__()
        self.clip, self.dino = clip, dino

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.normalize(self.clip(x), dim=-1), F.normalize(self.dino(x), dim=-1)], dim=-1)


def load_dino(name: str, weights: str, key: str) -> nn.Module:
    """A timm encoder without its classifier (features = the pooled output, as torchvision's resnet50 with
    fc = Identity, main.py:167-168), its weights from DINO's checkpoint: entry `key` when present, `module.` and
    `backbone.` prefixes removed (dino/utils.py:74-80). Unlike CaFo's strict=False, a backbone tensor the file
    lacks is an error naming the file."""
    import timm

    try:
        model = timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as e:
        raise ConfigError(f"cafo: dino={name!r} is not a timm model ({e})") from None
    if weights in ("", "random"):
        log.warning("cafo: the DINO encoder %s keeps its random initialisation (dino_weights=%r)", name, weights)
        return model.eval()
    if not os.path.isfile(weights):
        raise ConfigError(f"cafo: dino_weights file {weights!r} does not exist")
    state = torch.load(weights, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and key and key in state:
        state = state[key]
    if not isinstance(state, dict):
        raise DataError(f"{weights}: not a state dict")
    state = {k.replace("module.", "").replace("backbone.", ""): v for k, v in state.items()}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of another shape
        raise DataError(f"{weights}: not a DINO {name} checkpoint ({str(e).splitlines()[-1].strip()})") from None
    if result.missing_keys:
        raise DataError(f"{weights}: {len(result.missing_keys)} tensors of {name} missing "
                        f"(first: {result.missing_keys[0]}); is it a DINO {name} checkpoint?")
    return model.eval()


def feature_dim(model: nn.Module, img_size: int) -> int:
    if getattr(model, "num_features", None):
        return int(model.num_features)
    with torch.no_grad():
        return int(model(torch.zeros(1, 3, img_size, img_size)).shape[-1])


def gpt_weights(model: nn.Module, path: str) -> torch.Tensor:
    """utils.py gpt_clip_classifier: per class (name with '_' as ' '), the normalised mean of the normalised text
    embeddings of its prompts in the JSON file at `path`."""
    try:
        with open(path, encoding="utf-8") as fh:
            prompts = json.load(fh)
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cafo: gpt_prompts file {path!r}: {e}") from None
    names = [n.replace("_", " ") for n in getattr(model, "classnames", ())]
    missing = [n for n in names if not prompts.get(n)]
    if missing:
        raise DataError(f"{path}: no prompts for class {missing[0]!r} ({len(missing)} of {len(names)} missing)")
    text, tok = model.text, model.tokenizer
    dev = next(text.parameters()).device
    rows = []
    with torch.no_grad():
        for n in names:
            emb = F.normalize(text.encode_text(tok(list(prompts[n])).to(dev)).float(), dim=-1)
            rows.append(F.normalize(emb.mean(0), dim=-1))
    return torch.stack(rows)


def generated_samples(cfg: dict, num_classes: int, seed: int) -> list:
    """`cfg["generated_shots"]` generated images per class from `cfg["generated"]`, drawn as Dassl's
    generate_fewshot_dataset draws (tasks/coop/data.fewshot) with random.Random(seed)."""
    from petlbench.data import read_list_file
    from petlbench.tasks.coop.data import fewshot, read_split_file

    path = cfg["generated"]
    root = cfg["generated_root"] or os.path.dirname(os.path.abspath(path))
    if path.endswith(".json"):
        items = list(read_split_file(path, root, num_classes).splits["train"])
    else:
        items = read_list_file(path, root, num_classes)
    return fewshot(items, cfg["generated_shots"], random.Random(seed))


# --- the run -----------------------------------------------------------------------------------------------------
def _train(model: nn.Module, batches_list, select, cfg: dict, device, norm, amp: str, progress=None):
    """main.py:40-134: AdamW over both key sets (eps 1e-4), CosineAnnealingLR(T_max = epochs x real batches)
    stepped per batch over the real then the generated batches (so past T_max when there are generated ones, as
    main.py:48, 106), cross-entropy at init alpha / beta; with `select` the epoch of best accuracy there is kept."""
    from petlbench.batches import norm_tensors, to_input
    from petlbench.engine import NonFiniteLoss, autocast_for

    head = model.head
    keys = [head.clip_keys, head.dino_keys]
    for k in keys:
        k.requires_grad_(True)
    opt = torch.optim.AdamW(keys, lr=cfg["train_lr"], eps=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg["train_epoch"] * len(batches_list[0]))
    mean, std = norm_tensors(device, norm)
    autocast = autocast_for(device, amp)
    alpha, beta, how = cfg["init_alpha"], cfg["init_beta"], cfg["fuse"]
    history, best = [], {"best_select_top1": 0.0, "best_epoch": cfg["train_epoch"], "best_state": None}
    for epoch in range(cfg["train_epoch"]):
        losses, correct, seen = [], 0, 0
        for batches in batches_list:
            for x, y in batches:
                y = y.to(device)
                with torch.no_grad(), autocast():
                    xi = to_input(x, device, mean, std, False)
                    f, g = model.visual.clip(xi).float(), model.visual.dino(xi).float()
                f, g = F.normalize(f, dim=-1), F.normalize(g, dim=-1)
                logits = cafo_logits(f, g, head.clip_weights, head.clip_keys, head.dino_keys, head.values,
                                     alpha, beta, how)
                loss = F.cross_entropy(logits, y)
                if not math.isfinite(loss.item()):
                    raise NonFiniteLoss(f"cafo: loss {loss.item()} at epoch {epoch}")
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
            (sf, sg), sy = select
            with torch.no_grad():
                acc = accuracy(cafo_logits(sf, sg, head.clip_weights, head.clip_keys, head.dino_keys, head.values,
                                           alpha, beta, how), sy)
            entry["select_top1"] = acc
            if acc > best["best_select_top1"]:  # main.py:129 strictly better
                best.update(best_select_top1=acc, best_epoch=epoch + 1,
                            best_state=[k.detach().clone() for k in keys])
        history.append(entry)
        if progress:
            progress("train", epoch + 1, cfg["train_epoch"], entry)
    if best["best_state"] is not None:
        with torch.no_grad():
            for k, v in zip(keys, best["best_state"]):
                k.copy_(v)
    for k in keys:
        k.requires_grad_(False)
    return history, best


def run_cafo(spec, data_root: str, store, out_dir: str, force: bool = False, progress=None) -> dict[str, Any]:
    """CaFo's main.py:157-258 as one run: the classifier, both caches (real and generated images), val and test
    features of both encoders, the keys trained, alpha / beta searched on val, test evaluated once."""
    from petlbench.decode import ImageDataset
    from petlbench.loaders import LoaderBatches, input_normalization, load_split, loader_workers
    from petlbench.run import base_record, start_own_run

    task, p, ex = spec.task, spec.protocol, spec.execution
    cfg = settings(spec.method.cfg, task.name.split("/", 1)[-1], p.train_split)
    if not cfg["dino_weights"]:
        raise ConfigError("cafo: dino_weights is required for a run: DINO's checkpoint file (CaFo loads "
                          "dino/dino_resnet50_pretrain.pth, main.py:170), or dino_weights=random for a random encoder")
    if p.selection == "trial":
        raise ConfigError("cafo: selection=trial is not supported (reproduction, clean or final)")
    train, search, test = p.train_split, _tip.search_split_of(task, p, cfg), p.test_split
    run = start_own_run(spec, data_root, store, (train, search, test), force)
    if run.done is not None:
        return run.done
    samples, data, device, model = run.samples, run.data, run.device, run.model
    head: CaFoHead = model.head
    if cfg["gpt_prompts"]:
        head.clip_weights = gpt_weights(model, cfg["gpt_prompts"]).to(head.clip_weights)  # model.text: needs_text
    norm = input_normalization(p, model)
    t0 = time.perf_counter()
    tfm, workers = _tip.tip_transform(p.img_size, p.interpolation), loader_workers(ex)
    sets = [ImageDataset(samples[train], tfm, ex.on_bad_image)]
    gen = generated_samples(cfg, task.num_classes, p.seed) if cfg["generated"] else []
    if gen:
        sets.append(ImageDataset(gen, tfm, ex.on_bad_image))
    keys_c, keys_d, labels = [], [], []
    for ds in sets:  # main.py:203-213: each cache and each image set its own augmented passes
        loader = LoaderBatches(ds, cfg["train_batch"], False, workers, p.seed)
        kc, y = _tip.build_cache(model, loader, cfg["augment_epoch"], device, norm, ex.amp, model.visual.clip)
        kd, _ = _tip.build_cache(model, loader, cfg["augment_epoch"], device, norm, ex.amp, model.visual.dino)
        keys_c.append(kc)
        keys_d.append(kd)
        labels.append(y)
    head.set_cache(torch.cat(keys_c), torch.cat(keys_d), torch.cat(labels))
    init_c, init_d = head.clip_keys.detach().clone(), head.dino_keys.detach().clone()
    feats, bad = {}, []
    for split in dict.fromkeys((search, test)):
        batches, b = load_split(task, data_root, split, p, ex, False, device, samples[split])
        fg, y = _tip.embed(model, batches, device, norm, ex.amp, normalize=False)  # PairEncoder: [f, g] normalised
        f, g = fg.split([head.clip_keys.shape[1], head.dino_keys.shape[1]], dim=-1)
        feats[split] = ((f, g), y)
        bad += b.items
    W, V, how = head.clip_weights, head.values, cfg["fuse"]
    select_on = {"reproduction": test, "clean": search}.get(p.selection)
    history, fitted = [], {"best_epoch": 0}
    if cfg["train_epoch"] > 0:
        loaders = [LoaderBatches(ds, cfg["train_batch"], True, workers, p.seed) for ds in sets]
        history, fitted = _train(model, loaders, feats.get(select_on), cfg, device, norm, ex.amp, progress)
    (fs, gs), ys = feats[search]
    (ft, gt), yt = feats[test]
    Kc, Kd = head.clip_keys.detach(), head.dino_keys.detach()
    with torch.no_grad():
        if cfg["search"]:  # main.py:141: on the cache keys as built, not the trained ones
            beta, alpha, val = search_hp(fs, gs, ys, W, init_c, init_d, V,
                                         (cfg["search_scale_beta"], cfg["search_scale_alpha"]),
                                         (cfg["search_step_beta"], cfg["search_step_alpha"]), how)
        else:
            beta, alpha = cfg["init_beta"], cfg["init_alpha"]
            val = accuracy(cafo_logits(fs, gs, W, init_c, init_d, V, alpha, beta, how), ys)
        top1 = accuracy(cafo_logits(ft, gt, W, Kc, Kd, V, alpha, beta, how), yt)
        zero_shot = accuracy(100.0 * ft @ W.t(), yt)
    head.alpha, head.beta = float(alpha), float(beta)
    value = max(fitted.get("best_select_top1", 0.0), top1) if p.selection == "reproduction" else top1
    trainable = Kc.numel() + Kd.numel() if cfg["train_epoch"] > 0 else 0
    metrics = {"top1": value, "split": test, "epoch": fitted.get("best_epoch", 0), "alpha": alpha, "beta": beta,
               "val_top1": val, "val_split": search, "init_alpha": cfg["init_alpha"], "init_beta": cfg["init_beta"],
               "zero_shot_top1": zero_shot, "cafo_top1": top1, "cache_entries": Kc.shape[0],
               "generated_images": len(gen), "augment_epoch": cfg["augment_epoch"], "train_epoch": cfg["train_epoch"],
               "train_lr": cfg["train_lr"], "classifier": "gpt_prompts" if cfg["gpt_prompts"] else p.head_templates,
               "dino": cfg["dino"], "dino_weights": os.path.basename(cfg["dino_weights"]) or cfg["dino_weights"],
               "select_split": select_on, "best_select_top1": fitted.get("best_select_top1")}
    record = {
        **base_record(spec, data), "status": "ok", "metric": "top1", "value": value,
        "selection": _selection_text(p.selection, search, test),
        "metrics": metrics, "history": history,
        "params": {"trainable": trainable, "paper": trainable, "head": 0, "cache_keys": Kc.numel() + Kd.numel(),
                   "cache_values": V.numel(),
                   "backbone_total": sum(q.numel() for n, q in model.named_parameters()
                                         if not n.startswith(("head.", "text.")))},
        "device": str(device), "seconds": round(time.perf_counter() - t0, 1),
        "skipped_images": {"train": sum(len(ds.bad) for ds in sets), "eval": len(bad),
                           "paths": [q for q, _ in ([i for ds in sets for i in ds.bad.items] + bad)[:20]]},
    }
    store.append(record)
    if progress:
        progress("evaluate", 1, 1, {test: value})
    return record


def _selection_text(selection: str, search: str, test: str) -> str:
    epoch = {"reproduction": f"the epoch of best {test} accuracy at init alpha, beta (main.py:129-134, selected on "
                             f"test, as the authors); value = max(that accuracy, the searched one) (main.py:153)",
             "clean": f"the epoch of best {search} accuracy at init alpha, beta",
             "final": "the last epoch"}[selection]
    return (f"both key sets trained; {epoch}; alpha, beta searched on {search} with the untrained keys "
            f"(main.py:141), {test} evaluated once with them")


@register_method("cafo")
class CaFo(PETLMethod):
    config_cls = CaFoConfig
    only_families = ("openclip",)  # CLIP's text classifier and image features beside the DINO encoder's
    protocol = {"head_init": "zeroshot", "head_templates": "tip_adapter"}
    needs_text = True  # gpt_prompts encodes its prompts with CLIP's text tower
    mergeable = False  # two exp(-beta (1 - f K^T)) caches and a per-image softmax blend: no linear layer
    paper = "Zhang et al. 2023, arXiv:2303.02151"
    display_name = "CaFo"

    def apply(self, model: nn.Module, family: str) -> nn.Module:
        lin = model.get_classifier() if hasattr(model, "get_classifier") else None
        if not isinstance(lin, nn.Linear) or not getattr(model, "normalize", False):
            raise ConfigError("cafo needs a CLIPClassifier with its linear head on normalised embeddings "
                              "(an open_clip backbone; head_init=zeroshot for CLIP's text classifier)")
        s = settings(self.cfg, "", "")
        dino = load_dino(self.cfg.dino, self.cfg.dino_weights, self.cfg.dino_key)
        size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))[-1]
        model.head = CaFoHead(F.normalize(lin.weight.detach(), dim=-1), feature_dim(dino, size), s["init_alpha"],
                              s["init_beta"], self.cfg.fuse)
        model.visual = PairEncoder(model.visual, dino)
        model.normalize = False  # PairEncoder normalises each half
        return model

    def trainable_parameters(self, model: nn.Module) -> set[str]:
        return set()  # the head (the two key sets) is all that trains

    def paper_count(self, model: nn.Module, trainable: int) -> int:
        return 0

    def runner(self, protocol: Any):
        return run_cafo
