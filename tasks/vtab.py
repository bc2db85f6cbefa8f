"""VTAB-1k (Zhai et al. 2019, arXiv:1910.04867), 19 datasets, in NOAH's export layout:

    <data_root>/<dataset>/images/<split>/<idx>.jpg      (any relative paths inside <dataset>/ work)
    <data_root>/<dataset>/{train800,val200,train800val200,test}.txt   lines "<relative path> <label>"

<dataset> is the task's name (RepAdapter's folder names) or NOAH's script name for it (its configs/*/VTAB/*.sh
loop over cifar100 and oxford_pet): FOLDER_NAMES. When several exist, the first in that order is used (and
logged). Sizes checked by `petlbench check-data`: train800 800, val200 200, train800val200 1000, test the
official test split (vtab1k.csv `test_images`); `split_size`.

Classes, groups, test sizes and RepAdapter's published per-dataset scale s (RepAdapter / RepAdapter_attn):
tasks/protocols/vtab1k.csv (from
../shared/reference/repadapter_protocol.md). Protocol: `Protocol()` defaults (AdamW lr 1e-3, wd 1e-4, batch 64,
100 epochs, cosine with 10 warm-up epochs, no augmentation, bicubic 224, ImageNet mean/std).
"""
from __future__ import annotations

import csv
import os

from petlbench.data import Sample, first_dir, read_list_file
from petlbench.task import TASKS, Protocol, Task

SPLITS = ("train800", "val200", "train800val200", "test")
PROTOCOL_CSV = os.path.join(os.path.dirname(__file__), "protocols", "vtab1k.csv")


SPLIT_SIZES = {"train800": 800, "val200": 200, "train800val200": 1000}

# Folder names accepted under <data_root>, first match wins: ours (RepAdapter's), then NOAH's script names.
FOLDER_NAMES: dict[str, tuple[str, ...]] = {
    "cifar": ("cifar", "cifar100"),
    "oxford_iiit_pet": ("oxford_iiit_pet", "oxford_pet"),
}


def list_file_samples(task: Task, data_root: str, split: str) -> list[Sample]:
    """`<data_root>/<dataset>/<split>.txt`, paths relative to the dataset folder (NOAH's layout; also the
    mini-benchmark's); <dataset> any of FOLDER_NAMES (the task's name otherwise)."""
    name = task.name.split("/", 1)[1]
    folder = first_dir(data_root, FOLDER_NAMES.get(name, (name,)), f"dataset folder for {task.name}")
    return read_list_file(os.path.join(folder, f"{split}.txt"), folder, task.num_classes)


def split_size(task: Task, split: str) -> int | None:
    """The number of images a VTAB-1k split has (None for a task that is not VTAB-1k)."""
    if task.benchmark != "vtab":
        return None
    return TEST_SIZES[task.name.split("/", 1)[1]] if split == "test" else SPLIT_SIZES.get(split)


def _rows() -> list[dict]:
    with open(PROTOCOL_CSV, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


GROUPS = ("Natural", "Specialized", "Structured")
DATASETS: list[str] = []
TEST_SIZES: dict[str, int] = {}
for row in _rows():
    DATASETS.append(row["name"])
    TEST_SIZES[row["name"]] = int(row["test_images"])
    TASKS.add(Task(
        name=f"vtab/{row['name']}", benchmark="vtab", num_classes=int(row["classes"]), splits=SPLITS,
        samples_fn=list_file_samples, protocol=Protocol(), group=row["group"], recipe="repadapter-vtab",
        method_defaults={"repadapter": {"scale": float(row["repadapter_scale"])},
                         "repadapter where=attn": {"scale": float(row["repadapter_attn_scale"])}},
        summary=f"VTAB-1k {row['group']}: 800+200 train, official test split; top-1",
    ))
