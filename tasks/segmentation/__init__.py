"""Semantic segmentation: ADE20K (SceneParsing, 150 classes) through mmsegmentation, with a PETL-wrapped timm ViT
as the mmseg backbone (`backbone.PETLViT`, registered in mmseg's MODELS) and mmengine's Runner as the loop
(`runner.execute`, the tasks' `runner`).

This module only registers the tasks and reads the dataset layout: importing it needs neither mmseg nor torch,
so `petlbench tasks` and the tables work without the segmentation stack installed.

Layout, under <data_root>: the ADEChallengeData2016 archive as released (and as mmseg expects it), in the first
of ADEChallengeData2016/, ade/ADEChallengeData2016/ (mmseg's data/ade/...) or ade20k/ that exists:

    images/training/*.jpg           20,210 images        annotations/training/*.png     same stems
    images/validation/*.jpg          2,000 images        annotations/validation/*.png

Annotations are single-channel PNGs of class indices as released: 0 = "other" (ignored), 1..150 = the classes;
mmseg's `reduce_zero_label` maps them to 255 (ignore) and 0..149. Before training, every pair of a split is
checked (`check_split`): an image without its annotation, an image or annotation that does not decode in full (a
truncated JPEG would otherwise stop mmcv mid-training), sizes that differ, a multi-channel annotation, or values
outside 0..150 (and 255) fail naming the files. Each pair that passed is cached by (path, size, modification
time) of both files, so a second run decodes nothing again and a changed file is decoded again.

Tasks (protocols: the two shipped mmengine configs in configs/, whose values the protocol repeats; a test checks
they agree):
  seg/ade20k          SETR-PUP decode head on ViT-L/16 (IN-21k), 512x512 crops, 160k iterations, batch 16, SGD
                      lr 1e-3 with heads at 10x: the RepAdapter paper's segmentation setting.
  seg/ade20k-upernet  UperNet + multi-level neck on ViT-B/16 (IN-21k), 512x512, 160k iterations, batch 16,
                      AdamW lr 6e-5 wd 0.01: the common lighter baseline.
Both report single-scale mIoU (and aAcc, mAcc) of the final iteration on the validation set, which the papers
report as test (ADE20K's test labels are not public).
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from petlbench.benchmark import BENCHMARKS, Benchmark
from petlbench.data import DataError
from petlbench.tables import (
    REFERENCE_DIR as _REFERENCE_DIR,
    Column,
    Table,
    cell_of,
    collapse_search,
    finished,
    measured_rows,
    protocol_note,
    published,
    published_row,
    recipe_notes,
    recipes_of,
    search_note,
)
from petlbench.task import TASKS, Protocol, Task


@dataclass
class SegProtocol(Protocol):
    """The shared protocol plus what an mmengine segmentation run needs: the config file (a shipped name or a
    path) and the length of training in iterations (`eval_every` counts iterations between validations). The
    rest of the recipe (schedule, augmentation, heads) is in the config file."""

    seg_config: str = ""
    max_iters: int = 0

    def summary(self) -> str:
        return (f"{self.optimizer} lr {self.lr:g} wd {self.weight_decay:g}, batch {self.batch_size}, "
                f"{self.max_iters} iters (val every {self.eval_every}), {self.img_size}px crops, {self.backbone}, "
                f"config {self.seg_config}")

ADE_FOLDERS = ("ADEChallengeData2016", os.path.join("ade", "ADEChallengeData2016"), "ade20k")
ADE_SPLITS = ("training", "validation")
NUM_CLASSES = 150
IGNORE = 255
IMG_SUFFIX, ANN_SUFFIX = ".jpg", ".png"  # what mmseg's ADE20KDataset reads
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
MAX_LISTED = 10  # problems named in one error


@dataclass(frozen=True)
class SegSample:
    path: str  # the image
    annotation: str  # its label map


def ade_folder(data_root: str) -> str:
    """The ADEChallengeData2016 folder under `data_root` (or `data_root` itself when it is one)."""
    candidates = [data_root] + [os.path.join(data_root, f) for f in ADE_FOLDERS]
    for c in candidates:
        if os.path.isdir(os.path.join(c, "images")) and os.path.isdir(os.path.join(c, "annotations")):
            return c
    tried = ", ".join(repr(os.path.join(c, "images")) for c in candidates)
    raise DataError(f"ADE20K not found under data root {data_root!r}: no images/ and annotations/ folders in "
                    f"any of {tried} (unpack ADEChallengeData2016.zip there)")


def ade_samples(task: Task, data_root: str, split: str) -> list[SegSample]:
    """(image, annotation) pairs of `split`, sorted by name. An image without its annotation is an error
    naming both paths; annotations without an image are ignored (mmseg reads the image list)."""
    folder = ade_folder(data_root)
    img_dir = os.path.join(folder, "images", split)
    ann_dir = os.path.join(folder, "annotations", split)
    for d in (img_dir, ann_dir):
        if not os.path.isdir(d):
            raise DataError(f"task {task.name!r}: {d!r} does not exist or is not a folder")
    names = sorted(n for n in os.listdir(img_dir) if n.endswith(IMG_SUFFIX))
    if not names:
        raise DataError(f"task {task.name!r}: no {IMG_SUFFIX} images in {img_dir!r}")
    pairs = [SegSample(os.path.join(img_dir, n), os.path.join(ann_dir, n[: -len(IMG_SUFFIX)] + ANN_SUFFIX))
             for n in names]
    missing = [s for s in pairs if not os.path.isfile(s.annotation)]
    if missing:
        listed = "; ".join(f"{s.path} has no annotation {s.annotation}" for s in missing[:MAX_LISTED])
        more = f" (and {len(missing) - MAX_LISTED} more)" if len(missing) > MAX_LISTED else ""
        raise DataError(f"{len(missing)} of {len(pairs)} images in {img_dir!r} have no annotation: {listed}{more}")
    return pairs


def _check_pair(s: SegSample) -> str | None:
    """What is wrong with one pair (None: nothing). The image is decoded in full, not only its header."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(s.path) as im:
            img_size = im.size
            im.load()
    except (OSError, UnidentifiedImageError) as e:
        return f"cannot read {s.path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    except Exception as e:  # zlib / PIL decoder errors of a damaged file
        return f"image {s.path} does not decode: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    try:
        with Image.open(s.annotation) as ann:
            if ann.mode not in ("L", "P", "I", "I;16"):
                return (f"annotation {s.annotation} has mode {ann.mode} ({len(ann.getbands())} channels); "
                        f"ADE20K annotations are single-channel PNGs of class indices")
            if ann.size != img_size:
                return (f"annotation {s.annotation} is {ann.size[0]}x{ann.size[1]} but image {s.path} is "
                        f"{img_size[0]}x{img_size[1]}")
            values = np.unique(np.asarray(ann))
    except (OSError, UnidentifiedImageError) as e:
        return f"cannot read {s.annotation}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    except Exception as e:
        return (f"annotation {s.annotation} does not decode: {type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}")
    bad = [int(v) for v in values if not (0 <= v <= NUM_CLASSES or v == IGNORE)]
    if bad:
        return (f"annotation {s.annotation} has label values {bad[:8]} outside 0..{NUM_CLASSES} "
                f"(0 = unlabelled, 1..{NUM_CLASSES} = classes 0..{NUM_CLASSES - 1}) and {IGNORE} (ignore)")
    return None


def _stamp(s: SegSample) -> list | None:
    """What the cache keys a pair by: the annotation's path, and size and modification time of both files."""
    try:
        a, b = os.stat(s.path), os.stat(s.annotation)
    except OSError:
        return None
    return [s.annotation, a.st_size, a.st_mtime_ns, b.st_size, b.st_mtime_ns]


CACHE_VERSION = 2  # 1: one stamp per split, image headers only (not trusted: it never decoded the images)


def check_split(samples: list[SegSample], cache_dir: str | None = None, workers: int = 8) -> None:
    """Decode every image and annotation of a split in full and fail (DataError, one line) naming the files
    where one does not decode (truncated, damaged), an annotation's size differs from its image's, it is not
    single-channel, or it holds values outside 0..150 / 255. With `cache_dir`, the pairs that passed are cached
    (`<cache_dir>/decoded-<digest of the paths>.json`, by path, size and modification time of both files): a
    second check decodes only the pairs that are new or changed."""
    cache_path, cached = None, {}
    if cache_dir:
        names = hashlib.sha256("\n".join(s.path for s in samples).encode()).hexdigest()[:24]
        cache_path = os.path.join(cache_dir, f"decoded-{names}.json")
        try:
            with open(cache_path, encoding="utf-8") as f:
                saved = json.load(f)
            if saved.get("version") == CACHE_VERSION and isinstance(saved.get("ok"), dict):
                cached = saved["ok"]
        except (OSError, ValueError, AttributeError):
            cached = {}  # none yet, or unreadable: decode everything
    from PIL import ImageFile

    stamps = {s.path: _stamp(s) for s in samples}
    todo = [s for s in samples if stamps[s.path] is None or cached.get(s.path) != stamps[s.path]]
    lenient = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file fails here, whatever another library set
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            found = list(pool.map(_check_pair, todo))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient
    problems = [p for p in found if p]
    if cache_path and todo:
        from petlbench.atomic import atomic_write_text

        fresh = {s.path for s, p in zip(todo, found) if not p}
        ok = {s.path: stamps[s.path] for s in samples if stamps[s.path] is not None
              and (s.path in fresh or cached.get(s.path) == stamps[s.path])}
        atomic_write_text(cache_path, json.dumps({"version": CACHE_VERSION, "ok": ok}))
    if problems:
        more = f" (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
        raise DataError(f"{len(problems)} of {len(samples)} image/annotation pairs are unusable: "
                        + "; ".join(problems[:MAX_LISTED]) + more)


def config_path(name: str) -> str:
    """A shipped config by name (configs/<name>.py), or a user's mmengine config file by path."""
    if os.path.sep in name or name.endswith(".py"):
        path = os.path.expanduser(name)
        if not os.path.isfile(path):
            raise DataError(f"seg_config={name!r}: no such file")
        return path
    path = os.path.join(CONFIG_DIR, f"{name}.py")
    if not os.path.isfile(path):
        shipped = sorted(n[:-3] for n in os.listdir(CONFIG_DIR) if n.endswith(".py") and not n.startswith("_"))
        raise DataError(f"seg_config={name!r}: not a shipped config ({', '.join(shipped)}) nor a .py file path")
    return path


def _run(*args, **kwargs):
    from .runner import execute  # mmseg and mmengine load only when a segmentation run starts

    return execute(*args, **kwargs)


SEG_COMMON = dict(img_size=512, batch_size=16, max_iters=160_000, eval_every=16_000, drop_path=0.0,
                  train_split="training", test_split="validation")
# RepAdapter's segmentation setting trains the adapters, the heads and every backbone bias.
SEG_METHOD_DEFAULTS = {"repadapter": {"train_bias": True}}

TASKS.add(Task(
    name="seg/ade20k", benchmark="seg", num_classes=NUM_CLASSES, splits=ADE_SPLITS, samples_fn=ade_samples,
    protocol=SegProtocol(**SEG_COMMON, backbone="vit_large_patch16_224", weights="vit_large_patch16_224.orig_in21k",
                         optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=0.0,
                         seg_config="setr_pup_vit-l16_ade20k_512"),
    method_defaults=SEG_METHOD_DEFAULTS, recipe="mmseg-setr-ade20k",
    summary="ADE20K (150 classes), 20,210 train / 2,000 val images; SETR-PUP on ViT-L/16, 512x512, 160k iters "
            "(RepAdapter paper); mIoU",
))
TASKS.add(Task(
    name="seg/ade20k-upernet", benchmark="seg", num_classes=NUM_CLASSES, splits=ADE_SPLITS,
    samples_fn=ade_samples,
    protocol=SegProtocol(**SEG_COMMON, backbone="vit_base_patch16_224", weights="vit_base_patch16_224.orig_in21k",
                         optimizer="adamw", lr=6e-5, weight_decay=0.01, seg_config="upernet_vit-b16_ade20k_512"),
    method_defaults=SEG_METHOD_DEFAULTS, recipe="mmseg-upernet-ade20k",
    summary="ADE20K (150 classes); UperNet on ViT-B/16, 512x512, 160k iters (lighter baseline); mIoU",
))


# --- results: mIoU per measured setting; V-PETL Bench's Swin-L rows in a column of their own --------------------
def read_published(reference_dir: str):
    """The ADE20K rows of V-PETL Bench's dense table (reference/dense_published.csv), long."""
    from petlbench.tables import published_frame, read_reference

    df = read_reference("dense_published.csv", reference_dir)
    if df is None:
        return None
    long = df[df["dataset"] == "ade20k"].rename(columns={"value_pct": "value"})
    long = long.assign(key=long["method"].str.lower() + " (" + long["backbone"] + ")",
                       label=long["method"] + " (" + long["backbone"] + ")")
    return published_frame(long)


# Segmentation columns: task dataset -> header. Published ADE20K rows (V-PETL Bench, Swin-L) get a column of their
# own: another backbone and decode head, never a baseline for the ViT columns.
SEG_HEADERS = {"ade20k": "SETR-PUP, ViT-L/16", "ade20k-upernet": "UperNet, ViT-B/16"}
SEG_PUBLISHED = "ade20k:published-setting"


def miou_tables(bench, frame, search: tuple[str, ...] = (), reference_dir: str = _REFERENCE_DIR,
                results_dir: str | None = None) -> list[Table]:
    """ADE20K: a row per variant, a column per measured setting (decode head + backbone), single-scale mIoU;
    published rows in their own column (their setting differs)."""
    ok = collapse_search(finished(frame, bench.name), search)
    measured = sorted(set(ok["dataset"])) if not ok.empty else []
    order = [d for d in SEG_HEADERS if d in measured] + [d for d in measured if d not in SEG_HEADERS]
    if not order:
        order = list(SEG_HEADERS)
    pub = published(bench.name, reference_dir)
    columns = [Column(d, SEG_HEADERS.get(d, d), "Measured here") for d in order]
    if not pub.empty:
        backbones = ", ".join(sorted({lab.rsplit("(", 1)[-1].rstrip(")") for lab in pub["label"]}))
        columns.append(Column(SEG_PUBLISHED, f"V-PETL Bench setting, {backbones}", "Published"))
    table = Table("seg", "ADE20K semantic segmentation (150 classes, 512x512): single-scale mIoU (%)", columns)
    table.rows += measured_rows(ok)
    table.rows += [published_row(key, sub, {SEG_PUBLISHED: cell_of(sub["value"])})
                   for key, sub in pub.groupby("key", sort=False)]
    table.notes += [
        "mIoU (%) over the 150 classes, single scale, of the final iteration on the validation split (ADE20K's "
        "test labels are not public; the papers report validation), computed by mmsegmentation's IoUMetric. A cell "
        "is the mean over seeds (+- sample std when there are several, n in the CSV); missing cells are runs not "
        "in the store, never zeros. aAcc and mAcc are in each run's record.",
        "Params (M): backbone-side trainable parameters in millions in each method's paper convention (RepAdapter: "
        "adapter weights; it also trains the backbone biases here, as its paper does for segmentation), decode and "
        "auxiliary heads excluded (the heads' counts are in the records).",
        "RepAdapter's own ADE20K numbers (SETR, ViT-L/16) are not in the reference folder: no published row for "
        "the measured columns. The published column is another backbone and decode head; compare within a "
        "column only.",
    ]
    table.notes += protocol_note(ok, bench.data_source) + search_note(ok, search)
    table.notes += recipe_notes(list(recipes_of(ok)) + list(pub["recipe"]))
    if not pub.empty:
        table.notes.append("Published rows: " + "; ".join(sorted({str(x) for x in pub["source"]})) + ".")
    return [table]


def miou_plots(table, out_dir: str) -> list[str]:
    """One plot per measured setting (decode head + backbone): mIoU vs parameters."""
    from petlbench import plots

    paths = []
    for col in (c for c in table.columns if c.group == "Measured here"):
        paths += plots.accuracy_vs_params(table, os.path.join(out_dir, f"seg_{col.key}_miou_vs_params"),
                                          key=col.key, metric="mIoU (%)")
    return paths


BENCHMARKS.add(Benchmark(
    "seg", "ADE20K semantic segmentation through mmsegmentation", order=40, published=read_published,
    tables=miou_tables, plots=miou_plots, runner=_run))
