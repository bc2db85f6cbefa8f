"""ResultStore: one JSON record per run, one file per record, written atomically (temp file + rename), so a
crash or kill never leaves a half-written record and a finished record is never lost. A record's file name
is its config hash: running the same configuration again replaces, never duplicates, it.

The store reads only `<benchmark>/<config hash>.json` files whose name is the record's own config hash (and whose
folder is its benchmark): a record copied under another name or into another folder is reported by name and
skipped, so it is never counted twice nor returned for another configuration.

Tables are made from the store alone (`to_frame`), never from logs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .atomic import atomic_write_text
from .errors import PETLBenchError

log = logging.getLogger(__name__)


class StoreError(PETLBenchError):
    """A result store or output folder that cannot be written (read-only, full, not a folder)."""


def config_hash(config: dict[str, Any]) -> str:
    """A stable 16-hex-digit hash of a JSON-able config (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def data_identity(data_root: str, splits: dict[str, Iterable[Any]]) -> dict[str, Any]:
    """What a run read, for its record and for telling whether a stored record was made on the same data:
    {"root": the data folder (absolute, symlinks resolved), "splits": {split: {"n": samples, "sha256": ...,
    "sources": list files (or the image folder) relative to the root}}, "digest": sha256 over the splits}.

    A split's sha256 is over one "<path relative to the root>\\t<label>\\t<file size>\\n" line per sample, in
    order (samples: anything with .path, .label and .source, e.g. data.Sample), so it works for list files and
    class folders alike. The root itself is not in the digest: the same files copied to another disk or mounted
    elsewhere are the same data; fewer or other images, other labels or re-encoded files (another size) are not.
    Image contents are not read (that would cost a pass over the data): a file rewritten in place with the same
    size goes unnoticed."""
    base = os.path.abspath(data_root)
    out: dict[str, Any] = {"root": os.path.realpath(data_root), "splits": {}}
    whole = hashlib.sha256()
    for name in sorted(splits):
        h, n, lists, folders = hashlib.sha256(), 0, set(), set()
        for s in splits[name]:
            rel = _relative(s.path, base)
            try:
                size = os.stat(s.path).st_size
            except OSError:  # absent (on_bad_image=skip records it); still part of what the split lists
                size = -1
            h.update(f"{rel}\t{s.label}\t{size}\n".encode())
            n += 1
            head, sep, tail = (s.source or "").rpartition(":")
            if sep and tail.isdigit():
                lists.add(_relative(head, base))
            else:
                folders.add(os.path.dirname(rel))
        sources = sorted(lists)
        if folders:  # class folders: their common parent, not one entry per class
            try:
                sources.append(os.path.commonpath(sorted(folders)).replace(os.sep, "/") or ".")
            except ValueError:  # absolute and relative mixed (another drive): name them all
                sources += sorted(folders)
        out["splits"][name] = {"n": n, "sha256": h.hexdigest(), "sources": sources}
        whole.update(f"{name}\t{n}\t{h.hexdigest()}\n".encode())
    out["digest"] = whole.hexdigest()
    return out


def _relative(path: str, base: str) -> str:
    try:
        rel = os.path.relpath(os.path.abspath(path), base)
    except ValueError:  # another drive (Windows): keep the path as it is
        rel = path
    return rel.replace(os.sep, "/")


def check_writable(folder: str, what: str) -> None:
    """Create `folder` if needed and write, flush and remove a probe file in it; StoreError naming the folder and
    the system's reason (read-only, no space left, a file in the way) otherwise. Called before a run trains, so
    a store that cannot take the record fails in one line at the start rather than after hours of training."""
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".tmp-probe-", dir=folder)  # readers skip .tmp-* files
        try:
            os.write(fd, b"petlbench write probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise StoreError(f"{what} {folder!r} is not writable: {e.strerror or e}") from None


@dataclass
class StoreProblems:
    """Record files that could not be read, with the reason: reported, skipped, never fatal."""

    items: list[tuple[str, str]] = field(default_factory=list)


class ResultStore:
    """Records under `root/<benchmark>/<config hash>.json`."""

    def __init__(self, root: str):
        self.root = root

    def folder(self, benchmark: str) -> str:
        """Where the records of `benchmark` live."""
        return os.path.join(self.root, benchmark)

    def path_for(self, record: dict[str, Any]) -> str:
        return os.path.join(self.root, record.get("benchmark", "misc"), f"{record['config_hash']}.json")

    def check_writable(self, benchmark: str) -> None:
        """StoreError (one line: the folder and the reason) unless a record of `benchmark` can be written now."""
        check_writable(self.folder(benchmark), "result store folder")

    def append(self, record: dict[str, Any]) -> str:
        """Write `record` (must carry `config_hash`) atomically; returns its path. StoreError naming the file
        and the reason when it cannot be written (read-only store, disk full)."""
        path = self.path_for(record)
        try:
            atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
        except OSError as e:
            raise StoreError(f"result store: cannot write {path}: {e.strerror or e}") from None
        return path

    def get(self, benchmark: str, chash: str) -> dict[str, Any] | None:
        """The record stored for `chash`, or None when there is none or its file is unreadable (logged, never
        fatal: the run is then redone and the file replaced) or holds another configuration's record."""
        path = os.path.join(self.root, benchmark, f"{chash}.json")
        if not os.path.isfile(path):
            return None
        rec, why = _read_record(path, benchmark)
        if why is not None:
            log.warning("ignoring record %s: %s", path, why)
        return rec

    def records(self, problems: StoreProblems | None = None) -> Iterator[dict[str, Any]]:
        """Every readable record at `<benchmark>/<config hash>.json`, each once; unreadable ones, and .json files
        anywhere else or under a name that is not their config hash (a copy), go to `problems` (and the log)
        with their file name."""
        if not os.path.isdir(self.root):
            return
        for dirpath, dirs, files in os.walk(self.root):
            dirs.sort()
            rel = os.path.relpath(dirpath, self.root)
            depth = 0 if rel == "." else rel.count(os.sep) + 1
            for name in sorted(files):
                if not name.endswith(".json") or name.startswith(".tmp-"):  # a write in progress
                    continue
                path = os.path.join(dirpath, name)
                if depth != 1:
                    rec, why = None, "not at <store>/<benchmark>/<config hash>.json (a copy?)"
                else:
                    rec, why = _read_record(path, rel)  # its name must be its hash: each record once
                if why is not None:
                    log.warning("skipping record %s: %s", path, why)
                    if problems is not None:
                        problems.items.append((path, why))
                    continue
                yield rec

    def to_frame(self, problems: StoreProblems | None = None):
        """All records as one pandas DataFrame (nested fields flattened with '.')."""
        import pandas as pd

        return pd.json_normalize(list(self.records(problems)))


_TEXT, _MAPPING, _NUMBER, _INT = "text", "a mapping", "a number", "an integer"
# The fields readers use (tables, the sweep, `petlbench run`), by dotted path, and the type each must have when
# present; absent or null is fine (records written earlier lack some).
_RECORD_FIELDS = {
    "task": _TEXT, "method": _TEXT, "benchmark": _TEXT, "group": _TEXT, "status": _TEXT, "reason": _TEXT,
    "metric": _TEXT, "value": _NUMBER, "seed": _INT, "variant": _MAPPING, "variant.key": _TEXT,
    "variant.diffs": _MAPPING, "method_cfg": _MAPPING, "numerics": _MAPPING, "protocol": _MAPPING,
    "protocol.selection": _TEXT, "protocol.train_split": _TEXT, "protocol.clean_train_split": _TEXT,
    "protocol.backbone": _TEXT, "protocol.weights": _TEXT, "protocol.normalize": _TEXT, "protocol.recipe": _TEXT,
    "metrics": _MAPPING, "metrics.val_top1": _NUMBER, "metrics.targets": _MAPPING, "params": _MAPPING,
    "params.trainable": _NUMBER, "params.paper": _NUMBER, "data": _MAPPING,
}


def _kind_ok(v: Any, kind: str) -> bool:
    if kind in (_NUMBER, _INT):
        return isinstance(v, int if kind == _INT else (int, float)) and not isinstance(v, bool)
    return isinstance(v, str if kind == _TEXT else dict)


def record_problem(rec: Any) -> str | None:
    """Why `rec` is not a well-formed record (a JSON value that is not an object, no config hash, a field of the
    wrong type such as "value": "abc" or "params": 5, a finished run without a value), or None."""
    if not isinstance(rec, dict):
        return f"not a petlbench record (a JSON {type(rec).__name__})"
    if not isinstance(rec.get("config_hash"), str) or not rec["config_hash"]:
        return "not a petlbench record (no config_hash)"
    for path, kind in _RECORD_FIELDS.items():
        v = rec
        for k in path.split("."):
            v = v.get(k) if isinstance(v, dict) else None
        if v is not None and not _kind_ok(v, kind):
            return f"field {path!r} should be {kind}, not {type(v).__name__} {str(v)[:40]!r}"
    if rec.get("status") == "ok" and rec.get("value") is None:
        return "a finished run (status ok) without a value"
    for name, t in ((rec.get("metrics") or {}).get("targets") or {}).items():
        if not isinstance(t, dict) or not (t.get("top1") is None or _kind_ok(t["top1"], _NUMBER)):
            return f"field 'metrics.targets.{name}' should be a mapping with a numeric top1"
    return None


def _read_record(path: str, folder: str) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None) when `path` holds a record that belongs there (file name = its config hash, `folder` = its
    benchmark); (None, why) otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 text ({e.reason} at byte {e.start})"
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}): half-written or edited?"
    except (OSError, ValueError, RecursionError) as e:
        return None, f"cannot be read: {getattr(e, 'strerror', None) or e}"
    why = record_problem(rec)
    if why is not None:
        return None, why
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem != rec["config_hash"]:
        return None, f"file name is not the record's config hash {rec['config_hash']} (a copy?)"
    benchmark = rec.get("benchmark", "misc")
    if benchmark != folder:
        return None, f"record of benchmark {benchmark!r} in folder {folder!r} (a copy?)"
    return rec, None
