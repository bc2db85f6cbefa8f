"""CoOp's 11 datasets as its readers read them, and its k-shot sampling, without Dassl.

Layouts (CoOp's DATASETS.md; the folder and file names its datasets/*.py read, github.com/KaiyangZhou/CoOp@ff61507):

    <data_root>/imagenet/images/{train,val}/<wnid>/*   + imagenet/classnames.txt   ("<wnid> <class name>" lines)
    <data_root>/caltech-101/101_ObjectCategories/...    + caltech-101/split_zhou_Caltech101.json
    <data_root>/oxford_pets/images/...                  + oxford_pets/split_zhou_OxfordPets.json
    <data_root>/stanford_cars/{cars_train,cars_test}/.. + stanford_cars/split_zhou_StanfordCars.json
    <data_root>/oxford_flowers/jpg/...                  + oxford_flowers/split_zhou_OxfordFlowers.json
    <data_root>/food-101/images/...                     + food-101/split_zhou_Food101.json
    <data_root>/fgvc_aircraft/images/<id>.jpg           + fgvc_aircraft/variants.txt,
                                                          images_variant_{train,val,test}.txt ("<id> <variant>")
    <data_root>/sun397/SUN397/...                       + sun397/split_zhou_SUN397.json
    <data_root>/dtd/images/...                          + dtd/split_zhou_DescribableTextures.json
    <data_root>/eurosat/2750/...                        + eurosat/split_zhou_EuroSAT.json
    <data_root>/ucf101/UCF-101-midframes/...            + ucf101/split_zhou_UCF101.json

Split files (oxford_pets.py:122-138 read_split): a JSON object with "train", "val" and "test" lists of
[path relative to the image folder, 0-based label, class name]. FGVC-Aircraft (fgvc_aircraft.py:22-31, 56-71):
variants.txt lists the 100 variants, a label is a variant's line index, "<id> <variant>" lines name
images/<id>.jpg. ImageNet (imagenet.py:30-35, 63-91): labels are the positions of the class folders sorted by
name, class names from classnames.txt; the test split is ImageNet's val folder, which CoOp also uses as its val
(imagenet.py:33-35, 61: `val=test`). Without a classnames.txt the shipped one (classnames/imagenet.txt: timm's
sorted ImageNet-1k wnids with CLIP's names as Tip-Adapter's datasets/imagenet.py:11-175 lists them) is read.

k-shot splits (`train_shot<k>_seed<s>`, `val_shot<k>_seed<s>`): CoOp's train.py:130-132 calls Dassl's
set_random_seed(seed) (random.seed, dassl/utils/tools.py:73-74), then the dataset is built, and each reader
(e.g. oxford_pets.py:44-45) draws generate_fewshot_dataset(train, num_shots=k), then (not on ImageNet,
imagenet.py:52) generate_fewshot_dataset(val, num_shots=min(k, 4)) from the same generator. Dassl
(dassl/data/datasets/base_dataset.py:167-223, github.com/KaiyangZhou/Dassl.pytorch@c61a1b5) groups the items by
label in the order labels first appear (split_dataset_by_label, a defaultdict) and per label takes
random.sample(items, k), or, for a label with fewer than k items, all of them: CoOp passes no `repeat` and
Dassl's default is repeat=False since its commit e3a15da (2021-10-09); before it, and in Tip-Adapter's
transcription (datasets/utils.py:210-252), repeat=True drew random.choices(items, k=k). `fewshot(...,
repeat=True)` draws that way. `coop_fewshot` does the same with `random.Random(seed)`, whose draws equal the
seeded module-level functions'.

Where this differs from CoOp on purpose: ImageNet's images are listed in sorted file-name order (CoOp lists them
with os.listdir, whose order depends on the file system, so its k-shot ImageNet sets are not reproducible across
disks); sorted order is torchvision ImageFolder's, which Tip-Adapter's ImageNet draw uses (imagenet.py:203-220,
seed 1: main_imagenet.py:133), and only files with image extensions are listed. Listed paths are checked to stay
lexically inside the image folder (no "..", not absolute); symlinks are followed (CoOp's DATASETS.md suggests
linking existing copies into place).

Every sample's `source` is "<file>:<line>": the split-file entry (JSON line of the entry's first character) or
list line it came from; ImageNet's is the image file. Errors are DataErrors naming the file (and line). A missing
dataset folder, image folder or split file reads as absent data (petlbench.sweep.is_absence).
"""
from __future__ import annotations

import bisect
import functools
import json
import logging
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

# _DEFER_FILE_CHECKS: whether petlbench.data.deferred_file_checks is on (check-data then checks every file itself)
from petlbench.data import _DEFER_FILE_CHECKS, IMAGE_EXTENSIONS, DataError, Sample, first_dir, read_text, require_dir
from petlbench.errors import ConfigError

log = logging.getLogger(__name__)

SHOTS = (1, 2, 4, 8, 16)  # COOP.md:18-22, scripts/coop/main.sh:11
SEEDS = (1, 2, 3)  # scripts/coop/main.sh:14 `for SEED in 1 2 3`
VAL_SHOTS_CAP = 4  # e.g. oxford_pets.py:45 `num_shots=min(num_shots, 4)`
BASE_SPLITS = ("train", "val", "test")
CLASSNAMES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "classnames")  # package data


@dataclass(frozen=True)
class Layout:
    """Where CoOp's reader of one dataset looks (its datasets/<file>.py lines in `source`)."""

    folder: str  # the dataset folder under data_root (CoOp's `dataset_dir`)
    images: str  # the image folder inside it that listed paths are relative to ("": the dataset folder)
    split_file: str  # CoOp's split JSON ("" for FGVC-Aircraft and ImageNet, which read other files)
    classes: int
    title: str
    source: str


LAYOUTS: dict[str, Layout] = {  # in CoOp's paper order (its Figure 3)
    "imagenet": Layout("imagenet", "images", "", 1000, "ImageNet", "imagenet.py:14,19,30"),
    # 102 folders, BACKGROUND_Google and Faces_easy ignored (caltech101.py:10)
    "caltech101": Layout("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json", 100, "Caltech101",
                         "caltech101.py:22,27,28"),
    "oxford_pets": Layout("oxford_pets", "images", "split_zhou_OxfordPets.json", 37, "Oxford-IIIT Pets",
                          "oxford_pets.py:14,19,21"),
    # paths are relative to the dataset folder (read_split(self.split_path, self.dataset_dir), stanford_cars.py:24)
    "stanford_cars": Layout("stanford_cars", "", "split_zhou_StanfordCars.json", 196, "Stanford Cars",
                            "stanford_cars.py:14,19,24"),
    "oxford_flowers": Layout("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json", 102, "Oxford Flowers-102",
                             "oxford_flowers.py:16,21,24"),
    "food101": Layout("food-101", "images", "split_zhou_Food101.json", 101, "Food-101", "food101.py:14,19,20"),
    "fgvc_aircraft": Layout("fgvc_aircraft", "images", "", 100, "FGVC-Aircraft variants",
                            "fgvc_aircraft.py:13,18,23,29-31"),
    "sun397": Layout("sun397", "SUN397", "split_zhou_SUN397.json", 397, "SUN397", "sun397.py:13,18,19"),
    "dtd": Layout("dtd", "images", "split_zhou_DescribableTextures.json", 47, "DTD", "dtd.py:14,19,20"),
    "eurosat": Layout("eurosat", "2750", "split_zhou_EuroSAT.json", 10, "EuroSAT", "eurosat.py:27,32,33"),
    "ucf101": Layout("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json", 101, "UCF101 (middle frames)",
                     "ucf101.py:14,19,20"),
}


# --- split names ----------------------------------------------------------------------------------------------
def fewshot_split(shots: int, seed: int, base: str = "train") -> str:
    """The name of a k-shot split, e.g. fewshot_split(16, 1) == "train_shot16_seed1"."""
    if shots not in SHOTS or seed not in SEEDS or base not in ("train", "val"):
        raise ConfigError(f"CoOp k-shot split: {base!r}, shots {shots!r}, seed {seed!r}; accepted: train or val, "
                          f"shots {SHOTS}, seeds {SEEDS}")
    return f"{base}_shot{shots}_seed{seed}"


_FEWSHOT = re.compile(r"(train|val)_shot(\d+)_seed(\d+)")


def parse_split(split: str) -> tuple[str, int | None, int | None]:
    """(base split, shots, seed) of a split name: ("test", None, None), ("val", 4, 2) for "val_shot4_seed2"."""
    m = _FEWSHOT.fullmatch(split)
    if m:
        return m.group(1), int(m.group(2)), int(m.group(3))
    if split in BASE_SPLITS:
        return split, None, None
    raise ConfigError(f"{split!r} is not a CoOp split (train, val, test, train_shot<k>_seed<s>, val_shot<k>_seed<s>)")


def splits_of(dataset: str) -> tuple[str, ...]:
    """A task's splits: train, val, test, the 15 k-shot training splits and (not ImageNet: CoOp draws no few-shot
    val there) the 15 k-shot val splits."""
    bases = ("train",) if dataset == "imagenet" else ("train", "val")
    return BASE_SPLITS + tuple(fewshot_split(k, s, b) for b in bases for k in SHOTS for s in SEEDS)


# --- Dassl's few-shot draw ------------------------------------------------------------------------------------
def fewshot(items: Sequence[Sample], shots: int, rng: random.Random, repeat: bool = False) -> list[Sample]:
    """Dassl's generate_fewshot_dataset for one list (base_dataset.py:167-209, split_dataset_by_label :211-223):
    per label, in the order labels first appear, rng.sample(items of the label, shots); a label with fewer items
    keeps them all (repeat=False, Dassl's default) or draws rng.choices(items, k=shots) (repeat=True)."""
    by_label: dict[int, list[Sample]] = {}
    for s in items:
        by_label.setdefault(s.label, []).append(s)
    out: list[Sample] = []
    for group in by_label.values():
        if len(group) >= shots:
            out += rng.sample(group, shots)
        else:
            out += rng.choices(group, k=shots) if repeat else group
    return out


def coop_fewshot(train: Sequence[Sample], val: Sequence[Sample] | None, shots: int, seed: int,
                 repeat: bool = False) -> tuple[list[Sample], list[Sample] | None]:
    """CoOp's k-shot train and val of one seed: random.seed(seed), then the train draw of `shots`, then the val
    draw of min(shots, 4) from the same generator (val None: ImageNet, train only)."""
    rng = random.Random(seed)
    drawn = fewshot(train, shots, rng, repeat)
    return drawn, (fewshot(val, min(shots, VAL_SHOTS_CAP), rng, repeat) if val is not None else None)


# --- split files (JSON) ---------------------------------------------------------------------------------------
_WS = re.compile(r"[ \t\n\r]*")


def _skip(text: str, i: int) -> int:
    return _WS.match(text, i).end()


def _array_offsets(text: str) -> dict[str, list[int]]:
    """For a top-level JSON object already known to parse: key -> the character offset of each element of its
    value, where that value is an array (for naming an entry's line)."""
    dec = json.JSONDecoder()
    out: dict[str, list[int]] = {}
    i = _skip(text, 0) + 1  # past "{"
    while True:
        i = _skip(text, i)
        if text[i] == "}":
            return out
        key, i = dec.raw_decode(text, i)
        i = _skip(text, _skip(text, i) + 1)  # past ":"
        if text[i] == "[":
            offsets: list[int] = []
            i = _skip(text, i + 1)
            while text[i] != "]":
                offsets.append(i)
                _, i = dec.raw_decode(text, i)
                i = _skip(text, i)
                if text[i] == ",":
                    i = _skip(text, i + 1)
            out[key] = offsets
            i += 1
        else:
            _, i = dec.raw_decode(text, i)
        i = _skip(text, i)
        if text[i] == ",":
            i += 1


@dataclass(frozen=True)
class SplitFile:
    """A CoOp split file, read: its three splits as samples, and each label's class name as the file writes it."""

    path: str
    splits: dict[str, tuple[Sample, ...]]
    names: tuple[str, ...]  # label order


def _inside(rel: str) -> bool:
    """Whether a listed relative path stays lexically inside the folder it is joined to."""
    norm = os.path.normpath(rel)
    return not (os.path.isabs(rel) or norm == ".." or norm.startswith(".." + os.sep))


def read_split_file(path: str, image_root: str, num_classes: int) -> SplitFile:
    """Read a CoOp split JSON (see the module docstring); DataError naming the file and the entry's line for a
    malformed entry, a label outside 0..num_classes-1, a path outside the image folder, a missing image (unless
    petlbench.data.deferred_file_checks), a label named two ways, or a train list lacking a class. The file is
    parsed once while it is unchanged (mtime, size, inode): an image deleted meanwhile is noticed when it is read."""
    if not os.path.isfile(path):
        raise DataError(f"split file {path!r} does not exist (CoOp's DATASETS.md links it for download)")
    return _read_split_file(path, image_root, num_classes, not _DEFER_FILE_CHECKS.get(), _stamp(path))


def _stamp(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino


@functools.lru_cache(maxsize=2)  # a run and check-data read several splits of one file in a row
def _read_split_file(path: str, image_root: str, num_classes: int, check_files: bool, stamp) -> SplitFile:
    text = read_text(path)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(obj, dict) or any(not isinstance(obj.get(k), list) for k in BASE_SPLITS):
        have = ", ".join(map(repr, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise DataError(f"{path}: expected a JSON object with 'train', 'val' and 'test' lists (CoOp's split "
                        f"format), got {have}")
    offsets = _array_offsets(text)
    newlines = [m.start() for m in re.finditer("\n", text)]
    names: dict[int, tuple[str, str]] = {}  # label -> (class name, where first named)
    splits: dict[str, tuple[Sample, ...]] = {}
    for split in BASE_SPLITS:
        out = []
        for i, entry in enumerate(obj[split]):
            where = f"{path}:{bisect.bisect_right(newlines, offsets[split][i]) + 1}"
            ok = (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                  and isinstance(entry[1], int) and not isinstance(entry[1], bool) and isinstance(entry[2], str))
            if not ok:
                raise DataError(f"{where}: {split}[{i}]: expected [relative image path, integer label, class name], "
                                f"got {json.dumps(entry)[:120]}")
            rel, label, name = entry
            if not 0 <= label < num_classes:
                raise DataError(f"{where}: {split}[{i}]: label {label} is outside 0..{num_classes - 1}")
            if not _inside(rel):
                raise DataError(f"{where}: {split}[{i}]: image path {rel!r} leaves the image folder {image_root!r}")
            known = names.setdefault(label, (name, where))
            if known[0] != name:
                raise DataError(f"{where}: {split}[{i}]: label {label} is named {name!r} here but {known[0]!r} at "
                                f"{known[1]}")
            image = os.path.join(image_root, rel)
            if check_files and not os.path.isfile(image):
                raise DataError(f"{where}: {split}[{i}]: image {image!r} does not exist")
            out.append(Sample(image, label, where))
        if not out:
            raise DataError(f"{path}: its {split!r} list is empty")
        splits[split] = tuple(out)
    lacking = sorted(set(range(num_classes)) - {s.label for s in splits["train"]})
    if lacking:
        raise DataError(f"{path}: its 'train' list has no image of label(s) {', '.join(map(str, lacking[:10]))}"
                        f"{' ...' if len(lacking) > 10 else ''}; {num_classes} classes expected")
    return SplitFile(path, splits, tuple(names[c][0] for c in range(num_classes)))


# --- FGVC-Aircraft: variants.txt and images_variant_<split>.txt ----------------------------------------------
def read_variants(path: str, num_classes: int) -> tuple[str, ...]:
    """variants.txt: one variant a line, a label is its index (fgvc_aircraft.py:22-27)."""
    if not os.path.isfile(path):
        raise DataError(f"FGVC-Aircraft variant list {path!r} does not exist")
    variants: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(read_text(path).split("\n"), 1):
        name = line.strip()
        if not name:
            continue
        if name in seen:
            raise DataError(f"{path}:{lineno}: variant {name!r} is listed twice (first on line {seen[name]})")
        seen[name] = lineno
        variants.append(name)
    if len(variants) != num_classes:
        raise DataError(f"{path}: {len(variants)} variants, expected {num_classes}")
    return tuple(variants)


def read_variant_list(path: str, image_root: str, variants: Sequence[str]) -> list[Sample]:
    """images_variant_<split>.txt: "<image id> <variant>" lines naming <image_root>/<id>.jpg
    (fgvc_aircraft.py:56-71); the variant may contain spaces. DataError naming the file and line."""
    if not os.path.isfile(path):
        raise DataError(f"FGVC-Aircraft list file {path!r} does not exist")
    label_of = {v: i for i, v in enumerate(variants)}
    check_files = not _DEFER_FILE_CHECKS.get()
    samples = []
    for lineno, line in enumerate(read_text(path).split("\n"), 1):
        parts = line.strip().split(" ")
        if parts == [""]:
            continue
        where = f"{path}:{lineno}"
        name = " ".join(parts[1:])
        if len(parts) < 2 or name not in label_of:
            raise DataError(f"{where}: expected '<image id> <variant>' with a variant of variants.txt, got "
                            f"{line.strip()!r}")
        if not _inside(parts[0]):
            raise DataError(f"{where}: image id {parts[0]!r} leaves the image folder {image_root!r}")
        image = os.path.join(image_root, parts[0] + ".jpg")
        if check_files and not os.path.isfile(image):
            raise DataError(f"{where}: image {image!r} does not exist")
        samples.append(Sample(image, label_of[name], where))
    if not samples:
        raise DataError(f"list file {path!r} has no samples")
    return samples


# --- ImageNet: class folders and classnames.txt ---------------------------------------------------------------
def read_classnames(path: str) -> dict[str, str]:
    """CoOp's classnames.txt (imagenet.py:63-76): "<folder> <class name>" lines -> {folder: class name}."""
    out: dict[str, str] = {}
    for lineno, line in enumerate(read_text(path).split("\n"), 1):
        parts = line.strip().split(" ")
        if parts == [""]:
            continue
        if len(parts) < 2 or parts[0] in out:
            why = "is listed twice" if parts[0] in out else "has no class name"
            raise DataError(f"{path}:{lineno}: expected '<folder> <class name>', one line per folder; "
                            f"{parts[0]!r} {why}")
        out[parts[0]] = " ".join(parts[1:])
    return out


def shipped_classnames(dataset: str) -> dict[str, str] | None:
    """The shipped "<folder> <class name>" file of a dataset (classnames/<dataset>.txt), or None."""
    path = os.path.join(CLASSNAMES_DIR, f"{dataset}.txt")
    return read_classnames(path) if os.path.isfile(path) else None


def imagenet_classnames_file(folder: str) -> str:
    """<folder>/classnames.txt (CoOp's DATASETS.md) when it exists, else the shipped classnames/imagenet.txt."""
    path = os.path.join(folder, "classnames.txt")
    if os.path.isfile(path):
        return path
    log.info("%s does not exist: reading the shipped ImageNet class names", path)
    return os.path.join(CLASSNAMES_DIR, "imagenet.txt")


def read_class_folders(root: str, names: dict[str, str], num_classes: int, names_path: str) -> list[Sample]:
    """ImageNet `root/<wnid>/<image>`: labels are positions in the sorted folder names (imagenet.py:80-83), every
    folder must be one of classnames.txt's (`names`) and all num_classes must be there; images in sorted
    file-name order, hidden files skipped (Dassl's listdir_nohidden), image extensions only."""
    require_dir(root, "ImageNet image folder")
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir())
    unknown = [f for f in folders if f not in names]
    if unknown:
        raise DataError(f"{os.path.join(root, unknown[0])}: folder {unknown[0]!r} is not a class of {names_path}")
    if len(folders) != num_classes:
        lacking = sorted(set(names) - set(folders))
        raise DataError(f"{root}: {len(folders)} class folders, expected {num_classes}; lacking "
                        f"{', '.join(lacking[:5])}{' ...' if len(lacking) > 5 else ''}")
    samples = []
    for label, folder in enumerate(folders):
        cls = os.path.join(root, folder)
        images = sorted(e.name for e in os.scandir(cls) if e.is_file() and not e.name.startswith(".")
                        and e.name.lower().endswith(IMAGE_EXTENSIONS))
        if not images:
            raise DataError(f"class folder {cls!r} holds no images")
        samples += [Sample(p, label, p) for p in (os.path.join(cls, n) for n in images)]
    return samples


# --- one dataset ----------------------------------------------------------------------------------------------
def dataset_folder(dataset: str, data_root: str) -> str:
    """<data_root>/<CoOp's folder name>; DataError (absent data) when it is not there."""
    return first_dir(data_root, (LAYOUTS[dataset].folder,), f"CoOp dataset {dataset!r}", "dataset folder")


def image_folder(dataset: str, folder: str) -> str:
    lay = LAYOUTS[dataset]
    return require_dir(os.path.join(folder, lay.images) if lay.images else folder, f"{lay.title} image folder")


def base_samples(dataset: str, data_root: str, split: str) -> list[Sample]:
    """The full train, val or test split of a dataset, as CoOp's reader lists it (ImageNet's val = its test)."""
    lay, folder = LAYOUTS[dataset], dataset_folder(dataset, data_root)
    if dataset == "imagenet":
        names_path = imagenet_classnames_file(folder)
        root = os.path.join(folder, "images", "train" if split == "train" else "val")
        return read_class_folders(root, read_classnames(names_path), lay.classes, names_path)
    images = image_folder(dataset, folder)
    if dataset == "fgvc_aircraft":
        variants = read_variants(os.path.join(folder, "variants.txt"), lay.classes)
        return read_variant_list(os.path.join(folder, f"images_variant_{split}.txt"), images, variants)
    return list(read_split_file(os.path.join(folder, lay.split_file), images, lay.classes).splits[split])


def data_classnames(dataset: str, data_root: str) -> tuple[str, ...]:
    """A dataset's class names in label order, as CoOp reads them from the data (the split file's class-name
    field, FGVC-Aircraft's variants.txt, ImageNet's classnames.txt for the sorted class folders), in the form
    CoOp's prompts use: underscores as spaces (zsclip.py:43, coop.py:98)."""
    lay, folder = LAYOUTS[dataset], dataset_folder(dataset, data_root)
    if dataset == "imagenet":  # its class folders are those of classnames.txt (read_class_folders), sorted
        names_path = imagenet_classnames_file(folder)
        names = read_classnames(names_path)
        if len(names) != lay.classes:
            raise DataError(f"{names_path}: {len(names)} classes, expected {lay.classes}")
        raw = [names[w] for w in sorted(names)]
    elif dataset == "fgvc_aircraft":
        raw = list(read_variants(os.path.join(folder, "variants.txt"), lay.classes))
    else:
        raw = list(read_split_file(os.path.join(folder, lay.split_file), image_folder(dataset, folder),
                                   lay.classes).names)
    return prompt_names(raw)


def prompt_names(raw: Sequence[str]) -> tuple[str, ...]:
    """Class names as CoOp's prompts hold them: underscores replaced by spaces (zsclip.py:43, coop.py:98)."""
    return tuple(n.replace("_", " ") for n in raw)


_COMPARED: set[tuple[str, str]] = set()


def compare_classnames(task, data_root: str) -> list[tuple[int, str, str]]:
    """(label, the data's name, the task's) for each class whose name in the data (`data_classnames`) differs
    from the task's shipped `classnames`; logged as a warning once per task and data root, since a zero-shot
    head is built from the shipped names. Empty for a task without shipped names."""
    if not task.classnames:
        return []
    have = data_classnames(task.name.split("/", 1)[1], data_root)
    diff = [(i, a, b) for i, (a, b) in enumerate(zip(have, task.classnames)) if a != b]
    if diff and (task.name, data_root) not in _COMPARED:
        label, a, b = diff[0]
        log.warning("%s: %d class names in %s differ from the shipped ones (label %d: %r there, %r shipped); a "
                    "zero-shot head uses the shipped names", task.name, len(diff), data_root, label, a, b)
    _COMPARED.add((task.name, data_root))
    return diff


def coop_samples(task, data_root: str, split: str) -> list[Sample]:
    """`Task.samples_fn` of the coop/<dataset> tasks: a base split, or a k-shot split drawn as CoOp does."""
    dataset = task.name.split("/", 1)[1]
    base, shots, seed = parse_split(split)
    full = base_samples(dataset, data_root, base if shots is None else "train")
    if (task.name, data_root) not in _COMPARED:
        compare_classnames(task, data_root)
    if shots is None:
        return full
    val = base_samples(dataset, data_root, "val") if base == "val" else None
    drawn, drawn_val = coop_fewshot(full, val, shots, seed)
    out = drawn if base == "train" else drawn_val
    log.info("%s %s: %d images drawn from %d (%d-shot, seed %d, CoOp/Dassl's draw)", task.name, split, len(out),
             len(full if base == "train" else val), shots if base == "train" else min(shots, VAL_SHOTS_CAP), seed)
    return out


# Images per split where they are known without the data (`petlbench check-data`): a k-shot split holds k images
# of each class (fewer only for a class with fewer than k); FGVC-Aircraft's official lists; ImageNet-1k; Food-101's
# split is 500 / 200 / 300 of each class's 1,000 images (food101.py:27 with dtd.py:83-85); the official test
# lists of Oxford-IIIT Pets (oxford_pets.py:29) and Stanford Cars (stanford_cars.py:27,30).
SPLIT_SIZES: dict[tuple[str, str], int] = {
    ("imagenet", "train"): 1_281_167, ("imagenet", "val"): 50_000, ("imagenet", "test"): 50_000,
    ("fgvc_aircraft", "train"): 3334, ("fgvc_aircraft", "val"): 3333, ("fgvc_aircraft", "test"): 3333,
    ("food101", "train"): 50_500, ("food101", "val"): 20_200, ("food101", "test"): 30_300,
    ("oxford_pets", "test"): 3669, ("stanford_cars", "test"): 8041,
}


def split_size(task, split: str) -> int | None:
    """The number of images of a coop split when known without the data (see SPLIT_SIZES); else None."""
    dataset = task.name.split("/", 1)[1]
    base, shots, _ = parse_split(split)
    if shots is not None:
        return (shots if base == "train" else min(shots, VAL_SHOTS_CAP)) * task.num_classes
    return SPLIT_SIZES.get((dataset, base))
