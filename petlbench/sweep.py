"""Sweeps: a YAML file expands to runs (tasks x methods x seeds, x a benchmark's own axes, x searched options), and
every run whose finished record is already in the store is skipped, so a sweep killed at any moment (kill -9
included) is finished by starting it again: records are written atomically under their config hash (never
duplicated, never half-written), and a run cut short resumes from its last evaluation.

    # tasks/sweeps/vtab1k.yaml (shipped: `petlbench sweep vtab1k`)
    tasks: [vtab/*]                      # fnmatch patterns over `petlbench tasks`
    methods: [repadapter, lora, {name: vpt, deep: false}]   # a mapping sets method options
    seeds: [42]
    search: {scale: [0.1, 0.5, 1, 5, 10]}   # every value, for the methods that have the option
    tune: {lr: [0.001, 0.01], weight_decay: [0, 0.0001], strategy: grid}   # each run becomes a search
                                         # (search.py): trials on val, the choice retrained, test once
    overrides: {epochs: 100}             # protocol / execution keys, as `petlbench run KEY=VALUE`
    shots: [1, 2, 4, 8, 16]              # an axis of the few-shot benchmark (`Benchmark.sweep_axes`): its
                                         # tasks only, the k-shot list of split seed = seed

A failed run (an exception, a non-finite loss, bad data: a list line, a label out of range, an empty list) is
recorded with status "failed" and its reason; the sweep goes on, its summary counts failures by reason, and the
command exits non-zero. Tasks whose data is absent (no dataset folder, no list file) are skipped with one line
each. A run being trained by another process (a second sweep on the same store) is skipped: each run holds a
lock file, `<store>/<benchmark>/.<config hash>.lock`, created with O_CREAT | O_EXCL and holding the owner's pid
and host; a lock whose owner is dead (same host), or that its owner stopped refreshing, is taken over.
Scale-out is submitit's: `executor="local"` (processes on this machine), `"slurm"` (a job array, one job per run)
or `"debug"` (submitit's debug executor: every job in this process, one after another, for a debugger). A job
of `gpus` N > 1 starts N processes (SLURM tasks), which join one DistributedDataParallel run
(`distributed.from_submitit_job`); rank 0 takes the run's lock and writes its files. A job that SLURM preempts,
or whose time limit comes, is requeued by submitit (`SweepJob.checkpoint`) and continues from the run's resume
state (resume.py: the last evaluation). Account, partition, QoS, constraint, memory and any other sbatch option
pass through to sbatch (`executor_parameters`). No scheduler is written here; `torchrun ... -m petlbench.cli run`
is the other way to train one run on several GPUs.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .atomic import clean_stale_temps_under, host_name, pid_alive
from .errors import ConfigError, PETLBenchError
from .registry import did_you_mean
from .store import ResultStore

log = logging.getLogger(__name__)

BASE_KEYS = {"name", "tasks", "methods", "seeds", "search", "overrides", "tune"}


def sweep_axes() -> dict[str, list[str]]:
    """Axis name -> the benchmarks that declare it (`Benchmark.sweep_axes`): sweep keys beyond BASE_KEYS."""
    from .benchmark import BENCHMARKS

    out: dict[str, list[str]] = {}
    for name in BENCHMARKS.names():
        for axis in BENCHMARKS.get(name).sweep_axes:
            out.setdefault(axis, []).append(name)
    return out


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
    busy: list[str] = field(default_factory=list)  # runs another process holds the lock of (skipped)
    submitted: list[str] = field(default_factory=list)  # job ids (submitit)

    def lines(self) -> list[str]:
        out = [f"{self.planned} runs planned: {self.already_done} already in the store, {self.ran} ran now, "
               f"{len(self.failed)} failed now, {self.failed_before} failed earlier (recorded; --retry-failed "
               f"reruns them), {sum(1 for _ in self.absent)} tasks skipped for absent data"
               + (f", {len(self.busy)} running in another process (skipped)" if self.busy else "")]
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


def shipped_sweeps() -> dict[str, str]:
    """The sweep files petlbench ships (tasks/sweeps/*.yaml, package data of petlbench.tasks), name -> path."""
    from importlib.resources import files

    folder = files("petlbench.tasks") / "sweeps"
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    return {n[:-len(".yaml")]: str(folder / n) for n in names if n.endswith(".yaml")}


def sweep_path(name: str) -> str:
    """`name` when it is a file or a path; otherwise the shipped sweep of that name (`vtab1k` or `vtab1k.yaml`).
    ConfigError naming the shipped sweeps for a bare name that is neither."""
    if os.path.isfile(name) or os.path.dirname(name):
        return name
    shipped = shipped_sweeps()
    stem = name[:-len(".yaml")] if name.endswith(".yaml") else name
    if stem in shipped:
        return shipped[stem]
    raise ConfigError(f"sweep file {name}: no such file, nor a shipped sweep (shipped: {', '.join(shipped)})"
                      f"{did_you_mean(stem, shipped)}")


def load_sweep(path: str) -> dict[str, Any]:
    """Read and check a sweep file (a path, or the name of a shipped sweep: `sweep_path`); errors name the file
    and the key."""
    import yaml

    path = sweep_path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        text = raw.decode("utf-8-sig")
        spec = yaml.safe_load(text)
    except OSError as e:
        raise ConfigError(f"sweep file {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"sweep file {path} line {line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save the "
                          "file as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"sweep file {path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    axes = sweep_axes()
    keys = sorted(BASE_KEYS | set(axes))
    if not isinstance(spec, dict):
        raise ConfigError(f"sweep file {path}: expected a mapping with keys {', '.join(keys)}")
    for key in spec:
        if key not in keys:
            raise ConfigError(f"sweep file {path}: unknown key {key!r}; accepted: {', '.join(keys)}"
                              f"{did_you_mean(key, keys)}")
    for key in ("tasks", "methods"):
        if not isinstance(spec.get(key), list) or not spec[key]:
            raise ConfigError(f"sweep file {path}: {key!r} must be a non-empty list")
    for key in ("search", "overrides", "tune"):
        if not isinstance(spec.get(key, {}), dict):
            raise ConfigError(f"sweep file {path}: {key!r} must be a mapping")
    for key in ("seeds", *axes):
        if key in spec and spec[key] is not None:
            spec[key] = _integers(spec[key], key, path)
    return spec


def _integers(value: Any, key: str, path: str) -> list[int]:
    """A sweep's list of integers (a single integer is a list of one); ConfigError naming the file and key."""
    values = value if isinstance(value, list) else [value]
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int):
            where = f"{key}[{i}]" if isinstance(value, list) else key
            raise ConfigError(f"sweep file {path}: {where!r} must be an integer, got {v!r} (write {key}: [0, 1, 2])")
    if not values:
        raise ConfigError(f"sweep file {path}: {key!r} is an empty list (leave it out instead)")
    return values


def expand(spec: dict[str, Any], path: str = "<sweep>") -> list[PlannedRun]:
    """Every run of a sweep, each checked by `run.resolve` (unknown names and keys fail here, before any run)."""
    from .benchmark import of as benchmark_of
    from .method import METHODS
    from .spec import resolve
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
    seeds = spec.get("seeds") if spec.get("seeds") is not None else [None]
    search = {k: (v if isinstance(v, list) else [v]) for k, v in (spec.get("search") or {}).items()}
    overrides = dict(spec.get("overrides") or {})
    anywhere = _method_keys_anywhere()
    runs: list[PlannedRun] = []
    for task in tasks:
        # the task's benchmark's own axes that the file sets (few-shot: shots), as lists of override sets
        own = benchmark_of(TASKS.get(task)).sweep_axes
        axes = [(own[k], spec[k]) for k in own if spec.get(k) is not None]
        for (method, opts), seed in itertools.product(methods, seeds):
            fields = {f.name for f in dataclasses.fields(METHODS.get(method).config_cls)}
            keys = [k for k in search if k in fields or k not in anywhere]
            for points, values in itertools.product(itertools.product(*(vals for _, vals in axes)),
                                                    itertools.product(*(search[k] for k in keys))):
                over = {**overrides, **opts, **dict(zip(keys, values))}
                explicit = set(over)  # what the file sets itself wins over an axis's values (CoOp's epochs)
                if seed is not None:
                    over["seed"] = seed
                for (axis, _), point in zip(axes, points):
                    over.update({k: v for k, v in axis(point, seed, TASKS.get(task)).items() if k not in explicit})
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


# A DataError saying the data is not there at all: a folder or a split's list file (the task is skipped as absent).
# Any other one (a bad line, a label out of range, an empty list, an image a list names but lacks) fails the runs
# that read it, recorded with the reason. One that names a line ("list.txt:12: ...") is about a file that is there.
_ABSENT = re.compile(r"does not exist|\bnot found\b|\bno such file\b|\bno [\w ]*?(?:folder|list file|split files)\b"
                     r"|\bnor\b.*\bexists\b")
_AT_LINE = re.compile(r":\d+: ")


def is_absence(message: str) -> bool:
    """Whether a DataError's message says that a task's data is absent (rather than unusable)."""
    first = message.splitlines()[0] if message else ""
    return bool(_ABSENT.search(first)) and not _AT_LINE.search(first)


def data_absent(task_name: str, data_root: str | None) -> str | None:
    """Why a task's data is absent (no data root, no dataset folder, no training list), or None when it is there.
    Data that is there but unusable is not absent: its runs are run and fail with the reason, recorded."""
    from .data import DataError
    from .task import TASKS

    task = TASKS.get(task_name)
    if data_root is None:
        return "no --data-root given"
    try:
        task.samples(data_root, task.protocol.train_split)
    except DataError as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        return reason if is_absence(reason) else None
    return None


# --- per-run locks ----------------------------------------------------------------------------------------------
LOCK_REFRESH_S = 60.0  # the owner touches its lock this often
LOCK_STALE_S = 15 * 60.0  # a lock not touched for this long is stale, on any host


class RunLock:
    """A per-run lock file (O_CREAT | O_EXCL) holding "<pid> <host>", refreshed by a daemon thread while held.
    `acquire()` is False when a live process holds it; a lock whose owner died (its pid is gone, same host) or
    that has not been refreshed for LOCK_STALE_S (a dead owner on another host) is taken over."""

    def __init__(self, path: str):
        self.path = path
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> str:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                return f.read().strip()
        except OSError:
            return ""

    def _stale(self, content: str) -> bool:
        try:
            age = time.time() - os.stat(self.path).st_mtime
        except OSError:
            return False  # gone meanwhile: the next O_EXCL attempt decides
        if age > LOCK_STALE_S:
            return True
        pid, _, host = content.partition(" ")
        if not pid.isdigit():
            return age > 60  # a lock still being written holds its content within microseconds
        return host == host_name() and not pid_alive(int(pid))

    def acquire(self) -> bool:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                content = self.holder()
                if not self._stale(content) or self.holder() != content:
                    return False
                log.info("taking over the stale lock %s (%s)", self.path, content or "empty")
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(f"{os.getpid()} {host_name()}\n")
            self._thread = threading.Thread(target=self._refresh, name="petlbench-run-lock", daemon=True)
            self._thread.start()
            return True
        return False

    def _refresh(self) -> None:
        while not self._stop.wait(LOCK_REFRESH_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        mine = f"{os.getpid()} {host_name()}"
        if self.holder() == mine:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def lock_path(store_root: str, benchmark: str, chash: str) -> str:
    """The lock file of a run: beside its record, hidden (the store reads only *.json)."""
    return os.path.join(store_root, benchmark, f".{chash}.lock")


def run_one(task: str, method: str, overrides: dict[str, Any], data_root: str, store_root: str, out_dir: str,
            retry_failed: bool = False) -> tuple[str, str]:
    """Run one planned run unless the store has it or another process holds its lock; record any failure.
    Returns (status, reason): status "ran", "failed", "done", "failed_before" or "busy". Top-level and
    picklable: submitit calls it in a job (`SweepJob`). Called by every process of a multi-process job (torchrun's
    variables set), it joins their process group first; rank 0 alone takes the lock and reads the store, and
    every rank follows its decision."""
    from . import distributed
    from .engine import resolve_device
    from .run import execute, record_failure, resolve

    store = ResultStore(store_root)
    spec = resolve(task, method, overrides)
    if distributed.launched():  # one group before deciding, so that no rank trains alone or waits for none
        distributed.setup(resolve_device(spec.execution.device))
    lock: RunLock | None = None
    verdict, done = None, None
    if distributed.is_main():
        lock = RunLock(lock_path(store_root, spec.task.benchmark, spec.config_hash))
        try:
            if not lock.acquire():
                verdict, lock = ("busy", f"locked by {lock.holder() or 'another process'} ({lock.path})"), None
        except OSError:  # a store that cannot hold a lock cannot hold the record: execute says why, in one line
            lock = None
        if verdict is None:
            done = store.get(spec.task.benchmark, spec.config_hash)  # read under the lock: finished meanwhile?
            if done is not None and done.get("status") != "ok" and not retry_failed:
                verdict = ("failed_before", done.get("reason", ""))
    verdict, done = distributed.broadcast_object((verdict, done))
    try:
        if verdict is not None:
            return verdict
        try:  # execute returns a finished record only if it was made on this data; on other data it reruns
            if execute(spec, data_root, store, out_dir) == done:
                return "done", ""
        except Exception as e:  # the sweep goes on; the reason is in the store
            reason = f"{type(e).__name__}: {e}"
            rec = store.get(spec.task.benchmark, spec.config_hash)
            if rec is None or rec.get("status") != "failed" or rec == done:  # (done: an earlier failure)
                record_failure(spec, store, e)  # failed before training started: record it here
            return "failed", reason
        return "ran", ""
    finally:
        if lock is not None:
            lock.release()


def _same_data(r: PlannedRun, store: ResultStore, data_root: str | None, cache: dict) -> bool:
    """Whether the store's finished record of `r` was made on the data now at `data_root`; True when there is
    no data to compare with (absent data never reruns a finished run)."""
    from .data import DataError
    from .run import finished_record, resolve

    if data_root is None:
        return True
    spec = resolve(r.task, r.method, r.overrides)
    key = (r.task, spec.data_splits())
    if key not in cache:
        try:
            cache[key] = spec.data_identity(data_root)
        except DataError:
            cache[key] = None
    return cache[key] is None or finished_record(spec, store, data=cache[key]) is not None


def run_sweep(path: str, data_root: str | None, store_root: str, out_dir: str, *, retry_failed: bool = False,
              executor: str = "inline", executor_options: dict[str, Any] | None = None,
              progress: Callable[[str, int, int], None] | None = None,
              on_line: Callable[[str], None] | None = None, extra: dict[str, Any] | None = None) -> SweepSummary:
    """Expand `path` and run what the store lacks. executor: "inline" (this process, one run after another),
    "local" (submitit processes on this machine), "slurm" (a submitit job array; returns after submitting
    unless executor_options["wait"]), "debug" (submitit's debug executor: the jobs in this process).
    executor_options: see `executor_parameters`, plus "folder" (submitit's logs) and "wait"."""
    say = on_line or (lambda line: None)
    sweep = load_sweep(path)
    if extra:  # `petlbench sweep --set KEY=VALUE`: on top of the file's overrides (e.g. a checkpoint path)
        sweep["overrides"] = {**(sweep.get("overrides") or {}), **extra}
    runs = expand(sweep, path)
    space = None
    if sweep.get("tune"):
        from .search import SearchSpace

        space = SearchSpace.from_mapping(sweep["tune"], f"sweep file {path}: tune")
    summary = SweepSummary(planned=len(runs))
    store = ResultStore(store_root)
    for folder in (store_root, out_dir):  # temporary files of writers killed earlier (kill -9, a lost node)
        for leftover in clean_stale_temps_under(folder):
            log.info("removed the stale temporary file %s", leftover)
    if space is not None:
        return _run_searches(runs, space, summary, data_root, store_root, out_dir, retry_failed, executor,
                             executor_options or {}, progress, say)
    pending = _pending_runs(runs, store, data_root, retry_failed, summary, say)
    for benchmark in sorted({r.benchmark for r in pending}):  # a read-only or full store: one line, now
        store.check_writable(benchmark)
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


def _run_searches(runs: list[PlannedRun], space, summary: SweepSummary, data_root: str | None, store_root: str,
                  out_dir: str, retry_failed: bool, executor: str, opts: dict[str, Any],
                  progress: Callable[[str, int, int], None] | None, say: Callable[[str], None]) -> SweepSummary:
    """A sweep with `tune:`: each planned run is the base of one search (search.run_search), run here one after
    another, or one job per search (its trials inline in the job) with submitit."""
    from .search import finished, search_one

    absent: dict[str, str | None] = {}
    pending = []
    for r in runs:
        if finished(r.task, r.method, r.overrides, space, store_root):
            summary.already_done += 1
            log.info("%s: its search is already in the store, skipped", r.describe())
        elif _data_present(r.task, data_root, absent, summary, say):
            pending.append(r)
    if executor != "inline":
        return _submit(pending, summary, data_root, store_root, out_dir, retry_failed, executor, opts, say,
                       job=search_one, extra=(space,))
    for i, r in enumerate(pending):
        if progress:
            progress("searches", i, len(pending))
        status, reason = search_one(r.task, r.method, r.overrides, space, data_root, store_root, out_dir,
                                    retry_failed)
        _count(summary, r, status, reason, say)
    if progress:
        progress("searches", len(pending), len(pending))
    return summary


def _pending_runs(runs: list[PlannedRun], store: ResultStore, data_root: str | None, retry_failed: bool,
                  summary: SweepSummary, say: Callable[[str], None]) -> list[PlannedRun]:
    """The runs of `runs` to run now: not finished in the store on the same data, not failed before (unless
    `retry_failed`), and with their task's data present. Counts the others in `summary`."""
    absent: dict[str, str | None] = {}
    pending: list[PlannedRun] = []
    data: dict[tuple, Any] = {}  # (task, splits) -> the data identity at data_root (each list read once)
    for r in runs:
        done = store.get(r.benchmark, r.config_hash)
        if done is not None and done.get("status") == "ok":
            if _same_data(r, store, data_root, data):
                summary.already_done += 1
                log.info("%s: already in the store (hash %s), skipped", r.describe(), r.config_hash)
                continue
        elif done is not None and not retry_failed:
            summary.failed_before += 1
            continue
        if _data_present(r.task, data_root, absent, summary, say):
            pending.append(r)
    return pending


def _data_present(task: str, data_root: str | None, absent: dict[str, str | None], summary: SweepSummary,
                  say: Callable[[str], None]) -> bool:
    """Whether `task`'s data is at `data_root` (asked once per task, `absent` remembering); an absent task is
    counted in `summary` and said once."""
    if task not in absent:
        absent[task] = data_absent(task, data_root)
        if absent[task]:
            summary.absent.append((task, absent[task]))
            say(f"skipping {task}: data absent ({absent[task]})")
    return not absent[task]


def _count(summary: SweepSummary, r: PlannedRun, status: str, reason: str, say: Callable[[str], None]) -> None:
    if status == "ran":
        summary.ran += 1
    elif status == "failed":
        summary.failed.append((r.describe(), reason))
        say(f"failed: {r.describe()}: {reason.splitlines()[0]}")
    elif status == "done":
        summary.already_done += 1  # finished by another process meanwhile
    elif status == "busy":
        summary.busy.append(r.describe())
        say(f"skipping {r.describe()}: running in another process ({reason})")
    else:
        summary.failed_before += 1


EXECUTORS = ("inline", "local", "slurm", "debug")
# opts key -> submitit's AutoExecutor parameter, passed as given to sbatch (`--account=...`); submitit names them
# after sbatch's options (submitit/slurm/slurm.py, _make_sbatch_string's arguments)
SLURM_OPTIONS = {"partition": "slurm_partition", "account": "slurm_account", "qos": "slurm_qos",
                 "constraint": "slurm_constraint", "mem": "slurm_mem"}


def sbatch_options(items: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """`--sbatch KEY=VALUE` items (repeatable; a bare KEY is a flag, `--sbatch exclusive` -> `#SBATCH --exclusive`)
    as submitit's `slurm_additional_parameters`, which it writes as `#SBATCH --KEY=VALUE` after its own, so that
    one given here wins. A mapping is taken as it is. ConfigError for an item without a key."""
    if isinstance(items, dict):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items or ():
        key, eq, value = str(item).partition("=")
        key = key.strip().lstrip("-")
        if not key:
            raise ConfigError(f"--sbatch {item!r}: expected KEY=VALUE (an sbatch option without its dashes, e.g. "
                              "--sbatch mail-type=END) or KEY for a flag (--sbatch exclusive)")
        out[key] = value if eq else True
    return out


def executor_parameters(executor: str, opts: dict[str, Any]) -> dict[str, Any]:
    """submitit AutoExecutor parameters for a sweep's jobs from the CLI's options (`opts`: gpus, cpus, parallel,
    timeout_min, and for SLURM partition, account, qos, constraint, mem, sbatch). A job of `gpus` N starts N
    processes (tasks) with N GPUs on one node, `cpus` CPUs each (SLURM: 1 GPU and 8 CPUs by default; local: no
    GPU, 1 CPU, one process unless gpus > 1). The SLURM-only options are left out for the other executors."""
    gpus = int(opts.get("gpus", 1 if executor == "slurm" else 0))
    if gpus < 0:
        raise ConfigError(f"--gpus {gpus}: expected 0 or more GPUs per job")
    params: dict[str, Any] = {"timeout_min": int(opts.get("timeout_min", 24 * 60)),
                              "gpus_per_node": gpus, "tasks_per_node": max(gpus, 1),
                              "cpus_per_task": int(opts.get("cpus", 8 if executor == "slurm" else 1)),
                              "slurm_array_parallelism": int(opts.get("parallel", 16))}
    if executor == "slurm":
        params["nodes"] = 1
        params.update({name: opts[key] for key, name in SLURM_OPTIONS.items() if opts.get(key)})
        extra = sbatch_options(opts.get("sbatch"))
        if extra:
            params["slurm_additional_parameters"] = extra
    return params


class SweepJob:
    """The callable of one submitit job: `job(*args)` is `fn(*args)` (run_one, or search.search_one) in every
    process of the job, after `distributed.from_submitit_job` has given a job of several tasks torchrun's
    variables. Requeue-able: submitit calls `checkpoint(*args)` on rank 0 when SLURM signals a preemption or the
    coming time limit (it requeues a callable that has a `checkpoint` method: submitit/core/job_environment.py
    SignalHandler.checkpoint_and_try_requeue), and runs what it returns once the job starts again. Nothing needs
    carrying: the run's resume state (resume.py, written after every evaluation) is the checkpoint, so the same
    call continues the run from its last evaluation. The lock is released on the way out (submitit exits the job
    with SystemExit after requeueing, and run_one releases the lock in a `finally`)."""

    def __init__(self, fn: Callable[..., tuple[str, str]]):
        self.fn = fn

    def __call__(self, *args: Any) -> tuple[str, str]:
        from . import distributed

        distributed.from_submitit_job()
        return self.fn(*args)

    def checkpoint(self, *args: Any):
        """The same call, as a submitit DelayedSubmission to run when the job is requeued."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(SweepJob(self.fn), *args)

    def __repr__(self) -> str:
        return f"SweepJob({getattr(self.fn, '__qualname__', self.fn)})"


def _submit(pending: list[PlannedRun], summary: SweepSummary, data_root: str | None, store_root: str, out_dir: str,
            retry_failed: bool, executor: str, opts: dict[str, Any], say: Callable[[str], None],
            job: Callable = run_one, extra: tuple = ()) -> SweepSummary:
    """Run `pending` as a submitit job array: one job per run (`job`: run_one, or search.search_one with the
    space in `extra`), with the parameters of `executor_parameters`."""
    if executor not in EXECUTORS:
        raise ConfigError(f"executor {executor!r}: expected one of {', '.join(EXECUTORS)}"
                          f"{did_you_mean(executor, EXECUTORS)}")
    try:
        import submitit
    except ImportError:
        raise PETLBenchError(f"--executor {executor} needs submitit: pip install submitit "
                             "(or pip install -e '.[slurm]')") from None
    params = executor_parameters(executor, opts)  # bad options fail before anything is submitted
    if not pending:
        return summary
    folder = opts.get("folder") or os.path.join(out_dir, "submitit", "%j")
    ex = submitit.AutoExecutor(folder=folder, cluster=executor)
    ex.update_parameters(**params)
    args = [(r.task, r.method, r.overrides, *extra, data_root, store_root, out_dir, retry_failed) for r in pending]
    jobs = ex.map_array(SweepJob(job), *zip(*args))
    summary.submitted = [str(j.job_id) for j in jobs]
    say(f"submitted {len(jobs)} jobs ({executor}, {params['tasks_per_node']} process"
        f"{'es' if params['tasks_per_node'] > 1 else ''} each); logs under {folder.replace('%j', '<job id>')}")
    if executor == "slurm" and not opts.get("wait"):
        return summary
    for r, job in zip(pending, jobs):
        try:
            status, reason = job.results()[0]  # rank 0's; every rank returns the same (run_one broadcasts)
        except Exception as e:  # the job itself died (killed, out of memory): not recorded by run_one
            status, reason = "failed", f"job {job.job_id}: {type(e).__name__}: {str(e).splitlines()[-1][:300]}"
        _count(summary, r, status, reason, say)
    return summary
