"""Few-shot FGVC tasks: NOAH's split-file layout on tiny generated folders, protocol values, bad input."""
from __future__ import annotations

import os

import pytest
from PIL import Image

from petlbench.data import DataError
from petlbench.errors import ConfigError
from petlbench.task import TASKS

NAMES = ("fgvc_aircraft", "food101", "oxford_flowers102", "oxford_pets", "stanford_cars")
# Folder names the generated root uses: some as the task is named, some as NOAH names them.
FOLDERS = {"fgvc_aircraft": "fgvc-aircraft", "food101": "food-101", "oxford_flowers102": "oxford_flowers102",
           "oxford_pets": "oxford_pets", "stanford_cars": "standford-cars"}
SHOTS, SEEDS, CLASSES, PER_CLASS = (1, 2, 4, 8, 16), (0, 1, 2), 3, 3


def _img(path: str, color: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (8, 8), (color, 40, 90)).save(path)


def _rel(name: str, c: int, j: int, split: str) -> str:
    """A relative image path as the list files write it (Stanford Cars: cars_train/..., others: under images/)."""
    if name == "stanford_cars":
        return f"cars_{'test' if split == 'test' else 'train'}/{c:02d}{j:03d}.jpg"
    return f"class{c}/img_{split}_{j}.jpg" if split == "test" else f"class{c}/img_{j}.jpg"


def _entries(name: str, split: str) -> list[tuple[str, int]]:
    """What the generated list of `split` holds: train (k, s) takes min(k, 3) images per class, rotated by s."""
    if split in ("val", "test"):
        return [(_rel(name, c, j, split), c) for c in range(CLASSES) for j in range(2)]
    k, s = (int(x) for x in split[len("train_shot"):].split("_seed"))
    return [(_rel(name, c, (j + s) % PER_CLASS, split), c) for c in range(CLASSES) for j in range(min(k, PER_CLASS))]


def _list_name(split: str) -> str:
    if split in ("val", "test"):
        return f"{split}_meta.list"
    k, s = (int(x) for x in split[len("train_shot"):].split("_seed"))
    return f"train_meta.list.num_shot_{k}.seed_{s}"


def _splits() -> list[str]:
    return [f"train_shot{k}_seed{s}" for k in SHOTS for s in SEEDS] + ["val", "test"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    base = str(tmp_path_factory.mktemp("fewshot"))
    for name in NAMES:
        folder = os.path.join(base, FOLDERS[name])
        image_root = folder if name == "stanford_cars" else os.path.join(folder, "images")
        os.makedirs(os.path.join(folder, "annotations"))
        for split in _splits():
            entries = _entries(name, split)
            for rel, c in entries:
                if not os.path.exists(os.path.join(image_root, rel)):
                    _img(os.path.join(image_root, rel), 60 * c)
            with open(os.path.join(folder, "annotations", _list_name(split)), "w") as f:
                f.writelines(f"{rel} {c}\n" for rel, c in entries)
    return base


def test_registered_tasks_and_protocol():
    from petlbench.tasks.fewshot import DATASETS, SEEDS as S, SHOTS as K, fewshot_split

    assert K == SHOTS and S == SEEDS and set(DATASETS) == set(NAMES)
    classes = {"fgvc_aircraft": 100, "food101": 101, "oxford_flowers102": 102, "oxford_pets": 37,
               "stanford_cars": 196}
    for name in NAMES:
        t = TASKS.get(f"fewshot/{name}")
        assert t.benchmark == "fewshot" and t.num_classes == classes[name] and not t.eval_only
        assert set(t.splits) == set(_splits()) and len(t.splits) == 17
        p = t.protocol
        assert (p.optimizer, p.lr, p.weight_decay, p.batch_size, p.epochs, p.warmup_epochs) == \
            ("adamw", 5e-3, 1e-4, 64, 100, 10)
        assert (p.label_smoothing, p.mixup, p.cutmix, p.randaugment) == (0.1, 0.8, 1.0, "rand-m9-mstd0.5-inc1")
        assert (p.selection, p.train_split, p.clean_train_split, p.val_split, p.test_split) == \
            ("reproduction", "train_shot16_seed0", "train_shot16_seed0", "val", "test")
        assert p.validate() is None and p.train_split in t.splits
        assert t.method_defaults["repadapter"]["scale"] == 1.0
    assert fewshot_split(16, 2) == "train_shot16_seed2" and fewshot_split(1, 0) == "train_shot1_seed0"
    with pytest.raises(ConfigError, match=r"accepted shots \(1, 2, 4, 8, 16\)"):
        fewshot_split(3, 0)
    with pytest.raises(ConfigError, match="seeds"):
        fewshot_split(16, 5)


def test_every_split_reads_its_own_list(root):
    for name in NAMES:
        t = TASKS.get(f"fewshot/{name}")
        folder = os.path.join(root, FOLDERS[name])
        image_root = folder if name == "stanford_cars" else os.path.join(folder, "images")
        for split in t.splits:
            samples = t.samples(root, split)
            expected = _entries(name, split)
            assert [(s.path, s.label) for s in samples] == \
                [(os.path.join(image_root, rel), c) for rel, c in expected], (name, split)
            assert all(os.path.isfile(s.path) for s in samples)
            assert samples[0].source == os.path.join(folder, "annotations", _list_name(split)) + ":1"
        # counts: k-shot lists hold min(k, 3) per class here; seeds pick different images
        assert len(t.samples(root, "train_shot1_seed0")) == 3 and len(t.samples(root, "train_shot16_seed0")) == 9
        a, b = t.samples(root, "train_shot1_seed0"), t.samples(root, "train_shot1_seed1")
        assert {s.path for s in a}.isdisjoint({s.path for s in b})


def test_images_folder_preferred_when_the_list_names_its_files(tmp_path):
    # food101 as it ships: <folder>/images/<class>/<id>.jpg; a stray copy at the folder level is not used
    folder = tmp_path / "food101"
    _img(str(folder / "images" / "apple_pie" / "1.jpg"), 10)
    _img(str(folder / "apple_pie" / "1.jpg"), 10)
    (folder / "annotations").mkdir()
    (folder / "annotations" / "test_meta.list").write_text("apple_pie/1.jpg 0\n")
    s = TASKS.get("fewshot/food101").samples(str(tmp_path), "test")
    assert [x.path for x in s] == [str(folder / "images" / "apple_pie" / "1.jpg")]


def test_bad_input(root, tmp_path):
    t = TASKS.get("fewshot/food101")
    with pytest.raises(DataError, match="data root"):
        t.samples(str(tmp_path / "nowhere"), "test")
    with pytest.raises(DataError) as e:
        TASKS.get("fewshot/fgvc_aircraft").samples(str(tmp_path), "test")
    assert os.path.join(str(tmp_path), "fgvc_aircraft") in str(e.value)
    assert os.path.join(str(tmp_path), "fgvc-aircraft") in str(e.value)
    with pytest.raises(DataError, match="no split 'train_shot3_seed0'.*train_shot16_seed0"):
        t.samples(root, "train_shot3_seed0")

    # a missing split file: the error names the expected path
    folder = tmp_path / "oxford-pets"
    (folder / "annotations").mkdir(parents=True)
    _img(str(folder / "images" / "Abyssinian_1.jpg"), 5)
    (folder / "annotations" / "val_meta.list").write_text("Abyssinian_1.jpg 0\n")
    pets = TASKS.get("fewshot/oxford_pets")
    assert [s.label for s in pets.samples(str(tmp_path), "val")] == [0]
    expected = os.path.join(str(folder), "annotations", "train_meta.list.num_shot_4.seed_1")
    with pytest.raises(DataError) as e:
        pets.samples(str(tmp_path), "train_shot4_seed1")
    assert expected in str(e.value)

    # a label outside the dataset's classes: file and line
    (folder / "annotations" / "test_meta.list").write_text("Abyssinian_1.jpg 0\nAbyssinian_1.jpg 37\n")
    with pytest.raises(DataError) as e:
        pets.samples(str(tmp_path), "test")
    assert f"{folder / 'annotations' / 'test_meta.list'}:2" in str(e.value) and "outside 0..36" in str(e.value)

    # an image the list names but nobody has: the path it looked for
    (folder / "annotations" / "test_meta.list").write_text("Bengal_9.jpg 5\n")
    with pytest.raises(DataError, match="Bengal_9.jpg' does not exist"):
        pets.samples(str(tmp_path), "test")
