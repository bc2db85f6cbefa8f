"""Published rows of the coop table (tasks/reference/coop_published.csv, tasks/coop/published.py): the file is
valid, its numbers are the sources' (lines quoted below), and the table shows them beside measured rows, labelled
with their backbone, with a delta row only where method, recipe and backbone match."""
from __future__ import annotations

import os

import pandas as pd
import pytest

from petlbench.benchmark import BENCHMARKS
from petlbench.errors import ConfigError
from petlbench.recipe import RECIPES
from petlbench.tables import REFERENCE_DIR, run_frame
from petlbench.tasks.coop import DATASETS, SHOTS
from petlbench.tasks.coop.published import COLUMNS, FILE, check, read_published

import records

CSV = os.path.join(REFERENCE_DIR, FILE)

# The sources' lines, quoted (CI cannot read the repositories): (source as the CSV names it, the line, its shots)
QUOTED = [
    # Tip-Adapter's exp.log columns are "16 8 4 2 1" (exp.log:3 and every section's header)
    ("gaopengcuhk/Tip-Adapter@d0e2d6f exp.log:69", "Tip-F   94.80   91.51   88.83   82.30   79.98",
     ("Tip-Adapter-F", "oxford_flowers", "RN50"), (16, 8, 4, 2, 1)),
    ("gaopengcuhk/Tip-Adapter@d0e2d6f exp.log:1", "imagenet: 60.32", ("Zero-shot CLIP", "imagenet", "RN50"), (0,)),
    # CaFo's exp.log:1 header is "1 2 4 8 16"
    ("OpenGVLab/CaFo@a805a2a exp.log:10", "FGVCAircraft   24.96  26.04  32.94  40.38  49.05",
     ("CaFo", "fgvc_aircraft", "RN50"), (1, 2, 4, 8, 16)),
    # CaFo_arXiv.pdf Table 7 "Models RN50 RN101 ViT-B/32 ViT-B/16", 16-shot ImageNet: the last column
    ("OpenGVLab/CaFo@a805a2a CaFo_arXiv.pdf Table 7 (p. 8), ViT-B/16 column", "CoOp 62.95 66.60 66.85 71.92",
     ("CoOp", "imagenet", "ViT-B/16"), (None, None, None, 16)),
]


@pytest.fixture(scope="module")
def csv_rows():
    return pd.read_csv(CSV)


def test_the_file_is_valid(csv_rows):
    df = csv_rows
    assert list(df.columns) == COLUMNS
    check(df)
    assert set(df["dataset"]) == set(DATASETS)
    assert set(df["shots"]) <= {0, *SHOTS}
    assert df["source"].str.strip().str.len().gt(0).all() and df["top1"].between(0, 100).all()
    recipes = df["recipe"].fillna("")
    assert set(recipes) - {""} <= set(RECIPES.names())
    assert (df.loc[recipes != "", "backbone"] == "ViT-B/16").all()  # a recipe only under the coop recipe's backbone


@pytest.mark.parametrize("bad, why", [
    ({"dataset": "oxford_flowers102"}, "dataset"),
    ({"shots": 3}, "shots"),
    ({"source": " "}, "source"),
    ({"recipe": "coop", "backbone": "RN50"}, "recipe"),
])
def test_check_names_the_bad_line(csv_rows, bad, why):
    df = csv_rows.copy()
    for k, v in bad.items():
        df.loc[5, k] = v
    with pytest.raises(ConfigError, match=rf"{FILE}:7: .*{why}"):
        check(df)


def test_check_refuses_two_values_for_one_cell(csv_rows):
    with pytest.raises(ConfigError, match="second value"):
        check(pd.concat([csv_rows, csv_rows.iloc[[3]]], ignore_index=True))


@pytest.mark.parametrize("source, line, ident, shots", QUOTED)
def test_numbers_are_the_sources(csv_rows, source, line, ident, shots):
    values = [float(v) for v in line.split()[-len(shots):]]
    method, dataset, backbone = ident
    got = csv_rows[(csv_rows["source"] == source) & (csv_rows["method"] == method)
                   & (csv_rows["dataset"] == dataset) & (csv_rows["backbone"] == backbone)]
    want = {k: v for k, v in zip(shots, values) if k is not None}
    assert dict(zip(got["shots"], got["top1"])) == want


def test_zero_shot_fills_every_column():
    pub = read_published(REFERENCE_DIR)
    zs = pub[(pub["label"] == "Zero-shot CLIP [RN50]") & (pub["dataset"] == "dtd")]
    assert sorted(zs["shots"]) == list(SHOTS) and set(zs["value"]) == {42.20}  # Tip-Adapter exp.log:41 "dtd: 42.20"
    assert read_published(os.path.dirname(CSV) + "/nowhere") is None


def _runs():
    recs = []
    for method, over, base in (("coop", {}, 70.0), ("tip_adapter_f", {}, 72.0),
                               ("coop", {"backbone": "openclip:RN50"}, 60.0)):
        for seed, bump in ((1, 0.0), (2, 1.0)):
            split = f"train_shot16_seed{seed}"
            recs.append(records.record("coop/imagenet", method, base + bump,
                                       {**over, "seed": seed, "train_split": split, "clean_train_split": split}))
    return run_frame(recs)


@pytest.fixture(scope="module")
def table():
    b = BENCHMARKS.get("coop")
    (t,) = b.tables(b, _runs())
    return t


def test_table_shows_published_rows_labelled_by_backbone(table, csv_rows):
    labels = {r.label for r in table.rows if r.section == "eurosat"}
    assert "Tip-Adapter-F [RN50] (published, recipe not known)" in labels
    assert not [r for r in table.rows if r.section == "eurosat" and r.source in ("ours", "delta")]
    imagenet = {r.label: r for r in table.rows if r.section == "imagenet"}
    assert imagenet["CoOp (published, coop)"].cells["shot:16"].mean == 71.92
    assert imagenet["CoOp [RN50] (published, recipe not known)"].cells["shot:1"].mean == 57.15
    # the average section: the mean of the 11 datasets' published values
    tipf = csv_rows[(csv_rows["method"] == "Tip-Adapter-F") & (csv_rows["backbone"] == "RN50")
                    & (csv_rows["shots"] == 4)]
    (avg,) = [r for r in table.rows if r.section.startswith("average of 11")
              and r.label == "Tip-Adapter-F [RN50] (published, recipe not known)"]
    assert len(tipf) == 11 and avg.cells["shot:4"].mean == pytest.approx(tipf["top1"].mean())
    # ImageNet alone is not an average over 11
    (coop_avg,) = [r for r in table.rows
                   if r.section.startswith("average of 11") and r.label == "CoOp (published, coop)"]
    assert coop_avg.cells["shot:16"].missing
    assert any("Published rows" in n and "RN50" in n for n in table.notes)


def test_delta_rows_only_under_the_same_method_recipe_and_backbone(table):
    rows = [r for r in table.rows if r.section == "imagenet"]
    deltas = [(rows[i - 1].label, r) for i, r in enumerate(rows) if r.source == "delta"]
    assert [(above, d.label.strip()) for above, d in deltas] == [("CoOp (coop)", "delta vs CoOp (published, coop)")]
    assert deltas[0][1].cells["shot:16"].mean == pytest.approx(70.5 - 71.92)
    # measured Tip-Adapter-F (ViT-B/16, coop recipe) and CoOp on RN50 are shown, unpaired
    measured = {r.label for r in rows if r.source == "ours"}
    assert {"Tip-Adapter-F (coop)", "CoOp [backbone=openclip:RN50] (coop)"} <= measured


def test_curves_draw_published_rows_dashed_and_hollow(table, tmp_path, monkeypatch):
    figs = []
    monkeypatch.setattr("petlbench.tasks.fewshot.save", lambda fig, stem: figs.append(fig) or [stem])
    BENCHMARKS.get("coop").plots(table, str(tmp_path))
    (fig,) = figs
    ax = next(a for a in fig.axes if a.get_title() == "imagenet")
    lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    pub = lines["Tip-Adapter-F [RN50] (published, recipe not known)"]
    assert pub.get_linestyle() == "--" and pub.get_markerfacecolor() == "none"
    assert list(pub.get_xdata()) == list(SHOTS)
    flat = lines["Zero-shot CLIP [RN50] (published, recipe not known)"]
    assert set(flat.get_ydata()) == {60.32}
    ours = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-" and len(ln.get_xdata()) == 1]
    assert ours  # the measured 16-shot points, solid
