"""Presentation of result DataFrames: Markdown and CSV (LaTeX and plots arrive with the results aggregator)."""
from __future__ import annotations

import json
import math
import os
from typing import Any

from .checkpoint import atomic_write_bytes


def _write_text(path: str, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write_bytes(path, write)


def _fmt_int(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{int(v):,}"


def _fmt(v: Any, digits: int) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    align = ["---:" if i else ":---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def efficiency_markdown(df, meta: dict) -> str:
    """The efficiency table as Markdown, with the conventions and the machine in a footer."""
    bss = [int(c.removeprefix("latency_ms_bs")) for c in df.columns if c.startswith("latency_ms_bs")]
    header = ["method", "form", "trainable params (head excl.)", "params (paper conv.)", "GMACs"]
    for bs in bss:
        header += [f"latency bs{bs} (ms)", f"x plain bs{bs}"]
    big = max(bss)
    header += [f"peak mem bs{big} (MB)", f"x plain mem bs{big}"]
    rows = []
    for r in df.itertuples(index=False):
        d = r._asdict()
        row = [d["method"], d["form"], _fmt_int(d["params_trainable"]), _fmt_int(d["params_paper"]),
               _fmt(d["gmacs"], 2)]
        for bs in bss:
            row += [_fmt(d[f"latency_ms_bs{bs}"], 1), _fmt(d[f"latency_ratio_bs{bs}"], 3)]
        row += [_fmt(d[f"peak_mem_mb_bs{big}"], 0), _fmt(d[f"peak_mem_ratio_bs{big}"], 3)]
        rows.append(row)
    env = meta["environment"]
    notes = sorted({f"{m}: {n}" for m, n in zip(df["method"], df["notes"]) if n})
    footer = [
        "",
        f"Backbone `{meta['backbone']}` at {meta['img_size']}px, random weights, {env['device']} {env['dtype']}, "
        f"torch {env['torch']}, timm {env['timm']}, {env['threads']} threads"
        + (f", {env['gpu']}" if "gpu" in env else "") + f". Made by `{meta['command']}` on {meta['date']}.",
        "",
        "- Params: trainable parameters with the classification head excluded. *paper conv.* follows the method's "
        "paper (RepAdapter counts adapter weights, not biases: 0.22M on ViT-B/16).",
        "- GMACs: multiply-adds of one image (torch FlopCounterMode FLOPs / 2, the fvcore convention of the papers).",
        "- Latency: median over interleaved rounds after warm-up; *x plain* is the median of same-round ratios to "
        "the plain backbone timed in the same run. Peak memory: parameters + peak allocation of one inference "
        "forward (CUDA allocator peak, or replayed torch.profiler allocation events on CPU).",
        "- *merged*: `petlbench.merge(model)`, a plain timm model; methods that add no module have one row.",
    ] + [f"- {n}" for n in notes]
    return f"# Efficiency: {meta['backbone']}\n\n" + markdown_table(header, rows) + "\n" + "\n".join(footer) + "\n"


def write_efficiency(df, meta: dict, out_dir: str, stem: str) -> dict[str, str]:
    """Write `<stem>.csv` (raw numbers), `<stem>.md` and `<stem>.json` (how it was made) under `out_dir`."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"{stem}.{ext}") for ext in ("csv", "md", "json")}
    _write_text(paths["csv"], df.to_csv(index=False, float_format="%.6g"))
    _write_text(paths["md"], efficiency_markdown(df, meta))
    _write_text(paths["json"], json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return paths
