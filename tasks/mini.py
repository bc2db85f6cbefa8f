"""The offline mini-benchmark: small image tasks that ship (scikit-learn's digits) or are generated
procedurally in the spirit of VTAB-1k's Structured group, written in the VTAB list-file format and read by
the same loader as VTAB-1k (`tasks.vtab.list_file_samples`). Backbone: a tiny ViT (petlbench_vit_mini,
32 px, patch 8) pretrained by scripts/pretrain_mini.py on a separate procedural upstream task (textured shapes,
see `upstream_sample`); its weights ship in petlbench/weights/.

What it is: an end-to-end check, in minutes on a CPU, that every method trains through the real pipeline and
that the usual PETL picture appears (PETL above linear probing and above a random backbone). What it is not:
VTAB-1k. Its numbers say nothing about any method's accuracy on real benchmarks.

Tasks (classes): digits (10, real 8x8 handwritten digits upscaled), dsprites_loc (8 x-position bins of one
shape), dsprites_ori (8 orientation bins of an arrow-like triangle), clevr_count (1..6 objects -> 6 classes).
Splits: train (400), val (100), trainval (500), test (500; digits: the remaining 1,297).
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np

from petlbench.benchmark import BENCHMARKS, Benchmark, Command
from petlbench.config import cache_dir
from petlbench.errors import PETLBenchError
from petlbench.task import TASKS, ClassificationProtocol, Task

from .vtab import list_file_samples

SIZE = 32
N_TRAIN, N_VAL, N_TEST = 400, 100, 500
SPLITS = ("train", "val", "trainval", "test")
DATASETS = {"digits": 10, "dsprites_loc": 8, "dsprites_ori": 8, "clevr_count": 6}
DIGIT_NAMES = tuple(f"handwritten digit {w}" for w in
                    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))
GENERATOR_VERSION = "1"  # bump when generation changes; a folder with another version is regenerated

PROTOCOL = ClassificationProtocol(
    backbone="petlbench_vit_mini", weights="petlbench:vit_mini_procedural", drop_path=0.0,
    epochs=15, batch_size=64, lr=2e-3, weight_decay=1e-4, warmup_epochs=2, warmup_lr=1e-5, min_lr=1e-5,
    img_size=SIZE, interpolation="bicubic", normalize="imagenet", eval_every=5, selection="reproduction",
    train_split="trainval", clean_train_split="train", val_split="val", test_split="test", seed=0,
)


def default_root() -> str:
    """Where the mini data is generated unless a data root is given: $PETLBENCH_CACHE/mini or
    ~/.cache/petlbench/mini."""
    return cache_dir("mini")


# --- procedural drawing (numpy only, antialiased by 4x supersampling) -------------------------------------
def _grid(n: int = SIZE * 4):
    c = (np.arange(n) + 0.5) / n * SIZE
    return np.meshgrid(c, c)  # x, y in pixel units


_XX, _YY = _grid()


def _shape_mask(kind: str, cx: float, cy: float, r: float, angle: float = 0.0) -> np.ndarray:
    """Boolean supersampled mask of a shape centred at (cx, cy) with radius r, rotated by angle (radians)."""
    x, y = _XX - cx, _YY - cy
    ca, sa = math.cos(angle), math.sin(angle)
    u, v = ca * x + sa * y, -sa * x + ca * y
    if kind == "circle":
        return u * u + v * v <= r * r
    if kind == "square":
        return (abs(u) <= r * 0.8) & (abs(v) <= r * 0.8)
    if kind == "triangle":  # isosceles, pointing along +u: orientation is unambiguous over 360 degrees
        return (u >= -r * 0.6) & (u <= r) & (abs(v) <= (r - u) * 0.45)
    if kind == "cross":
        return ((abs(u) <= r) & (abs(v) <= r * 0.3)) | ((abs(v) <= r) & (abs(u) <= r * 0.3))
    raise ValueError(kind)


def _texture(kind: str, rng: np.random.Generator) -> np.ndarray:
    f = rng.uniform(1.2, 2.2)
    ph = rng.uniform(0, 2 * math.pi)
    if kind == "solid":
        return np.ones_like(_XX)
    if kind == "stripes":
        return (np.sin(_XX * f * 1.5 + ph) > 0).astype(float) * 0.75 + 0.25
    if kind == "dots":
        return ((np.sin(_XX * f * 1.5) * np.sin(_YY * f * 1.5)) > 0.3).astype(float) * 0.75 + 0.25
    if kind == "checker":
        return ((np.floor(_XX / 2.5) + np.floor(_YY / 2.5)) % 2) * 0.75 + 0.25
    raise ValueError(kind)


def _downsample(canvas: np.ndarray) -> np.ndarray:
    h = canvas.shape[0] // 4
    return canvas.reshape(h, 4, h, 4, 3).mean(axis=(1, 3))


def _paint(canvas: np.ndarray, mask: np.ndarray, color, texture: np.ndarray | None = None) -> None:
    """Draw `color` (modulated by `texture`) where `mask` is set; leave the rest of the canvas."""
    shade = mask.astype(float) if texture is None else mask * texture
    canvas[:] = np.where(mask[..., None], shade[..., None] * np.asarray(color, dtype=float), canvas)


def _to_uint8(canvas: np.ndarray, rng: np.random.Generator, noise: float = 0.03) -> np.ndarray:
    img = _downsample(canvas) + rng.normal(0, noise, (SIZE, SIZE, 3))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _random_color(rng: np.random.Generator) -> np.ndarray:
    c = rng.uniform(0.3, 1.0, 3)
    c[rng.integers(3)] = rng.uniform(0.8, 1.0)
    return c


SHAPES = ("circle", "square", "triangle", "cross")
TEXTURES = ("solid", "stripes", "dots", "checker")


def _glyph_strokes(k: int) -> list[np.ndarray]:
    """The fixed strokes of upstream glyph class k: 2-4 polylines of 2-4 points on a 5x5 grid in [-1, 1]^2,
    drawn from a generator seeded by k alone (so the 16 glyph classes are the same on every machine)."""
    g = np.random.default_rng(1000 + k)
    return [(g.integers(0, 5, (g.integers(2, 5), 2)) - 2) / 2.0 for _ in range(g.integers(2, 5))]


GLYPHS = [_glyph_strokes(k) for k in range(16)]


def _stroke_mask(points: np.ndarray, width: float) -> np.ndarray:
    """Supersampled mask of a polyline through `points` (pixel units) with the given half-width."""
    mask = np.zeros_like(_XX, dtype=bool)
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((_XX - x0) * dx + (_YY - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
        mask |= (_XX - x0 - t * dx) ** 2 + (_YY - y0 - t * dy) ** 2 <= width * width
    return mask


def upstream_sample(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """The pretraining task (not a downstream task), 32 classes: half the images hold one textured shape among
    distractors, labelled by its (shape, texture) pair (16 classes); the other half one of 16 fixed stroke
    glyphs (handwriting-like, but not digits) under a random affine jitter. Position, size, rotation, stroke
    width and colours are random."""
    n4 = SIZE * 4
    canvas = np.zeros((n4, n4, 3)) + rng.uniform(0, 0.3, 3)
    if rng.random() < 0.5:
        k = int(rng.integers(16))
        angle, scale = rng.uniform(-0.4, 0.4), rng.uniform(7, 11)
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        shift = rng.uniform(scale + 1, SIZE - scale - 1, 2)
        color, width = _random_color(rng), rng.uniform(0.9, 1.8)
        for stroke in GLYPHS[k]:
            pts = stroke @ rot.T * scale * rng.uniform(0.9, 1.1) + shift
            _paint(canvas, _stroke_mask(pts, width), color)
        return _to_uint8(canvas, rng), 16 + k
    for _ in range(rng.integers(0, 3)):  # small solid distractors
        _paint(canvas, _shape_mask(SHAPES[rng.integers(4)], *rng.uniform(3, SIZE - 3, 2), rng.uniform(1.5, 3),
                                   rng.uniform(0, 2 * math.pi)), _random_color(rng) * 0.6)
    s, t = rng.integers(4), rng.integers(4)
    r = rng.uniform(6, 11)
    cx, cy = rng.uniform(r * 0.7, SIZE - r * 0.7, 2)
    _paint(canvas, _shape_mask(SHAPES[s], cx, cy, r, rng.uniform(0, 2 * math.pi)), _random_color(rng),
           _texture(TEXTURES[t], rng))
    return _to_uint8(canvas, rng), int(s * 4 + t)


def _dsprites(rng: np.random.Generator, task: str) -> tuple[np.ndarray, int]:
    n4 = SIZE * 4
    canvas = np.zeros((n4, n4, 3))
    r = rng.uniform(3.5, 5.5)
    cx, cy = rng.uniform(r, SIZE - r, 2)
    if task == "loc":
        kind, angle = SHAPES[rng.integers(3)], rng.uniform(0, 2 * math.pi)
        label = min(7, int(cx / SIZE * 8))
    else:
        kind, angle = "triangle", rng.uniform(0, 2 * math.pi)
        label = int(angle / (2 * math.pi) * 8) % 8
        r *= 1.3
    _paint(canvas, _shape_mask(kind, cx, cy, r, angle), (1.0, 1.0, 1.0))
    return _to_uint8(canvas, rng, noise=0.02), label


def _clevr_count(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    n4 = SIZE * 4
    canvas = np.zeros((n4, n4, 3)) + 0.45
    count = int(rng.integers(1, 7))
    placed: list[tuple[float, float, float]] = []
    while len(placed) < count:
        r = rng.uniform(2.2, 3.5)
        cx, cy = rng.uniform(r, SIZE - r, 2)
        if all((cx - x) ** 2 + (cy - y) ** 2 > (r + rr + 1) ** 2 for x, y, rr in placed):
            placed.append((cx, cy, r))
            _paint(canvas, _shape_mask(SHAPES[rng.integers(2)], cx, cy, r, rng.uniform(0, 6.3)), _random_color(rng))
    return _to_uint8(canvas, rng, noise=0.02), count - 1


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise PETLBenchError("the mini-benchmark's digits ship with scikit-learn: pip install 'petlbench[mini]'") \
            from None

    d = load_digits()
    imgs = []
    for x in d.images:  # 8x8 in 0..16 -> 32x32 RGB
        im = Image.fromarray((x / 16 * 255).astype(np.uint8)).resize((SIZE, SIZE), Image.BICUBIC)
        imgs.append(np.repeat(np.asarray(im)[..., None], 3, axis=2))
    return np.stack(imgs), d.target.astype(int)


def _write_dataset(folder: str, images: np.ndarray, labels: np.ndarray, n_train: int, n_val: int) -> None:
    from PIL import Image

    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    lines = []
    for i, (img, lab) in enumerate(zip(images, labels)):
        rel = f"images/{i:06d}.png"
        Image.fromarray(img).save(os.path.join(folder, rel))
        lines.append(f"{rel} {int(lab)}\n")
    parts = {"train": lines[:n_train], "val": lines[n_train:n_train + n_val],
             "trainval": lines[:n_train + n_val], "test": lines[n_train + n_val:]}
    for split, ls in parts.items():
        with open(os.path.join(folder, f"{split}.txt"), "w") as f:
            f.writelines(ls)


def generate(root: str | None = None, seed: int = 0) -> str:
    """Write every mini dataset under `root` (default: `default_root()`), unless already there in this
    generator version. Deterministic in `seed`. Returns the root."""
    root = root or default_root()
    stamp = os.path.join(root, ".generated")
    if os.path.isfile(stamp) and open(stamp).read().strip() == f"{GENERATOR_VERSION} {seed}":
        return root
    os.makedirs(root, exist_ok=True)
    n = N_TRAIN + N_VAL + N_TEST
    for k, name in enumerate(DATASETS):
        rng = np.random.default_rng([seed, k])
        if name == "digits":
            images, labels = _digits()
            order = rng.permutation(len(labels))
            images, labels = images[order], labels[order]
        else:
            make = {"dsprites_loc": lambda rng=rng: _dsprites(rng, "loc"),
                    "dsprites_ori": lambda rng=rng: _dsprites(rng, "ori"),
                    "clevr_count": lambda rng=rng: _clevr_count(rng)}[name]
            pairs = [make() for _ in range(n)]
            images, labels = np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        _write_dataset(os.path.join(root, name), images, labels, N_TRAIN, N_VAL)
    with open(stamp, "w") as f:
        f.write(f"{GENERATOR_VERSION} {seed}\n")
    return root


# NOAH's supernet in proportion to the tiny ViT (width 96, 6 blocks): sizes up to 8 (NOAH: 100 on width 768),
# depths 2 / 4 / 6 (NOAH: 3 / 6 / 9 / 12), and a shorter evolution (NOAH: 20 epochs of a population of 50).
MINI_NOAH = {"super_prompt": 8, "super_lora": 8, "super_adapter": 8, "prompt_dims": "2,4,8", "lora_dims": "2,4,8",
             "adapter_dims": "2,4,8", "prompt_depths": "2,4,6", "lora_depths": "2,4,6", "adapter_depths": "2,4,6"}
MINI_NOAH_SEARCH = {"search.max_epochs": 5, "search.population_num": 20, "search.select_num": 5,
                    "search.mutation_num": 8, "search.crossover_num": 8, "search.param_limit": 0.01}
# The searched rows: lr x weight decay on val for two methods, the choice retrained on trainval, tested once.
SEARCHED = ("bitfit", "linear")
MINI_SPACE = {"lr": [0.002, 0.02], "weight_decay": [0.0, 0.01]}

for _name, _classes in DATASETS.items():
    TASKS.add(Task(
        name=f"mini/{_name}", benchmark="mini", num_classes=_classes, splits=SPLITS, samples_fn=list_file_samples,
        protocol=PROTOCOL, group="Natural" if _name == "digits" else "Structured",
        # 16 patch tokens: 8 prompts rather than VPT's 50 keep the sequence (and the CPU budget) in proportion.
        method_defaults={"vpt": {"tokens": 8}, "noah": MINI_NOAH},
        classnames=DIGIT_NAMES if _name == "digits" else (),
        summary="offline mini-benchmark (generated; not VTAB-1k): 400+100 train, 500 test"
                if _name != "digits" else "offline mini-benchmark: scikit-learn digits, 400+100 train, 1,297 test",
    ))


# --- the driver: every method on every mini task, then its table and plot ---------------------------------------
BASELINES = ("full", "linear")  # not PETL: no random-init counterpart is run for them
NOTES = (
    "Offline mini-benchmark: backbone `petlbench_vit_mini` (32 px ViT, 0.67M parameters) pretrained by "
    "scripts/pretrain_mini.py on a procedural upstream task, or randomly initialised (*random init*), on "
    "generated data. An end-to-end check, not VTAB-1k: it says nothing about accuracy on real benchmarks.",
)


def mini_plan(quick: bool = False) -> list[tuple[str, str, dict]]:
    """(task, method, overrides) for every run of the mini-benchmark: each method on the shipped pretrained
    backbone and, for the PETL methods, on a randomly initialised one."""
    from petlbench.measure import supporting_methods
    from petlbench.method import METHODS

    extra = {"epochs": 2, "eval_every": 1, "warmup_epochs": 0} if quick else {}
    # those with the tiny ViT's sites; not `peft`, whose default (PEFT's LoRA) the lora rows already measure
    methods = [m for m in supporting_methods(PROTOCOL.backbone, img_size=SIZE) if m != "peft"]
    plan = []
    for t in (n for n in TASKS.names() if TASKS.get(n).benchmark == "mini"):
        for m in methods:
            if METHODS.get(m).supernet is not None:  # its three stages, on the pretrained backbone only
                plan.append((t, m, {**extra, **MINI_NOAH_SEARCH}))
                continue
            plan.append((t, m, dict(extra)))
            if m not in BASELINES:
                plan.append((t, m, {**extra, "weights": "none"}))
    return plan


def mini_searches(quick: bool = False) -> list[tuple[str, str, dict]]:
    """(task, method, overrides) of every search of the mini-benchmark (MINI_SPACE over SEARCHED)."""
    extra = {"epochs": 2, "eval_every": 1, "warmup_epochs": 0} if quick else {}
    return [(t, m, dict(extra)) for t in TASKS.names() if TASKS.get(t).benchmark == "mini" for m in SEARCHED]


def default_jobs() -> int:
    """Runs side by side by default: one per CPU this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _one_thread() -> None:
    """Every mini run computes on one thread, whatever the machine: torch's CPU kernels may sum in another order
    with another thread count (the losses differ in the 8th digit), so one thread keeps each run, and the table,
    the same on every machine and for any number of runs side by side."""
    import torch

    torch.set_num_threads(1)


def _side_by_side(calls: list[tuple[Callable, tuple]], jobs: int, stage: str, progress=None) -> list:
    """`fn(*args)` for each `(fn, args)` of `calls` (sweep.run_one, search.search_one: (status, reason)), `jobs` at
    a time in one-thread worker processes (spawned: a forked torch that has computed may hang in its thread pool),
    or here, one after another, when `jobs` is 1; a call that raises gives ("failed", reason). The results are in
    the order of `calls`; the pool starts them in that order.

    A pool of the standard library rather than the sweep's submitit "local" executor: that one starts every job
    at once (submitit/local/local.py, `LocalExecutor._submit_command`, with no array parallelism), and submitit
    is an optional extra."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    import torch

    out: list = [None] * len(calls)
    if progress:
        progress(stage, 0, len(calls))
    if jobs <= 1 or len(calls) <= 1:
        threads = torch.get_num_threads()
        _one_thread()
        try:
            for i, (fn, args) in enumerate(calls):
                try:
                    out[i] = fn(*args)
                except Exception as e:  # search_one returns a PETLBenchError as "failed"; others, as a pool's
                    out[i] = ("failed", f"{type(e).__name__}: {e}")
                if progress:
                    progress(stage, i + 1, len(calls))
        finally:
            torch.set_num_threads(threads)
        return out
    with ProcessPoolExecutor(min(jobs, len(calls)), mp_context=get_context("spawn"), initializer=_one_thread) as pool:
        futures = {pool.submit(fn, *args): i for i, (fn, args) in enumerate(calls)}
        for done, future in enumerate(as_completed(futures), 1):
            i = futures[future]
            try:
                out[i] = future.result()
            except Exception as e:  # raised in the call, or its worker died (killed, out of memory)
                out[i] = ("failed", f"{type(e).__name__}: {e}")
            if progress:
                progress(stage, done, len(calls))
    return out


def run_mini(store, out_dir: str, results_dir: str, quick: bool = False, data_root: str | None = None,
             progress=None, jobs: int | None = None) -> tuple[list[str], list[str]]:
    """Run what the store lacks of the plan and the searches (each run as a sweep runs it, `sweep.run_one`, each
    search as `search.search_one`), `jobs` side by side (default: one per CPU; each on one thread, `_one_thread`),
    then write results_dir/mini/mini.{md,tex,csv} and the accuracy vs parameters plot from the store's mini
    records. Returns (written paths, failures)."""
    import logging

    from petlbench.report import write_plots, write_tables
    from petlbench.search import SearchSpace, search_one
    from petlbench.sweep import run_one
    from petlbench.tables import run_frame

    log = logging.getLogger(__name__)
    root = generate(data_root)
    fixed = {"device": "cpu", "num_workers": 0}  # decoding in the run's own process, on its one thread
    space = SearchSpace.from_mapping(dict(MINI_SPACE))
    searches, plan = mini_searches(quick), mini_plan(quick)
    # The searches (five runs each) first, so that no long one is left to run alone at the end. retry_failed: a
    # run recorded as failed is run again, as `run.execute` alone would.
    calls = ([(search_one, (t, m, {**o, **fixed}, space, root, store.root, out_dir, True)) for t, m, o in searches]
             + [(run_one, (t, m, {**o, **fixed}, root, store.root, out_dir, True)) for t, m, o in plan])
    names = [f"{t} {m} search" for t, m, _ in searches] + [f"{t} {m}" for t, m, _ in plan]
    statuses = _side_by_side(calls, default_jobs() if jobs is None else jobs, "mini runs", progress)
    failed = [f"{name}: {reason}" for name, (status, reason) in zip(names, statuses) if status == "failed"]
    for line in failed:
        log.warning("failed: %s", line)
    frame = run_frame(r for r in store.records() if r.get("benchmark") == "mini")
    paths = write_tables(frame, results_dir, only=("mini",)) + write_plots(frame, results_dir, only=("mini",))
    if failed:
        log.warning("%d mini runs failed: %s", len(failed), "; ".join(failed))
    return paths, failed


def _configure(parser) -> None:
    parser.add_argument("--results", default="results", help="results folder; the table goes to <results>/mini/")
    parser.add_argument("--data-root", default=None,
                        help="where to generate the data (default: ~/.cache/petlbench/mini)")
    parser.add_argument("--quick", action="store_true", help="2 epochs per run: a smoke test, not a result")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs side by side, each on one CPU thread (default: one per CPU)")


def _command(args, ui) -> int:
    """`petlbench mini`: the runs, then the table on stdout (unless --quiet) and the files written."""
    try:
        paths, failed = run_mini(ui.store(), args.out, args.results, quick=args.quick, data_root=args.data_root,
                                 progress=ui.progress, jobs=args.jobs)
    finally:
        ui.close()
    if not args.quiet:
        with open(os.path.join(args.results, "mini", "mini.md"), encoding="utf-8") as f:
            ui.say(f.read())
    ui.say("wrote " + ", ".join(paths))
    for line in failed:
        ui.warn(f"failed: {line}")
    return 1 if failed else 0


def generated_unchanged(spec, data: dict) -> bool:
    """Whether `data` (a run's data identity) is a folder as the generator wrote it: the stamp of generator
    version 1, seed 0 (what `petlbench mini` generates; every record without "data" was written while the
    generator was at version 1) and no list file the run reads changed since the stamp was written. Such data
    is deterministic, so a record that predates data digests stands."""
    stamp = os.path.join(data["root"], ".generated")
    try:
        with open(stamp, encoding="utf-8") as f:
            if f.read().strip() != "1 0":
                return False
        written = os.path.getmtime(stamp)
        return all(os.path.getmtime(os.path.join(data["root"], src)) <= written
                   for split in data["splits"].values() for src in split["sources"])
    except (OSError, UnicodeDecodeError):
        return False


BENCHMARKS.add(Benchmark(
    "mini", "Offline mini-benchmark: generated data, a tiny ViT, minutes on a CPU",
    table_title="Offline mini-benchmark: top-1 (%)", order=90, notes=NOTES, prepare_data=generate,
    unrecorded_data_ok=generated_unchanged,
    commands=(Command("mini", "the offline mini-benchmark: all methods on generated data, table + plot",
                      _configure, _command),)))
