"""Time the ADE20K pair check (`check_split`: image header + full annotation decode per pair) on generated pairs of
ADE20K's typical size (683x512), to estimate its cost on the real 20,210 + 2,000 pairs, and the cached re-check.

    .venv/bin/python scripts/bench_seg_check.py [--pairs 400] [--workers 8]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from PIL import Image

from petlbench.tasks.segmentation import SegSample, check_split


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=400)
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        samples = []
        for i in range(args.pairs):
            img = rng.integers(0, 255, (512, 683, 3), np.uint8)
            ann = np.repeat(np.repeat(rng.integers(0, 151, (16, 22), np.uint8), 32, 0), 32, 1)[:512, :683]
            s = SegSample(os.path.join(d, f"{i}.jpg"), os.path.join(d, f"{i}.png"))
            Image.fromarray(img).save(s.path, quality=90)
            Image.fromarray(ann).save(s.annotation)
            samples.append(s)
        t0 = time.perf_counter()
        check_split(samples, cache_dir=os.path.join(d, "cache"), workers=args.workers)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        check_split(samples, cache_dir=os.path.join(d, "cache"), workers=args.workers)
        cached = time.perf_counter() - t0
    rate = args.pairs / first
    print(f"{args.pairs} pairs (683x512), {args.workers} threads, {os.cpu_count()} CPUs: first check {first:.2f} s "
          f"({rate:.0f} pairs/s; ADE20K's 22,210 pairs ~{22210 / rate:.0f} s), cached re-check {cached:.2f} s")


if __name__ == "__main__":
    main()
