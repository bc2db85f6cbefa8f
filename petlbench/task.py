"""Tasks: a dataset in the layout users have, its classes, and the published training protocol as data.

A task file under tasks/ registers `Task` instances (`TASKS.add(task)`); the CLI, sweeps and tables read the
same registry. Task names are "<benchmark>/<dataset folder name>"; what a benchmark does beyond its tasks is its
`Benchmark` (petlbench/benchmark.py).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .config import added_later
from .data import OnBad, Sample
from .registry import Registry, load_plugins


@dataclass
class Protocol:
    """How a task is trained and reported: the fields every benchmark family shares. A family whose training
    differs subclasses it (`ClassificationProtocol` for the epoch-based engine; families add their own fields
    in tasks/). A field added after records were first written is declared `added_later(default)`:
    runs that keep its default keep the hashes they had (config.hashed_view)."""

    backbone: str = "vit_base_patch16_224"
    weights: str = "vit_base_patch16_224.orig_in21k"  # timm tag of Google's ViT-B_16.npz (IN-21k)
    drop_path: float = 0.1
    batch_size: int = 64
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    img_size: int = 224
    eval_every: int = 10  # epochs (or, for an iteration-based family, iterations) between evaluations
    # The recipe these values came from (petlbench/recipe.py); "" for a task's own protocol.
    recipe: str = added_later("")
    train_split: str = "train800val200"
    test_split: str = "test"
    seed: int = 42

    def summary(self) -> str:
        """One line for `petlbench tasks`."""
        return (f"{self.optimizer} lr {self.lr:g} wd {self.weight_decay:g}, batch {self.batch_size}, "
                f"{self.img_size}px, {self.backbone}")

    def splits_read(self) -> tuple[str, ...]:
        """The splits a run reads: the training split and the evaluated one."""
        return tuple(dict.fromkeys((self.train_split, self.test_split)))

    def validate(self) -> str | None:
        if self.batch_size < 1 or self.eval_every < 1:
            return "batch_size and eval_every must be positive"
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                return f"{name} must be a finite number >= 0, got {value}"
        if self.lr <= 0:
            return f"lr must be positive, got {self.lr}"
        return None


@dataclass
class ClassificationProtocol(Protocol):
    """The protocol of the epoch-based classification engine (engine.train). Defaults: the VTAB-1k protocol of
    NOAH / RepAdapter (tasks/reference/conventions.md); each task family overrides what its papers changed."""

    epochs: int = 100
    warmup_epochs: int = 10
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    label_smoothing: float = 0.0
    mixup: float = 0.0  # timm Mixup alpha; 0 disables
    cutmix: float = 0.0
    randaugment: str = ""  # timm auto-augment spec, e.g. "rand-m9-mstd0.5-inc1"; "" = no augmentation
    random_erasing: float = 0.0  # timm RandomErasing probability (NOAH few-shot: 0.25)
    interpolation: str = "bicubic"
    # Input normalisation: ImageNet mean/std; "inception": (0.5, 0.5, 0.5) both (NOAH's VPT runs, --inception);
    # "model": what the backbone's weights were trained with (open_clip's pretrained config: CLIP's mean/std);
    # "none": [0, 1] pixels.
    normalize: Literal["imagenet", "inception", "model", "none"] = "imagenet"
    # Which epochs evaluate: "end": after epochs k, 2k, ... (RepAdapter's `ep % 10 == 9`); "start": after epochs
    # 1, k+1, 2k+1, ... (NOAH's `epoch % val_interval == 0`, 0-based). Both also after the last epoch.
    eval_phase: Literal["end", "start"] = added_later("end")
    # Learning-rate schedule: "per_step": warm-up + cosine evaluated at every optimizer step; "per_epoch": the same
    # formula at the epoch index, held for the epoch (VPT's WarmupCosineSchedule stepped once per epoch);
    # "timm_epoch": timm's CosineLRScheduler(t_initial=epochs, warmup_t=warmup_epochs, lr_min=min_lr,
    # warmup_lr_init=warmup_lr) stepped with step(epoch) after each epoch (RepAdapter's and NOAH's scripts);
    # "timm_next_epoch": the same scheduler stepped with step(epoch + 1) (timm's train.py: SSF); "dassl_cosine":
    # Dassl's constant warm-up at warmup_lr, then torch's cosine from lr to min_lr (CoOp, optim.py).
    schedule: Literal["per_step", "per_epoch", "timm_epoch", "timm_next_epoch", "dassl_cosine"] = added_later(
        "per_step")
    # Epochs trained after the schedule's `epochs`, at min_lr (timm's cooldown: SSF trains 100 + 10).
    cooldown_epochs: int = added_later(0)
    # Weight decay on: "all" trainable tensors (RepAdapter: AdamW(trainable, ...)); "timm": timm's
    # create_optimizer_v2 filter, no decay for 1-D tensors, biases and model.no_weight_decay() (NOAH);
    # "no_bias": none for tensors whose name contains "bias" (VPT's optimizer.py).
    decay_filter: Literal["all", "timm", "no_bias"] = added_later("all")
    # Training augmentation when any is asked for: "petlbench": RandomResizedCrop + flip + RandAugment + erasing
    # on uint8; "timm": timm's create_transform(is_training=True, ...) with the fields below, erasing after
    # normalisation on the device (timm's prefetcher path).
    # "crop_flip": RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3) + horizontal flip and nothing else, always on
    # (Dassl's "random_resized_crop", "random_flip": CoOp and the CLIP methods built on Dassl).
    augment: Literal["petlbench", "timm", "crop_flip"] = added_later("petlbench")
    color_jitter: float = added_later(0.0)  # timm create_transform color_jitter (ignored with randaugment)
    re_mode: str = added_later("pixel")  # timm RandomErasing mode ("pixel": per-pixel N(0, 1), normalised space)
    re_count: int = added_later(1)  # timm RandomErasing max_count
    # Test transform: resize to a square of img_size / test_crop_pct, then centre-crop img_size (1.0: a plain
    # resize; NOAH's few-shot 224/256 = 0.875: Resize((256, 256)) + CenterCrop(224)).
    test_crop_pct: float = added_later(1.0)
    drop_last: bool = added_later(False)  # drop the last partial training batch (RepAdapter's, NOAH's loaders)
    # reproduction: train on `train_split`, evaluate `test_split` every `eval_every` epochs, report the best
    #   (what the VTAB-1k papers did; the record says so).
    # clean: train on `clean_train_split`, select the epoch on `val_split`, evaluate `test_split` once.
    # trial: a hyper-parameter search trial (petlbench/search.py): train on `clean_train_split`, evaluate
    #   `val_split`, score = the last evaluation's val top-1 (VPT's tune_vtab.py:48-78); the test split is never read.
    # final: the search's retrain: train on `train_split`, evaluate `test_split` once, after the last epoch.
    selection: Literal["reproduction", "clean", "trial", "final"] = "reproduction"
    clean_train_split: str = "train800"
    val_split: str = "val200"
    # How this run's hyper-parameters were chosen, when a search chose them (search.SearchSpace.describe(): the
    # strategy, the searched values, the split it selected on); "" for a run whose settings were given.
    tuned: str = added_later("")
    # The head's start: "random" (a new linear head), or "zeroshot" (open_clip backbones: the text embeddings of
    # the task's class names, i.e. CLIP's zero-shot classifier, as CLIP users start from it).
    head_init: Literal["random", "zeroshot"] = added_later("random")
    # The zero-shot head's prompts: "" for CLIP's "a photo of a {}.", else the name of one of the task's
    # template sets (`Task.templates`: e.g. CoOp's hand-crafted prompt of the dataset, CLIP's 80-template ensemble)
    head_templates: str = added_later("")

    def summary(self) -> str:
        aug = ("crop + flip" if self.augment == "crop_flip" else "aug " + self.randaugment if self.randaugment
               else "no aug")
        return (f"{self.optimizer} lr {self.lr:g} wd {self.weight_decay:g}, batch {self.batch_size}, {self.epochs} ep "
                f"({self.warmup_epochs} warm-up), {self.img_size}px {self.interpolation}, {aug}, {self.selection}")

    def splits_read(self) -> tuple[str, ...]:
        """reproduction: the train split and the test split (selected on); clean: the clean train split, the val
        split (selected on) and the test split (evaluated once)."""
        names = {"clean": (self.clean_train_split, self.val_split, self.test_split),
                 "trial": (self.clean_train_split, self.val_split)}.get(self.selection,
                                                                        (self.train_split, self.test_split))
        return tuple(dict.fromkeys(names))

    def split_roles(self) -> tuple[str, str, str | None]:
        """(training split, split evaluated during training and selected on, split evaluated once after
        training or None) under `selection`."""
        if self.selection == "clean":
            return self.clean_train_split, self.val_split, self.test_split
        if self.selection == "trial":
            return self.clean_train_split, self.val_split, None
        return self.train_split, self.test_split, None

    def validate(self) -> str | None:
        base = super().validate()
        if base is not None:
            return base
        if self.epochs < 1:
            return "epochs must be positive"
        for name in ("min_lr", "warmup_lr"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                return f"{name} must be a finite number >= 0, got {value}"
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            return (f"warmup_epochs ({self.warmup_epochs}) must be below epochs ({self.epochs}); with a shorter run, "
                    f"set warmup_epochs too (e.g. warmup_epochs=0)")
        if self.cooldown_epochs < 0:
            return f"cooldown_epochs must be >= 0, got {self.cooldown_epochs}"
        if not 0 < self.test_crop_pct <= 1:
            return f"test_crop_pct must be in (0, 1], got {self.test_crop_pct}"
        if self.re_mode not in ("const", "rand", "pixel"):
            return f"re_mode must be one of 'const', 'rand', 'pixel' (timm RandomErasing), got {self.re_mode!r}"
        return None


@dataclass
class Task:
    """One benchmark dataset. `samples(root, split)` reads its split in the users' layout."""

    name: str  # "<benchmark>/<dataset>"
    benchmark: str  # its family's `Benchmark` name (petlbench/benchmark.py): the first part of `name`
    num_classes: int
    splits: tuple[str, ...]
    samples_fn: Callable[[Task, str, str], list[Sample]]  # (task, data_root, split) -> samples
    protocol: Protocol = field(default_factory=ClassificationProtocol)
    method_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. RepAdapter's per-dataset s
    group: str = ""  # a column group of its benchmark's table (e.g. VTAB-1k's Natural / Specialized / Structured)
    summary: str = ""  # one line for `petlbench tasks`
    # For evaluation on a class subset of the trained head (ImageNet-A/-R: 200 of 1000 logits).
    logit_subset: tuple[int, ...] | None = None
    eval_only: bool = False  # a target set evaluated with another task's model (domain generalization)
    eval_targets: tuple[str, ...] = ()  # eval-only tasks scored with this task's trained model, where present
    on_bad_default: OnBad = "fail"
    classnames: tuple[str, ...] = ()  # for a zero-shot head ("a photo of a {}."); empty when not known
    # Class names that come with the data (a split file names them), read as (task, data_root) -> names when
    # `classnames` is empty.
    classnames_fn: Callable[[Task, str], tuple[str, ...]] | None = None
    # Named prompt template sets for a zero-shot head (`head_templates=NAME`), each a tuple of "{}" templates.
    templates: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # The recipe a run of this task uses unless `recipe=NAME` says otherwise (petlbench/recipe.py); "" = none.
    recipe: str = ""

    def class_names(self, data_root: str | None = None) -> tuple[str, ...]:
        """The class names: `classnames`, else those the data at `data_root` names (`classnames_fn`); () when
        neither is known."""
        if self.classnames or self.classnames_fn is None or data_root is None:
            return self.classnames
        return tuple(self.classnames_fn(self, data_root))

    def samples(self, data_root: str, split: str) -> list[Sample]:
        if split not in self.splits:
            from .data import DataError

            raise DataError(f"task {self.name!r} has no split {split!r}; splits: {', '.join(self.splits)}")
        return self.samples_fn(self, data_root, split)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "benchmark": self.benchmark, "classes": self.num_classes,
                "splits": list(self.splits), "group": self.group, "summary": self.summary,
                "protocol": dataclasses.asdict(self.protocol)}


class TaskRegistry(Registry[Task]):
    def add(self, task: Task) -> Task:
        return self.register(task.name)(task)


TASKS: TaskRegistry = TaskRegistry("task", loader=load_plugins("petlbench.tasks", "petlbench.tasks"))
