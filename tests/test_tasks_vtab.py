"""VTAB-1k tasks in NOAH's export layout, and the task listing."""
from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

from petlbench.data import DataError
from petlbench.task import TASKS
from petlbench.tasks.vtab import DATASETS, GROUPS


def test_nineteen_datasets_in_three_groups():
    tasks = [TASKS.get(f"vtab/{d}") for d in DATASETS]
    assert len(tasks) == 19
    assert [sum(t.group == g for t in tasks) for g in GROUPS] == [7, 4, 8]
    assert {t.name: t.num_classes for t in tasks}["vtab/sun397"] == 397
    assert TASKS.get("vtab/cifar").protocol.epochs == 100 and TASKS.get("vtab/cifar").protocol.lr == 1e-3


def make_vtab(root, name="eurosat", classes=10, per_split=None):
    per_split = per_split or {"train800": 6, "val200": 2, "train800val200": 8, "test": 4}
    folder = root / name
    for split, n in per_split.items():
        (folder / "images" / split).mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(n):
            rel = f"images/{split}/{i:06d}.jpg"
            Image.new("RGB", (12, 10), (i * 20, 0, 0)).save(folder / rel)
            lines.append(f"{rel} {i % classes}")
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_loader_reads_noah_layout(tmp_path):
    make_vtab(tmp_path)
    task = TASKS.get("vtab/eurosat")
    s = task.samples(str(tmp_path), "train800val200")
    assert len(s) == 8 and s[3].label == 3 and s[3].path.endswith("images/train800val200/000003.jpg")
    assert s[3].source.endswith("train800val200.txt:4")
    from petlbench.decode import decode_all

    data = decode_all(s, 16)
    assert data.images.shape == (8, 3, 16, 16) and data.images.dtype.is_floating_point is False
    assert data.labels.tolist() == [i % 10 for i in range(8)]


def test_missing_split_and_image(tmp_path):
    folder = make_vtab(tmp_path)
    task = TASKS.get("vtab/eurosat")
    with pytest.raises(DataError, match="has no split 'train'"):
        task.samples(str(tmp_path), "train")
    (folder / "test.txt").unlink()
    with pytest.raises(DataError, match=r"list file '.*eurosat/test.txt' does not exist"):
        task.samples(str(tmp_path), "test")
    (folder / "images" / "val200" / "000001.jpg").unlink()
    with pytest.raises(DataError, match=r"val200.txt:2: image '.*000001.jpg' does not exist"):
        task.samples(str(tmp_path), "val200")


def test_tasks_cli_lists_every_task():
    r = subprocess.run([sys.executable, "-m", "petlbench.cli", "tasks"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for name in ["vtab/cifar", "vtab/smallnorb_ele", "fewshot/food101", "domain/imagenet_r", "mini/digits"]:
        assert name in r.stdout
    assert "adamw lr 0.001 wd 0.0001, batch 64, 100 ep (10 warm-up), 224px bicubic, no aug, reproduction" in r.stdout
    bad = subprocess.run([sys.executable, "-m", "petlbench.cli", "tasks", "--benchmark", "vtb"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "known: " in bad.stderr and "Traceback" not in bad.stderr
