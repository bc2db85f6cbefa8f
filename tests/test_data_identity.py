"""A record names the data it was made on (root, list files, a digest of the samples of every split the run
read), and a stored record is returned only for a run on the same data: another root with fewer test images,
another label or a re-encoded image reruns (and replaces the record); the same files elsewhere do not. Records
written before records named their data: kept for an untouched generated mini-benchmark folder, rerun otherwise."""
from __future__ import annotations

import os
import shutil

import pytest

from petlbench.run import base_record, execute, finished_record, resolve
from petlbench.store import ResultStore, data_identity
from petlbench.tasks.mini import generate

FAST = {"epochs": 2, "eval_every": 1, "warmup_epochs": 0, "weights": "none", "device": "cpu", "num_workers": 0}
TASK = "mini/dsprites_loc"


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("mini")))


def _copy(mini_root: str, dst, stamp: bool = False) -> str:
    """A private copy of dsprites_loc (times kept, as a user's `cp -a`), with the generator's stamp if asked."""
    shutil.copytree(os.path.join(mini_root, "dsprites_loc"), os.path.join(dst, "dsprites_loc"))
    if stamp:
        shutil.copy2(os.path.join(mini_root, ".generated"), os.path.join(dst, ".generated"))
    return str(dst)


def _keep_lines(root: str, split: str, n: int) -> None:
    path = os.path.join(root, "dsprites_loc", f"{split}.txt")
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()[:n]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(lines)


def test_another_root_with_fewer_test_images_reruns_the_same_data_does_not(mini_root, tmp_path):
    """The issue: a 20-image test set's number was returned, unrun, for the full one (and the other way)."""
    store, out = ResultStore(str(tmp_path / "store")), str(tmp_path / "out")
    full = _copy(mini_root, tmp_path / "full")
    small = _copy(mini_root, tmp_path / "small")
    _keep_lines(small, "test", 20)

    first = execute(resolve(TASK, "linear", dict(FAST)), small, store, out)
    data = first["data"]
    assert data["root"] == os.path.realpath(small)
    assert data["splits"]["test"]["n"] == 20 and data["splits"]["trainval"]["n"] == 500
    assert data["splits"]["test"]["sources"] == ["dsprites_loc/test.txt"]
    assert execute(resolve(TASK, "linear", dict(FAST)), small, store, out) == first  # same data: stored record

    second = execute(resolve(TASK, "linear", dict(FAST)), full, store, out)  # ran: not the 20-image record
    assert second["data"]["splits"]["test"]["n"] == 500 and second["data"]["root"] == os.path.realpath(full)
    assert second["data"]["digest"] != first["data"]["digest"]
    assert second["config_hash"] == first["config_hash"]  # the configuration is the same: one record, replaced
    (stored,) = list(store.records())
    assert stored["data"] == second["data"]

    # The same files under another root (another disk, a job's scratch copy) are the same data: not rerun.
    elsewhere = _copy(mini_root, tmp_path / "elsewhere")
    assert execute(resolve(TASK, "linear", dict(FAST)), elsewhere, store, out) == second


def test_digest_follows_samples_labels_and_files_not_the_root(mini_root, tmp_path):
    spec = resolve(TASK, "linear", dict(FAST))
    a = _copy(mini_root, tmp_path / "a")
    b = _copy(mini_root, tmp_path / "b")
    os.symlink(b, tmp_path / "link")
    da, db = spec.data_identity(a), spec.data_identity(str(tmp_path / "link"))
    assert da["digest"] == db["digest"] and db["root"] == os.path.realpath(b)  # symlink resolved
    assert set(da["splits"]) == {"trainval", "test"}  # reproduction: trains on trainval, selects on test

    path = os.path.join(b, "dsprites_loc", "test.txt")
    lines = open(path, encoding="utf-8").read().splitlines()
    rel, label = lines[0].rsplit(maxsplit=1)
    lines[0] = f"{rel} {(int(label) + 1) % 8}"
    open(path, "w", encoding="utf-8").write("\n".join(lines) + "\n")
    relabelled = spec.data_identity(b)
    assert relabelled["digest"] != da["digest"] and relabelled["splits"]["trainval"] == da["splits"]["trainval"]

    c = _copy(mini_root, tmp_path / "c")
    image = os.path.join(c, "dsprites_loc", rel)
    with open(image, "ab") as f:  # re-encoded: same name, another file
        f.write(b"\0" * 16)
    assert spec.data_identity(c)["digest"] != da["digest"]

    clean = resolve(TASK, "linear", {**FAST, "selection": "clean"})
    assert clean.data_splits() == ("train", "val", "test")  # train, select on val, test once
    assert set(clean.data_identity(a)["splits"]) == {"train", "val", "test"}


def test_class_folder_samples_have_a_digest_and_their_folder_as_source(tmp_path):
    from petlbench.data import folder_samples

    for cls in ("a", "b"):
        os.makedirs(tmp_path / "val" / cls)
        (tmp_path / "val" / cls / "x.jpg").write_bytes(b"jpg")
    samples, _ = folder_samples(str(tmp_path / "val"))
    d = data_identity(str(tmp_path), {"test": samples})
    assert d["splits"]["test"]["n"] == 2 and d["splits"]["test"]["sources"] == ["val"]


def test_clean_run_records_the_three_splits(mini_root, tmp_path):
    root = _copy(mini_root, tmp_path / "data")
    rec = execute(resolve(TASK, "linear", {**FAST, "selection": "clean"}), root, ResultStore(str(tmp_path / "s")),
                  str(tmp_path / "o"))
    assert {k: v["n"] for k, v in rec["data"]["splits"].items()} == {"train": 400, "val": 100, "test": 500}


def _legacy(rec: dict) -> dict:
    """`rec` as records were written before they named their data."""
    return {k: v for k, v in rec.items() if k != "data"}


def test_old_mini_record_is_kept_on_the_generated_data_and_rerun_on_edited_data(mini_root, tmp_path):
    store, out = ResultStore(str(tmp_path / "store")), str(tmp_path / "out")
    root = _copy(mini_root, tmp_path / "generated", stamp=True)
    rec = execute(resolve(TASK, "linear", dict(FAST)), root, store, out)
    old = _legacy(rec)
    store.append(old)
    assert execute(resolve(TASK, "linear", dict(FAST)), root, store, out) == old  # found, not rerun

    edited = _copy(mini_root, tmp_path / "edited", stamp=True)
    _keep_lines(edited, "test", 20)  # changed after the generator wrote it
    again = execute(resolve(TASK, "linear", dict(FAST)), edited, store, out)
    assert again["data"]["splits"]["test"]["n"] == 20

    store.append(old)
    unstamped = _copy(mini_root, tmp_path / "unstamped")  # not the generator's folder: cannot tell
    assert execute(resolve(TASK, "linear", dict(FAST)), unstamped, store, out)["data"]["root"] == \
        os.path.realpath(unstamped)


def test_old_record_of_a_real_benchmark_is_rerun_and_tables_still_read_it(tmp_path):
    from petlbench.tables import run_frame

    spec = resolve("vtab/cifar", "lora", {})
    store = ResultStore(str(tmp_path / "s"))
    store.append({**base_record(spec), "status": "ok", "metric": "top1", "value": 30.0,
                  "metrics": {"top1": 30.0, "epoch": 100, "split": "test"}})
    data = {"root": "/data/vtab-1k", "splits": {}, "digest": "0" * 64}
    assert finished_record(spec, store, data=data) is None  # its data is unknown: rerun
    assert finished_record(spec, store)["value"] == 30.0  # data=None (segmentation runner): configuration only
    frame = run_frame(store.records())
    assert list(frame["value"]) == [30.0]


def test_sweep_reruns_a_finished_run_whose_data_changed(mini_root, tmp_path):
    import json

    from petlbench.sweep import run_sweep

    path = tmp_path / "sweep.yaml"
    path.write_text(f"tasks: [{TASK}]\nmethods: [linear]\noverrides: {json.dumps(FAST)}\n")
    store, out = str(tmp_path / "s"), str(tmp_path / "o")
    small = _copy(mini_root, tmp_path / "small")
    _keep_lines(small, "test", 20)
    assert run_sweep(str(path), small, store, out).ran == 1
    full = _copy(mini_root, tmp_path / "full")
    again = run_sweep(str(path), full, store, out)
    assert again.ran == 1 and again.already_done == 0
    (rec,) = list(ResultStore(store).records())
    assert rec["data"]["splits"]["test"]["n"] == 500
    assert run_sweep(str(path), full, store, out).already_done == 1
