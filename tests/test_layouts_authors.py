"""Data layouts as the authors' own code and READMEs write them (NOAH's VTAB scripts, RepAdapter's few-shot
dataset.py and video README, VideoMAE's csv lists, mmaction2's annotations/), with small generated images, and
the list-file rules: UTF-8 (with or without a byte-order mark), paths held inside the dataset folder, and bad
images under DataLoader workers reported as one line."""
from __future__ import annotations

import logging
import os

import pytest
from PIL import Image

from petlbench.data import DataError, Sample, read_list_file
from petlbench.decode import ImageDataset, decode_all, resize_to_uint8
from petlbench.task import TASKS

TENCH, GOLDFISH = "n01440764", "n01443537"  # ImageNet-1k classes 0 and 1


def _img(path, color: int = 0) -> str:
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (8, 8), (color, 30, 200)).save(path)
    return path


def _vtab(folder, n: int = 3, classes: int = 2):
    for split in ("train800", "val200", "train800val200", "test"):
        lines = []
        for i in range(n):
            rel = f"images/{split}/{i:06d}.jpg"
            _img(folder / rel, 40 * i)
            lines.append(f"{rel} {i % classes}\n")
        (folder / f"{split}.txt").write_text("".join(lines))


# --- VTAB-1k: NOAH's script folder names --------------------------------------------------------------------
@pytest.mark.parametrize("task,noah_name", [("vtab/cifar", "cifar100"), ("vtab/oxford_iiit_pet", "oxford_pet")])
def test_vtab_noah_script_folder_names(tmp_path, task, noah_name):
    from petlbench.tasks.vtab import FOLDER_NAMES

    assert noah_name in FOLDER_NAMES[task.split("/")[1]]
    _vtab(tmp_path / noah_name)
    s = TASKS.get(task).samples(str(tmp_path), "test")
    assert [x.label for x in s] == [0, 1, 0] and s[0].source == f"{tmp_path / noah_name / 'test.txt'}:1"


def test_vtab_both_folder_names_the_task_name_wins(tmp_path, caplog):
    _vtab(tmp_path / "cifar", n=2)
    _vtab(tmp_path / "cifar100", n=3)
    with caplog.at_level(logging.INFO, logger="petlbench.data"):
        s = TASKS.get("vtab/cifar").samples(str(tmp_path), "train800")
    assert len(s) == 2 and s[0].path.startswith(str(tmp_path / "cifar" / "images"))
    assert "using " + str(tmp_path / "cifar") in caplog.text and str(tmp_path / "cifar100") in caplog.text
    with pytest.raises(DataError) as e:  # neither: every name tried is in the message
        TASKS.get("vtab/oxford_iiit_pet").samples(str(tmp_path), "test")
    assert "oxford_iiit_pet" in str(e.value) and "oxford_pet'" in str(e.value)


# --- few-shot: RepAdapter's layout ----------------------------------------------------------------------------
def _repadapter_fewshot(folder):
    """RepAdapter's dataset.py: lists in data/few_shot/<name>/, images under images/train and images/test."""
    _img(folder / "images" / "train" / "apple_pie" / "1.jpg", 1)
    _img(folder / "images" / "train" / "baklava" / "2.jpg", 2)
    _img(folder / "images" / "test" / "apple_pie" / "9.jpg", 9)
    (folder / "train_meta.list.num_shot_1.seed_0").write_text("apple_pie/1.jpg 0\nbaklava/2.jpg 2\n")
    (folder / "test_meta.list").write_text("apple_pie/9.jpg 0\n")


def test_fewshot_repadapter_layout(tmp_path):
    folder = tmp_path / "food101"
    _repadapter_fewshot(folder)
    t = TASKS.get("fewshot/food101")
    train = t.samples(str(tmp_path), "train_shot1_seed0")
    assert [(x.path, x.label) for x in train] == [(str(folder / "images/train/apple_pie/1.jpg"), 0),
                                                  (str(folder / "images/train/baklava/2.jpg"), 2)]
    assert train[0].source == f"{folder / 'train_meta.list.num_shot_1.seed_0'}:1"
    assert [x.path for x in t.samples(str(tmp_path), "test")] == [str(folder / "images/test/apple_pie/9.jpg")]
    with pytest.raises(DataError) as e:  # no val list in either place: both paths named
        t.samples(str(tmp_path), "val")
    assert str(folder / "annotations" / "val_meta.list") in str(e.value)
    assert str(folder / "val_meta.list") in str(e.value)


def test_fewshot_repadapter_standford_cars_name(tmp_path):
    folder = tmp_path / "standford_cars"  # RepAdapter's configs/repblock_few_shot/standford_cars.yaml
    _img(folder / "images" / "test" / "00001.jpg")
    (folder / "test_meta.list").write_text("00001.jpg 195\n")
    assert [x.label for x in TASKS.get("fewshot/stanford_cars").samples(str(tmp_path), "test")] == [195]


def test_fewshot_noah_annotations_win_over_folder_lists(tmp_path):
    folder = tmp_path / "food101"
    _repadapter_fewshot(folder)
    _img(folder / "images" / "apple_pie" / "5.jpg")  # NOAH: images/<class>/..., lists in annotations/
    (folder / "annotations").mkdir()
    (folder / "annotations" / "test_meta.list").write_text("apple_pie/5.jpg 0\n")
    s = TASKS.get("fewshot/food101").samples(str(tmp_path), "test")
    assert [x.path for x in s] == [str(folder / "images" / "apple_pie" / "5.jpg")]
    assert s[0].source.startswith(str(folder / "annotations" / "test_meta.list"))


# --- domain: NOAH's val_meta.list next to ImageNet val in wnid folders ----------------------------------------
def test_imagenet_val_wnid_folders_win_over_a_list_naming_absent_files(tmp_path, caplog):
    base = tmp_path / "imagenet"
    _img(base / "val" / TENCH / "ILSVRC2012_val_00000293.JPEG")
    _img(base / "val" / GOLDFISH / "ILSVRC2012_val_00000001.JPEG")
    (base / "annotations").mkdir(parents=True)
    # NOAH's list names the flat val folder's files
    (base / "annotations" / "val_meta.list").write_text(
        "ILSVRC2012_val_00000001.JPEG 1\nILSVRC2012_val_00000293.JPEG 0\n")
    t = TASKS.get("domain/imagenet")
    with caplog.at_level(logging.INFO, logger="petlbench.tasks.domain"):
        s = t.samples(str(tmp_path), "test")
    assert sorted((os.path.basename(x.path), x.label) for x in s) == \
        [("ILSVRC2012_val_00000001.JPEG", 1), ("ILSVRC2012_val_00000293.JPEG", 0)]
    assert "WordNet-id folders" in caplog.text and "val_meta.list" in caplog.text
    # the flat val folder NOAH's list was written for: the list is used
    flat = tmp_path / "flat"
    _img(flat / "imagenet" / "val" / "ILSVRC2012_val_00000001.JPEG")
    _img(flat / "imagenet" / "val" / "ILSVRC2012_val_00000293.JPEG")
    (flat / "imagenet" / "annotations").mkdir()
    (flat / "imagenet" / "annotations" / "val_meta.list").write_text(
        "ILSVRC2012_val_00000001.JPEG 1\nILSVRC2012_val_00000293.JPEG 0\n")
    s = t.samples(str(flat), "test")
    assert [x.label for x in s] == [1, 0] and s[1].source.endswith("val_meta.list:2")
    # neither matches: the list's missing file is named
    os.remove(flat / "imagenet" / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DataError, match=r"val_meta.list:1: image .*ILSVRC2012_val_00000001.JPEG' does not exist"):
        t.samples(str(flat), "test")


# --- video: RepAdapter's SSV2 folder, VideoMAE's csv names, mmaction2's annotations/ ---------------------------
def test_ssv2_repadapter_folder_and_videomae_lists(tmp_path):
    folder = tmp_path / "SSV2"  # RepAdapter's video README: --data_path /path/to/SSV2
    (folder / "videos").mkdir(parents=True)
    (folder / "train.csv").write_text("videos/1.mp4 3\n")
    (folder / "test.csv").write_text(f"{folder / 'videos' / '2.mp4'} 173\n")  # VideoMAE: test.csv = val.csv
    t = TASKS.get("video/ssv2")
    assert [(x.path, x.label) for x in t.samples(str(tmp_path), "train")] == [(str(folder / "videos/1.mp4"), 3)]
    val = t.samples(str(tmp_path), "val")
    assert [x.label for x in val] == [173] and val[0].source == f"{folder / 'test.csv'}:1"
    (folder / "val.csv").write_text("videos/3.mp4 7\n")  # both: val.csv first
    assert [x.label for x in t.samples(str(tmp_path), "val")] == [7]


def test_hmdb51_videomae_list_names_are_split_1(tmp_path):
    folder = tmp_path / "hmdb51"
    folder.mkdir()
    (folder / "train.csv").write_text("videos/a/1.avi 0\n")
    (folder / "val.csv").write_text("videos/a/2.avi 1\n")
    (folder / "test.csv").write_text("videos/a/3.avi 2\n")
    t = TASKS.get("video/hmdb51")
    assert [x.label for x in t.samples(str(tmp_path), "train_split1")] == [0]
    assert [x.label for x in t.samples(str(tmp_path), "test_split1")] == [2]  # test.csv before val.csv
    (folder / "test.csv").unlink()
    assert [x.label for x in t.samples(str(tmp_path), "test_split1")] == [1]
    with pytest.raises(DataError) as e:  # split 2 is not what train.csv holds
        t.samples(str(tmp_path), "train_split2")
    assert "train_split2.csv" in str(e.value)
    (folder / "train_split1.csv").write_text("videos/a/4.avi 50\n")  # ours first
    assert [x.label for x in t.samples(str(tmp_path), "train_split1")] == [50]


def test_hmdb51_mmaction2_annotations_folder(tmp_path):
    folder = tmp_path / "hmdb51"
    classes = sorted(f"class_{k:02d}" for k in range(51))
    for c in classes:
        (folder / "videos" / c).mkdir(parents=True)  # the split files alone decide; videos are checked later
        (folder / "annotations").mkdir(exist_ok=True)
        (folder / "annotations" / f"{c}_test_split1.txt").write_text(f"{c}_a.avi 1 \n{c}_b.avi 2 \n{c}_c.avi 0 \n")
    t = TASKS.get("video/hmdb51")
    train, test = t.samples(str(tmp_path), "train_split1"), t.samples(str(tmp_path), "test_split1")
    assert len(train) == len(test) == 51
    assert train[5].path == str(folder / "videos" / classes[5] / f"{classes[5]}_a.avi")
    assert train[0].source == f"{folder / 'annotations' / 'class_00_test_split1.txt'}:1"


# --- list files: encoding -------------------------------------------------------------------------------------
def test_list_not_utf8_is_one_line_naming_file_and_line(tmp_path):
    folder = tmp_path / "eurosat"
    _vtab(folder)
    (folder / "test.txt").write_bytes(b"images/test/000000.jpg 0\nimages/test/caf\xe9.jpg 1\n")  # Latin-1
    with pytest.raises(DataError) as e:
        TASKS.get("vtab/eurosat").samples(str(tmp_path), "test")
    assert str(e.value).startswith(f"{folder / 'test.txt'}:2: not UTF-8") and "\n" not in str(e.value)
    # few-shot and domain lists are read the same way
    fs = tmp_path / "food101" / "annotations"
    fs.mkdir(parents=True)
    (fs / "test_meta.list").write_bytes(b"\xff\xfea\x00 \x000\x00")  # UTF-16
    with pytest.raises(DataError, match=r"test_meta.list:1: not UTF-8"):
        TASKS.get("fewshot/food101").samples(str(tmp_path), "test")
    ann = tmp_path / "imagenet" / "annotations"
    _img(tmp_path / "imagenet" / "val" / TENCH / "a.JPEG")
    ann.mkdir(parents=True)
    (ann / "val_meta.list").write_bytes(b"a.JPEG 0\n\x93b.JPEG\x94 0\n")
    with pytest.raises(DataError, match=r"val_meta.list:2: not UTF-8"):
        TASKS.get("domain/imagenet").samples(str(tmp_path), "test")


def test_list_with_byte_order_mark(tmp_path):
    folder = tmp_path / "eurosat"
    _vtab(folder)
    (folder / "test.txt").write_bytes("images/test/000001.jpg 1\n".encode("utf-8-sig"))
    s = TASKS.get("vtab/eurosat").samples(str(tmp_path), "test")
    assert [(x.path, x.label) for x in s] == [(str(folder / "images/test/000001.jpg"), 1)]
    fs = tmp_path / "food101"
    _img(fs / "images" / "a" / "1.jpg")
    (fs / "annotations").mkdir()
    (fs / "annotations" / "test_meta.list").write_bytes("a/1.jpg 0\n".encode("utf-8-sig"))
    assert [x.path for x in TASKS.get("fewshot/food101").samples(str(tmp_path), "test")] == \
        [str(fs / "images" / "a" / "1.jpg")]


# --- list files: paths stay inside the dataset folder --------------------------------------------------------
def test_paths_escaping_the_dataset_folder(tmp_path):
    folder = tmp_path / "data" / "eurosat"
    _vtab(folder)
    outside = _img(tmp_path / "x.png")
    t = TASKS.get("vtab/eurosat")
    root = str(tmp_path / "data")
    for line in ("../../x.png 0", f"{outside} 0", "images/../../../x.png 0"):
        (folder / "test.txt").write_text(f"images/test/000000.jpg 0\n{line}\n")
        with pytest.raises(DataError) as e:
            t.samples(root, "test")
        msg = str(e.value)
        assert msg.startswith(f"{folder / 'test.txt'}:2: image path") and "outside the dataset folder" in msg, line
        assert os.path.realpath(outside) in msg and "\n" not in msg
    # a symlink inside the folder that points out of it
    os.symlink(outside, folder / "images" / "test" / "link.png")
    os.symlink(str(tmp_path), folder / "images" / "up")
    for line in ("images/test/link.png 0", "images/up/x.png 0"):
        (folder / "test.txt").write_text(f"{line}\n")
        with pytest.raises(DataError, match=r"test.txt:1: image path .* outside the dataset folder"):
            t.samples(root, "test")
    # inside is fine: an absolute path into the folder, a symlink within it, a dataset folder that is a symlink
    os.symlink(folder / "images" / "test" / "000001.jpg", folder / "images" / "test" / "alias.jpg")
    (folder / "test.txt").write_text(f"{folder / 'images/test/000000.jpg'} 0\nimages/test/alias.jpg 1\n"
                                     "images/test/../val200/000001.jpg 1\n")
    assert [x.label for x in t.samples(root, "test")] == [0, 1, 1]
    linked = tmp_path / "linked"
    linked.mkdir()
    os.symlink(folder, linked / "eurosat")
    assert len(t.samples(str(linked), "test")) == 3


def test_fewshot_and_domain_lists_stay_inside(tmp_path):
    fs = tmp_path / "food101"
    _img(fs / "images" / "a" / "1.jpg")
    _img(tmp_path / "secret.jpg")
    (fs / "annotations").mkdir()
    (fs / "annotations" / "test_meta.list").write_text("a/1.jpg 0\n../../secret.jpg 0\n")
    with pytest.raises(DataError, match=r"test_meta.list:2: image path '../../secret.jpg' resolves to"):
        TASKS.get("fewshot/food101").samples(str(tmp_path), "test")
    # Stanford Cars' lines are relative to the dataset folder itself: inside
    cars = tmp_path / "stanford_cars"
    _img(cars / "cars_test" / "00001.jpg")
    (cars / "annotations").mkdir(parents=True)
    (cars / "annotations" / "test_meta.list").write_text("cars_test/00001.jpg 3\n")
    assert [x.label for x in TASKS.get("fewshot/stanford_cars").samples(str(tmp_path), "test")] == [3]


def test_video_lists_absolute_anywhere_relative_inside(tmp_path):
    from petlbench.tasks.video import read_video_list

    folder = tmp_path / "hmdb51"
    folder.mkdir()
    (folder / "l.csv").write_text(f"{tmp_path / 'elsewhere' / 'a.avi'} 0\n")  # VideoMAE writes absolute paths
    assert read_video_list(str(folder / "l.csv"), str(folder), 51)[0].path == str(tmp_path / "elsewhere" / "a.avi")
    (folder / "l.csv").write_text("../elsewhere/a.avi 0\n")
    with pytest.raises(DataError, match=r"l.csv:1: video path '../elsewhere/a.avi' resolves to .* outside"):
        read_video_list(str(folder / "l.csv"), str(folder), 51)


# --- an undecodable image under DataLoader workers ------------------------------------------------------------
def _bad_samples(tmp_path):
    good = _img(tmp_path / "good.png")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not a png at all" * 10)
    return [Sample(good, 0, "list.txt:1"), Sample(str(corrupt), 1, "list.txt:2"), Sample(good, 0, "list.txt:3")]


def test_undecodable_image_under_workers_is_one_line(tmp_path):
    samples = _bad_samples(tmp_path)
    with pytest.raises(DataError) as e:
        decode_all(samples, 8, num_workers=2)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'corrupt.png'} (list.txt:2): image does not decode")
    assert "\n" not in msg and "Original Traceback" not in msg and "worker" not in msg

    # the runner's loader (petlbench.run.LoaderBatches: persistent workers, collate_skip)
    from petlbench.loaders import LoaderBatches

    batches = LoaderBatches(ImageDataset(samples, resize_to_uint8(8)), 2, shuffle=False, workers=2, seed=0)
    with pytest.raises(DataError) as e:
        list(batches)
    assert "\n" not in str(e.value) and "(list.txt:2): image does not decode" in str(e.value)
    # without workers: the same error; with on_bad=skip: skipped and recorded
    with pytest.raises(DataError, match=r"\(list.txt:2\): image does not decode"):
        decode_all(samples, 8, num_workers=0)
    data = decode_all(samples, 8, on_bad="skip", num_workers=2)
    assert len(data) == 2 and [p for p, _ in data.bad.items] == [str(tmp_path / "corrupt.png")]


def test_read_list_file_unchanged_for_plain_lists(tmp_path):
    _img(tmp_path / "a b.jpg")
    (tmp_path / "l.txt").write_text("a b.jpg 1\r\n\r\n")  # spaces in paths, CRLF, empty lines
    s = read_list_file(str(tmp_path / "l.txt"), str(tmp_path), 2)
    assert [(x.path, x.label, x.source) for x in s] == [(str(tmp_path / "a b.jpg"), 1, f"{tmp_path / 'l.txt'}:1")]
