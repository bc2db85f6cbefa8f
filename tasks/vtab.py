"""VTAB-1k (Zhai et al. 2019, arXiv:1910.04867), 19 datasets, in NOAH's export layout:

    <data_root>/<dataset>/images/<split>/<idx>.jpg      (any relative paths work)
    <data_root>/<dataset>/{train800,val200,train800val200,test}.txt   lines "<relative path> <label>"

Classes, groups, test sizes and RepAdapter's published per-dataset scale s (RepAdapter / RepAdapter_attn):
tasks/protocols/vtab1k.csv (from
../shared/reference/repadapter_protocol.md). Protocol: `Protocol()` defaults (AdamW lr 1e-3, wd 1e-4, batch 64,
100 epochs, cosine with 10 warm-up epochs, no augmentation, bicubic 224, ImageNet mean/std).
"""
from __future__ import annotations

import csv
import os

from petlbench.data import Sample, read_list_file, require_dir
from petlbench.task import TASKS, Protocol, Task

SPLITS = ("train800", "val200", "train800val200", "test")
PROTOCOL_CSV = os.path.join(os.path.dirname(__file__), "protocols", "vtab1k.csv")


def list_file_samples(task: Task, data_root: str, split: str) -> list[Sample]:
    """`<data_root>/<dataset>/<split>.txt`, paths relative to the dataset folder (NOAH's layout; also the
    mini-benchmark's)."""
    folder = require_dir(os.path.join(require_dir(data_root, "data root"), task.name.split("/", 1)[1]),
                         f"dataset folder for {task.name}")
    return read_list_file(os.path.join(folder, f"{split}.txt"), folder, task.num_classes)


def _rows() -> list[dict]:
    with open(PROTOCOL_CSV, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


GROUPS = ("Natural", "Specialized", "Structured")
DATASETS: list[str] = []
for row in _rows():
    DATASETS.append(row["name"])
    TASKS.add(Task(
        name=f"vtab/{row['name']}", benchmark="vtab", num_classes=int(row["classes"]), splits=SPLITS,
        samples_fn=list_file_samples, protocol=Protocol(), group=row["group"], recipe="repadapter-vtab",
        method_defaults={"repadapter": {"scale": float(row["repadapter_scale"])},
                         "repadapter where=attn": {"scale": float(row["repadapter_attn_scale"])}},
        summary=f"VTAB-1k {row['group']}: 800+200 train, official test split; top-1",
    ))
