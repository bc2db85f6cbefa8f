"""Domain generalization (NOAH protocol, Zhang et al. 2022, arXiv:2206.04673): train on 16-shot ImageNet-1k, then
evaluate the same model, unchanged, on ImageNet-V2, ImageNet-Sketch, ImageNet-A and ImageNet-R.

Source task `domain/imagenet` (1000 classes; NOAH's lists, github.com/ZhangYuanhan-AI/NOAH data/few-shot/imagenet):

    <data_root>/imagenet/annotations/train_meta.list.num_shot_16.seed_<s>   s in 0,1,2: "n01440764/<file>.JPEG 0"
    <data_root>/imagenet/annotations/unofficial_val_list_4_shot16seed0      NOAH's held-out list (split `val`)
    <data_root>/imagenet/train/<wnid>/*.JPEG       the ImageNet train images the lists name (NOAH's lib/datasets.py
                                                   joins root + '/train'; `images/train` is accepted too)
    <data_root>/imagenet/val/<wnid>/*.JPEG         split `test`: ImageNet val in class folders (the usual
                                                   valprep layout; `images/val` accepted), or
    <data_root>/imagenet/annotations/val_meta.list NOAH's list, lines relative to the val folder
                                                   ("ILSVRC2012_val_00000001.JPEG 65": the flat val folder).

Rule for `test` when both could apply (NOAH's README has its annotations folder copied whole, so val_meta.list is
often there next to wnid folders): the list is used when its first paths exist under a val folder; otherwise
the wnid class folders are, when the val folder has them; otherwise the list (read_list_file then names the
first missing image). The choice is logged (INFO); samples' `source` names the list line or the image file.

Targets (eval_only; their class folders as the datasets ship, labels from the folder names):

    domain/imagenet_v2      <data_root>/imagenetv2/imagenetv2-matched-frequency-format-val/<0..999>/*.jpeg
                            (10,000 images; folders are ImageNet-1k indices; also under imagenet_v2/ or
                            imagenet-v2/, the tarball's folder directly under <data_root>, or the class
                            folders directly in imagenet_v2/)
    domain/imagenet_sketch  <data_root>/imagenet-sketch/sketch/<wnid>/*.JPEG (50,889 images, 1000 classes;
                            NOAH's copy: imagenet-sketch/images/<wnid>; also imagenet_sketch/..., or
                            <data_root>/sketch/ as the archive unpacks)
    domain/imagenet_a       <data_root>/imagenet-a/<wnid>/*.jpg (7,500 images, 200 classes; also imagenet_a/,
                            NOAH's imagenet-adversarial/imagenet-a/)
    domain/imagenet_r       <data_root>/imagenet-r/<wnid>/*.jpg (30,000 images, 200 classes; also imagenet_r/,
                            NOAH's imagenet-rendition/imagenet-r/)

The first candidate folder that exists is used; none is a DataError naming all of them. A class folder that is
not a class of the dataset is a DataError naming it.

Labels: ImageNet-1k indices in the standard order (sorted WordNet ids, timm's imagenet_synsets.txt). ImageNet-A
and -R are scored on their 200 classes only, as their authors' eval.py does: `Task.logit_subset` holds the 200
ImageNet-1k indices (tasks/protocols/imagenet_{a,r}_wnids.txt, from hendrycks/natural-adv-examples and
hendrycks/imagenet-r), and sample labels are positions in it (0..199): evaluation takes logits[:, logit_subset]
then argmax. NOTE: NOAH's own evaluation of A and R (its annotations/val_meta.list carry 1000-class labels, and
supernet_engine_prompt.evaluate takes a 1000-way argmax) did not restrict the logits, so its published A/R
numbers are lower than this masked metric would give for the same model.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os

from petlbench.benchmark import BENCHMARKS, Benchmark, no_plots
from petlbench.data import DataError, Sample, first_dir, folder_samples, holding_root, read_list_file, text_lines
from petlbench.tables import (
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
    recipe_notes,
    recipes_of,
    search_note,
    selection_note,
)
from petlbench.task import TASKS, ClassificationProtocol, Task

from .fewshot import FEWSHOT_PROTOCOL, dataset_folder

log = logging.getLogger(__name__)

PROTOCOL_DIR = os.path.join(os.path.dirname(__file__), "protocols")
SEEDS = (0, 1, 2)
SOURCE = "domain/imagenet"
TARGETS = ("domain/imagenet_v2", "domain/imagenet_sketch", "domain/imagenet_a", "domain/imagenet_r")


# --- ImageNet-1k classes ----------------------------------------------------------------------------------
def _synsets_file() -> str | None:
    """timm's imagenet_synsets.txt, found without importing timm (seconds at task-registry load)."""
    spec = importlib.util.find_spec("timm")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(loc, "data", "_info", "imagenet_synsets.txt")
        if os.path.isfile(path):
            return path
    return None


def _read_wnids(path: str) -> list[str]:
    return [w for w in (line.strip() for _, line in text_lines(path)) if w and not w.startswith("#")]


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids; position = class index (sorted ids, the standard order)."""
    path = _synsets_file()
    if path is not None:
        wnids = _read_wnids(path)
    else:  # a timm that moved the file
        from timm.data import ImageNetInfo

        wnids = list(ImageNetInfo("imagenet-1k").label_names())
    if len(wnids) != 1000 or len(set(wnids)) != 1000 or wnids != sorted(wnids):
        raise RuntimeError(f"timm's ImageNet-1k synsets ({path}) are not 1000 sorted unique WordNet ids")
    return tuple(wnids)


@functools.cache
def wnid_to_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(imagenet_wnids())}


def subset_wnids(dataset: str) -> tuple[str, ...]:
    """The 200 WordNet ids of ImageNet-A ("a") or -R ("r"), in ImageNet-1k index order, checked."""
    path = os.path.join(PROTOCOL_DIR, f"imagenet_{dataset}_wnids.txt")
    wnids = _read_wnids(path)
    index = wnid_to_index()
    unknown = [w for w in wnids if w not in index]
    if len(wnids) != 200 or len(set(wnids)) != 200 or unknown:
        raise RuntimeError(f"{path}: expected 200 unique ImageNet-1k WordNet ids"
                           f"{'; unknown: ' + ', '.join(unknown[:5]) if unknown else ''}")
    return tuple(sorted(wnids, key=index.__getitem__))


IMAGENET_A_WNIDS = subset_wnids("a")
IMAGENET_R_WNIDS = subset_wnids("r")
IMAGENET_A_SUBSET = tuple(wnid_to_index()[w] for w in IMAGENET_A_WNIDS)  # ImageNet-1k indices, ascending
IMAGENET_R_SUBSET = tuple(wnid_to_index()[w] for w in IMAGENET_R_WNIDS)


# --- loaders ----------------------------------------------------------------------------------------------
def class_folders(root: str, mapping: dict[str, int], what: str) -> list[Sample]:
    """Samples of `root/<class folder>/<image>`, labels through `mapping`; a folder not in it is a DataError."""
    for d in sorted(os.listdir(root)):
        if os.path.isdir(os.path.join(root, d)) and d not in mapping:
            raise DataError(f"{os.path.join(root, d)}: folder name {d!r} is not {what}")
    return folder_samples(root, mapping)[0]


def _imagenet_folder(data_root: str) -> str:
    return dataset_folder(data_root, ("imagenet", "imagenet-1k", "imagenet1k"), f"task {SOURCE!r}")


def _sub_dirs(folder: str, name: str) -> list[str]:
    """The existing of `<folder>/<name>` and `<folder>/images/<name>` (train / val images); DataError if none."""
    candidates = [os.path.join(folder, name), os.path.join(folder, "images", name)]
    existing = [c for c in candidates if os.path.isdir(c)]
    if not existing:
        raise DataError(f"task {SOURCE!r}: no ImageNet {name} folder; tried {', '.join(map(repr, candidates))}")
    return existing


def _sub_dir(folder: str, name: str, list_path: str | None = None) -> str:
    """`<folder>/<name>` or `<folder>/images/<name>`; with a list file, the one holding its first paths."""
    existing = _sub_dirs(folder, name)
    if list_path is not None and len(existing) > 1:
        return holding_root(existing, list_path) or existing[0]
    return existing[0]


def _list_split(folder: str, name: str, split: str) -> str:
    path = os.path.join(folder, "annotations", name)
    if not os.path.isfile(path):
        raise DataError(f"task {SOURCE!r}, split {split!r}: list file {path!r} does not exist "
                        f"(NOAH's data/few-shot/imagenet/annotations/{name})")
    return path


def _has_class_folders(root: str) -> bool:
    return any(os.path.isdir(os.path.join(root, d)) for d in os.listdir(root) if d in wnid_to_index())


def _imagenet_test(task: Task, folder: str) -> list[Sample]:
    """ImageNet val, by the rule of the module docstring (NOAH's val_meta.list or wnid class folders)."""
    list_path = os.path.join(folder, "annotations", "val_meta.list")
    val_dirs = _sub_dirs(folder, "val")
    if os.path.isfile(list_path):
        holding = holding_root(val_dirs, list_path)
        if holding is not None:
            log.info("%s test: %s, images under %s", SOURCE, list_path, holding)
            return read_list_file(list_path, holding, task.num_classes, inside=folder)
        with_classes = next((d for d in val_dirs if _has_class_folders(d)), None)
        if with_classes is None:
            return read_list_file(list_path, val_dirs[0], task.num_classes, inside=folder)  # names the missing
        log.info("%s test: %s names files that are not under %s; using the WordNet-id folders of %s",
                 SOURCE, list_path, " or ".join(val_dirs), with_classes)
        return class_folders(with_classes, wnid_to_index(), "an ImageNet-1k WordNet id")
    log.info("%s test: WordNet-id folders of %s", SOURCE, val_dirs[0])
    return class_folders(val_dirs[0], wnid_to_index(), "an ImageNet-1k WordNet id")


def imagenet_samples(task: Task, data_root: str, split: str) -> list[Sample]:
    folder = _imagenet_folder(data_root)
    if split == "test":
        return _imagenet_test(task, folder)
    if split == "val":
        list_path = _list_split(folder, "unofficial_val_list_4_shot16seed0", split)
    else:
        seed = int(split.rsplit("_seed", 1)[1])
        list_path = _list_split(folder, f"train_meta.list.num_shot_16.seed_{seed}", split)
    return read_list_file(list_path, _sub_dir(folder, "train", list_path), task.num_classes, inside=folder)


# Each target: (folder candidates under data_root, label mapping, what a class folder must be).
V2_FOLDER = "imagenetv2-matched-frequency-format-val"
TARGET_LAYOUTS: dict[str, tuple[tuple[str, ...], str]] = {
    "imagenet_v2": ((f"imagenetv2/{V2_FOLDER}", f"imagenet_v2/{V2_FOLDER}", f"imagenet-v2/{V2_FOLDER}", V2_FOLDER,
                     "imagenet_v2", "imagenet-v2", "imagenetv2"), "an ImageNet-1k class index 0..999"),
    "imagenet_sketch": (("imagenet-sketch/sketch", "imagenet-sketch/images", "imagenet_sketch/sketch",
                         "imagenet_sketch/images", "sketch", "imagenet-sketch", "imagenet_sketch"),
                        "an ImageNet-1k WordNet id"),
    "imagenet_a": (("imagenet-a", "imagenet_a", "imagenet-adversarial/imagenet-a"),
                   "one of ImageNet-A's 200 WordNet ids (tasks/protocols/imagenet_a_wnids.txt)"),
    "imagenet_r": (("imagenet-r", "imagenet_r", "imagenet-rendition/imagenet-r"),
                   "one of ImageNet-R's 200 WordNet ids (tasks/protocols/imagenet_r_wnids.txt)"),
}


def target_mapping(name: str) -> dict[str, int]:
    """Folder name -> sample label: ImageNet-1k index (V2, Sketch) or position in the 200-class subset (A, R)."""
    if name == "imagenet_v2":
        return {str(i): i for i in range(1000)}
    if name == "imagenet_sketch":
        return wnid_to_index()
    wnids = IMAGENET_A_WNIDS if name == "imagenet_a" else IMAGENET_R_WNIDS
    return {w: i for i, w in enumerate(wnids)}


def target_samples(task: Task, data_root: str, split: str) -> list[Sample]:
    name = task.name.split("/", 1)[1]
    candidates, what = TARGET_LAYOUTS[name]
    root = first_dir(data_root, candidates, f"task {task.name!r}", "image folder")
    return class_folders(root, target_mapping(name), what)


# Images per split (`petlbench check-data`): NOAH's lists (16 x 1000 per seed; its unofficial val list has
# 2,959 lines), ImageNet val, and the targets as they ship.
SPLIT_SIZES = {("domain/imagenet", "val"): 2959, ("domain/imagenet", "test"): 50000,
               **{("domain/imagenet", f"train_shot16_seed{s}"): 16000 for s in SEEDS},
               ("domain/imagenet_v2", "test"): 10000, ("domain/imagenet_sketch", "test"): 50889,
               ("domain/imagenet_a", "test"): 7500, ("domain/imagenet_r", "test"): 30000}


def split_size(task: Task, split: str) -> int | None:
    """The number of images of a split of a domain-generalization task; None when not known."""
    return SPLIT_SIZES.get((task.name, split))


# --- registration -----------------------------------------------------------------------------------------
# NOAH's DG protocol: configs/*/domain-generalization/slurm_train_*_imagenet.sh (--lr 0.005 --weight-decay
# 0.0001 --batch-size 64 --epochs 100, shot 16, seed 0) with supernet_train_prompt.py's defaults for the rest,
# i.e. the few-shot protocol (tasks/fewshot.py FEWSHOT_PROTOCOL, sources there) on ImageNet.
DG_PROTOCOL = ClassificationProtocol(**FEWSHOT_PROTOCOL, train_split="train_shot16_seed0",
                                     clean_train_split="train_shot16_seed0", val_split="val", test_split="test")

TASKS.add(Task(
    name=SOURCE, benchmark="domain", num_classes=1000,
    splits=tuple(f"train_shot16_seed{s}" for s in SEEDS) + ("val", "test"),
    samples_fn=imagenet_samples, protocol=DG_PROTOCOL, eval_targets=TARGETS,
    method_defaults={"repadapter": {"scale": 1.0}},  # as few-shot (RepAdapter: s=1 outside VTAB)
    recipe="noah-domain",
    summary="domain generalization source: ImageNet-1k 16-shot (NOAH lists, seeds 0-2); test = ImageNet val; top-1",
))

_TARGET_INFO = {  # name -> (logit subset, description)
    "imagenet_v2": (None, "ImageNet-V2 matched-frequency, 10,000 images"),
    "imagenet_sketch": (None, "ImageNet-Sketch, 50,889 images"),
    "imagenet_a": (IMAGENET_A_SUBSET, "ImageNet-A, 7,500 images, scored on its 200 classes"),
    "imagenet_r": (IMAGENET_R_SUBSET, "ImageNet-R, 30,000 images, scored on its 200 classes"),
}
for _name, (_subset, _desc) in _TARGET_INFO.items():
    TASKS.add(Task(
        name=f"domain/{_name}", benchmark="domain", num_classes=1000, splits=("test",),
        samples_fn=target_samples, protocol=DG_PROTOCOL, logit_subset=_subset, eval_only=True,
        method_defaults={"repadapter": {"scale": 1.0}},
        summary=f"domain generalization target (evaluate a {SOURCE} model): {_desc}; top-1",
    ))


# --- results: one table, source and targets side by side ------------------------------------------------------
def targets_table(bench, frame, search: tuple[str, ...] = (), reference_dir: str | None = None,
                  results_dir: str | None = None) -> list[Table]:
    """Source (ImageNet 16-shot) and the four targets, from the same runs."""
    ok = collapse_search(finished(frame, bench.name), search)
    # The four targets always (a mean over fewer is not the benchmark's), then any other target in the records.
    extra = [c.removeprefix("target:") for c in frame.columns if c.startswith("target:")] if not frame.empty else []
    targets = list(TARGETS) + [t for t in extra if t not in TARGETS]
    names = {"domain/imagenet_v2": "ImageNet-V2", "domain/imagenet_sketch": "ImageNet-Sketch",
             "domain/imagenet_a": "ImageNet-A", "domain/imagenet_r": "ImageNet-R"}
    columns = [Column("source", "ImageNet (16-shot)", "Source")]
    columns += [Column(t, names.get(t, t), "Targets") for t in targets]
    columns.append(Column("mean:targets", "Mean of targets", "Means"))
    table = Table("domain", "Domain generalization (ViT-B/16, ImageNet 16-shot -> V2 / Sketch / A / R): top-1 (%)",
                  columns)
    if not ok.empty:
        for variant, sub in ok.groupby("variant", sort=True):
            cells = {"source": cell_of(sub["value"])}
            for t in targets:
                col = f"target:{t}"
                cells[t] = cell_of(sub[col]) if col in sub else Cell()
            cells["mean:targets"] = mean_of([cells[t] for t in targets])
            table.rows.append(Row(variant, "ours", cells, params_m=params_m(sub, paper=True)))
    table.notes += [
        "Targets are scored with the source run's model, unchanged; ImageNet-A/-R on their 200 classes "
        "(the authors' eval.py). NOAH scored A/R with a 1000-way argmax, so these are not comparable with NOAH's.",
        "A missing target cell: that target's data was absent when the run finished (the record says so).",
        "No published domain-generalization numbers are in tasks/reference (RepAdapter's were not found in a "
        "readable source), so there are no published rows.",
    ] + selection_note(ok) + protocol_note(ok, bench.data_source) + search_note(ok, search)
    table.notes += recipe_notes(recipes_of(ok))
    return [table]


BENCHMARKS.add(Benchmark(
    "domain", "Domain generalization: ImageNet 16-shot -> ImageNet-V2 / -Sketch / -A / -R", order=20,
    tables=targets_table, plots=no_plots, data_source="NOAH's 16-shot ImageNet lists"))
