"""Efficiency measurements: parameters, FLOPs, latency and peak memory, unmerged vs merged vs the plain
backbone, all in one run so that ratios (not absolute times on shared machines) carry the result.

Timing: every model is warmed up, then timed in interleaved rounds (each round runs every model once, in a
rotated order), so slow drift of a shared CPU hits all models alike. Reported: the median latency of each
model, and the median over rounds of its time divided by the plain backbone's time in the same round.
"""
from __future__ import annotations

import contextlib
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn as nn

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


def _noop(stage: str, done: int, total: int) -> None:
    pass


@contextlib.contextmanager
def explicit_attention(model: nn.Module) -> Iterator[None]:
    """Temporarily turn off fused SDPA in timm attention (`fused_attn`), so FLOP counters see the attention
    matmuls (FlopCounterMode does not count the CPU SDPA kernel)."""
    mods = [m for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]
    saved = [m.fused_attn for m in mods]
    for m in mods:
        m.fused_attn = False
    try:
        yield
    finally:
        for m, s in zip(mods, saved):
            m.fused_attn = s


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass (torch FlopCounterMode: a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    # torch counts the CUDA SDPA kernels but not the CPU one; nn.MultiheadAttention (open_clip) reaches it once
    # its fused fast path (an op FlopCounterMode does not know) is off for the count.
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        # no_grad, not inference_mode: FlopCounterMode's module tracker hooks trip over parameters as inputs
        with torch.no_grad(), explicit_attention(model), FlopCounterMode(display=False, custom_mapping=mapping) as fc:
            model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return int(fc.get_total_flops())


@contextlib.contextmanager
def _silence_fd2() -> Iterator[None]:
    """Route the process's stderr (fd 2) to /dev/null: the profiler's C++ backend prints start/stop lines there
    that no environment variable turns off, and they would break the CLI's progress display."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Peak memory of one inference forward: parameters and buffers plus the peak of memory allocated during
    the pass. CUDA: the allocator's peak. CPU: replayed from torch.profiler's allocation events."""
    device = x.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            model(x)
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device))
    from torch.profiler import ProfilerActivity, profile

    static = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    with (_silence_fd2(), torch.inference_mode(),
          profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof):
        model(x)
    return static + x.numel() * x.element_size() + _replayed_peak(prof)


def _replayed_peak(prof) -> int:
    """The peak of memory allocated (CPU) while torch.profiler `prof` (profile_memory=True) recorded."""
    # Allocations are attributed to the op that made them (its *self* usage, so nested ops count once);
    # frees of tensors that die between ops are "[memory]" events. Replayed in time order, their running sum
    # is the live memory at op boundaries; its maximum is the peak.
    deltas = sorted((e.time_range.start, e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage)
                    for e in prof.events() if (e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage))
    live = peak = 0
    for _, d in deltas:
        live += d
        peak = max(peak, live)
    return peak


def time_interleaved(models: dict[str, nn.Module], x: torch.Tensor, reference: str, min_time: float = 2.0,
                     min_repeats: int = 3, max_repeats: int = 50, progress: Progress = _noop) -> dict[str, dict]:
    """Median latency (s) of each model on `x` and its median same-round ratio to `models[reference]`.
    Assumes the models were warmed up. Rounds: enough for `min_time` seconds of the reference, clamped."""
    device = x.device
    names = list(models)

    def once(name: str) -> float:
        _sync(device)
        t0 = time.perf_counter()
        models[name](x)
        _sync(device)
        return time.perf_counter() - t0

    with torch.inference_mode():
        estimate = once(reference)
        rounds = max(min_repeats, min(max_repeats, math.ceil(min_time / max(estimate, 1e-6))))
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            k = r % len(names)
            for n in names[k:] + names[:k]:  # rotate the order: no model always runs first or last
                times[n].append(once(n))
            progress("time", r + 1, rounds)
    ref = times[reference]
    out = {}
    for n, ts in times.items():
        ratios = sorted(t / q for t, q in zip(ts, ref))
        q1, q3 = (statistics.quantiles(ratios, n=4)[::2] if len(ratios) > 1 else (ratios[0], ratios[0]))
        out[n] = {"latency_s": statistics.median(ts), "ratio": statistics.median(ratios), "ratio_q1": q1,
                  "ratio_q3": q3, "rounds": rounds}
    return out


@dataclass
class Variant:
    """One row of the efficiency table: a model and what it is."""

    method: str
    form: str  # "plain" | "unmerged" | "merged"
    model: nn.Module
    params_trainable: int | None = None  # head excluded
    params_paper: int | None = None
    notes: list[str] = field(default_factory=list)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_variants(backbone: str, methods: list[str], method_cfgs: dict[str, dict] | None = None,
                   num_classes: int = 1000, forms: tuple[str, ...] = ("unmerged", "merged"),
                   **backbone_kwargs) -> list[Variant]:
    """The plain backbone, each method unmerged, and each merged model that differs from the plain one.

    Methods that add no module (bitfit, full, linear) already are the plain architecture: they get one row,
    kept under either form. `forms` picks which rows are built besides the plain backbone."""
    from .api import count_paper, count_trainable, create_model, merge, method_of
    from .backbones import create_backbone
    from .method import METHODS, Wrapper

    plain = create_backbone(backbone, num_classes=num_classes, pretrained=False, **backbone_kwargs)
    rows = [Variant("plain", "plain", plain, 0, 0)]
    for name in methods:
        model = create_model(backbone, method=name, num_classes=num_classes,
                             method_cfg=(method_cfgs or {}).get(name), **backbone_kwargs)
        n, paper = count_trainable(model, include_head=False), count_paper(model)
        wrapped = any(isinstance(m, Wrapper) for m in model.modules())
        blocker = method_of(model).merge_blocker(model.petl.family) if wrapped else None
        notes = [] if wrapped else ["adds no module: already the plain architecture"]
        if blocker and METHODS.get(name).mergeable:  # a method that never merges needs no note
            notes.append(f"no merged form on this backbone: {blocker}")
        if "unmerged" in forms or not wrapped:
            rows.append(Variant(name, "unmerged", model, n, paper, notes))
        if wrapped and not blocker and "merged" in forms:
            rows.append(Variant(name, "merged", merge(model), n, paper))
    return rows


def supporting_methods(backbone: str, **backbone_kwargs) -> list[str]:
    """Every registered method that supports `backbone`'s family (what `methods=None` measures)."""
    from .api import get_method, list_methods
    from .backbones import create_backbone
    from .sites import detect_family

    family = detect_family(create_backbone(backbone, 10, False, **backbone_kwargs))
    return [m for m in list_methods() if family in get_method(m).families]


def efficiency_table(backbone: str = "vit_base_patch16_224", methods: list[str] | None = None,
                     batch_sizes: tuple[int, ...] = (1, 64), img_size: int = 224, device: str = "cpu",
                     dtype: str = "fp32", method_cfgs: dict[str, dict] | None = None, min_time: float = 2.0,
                     min_repeats: int = 3, num_classes: int = 1000, progress: Progress = _noop,
                     forms: tuple[str, ...] = ("unmerged", "merged"), **backbone_kwargs):
    """One row per (method, form): trainable parameters (both conventions), GMACs/GFLOPs at `img_size`,
    latency and peak memory at each batch size, each with its ratio to the plain backbone timed in the same
    run. Returns a pandas DataFrame (results as data; `report.py` formats it)."""
    import pandas as pd

    methods = methods or supporting_methods(backbone, img_size=img_size, **backbone_kwargs)
    dev, dt = torch.device(device), DTYPES[dtype]
    progress("build", 0, 1)
    rows = build_variants(backbone, methods, method_cfgs, num_classes, forms, img_size=img_size, **backbone_kwargs)
    progress("build", 1, 1)
    for r in rows:
        r.model.eval().to(device=dev, dtype=dt)
    keys = [f"{r.method}/{r.form}" for r in rows]
    records = [{"method": r.method, "form": r.form, "params_trainable": r.params_trainable,
                "params_paper": r.params_paper, "params_total": sum(p.numel() for p in r.model.parameters()),
                "notes": "; ".join(r.notes)} for r in rows]
    frames = getattr(rows[0].model, "num_frames", None)  # a video backbone takes (B, 3, T, H, W) clips
    shape = (3, frames, img_size, img_size) if frames else (3, img_size, img_size)
    for i, r in enumerate(rows):
        x = torch.randn(1, *shape, device=dev, dtype=dt)
        flops = count_flops(r.model, x)
        records[i]["gflops"] = flops / 1e9
        records[i]["gmacs"] = flops / 2e9
        progress("flops", i + 1, len(rows))
    for bs in batch_sizes:
        x = torch.randn(bs, *shape, device=dev, dtype=dt)
        for i, r in enumerate(rows):  # the memory pass is also the warm-up pass at this batch size
            records[i][f"peak_mem_mb_bs{bs}"] = peak_memory_bytes(r.model, x) / 2**20
            progress(f"memory + warm-up bs{bs}", i + 1, len(rows))
        timing = time_interleaved(dict(zip(keys, (r.model for r in rows))), x, reference="plain/plain",
                                  min_time=min_time, min_repeats=min_repeats,
                                  progress=lambda s, d, t, bs=bs: progress(f"time bs{bs}", d, t))
        for i, k in enumerate(keys):
            records[i][f"latency_ms_bs{bs}"] = timing[k]["latency_s"] * 1e3
            records[i][f"latency_ratio_bs{bs}"] = timing[k]["ratio"]
            records[i][f"latency_ratio_q1_bs{bs}"] = timing[k]["ratio_q1"]
            records[i][f"latency_ratio_q3_bs{bs}"] = timing[k]["ratio_q3"]
            records[i][f"rounds_bs{bs}"] = timing[k]["rounds"]
    df = pd.DataFrame.from_records(records)
    plain = df[df.form == "plain"].iloc[0]
    df["gflops_ratio"] = df["gflops"] / plain["gflops"]
    for bs in batch_sizes:
        df[f"peak_mem_ratio_bs{bs}"] = df[f"peak_mem_mb_bs{bs}"] / plain[f"peak_mem_mb_bs{bs}"]
    return df


def environment(device: str, dtype: str) -> dict:
    """What the numbers were measured on."""
    import platform

    import timm

    env = {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
           "device": device, "dtype": dtype, "threads": torch.get_num_threads(), "machine": platform.machine(),
           "processor": platform.processor() or "unknown"}
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def train_step_time(model: nn.Module, batch_size: int, img_size: int, device: torch.device, amp: str = "auto",
                    steps: int = 3, warmup: int = 1) -> float:
    """Median seconds of one training step (forward, backward, AdamW step over the trainable parameters) on
    random data, as `engine.train` runs it."""
    from .engine import autocast_for

    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, **({"fused": True} if device.type == "cuda" else {}))
    autocast = autocast_for(device, amp)
    n_cls = model.get_classifier().out_features
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    y = torch.randint(0, n_cls, (batch_size,), device=device)
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        with autocast():
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_peak_memory_bytes(model: nn.Module, batch_size: int, img_size: int, device: torch.device,
                            amp: str = "auto") -> int:
    """Peak memory of one training step (forward, backward, AdamW step with its state made) on random data:
    parameters and buffers plus the peak allocated during the step. CUDA: the allocator's peak. CPU: replayed
    from torch.profiler's allocation events, as `peak_memory_bytes`."""
    from .engine import autocast_for

    model.to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    autocast = autocast_for(device, amp)
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    y = torch.randint(0, model.get_classifier().out_features, (batch_size,), device=device)
    model.zero_grad(set_to_none=True)

    def step() -> None:
        with autocast():
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        peak = int(torch.cuda.max_memory_allocated(device))
    else:
        from torch.profiler import ProfilerActivity, profile

        static = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
        with _silence_fd2(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
        peak = static + x.numel() * x.element_size() + _replayed_peak(prof)
    model.zero_grad(set_to_none=True)
    return peak


def train_throughput(backbone: str = "vit_base_patch16_224", methods: list[str] | None = None, batch_size: int = 16,
                     img_size: int = 224, device: str = "cpu", amp: str = "auto", steps: int = 3,
                     progress: Progress = _noop, **backbone_kwargs):
    """Training images/s of each method and its ratio to full fine-tuning measured in the same run, and the
    peak memory of one training step (`train_peak_memory_bytes`)."""
    import pandas as pd

    from .api import count_trainable, create_model, list_methods

    methods = methods or list_methods()
    if "full" not in methods:
        methods = ["full"] + list(methods)
    dev = torch.device(device)
    rows = []
    for i, name in enumerate(methods):
        model = create_model(backbone, method=name, num_classes=100, img_size=img_size, **backbone_kwargs)
        t = train_step_time(model, batch_size, img_size, dev, amp, steps)
        mem = train_peak_memory_bytes(model, batch_size, img_size, dev, amp)
        rows.append({"method": name, "params_trainable": count_trainable(model, include_head=False),
                     "step_s": t, "images_per_s": batch_size / t, "peak_train_mem_mb": mem / 2**20})
        del model
        progress("train steps", i + 1, len(methods))
    df = pd.DataFrame(rows)
    full = df.loc[df.method == "full", "images_per_s"].iloc[0]
    df["speedup_vs_full"] = df["images_per_s"] / full
    return df


def decode_seconds_per_image(width: int, height: int, out_size: int = 224, n: int = 20, seed: int = 0) -> float:
    """Seconds to decode one JPEG of width x height (quality 90, smooth random content) and resize it to
    out_size with bicubic interpolation, as the VTAB protocol's decode-once cache does."""
    import io

    import numpy as np
    from PIL import Image

    from .decode import resize_to_uint8

    rng = np.random.default_rng(seed)
    low = rng.integers(0, 255, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    img = Image.fromarray(low).resize((width, height), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    tf = resize_to_uint8(out_size)
    t0 = time.perf_counter()
    for _ in range(n):
        with Image.open(io.BytesIO(data)) as im:
            tf(im.convert("RGB"))
    return (time.perf_counter() - t0) / n


def time_estimate(datasets: list[dict], method: str = "repadapter", device: str = "cpu", amp: str = "auto",
                  batch_size: int = 64, eval_batch_size: int = 256, steps: int = 3, decode_workers: int = 8,
                  backbone: str = "vit_base_patch16_224", epochs: int = 100, evaluations: int = 10,
                  progress: Progress = _noop) -> dict:
    """Estimated wall time of a whole benchmark run of one method from measured per-step, per-image-evaluation
    and per-image-decode costs on `device`, with synthetic data of the benchmark's sizes. `datasets`: one dict
    per dataset with "name", "train_images", "test_images" and "typical_source_size" ("WxH" of its source
    images); each trains `epochs` epochs, evaluates the test split `evaluations` times and decodes each image
    once."""
    from .api import create_model

    dev = torch.device(device)
    model = create_model(backbone, method=method, num_classes=100, drop_path_rate=0.1)
    t_step = train_step_time(model, batch_size, 224, dev, amp, steps)
    progress("estimate", 1, 3)
    from .engine import autocast_for

    model.eval()
    x = torch.randn(eval_batch_size, 3, 224, 224, device=dev)
    with torch.inference_mode(), autocast_for(dev, amp)():
        model(x)
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(steps):
            model(x)
        _sync(dev)
    t_eval_img = (time.perf_counter() - t0) / steps / eval_batch_size
    progress("estimate", 2, 3)
    decode_cache: dict[str, float] = {}
    per = []
    for r in datasets:
        size = r["typical_source_size"]
        if size not in decode_cache:
            w, h = (int(v) for v in size.split("x"))
            decode_cache[size] = decode_seconds_per_image(w, h)
        n_train, n_test = int(r["train_images"]), int(r["test_images"])
        steps_total = epochs * math.ceil(n_train / batch_size)
        per.append({"dataset": r["name"], "test_images": n_test,
                    "decode_s": (n_train + n_test) * decode_cache[size] / decode_workers,
                    "train_s": steps_total * t_step, "eval_s": evaluations * n_test * t_eval_img})
    progress("estimate", 3, 3)
    total = {k: sum(p[k] for p in per) for k in ("decode_s", "train_s", "eval_s")}
    return {"method": method, "backbone": backbone, "device": device, "amp": amp, "batch_size": batch_size,
            "eval_batch_size": eval_batch_size, "train_step_s": t_step,
            "eval_s_per_image": t_eval_img, "decode_s_per_image": decode_cache, "decode_workers": decode_workers,
            "per_dataset": per, "totals_s": total, "total_minutes": sum(total.values()) / 60}
