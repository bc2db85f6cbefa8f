"""Published few-shot numbers on CoOp's 11 datasets (tasks/reference/coop_published.csv), as the coop table reads
them: columns method, dataset (a task name of tasks/coop), shots (0: zero-shot), backbone (CLIP's visual
encoder as the source names it), seed_mean, top1 (as printed), recipe, source (repository@commit file:line or the
paper's table).

Most rows are CLIP RN50 (Tip-Adapter's exp.log, CaFo's exp.log and its paper), not the table's ViT-B/16, so a
row's label names its backbone when it is not ViT-B/16 ("Tip-Adapter-F [RN50] (published, recipe not known)"),
and its key carries the backbone: an RN50 number is never averaged with, nor paired against, a ViT-B/16 one. A row
may name a recipe only under ViT-B/16, the backbone of every coop recipe; a measured row pairs with it (a delta
row) only under the same method and recipe, which is to say the same backbone (a run on another backbone is
labelled `backbone=...` and pairs with nothing).

Zero-shot numbers (shots 0) have no column of their own: the table's columns are 1..16 shots, and a zero-shot
classifier is the same at every shot count, so such a row is one value in every column (a flat dashed line in
the curves).
"""
from __future__ import annotations

import re

from petlbench.errors import ConfigError
from petlbench.tables import published_frame, read_reference

from .data import LAYOUTS, SHOTS

FILE = "coop_published.csv"
TABLE_BACKBONE = "ViT-B/16"  # the coop protocol's (COOP_PROTOCOL backbone openclip:ViT-B-16, OpenAI's weights)
COLUMNS = ["method", "dataset", "shots", "backbone", "seed_mean", "top1", "recipe", "source"]


def published_name(method: str, backbone: str) -> str:
    """The row name: the method, with its backbone in brackets unless it is the table's ("CoOp", "CaFo [RN50]")."""
    return method if backbone == TABLE_BACKBONE else f"{method} [{backbone}]"


def published_key(method: str, backbone: str) -> str:
    """The row's key before its recipe is added: the method as petlbench names methods ("Tip-Adapter-F" ->
    "tip_adapter_f", "CoOp" -> "coop"), and the backbone when it is not the table's ("tip_adapter_f/rn50")."""
    key = re.sub(r"[^a-z0-9]+", "_", method.lower()).strip("_")
    return key if backbone == TABLE_BACKBONE else f"{key}/{re.sub(r'[^a-z0-9]+', '', backbone.lower())}"


def check(df) -> None:
    """ConfigError naming the CSV line of the first row that the table cannot show as published: a missing
    column, an unknown dataset, shots not 0 or one of SHOTS, no source or value, a recipe under a backbone that is
    not the table's, or two values for one (method, backbone, dataset, shots)."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"{FILE}: missing columns {missing}; expected {COLUMNS}")
    seen: set[tuple] = set()
    for i, r in enumerate(df.itertuples(index=False), 2):  # line 1 is the header
        where = f"{FILE}:{i}"
        if r.dataset not in LAYOUTS:
            raise ConfigError(f"{where}: dataset {r.dataset!r}; known: {sorted(LAYOUTS)}")
        if r.shots not in (0, *SHOTS):
            raise ConfigError(f"{where}: shots {r.shots!r}; accepted 0 (zero-shot) or {SHOTS}")
        if not isinstance(r.source, str) or not r.source.strip() or r.top1 != r.top1:
            raise ConfigError(f"{where}: a published row needs a value and a source")
        if isinstance(r.recipe, str) and r.recipe and r.backbone != TABLE_BACKBONE:
            raise ConfigError(f"{where}: recipe {r.recipe!r} under backbone {r.backbone!r}; a recipe is named only "
                              f"under {TABLE_BACKBONE}, the coop recipes' backbone")
        ident = (r.method, r.backbone, r.dataset, r.shots)
        if ident in seen:
            raise ConfigError(f"{where}: a second value for {ident}")
        seen.add(ident)


def read_published(reference_dir: str):
    """The coop table's published rows (`Benchmark.published`): the long frame of `tables.published_frame` with
    shots and backbone; each zero-shot row repeated at every shot count of SHOTS. None without the file."""
    import pandas as pd

    df = read_reference(FILE, reference_dir)
    if df is None:
        return None
    check(df)
    zero = df[df["shots"] == 0]
    df = pd.concat([df[df["shots"] != 0]] + [zero.assign(shots=k) for k in SHOTS], ignore_index=True)
    long = df.rename(columns={"top1": "value"}).assign(
        key=[published_key(m, b) for m, b in zip(df["method"], df["backbone"])],
        label=[published_name(m, b) for m, b in zip(df["method"], df["backbone"])])
    return published_frame(long)
