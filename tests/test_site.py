"""The static results site (`petlbench site`): pages built from synthetic store records (values given here, so the
expected numbers are derived in the test), the record files and every link, escaping, and the pages in headless
Chromium: no script error, a header click sorts (checked by the page and again here from the DOM), a screenshot.

Without a Chromium binary the browser tests skip, unless PETLBENCH_REQUIRE_CHROMIUM is set (.ci/run sets it and
installs Debian's `chromium`), where they fail. PETLBENCH_CHROMIUM names another binary."""
from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from petlbench.cli import main
from petlbench.report import suite_tables
from petlbench.tables import run_frame

import records

ROOT = Path(__file__).resolve().parents[1]
EVIL = '<img src=x onerror="alert(1)"> & co'  # a variant name as a store may hold it: shown as text, never markup
CIFAR, CALTECH = [70.0, 72.0, 74.0], [90.0, 91.0, 95.0]


def _records() -> list[dict]:
    recs = [records.record("vtab/cifar", "repadapter", v, {"seed": s}) for s, v in enumerate(CIFAR)]
    recs += [records.record("vtab/caltech101", "repadapter", v, {"seed": s}) for s, v in enumerate(CALTECH)]
    recs.append(records.record("vtab/cifar", "lora", 80.0))
    recs.append(records.record("vtab/dtd", "lora", 50.0, status="failed"))
    evil = records.record("vtab/dtd", "bitfit", 55.0)
    evil["variant"]["name"] = EVIL
    recs.append(evil)
    recs += [records.record("fewshot/fgvc_aircraft", "linear", v, {"train_split": f"train_shot{k}_seed{s}",
                                                                   "clean_train_split": f"train_shot{k}_seed{s}",
                                                                   "seed": s})
             for k, s, v in ((1, 0, 40.0), (1, 1, 42.0), (16, 0, 60.0))]
    return recs


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(site folder, records, results folder): `petlbench site` over a store of `_records()`, with one efficiency
    run (a committed CSV, its JSON and its plots) under the results folder."""
    tmp = tmp_path_factory.mktemp("site")
    store, results, out = tmp / "store", tmp / "results", tmp / "site"
    recs = _records()
    for r in recs:
        records.write(str(store), r)
    eff = results / "efficiency"
    eff.mkdir(parents=True)
    for name in ("vit_base_patch16_224.csv", "vit_base_patch16_224.json", "vit_base_patch16_224_latency.png",
                 "vit_base_patch16_224_latency.pdf"):
        shutil.copyfile(ROOT / "results" / "efficiency" / name, eff / name)
    for name in ("vit_base_patch16_224_latency.png", "vit_base_patch16_224_latency.pdf"):
        os.utime(eff / name)  # newer than the CSV: the site copies them rather than drawing them
    assert main(["site", str(out), "--store", str(store), "--results", str(results)]) == 0
    return out, recs, results


# --- reading pages -----------------------------------------------------------------------------------------------
class Tables(HTMLParser):
    """Every <table> of a page: {"attrs", "head": [th attrs + text], "bodies": [[row attrs + cells]]}; and every
    id, href and src."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.ids, self.links, self._cell, self._in = [], set(), [], None, ""
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        for k in ("href", "src"):
            if k in a:
                self.links.append(a[k])
        if tag == "table":
            self.tables.append({"attrs": a, "head": [], "bodies": []})
        elif tag in ("thead", "tbody"):
            self._in = tag
            if tag == "tbody":
                self.tables[-1]["bodies"].append([])
        elif tag == "tr" and self._in == "tbody":
            self.tables[-1]["bodies"][-1].append({**a, "cells": []})
        elif tag in ("td", "th") and self.tables:
            self._cell = {**a, "text": ""}
            if self._in == "thead" and tag == "th":
                self.tables[-1]["head"].append(self._cell)
            elif self._in == "tbody":
                self.tables[-1]["bodies"][-1][-1]["cells"].append(self._cell)

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._cell = None
        elif tag in ("thead", "tbody"):
            self._in = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


def _read(path: Path) -> Tables:
    return Tables(path.read_text(encoding="utf-8"))


def _main_table(page: Tables) -> dict:
    return next(t for t in page.tables if "sortable" in t["attrs"].get("class", "") and
                "records" not in t["attrs"].get("class", ""))


def _rows(table: dict) -> list[dict]:
    return [r for body in table["bodies"] for r in body if "section" not in r.get("class", "")]


def _by_label(table: dict, label: str) -> dict:
    return next(r for r in _rows(table) if r["cells"][0]["text"].strip() == label)


# --- the pages, without a browser --------------------------------------------------------------------------------
def test_every_link_resolves_and_nothing_comes_from_elsewhere(site):
    out, _, _ = site
    pages = sorted(out.rglob("*.html"))
    assert {p.relative_to(out).as_posix() for p in pages} == {
        "index.html", "vtab/index.html", "fewshot/index.html", "efficiency/index.html"}
    for p in pages:
        text = p.read_text(encoding="utf-8")
        page = Tables(text)
        assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"(https?:)?//", text), p  # works offline
        for link in page.links:
            file_part, _, anchor = link.partition("#")
            if file_part:
                assert (p.parent / file_part).is_file(), f"{p}: {link}"
            if anchor:
                assert anchor in (page.ids if not file_part else _read(p.parent / file_part).ids), f"{p}: {link}"
    index = _read(out / "index.html")
    assert {"vtab/index.html", "fewshot/index.html", "efficiency/index.html"} <= set(index.links)


def test_record_files_are_the_stored_records(site):
    out, recs, _ = site
    assert sorted(p.name for p in (out / "records").iterdir()) == sorted(f"{r['config_hash']}.json" for r in recs)
    for r in recs:
        assert json.loads((out / "records" / f"{r['config_hash']}.json").read_text(encoding="utf-8")) == r


def test_each_measured_row_links_to_the_records_it_averages(site):
    out, recs, _ = site
    page = _read(out / "vtab" / "index.html")
    table = _main_table(page)
    want = {"RepAdapter (repadapter-vtab)": [r for r in recs if r["method"] == "repadapter"],
            "LoRA (repadapter-vtab)": [r for r in recs if r["method"] == "lora" and r["status"] == "ok"]}
    text = (out / "vtab" / "index.html").read_text(encoding="utf-8")
    for label, mine in want.items():
        row = _by_label(table, label)
        assert row["cells"][1]["text"] == f"measured: {len(mine)} record{'s' if len(mine) > 1 else ''}"
        anchor = re.search(rf'<tr class="ours"[^>]*><td class="label">{re.escape(label)}</td><td class="text">'
                           r'<a href="#([^"]+)"', text).group(1)
        section = text[text.index(f'id="{anchor}"'):]
        section = section[:section.index("</table>")]
        assert sorted(re.findall(r"records/([0-9a-f]+)\.json", section)) == sorted(r["config_hash"] for r in mine)
    # few-shot: a row per dataset section, linked to that dataset's records; the average section's row to all
    fs = _main_table(_read(out / "fewshot" / "index.html"))
    linear = [r for r in _rows(fs) if r["cells"][0]["text"] == "Linear probing (noah-fewshot)"]
    assert [r["cells"][1]["text"] for r in linear] == ["measured: 3 records"] * 2
    failed = next(r for r in recs if r["status"] == "failed")
    assert "Failed runs" in text and failed["reason"] in text and f"records/{failed['config_hash']}.json" in text


def test_cells_are_the_tables_numbers(site):
    """Every row and cell of the page is the row and cell of the Table `petlbench table` renders, in order; and the
    numbers are the ones the records give (mean over seeds, delta = ours - published)."""
    out, recs, _ = site
    (_, vtab), = [(s, t) for s, t in suite_tables(run_frame(recs)) if s == "vtab"]
    table = _main_table(_read(out / "vtab" / "index.html"))
    rows = _rows(table)
    assert [r["cells"][0]["text"] for r in rows] == [r.label.strip() for r in vtab.rows]
    lead = 3  # Method, Source, Params (M)
    assert [h["text"] for h in table["head"] if "data-col" in h][lead:] == [c.header for c in vtab.columns]
    for html_row, row in zip(rows, vtab.rows):
        for cell, col in zip(html_row["cells"][lead:], vtab.columns):
            c = row.cells.get(col.key)
            if c is None or c.missing:
                assert "data-v" not in cell and cell["text"] == ""
            else:
                assert float(cell["data-v"]) == pytest.approx(c.mean)
    ours = _by_label(table, "RepAdapter (repadapter-vtab)")
    cifar = lead + [c.key for c in vtab.columns].index("cifar")
    assert float(ours["cells"][cifar]["data-v"]) == statistics.mean(CIFAR)
    assert ours["cells"][cifar]["text"] == f"{statistics.mean(CIFAR):.1f} ± {statistics.stdev(CIFAR):.1f}"
    delta = rows[rows.index(ours) + 1]
    pub = _by_label(table, "RepAdapter (published, repadapter-vtab)")
    assert "delta" in delta["class"] and delta["data-group"] == ours["data-group"]
    assert float(delta["cells"][cifar]["data-v"]) == pytest.approx(statistics.mean(CIFAR) -
                                                                    float(pub["cells"][cifar]["data-v"]))
    assert "published" in pub["class"] and pub["cells"][1]["title"].startswith("published: ")


def test_text_from_the_store_is_escaped(site):
    out, _, _ = site
    text = (out / "vtab" / "index.html").read_text(encoding="utf-8")
    assert "<img src=x" not in text and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; co" in text
    assert f"{EVIL} (repadapter-vtab)" in [r["cells"][0]["text"] for r in _rows(_main_table(Tables(text)))]


def test_plots_and_notes_are_on_the_page(site):
    out, _, results = site
    text = (out / "vtab" / "index.html").read_text(encoding="utf-8")
    assert '<img src="vtab1k_accuracy_vs_params.png"' in text
    assert (out / "vtab" / "vtab1k_accuracy_vs_params.png").is_file()
    assert "Protocol of the measured rows" in text and "repadapter-vtab: " in text  # protocol and recipe notes
    assert "<code>petlbench recipes repadapter-vtab</code>" in text  # the notes' `code` rendered
    png = "vit_base_patch16_224_latency.png"
    assert (out / "efficiency" / png).read_bytes() == (results / "efficiency" / png).read_bytes()
    assert f'<img src="{png}"' in (out / "efficiency" / "index.html").read_text(encoding="utf-8")


def test_same_store_same_site(site, tmp_path):
    out, _, results = site
    again = tmp_path / "again"
    assert main(["site", str(again), "--store", str(out.parent / "store"), "--results", str(results),
                 "--no-plots"]) == 0
    def bare(path):  # the page without its figures
        text = re.sub(r"<figure>.*?</figure>", "", path.read_text(encoding="utf-8"))
        return re.sub(r">\s+<", "><", text)
    for rel in ("index.html", "vtab/index.html", "fewshot/index.html"):
        assert bare(again / rel) == bare(out / rel), rel
    assert not list((again / "vtab").glob("*.png"))


# --- in headless Chromium ----------------------------------------------------------------------------------------
def _chromium() -> str:
    found = os.environ.get("PETLBENCH_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if found:
        return found
    if os.environ.get("PETLBENCH_REQUIRE_CHROMIUM"):
        pytest.fail("PETLBENCH_REQUIRE_CHROMIUM is set but no chromium binary is on PATH (apt-get install chromium)")
    pytest.skip("no chromium binary on PATH (apt-get install chromium; .ci/run installs it)")


def _open(page: Path, tmp_path: Path, screenshot: Path | None = None) -> tuple[str, list[str]]:
    """(the DOM after the page's self-test ran, the page's console lines) from headless Chromium."""
    cmd = [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--window-size=1280,900",
           "--hide-scrollbars", "--dump-dom"]
    if screenshot is not None:
        cmd.append(f"--screenshot={screenshot}")
    done = subprocess.run(cmd + [page.as_uri() + "?selftest=1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def _html_attrs(dom: str) -> dict:
    return dict(re.findall(r'(data-selftest|data-errors)="([^"]*)"', dom[:dom.index(">", dom.index("<html"))]))


def _check_sorted(before: Tables, after: Tables) -> None:
    """The table the self-test sorted, read from the DOM: ascending by the marked column, missing cells last,
    each delta row under its row, the same rows as before in another order."""
    (table,) = [t for t in after.tables if any(h.get("aria-sort") for h in t["head"])]
    th = next(h for h in table["head"] if h.get("aria-sort"))
    assert th["aria-sort"] == "ascending" and th["data-sort"] == "num"
    col = int(th["data-col"])
    for body in table["bodies"]:
        rows = [r for r in body if "section" not in r.get("class", "")]
        for prev, r in zip(rows, rows[1:]):
            if "delta" in r.get("class", ""):
                assert prev["data-group"] == r["data-group"]
        keys = [r["cells"][col].get("data-v") for r in rows if "delta" not in r.get("class", "")]
        present = [float(k) for k in keys if k is not None]
        assert present == sorted(present) and keys[len(present):] == [None] * (len(keys) - len(present))
    (orig,) = [t for t in before.tables if t["attrs"].get("id") == table["attrs"].get("id")]
    groups = [[r["data-group"] for r in _rows(t)] for t in (orig, table)]
    assert sorted(groups[0]) == sorted(groups[1]) and groups[0] != groups[1]


@pytest.mark.parametrize("rel", ["vtab/index.html", "fewshot/index.html", "index.html"])
def test_page_in_chromium_sorts_on_click_without_errors(site, tmp_path, rel):
    out, _, _ = site
    shot = tmp_path / "page.png"
    dom, console = _open(out / rel, tmp_path, shot)
    attrs = _html_attrs(dom)
    assert attrs.get("data-selftest", "").startswith("pass"), attrs
    assert "data-errors" not in attrs and 'id="page-errors" hidden' in dom
    assert not [line for line in console if "Uncaught" in line], console
    _check_sorted(_read(out / rel), Tables(dom))
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 1280


def test_chromium_check_catches_a_broken_page(site, tmp_path):
    """The browser check can fail: a page whose sorter does not move rows, and which throws, is caught both ways."""
    out, _, _ = site
    text = (out / "vtab" / "index.html").read_text(encoding="utf-8")
    assert "body.appendChild(r);" in text
    broken = text.replace("body.appendChild(r);", "void r;")
    page = tmp_path / "broken.html"
    page.write_text(broken.replace("</main>", "<script>noSuchFunction();</script></main>"), encoding="utf-8")
    dom, console = _open(page, tmp_path)
    attrs = _html_attrs(dom)
    assert attrs.get("data-selftest", "").startswith("fail"), attrs
    assert attrs.get("data-errors") == "1" and "noSuchFunction" in dom
    assert [line for line in console if "Uncaught ReferenceError: noSuchFunction" in line], console
