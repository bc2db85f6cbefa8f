#!/usr/bin/env python
"""How long the whole mini-benchmark takes in each way of scheduling its runs, each into a fresh store and
results folder, and whether the tables come out byte-identical.

Modes (`--modes`, comma-separated, in the order given):
  jobs=N     `petlbench mini --jobs N`: N runs side by side, each on one CPU thread (the driver's default is one
             run per CPU)
  threads=T  one run after another on T torch threads (0: torch's default, one per core), the shape the driver
             had before runs went side by side; for comparison only, its numbers depend on T

Each mode runs `tasks/mini.run_mini` in a child process (a fresh interpreter: its imports and data generation are
timed as the command's are). Prints each mode's wall time, then, for every pair, whether mini.md, mini.csv and
mini.tex are byte-identical.

    .venv/bin/python scripts/bench_mini_jobs.py                            # jobs=2, jobs=1 (about 35 min, 2 cores)
    .venv/bin/python scripts/bench_mini_jobs.py --modes jobs=2,threads=0
    .venv/bin/python scripts/bench_mini_jobs.py --quick --modes jobs=2,jobs=1   # 2 epochs a run: a smoke test
"""
from __future__ import annotations

import argparse
import filecmp
import itertools
import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import sys
import torch
from petlbench.store import ResultStore
from petlbench.tasks import mini
mode, value, folder, quick = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
jobs = value
if mode == "threads":  # one run after another on `value` threads: the one-thread pin switched off
    if value:
        torch.set_num_threads(value)
    mini._one_thread = lambda: None
    jobs = 1
paths, failed = mini.run_mini(ResultStore(folder + "/store"), folder + "/runs", folder + "/results", quick=quick,
                              jobs=jobs)  # the data where the command generates it (made once, then reused)
if failed:
    raise SystemExit("failed: " + "; ".join(failed))
"""

TABLES = ("mini.md", "mini.csv", "mini.tex")


def parse_modes(text: str) -> list[tuple[str, int]]:
    modes = []
    for item in text.split(","):
        name, _, value = item.strip().partition("=")
        if name not in ("jobs", "threads") or not value.isdigit() or (name == "jobs" and int(value) < 1):
            raise SystemExit(f"--modes: '{item}' is not jobs=N (N >= 1) or threads=T (T >= 0)")
        modes.append((name, int(value)))
    return modes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="jobs=2,jobs=1",
                    help="jobs=N / threads=T, comma-separated (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help="2 epochs a run (a smoke test of this script)")
    ap.add_argument("--keep", default="", help="keep each mode's store and tables under this folder")
    args = ap.parse_args()
    modes = parse_modes(args.modes)
    base = args.keep or tempfile.mkdtemp(prefix="petlbench_mini_jobs_")
    results: dict[str, str] = {}
    for name, value in modes:
        label = f"{name}={value}"
        folder = os.path.join(base, label.replace("=", "_"))
        os.makedirs(folder, exist_ok=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", CHILD, name, str(value), folder, "1" if args.quick else "0"], check=True)
        print(f"{label}: {time.perf_counter() - t0:.1f} s", flush=True)
        results[label] = os.path.join(folder, "results", "mini")
    for a, b in itertools.combinations(results, 2):
        same = [t for t in TABLES if filecmp.cmp(os.path.join(results[a], t), os.path.join(results[b], t),
                                                 shallow=False)]
        print(f"{a} vs {b}: " + ("tables byte-identical" if len(same) == len(TABLES) else
                                 f"tables differ ({', '.join(t for t in TABLES if t not in same)})"))
    print(f"stores and tables: {base}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
