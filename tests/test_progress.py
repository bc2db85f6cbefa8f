"""What a person sees while a run works: a step-level bar (loss, lr, images/s, ETA) on a terminal and nothing on a
pipe, a line while a split decodes, a skipped run said to be skipped, `-v` for the library's INFO log, and the
TensorBoard events `log=tensorboard` writes beside the JSON lines."""
from __future__ import annotations

import io
import json
import logging
import os
import sys

import pytest
import torch

from petlbench.cli import _Bar, main
from petlbench.engine import EvalSet, Execution, TensorBatches, train
from petlbench.errors import ConfigError
from petlbench.run import resolve

from tiny import build, list_folder

EPOCHS, BATCH, N = 2, 8, 24  # 3 steps per epoch


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal, so the bars draw into it."""

    def isatty(self) -> bool:
        return True


class Steps:
    """A progress object that asks for steps (engine.RunLog): every call kept."""

    def __init__(self):
        self.steps, self.epochs = [], []

    def __call__(self, stage, done, total, info):
        self.epochs.append((stage, done, total, dict(info)))

    def step(self, done, total, info):
        self.steps.append((done, total, dict(info)))


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (N, 3, 32, 32), generator=g, dtype=torch.uint8),
            torch.randint(0, 5, (N,), generator=g))


def _train(progress, execution: Execution | None = None, **kw):
    torch.manual_seed(0)
    x, y = _data()
    evals = [EvalSet("val", TensorBatches(x, y, N, False))]
    return train(build("lora"), TensorBatches(x, y, BATCH, True, seed=1), evals, epochs=EPOCHS, lr=1e-3,
                 weight_decay=0.0, progress=progress,
                 execution=execution or Execution(device="cpu", channels_last=False), **kw)


def test_the_engine_reports_every_step_and_each_epoch_as_before(tmp_path):
    seen = Steps()
    res = _train(seen, log_path=str(tmp_path / "run.log.jsonl"))
    steps_per_epoch = N // BATCH
    total = EPOCHS * steps_per_epoch
    assert [d for d, _, _ in seen.steps] == list(range(1, total + 1))
    assert {t for _, t, _ in seen.steps} == {total}
    assert [i["epoch"] for _, _, i in seen.steps] == [e + 1 for e in range(EPOCHS) for _ in range(steps_per_epoch)]
    assert all(i["images"] == BATCH for _, _, i in seen.steps)
    # the last step's running mean and lr are the epoch's JSON-line values
    last = seen.steps[-1][2]
    assert last["loss"] == pytest.approx(res.history[-1]["loss"]) and last["lr"] == res.history[-1]["lr"]
    assert [(s, d, t) for s, d, t, _ in seen.epochs] == [("train", e + 1, EPOCHS) for e in range(EPOCHS)]
    assert os.listdir(tmp_path) == ["run.log.jsonl"]  # the default log: JSON lines only, no TensorBoard folder
    plain = []  # a plain callable (no `step`) is told after each epoch only, as before
    _train(lambda stage, done, total, info: plain.append(done))
    assert plain == list(range(1, EPOCHS + 1))


def test_the_bar_on_a_terminal_shows_loss_lr_images_per_second_and_the_evaluation():
    term = FakeTerminal()
    bar = _Bar(True, term, min_interval=0)
    _train(bar)
    total = EPOCHS * (N // BATCH)
    assert (bar.bar.n, bar.bar.total, bar.bar.unit) == (total, total, "step")
    bar.close()
    lines = term.getvalue().split("\r")
    last = [ln for ln in lines if f"{total}/{total}" in ln][-1]
    assert f"epoch {EPOCHS}, loss " in last and ", lr " in last and " img/s" in last and ", val " in last
    assert "step/s" in last
    assert any(f"1/{total}" in ln for ln in lines) and any(f"{total - 1}/{total}" in ln for ln in lines)


def test_a_stage_bar_counts_what_was_done_before_its_first_report():
    term = FakeTerminal()
    bar = _Bar(True, term, min_interval=0)
    bar("decode", 64, 640)
    assert bar.bar.n == 64 and bar.bar.unit == "img"
    bar("decode", 128, 640)
    assert bar.bar.n == 128 and bar.bar.format_dict["initial"] == 64
    bar("decode", 64, 200)  # the next split: a new bar
    assert bar.bar.n == 64 and bar.bar.total == 200
    bar.close()
    assert "decode" in term.getvalue()


def test_nothing_is_drawn_when_the_stream_is_not_a_terminal():
    pipe = io.StringIO()
    bar = _Bar(True, pipe)
    for done in range(1, 7):
        bar.step(done, 6, {"epoch": 1 + (done > 3), "loss": 1.0, "lr": 1e-3, "images": 8})
    bar("train", 1, 2, {"epoch": 1, "val": 50.0})
    bar("decode", 10, 20)
    bar.close()
    assert pipe.getvalue() == "" and bar.bar is None
    quiet = FakeTerminal()
    bar = _Bar(False, quiet)  # --quiet on a terminal
    bar("decode", 10, 20)
    assert quiet.getvalue() == ""


@pytest.fixture
def small_root(tmp_path):
    """mini/dsprites_loc's layout (list files of `path label` lines) with 24 random 32x32 images per list: a run
    of one epoch takes a few steps."""
    return list_folder(tmp_path / "data", "dsprites_loc", 8, {s: (0, 24) for s in ("train", "val", "trainval", "test")})


def _petlbench_info(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("petlbench") and r.levelno == logging.INFO]


def test_a_run_shows_decoding_and_steps_then_a_rerun_says_it_was_skipped(small_root, tmp_path, capsys, caplog,
                                                                         monkeypatch):
    argv = ["run", "--task", "mini/dsprites_loc", "--method", "linear", "--data-root", small_root,
            "--store", str(tmp_path / "s"), "--out", str(tmp_path / "o"), "epochs=1", "eval_every=1",
            "warmup_epochs=0", "weights=none", "device=cpu", "num_workers=0", "batch_size=8"]
    monkeypatch.setenv("PETLBENCH_DECODE_CACHE", str(tmp_path / "decoded"))  # a private cache: no earlier entry
    term = FakeTerminal()
    with monkeypatch.context() as m:
        m.setattr(sys, "stderr", term)
        assert main(argv) == 0
    drawn = term.getvalue()
    assert "decode:" in drawn and "img" in drawn and "train:" in drawn and "step" in drawn
    assert "already in the store" not in drawn
    assert _petlbench_info(caplog) == []  # without -v: no INFO line, though the run logs its evaluation
    (rec,) = [json.load(open(os.path.join(d, f))) for d, _, fs in os.walk(tmp_path / "s") for f in fs]
    capsys.readouterr()

    caplog.clear()
    assert main(argv + ["-v"]) == 0  # answered from the store
    out, err = capsys.readouterr()
    assert (f"mini/dsprites_loc linear: already in the store (hash {rec['config_hash']}); --force to run again"
            in err)
    assert "%|" not in err  # stderr here is not a terminal: no bar
    assert f"record {rec['config_hash']}" in out
    assert any("already in the store" in m and rec["config_hash"] in m for m in _petlbench_info(caplog))

    caplog.clear()
    assert main(["-v"] + argv) == 0  # -v before the command works too
    assert any("already in the store" in m for m in _petlbench_info(caplog))
    caplog.clear()
    assert main(argv) == 0
    assert _petlbench_info(caplog) == [] and "already in the store (hash" in capsys.readouterr().err


def test_tensorboard_events_hold_the_json_lines_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_path = str(tmp_path / "run.log.jsonl")
    _train(None, log_path=log_path, execution=Execution(device="cpu", channels_last=False, log="tensorboard"))
    lines = [json.loads(x) for x in open(log_path)]
    events = EventAccumulator(str(tmp_path / "run.tb"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"train/loss", "train/lr", "top1/val"}
    for tag, key in (("train/loss", "loss"), ("train/lr", "lr"), ("top1/val", "val")):
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert got == [(x["epoch"], pytest.approx(x[key], rel=1e-6)) for x in lines]


def test_log_tensorboard_without_the_package_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"log=tensorboard needs .*petlbench\[tensorboard\]"):
        resolve("mini/dsprites_loc", "linear", {"log": "tensorboard"})
    assert resolve("mini/dsprites_loc", "linear", {}).execution.log == "jsonl"
