"""Resume is exact with augmentation: a `petlbench run` process killed with SIGKILL after its first resume state
(RandAugment in 2 DataLoader workers, Mixup / CutMix, random erasing, label smoothing) and run again ends with
the value and history of an uninterrupted run; the resume state's times and counts add up; a corrupt resume
state, or `resume=False`, starts fresh; the loaders' order and augmentations depend on the epoch only."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from petlbench.engine import EvalSet, Execution, TensorBatches, train
from petlbench.tasks import mini

from test_engine import quadrant_data
from tiny import build

AUGMENTED = ["randaugment=rand-m9-mstd0.5-inc1", "mixup=0.8", "cutmix=1.0", "label_smoothing=0.1", "augment=timm",
             "random_erasing=0.25", "epochs=3", "eval_every=1", "warmup_epochs=0", "device=cpu", "num_workers=2"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return mini.generate(str(tmp_path_factory.mktemp("mini")))


def _cmd(root: str, store: str, out: str) -> list[str]:
    return [sys.executable, "-m", "petlbench.cli", "run", "--task", "mini/dsprites_loc", "--method", "repadapter",
            "--data-root", root, "--store", store, "--out", out, "--quiet", *AUGMENTED]


def _record(store: str) -> dict:
    (path,) = [os.path.join(d, f) for d, _, fs in os.walk(store) for f in fs if f.endswith(".json")
               and not f.startswith(".tmp-")]
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _files(folder: str, suffix: str) -> list[str]:
    return [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f.endswith(suffix)]


def test_killed_augmented_run_resumes_to_the_uninterrupted_numbers(root, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    straight = subprocess.run(_cmd(root, str(tmp_path / "s1"), str(tmp_path / "o1")), env=env, capture_output=True,
                              text=True, timeout=900)
    assert straight.returncode == 0, straight.stderr[-2000:]
    store, out = str(tmp_path / "s2"), str(tmp_path / "o2")
    proc = subprocess.Popen(_cmd(root, store, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while proc.poll() is None and not _files(out, ".resume.pt") and time.time() - t0 < 600:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not _files(store, ".json")  # killed before its record
    logged = [json.loads(line)["epoch"] for line in open(_files(out, ".log.jsonl")[0], encoding="utf-8")]
    assert logged and logged[-1] < 3
    again = subprocess.run(_cmd(root, store, out), env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    epochs = [json.loads(line)["epoch"] for line in open(_files(out, ".log.jsonl")[0], encoding="utf-8")]
    assert epochs.count(1) == 1 and epochs[-1] == 3  # resumed, not restarted
    a, b = _record(str(tmp_path / "s1")), _record(store)
    assert b["value"] == a["value"]
    assert b["history"] == a["history"]
    assert b["train_images_per_second"] > 0


def _setup(n: int = 48):
    x, y = quadrant_data(n)
    kw = dict(epochs=3, lr=3e-3, weight_decay=1e-4, eval_every=1, select_on="train", mixup=0.8, cutmix=1.0,
              label_smoothing=0.1, num_classes=5, random_erasing=0.25,
              execution=Execution(device="cpu", channels_last=False))
    evals = [EvalSet("train", TensorBatches(x, y, 48, False))]
    return x, y, kw, evals


def _fresh():
    torch.manual_seed(0)
    return build("repadapter")  # dropout: torch's generator matters too


def _seed_all(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed), np.random.seed(seed)


def test_resume_from_the_final_state_keeps_time_and_images(tmp_path):
    """A run killed after its last resume state (before its record) is resumed with nothing left to train: the
    time and images of the earlier process are carried, not 0.0 images/s."""
    x, y, kw, evals = _setup()
    resume = str(tmp_path / "r.pt")
    first = train(_fresh(), TensorBatches(x, y, 16, True, seed=3), evals, resume_path=resume, **kw)
    assert first.images_seen == 3 * 48 and first.train_seconds > 0
    again = train(_fresh(), TensorBatches(x, y, 16, True, seed=3), evals, resume_path=resume, **kw)
    assert again.resumed_epoch == 3 and again.history == first.history
    assert again.images_seen == first.images_seen
    assert again.train_seconds == pytest.approx(first.train_seconds)
    assert again.images_per_second == pytest.approx(first.images_per_second)
    assert again.earlier_seconds >= first.train_seconds


class Stop(Exception):
    pass


def test_resume_restores_python_and_numpy_generators(tmp_path):
    """Mixup draws from NumPy and random erasing from Python's `random`: a state written mid-run and read by a
    process whose generators were used meanwhile ends where the uninterrupted run does."""
    import random

    import numpy as np

    x, y, kw, evals = _setup()
    random.seed(0), np.random.seed(0)
    straight = train(_fresh(), TensorBatches(x, y, 16, True, seed=3), evals, **kw)
    resume = str(tmp_path / "r.pt")

    def stop(stage, done, total, info):
        if done == 1:
            raise Stop()

    random.seed(0), np.random.seed(0)
    with pytest.raises(Stop):
        train(_fresh(), TensorBatches(x, y, 16, True, seed=3), evals, resume_path=resume, progress=stop, **kw)
    random.seed(123), np.random.seed(123)  # another process: other generator states
    resumed = train(_fresh(), TensorBatches(x, y, 16, True, seed=3), evals, resume_path=resume, **kw)
    assert resumed.resumed_epoch == 1
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    assert [h["train"] for h in resumed.history] == [h["train"] for h in straight.history]
    assert resumed.images_seen == straight.images_seen


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other_model"])
def test_an_unusable_resume_state_warns_naming_it_and_starts_fresh(tmp_path, caplog, damage):
    x, y, kw, evals = _setup()
    kw["epochs"] = 2
    resume = str(tmp_path / "r.pt")
    train(_fresh(), TensorBatches(x, y, 16, True, seed=3), evals, resume_path=resume, **{**kw, "epochs": 1})
    data = open(resume, "rb").read()
    if damage == "truncated":
        open(resume, "wb").write(data[: len(data) // 2])
    elif damage == "garbage":
        open(resume, "wb").write(b"\x00not a torch file" * 10)
    else:  # another model's tuned tensors under this run's name
        train(build("lora"), TensorBatches(x, y, 16, True, seed=3), evals, resume_path=resume, **{**kw, "epochs": 1})
    _seed_all(0)
    fresh_run = train(_fresh(), TensorBatches(x, y, 16, True, seed=3), evals, **kw)
    _seed_all(0)
    with caplog.at_level("WARNING", logger="petlbench.engine"):
        res = train(_fresh(), TensorBatches(x, y, 16, True, seed=3), evals, resume_path=resume, **kw)
    assert res.resumed_epoch == 0 and [h["epoch"] for h in res.history] == [1, 2]
    assert [h["loss"] for h in res.history] == [h["loss"] for h in fresh_run.history]
    assert any(resume in r.getMessage() and "starting the run fresh" in r.getMessage() for r in caplog.records)
    assert torch.load(resume, weights_only=True)["epoch"] == 2  # replaced by a good one


def test_resume_false_starts_fresh(tmp_path):
    x, y, kw, evals = _setup()
    resume = str(tmp_path / "r.pt")
    train(_fresh(), TensorBatches(x, y, 16, True, seed=3), evals, resume_path=resume, **kw)
    res = train(_fresh(), TensorBatches(x, y, 16, True, seed=3), evals, resume_path=resume, resume=False, **kw)
    assert res.resumed_epoch == 0 and [h["epoch"] for h in res.history] == [1, 2, 3]


def test_a_resume_state_of_an_earlier_version_still_resumes(tmp_path):
    """States written before the Python / NumPy generators and the counts were saved (keys rng, data_rng)."""
    x, y, kw, evals = _setup()
    resume = str(tmp_path / "r.pt")

    def stop(stage, done, total, info):
        if done == 1:
            raise Stop()

    with pytest.raises(Stop):
        train(_fresh(), TensorBatches(x, y, 16, True, seed=3), evals, resume_path=resume, progress=stop, **kw)
    state = torch.load(resume, weights_only=True)
    rank0 = state["rngs"][0]
    state["rng"], state["data_rng"] = rank0["torch"], rank0["data"]  # the earlier layout: these two only
    for key in ("rngs", "wall_seconds"):
        state.pop(key)
    torch.save(state, resume)
    res = train(_fresh(), TensorBatches(x, y, 16, True, seed=3), evals, resume_path=resume, **kw)
    assert res.resumed_epoch == 1 and [h["epoch"] for h in res.history] == [1, 2, 3]


# --- the loaders ------------------------------------------------------------------------------------------------
class _Noise(torch.utils.data.Dataset):
    """Each item: draws from Python's, NumPy's and torch's global generators (as RandAugment, Mixup and
    torchvision's flips do), and a label that is the index."""

    def __init__(self, n: int):
        from petlbench.data import BadImages

        self.n, self.bad = n, BadImages()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        import random

        import numpy as np

        v = torch.tensor([random.random(), float(np.random.rand()), float(torch.rand(()))])
        return v, i


def _epochs(loader, epochs, start=0):
    out = []
    for e in range(start, start + epochs):
        loader.set_epoch(e)
        out.append([(x.clone(), y.clone()) for x, y in loader])
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_augmentations_are_a_function_of_the_epoch(workers):
    from petlbench.loaders import LoaderBatches

    ref = _epochs(LoaderBatches(_Noise(10), 4, True, 0, seed=7), 3)
    persistent = _epochs(LoaderBatches(_Noise(10), 4, True, workers, seed=7), 3)
    later = _epochs(LoaderBatches(_Noise(10), 4, True, workers, seed=7), 1, start=2)  # a resumed process
    for a, b in zip(ref, persistent, strict=True):
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True))
    resumed_epoch = zip(ref[2], later[0], strict=True)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in resumed_epoch)
    assert not torch.equal(ref[0][0][0], ref[1][0][0])  # another epoch, other draws
    assert sorted(int(i) for _, y in ref[0] for i in y) == list(range(10))


def test_loader_in_the_main_process_leaves_the_global_generators_alone():
    import random

    import numpy as np

    from petlbench.loaders import LoaderBatches

    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = random.random(), float(np.random.rand()), float(torch.rand(()))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    _epochs(LoaderBatches(_Noise(10), 4, True, 0, seed=7), 2)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected
