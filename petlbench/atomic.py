"""Atomic file writes (temp file in the same folder + rename), with no heavy imports: a crash or kill -9 never
leaves a half-written file at the target path, only a `.tmp-*` file beside it that readers ignore.

A temporary file is created the way `open(path, "w")` creates a file, so the result gets the mode the umask
gives (0o666 & ~umask), not mkstemp's 0o600. Its name carries the writer's pid and host
(`.tmp-<pid>@<host>-<random><ext>`), so a temporary file left by a killed writer can be told from one being
written: `clean_stale_temps` removes those whose writer is dead (same host) or that are older than an hour
(any host: on a shared file system another host's pid cannot be checked), and every atomic write runs it on
its folder (at most once per folder every few minutes per process)."""
from __future__ import annotations

import os
import re
import secrets
import socket
import time

STALE_AFTER_S = 3600.0  # a temporary file this old is left over, whoever wrote it (writes take seconds)
_CLEAN_EVERY_S = 300.0
_last_clean: dict[str, float] = {}  # folder -> when this process last cleaned it
_TMP_NAME = re.compile(r"^\.tmp-(\d+)@([A-Za-z0-9_-]*)-")


def host_name() -> str:
    """This machine's short host name, reduced to [A-Za-z0-9_-] (it is part of temporary file names)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".")[0])[:40]


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (another user's counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, as another user's process
        return True
    return True


def _new_temp(directory: str, suffix: str) -> str:
    """Create an empty temporary file in `directory` (O_EXCL, mode 0o666 less the umask); returns its path."""
    prefix = f".tmp-{os.getpid()}@{host_name()}-"
    for _ in range(100):
        path = os.path.join(directory, prefix + secrets.token_hex(4) + suffix)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path
    raise FileExistsError(f"no free temporary file name in {directory}")


def is_stale_temp(path: str, now: float | None = None, max_age: float = STALE_AFTER_S) -> bool:
    """Whether `path` (a `.tmp-*` file) is left over: its writer's process is gone (same host), or it is older
    than `max_age` seconds."""
    name = os.path.basename(path)
    if not name.startswith(".tmp-"):
        return False
    try:
        age = (time.time() if now is None else now) - os.stat(path).st_mtime
    except OSError:
        return False
    if age > max_age:
        return True
    m = _TMP_NAME.match(name)
    return bool(m) and m.group(2) == host_name() and not pid_alive(int(m.group(1)))


def clean_stale_temps(directory: str, max_age: float = STALE_AFTER_S) -> list[str]:
    """Remove the stale `.tmp-*` files (`is_stale_temp`) directly in `directory`; returns their paths. Never
    raises: a folder that cannot be listed, or a file another process removed first, is skipped."""
    _last_clean[os.path.abspath(directory)] = time.monotonic()
    try:
        names = [n for n in os.listdir(directory) if n.startswith(".tmp-")]
    except OSError:
        return []
    removed, now = [], time.time()
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isfile(path) and is_stale_temp(path, now, max_age):
            try:
                os.unlink(path)
                removed.append(path)
            except OSError:
                pass
    return removed


def clean_stale_temps_under(root: str, depth: int = 2) -> list[str]:
    """`clean_stale_temps` in `root` and its sub-folders down to `depth` levels (a store: root/<benchmark>/)."""
    removed: list[str] = []
    if not os.path.isdir(root):
        return removed
    base = root.rstrip(os.sep).count(os.sep)
    for dirpath, dirnames, _ in os.walk(root):
        removed += clean_stale_temps(dirpath)
        if dirpath.count(os.sep) - base >= depth:
            dirnames[:] = []
    return removed


def atomic_write_bytes(path: str, write) -> None:
    """Call `write(tmp_path)` then rename onto `path`: a crash never leaves a half-written file at `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if time.monotonic() - _last_clean.get(directory, -_CLEAN_EVERY_S) >= _CLEAN_EVERY_S:
        clean_stale_temps(directory)
    # Keep the target's extension: torch.save rejects a dot-file name without one, savefig picks its format by it.
    tmp = _new_temp(directory, os.path.splitext(path)[1])
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
