"""Atomic file writes (temp file in the same folder + rename), with no heavy imports: a crash or kill -9 never
leaves a half-written file at the target path, only a `.tmp-*` file beside it that readers ignore."""
from __future__ import annotations

import os
import tempfile


def atomic_write_bytes(path: str, write) -> None:
    """Call `write(tmp_path)` then rename onto `path`: a crash never leaves a half-written file at `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # Keep the target's extension: torch.save rejects a dot-file name without one.
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Write `text` to `path` atomically, flushed to disk before the rename (records, tables)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    atomic_write_bytes(path, write)
