"""Few-shot fine-grained classification (NOAH, Zhang et al. 2022, arXiv:2206.04673; also FacT and RepAdapter):
FGVC-Aircraft, Food-101, Oxford Flowers-102, Oxford-IIIT Pets and Stanford Cars at 1/2/4/8/16 shots per class,
split seeds 0/1/2. Not VPT's full-data "FGVC" benchmark (CUB, NABirds, ...): task names are "fewshot/<dataset>".

Layouts: NOAH's split files (github.com/ZhangYuanhan-AI/NOAH, data/few-shot/<dataset>/annotations/), next to the
images of the dataset as it ships:

    <data_root>/<dataset>/annotations/train_meta.list.num_shot_<k>.seed_<s>    k in 1,2,4,8,16; s in 0,1,2
    <data_root>/<dataset>/annotations/val_meta.list
    <data_root>/<dataset>/annotations/test_meta.list
    <data_root>/<dataset>/images/...        lines "<path relative to images/> <label>" (NOAH's lib/datasets.py
                                            joins root + '/images'); Stanford Cars' lines are "cars_train/..."
                                            and "cars_test/..." relative to the dataset folder itself.

or RepAdapter's (its dataset.py get_data(few_shot=True): './data/few_shot/'+name+'/train_meta.list.num_shot_%d.
seed_%d', images under '.../images/train/' and '.../images/test/'):

    <data_root>/<dataset>/train_meta.list.num_shot_<k>.seed_<s>, test_meta.list (val_meta.list)
    <data_root>/<dataset>/images/train/...  the train (and val) lists' paths are relative to it
    <data_root>/<dataset>/images/test/...   the test list's paths are relative to it

Rules, when several could match: the list file is `<dataset>/annotations/<file>` if it exists, else
`<dataset>/<file>` (LIST_DIRS). The image root is the first of IMAGE_DIRS[train or test]
(`images/train` or `images/test`, then `images`, then the dataset folder) under which the list's first paths
exist; when none holds them, the first that exists, and read_list_file names the missing image. Each choice is
logged (INFO), and every sample's `source` names its list file and line. The dataset folder may carry the
task's name or the names NOAH and RepAdapter use (NOAH's repository: fgvc-aircraft, food101,
oxford-flowers102, oxford-pets, standford-cars [sic]; its scripts: fgvc_aircraft, food-101, oxford_flowers,
oxford_pets, stanford_cars; RepAdapter's configs: standford_cars); see FOLDER_NAMES, first match wins. Listed
paths must stay inside the dataset folder (petlbench.data.read_list_file). NOAH's 1-shot Oxford-Pets lists
repeat every line twice; the duplicates are kept, as NOAH trained on them.

Splits: `train_shot<k>_seed<s>` (15 of them; `fewshot_split(k, s)` builds the name), `val`, `test`. The protocol
trains on train_shot16_seed0; pass train_split=fewshot_split(k, s) (and clean_train_split) to run another.

Class names (`Task.classnames`, for head_init=zeroshot): tasks/protocols/classnames/fewshot/<dataset>.txt in the
label order of NOAH's lists (sources and checks: tasks/protocols/classnames/README.md). NOAH's README.md:50-58
takes the images from CoOp's DATASETS.md, and its labels are CoOp's: the official class ids minus one (Pets,
Flowers, Cars), the sorted class folders (Food-101), a variant's line in variants.txt (FGVC-Aircraft, CoOp's
fgvc_aircraft.py:22-27). FGVC-Aircraft's names are read from that variants.txt in the
dataset folder (`aircraft_variants`), where CoOp's layout puts it.
"""
from __future__ import annotations

import logging
import math
import os
import re

from petlbench.benchmark import BENCHMARKS, Benchmark
from petlbench.data import DataError, Sample, first_dir, holding_root, read_list_file
from petlbench.errors import ConfigError
from petlbench.plots import pyplot, save
from petlbench.tables import (
    REFERENCE_DIR,
    Cell,
    Column,
    Row,
    Table,
    cell_of,
    collapse_search,
    finished,
    mean_of,
    params_m,
    protocol_note,
    published,
    published_frame,
    published_label,
    read_reference,
    recipe_notes,
    recipes_of,
    search_note,
    selection_note,
    with_deltas,
)
from petlbench.task import TASKS, ClassificationProtocol, Task

from .vtab import shipped_classnames

log = logging.getLogger(__name__)

SHOTS = (1, 2, 4, 8, 16)
SEEDS = (0, 1, 2)

# name -> (classes, test images, one-line description). Counts: tasks/reference/repadapter_protocol.md.
DATASETS: dict[str, tuple[int, int, str]] = {
    "fgvc_aircraft": (100, 3333, "FGVC-Aircraft variants"),
    "food101": (101, 30300, "Food-101"),
    "oxford_flowers102": (102, 2463, "Oxford Flowers-102"),
    "oxford_pets": (37, 3669, "Oxford-IIIT Pets"),
    "stanford_cars": (196, 8041, "Stanford Cars"),
}

# Folder names accepted under <data_root>, first match wins: ours, then NOAH's repository and script names
# and RepAdapter's configs/repblock_few_shot names (fgvc_aircraft, food101, oxford_flowers102, oxford_pets,
# standford_cars).
FOLDER_NAMES: dict[str, tuple[str, ...]] = {
    "fgvc_aircraft": ("fgvc_aircraft", "fgvc-aircraft"),
    "food101": ("food101", "food-101"),
    "oxford_flowers102": ("oxford_flowers102", "oxford-flowers102", "oxford_flowers"),
    "oxford_pets": ("oxford_pets", "oxford-pets"),
    "stanford_cars": ("stanford_cars", "stanford-cars", "standford-cars", "standford_cars"),
}


def fewshot_split(shot: int, seed: int) -> str:
    """The split name of NOAH's k-shot list for a split seed, e.g. fewshot_split(16, 0) == "train_shot16_seed0"."""
    if shot not in SHOTS or seed not in SEEDS:
        raise ConfigError(f"few-shot split: shot {shot!r}, seed {seed!r}; accepted shots {SHOTS}, seeds {SEEDS}")
    return f"train_shot{shot}_seed{seed}"


TRAIN_SPLITS = tuple(fewshot_split(k, s) for k in SHOTS for s in SEEDS)
SPLITS = TRAIN_SPLITS + ("val", "test")


def split_file(split: str) -> str:
    """The NOAH list-file name of a split: train_meta.list.num_shot_<k>.seed_<s>, val_meta.list, test_meta.list."""
    if split in ("val", "test"):
        return f"{split}_meta.list"
    shot, seed = split[len("train_shot"):].split("_seed")
    return f"train_meta.list.num_shot_{int(shot)}.seed_{int(seed)}"


# Where a split's list file may be, first match wins: NOAH's annotations/, then RepAdapter's dataset folder.
LIST_DIRS = ("annotations", "")
# Image roots tried for a list, by the kind of split, first holding the list's first paths wins.
IMAGE_DIRS = {"train": ("images/train", "images", ""), "test": ("images/test", "images", "")}


def dataset_folder(data_root: str, names: tuple[str, ...], what: str) -> str:
    """The first of `names` that is a folder under data_root; DataError naming every path tried."""
    return first_dir(data_root, names, what, "dataset folder")


def list_path(folder: str, split: str, what: str) -> str:
    """The split's list file: the first of LIST_DIRS holding it; DataError naming the paths tried."""
    tried = [os.path.join(folder, d, split_file(split)) if d else os.path.join(folder, split_file(split))
             for d in LIST_DIRS]
    found = next((p for p in tried if os.path.isfile(p)), None)
    if found is None:
        raise DataError(f"{what}, split {split!r}: no list file; tried {', '.join(map(repr, tried))} (NOAH's "
                        f"data/few-shot/<dataset>/annotations/{split_file(split)}, or RepAdapter's "
                        f"data/few_shot/<dataset>/{split_file(split)})")
    return found


def image_root(folder: str, list_path: str, kind: str = "train") -> str:
    """The image root of a list (see the module docstring): the first of IMAGE_DIRS[kind] under `folder`
    holding the list's first paths, else the first that exists (read_list_file then names the missing image)."""
    candidates = [os.path.join(folder, d) if d else folder for d in IMAGE_DIRS[kind]]
    found = holding_root(candidates, list_path)
    if found is None:
        found = next(r for r in candidates if os.path.isdir(r))
        log.info("%s: its first paths are under none of %s; reading it relative to %s", list_path,
                 ", ".join(candidates), found)
    return found


def fewshot_samples(task: Task, data_root: str, split: str) -> list[Sample]:
    name = task.name.split("/", 1)[1]
    what = f"task {task.name!r}"
    folder = dataset_folder(data_root, FOLDER_NAMES[name], what)
    path = list_path(folder, split, what)
    root = image_root(folder, path, "test" if split == "test" else "train")
    log.info("%s %s: list %s, images under %s", task.name, split, path, root)
    return read_list_file(path, root, task.num_classes, inside=folder)


def aircraft_variants(task: Task, data_root: str) -> tuple[str, ...]:
    """`Task.classnames_fn` of fewshot/fgvc_aircraft: the dataset folder's variants.txt, a label being a variant's
    line (CoOp's fgvc_aircraft.py:22-27); DataError naming the file when it is missing or malformed."""
    from .coop.data import read_variants  # imported here: tasks.coop imports this module

    folder = dataset_folder(data_root, FOLDER_NAMES["fgvc_aircraft"], f"task {task.name!r}")
    return read_variants(os.path.join(folder, "variants.txt"), task.num_classes)


def split_size(task: Task, split: str) -> int | None:
    """The images of a split when known: the test split's (DATASETS); None for the others (NOAH's k-shot lists
    are not always k x classes: its 1-shot Oxford-Pets list repeats every line)."""
    name = task.name.split("/", 1)[1]
    return DATASETS[name][1] if split == "test" and name in DATASETS else None


# NOAH's few-shot protocol: configs/*/few-shot/slurm_train_*_few-shot.sh (--lr 0.005 --weight-decay 0.0001
# --batch-size 64 --epochs 100) and the argparse defaults of supernet_train_prompt.py (the rest). RepAdapter's
# train.py --few-shot matches it except lr (its default 1e-3) and the eval resize (224 direct, no crop).
FEWSHOT_PROTOCOL = dict(
    epochs=100,  # NOAH script --epochs=100
    batch_size=64,  # NOAH script --batch-size=64 (RepAdapter dataset.get_data default 64 too)
    optimizer="adamw",  # supernet_train_prompt.py --opt default 'adamw'
    lr=5e-3,  # NOAH script LR=0.005
    weight_decay=1e-4,  # NOAH script WEIGHT_DECAY=0.0001
    warmup_epochs=10,  # --warmup-epochs default 10 (cosine --sched default)
    warmup_lr=1e-6,  # --warmup-lr default 1e-6
    min_lr=1e-5,  # --min-lr default 1e-5
    drop_path=0.1,  # --drop-path default 0.1
    label_smoothing=0.1,  # --smoothing default 0.1 (applied through timm Mixup)
    mixup=0.8,  # --mixup default 0.8
    cutmix=1.0,  # --cutmix default 1.0
    randaugment="rand-m9-mstd0.5-inc1",  # --aa default
    random_erasing=0.25,  # --reprob 0.25
    interpolation="bicubic",  # --train-interpolation default 'bicubic'
    eval_every=10,  # --val_interval default 10
    selection="reproduction",  # NOAH and RepAdapter report the best periodic test accuracy
    seed=0,  # supernet_train_prompt.py --seed default 0 (RepAdapter's train.py: 42)
)

for _name, (_classes, _test, _desc) in DATASETS.items():
    TASKS.add(Task(
        name=f"fewshot/{_name}", benchmark="fewshot", num_classes=_classes, splits=SPLITS,
        samples_fn=fewshot_samples, classnames=shipped_classnames("fewshot", _name, _classes),
        classnames_fn=aircraft_variants if _name == "fgvc_aircraft" else None,
        protocol=ClassificationProtocol(**FEWSHOT_PROTOCOL, train_split="train_shot16_seed0",
                                        clean_train_split="train_shot16_seed0", val_split="val", test_split="test"),
        method_defaults={"repadapter": {"scale": 1.0}},  # RepAdapter configs/repblock_few_shot/*.yaml: scale 1
        recipe="noah-fewshot",  # the recipe of the published few-shot rows (tasks/recipes/noah.py)
        summary=f"few-shot {_desc} ({_classes} classes), 1/2/4/8/16 shots x seeds 0-2 (NOAH splits); "
                f"test {_test:,} images; top-1",
    ))


# --- results: the shots axis, the table by shots, the curves ----------------------------------------------------
_SHOT_SPLIT = re.compile(r"train_shot(\d+)_seed(\d+)$")


def shots_axis(shot: int, seed: int | None, task=None) -> dict:
    """A sweep's `shots: [k, ...]` for a run of split seed `seed` (0 when the sweep has no seeds): its k-shot
    training split."""
    split = fewshot_split(int(shot), int(seed if seed is not None else 0))
    return {"train_split": split, "clean_train_split": split}


def row_fields(record: dict) -> dict:
    """The record's shots and split seed, read from its training split's name."""
    proto = record.get("protocol") or {}
    key = "clean_train_split" if proto.get("selection") in ("clean", "trial") else "train_split"
    m = _SHOT_SPLIT.match(proto.get(key) or "")
    return {"shots": int(m.group(1)) if m else None, "split_seed": int(m.group(2)) if m else None}


def read_published(reference_dir: str):
    """The numbers behind FacT's and NOAH's few-shot figures (reference/fewshot_published.csv), long."""
    df = read_reference("fewshot_published.csv", reference_dir)
    if df is None:
        return None
    long = df.rename(columns={"top1": "value"}).assign(key=df["method"].str.lower(), label=df["method"])
    return published_frame(long)


def shots_table(bench, frame, search: tuple[str, ...] = (), reference_dir: str = REFERENCE_DIR,
                results_dir: str | None = None) -> list[Table]:
    """Rows: (dataset section, variant); columns: shots 1..16; a last section averages the five datasets."""
    ok = collapse_search(finished(frame, bench.name), search)
    columns = [Column(f"shot:{k}", f"{k}-shot", "Shots per class") for k in SHOTS]
    table = Table("fewshot", "Few-shot FGVC (ViT-B/16): top-1 (%) vs shots per class", columns)
    pub = published("fewshot", reference_dir)
    datasets = sorted(set(DATASETS) | (set(ok["dataset"]) if not ok.empty else set()))
    table.rows += shot_rows(ok, datasets, columns, "average of 5 datasets", pub)
    table.notes += [
        "Few-shot FGVC in the NOAH/FacT/RepAdapter sense (FGVC-Aircraft, Food-101, Flowers102, Oxford-Pets, "
        "Stanford-Cars; NOAH's split files), not VPT's full-data FGVC. A cell is the mean over split seeds "
        "(+- sample std); the average section is the mean over the five datasets, missing if one is missing.",
        "Published rows: the numbers behind FacT's and NOAH's few-shot figures as their authors posted them "
        "(seeds averaged: not stated by the source). RepAdapter's own few-shot numbers were not found in a "
        "readable source and are not shown.",
    ] + selection_note(ok) + protocol_note(ok, bench.data_source) + search_note(ok, search)
    table.notes += recipe_notes(list(recipes_of(ok)) + list(pub["recipe"]))
    return [table]



def shot_rows(ok, datasets, columns, average: str, pub=None) -> list[Row]:
    """The rows of a table by shots: per dataset (a section each), our variants (a cell per shots: the mean over
    split seeds) and the published rows of `pub`; then a section `average` of each row's mean over `datasets`
    (missing where a dataset is); delta rows under measured rows that have a published twin. A measured or
    published row of shots 0 (zero-shot: no training images) fills every column."""
    shots = [int(c.key.split(":")[1]) for c in columns]
    if not ok.empty and (ok["shots"] == 0).any():
        import pandas as pd

        zero = ok[ok["shots"] == 0]
        ok = pd.concat([ok[ok["shots"] != 0]] + [zero.assign(shots=k) for k in shots], ignore_index=True)
    sections: dict[str, list[Row]] = {}
    for d in datasets:
        rows = []
        if not ok.empty:
            for variant, sub in ok[ok["dataset"] == d].groupby("variant", sort=True):
                cells = {f"shot:{int(k)}": cell_of(s["value"]) for k, s in sub.groupby("shots")}
                rows.append(Row(variant, "ours", cells, d, params_m(sub, paper=True), sub["key"].iloc[0]))
        if pub is not None:
            for key, sub in pub[pub["dataset"] == d].groupby("key", sort=True):
                rows.append(Row(published_label(sub["label"].iloc[0], sub["recipe"].iloc[0]),
                                f"published: {sub['source'].iloc[0]}",
                                {f"shot:{int(k)}": cell_of([v]) for k, v in zip(sub["shots"], sub["value"])}, d,
                                key=key))
        sections[d] = rows
    labels = {r.label: r for rows in sections.values() for r in rows}
    sections[average] = []
    for label, first in labels.items():
        by_ds = {d: next((r for r in rows if r.label == label), None) for d, rows in sections.items() if d != average}
        cells = {c: mean_of([by_ds[d].cells.get(c, Cell()) if by_ds.get(d) else Cell() for d in datasets])
                 for c in (col.key for col in columns)}
        sections[average].append(Row(label, first.source, cells, average, first.params_m, first.key))
    return [r for rows in sections.values() for r in with_deltas(rows)]


def shot_curves(table, stem: str) -> list[str]:
    """Top-1 vs shots, one panel per dataset (and the average), a line per method; published dashed, hollow."""
    plt = pyplot()
    sections = list(dict.fromkeys(r.section for r in table.rows))
    n = max(1, len(sections))
    cols = min(3, n)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(4.0 * cols, 3.2 * math.ceil(n / cols)),
                             squeeze=False)
    shots = [int(c.key.split(":")[1]) for c in table.columns]
    colors: dict[str, tuple] = {}  # one colour per method, measured and published alike
    for ax, section in zip(axes.flat, sections):
        for r in (r for r in table.rows if r.section == section and r.source != "delta"):
            name = re.sub(r" \(published[^)]*\)$", "", r.label)  # tables.published_label's suffix
            color = colors.setdefault(name, plt.get_cmap("tab20")(len(colors) % 20))
            xs = [k for k, c in zip(shots, table.columns) if not r.cells.get(c.key, Cell()).missing]
            ys = [r.cells[c.key].mean for c in table.columns if not r.cells.get(c.key, Cell()).missing]
            if not xs:
                continue
            if r.source == "ours":
                err = [r.cells[c.key].std or 0 for c in table.columns if not r.cells.get(c.key, Cell()).missing]
                ax.errorbar(xs, ys, yerr=err, color=color, marker="o", ms=4, capsize=2, label=r.label)
            else:
                ax.plot(xs, ys, ls="--", marker="s", mfc="none", color=color, alpha=0.7, label=r.label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, [str(k) for k in shots])
        ax.set_title(section.replace("_", " "), fontsize=9)
        ax.set_xlabel("training images per class (shots)")
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(sections):]:
        ax.axis("off")
    legend: dict[str, object] = {}  # every panel's lines, once each (a dataset may lack some methods)
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    if legend:
        fig.legend(list(legend.values()), list(legend), fontsize=7, loc="lower center",
                   ncol=min(3, len(legend)), bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(table.title + "  (solid: measured, mean +- std over seeds; dashed: published)", fontsize=9)
    # fixed margins: tight_layout measures every tick label of every panel, seconds with many curves
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.2, top=0.9, wspace=0.28, hspace=0.45)
    return save(fig, stem)


def shots_plots(table, out_dir: str) -> list[str]:
    import os

    return shot_curves(table, os.path.join(out_dir, "fewshot_curves"))


BENCHMARKS.add(Benchmark(
    "fewshot", "Few-shot FGVC: 5 fine-grained datasets at 1-16 shots (NOAH's splits)", order=10,
    columns=lambda: [(d, "") for d in sorted(DATASETS)], published=read_published, tables=shots_table,
    plots=shots_plots, sweep_axes={"shots": shots_axis}, row_fields=row_fields,
    data_source="NOAH's few-shot split files"))
