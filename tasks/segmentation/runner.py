"""One segmentation run: RunSpec -> mmengine config -> mmengine Runner (train, periodic validation) -> tuned tensors
and one result record in the store, like `petlbench.run.execute` for classification.

    protocol + method  ->  the task's mmengine config (configs/*.py) with these set from the protocol:
        backbone, weights, drop_path, img_size (crop and sliding window), batch_size (global), lr,
        weight_decay, max_iters (schedules stretched to it), eval_every (validation interval), seed
    ->  checks of both splits (annotations present, sizes equal, labels in 0..150 / 255) before any training
    ->  Runner.train(): resumes from the run's last mmengine checkpoint when one is there (a killed run keeps its
        finished iterations); a non-finite loss stops the run and records it as failed
    ->  record: mIoU, aAcc, mAcc of the final iteration on the validation split, the validation history, the
        loss curve, parameter counts; tuned tensors (trainable parameters + head buffers) as safetensors.

Protocol fields a segmentation run does not use (epochs, warmup, mixup, ...) must keep the task's values: a
changed one is a ConfigError naming it (the config file holds those settings).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import logging
import math
import os
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

from petlbench.api import count_paper, count_trainable
from petlbench.atomic import atomic_write_bytes
from petlbench.data import DataError
from petlbench.engine import NonFiniteLoss
from petlbench.errors import ConfigError
from petlbench.loaders import loader_workers
from petlbench.run import RunSpec, base_record, finished_record, run_name
from petlbench.store import ResultStore

from . import ade_folder, check_split, config_path

log = logging.getLogger(__name__)

# Protocol fields a segmentation run sets in the mmengine config; the others must stay at the task's values.
SEG_FIELDS = {"backbone", "weights", "drop_path", "img_size", "batch_size", "lr", "weight_decay", "max_iters",
              "eval_every", "seed", "seg_config", "momentum", "recipe"}
TUNED_FORMAT = "petlbench.seg-tuned/1"


def check_protocol(spec: RunSpec) -> None:
    task_p, p = dataclasses.asdict(spec.task.protocol), dataclasses.asdict(spec.protocol)
    changed = sorted(k for k in p if k not in SEG_FIELDS and p[k] != task_p[k])
    if changed:
        raise ConfigError(f"task {spec.task.name!r}: {', '.join(f'{k}={p[k]!r}' for k in changed)} not used by "
                          f"segmentation runs (they are set in the mmengine config, seg_config="
                          f"{spec.protocol.seg_config!r}); settable: {', '.join(sorted(SEG_FIELDS))}")
    if p["max_iters"] < 1 or p["eval_every"] < 1:
        raise ConfigError(f"task {spec.task.name!r}: max_iters ({p['max_iters']}) and eval_every "
                          f"({p['eval_every']}, iterations between validations) must be positive")


def _replace_syncbn(node: Any) -> None:
    """SyncBN -> BN (one process: SyncBN would fail on the CPU and does nothing on one GPU)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "norm_cfg" and isinstance(value, dict) and value.get("type") == "SyncBN":
                value["type"] = "BN"
            else:
                _replace_syncbn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _replace_syncbn(value)


def stretch_schedule(schedulers: list, published_iters: int, max_iters: int) -> list:
    """The config's LR schedulers with their iteration bounds scaled from `published_iters` to `max_iters` (the
    schedule keeps its shape: UperNet's 1,500-iteration warm-up of 160k becomes 150 of 16k). A scheduler left
    with under 2 iterations is dropped: mmengine would apply its start factor and never ramp it."""
    out = []
    for sched in schedulers:
        sched = dict(sched)
        begin = round(sched.get("begin", 0) * max_iters / published_iters)
        end = round(sched.get("end", published_iters) * max_iters / published_iters)
        sched["begin"], sched["end"] = min(begin, max_iters), min(end, max_iters)
        if sched["end"] - sched["begin"] >= 2:
            out.append(sched)
        else:
            log.info("LR scheduler %s spans under 2 of %d iterations: dropped", sched.get("type"), max_iters)
    return out


def build_config(spec: RunSpec, ade_root: str, work_dir: str, world_size: int = 1, workers: int = 4):
    """The mmengine Config of a run: the task's config file with the protocol's values set (see module doc)."""
    from mmengine.config import Config

    p, ex = spec.protocol, spec.execution
    path = config_path(p.seg_config)
    cfg = Config.fromfile(path)
    bb = cfg.model.get("backbone", {})
    if bb.get("type") != "PETLViT":
        raise ConfigError(f"{path}: model.backbone.type is {bb.get('type')!r}; petlbench runs need "
                          f"type='PETLViT' (tasks/segmentation/backbone.py)")
    bb.pop("method_cfg", None)  # replaced, not merged: the config's options belong to its own method
    bb.update(backbone=p.backbone, weights=p.weights, method=spec.method.name, img_size=p.img_size,
              drop_path_rate=p.drop_path)
    bb["method_cfg"] = dataclasses.asdict(spec.method.cfg)
    crop = (p.img_size, p.img_size)
    cfg.model.data_preprocessor["size"] = crop
    for step in cfg.train_dataloader.dataset.pipeline:
        if step["type"] == "RandomCrop":
            step["crop_size"] = crop
    if cfg.model.test_cfg.get("mode") == "slide" and tuple(cfg.model.test_cfg.crop_size) != crop:
        cfg.model.test_cfg.update(crop_size=crop, stride=(p.img_size * 2 // 3,) * 2)
    if world_size == 1:
        _replace_syncbn(cfg.model)
    if p.batch_size % world_size:
        raise ConfigError(f"batch_size={p.batch_size} (global) does not divide over {world_size} processes")
    for name, loader in (("train", cfg.train_dataloader), ("val", cfg.val_dataloader), ("test", cfg.test_dataloader)):
        loader.dataset.data_root = ade_root
        loader.num_workers = workers
        loader.persistent_workers = workers > 0
        if name == "train":
            loader.batch_size = p.batch_size // world_size
    opt = cfg.optim_wrapper.optimizer
    if opt["type"].lower() != spec.protocol.optimizer:
        raise ConfigError(f"{path}: optimizer {opt['type']} but the task's protocol says {spec.protocol.optimizer}")
    opt.update(lr=p.lr, weight_decay=p.weight_decay)
    if "momentum" in opt:
        opt["momentum"] = p.momentum
    published_iters = cfg.train_cfg.max_iters
    cfg.train_cfg.update(max_iters=p.max_iters, val_interval=p.eval_every)
    cfg.param_scheduler = stretch_schedule(cfg.param_scheduler, published_iters, p.max_iters)
    cfg.default_hooks.checkpoint.update(interval=p.eval_every, max_keep_ckpts=1)
    cfg.default_hooks.logger.interval = max(1, min(50, p.max_iters // 10))
    if ex.device not in ("auto", "cuda") and not (ex.device == "cpu" and not torch.cuda.is_available()):
        raise ConfigError(f"device={ex.device}: segmentation runs use mmengine's device choice (CUDA when "
                          f"present, else the CPU); leave device=auto")
    amp = ex.amp if ex.amp != "auto" else ("bf16" if torch.cuda.is_available() else "off")
    if amp != "off":
        if not torch.cuda.is_available():
            raise ConfigError(f"amp={amp}: segmentation runs use mixed precision on CUDA only; use amp=off")
        cfg.optim_wrapper["type"] = "AmpOptimWrapper"
        cfg.optim_wrapper["dtype"] = "bfloat16" if amp == "bf16" else "float16"
    cfg.env_cfg.cudnn_benchmark = torch.cuda.is_available()
    cfg.env_cfg.dist_cfg = dict(backend="nccl" if torch.cuda.is_available() else "gloo")
    cfg.randomness = dict(seed=p.seed)
    cfg.work_dir = work_dir
    cfg.resume = True  # mmengine resumes from work_dir/last_checkpoint when it exists, else starts
    cfg.launcher = "pytorch" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "none"
    return cfg


def record_hook(log_every: int):
    """An mmengine Hook that collects the loss curve (mean every `log_every` iterations) and every validation's
    metrics, and stops the run on a non-finite loss. Built here so this module imports without mmengine."""
    from mmengine.hooks import Hook

    class _RecordHook(Hook):
        priority = "VERY_LOW"

        def __init__(self):
            self.losses: list[dict[str, float]] = []
            self.vals: list[dict[str, float]] = []
            self._sum, self._n = 0.0, 0

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            loss = outputs.get("loss") if isinstance(outputs, dict) else None
            if loss is None:
                return
            value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
            if not math.isfinite(value):
                raise NonFiniteLoss(f"iteration {runner.iter + 1}: loss is {value}")
            self._sum, self._n = self._sum + value, self._n + 1
            if (runner.iter + 1) % log_every == 0 or runner.iter + 1 == runner.max_iters:
                self.losses.append({"iter": runner.iter + 1, "loss": round(self._sum / self._n, 5)})
                self._sum, self._n = 0.0, 0

        def after_val_epoch(self, runner, metrics=None):
            self.vals.append({"iter": runner.iter, **{k: round(float(v), 4) for k, v in (metrics or {}).items()}})

    return _RecordHook()


def param_counts(segmentor) -> dict[str, int]:
    """Backbone-side trainable parameters (the method's, plus biases where trained), the decode head with its
    neck, the auxiliary heads (training only), the paper's count, and the backbone's total."""
    vit = segmentor.backbone.model
    aux = getattr(segmentor, "auxiliary_head", None)
    aux_n = sum(p.numel() for p in aux.parameters() if p.requires_grad) if aux is not None else 0
    rest = sum(p.numel() for n, p in segmentor.named_parameters() if p.requires_grad and not n.startswith("backbone."))
    return {"trainable": count_trainable(vit, include_head=False), "paper": count_paper(vit),
            "head": rest - aux_n, "auxiliary_head": aux_n,
            "backbone_total": sum(p.numel() for p in vit.parameters())}


def tuned_tensors(segmentor) -> dict[str, torch.Tensor]:
    """Everything a tuned segmentor adds to the frozen backbone: trainable parameters and the buffers outside
    the backbone (the heads' BatchNorm statistics)."""
    out = {n: p.detach() for n, p in segmentor.named_parameters() if p.requires_grad}
    out.update({n: b.detach() for n, b in segmentor.named_buffers() if not n.startswith("backbone.")})
    return {k: v.contiguous().cpu() for k, v in out.items()}


def save_seg_tuned(segmentor, path: str, meta: dict[str, str]) -> None:
    from safetensors.torch import save_file

    tensors = tuned_tensors(segmentor)
    atomic_write_bytes(path, lambda tmp: save_file(tensors, tmp, metadata={"format": TUNED_FORMAT, **meta}))


def load_seg_tuned(segmentor, path: str) -> None:
    """Load `save_seg_tuned`'s file into a segmentor built from the same config and method; every stored tensor
    must match one of the segmentor's by name and shape."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        if (f.metadata() or {}).get("format") != TUNED_FORMAT:
            fmt = (f.metadata() or {}).get("format")
            raise DataError(f"{path}: not a petlbench segmentation file (format {fmt!r})")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    own = dict(segmentor.named_parameters()) | dict(segmentor.named_buffers())
    wrong = [k for k, t in tensors.items() if k not in own or own[k].shape != t.shape]
    if wrong:
        raise DataError(f"{path}: tensors {wrong[:5]} do not match this segmentor (another config or method?)")
    with torch.no_grad():
        for k, t in tensors.items():
            own[k].copy_(t)


def _shown_config_path(path: str) -> str:
    """A shipped config as "configs/<name>.py" (relative to this package), a user's config as given."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.relpath(path, here) if path.startswith(here) else path


def execute(spec: RunSpec, data_root: str, store: ResultStore, out_dir: str, force: bool = False,
            progress: Callable | None = None) -> dict[str, Any]:
    """Run a segmentation `spec` unless the store holds its finished record (then return that record)."""
    from mmengine.dist import get_rank, get_world_size
    from mmengine.model import is_model_wrapper
    from mmengine.runner import Runner

    task, p, ex = spec.task, spec.protocol, spec.execution
    check_protocol(spec)
    done = finished_record(spec, store, force)
    if done is not None:
        return done
    ade_root = ade_folder(data_root)
    run_dir = os.path.join(out_dir, task.benchmark)
    workers = loader_workers(ex)
    for split in (p.train_split, p.test_split):  # cheap checks first: every pair of both splits, before any model
        check_split(task.samples(data_root, split), cache_dir=os.path.join(run_dir, ".checked"), workers=workers)
    stem = run_name(spec)
    work_dir = os.path.join(run_dir, stem)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cfg = build_config(spec, ade_root, work_dir, world, workers)
    runner = Runner.from_cfg(cfg)  # a bad config or absent weights raise here, before training (sweeps record them)
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    hook = record_hook(log_every=max(1, min(50, p.max_iters // 20)))
    runner.register_hook(hook)
    main = get_rank() == 0
    record: dict[str, Any] = {
        **base_record(spec),
        "selection": "final iteration, evaluated on the validation split (ADE20K's test labels are not public; "
                     "the papers report validation mIoU, single scale)",
        "seg_config": _shown_config_path(cfg.filename),
        "params": param_counts(model), "world_size": get_world_size(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    t0 = time.perf_counter()
    try:
        runner.train()
    except (NonFiniteLoss, RuntimeError, DataError) as e:
        record.update(status="failed", reason=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=5),
                      history=hook.vals, losses=hook.losses, seconds=round(time.perf_counter() - t0, 1))
        if main:
            store.append(record)
        raise
    final = hook.vals[-1] if hook.vals else {}
    if final.get("iter") != p.max_iters or "mIoU" not in final:
        raise RuntimeError(f"{task.name}: no validation at iteration {p.max_iters} (got {hook.vals[-1:]})")
    metrics = {"mIoU": final["mIoU"], "aAcc": final.get("aAcc"), "mAcc": final.get("mAcc"),
               "iter": final["iter"], "split": p.test_split}
    tuned = os.path.join(run_dir, stem + ".safetensors")
    if main:
        save_seg_tuned(model, tuned, {"config": record["seg_config"], "method": spec.method.name,
                                      "method_cfg": json.dumps(record["method_cfg"], sort_keys=True),
                                      "backbone": p.backbone, "weights": p.weights})
    record.update(status="ok", metric="mIoU", value=metrics["mIoU"], metrics=metrics, history=hook.vals,
                  losses=hook.losses, final_loss=hook.losses[-1]["loss"] if hook.losses else None,
                  seconds=round(time.perf_counter() - t0, 1), tuned_file=os.path.relpath(tuned, out_dir))
    if main:
        path = store.append(record)
        # The record and tuned tensors are written: mmengine's full checkpoints (the whole frozen backbone) go.
        for ckpt in glob.glob(os.path.join(work_dir, "iter_*.pth")) + [os.path.join(work_dir, "last_checkpoint")]:
            if os.path.exists(ckpt):
                os.unlink(ckpt)
        log.info("%s %s: mIoU %.2f -> %s", task.name, spec.method.name, metrics["mIoU"], path)
    return record
