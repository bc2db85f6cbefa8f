"""The results aggregator, data side: store records -> one pandas frame -> paper-style `Table`s.

Nothing here parses a log or formats text; `report.py` renders a `Table` as Markdown, LaTeX and CSV, and draws
the plots. Conventions every table states in its footer (see petlbench/reference/conventions.md):

- A row is a *variant*: the method, its non-default options and any protocol field that differs from the
  task's published protocol (so ablations and protocol changes never average together). Seeds are averaged:
  a cell is mean (+- std, n) over the records of that variant, dataset (and shots).
- VTAB-1k: the 19 datasets grouped Natural / Specialized / Structured, the three group means, their average
  (the papers' convention, e.g. RepAdapter 76.1) and the plain 19-dataset mean (V-PETL Bench's, 73.8), each
  labelled. A mean over a group with a missing dataset is missing, never computed from the rest.
- `search`: option keys collapsed by picking, per dataset and seed, the best record by the run's own selection
  rule (reproduction: test top-1, as RepAdapter chose s; clean: val top-1). The footer lists the choices.
- Published rows come from petlbench/reference/*.csv (copied from the papers, each row with its source);
  a measured variant that is a published configuration gets a delta row.
"""
from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from .store import record_problem

log = logging.getLogger(__name__)

REFERENCE_DIR = os.path.join(os.path.dirname(__file__), "reference")

# Method key (a registered name, or name_variant) -> the name papers print.
DISPLAY = {"repadapter": "RepAdapter", "repadapter_attn": "RepAdapter_attn", "lora": "LoRA", "adapter": "Adapter",
           "adaptformer": "AdaptFormer", "vpt_deep": "VPT-Deep", "vpt_shallow": "VPT-Shallow", "bitfit": "BitFit",
           "ssf": "SSF", "full": "Full fine-tuning", "linear": "Linear probing", "noah": "NOAH",
           "fact_tk": "FacT-TK", "glora": "GLoRA", "vpt": "VPT"}
VTAB_GROUPS = ("Natural", "Specialized", "Structured")
VTAB_ORDER_GROUPS = ("Natural",) * 7 + ("Specialized",) * 4 + ("Structured",) * 8  # the papers' 19 columns
DG_TARGETS = ("domain/imagenet_v2", "domain/imagenet_sketch", "domain/imagenet_a", "domain/imagenet_r")
PUBLISHED_ALIASES = {"cifar100": "cifar"}  # published column name -> task dataset name
SHOTS = (1, 2, 4, 8, 16)
# Protocol fields that index a record rather than define its variant.
INDEX_FIELDS = {"seed", "train_split", "clean_train_split"}
_SHOT_SPLIT = re.compile(r"train_shot(\d+)_seed(\d+)$")


# --- one row per record ----------------------------------------------------------------------------------
def _fmt_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def method_key(method: str, cfg: dict) -> str:
    """The published-table key of a configuration: vpt -> vpt_deep / vpt_shallow, RepAdapter on the attention
    side only -> repadapter_attn, a parallel adapter -> adaptformer; otherwise the method name."""
    if method == "vpt":
        return "vpt_deep" if cfg.get("deep", True) else "vpt_shallow"
    if method == "repadapter" and cfg.get("where") == "attn":
        return "repadapter_attn"
    if method == "adapter" and cfg.get("style") == "parallel":
        return "adaptformer"
    return method


_KEY_FIELDS = {"vpt": {"deep"}, "repadapter": {"where"}, "adapter": {"style"}}


def variant_fields(method: str, cfg: dict, proto: dict, method_defaults: dict, task_protocol: dict) -> dict:
    """What makes a run's row: {"key": published-table key, "diffs": {field: value}} where diffs are the method
    options that differ from the task's defaults for the method and the protocol fields that differ from the
    task's protocol (seed and training split excluded: they index a row's cells). Stored in every record, so
    tables need no registry (and no torch) to label rows."""
    diffs = {}
    for k in sorted(cfg):
        if k not in _KEY_FIELDS.get(method, ()) and k in method_defaults and cfg[k] != method_defaults[k]:
            diffs[k] = cfg[k]
    for k in sorted(proto):
        if k not in INDEX_FIELDS and k in task_protocol and proto[k] != task_protocol[k]:
            diffs[k] = proto[k]
    return {"key": method_key(method, cfg), "diffs": diffs}


def _legacy_variant(rec: dict) -> dict:
    """variant_fields for a record written before records carried them (needs the registries: slow import)."""
    from .run import variant_of_spec

    return variant_of_spec(rec["task"], rec["method"], rec.get("method_cfg") or {}, rec.get("protocol") or {})


def variant_of(rec: dict, search: Iterable[str] = ()) -> tuple[str, str, dict]:
    """(label, published key or "" when the row is not a published configuration, {searched field: value}).
    The label is the paper's method name plus its differences and its recipe, e.g. "LoRA [rank=4] (noah-vtab)",
    "RepAdapter [random init]" (a task without a recipe: the mini-benchmark)."""
    v = rec.get("variant") or _legacy_variant(rec)
    search = set(search)
    shown = []
    cfg, proto = rec.get("method_cfg") or {}, rec.get("protocol") or {}
    searched = {k: cfg.get(k, proto.get(k)) for k in sorted(search) if k in cfg or k in proto}
    recipe = proto.get("recipe", "") or ""
    for k, val in v["diffs"].items():
        if k in search or k == "recipe":  # the recipe is named in the label itself, below
            continue
        elif k == "weights" and val in ("", "none", "random"):
            shown.append("random init")
        else:
            shown.append(f"{k}={_fmt_value(val)}")
    key = v["key"]
    # Mixed precision / compile: never averaged with eager fp32 runs, and visible (the authors trained in fp32,
    # SSF in fp16), but still the published configuration (its delta row is shown).
    numerics = [f"{k}={_fmt_value(val)}" for k, val in sorted((rec.get("numerics") or {}).items())]
    label = DISPLAY.get(key, key) + (f" [{', '.join(shown + numerics)}]" if shown or numerics else "")
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


def _frame_row(r: dict, search: tuple[str, ...]) -> dict:
    label, key, searched = variant_of(r, search)
    proto = r.get("protocol") or {}
    m = r.get("metrics") or {}
    split = proto.get("clean_train_split" if proto.get("selection") == "clean" else "train_split", "")
    shot = _SHOT_SPLIT.match(split or "")
    params = r.get("params") or {}
    row = {"benchmark": r.get("benchmark", ""), "task": r["task"], "dataset": r["task"].split("/", 1)[-1],
           "group": r.get("group", ""), "method": r["method"], "variant": label, "key": key,
           "status": r.get("status", ""), "reason": r.get("reason", ""), "seed": r.get("seed"),
           "shots": int(shot.group(1)) if shot else None, "split_seed": int(shot.group(2)) if shot else None,
           "value": r.get("value"), "metric": r.get("metric", "top1"),
           "select_score": m.get("val_top1", r.get("value")), "selection": proto.get("selection", ""),
           "params": params.get("trainable"), "params_paper": params.get("paper"),
           "backbone": proto.get("backbone", ""), "weights": proto.get("weights", ""),
           "normalize": proto.get("normalize", ""), "recipe": proto.get("recipe", "") or "",
           "config_hash": r.get("config_hash", ""),
           "searched": ", ".join(f"{k}={_fmt_value(v)}" for k, v in sorted(searched.items()))}
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
    """Keep, per (variant, task, seed, shots), the record with the best select_score (ties: first hash)."""
    if ok.empty or not keys:
        return ok
    cols = ["variant", "task", "seed", "shots"]
    ranked = ok.assign(_s=ok["select_score"].astype(float), _n=ok["shots"].fillna(-1)).sort_values(
        ["_s", "config_hash"], ascending=[False, True])
    return ranked.drop_duplicates(subset=cols[:-1] + ["_n"]).drop(columns=["_s", "_n"])


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


def _cell(values) -> Cell:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return Cell()
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return Cell(mean, std, len(vals))


def _mean_of(cells: list[Cell]) -> Cell:
    """Mean of cell means; missing when any is missing (never an average of what happens to be there)."""
    if not cells or any(c.missing for c in cells):
        return Cell()
    return Cell(sum(c.mean for c in cells) / len(cells), None, min(c.n for c in cells))


def _params_m(sub, paper: bool) -> float | None:
    col = "params_paper" if paper else "params"
    vals = sub[col].dropna()
    return float(vals.max()) / 1e6 if len(vals) else None


def _add_means(cells: dict[str, Cell], datasets: list[str], groups: dict[str, str], group_names: list[str]) -> None:
    for g in group_names:
        cells[f"mean:{g}"] = _mean_of([cells.get(d, Cell()) for d in datasets if groups.get(d) == g])
    if len(group_names) > 1:
        cells["mean:groups"] = _mean_of([cells[f"mean:{g}"] for g in group_names])
    cells["mean:all"] = _mean_of([cells.get(d, Cell()) for d in datasets])


def _delta(ours: Row, pub: Row, label: str) -> Row:
    cells = {k: Cell(c.mean - pub.cells[k].mean) for k, c in ours.cells.items()
             if not c.missing and k in pub.cells and not pub.cells[k].missing}
    return Row(label, "delta", cells, ours.section)


def _selection_note(ok) -> list[str]:
    sel = sorted(set(ok["selection"].dropna())) if not ok.empty else []
    notes = {"reproduction": "reproduction: best of the periodic test evaluations (as the published VTAB-1k "
                             "tables; test data selects the epoch)",
             "clean": "clean: epoch selected on the validation split, test evaluated once"}
    return [f"Selection: {'; '.join(notes.get(s, s) for s in sel)}."] if sel else []


DATA_SOURCE = {"vtab": "NOAH's VTAB-1k jpg export with list files (not TFDS tensors; the two sources differ by up "
                       "to ~10 points on some datasets)",
               "fewshot": "NOAH's few-shot split files", "domain": "NOAH's 16-shot ImageNet lists"}


def _protocol_note(ok, benchmark: str) -> list[str]:
    """The protocol choices that split the literature (petlbench/reference/conventions.md), as measured."""
    if ok.empty:
        return []
    def values(col):
        return ", ".join(sorted({str(v) for v in ok[col].dropna()})) or "?"
    seeds = sorted({int(s) for s in ok["seed"].dropna()})
    parts = [f"Protocol of the measured rows: backbone {values('backbone')}, weights {values('weights')}, "
             f"normalisation {values('normalize')}, seeds {', '.join(map(str, seeds)) or '?'}"]
    if benchmark in DATA_SOURCE:
        parts.append(f"data {DATA_SOURCE[benchmark]}")
    return ["; ".join(parts) + "."]


def _recipes(ok) -> list[str]:
    return list(ok["recipe"]) if not ok.empty and "recipe" in ok else []


def _search_note(ok, keys: tuple[str, ...]) -> list[str]:
    if not keys or ok.empty or not ok["searched"].any():
        return []
    out = []
    for variant, sub in ok[ok["searched"] != ""].groupby("variant", sort=True):
        picks = ", ".join(f"{d} {'/'.join(sorted(set(s)))}" for d, s in sub.groupby("dataset")["searched"])
        out.append(f"{variant}: {'/'.join(keys)} chosen per dataset (and seed) by the run's selection rule: {picks}.")
    return out


# --- published numbers -------------------------------------------------------------------------------------
def published(benchmark: str, reference_dir: str = REFERENCE_DIR):
    """Published numbers as a long frame: key, label, dataset, shots, value, params_m, source. Empty when the
    reference folder has none for the benchmark."""
    import pandas as pd

    cols = ["key", "label", "dataset", "shots", "value", "params_m", "source", "recipe"]
    path = {"vtab": "vtab1k_vitb16_published.csv", "fewshot": "fewshot_published.csv",
            "video": "video_published.csv", "seg": "dense_published.csv"}.get(benchmark)
    if path is None or not os.path.isfile(os.path.join(reference_dir, path)):
        return pd.DataFrame(columns=cols)
    df = pd.read_csv(os.path.join(reference_dir, path))
    df["recipe"] = df["recipe"].fillna("").astype(str) if "recipe" in df.columns else ""
    if benchmark == "vtab":
        ds = [c for c in df.columns if c not in ("method", "params_m", "average_of_group_means", "source", "recipe")]
        long = df.melt(id_vars=["method", "params_m", "source", "recipe"], value_vars=ds, var_name="dataset")
        long["dataset"] = long["dataset"].replace(PUBLISHED_ALIASES)
        printed = df[["method", "params_m", "source", "recipe", "average_of_group_means"]].rename(
            columns={"average_of_group_means": "value"}).assign(dataset="mean:groups")
        long = pd.concat([long, printed], ignore_index=True)
        long["key"] = long["method"]
        long["shots"] = None
    elif benchmark == "fewshot":
        long = df.rename(columns={"top1": "value"})
        long["key"] = long["method"].str.lower()
        long["params_m"] = None
    elif benchmark == "video":
        long = df.rename(columns={"top1": "value"})
        long["key"] = long["method"].str.lower() + " (" + long["backbone"] + ")"
        long["shots"] = None
    else:  # segmentation: the ADE20K rows only
        long = df[df["dataset"] == "ade20k"].rename(columns={"value_pct": "value"})
        long["key"] = long["method"].str.lower() + " (" + long["backbone"] + ")"
        long["shots"] = None
    long["label"] = [DISPLAY.get(k, m) if benchmark in ("vtab", "fewshot") else f"{m} ({b})"
                     for k, m, b in zip(long["key"], long["method"], long.get("backbone", long["method"]))]
    # A published configuration pairs (delta rows) only with measured rows of the same recipe.
    long["key"] = [recipe_key(k, r) for k, r in zip(long["key"], long["recipe"])]
    return long[cols].reset_index(drop=True)


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
def _dataset_order(ok, benchmark: str, reference_dir: str) -> tuple[list[str], dict[str, str]]:
    """Datasets of a benchmark with their groups, from the records (no registry import). VTAB-1k always has
    its 19 datasets, in the papers' column order (Natural, Specialized, Structured)."""
    groups = dict(zip(ok["dataset"], ok["group"])) if not ok.empty else {}
    order = sorted(groups)
    if benchmark == "vtab":
        ref = published("vtab", reference_dir)
        vt = [d for d in dict.fromkeys(ref["dataset"]) if not d.startswith("mean:")]
        for d, g in zip(vt, VTAB_ORDER_GROUPS):
            groups.setdefault(d, g)
        order = vt + [d for d in order if d not in vt]
    elif benchmark == "fewshot":  # the five datasets always: an average over fewer is not the benchmark's
        order = sorted(set(order) | set(published("fewshot", reference_dir)["dataset"]))
        for d in order:
            groups.setdefault(d, "")
    gnames = [g for g in VTAB_GROUPS if g in groups.values()] + sorted(
        {g for g in groups.values() if g and g not in VTAB_GROUPS})
    order.sort(key=lambda d: gnames.index(groups[d]) if groups.get(d) in gnames else len(gnames))
    return order, groups


def _measured_rows(ok) -> list[Row]:
    """A row per variant of the finished records `ok`, a cell per dataset (mean over seeds), baselines first."""
    rows = []
    if not ok.empty:
        for variant, sub in ok.groupby("variant", sort=False):
            cells = {d: _cell(s["value"]) for d, s in sub.groupby("dataset")}
            rows.append(Row(variant, "ours", cells, params_m=_params_m(sub, paper=True), key=sub["key"].iloc[0]))
    rows.sort(key=lambda r: (r.key not in ("full", "linear"), r.label))
    return rows


def _published_row(key: str, sub, cells: dict[str, Cell]) -> Row:
    """The row of one published configuration (`sub`: its rows of `published()`)."""
    return Row(published_label(sub["label"].iloc[0], sub["recipe"].iloc[0]), f"published: {sub['source'].iloc[0]}",
               cells,
               params_m=float(sub["params_m"].iloc[0]) if sub["params_m"].notna().any() else None, key=key)


def grouped_table(frame, benchmark: str, name: str, title: str, search: tuple[str, ...] = (),
                  reference_dir: str = REFERENCE_DIR, with_published: bool = True,
                  only_measured_datasets: bool = False) -> Table:
    """VTAB-style table of one benchmark: a row per variant, a column per dataset, group means, both averages;
    published rows beside measured ones, with deltas."""
    ok = frame[(frame["benchmark"] == benchmark) & (frame["status"] == "ok")] if not frame.empty else frame
    ok = collapse_search(ok, search)
    order, groups = _dataset_order(ok, benchmark, reference_dir)
    if only_measured_datasets and not ok.empty:
        present = set(ok["dataset"])
        order = [d for d in order if d in present]
    gnames = [g for g in dict.fromkeys(groups[d] for d in order) if g]
    columns = [Column(d, d.replace("_", " "), groups.get(d, "")) for d in order]
    columns += [Column(f"mean:{g}", g, "Means") for g in gnames]
    if len(gnames) > 1:
        columns.append(Column("mean:groups", "Avg. of group means", "Means"))
    columns.append(Column("mean:all", f"Mean of {len(order)}", "Means"))
    table = Table(name, title, columns)
    pub = published(benchmark, reference_dir) if with_published else published("none")
    pub_rows: dict[str, Row] = {}
    for key, sub in pub.groupby("key", sort=False):
        cells = {d: _cell([v]) for d, v in zip(sub["dataset"], sub["value"]) if d in order}
        _add_means(cells, order, groups, gnames)
        printed = sub[sub["dataset"] == "mean:groups"]["value"]
        if len(printed):  # the paper's own average (from unrounded numbers), not ours from its rounded columns
            cells["mean:groups"] = _cell(printed)
        pub_rows[key] = _published_row(key, sub, cells)
    ours = _measured_rows(ok)
    for row in ours:
        _add_means(row.cells, order, groups, gnames)
    table.rows += _with_deltas(ours + list(pub_rows.values()))
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
    table.notes += _selection_note(ok) + _protocol_note(ok, benchmark) + _search_note(ok, search)
    table.notes += recipe_notes(list(_recipes(ok)) + list(pub["recipe"]))
    if pub_rows:
        table.notes.append("Published rows: " + "; ".join(
            f"{r.label.split(' (published')[0]}: {r.source.removeprefix('published: ')}"
            for r in pub_rows.values()) + ".")
    return table


# Segmentation columns: task dataset -> header. Published ADE20K rows (V-PETL Bench, Swin-L) get a column of their
# own: another backbone and decode head, never a baseline for the ViT columns.
SEG_HEADERS = {"ade20k": "SETR-PUP, ViT-L/16", "ade20k-upernet": "UperNet, ViT-B/16"}
SEG_PUBLISHED = "ade20k:published-setting"


def seg_table(frame, search: tuple[str, ...] = (), reference_dir: str = REFERENCE_DIR) -> Table:
    """ADE20K: a row per variant, a column per measured setting (decode head + backbone), single-scale mIoU;
    published rows in their own column (their setting differs)."""
    ok = frame[(frame["benchmark"] == "seg") & (frame["status"] == "ok")] if not frame.empty else frame
    ok = collapse_search(ok, search)
    measured = sorted(set(ok["dataset"])) if not ok.empty else []
    order = [d for d in SEG_HEADERS if d in measured] + [d for d in measured if d not in SEG_HEADERS]
    if not order:
        order = list(SEG_HEADERS)
    pub = published("seg", reference_dir)
    columns = [Column(d, SEG_HEADERS.get(d, d), "Measured here") for d in order]
    if not pub.empty:
        backbones = ", ".join(sorted({lab.rsplit("(", 1)[-1].rstrip(")") for lab in pub["label"]}))
        columns.append(Column(SEG_PUBLISHED, f"V-PETL Bench setting, {backbones}", "Published"))
    table = Table("seg", "ADE20K semantic segmentation (150 classes, 512x512): single-scale mIoU (%)", columns)
    table.rows += _measured_rows(ok)
    table.rows += [_published_row(key, sub, {SEG_PUBLISHED: _cell(sub["value"])})
                   for key, sub in pub.groupby("key", sort=False)]
    table.notes += [
        "mIoU (%) over the 150 classes, single scale, of the final iteration on the validation split (ADE20K's "
        "test labels are not public; the papers report validation), computed by mmsegmentation's IoUMetric. A cell "
        "is the mean over seeds (+- sample std when there are several, n in the CSV); missing cells are runs not "
        "in the store, never zeros. aAcc and mAcc are in each run's record.",
        "Params (M): backbone-side trainable parameters in millions in each method's paper convention (RepAdapter: "
        "adapter weights; it also trains the backbone biases here, as its paper does for segmentation), decode and "
        "auxiliary heads excluded (the heads' counts are in the records).",
        "RepAdapter's own ADE20K numbers (SETR, ViT-L/16) are not in the reference folder: no published row for "
        "the measured columns. The published column is another backbone and decode head; compare within a "
        "column only.",
    ]
    table.notes += _protocol_note(ok, "seg") + _search_note(ok, search)
    table.notes += recipe_notes(list(_recipes(ok)) + list(pub["recipe"]))
    if not pub.empty:
        table.notes.append("Published rows: " + "; ".join(sorted({str(x) for x in pub["source"]})) + ".")
    return table


def _with_deltas(rows: list[Row]) -> list[Row]:
    """`rows`, each measured row with a published twin (same key) followed by its delta row."""
    pub = {r.key: r for r in rows if r.source.startswith("published") and r.key}
    out = []
    for r in rows:
        out.append(r)
        if r.source == "ours" and r.key in pub:
            out.append(_delta(r, pub[r.key], f"  delta vs {pub[r.key].label}"))
    return out


def fewshot_table(frame, search: tuple[str, ...] = (), reference_dir: str = REFERENCE_DIR) -> Table:
    """Rows: (dataset section, variant); columns: shots 1..16; a last section averages the five datasets."""
    ok = frame[(frame["benchmark"] == "fewshot") & (frame["status"] == "ok")] if not frame.empty else frame
    ok = collapse_search(ok, search)
    columns = [Column(f"shot:{k}", f"{k}-shot", "Shots per class") for k in SHOTS]
    table = Table("fewshot", "Few-shot FGVC (ViT-B/16): top-1 (%) vs shots per class", columns)
    pub = published("fewshot", reference_dir)
    datasets, _ = _dataset_order(ok, "fewshot", reference_dir)
    sections: dict[str, list[Row]] = {}
    for d in datasets:
        rows = []
        if not ok.empty:
            for variant, sub in ok[ok["dataset"] == d].groupby("variant", sort=True):
                cells = {f"shot:{int(k)}": _cell(s["value"]) for k, s in sub.groupby("shots")}
                rows.append(Row(variant, "ours", cells, d, _params_m(sub, paper=True), sub["key"].iloc[0]))
        for key, sub in pub[pub["dataset"] == d].groupby("key", sort=True):
            rows.append(Row(published_label(sub["label"].iloc[0], sub["recipe"].iloc[0]),
                            f"published: {sub['source'].iloc[0]}",
                            {f"shot:{int(k)}": _cell([v]) for k, v in zip(sub["shots"], sub["value"])}, d, key=key))
        sections[d] = rows
    avg = "average of 5 datasets"
    labels = {r.label: r for rows in sections.values() for r in rows}
    sections[avg] = []
    for label, first in labels.items():
        by_ds = {d: next((r for r in rows if r.label == label), None) for d, rows in sections.items() if d != avg}
        cells = {c: _mean_of([by_ds[d].cells.get(c, Cell()) if by_ds.get(d) else Cell() for d in datasets])
                 for c in (col.key for col in columns)}
        sections[avg].append(Row(label, first.source, cells, avg, first.params_m, first.key))
    for rows in sections.values():
        table.rows += _with_deltas(rows)
    table.notes += [
        "Few-shot FGVC in the NOAH/FacT/RepAdapter sense (FGVC-Aircraft, Food-101, Flowers102, Oxford-Pets, "
        "Stanford-Cars; NOAH's split files), not VPT's full-data FGVC. A cell is the mean over split seeds "
        "(+- sample std); the average section is the mean over the five datasets, missing if one is missing.",
        "Published rows: the numbers behind FacT's and NOAH's few-shot figures as their authors posted them "
        "(seeds averaged: not stated by the source). RepAdapter's own few-shot numbers were not found in a "
        "readable source and are not shown.",
    ] + _selection_note(ok) + _protocol_note(ok, "fewshot") + _search_note(ok, search)
    table.notes += recipe_notes(list(_recipes(ok)) + list(pub["recipe"]))
    return table


def domain_table(frame, search: tuple[str, ...] = ()) -> Table:
    """Source (ImageNet 16-shot) and the four targets, from the same runs."""
    ok = frame[(frame["benchmark"] == "domain") & (frame["status"] == "ok")] if not frame.empty else frame
    ok = collapse_search(ok, search)
    # The four targets always (a mean over fewer is not the benchmark's), then any other target in the records.
    extra = [c.removeprefix("target:") for c in frame.columns if c.startswith("target:")] if not frame.empty else []
    targets = list(DG_TARGETS) + [t for t in extra if t not in DG_TARGETS]
    names = {"domain/imagenet_v2": "ImageNet-V2", "domain/imagenet_sketch": "ImageNet-Sketch",
             "domain/imagenet_a": "ImageNet-A", "domain/imagenet_r": "ImageNet-R"}
    columns = [Column("source", "ImageNet (16-shot)", "Source")]
    columns += [Column(t, names.get(t, t), "Targets") for t in targets]
    columns.append(Column("mean:targets", "Mean of targets", "Means"))
    table = Table("domain", "Domain generalization (ViT-B/16, ImageNet 16-shot -> V2 / Sketch / A / R): top-1 (%)",
                  columns)
    if not ok.empty:
        for variant, sub in ok.groupby("variant", sort=True):
            cells = {"source": _cell(sub["value"])}
            for t in targets:
                col = f"target:{t}"
                cells[t] = _cell(sub[col]) if col in sub else Cell()
            cells["mean:targets"] = _mean_of([cells[t] for t in targets])
            table.rows.append(Row(variant, "ours", cells, params_m=_params_m(sub, paper=True)))
    table.notes += [
        "Targets are scored with the source run's model, unchanged; ImageNet-A/-R on their 200 classes "
        "(the authors' eval.py). NOAH scored A/R with a 1000-way argmax, so these are not comparable with NOAH's.",
        "A missing target cell: that target's data was absent when the run finished (the record says so).",
        "No published domain-generalization numbers are in petlbench/reference (RepAdapter's were not found in a "
        "readable source), so there are no published rows.",
    ] + _selection_note(ok) + _protocol_note(ok, "domain") + _search_note(ok, search)
    table.notes += recipe_notes(_recipes(ok))
    return table


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
    notes = sorted({f"{m}: {n}" for m, n in zip(df["method"], df.get("notes", [""] * len(df))) if isinstance(n, str) and n})
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
