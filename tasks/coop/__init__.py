"""CoOp's few-shot protocol for CLIP (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022,
arXiv:2109.01134): 11 datasets at 1/2/4/8/16 shots per class, split seeds 1-3, CLIP ViT-B/16.

Tasks `coop/<dataset>`, named as CoOp's configs/datasets/*.yaml: imagenet, caltech101, oxford_pets,
stanford_cars, oxford_flowers, food101, fgvc_aircraft, sun397, dtd, eurosat, ucf101. Layouts, splits and the
k-shot draw: tasks/coop/data.py; prompts: tasks/coop/prompts.py. The protocol trains on `train_shot16_seed1`;
a sweep's `shots: [...]` axis picks the k-shot split of its seed (`seeds: [1, 2, 3]` as CoOp's main.sh:14).

Class names (`Task.classnames`, for head_init=zeroshot) ship where the authors' code writes them: ImageNet
(classnames/imagenet.txt, CLIP's names as Tip-Adapter's datasets/imagenet.py:11-175 lists them) and EuroSAT
(classnames/eurosat.txt, CoOp's eurosat.py:10-21 NEW_CNAMES, in the sorted folder order that is its label
order, dtd.py:62-64,77). The other nine are data: CoOp reads them from the split file's class-name field
(FGVC-Aircraft: variants.txt), and so does their `Task.classnames_fn` (data.data_classnames) when a run asks.
Prompt sets (`Task.templates`, `head_templates=NAME`): "coop" (the dataset's hand-crafted prompt),
"coop_ensemble", "clip80", "tip_adapter" (prompts.prompt_templates).
"""
from __future__ import annotations

import os

from petlbench.benchmark import BENCHMARKS, Benchmark
from petlbench.tables import (
    REFERENCE_DIR,
    Column,
    Table,
    collapse_search,
    finished,
    protocol_note,
    published as published_rows,  # (the name `published` is this package's module)
    recipe_notes,
    recipes_of,
    search_note,
    selection_note,
)
from petlbench.task import TASKS, ClassificationProtocol, Task

from ..fewshot import (  # the same split names, table by shots and curves
    row_fields as fewshot_row_fields,
    shot_curves,
    shot_rows,
)
from .data import (
    LAYOUTS,
    SEEDS,
    SHOTS,
    coop_samples,
    data_classnames,
    fewshot_split,
    prompt_names,
    shipped_classnames,
    splits_of,
)
from .prompts import COOP_PROMPTS, PROMPT_SETS, prompt_templates
from .published import read_published

DATASETS = tuple(LAYOUTS)  # CoOp's order (its paper's Figure 3)

# CoOp's epochs per shots: COOP.md:18-22 (1 shot: *_ep50, 2 and 4: *_ep100, 8 and 16: the 200-epoch config; for
# ViT-B/16 vit_b16_ep50.yaml:18, vit_b16_ep100.yaml:18, vit_b16.yaml:18), ImageNet 50 at every k (COOP.md:13).
EPOCHS_BY_SHOTS = {1: 50, 2: 100, 4: 100, 8: 200, 16: 200}
IMAGENET_EPOCHS = 50


def coop_epochs(dataset: str, shots: int) -> int:
    """The epochs CoOp trains `dataset` for at `shots` shots per class."""
    return IMAGENET_EPOCHS if dataset == "imagenet" else EPOCHS_BY_SHOTS[shots]


# CoOp's configs/trainers/CoOp/vit_b16.yaml (lines cited) with Dassl's defaults for what it leaves unset
# (dassl/config/defaults.py, Dassl.pytorch@c61a1b5), and open_clip's OpenAI ViT-B/16 for CLIP's.
COOP_PROTOCOL = dict(
    backbone="openclip:ViT-B-16",  # vit_b16.yaml:29 MODEL.BACKBONE.NAME "ViT-B/16" (OpenAI CLIP)
    weights="openai",  # CoOp loads OpenAI's checkpoint (trainers/coop.py:19-34 clip._MODELS)
    drop_path=0.0,  # CLIP has none (open_clip's vision tower refuses one)
    batch_size=32,  # vit_b16.yaml:3 DATALOADER.TRAIN_X.BATCH_SIZE
    optimizer="sgd",  # vit_b16.yaml:16 OPTIM.NAME (Dassl: torch SGD, no Nesterov, defaults.py:155-156)
    lr=0.002,  # vit_b16.yaml:17 OPTIM.LR
    weight_decay=5e-4,  # defaults.py:153 OPTIM.WEIGHT_DECAY, on every trained tensor (coop.py:246)
    momentum=0.9,  # defaults.py:154 OPTIM.MOMENTUM
    decay_filter="all",
    img_size=224,  # vit_b16.yaml:9 INPUT.SIZE
    interpolation="bicubic",  # vit_b16.yaml:10 INPUT.INTERPOLATION
    normalize="model",  # vit_b16.yaml:11-12 CLIP's mean/std, which open_clip's "openai" config carries
    # vit_b16.yaml:19-22: cosine over MAX_EPOCH, the first epoch at a constant 1e-5 (Dassl's
    # ConstantWarmupScheduler around CosineAnnealingLR, eta_min 0: dassl/optim/lr_scheduler.py:35-54, 128-141),
    # stepped once per epoch (coop.py:281-282)
    schedule="dassl_cosine",
    warmup_epochs=1,  # vit_b16.yaml:20 OPTIM.WARMUP_EPOCH
    warmup_lr=1e-5,  # vit_b16.yaml:22 OPTIM.WARMUP_CONS_LR
    min_lr=0.0,  # CosineAnnealingLR's eta_min default
    epochs=EPOCHS_BY_SHOTS[16],  # vit_b16.yaml:18 OPTIM.MAX_EPOCH 200 (see coop_epochs)
    # vit_b16.yaml:13 INPUT.TRANSFORMS random_resized_crop (scale 0.08-1, defaults.py:40), random_flip
    augment="crop_flip",
    label_smoothing=0.0,  # coop.py:273 F.cross_entropy
    drop_last=True,  # dassl/data/data_manager.py:43 drop_last=is_train and len(data) >= batch_size
    # defaults.py:216 TEST.FINAL_MODEL "last_step": the last epoch's model, tested once
    selection="final",
    seed=1,  # scripts/coop/main.sh:14 seeds 1 2 3 (train.py:130-132 seeds the draw and the run alike)
    train_split="train_shot16_seed1",
    clean_train_split="train_shot16_seed1",
    test_split="test",
)


def protocol_of(dataset: str) -> ClassificationProtocol:
    """The task protocol of one dataset: COOP_PROTOCOL at 16 shots (ImageNet: 50 epochs)."""
    # CoOp draws no few-shot val on ImageNet; its val is the test split (imagenet.py:61)
    val = "val" if dataset == "imagenet" else fewshot_split(16, 1, "val")
    return ClassificationProtocol(**{**COOP_PROTOCOL, "epochs": coop_epochs(dataset, 16)}, val_split=val)


def _classnames(dataset: str) -> tuple[str, ...]:
    shipped = shipped_classnames(dataset)
    return prompt_names([shipped[k] for k in sorted(shipped)]) if shipped else ()


def classnames_from_data(task: Task, data_root: str) -> tuple[str, ...]:
    """`Task.classnames_fn`: the class names the data at `data_root` gives (data.data_classnames)."""
    return data_classnames(task.name.split("/", 1)[1], data_root)


for _name, _lay in LAYOUTS.items():
    TASKS.add(Task(
        name=f"coop/{_name}", benchmark="coop", num_classes=_lay.classes, splits=splits_of(_name),
        samples_fn=coop_samples, protocol=protocol_of(_name), classnames=_classnames(_name),
        classnames_fn=classnames_from_data, templates={k: prompt_templates(_name, k) for k in PROMPT_SETS},
        recipe="coop",  # tasks/recipes/coop.py: the same values, each citing CoOp's configs
        summary=f"CoOp few-shot {_lay.title} ({_lay.classes} classes), 1/2/4/8/16 shots x seeds 1-3 drawn as "
                f"CoOp/Dassl; {'test = ImageNet val' if _name == 'imagenet' else 'CoOp split file test'}; "
                f"prompt {COOP_PROMPTS[_name]!r}; top-1",
    ))


# --- results: the shots axis, the table by shots, the curves ----------------------------------------------------
def shots_axis(shot: int, seed: int | None, task: Task | None = None) -> dict:
    """A sweep's `shots: [k, ...]` for a run of seed `seed` (1 when the sweep has no seeds): its k-shot training
    split and CoOp's epochs for the task's dataset at k shots (coop_epochs; a sweep file's own `epochs` wins).
    Methods with their own procedure (Tip-Adapter, CaFo) take their epochs from their authors' configs."""
    split = fewshot_split(int(shot), int(seed if seed is not None else 1))
    out: dict = {"train_split": split, "clean_train_split": split}
    if task is not None:
        out["epochs"] = coop_epochs(task.name.split("/", 1)[1], int(shot))
    return out


def row_fields(record: dict) -> dict:
    """The few-shot family's shots and split seed of the training split; shots 0 for zero-shot CLIP, which reads
    no training image (its row fills every shot column, as the published zero-shot rows do)."""
    fields = fewshot_row_fields(record)
    return {**fields, "shots": 0, "split_seed": None} if record.get("method") == "zeroshot" else fields


def shots_table(bench, frame, search: tuple[str, ...] = (), reference_dir: str = REFERENCE_DIR,
                results_dir: str | None = None) -> list[Table]:
    """Rows: (dataset section, variant); columns: 1..16 shots; a last section averages the 11 datasets (missing
    where one is missing). Published rows (tasks/coop/published.py) sit beside the measured ones, labelled with
    their backbone where it is not ViT-B/16; delta rows only under the same method and recipe."""
    ok = collapse_search(finished(frame, bench.name), search)
    columns = [Column(f"shot:{k}", f"{k}-shot", "Shots per class") for k in SHOTS]
    table = Table("coop", "CoOp's few-shot protocol (CLIP ViT-B/16): top-1 (%) vs shots per class", columns)
    pub = published_rows(bench.name, reference_dir)
    table.rows += shot_rows(ok, DATASETS, columns, f"average of {len(DATASETS)} datasets", pub)
    table.notes += [
        "CoOp's 11 datasets with its split files and its k-shot draw (Dassl's generate_fewshot_dataset after "
        "random.seed(seed)); a cell is the mean over split seeds (+- sample std); ImageNet's test is its val.",
        "Published rows: Tip-Adapter's exp.log (zero-shot CLIP, Tip-Adapter, Tip-Adapter-F, CLIP-Adapter) and "
        "CaFo's exp.log and paper (CaFo; CoOp and linear-probe CLIP on ImageNet), CLIP RN50 as the label's "
        "[RN50] says: not comparable with ViT-B/16 runs. Unlabelled: ViT-B/16, 16-shot ImageNet only (CaFo's "
        "Table 7). A zero-shot number fills every shot column. Seeds averaged: not stated by the sources. CoOp's "
        "own per-dataset numbers were not found in a readable source and are not shown.",
    ] + selection_note(ok) + protocol_note(ok, bench.data_source) + search_note(ok, search)
    table.notes += recipe_notes(list(recipes_of(ok)) + list(pub["recipe"]))
    return [table]


def shots_plots(table, out_dir: str) -> list[str]:
    """Top-1 vs shots, a panel per dataset and the average (the few-shot family's curves)."""
    return shot_curves(table, os.path.join(out_dir, "coop_curves"))


BENCHMARKS.add(Benchmark(
    "coop", "CoOp's few-shot CLIP protocol: 11 datasets, 1-16 shots", order=11,
    columns=lambda: [(d, "") for d in DATASETS], published=read_published, tables=shots_table, plots=shots_plots,
    sweep_axes={"shots": shots_axis}, row_fields=row_fields,
    data_source="CoOp's split files (split_zhou_*.json; FGVC-Aircraft's variant lists; ImageNet's class folders), "
                "k-shot sets drawn as CoOp/Dassl draw them (seeds 1-3)"))

__all__ = ["COOP_PROTOCOL", "DATASETS", "EPOCHS_BY_SHOTS", "SEEDS", "SHOTS", "coop_epochs", "protocol_of",
           "row_fields", "shots_axis", "shots_table"]
