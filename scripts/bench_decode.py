#!/usr/bin/env python
"""Video input-pipeline throughput: how many clips per second `petlbench.tasks.video.clips.VideoDataset` delivers
through a torch DataLoader, i.e. decord decoding + frame sampling + short-side resize + crops (+ flip), the CPU
work that feeds a video fine-tuning run. No model runs.

It writes N synthetic videos with OpenCV (default 48 at 320x240, 64 frames: a panning textured scene with noise,
so the codecs do real work; half .avi, half .webm), then times one pass over them for the SSv2 protocol
(segment sampling, test 2 clips x 3 crops) on the .webm files and the HMDB51 protocol (dense, stride 4, test
4 clips x 3 crops) on the .avi files, train and test views, with each --workers count. After one warm-up pass
(worker start-up excluded) it prints videos/s and clips/s (a test video is test_clips x test_crops clips).

    .venv/bin/python scripts/bench_decode.py                                     # MJPG .avi, VP80 .webm
    .venv/bin/python scripts/bench_decode.py --avi-codec XVID --webm-codec VP90  # HMDB51's and SSv2's codecs
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

import cv2
import numpy as np
import torch

from petlbench.data import Sample
from petlbench.decode import collate_skip
from petlbench.task import TASKS
from petlbench.tasks.video import dataset


def write_videos(folder: str, n: int, width: int, height: int, frames: int, codecs: dict[str, str]) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        ext = list(codecs)[i % len(codecs)]
        path = os.path.join(folder, f"v{i:03d}{ext}")
        scene = cv2.resize(rng.integers(0, 256, (height // 8, (width + 4 * frames) // 8, 3), dtype=np.uint8),
                           (width + 4 * frames, height), interpolation=cv2.INTER_CUBIC)
        w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codecs[ext]), 25, (width, height))
        if not w.isOpened():
            sys.exit(f"OpenCV cannot write {codecs[ext]} {ext}")
        for t in range(frames):
            noise = rng.integers(0, 16, (height, width, 3), dtype=np.uint8)
            w.write(cv2.add(scene[:, 4 * t:4 * t + width], noise))
        w.release()
        paths.append(path)
    return paths


def time_pass(ds, workers: int, batch_size: int) -> float:
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate_skip,
                                         persistent_workers=workers > 0)
    for _ in loader:  # warm-up: worker start-up, file cache
        pass
    start = time.perf_counter()
    for _, _, bad in loader:
        assert not bad, bad
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=48)
    ap.add_argument("--size", default="320x240", help="width x height of the generated videos")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--avi-codec", default="MJPG")
    ap.add_argument("--webm-codec", default="VP80")
    args = ap.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    torch.set_num_threads(1)  # the main process only collates; keep it from competing with the workers
    print("command: " + " ".join([os.path.basename(sys.executable), *sys.argv]))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = write_videos(tmp, args.videos, width, height, args.frames,
                             {".avi": args.avi_codec, ".webm": args.webm_codec})
        print(f"{len(paths)} videos {width}x{height}, {args.frames} frames, written in "
              f"{time.perf_counter() - t0:.1f} s; torch {torch.__version__}, {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f} (other processes slow the numbers down)\n")
        print("| task | codec | view | workers | videos/s | clips/s | ms/video |")
        print("|---|---|---|---|---|---|---|")
        for name, ext, codec in (("video/ssv2", ".webm", args.webm_codec), ("video/hmdb51", ".avi", args.avi_codec)):
            task = TASKS.get(name)
            p = task.protocol
            samples = [Sample(x, 0, x) for x in paths if x.endswith(ext)]
            for train in (True, False):
                views = 1 if train else p.test_clips * p.test_crops
                for w in args.workers:
                    secs = time_pass(dataset(task, samples, dataclasses.replace(p), train), w, args.batch_size)
                    rate = len(samples) / secs
                    print(f"| {name} | {codec} | {'train' if train else f'test {p.test_clips}x{p.test_crops}'} "
                          f"| {w} | {rate:.1f} | {rate * views:.1f} | {1000 / rate:.0f} |", flush=True)


if __name__ == "__main__":
    main()
