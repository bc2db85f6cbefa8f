"""`petlbench check-data`: every list read, every file opened, sizes and labels checked, results cached by
(path, size, mtime); and the CLI's SIGTERM handling. Small generated folders in the authors' layouts."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from petlbench.check import check_tasks, expected_size, tasks_of
from petlbench.cli import main
from petlbench.errors import ConfigError
from petlbench.task import TASKS

KITTI = {"train800": 800, "val200": 200, "train800val200": 1000, "test": 711}  # vtab/kitti: 4 classes


def _img(path, color: int = 0) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (6, 6), (color, 0, 0)).save(path)
    return path


def make_kitti(root, sizes=KITTI, files: int = 8) -> str:
    """vtab/kitti in NOAH's layout with the official split sizes; lines cycle over `files` images per split."""
    folder = os.path.join(str(root), "kitti")
    for split, n in sizes.items():
        rels = [f"images/{split}/{j:06d}.png" for j in range(files)]
        for j, rel in enumerate(rels):
            _img(os.path.join(folder, rel), 30 * j)
        with open(os.path.join(folder, f"{split}.txt"), "w") as f:
            f.writelines(f"{rels[i % files]} {i % 4}\n" for i in range(n))
    return folder


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PETLBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "check.sqlite"


def test_known_sizes():
    assert [expected_size(TASKS.get("vtab/cifar"), s) for s in ("train800", "val200", "train800val200", "test")] \
        == [800, 200, 1000, 10000]
    assert expected_size(TASKS.get("fewshot/food101"), "test") == 30300
    assert expected_size(TASKS.get("fewshot/food101"), "train_shot1_seed0") is None
    assert expected_size(TASKS.get("domain/imagenet"), "test") == 50000
    assert expected_size(TASKS.get("video/hmdb51"), "test_split1") == 1530
    assert expected_size(TASKS.get("mini/digits"), "test") is None  # the mini tasks share VTAB's loader
    assert len(tasks_of("vtab")) == 19
    with pytest.raises(ConfigError, match="known: "):
        tasks_of("vtb")


def test_clean_vtab_folder(tmp_path, cache, capsys):
    make_kitti(tmp_path)
    rc = main(["check-data", "--task", "vtab/kitti", "--data-root", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "vtab/kitti test: 711 images, 4 classes, 0 unreadable, expected 711: ok" in out.splitlines()
    assert "vtab/kitti train800: 800 images, 4 classes, 0 unreadable, expected 800: ok" in out.splitlines()
    assert f"  read {tmp_path / 'kitti' / 'test.txt'}" in out.splitlines()
    assert "4 splits, 0 with problems; 32 files checked, 0 unchanged" in out
    assert cache.is_file()


def test_problems_are_named_and_exit_1(tmp_path, cache, capsys):
    folder = make_kitti(tmp_path, {**KITTI, "val200": 199})
    with open(os.path.join(folder, "images", "test", "000003.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n truncated")
    os.remove(os.path.join(folder, "images", "test", "000005.png"))
    open(os.path.join(folder, "images", "train800", "000001.png"), "wb").close()  # empty
    rc = main(["check-data", "--task", "vtab/kitti", "--data-root", str(tmp_path), "--quiet", "--show", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 1
    assert "vtab/kitti val200: 199 images, 4 classes, 0 unreadable, expected 200: FAIL (199 listed, not 200)" in lines
    test = os.path.join(folder, "test.txt")
    # every line naming a bad file is counted (8 files cycle over 711 lines), the first ones named by file:line
    n3, n5 = len(range(3, 711, 8)), len(range(5, 711, 8))
    assert (f"vtab/kitti test: 711 images, 4 classes, {n3 + n5} unreadable, expected 711: "
            f"FAIL ({n3 + n5} unreadable)") in lines
    i = lines.index(f"  read {test}")
    assert lines[i + 1].startswith(f"  {test}:4: {os.path.join(folder, 'images', 'test', '000003.png')}: "
                                   "image does not decode")
    assert lines[i + 2] == f"  {test}:6: {os.path.join(folder, 'images', 'test', '000005.png')}: does not exist"
    assert lines[i + 4] == f"  ... and {n3 + n5 - 3} more"
    assert any(x.endswith("train800.txt:2: " + os.path.join(folder, "images", "train800", "000001.png")
                          + ": is empty (0 bytes)") for x in lines)


def test_unreadable_split_and_bad_label(tmp_path, cache, capsys):
    folder = make_kitti(tmp_path)
    with open(os.path.join(folder, "test.txt"), "a") as f:
        f.write("images/test/000000.png 4\n")
    os.remove(os.path.join(folder, "val200.txt"))
    rc = main(["check-data", "--task", "vtab/kitti", "--data-root", str(tmp_path), "--quiet", "--split",
               "val200,test"])
    out = capsys.readouterr().out
    assert rc == 1
    assert f"vtab/kitti val200: FAIL: list file '{os.path.join(folder, 'val200.txt')}' does not exist" in out
    assert f"vtab/kitti test: FAIL: {os.path.join(folder, 'test.txt')}:712: label 4 is outside 0..3" in out
    assert "train800" not in out


def test_second_check_uses_the_cache(tmp_path, cache):
    folder = make_kitti(tmp_path)
    task = [TASKS.get("vtab/kitti")]
    first = check_tasks(task, str(tmp_path), workers=4)
    assert first.ok and (first.checked, first.cached) == (32, 0)
    t0 = time.perf_counter()
    second = check_tasks(task, str(tmp_path), workers=4)
    assert second.ok and (second.checked, second.cached) == (0, 32) and time.perf_counter() - t0 < 5
    # a changed file (new size / mtime) is opened again, and a bad result is not cached
    path = os.path.join(folder, "images", "test", "000002.png")
    with open(path, "wb") as f:
        f.write(b"not an image at all")
    third = check_tasks(task, str(tmp_path), workers=4)
    assert (third.checked, third.cached) == (1, 31) and not third.ok
    assert {p.path for r in third.splits for p in r.bad} == {path}
    assert check_tasks(task, str(tmp_path), workers=4).checked == 1  # still bad, checked again
    assert check_tasks(task, str(tmp_path), cache_path=None).cached == 0


def test_fewshot_and_video_splits(tmp_path, cache):
    pets = tmp_path / "oxford-pets"
    _img(str(pets / "images" / "Abyssinian_1.jpg"))
    (pets / "annotations").mkdir()
    (pets / "annotations" / "test_meta.list").write_text("Abyssinian_1.jpg 0\n")
    (r,) = check_tasks([TASKS.get("fewshot/oxford_pets")], str(tmp_path), splits=["test"]).splits
    assert not r.ok and r.summary() == ("fewshot/oxford_pets test: 1 images, 1 classes, 0 unreadable, "
                                        "expected 3669: FAIL (1 listed, not 3669)")
    hmdb = tmp_path / "hmdb51"
    (hmdb / "videos").mkdir(parents=True)
    (hmdb / "videos" / "a.avi").write_bytes(b"\x00" * 64)
    (hmdb / "videos" / "empty.avi").write_bytes(b"")
    (hmdb / "test.csv").write_text("videos/a.avi 0\nvideos/empty.avi 1\nvideos/gone.avi 2\n")
    (r,) = check_tasks([TASKS.get("video/hmdb51")], str(tmp_path), splits=["test_split1"]).splits
    assert r.kind == "videos" and r.count == 3 and r.sources == [str(hmdb / "test.csv")]
    assert [(p.where.rsplit(":", 1)[1], p.reason) for p in r.bad] == [("2", "is empty (0 bytes)"),
                                                                      ("3", "does not exist")]
    assert r.summary().startswith("video/hmdb51 test_split1: 3 videos, 3 classes, 2 unreadable, expected 1530: FAIL")


def test_benchmark_option(tmp_path, cache, capsys):
    make_kitti(tmp_path)
    rc = main(["check-data", "--benchmark", "vtab", "--data-root", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 1
    assert "vtab/kitti test: 711 images, 4 classes, 0 unreadable, expected 711: ok" in out
    assert any(x.startswith("vtab/cifar test: FAIL: dataset folder for vtab/cifar: no folder under") for x in out)
    assert out[-1].startswith("76 splits, 72 with problems")
    assert main(["check-data", "--benchmark", "vtb", "--data-root", str(tmp_path)]) == 2
    assert main(["check-data", "--benchmark", "seg", "--data-root", str(tmp_path)]) == 2  # its own checks
    assert main(["check-data", "--task", "vtab/kitti", "--split", "val", "--data-root", str(tmp_path)]) == 2
    # --split with --benchmark: the tasks that have it (the domain targets have no val split)
    (r,) = check_tasks(tasks_of("domain"), str(tmp_path), splits=["val"]).splits
    assert r.task == "domain/imagenet" and r.error.startswith("task 'domain/imagenet': no dataset folder")


def test_sigterm_says_terminated_and_exits_143(tmp_path):
    code = ("import sys, time\nimport petlbench.cli as cli\n"
            "def slow(args):\n    print('ready', flush=True)\n    time.sleep(60)\n    return 0\n"
            "cli.cmd_methods = slow\nsys.exit(cli.main(['methods']))\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 143 and err.strip() == "petlbench: terminated"


@pytest.mark.video
def test_decode_videos(tmp_path, cache):
    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("decord")
    import numpy as np

    folder = tmp_path / "hmdb51"
    (folder / "videos").mkdir(parents=True)
    w = cv2.VideoWriter(str(folder / "videos" / "ok.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (32, 24))
    for i in range(4):
        w.write(np.full((24, 32, 3), 20 * i, np.uint8))
    w.release()
    (folder / "videos" / "bad.avi").write_bytes(b"RIFF not a video" * 8)
    (folder / "test.csv").write_text("videos/ok.avi 0\nvideos/bad.avi 1\n")
    task = [TASKS.get("video/hmdb51")]
    (r,) = check_tasks(task, str(tmp_path), splits=["test_split1"]).splits
    assert r.bad == []  # by default: exists and is not empty
    (r,) = check_tasks(task, str(tmp_path), splits=["test_split1"], decode_videos=True).splits
    assert [(p.where, p.reason.split(":")[0]) for p in r.bad] == [(f"{folder / 'test.csv'}:2", "video does not decode")]
