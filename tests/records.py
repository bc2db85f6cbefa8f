"""Synthetic result records in the store's real format (as `run.execute` writes them), for aggregator tests and
scripts/bench_tables.py. Values are random or given: they test the table machinery, never a method."""
from __future__ import annotations

import dataclasses
import json
import os
import random

from petlbench.run import resolve, variant_of_spec


def record(task: str, method: str, value: float, overrides: dict | None = None, status: str = "ok",
           val_top1: float | None = None, targets: dict | None = None) -> dict:
    """One record as execute() writes it (identity from a real RunSpec, so hashes and labels are the real ones)."""
    spec = resolve(task, method, dict(overrides or {}))
    cfg, proto = dataclasses.asdict(spec.method.cfg), dataclasses.asdict(spec.protocol)
    rec = {"config_hash": spec.config_hash, "benchmark": spec.task.benchmark, "task": task, "group": spec.task.group,
           "method": method, "method_cfg": cfg, "protocol": proto, "execution": dataclasses.asdict(spec.execution),
           "variant": variant_of_spec(task, method, cfg, proto), "numerics": spec.numerics(), "seed": proto["seed"],
           "status": status,
           "params": {"trainable": 239808, "paper": 221184, "head": 7690, "backbone_total": 86e6},
           "selection": proto.get("selection", ""), "device": "cpu", "versions": {"petlbench": "test"}}
    if status == "ok":
        metrics = {"top1": value, "epoch": 100, "split": "test"}
        if val_top1 is not None:
            metrics["val_top1"] = val_top1
        if targets:
            metrics["targets"] = {k: {"status": "ok", "top1": v, "n": 100} for k, v in targets.items()}
        rec.update(metric="top1", value=value, metrics=metrics,
                   history=[{"epoch": e, "loss": 1.0 / e, "test": value - 10 + e} for e in range(10, 101, 10)])
    else:
        rec.update(reason="NonFiniteLoss: loss is nan at epoch 3, batch 1")
    return rec


def write(store_root: str, rec: dict) -> str:
    """Write a record file directly (no fsync: fast enough to make 10,000)."""
    path = os.path.join(store_root, rec["benchmark"], f"{rec['config_hash']}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rec, f, indent=1, sort_keys=True)
    return path


def many(n: int, seed: int = 0):
    """`n` distinct records over VTAB-1k (methods x seeds x RepAdapter scale and LoRA rank sweeps), few-shot
    (shots x split seeds) and domain generalization."""
    from petlbench.task import TASKS

    rng = random.Random(seed)
    vtab = [t for t in TASKS.names() if t.startswith("vtab/")]
    fewshot = [t for t in TASKS.names() if t.startswith("fewshot/")]
    configs = [("repadapter", {}), ("lora", {}), ("adapter", {}), ("vpt", {}), ("bitfit", {}), ("ssf", {}),
               ("full", {}), ("linear", {})]
    configs += [("repadapter", {"scale": s}) for s in (0.1, 0.5, 1.0, 5.0, 10.0)]
    configs += [("lora", {"rank": r}) for r in (1, 2, 4, 16, 32)]

    def candidates():
        for s in range(1000):
            for method, over in configs:
                for t in fewshot:
                    for shot in (1, 2, 4, 8, 16):
                        split = f"train_shot{shot}_seed{s % 3}"
                        yield record(t, method, rng.uniform(20, 90), {**over, "seed": s, "train_split": split,
                                                                      "clean_train_split": split})
                for t in vtab:
                    yield record(t, method, rng.uniform(20, 95), {**over, "seed": s})

    seen: set[str] = set()
    for rec in candidates():
        if len(seen) >= n:
            return
        if rec["config_hash"] not in seen:  # a searched scale equal to the task's default is the default run
            seen.add(rec["config_hash"])
            yield rec
