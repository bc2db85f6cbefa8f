"""The results aggregator, data side: store records -> one pandas frame -> paper-style `Table`s.

Nothing here parses a log or formats text; `report.py` renders a `Table` as Markdown, LaTeX and CSV, and draws
the plots. Conventions every table states in its footer (see tasks/reference/conventions.md):

- A row is a *variant*: the method, its non-default options and any protocol field that differs from the
  task's published protocol (so ablations and protocol changes never average together). Seeds are averaged:
  a cell is mean (+- std, n) over the records of that variant, dataset (and shots).
- VTAB-1k: the 19 datasets grouped Natural / Specialized / Structured, the three group means, their average
  (the papers' convention, e.g. RepAdapter 76.1) and the plain 19-dataset mean (V-PETL Bench's, 73.8), each
  labelled. A mean over a group with a missing dataset is missing, never computed from the rest.
- `search`: option keys collapsed by picking, per dataset and seed, the best record by the run's own selection
  rule (reproduction: test top-1, as RepAdapter chose s; clean: val top-1). The footer lists the choices.
- Published rows come from tasks/reference/*.csv (copied from the papers, each row with its source);
  a measured variant that is a published configuration gets a delta row.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

from .search import tuned_keys
from .store import record_problem

log = logging.getLogger(__name__)

# Published numbers ship with the benchmark families (tasks/reference/, package data of petlbench.tasks); each
# family's `Benchmark.published` reads its own files there. `--reference DIR` swaps the whole folder.
REFERENCE_DIR = str(files("petlbench.tasks") / "reference")

# Protocol fields that index a record rather than define its variant.
INDEX_FIELDS = {"seed", "train_split", "clean_train_split"}


# --- one row per record ----------------------------------------------------------------------------------
def _fmt_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def variant_fields(key: str, name: str, key_options: Iterable[str], cfg: dict, proto: dict, method_defaults: dict,
                   task_protocol: dict) -> dict:
    """What makes a run's row: {"key": published-table key, "name": the name papers print for it, "diffs":
    {field: value}} where diffs are the method options that differ from the task's defaults for the method
    (`key_options`, which select the key, excluded) and the protocol fields that differ from the task's protocol
    (seed and training split excluded: they index a row's cells). Stored in every record, so tables need no
    method registry to label rows (`PETLMethod.variant_key` / `variant_name` give `key` and `name`)."""
    diffs = {}
    for k in sorted(cfg):
        if k not in set(key_options) and k in method_defaults and cfg[k] != method_defaults[k]:
            diffs[k] = cfg[k]
    for k in sorted(proto):
        if k not in INDEX_FIELDS and k in task_protocol and proto[k] != task_protocol[k]:
            diffs[k] = proto[k]
    return {"key": key, "name": name, "diffs": diffs}


def _legacy_variant(rec: dict) -> dict:
    """variant_fields for a record written before records carried them (needs the registries: slow import)."""
    from .spec import variant_of_spec

    return variant_of_spec(rec["task"], rec["method"], rec.get("method_cfg") or {}, rec.get("protocol") or {})


def _variant_name(method: str, key: str) -> str:
    """The printed name of `key` for a record that predates stored names (asks the method registry)."""
    from .method import METHODS

    return METHODS.get(method).variant_name(key) if method in METHODS else key


def variant_of(rec: dict, search: Iterable[str] = ()) -> tuple[str, str, dict]:
    """(label, published key or "" when the row is not a published configuration, {searched field: value}).
    The label is the paper's method name plus its differences and its recipe, e.g. "LoRA [rank=4] (noah-vtab)",
    "RepAdapter [random init]" (a task without a recipe: the mini-benchmark)."""
    v = rec.get("variant") or _legacy_variant(rec)
    cfg, proto = rec.get("method_cfg") or {}, rec.get("protocol") or {}
    tuned = tuned_keys(proto.get("tuned", ""))  # a search's final run: its choice is a cell's, not the row's
    search = set(search) | set(tuned)
    shown = [f"tuned {', '.join(tuned)}"] if tuned else []
    searched = {k: cfg.get(k, proto.get(k)) for k in sorted(search) if k in cfg or k in proto}
    recipe = proto.get("recipe", "") or ""
    for k, val in v["diffs"].items():
        if k in search or k == "recipe" or (tuned and k in ("selection", "tuned")):  # (recipe: named below)
            continue
        elif k == "weights" and val in ("", "none", "random"):
            shown.append("random init")
        else:
            shown.append(f"{k}={_fmt_value(val)}")
    key = v["key"]
    # Mixed precision / compile: never averaged with eager fp32 runs, and visible (the authors trained in fp32,
    # SSF in fp16), but still the published configuration (its delta row is shown).
    numerics = [f"{k}={_fmt_value(val)}" for k, val in sorted((rec.get("numerics") or {}).items())]
    label = (v.get("name") or _variant_name(rec["method"], key)) + (
        f" [{', '.join(shown + numerics)}]" if shown or numerics else "")
    label += f" ({recipe})" if recipe else ""
    return label, (recipe_key(key, recipe) if not shown else ""), searched


def run_frame(records: Iterable[dict], search: Iterable[str] = (), problems=None):
    """One row per record: benchmark, task, dataset, group, variant, key (published key when the variant is a
    published configuration), status, seed, shots, value (the selected top-1 / metric), select_score (what the
    run's selection rule ranks by), params (trainable and paper convention, head excluded), and one column
    `target:<task>` per evaluated target (domain generalization).

    A record with a field of the wrong type (a value that is not a number, params that are not a mapping, ...) is
    skipped and, with `problems` (a store.StoreProblems), reported as ("<benchmark>/<config hash>.json", why):
    the record's file under the store root. Records written before records named their data ("data") are read
    as any other: tables do not need it."""
    import pandas as pd

    search = tuple(search)
    rows = []
    for r in records:
        if isinstance(r, dict) and stage_of(r):
            continue  # a search's trial or a staged method's supernet / search: the table shows what they chose
        why = record_problem(r) or _row_problem(r)
        if why is None:
            try:
                row = _frame_row(r, search)
            except (KeyError, TypeError, AttributeError, ValueError) as e:
                why = f"not a run record ({type(e).__name__}: {e})"
        if why is not None:
            log.warning("skipping record %s: %s", _record_file(r), why)
            if problems is not None:
                problems.items.append((_record_file(r), why))
            continue
        rows.append(row)
    return pd.DataFrame(rows)


def stage_of(r: dict) -> str:
    """"" for a record that is a result (a table row); else the intermediate stage it is: "trial" (a search's
    trial: a val score), or the stage a staged method's pipeline wrote ("supernet", "search")."""
    proto = r.get("protocol")
    if isinstance(proto, dict) and proto.get("selection") == "trial":
        return "trial"
    stage = r.get("stage")
    return stage if isinstance(stage, str) and stage != "final" else ""


def _frame_row(r: dict, search: tuple[str, ...]) -> dict:
    from .benchmark import get

    label, key, searched = variant_of(r, search)
    proto = r.get("protocol") or {}
    m = r.get("metrics") or {}
    params = r.get("params") or {}
    bench = r.get("benchmark", "")
    row = {"benchmark": bench, "task": r["task"], "dataset": r["task"].split("/", 1)[-1],
           "group": r.get("group", ""), "method": r["method"], "variant": label, "key": key,
           "status": r.get("status", ""), "reason": r.get("reason", ""), "seed": r.get("seed"),
           "train_split": proto.get("clean_train_split" if proto.get("selection") in ("clean", "trial") else
                                    "train_split", ""),
           "value": r.get("value"), "metric": r.get("metric", "top1"),
           "select_score": m.get("val_top1", r.get("value")), "selection": proto.get("selection", ""),
           "params": params.get("trainable"), "params_paper": params.get("paper"),
           "backbone": proto.get("backbone", ""), "weights": proto.get("weights", ""),
           "normalize": proto.get("normalize", ""), "recipe": proto.get("recipe", "") or "",
           "config_hash": r.get("config_hash", ""), "tuned": proto.get("tuned", "") or "",
           "searched": ", ".join(f"{k}={_fmt_value(v)}" for k, v in sorted(searched.items()))}
    fields = get(bench).row_fields if bench else None
    if fields is not None:  # the benchmark's own columns (few-shot: shots and split seed, from the split name)
        row.update(fields(r))
    for name, t in (m.get("targets") or {}).items():  # in the source task's order
        row[f"target:{name}"] = t.get("top1") if t.get("status") == "ok" else None
    return row


def _record_file(r) -> str:
    if not isinstance(r, dict):
        return f"<{type(r).__name__}>"
    return f"{r.get('benchmark', 'misc')}/{r.get('config_hash', '?')}.json"


def _row_problem(r: dict) -> str | None:
    """What a row needs beyond a well-typed record (store.record_problem): the task and the method."""
    for key in ("task", "method"):
        if not r.get(key):
            return f"field {key!r} is missing: not a run record"
    return None


def collapse_search(ok, keys: tuple[str, ...]):
    """Keep, per (variant, task, seed, training split), the record with the best select_score (ties: first
    hash)."""
    if ok.empty or not keys:
        return ok
    ranked = ok.assign(_s=ok["select_score"].astype(float), _n=ok["seed"].fillna(-1)).sort_values(
        ["_s", "config_hash"], ascending=[False, True])
    return ranked.drop_duplicates(subset=["variant", "task", "_n", "train_split"]).drop(columns=["_s", "_n"])


# --- the table model ---------------------------------------------------------------------------------------
@dataclass
class Cell:
    mean: float | None = None
    std: float | None = None
    n: int = 0
    lo: float | None = None  # an interval printed beside the mean (latency ratio quartiles)
    hi: float | None = None

    @property
    def missing(self) -> bool:
        return self.mean is None or (isinstance(self.mean, float) and math.isnan(self.mean))


@dataclass
class Row:
    label: str
    source: str  # "ours", "published: <source>", or "delta"
    cells: dict[str, Cell]
    section: str = ""  # rows are grouped (and bolded) per section, e.g. a few-shot dataset
    params_m: float | None = None
    key: str = ""  # the published-table key when the row is a published configuration (deltas pair on it)


@dataclass
class Column:
    key: str
    header: str
    group: str = ""  # a spanning header over neighbouring columns of the same group
    digits: int = 1  # 0: an integer with thousands separators


@dataclass
class Table:
    """A paper-style table as data: columns, rows of cells, footer notes. `report.py` renders it."""

    name: str  # file stem, e.g. "vtab1k"
    title: str
    columns: list[Column]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    bold_best: bool = True
    params_column: bool = True  # a "Params (M)" column from Row.params_m

    def best(self) -> dict[tuple[str, str], float]:
        """(section, column) -> the highest mean among measured and published rows (deltas excluded)."""
        out: dict[tuple[str, str], float] = {}
        for r in self.rows:
            if r.source == "delta":
                continue
            for k, c in r.cells.items():
                if not c.missing and c.mean > out.get((r.section, k), -math.inf):
                    out[(r.section, k)] = c.mean
        return out


def cell_of(values) -> Cell:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return Cell()
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return Cell(mean, std, len(vals))


def mean_of(cells: list[Cell]) -> Cell:
    """Mean of cell means; missing when any is missing (never an average of what happens to be there)."""
    if not cells or any(c.missing for c in cells):
        return Cell()
    return Cell(sum(c.mean for c in cells) / len(cells), None, min(c.n for c in cells))


def params_m(sub, paper: bool) -> float | None:
    col = "params_paper" if paper else "params"
    vals = sub[col].dropna()
    return float(vals.max()) / 1e6 if len(vals) else None


def add_means(cells: dict[str, Cell], datasets: list[str], groups: dict[str, str], group_names: list[str]) -> None:
    for g in group_names:
        cells[f"mean:{g}"] = mean_of([cells.get(d, Cell()) for d in datasets if groups.get(d) == g])
    if len(group_names) > 1:
        cells["mean:groups"] = mean_of([cells[f"mean:{g}"] for g in group_names])
    cells["mean:all"] = mean_of([cells.get(d, Cell()) for d in datasets])


def _delta(ours: Row, pub: Row, label: str) -> Row:
    cells = {k: Cell(c.mean - pub.cells[k].mean) for k, c in ours.cells.items()
             if not c.missing and k in pub.cells and not pub.cells[k].missing}
    return Row(label, "delta", cells, ours.section)


def selection_note(ok) -> list[str]:
    sel = sorted(set(ok["selection"].dropna())) if not ok.empty else []
    final = ok[ok["selection"] == "final"] if "final" in sel else ok.iloc[:0]
    if "final" in sel and not ("tuned" in final and final["tuned"].astype(bool).all()):
        sel[sel.index("final")] = "final_plain"  # (not only searched rows: the plain wording)
    notes = {"reproduction": "reproduction: best of the periodic test evaluations (as the published VTAB-1k "
                             "tables; test data selects the epoch)",
             "clean": "clean: epoch selected on the validation split, test evaluated once",
             "final": "final (searched rows): settings chosen on the validation split, retrained on the training "
                      "split, test evaluated once after the last epoch",
             "final_plain": "final: the last epoch's model, test evaluated once (searched rows: settings chosen on "
                            "the validation split, retrained on the training split)"}
    return [f"Selection: {'; '.join(notes.get(s, s) for s in sel)}."] if sel else []


def protocol_note(ok, data_source: str = "") -> list[str]:
    """The protocol choices that split the literature (tasks/reference/conventions.md), as measured;
    `data_source`: the benchmark's phrase for where its data comes from."""
    if ok.empty:
        return []

    def values(col):
        return ", ".join(sorted({str(v) for v in ok[col].dropna()})) or "?"
    seeds = sorted({int(s) for s in ok["seed"].dropna()})
    norm = f"normalisation {values('normalize')}, " if ok["normalize"].astype(bool).any() else ""  # else: its config's
    parts = [f"Protocol of the measured rows: backbone {values('backbone')}, weights {values('weights')}, "
             f"{norm}seeds {', '.join(map(str, seeds)) or '?'}"]
    if data_source:
        parts.append(f"data {data_source}")
    return ["; ".join(parts) + "."]


def recipes_of(ok) -> list[str]:
    return list(ok["recipe"]) if not ok.empty and "recipe" in ok else []


def search_note(ok, keys: tuple[str, ...]) -> list[str]:
    """What `--search` collapsed, and what each searched (tuned) row's search chose, per dataset."""
    if ok.empty or not ok["searched"].astype(bool).any():
        return []
    out = []
    tuned = ok["tuned"] if "tuned" in ok else None
    for variant, sub in ok[ok["searched"] != ""].groupby("variant", sort=True):
        picks = ", ".join(f"{d} {'/'.join(sorted(set(s)))}" for d, s in sub.groupby("dataset")["searched"])
        spaces = sorted(set(tuned[sub.index])) if tuned is not None else []
        if spaces and spaces != [""]:
            out.append(f"{variant}: searched per dataset (and seed) on the validation split "
                       f"({'; '.join(s for s in spaces if s)}; trials trained on the clean training split, scored "
                       f"by their last val evaluation), then retrained on the training split and tested once; "
                       f"chosen: {picks}.")
        elif keys:
            out.append(f"{variant}: {'/'.join(keys)} chosen per dataset (and seed) by the run's selection rule: "
                       f"{picks}.")
    return out


# --- published numbers -------------------------------------------------------------------------------------
PUBLISHED_COLUMNS = ["key", "label", "dataset", "value", "params_m", "source", "recipe"]


def published(benchmark: str, reference_dir: str = REFERENCE_DIR):
    """Published numbers of a benchmark as a long frame (PUBLISHED_COLUMNS, and any column of the benchmark's
    own, e.g. shots), from its `Benchmark.published`; empty when it declares none or the file is not there."""
    import pandas as pd

    from .benchmark import get

    reader = get(benchmark).published
    long = reader(reference_dir) if reader is not None else None
    if long is None or long.empty:
        return pd.DataFrame(columns=PUBLISHED_COLUMNS)
    return long


def published_frame(long, reference_dir: str = REFERENCE_DIR):
    """What a benchmark's published reader returns, finished: `long` has key, label, dataset, value, params_m,
    source and recipe (empty when unknown); the key becomes the pairing key (`recipe_key`), so a published
    configuration pairs (delta rows) only with measured rows of the same recipe."""
    long = long.copy()
    long["recipe"] = long["recipe"].fillna("").astype(str) if "recipe" in long.columns else ""
    if "params_m" not in long.columns:
        long["params_m"] = None
    long["key"] = [recipe_key(k, r) for k, r in zip(long["key"], long["recipe"])]
    extra = [c for c in long.columns if c not in PUBLISHED_COLUMNS]
    return long[PUBLISHED_COLUMNS + extra].reset_index(drop=True)


def read_reference(name: str, reference_dir: str = REFERENCE_DIR):
    """The reference CSV `name` under `reference_dir` as a frame, or None when the folder has no such file."""
    import pandas as pd

    path = os.path.join(reference_dir, name)
    return pd.read_csv(path) if os.path.isfile(path) else None


def recipe_key(key: str, recipe: str) -> str:
    """The pairing key of a row: its published-table key and recipe ("lora@noah-vtab"), or the key alone."""
    return f"{key}@{recipe}" if key and recipe else key


def published_label(label: str, recipe: str) -> str:
    """"LoRA (published, noah-vtab)"; a row whose recipe is not known says so."""
    return f"{label} (published, {recipe or 'recipe not known'})"


def recipe_notes(recipes) -> list[str]:
    """A footer line naming each recipe the table's rows used, with its summary and the authors' code."""
    names = sorted({r for r in recipes if isinstance(r, str) and r})
    if not names:
        return []
    from .recipe import RECIPES

    parts = []
    for n in names:
        if n in RECIPES:
            r = RECIPES.get(n)
            parts.append(f"{n}: {r.summary} ({r.repo}; `petlbench recipes {n}` lists every field with its source)")
        else:
            parts.append(f"{n}: not a registered recipe")
    return ["Recipes (a row's recipe is in parentheses; a delta row pairs runs of the same recipe): "
            + "; ".join(parts) + "."]


# --- tables ------------------------------------------------------------------------------------------------
def _dataset_order(ok, columns: list[tuple[str, str]] | None) -> tuple[list[str], dict[str, str]]:
    """Datasets of a table with their groups: the benchmark's fixed `columns` ((dataset, group), in order) first,
    then any other measured dataset; groups in order of appearance (fixed columns) or by name."""
    groups = dict(zip(ok["dataset"], ok["group"])) if not ok.empty else {}
    fixed = [d for d, _ in columns or []]
    for d, g in columns or []:
        groups.setdefault(d, g)
    order = fixed + sorted(d for d in groups if d not in fixed)
    gnames = list(dict.fromkeys(g for d, g in (columns or []) if g)) + sorted(
        {g for g in groups.values() if g} - {g for _, g in columns or []})
    order.sort(key=lambda d: gnames.index(groups[d]) if groups.get(d) in gnames else len(gnames))
    return order, groups


def measured_rows(ok) -> list[Row]:
    """A row per variant of the finished records `ok`, a cell per dataset (mean over seeds), baselines first."""
    rows = []
    if not ok.empty:
        for variant, sub in ok.groupby("variant", sort=False):
            cells = {d: cell_of(s["value"]) for d, s in sub.groupby("dataset")}
            rows.append(Row(variant, "ours", cells, params_m=params_m(sub, paper=True), key=sub["key"].iloc[0]))
    rows.sort(key=lambda r: (r.key not in ("full", "linear"), r.label))
    return rows


def published_row(key: str, sub, cells: dict[str, Cell]) -> Row:
    """The row of one published configuration (`sub`: its rows of `published()`)."""
    return Row(published_label(sub["label"].iloc[0], sub["recipe"].iloc[0]), f"published: {sub['source'].iloc[0]}",
               cells,
               params_m=float(sub["params_m"].iloc[0]) if sub["params_m"].notna().any() else None, key=key)


def finished(frame, benchmark: str):
    """The finished ("ok") records of `benchmark` in `frame`."""
    return frame[(frame["benchmark"] == benchmark) & (frame["status"] == "ok")] if not frame.empty else frame


def grouped_table(frame, bench, search: tuple[str, ...] = (), reference_dir: str = REFERENCE_DIR) -> Table:
    """The default table of a benchmark (`benchmark.Benchmark`): a row per variant, a column per dataset, group
    means and both averages; published rows beside measured ones, with deltas."""
    ok = collapse_search(finished(frame, bench.name), search)
    order, groups = _dataset_order(ok, bench.columns() if bench.columns else None)
    if bench.only_measured and not ok.empty:
        present = set(ok["dataset"])
        order = [d for d in order if d in present]
    gnames = [g for g in dict.fromkeys(groups[d] for d in order) if g]
    columns = [Column(d, d.replace("_", " "), groups.get(d, "")) for d in order]
    columns += [Column(f"mean:{g}", g, "Means") for g in gnames]
    if len(gnames) > 1:
        columns.append(Column("mean:groups", "Avg. of group means", "Means"))
    columns.append(Column("mean:all", f"Mean of {len(order)}", "Means"))
    table = Table(bench.stem, bench.table_title or bench.title, columns)
    table.notes += list(bench.notes)
    pub = published(bench.name, reference_dir)
    pub_rows: dict[str, Row] = {}
    for key, sub in pub.groupby("key", sort=False):
        cells = {d: cell_of([v]) for d, v in zip(sub["dataset"], sub["value"]) if d in order}
        add_means(cells, order, groups, gnames)
        printed = sub[sub["dataset"] == "mean:groups"]["value"]
        if len(printed):  # the paper's own average (from unrounded numbers), not ours from its rounded columns
            cells["mean:groups"] = cell_of(printed)
        pub_rows[key] = published_row(key, sub, cells)
    ours = measured_rows(ok)
    for row in ours:
        add_means(row.cells, order, groups, gnames)
    table.rows += with_deltas(ours + list(pub_rows.values()))
    table.notes += [
        "Top-1 (%) on the test split; a cell is the mean over seeds (+- sample std when there are several, "
        "n in the CSV). Missing cells are runs that are not in the store (or, for published rows, numbers the "
        "paper does not give): never zeros, and a mean over a group with a missing dataset is missing.",
    ]
    if len(gnames) > 1:
        table.notes.append(f"*Avg. of group means*: the mean of the {len(gnames)} group means (the convention of "
                           f"VPT, NOAH, FacT and RepAdapter); *Mean of {len(order)}*: the plain mean over datasets "
                           "(V-PETL Bench's). They differ; compare like with like.")
    if pub_rows and len(gnames) > 1:
        table.notes.append("A published row's average of group means is the paper's printed value; its other "
                           "means are computed here from the printed (rounded) per-dataset numbers.")
    table.notes.append("Params (M): trainable parameters in millions, classification head excluded, in each "
                       "method's paper convention (RepAdapter: adapter weights without biases, 0.22M on ViT-B/16).")
    table.notes += selection_note(ok) + protocol_note(ok, bench.data_source) + search_note(ok, search)
    table.notes += recipe_notes(list(recipes_of(ok)) + list(pub["recipe"]))
    if pub_rows:
        table.notes.append("Published rows: " + "; ".join(
            f"{r.label.split(' (published')[0]}: {r.source.removeprefix('published: ')}"
            for r in pub_rows.values()) + ".")
    return table


def with_deltas(rows: list[Row]) -> list[Row]:
    """`rows`, each measured row with a published twin (same key) followed by its delta row."""
    pub = {r.key: r for r in rows if r.source.startswith("published") and r.key}
    out = []
    for r in rows:
        out.append(r)
        if r.source == "ours" and r.key in pub:
            out.append(_delta(r, pub[r.key], f"  delta vs {pub[r.key].label}"))
    return out


def failures(frame) -> list[tuple[str, str, str]]:
    """(task, variant, reason) of every failed record."""
    if frame.empty:
        return []
    bad = frame[frame["status"] == "failed"]
    return list(zip(bad["task"], bad["variant"], bad["reason"]))


def efficiency_table(df, meta: dict, name: str) -> Table:
    """The efficiency CSV written by `petlbench bench` (plus its JSON) as a Table."""
    bss = [int(c.removeprefix("latency_ms_bs")) for c in df.columns if c.startswith("latency_ms_bs")]
    big = max(bss)
    columns = [Column("params_trainable", "Trainable params", "Params (head excl.)", 0),
               Column("params_paper", "Paper conv.", "Params (head excl.)", 0), Column("gmacs", "GMACs", "", 2)]
    for bs in bss:
        columns += [Column(f"latency_ms_bs{bs}", "ms", f"Latency bs{bs}", 1),
                    Column(f"latency_ratio_bs{bs}", "x plain", f"Latency bs{bs}", 3)]
    columns += [Column(f"peak_mem_mb_bs{big}", "MB", f"Peak memory bs{big}", 0),
                Column(f"peak_mem_ratio_bs{big}", "x plain", f"Peak memory bs{big}", 3)]
    env = meta.get("environment", {})
    table = Table(name, f"Efficiency: {meta.get('backbone', name)}", columns, bold_best=False, params_column=False)
    for r in df.to_dict("records"):
        cells = {c.key: Cell(r.get(c.key)) for c in columns}
        for bs in bss:
            if r["form"] != "plain" and f"latency_ratio_q1_bs{bs}" in r:
                cells[f"latency_ratio_bs{bs}"].lo = r[f"latency_ratio_q1_bs{bs}"]
                cells[f"latency_ratio_bs{bs}"].hi = r[f"latency_ratio_q3_bs{bs}"]
        table.rows.append(Row(f"{r['method']} ({r['form']})", "ours", cells))
    notes = sorted({f"{m}: {n}" for m, n in zip(df["method"], df.get("notes", [""] * len(df)))
                    if isinstance(n, str) and n})
    table.notes += [
        f"Backbone `{meta.get('backbone')}` at {meta.get('img_size')}px, random weights, {env.get('device')} "
        f"{env.get('dtype')}, torch {env.get('torch')}, timm {env.get('timm')}, {env.get('threads')} threads"
        + (f", {env['gpu']}" if "gpu" in env else "") + f", {meta.get('rounds', '')}. Made by "
        f"`{meta.get('command')}` on {meta.get('date')}.",
        "Params: trainable parameters with the classification head excluded; *paper conv.* follows the method's "
        "paper (RepAdapter counts adapter weights, not biases: 0.22M on ViT-B/16).",
        "GMACs: multiply-adds of one image (torch FlopCounterMode FLOPs / 2, the fvcore convention of the papers).",
        "Latency: median over interleaved rounds after warm-up; *x plain* is the median of same-round ratios to "
        "the plain backbone timed in the same run, [first-third quartile] of those ratios beside it. Peak memory: "
        "parameters + peak allocation of one inference forward (CUDA allocator peak, or replayed torch.profiler "
        "allocation events on CPU).",
        "*merged*: `petlbench.merge(model)`, a plain timm model; methods that add no module have one row.",
    ] + notes
    return table
