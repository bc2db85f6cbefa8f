#!/usr/bin/env python
"""Pretrain the mini-benchmark backbone (petlbench_vit_mini) on the procedural upstream task of tasks/mini.py
(textured shapes and stroke glyphs, 32 classes; no downstream task is used) and write its weights, head removed, to
petlbench/weights/vit_mini_procedural.safetensors (about 2.7 MB), the file the mini-benchmark ships with.

    .venv/bin/python scripts/pretrain_mini.py            # seed 0, the shipped file (about 8 minutes on 2 CPU cores)

The same seed, arguments, torch and CPU give the same file; the metadata records the arguments and the
upstream held-out accuracy.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

import petlbench
from petlbench.engine import EvalSet, Execution, TensorBatches, seed_everything, train
from petlbench.tasks.mini import upstream_sample

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "petlbench", "weights", "vit_mini_procedural.safetensors")


def make(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    pairs = [upstream_sample(rng) for _ in range(n)]
    images = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor([p[1] for p in pairs])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    seed_everything(args.seed)
    t0 = time.time()
    x_tr, y_tr = make(args.images, args.seed)
    x_te, y_te = make(2000, args.seed + 1000)
    print(f"generated {len(y_tr)} + {len(y_te)} upstream images in {time.time() - t0:.0f} s", flush=True)
    model = petlbench.create_model("petlbench_vit_mini", method="full", num_classes=32)
    res = train(model, TensorBatches(x_tr, y_tr, 128, shuffle=True, seed=args.seed),
                [EvalSet("heldout", TensorBatches(x_te, y_te, 500, shuffle=False))], epochs=args.epochs,
                lr=args.lr, weight_decay=0.05, warmup_epochs=2, warmup_lr=1e-5, min_lr=1e-5,
                label_smoothing=0.1, eval_every=5, execution=Execution(device="cpu"), seed=args.seed,
                progress=lambda s, d, t, info: print(
                    json.dumps(info | {"minutes": round((time.time() - t0) / 60, 2)}), flush=True))
    acc = res.history[-1]["heldout"]
    head = {id(p) for p in model.get_classifier().parameters()}
    state = {n: p.detach().contiguous() for n, p in model.named_parameters() if id(p) not in head}
    state.update({n: b for n, b in model.named_buffers()})
    from safetensors.torch import save_file

    meta = {"script": "scripts/pretrain_mini.py", "args": json.dumps(vars(args) | {"out": None}),
            "upstream_heldout_top1": f"{acc:.2f}", "torch": torch.__version__,
            "minutes": f"{(time.time() - t0) / 60:.1f}"}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(state, args.out, metadata=meta)
    print(f"upstream held-out top-1 {acc:.2f}%; wrote {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MB) "
          f"in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
