"""Domain-generalization tasks: ImageNet 16-shot source and the V2 / Sketch / A / R targets on tiny generated
folders; ImageNet-1k label mapping, the A/R 200-class subsets, bad input."""
from __future__ import annotations

import os

import pytest
from PIL import Image

from petlbench.data import DataError
from petlbench.task import TASKS

TENCH, GOLDFISH, BANANA, TOILET_TISSUE = "n01440764", "n01443537", "n07753592", "n15075141"  # 0, 1, 954, 999


def _img(path, color: int = 0) -> str:
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (8, 8), (color, 30, 200)).save(path)
    return path


def _pairs(samples, base):
    return sorted((os.path.relpath(s.path, base), s.label) for s in samples)


def test_imagenet_1k_classes_and_subsets():
    from timm.data import ImageNetInfo

    from petlbench.tasks import domain

    wnids = domain.imagenet_wnids()
    assert list(wnids) == list(ImageNetInfo("imagenet-1k").label_names())
    assert wnids[0] == TENCH and wnids[954] == BANANA and wnids[999] == TOILET_TISSUE
    a, r = TASKS.get("domain/imagenet_a").logit_subset, TASKS.get("domain/imagenet_r").logit_subset
    for subset in (a, r):
        assert len(subset) == 200 and len(set(subset)) == 200 and list(subset) == sorted(subset)
        assert all(0 <= i < 1000 for i in subset)
    # hendrycks/natural-adv-examples eval.py thousand_k_to_200: 6 -> 0, 11 -> 1, 954 -> 188, 988 -> 199
    assert a[:5] == (6, 11, 13, 15, 17) and a[188] == 954 and a[199] == 988
    # hendrycks/imagenet-r eval.py imagenet_r_indices: [1, 2, 4, 6, 8, ..., 983, 988]
    assert r[:5] == (1, 2, 4, 6, 8) and r[-2:] == (983, 988) and set(a) != set(r)
    for name in ("a", "r"):  # the shipped files: 200 unique wnids, all ImageNet-1k synsets
        listed = domain._read_wnids(os.path.join(domain.PROTOCOL_DIR, f"imagenet_{name}_wnids.txt"))
        assert len(listed) == 200 and len(set(listed)) == 200 and set(listed) <= set(wnids)


def test_registered_tasks():
    src = TASKS.get("domain/imagenet")
    assert src.num_classes == 1000 and not src.eval_only and src.logit_subset is None
    assert src.splits == ("train_shot16_seed0", "train_shot16_seed1", "train_shot16_seed2", "val", "test")
    p = src.protocol
    assert (p.lr, p.weight_decay, p.batch_size, p.epochs, p.warmup_epochs, p.label_smoothing, p.mixup, p.cutmix) \
        == (5e-3, 1e-4, 64, 100, 10, 0.1, 0.8, 1.0)
    assert p.randaugment == "rand-m9-mstd0.5-inc1" and p.train_split == "train_shot16_seed0" and p.validate() is None
    for name in ("imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"):
        t = TASKS.get(f"domain/{name}")
        assert t.eval_only and t.splits == ("test",) and t.num_classes == 1000 and t.protocol == p
        assert (t.logit_subset is not None) == (name in ("imagenet_a", "imagenet_r"))


def test_imagenet_source(tmp_path):
    t = TASKS.get("domain/imagenet")
    base = tmp_path / "imagenet"
    ann = base / "annotations"
    ann.mkdir(parents=True)
    for s in range(3):
        _img(base / "train" / TENCH / f"{TENCH}_{s}.JPEG")
        _img(base / "train" / TOILET_TISSUE / f"{TOILET_TISSUE}_{s}.JPEG")
        (ann / f"train_meta.list.num_shot_16.seed_{s}").write_text(
            f"{TENCH}/{TENCH}_{s}.JPEG 0\n{TOILET_TISSUE}/{TOILET_TISSUE}_{s}.JPEG 999\n")
    (ann / "unofficial_val_list_4_shot16seed0").write_text(f"{TENCH}/{TENCH}_2.JPEG 0\n")
    train = t.samples(str(tmp_path), "train_shot16_seed1")
    assert _pairs(train, tmp_path) == [(f"imagenet/train/{TENCH}/{TENCH}_1.JPEG", 0),
                             (f"imagenet/train/{TOILET_TISSUE}/{TOILET_TISSUE}_1.JPEG", 999)]
    assert _pairs(t.samples(str(tmp_path), "val"), tmp_path) == [(f"imagenet/train/{TENCH}/{TENCH}_2.JPEG", 0)]

    # test = ImageNet val in wnid class folders, labels = ImageNet-1k indices
    _img(base / "val" / TENCH / "ILSVRC2012_val_00000293.JPEG")
    _img(base / "val" / GOLDFISH / "ILSVRC2012_val_00000001.JPEG")
    _img(base / "val" / TOILET_TISSUE / "a.JPEG")
    _img(base / "val" / TOILET_TISSUE / "b.JPEG")
    test = t.samples(str(tmp_path), "test")
    assert [s.label for s in test] == [0, 1, 999, 999] and len(test) == 4
    # ... or NOAH-style val_meta.list relative to the val folder, when present
    (ann / "val_meta.list").write_text(f"{GOLDFISH}/ILSVRC2012_val_00000001.JPEG 1\n")
    assert _pairs(t.samples(str(tmp_path), "test"), tmp_path) == \
        [(f"imagenet/val/{GOLDFISH}/ILSVRC2012_val_00000001.JPEG", 1)]
    (ann / "val_meta.list").unlink()

    # a val folder that is not a wnid
    _img(base / "val" / "goldfish" / "x.JPEG")
    with pytest.raises(DataError, match=r"folder name 'goldfish' is not an ImageNet-1k WordNet id"):
        t.samples(str(tmp_path), "test")
    # a missing list file names its path; a bad label names file and line
    (ann / "train_meta.list.num_shot_16.seed_2").unlink()
    with pytest.raises(DataError) as e:
        t.samples(str(tmp_path), "train_shot16_seed2")
    assert str(ann / "train_meta.list.num_shot_16.seed_2") in str(e.value)
    (ann / "train_meta.list.num_shot_16.seed_0").write_text(f"{TENCH}/{TENCH}_0.JPEG 0\n{TENCH}/{TENCH}_0.JPEG 1000\n")
    with pytest.raises(DataError, match=r"num_shot_16.seed_0:2: label 1000 is outside 0..999"):
        t.samples(str(tmp_path), "train_shot16_seed0")


def test_imagenet_images_subfolder_variant(tmp_path):
    base = tmp_path / "imagenet"
    _img(base / "images" / "train" / TENCH / "t.JPEG")
    _img(base / "images" / "val" / BANANA / "v.JPEG")
    (base / "annotations").mkdir()
    (base / "annotations" / "train_meta.list.num_shot_16.seed_0").write_text(f"{TENCH}/t.JPEG 0\n")
    t = TASKS.get("domain/imagenet")
    assert [(s.path, s.label) for s in t.samples(str(tmp_path), "train_shot16_seed0")] == \
        [(str(base / "images" / "train" / TENCH / "t.JPEG"), 0)]
    assert [(s.path, s.label) for s in t.samples(str(tmp_path), "test")] == \
        [(str(base / "images" / "val" / BANANA / "v.JPEG"), 954)]


def test_imagenet_v2(tmp_path):
    t = TASKS.get("domain/imagenet_v2")
    root = tmp_path / "imagenetv2" / "imagenetv2-matched-frequency-format-val"
    for idx in (0, 361, 999):
        _img(root / str(idx) / "0413d912b57ff280fe2600dd22504fb871b7a656.jpeg")
    _img(root / "361" / "b.jpeg")
    s = t.samples(str(tmp_path), "test")
    assert sorted(x.label for x in s) == [0, 361, 361, 999]
    assert all(x.path.startswith(str(root)) for x in s)
    _img(root / "1000" / "x.jpeg")
    with pytest.raises(DataError, match=r"folder name '1000' is not an ImageNet-1k class index 0..999"):
        t.samples(str(tmp_path), "test")

    # the variant with class folders directly in imagenet_v2/
    other = tmp_path / "other"
    _img(other / "imagenet_v2" / "7" / "a.jpeg")
    assert [(x.path, x.label) for x in t.samples(str(other), "test")] == \
        [(str(other / "imagenet_v2" / "7" / "a.jpeg"), 7)]


def test_imagenet_sketch(tmp_path):
    t = TASKS.get("domain/imagenet_sketch")
    root = tmp_path / "imagenet-sketch" / "sketch"
    _img(root / TENCH / "n01440764_1.JPEG")
    _img(root / TENCH / "n01440764_2.JPEG")
    _img(root / BANANA / "sketch_3.JPEG")
    s = t.samples(str(tmp_path), "test")
    assert [(os.path.basename(x.path), x.label) for x in s] == \
        [("n01440764_1.JPEG", 0), ("n01440764_2.JPEG", 0), ("sketch_3.JPEG", 954)]
    # NOAH's copy: imagenet-sketch/images/<wnid>
    noah = tmp_path / "noah"
    _img(noah / "imagenet-sketch" / "images" / TOILET_TISSUE / "sketch_0.JPEG")
    assert [x.label for x in t.samples(str(noah), "test")] == [999]
    _img(root / "n99999999" / "x.JPEG")
    with pytest.raises(DataError) as e:
        t.samples(str(tmp_path), "test")
    assert str(root / "n99999999") in str(e.value)


@pytest.mark.parametrize("name,folder,noah", [("imagenet_a", "imagenet-a", "imagenet-adversarial/imagenet-a"),
                                               ("imagenet_r", "imagenet-r", "imagenet-rendition/imagenet-r")])
def test_imagenet_a_r_labels_index_the_logit_subset(tmp_path, name, folder, noah):
    from petlbench.tasks.domain import wnid_to_index

    t = TASKS.get(f"domain/{name}")
    subset = t.logit_subset
    wnids = [BANANA, "n12267677"] + (["n01498041"] if name == "imagenet_a" else [GOLDFISH])
    root = tmp_path / folder
    for w in wnids:
        _img(root / w / "0.000116_digital clock _ digital clock_0.865662.jpg")
    (root / "README.txt").write_text("ImageNet-A/R readme: a file, not a class\n")
    s = t.samples(str(tmp_path), "test")
    assert len(s) == 3
    by_wnid = {os.path.basename(os.path.dirname(x.path)): x.label for x in s}
    for w in wnids:
        assert subset[by_wnid[w]] == wnid_to_index()[w]  # label -> ImageNet-1k index of the folder's wnid
        assert 0 <= by_wnid[w] < 200
    assert by_wnid["n12267677"] == 199  # acorn: index 988, the last of both subsets
    if name == "imagenet_a":
        assert by_wnid[BANANA] == 188 and by_wnid["n01498041"] == 0
    else:
        assert by_wnid[GOLDFISH] == 0

    # NOAH's folder layout is found too
    other = tmp_path / "noah"
    _img(other / noah / BANANA / "x.jpg")
    assert [subset[x.label] for x in t.samples(str(other), "test")] == [954]

    # an ImageNet-1k class that is not one of the 200 is refused, naming the folder
    _img(root / TENCH / "x.jpg")
    with pytest.raises(DataError) as e:
        t.samples(str(tmp_path), "test")
    assert str(root / TENCH) in str(e.value) and "200 WordNet ids" in str(e.value)


def test_missing_folders(tmp_path):
    with pytest.raises(DataError, match="data root"):
        TASKS.get("domain/imagenet_a").samples(str(tmp_path / "absent"), "test")
    for name, tried in (("imagenet_a", "imagenet-adversarial"), ("imagenet_r", "imagenet_r"),
                        ("imagenet_sketch", "imagenet-sketch"), ("imagenet_v2", "imagenetv2-matched-frequency"),
                        ("imagenet", "imagenet1k")):
        with pytest.raises(DataError) as e:
            TASKS.get(f"domain/{name}").samples(str(tmp_path), "test")
        assert str(tmp_path) in str(e.value) and tried in str(e.value), name
    with pytest.raises(DataError, match="no split 'train'"):
        TASKS.get("domain/imagenet_r").samples(str(tmp_path), "train")
    (tmp_path / "imagenet").mkdir()
    with pytest.raises(DataError, match="no ImageNet val folder"):
        TASKS.get("domain/imagenet").samples(str(tmp_path), "test")
