"""petlbench: parameter-efficient transfer learning on vision backbones, benchmarked on one footing.

    petlbench methods                      list the registered methods, their options and defaults
    petlbench benchmarks                   list the benchmark families (tasks/), their tasks and commands
    petlbench tasks [--benchmark NAME]     list the registered tasks, their classes, splits and protocol
    petlbench run --task T --method M ...  train one task with one method, append a record to the store
    petlbench sweep NAME|FILE              run a sweep (methods x tasks x seeds ...), skipping finished runs
    petlbench sweeps                       list the shipped sweeps (petlbench sweep vtab1k runs one by name)
    petlbench table / plot                 regenerate every table / plot from the result store alone
    petlbench site [OUT_DIR]               the tables and plots as a static HTML site (results/site/)
    petlbench bench [--backbone NAME] ...  the efficiency table (params, GMACs, latency, memory; merged vs not)
    petlbench bench-train ...              training images/s of each method vs full fine-tuning
    petlbench <command> ...                commands benchmark families add (`petlbench --help` lists them)
    petlbench check-data --task T --data-root R   read every list of a task, open every file, check sizes
    petlbench export RUN --merged DIR      a run's merged model as a timm folder (--peft DIR, --hub REPO)
"""
from __future__ import annotations

import argparse
import datetime
import logging
import os
import shlex
import signal
import sys

from .errors import ConfigError, PETLBenchError


def _csv_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _method_cfgs(items: list[str], methods: list[str]) -> dict[str, dict]:
    """`['repadapter.dim=8', 'vpt.deep=false']` -> {'repadapter': {'dim': 8}, 'vpt': {'deep': False}}."""
    from .config import parse_overrides

    out: dict[str, dict] = {}
    for key, value in parse_overrides(items, where="--cfg").items():
        method, dot, field = key.partition(".")
        if not dot:
            raise ConfigError(f"--cfg {key}=...: expected METHOD.KEY=VALUE, e.g. repadapter.dim=8")
        if method not in methods:
            raise ConfigError(f"--cfg {key}=...: method {method!r} is not in this run ({', '.join(methods)})")
        out.setdefault(method, {})[field] = value
    return out


def _method_list(text: str) -> list[str]:
    """--methods: 'all' or comma-separated names (checked by the caller through the registry)."""
    from .api import list_methods

    return list_methods() if text == "all" else [m.strip() for m in text.split(",") if m.strip()]


def _check_device(device: str) -> None:
    """A CUDA device that is not there is a user error, named before any model is built."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise PETLBenchError(f"--device {device}: no CUDA device is available here; use --device cpu")


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class _Bar:
    """What a person sees while a command works: one tqdm bar per stage, on `stream` (stderr), drawn only when
    that stream is a terminal (a pipe or a log file gets no bar). A training run reports every micro-batch
    (`step`, see engine.RunLog): its bar counts steps over the whole run, its ETA is tqdm's, and its postfix
    holds the epoch, the epoch's mean loss so far, the learning rate, images per second (this epoch's, after its
    first step) and the last evaluation's top-1s."""

    UNITS = {"train": "step", "decode": "img"}

    def __init__(self, enabled: bool, stream=None, min_interval: float = 0.1):
        self.stream = sys.stderr if stream is None else stream
        self.enabled, self.min_interval = enabled and _is_terminal(self.stream), min_interval
        self.bar, self.stage, self.stepping = None, None, False
        self.evaluated: dict[str, float] = {}
        self.window: tuple[int, float, int] | None = None  # (epoch, time of its first step, images since)

    def __call__(self, stage: str, done: int, total: int, info: dict | None = None) -> None:
        if not self.enabled:
            return
        if stage == self.stage and self.stepping:  # the epoch's report after its steps: only its evaluation is new
            self.evaluated = {k: v for k, v in (info or {}).items() if k not in ("epoch", "loss", "lr")
                              and isinstance(v, (int, float)) and not isinstance(v, bool)}
            return
        self._advance(stage, done, total)

    def step(self, done: int, total: int, info: dict) -> None:
        """One training step (engine.RunLog): the postfix renewed, the bar advanced (drawn at tqdm's interval)."""
        if not self.enabled:
            return
        import time

        if self._opens("train", done):
            self.close()
        now, epoch = time.perf_counter(), info["epoch"]
        if self.window is None or self.window[0] != epoch:
            self.window = (epoch, now, 0)
        else:
            self.window = (epoch, self.window[1], self.window[2] + info["images"])
        _, since, images = self.window
        text = f"epoch {epoch}, loss {info['loss']:.4g}, lr {info['lr']:.3g}"
        if images and now > since:
            text += f", {images / (now - since):.0f} img/s"
        text += "".join(f", {k} {v:.2f}" for k, v in self.evaluated.items())
        self._advance("train", done, total, text)
        self.stepping = True

    def _opens(self, stage: str, done: int) -> bool:
        """Whether a report of `stage` at `done` starts a new bar: a new stage, or a new pass of this one."""
        return self.bar is None or stage != self.stage or done < self.bar.n

    def _advance(self, stage: str, done: int, total: int, postfix: str | None = None) -> None:
        if self._opens(stage, done):
            from tqdm import tqdm

            self.close()
            # initial=done: what was done before the first report is not counted as done in no time
            self.stage, self.bar = stage, tqdm(total=total, initial=done, desc=stage, leave=False, file=self.stream,
                                               unit=self.UNITS.get(stage, "it"), mininterval=self.min_interval,
                                               dynamic_ncols=True, postfix=postfix)
            return
        if postfix is not None:
            self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.stage, self.stepping, self.evaluated, self.window = None, None, False, {}, None


def cmd_benchmarks(args: argparse.Namespace) -> int:
    from .benchmark import BENCHMARKS
    from .task import TASKS

    for name in BENCHMARKS.names():
        b = BENCHMARKS.get(name)
        n = sum(TASKS.get(t).benchmark == name and not TASKS.get(t).eval_only for t in TASKS.names())
        extra = f"; commands: {', '.join(c.name for c in b.commands)}" if b.commands else ""
        print(f"{name:10s} {n:3d} tasks  {b.title}{extra}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from .api import list_methods
    from .method import METHODS

    for name in list_methods():
        d = METHODS.get(name).describe()
        opts = ", ".join(f"{k}={v!r}" for k, v in d["defaults"].items()) or "no options"
        merge = "mergeable" if d["mergeable"] else "not mergeable"
        if d["mergeable"] and d["merges_on"] != d["families"]:
            merge = f"merges on {','.join(d['merges_on'])}"
        print(f"{name:12s} {merge:14s}  families={','.join(d['families'])}  {opts}  [{d['paper']}]")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .api import get_method
    from .backbones import check_backbone
    from .measure import efficiency_table, environment, supporting_methods
    from .report import write_efficiency

    methods = _method_list(args.methods)
    check_backbone(args.backbone)
    if args.methods == "all":  # every method that supports this backbone's family
        methods = supporting_methods(args.backbone, img_size=args.img_size)
    cfgs = _method_cfgs(args.cfg, methods)
    for m in methods:  # bad names and options fail here, before any model is built
        get_method(m, cfgs.get(m))
    _check_device(args.device)
    bar = _Bar(not args.quiet)
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        df = efficiency_table(args.backbone, methods, args.batch_sizes, args.img_size, args.device, args.dtype,
                              cfgs, args.min_time, args.min_repeats, progress=bar,
                              forms=("unmerged", "merged") if args.forms == "all" else (args.forms,))
    finally:
        bar.close()
    name = args.backbone.replace(":", "_")  # openclip:ViT-B-16 -> openclip_ViT-B-16 (no ':' in file names)
    stem = (name if (args.device, args.dtype) == ("cpu", "fp32")
            else f"{name}_{args.device.replace(':', '')}_{args.dtype}")
    if args.forms != "all":
        stem += f"_{args.forms}"
    stem = args.name or stem
    rounds = ", ".join(f"bs{bs}: {int(df[f'rounds_bs{bs}'].iloc[0])} rounds" for bs in args.batch_sizes)
    meta = {"backbone": args.backbone, "img_size": args.img_size, "batch_sizes": list(args.batch_sizes),
            "rounds": rounds,
            "methods": methods, "method_cfgs": cfgs, "environment": environment(args.device, args.dtype),
            "command": "petlbench " + " ".join(shlex.quote(a) for a in args.argv),
            "date": started.strftime("%Y-%m-%d %H:%M UTC"),
            "seconds": round((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(), 1)}
    paths = write_efficiency(df, meta, args.out, stem)
    if not args.quiet:
        with open(paths["md"], encoding="utf-8") as f:
            print(f.read())
    print(f"wrote {paths['csv']}, {paths['md']} and {paths['json']} in {meta['seconds']:.0f} s")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from .task import TASKS

    names = [n for n in TASKS.names() if not args.benchmark or TASKS.get(n).benchmark == args.benchmark]
    if not names:
        benchmarks = sorted({TASKS.get(n).benchmark for n in TASKS.names()})
        raise ConfigError(f"--benchmark {args.benchmark!r}: no such benchmark; known: {', '.join(benchmarks)}")
    print(f"{'task':30s} {'classes':>7s}  {'group':11s} splits / protocol")
    for n in names:
        t = TASKS.get(n)
        p = t.protocol
        if t.recipe:  # the protocol as a run resolves it: the task's, then its recipe's values
            import dataclasses

            from .config import build_config
            from .recipe import RECIPES

            p = build_config(type(p), {**dataclasses.asdict(p), **RECIPES.get(t.recipe).protocol_values(task=n)},
                             f"task {n!r} protocol")
        proto = p.summary()
        if t.recipe:
            proto = f"recipe {t.recipe}: {proto}"
        role = "eval-only target" if t.eval_only else ""
        splits = ",".join(t.splits) if len(t.splits) < 8 else f"{len(t.splits)} splits"
        print(f"{n:30s} {t.num_classes:7d}  {t.group or '-':11s} {splits}"
              f" | {role or proto}")
    return 0


def _print_resolved(spec) -> None:
    """The resolved configuration of a run, each value with where it came from (`run --dry-run`)."""
    import dataclasses

    from .run import effective_amp

    p = spec.protocol
    print(f"task {spec.task.name}, method {spec.method.name}, recipe {p.recipe or '(none: the task protocol)'}; "
          f"config hash {spec.config_hash}")
    print("protocol:")
    for k, v in dataclasses.asdict(p).items():
        print(f"  {k:18s} {v!r:40s} {spec.sources.get(k, '')}")
    print(f"method {spec.method.name}:")
    for k, v in dataclasses.asdict(spec.method.cfg).items():
        print(f"  {k:18s} {v!r:40s} {spec.sources.get('method.' + k, '')}")
    ex = dataclasses.asdict(spec.execution)
    print("execution (not part of the result's identity, except the numerics): "
          + ", ".join(f"{k}={v}" for k, v in ex.items()) + f"; autocast: {effective_amp(spec.execution)}")


def cmd_recipes(args: argparse.Namespace) -> int:
    from .recipe import RECIPES

    names = [args.name] if args.name else RECIPES.names()
    if args.markdown:
        from .recipe import side_by_side

        recipes = [RECIPES.get(n) for n in (args.name.split(",") if args.name else RECIPES.names())]
        print("| field | " + " | ".join(r.name for r in recipes) + " |")
        print("| --- |" + " --- |" * len(recipes))
        for row in side_by_side(recipes):
            print("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
        return 0
    for n in names:
        r = RECIPES.get(n)
        if not args.name:
            print(f"{n:20s} {','.join(r.benchmarks):14s} {r.summary}")
            continue
        print(f"{r.name}: {r.summary}\n  code: {r.repo}\n  benchmarks: {', '.join(r.benchmarks)}")
        print("  protocol:")
        for k, c in r.protocol.items():
            print(f"    {k:18s} {c.value!r:28s} {c.source}")
        for m, d in r.method_protocol.items():
            for k, c in d.items():
                print(f"    {k:18s} {c.value!r:28s} {c.source}   (method {m} only)")
        for m, d in r.methods.items():
            print(f"  method {m}:")
            for k, c in d.items():
                print(f"    {k:18s} {c.value!r:28s} {c.source}")
        for t, d in r.per_task.items():
            print(f"  {t}: " + ", ".join(f"{k}={c.value!r} ({c.source})" for k, c in d.items()))
        for dev in r.deviations:
            print(f"  deviation: {dev}")
    return 0


def _store_and_out(args: argparse.Namespace):
    from .store import ResultStore

    return ResultStore(args.store), args.out


def cmd_run(args: argparse.Namespace) -> int:
    from .config import parse_overrides
    from .run import execute, resolve

    spec = resolve(args.task, args.method, parse_overrides(args.overrides, where="override"))
    if args.dry_run:
        _print_resolved(spec)
        return 0
    data_root = _data_root_for(args.task, args.data_root)
    store, out = _store_and_out(args)
    from .decode import reporting

    bar = _Bar(not args.quiet)
    stored = None if args.force else store.get(spec.task.benchmark, spec.config_hash)
    try:
        with reporting(lambda d, t: bar("decode", d, t)):
            rec = execute(spec, data_root, store, out, force=args.force, progress=bar)
    finally:
        bar.close()
    from . import distributed

    if not distributed.is_main():  # under torchrun every process returns the record; one line is enough
        return 0
    if stored is not None and rec == stored:  # answered from the store (execute reruns one made on other data)
        print(f"{rec['task']} {rec['method']}: already in the store (hash {rec['config_hash']}); --force to run "
              f"again", file=sys.stderr)
    if rec.get("stage") == "search":  # a supernet method's search stage (nas.py): its sub-network, no test
        print(f"{rec['task']} {rec['method']}: searched sub-network {rec['nas']['arch']} ({rec['nas']['params']:,} "
              f"parameters as counted by the limit), {rec['metrics']['split']} top-1 {rec['value']:.2f}%; record "
              f"{rec['config_hash']} in {args.store}")
        return 0
    m = rec.get("metrics", {})
    metric, when = rec.get("metric", "top1"), (f"iteration {m['iter']}" if "iter" in m else f"epoch {m.get('epoch')}")
    print(f"{rec['task']} {rec['method']}: {'top-1' if metric == 'top1' else metric} {rec['value']:.2f}% "
          f"({m.get('split')}, {when}; {rec['selection'].split(':')[0]}), {rec['params']['trainable']:,} trainable "
          f"params; record {rec['config_hash']} in {args.store}")
    return 0


def _data_root_for(task_name: str, data_root: str | None) -> str:
    """`data_root`, or the data a generating benchmark makes; ConfigError naming --data-root otherwise."""
    from .benchmark import of as benchmark_of
    from .task import TASKS

    task = TASKS.get(task_name)
    prepare = benchmark_of(task).prepare_data
    if data_root is None and prepare is not None:
        data_root = prepare(None)
    if data_root is None:
        raise ConfigError(f"task {task_name!r} needs --data-root (the folder that holds "
                          f"{task.name.split('/', 1)[1]}/)")
    return data_root


def cmd_search(args: argparse.Namespace) -> int:
    from .config import parse_overrides, parse_value
    from .search import SearchSpace, run_search

    values: dict = {}
    for item in args.grid:
        key, eq, rest = item.partition("=")
        if not eq or not key or not rest:
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,... (e.g. --grid lr=0.001,0.01)")
        values[key] = [parse_value(v) for v in rest.split(",")]
    space = SearchSpace.from_mapping({**values, "strategy": args.strategy, "eta": args.eta}, "--grid")
    overrides = parse_overrides(args.overrides, where="override")
    data_root = _data_root_for(args.task, args.data_root)
    out = run_search(args.task, args.method, overrides, space, data_root, args.store, args.out,
                     retry_failed=args.retry_failed, say=lambda line: print(line, file=sys.stderr))
    rec = out.final
    print(f"{rec['task']} {rec['method']}: chose {', '.join(f'{k}={v}' for k, v in out.chosen.items())} on "
          f"{rec['search']['selected_on']} ({len(out.trials)} trials, {space.strategy}); test top-1 "
          f"{rec['value']:.2f}% (trained on {rec['protocol']['train_split']}, tested once); record "
          f"{rec['config_hash']} in {args.store}")
    for line in out.failed:
        print(f"failed trial: {line}", file=sys.stderr)
    return 0


class CommandUI:
    """What a benchmark's own command (`benchmark.Command`) uses to talk to a person: this module decides how."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.progress = _Bar(not getattr(args, "quiet", False))

    def store(self):
        from .store import ResultStore

        return ResultStore(self.args.store)

    def check_device(self, device: str) -> None:
        _check_device(device)

    def close(self) -> None:
        self.progress.close()

    def say(self, text: str) -> None:
        print(text)

    def warn(self, text: str) -> None:
        print(text, file=sys.stderr)


def cmd_sweeps(args: argparse.Namespace) -> int:
    from .sweep import shipped_sweeps

    for name, path in shipped_sweeps().items():
        print(f"{name:<20} {path}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import run_sweep

    bar = _Bar(not args.quiet)
    opts = {"partition": args.partition, "gpus": args.gpus, "cpus": args.cpus, "parallel": args.parallel,
            "timeout_min": args.timeout_min, "wait": args.wait, "account": args.account, "qos": args.qos,
            "constraint": args.constraint, "mem": args.mem, "sbatch": args.sbatch or None}
    opts = {k: v for k, v in opts.items() if v is not None}
    try:
        from .config import parse_overrides

        summary = run_sweep(args.file, args.data_root, args.store, args.out, retry_failed=args.retry_failed,
                            executor=args.executor, executor_options=opts,
                            extra=parse_overrides(args.set, where="--set"),
                            progress=lambda stage, d, t: bar(stage, d, t),
                            on_line=lambda line: print(line, file=sys.stderr))
    finally:
        bar.close()
    for line in summary.lines():
        print(line)
    return 1 if summary.failed else 0


def _frame(args: argparse.Namespace):
    """The store as a frame; unreadable record files are named on stderr and skipped, never fatal."""
    from .store import ResultStore, StoreProblems
    from .tables import run_frame

    problems = StoreProblems()
    frame = run_frame(ResultStore(args.store).records(problems), _search(args))
    for path, why in problems.items:
        print(f"petlbench: skipped unreadable record {path}: {why}", file=sys.stderr)
    return frame


def _search(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(k.strip() for k in args.search.split(",") if k.strip())


def cmd_table(args: argparse.Namespace) -> int:
    import time

    from .report import write_tables

    t0 = time.perf_counter()
    frame = _frame(args)
    paths = write_tables(frame, args.results, _search(args), args.reference)
    n_ok = int((frame["status"] == "ok").sum()) if not frame.empty else 0
    print(f"{n_ok} finished and {len(frame) - n_ok} failed records -> {len(paths)} files under {args.results}/ "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    import time

    from .report import write_plots

    t0 = time.perf_counter()
    paths = write_plots(_frame(args), args.results, _search(args), args.reference)
    print(f"{len(paths)} plots under {args.results}/ in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    import time

    from .site import write_site
    from .store import ResultStore, StoreProblems

    t0 = time.perf_counter()
    out = args.out or os.path.join(args.results, "site")
    problems = StoreProblems()
    paths = write_site(ResultStore(args.store).records(problems), out, _search(args), args.reference, args.results,
                       plots=not args.no_plots, problems=problems)
    for path, why in problems.items:
        print(f"petlbench: skipped unreadable record {path}: {why}", file=sys.stderr)
    print(f"{len(paths)} files under {out}/ in {time.perf_counter() - t0:.1f} s: {os.path.join(out, 'index.html')}")
    return 0


def cmd_bench_train(args: argparse.Namespace) -> int:
    from .api import get_method
    from .backbones import check_backbone
    from .measure import environment, train_throughput
    from .report import markdown_table, write_text

    methods = _method_list(args.methods)
    check_backbone(args.backbone)
    for m in methods:
        get_method(m)
    _check_device(args.device)
    bar = _Bar(not args.quiet)
    try:
        df = train_throughput(args.backbone, methods, args.batch_size, args.img_size, args.device, args.amp,
                              args.steps, progress=bar)
    finally:
        bar.close()
    env = environment(args.device, args.amp)
    rows = [[r.method, f"{r.params_trainable:,}", f"{r.step_s * 1e3:.0f}", f"{r.images_per_s:.1f}",
             f"{r.speedup_vs_full:.2f}", f"{r.peak_train_mem_mb:.0f}"] for r in df.itertuples()]
    cmd = "petlbench " + " ".join(shlex.quote(a) for a in args.argv)
    md = (f"# Training throughput: {args.backbone}\n\n" + markdown_table(
        ["method", "trainable params (head excl.)", "step (ms)", "images/s", "x full fine-tuning",
         "peak train memory (MB)"], rows) +
        f"\n\nBatch {args.batch_size} at {args.img_size}px, AdamW over the trainable parameters only, "
        f"median of {args.steps} steps after 1 warm-up, amp={args.amp}, {env['device']}"
        + (f" ({env['gpu']})" if "gpu" in env else f", {env['threads']} threads")
        + f", torch {env['torch']}. Made by `{cmd}`.\n")
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"train_{args.backbone}_{args.device.replace(':', '')}")
    write_text(stem + ".csv", df.to_csv(index=False, float_format="%.6g"))
    write_text(stem + ".md", md)
    print(md)
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    """One summary line per split, then the first bad files of each (file:line); exit 1 if anything is wrong."""
    from .check import check_tasks, tasks_of
    from .task import TASKS

    tasks = [TASKS.get(args.task)] if args.task else tasks_of(args.benchmark)
    splits = [x.strip() for x in args.split.split(",") if x.strip()] if args.split else None
    bar = _Bar(not args.quiet)
    try:
        result = check_tasks(tasks, args.data_root, splits, workers=args.workers,
                             cache_path=None if args.no_cache else "", decode_videos=args.decode_videos,
                             progress=bar)
    finally:
        bar.close()
    for r in result.splits:
        print(r.summary())
        if r.sources and not r.error:
            print(f"  read {r.sources[0]}" + (f" and {len(r.sources) - 1} more" if len(r.sources) > 1 else ""))
        problems = r.labels_outside + r.bad
        for p in problems[:args.show]:
            print(f"  {p.where}: {p.path}: {p.reason}" if p.where != p.path else f"  {p.path}: {p.reason}")
        if len(problems) > args.show:
            print(f"  ... and {len(problems) - args.show} more")
    bad = sum(not r.ok for r in result.splits)
    print(f"{len(result.splits)} splits, {bad} with problems; {result.checked} files checked, "
          f"{result.cached} unchanged since an earlier check")
    return 1 if bad else 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_merged, export_peft, find_source, hub_token, push

    if not (args.merged or args.peft or args.hub):
        raise ConfigError("export: say what to write: --merged DIR, --peft DIR and/or --hub REPO")
    token = hub_token() if args.hub else None  # first: without one nothing is built, written or pushed
    src = find_source(args.ref, args.store, args.out, args.weights)
    done = ([export_merged(src, args.merged)] if args.merged else []) + (
        [export_peft(src, args.peft)] if args.peft else []) + (
        [push(src, args.hub, token, private=args.private)] if args.hub else [])
    for e in done:
        where = f"https://huggingface.co/{e.path}" if e.path == args.hub else e.path
        if e.kind == "timm":
            print(f"{where}: the merged model as a timm checkpoint (reloaded through timm, outputs within "
                  f"{e.max_diff:.1e} of the tuned model's)")
        elif e.kind == "tuned":
            print(f"{where}: {src.meta['method']} does not merge here ({e.reason}): the tuned file and a README "
                  "on loading it with petlbench")
        else:
            print(f"{where}: a PEFT adapter for timm's {src.backbone} (adapter_config.json, adapter_model.safetensors)")
    return 0


def _add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=os.path.join("results", "store"), help="result store (default: %(default)s)")
    p.add_argument("--out", default=os.path.join("results", "runs"),
                   help="tuned weights and per-epoch logs (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    # (this module is the only place that parses argv or prints)
    p = argparse.ArgumentParser(prog="petlbench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__

    p.add_argument("--version", action="version", version=f"petlbench {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("methods", help="list registered methods")
    m.set_defaults(func=cmd_methods)
    sub.add_parser("benchmarks", help="list the benchmark families, their task counts and commands").set_defaults(
        func=cmd_benchmarks)
    t = sub.add_parser("tasks", help="list registered tasks")
    t.add_argument("--benchmark", default="", help="only this benchmark (see `petlbench benchmarks`)")
    t.set_defaults(func=cmd_tasks)
    rc = sub.add_parser("recipes", help="list the recipes (published training procedures), or show one with sources")
    rc.add_argument("name", nargs="?", default="", help="a recipe to show field by field, e.g. noah-fewshot")
    rc.add_argument("--markdown", action="store_true",
                    help="the recipes side by side as a Markdown table (NAME may list several: a,b,c)")
    rc.set_defaults(func=cmd_recipes)
    r = sub.add_parser("run", help="train and evaluate one task with one method")
    r.add_argument("--task", required=True, help="e.g. vtab/cifar (see `petlbench tasks`)")
    r.add_argument("--method", required=True, help="e.g. repadapter (see `petlbench methods`)")
    r.add_argument("--data-root", default=None,
                   help="folder holding the dataset folders (default: generated, for a benchmark that generates its "
                        "data)")
    r.add_argument("--force", action="store_true", help="run even if the store has this configuration")
    r.add_argument("--dry-run", action="store_true",
                   help="print the resolved configuration and recipe, each value with its source, and exit")
    r.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="protocol (recipe=noah-vtab, epochs=10, selection=clean, weights=none), execution "
                        "(device=cuda, amp=bf16, compile=true) or method options (scale=0.1 or method.scale=0.1)")
    _add_store_args(r)
    r.set_defaults(func=cmd_run)
    from .benchmark import BENCHMARKS

    for bench in (BENCHMARKS.get(n) for n in BENCHMARKS.names()):  # commands a benchmark family adds
        for c in bench.commands:
            cp = sub.add_parser(c.name, help=c.help)
            c.configure(cp)
            if c.uses_store:
                _add_store_args(cp)
            elif not any(a.dest == "quiet" for a in cp._actions):
                cp.add_argument("--quiet", action="store_true", help="no progress bars")
            cp.set_defaults(func=lambda args, c=c: c.run(args, CommandUI(args)))
    se = sub.add_parser("search", help="search hyper-parameters on the validation split, retrain the choice, test "
                                       "once (resumable; see petlbench/search.py)")
    se.add_argument("--task", required=True, help="e.g. vtab/cifar (see `petlbench tasks`)")
    se.add_argument("--method", required=True, help="e.g. lora (see `petlbench methods`)")
    se.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                    help="values of one protocol field or method option (repeatable), e.g. --grid lr=0.001,0.01 "
                         "--grid weight_decay=0,0.0001")
    se.add_argument("--strategy", choices=["grid", "halving"], default="grid",
                    help="grid: every point for the full epochs; halving: successive halving (see --eta)")
    se.add_argument("--eta", type=int, default=3, help="halving: keep 1/eta of the points per rung (default 3)")
    se.add_argument("--data-root", default=None,
                    help="folder holding the dataset folders (default: generated, for a benchmark that generates its "
                         "data)")
    se.add_argument("--retry-failed", action="store_true", help="rerun trials recorded as failed")
    se.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="as for `petlbench run`")
    _add_store_args(se)
    se.set_defaults(func=cmd_search)
    sw = sub.add_parser("sweep",
                        help="run a sweep file's runs that the store lacks (resumable; see petlbench/sweep.py)")
    sw.add_argument("file", help="a shipped sweep's name (see `petlbench sweeps`), e.g. vtab1k, or a sweep YAML file")
    sw.add_argument("--data-root", default=None,
                    help="folder holding the dataset folders (default: generated, for a benchmark that generates its "
                         "data)")
    sw.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed")
    sw.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an override on top of the file's (repeatable), e.g. --set weights=/ckpt/videomae.pth")
    sw.add_argument("--executor", choices=["inline", "local", "slurm", "debug"], default="inline",
                    help="inline: one run after another here (default); local: submitit processes on this "
                         "machine; slurm: a submitit job array, one job per run; debug: submitit's debug executor "
                         "(the jobs in this process)")
    sw.add_argument("--partition", default=None, help="SLURM partition")
    sw.add_argument("--account", default=None, help="SLURM account (sbatch --account)")
    sw.add_argument("--qos", default=None, help="SLURM quality of service (sbatch --qos)")
    sw.add_argument("--constraint", default=None, help="SLURM node features, e.g. a100 (sbatch --constraint)")
    sw.add_argument("--mem", default=None, help="SLURM memory per node, e.g. 64G (sbatch --mem)")
    sw.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                    help="any other sbatch option, without its dashes (repeatable), e.g. --sbatch mail-type=END; "
                         "a bare KEY is a flag (--sbatch exclusive)")
    sw.add_argument("--gpus", type=int, default=None,
                    help="GPUs per job, one process each, as one DDP run (slurm default 1, local 0)")
    sw.add_argument("--cpus", type=int, default=None, help="CPUs per process (slurm default 8, local 1)")
    sw.add_argument("--parallel", type=int, default=None, help="jobs running at once (default 16)")
    sw.add_argument("--timeout-min", type=int, default=None, help="job time limit in minutes (default 1440)")
    sw.add_argument("--wait", action="store_true", default=None, help="slurm: wait for the jobs and summarise")
    _add_store_args(sw)
    sw.set_defaults(func=cmd_sweep)
    sub.add_parser("sweeps", help="list the shipped sweeps, by name and file").set_defaults(func=cmd_sweeps)
    for name, func, what in (("table", cmd_table, "every table (Markdown, LaTeX, CSV) from the result store"),
                             ("plot", cmd_plot, "every plot (PNG, PDF) from the result store")):
        tp = sub.add_parser(name, help=what)
        tp.add_argument("--store", default=os.path.join("results", "store"), help="result store (default: %(default)s)")
        tp.add_argument("--results", default="results", help="output folder (default: %(default)s)")
        tp.add_argument("--search", default="", metavar="KEYS",
                        help="comma-separated option keys searched per dataset (e.g. scale): rows keep the best "
                             "by each run's selection rule, and the footer names the choices")
        tp.add_argument("--reference", default=None, help="folder of published CSVs (default: the shipped copy)")
        tp.set_defaults(func=func)
    si = sub.add_parser("site", help="every table and plot as a static HTML site, from the result store")
    si.add_argument("out", nargs="?", default=None, metavar="OUT_DIR", help="site folder (default: RESULTS/site)")
    si.add_argument("--store", default=os.path.join("results", "store"), help="result store (default: %(default)s)")
    si.add_argument("--results", default="results",
                    help="results folder: its efficiency/ CSVs get a page (default: %(default)s)")
    si.add_argument("--search", default="", metavar="KEYS", help="as for `petlbench table`")
    si.add_argument("--reference", default=None, help="folder of published CSVs (default: the shipped copy)")
    si.add_argument("--no-plots", action="store_true", help="tables only (faster; no matplotlib needed)")
    si.set_defaults(func=cmd_site)
    b = sub.add_parser("bench", help="efficiency table: params, GMACs, latency, memory; merged vs unmerged")
    b.add_argument("--backbone", default="vit_base_patch16_224", help="timm model name (default: %(default)s)")
    b.add_argument("--methods", default="all", help="comma-separated method names, or 'all' (default)")
    b.add_argument("--batch-sizes", type=_csv_ints, default=(1, 64), help="comma-separated (default: 1,64)")
    b.add_argument("--img-size", type=int, default=224)
    b.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    b.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    b.add_argument("--cfg", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="method option, e.g. --cfg repadapter.dim=8 (repeatable)")
    b.add_argument("--min-time", type=float, default=2.0,
                   help="seconds of timing per model and batch size; sets the rounds (default: %(default)s)")
    b.add_argument("--min-repeats", type=int, default=3, help="at least this many timed rounds (default: 3)")
    b.add_argument("--forms", choices=["all", "merged", "unmerged"], default="all",
                   help="rows besides the plain backbone: both forms (default), or only merged / unmerged models")
    b.add_argument("--out", default=os.path.join("results", "efficiency"), help="output folder")
    b.add_argument("--name", default="", help="file stem of the table (default: the backbone, device and dtype), "
                                              "e.g. to keep a run over some methods beside the full one")
    b.add_argument("--quiet", action="store_true", help="no progress bars and no table on stdout")
    b.set_defaults(func=cmd_bench)
    bt = sub.add_parser("bench-train", help="training images/s of each method vs full fine-tuning")
    bt.add_argument("--backbone", default="vit_base_patch16_224")
    bt.add_argument("--methods", default="all")
    bt.add_argument("--batch-size", type=int, default=16)
    bt.add_argument("--img-size", type=int, default=224)
    bt.add_argument("--device", default="cpu")
    bt.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="auto")
    bt.add_argument("--steps", type=int, default=3)
    bt.add_argument("--out", default=os.path.join("results", "efficiency"))
    bt.add_argument("--quiet", action="store_true")
    bt.set_defaults(func=cmd_bench_train)
    cd = sub.add_parser("check-data", help="read every list of a task's splits, open every file, check sizes")
    which = cd.add_mutually_exclusive_group(required=True)
    which.add_argument("--task", help="e.g. vtab/cifar (see `petlbench tasks`)")
    which.add_argument("--benchmark", help="every task of a benchmark (see `petlbench benchmarks`)")
    cd.add_argument("--data-root", required=True, help="folder holding the dataset folders")
    cd.add_argument("--split", default="", help="comma-separated splits to check (default: all of the task's)")
    cd.add_argument("--workers", type=int, default=None, help="threads opening files (default: 2 per CPU, max 32)")
    cd.add_argument("--decode-videos", action="store_true",
                    help="also decode each video's first frame with decord (default: exists and is not empty)")
    cd.add_argument("--no-cache", action="store_true",
                    help="open every file again (default: files that passed before and are unchanged are "
                         "skipped; cache in $PETLBENCH_CACHE/check.sqlite, default ~/.cache/petlbench)")
    cd.add_argument("--show", type=int, default=10, help="bad files named per split (default: %(default)s)")
    cd.add_argument("--quiet", action="store_true", help="no progress bars")
    cd.set_defaults(func=cmd_check_data)
    ex = sub.add_parser("export", help="a run's tuned model out: merged as a timm checkpoint folder, on the Hugging "
                                       "Face Hub, or as a PEFT adapter (docs/export.md)")
    ex.add_argument("ref", metavar="RUN", help="a tuned .safetensors file, a record's .json file or a config hash")
    ex.add_argument("--merged", metavar="DIR", help="write the merged model as a timm folder (a configuration that "
                                                   "does not merge: its tuned file and a loader note)")
    ex.add_argument("--peft", metavar="DIR", help="write a lora or peft run as a PEFT adapter folder")
    ex.add_argument("--hub", metavar="REPO", help="push the merged model with timm's hub helpers (needs HF_TOKEN or "
                                                 "`hf auth login`)")
    ex.add_argument("--private", action="store_true", help="--hub: create the repository private")
    ex.add_argument("--weights", default=None,
                    help="the backbone weights the run was tuned on, as the run's weights=... (default: its record's)")
    _add_store_args(ex)
    ex.set_defaults(func=cmd_export)
    for command in sub.choices.values():  # -v after the command too; SUPPRESS: not resetting one given before it
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE)
    return p


_VERBOSE = "show the library's INFO log on stderr (an evaluation's top-1s, skipped runs, ...)"


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: a KeyboardInterrupt, so `except Exception` in library code does not
    swallow it and `finally` blocks (progress bars, atomic writes) run as on Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides after an option (`run --task T --method M lr=0.1 --force wd=0`): argparse takes one run of
    # positionals only, so the later ones come back here and join the overrides, in the order given
    if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides, extra = list(args.overrides) + extra, []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # -v: the library's INFO lines (petlbench.* only; other libraries stay at WARNING), printed above the bars
    logging.getLogger("petlbench").setLevel(logging.INFO if args.verbose else logging.NOTSET)
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (main() called from a thread): leave signals alone
        previous = None
    try:
        if not args.verbose:
            return args.func(args)
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm():
            return args.func(args)
    except PETLBenchError as e:
        print(f"petlbench: error: {e}", file=sys.stderr)
        return 2
    except _Terminated:
        print("petlbench: terminated", file=sys.stderr)
        return 143  # 128 + SIGTERM, what a shell reports for a process the signal killed
    except KeyboardInterrupt:
        print("petlbench: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
