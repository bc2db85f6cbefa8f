"""Sweeps: expansion, skipping finished runs, failure records, kill -9 at arbitrary moments then restart, absent
data, and submitit's local executor. Runs are real (mini tasks, the tiny ViT, 2 epochs on the CPU)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from petlbench.errors import ConfigError
from petlbench.store import ResultStore, StoreProblems
from petlbench.sweep import expand, load_sweep, run_sweep
from petlbench.tasks import mini

QUICK = "overrides: {epochs: 2, eval_every: 1, warmup_epochs: 0, device: cpu, num_workers: 0}\n"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return mini.generate(str(tmp_path_factory.mktemp("mini")))


def _file(tmp_path, text: str, name: str = "sweep.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_expand_crosses_tasks_methods_seeds_shots_and_search(tmp_path):
    runs = expand(load_sweep(_file(tmp_path, """
tasks: [vtab/cifar, "fewshot/oxford_p*"]
methods: [repadapter, {name: vpt, deep: false}]
seeds: [0, 1]
shots: [1, 16]
search: {scale: [0.1, 10]}
""")))
    vtab = [r for r in runs if r.task == "vtab/cifar"]
    assert len(vtab) == 2 * 2 + 1 * 2  # repadapter x 2 scales x 2 seeds; vpt has no scale: 2 seeds
    few = [r for r in runs if r.task == "fewshot/oxford_pets"]
    assert len(few) == 2 * 2 * 2 + 2 * 2  # shots apply to few-shot tasks only
    assert {r.overrides["train_split"] for r in few} == {"train_shot1_seed0", "train_shot1_seed1",
                                                         "train_shot16_seed0", "train_shot16_seed1"}
    assert all(r.overrides["deep"] is False for r in runs if r.method == "vpt")


@pytest.mark.parametrize("text, message", [
    ("tasks: [vtab/cifr]\nmethods: [lora]\n", "tasks[0] 'vtab/cifr' matches no task"),
    ("tasks: [vtab/cifar]\nmethods: [lora, repadaptr]\n", "did you mean 'repadapter'"),
    ("tasks: [vtab/cifar]\nmethods: [lora]\noverides: {}\n", "unknown key 'overides'"),
    ("tasks: [vtab/cifar]\nmethods: [{name: lora, rnk: 2}]\n", "rnk"),
    ("tasks: [vtab/cifar\nmethods: [lora]\n", "line 2"),
])
def test_bad_sweep_files_name_the_file_and_the_key(tmp_path, text, message):
    path = _file(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        expand(load_sweep(path), path)
    assert path in str(e.value) and message in str(e.value)


def _records(store: str) -> list[dict]:
    problems = StoreProblems()
    recs = list(ResultStore(store).records(problems))
    assert not problems.items, problems.items  # nothing corrupt
    return recs


def test_failures_are_recorded_and_the_sweep_goes_on(root, tmp_path):
    path = _file(tmp_path, "tasks: [mini/digits]\nmethods: [linear, lora]\n" + QUICK.replace(
        "epochs: 2", "epochs: 2, lr: 1.0e+30"))
    lines: list[str] = []
    s = run_sweep(path, root, str(tmp_path / "s"), str(tmp_path / "o"), on_line=lines.append)
    assert s.planned == 2 and len(s.failed) == 2 and all("NonFiniteLoss" in r for _, r in s.failed)
    recs = _records(str(tmp_path / "s"))
    assert {r["status"] for r in recs} == {"failed"} and all("NonFiniteLoss" in r["reason"] for r in recs)
    assert any("failed (2): NonFiniteLoss" in line for line in s.lines())
    again = run_sweep(path, root, str(tmp_path / "s"), str(tmp_path / "o"))
    assert again.failed_before == 2 and again.ran == 0  # recorded failures are not rerun by default


def test_absent_data_is_one_line_per_task(tmp_path):
    path = _file(tmp_path, "tasks: [mini/digits, mini/clevr_count]\nmethods: [linear, lora]\n" + QUICK)
    lines: list[str] = []
    s = run_sweep(path, str(tmp_path / "nothing"), str(tmp_path / "s"), str(tmp_path / "o"), on_line=lines.append)
    assert [t for t, _ in s.absent] == ["mini/digits", "mini/clevr_count"] and s.ran == 0 and not s.failed
    assert len(lines) == 2 and all(line.startswith("skipping mini/") for line in lines)
    assert not os.path.exists(tmp_path / "s")  # nothing recorded


def test_kill_9_at_any_moment_then_restart_finishes_the_sweep(root, tmp_path):
    """Kill the sweep process (SIGKILL) three times at different moments: during start-up, mid-run and just
    after a record lands; each restart skips finished runs and resumes the cut one; in the end every planned
    run has exactly one readable record."""
    path = _file(tmp_path, "tasks: [mini/digits, mini/dsprites_ori]\nmethods: [linear, repadapter]\n"
                           + QUICK.replace("epochs: 2", "epochs: 3"))
    store, out = str(tmp_path / "s"), str(tmp_path / "o")
    cmd = [sys.executable, "-m", "petlbench.cli", "sweep", path, "--data-root", root, "--store", store,
           "--out", out, "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}

    def n_records() -> int:
        return sum(f.endswith(".json") and not f.startswith(".tmp-") for _, _, fs in os.walk(store) for f in fs)

    kills = 0
    for wait_for in ("start", "resume-file", "record"):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before, t0 = n_records(), time.time()
        while proc.poll() is None and time.time() - t0 < 120:
            if wait_for == "start" and time.time() - t0 > 1.0:
                break
            if wait_for == "resume-file" and any(f.endswith(".resume.pt") for _, _, fs in os.walk(out) for f in fs):
                break
            if wait_for == "record" and n_records() > before:
                break
            time.sleep(0.02)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    recs = _records(store)
    assert len(recs) == 4 and {r["status"] for r in recs} == {"ok"}
    assert len({r["config_hash"] for r in recs}) == 4
    assert "4 runs planned" in done.stdout and "0 failed now" in done.stdout
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert "4 already in the store, 0 ran now" in final.stdout
    assert not [f for _, _, fs in os.walk(out) for f in fs if f.endswith(".resume.pt")]


def test_submitit_local_executor(root, tmp_path, caplog):
    pytest.importorskip("submitit")
    path = _file(tmp_path, "tasks: [mini/clevr_count]\nmethods: [linear, bitfit]\n" + QUICK)
    s = run_sweep(path, root, str(tmp_path / "s"), str(tmp_path / "o"), executor="local",
                  executor_options={"folder": str(tmp_path / "jobs" / "%j"), "timeout_min": 10})
    assert len(s.submitted) == 2 and s.ran == 2 and not s.failed, s.lines()
    recs = _records(str(tmp_path / "s"))
    assert sorted(r["method"] for r in recs) == ["bitfit", "linear"] and {r["status"] for r in recs} == {"ok"}
    with caplog.at_level("INFO", logger="petlbench.sweep"):  # what `petlbench -v sweep` shows per skipped run
        again = run_sweep(path, root, str(tmp_path / "s"), str(tmp_path / "o"), executor="local",
                          executor_options={"folder": str(tmp_path / "jobs" / "%j")})
    assert again.already_done == 2 and not again.submitted
    skipped = [r.getMessage() for r in caplog.records if "already in the store" in r.getMessage()]
    assert len(skipped) == 2 and all(any(m.startswith(f"mini/clevr_count {r['method']} ") and
                                         m.endswith(f": already in the store (hash {r['config_hash']}), skipped")
                                         for m in skipped) for r in recs), skipped
    json.dumps(s.lines())


def test_set_overrides_apply_on_top_of_the_file(root, tmp_path):
    path = _file(tmp_path, "tasks: [mini/clevr_count]\nmethods: [linear]\n" + QUICK)
    s = run_sweep(path, root, str(tmp_path / "s"), str(tmp_path / "o"), extra={"epochs": 1})
    assert s.ran == 1
    (rec,) = _records(str(tmp_path / "s"))
    assert rec["protocol"]["epochs"] == 1 and len(rec["history"]) == 1
