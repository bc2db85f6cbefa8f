"""scripts/device_check.sh: its --dry-run (every step on the CPU at toy size, from this checkout through the
script's own package folder) writes every output the GPU check writes, each parseable; without a GPU the real
check stops at once, saying why."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SCRIPT = os.path.join(ROOT, "scripts", "device_check.sh")


def _run(tmp_path, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DEVICE_CHECK_BUDGET_S")}
    env.update(TMPDIR=str(tmp_path), **extra_env)
    return subprocess.run(["bash", SCRIPT, "--python", sys.executable, *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=tmp_path)


def test_dry_run_writes_every_output(tmp_path):
    out = tmp_path / "check"
    proc = _run(tmp_path, "--dry-run", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = list(csv.DictReader(open(out / "steps.csv")))
    assert [s["step"] for s in steps] == ["environment", "estimate", "bench", "data", "throughput", "summary"]
    assert {s["status"] for s in steps} == {"ok"}

    summary = json.load(open(out / "summary.json"))
    assert summary["environment"]["device"] == "cpu"
    est = summary["estimate"]
    assert est["train_step_s"] > 0 and est["eval_s_per_image"] > 0 and est["total_minutes"] > 0
    bench = {(r["method"], r["form"]): r for r in summary["bench"]}
    assert set(bench) == {("plain", "plain"), ("repadapter", "unmerged"), ("repadapter", "merged")}
    assert bench[("plain", "plain")]["latency_ratio_bs1"] == 1.0
    assert all(r["latency_ms_bs1"] > 0 and r["latency_ms_bs4"] > 0 for r in bench.values())
    assert bench[("repadapter", "merged")]["gmacs"] == bench[("plain", "plain")]["gmacs"]  # merged is plain

    rows = list(csv.DictReader(open(out / "throughput.csv")))
    assert [(r["compile"], r["epochs"]) for r in rows] == [(c, e) for c in ("False", "True") for e in ("1", "2", "4")]
    assert all(float(r["record_images_per_s"]) > 0 for r in rows)
    assert [bool(r["steady_images_per_s"]) for r in rows] == [False, False, True] * 2
    assert [int(r["images"]) for r in rows[:3]] == [16, 32, 64]  # 16 training images an epoch
    assert "steady" in proc.stdout and "bench repadapter" in proc.stdout
    assert not [p for p in os.listdir(tmp_path) if p.startswith("petlbench_device_check")]  # temp folder removed


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given on a machine without a GPU")
def test_without_a_gpu_the_check_stops_at_once(tmp_path):
    out = tmp_path / "check"
    proc = _run(tmp_path, "--out", str(out))
    assert proc.returncode == 1
    assert "no CUDA device here" in open(out / "logs" / "environment.log").read()
    assert [s["step"] for s in csv.DictReader(open(out / "steps.csv"))] == ["environment"]


def test_a_spent_budget_skips_steps_and_bad_arguments_are_refused(tmp_path):
    out = tmp_path / "check"
    proc = _run(tmp_path, "--dry-run", "--out", str(out), DEVICE_CHECK_BUDGET_S="1")
    assert proc.returncode == 1
    assert [(s["step"], s["status"]) for s in csv.DictReader(open(out / "steps.csv"))] == [("environment", "skipped")]
    bad = _run(tmp_path, "--bogus")
    assert bad.returncode == 2 and "unknown argument --bogus" in bad.stderr
