"""Checking a dataset before training on it (`petlbench check-data --task T --data-root R`).

For each split of a task: the split is read as a run reads it (malformed lines, labels outside the classes and
paths outside the dataset folder are errors naming the file and line, petlbench.data.read_list_file), its size is
compared with the size the task knows (the `split_size(task, split)` function of the module that defines the
task's loader, where it has one: VTAB-1k 800 / 200 / 1000 and the official test sizes, few-shot test sizes, ...),
its labels are checked against the task's classes, and every file it names is opened in a thread pool: an image
must decode the way training decodes it (PIL `Image.open(...).convert("RGB")`), a video must exist and not be
empty (with `decode_videos`, decord must also read its first frame). Every bad file is reported with the list
line that names it, not only the first.

Files that passed are remembered in $PETLBENCH_CACHE/check.sqlite (default ~/.cache/petlbench), keyed by path,
size and modification time, so a second check only opens files that changed. Failures are never cached.

The results are data (`SplitCheck`); the CLI prints them.
"""
from __future__ import annotations

import inspect
import logging
import os
import re
import sqlite3
import stat
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .benchmark import of as benchmark_of
from .config import cache_dir
from .data import DataError, Sample, deferred_file_checks, load_rgb
from .errors import ConfigError
from .task import Task

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class FileProblem:
    """One file that cannot be used: where it is named (list file:line, or the path), the path, and why."""

    where: str
    path: str
    reason: str


@dataclass
class SplitCheck:
    """What checking one split of one task found. `ok` when the split reads, every file opens, the labels are
    in range and the size is the expected one (where one is known)."""

    task: str
    split: str
    kind: str  # "images" or "videos"
    count: int = 0
    classes: int = 0  # distinct labels
    expected: int | None = None
    sources: list[str] = field(default_factory=list)  # the list files (or class-folder roots) read
    bad: list[FileProblem] = field(default_factory=list)
    labels_outside: list[FileProblem] = field(default_factory=list)
    error: str = ""  # the split could not be read at all

    @property
    def count_ok(self) -> bool:
        return self.expected is None or self.count == self.expected

    @property
    def ok(self) -> bool:
        return not self.error and not self.bad and not self.labels_outside and self.count_ok

    def summary(self) -> str:
        """One line, e.g. "vtab/cifar test: 10000 images, 100 classes, 0 unreadable, expected 10000: ok"."""
        head = f"{self.task} {self.split}"
        if self.error:
            return f"{head}: FAIL: {self.error}"
        expected = f"expected {self.expected}" if self.expected is not None else "expected size not known"
        problems = []
        if not self.count_ok:
            problems.append(f"{self.count} listed, not {self.expected}")
        if self.bad:
            problems.append(f"{len(self.bad)} unreadable")
        if self.labels_outside:
            problems.append(f"{len(self.labels_outside)} labels out of range")
        status = "ok" if not problems else "FAIL (" + "; ".join(problems) + ")"
        return (f"{head}: {self.count} {self.kind}, {self.classes} classes, {len(self.bad)} unreadable, "
                f"{expected}: {status}")


@dataclass
class DataCheck:
    """The checks of all splits asked for, and how many distinct files were checked now or passed from the cache."""

    splits: list[SplitCheck]
    checked: int = 0  # files checked now (stat, and opened where the kind says so)
    cached: int = 0  # files that passed an earlier check and have not changed since

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.splits)


def expected_size(task: Task, split: str) -> int | None:
    """The size of a split as the task's module knows it (its `split_size(task, split)`), or None."""
    module = inspect.getmodule(task.samples_fn)
    fn = getattr(module, "split_size", None)
    return fn(task, split) if callable(fn) else None


def tasks_of(benchmark: str) -> list[Task]:
    """Every task of a benchmark (`--benchmark vtab`); ConfigError naming the known benchmarks."""
    from .task import TASKS

    tasks = [TASKS.get(n) for n in TASKS.names() if TASKS.get(n).benchmark == benchmark]
    if not tasks:
        known = sorted({TASKS.get(n).benchmark for n in TASKS.names()})
        raise ConfigError(f"--benchmark {benchmark!r}: no such benchmark; known: {', '.join(known)}")
    return tasks


_LINE = re.compile(r"(.*):\d+")  # "<list file>:<line>"
_ENTRY = re.compile(r"(.*)\[\d+\]")  # "<json file>[<index>]"


def _sources(samples: Sequence[Sample]) -> list[str]:
    """The files the samples were read from, in order: list (or JSON) files, or the roots of class folders."""
    seen: dict[str, None] = {}
    for s in samples:
        m = _LINE.fullmatch(s.source) or _ENTRY.fullmatch(s.source)
        src = m.group(1) if m else os.path.dirname(os.path.dirname(s.path)) + os.sep + "<class>/"
        seen.setdefault(src, None)
    return list(seen)


# --- opening files ------------------------------------------------------------------------------------------
def default_cache_path() -> str:
    return cache_dir("check.sqlite")


class PassCache:
    """Files that passed a check, by (path, kind) with their size and mtime (sqlite, safe across processes).
    A cache that cannot be opened or written is skipped with a warning: it only saves time."""

    def __init__(self, path: str):
        self.path, self.db = path, None
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            self.db = sqlite3.connect(path, timeout=30)
            self.db.execute("CREATE TABLE IF NOT EXISTS passed (path TEXT, kind TEXT, size INTEGER, "
                            "mtime_ns INTEGER, PRIMARY KEY (path, kind))")
        except (OSError, sqlite3.Error) as e:
            log.warning("check cache %s not used: %s", path, e)
            self.db = None

    def passed(self, kind: str, stats: dict[str, tuple[int, int]]) -> set[str]:
        """The paths of `stats` (path -> (size, mtime_ns)) that passed before with the same size and mtime."""
        if self.db is None:
            return set()
        out, paths = set(), list(stats)
        try:
            for i in range(0, len(paths), 500):
                chunk = paths[i:i + 500]
                rows = self.db.execute(f"SELECT path, size, mtime_ns FROM passed WHERE kind = ? AND path IN "
                                       f"({','.join('?' * len(chunk))})", [kind, *chunk])
                out.update(p for p, size, mtime in rows if stats[p] == (size, mtime))
        except sqlite3.Error as e:
            log.warning("check cache %s not read: %s", self.path, e)
        return out

    def add(self, kind: str, stats: dict[str, tuple[int, int]]) -> None:
        if self.db is None or not stats:
            return
        try:
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO passed VALUES (?, ?, ?, ?)",
                                    [(p, kind, size, mtime) for p, (size, mtime) in stats.items()])
        except sqlite3.Error as e:
            log.warning("check cache %s not written: %s", self.path, e)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


def _stat(path: str) -> tuple[int, int] | str:
    """(size, mtime_ns) of a regular file, or why it is not one."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "does not exist"
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    if not stat.S_ISREG(st.st_mode):
        return "is not a file"
    if st.st_size == 0:
        return "is empty (0 bytes)"
    return st.st_size, st.st_mtime_ns


def _open_image(path: str) -> str | None:
    try:
        load_rgb(path)
    except Exception as e:  # PIL raises many types for a corrupt file
        first = (str(e).strip().splitlines() or [""])[0]
        return f"image does not decode: {type(e).__name__}" + (f": {first}" if first else "")
    return None


def _open_video(path: str) -> str | None:
    import decord

    try:
        vr = decord.VideoReader(path, num_threads=1)
        if len(vr) == 0:
            return "video has no frames"
        vr[0]
    except Exception as e:  # decord raises DECORDError / RuntimeError with a C++ trace after the first line
        return f"video does not decode: {(str(e).strip().splitlines() or [type(e).__name__])[0]}"
    return None


def _pool_map(fn, items: list, workers: int, stage: str, progress: Progress | None) -> list:
    """fn over items in a thread pool (PIL and decord release the GIL while decoding), in chunks for progress."""
    out: list = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for i in range(0, len(items), 1024):
            out.extend(pool.map(fn, items[i:i + 1024]))
            if progress:
                progress(stage, len(out), len(items))
    return out


def check_files(paths: Iterable[str], kind: str, workers: int, cache: PassCache | None,
                decode_videos: bool = False, progress: Progress | None = None) -> tuple[dict[str, str], int, int]:
    """Open every path ("image": decode; "video": exists and non-empty, and with decode_videos its first frame
    decodes). Returns (path -> reason for the bad ones, files checked now, files passed from the cache)."""
    paths = list(dict.fromkeys(paths))
    tag = "video-decoded" if kind == "video" and decode_videos else kind
    stats: dict[str, tuple[int, int]] = {}
    bad: dict[str, str] = {}
    for p, st in zip(paths, _pool_map(_stat, paths, workers, f"stat {kind}s", progress)):
        if isinstance(st, str):
            bad[p] = st
        else:
            stats[p] = st
    known = cache.passed(tag, stats) if cache is not None else set()
    todo = [p for p in stats if p not in known]
    if kind == "image":
        opener = _open_image
    elif decode_videos:
        opener = _open_video
    else:
        opener = None
    if opener is not None:
        for p, reason in zip(todo, _pool_map(opener, todo, workers, f"open {kind}s", progress)):
            if reason is not None:
                bad[p] = reason
    if cache is not None:
        cache.add(tag, {p: stats[p] for p in todo if p not in bad})
    return bad, len(todo), len(known)


# --- splits -------------------------------------------------------------------------------------------------
def _read_split(task: Task, data_root: str, split: str) -> tuple[SplitCheck, list[Sample]]:
    r = SplitCheck(task.name, split, benchmark_of(task).sample_kind,
                   expected=expected_size(task, split))
    try:
        with deferred_file_checks():  # every missing file is reported below, not only the first
            samples = task.samples(data_root, split)
    except DataError as e:
        r.error = str(e)
        return r, []
    r.count, r.classes, r.sources = len(samples), len({s.label for s in samples}), _sources(samples)
    limit = len(task.logit_subset) if task.logit_subset else task.num_classes
    r.labels_outside = [FileProblem(s.source, s.path, f"label {s.label} is outside 0..{limit - 1}")
                        for s in samples if not 0 <= s.label < limit]
    return r, samples


def check_tasks(tasks: Sequence[Task], data_root: str, splits: Sequence[str] | None = None,
                workers: int | None = None, cache_path: str | None = "", decode_videos: bool = False,
                progress: Progress | None = None) -> DataCheck:
    """Check every split of `tasks` (or only `splits`, where a task has them) under data_root, one
    `SplitCheck` per split, in order. A file shared by several splits is opened once. `cache_path`: "" for
    `default_cache_path()`, None for no cache. `workers`: threads opening files (default 2 per CPU, at most 32)."""
    workers = workers or min(32, 2 * (os.cpu_count() or 1))
    own = [t.name for t in tasks if benchmark_of(t).runner is not None]
    if own:
        raise ConfigError(f"{', '.join(own)}: check-data checks classification tasks (image and video lists); "
                          f"a task with its own runner checks its data when its run starts")
    if decode_videos and any(benchmark_of(t).sample_kind == "videos" for t in tasks):
        try:
            import decord  # noqa: F401
        except ImportError:
            raise ConfigError("--decode-videos needs decord: pip install -e '.[video]'") from None
    have = {s for t in tasks for s in t.splits}
    unknown = sorted(set(splits or ()) - have)
    if unknown:
        raise ConfigError(f"--split {','.join(unknown)}: no such split; splits: {', '.join(sorted(have))}")
    chosen = [(t, s) for t in tasks for s in t.splits if splits is None or s in splits]
    results = [_read_split(t, data_root, s) for t, s in chosen]
    out = DataCheck([r for r, _ in results])
    cache = PassCache(cache_path or default_cache_path()) if cache_path is not None else None
    try:
        for kind in ("image", "video"):
            group = [(r, s) for r, s in results if r.kind == kind + "s"]
            paths = [x.path for _, samples in group for x in samples]
            if not paths:
                continue
            bad, checked, cached = check_files(paths, kind, workers, cache, decode_videos, progress)
            out.checked, out.cached = out.checked + checked, out.cached + cached
            for r, samples in group:
                r.bad = [FileProblem(x.source, x.path, bad[x.path]) for x in samples if x.path in bad]
    finally:
        if cache is not None:
            cache.close()
    return out
