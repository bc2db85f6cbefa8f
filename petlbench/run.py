"""One run: task + method + overrides -> a trained model, its tuned tensors, and one result record.

    config (task protocol <- method defaults from the task <- key=value overrides)
      -> backbone + method (create_model) -> data (decoded once, or augmented per epoch)
      -> engine.train -> selection (reproduction: best periodic test; clean: best val, test once)
      -> save_tuned -> ResultStore.append(record)
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import platform
import subprocess
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import torch

from . import distributed
from .api import count_paper, count_trainable, create_model, get_method
from .checkpoint import save_tuned
from .config import build_config
from .data import DataError, ImageDataset, Sample, collate_skip, decode_all
from .engine import EvalSet, Execution, NonFiniteLoss, TensorBatches, evaluate, resolve_device, seed_everything, train
from .errors import ConfigError, PETLBenchError
from .method import METHODS, PETLMethod
from .registry import did_you_mean
from .store import ResultStore, config_hash
from .task import TASKS, Protocol, Task
from .weights import resolve_weights

log = logging.getLogger(__name__)


# Protocol fields added after records were first written, with their defaults: hashed only when set otherwise,
# so every existing record keeps its config hash (and is still found, not rerun).
HASHED_WHEN_SET = {"protocol": {"head_init": "random", "num_frames": 8, "frame_sampling": "dense", "frame_stride": 4,
                                 "test_clips": 1, "test_crops": 1, "seg_config": "", "max_iters": 0,
                                 "eval_phase": "end", "recipe": "", "schedule": "per_step", "decay_filter": "all",
                                 "augment": "petlbench", "color_jitter": 0.0, "re_mode": "pixel", "re_count": 1,
                                 "test_crop_pct": 1.0, "drop_last": False, "cooldown_epochs": 0},
                   # "METHOD.KEY": an option of that method only (two methods' "init" differ)
                   "method_cfg": {"dw_adapter": "dense", "train_bias": False, "lora.fused": False,
                                  "lora.init": "lora", "adapter.init": "zero_up", "adapter.placement": "mlp"}}


@dataclass
class RunSpec:
    """Everything that defines a run's result. Execution options are recorded, not hashed, except the numerics
    (mixed precision, torch.compile): a bf16 result is never returned for an fp32 request."""

    task: Task
    method: PETLMethod
    protocol: Protocol
    execution: Execution
    # Where each resolved value came from (protocol field or "method.KEY" -> "task ...", "recipe ...: file:line",
    # "override"); for `petlbench run --dry-run`, not part of the identity.
    sources: dict[str, str] = dataclasses.field(default_factory=dict)

    def numerics(self) -> dict[str, Any]:
        """{"amp": "bf16"|"fp16", "compile": True} where the run computes other than in eager fp32; {} otherwise."""
        out: dict[str, Any] = {}
        amp = effective_amp(self.execution)
        if amp != "off":
            out["amp"] = amp
        if self.execution.compile:
            out["compile"] = True
        return out

    def identity(self) -> dict[str, Any]:
        out = {"task": self.task.name, "method": self.method.name,
               "method_cfg": dataclasses.asdict(self.method.cfg), "protocol": dataclasses.asdict(self.protocol)}
        for part, fields in HASHED_WHEN_SET.items():  # fields added later: old records keep their hashes
            for key, default in fields.items():
                owner, dot, name = key.rpartition(".")
                if dot and owner != self.method.name:
                    continue
                if out[part].get(name, default) == default:
                    out[part].pop(name, None)
        numerics = self.numerics()
        if numerics:  # eager fp32 runs keep the hashes they had before numerics were part of the identity
            out["numerics"] = numerics
        return out

    @property
    def config_hash(self) -> str:
        return config_hash(self.identity())


def effective_amp(ex: Execution) -> str:
    """The autocast mode a run uses: "off", "bf16" or "fp16" ("auto": bf16 on CUDA, off on the CPU)."""
    if ex.amp != "auto":
        return ex.amp
    try:
        return "bf16" if resolve_device(ex.device).type == "cuda" else "off"
    except PETLBenchError:
        return "off"


def task_method_defaults(task: Task, method: str, explicit: dict[str, Any]) -> dict[str, Any]:
    """The task's published defaults for `method`. A key "method key=value" applies only when the chosen
    config has key=value (RepAdapter_attn's scale differs from RepAdapter's)."""
    out: dict[str, Any] = {}
    cls = METHODS.get(method)
    base = {**dataclasses.asdict(cls.config_cls()), **explicit}
    for key, values in task.method_defaults.items():
        name, _, cond = key.partition(" ")
        if name != method:
            continue
        if cond:
            k, _, v = cond.partition("=")
            if str(base.get(k)) != v:
                continue
        out.update(values)
    return out


def variant_of_spec(task_name: str, method: str, cfg: dict[str, Any], proto: dict[str, Any]) -> dict[str, Any]:
    """The record's "variant": its published-table key and what differs from the defaults of the task under the
    record's recipe (see tables.variant_fields). A task, method or recipe not registered here compares with
    nothing."""
    from .tables import variant_fields

    defaults: dict[str, Any] = {}
    task_proto: dict[str, Any] = {}
    if method in METHODS:
        defaults = dataclasses.asdict(METHODS.get(method).config_cls())
        if task_name in TASKS:
            try:
                base = resolve(task_name, method, {"recipe": proto["recipe"]} if "recipe" in proto else {})
            except PETLBenchError:
                base = None
            if base is not None:
                defaults = dataclasses.asdict(base.method.cfg)
                task_proto = dataclasses.asdict(base.protocol)
    return variant_fields(method, cfg, proto, defaults, task_proto)


def recipe_for(task: Task, name: str):
    """The registered recipe `name` for `task` (None for ""); ConfigError when it is written for another
    benchmark, UnknownNameError (listing the recipes) when there is none of that name."""
    if not name:
        return None
    from .recipe import RECIPES

    recipe = RECIPES.get(name)
    if task.benchmark not in recipe.benchmarks:
        fitting = [n for n in RECIPES.names() if task.benchmark in RECIPES.get(n).benchmarks]
        raise ConfigError(f"recipe={name}: written for {', '.join(recipe.benchmarks)} tasks, not {task.name!r}; "
                          f"recipes for {task.benchmark}: {', '.join(fitting) or 'none'}")
    return recipe


def resolve(task_name: str, method: str, overrides: dict[str, Any] | None = None) -> RunSpec:
    """Build a RunSpec. Override keys: protocol fields (epochs, lr, selection, recipe, ...), execution fields
    (device, amp, compile, ...), method options (dim, scale, ... or method.dim); an unknown or ambiguous key is an
    error listing the accepted ones.

    Resolution order (later wins): the task's protocol, the recipe's protocol (`recipe=NAME`, default the task's
    `recipe`) and its per-method and per-dataset values, the overrides; method options: the method's defaults,
    the recipe's settings for the method, the task's per-dataset defaults, the overrides. open_clip backbones
    normalise with their weights' own mean/std (normalize=model) unless the recipe or an override says otherwise."""
    task = TASKS.get(task_name)
    cls = METHODS.get(method)
    proto_keys = {f.name for f in dataclasses.fields(Protocol)}
    exec_keys = {f.name for f in dataclasses.fields(Execution)}
    method_keys = {f.name for f in dataclasses.fields(cls.config_cls)}
    proto, exe, meth = {}, {}, {}
    for key, value in (overrides or {}).items():
        if key.startswith("method."):
            meth[key[len("method."):]] = value
            continue
        owners = [n for n, ks in (("protocol", proto_keys), ("execution", exec_keys), ("method", method_keys))
                  if key in ks]
        if len(owners) > 1:
            raise ConfigError(f"override {key}=...: ambiguous ({' and '.join(owners)}); write method.{key}=...")
        if not owners:
            known = sorted(proto_keys | exec_keys | {f"method.{k}" for k in method_keys} | method_keys)
            raise ConfigError(f"override {key}=...: unknown key; accepted: {', '.join(known)}"
                              f"{did_you_mean(key, known)}")
        {"protocol": proto, "execution": exe, "method": meth}[owners[0]][key] = value
    recipe_name = proto.get("recipe", task.recipe)
    if not isinstance(recipe_name, str):
        raise ConfigError(f"override recipe={recipe_name!r}: a recipe name (see `petlbench recipes`)")
    recipe = recipe_for(task, recipe_name)
    sources = {k: f"task {task.name}" for k in proto_keys}
    values = dataclasses.asdict(task.protocol)
    if recipe is not None:
        values.update(recipe.protocol_values(method, task.name), recipe=recipe.name)
        sources.update(recipe.sources(method, task.name))
        sources["recipe"] = f"task {task.name} default"
    backbone = proto.get("backbone", values["backbone"])
    if isinstance(backbone, str) and backbone.startswith("openclip:") and "normalize" not in proto and (
            recipe is None or "normalize" not in recipe.protocol_cited(method, task.name)):
        values["normalize"] = "model"  # CLIP's own mean/std, from open_clip's pretrained config
        sources["normalize"] = "open_clip backbone: the weights' own mean/std"
    values.update(proto)
    sources.update({k: "override" for k in proto})
    protocol = build_config(Protocol, values, f"task {task.name!r} protocol")
    execution = build_config(Execution, exe, "execution")
    recipe_meth = recipe.method_values(method, task.name) if recipe is not None else {}
    task_meth = task_method_defaults(task, method, {**recipe_meth, **meth})
    m = get_method(method, {**recipe_meth, **task_meth, **meth})
    for k in dataclasses.asdict(m.cfg):
        sources[f"method.{k}"] = ("override" if k in meth else f"task {task.name}" if k in task_meth else
                                  sources.get(f"method.{k}", f"method {method} default"))
    return RunSpec(task, m, protocol, execution, sources)


# --- data -------------------------------------------------------------------------------------------------
def loader_workers(ex: Execution) -> int:
    """Decode worker processes: `num_workers`, or min(8, cpus) when it is -1."""
    return min(8, os.cpu_count() or 1) if ex.num_workers < 0 else ex.num_workers


def augmented(p: Protocol) -> bool:
    return bool(p.randaugment) or p.mixup > 0 or p.cutmix > 0 or p.random_erasing > 0


def posterize_keep_bits(img, bits: int, **_):
    """Posterize keeping `bits` most significant bits, 0 included (a black image), as Pillow did when NOAH's
    few-shot protocol was published. "rand-m9-mstd0.5-inc1" draws magnitude 10 a few percent of the time, which
    asks timm's increasing posterize for 0 bits; Pillow >= 12 raises on that, killing the data worker."""
    from PIL import ImageOps

    if bits >= 8:
        return img
    if bits <= 0:
        return img.point(lambda _: 0)
    return ImageOps.posterize(img, bits)


def train_transform(p: Protocol) -> Callable:
    """The augmenting train transform on PIL images, ending in a uint8 CHW tensor: normalisation and random
    erasing happen on the device, on the normalised batch (engine.train), as in timm's prefetcher path.

    augment="timm": timm's create_transform(is_training=True) with the protocol's input size, scale and ratio
    defaults, hflip, color_jitter, auto_augment, interpolation (the authors' call), in its uint8 form
    (use_prefetcher=True). augment="petlbench": RandomResizedCrop + flip + RandAugment."""
    from torchvision import transforms as T

    if p.augment == "timm":
        from timm.data import create_transform

        tf = create_transform(input_size=p.img_size, is_training=True, color_jitter=p.color_jitter,
                              auto_augment=p.randaugment or None, interpolation=p.interpolation,
                              re_prob=0.0, use_prefetcher=True)
        ops = [_keep_posterize_bits(t) for t in tf.transforms]
        return T.Compose(ops + [_to_uint8_tensor])
    from timm.data import rand_augment_transform

    mode = T.InterpolationMode(p.interpolation)
    ops = [T.RandomResizedCrop(p.img_size, interpolation=mode), T.RandomHorizontalFlip()]
    if p.randaugment:
        ra = rand_augment_transform(p.randaugment, {"translate_const": int(p.img_size * 0.45),
                                                    "img_mean": (124, 116, 104)})
        ops.append(_keep_posterize_bits(ra))
    ops.append(T.PILToTensor())
    return T.Compose(ops)


def _keep_posterize_bits(t):
    """A RandAugment transform with posterize allowed 0 bits (see posterize_keep_bits); others unchanged."""
    for op in getattr(t, "ops", ()):
        if op.name.startswith("Posterize"):
            op.aug_fn = posterize_keep_bits
    return t


def _to_uint8_tensor(x) -> torch.Tensor:
    """timm's prefetcher-path output (a uint8 CHW numpy array, or a tensor) as a uint8 CHW tensor."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(x)
    return t.to(torch.uint8)


def input_normalization(p: Protocol, model=None):
    """What engine.train / evaluate take as `normalize` for `p.normalize`: True (ImageNet), None, or the
    (mean, std) of Inception or of the backbone's weights ("model": open_clip's pretrained config)."""
    from .engine import INCEPTION_MEAN, INCEPTION_STD

    if p.normalize == "imagenet":
        return True
    if p.normalize == "none":
        return None
    if p.normalize == "inception":
        return INCEPTION_MEAN, INCEPTION_STD
    from .backbones import input_normalization as backbone_normalization

    name, pretrained = resolve_weights(p.backbone, p.weights)
    return backbone_normalization(name, pretrained, model)


class LoaderBatches:
    """A DataLoader over an ImageDataset that drops (and counts) undecodable images.

    In a distributed run each process reads its share of every epoch through a DistributedSampler (same seed
    on every rank, reshuffled by `set_epoch`; `batch_size` is then this process's micro-batch)."""

    def __init__(self, ds: ImageDataset, batch_size: int, shuffle: bool, workers: int, seed: int,
                 drop_last: bool = False):
        from torch.utils.data import DataLoader, DistributedSampler

        self.ds = ds
        # seed + rank: the ranks' workers draw different augmentations (rank 0 is the one-process generator).
        self.gen = torch.Generator().manual_seed(seed + distributed.rank())
        self.sampler = DistributedSampler(ds, distributed.world_size(), distributed.rank(), shuffle=shuffle,
                                          seed=seed) if distributed.is_distributed() else None
        self.loader = DataLoader(ds, batch_size=batch_size, shuffle=shuffle and self.sampler is None,
                                 sampler=self.sampler, num_workers=workers, collate_fn=collate_skip,
                                 generator=self.gen, persistent_workers=workers > 0, drop_last=drop_last)

    def set_epoch(self, epoch: int) -> None:
        """Called by the engine before each epoch: the distributed sampler's shuffle for that epoch."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels, bad in self.loader:
            self.ds.bad.items.extend(bad)
            if images is not None:
                yield images, labels


def load_split(task: Task, root: str, split: str, p: Protocol, ex: Execution, train_mode: bool, device,
               samples: list[Sample] | None = None):
    """Batches of one split: augmented per epoch through workers, or decoded once into uint8 tensors (kept on
    the GPU when asked or when they fit comfortably). `samples`: the split's samples if already read.

    In a distributed run every process decodes the whole split and takes its share of each batch: a train
    batch is p.batch_size over all processes (each grad_accum micro-batches), an eval batch
    ex.eval_batch_size per process."""
    samples = samples if samples is not None else task.samples(root, split)
    world = distributed.world_size()
    if train_mode and p.batch_size % (ex.grad_accum * world):
        raise ConfigError(f"batch_size={p.batch_size} does not split into grad_accum={ex.grad_accum} micro-batches "
                          f"on {world} process(es): choose grad_accum and the number of processes so that "
                          f"grad_accum x processes divides {p.batch_size}")
    bs = p.batch_size // ex.grad_accum if train_mode else ex.eval_batch_size * world  # over all processes
    if task.benchmark == "video":  # clips decoded per epoch by decord in the loader's workers
        from .tasks.video import dataset as video_dataset

        # every path checked before any decoding: fail naming the list line, or skip and record (on_bad_image)
        exists = [os.path.isfile(s.path) for s in samples]
        present = [s for s, ok in zip(samples, exists) if ok]
        missing = [s for s, ok in zip(samples, exists) if not ok]
        if missing and ex.on_bad_image == "fail":
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(f"{missing[0].path} ({missing[0].source}): file does not exist{more}; "
                            "on_bad_image=skip skips and records missing videos")
        ds = video_dataset(task, present, p, train_mode, ex.on_bad_image)
        ds.bad.items.extend((s.path, "file does not exist") for s in missing)
        return LoaderBatches(ds, bs // world if train_mode else ex.eval_batch_size, train_mode, loader_workers(ex),
                             p.seed, drop_last=train_mode and p.drop_last), ds.bad
    if train_mode and augmented(p):
        ds = ImageDataset(samples, train_transform(p), ex.on_bad_image)
        return LoaderBatches(ds, bs // world, True, loader_workers(ex), p.seed, drop_last=p.drop_last), ds.bad
    # Decoded once: the train split as the test transform (no augmentation), or an evaluation split.
    data = decode_all(samples, p.img_size, p.interpolation, ex.on_bad_image, loader_workers(ex),
                      crop_pct=p.test_crop_pct)
    on_device = ex.data_on_device == "yes" or (
        ex.data_on_device == "auto" and device.type == "cuda"
        and data.images.numel() < 0.25 * torch.cuda.mem_get_info(device)[0])
    images, labels = (data.images.to(device), data.labels.to(device)) if on_device else (data.images, data.labels)
    return TensorBatches(images, labels, bs, shuffle=train_mode, seed=p.seed,
                         drop_last=train_mode and p.drop_last), data.bad


def evaluate_targets(task: Task, model, data_root: str, p: Protocol, ex: Execution, device) -> dict[str, Any]:
    """Top-1 of the trained model on each of `task.eval_targets` whose data is present; an absent target is
    recorded as absent (with the reason), not as 0."""
    out: dict[str, Any] = {}
    for name in task.eval_targets:
        target = TASKS.get(name)
        try:
            batches, bad = load_split(target, data_root, target.protocol.test_split, p, ex, False, device)
        except DataError as e:
            out[name] = {"status": "absent", "reason": str(e)}
            log.info("target %s skipped: %s", name, e)
            continue
        res = evaluate(model, EvalSet(name, batches, target.logit_subset), device, input_normalization(p, model),
                       ex.amp)
        out[name] = {"status": "ok", "top1": res["top1"], "n": res["n"], "skipped_images": len(bad)}
    return out


# --- the run ----------------------------------------------------------------------------------------------
def _git_commit() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    import timm

    from . import __version__

    return {"petlbench": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "python": platform.python_version(), "git": _git_commit()}


def build_model(spec: RunSpec):
    p = spec.protocol
    name, pretrained = resolve_weights(p.backbone, p.weights)
    extra: dict[str, Any] = {}
    if p.head_init == "zeroshot":
        if not p.backbone.startswith("openclip:"):
            raise ConfigError(f"head_init=zeroshot needs an open_clip backbone (backbone=openclip:ViT-B-16 ...), "
                              f"not {p.backbone!r}")
        if not spec.task.classnames:
            raise ConfigError(f"head_init=zeroshot: task {spec.task.name!r} has no class names (Task.classnames)")
        extra["zero_shot_classnames"] = list(spec.task.classnames)
    if spec.task.benchmark == "video":
        extra["num_frames"] = p.num_frames
    return create_model(name, method=spec.method.name, num_classes=spec.task.num_classes, pretrained=pretrained,
                        method_cfg=dataclasses.asdict(spec.method.cfg), drop_path_rate=p.drop_path,
                        img_size=p.img_size, **extra)


def execute(spec: RunSpec, data_root: str, store: ResultStore, out_dir: str, force: bool = False,
            progress: Callable | None = None) -> dict[str, Any]:
    """Run `spec` unless the store already holds a finished record of it (then return that record).

    A run that fails (non-finite loss, an exception while training) is recorded with status "failed" and the
    reason, and its exception is re-raised for the caller. User errors before training (bad data root, bad
    list file) raise without a record.

    Under torchrun (several processes) every process calls this and trains its share of each batch; only the
    main process (rank 0) writes files (store record, tuned weights, log, resume state) and reports progress,
    and every process returns the main process's record (with "world_size")."""
    task, p, ex = spec.task, spec.protocol, spec.execution
    if task.runner is not None:
        return task.runner(spec, data_root, store, out_dir, force=force, progress=progress)
    if task.eval_only:
        raise PETLBenchError(f"task {task.name!r} is evaluation-only (a target set); train its source task")
    device = resolve_device(ex.device)
    distributed.setup(device)  # joins the other processes of a torchrun launch; nothing otherwise
    main = distributed.is_main()
    progress = progress if main else None
    done = finished_record(spec, store, force)
    if done is not None:
        return done
    # Per-rank seeds, so ranks draw different dropout masks; rank 0's model is the one trained (DDP copies it).
    seed_everything(p.seed + distributed.rank())
    clean = p.selection == "clean"
    train_split = p.clean_train_split if clean else p.train_split
    select_split = p.val_split if clean else p.test_split
    # Cheap checks first: the list files (every line and image path) and the weights, before any decoding.
    train_samples, select_samples = task.samples(data_root, train_split), task.samples(data_root, select_split)
    model = build_model(spec)
    norm = input_normalization(p, model)
    train_batches, train_bad = load_split(task, data_root, train_split, p, ex, True, device, train_samples)
    select_batches, select_bad = load_split(task, data_root, select_split, p, ex, False, device, select_samples)
    evals = [EvalSet(select_split, select_batches, task.logit_subset)]
    run_dir = os.path.join(out_dir, task.benchmark)
    if main:
        os.makedirs(run_dir, exist_ok=True)
    stem = os.path.join(run_dir, run_name(spec))
    record: dict[str, Any] = {
        **base_record(spec),
        "selection": ("clean: epoch selected on " + p.val_split + ", test evaluated once") if clean else
                     ("reproduction: best of the periodic test evaluations (every "
                      f"{p.eval_every} epochs), as the published VTAB-1k tables"),
        "params": {"trainable": count_trainable(model, include_head=False), "paper": count_paper(model),
                   "head": count_trainable(model) - count_trainable(model, include_head=False),
                   "backbone_total": sum(q.numel() for q in model.parameters())},
        "device": str(device), "world_size": distributed.world_size(),
    }
    t0 = time.perf_counter()
    try:
        res = train(model, train_batches, evals, epochs=p.epochs, lr=p.lr, weight_decay=p.weight_decay,
                    optimizer=p.optimizer, momentum=p.momentum, warmup_epochs=p.warmup_epochs,
                    warmup_lr=p.warmup_lr, min_lr=p.min_lr, label_smoothing=p.label_smoothing, mixup=p.mixup,
                    cutmix=p.cutmix, num_classes=task.num_classes, eval_every=p.eval_every,
                    eval_phase=p.eval_phase, normalize=norm, schedule=p.schedule, decay_filter=p.decay_filter,
                    cooldown_epochs=p.cooldown_epochs,
                    random_erasing=p.random_erasing if augmented(p) else 0.0, re_mode=p.re_mode,
                    re_count=p.re_count, select_on=select_split, execution=ex, seed=p.seed,
                    log_path=stem + ".log.jsonl", resume_path=stem + ".resume.pt", progress=progress)
    except (NonFiniteLoss, RuntimeError, DataError) as e:
        record.update(status="failed", reason=f"{type(e).__name__}: {e}",
                      traceback=traceback.format_exc(limit=5), seconds=round(time.perf_counter() - t0, 1))
        if main:
            store.append(record)
        raise
    if distributed.is_distributed() and isinstance(train_batches, LoaderBatches):
        train_bad.items[:] = [b for items in distributed.gather_objects(train_bad.items) for b in items]  # all shares
    # Restore the selected evaluation's tuned tensors (reproduction: best test; clean: best val).
    with torch.no_grad():
        named = dict(model.named_parameters())
        for n, t in (res.best_state or {}).items():
            named[n].copy_(t)
    selected = max((h for h in res.history if select_split in h), key=lambda h: h[select_split])
    metrics = {"top1": selected[select_split], "epoch": selected["epoch"], "split": select_split}
    if clean:
        test_batches, test_bad = load_split(task, data_root, p.test_split, p, ex, False, device)
        metrics = {"top1": evaluate(model, EvalSet(p.test_split, test_batches, task.logit_subset), device,
                                    norm, ex.amp)["top1"],
                   "epoch": selected["epoch"], "split": p.test_split, "val_top1": selected[select_split]}
        select_bad.items.extend(test_bad.items)
    targets = evaluate_targets(task, model, data_root, p, ex, device)
    if targets:
        metrics["targets"] = targets
    if main:
        save_tuned(model, stem + ".safetensors")
    record.update(
        status="ok", metric="top1", value=metrics["top1"], metrics=metrics,
        history=res.history, final_loss=res.history[-1]["loss"] if res.history else None,
        seconds=round(time.perf_counter() - t0, 1), train_images_per_second=round(res.images_per_second, 1),
        tuned_file=os.path.relpath(stem + ".safetensors", out_dir),
        skipped_images={"train": len(train_bad), "eval": len(select_bad),
                        "paths": [p_ for p_, _ in (train_bad.items + select_bad.items)[:20]]},
    )
    if main:
        path = store.append(record)
        if os.path.exists(stem + ".resume.pt"):
            os.unlink(stem + ".resume.pt")  # the record is written: the run is finished
        log.info("%s %s: top1 %.2f (%s) -> %s", task.name, spec.method.name, record["value"], metrics["split"], path)
    # Every process returns the main one's record (theirs differ in device and timings), once it is written.
    return distributed.broadcast_object(record)


def finished_record(spec: RunSpec, store: ResultStore, force: bool = False) -> dict[str, Any] | None:
    """The store's finished record of `spec` (a run to skip), or None when there is none or `force`."""
    done = store.get(spec.task.benchmark, spec.config_hash)
    if done is None or done.get("status") != "ok" or force:
        return None
    log.info("%s/%s already in the store (%s): skipped", spec.task.name, spec.method.name, spec.config_hash)
    return done


def run_name(spec: RunSpec) -> str:
    """The file stem of a run's outputs under <out>/<benchmark>/: "<dataset>_<method>_<config hash>"."""
    return f"{spec.task.name.split('/', 1)[1]}_{spec.method.name}_{spec.config_hash}"


def base_record(spec: RunSpec) -> dict[str, Any]:
    """What every record of `spec` starts with, finished or failed: identity (hash, task, method, config,
    protocol, variant label), execution options, versions and start time."""
    cfg, proto = dataclasses.asdict(spec.method.cfg), dataclasses.asdict(spec.protocol)
    return {"config_hash": spec.config_hash, "benchmark": spec.task.benchmark, "task": spec.task.name,
            "group": spec.task.group, "method": spec.method.name, "method_cfg": cfg, "protocol": proto,
            "variant": variant_of_spec(spec.task.name, spec.method.name, cfg, proto),
            "execution": dataclasses.asdict(spec.execution), "numerics": spec.numerics(),
            "seed": spec.protocol.seed, "versions": versions(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def record_failure(spec: RunSpec, store: ResultStore, exc: BaseException) -> dict[str, Any]:
    """Record a run that failed before training could start (a bad image list, absent weights, ...) with its
    reason, so a sweep's summary and tables can say what failed and why. Training failures are recorded by
    `execute` itself, with the run's details."""
    record = {**base_record(spec), "status": "failed", "reason": f"{type(exc).__name__}: {exc}",
              "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=5))}
    if distributed.is_main():
        store.append(record)
    return record
