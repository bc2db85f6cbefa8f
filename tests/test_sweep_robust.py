"""Sweeps on bad data, bad sweep files and shared stores: a data error in a training list is a recorded failure
(counted, non-zero exit) while an absent folder stays absent; sweep files that are not UTF-8 or give non-integer
seeds / shots are one-line errors naming the file and key; per-run lock files keep two sweeps on one store from
training the same run (stale locks of dead processes are taken over)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from petlbench.errors import ConfigError
from petlbench.store import ResultStore
from petlbench.sweep import LOCK_STALE_S, RunLock, expand, is_absence, load_sweep, run_sweep
from petlbench.tasks import mini

QUICK = "overrides: {epochs: 1, eval_every: 1, warmup_epochs: 0, device: cpu, num_workers: 0}\n"


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory):
    return mini.generate(str(tmp_path_factory.mktemp("mini")))


@pytest.fixture
def root(mini_root, tmp_path):
    """A private copy of one dataset, so a test may break it."""
    dst = tmp_path / "data"
    shutil.copytree(os.path.join(mini_root, "dsprites_loc"), dst / "dsprites_loc")
    return str(dst)


def _file(tmp_path, text, name: str = "sweep.yaml") -> str:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def _records(store: str) -> list[dict]:
    return list(ResultStore(store).records())


@pytest.mark.parametrize("damage, reason", [
    ("label", r"trainval\.txt:3: label 99 is outside 0\.\.7"),
    ("empty", r"trainval\.txt' has no samples"),
])
def test_a_data_error_in_a_training_list_is_a_recorded_failure(root, tmp_path, damage, reason):
    import re

    lst = os.path.join(root, "dsprites_loc", "trainval.txt")
    lines = open(lst, encoding="utf-8").read().splitlines()
    if damage == "label":
        lines[2] = lines[2].rsplit(" ", 1)[0] + " 99"
    else:
        lines = []
    open(lst, "w", encoding="utf-8").write("\n".join(lines) + ("\n" if lines else ""))
    path = _file(tmp_path, "tasks: [mini/dsprites_loc]\nmethods: [linear]\n" + QUICK)
    lines_out: list[str] = []
    s = run_sweep(path, root, str(tmp_path / "s"), str(tmp_path / "o"), on_line=lines_out.append)
    assert not s.absent and s.ran == 0 and len(s.failed) == 1, s.lines()
    assert re.search(reason, s.failed[0][1]) and s.failed[0][1].startswith("DataError: ")
    assert "\n" not in s.failed[0][1]
    (rec,) = _records(str(tmp_path / "s"))
    assert rec["status"] == "failed" and re.search(reason, rec["reason"])
    assert any("failed (1): DataError" in line for line in s.lines())
    # the command exits non-zero
    from petlbench.cli import main

    code = main(["sweep", path, "--data-root", root, "--store", str(tmp_path / "s2"), "--out", str(tmp_path / "o2"),
                 "--quiet"])
    assert code == 1


def test_an_absent_dataset_folder_is_still_absent(tmp_path):
    (tmp_path / "data").mkdir()
    path = _file(tmp_path, "tasks: [mini/dsprites_loc]\nmethods: [linear]\n" + QUICK)
    s = run_sweep(path, str(tmp_path / "data"), str(tmp_path / "s"), str(tmp_path / "o"))
    assert [t for t, _ in s.absent] == ["mini/dsprites_loc"] and not s.failed and s.ran == 0
    assert not _records(str(tmp_path / "s"))


@pytest.mark.parametrize("message, absent", [
    ("data root '/x' does not exist or is not a folder", True),
    ("dataset folder for vtab/cifar: no dataset folder under '/x'; tried '/x/cifar'", True),
    ("list file '/x/cifar/train800val200.txt' does not exist", True),
    ("task 'fewshot/food101', split 'train_shot1_seed0': no list file; tried '/x/a'", True),
    ("ADE20K not found under data root '/x': no images/ and annotations/ folders in any of '/x/images'", True),
    ("/x/cifar/train800val200.txt:4: label 12 is outside 0..9", False),
    ("/x/cifar/train800val200.txt:4: image '/x/cifar/images/4.png' does not exist", False),
    ("list file '/x/cifar/train800val200.txt' has no samples", False),
    ("/x/a.txt:2: not UTF-8 text (byte 0xe9); save the file as UTF-8", False),
])
def test_absence_is_told_from_unusable_data(message, absent):
    assert is_absence(message) is absent


@pytest.mark.parametrize("text, message", [
    (b"tasks: [mini/digits]\nmethods: [lin\xe9ar]\n", "line 2: not UTF-8 text (byte 0xe9)"),
    ("tasks: [fewshot/food101]\nmethods: [linear]\nshots: [one]\n", "'shots[0]' must be an integer, got 'one'"),
    ("tasks: [mini/digits]\nmethods: [linear]\nseeds: \"0,1\"\n", "'seeds' must be an integer, got '0,1'"),
    ("tasks: [mini/digits]\nmethods: [linear]\nseeds: [0, 1.5]\n", "'seeds[1]' must be an integer, got 1.5"),
    ("tasks: [mini/digits]\nmethods: [linear]\nseeds: []\n", "'seeds' is an empty list"),
])
def test_bad_seeds_shots_and_encoding_name_the_file_and_key(tmp_path, text, message):
    path = _file(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        expand(load_sweep(path), path)
    assert path in str(e.value) and message in str(e.value) and "\n" not in str(e.value)


def test_a_single_integer_seed_is_a_list_of_one(tmp_path):
    runs = expand(load_sweep(_file(tmp_path, "tasks: [mini/digits]\nmethods: [linear]\nseeds: 0\n")))
    assert [r.overrides["seed"] for r in runs] == [0]


# --- locks ------------------------------------------------------------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_run_lock_excludes_and_stale_locks_are_taken_over(tmp_path):
    import socket

    path = str(tmp_path / "b" / ".abc.lock")
    first = RunLock(path)
    assert first.acquire()
    assert first.holder() == f"{os.getpid()} {socket.gethostname()}"
    assert not RunLock(path).acquire()  # held by a live process (this one)
    first.release()
    assert not os.path.exists(path)
    with open(path, "w") as f:  # left by a killed sweep on this host
        f.write(f"{_dead_pid()} {socket.gethostname()}\n")
    taker = RunLock(path)
    assert taker.acquire() and taker.holder().startswith(f"{os.getpid()} ")
    taker.release()
    with open(path, "w") as f:  # another host's: its pid cannot be checked; fresh, so it stands
        f.write("12345 some-other-node\n")
    assert not RunLock(path).acquire()
    old = time.time() - LOCK_STALE_S - 10  # ... until its owner stops refreshing it
    os.utime(path, (old, old))
    late = RunLock(path)
    assert late.acquire()
    late.release()


def test_two_sweeps_on_one_store_train_each_run_once(mini_root, tmp_path):
    path = _file(tmp_path, "tasks: [mini/dsprites_loc]\nmethods: [linear, bitfit, lora]\n"
                 + QUICK.replace("epochs: 1", "epochs: 2"))
    store, out = str(tmp_path / "s"), str(tmp_path / "o")
    cmd = [sys.executable, "-m", "petlbench.cli", "sweep", path, "--data-root", mini_root, "--store", store,
           "--out", out, "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    recs = _records(store)
    assert sorted(r["method"] for r in recs) == ["bitfit", "linear", "lora"] and {r["status"] for r in recs} == {"ok"}
    logs = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs if f.endswith(".log.jsonl")]
    assert len(logs) == 3
    for log in logs:  # each run trained by one process: its epochs logged once each
        assert [json.loads(line)["epoch"] for line in open(log, encoding="utf-8")] == [1, 2], log
    ran = sum(int(o.split(" ran now")[0].rsplit(" ", 1)[-1]) for o, _ in outs)
    assert ran == 3, [o for o, _ in outs]
    assert not [f for _, _, fs in os.walk(store) for f in fs if f.endswith(".lock")]


# --- ADE20K: a truncated image is named before training ---------------------------------------------------------
@pytest.fixture(scope="module")
def ade(tmp_path_factory):
    import seg_tiny

    return seg_tiny.make_ade(str(tmp_path_factory.mktemp("seg") / "data"))


def _truncate(path: str, keep: float = 0.6) -> None:
    data = open(path, "rb").read()
    open(path, "wb").write(data[: int(len(data) * keep)])


@pytest.mark.parametrize("which", ["image", "annotation"])
def test_a_truncated_ade20k_file_is_a_one_line_error_naming_it(ade, tmp_path, which):
    from petlbench.data import DataError
    from petlbench.task import TASKS
    from petlbench.tasks.segmentation import check_split

    data = tmp_path / "data"
    shutil.copytree(ade, data)
    samples = TASKS.get("seg/ade20k").samples(str(data), "training")
    cache = str(tmp_path / "cache")
    check_split(samples, cache_dir=cache)  # clean: cached
    victim = samples[3].path if which == "image" else samples[3].annotation
    _truncate(victim)
    with pytest.raises(DataError) as e:
        check_split(samples, cache_dir=cache)  # the changed file is decoded again
    msg = str(e.value)
    assert "\n" not in msg and victim in msg and msg.startswith("1 of 8 image/annotation pairs are unusable")
    assert "truncated" in msg or "decode" in msg


def test_the_decode_cache_checks_each_pair_once(ade, tmp_path, monkeypatch):
    from petlbench.task import TASKS
    from petlbench.tasks import segmentation

    samples = TASKS.get("seg/ade20k").samples(str(ade), "training")
    seen: list[str] = []
    real = segmentation._check_pair
    monkeypatch.setattr(segmentation, "_check_pair", lambda s: seen.append(s.path) or real(s))
    cache = str(tmp_path / "cache")
    segmentation.check_split(samples, cache_dir=cache)
    assert len(seen) == 8 and len(os.listdir(cache)) == 1
    segmentation.check_split(samples, cache_dir=cache)
    assert len(seen) == 8  # nothing decoded the second time
    os.utime(samples[5].path, ns=(1, 1))  # one file changed: that pair alone is decoded again
    segmentation.check_split(samples, cache_dir=cache)
    assert seen[8:] == [samples[5].path]


@pytest.mark.segmentation
def test_a_truncated_ade20k_image_fails_the_run_before_training(ade, tmp_path):
    pytest.importorskip("mmseg")
    from petlbench.data import DataError
    from petlbench.run import execute, resolve

    import seg_tiny

    data = tmp_path / "data"
    shutil.copytree(ade, data)
    victim = sorted((data / "ADEChallengeData2016" / "images" / "validation").iterdir())[1]
    _truncate(str(victim))
    cfg = seg_tiny.tiny_config(str(tmp_path / "tiny.py"))
    spec = resolve("seg/ade20k", "linear", {**seg_tiny.TINY_OVERRIDES, "seg_config": cfg})
    with pytest.raises(DataError, match=rf"{victim.name}"):
        execute(spec, str(data), ResultStore(str(tmp_path / "s")), str(tmp_path / "o"))


# --- a last training batch of one sample (BatchNorm) ------------------------------------------------------------
def test_batches_drop_a_last_training_batch_of_one_sample():
    import torch

    from petlbench.engine import TensorBatches
    from petlbench.loaders import LoaderBatches

    x, y = torch.zeros(9, 3, 2, 2, dtype=torch.uint8), torch.arange(9)
    assert [len(b) for _, b in TensorBatches(x, y, 4, True, drop_single=True)] == [4, 4]
    assert len(TensorBatches(x, y, 4, True, drop_single=True)) == 2
    assert [len(b) for _, b in TensorBatches(x, y, 4, True)] == [4, 4, 1]  # not asked: kept (as before)
    assert [len(b) for _, b in TensorBatches(x[:1], y[:1], 4, True, drop_single=True)] == [1]  # all there is
    assert [len(b) for _, b in TensorBatches(x[:7], y[:7], 4, True, drop_single=True)] == [4, 3]
    # two processes: a last batch of 3 leaves one of them a single sample
    shards = [TensorBatches(x[:7], y[:7], 4, True, rank=r, world=2, drop_single=True) for r in range(2)]
    assert [[len(b) for _, b in s] for s in shards] == [[2], [2]]

    class Items(torch.utils.data.Dataset):
        from petlbench.data import BadImages

        bad = BadImages()

        def __len__(self):
            return 9

        def __getitem__(self, i):
            return torch.zeros(3, 2, 2, dtype=torch.uint8), i

    assert [len(b) for _, b in LoaderBatches(Items(), 4, True, 0, 0, drop_single=True)] == [4, 4]
    assert len(LoaderBatches(Items(), 4, True, 0, 0, drop_single=True)) == 2
    assert [len(b) for _, b in LoaderBatches(Items(), 4, False, 0, 0)] == [4, 4, 1]


@pytest.mark.video
def test_hmdb51_with_a_last_training_batch_of_one_clip_trains_and_records(tmp_path):
    """51 training clips in batches of 10 (drop_last off): the last batch holds one clip, on which the video head's
    BatchNorm1d would raise "Expected more than 1 value per channel"; it is dropped and the run is recorded."""
    pytest.importorskip("decord")
    from petlbench.run import execute, resolve

    from test_video_data import make_hmdb_official

    make_hmdb_official(tmp_path)
    spec = resolve("video/hmdb51", "linear", {"img_size": 32, "num_frames": 4, "epochs": 1, "eval_every": 1,
                                              "warmup_epochs": 0, "batch_size": 10, "drop_last": False,
                                              "test_clips": 1, "test_crops": 1, "device": "cpu", "num_workers": 0})
    rec = execute(spec, str(tmp_path), ResultStore(str(tmp_path / "store")), str(tmp_path / "out"))
    assert rec["status"] == "ok" and len(rec["history"]) == 1


def test_learning_rates_are_checked():
    from petlbench.config import parse_overrides
    from petlbench.run import resolve

    for over, message in ((["lr=-1"], "lr must be a finite number >= 0, got -1"),
                          ({"lr": float("nan")}, "lr must be a finite number >= 0, got nan"),
                          (["lr=0"], "lr must be positive"),
                          (["weight_decay=-0.1"], "weight_decay must be a finite number >= 0"),
                          ({"min_lr": float("inf")}, "min_lr must be a finite number >= 0, got inf"),
                          (["warmup_lr=-1e-6"], "warmup_lr must be a finite number >= 0")):
        with pytest.raises(ConfigError, match=message):
            resolve("mini/digits", "linear", parse_overrides(over) if isinstance(over, list) else over)


def test_a_sweep_over_good_and_bad_folders_records_the_good_and_names_the_bad(mini_root, tmp_path):
    """The issue's acceptance case, through the real command: one good dataset, one with a label out of range, one
    with a non-UTF-8 list, one absent. Every good run is recorded, every bad one is named in one line, exit 1, and
    nothing prints a traceback."""
    data = tmp_path / "data"
    for name in ("digits", "dsprites_loc", "dsprites_ori"):
        shutil.copytree(os.path.join(mini_root, name), data / name)
    lst = data / "dsprites_loc" / "trainval.txt"
    lines = lst.read_text(encoding="utf-8").splitlines()
    lines[4] = lines[4].rsplit(" ", 1)[0] + " 42"
    lst.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (data / "dsprites_ori" / "trainval.txt").write_bytes(b"caf\xe9.png 0\n")  # Latin-1, not UTF-8
    path = _file(tmp_path, "tasks: [mini/digits, mini/dsprites_loc, mini/dsprites_ori, mini/clevr_count]\n"
                           "methods: [linear]\n" + QUICK)
    out = subprocess.run([sys.executable, "-m", "petlbench.cli", "sweep", path, "--data-root", str(data), "--store",
                          str(tmp_path / "s"), "--out", str(tmp_path / "o"), "--quiet"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()}, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "Traceback" not in text
    recs = {r["task"]: r for r in ResultStore(str(tmp_path / "s")).records()}
    assert recs["mini/digits"]["status"] == "ok"
    assert recs["mini/dsprites_loc"]["status"] == "failed" and "label 42" in recs["mini/dsprites_loc"]["reason"]
    assert recs["mini/dsprites_ori"]["status"] == "failed" and "UTF-8" in recs["mini/dsprites_ori"]["reason"]
    assert "mini/clevr_count" not in recs and "clevr_count" in text  # absent: named, not recorded
    for bad in ("label 42", "UTF-8"):  # each named on exactly one "failed:" line
        (_line,) = [ln for ln in text.splitlines() if bad in ln and ln.startswith("failed:")]
