"""Presentation: a `tables.Table` as Markdown, LaTeX (booktabs) and CSV; writing every table of the suite from
the store. Plots are in `plots.py`. Numbers come from the store's records (`tables.run_frame`), never from logs."""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from typing import Any

from .atomic import atomic_write_text as write_text
from .tables import Cell, Table

MISSING_MD, MISSING_TEX = "–", "--"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    align = ["---:" if i else ":---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _num(v: float, digits: int) -> str:
    return f"{int(round(v)):,}" if digits == 0 else f"{v:.{digits}f}"


def _cell_text(c: Cell, digits: int, delta: bool, pm: str) -> str | None:
    if c.missing:
        return None
    text = (f"{c.mean:+.{digits}f}" if delta else _num(c.mean, digits))
    if c.std is not None and not delta:
        text += f" {pm} {c.std:.{digits}f}"
    if c.lo is not None and c.hi is not None and not (isinstance(c.lo, float) and math.isnan(c.lo)):
        text += f" [{c.lo:.2f}-{c.hi:.2f}]"
    return text


def _params_text(v: float | None) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return "0" if v == 0 else f"{v:.3g}" if v < 0.1 else f"{v:.2f}" if v < 10 else f"{v:.1f}"


def _rows(table: Table, pm: str, bold: Callable[[str], str], missing: str):
    """(section, label, source, [params] + cell texts) for every row, best per column in bold."""
    best = table.best() if table.bold_best else {}
    for r in table.rows:
        delta = r.source == "delta"
        texts = []
        if table.params_column:
            texts.append(("" if delta else _params_text(r.params_m)) or ("" if delta else missing))
        for col in table.columns:
            c = r.cells.get(col.key, Cell())
            t = _cell_text(c, col.digits, delta, pm)
            if t is None:
                texts.append("" if delta else missing)
            elif not delta and (r.section, col.key) in best and abs(c.mean - best[(r.section, col.key)]) < 1e-9:
                texts.append(bold(t))
            else:
                texts.append(t)
        yield r.section, r.label, r.source, texts


def _has_sections(table: Table) -> bool:
    return any(r.section for r in table.rows)


def to_markdown(table: Table) -> str:
    """GitHub Markdown: a title, the table (column groups in the header, best per column bold), the notes."""
    sect = _has_sections(table)
    header = (["Section"] if sect else []) + ["Method"] + (["Params (M)"] if table.params_column else [])
    heads = [c.header for c in table.columns]
    if len(set(heads)) < len(heads):  # "ms | x plain | ms | x plain": say which group each is
        heads = [f"{c.group} {c.header}" if c.group else c.header for c in table.columns]
    header += heads
    groups: dict[str, list[str]] = {}
    for c in table.columns:
        if c.group:
            groups.setdefault(c.group, []).append(c.header)
    legend = ("Column groups: " + "; ".join(f"**{g}**: {', '.join(h)}" for g, h in groups.items()) + ".\n\n"
              if len(groups) > 1 and heads == [c.header for c in table.columns] else "")
    rows, last = [], None
    for section, label, source, texts in _rows(table, "±", lambda t: f"**{t}**", MISSING_MD):
        shown = section if section != last else ""
        last = section
        label = f"*{label.strip()}*" if source == "delta" else label
        rows.append(([shown] if sect else []) + [label] + [f"*{t}*" if source == "delta" and t else t for t in texts])
    notes = "\n".join(f"- {n}" for n in table.notes)
    return f"# {table.title}\n\n" + legend + markdown_table(header, rows) + ("\n\n" + notes if notes else "") + "\n"


_TEX_ESCAPE = {"&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_", "$": r"\$", "{": r"\{", "}": r"\}",
               "~": r"\textasciitilde{}", "^": r"\^{}", "\\": r"\textbackslash{}"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in str(text))


def to_latex(table: Table) -> str:
    """A booktabs `table*`: spanning column-group headers with cmidrules, \\textbf best per column, -- for
    missing, deltas in italics; the notes as LaTeX comments above and as the caption's second sentence."""
    sect = _has_sections(table)
    lead = (1 if sect else 0) + 1 + (1 if table.params_column else 0)
    lines = [f"% {n}" for n in table.notes]
    lines += ["% Needs \\usepackage{booktabs}.", "\\begin{table*}[t]", "\\centering", "\\small",
              "\\setlength{\\tabcolsep}{3pt}", f"\\begin{{tabular}}{{{'l' * lead}{'r' * len(table.columns)}}}",
              "\\toprule"]
    spans, i = [], 0
    while i < len(table.columns):
        j = i
        while j + 1 < len(table.columns) and table.columns[j + 1].group == table.columns[i].group:
            j += 1
        spans.append((table.columns[i].group, lead + i + 1, lead + j + 1))
        i = j + 1
    if any(g for g, _, _ in spans):
        cells = [""] * lead
        for g, a, b in spans:
            cells += [f"\\multicolumn{{{b - a + 1}}}{{c}}{{{tex_escape(g)}}}"] if g else [""] * (b - a + 1)
        lines.append(" & ".join(cells) + " \\\\")
        lines.append(" ".join(f"\\cmidrule(lr){{{a}-{b}}}" for g, a, b in spans if g))
    header = (["Section"] if sect else []) + ["Method"] + (["Params (M)"] if table.params_column else [])
    header += [tex_escape(c.header) for c in table.columns]
    lines += [" & ".join(header) + " \\\\", "\\midrule"]
    last = None
    for section, label, source, texts in _rows(table, "$\\pm$", lambda t: f"\\textbf{{{t}}}", MISSING_TEX):
        if sect and last is not None and section != last:
            lines.append("\\midrule")
        shown = tex_escape(section) if section != last else ""
        last = section
        lab = tex_escape(label.strip())
        if source == "delta":
            lab, texts = f"\\quad\\textit{{{lab}}}", [f"\\textit{{{t}}}" if t else "" for t in texts]
        lines.append(" & ".join(([shown] if sect else []) + [lab] + texts) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", f"\\caption{{{tex_escape(table.title)}.}}",
              f"\\label{{tab:{table.name}}}", "\\end{table*}"]
    return "\n".join(lines) + "\n"


def to_frame(table: Table):
    """The table as a wide DataFrame: section, method, source, params_m, then per column its mean; std and n
    columns after (`<key> std`, `<key> n`). Missing cells are empty, never 0."""
    import pandas as pd

    out = []
    for r in table.rows:
        row: dict[str, Any] = {"section": r.section, "method": r.label.strip(), "source": r.source,
                               "params_m": r.params_m}
        for c in table.columns:
            cell = r.cells.get(c.key, Cell())
            row[c.key] = None if cell.missing else cell.mean
        for c in table.columns:
            cell = r.cells.get(c.key, Cell())
            row[f"{c.key} std"], row[f"{c.key} n"] = cell.std, (cell.n or None)
        out.append(row)
    df = pd.DataFrame(out)
    return df.drop(columns=["section"]) if not _has_sections(table) and "section" in df else df


def write_table(table: Table, out_dir: str) -> dict[str, str]:
    """`<name>.md`, `<name>.tex` and `<name>.csv` under `out_dir`."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"{table.name}.{ext}") for ext in ("md", "tex", "csv")}
    write_text(paths["md"], to_markdown(table))
    write_text(paths["tex"], to_latex(table))
    write_text(paths["csv"], to_frame(table).to_csv(index=False, float_format="%.6g"))
    return paths


def write_efficiency(df, meta: dict, out_dir: str, stem: str) -> dict[str, str]:
    """Write `<stem>.csv` (raw numbers, the data) and `<stem>.json` (how it was made), then the table."""
    from .tables import efficiency_table

    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"{stem}.{ext}") for ext in ("csv", "json")}
    write_text(paths["csv"], df.to_csv(index=False, float_format="%.6g"))
    write_text(paths["json"], json.dumps(meta, indent=2, sort_keys=True) + "\n")
    t = efficiency_table(df, meta, stem)
    paths["md"] = os.path.join(out_dir, f"{stem}.md")
    write_text(paths["md"], to_markdown(t))
    write_text(os.path.join(out_dir, f"{stem}.tex"), to_latex(t))
    return paths


# --- the whole suite, from the store ------------------------------------------------------------------------
def suite_tables(frame, search: tuple[str, ...] = (), reference_dir: str | None = None,
                 results_dir: str | None = None) -> list[tuple[str, Table]]:
    """(results subfolder, Table) for every benchmark in `frame`, and for every registered benchmark that is
    `always` shown (published rows alone when nothing is measured yet), in the benchmarks' `order`. Each
    benchmark builds its own tables (`Benchmark.tables`) or gets the default grouped table."""
    from . import tables as T
    from .benchmark import BENCHMARKS, get

    ref = reference_dir or T.REFERENCE_DIR
    present = set(frame["benchmark"]) if not frame.empty else set()
    names = present | {n for n in BENCHMARKS.names() if BENCHMARKS.get(n).always}
    out = []
    for bench in sorted((get(n) for n in names), key=lambda b: (b.order, b.name)):
        made = (bench.tables(bench, frame, search, ref, results_dir) if bench.tables is not None else
                [T.grouped_table(frame, bench, search, ref)])
        out += [(bench.name, t) for t in made]
    return out


def efficiency_sources(eff_dir: str):
    """(stem, frame, meta) of every efficiency CSV with its JSON beside it (written by `petlbench bench`)."""
    import pandas as pd

    out = []
    if not os.path.isdir(eff_dir):
        return out
    for name in sorted(os.listdir(eff_dir)):
        stem, ext = os.path.splitext(name)
        meta_path = os.path.join(eff_dir, stem + ".json")
        if ext != ".csv" or not os.path.isfile(meta_path):
            continue
        df = pd.read_csv(os.path.join(eff_dir, name))
        if not any(c.startswith("latency_ms_bs") for c in df.columns):
            continue
        with open(meta_path, encoding="utf-8") as f:
            out.append((stem, df, json.load(f)))
    return out


def write_tables(frame, results_dir: str, search: tuple[str, ...] = (), reference_dir: str | None = None,
                 only: tuple[str, ...] = ()) -> list[str]:
    """Every table of the suite (Markdown, LaTeX, CSV) under `results_dir/<benchmark>/`, efficiency included;
    `only`: just these results subfolders."""
    from .tables import efficiency_table

    paths = []
    for sub, table in suite_tables(frame, search, reference_dir, results_dir):
        if not only or sub in only:
            paths += write_table(table, os.path.join(results_dir, sub)).values()
    if only and "efficiency" not in only:
        return paths
    eff_dir = os.path.join(results_dir, "efficiency")
    for stem, df, meta in efficiency_sources(eff_dir):
        t = efficiency_table(df, meta, stem)
        for ext, text in (("md", to_markdown(t)), ("tex", to_latex(t))):
            path = os.path.join(eff_dir, f"{stem}.{ext}")
            write_text(path, text)
            paths.append(path)
    return paths


def plot_table(benchmark: str, table, out: str) -> list[str]:
    """The plots of one of `benchmark`'s tables, drawn into the folder `out`: its `Benchmark.plots`, or by default
    accuracy vs parameters. Returns the paths written."""
    from . import plots
    from .benchmark import get

    draw = get(benchmark).plots
    if draw is not None:
        return draw(table, out)
    return plots.accuracy_vs_params(table, os.path.join(out, f"{table.name}_accuracy_vs_params"))


def write_plots(frame, results_dir: str, search: tuple[str, ...] = (), reference_dir: str | None = None,
                only: tuple[str, ...] = ()) -> list[str]:
    """Each benchmark's plots (`Benchmark.plots`; default accuracy vs parameters), latency vs batch size per
    efficiency run."""
    from . import plots

    paths = []
    for sub, table in suite_tables(frame, search, reference_dir):
        if only and sub not in only:
            continue
        paths += plot_table(sub, table, os.path.join(results_dir, sub))
    if only and "efficiency" not in only:
        return paths
    for stem, df, meta in efficiency_sources(os.path.join(results_dir, "efficiency")):
        paths += plots.latency_vs_batch(df, meta, os.path.join(results_dir, "efficiency", f"{stem}_latency"))
    return paths
