#!/usr/bin/env python
"""What the decode cache saves a sweep: the same sweep (every `mini/*` task x two methods, a few epochs, through
`petlbench.sweep.run_sweep`, inline) run twice on generated folders, once with the cache off
(PETLBENCH_DECODE_CACHE=off: every run decodes its splits) and once with an empty cache (each split decoded by the
first run that reads it, loaded by the others), each into a fresh store. Prints both wall times, their ratio,
and whether every run's record has the same top-1 and final loss both ways.

The folders are in the VTAB-1k list-file format the mini tasks read (`<root>/<task>/{train,val,trainval,test}.txt`,
`images/*.jpg`), with JPEG images of --side pixels (default 256, the order of VTAB-1k's natural images) that each
run decodes and resizes to the mini protocol's 32 px. Before timing, one run (not counted) pays for the imports
and every image file is read once, so both passes find the files in the page cache.

    .venv/bin/python scripts/bench_decode_cache.py                       # 4 tasks x 2 methods, 2 epochs
    .venv/bin/python scripts/bench_decode_cache.py --epochs 5 --methods linear,lora,bitfit
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
from PIL import Image

from petlbench.store import ResultStore
from petlbench.sweep import run_sweep
from petlbench.task import TASKS
from petlbench.tasks import mini


def write_folders(root: str, side: int, n_trainval: int, n_test: int) -> list[str]:
    """Every mini task's folder under `root`: smooth random colour fields (JPEG, quality 90) with random labels;
    returns the image paths."""
    rng = np.random.default_rng(0)
    paths = []
    for name, classes in mini.DATASETS.items():
        folder = os.path.join(root, name)
        os.makedirs(os.path.join(folder, "images"), exist_ok=True)
        lines = []
        for i in range(n_trainval + n_test):
            coarse = rng.integers(0, 256, (side // 16, side // 16, 3), dtype=np.uint8)
            img = Image.fromarray(coarse).resize((side, side), Image.BICUBIC)
            rel = f"images/{i:05d}.jpg"
            img.save(os.path.join(folder, rel), quality=90)
            paths.append(os.path.join(folder, rel))
            lines.append(f"{rel} {int(rng.integers(classes))}\n")
        n_train = n_trainval * 4 // 5
        parts = {"train": lines[:n_train], "val": lines[n_train:n_trainval], "trainval": lines[:n_trainval],
                 "test": lines[n_trainval:]}
        for split, part in parts.items():
            with open(os.path.join(folder, f"{split}.txt"), "w") as f:
                f.writelines(part)
    return paths


def sweep_pass(sweep: str, data_root: str, work: str, name: str, cache: str) -> tuple[float, dict]:
    """One pass of the sweep into a fresh store, with PETLBENCH_DECODE_CACHE=`cache`: (wall seconds, (top-1,
    final loss) by record)."""
    os.environ["PETLBENCH_DECODE_CACHE"] = cache
    store = os.path.join(work, name, "store")
    t0 = time.perf_counter()
    summary = run_sweep(sweep, data_root, store, os.path.join(work, name, "runs"))
    seconds = time.perf_counter() - t0
    if summary.failed or summary.absent:
        raise SystemExit(f"{name}: failed {summary.failed} absent {summary.absent}")
    return seconds, {r["config_hash"]: (r["value"], r["final_loss"]) for r in ResultStore(store).records()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="linear,repadapter")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--side", type=int, default=256, help="generated JPEG size (px)")
    ap.add_argument("--trainval", type=int, default=500)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--workers", type=int, default=0, help="decode workers per run (num_workers)")
    args = ap.parse_args()
    tasks = [t for t in TASKS.names() if TASKS.get(t).benchmark == "mini"]
    methods = args.methods.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-decode-cache-") as work:
        data_root = os.path.join(work, "data")
        t0 = time.perf_counter()
        for path in write_folders(data_root, args.side, args.trainval, args.test):
            with open(path, "rb") as f:
                f.read()
        print(f"{len(tasks)} tasks x {args.trainval} + {args.test} JPEG images of {args.side} px written in "
              f"{time.perf_counter() - t0:.0f} s; sweep: {len(tasks)} tasks x {methods}, {args.epochs} epochs")
        overrides = {"epochs": args.epochs, "eval_every": args.epochs, "warmup_epochs": 0, "device": "cpu",
                     "num_workers": args.workers}
        sweep = os.path.join(work, "sweep.yaml")
        with open(sweep, "w") as f:  # JSON is YAML
            json.dump({"tasks": tasks, "methods": methods, "seeds": [0], "overrides": overrides}, f)
        warm = os.path.join(work, "warm.yaml")
        with open(warm, "w") as f:
            json.dump({"tasks": tasks[:1], "methods": methods[:1], "seeds": [1], "overrides": overrides}, f)
        sweep_pass(warm, data_root, work, "warm-up", "off")
        off, result_off = sweep_pass(sweep, data_root, work, "cache-off", "off")
        on, result_on = sweep_pass(sweep, data_root, work, "cache-on", os.path.join(work, "cache"))
        entries = len(os.listdir(os.path.join(work, "cache")))
    print(f"cache off: {off:.1f} s   cache on: {on:.1f} s ({entries} splits decoded)   off / on: {off / on:.2f}x")
    print(f"{len(result_on)} runs; the same top-1 and final loss in every run both ways: {result_on == result_off}")


if __name__ == "__main__":
    main()
