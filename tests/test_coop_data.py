"""CoOp's 11 datasets (tasks/coop): each reader on a generated folder in CoOp's layout, the k-shot draw against
a transcription of Dassl's, class names, prompts, the protocol, and bad input named by file and line."""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys
from collections import Counter, defaultdict

import pytest
from PIL import Image

from petlbench.benchmark import BENCHMARKS
from petlbench.data import DataError
from petlbench.errors import ConfigError
from petlbench.sweep import data_absent, is_absence
from petlbench.task import TASKS

import records

DATASETS = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft",
            "sun397", "dtd", "eurosat", "ucf101")
CLASSES = {"imagenet": 1000, "caltech101": 100, "oxford_pets": 37, "stanford_cars": 196, "oxford_flowers": 102,
           "food101": 101, "fgvc_aircraft": 100, "sun397": 397, "dtd": 47, "eurosat": 10, "ucf101": 101}
# CoOp's DATASETS.md: dataset folder, image folder inside it, split file
JSON_LAYOUT = {
    "caltech101": ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json"),
    "oxford_pets": ("oxford_pets", "images", "split_zhou_OxfordPets.json"),
    "stanford_cars": ("stanford_cars", "", "split_zhou_StanfordCars.json"),
    "oxford_flowers": ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
    "food101": ("food-101", "images", "split_zhou_Food101.json"),
    "sun397": ("sun397", "SUN397", "split_zhou_SUN397.json"),
    "dtd": ("dtd", "images", "split_zhou_DescribableTextures.json"),
    "eurosat": ("eurosat", "2750", "split_zhou_EuroSAT.json"),
    "ucf101": ("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
}
EUROSAT = ("Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road", "Industrial Buildings",
           "Pasture Land", "Permanent Crop Land", "Residential Buildings", "River", "Sea or Lake")
SHOTS, SEEDS = (1, 2, 4, 8, 16), (1, 2, 3)


# --- Dassl's and Tip-Adapter's functions, transcribed (Datum -> petlbench Sample) -------------------------------
def dassl_split_dataset_by_label(data_source):
    """Dassl.pytorch@c61a1b5 dassl/data/datasets/base_dataset.py:211-223."""
    output = defaultdict(list)

    for item in data_source:
        output[item.label].append(item)

    return output


def dassl_generate_fewshot_dataset(*data_sources, num_shots=-1, repeat=False):
    """Dassl.pytorch@c61a1b5 dassl/data/datasets/base_dataset.py:167-209 (repeat=False: its default since e3a15da;
    Tip-Adapter's datasets/utils.py:210-252 is the same with repeat=True)."""
    if num_shots < 1:
        if len(data_sources) == 1:
            return data_sources[0]
        return data_sources

    output = []

    for data_source in data_sources:
        tracker = dassl_split_dataset_by_label(data_source)
        dataset = []

        for label, items in tracker.items():  # noqa: B007 (Dassl's names)
            if len(items) >= num_shots:
                sampled_items = random.sample(items, num_shots)
            else:
                if repeat:
                    sampled_items = random.choices(items, k=num_shots)
                else:
                    sampled_items = items
            dataset.extend(sampled_items)

        output.append(dataset)

    if len(output) == 1:
        return output[0]

    return output


def coop_draw(train, val, num_shots, seed, repeat=False):
    """CoOp: train.py:130-132 set_random_seed(cfg.SEED) (dassl/utils/tools.py:73-74 random.seed(seed)), then e.g.
    datasets/oxford_pets.py:44-45 (ImageNet: imagenet.py:52, train only)."""
    state = random.getstate()
    try:
        random.seed(seed)
        train = dassl_generate_fewshot_dataset(train, num_shots=num_shots, repeat=repeat)
        if val is not None:
            val = dassl_generate_fewshot_dataset(val, num_shots=min(num_shots, 4), repeat=repeat)
        return train, val
    finally:
        random.setstate(state)


# --- generated data in CoOp's layouts -----------------------------------------------------------------------
def _counts(c: int) -> dict[str, int]:
    """Images of class c per split: 2-4 train, 2-3 val, 1 test (so some classes have fewer than k)."""
    return {"train": 2 + c % 3, "val": 2 + c % 2, "test": 1}


def _order(n: int) -> list[int]:
    """A fixed class order that is not sorted: labels first appear in this order in the split lists."""
    return sorted(range(n), key=lambda c: (c * 7919) % n)


def _link(src: str, dst: str) -> None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    os.link(src, dst)


def _name(dataset: str, c: int) -> str:
    return EUROSAT[c] if dataset == "eurosat" else f"class_{c:03d}"


def _rel(dataset: str, c: int, split: str, j: int) -> str:
    if dataset == "stanford_cars":
        return f"cars_{'test' if split == 'test' else 'train'}/{c:03d}_{split}_{j}.jpg"
    return f"{_name(dataset, c).replace(' ', '')}/{split}_{j}.jpg"


def split_entries(dataset: str) -> dict[str, list[list]]:
    """The split file's lists: [path relative to the image folder, label, class name], classes interleaved."""
    out = {}
    for split in ("train", "val", "test"):
        n = CLASSES[dataset]
        rows = []
        for j in range(4):
            rows += [[_rel(dataset, c, split, j), c, _name(dataset, c)] for c in _order(n) if j < _counts(c)[split]]
        out[split] = rows
    return out


def write_json_dataset(base: str, dataset: str, src: str) -> None:
    folder, images, split_file = JSON_LAYOUT[dataset]
    image_root = os.path.join(base, folder, images)
    entries = split_entries(dataset)
    for rows in entries.values():
        for rel, _, _ in rows:
            _link(src, os.path.join(image_root, rel))
    with open(os.path.join(base, folder, split_file), "w") as f:
        json.dump(entries, f, indent=4, separators=(",", ": "))  # Dassl's write_json (tools.py:66-70)


def fgvc_lines(split: str) -> list[str]:
    return [f"{c:03d}{split[:2]}{j} Variant {c}" for j in range(2) for c in _order(100) if j < _counts(c)[split]]


def write_fgvc(base: str, src: str) -> None:
    folder = os.path.join(base, "fgvc_aircraft")
    os.makedirs(os.path.join(folder, "images"))
    with open(os.path.join(folder, "variants.txt"), "w") as f:
        f.writelines(f"Variant {c}\n" for c in range(100))
    for split in ("train", "val", "test"):
        lines = fgvc_lines(split)
        with open(os.path.join(folder, f"images_variant_{split}.txt"), "w") as f:
            f.writelines(line + "\n" for line in lines)
        for line in lines:
            os.link(src, os.path.join(folder, "images", line.split(" ")[0] + ".jpg"))


def imagenet_wnids() -> list[str]:
    from petlbench.tasks.coop.data import shipped_classnames

    return sorted(shipped_classnames("imagenet"))


def write_imagenet(base: str, src: str) -> None:
    folder = os.path.join(base, "imagenet")
    for c, wnid in enumerate(imagenet_wnids()):
        for j in range(_counts(c)["train"]):
            _link(src, os.path.join(folder, "images", "train", wnid, f"{wnid}_{j}.JPEG"))
        _link(src, os.path.join(folder, "images", "val", wnid, f"ILSVRC2012_val_{c:08d}.JPEG"))
    # what CoOp's listdir_nohidden skips, and what is not an image
    open(os.path.join(folder, "images", "train", imagenet_wnids()[0], ".DS_Store"), "w").close()
    open(os.path.join(folder, "images", "train", imagenet_wnids()[0], "notes.txt"), "w").close()
    from petlbench.tasks.coop.data import CLASSNAMES_DIR

    shutil.copy(os.path.join(CLASSNAMES_DIR, "imagenet.txt"), os.path.join(folder, "classnames.txt"))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    base = str(tmp_path_factory.mktemp("coop"))
    src = os.path.join(base, "_image.jpg")
    Image.new("RGB", (8, 8), (120, 40, 90)).save(src)
    for d in JSON_LAYOUT:
        write_json_dataset(base, d, src)
    write_fgvc(base, src)
    write_imagenet(base, src)
    return base


def _pairs(samples) -> list[tuple[str, int]]:
    return [(s.path, s.label) for s in samples]


def expected_base(root: str, dataset: str, split: str) -> list[tuple[str, int]]:
    """What CoOp's reader lists for a base split of the generated data."""
    if dataset == "imagenet":
        wnids = imagenet_wnids()
        sub = "train" if split == "train" else "val"
        out = []
        for c, w in enumerate(wnids):
            names = sorted(os.listdir(os.path.join(root, "imagenet", "images", sub, w)))
            out += [(os.path.join(root, "imagenet", "images", sub, w, n), c) for n in names
                    if not n.startswith(".") and n.endswith(".JPEG")]
        return out
    if dataset == "fgvc_aircraft":
        return [(os.path.join(root, "fgvc_aircraft", "images", line.split(" ")[0] + ".jpg"),
                 int(line.split(" ")[-1])) for line in fgvc_lines(split)]
    folder, images, _ = JSON_LAYOUT[dataset]
    return [(os.path.join(root, folder, images, rel), label) for rel, label, _ in split_entries(dataset)[split]]


# --- registration, protocol, benchmark ----------------------------------------------------------------------
def test_eleven_tasks_their_classes_and_splits():
    from petlbench.tasks.coop import DATASETS as D

    assert D == DATASETS
    for d in DATASETS:
        t = TASKS.get(f"coop/{d}")
        assert t.benchmark == "coop" and t.num_classes == CLASSES[d] and not t.eval_only
        want = {"train", "val", "test"} | {f"train_shot{k}_seed{s}" for k in SHOTS for s in SEEDS}
        if d != "imagenet":  # CoOp draws no few-shot val on ImageNet (imagenet.py:52)
            want |= {f"val_shot{k}_seed{s}" for k in SHOTS for s in SEEDS}
        assert set(t.splits) == want and len(t.splits) == len(want)


def test_the_protocol_is_coops():
    from petlbench.tasks.coop import coop_epochs

    for d in DATASETS:
        p = TASKS.get(f"coop/{d}").protocol
        assert (p.backbone, p.weights, p.drop_path, p.normalize) == ("openclip:ViT-B-16", "openai", 0.0, "model")
        assert (p.optimizer, p.lr, p.weight_decay, p.momentum, p.batch_size) == ("sgd", 0.002, 5e-4, 0.9, 32)
        assert (p.schedule, p.warmup_epochs, p.warmup_lr, p.min_lr) == ("dassl_cosine", 1, 1e-5, 0.0)
        assert (p.augment, p.randaugment, p.interpolation, p.img_size) == ("crop_flip", "", "bicubic", 224)
        assert (p.selection, p.seed, p.drop_last, p.label_smoothing) == ("final", 1, True, 0.0)
        assert (p.train_split, p.test_split) == ("train_shot16_seed1", "test")
        assert p.epochs == (50 if d == "imagenet" else 200) == coop_epochs(d, 16)
        assert p.val_split == ("val" if d == "imagenet" else "val_shot16_seed1") and p.validate() is None
    assert [coop_epochs("dtd", k) for k in SHOTS] == [50, 100, 100, 200, 200]  # COOP.md:18-22
    assert {coop_epochs("imagenet", k) for k in SHOTS} == {50}  # COOP.md:13


def test_benchmark_declaration():
    b = BENCHMARKS.get("coop")
    assert b.title == "CoOp's few-shot CLIP protocol: 11 datasets, 1-16 shots"
    assert [d for d, _ in b.columns()] == list(DATASETS)
    assert b.order > BENCHMARKS.get("fewshot").order
    assert set(b.sweep_axes) == {"shots"} and "CoOp" in b.data_source
    assert b.sweep_axes["shots"](4, 2) == {"train_split": "train_shot4_seed2", "clean_train_split": "train_shot4_seed2"}
    assert b.sweep_axes["shots"](16, None)["train_split"] == "train_shot16_seed1"
    # told the task, the axis sets CoOp's epochs for its dataset at k shots (COOP.md:13, 18-22)
    assert b.sweep_axes["shots"](1, 1, TASKS.get("coop/dtd"))["epochs"] == 50
    assert b.sweep_axes["shots"](8, 1, TASKS.get("coop/dtd"))["epochs"] == 200
    assert b.sweep_axes["shots"](8, 1, TASKS.get("coop/imagenet"))["epochs"] == 50
    with pytest.raises(ConfigError, match="seeds"):
        b.sweep_axes["shots"](4, 0)
    assert b.row_fields({"protocol": {"train_split": "train_shot8_seed3"}}) == {"shots": 8, "split_seed": 3}
    assert b.row_fields({"protocol": {"selection": "clean", "train_split": "x", "clean_train_split":
                                      "train_shot2_seed1"}}) == {"shots": 2, "split_seed": 1}
    assert b.row_fields({"protocol": {"train_split": "train"}}) == {"shots": None, "split_seed": None}


def test_cli_lists_eleven_tasks():
    out = subprocess.run([sys.executable, "-m", "petlbench.cli", "tasks", "--benchmark", "coop"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    names = [line.split()[0] for line in out.stdout.splitlines() if line.startswith("coop/")]
    assert sorted(names) == sorted(f"coop/{d}" for d in DATASETS)


def test_shots_table_has_a_column_per_shot():
    from petlbench.tables import run_frame

    recs = [records.record("coop/dtd", "linear", v, {"train_split": f"train_shot{k}_seed{s}", "seed": s})
            for k, s, v in ((1, 1, 40.0), (1, 2, 42.0), (16, 1, 60.0))]
    b = BENCHMARKS.get("coop")
    (table,) = b.tables(b, run_frame(recs))
    assert [c.key for c in table.columns] == [f"shot:{k}" for k in SHOTS]
    (row,) = [r for r in table.rows if r.section == "dtd" and r.source == "ours"]
    assert row.cells["shot:1"].mean == 41.0 and row.cells["shot:1"].n == 2 and row.cells["shot:16"].mean == 60.0
    (avg,) = [r for r in table.rows if r.section.startswith("average of 11") and r.source == "ours"]
    assert avg.cells["shot:1"].missing  # ten datasets have no runs


def test_a_zero_shot_row_fills_every_shot_column():
    from petlbench.tables import run_frame

    recs = [records.record("coop/dtd", "zeroshot", 44.0, {}), records.record("coop/dtd", "coop", 50.0, {})]
    b = BENCHMARKS.get("coop")
    assert b.row_fields(recs[0])["shots"] == 0 and b.row_fields(recs[1])["shots"] == 16
    (table,) = b.tables(b, run_frame(recs))
    ours = {r.label: r for r in table.rows if r.section == "dtd" and r.source == "ours"}
    (zs,) = [r for label, r in ours.items() if "ero" in label]
    assert {k: c.mean for k, c in zs.cells.items()} == {f"shot:{k}": 44.0 for k in SHOTS}
    (co,) = [r for label, r in ours.items() if r is not zs]
    assert co.cells["shot:16"].mean == 50.0 and co.cells.get("shot:1") is None


# --- readers --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", DATASETS)
def test_each_reader_lists_what_coops_reader_lists(root, dataset):
    t = TASKS.get(f"coop/{dataset}")
    for split in ("train", "val", "test"):
        got = t.samples(root, split)
        assert _pairs(got) == expected_base(root, dataset, split), split
        assert {s.label for s in got} == set(range(CLASSES[dataset]))
    if dataset == "imagenet":  # CoOp's val is ImageNet's val, its test (imagenet.py:35, 61)
        assert _pairs(t.samples(root, "val")) == _pairs(t.samples(root, "test"))
        assert all(s.source == s.path for s in got)
    else:  # "<file>:<line>" of the entry
        assert all(s.source.rsplit(":", 1)[1].isdigit() for s in got)


@pytest.mark.parametrize("dataset", ["dtd", "stanford_cars"])
def test_a_sample_source_is_the_split_file_line_of_its_entry(root, dataset):
    folder, _, split_file = JSON_LAYOUT[dataset]
    path = os.path.join(root, folder, split_file)
    with open(path) as f:
        lines = f.read().split("\n")
    for split in ("train", "val", "test"):
        entries = split_entries(dataset)[split]
        for s, (rel, _, _) in zip(TASKS.get(f"coop/{dataset}").samples(root, split), entries):
            file, line = s.source.rsplit(":", 1)
            assert file == path and lines[int(line) - 1].strip() == "[" and json.dumps(rel) in lines[int(line)]


def test_fgvc_sources_name_the_list_line(root):
    got = TASKS.get("coop/fgvc_aircraft").samples(root, "val")
    path = os.path.join(root, "fgvc_aircraft", "images_variant_val.txt")
    assert [s.source for s in got] == [f"{path}:{i}" for i in range(1, len(got) + 1)]


# --- the k-shot draw ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", ["dtd", "eurosat", "fgvc_aircraft", "imagenet"])
def test_kshot_splits_are_dassls_draw(root, dataset):
    t = TASKS.get(f"coop/{dataset}")
    train, val = t.samples(root, "train"), (None if dataset == "imagenet" else t.samples(root, "val"))
    for k in SHOTS:
        for s in SEEDS:
            want_train, want_val = coop_draw(train, val, k, s)
            got = t.samples(root, f"train_shot{k}_seed{s}")
            assert _pairs(got) == _pairs(want_train), (k, s)
            assert [x.source for x in got] == [x.source for x in want_train]
            if val is not None:
                assert _pairs(t.samples(root, f"val_shot{k}_seed{s}")) == _pairs(want_val), (k, s)


def test_kshot_draw_is_deterministic_and_k_per_class(root):
    t = TASKS.get("coop/dtd")
    a, b = t.samples(root, "train_shot2_seed2"), t.samples(root, "train_shot2_seed2")
    assert _pairs(a) == _pairs(b)
    assert _pairs(a) != _pairs(t.samples(root, "train_shot2_seed3"))
    assert Counter(s.label for s in a) == {c: 2 for c in range(47)}
    # 4 shots: classes with 2 or 3 training images keep them all (Dassl's repeat=False), no duplicates
    four = t.samples(root, "train_shot4_seed1")
    assert Counter(s.label for s in four) == {c: min(4, _counts(c)["train"]) for c in range(47)}
    assert len({s.path for s in four}) == len(four)
    val = t.samples(root, "val_shot16_seed1")  # min(16, 4) = 4 per class, at most what val has
    assert Counter(s.label for s in val) == {c: min(4, _counts(c)["val"]) for c in range(47)}
    # labels are grouped in the order they first appear in the split file
    firsts = list(dict.fromkeys(s.label for s in t.samples(root, "train")))
    assert list(dict.fromkeys(s.label for s in a)) == firsts != sorted(firsts)


def test_repeat_draws_as_tip_adapter_does(root):
    from petlbench.tasks.coop.data import coop_fewshot

    train = TASKS.get("coop/dtd").samples(root, "train")
    for s in SEEDS:
        got, _ = coop_fewshot(train, None, 4, s, repeat=True)
        want, _ = coop_draw(train, None, 4, s, repeat=True)
        assert _pairs(got) == _pairs(want) and Counter(x.label for x in got) == {c: 4 for c in range(47)}


def test_split_sizes_known_to_check_data(root):
    from petlbench.check import check_tasks

    t = TASKS.get("coop/dtd")
    res = check_tasks([t], root, splits=["train_shot1_seed1", "train_shot2_seed3", "val_shot2_seed2", "test"],
                      cache_path=None)
    assert res.ok, [r.summary() for r in res.splits]
    assert {r.split: r.expected for r in res.splits} == {"train_shot1_seed1": 47, "train_shot2_seed3": 94,
                                                        "val_shot2_seed2": 94, "test": None}
    four = check_tasks([t], root, splits=["train_shot4_seed1"], cache_path=None).splits[0]
    assert four.expected == 188 and four.count < 188 and not four.ok  # classes with fewer than 4: said so


# --- class names and prompts ----------------------------------------------------------------------------------
def test_shipped_class_names():
    imagenet = TASKS.get("coop/imagenet").classnames
    assert len(imagenet) == 1000 and imagenet[:3] == ("tench", "goldfish", "great white shark")
    assert imagenet[-1] == "toilet paper" and imagenet[151] == "Chihuahua"
    assert Counter(imagenet)["sunglasses"] == 2  # CLIP's list names two classes so (Tip-Adapter imagenet.py:151)
    assert TASKS.get("coop/eurosat").classnames == EUROSAT  # eurosat.py:10-21, sorted folder order
    for d in set(DATASETS) - {"imagenet", "eurosat"}:
        t = TASKS.get(f"coop/{d}")
        assert t.classnames == () and t.classnames_fn is not None


def test_class_names_from_the_data(root):
    for d in ("dtd", "fgvc_aircraft", "stanford_cars"):
        names = TASKS.get(f"coop/{d}").class_names(root)
        assert len(names) == CLASSES[d]
        # CoOp's prompts replace underscores with spaces (zsclip.py:43)
        assert names[5] == ("Variant 5" if d == "fgvc_aircraft" else "class 005")
    from petlbench.tasks.coop.data import data_classnames

    assert data_classnames("eurosat", root) == EUROSAT
    assert data_classnames("imagenet", root) == TASKS.get("coop/imagenet").classnames


def test_names_differing_from_the_shipped_ones_are_warned(tmp_path, caplog):
    from petlbench.tasks.coop.data import compare_classnames

    src = str(tmp_path / "x.jpg")
    Image.new("RGB", (8, 8)).save(src)
    write_json_dataset(str(tmp_path), "eurosat", src)
    path = tmp_path / "eurosat" / "split_zhou_EuroSAT.json"
    split = json.loads(path.read_text())
    for rows in split.values():
        for row in rows:
            row[2] = row[2].replace("Forest", "Woods")
    path.write_text(json.dumps(split))
    with caplog.at_level(logging.WARNING, logger="petlbench.tasks.coop.data"):
        TASKS.get("coop/eurosat").samples(str(tmp_path), "test")
    assert "label 1: 'Woods' there, 'Forest' shipped" in caplog.text
    assert compare_classnames(TASKS.get("coop/eurosat"), str(tmp_path)) == [(1, "Woods", "Forest")]


def test_imagenet_without_classnames_txt_reads_the_shipped_names(root):
    names = os.path.join(root, "imagenet", "classnames.txt")
    os.rename(names, names + ".away")
    try:
        t = TASKS.get("coop/imagenet")
        assert _pairs(t.samples(root, "test")) == expected_base(root, "imagenet", "test")
    finally:
        os.rename(names + ".away", names)


def test_prompts_are_coops_and_tip_adapters():
    from petlbench.tasks.coop.prompts import (
        CLIP_IMAGENET_TEMPLATES,
        CLIP_IMAGENET_TEMPLATES_SELECT,
        COOP_PROMPTS,
        TIP_ADAPTER_TEMPLATES,
        prompt_templates,
    )

    assert set(COOP_PROMPTS) == set(DATASETS) == set(TIP_ADAPTER_TEMPLATES)
    assert COOP_PROMPTS["oxford_pets"] == "a photo of a {}, a type of pet."  # zsclip.py:14
    assert COOP_PROMPTS["dtd"] == "{} texture." and COOP_PROMPTS["eurosat"] == "a centered satellite photo of {}."
    assert len(CLIP_IMAGENET_TEMPLATES) == len(set(CLIP_IMAGENET_TEMPLATES)) == 80
    assert set(CLIP_IMAGENET_TEMPLATES_SELECT) <= set(CLIP_IMAGENET_TEMPLATES)
    assert all(t.count("{}") == 1 for t in CLIP_IMAGENET_TEMPLATES + tuple(COOP_PROMPTS.values()))
    # Tip-Adapter differs from CoOp's one prompt on ImageNet only
    assert [d for d in DATASETS if TIP_ADAPTER_TEMPLATES[d] != (COOP_PROMPTS[d],)] == ["imagenet"]
    assert prompt_templates("imagenet", "coop_ensemble") == CLIP_IMAGENET_TEMPLATES_SELECT  # zsclip.py:82-83
    assert prompt_templates("ucf101", "coop_ensemble")[-1] == "a photo of a person doing {}."
    t = TASKS.get("coop/food101")
    assert t.templates["coop"] == ("a photo of {}, a type of food.",) and len(t.templates["clip80"]) == 80
    with pytest.raises(KeyError, match="prompt set"):
        prompt_templates("dtd", "nope")


# --- absent data and bad input ----------------------------------------------------------------------------------
def test_absent_data_reads_as_absent(tmp_path, root):
    empty = str(tmp_path / "empty")
    os.makedirs(os.path.join(empty, "dtd", "images"))  # a folder without its split file
    os.makedirs(os.path.join(empty, "fgvc_aircraft", "images"))
    os.makedirs(os.path.join(empty, "imagenet"))
    for d in DATASETS:
        reason = data_absent(f"coop/{d}", empty)
        assert reason is not None and is_absence(reason), (d, reason)
    assert "split_zhou_DescribableTextures.json" in data_absent("coop/dtd", empty)
    assert "variants.txt" in data_absent("coop/fgvc_aircraft", empty)
    assert data_absent("coop/dtd", root) is None and data_absent("coop/imagenet", root) is None


def _dtd_copy(tmp_path, edit) -> str:
    """A copy of the generated DTD whose split file went through `edit(split dict)`; returns the data root."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = str(tmp_path / "x.jpg")
    Image.new("RGB", (8, 8)).save(src)
    write_json_dataset(str(tmp_path), "dtd", src)
    path = tmp_path / "dtd" / "split_zhou_DescribableTextures.json"
    split = json.loads(path.read_text())
    edit(split)
    path.write_text(json.dumps(split, indent=4))
    return str(tmp_path)


def _entry_line(root: str, split: str, i: int) -> str:
    path = os.path.join(root, "dtd", "split_zhou_DescribableTextures.json")
    text = open(path).read()
    marker = json.dumps(json.loads(text)[split][i][0])
    # the line of the "[" that opens the entry: the one before its path
    pos = [n for n, line in enumerate(text.split("\n"), 1) if marker in line]
    return f"{path}:{pos[0] - 1}"


@pytest.mark.parametrize("edit, message", [
    (lambda s: s["train"].__setitem__(3, ["a.jpg", "7", "x"]), "train[3]: expected [relative image path, integer"),
    (lambda s: s["val"][2].__setitem__(1, 47), "val[2]: label 47 is outside 0..46"),
    (lambda s: s["test"][0].__setitem__(0, "../../etc/passwd"), "test[0]: image path '../../etc/passwd' leaves"),
    (lambda s: s["train"][5].__setitem__(0, "class_000/none.jpg"), "train[5]: image "),
    (lambda s: s["val"][1].__setitem__(2, "another name"), "val[1]: label "),
])
def test_a_bad_entry_names_the_file_and_line(tmp_path, edit, message):
    root = _dtd_copy(tmp_path, edit)
    split, i = message.split("[", 1)[0], int(message.split("[", 1)[1].split("]")[0])
    with pytest.raises(DataError) as e:
        TASKS.get("coop/dtd").samples(root, "train_shot1_seed1")
    assert str(e.value).startswith(f"{_entry_line(root, split, i)}: {message}"), str(e.value)
    assert not is_absence(str(e.value))


def test_bad_split_files(tmp_path):
    root = _dtd_copy(tmp_path, lambda s: s.pop("val"))
    with pytest.raises(DataError, match="expected a JSON object with 'train', 'val' and 'test' lists"):
        TASKS.get("coop/dtd").samples(root, "test")
    path = tmp_path / "dtd" / "split_zhou_DescribableTextures.json"
    path.write_text('{"train": [\n ["a.jpg", 0, "x"],\n oops]}')
    with pytest.raises(DataError, match=r"split_zhou_DescribableTextures.json:3: not valid JSON"):
        TASKS.get("coop/dtd").samples(str(tmp_path), "test")
    root = _dtd_copy(tmp_path / "b", lambda s: s.__setitem__("train", [e for e in s["train"] if e[1] != 9]))
    with pytest.raises(DataError, match=r"'train' list has no image of label\(s\) 9; 47 classes expected"):
        TASKS.get("coop/dtd").samples(root, "train")


def test_bad_fgvc_files(tmp_path):
    src = str(tmp_path / "x.jpg")
    Image.new("RGB", (8, 8)).save(src)
    write_fgvc(str(tmp_path), src)
    folder = tmp_path / "fgvc_aircraft"
    lines = (folder / "images_variant_test.txt").read_text().split("\n")
    lines[4] = "0042te0 Variant 999"
    (folder / "images_variant_test.txt").write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"images_variant_test.txt:5: expected '<image id> <variant>'"):
        TASKS.get("coop/fgvc_aircraft").samples(str(tmp_path), "test")
    (folder / "variants.txt").write_text("A\nB\n")
    with pytest.raises(DataError, match=r"variants.txt: 2 variants, expected 100"):
        TASKS.get("coop/fgvc_aircraft").samples(str(tmp_path), "train")


def test_bad_imagenet_folders(tmp_path):
    from petlbench.tasks.coop.data import read_class_folders, read_classnames

    names = {"n001": "a", "n002": "b"}
    for w in ("n001", "n002", "n999"):
        (tmp_path / "train" / w).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "train" / w / "x.JPEG")
    with pytest.raises(DataError, match=r"n999: folder 'n999' is not a class of cn.txt"):
        read_class_folders(str(tmp_path / "train"), names, 2, "cn.txt")
    shutil.rmtree(tmp_path / "train" / "n999")
    shutil.rmtree(tmp_path / "train" / "n002")
    with pytest.raises(DataError, match=r"1 class folders, expected 2; lacking n002"):
        read_class_folders(str(tmp_path / "train"), names, 2, "cn.txt")
    (tmp_path / "cn.txt").write_text("n001 tench\nn002\n")
    with pytest.raises(DataError, match=r"cn.txt:2: expected '<folder> <class name>'"):
        read_classnames(str(tmp_path / "cn.txt"))


def test_check_data_reports_every_missing_image_of_a_split_file(tmp_path):
    from petlbench.check import check_tasks

    root = _dtd_copy(tmp_path, lambda s: None)
    entries = split_entries("dtd")["test"]
    for i in (0, 7):
        os.unlink(os.path.join(root, "dtd", "images", entries[i][0]))
    (res,) = check_tasks([TASKS.get("coop/dtd")], root, splits=["test"], cache_path=None).splits
    assert not res.error and len(res.bad) == 2
    assert [b.where for b in res.bad] == [_entry_line(root, "test", i) for i in (0, 7)]


def test_a_sweep_sets_coops_epochs_per_shots_unless_the_file_sets_them():
    from petlbench.sweep import expand

    spec = {"tasks": ["coop/dtd", "coop/imagenet"], "methods": ["coop"], "seeds": [1], "shots": [2, 16]}
    runs = expand(spec)
    got = {(r.task, r.overrides["train_split"]): r.overrides["epochs"] for r in runs}
    assert got == {("coop/dtd", "train_shot2_seed1"): 100, ("coop/dtd", "train_shot16_seed1"): 200,
                   ("coop/imagenet", "train_shot2_seed1"): 50, ("coop/imagenet", "train_shot16_seed1"): 50}
    assert len({r.config_hash for r in runs}) == 4
    fixed = expand({**spec, "overrides": {"epochs": 3}})
    assert {r.overrides["epochs"] for r in fixed} == {3}
