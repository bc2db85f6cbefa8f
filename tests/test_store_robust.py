"""The result store against what users do to it: a record copied under another name or into a subfolder (read
once, the copy named), a record file that is not UTF-8 or has a wrong-typed field (named and skipped, never a
traceback in `run`, `sweep` or `table`), and a read-only or full store (one line before training, not a
traceback after it)."""
from __future__ import annotations

import errno
import json
import os
import shutil

import pytest

from petlbench.errors import PETLBenchError
from petlbench.run import execute, resolve
from petlbench.store import ResultStore, StoreError, StoreProblems, check_writable
from petlbench.tables import run_frame
from petlbench.tasks.mini import generate

from records import record

FAST = {"epochs": 2, "eval_every": 1, "warmup_epochs": 0, "weights": "none", "device": "cpu", "num_workers": 0}
TASK = "mini/dsprites_loc"


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("mini")))


@pytest.fixture
def root(mini_root, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(os.path.join(mini_root, "dsprites_loc"), dst / "dsprites_loc")
    return str(dst)


# --- copies ------------------------------------------------------------------------------------------------
def test_a_copied_record_is_counted_once_and_the_copies_are_named(tmp_path):
    store = ResultStore(str(tmp_path))
    rec = record("vtab/cifar", "lora", 70.0)
    path = store.append(rec)
    other = record("vtab/dtd", "lora", 50.0)
    copies = [tmp_path / "vtab" / "backup.json", tmp_path / "vtab" / f"{other['config_hash']}.json",
              tmp_path / "vtab" / "old" / os.path.basename(path), tmp_path / os.path.basename(path),
              tmp_path / "fewshot" / os.path.basename(path)]
    for c in copies:
        os.makedirs(c.parent, exist_ok=True)
        shutil.copy(path, c)
    problems = StoreProblems()
    recs = list(store.records(problems))
    assert [r["config_hash"] for r in recs] == [rec["config_hash"]]
    assert sorted(p for p, _ in problems.items) == sorted(map(str, copies))
    assert all("copy" in why for _, why in problems.items)
    frame = run_frame(store.records())
    assert len(frame) == 1 and list(frame["value"]) == [70.0]
    # The copy sitting at another configuration's name is not that configuration's record.
    assert store.get("vtab", other["config_hash"]) is None
    assert store.get("vtab", rec["config_hash"])["value"] == 70.0


# --- unreadable and wrong-typed records --------------------------------------------------------------------
def test_non_utf8_record_is_reported_and_does_not_stop_run_or_sweep(root, tmp_path):
    from petlbench.sweep import run_sweep

    store_root = tmp_path / "s"
    spec = resolve(TASK, "linear", dict(FAST))
    bad = store_root / "mini" / f"{spec.config_hash}.json"
    os.makedirs(bad.parent)
    bad.write_bytes(b'{"config_hash": "\xff\xfe caf\xe9"}')
    store = ResultStore(str(store_root))
    assert store.get("mini", spec.config_hash) is None
    problems = StoreProblems()
    assert list(store.records(problems)) == []
    assert problems.items == [(str(bad), problems.items[0][1])] and "not UTF-8" in problems.items[0][1]

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"tasks: [{TASK}]\nmethods: [linear]\noverrides: {json.dumps(FAST)}\n")
    summary = run_sweep(str(sweep), root, str(store_root), str(tmp_path / "o"))
    assert summary.ran == 1 and not summary.failed
    rec = store.get("mini", spec.config_hash)  # the unreadable file was replaced by the run's record
    assert rec["status"] == "ok"
    assert execute(resolve(TASK, "linear", dict(FAST)), root, store, str(tmp_path / "o")) == rec


@pytest.mark.parametrize("field, value", [("value", "abc"), ("params", 5), ("seed", "x"), ("metrics", [1]),
                                          ("protocol", "p")])
def test_wrong_typed_field_is_skipped_naming_the_file(tmp_path, field, value, capsys):
    from petlbench.cli import main

    store = ResultStore(str(tmp_path / "s"))
    good = record("vtab/cifar", "lora", 70.0)
    bad = {**record("vtab/dtd", "lora", 50.0), field: value}
    store.append(good)
    bad_path = store.append(bad)
    problems = StoreProblems()
    recs = list(store.records(problems))
    assert [r["config_hash"] for r in recs] == [good["config_hash"]]
    assert problems.items[0][0] == bad_path and repr(field) in problems.items[0][1]
    assert store.get("vtab", bad["config_hash"]) is None  # not returned as a finished run either

    # Records given to the tables directly are checked too, and the skipped one is named by its store file.
    problems = StoreProblems()
    frame = run_frame([good, bad], problems=problems)
    assert list(frame["value"]) == [70.0]
    assert problems.items == [(f"vtab/{bad['config_hash']}.json", problems.items[0][1])]

    rc = main(["table", "--store", str(tmp_path / "s"), "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 0 and bad_path in err and "Traceback" not in err


def test_old_records_without_data_are_read_by_the_tables(tmp_path):
    store = ResultStore(str(tmp_path))
    rec = record("vtab/cifar", "lora", 70.0)
    assert "data" not in rec
    store.append(rec)
    problems = StoreProblems()
    frame = run_frame(store.records(problems), problems=problems)
    assert not problems.items and list(frame["value"]) == [70.0]


# --- a store that cannot be written ------------------------------------------------------------------------
def _blocked(tmp_path) -> str:
    """A folder that cannot be created, also as root (where chmod does not stop writes): one under a file."""
    (tmp_path / "file.txt").write_text("not a folder\n")
    return str(tmp_path / "file.txt" / "store")


def test_unwritable_store_fails_before_training_in_one_line(root, tmp_path):
    calls = []
    spec = resolve(TASK, "linear", dict(FAST))
    with pytest.raises(StoreError) as e:
        execute(spec, root, ResultStore(_blocked(tmp_path)), str(tmp_path / "out"),
                progress=lambda *a: calls.append(a))
    msg = str(e.value)
    assert "\n" not in msg and "file.txt/store/mini" in msg and os.strerror(errno.ENOTDIR) in msg
    assert calls == []  # nothing trained
    with pytest.raises(StoreError, match=r"output folder .*file.txt.*: Not a directory"):
        execute(spec, root, ResultStore(str(tmp_path / "s")), str(tmp_path / "file.txt" / "out"))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into a 0o555 folder anyway")
def test_read_only_store_folder(root, tmp_path):
    ro = tmp_path / "ro"
    os.makedirs(ro / "mini")
    os.chmod(ro / "mini", 0o555)
    try:
        with pytest.raises(StoreError, match=r"result store folder .*ro/mini.* is not writable: Permission denied"):
            execute(resolve(TASK, "linear", dict(FAST)), root, ResultStore(str(ro)), str(tmp_path / "out"))
    finally:
        os.chmod(ro / "mini", 0o755)


def test_full_disk_is_one_line(tmp_path, monkeypatch):
    import petlbench.store as store_mod

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store_mod.os, "write", full)
    with pytest.raises(StoreError, match=f"{tmp_path}.* is not writable: No space left on device"):
        check_writable(str(tmp_path), "result store folder")
    assert os.listdir(tmp_path) == []  # the probe is removed
    monkeypatch.undo()
    monkeypatch.setattr(store_mod, "atomic_write_text", full)
    with pytest.raises(StoreError, match=r"cannot write .*\.json: No space left on device"):
        ResultStore(str(tmp_path)).append(record("vtab/cifar", "lora", 70.0))


def test_sweep_on_an_unwritable_store_says_why_in_one_line(root, tmp_path):
    """Either the sweep stops at once with the store's one-line error, or every run fails with it (recorded in
    the summary); never a traceback, never a run trained for nothing."""
    from petlbench.sweep import run_sweep

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"tasks: [{TASK}]\nmethods: [linear, bitfit]\noverrides: {json.dumps(FAST)}\n")
    try:
        summary = run_sweep(str(sweep), root, _blocked(tmp_path), str(tmp_path / "o"))
    except PETLBenchError as e:
        assert "\n" not in str(e) and "file.txt" in str(e) and "Not a directory" in str(e)
    else:
        assert summary.planned == 2 and len(summary.failed) == 2 and summary.ran == 0
        assert all(reason.startswith("StoreError: result store folder") and "Not a directory" in reason
                   for _, reason in summary.failed)
    assert not os.path.exists(tmp_path / "o" / "mini") or not any(
        f.endswith(".safetensors") for f in os.listdir(tmp_path / "o" / "mini"))
