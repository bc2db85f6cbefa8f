"""Time `petlbench table` and `petlbench plot` on a store of N synthetic records (default 10,000), each pinned
to one CPU core when `taskset` is available. The records are made by tests/records.py in the store's real format
(values random: this measures the aggregator, not a method).

    .venv/bin/python scripts/bench_tables.py [--records 10000] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--keep", default=None, help="write the store and results here and keep them")
    args = ap.parse_args()
    import records

    root = args.keep or tempfile.mkdtemp(prefix="petlbench-bench-tables-")
    store, results = os.path.join(root, "store"), os.path.join(root, "results")
    t0 = time.perf_counter()
    n = sum(1 for rec in records.many(args.records) if records.write(store, rec))
    print(f"made {n} records in {time.perf_counter() - t0:.1f} s under {store}")
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    cli = [sys.executable, "-m", "petlbench.cli"]
    total = 0.0
    for cmd in ("table", "plot"):
        t = time.perf_counter()
        out = subprocess.run(pin + cli + [cmd, "--store", store, "--results", results, "--search", "scale"],
                             capture_output=True, text=True)
        dt = time.perf_counter() - t
        total += dt
        if out.returncode:
            print(out.stdout + out.stderr)
            return 1
        print(f"petlbench {cmd}: {dt:.2f} s wall (process start included){' on one core' if pin else ''}: "
              f"{out.stdout.strip()}")
    print(f"table + plot: {total:.2f} s for {n} records")
    if not args.keep:
        shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
