"""One run on several processes (torchrun + DistributedDataParallel, CPU and gloo here): batches shard exactly,
a DDP step follows the one-process gradient, and `petlbench run` under torchrun writes one record."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from petlbench.config import parse_overrides
from petlbench.engine import TensorBatches
from petlbench.errors import ConfigError
from petlbench.loaders import load_split
from petlbench.run import execute, resolve
from petlbench.store import ResultStore
from petlbench.tasks.mini import generate

from ddp_worker import one_epoch, worker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("n, batch, world", [(23, 8, 2), (23, 8, 3), (9, 4, 2), (16, 4, 4)])
def test_shards_of_a_step_are_exactly_the_one_process_batch(n, batch, world):
    images, labels = torch.zeros(n, 3, 2, 2, dtype=torch.uint8), torch.arange(n)
    single = TensorBatches(images, labels, batch, shuffle=True, seed=5, rank=0, world=1)
    shards = [TensorBatches(images, labels, batch, shuffle=True, seed=5, rank=r, world=world) for r in range(world)]
    assert all(len(s) == len(single) for s in shards)
    for _ in range(2):  # two epochs: every rank reshuffles the same way
        steps = zip(single, *shards, strict=True)
        for (_, whole), *parts in steps:
            ys = [y for _, y in parts]
            assert torch.equal(torch.cat(ys), whole)  # disjoint, and together exactly the batch
            assert max(map(len, ys)) - min(map(len, ys)) <= 1


def test_batch_must_split_into_micro_batches_on_every_process():
    spec = resolve("mini/digits", "lora", {"grad_accum": 3})
    with pytest.raises(ConfigError, match=r"batch_size=64 does not split into grad_accum=3 micro-batches on 1 "):
        load_split(spec.task, "unused", "trainval", spec.protocol, spec.execution, True, torch.device("cpu"), [])


@pytest.mark.parametrize("accum", [1, 2])
def test_two_process_ddp_steps_follow_the_one_process_gradient(tmp_path, accum):
    mp.spawn(worker, args=(2, free_port(), str(tmp_path), accum), nprocs=2, join=True)
    ref = one_epoch(0, accum)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for name, t in ref["tuned"].items():
            torch.testing.assert_close(got["tuned"][name], t, atol=1e-5, rtol=1e-4, msg=f"rank {rank}: {name}")
        (h,), (h_ref,) = got["history"], ref["history"]
        assert h["loss"] == pytest.approx(h_ref["loss"], rel=1e-5) and h["train"] == h_ref["train"]
        assert got["images_seen"] == ref["images_seen"] == 9


def test_torchrun_two_processes_write_one_record(tmp_path):
    root = generate(str(tmp_path / "data"))
    overrides = ["epochs=2", "eval_every=1", "warmup_epochs=0", "device=cpu", "num_workers=0", "dropout=0"]
    store, out = tmp_path / "store", tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "petlbench.cli", "run", "--task", "mini/digits", "--method", "repadapter", "--data-root", root,
           "--store", str(store), "--out", str(out), "--quiet", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "destroy_process_group" not in proc.stderr  # petlbench tears its group down at exit

    records = [os.path.join(d, f) for d, _, fs in os.walk(store) for f in fs]
    assert len(records) == 1
    rec = json.load(open(records[0]))
    assert rec["status"] == "ok" and rec["world_size"] == 2 and rec["protocol"]["batch_size"] == 64
    losses = [h["loss"] for h in rec["history"]]
    assert losses[1] < losses[0] and 20 < rec["value"] <= 100  # 10 classes: chance is 10%
    files = sorted(os.listdir(out / "mini"))
    assert [f for f in files if f.endswith(".safetensors")] == [os.path.basename(rec["tuned_file"])]
    assert not [f for f in files if f.endswith(".resume.pt")]
    (log,) = [f for f in files if f.endswith(".log.jsonl")]
    assert len(open(out / "mini" / log).read().splitlines()) == 2  # one writer

    # Without dropout the two-process run is the one-process run, up to float summation order.
    one = execute(resolve("mini/digits", "repadapter", parse_overrides(overrides, where="override")), root,
                  ResultStore(str(tmp_path / "store1")), str(tmp_path / "out1"))
    assert one["world_size"] == 1 and one["config_hash"] == rec["config_hash"]
    assert losses == pytest.approx([h["loss"] for h in one["history"]], rel=1e-5)
    assert rec["value"] == pytest.approx(one["value"], abs=0.2)  # 0.08 per test image
