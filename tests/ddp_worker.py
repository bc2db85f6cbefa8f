"""What each process of tests/test_ddp.py's spawned DDP run does (a module of its own, so that
torch.multiprocessing.spawn can import it by name in the child processes)."""
from __future__ import annotations

import os

import torch

from petlbench import distributed
from petlbench.engine import EvalSet, Execution, TensorBatches, train, trainable_state

from test_engine import quadrant_data
from tiny import build, randomize_trainable


def one_epoch(model_seed: int, accum: int) -> dict:
    """A short SGD epoch over 9 samples in micro-batches of 4 (the last one a single sample: one rank of two
    gets none), without momentum, so the final weights record every step's gradient."""
    torch.manual_seed(model_seed)
    model = build("repadapter", method_cfg={"dropout": 0.0})
    randomize_trainable(model)
    x, y = quadrant_data(9)
    res = train(model, TensorBatches(x, y, 4, shuffle=True, seed=1), [EvalSet("train", TensorBatches(x, y, 5, False))],
                epochs=1, lr=0.5, weight_decay=0.0, optimizer="sgd", momentum=0.0, num_classes=5,
                execution=Execution(device="cpu", channels_last=False, grad_accum=accum))
    return {"tuned": trainable_state(model), "history": res.history, "images_seen": res.images_seen}


def worker(rank: int, world: int, port: int, out: str, accum: int) -> None:
    """Rank `rank` of a `world`-process gloo group (the torchrun environment, set by hand): `one_epoch`,
    saved to out/rank<rank>.pt."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    with distributed.process_group(torch.device("cpu")):
        # A different model seed per rank: DDP must start every rank from rank 0's weights.
        torch.save(one_epoch(rank, accum), os.path.join(out, f"rank{rank}.pt"))
