"""Video action recognition (AdaptFormer, Chen et al. 2022, arXiv:2205.13535; RepAdapter follows it):
Something-Something-v2 (174 classes) and HMDB51 (51 classes), VideoMAE ViT-B, clips decoded with decord
(`clips.VideoDataset`, read through the benchmark's `dataset` below).

Layouts, under <data_root>; a split's list file wins over the official layout when both are there:

    SSv2 (folder ssv2/, SSV2/ (RepAdapter's video README: --data_path /path/to/SSV2), something-something-v2/
    or 20bn-something-something-v2/; SSV2_FOLDERS, first match wins):
      official: labels/something-something-v2-labels.json       {"<template without brackets>": "<index>"}
                labels/something-something-v2-{train,validation}.json   [{"id": "78687", "template": ...}, ...]
                <id>.webm directly in the folder, or under videos/ or 20bn-something-something-v2/
      lists:    train.csv, val.csv (or test.csv, which VideoMAE writes identical to val.csv)   "<path> <label>"
                (VideoMAE's), space- or comma-separated; paths relative to the dataset folder, or absolute
    HMDB51 (folder hmdb51/, or HMDB51/ as RepAdapter and VideoMAE name it in --data_set; HMDB_FOLDERS):
      official: videos/<class>/<name>.avi (or <class>/ directly under hmdb51/); split files
                splits/<class>_test_split<k>.txt (or testTrainMulti_7030_splits/, the archive's name, or
                annotations/, mmaction2's data/hmdb51/annotations/; HMDB_SPLIT_DIRS, first match wins), lines
                "<name>.avi <id>": 1 = train, 2 = test, 0 = unused. Classes: the sorted class-folder names.
      lists:    train_split<k>.csv, test_split<k>.csv   "<path> <label>", as for SSv2; for split 1 also
                VideoMAE's and RepAdapter's names train.csv and test.csv (or val.csv), which hold split 1

A split's list names are tried in the order of SSV2_LISTS / HMDB_LISTS; the first that exists is used (logged,
INFO; every sample's `source` names the list file and line). Relative paths in lists must stay inside the
dataset folder; absolute paths, as VideoMAE writes them, may point anywhere (petlbench.data.read_list_file).

Missing videos are not checked here: the runner checks every path of a split before decoding, and fails naming
the list line, or with on_bad_image=skip drops and records them (`loaders.load_split`).

Splits: SSv2 "train", "val" (the official validation set, which the papers report as test: SSv2's test labels
are not public); HMDB51 train_split1..3, test_split1..3, the protocol on split 1.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Literal

from petlbench.benchmark import BENCHMARKS, Benchmark
from petlbench.config import added_later
from petlbench.data import DataError, Sample, first_dir, read_list_file, read_text, text_lines
from petlbench.task import TASKS, ClassificationProtocol, Task


@dataclass
class VideoProtocol(ClassificationProtocol):
    """The classification protocol with clips (AdaptFormer / VideoMAE fine-tuning): frames per clip, how they are
    picked ("segment": one frame from each of num_frames equal segments, SSv2; "dense": num_frames consecutive
    frames frame_stride apart, HMDB51), and the test views averaged per video (clips along time x crops)."""

    num_frames: int = added_later(8)
    frame_sampling: Literal["segment", "dense"] = added_later("dense")
    frame_stride: int = added_later(4)
    test_clips: int = added_later(1)
    test_crops: int = added_later(1)

log = logging.getLogger(__name__)

SSV2_FOLDERS = ("ssv2", "SSV2", "something-something-v2", "20bn-something-something-v2")
SSV2_VIDEO_DIRS = ("videos", "20bn-something-something-v2", "")
SSV2_JSON = {"train": "something-something-v2-train.json", "val": "something-something-v2-validation.json"}
SSV2_LISTS = {"train": ("train.csv",), "val": ("val.csv", "test.csv")}
HMDB_FOLDERS = ("hmdb51", "HMDB51")
HMDB_SPLIT_DIRS = ("splits", "testTrainMulti_7030_splits", "annotations")
HMDB_SPLITS = tuple(f"{kind}_split{k}" for kind in ("train", "test") for k in (1, 2, 3))
# List files of each split, first match wins: ours, then (split 1) VideoMAE's / RepAdapter's train/test/val.csv.
HMDB_LISTS = {s: (f"{s}.csv",) for s in HMDB_SPLITS}
HMDB_LISTS["train_split1"] += ("train.csv",)
HMDB_LISTS["test_split1"] += ("test.csv", "val.csv")
# Videos per split (`petlbench check-data`): SSv2's official train / validation; HMDB51 70 / 30 per class.
SPLIT_SIZES = {("video/ssv2", "train"): 168913, ("video/ssv2", "val"): 24777,
               **{("video/hmdb51", f"train_split{k}"): 3570 for k in (1, 2, 3)},
               **{("video/hmdb51", f"test_split{k}"): 1530 for k in (1, 2, 3)}}

def read_video_list(list_path: str, folder: str, num_classes: int, check_files: bool = False) -> list[Sample]:
    """Samples from "<path> <label>" lines, space- or comma-separated (VideoMAE's csv lists; the label is the last
    field, so paths may hold spaces); paths relative to `folder`, or absolute. A malformed line, a label outside
    [0, num_classes) or (with `check_files`) a missing video raises DataError naming the list file and line."""
    return read_list_file(list_path, folder, num_classes, check_files=check_files, commas=True, what="video",
                          absolute_anywhere=True)


def split_size(task: Task, split: str) -> int | None:
    """The number of videos of a split (SPLIT_SIZES); None when not known."""
    return SPLIT_SIZES.get((task.name, split))


def _split_list(task: Task, folder: str, split: str, names: tuple[str, ...]) -> str | None:
    """The first of `names` that is a file in `folder`, logged; None when none is."""
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            log.info("%s %s: list %s", task.name, split, path)
            return path
    return None


def _load_json(path: str):
    if not os.path.isfile(path):
        raise DataError(f"{path!r} does not exist")
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None


def ssv2_labels(path: str, num_classes: int) -> dict[str, int]:
    """something-something-v2-labels.json: template (brackets removed) -> class index, checked to be exactly
    0..num_classes-1."""
    raw = _load_json(path)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected an object {{template: index}}, got {type(raw).__name__}")
    try:
        labels = {k: int(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        raise DataError(f"{path}: class indices must be integers") from None
    if sorted(labels.values()) != list(range(num_classes)):
        raise DataError(f"{path}: {len(labels)} classes with indices {min(labels.values(), default=None)}.."
                        f"{max(labels.values(), default=None)}; SSv2 has {num_classes}, indexed 0..{num_classes - 1}")
    return labels


def _ssv2_video_dir(folder: str, first_id: str, where: str) -> str:
    """The folder holding the <id>.webm files: the first of SSV2_VIDEO_DIRS where the first video exists."""
    tried = [os.path.join(folder, d, f"{first_id}.webm") for d in SSV2_VIDEO_DIRS]
    for path in tried:
        if os.path.isfile(path):
            return os.path.dirname(path)
    raise DataError(f"{where}: video {first_id}.webm not found; tried {', '.join(map(repr, tried))}")


def ssv2_samples(task: Task, data_root: str, split: str) -> list[Sample]:
    folder = first_dir(data_root, SSV2_FOLDERS, f"task {task.name!r}", "dataset folder")
    list_path = _split_list(task, folder, split, SSV2_LISTS[split])
    if list_path is not None:
        return read_video_list(list_path, folder, task.num_classes)
    labels_dir = os.path.join(folder, "labels")
    if not os.path.isdir(labels_dir):
        lists = " / ".join(repr(os.path.join(folder, n)) for n in SSV2_LISTS[split])
        raise DataError(f"task {task.name!r}, split {split!r}: neither a list file ({lists}) nor the "
                        f"official annotation folder {labels_dir!r} exists")
    labels = ssv2_labels(os.path.join(labels_dir, "something-something-v2-labels.json"), task.num_classes)
    ann_path = os.path.join(labels_dir, SSV2_JSON[split])
    entries = _load_json(ann_path)
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{ann_path}: expected a non-empty list of {{\"id\", \"template\"}} entries")
    samples, video_dir = [], None
    for i, entry in enumerate(entries):
        where = f"{ann_path}[{i}]"  # the JSON files are one line: the entry index locates it
        if not isinstance(entry, dict) or "id" not in entry or "template" not in entry:
            raise DataError(f"{where}: expected an object with 'id' and 'template', got {entry!r:.120}")
        # The class is the template with its placeholders' brackets removed (VideoMAE, mmaction2 do the same).
        template = str(entry["template"]).replace("[", "").replace("]", "")
        if template not in labels:
            raise DataError(f"{where}: template {template!r} is not a class in "
                            f"{os.path.join(labels_dir, 'something-something-v2-labels.json')}")
        video_dir = video_dir or _ssv2_video_dir(folder, str(entry["id"]), where)
        path = os.path.join(video_dir, f"{entry['id']}.webm")
        samples.append(Sample(path, labels[template], where))
    return samples


def _hmdb_official(task: Task, folder: str, split: str) -> list[Sample]:
    split_dir = next((os.path.join(folder, d) for d in HMDB_SPLIT_DIRS if os.path.isdir(os.path.join(folder, d))),
                     None)
    if split_dir is None:
        tried = [os.path.join(folder, d) for d in HMDB_SPLIT_DIRS + HMDB_LISTS[split]]
        raise DataError(f"task {task.name!r}, split {split!r}: no split files; tried {', '.join(map(repr, tried))}")
    video_root = os.path.join(folder, "videos")
    if not os.path.isdir(video_root):
        video_root = folder
    skip = set(HMDB_SPLIT_DIRS) | {"videos"}
    classes = sorted(d for d in os.listdir(video_root) if os.path.isdir(os.path.join(video_root, d))
                     and d not in skip and not d.startswith("."))
    if len(classes) != task.num_classes:
        raise DataError(f"{video_root}: {len(classes)} class folders; HMDB51 has {task.num_classes}")
    kind, k = split.split("_split")
    wanted = "1" if kind == "train" else "2"
    samples = []
    for label, c in enumerate(classes):
        list_path = os.path.join(split_dir, f"{c}_test_split{k}.txt")
        if not os.path.isfile(list_path):
            raise DataError(f"split file {list_path!r} for class {c!r} does not exist")
        for lineno, line in text_lines(list_path):
            parts = line.split()
            if not parts:
                continue
            where = f"{list_path}:{lineno}"
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DataError(f"{where}: expected '<name>.avi <0|1|2>', got {line.strip()!r}")
            if parts[1] != wanted:
                continue
            path = os.path.join(video_root, c, parts[0])
            samples.append(Sample(path, label, where))
    if not samples:
        raise DataError(f"{split_dir}: no video is marked {wanted} ({kind}) in split {k}")
    return samples


def hmdb51_samples(task: Task, data_root: str, split: str) -> list[Sample]:
    folder = first_dir(data_root, HMDB_FOLDERS, f"task {task.name!r}", "dataset folder")
    list_path = _split_list(task, folder, split, HMDB_LISTS[split])
    if list_path is not None:
        return read_video_list(list_path, folder, task.num_classes)
    log.info("%s %s: official split files", task.name, split)
    return _hmdb_official(task, folder, split)


def dataset(task: Task, samples: list[Sample], protocol: VideoProtocol, train: bool, on_bad: str = "fail"):
    """The VideoDataset of a video task's split, clips decoded per epoch by decord in the loader's workers.
    Every path is checked before any decoding: a missing video fails naming its list line, or with
    on_bad_image=skip is skipped and recorded. SSv2 is never flipped: its classes name directions ("Pushing
    something from left to right"), which a flip would turn into another class."""
    from .clips import VideoDataset  # decord and torch load only when a video run reads data

    exists = [os.path.isfile(s.path) for s in samples]
    missing = [s for s, ok in zip(samples, exists) if not ok]
    if missing and on_bad == "fail":
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"{missing[0].path} ({missing[0].source}): file does not exist{more}; "
                        "on_bad_image=skip skips and records missing videos")
    ds = VideoDataset([s for s, ok in zip(samples, exists) if ok], protocol, train, on_bad,
                      flip=task.name != "video/ssv2")
    ds.bad.items.extend((s.path, "file does not exist") for s in missing)
    return ds


def model_kwargs(task: Task, protocol: VideoProtocol) -> dict:
    """The video backbone's clip length."""
    return {"num_frames": protocol.num_frames}


# AdaptFormer's video fine-tuning (its VideoMAE-based scripts; tasks/reference/repadapter_protocol.md):
# VideoMAE ViT-B (K400 self-supervised), 8 frames, SGD momentum 0.9, lr 0.1, wd 0, 90 epochs.
VIDEO_PROTOCOL = dict(
    backbone="videomae_vit_base_patch16_224",
    weights="",  # the user passes the VideoMAE checkpoint file (weights=/path/checkpoint.pth)
    optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.0, epochs=90,
    warmup_epochs=0,  # the published recipe's warm-up is not stated in tasks/reference
    batch_size=64, num_frames=8, drop_path=0.0, normalize="imagenet", eval_every=5, img_size=224,
    interpolation="bilinear",  # VideoMAE's video_transforms resize clips bilinearly
    randaugment="", mixup=0.0, cutmix=0.0,
)

TASKS.add(Task(
    name="video/ssv2", benchmark="video", num_classes=174, splits=("train", "val"), samples_fn=ssv2_samples,
    # The official validation set is the papers' test set; "clean" selection has nothing else labelled to
    # select on, so it selects on the same set (the record names the selection mode).
    protocol=VideoProtocol(**VIDEO_PROTOCOL, frame_sampling="segment", test_clips=2, test_crops=3,
                                train_split="train", clean_train_split="train", val_split="val", test_split="val"),
    method_defaults={"repadapter": {"dim": 2}},  # RepAdapter's hidden size for video
    recipe="vpetl-video",  # the recipe of the published rows (tasks/recipes/video.py)
    summary="Something-Something-v2 (174 classes): 168,913 train / 24,777 validation videos; 8 frames by "
            "segment sampling, test 2 clips x 3 crops; top-1",
))
TASKS.add(Task(
    name="video/hmdb51", benchmark="video", num_classes=51, splits=HMDB_SPLITS, samples_fn=hmdb51_samples,
    protocol=VideoProtocol(**VIDEO_PROTOCOL, frame_sampling="dense", frame_stride=4, test_clips=4, test_crops=3,
                           train_split="train_split1", clean_train_split="train_split1", val_split="test_split1",
                           test_split="test_split1"),
    method_defaults={"repadapter": {"dim": 2}}, recipe="vpetl-video",
    summary="HMDB51 (51 classes), official split 1 of 3 (3,570 train / 1,530 test videos); 8 frames at "
            "stride 4, test 4 clips x 3 crops; top-1",
))


# --- results: published rows, and a latency column from the efficiency run of the video backbone ---------------
BACKBONE = VIDEO_PROTOCOL["backbone"]


def read_published(reference_dir: str):
    """SSv2 and HMDB51 rows of V-PETL Bench (reference/video_published.csv), long; a row's key names its
    backbone, so ViT-B rows never pair with Video Swin ones."""
    from petlbench.tables import published_frame, read_reference

    df = read_reference("video_published.csv", reference_dir)
    if df is None:
        return None
    long = df.rename(columns={"top1": "value"})
    long["key"] = long["method"].str.lower() + " (" + long["backbone"] + ")"
    long["label"] = long["method"] + " (" + long["backbone"] + ")"
    return published_frame(long)


def add_latency(table, eff_csv: str) -> None:
    """A latency column (batch 1) for the rows whose method the efficiency CSV has: the merged model where the
    method merges (what ships), else the unmerged one."""
    import pandas as pd

    from petlbench.tables import Cell, Column

    if not os.path.isfile(eff_csv):
        table.notes.append(f"Latency: run `petlbench bench --backbone {BACKBONE} --cfg repadapter.dim=2` "
                           "to add it (not measured yet).")
        return
    df = pd.read_csv(eff_csv)
    if "latency_ms_bs1" not in df:
        return
    ms = {}
    for r in df.to_dict("records"):
        if r["form"] == "merged" or r["method"] not in ms:
            ms[r["method"]] = r["latency_ms_bs1"]
    table.columns.append(Column("latency", "Latency bs1 (ms)", "Efficiency", 0))
    for row in table.rows:
        # the bench builds each method with its defaults: VPT is deep there, RepAdapter both-sided
        method = {"vpt_deep": "vpt"}.get(row.key, row.key) if row.source == "ours" else ""
        if method in ms:
            row.cells["latency"] = Cell(ms[method])
    table.notes.append(f"Latency: one 8-frame clip, from {eff_csv} (merged model where the method merges; "
                       "the machine is named there).")


def clip_tables(bench, frame, search=(), reference_dir=None, results_dir=None) -> list:
    from petlbench.tables import REFERENCE_DIR, grouped_table

    table = grouped_table(frame, bench, search, reference_dir or REFERENCE_DIR)
    if results_dir:
        add_latency(table, os.path.join(results_dir, "efficiency", f"{BACKBONE}.csv"))
    return [table]


BENCHMARKS.add(Benchmark(
    "video", "Video action recognition: SSv2 and HMDB51 (VideoMAE ViT-B)", table_title="video: top1", order=30,
    only_measured=True, published=read_published, tables=clip_tables, dataset=dataset, model_kwargs=model_kwargs,
    sample_kind="videos"))
