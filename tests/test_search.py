"""Hyper-parameter search (petlbench/search.py): the space, the trials on the validation split, the choice, the
final run, the record, resumability after kill -9, and the tables' searched rows. On the mini tasks (generated
data, the 0.67M-parameter ViT), 2 epochs per trial."""
from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from petlbench.errors import ConfigError, PETLBenchError
from petlbench.search import SearchSpace, choose, run_search, trial_overrides, tuned_keys
from petlbench.store import ResultStore
from petlbench.tasks.mini import generate

QUICK = {"epochs": 2, "eval_every": 1, "warmup_epochs": 0, "device": "cpu", "num_workers": 0}
GRID = {"lr": [0.002, 0.02], "weight_decay": [0.0, 0.01]}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate(str(tmp_path_factory.mktemp("mini")))


def _records(store_root: str) -> list[dict]:
    return list(ResultStore(store_root).records())


# --- the space ------------------------------------------------------------------------------------------------
def test_space_points_describe_and_keys():
    space = SearchSpace.from_mapping({"lr": [0.001, 0.01], "weight_decay": [0, 1e-4], "scale": [1]})
    assert space.points() == [{"lr": 0.001, "weight_decay": 0, "scale": 1}, {"lr": 0.001, "weight_decay": 1e-4,
                                                                              "scale": 1},
                              {"lr": 0.01, "weight_decay": 0, "scale": 1}, {"lr": 0.01, "weight_decay": 1e-4,
                                                                             "scale": 1}]
    assert space.describe() == "grid lr=0.001|0.01 weight_decay=0|0.0001 scale=1"
    assert tuned_keys(space.describe()) == ("lr", "weight_decay", "scale")
    halving = SearchSpace.from_mapping({"lr": [1, 2, 3], "weight_decay": [0, 1], "strategy": "halving"})
    assert halving.describe().startswith("halving eta=3 lr=1|2|3")
    assert tuned_keys(halving.describe()) == ("lr", "weight_decay")
    assert tuned_keys("") == ()


def test_halving_rungs():
    six = SearchSpace.from_mapping({"lr": [1, 2, 3, 4, 5, 6], "strategy": "halving"})
    assert six.rungs(15) == [(6, 5), (2, 15)]  # 6 at a third of the epochs, the best 2 at all of them
    nine = SearchSpace.from_mapping({"lr": list(range(1, 10)), "strategy": "halving"})
    assert nine.rungs(90) == [(9, 30), (3, 90)]
    many = SearchSpace.from_mapping({"lr": list(range(1, 28)), "strategy": "halving"})
    assert many.rungs(90) == [(27, 10), (9, 30), (3, 90)]
    four = SearchSpace.from_mapping({"lr": [1, 2, 3, 4], "strategy": "halving", "eta": 2})
    assert four.rungs(8) == [(4, 4), (2, 8)]  # a last rung of one point would only repeat the final run
    assert SearchSpace.from_mapping({"lr": [1, 2, 3], "strategy": "halving"}).rungs(9) == [(3, 9)]
    assert SearchSpace.from_mapping({"lr": [1, 2]}).rungs(10) == [(2, 10)]


def test_trial_overrides_scale_the_warmup_on_short_rungs():
    assert trial_overrides({"x": 1}, {"lr": 0.1}, 100, 100, 10) == {"x": 1, "lr": 0.1, "selection": "trial"}
    short = trial_overrides({}, {"lr": 0.1}, 25, 100, 10)
    assert short["epochs"] == 25 and short["warmup_epochs"] == 2


@pytest.mark.parametrize("bad, message", [
    ({}, "expected a mapping"),
    ({"lr": []}, "has no values"),
    ({"lr": [1, 1]}, "lists a value twice"),
    ({"lr": [1], "strategy": "random"}, "strategy='random'"),
    ({"lr": [1], "eta": 1}, "eta must be an integer >= 2"),
    ({"lr": [[1]]}, "values are numbers"),
])
def test_space_errors_name_the_key(bad, message):
    with pytest.raises(ConfigError, match=message):
        SearchSpace.from_mapping(bad, "tune")


def test_choice_is_the_best_then_the_smaller_lr():
    from petlbench.search import Trial

    def t(lr, wd, score, rung=0):
        return Trial({"lr": lr, "weight_decay": wd}, rung, 1, {}, status="ok", score=score)

    trials = [t(0.1, 0, 50.0), t(0.01, 0, 60.0), t(0.001, 0, 60.0), t(0.001, 1, 60.0)]
    assert choose(trials, ("lr", "weight_decay")).point == {"lr": 0.001, "weight_decay": 0}
    # the last rung decides: a better score on an earlier, shorter rung does not count
    assert choose(trials + [t(0.1, 0, 55.0, rung=1)], ("lr", "weight_decay")).point["lr"] == 0.1
    with pytest.raises(PETLBenchError, match="no trial finished"):
        choose([Trial({"lr": 1}, 0, 1, {}, status="failed")], ("lr",))


def test_unsearchable_keys_and_bad_keys_fail_before_any_run(root, tmp_path):
    for key in ("epochs", "selection", "seed"):
        with pytest.raises(ConfigError, match=f"{key!r} cannot be searched"):
            run_search("mini/digits", "bitfit", QUICK, SearchSpace.from_mapping({key: [1, 2]}), root,
                       str(tmp_path / "s"), str(tmp_path / "o"))
    with pytest.raises(ConfigError, match="unknown key"):
        run_search("mini/digits", "bitfit", QUICK, SearchSpace.from_mapping({"lrr": [1, 2]}), root,
                   str(tmp_path / "s"), str(tmp_path / "o"))
    assert not os.path.exists(tmp_path / "s")


# --- the search, end to end -----------------------------------------------------------------------------------
def test_choice_is_the_best_on_val_and_test_never_enters(root, tmp_path):
    """The trials run with the test list absent (so nothing can read it), the choice is the argmax of the trials'
    val top-1 in the store, and only the final run reads the test split, once, after its last epoch."""
    data = tmp_path / "data"
    shutil.copytree(root, data)
    test_list = data / "digits" / "test.txt"
    hidden = tmp_path / "test.txt.hidden"
    shutil.move(test_list, hidden)
    store, out = str(tmp_path / "store"), str(tmp_path / "runs")
    space = SearchSpace.from_mapping(dict(GRID))
    with pytest.raises(PETLBenchError, match="final run"):
        run_search("mini/digits", "bitfit", QUICK, space, str(data), store, out)
    trials = [r for r in _records(store) if r["protocol"]["selection"] == "trial"]
    assert len(trials) == 4 and all(r["status"] == "ok" for r in trials)
    assert all(set(r["data"]["splits"]) == {"train", "val"} for r in trials)  # test is not among the data read
    assert all(r["metrics"]["split"] == "val" for r in trials)
    shutil.move(hidden, test_list)
    with pytest.raises(PETLBenchError, match="recorded by an earlier attempt; --retry-failed reruns it"):
        run_search("mini/digits", "bitfit", QUICK, space, str(data), store, out)
    outcome = run_search("mini/digits", "bitfit", QUICK, space, str(data), store, out, retry_failed=True)
    assert outcome.ran == 1  # the final run only: every trial came from the store
    best = max(trials, key=lambda r: (r["value"], -r["protocol"]["lr"]))
    assert outcome.chosen == {"lr": best["protocol"]["lr"], "weight_decay": best["protocol"]["weight_decay"]}
    final = outcome.final
    assert final["protocol"]["selection"] == "final" and final["protocol"]["tuned"] == space.describe()
    assert final["protocol"]["lr"] == outcome.chosen["lr"]
    assert final["metrics"]["split"] == "test" and [h["epoch"] for h in final["history"] if "test" in h] == [2]
    assert set(final["data"]["splits"]) == {"trainval", "test"}
    s = final["search"]
    assert s["chosen"] == outcome.chosen and len(s["trials"]) == 4 and s["selected_on"] == "val"
    assert {t["config_hash"] for t in s["trials"]} == {r["config_hash"] for r in trials}
    assert s["chosen_val_top1"] == best["value"]
    # the stored final record is the one returned, "search" included
    assert ResultStore(store).get("mini", final["config_hash"])["search"] == s


def test_halving_trains_fewer_epochs_first_and_keeps_the_best(root, tmp_path):
    store = str(tmp_path / "store")
    space = SearchSpace.from_mapping({"lr": [0.0005, 0.002, 0.02, 0.05], "strategy": "halving"})
    over = {**QUICK, "epochs": 3}
    outcome = run_search("mini/digits", "bitfit", over, space, root, store, str(tmp_path / "runs"))
    rungs = [(t.rung, t.epochs) for t in outcome.trials]
    assert rungs == [(0, 1)] * 4 + [(1, 3)] * 2  # 4 points for 1 epoch, the best 2 for 3
    first = sorted((t for t in outcome.trials if t.rung == 0), key=lambda t: -t.score)
    assert [t.point for t in outcome.trials[4:]] == [t.point for t in first[:2]]
    assert outcome.chosen in [t.point for t in outcome.trials[4:]]
    assert outcome.final["search"]["rungs"] == [{"points": 4, "epochs": 1}, {"points": 2, "epochs": 3}]


def test_search_survives_kill_9_without_duplicate_trials(root, tmp_path):
    store, out = str(tmp_path / "store"), str(tmp_path / "runs")
    cmd = [sys.executable, "-m", "petlbench.cli", "search", "--task", "mini/digits", "--method", "bitfit",
           "--grid", "lr=0.002,0.02", "--grid", "weight_decay=0,0.01", "--data-root", root, "--store", store,
           "--out", out, "--quiet", *(f"{k}={v}" for k, v in {**QUICK, "epochs": 3}.items())]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.time() + 240
    while time.time() < deadline and len(glob.glob(os.path.join(store, "mini", "*.json"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_with = len(glob.glob(os.path.join(store, "mini", "*.json")))
    assert 2 <= killed_with < 5, "the search was not killed mid-way"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    recs = _records(store)
    assert len(recs) == 5  # 4 trials + the final run, one record each
    files = glob.glob(os.path.join(store, "mini", "*.json"))
    assert len(files) == 5 and len({os.path.basename(f) for f in files}) == 5
    final = next(r for r in recs if r["protocol"]["selection"] == "final")
    assert len(final["search"]["trials"]) == 4 and "chose" in done.stdout


def test_sweep_tune_key_runs_one_search_per_run_and_tables_show_it(root, tmp_path):
    from petlbench.report import suite_tables
    from petlbench.sweep import run_sweep
    from petlbench.tables import run_frame

    sweep = tmp_path / "tune.yaml"
    sweep.write_text("tasks: [mini/digits]\nmethods: [bitfit, linear]\n"
                     "tune: {lr: [0.002, 0.02], weight_decay: [0, 0.01]}\n"
                     "overrides: {epochs: 2, eval_every: 1, warmup_epochs: 0, num_workers: 0, device: cpu}\n")
    store = str(tmp_path / "store")
    summary = run_sweep(str(sweep), root, store, str(tmp_path / "runs"))
    assert summary.planned == 2 and summary.ran == 2 and not summary.failed
    again = run_sweep(str(sweep), root, store, str(tmp_path / "runs"))
    assert again.ran == 0 and again.already_done == 2
    assert len(_records(store)) == 2 * 5
    frame = run_frame(ResultStore(store).records())
    assert len(frame) == 2  # trials are not rows: the two final runs are
    short = "epochs=2, eval_every=1, warmup_epochs=0"  # (the overrides differ from the task's protocol)
    assert set(frame["variant"]) == {f"BitFit [tuned lr, weight_decay, {short}]",
                                     f"Linear probing [tuned lr, weight_decay, {short}]"}
    (_, table), = [(s, t) for s, t in suite_tables(frame) if s == "mini"]
    note = " ".join(table.notes)
    assert "searched per dataset" in note and "grid lr=0.002|0.02 weight_decay=0|0.01" in note
    chosen = frame.set_index("method")["searched"].to_dict()
    for r in _records(store):
        if r["protocol"]["selection"] == "final":
            c = r["search"]["chosen"]
            assert chosen[r["method"]] == f"lr={c['lr']:g}, weight_decay={c['weight_decay']:g}"


def test_sweep_tune_errors_name_the_file(tmp_path):
    from petlbench.sweep import run_sweep

    sweep = tmp_path / "bad.yaml"
    sweep.write_text("tasks: [mini/digits]\nmethods: [bitfit]\ntune: {lr: [0.1], strategy: best}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: tune: strategy='best'"):
        run_sweep(str(sweep), None, str(tmp_path / "s"), str(tmp_path / "o"))


def test_sweep_tune_through_submitit_local(root, tmp_path):
    pytest.importorskip("submitit")
    from petlbench.sweep import run_sweep

    sweep = tmp_path / "tune.yaml"
    sweep.write_text("tasks: [mini/clevr_count]\nmethods: [linear]\ntune: {lr: [0.002, 0.02]}\n"
                     "overrides: {epochs: 1, eval_every: 1, warmup_epochs: 0, num_workers: 0, device: cpu}\n")
    store, opts = str(tmp_path / "store"), {"folder": str(tmp_path / "jobs" / "%j"), "timeout_min": 10}
    s = run_sweep(str(sweep), root, store, str(tmp_path / "runs"), executor="local", executor_options=opts)
    assert len(s.submitted) == 1 and s.ran == 1 and not s.failed, s.lines()
    assert len(_records(store)) == 3  # 2 trials + the final run, made in the job
    again = run_sweep(str(sweep), root, store, str(tmp_path / "runs"), executor="local", executor_options=opts)
    assert again.already_done == 1 and not again.submitted  # finished searches are not submitted again
