"""The command line: the only place that parses argv or prints.

    petlbench methods                      list the registered methods, their options and defaults
    petlbench bench [--backbone NAME] ...  the efficiency table (params, GMACs, latency, memory; merged vs not)
"""
from __future__ import annotations

import argparse
import datetime
import logging
import os
import shlex
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


class _Bar:
    """One tqdm bar per stage, on stderr."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar, self.stage = enabled, None, None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage, self.bar = stage, tqdm(total=total, desc=stage, leave=False, file=sys.stderr)
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_methods(args: argparse.Namespace) -> int:
    from .api import list_methods
    from .method import METHODS

    for name in list_methods():
        d = METHODS.get(name).describe()
        opts = ", ".join(f"{k}={v!r}" for k, v in d["defaults"].items()) or "no options"
        merge = "mergeable" if d["mergeable"] else "not mergeable"
        print(f"{name:12s} {merge:14s} families={','.join(d['families'])}  {opts}  [{d['paper']}]")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .api import get_method, list_methods
    from .backbones import check_backbone
    from .measure import efficiency_table, environment
    from .report import write_efficiency

    methods = list_methods() if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    cfgs = _method_cfgs(args.cfg, methods)
    check_backbone(args.backbone)
    for m in methods:  # bad names and options fail here, before any model is built
        get_method(m, cfgs.get(m))
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise PETLBenchError(f"--device {args.device}: no CUDA device is available here; use --device cpu")
    bar = _Bar(not args.quiet)
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        df = efficiency_table(args.backbone, methods, args.batch_sizes, args.img_size, args.device, args.dtype,
                              cfgs, args.min_time, args.min_repeats, progress=bar)
    finally:
        bar.close()
    stem = args.backbone if (args.device, args.dtype) == ("cpu", "fp32") else \
        f"{args.backbone}_{args.device.replace(':', '')}_{args.dtype}"
    meta = {"backbone": args.backbone, "img_size": args.img_size, "batch_sizes": list(args.batch_sizes),
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="petlbench", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("methods", help="list registered methods")
    m.set_defaults(func=cmd_methods)
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
    b.add_argument("--out", default=os.path.join("results", "efficiency"), help="output folder")
    b.add_argument("--quiet", action="store_true", help="no progress bars and no table on stdout")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except PETLBenchError as e:
        print(f"petlbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("petlbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
