"""VTAB-1k (Zhai et al. 2019, arXiv:1910.04867), 19 datasets, in NOAH's export layout:

    <data_root>/<dataset>/images/<split>/<idx>.jpg      (any relative paths inside <dataset>/ work)
    <data_root>/<dataset>/{train800,val200,train800val200,test}.txt   lines "<relative path> <label>"

<dataset> is the task's name (RepAdapter's folder names) or NOAH's script name for it (its configs/*/VTAB/*.sh
loop over cifar100 and oxford_pet): FOLDER_NAMES. When several exist, the first in that order is used (and
logged). Sizes checked by `petlbench check-data`: train800 800, val200 200, train800val200 1000, test the
official test split (vtab1k.csv `test_images`); `split_size`.

Classes, groups, test sizes and RepAdapter's published per-dataset scale s (RepAdapter / RepAdapter_attn):
tasks/protocols/vtab1k.csv (from
tasks/reference/repadapter_protocol.md). Protocol: `ClassificationProtocol()` defaults (AdamW lr 1e-3, wd 1e-4,
batch 64, 100 epochs, cosine with 10 warm-up epochs, no augmentation, bicubic 224, ImageNet mean/std).

Class names (`Task.classnames`, for head_init=zeroshot): tasks/protocols/classnames/vtab/<dataset>.txt, one a line
in label order. NOAH's export writes the label of VTAB's task_adaptation readers (its
data/vtab-source/get_vtab1k.py:63-73): TFDS's label id, or the id VTAB derives for the structured tasks. Where
each list comes from and what was reordered: tasks/protocols/classnames/README.md.
"""
from __future__ import annotations

import csv
import os

from petlbench.benchmark import BENCHMARKS, Benchmark, Command
from petlbench.data import Sample, first_dir, read_list_file
from petlbench.task import TASKS, ClassificationProtocol, Task

SPLITS = ("train800", "val200", "train800val200", "test")
PROTOCOL_CSV = os.path.join(os.path.dirname(__file__), "protocols", "vtab1k.csv")
CLASSNAMES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "protocols", "classnames")  # package data


SPLIT_SIZES = {"train800": 800, "val200": 200, "train800val200": 1000}

# Folder names accepted under <data_root>, first match wins: ours (RepAdapter's), then NOAH's script names.
FOLDER_NAMES: dict[str, tuple[str, ...]] = {
    "cifar": ("cifar", "cifar100"),
    "oxford_iiit_pet": ("oxford_iiit_pet", "oxford_pet"),
}


def list_file_samples(task: Task, data_root: str, split: str) -> list[Sample]:
    """`<data_root>/<dataset>/<split>.txt`, paths relative to the dataset folder (NOAH's layout; also the
    mini-benchmark's); <dataset> any of FOLDER_NAMES (the task's name otherwise)."""
    name = task.name.split("/", 1)[1]
    folder = first_dir(data_root, FOLDER_NAMES.get(name, (name,)), f"dataset folder for {task.name}")
    return read_list_file(os.path.join(folder, f"{split}.txt"), folder, task.num_classes)


def split_size(task: Task, split: str) -> int | None:
    """The number of images a VTAB-1k split has (None for a task that is not VTAB-1k)."""
    if task.benchmark != "vtab":
        return None
    return TEST_SIZES[task.name.split("/", 1)[1]] if split == "test" else SPLIT_SIZES.get(split)


def shipped_classnames(benchmark: str, dataset: str, num_classes: int) -> tuple[str, ...]:
    """The class names of `<benchmark>/<dataset>` in label order, from CLASSNAMES_DIR/<benchmark>/<dataset>.txt
    (one name a line; sources in CLASSNAMES_DIR/README.md); () when no list is shipped. A list that does not hold
    `num_classes` distinct, non-empty names is a ValueError naming the file: a name too many or too few would
    shift every label after it."""
    path = os.path.join(CLASSNAMES_DIR, benchmark, f"{dataset}.txt")
    if not os.path.isfile(path):
        return ()
    with open(path, encoding="utf-8") as f:
        names = f.read().rstrip("\n").split("\n")
    seen: dict[str, int] = {}
    for lineno, name in enumerate(names, 1):
        if not name.strip():
            raise ValueError(f"{path}:{lineno}: empty class name (one name a line, in label order)")
        if name in seen:
            raise ValueError(f"{path}:{lineno}: class name {name!r} is also on line {seen[name]}")
        seen[name] = lineno
    if len(names) != num_classes:
        raise ValueError(f"{path}: {len(names)} class names, but {benchmark}/{dataset} has {num_classes} classes")
    return tuple(names)


def _rows() -> list[dict]:
    with open(PROTOCOL_CSV, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


GROUPS = ("Natural", "Specialized", "Structured")
DATASETS: list[str] = []
TEST_SIZES: dict[str, int] = {}
for row in _rows():
    DATASETS.append(row["name"])
    TEST_SIZES[row["name"]] = int(row["test_images"])
    TASKS.add(Task(
        name=f"vtab/{row['name']}", benchmark="vtab", num_classes=int(row["classes"]), splits=SPLITS,
        samples_fn=list_file_samples, protocol=ClassificationProtocol(), group=row["group"], recipe="repadapter-vtab",
        classnames=shipped_classnames("vtab", row["name"], int(row["classes"])),
        method_defaults={"repadapter": {"scale": float(row["repadapter_scale"])},
                         "repadapter where=attn": {"scale": float(row["repadapter_attn_scale"])}},
        summary=f"VTAB-1k {row['group']}: 800+200 train, official test split; top-1",
    ))


# Published column name -> task dataset name.
PUBLISHED_ALIASES = {"cifar100": "cifar"}


def read_published(reference_dir: str):
    """VTAB-1k's published rows (reference/vtab1k_vitb16_published.csv: a row per method, a column per dataset,
    the paper's printed average of group means) as the long frame of `tables.published_frame`."""
    import pandas as pd

    from petlbench.tables import published_frame, read_reference

    df = read_reference("vtab1k_vitb16_published.csv", reference_dir)
    if df is None:
        return None
    ids = ["method", "label", "params_m", "source", "recipe"]
    ds = [c for c in df.columns if c not in ids + ["average_of_group_means"]]
    long = df.melt(id_vars=ids, value_vars=ds, var_name="dataset")
    long["dataset"] = long["dataset"].replace(PUBLISHED_ALIASES)
    printed = df[ids + ["average_of_group_means"]].rename(columns={"average_of_group_means": "value"})
    long = pd.concat([long, printed.assign(dataset="mean:groups")], ignore_index=True)
    return published_frame(long.rename(columns={"method": "key"}))


# --- `petlbench estimate-vtab`: a whole VTAB-1k run's time from measured costs ---------------------------------
def _configure_estimate(parser) -> None:
    parser.add_argument("--method", default="repadapter")
    parser.add_argument("--backbone", default="vit_base_patch16_224",
                        help="timm model name, as VTAB-1k runs it at 224 px (default: %(default)s)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eval-batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--decode-workers", type=int, default=8, help="decode processes assumed (default: 8)")
    parser.add_argument("--out", default=os.path.join("results", "efficiency"))


def estimate_sizes() -> list[dict]:
    """What `measure.time_estimate` takes for VTAB-1k: per dataset, 1,000 training images, the official test
    split's size and the typical size of its source images (tasks/protocols/vtab1k.csv)."""
    return [{"name": r["name"], "train_images": SPLIT_SIZES["train800val200"], "test_images": r["test_images"],
             "typical_source_size": r["typical_source_size"]} for r in _rows()]


def _estimate(args, ui) -> int:
    """19 datasets x 100 epochs on 1,000 images, a test evaluation every 10 epochs, each image decoded once,
    from per-step, per-image-evaluation and per-image-decode costs measured on synthetic data of VTAB-1k's
    sizes (tasks/protocols/vtab1k.csv). Writes the estimate as JSON and prints a summary."""
    import json
    import shlex

    from petlbench.api import get_method
    from petlbench.atomic import atomic_write_text as write_text
    from petlbench.backbones import check_backbone
    from petlbench.measure import environment, time_estimate

    get_method(args.method)
    check_backbone(args.backbone)
    ui.check_device(args.device)
    try:
        est = time_estimate(estimate_sizes(), args.method, args.device, args.amp, args.batch_size, args.eval_batch_size,
                            steps=args.steps, decode_workers=args.decode_workers, backbone=args.backbone,
                            progress=ui.progress)
    finally:
        ui.close()
    est["environment"] = environment(args.device, args.amp)
    est["command"] = "petlbench " + " ".join(shlex.quote(a) for a in args.argv)
    os.makedirs(args.out, exist_ok=True)
    stem = f"vtab_estimate_{args.method}_{args.device.replace(':', '')}"
    if args.backbone != "vit_base_patch16_224":  # the default keeps its file name
        stem += "_" + args.backbone.replace(":", "_")
    path = os.path.join(args.out, stem + ".json")
    write_text(path, json.dumps(est, indent=1) + "\n")
    t = est["totals_s"]
    decode = est["decode_s_per_image"].values()
    ui.say(f"VTAB-1k, {args.backbone} {args.method}, {args.device} amp={args.amp}: train step "
           f"(batch {args.batch_size}) "
           f"{est['train_step_s'] * 1e3:.0f} ms, eval {est['eval_s_per_image'] * 1e3:.2f} ms/image, decode "
           f"{min(decode) * 1e3:.2f}-{max(decode) * 1e3:.2f} ms/image on {args.decode_workers} workers")
    ui.say(f"estimate: decode {t['decode_s'] / 60:.1f} min + train {t['train_s'] / 60:.1f} min + test evaluations "
           f"{t['eval_s'] / 60:.1f} min = {est['total_minutes']:.1f} min  ({path})")
    return 0


BENCHMARKS.add(Benchmark(
    "vtab", "VTAB-1k: 19 datasets, 1,000 training images each", table_name="vtab1k",
    table_title="VTAB-1k (ViT-B/16): top-1 (%)", order=0, always=True,
    columns=lambda: [(d, TASKS.get(f"vtab/{d}").group) for d in DATASETS],
    published=read_published,
    # methods whose authors ship per-dataset VTAB-1k settings: their runs use them by default
    method_recipes={"fact_tt": "fact-vtab", "fact_tk": "fact-vtab", "convpass": "convpass-vtab", "noah": "noah-vtab"},
    data_source="NOAH's VTAB-1k jpg export with list files (not TFDS tensors; the two sources differ by up to ~10 "
                "points on some datasets)",
    commands=(Command("estimate-vtab", "estimate a whole VTAB-1k run from measured per-step/image costs",
                      _configure_estimate, _estimate, uses_store=False),)))
