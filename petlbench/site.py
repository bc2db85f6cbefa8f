"""Presentation as a static web site: every table of the suite (`report.suite_tables`, the `tables.Table`s that
`petlbench table` writes as Markdown) rendered as HTML, from the result store alone.

    OUT_DIR/index.html                 the benchmarks, with their record counts, and the efficiency page
    OUT_DIR/<benchmark>/index.html     its tables (measured, published and delta rows, sortable by any column),
                                       the notes under each (protocol, recipes, selection), its plots (PNG, PDF)
                                       and, per measured row, the records its cells average
    OUT_DIR/efficiency/index.html      the `petlbench bench` tables under `results/efficiency/`, when there are any
    OUT_DIR/records/<hash>.json        each record, as the store holds it

No template engine, no stylesheet or script from elsewhere: every page carries its own CSS and a small sorter, so the
folder works opened from disk, offline. Every text from a record or a table is HTML-escaped. A page opened with
`?selftest=1` sorts its first sortable column itself, checks the order, and reports on the `<html>` element
(`data-selftest`), as it reports any script error (`data-errors`, and the page's error box): what
tests/test_site.py reads through headless Chromium. Same store, same files: the pages carry no date.
"""
from __future__ import annotations

import html
import importlib.util
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Iterable
from typing import Any

from .atomic import atomic_write_text as write_text
from .report import _cell_text, _params_text
from .tables import Cell, Table

log = logging.getLogger(__name__)

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:98vw;padding:0 1em 3em;color:#1b1b1b}
nav{padding:.6em 0;border-bottom:1px solid #ccc;margin-bottom:1em}
table{border-collapse:collapse;margin:.5em 0 1em;font-variant-numeric:tabular-nums}
th,td{padding:.2em .5em;border-bottom:1px solid #e3e3e3;text-align:right;white-space:nowrap}
th:first-child,td:first-child,td.text,th.text{text-align:left}
td.label{white-space:normal;min-width:14em}
thead{position:sticky;top:0}thead th{background:#f3f3f3}th.group{text-align:center}
th[data-sort]{cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tr.section th{background:#e8eef6;text-align:left}
tr.published td{color:#555;background:#fafafa}
tr.delta td{color:#666;font-style:italic;font-size:92%}
.scroll{overflow-x:auto}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}
#page-errors{color:#a00;background:#fee;padding:.5em;white-space:pre-wrap}
ul.notes li{margin:.25em 0;max-width:75em}
"""

# The sorter. Rows sort within their <tbody> (one per table section), a delta row stays under the row it belongs
# to (same data-group), a missing cell sorts last in either direction; numbers from data-v, text from the cell.
JS = r"""
(function () {
  "use strict";
  var errors = [];
  function report(msg) {
    errors.push(String(msg));
    document.documentElement.setAttribute("data-errors", String(errors.length));
    var box = document.getElementById("page-errors");
    if (box) { box.hidden = false; box.textContent = errors.join("\n"); }
  }
  window.addEventListener("error", function (e) { report("error: " + (e.message || e)); });
  window.addEventListener("unhandledrejection", function (e) { report("unhandled rejection: " + e.reason); });
  var consoleError = console.error;
  console.error = function () {
    report("console.error: " + Array.prototype.join.call(arguments, " "));
    return consoleError.apply(console, arguments);
  };

  function key(row, col, type) {
    var cell = row.cells[col];
    if (!cell) { return null; }
    var v = cell.getAttribute("data-v");
    if (type === "num") { return v === null || v === "" ? null : parseFloat(v); }
    return (v === null ? cell.textContent : v).trim().toLowerCase() || null;
  }
  function groups(body, col, type) {
    var out = [];
    Array.prototype.forEach.call(body.rows, function (row) {
      if (row.classList.contains("section")) { return; }
      if (row.classList.contains("delta") && out.length) { out[out.length - 1].rows.push(row); return; }
      out.push({rows: [row], key: key(row, col, type), i: out.length});
    });
    return out;
  }
  function sortBy(th) {
    var table = th.closest("table"), col = parseInt(th.getAttribute("data-col"), 10);
    var type = th.getAttribute("data-sort"), now = th.getAttribute("aria-sort");
    var dir = now === "descending" ? 1 : now === "ascending" ? -1 : (type === "num" ? -1 : 1);
    table.tHead.querySelectorAll("th[data-sort]").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    Array.prototype.forEach.call(table.tBodies, function (body) {
      var gs = groups(body, col, type);
      gs.sort(function (a, b) {
        if (a.key === null || b.key === null) { return (a.key === null) - (b.key === null) || a.i - b.i; }
        return a.key < b.key ? -dir : a.key > b.key ? dir : a.i - b.i;
      });
      gs.forEach(function (g) { g.rows.forEach(function (r) { body.appendChild(r); }); });
    });
  }
  function sorted(table, th) {
    var col = parseInt(th.getAttribute("data-col"), 10), type = th.getAttribute("data-sort");
    var dir = th.getAttribute("aria-sort") === "ascending" ? 1 : -1;
    return Array.prototype.every.call(table.tBodies, function (body) {
      var keys = groups(body, col, type).map(function (g) { return g.key; });
      var present = keys.filter(function (k) { return k !== null; });
      var i;
      for (i = 0; i < keys.length - 1; i++) { if (keys[i] === null && keys[i + 1] !== null) { return false; } }
      for (i = 0; i < present.length - 1; i++) {
        if ((present[i] < present[i + 1] ? 1 : present[i] > present[i + 1] ? -1 : 0) * dir < 0) { return false; }
      }
      return true;
    });
  }
  function order(table) {
    return Array.prototype.map.call(table.querySelectorAll("tbody tr[data-group]"), function (r) {
      return r.getAttribute("data-group");
    }).join(",");
  }
  function selftest() {
    var ths = document.querySelectorAll("table.sortable th[data-sort=num]");
    for (var n = 0; n < ths.length; n++) {
      var th = ths[n], table = th.closest("table"), col = parseInt(th.getAttribute("data-col"), 10);
      var distinct = Array.prototype.some.call(table.tBodies, function (body) {
        var ks = groups(body, col, "num").map(function (g) { return g.key; });
        ks = ks.filter(function (k) { return k !== null; });
        return ks.some(function (k) { return k !== ks[0]; });
      });
      if (!distinct) { continue; }
      th.click();
      var first = order(table);
      if (th.getAttribute("aria-sort") !== "descending" || !sorted(table, th)) { return "fail: first click"; }
      th.click();
      if (th.getAttribute("aria-sort") !== "ascending" || !sorted(table, th)) { return "fail: second click"; }
      if (order(table) === first) { return "fail: the order did not change"; }
      return "pass: " + (table.id || "table") + " by " + th.textContent.trim();
    }
    return "skip: no column with two different values";
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("table.sortable th[data-sort]").forEach(function (th) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortBy(th); });
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") { sortBy(th); } });
    });
    if (/[?&]selftest=1\b/.test(location.search)) {
      var result;
      try { result = selftest(); } catch (e) { result = "fail: " + e; report(e); }
      document.documentElement.setAttribute("data-selftest", result);
      document.title = "selftest " + result;
    }
  });
})();
"""


def esc(text: Any) -> str:
    """`text` as HTML text (quotes too, so it is safe inside an attribute)."""
    return html.escape(str(text), quote=True)


def inline(text: str) -> str:
    """A footer note as HTML: escaped, then the notes' own markup (`code`, *emphasis*) rendered."""
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(text))
    return re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"<em>\1</em>", out)


def safe_name(name: str) -> str:
    """A file or folder name from a record's text (its benchmark, its config hash): nothing but [A-Za-z0-9_.-],
    no leading dot."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(name)).lstrip(".") or "_"


def page(title: str, body: str, root: str) -> str:
    """A whole HTML document; `root`: the relative path from the page to OUT_DIR ("" or "../")."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{CSS}</style><script>{JS}</script></head>\n<body>"
            f"<nav><a href=\"{root}index.html\">petlbench results</a></nav>"
            "<pre id=\"page-errors\" hidden></pre>\n"
            f"<main><h1>{esc(title)}</h1>\n{body}</main></body></html>\n")


def _num_attr(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f' data-v="{float(v)!r}"'


def table_html(table: Table, table_id: str, row_links: dict[int, tuple[str, int]] | None = None) -> str:
    """One `Table` as a sortable HTML table: a header row of column groups (when there are any), then Method,
    Source, Params (M) and the columns; a `<tbody>` per section; the best mean per (section, column) in bold, as
    in the Markdown; missing cells empty. `row_links`: row index -> (href, number of records) for measured rows."""
    row_links = row_links or {}
    best = table.best() if table.bold_best else {}
    lead = ["Method", "Source"] + (["Params (M)"] if table.params_column else [])
    head = []
    if any(c.group for c in table.columns):
        cells, i = [f'<th colspan="{len(lead)}"></th>'], 0
        while i < len(table.columns):
            j = i
            while j + 1 < len(table.columns) and table.columns[j + 1].group == table.columns[i].group:
                j += 1
            cells.append(f'<th colspan="{j - i + 1}" class="group">{esc(table.columns[i].group)}</th>')
            i = j + 1
        head.append("<tr>" + "".join(cells) + "</tr>")
    leaf = [("Method", "text"), ("Source", "text")] + ([("Params (M)", "num")] if table.params_column else [])
    head.append("<tr>" + _head(leaf + [(c.header, "num") for c in table.columns]) + "</tr>")
    bodies: list[tuple[str, list[str]]] = []
    group = -1
    for i, r in enumerate(table.rows):
        if not bodies or bodies[-1][0] != r.section:
            bodies.append((r.section, []))
        delta = r.source == "delta"
        group += 0 if delta else 1
        kind = "delta" if delta else "ours" if r.source == "ours" else "published"
        if r.source == "ours" and i in row_links:
            href, n = row_links[i]
            source = f'<a href="{esc(href)}">measured: {n} record{"s" if n != 1 else ""}</a>'
        else:
            source = "measured" if r.source == "ours" else esc(r.source.split(":", 1)[0])
        title = f' title="{esc(r.source)}"' if kind == "published" else ""
        tds = [f'<td class="label">{esc(r.label.strip())}</td>', f'<td class="text"{title}>{source}</td>']
        if table.params_column:
            pm = None if delta else r.params_m
            tds.append(f"<td{_num_attr(pm)}>{esc(_params_text(pm) or '')}</td>")
        for col in table.columns:
            c = r.cells.get(col.key, Cell())
            text = _cell_text(c, col.digits, delta, "±")
            if text is None:
                tds.append("<td></td>")
                continue
            shown = esc(text)
            if not delta and (r.section, col.key) in best and abs(c.mean - best[(r.section, col.key)]) < 1e-9:
                shown = f"<strong>{shown}</strong>"
            tds.append(f"<td{_num_attr(c.mean)}>{shown}</td>")
        bodies[-1][1].append(f'<tr class="{kind}" data-group="g{group}">' + "".join(tds) + "</tr>")
    span = len(lead) + len(table.columns)
    out = [f'<div class="scroll"><table class="sortable" id="{esc(table_id)}"><thead>' + "".join(head) + "</thead>"]
    for section, rows in bodies:
        top = f'<tr class="section"><th colspan="{span}">{esc(section)}</th></tr>' if section else ""
        out.append("<tbody>" + top + "".join(rows) + "</tbody>")
    return "\n".join(out) + "</table></div>\n"


def _head(cols: list[tuple[str, str]]) -> str:
    """Sortable header cells: (text, "num" or "text") each, numbered by their column."""
    cls = {"text": ' class="text"', "num": ""}
    return "".join(f'<th data-col="{i}" data-sort="{kind}"{cls[kind]}>{esc(text)}</th>'
                   for i, (text, kind) in enumerate(cols))


def _records_table(sub, root: str, with_variant: bool = False) -> str:
    """The records behind a row (or the failed runs): task, seed, split, selection, value or reason, its file."""
    cols = ["Task"] + (["Variant"] if with_variant else []) + ["Seed", "Training split", "Selection", "Status",
                                                              "Reason" if with_variant else "Value", "Record"]
    head = _head([(c, "num" if c in ("Seed", "Value") else "text") for c in cols])
    rows = []
    for g, r in enumerate(sub.to_dict("records")):
        seed = r.get("seed")
        seed = None if seed is None or (isinstance(seed, float) and math.isnan(seed)) else int(seed)
        name = safe_name(r["config_hash"])
        tds = [f'<td class="text">{esc(r["task"])}</td>']
        if with_variant:
            tds.append(f'<td class="text">{esc(r["variant"])}</td>')
        tds += [f"<td{_num_attr(seed)}>{'' if seed is None else seed}</td>",
                f'<td class="text">{esc(r.get("train_split") or "")}</td>',
                f'<td class="text">{esc(r.get("selection") or "")}</td>', f'<td class="text">{esc(r["status"])}</td>']
        if with_variant:
            tds.append(f'<td class="text label">{esc(r.get("reason") or "")}</td>')
        else:
            v = r.get("value")
            tds.append(f"<td{_num_attr(v)}>{'' if _num_attr(v) == '' else esc(f'{float(v):.2f}')}</td>")
        tds.append(f'<td class="text"><a href="{root}records/{esc(name)}.json"><code>{esc(name)}</code></a></td>')
        rows.append(f'<tr data-group="r{g}">' + "".join(tds) + "</tr>")
    return ('<div class="scroll"><table class="sortable records"><thead><tr>' + head + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></div>\n")


def _figures(paths: list[str], out_dir: str) -> str:
    out = []
    for p in paths:
        if not p.endswith(".png"):
            continue
        name = os.path.relpath(p, out_dir)
        pdf = p[:-4] + ".pdf"
        link = f' (<a href="{esc(os.path.relpath(pdf, out_dir))}">PDF</a>)' if pdf in paths else ""
        out.append(f'<figure><img src="{esc(name)}" alt="{esc(os.path.basename(p))}">'
                   f"<figcaption><code>{esc(os.path.basename(p))}</code>{link}</figcaption></figure>")
    return "\n".join(out) + "\n"


def _notes(table: Table) -> str:
    if not table.notes:
        return ""
    return '<ul class="notes">' + "".join(f"<li>{inline(n)}</li>" for n in table.notes) + "</ul>\n"


def _row_records(table: Table, ok) -> dict[int, Any]:
    """Measured row index -> the records its cells average: the finished records of its variant (after `--search`
    collapsed them), of its section's dataset when the section is one (a few-shot dataset), else of every dataset."""
    out = {}
    if ok.empty:
        return out
    datasets = set(ok["dataset"])
    for i, r in enumerate(table.rows):
        if r.source != "ours":
            continue
        sub = ok[ok["variant"] == r.label.strip()]
        if r.section in datasets:
            sub = sub[sub["dataset"] == r.section]
        if not sub.empty:
            out[i] = sub.sort_values(["task", "seed", "train_split", "config_hash"], na_position="last")
    return out


def _can_plot() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_site(records: Iterable[dict], out_dir: str, search: tuple[str, ...] = (), reference_dir: str | None = None,
               results_dir: str | None = None, plots: bool = True, problems=None) -> list[str]:
    """The site of `records` (store records, as `ResultStore.records` yields them) under `out_dir`; returns the
    paths written. `results_dir`: where `petlbench bench` wrote its efficiency CSVs (an efficiency page) and
    where benchmarks read their extra columns (video: latency). Plots are drawn from the same tables by each
    benchmark's own plot function (`Benchmark.plots`, as `petlbench plot`), when matplotlib is installed and
    `plots`. Unreadable records go to `problems` (a store.StoreProblems), as for `petlbench table`."""
    from .benchmark import get
    from .report import efficiency_sources, plot_table, suite_tables
    from .tables import collapse_search, efficiency_table, finished, run_frame

    records = list(records)
    frame = run_frame(records, search, problems)
    by_hash = {r["config_hash"]: r for r in records if isinstance(r, dict) and r.get("config_hash")}
    draw_plots = plots and _can_plot()
    if plots and not draw_plots:
        log.warning("site: matplotlib is not installed, so the pages have no plots (pip install 'petlbench[plots]')")
    paths: list[str] = []
    pages: dict[str, list[Table]] = {}
    for sub, table in suite_tables(frame, search, reference_dir, results_dir):
        pages.setdefault(sub, []).append(table)
    index_rows = []
    for sub, tables in pages.items():
        folder = safe_name(sub)
        out = os.path.join(out_dir, folder)
        os.makedirs(out, exist_ok=True)
        bench = get(sub)
        ok = collapse_search(finished(frame, sub), search)
        mine = frame[frame["benchmark"] == sub] if not frame.empty else frame
        parts, lists = [], []
        for t_i, table in enumerate(tables):
            tid = f"t{t_i}-{safe_name(table.name)}"
            linked = _row_records(table, ok)
            links = {}
            for i, recs in linked.items():
                anchor = f"{tid}-r{i}"
                links[i] = (f"#{anchor}", len(recs))
                row = table.rows[i]
                where = f" ({row.section})" if row.section else ""
                lists.append(f'<h3 id="{esc(anchor)}">{esc(row.label.strip())}{esc(where)}</h3>\n'
                             + _records_table(recs, "../"))
            parts.append(f"<h2>{esc(table.title)}</h2>\n" + table_html(table, tid, links))
            if draw_plots:
                made = plot_table(sub, table, out)
                paths += made
                parts.append(_figures(made, out))
            parts.append(_notes(table))
        if lists:
            parts.append("<h2>Records of the measured rows</h2>\n" + "\n".join(lists))
        failed = mine[mine["status"] == "failed"] if not mine.empty else mine
        if not failed.empty:
            parts.append("<h2>Failed runs</h2>\n" + _records_table(failed.sort_values(["task", "config_hash"]), "../",
                                                                    with_variant=True))
        path = os.path.join(out, "index.html")
        write_text(path, page(bench.title, "\n".join(parts), "../"))
        paths.append(path)
        n_pub = sum(r.source.startswith("published") for t in tables for r in t.rows)
        n_ours = sum(r.source == "ours" for t in tables for r in t.rows)
        index_rows.append((f"{folder}/index.html", sub, bench.title, n_ours, n_pub, len(ok), len(failed)))
    eff = efficiency_sources(os.path.join(results_dir, "efficiency")) if results_dir else []
    if eff:
        out = os.path.join(out_dir, "efficiency")
        os.makedirs(out, exist_ok=True)
        parts = []
        for k, (stem, df, meta) in enumerate(eff):
            table = efficiency_table(df, meta, stem)
            parts.append(f"<h2>{esc(table.title)} <small><code>{esc(stem)}</code></small></h2>\n"
                         + table_html(table, f"t{k}-{safe_name(stem)}"))
            made = _latency_plot(results_dir, stem, df, meta, out, draw_plots)
            paths += made
            parts.append(_figures(made, out))
            parts.append(_notes(table))
        path = os.path.join(out, "index.html")
        write_text(path, page("Efficiency: parameters, GMACs, latency, memory", "\n".join(parts), "../"))
        paths.append(path)
        index_rows.append(("efficiency/index.html", "efficiency", "petlbench bench: merged vs unmerged",
                           len(eff), 0, None, None))
    for h in frame["config_hash"] if not frame.empty else []:
        if h in by_hash:
            path = os.path.join(out_dir, "records", f"{safe_name(h)}.json")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_text(path, json.dumps(by_hash[h], indent=1, sort_keys=True, default=str) + "\n")
            paths.append(path)
    path = os.path.join(out_dir, "index.html")
    write_text(path, page("petlbench results", _index_table(index_rows), ""))
    paths.append(path)
    return paths


def _latency_plot(results_dir: str, stem: str, df, meta: dict, out: str, draw: bool) -> list[str]:
    """The latency plot of efficiency run `stem`: copied from beside its CSV, where `petlbench plot` draws it, when
    it is there and not older than the CSV; else drawn (`plots.latency_vs_batch`) when `draw`."""
    from .atomic import atomic_write_bytes

    src = os.path.join(results_dir, "efficiency", f"{stem}_latency")
    csv_time = os.path.getmtime(os.path.join(results_dir, "efficiency", f"{stem}.csv"))
    dest = os.path.join(out, f"{safe_name(stem)}_latency")
    if all(os.path.isfile(f"{src}.{e}") and os.path.getmtime(f"{src}.{e}") >= csv_time for e in ("png", "pdf")):
        for e in ("png", "pdf"):
            atomic_write_bytes(f"{dest}.{e}", lambda tmp, e=e: shutil.copyfile(f"{src}.{e}", tmp))
        return [f"{dest}.png", f"{dest}.pdf"]
    if not draw:
        return []
    from . import plots

    return plots.latency_vs_batch(df, meta, dest)


def _index_table(rows) -> str:
    cols = [("Benchmark", "text"), ("What", "text"), ("Measured rows", "num"), ("Published rows", "num"),
            ("Finished records", "num"), ("Failed records", "num")]
    head = _head(cols)
    body = []
    for g, (href, name, title, ours, pub, n_ok, n_failed) in enumerate(rows):
        nums = "".join(f"<td{_num_attr(v)}>{'' if v is None else v}</td>" for v in (ours, pub, n_ok, n_failed))
        body.append(f'<tr data-group="b{g}"><td class="text"><a href="{esc(href)}">{esc(name)}</a></td>'
                    f'<td class="text label">{esc(title)}</td>{nums}</tr>')
    note = ("<p>Every table is regenerated from the result store alone (<code>petlbench site</code>); the same "
            "tables as Markdown, LaTeX and CSV come from <code>petlbench table</code>. Click a column header to "
            "sort.</p>\n")
    return (note + '<div class="scroll"><table class="sortable" id="benchmarks"><thead><tr>' + head
            + "</tr></thead><tbody>" + "".join(body) + "</tbody></table></div>\n")
