"""One run: a `RunSpec` (spec.py) -> a trained model, its tuned tensors, and one result record.

    spec (spec.resolve) -> backbone + method (create_model) -> data (loaders.py: decoded once, or per epoch)
      -> engine.train -> selection (reproduction: best periodic test; clean: best val, test once)
      -> save_tuned -> ResultStore.append(record)

A benchmark with a training loop of its own (`Benchmark.runner`) takes the spec instead, with the same
signature as `execute`.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import platform
import subprocess
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

from . import distributed
from .api import count_paper, count_trainable, create_model
from .benchmark import of as benchmark_of
from .checkpoint import save_tuned
from .data import DataError
from .engine import (
    BatchAugment,
    EvalPlan,
    EvalSet,
    NonFiniteLoss,
    OptimRecipe,
    ResumeFile,
    RunLog,
    evaluate,
    fit,
    resolve_device,
    seed_everything,
)
from .errors import ConfigError, PETLBenchError
from .loaders import LoaderBatches, augmented, evaluate_targets, input_normalization, load_split
from .resume import load_trainable
from .spec import RunSpec, effective_amp, recipe_for, resolve, run_name, task_method_defaults, variant_of_spec
from .store import ResultStore, check_writable, data_identity
from .weights import resolve_weights

__all__ = ["OwnRun", "RunSpec", "base_record", "build_model", "effective_amp", "execute", "finished_record",
           "recipe_for", "record_failure", "resolve", "run_name", "start_own_run", "task_method_defaults",
           "variant_of_spec", "versions"]

log = logging.getLogger(__name__)


# --- the run ----------------------------------------------------------------------------------------------
def _git_commit() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    import timm

    from . import __version__

    return {"petlbench": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "python": platform.python_version(), "git": _git_commit()}


def build_model(spec: RunSpec, data_root: str | None = None):
    """The run's model: backbone, weights, method, head (a zero-shot head from the task's class names, read from
    the data at `data_root` where the data names them)."""
    p = spec.protocol
    name, pretrained = resolve_weights(p.backbone, p.weights)
    extra: dict[str, Any] = {}
    if getattr(p, "head_init", "random") == "zeroshot":
        if not p.backbone.startswith("openclip:"):
            raise ConfigError(f"head_init=zeroshot needs an open_clip backbone (backbone=openclip:ViT-B-16 ...), "
                              f"not {p.backbone!r}")
        names = spec.task.class_names(data_root)
        if not names:
            raise ConfigError(f"head_init=zeroshot: task {spec.task.name!r} has no class names (Task.classnames)")
        extra["zero_shot_classnames"] = list(names)
        if p.head_templates:
            if p.head_templates not in spec.task.templates:
                raise ConfigError(f"head_templates={p.head_templates!r}: task {spec.task.name!r} has the template "
                                  f"sets {', '.join(spec.task.templates) or 'none'}")
            extra["zero_shot_templates"] = tuple(spec.task.templates[p.head_templates])
    more = benchmark_of(spec.task).model_kwargs
    if more is not None:  # the family's backbone arguments (video: frames per clip)
        extra.update(more(spec.task, p))
    return create_model(name, method=spec.method.name, num_classes=spec.task.num_classes, pretrained=pretrained,
                        method_cfg=dataclasses.asdict(spec.method.cfg), drop_path_rate=p.drop_path,
                        img_size=p.img_size, **extra)


def execute(spec: RunSpec, data_root: str, store: ResultStore, out_dir: str, force: bool = False,
            progress: Callable | None = None) -> dict[str, Any]:
    """Run `spec` unless the store already holds a finished record of it (then return that record).

    A run that fails (non-finite loss, an exception while training) is recorded with status "failed" and the
    reason, and its exception is re-raised for the caller. User errors before training (bad data root, bad
    list file) raise without a record.

    Under torchrun (several processes) every process calls this and trains its share of each batch; only the
    main process (rank 0) writes files (store record, tuned weights, log, resume state) and reports progress,
    and every process returns the main process's record (with "world_size")."""
    task, p, ex = spec.task, spec.protocol, spec.execution
    runner = spec.method.runner(p) or benchmark_of(task).runner
    if runner is not None:
        return runner(spec, data_root, store, out_dir, force=force, progress=progress)
    if task.eval_only:
        raise PETLBenchError(f"task {task.name!r} is evaluation-only (a target set); train its source task")
    device = resolve_device(ex.device)
    distributed.setup(device)  # joins the other processes of a torchrun launch; nothing otherwise
    main = distributed.is_main()
    progress = progress if main else None
    train_split, select_split, test_once = p.split_roles()
    # Cheap checks first: the list files (every line and image path), the store, the weights, before any decoding.
    # The lists are read before the store is asked: a stored record stands only if it was made on this data.
    samples = {split: task.samples(data_root, split) for split in spec.data_splits()}
    train_samples, select_samples = samples[train_split], samples[select_split]
    data = spec.data_identity(data_root, samples)
    done = finished_record(spec, store, force, data)
    if done is not None:
        return done
    run_dir = os.path.join(out_dir, task.benchmark)
    if main:  # a read-only or full store / output folder fails here in one line, not after training
        store.check_writable(task.benchmark)
        check_writable(run_dir, "output folder")
    # Per-rank seeds, so ranks draw different dropout masks; rank 0's model is the one trained (DDP copies it).
    seed_everything(p.seed + distributed.rank())
    model = build_model(spec, data_root)
    norm = input_normalization(p, model)
    train_batches, train_bad = load_split(task, data_root, train_split, p, ex, True, device, train_samples)
    select_batches, select_bad = load_split(task, data_root, select_split, p, ex, False, device, select_samples)
    evals = [EvalSet(select_split, select_batches, task.logit_subset)]
    stem = os.path.join(run_dir, run_name(spec))
    record: dict[str, Any] = {
        **base_record(spec, data),
        "selection": SELECTION_TEXT[p.selection].format(p=p),
        "params": {"trainable": count_trainable(model, include_head=False), "paper": count_paper(model),
                   "head": count_trainable(model) - count_trainable(model, include_head=False),
                   "backbone_total": sum(q.numel() for q in model.parameters())},
        "device": str(device), "world_size": distributed.world_size(),
    }
    t0 = time.perf_counter()
    try:
        # trial: every evaluation's val top-1 is logged, the last one scores; final: one test evaluation, at the end
        every = LAST_ONLY if p.selection == "final" else p.eval_every
        select_on = None if p.selection in ("trial", "final") else select_split
        res = fit(model, train_batches, EvalPlan(evals, every, "end" if p.selection == "final" else p.eval_phase,
                                                 select_on=select_on),
                  OptimRecipe.from_protocol(p),
                  BatchAugment(norm, random_erasing=p.random_erasing if augmented(p) else 0.0, re_mode=p.re_mode,
                               re_count=p.re_count, mixup=p.mixup, cutmix=p.cutmix,
                               label_smoothing=p.label_smoothing, num_classes=task.num_classes),
                  ex, RunLog(stem + ".log.jsonl", progress, tensorboard=ex.log == "tensorboard"),
                  ResumeFile(stem + ".resume.pt", read=not force))
    except (NonFiniteLoss, RuntimeError, DataError) as e:
        record.update(status="failed", reason=f"{type(e).__name__}: {e}",
                      traceback=traceback.format_exc(limit=5), seconds=round(time.perf_counter() - t0, 1))
        if main:
            store.append(record)
        raise
    if distributed.is_distributed() and isinstance(train_batches, LoaderBatches):
        train_bad.items[:] = [b for items in distributed.gather_objects(train_bad.items) for b in items]  # all shares
    # Restore the selected evaluation's tuned tensors (reproduction: best test; clean: best val; trial and final:
    # the last evaluation's).
    load_trainable(model, res.best_state or {})
    selected = ([h for h in res.history if h.get("selected")] or [h for h in res.history if select_split in h])[-1]
    metrics = {"top1": selected[select_split], "epoch": selected["epoch"], "split": select_split}
    if test_once is not None:
        test_batches, test_bad = load_split(task, data_root, test_once, p, ex, False, device, samples[test_once])
        metrics = {"top1": evaluate(model, EvalSet(test_once, test_batches, task.logit_subset), device,
                                    norm, ex.amp)["top1"],
                   "epoch": selected["epoch"], "split": test_once, "val_top1": selected[select_split]}
        select_bad.items.extend(test_bad.items)
    targets = evaluate_targets(task, model, data_root, p, ex, device) if p.selection != "trial" else None
    if targets:
        metrics["targets"] = targets
    if main:
        save_tuned(model, stem + ".safetensors")
    record.update(
        status="ok", metric="top1", value=metrics["top1"], metrics=metrics,
        history=res.history, final_loss=res.history[-1]["loss"] if res.history else None,
        seconds=round(time.perf_counter() - t0 + res.earlier_seconds, 1), resumed_from_epoch=res.resumed_epoch,
        train_images_per_second=round(res.images_per_second, 1),
        tuned_file=os.path.relpath(stem + ".safetensors", out_dir),
        skipped_images={"train": len(train_bad), "eval": len(select_bad),
                        "paths": [p_ for p_, _ in (train_bad.items + select_bad.items)[:20]]},
    )
    if main:
        path = store.append(record)
        if os.path.exists(stem + ".resume.pt"):
            os.unlink(stem + ".resume.pt")  # the record is written: the run is finished
        log.info("%s %s: top1 %.2f (%s) -> %s", task.name, spec.method.name, record["value"], metrics["split"], path)
    # Every process returns the main one's record (theirs differ in device and timings), once it is written.
    return distributed.broadcast_object(record)


# What a record says of its selection rule (Protocol.selection).
SELECTION_TEXT = {
    "reproduction": "reproduction: best of the periodic test evaluations (every {p.eval_every} epochs), as the "
                    "published VTAB-1k tables",
    "clean": "clean: epoch selected on {p.val_split}, test evaluated once",
    "trial": "trial: trained on {p.clean_train_split}, scored by the last evaluation on {p.val_split}; the test "
             "split is not read",
    "final": "final: trained on {p.train_split}, test evaluated once after the last epoch",
}
LAST_ONLY = 1 << 30  # an evaluation cadence no run reaches: the engine evaluates after the last epoch only


def finished_record(spec: RunSpec, store: ResultStore, force: bool = False,
                    data: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The store's finished record of `spec` (a run to skip), or None when there is none, when `force`, or when
    `data` (the run's `RunSpec.data_identity`) is given and the record was made on other data.

    The record's file is found by the configuration's hash; its "data" digest must then equal the current one.
    A record written before records named their data (no "data") is taken only where the task's benchmark says
    its data could not have differed (`Benchmark.unrecorded_data_ok`: generated data, untouched). Any other
    such record is rerun (and replaced): its data cannot be told from a 20-image test copy, and a silently
    wrong number costs more than a rerun. `data=None` (a runner that does not compute one) checks the
    configuration only."""
    done = store.get(spec.task.benchmark, spec.config_hash)
    if done is None or done.get("status") != "ok" or force:
        return None
    if data is not None:
        stored = done.get("data")
        same = (stored.get("digest") == data["digest"] if isinstance(stored, dict) else
                stored is None and _unrecorded_data_ok(spec, data))
        if not same:
            log.info("%s/%s: the stored record (%s) was made on other data (%s, now %s): running again",
                     spec.task.name, spec.method.name, spec.config_hash,
                     stored.get("root", "?") if isinstance(stored, dict) else "not recorded", data["root"])
            return None
    log.info("%s/%s already in the store (%s): skipped", spec.task.name, spec.method.name, spec.config_hash)
    return done


@dataclasses.dataclass
class OwnRun:
    """What `start_own_run` gives a method's or benchmark's own procedure: the finished record when the store
    has one on this data (then nothing else), else the samples of its splits, their data identity, the device and
    the built model (eval mode, seeded as `execute` seeds)."""

    done: dict[str, Any] | None
    samples: dict[str, list]
    data: dict[str, Any]
    device: torch.device | None = None
    model: torch.nn.Module | None = None


def start_own_run(spec: RunSpec, data_root: str, store: ResultStore, splits: tuple[str, ...],
                  force: bool = False) -> OwnRun:
    """The start every `runner` shares: read `splits`, answer from the store when the run is finished on this
    data, else check the store can take the record and build the model on the run's device."""
    samples = {s: spec.task.samples(data_root, s) for s in dict.fromkeys(splits)}
    data = data_identity(data_root, samples)
    done = finished_record(spec, store, force, data)
    if done is not None:
        return OwnRun(done, samples, data)
    store.check_writable(spec.task.benchmark)
    device = resolve_device(spec.execution.device)
    seed_everything(spec.protocol.seed)
    return OwnRun(None, samples, data, device, build_model(spec, data_root).to(device).eval())


def _unrecorded_data_ok(spec: RunSpec, data: dict[str, Any]) -> bool:
    ok = benchmark_of(spec.task).unrecorded_data_ok
    return ok is not None and ok(spec, data)


def base_record(spec: RunSpec, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """What every record of `spec` starts with, finished or failed: identity (hash, task, method, config,
    protocol, variant label), the data it read (`data`, RunSpec.data_identity, when known), execution options,
    versions and start time."""
    cfg, proto = dataclasses.asdict(spec.method.cfg), dataclasses.asdict(spec.protocol)
    return {"config_hash": spec.config_hash, "benchmark": spec.task.benchmark, "task": spec.task.name,
            "group": spec.task.group, "method": spec.method.name, "method_cfg": cfg, "protocol": proto,
            "variant": variant_of_spec(spec.task.name, spec.method.name, cfg, proto),
            "execution": dataclasses.asdict(spec.execution), "numerics": spec.numerics(),
            "seed": spec.protocol.seed, "versions": versions(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **({"data": data} if data is not None else {})}


def record_failure(spec: RunSpec, store: ResultStore, exc: BaseException,
                   data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record a run that failed before training could start (a bad image list, absent weights, ...) with its
    reason, so a sweep's summary and tables can say what failed and why. Training failures are recorded by
    `execute` itself, with the run's details. A store that cannot be written (the failure may be just that) is
    logged, not raised: the caller has the reason, and a sweep goes on."""
    record = {**base_record(spec, data), "status": "failed", "reason": f"{type(exc).__name__}: {exc}",
              "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=5))}
    if distributed.is_main():
        try:
            store.append(record)
        except PETLBenchError as e:
            log.warning("%s/%s: failure not recorded: %s", spec.task.name, spec.method.name, e)
    return record
