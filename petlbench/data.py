"""Data the way benchmark users have it: list files of "<relative path> <label>" lines under a root, or class
folders, read into `Sample`s (decoding: decode.py). Bad input is reported with its file and line; nothing here
knows a particular dataset, and nothing here imports torch (task families import this to declare their tasks).

List files are UTF-8 (a byte-order mark is accepted); anything else is a DataError naming the file and line.
Every path a list names must stay inside the dataset folder (`read_list_file`). Bad input met in a DataLoader
worker reaches the main process as the same one-line DataError (`bad_input`, `decode.collate_skip`).
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .errors import PETLBenchError

log = logging.getLogger(__name__)

OnBad = Literal["fail", "skip"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")


class DataError(PETLBenchError):
    """Missing folder or file, a malformed list line, a label out of range, an image that does not decode."""


@dataclass(frozen=True)
class Sample:
    path: str  # absolute
    label: int
    source: str = ""  # "file:line" it came from, for error messages


def require_dir(path: str, what: str) -> str:
    if not os.path.isdir(path):
        raise DataError(f"{what} {path!r} does not exist or is not a folder")
    return path


def first_dir(data_root: str, candidates: tuple[str, ...], what: str, kind: str = "folder") -> str:
    """The first of `candidates` (relative to data_root) that is a folder; DataError naming every path tried.
    For datasets whose folder goes by several names in the wild (NOAH's, the archive's, ...): the order of
    `candidates` is the rule when several exist, and the choice is logged (INFO)."""
    require_dir(data_root, "data root")
    tried = [os.path.join(data_root, c) for c in candidates]
    existing = [p for p in tried if os.path.isdir(p)]
    if existing:
        if len(existing) > 1:
            log.info("%s: using %s (first in the accepted order); also present, unused: %s", what, existing[0],
                     ", ".join(existing[1:]))
        return existing[0]
    raise DataError(f"{what}: no {kind} under {data_root!r}; tried {', '.join(map(repr, tried))}")


def read_text(path: str) -> str:
    """The text of a UTF-8 file (a leading byte-order mark is dropped). Another encoding is a DataError naming
    the file and the line of the first byte that is not UTF-8."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"{path!r} cannot be read: {e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as UTF-8") \
            from None


def text_lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, line without its end-of-line) for each line of a UTF-8 text file (`read_text`)."""
    for lineno, line in enumerate(read_text(path).split("\n"), 1):
        yield lineno, line.rstrip("\r")


def first_paths(list_path: str, n: int = 3) -> list[str]:
    """The paths of the first `n` well-formed "<path> <label>" lines of a list file (to tell which image root
    it is relative to)."""
    out = []
    for _, line in text_lines(list_path):
        parts = line.strip().rsplit(maxsplit=1)
        if len(parts) == 2:
            out.append(parts[0])
            if len(out) == n:
                break
    return out


def holding_root(roots: Sequence[str], list_path: str) -> str | None:
    """The first of `roots` under which the list's first paths (`first_paths`) all exist; None when none."""
    first = first_paths(list_path)
    if not first:
        return None
    return next((r for r in roots if all(os.path.isfile(os.path.join(r, p)) for p in first)), None)


class _Inside:
    """Whether paths resolve (os.path.realpath: `..`, symlinks) inside `folder`. Parent folders are resolved
    once each, so a list of 170k lines costs one lstat per line."""

    def __init__(self, folder: str):
        self.root = os.path.realpath(folder)
        self.prefix = self.root if self.root.endswith(os.sep) else self.root + os.sep
        self.parents: dict[str, str] = {}

    def outside(self, path: str) -> str | None:
        """The resolved path when it lies outside the folder, else None."""
        parent, base = os.path.split(path)
        real_parent = self.parents.get(parent)
        if real_parent is None:
            real_parent = self.parents[parent] = os.path.realpath(parent)
        real = os.path.normpath(os.path.join(real_parent, base))
        if os.path.islink(real):
            real = os.path.realpath(real)
        return None if real == self.root or real.startswith(self.prefix) else real


_DEFER_FILE_CHECKS: contextvars.ContextVar[bool] = contextvars.ContextVar("petlbench_defer_file_checks",
                                                                           default=False)


@contextlib.contextmanager
def deferred_file_checks():
    """Within this block `read_list_file` does not check that listed files exist: the caller checks every one
    itself and reports all that are missing, not only the first (`petlbench.check`)."""
    token = _DEFER_FILE_CHECKS.set(True)
    try:
        yield
    finally:
        _DEFER_FILE_CHECKS.reset(token)


_COMMA_LINE = re.compile(r"(.*[^\s,])[\s,]+([^\s,]+)")  # "<path><spaces or a comma><label>"


def read_list_file(list_path: str, image_root: str, num_classes: int | None = None,
                   check_files: bool = True, commas: bool = False, what: str = "image",
                   inside: str | None = None, absolute_anywhere: bool = False) -> list[Sample]:
    """Samples from a list file of "<path relative to image_root> <integer label>" lines.

    The last whitespace-separated field is the label, so paths may contain spaces; `commas`: a comma may separate
    them too (VideoMAE's csv lists). Empty lines are skipped. The file is UTF-8 (a byte-order mark is accepted).

    Containment: every listed path, resolved with os.path.realpath (`..` and symlinks followed), must lie inside
    the dataset folder `inside` (default: image_root), itself resolved, so a dataset folder that is a symlink is
    fine but `../../x.png`, an absolute path elsewhere, or a symlink inside the folder that points out of it is a
    DataError naming the list file and line. `absolute_anywhere`: absolute paths are exempt (VideoMAE's video
    lists are written with absolute paths; relative ones are still held inside).

    A malformed line, a label outside [0, num_classes), a path outside the folder or (with `check_files`, unless
    inside `deferred_file_checks`) a missing file raises DataError naming the list file and line number."""
    if not os.path.isfile(list_path):
        raise DataError(f"list file {list_path!r} does not exist")
    folder = inside if inside is not None else image_root
    guard = _Inside(folder)
    check_files = check_files and not _DEFER_FILE_CHECKS.get()
    samples: list[Sample] = []
    for lineno, line in text_lines(list_path):
        line = line.strip()
        if not line:
            continue
        where = f"{list_path}:{lineno}"
        m = _COMMA_LINE.fullmatch(line) if commas else None
        parts = list(m.groups()) if m else ([] if commas else line.rsplit(maxsplit=1))
        if len(parts) != 2:
            raise DataError(f"{where}: expected '<{'' if commas else 'relative '}path> <label>', got {line!r}")
        rel, label_text = parts
        try:
            label = int(label_text)
        except ValueError:
            raise DataError(f"{where}: label {label_text!r} is not an integer") from None
        if label < 0 or (num_classes is not None and label >= num_classes):
            raise DataError(f"{where}: label {label} is outside 0..{(num_classes or 1) - 1}")
        path = os.path.join(image_root, rel)
        if not (absolute_anywhere and os.path.isabs(rel)):
            real = guard.outside(path)
            if real is not None:
                raise DataError(f"{where}: {what} path {rel!r} resolves to {real!r}, outside the dataset folder "
                                f"{folder!r}; listed paths (and symlinks) must stay inside it")
        if check_files and not os.path.isfile(path):
            raise DataError(f"{where}: {what} {path!r} does not exist")
        samples.append(Sample(path, label, where))
    if not samples:
        raise DataError(f"list file {list_path!r} has no samples")
    return samples


def folder_samples(root: str, class_to_index: dict[str, int] | None = None) -> tuple[list[Sample], list[str]]:
    """Samples from class folders `root/<class>/<image>` (ImageFolder layout), classes sorted by name unless
    `class_to_index` maps folder names to labels (folders not in it are an error)."""
    require_dir(root, "image folder")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise DataError(f"image folder {root!r} has no class sub-folders")
    mapping = class_to_index if class_to_index is not None else {c: i for i, c in enumerate(classes)}
    samples = []
    for c in classes:
        if c not in mapping:
            raise DataError(f"{os.path.join(root, c)}: folder name {c!r} is not a known class")
        for dirpath, _, files in sorted(os.walk(os.path.join(root, c))):
            for name in sorted(files):
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    p = os.path.join(dirpath, name)
                    samples.append(Sample(p, mapping[c], p))
    if not samples:
        raise DataError(f"image folder {root!r} has no images")
    return samples, classes


def load_rgb(path: str):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


@dataclass
class BadImages:
    """Images that did not decode, with their paths and reasons; never dropped silently."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)


class WorkerFailure:
    """Bad input met in a DataLoader worker, carried to the main process as data instead of as an exception
    (which torch re-raises wrapped in a multi-line "Caught DataError in DataLoader worker ..." block).
    `collate_skip` returns it in place of the batch; unpacking it (`images, labels, bad = batch`, as every
    consumer of collate_skip's batches does) raises the original one-line DataError in the main process."""

    def __init__(self, message: str):
        self.message = message

    def __iter__(self):
        raise DataError(self.message)


def bad_input(message: str) -> WorkerFailure:
    """Raise DataError(message); in a DataLoader worker return it as a `WorkerFailure` instead, for
    `collate_skip` to pass on (datasets call `return bad_input(...)`)."""
    from torch.utils.data import get_worker_info

    if get_worker_info() is None:
        raise DataError(message) from None  # callers are in an `except`: the cause is in the message
    return WorkerFailure(message)
