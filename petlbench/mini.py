"""The offline mini-benchmark driver: every method on every mini task, on the shipped pretrained tiny ViT and
(for the PETL methods) on a randomly initialised one, through the same `run.execute` as any benchmark; then a
VTAB-style table and a plot from the store's records. See tasks/mini.py for what it is and is not."""
from __future__ import annotations

import logging
from typing import Callable

from .errors import PETLBenchError
from .store import ResultStore

log = logging.getLogger(__name__)

BASELINES = ("full", "linear")  # not PETL: no random-init counterpart is run for them


def mini_plan(quick: bool = False) -> list[tuple[str, str, dict]]:
    """(task, method, overrides) for every run of the mini-benchmark."""
    from .api import list_methods
    from .task import TASKS

    extra = {"epochs": 2, "eval_every": 1, "warmup_epochs": 0} if quick else {}
    tasks = [n for n in TASKS.names() if TASKS.get(n).benchmark == "mini"]
    plan = []
    for t in tasks:
        for m in list_methods():
            plan.append((t, m, dict(extra)))
            if m not in BASELINES:
                plan.append((t, m, {**extra, "weights": "none"}))
    return plan


def run_mini(store: ResultStore, out_dir: str, results_dir: str, quick: bool = False, data_root: str | None = None,
             progress: Callable[[str, int, int], None] | None = None) -> tuple[list[str], list[str]]:
    """Run what the store lacks of the plan, then write results_dir/mini/mini.{md,tex,csv} and the accuracy vs
    parameters plot from the store's mini records. Returns (written paths, failures)."""
    from .run import execute, resolve
    from .tasks.mini import generate

    root = generate(data_root)
    plan = mini_plan(quick)
    failed, hashes = [], []
    for i, (task, method, over) in enumerate(plan):
        if progress:
            progress("mini runs", i, len(plan))
        spec = resolve(task, method, {**over, "device": "cpu", "num_workers": 0})
        hashes.append(spec.config_hash)
        try:
            execute(spec, root, store, out_dir)
        except (PETLBenchError, RuntimeError) as e:  # execute recorded it as failed; the benchmark goes on
            failed.append(f"{task} {method}: {e}")
            log.warning("run failed: %s %s: %s", task, method, e)
    if progress:
        progress("mini runs", len(plan), len(plan))
    from .report import write_plots, write_tables
    from .tables import run_frame

    frame = run_frame(r for r in store.records() if r.get("benchmark") == "mini")
    paths = write_tables(frame, results_dir, only=("mini",)) + write_plots(frame, results_dir, only=("mini",))
    if failed:
        log.warning("%d mini runs failed: %s", len(failed), "; ".join(failed))
    return paths, failed
