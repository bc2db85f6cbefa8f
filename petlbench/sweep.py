"""Sweeps: a YAML file expands to runs (tasks x methods x seeds, x shots for few-shot, x searched options), and
every run whose finished record is already in the store is skipped, so a sweep killed at any moment (kill -9
included) is finished by starting it again: records are written atomically under their config hash (never
duplicated, never half-written), and a run cut short resumes from its last evaluation.

    # scripts/sweeps/vtab1k.yaml
    tasks: [vtab/*]                      # fnmatch patterns over `petlbench tasks`
    methods: [repadapter, lora, {name: vpt, deep: false}]   # a mapping sets method options
    seeds: [42]
    search: {scale: [0.1, 0.5, 1, 5, 10]}   # every value, for the methods that have the option
    overrides: {epochs: 100}             # protocol / execution keys, as `petlbench run KEY=VALUE`
    shots: [1, 2, 4, 8, 16]              # few-shot tasks only: NOAH's k-shot list of split seed = seed

A failed run (an exception, a non-finite loss) is recorded with status "failed" and its reason; the sweep goes
on, and its summary counts failures by reason. Tasks whose data is absent are skipped with one line each.
Scale-out is submitit's: `executor="local"` (processes on this machine) or `"slurm"` (a job array, one GPU per
run); multi-GPU single runs are `torchrun ... -m petlbench.cli run` (see README). No scheduler is written here.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import ConfigError, PETLBenchError
from .registry import did_you_mean
from .store import ResultStore

log = logging.getLogger(__name__)

SWEEP_KEYS = {"name", "tasks", "methods", "seeds", "shots", "search", "overrides"}


@dataclass
class PlannedRun:
    task: str
    method: str
    overrides: dict[str, Any]
    benchmark: str = ""  # the resolved run's, for finding its record without resolving it again
    config_hash: str = ""

    def describe(self) -> str:
        opts = " ".join(f"{k}={v}" for k, v in sorted(self.overrides.items()) if k not in ("train_split",
                                                                                             "clean_train_split"))
        return f"{self.task} {self.method} {opts}".strip()


@dataclass
class SweepSummary:
    planned: int = 0
    already_done: int = 0
    failed_before: int = 0  # failed records already in the store (rerun with retry_failed)
    ran: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (run, reason)
    absent: list[tuple[str, str]] = field(default_factory=list)  # (task, reason): data not there
    submitted: list[str] = field(default_factory=list)  # job ids (submitit)

    def lines(self) -> list[str]:
        out = [f"{self.planned} runs planned: {self.already_done} already in the store, {self.ran} ran now, "
               f"{len(self.failed)} failed now, {self.failed_before} failed earlier (recorded; --retry-failed "
               f"reruns them), {sum(1 for _ in self.absent)} tasks skipped for absent data"]
        by_kind: dict[str, list[tuple[str, str]]] = {}  # exception type -> (run, reason)
        for run, reason in self.failed:
            by_kind.setdefault(reason.split(":", 1)[0], []).append((run, reason.splitlines()[0][:200]))
        for kind, items in by_kind.items():
            runs = "; ".join(r for r, _ in items[:3]) + (" ..." if len(items) > 3 else "")
            out.append(f"failed ({len(items)}): {kind}, e.g. {items[0][1]!r}  [{runs}]")
        if self.submitted:
            out.append(f"submitted {len(self.submitted)} jobs: {', '.join(self.submitted[:5])}"
                       f"{' ...' if len(self.submitted) > 5 else ''}")
        return out


def load_sweep(path: str) -> dict[str, Any]:
    """Read and check a sweep file; errors name the file and the key."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            spec = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"sweep file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"sweep file {path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"sweep file {path}: expected a mapping with keys {', '.join(sorted(SWEEP_KEYS))}")
    for key in spec:
        if key not in SWEEP_KEYS:
            raise ConfigError(f"sweep file {path}: unknown key {key!r}; accepted: {', '.join(sorted(SWEEP_KEYS))}"
                              f"{did_you_mean(key, sorted(SWEEP_KEYS))}")
    for key in ("tasks", "methods"):
        if not isinstance(spec.get(key), list) or not spec[key]:
            raise ConfigError(f"sweep file {path}: {key!r} must be a non-empty list")
    for key in ("search", "overrides"):
        if not isinstance(spec.get(key, {}), dict):
            raise ConfigError(f"sweep file {path}: {key!r} must be a mapping")
    return spec


def expand(spec: dict[str, Any], path: str = "<sweep>") -> list[PlannedRun]:
    """Every run of a sweep, each checked by `run.resolve` (unknown names and keys fail here, before any run)."""
    from .method import METHODS
    from .run import resolve
    from .task import TASKS

    names = [n for n in TASKS.names() if not TASKS.get(n).eval_only]
    tasks: list[str] = []
    for i, pattern in enumerate(spec["tasks"]):
        hits = [n for n in names if fnmatch.fnmatchcase(n, str(pattern))]
        if not hits:
            raise ConfigError(f"sweep file {path}: tasks[{i}] {pattern!r} matches no task"
                              f"{did_you_mean(str(pattern), names)}")
        tasks += [h for h in hits if h not in tasks]
    methods: list[tuple[str, dict]] = []
    for i, m in enumerate(spec["methods"]):
        if isinstance(m, dict):
            opts = dict(m)
            name = opts.pop("name", None)
            if name is None:
                raise ConfigError(f"sweep file {path}: methods[{i}] needs a 'name'")
            methods.append((str(name), opts))
        else:
            methods.append((str(m), {}))
        if methods[-1][0] not in METHODS:
            raise ConfigError(f"sweep file {path}: methods[{i}]: unknown method {methods[-1][0]!r}; known: "
                              f"{', '.join(METHODS.names())}{did_you_mean(methods[-1][0], METHODS.names())}")
    seeds = spec.get("seeds") or [None]
    shots = spec.get("shots") or [None]
    search = {k: (v if isinstance(v, list) else [v]) for k, v in (spec.get("search") or {}).items()}
    overrides = dict(spec.get("overrides") or {})
    anywhere = _method_keys_anywhere()
    runs: list[PlannedRun] = []
    for task in tasks:
        fewshot = TASKS.get(task).benchmark == "fewshot"
        for (method, opts), seed, shot in itertools.product(methods, seeds, shots if fewshot else [None]):
            fields = {f.name for f in dataclasses.fields(METHODS.get(method).config_cls)}
            keys = [k for k in search if k in fields or k not in anywhere]
            for values in itertools.product(*(search[k] for k in keys)):
                over = {**overrides, **opts, **dict(zip(keys, values))}
                if seed is not None:
                    over["seed"] = seed
                if shot is not None:
                    from .tasks.fewshot import fewshot_split

                    split = fewshot_split(int(shot), int(seed if seed is not None else 0))
                    over.update(train_split=split, clean_train_split=split)
                try:
                    resolved = resolve(task, method, over)
                except PETLBenchError as e:
                    raise ConfigError(f"sweep file {path}: {task} {method}: {e}") from None
                runs.append(PlannedRun(task, method, over, resolved.task.benchmark, resolved.config_hash))
    return runs


def _method_keys_anywhere() -> set[str]:
    """Option names of any registered method: a searched key that is one applies only to methods having it;
    any other key (a protocol field such as lr) applies to every run."""
    from .method import METHODS

    return {f.name for n in METHODS.names() for f in dataclasses.fields(METHODS.get(n).config_cls)}


def data_absent(task_name: str, data_root: str | None) -> str | None:
    """Why a task's data cannot be read (its training list), or None when it is there."""
    from .data import DataError
    from .task import TASKS

    task = TASKS.get(task_name)
    if data_root is None:
        return "no --data-root given"
    try:
        task.samples(data_root, task.protocol.train_split)
    except DataError as e:
        return str(e).splitlines()[0]
    return None


def run_one(task: str, method: str, overrides: dict[str, Any], data_root: str, store_root: str, out_dir: str,
            retry_failed: bool = False) -> tuple[str, str]:
    """Run one planned run unless the store has it; record any failure. Returns (status, reason). Top-level and
    picklable: submitit calls it in a job."""
    from .run import execute, record_failure, resolve

    store = ResultStore(store_root)
    spec = resolve(task, method, overrides)
    done = store.get(spec.task.benchmark, spec.config_hash)
    if done is not None and (done.get("status") == "ok" or not retry_failed):
        return "done" if done.get("status") == "ok" else "failed_before", done.get("reason", "")
    try:
        execute(spec, data_root, store, out_dir)
    except Exception as e:  # the sweep goes on; the reason is in the store
        reason = f"{type(e).__name__}: {e}"
        rec = store.get(spec.task.benchmark, spec.config_hash)
        if rec is None or rec.get("status") != "failed":  # failed before training started: record it here
            record_failure(spec, store, e)
        return "failed", reason
    return "ran", ""


def run_sweep(path: str, data_root: str | None, store_root: str, out_dir: str, *, retry_failed: bool = False,
              executor: str = "inline", executor_options: dict[str, Any] | None = None,
              progress: Callable[[str, int, int], None] | None = None,
              on_line: Callable[[str], None] | None = None, extra: dict[str, Any] | None = None) -> SweepSummary:
    """Expand `path` and run what the store lacks. executor: "inline" (this process, one run after another),
    "local" (submitit processes on this machine), "slurm" (a submitit job array; returns after submitting
    unless executor_options["wait"])."""
    say = on_line or (lambda line: None)
    sweep = load_sweep(path)
    if extra:  # `petlbench sweep --set KEY=VALUE`: on top of the file's overrides (e.g. a checkpoint path)
        sweep["overrides"] = {**(sweep.get("overrides") or {}), **extra}
    runs = expand(sweep, path)
    summary = SweepSummary(planned=len(runs))
    store = ResultStore(store_root)
    absent: dict[str, str | None] = {}
    pending: list[PlannedRun] = []
    for r in runs:
        done = store.get(r.benchmark, r.config_hash)
        if done is not None and done.get("status") == "ok":
            summary.already_done += 1
            continue
        if done is not None and not retry_failed:
            summary.failed_before += 1
            continue
        if r.task not in absent:
            absent[r.task] = data_absent(r.task, data_root)
            if absent[r.task]:
                summary.absent.append((r.task, absent[r.task]))
                say(f"skipping {r.task}: data absent ({absent[r.task]})")
        if not absent[r.task]:
            pending.append(r)
    if executor == "inline":
        for i, r in enumerate(pending):
            if progress:
                progress("sweep", i, len(pending))
            status, reason = run_one(r.task, r.method, r.overrides, data_root, store_root, out_dir, retry_failed)
            _count(summary, r, status, reason, say)
        if progress:
            progress("sweep", len(pending), len(pending))
        return summary
    return _submit(pending, summary, data_root, store_root, out_dir, retry_failed, executor,
                   executor_options or {}, say)


def _count(summary: SweepSummary, r: PlannedRun, status: str, reason: str, say: Callable[[str], None]) -> None:
    if status == "ran":
        summary.ran += 1
    elif status == "failed":
        summary.failed.append((r.describe(), reason))
        say(f"failed: {r.describe()}: {reason.splitlines()[0]}")
    elif status == "done":
        summary.already_done += 1  # finished by another process meanwhile
    else:
        summary.failed_before += 1


def _submit(pending: list[PlannedRun], summary: SweepSummary, data_root: str | None, store_root: str, out_dir: str,
            retry_failed: bool, executor: str, opts: dict[str, Any], say: Callable[[str], None]) -> SweepSummary:
    """Run `pending` as a submitit job array: one job per run, one GPU each on SLURM."""
    try:
        import submitit
    except ImportError:
        raise PETLBenchError("--executor local/slurm needs submitit: pip install submitit "
                             "(or pip install -e '.[slurm]')") from None
    if not pending:
        return summary
    folder = opts.get("folder") or os.path.join(out_dir, "submitit", "%j")
    ex = submitit.AutoExecutor(folder=folder, cluster="local" if executor == "local" else "slurm")
    params: dict[str, Any] = {"timeout_min": int(opts.get("timeout_min", 24 * 60)),
                              "slurm_array_parallelism": int(opts.get("parallel", 16))}
    if executor == "slurm":
        params.update(gpus_per_node=int(opts.get("gpus", 1)), cpus_per_task=int(opts.get("cpus", 8)),
                      nodes=1, tasks_per_node=1)
        if opts.get("partition"):
            params["slurm_partition"] = opts["partition"]
    else:
        params.update(gpus_per_node=int(opts.get("gpus", 0)), cpus_per_task=int(opts.get("cpus", 1)))
    ex.update_parameters(**params)
    args = [(r.task, r.method, r.overrides, data_root, store_root, out_dir, retry_failed) for r in pending]
    jobs = ex.map_array(run_one, *zip(*args))
    summary.submitted = [j.job_id for j in jobs]
    say(f"submitted {len(jobs)} jobs ({executor}); logs under {folder.replace('%j', '<job id>')}")
    if executor == "slurm" and not opts.get("wait"):
        return summary
    for r, job in zip(pending, jobs):
        try:
            status, reason = job.result()
        except Exception as e:  # the job itself died (killed, out of memory): not recorded by run_one
            status, reason = "failed", f"job {job.job_id}: {type(e).__name__}: {str(e).splitlines()[-1][:300]}"
        _count(summary, r, status, reason, say)
    return summary
