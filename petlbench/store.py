"""ResultStore: one JSON record per run, one file per record, written atomically (temp file + rename), so a
crash or kill never leaves a half-written record and a finished record is never lost. A record's file name
is its config hash: running the same configuration again replaces, never duplicates, it.

Tables are made from the store alone (`to_frame`), never from logs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

from .atomic import atomic_write_text

log = logging.getLogger(__name__)


def config_hash(config: dict[str, Any]) -> str:
    """A stable 16-hex-digit hash of a JSON-able config (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class StoreProblems:
    """Record files that could not be read, with the reason: reported, skipped, never fatal."""

    items: list[tuple[str, str]] = field(default_factory=list)


class ResultStore:
    """Records under `root/<benchmark>/<config hash>.json`."""

    def __init__(self, root: str):
        self.root = root

    def path_for(self, record: dict[str, Any]) -> str:
        return os.path.join(self.root, record.get("benchmark", "misc"), f"{record['config_hash']}.json")

    def append(self, record: dict[str, Any]) -> str:
        """Write `record` (must carry `config_hash`) atomically; returns its path."""
        path = self.path_for(record)
        atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
        return path

    def get(self, benchmark: str, chash: str) -> dict[str, Any] | None:
        path = os.path.join(self.root, benchmark, f"{chash}.json")
        if not os.path.isfile(path):
            return None
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, json.JSONDecodeError):
            return None

    def records(self, problems: StoreProblems | None = None) -> Iterator[dict[str, Any]]:
        """Every readable record; unreadable ones go to `problems` (and the log) with their file name."""
        if not os.path.isdir(self.root):
            return
        for dirpath, _, files in sorted(os.walk(self.root)):
            for name in sorted(files):
                if not name.endswith(".json") or name.startswith(".tmp-"):  # a write in progress
                    continue
                path = os.path.join(dirpath, name)
                try:
                    with open(path, encoding="utf-8") as f:
                        rec = json.load(f)
                    if not isinstance(rec, dict) or "config_hash" not in rec:
                        raise ValueError("not a petlbench record (no config_hash)")
                except (OSError, ValueError) as e:
                    log.warning("skipping unreadable record %s: %s", path, e)
                    if problems is not None:
                        problems.items.append((path, str(e)))
                    continue
                yield rec

    def to_frame(self, problems: StoreProblems | None = None):
        """All records as one pandas DataFrame (nested fields flattened with '.')."""
        import pandas as pd

        return pd.json_normalize(list(self.records(problems)))
