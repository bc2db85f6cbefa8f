"""Video data: SSv2 and HMDB51 loaders on generated folders in their real layouts, frame sampling, and
VideoDataset on small generated videos whose frames encode their index (green level 6*i + 10) and whose left
half is red (to see flips)."""
from __future__ import annotations

import dataclasses
import json
import os
import random

import pytest
import torch

pytestmark = pytest.mark.video
cv2 = pytest.importorskip("cv2")
pytest.importorskip("decord")
import numpy as np  # noqa: E402

from petlbench.data import DataError, Sample  # noqa: E402
from petlbench.decode import collate_skip  # noqa: E402
from petlbench.task import TASKS  # noqa: E402
from petlbench.tasks.video import dataset, read_video_list  # noqa: E402
from petlbench.tasks.video.clips import VideoDataset, sample_indices  # noqa: E402

FOURCC = {".avi": "MJPG", ".webm": "VP80"}


def write_video(path: str, n: int) -> str:
    """n frames of 64x48: every pixel's green is 6*i + 10 for frame i, the left half is red."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*FOURCC[os.path.splitext(path)[1]]), 25, (64, 48))
    assert w.isOpened(), path
    for i in range(n):
        f = np.full((48, 64, 3), 6 * i + 10, np.uint8)
        f[:, :32, 2], f[:, 32:, 2] = 255, 0  # BGR
        w.write(f)
    w.release()
    return path


def frame_ids(clip: torch.Tensor) -> list[int]:
    """The encoded frame index of each frame of a (3, T, S, S) clip."""
    green = clip[1].flatten(1).float().median(dim=1).values
    return [round((g - 10) / 6) for g in green.tolist()]


def small(task: str, **kw):
    """The task's protocol at 32 px and 4 frames, so tests decode little."""
    return dataclasses.replace(TASKS.get(task).protocol, img_size=32, num_frames=4, **kw)


# --- SSv2 ---------------------------------------------------------------------------------------------------

SSV2_CLASSES = [f"Moving something {k} times" for k in range(174)]


def make_ssv2_official(root, ids=None) -> str:
    folder = root / "something-something-v2"
    (folder / "labels").mkdir(parents=True)
    (folder / "labels" / "something-something-v2-labels.json").write_text(
        json.dumps({c: str(k) for k, c in enumerate(SSV2_CLASSES)}))
    ids = ids or {"train": [("101", 5), ("102", 173), ("103", 0)], "val": [("201", 7), ("202", 7)]}
    for split, entries in ids.items():
        name = "train" if split == "train" else "validation"
        data = [{"id": i, "label": "x", "template": f"Moving [something] {c} times", "placeholders": ["x"]}
                for i, c in entries]
        (folder / "labels" / f"something-something-v2-{name}.json").write_text(json.dumps(data))
        for i, _ in entries:
            write_video(str(folder / "videos" / f"{i}.webm"), 20)
    return str(folder)


def test_ssv2_official_json_layout(tmp_path):
    folder = make_ssv2_official(tmp_path)
    task = TASKS.get("video/ssv2")
    train, val = task.samples(str(tmp_path), "train"), task.samples(str(tmp_path), "val")
    assert [s.label for s in train] == [5, 173, 0] and [s.label for s in val] == [7, 7]
    assert train[1].path == os.path.join(folder, "videos", "102.webm")
    assert train[1].source.endswith("something-something-v2-train.json[1]")


def test_ssv2_list_layout(tmp_path):
    folder = tmp_path / "ssv2"
    a, b = write_video(str(folder / "v" / "a.webm"), 20), write_video(str(tmp_path / "elsewhere" / "b.webm"), 20)
    (folder / "train.csv").write_text(f"v/a.webm,3\n\n{b} 170\n")  # comma, then space with an absolute path
    (folder / "val.csv").write_text("v/a.webm 1\n")
    task = TASKS.get("video/ssv2")
    train = task.samples(str(tmp_path), "train")
    assert [(s.path, s.label) for s in train] == [(a, 3), (b, 170)]
    assert train[1].source == f"{folder / 'train.csv'}:3"
    assert len(task.samples(str(tmp_path), "val")) == 1


def test_ssv2_errors_name_file_and_entry(tmp_path):
    task = TASKS.get("video/ssv2")
    with pytest.raises(DataError, match="ssv2"):  # no dataset folder: every name tried is listed
        task.samples(str(tmp_path), "train")
    folder = make_ssv2_official(tmp_path)
    ann = os.path.join(folder, "labels", "something-something-v2-train.json")
    data = json.load(open(ann))
    data[2]["template"] = "Spinning [something] around"
    json.dump(data, open(ann, "w"))
    with pytest.raises(DataError, match=r"train\.json\[2\].*'Spinning something around' is not a class"):
        task.samples(str(tmp_path), "train")
    labels = os.path.join(folder, "labels", "something-something-v2-labels.json")
    json.dump({c: str(k) for k, c in enumerate(SSV2_CLASSES[:170])}, open(labels, "w"))
    with pytest.raises(DataError, match="170 classes.*SSv2 has 174"):
        task.samples(str(tmp_path), "val")


def test_video_list_errors_name_file_and_line(tmp_path):
    write_video(str(tmp_path / "a.webm"), 20)
    bad = {"a.webm\n": "1: expected '<path> <label>'", "a.webm x\n": "1: label 'x' is not an integer",
           "a.webm 174\n": "1: label 174 is outside 0..173",
           "a.webm 1\nb.webm 2\n": r"2: video .*b\.webm.* does not exist"}
    for text, msg in bad.items():
        (tmp_path / "l.csv").write_text(text)
        with pytest.raises(DataError, match=rf"l\.csv:{msg}"):  # check_files: as the runner checks them
            read_video_list(str(tmp_path / "l.csv"), str(tmp_path), 174, check_files=True)


# --- HMDB51 -------------------------------------------------------------------------------------------------

HMDB_CLASSES = sorted(["brush_hair", "cartwheel", "catch"] + [f"action_{k:02d}" for k in range(48)])


def make_hmdb_official(root, classes=HMDB_CLASSES, under_videos=True, split_dir="splits") -> str:
    folder = root / "hmdb51"
    video_root = folder / "videos" if under_videos else folder
    (folder / split_dir).mkdir(parents=True)
    for c in classes:
        for j in range(3):
            write_video(str(video_root / c / f"{c}_{j}.avi"), 20)
        for k in (1, 2, 3):  # split k: video k % 3 is test, the next train, the other unused
            marks = {k % 3: 2, (k + 1) % 3: 1, (k + 2) % 3: 0}
            lines = "".join(f"{c}_{j}.avi {marks[j]} \n" for j in range(3))  # the official trailing space
            (folder / split_dir / f"{c}_test_split{k}.txt").write_text(lines)
    return str(video_root)


@pytest.mark.parametrize("under_videos,split_dir", [(True, "splits"), (False, "testTrainMulti_7030_splits")])
def test_hmdb51_official_split_files(tmp_path, under_videos, split_dir):
    video_root = make_hmdb_official(tmp_path, under_videos=under_videos, split_dir=split_dir)
    task = TASKS.get("video/hmdb51")
    train, test = task.samples(str(tmp_path), "train_split1"), task.samples(str(tmp_path), "test_split1")
    assert len(train) == len(test) == 51
    assert [s.label for s in train] == list(range(51))
    assert test[HMDB_CLASSES.index("catch")].path == os.path.join(video_root, "catch", "catch_1.avi")
    assert train[0].source.endswith(f"{split_dir}/{HMDB_CLASSES[0]}_test_split1.txt:3")
    assert task.samples(str(tmp_path), "test_split2")[0].path.endswith("_2.avi")


def test_hmdb51_list_layout(tmp_path):
    folder = tmp_path / "hmdb51"
    write_video(str(folder / "videos" / "x" / "a.avi"), 20)
    (folder / "train_split1.csv").write_text("videos/x/a.avi 50\n")
    (folder / "test_split1.csv").write_text("videos/x/a.avi,0\n")
    task = TASKS.get("video/hmdb51")
    assert [s.label for s in task.samples(str(tmp_path), "train_split1")] == [50]
    assert [s.label for s in task.samples(str(tmp_path), "test_split1")] == [0]


def test_hmdb51_errors(tmp_path):
    task = TASKS.get("video/hmdb51")
    make_hmdb_official(tmp_path, classes=HMDB_CLASSES[:50])
    with pytest.raises(DataError, match="50 class folders; HMDB51 has 51"):
        task.samples(str(tmp_path), "train_split1")
    write_video(str(tmp_path / "hmdb51" / "videos" / "zoom" / "z.avi"), 20)
    with pytest.raises(DataError, match=r"zoom_test_split1\.txt.* does not exist"):
        task.samples(str(tmp_path), "train_split1")
    (tmp_path / "hmdb51" / "splits" / "zoom_test_split1.txt").write_text("z.avi 1\nz.avi train\n")
    with pytest.raises(DataError, match=r"zoom_test_split1\.txt:2: expected '<name>.avi <0\|1\|2>'"):
        task.samples(str(tmp_path), "train_split1")


def test_protocols():
    ssv2, hmdb = TASKS.get("video/ssv2"), TASKS.get("video/hmdb51")
    assert ssv2.benchmark == hmdb.benchmark == "video" and (ssv2.num_classes, hmdb.num_classes) == (174, 51)
    p, q = ssv2.protocol, hmdb.protocol
    assert (p.frame_sampling, p.test_clips, p.test_crops, p.test_split) == ("segment", 2, 3, "val")
    assert (q.frame_sampling, q.frame_stride, q.test_clips, q.test_crops) == ("dense", 4, 4, 3)
    assert (q.optimizer, q.lr, q.momentum, q.weight_decay, q.epochs, q.num_frames) == ("sgd", 0.1, 0.9, 0.0, 90, 8)
    assert ssv2.method_defaults["repadapter"] == {"dim": 2} and p.validate() is None


# --- frame sampling -----------------------------------------------------------------------------------------

def test_segment_sampling():
    for seed in range(20):
        idx = sample_indices(80, 8, "segment", 4, True, random.Random(seed))
        assert all(10 * i <= x < 10 * (i + 1) for i, x in enumerate(idx))  # one frame per segment
        assert idx == sample_indices(80, 8, "segment", 4, True, random.Random(seed))
    assert sample_indices(80, 8, "segment", 4, False) == list(range(5, 80, 10))  # segment middles
    # VideoMAE's 2-clip SSv2 test: clip 0 at segment starts, clip 1 half a segment on.
    assert sample_indices(80, 8, "segment", 4, False, clip=0, num_clips=2) == list(range(0, 80, 10))
    assert sample_indices(80, 8, "segment", 4, False, clip=1, num_clips=2) == list(range(5, 80, 10))
    short = sample_indices(5, 8, "segment", 4, False)
    assert short == sorted(short) and set(short) == set(range(5))  # frames repeat, in order
    assert max(sample_indices(5, 8, "segment", 4, True, random.Random(0))) <= 4


def test_dense_sampling():
    starts = set()
    for seed in range(50):
        idx = sample_indices(100, 8, "dense", 4, True, random.Random(seed))
        assert idx == [idx[0] + 4 * j for j in range(8)] and 0 <= idx[0] <= 100 - 32
        starts.add(idx[0])
    assert len(starts) > 10
    clips = [sample_indices(64, 8, "dense", 4, False, clip=k, num_clips=4) for k in range(4)]
    assert [c[0] for c in clips] == [0, 8, 20, 32] and clips[-1][-1] == 60  # first at 0, last at the end
    assert sample_indices(64, 8, "dense", 4, False)[0] == 16  # one clip: the centre
    assert sample_indices(10, 8, "dense", 4, True, random.Random(0)) == [0, 4, 8, 9, 9, 9, 9, 9]  # clamped
    with pytest.raises(ValueError):
        sample_indices(10, 8, "uniform", 4, True)


# --- VideoDataset -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("clips")
    return {"webm": write_video(str(d / "a.webm"), 40), "avi": write_video(str(d / "b.avi"), 30),
            "short": write_video(str(d / "c.avi"), 3)}


@pytest.mark.parametrize("task_name,kind", [("video/ssv2", "webm"), ("video/hmdb51", "avi")])
def test_views_shapes_and_decoded_frames(clips, task_name, kind):
    task = TASKS.get(task_name)
    p = small(task_name, frame_stride=2)
    n = 40 if kind == "webm" else 30
    samples = [Sample(clips[kind], 4, "list:1")]
    random.seed(0)
    clip, label = dataset(task, samples, p, train=True)[0]
    assert clip.shape == (3, 4, 32, 32) and clip.dtype == torch.uint8 and label == 4
    ids = frame_ids(clip)
    if p.frame_sampling == "segment":
        assert all(n // 4 * i <= x < n // 4 * (i + 1) for i, x in enumerate(ids))
    else:
        assert ids == [ids[0] + 2 * j for j in range(4)]
    views, _ = dataset(task, samples, p, train=False)[0]
    assert views.shape == (p.test_clips * 3, 3, 4, 32, 32) and views.dtype == torch.uint8
    for k in range(p.test_clips):
        expected = sample_indices(n, 4, p.frame_sampling, 2, False, clip=k, num_clips=p.test_clips)
        for c in range(3):
            assert frame_ids(views[3 * k + c]) == expected
    # 64x48 resized to 43x32: left, centre and right crops see less and less of the red left half
    red = [views[c, 0].float().mean().item() for c in range(3)]
    assert red[0] > red[1] > red[2]


def test_flip_never_for_ssv2(clips):
    samples = [Sample(clips["webm"], 0, "list:1")]
    random.seed(0)
    for name, flips in (("video/ssv2", False), ("video/hmdb51", True)):
        ds = dataset(TASKS.get(name), samples, small(name), train=True)
        # Left half red: an unflipped 32 px crop of 37x49 has red in its first column, not its last.
        flipped = [bool(c[0, :, :, 0].float().mean() < c[0, :, :, -1].float().mean()) for c, _ in
                   (ds[0] for _ in range(12))]
        assert any(flipped) == flips and not all(flipped)


def test_workers_decode(clips):
    ds = VideoDataset([Sample(clips["avi"], 1, "l:1"), Sample(clips["webm"], 2, "l:2")],
                      small("video/hmdb51"), train=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_skip)
    x, y, bad = next(iter(loader))
    assert x.shape == (2, 3, 4, 32, 32) and y.tolist() == [1, 2] and bad == []


def test_bad_videos(clips, tmp_path):
    corrupt = tmp_path / "corrupt.webm"
    corrupt.write_bytes(b"\x1aE\xdf\xa3 not a video" * 20)
    (tmp_path / "l.csv").write_text(f"{clips['avi']} 0\nmissing.avi 1\n{corrupt} 2\n")
    samples = read_video_list(str(tmp_path / "l.csv"), str(tmp_path), 51, check_files=False)
    p = small("video/hmdb51")
    with pytest.raises(DataError, match=r"missing\.avi .*l\.csv:2\): file does not exist"):
        VideoDataset(samples, p, train=True)[1]
    with pytest.raises(DataError, match=r"corrupt\.webm .*l\.csv:3\): video does not decode"):
        VideoDataset(samples, p, train=False)[2]
    skip = VideoDataset(samples, p, train=True, on_bad="skip")
    assert skip[1] == (None, str(tmp_path / "missing.avi"), "file does not exist")
    x, y, bad = collate_skip([skip[i] for i in range(3)])
    assert x.shape == (1, 3, 4, 32, 32) and y.tolist() == [0]
    assert [b[0] for b in bad] == [str(tmp_path / "missing.avi"), str(corrupt)]
    # A 3-frame video is clamped by default; with min_frames it is bad input.
    short = [Sample(clips["short"], 0, "l:9")]
    assert VideoDataset(short, p, train=True)[0][0].shape == (3, 4, 32, 32)
    assert VideoDataset(short, p, train=True, on_bad="skip", min_frames=4)[0][2] == "3 frames, fewer than 4"
    with pytest.raises(DataError, match=r"c\.avi \(l:9\): 3 frames, fewer than 4"):
        VideoDataset(short, p, train=False, min_frames=4)[0]


def test_bad_video_under_workers_is_one_line(clips, tmp_path):
    corrupt = tmp_path / "corrupt.webm"
    corrupt.write_bytes(b"\x1aE\xdf\xa3 not a video" * 20)
    ds = VideoDataset([Sample(clips["avi"], 0, "l.csv:1"), Sample(str(corrupt), 1, "l.csv:2")],
                      small("video/hmdb51"), train=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_skip)
    with pytest.raises(DataError) as e:
        for _x, _y, _bad in loader:
            pass
    msg = str(e.value)
    assert msg.startswith(f"{corrupt} (l.csv:2): video does not decode") and "\n" not in msg
    assert "Original Traceback" not in msg
