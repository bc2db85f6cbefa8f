"""Class names of the VTAB-1k and few-shot FGVC tasks (tasks/protocols/classnames/, sources in its README.md):
one per class, in label order, checked at spots against the label-id source each list was ordered by; the loader's
refusals; FGVC-Aircraft's names from the data's variants.txt; the files in the wheel's package data; a zero-shot
head built from them (a tiny random open_clip, tests/tiny.py OPENCLIP_TINY)."""
from __future__ import annotations

import ast
import fnmatch
import functools
import math
import re
from pathlib import Path

import pytest
import torch

from petlbench.data import DataError
from petlbench.task import TASKS

from tiny import OPENCLIP_TINY, has_open_clip

ROOT = Path(__file__).resolve().parents[1]
CLASSNAMES = ROOT / "tasks" / "protocols" / "classnames"


def _tasks(benchmark: str) -> list[str]:
    from petlbench.tasks import fewshot, vtab

    return [f"{benchmark}/{d}" for d in {"vtab": vtab.DATASETS, "fewshot": fewshot.DATASETS}[benchmark]]


ALL = _tasks("vtab") + _tasks("fewshot")
FROM_DATA = {"fewshot/fgvc_aircraft"}  # names read from the data's variants.txt (no published copy was found)


@pytest.mark.parametrize("name", ALL)
def test_one_distinct_name_per_class(name):
    task = TASKS.get(name)
    if name in FROM_DATA:
        assert task.classnames == () and task.classnames_fn is not None
        return
    names = task.classnames
    assert len(names) == task.num_classes
    assert len(set(names)) == len(names)
    assert all(n.strip() for n in names)
    assert names == tuple((CLASSNAMES / task.benchmark / f"{name.split('/')[1]}.txt").read_text().splitlines())


def test_every_file_is_a_task_and_every_source_is_in_the_readme():
    files = {f"{p.parent.name}/{p.stem}" for p in CLASSNAMES.glob("*/*.txt")}
    assert files == set(ALL) - FROM_DATA
    readme = (CLASSNAMES / "README.md").read_text()
    for name in files:
        assert re.search(rf"^\| {re.escape(name.split('/')[1])} \|", readme, re.M), name


def names(task: str) -> tuple[str, ...]:
    return TASKS.get(task).classnames


# Spot checks: label -> name, each against the source of that list's label ids (README.md's table).
# TFDS = tensorflow-datasets 4.9.10; TA = google-research/task_adaptation@d7630d3; NOAH = NOAH@e9c55f3.
SPOTS = [
    # TFDS cifar.py reads CIFAR-100's fine_label_names.txt: line 1 apple, 42 lawn_mower, 100 worm
    ("vtab/cifar", 0, "apple"), ("vtab/cifar", 41, "lawn mower"), ("vtab/cifar", 99, "worm"),
    # TFDS caltech101_labels.txt: 1 accordion, 5 background_google, 38 faces, 39 faces_easy, 67 motorbikes,
    # 102 yin_yang (CLIP lists the first five folders first: reordered)
    ("vtab/caltech101", 0, "accordion"), ("vtab/caltech101", 4, "background"),
    ("vtab/caltech101", 37, "off-center face"), ("vtab/caltech101", 38, "centered face"),
    ("vtab/caltech101", 66, "motorbike"), ("vtab/caltech101", 101, "yin and yang symbol"),
    # TFDS dtd_key_attributes.txt:1 banded, :47 zigzagged
    ("vtab/dtd", 0, "banded"), ("vtab/dtd", 46, "zigzagged"),
    # TFDS oxford_flowers102 _NAMES (builder:26 "pink primrose", :127 "blackberry lily"; label = class id - 1)
    ("vtab/oxford_flowers102", 0, "pink primrose"), ("vtab/oxford_flowers102", 101, "blackberry lily"),
    ("fewshot/oxford_flowers102", 0, "pink primrose"),
    # NOAH data/few-shot/oxford-pets/annotations/test_meta.list:1 "Abyssinian_201.jpg 0", :499 "Bengal_192.jpg 5",
    # :3570 "yorkshire_terrier_191.jpg 36"; TFDS's oxford_iiit_pet _LABEL_CLASSES (builder:28, :33, :64) agree
    ("vtab/oxford_iiit_pet", 0, "Abyssinian"), ("vtab/oxford_iiit_pet", 5, "Bengal"),
    ("vtab/oxford_iiit_pet", 36, "yorkshire terrier"), ("fewshot/oxford_pets", 5, "Bengal"),
    # TFDS svhn_cropped builder:110: label = digit % 10
    ("vtab/svhn", 0, "0"), ("vtab/svhn", 9, "9"),
    # TFDS sun397_labels.txt:1 /a/abbey, :207 /j/jail/indoor, :208 /j/jail_cell (CLIP has these two swapped)
    ("vtab/sun397", 0, "abbey"), ("vtab/sun397", 206, "jail indoor"), ("vtab/sun397", 207, "jail cell"),
    # TFDS patch_camelyon README.md:3-4: the label indicates metastatic tissue
    ("vtab/patch_camelyon", 1, "lymph node containing metastatic tumor tissue"),
    # TFDS eurosat.py:49 AnnualCrop, :51 HerbaceousVegetation, :58 SeaLake
    ("vtab/eurosat", 0, "annual crop land"), ("vtab/eurosat", 2, "brushland or shrubland"),
    ("vtab/eurosat", 9, "lake or sea"),
    # TFDS resisc45 builder:24 airplane, :68 wetland
    ("vtab/resisc45", 0, "airplane"), ("vtab/resisc45", 44, "wetland"),
    # TFDS diabetic_retinopathy_detection.py:114: from 0 (no DR) to 4 (proliferative DR)
    ("vtab/diabetic_retinopathy", 0, "no diabetic retinopathy"),
    ("vtab/diabetic_retinopathy", 4, "proliferative diabetic retinopathy"),
    # TA kitti.py:95-102: no vehicle -> distance 1000 > 999 -> label 3; within 8 m -> label 0
    ("vtab/kitti", 0, "a photo i took of a car on my left or right side."),
    ("vtab/kitti", 3, "a photo i took with no car."),
    # NOAH data/few-shot/food101/annotations/test_meta.list:4801 "cheese_plate/1355674.jpg 16",
    # :5101 "cheesecake/2005548.jpg 17" (the sorted folders; TFDS's food-101_classes.txt lists these two the
    # other way round), :30001 "waffles/2927857.jpg 100"
    ("fewshot/food101", 16, "cheese plate"), ("fewshot/food101", 17, "cheesecake"), ("fewshot/food101", 100, "waffles"),
    # TFDS cars196.py:35 and :230 (_NAMES; label = class id - 1, :326)
    ("fewshot/stanford_cars", 0, "AM General Hummer SUV 2000"),
    ("fewshot/stanford_cars", 195, "smart fortwo Convertible 2012"),
]


@pytest.mark.parametrize("task,label,name", SPOTS)
def test_label_order_at_the_sources_spots(task, label, name):
    assert names(task)[label] == name


def test_lists_sharing_a_label_id_space_are_the_same():
    """TFDS's ids for Pets and Flowers are the official class ids - 1, as CoOp's (so NOAH's) are."""
    assert names("vtab/oxford_iiit_pet") == names("fewshot/oxford_pets")
    assert names("vtab/oxford_flowers102") == names("fewshot/oxford_flowers102")


def test_structured_names_follow_vtabs_label_definitions():
    # TA clevr.py:34: label = number of objects - 3
    assert names("vtab/clevr_count") == tuple(str(k + 3) for k in range(8))
    # TA clevr.py:50-51: label i for a closest-object distance in (thrs[i], thrs[i+1]]
    thrs = [0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0]
    bins = [tuple(map(float, re.fullmatch(r"closest object distance ([\d.]+) to ([\d.]+)", n).groups()))
            for n in names("vtab/clevr_dist")]
    assert bins == list(zip(thrs[:-1], thrs[1:]))
    # TA dsprites.py:65,99-102: label = floor(class / (classes / 16)); TFDS: 32 x positions, 40 orientations
    for task, word, classes in (("vtab/dsprites_loc", "x position", 32), ("vtab/dsprites_ori", "orientation", 40)):
        covered = []
        for label, n in enumerate(names(task)):
            lo, hi = map(int, re.fullmatch(rf"{word} (\d+)-(\d+) of {classes}", n).groups())
            assert all(math.floor(c / (classes / 16)) == label for c in range(lo, hi + 1)), n
            covered += range(lo, hi + 1)
        assert covered == list(range(classes))
    # TFDS smallnorb README.md:4-5: 9 elevations 30-70 every 5 degrees, 18 azimuths 0-340 every 20
    assert names("vtab/smallnorb_ele") == tuple(f"elevation {d} degrees" for d in range(30, 71, 5))
    assert names("vtab/smallnorb_azi") == tuple(f"azimuth {d} degrees" for d in range(0, 341, 20))


@pytest.mark.parametrize("content,message", [
    ("a\nb\n", r"2 class names, but vtab/x has 3 classes"),
    ("a\n\nb\n", r"x\.txt:2: empty class name"),
    ("a\nb\na\n", r"x\.txt:3: class name 'a' is also on line 1"),
])
def test_a_malformed_list_is_refused_naming_the_file(tmp_path, monkeypatch, content, message):
    from petlbench.tasks import vtab

    (tmp_path / "vtab").mkdir()
    (tmp_path / "vtab" / "x.txt").write_text(content)
    monkeypatch.setattr(vtab, "CLASSNAMES_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=message):
        vtab.shipped_classnames("vtab", "x", 3)
    assert vtab.shipped_classnames("vtab", "absent", 3) == ()


def _variants(root: Path, folder: str, count: int) -> list[str]:
    variants = [f"variant {i:03d}" for i in range(count)][::-1]  # not sorted: the file's order is the label order
    (root / folder).mkdir(parents=True)
    (root / folder / "variants.txt").write_text("\n".join(variants) + "\n")
    return variants


def test_aircraft_names_are_the_datas_variants_in_line_order(tmp_path):
    task = TASKS.get("fewshot/fgvc_aircraft")
    variants = _variants(tmp_path, "fgvc-aircraft", 100)  # NOAH's folder name (FOLDER_NAMES)
    assert task.class_names(str(tmp_path)) == tuple(variants)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(DataError, match="dataset folder"):
        task.class_names(str(tmp_path / "elsewhere"))  # a data root without the dataset
    (tmp_path / "fgvc-aircraft" / "variants.txt").unlink()
    with pytest.raises(DataError, match=r"fgvc-aircraft/variants\.txt' does not exist"):
        task.class_names(str(tmp_path))
    _variants(tmp_path, "fgvc_aircraft", 99)
    with pytest.raises(DataError, match="99 variants, expected 100"):
        task.class_names(str(tmp_path))


def test_the_lists_are_package_data():
    # pyproject's [tool.setuptools.package-data] line of petlbench.tasks (tomllib is Python 3.11+)
    line = re.search(r'^"petlbench\.tasks" = (\[.*\])$', (ROOT / "pyproject.toml").read_text(), re.M)
    shipped = ast.literal_eval(line.group(1))
    for path in CLASSNAMES.glob("*/*.txt"):
        rel = path.relative_to(ROOT / "tasks").as_posix()
        assert any(fnmatch.fnmatch(rel, g) and rel.count("/") == g.count("/") for g in shipped), rel


# --- a zero-shot head from the shipped names ----------------------------------------------------------------------
RUN = {"backbone": "openclip:ViT-B-16", "weights": "none", "drop_path": 0.0, "device": "cpu", "num_workers": 0}


@pytest.fixture
def tiny_clip(monkeypatch):
    import petlbench.backbones as backbones

    monkeypatch.setattr(backbones, "create_openclip", functools.partial(backbones.create_openclip, **OPENCLIP_TINY))


@pytest.mark.clip
@pytest.mark.skipif(not has_open_clip(), reason="needs open_clip_torch")
@pytest.mark.parametrize("name", ["vtab/eurosat", "fewshot/fgvc_aircraft"])
def test_zero_shot_head_row_i_is_the_text_of_label_i(name, tmp_path, tiny_clip):
    """head_init=zeroshot on a task with shipped names and on one whose names come from its data."""
    import open_clip

    import petlbench.backbones as backbones
    from petlbench.run import build_model, resolve

    if name in FROM_DATA:
        _variants(tmp_path, "fgvc_aircraft", 100)
    spec = resolve(name, "zeroshot", RUN)
    assert spec.protocol.head_init == "zeroshot"
    torch.manual_seed(spec.protocol.seed)
    clip = open_clip.create_model("ViT-B-16", pretrained=None, **OPENCLIP_TINY).eval()
    torch.manual_seed(spec.protocol.seed)
    model = build_model(spec, str(tmp_path))
    labels = spec.task.class_names(str(tmp_path))
    assert model.head.weight.shape[0] == spec.task.num_classes == len(labels)
    tok = open_clip.get_tokenizer("ViT-B-16")
    want = backbones.zero_shot_weights(clip, tok, labels, ("a photo of a {}.",))
    assert torch.allclose(model.head.weight, want, atol=1e-5)
    for label in (0, 2, len(labels) - 1):  # a row is its label's name, not a neighbour's
        row = backbones.zero_shot_weights(clip, tok, [labels[label]], ("a photo of a {}.",))[0]
        others = [i for i in range(len(labels)) if labels[i] != labels[label]]
        assert torch.allclose(model.head.weight[label], row, atol=1e-5)
        assert not any(torch.allclose(model.head.weight[i], row, atol=1e-5) for i in others)
