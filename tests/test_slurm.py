"""Sweeps at scale through submitit: the sbatch options pass through to the batch file sbatch gets (a stand-in
sbatch on PATH records it), a requeued job continues its run from the resume state, a local-executor job of
`gpus` 2 is one two-process DDP run (gloo on the CPU) with one record, and the debug executor runs in-process.
Runs are real and tiny: the mini ViT on a handful of generated images, one or two epochs."""
from __future__ import annotations

import json
import logging
import os
import pickle

import pytest

from petlbench.errors import ConfigError
from petlbench.resume import ResumeFile
from petlbench.sweep import SweepJob, executor_parameters, lock_path, run_one, run_sweep, sbatch_options

from tiny import list_folder

submitit = pytest.importorskip("submitit")

TASK = "mini/clevr_count"
OVERRIDES = {"epochs": 1, "eval_every": 1, "warmup_epochs": 0, "device": "cpu", "num_workers": 0}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A mini task's folder layout with 16 training and 8 test images (the generated set holds 1,000)."""
    return list_folder(tmp_path_factory.mktemp("data"), "clevr_count", 4,
                       {"train": (0, 12), "val": (12, 16), "trainval": (0, 16), "test": (16, 24)})


def _sweep(tmp_path, overrides: dict, methods: str = "linear") -> str:
    path = tmp_path / "sweep.yaml"
    path.write_text(f"tasks: [{TASK}]\nmethods: [{methods}]\noverrides: {json.dumps(overrides)}\n")
    return str(path)


def _records(store: str) -> list[dict]:
    return [json.load(open(os.path.join(d, f))) for d, _, fs in os.walk(store) for f in fs if f.endswith(".json")]


def test_sbatch_items_become_additional_parameters():
    assert sbatch_options(["mail-type=END", "--exclusive", "comment=a=b"]) == {
        "mail-type": "END", "exclusive": True, "comment": "a=b"}
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        sbatch_options(["=x"])
    with pytest.raises(ConfigError, match="--gpus -1"):
        executor_parameters("slurm", {"gpus": -1})
    local = executor_parameters("local", {"account": "a", "qos": "q"})  # SLURM-only options stay out
    assert local["tasks_per_node"] == 1 and local["gpus_per_node"] == 0
    assert not [k for k in local if k.startswith("slurm_") and k != "slurm_array_parallelism"]


def test_slurm_batch_file_carries_the_options_and_a_requeueable_job(root, tmp_path, monkeypatch):
    # srun and sbatch stand-ins: submitit looks for srun to accept the cluster, and hands sbatch the batch file
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    copy = tmp_path / "sbatch.sh"
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {copy}\necho "Submitted batch job 4242"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    opts = {"gpus": 2, "cpus": 4, "partition": "gpu", "account": "proj7", "qos": "high", "constraint": "a100",
            "mem": "64G", "timeout_min": 90, "parallel": 1, "sbatch": ["mail-type=END", "exclusive"],
            "folder": str(tmp_path / "jobs" / "%j")}
    s = run_sweep(_sweep(tmp_path, OVERRIDES, "linear, bitfit"), root, str(tmp_path / "s"), str(tmp_path / "o"),
                  executor="slurm", executor_options=opts)
    assert s.submitted == ["4242_0", "4242_1"] and not s.ran  # a job array of two, submitted, not waited for
    flags = {line.split("=")[0]: line.split("=", 1)[-1] for line in copy.read_text().splitlines()
             if line.startswith("#SBATCH ")}
    expected = {"--account": "proj7", "--qos": "high", "--constraint": "a100", "--mem": "64G", "--partition": "gpu",
                "--gpus-per-node": "2", "--ntasks-per-node": "2", "--cpus-per-task": "4", "--nodes": "1",
                "--time": "90", "--mail-type": "END", "--array": "0-1%1"}
    assert {f"#SBATCH {k}": v for k, v in expected.items()}.items() <= flags.items(), flags
    assert "#SBATCH --exclusive" in flags and "#SBATCH --signal" in flags  # the flag; submitit's requeue signal
    pickles = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "jobs") for f in fs if f.endswith(".pkl")]
    submitted = []
    for path in pickles:
        with open(path, "rb") as f:
            submitted.append(pickle.load(f))
    assert all(isinstance(d.function, SweepJob) and d.function.fn is run_one for d in submitted)
    assert sorted(d.args[:4] for d in submitted) == [(TASK, m, OVERRIDES, root) for m in ("bitfit", "linear")]


def test_requeued_job_continues_the_run_from_its_resume_state(root, tmp_path, monkeypatch):
    over = {**OVERRIDES, "epochs": 2}
    store, out = str(tmp_path / "s"), str(tmp_path / "o")
    args = (TASK, "linear", over, root, store, out, False)
    job = SweepJob(run_one)
    again = job.checkpoint(*args)
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert again.function is not job and again.function.fn is run_one and again.args == args and not again.kwargs

    save = ResumeFile.save

    def save_then_leave(self, *a, **kw):  # submitit's handler requeues, then sys.exit(-1)s out of the job
        save(self, *a, **kw)
        raise SystemExit(-1)

    monkeypatch.setattr(ResumeFile, "save", save_then_leave)
    with pytest.raises(SystemExit):
        job(*args)
    monkeypatch.setattr(ResumeFile, "save", save)
    assert not _records(store)
    assert [f for _, _, fs in os.walk(out) for f in fs if f.endswith(".resume.pt")]
    assert not [f for _, _, fs in os.walk(store) for f in fs if f.endswith(".lock")]  # released on the way out

    assert again.result() == ("ran", "")
    (rec,) = _records(store)
    assert rec["status"] == "ok" and rec["resumed_from_epoch"] == 1 and [h["epoch"] for h in rec["history"]] == [1, 2]
    assert not os.path.exists(lock_path(store, rec["benchmark"], rec["config_hash"]))


def test_local_job_of_two_gpus_is_one_two_process_run(root, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two processes on a small CI machine: no thread oversubscription
    folder = tmp_path / "jobs"
    s = run_sweep(_sweep(tmp_path, OVERRIDES), root, str(tmp_path / "s"), str(tmp_path / "o"), executor="local",
                  executor_options={"gpus": 2, "timeout_min": 5, "folder": str(folder / "%j")})
    logs = sorted(f for _, _, fs in os.walk(folder) for f in fs if f.endswith("_log.out"))
    assert s.ran == 1 and not s.failed, (s.lines(), [open(os.path.join(d, f)).read()[-2000:]
                                                     for d, _, fs in os.walk(folder) for f in fs if "_log." in f])
    assert [f.split("_")[-2] for f in logs] == ["0", "1"]  # task 0 and task 1 of the one job
    (rec,) = _records(str(tmp_path / "s"))
    assert rec["status"] == "ok" and rec["world_size"] == 2 and rec["device"] == "cpu"


def test_debug_executor_runs_the_jobs_in_this_process(root, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="petlbench.run"):
        s = run_sweep(_sweep(tmp_path, OVERRIDES), root, str(tmp_path / "s"), str(tmp_path / "o"), executor="debug",
                      executor_options={"folder": str(tmp_path / "jobs")})
    assert s.ran == 1 and len(s.submitted) == 1 and not s.failed, s.lines()
    (rec,) = _records(str(tmp_path / "s"))
    assert rec["world_size"] == 1
    assert any(r.name == "petlbench.run" and TASK in r.getMessage() for r in caplog.records)  # logged here


def test_local_job_of_two_gpus_runs_a_search_as_two_process_runs(root, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = tmp_path / "tune.yaml"  # a `tune:` sweep: one job per search, its trials and final run inside the job
    path.write_text(f"tasks: [{TASK}]\nmethods: [linear]\ntune: {{lr: [0.002, 0.02]}}\n"
                    f"overrides: {json.dumps(OVERRIDES)}\n")
    folder = tmp_path / "jobs"
    s = run_sweep(str(path), root, str(tmp_path / "s"), str(tmp_path / "o"), executor="local",
                  executor_options={"gpus": 2, "timeout_min": 5, "folder": str(folder / "%j")})
    assert s.ran == 1 and not s.failed, (s.lines(), [open(os.path.join(d, f)).read()[-2000:]
                                                     for d, _, fs in os.walk(folder) for f in fs if "_log." in f])
    recs = _records(str(tmp_path / "s"))
    assert len(recs) == 3 and {r["status"] for r in recs} == {"ok"}  # 2 trials + the final run, each once
    assert {r["world_size"] for r in recs} == {2}  # every run of the search joined both processes
    (final,) = [r for r in recs if r.get("search")]
    assert [t["status"] for t in final["search"]["trials"]] == ["ok", "ok"]
