"""Hyper-parameter search as runs: a grid, or successive halving, over protocol fields and method options (lr x
weight decay, RepAdapter's scale, ...) scored on the validation split, then one retrain with the choice and one
test evaluation. The "clean" protocol at full strength, as VPT's tune_vtab.py and ELEVATER's toolkit tune:

    trials  selection=trial: train on clean_train_split (VTAB-1k: train800), evaluate val_split (val200); the
            score is the last evaluation's val top-1 (VPT tune_vtab.py:48-78). The test split is never read.
    choice  the best score; ties go to the smaller learning rate (VPT tune_vtab.py:63-71), then to grid order.
    final   selection=final, tuned=<the space>: train on train_split (train800val200) with the chosen values,
            evaluate test_split once, after the last epoch. Its record gains "search": every trial (config hash,
            values, epochs, val top-1, status), the rungs, the rule and the choice.

Every trial and the final run is an ordinary run of the store (`sweep.run_one`): written atomically under its
config hash and locked while it trains, so a search killed at any moment (kill -9) is finished by starting it
again, and no trial runs twice, even when two searches share points. A search in a sweep file is the `tune:` key.

Successive halving (Jamieson & Talwalkar 2016, "Non-stochastic best arm identification"): every point trains for
epochs / eta^(R-1) epochs (warm-up scaled alike), the best ceil(n / eta) go on with eta times the epochs, and
so on; the last rung trains the survivors for the protocol's full epochs. Each rung is a fresh run (its own
schedule over its own epochs), not a continuation, so every trial is a complete run of the store.
"""
from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, PETLBenchError

log = logging.getLogger(__name__)

STRATEGIES = ("grid", "halving")
_TUNED = re.compile(r"^(grid|halving)(?: eta=(\d+))?((?: [A-Za-z_][\w.]*=[^ ]+)+)$")


@dataclass(frozen=True)
class SearchSpace:
    """The values to search, in order ((key, (value, ...)), ...), and how: "grid" (every point, full epochs) or
    "halving" (successive halving with factor `eta`)."""

    grid: tuple[tuple[str, tuple[Any, ...]], ...]
    strategy: str = "grid"
    eta: int = 3

    @classmethod
    def from_mapping(cls, values: dict[str, Any], where: str = "search") -> SearchSpace:
        """From {key: [values], ..., "strategy": "halving", "eta": 3} (a sweep file's `tune:`, the CLI's --grid);
        ConfigError naming `where` and the key otherwise."""
        if not isinstance(values, dict) or not values:
            raise ConfigError(f"{where}: expected a mapping of keys to value lists, e.g. {{lr: [0.001, 0.01]}}")
        values = dict(values)
        strategy = values.pop("strategy", "grid")
        eta = values.pop("eta", 3)
        if strategy not in STRATEGIES:
            raise ConfigError(f"{where}: strategy={strategy!r} is not one of {', '.join(STRATEGIES)}")
        if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
            raise ConfigError(f"{where}: eta must be an integer >= 2, got {eta!r}")
        grid = []
        for key, vals in values.items():
            vals = vals if isinstance(vals, list | tuple) else [vals]
            if not vals:
                raise ConfigError(f"{where}: {key!r} has no values")
            if len(set(map(repr, vals))) != len(vals):
                raise ConfigError(f"{where}: {key!r} lists a value twice: {vals}")
            for v in vals:
                if not isinstance(v, int | float | str | bool) or (isinstance(v, str) and (" " in v or "|" in v)):
                    raise ConfigError(f"{where}: {key}={v!r}: values are numbers, booleans or words")
            grid.append((str(key), tuple(vals)))
        if not grid:
            raise ConfigError(f"{where}: no key to search (give e.g. lr: [0.001, 0.01])")
        return cls(tuple(grid), strategy, eta)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.grid)

    def points(self) -> list[dict[str, Any]]:
        """Every combination, in grid order (the first key varies slowest)."""
        return [dict(zip(self.keys, combo)) for combo in itertools.product(*(v for _, v in self.grid))]

    def describe(self) -> str:
        """The canonical text of the space (the final run's `tuned` protocol field: part of its identity)."""
        head = self.strategy + (f" eta={self.eta}" if self.strategy == "halving" else "")
        return head + "".join(f" {k}={'|'.join(_text(v) for v in vals)}" for k, vals in self.grid)

    def rungs(self, epochs: int) -> list[tuple[int, int]]:
        """(points trained, epochs) per rung: grid, one rung of every point at `epochs`; halving, rungs while
        more than one point is left, each keeping ceil(n / eta), the last at `epochs`."""
        n = len(self.points())
        if self.strategy == "grid" or n == 1:
            return [(n, epochs)]
        counts = [n]
        while counts[-1] > self.eta:
            counts.append(math.ceil(counts[-1] / self.eta))
        last = len(counts) - 1
        return [(c, max(1, round(epochs / self.eta ** (last - r)))) for r, c in enumerate(counts)]


def _text(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def tuned_keys(tuned: str) -> tuple[str, ...]:
    """The searched keys of a `tuned` text (SearchSpace.describe); () for "" or text in another form."""
    m = _TUNED.match(tuned or "")
    return tuple(part.split("=", 1)[0] for part in m.group(3).split()) if m else ()


@dataclass
class Trial:
    point: dict[str, Any]
    rung: int
    epochs: int
    overrides: dict[str, Any]
    config_hash: str = ""
    status: str = ""
    score: float | None = None  # val top-1 of the last evaluation

    def row(self) -> dict[str, Any]:
        return {"values": self.point, "rung": self.rung, "epochs": self.epochs, "config_hash": self.config_hash,
                "status": self.status, "val_top1": self.score}


@dataclass
class SearchOutcome:
    trials: list[Trial]
    chosen: dict[str, Any]
    final: dict[str, Any]  # the final run's record (with "search")
    ran: int = 0  # runs trained now (trials and final); the rest came from the store
    failed: list[str] = field(default_factory=list)


def trial_overrides(base: dict[str, Any], point: dict[str, Any], epochs: int, full: int, warmup: int) -> dict:
    """A trial's overrides: the base, the point, selection=trial and, on a shorter rung, its epochs with the
    warm-up scaled alike."""
    over = {**base, **point, "selection": "trial"}
    if epochs != full:
        over.update(epochs=epochs, warmup_epochs=min(epochs - 1, round(warmup * epochs / full)) if warmup else 0)
    return over


def choose(trials: list[Trial], keys: tuple[str, ...]) -> Trial:
    """The best finished trial of the last rung trained: highest score; ties, the smaller lr (VPT
    tune_vtab.py:63-71), then the earlier point."""
    ok = [t for t in trials if t.status == "ok" and t.score is not None]
    if not ok:
        raise PETLBenchError("search: no trial finished (see the failed trials' records for why)")
    last = max(t.rung for t in ok)
    pool = [t for t in ok if t.rung == last]
    order = {id(t): i for i, t in enumerate(pool)}
    return max(pool, key=lambda t: (t.score, -float(t.point["lr"]) if "lr" in keys else 0.0, -order[id(t)]))


class _NotInStore(Exception):
    """A run the store does not hold (a dry search: `finished`)."""


def _store_answer(task: str, method: str, over: dict[str, Any], data_root: str, store_root: str, *_) -> tuple[str, str]:
    """`sweep.run_one`'s answer for a run the store holds, without running it; _NotInStore for one it lacks."""
    from .spec import resolve
    from .store import ResultStore

    spec = resolve(task, method, over)
    rec = ResultStore(store_root).get(spec.task.benchmark, spec.config_hash)
    if rec is None:
        raise _NotInStore(spec.config_hash)
    return ("done" if rec.get("status") == "ok" else "failed_before"), rec.get("reason", "")


def finished(task: str, method: str, overrides: dict[str, Any], space: SearchSpace, store_root: str) -> bool:
    """Whether the store holds the whole search (every trial it needs and its final run), without running any."""
    try:
        run_search(task, method, overrides, space, "", store_root, "", dry=True)
    except (_NotInStore, PETLBenchError):
        return False
    return True


def run_search(task: str, method: str, overrides: dict[str, Any], space: SearchSpace, data_root: str,
               store_root: str, out_dir: str, *, retry_failed: bool = False,
               say: Callable[[str], None] | None = None, dry: bool = False) -> SearchOutcome:
    """Run (or finish) the search of `space` for `task` x `method` on top of `overrides`: its trials, the choice
    and the final run; every finished run is taken from the store. Raises ConfigError for a search the task's
    protocol cannot run (no selection field, an unknown key) before anything trains. `dry`: run nothing, raise
    _NotInStore at the first run the store lacks."""
    from . import distributed
    from .spec import resolve
    from .store import ResultStore
    from .sweep import run_one

    run = _store_answer if dry else run_one
    say = say or (lambda line: None)
    base = resolve(task, method, overrides)
    if not hasattr(base.protocol, "selection"):
        raise ConfigError(f"search: task {task!r} has no selection rule to search with (its protocol has no "
                          "selection field)")
    for key in ("selection", "tuned", "epochs", "seed"):
        if key in space.keys:
            raise ConfigError(f"search: {key!r} cannot be searched (the search sets it or indexes runs by it)")
    full, warmup = base.protocol.epochs, getattr(base.protocol, "warmup_epochs", 0)
    for point in space.points():  # every trial and the final run resolve: bad keys fail before any run
        resolve(task, method, trial_overrides(overrides, point, full, full, warmup))
    store = ResultStore(store_root)
    outcome = SearchOutcome([], {}, {})
    points = space.points()
    for r, (count, epochs) in enumerate(space.rungs(full)):
        if r:  # the survivors of the rung before
            done = sorted((t for t in outcome.trials if t.rung == r - 1 and t.score is not None),
                          key=lambda t: -t.score)
            points = [t.point for t in done[:count]]
        for point in points:
            trial = Trial(point, r, epochs, trial_overrides(overrides, point, epochs, full, warmup))
            spec = resolve(task, method, trial.overrides)
            trial.config_hash = spec.config_hash
            status, reason = run(task, method, trial.overrides, data_root, store_root, out_dir, retry_failed)
            outcome.ran += status == "ran"
            rec = store.get(spec.task.benchmark, spec.config_hash) or {}
            trial.status = rec.get("status", status)
            trial.score = rec.get("value") if trial.status == "ok" else None
            if trial.status != "ok":
                outcome.failed.append(f"{task} {method} {point}: {reason or rec.get('reason', status)}")
            say(f"trial {_point_text(point)} ({epochs} epochs): "
                + (f"val {trial.score:.2f}" if trial.score is not None else trial.status))
            outcome.trials.append(trial)
    best = choose(outcome.trials, space.keys)
    outcome.chosen = dict(best.point)
    final_over = {**overrides, **best.point, "selection": "final", "tuned": space.describe()}
    spec = resolve(task, method, final_over)
    status, reason = run(task, method, final_over, data_root, store_root, out_dir, retry_failed)
    outcome.ran += status == "ran"
    rec = store.get(spec.task.benchmark, spec.config_hash)
    if rec is None or rec.get("status") != "ok":
        again = " (recorded by an earlier attempt; --retry-failed reruns it)" if status == "failed_before" else ""
        raise PETLBenchError(f"search {task} {method}: the final run with {_point_text(best.point)} failed"
                             f"{again}: {reason or (rec or {}).get('reason', status)}")
    summary = {"space": space.describe(), "keys": list(space.keys), "strategy": space.strategy,
               "rule": "last-evaluation val top-1; ties: smaller lr, then grid order",
               "trained_on": base.protocol.clean_train_split, "selected_on": base.protocol.val_split,
               "rungs": [{"points": c, "epochs": e} for c, e in space.rungs(full)],
               "trials": [t.row() for t in outcome.trials], "chosen": outcome.chosen,
               "chosen_val_top1": best.score}
    if rec.get("search") != summary:  # (again after a kill between the final record and this line)
        if dry:
            raise _NotInStore(rec["config_hash"])
        rec["search"] = summary
        if distributed.is_main():  # every process of a multi-process job ran the search; one writes
            store.append(rec)
    outcome.final = rec
    say(f"chose {_point_text(best.point)} (val {best.score:.2f}); test top-1 {rec['value']:.2f}")
    return outcome


def _point_text(point: dict[str, Any]) -> str:
    return " ".join(f"{k}={_text(v)}" for k, v in point.items())


def search_one(task: str, method: str, overrides: dict[str, Any], space: SearchSpace, data_root: str,
               store_root: str, out_dir: str, retry_failed: bool = False) -> tuple[str, str]:
    """One search, as a job of a sweep (top-level and picklable, like sweep.run_one): (status, reason)."""
    try:
        out = run_search(task, method, overrides, space, data_root, store_root, out_dir, retry_failed=retry_failed)
    except PETLBenchError as e:
        return "failed", f"{type(e).__name__}: {e}"
    return ("ran" if out.ran else "done"), ""
