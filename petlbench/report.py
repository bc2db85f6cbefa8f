"""Presentation of result DataFrames: Markdown and CSV (LaTeX and plots arrive with the results aggregator)."""
from __future__ import annotations

import json
import math
import os
from typing import Any

from .checkpoint import atomic_write_text as write_text




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
            spread = (f" [{_fmt(d[f'latency_ratio_q1_bs{bs}'], 2)}-{_fmt(d[f'latency_ratio_q3_bs{bs}'], 2)}]"
                      if d["form"] != "plain" and f"latency_ratio_q1_bs{bs}" in d else "")
            row += [_fmt(d[f"latency_ms_bs{bs}"], 1), _fmt(d[f"latency_ratio_bs{bs}"], 3) + spread]
        row += [_fmt(d[f"peak_mem_mb_bs{big}"], 0), _fmt(d[f"peak_mem_ratio_bs{big}"], 3)]
        rows.append(row)
    env = meta["environment"]
    notes = sorted({f"{m}: {n}" for m, n in zip(df["method"], df["notes"]) if n})
    footer = [
        "",
        f"Backbone `{meta['backbone']}` at {meta['img_size']}px, random weights, {env['device']} {env['dtype']}, "
        f"torch {env['torch']}, timm {env['timm']}, {env['threads']} threads, {meta.get('rounds', '')}"
        + (f", {env['gpu']}" if "gpu" in env else "") + f". Made by `{meta['command']}` on {meta['date']}.",
        "",
        "- Params: trainable parameters with the classification head excluded. *paper conv.* follows the method's "
        "paper (RepAdapter counts adapter weights, not biases: 0.22M on ViT-B/16).",
        "- GMACs: multiply-adds of one image (torch FlopCounterMode FLOPs / 2, the fvcore convention of the papers).",
        "- Latency: median over interleaved rounds after warm-up; *x plain* is the median of same-round ratios to "
        "the plain backbone timed in the same run, [first-third quartile] of those ratios beside it. Peak memory: parameters + peak allocation of one inference "
        "forward (CUDA allocator peak, or replayed torch.profiler allocation events on CPU).",
        "- *merged*: `petlbench.merge(model)`, a plain timm model; methods that add no module have one row.",
    ] + [f"- {n}" for n in notes]
    return f"# Efficiency: {meta['backbone']}\n\n" + markdown_table(header, rows) + "\n" + "\n".join(footer) + "\n"


def write_efficiency(df, meta: dict, out_dir: str, stem: str) -> dict[str, str]:
    """Write `<stem>.csv` (raw numbers), `<stem>.md` and `<stem>.json` (how it was made) under `out_dir`."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"{stem}.{ext}") for ext in ("csv", "md", "json")}
    write_text(paths["csv"], df.to_csv(index=False, float_format="%.6g"))
    write_text(paths["md"], efficiency_markdown(df, meta))
    write_text(paths["json"], json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return paths


def mini_frame(records: list[dict]):
    """One row per (method, backbone init): top-1 per mini task, group means, trainable parameters."""
    import pandas as pd

    rows = []
    for r in records:
        rows.append({"method": r["method"], "init": "random" if r["protocol"]["weights"] in ("", "none", "random")
                     else "pretrained", "task": r["task"].split("/", 1)[1], "group": r.get("group", ""),
                     "top1": r["value"], "params": r["params"]["trainable"],
                     "backbone_params": r["params"]["backbone_total"] - r["params"]["head"]})
    df = pd.DataFrame(rows)
    if df.empty:
        return df, []
    tasks = list(dict.fromkeys(df.sort_values(["group", "task"]).task))
    wide = df.pivot_table(index=["init", "method"], columns="task", values="top1", aggfunc="mean")
    wide = wide.reindex(columns=tasks)
    groups = df.drop_duplicates("task").set_index("task")["group"]
    for g in sorted(set(groups)):
        wide[f"mean {g}"] = wide[[t for t in tasks if groups[t] == g]].mean(axis=1, skipna=False)
    gcols = [c for c in wide.columns if str(c).startswith("mean ")]
    wide["mean of groups"] = wide[gcols].mean(axis=1, skipna=False)
    wide["mean of tasks"] = wide[tasks].mean(axis=1, skipna=False)
    meta = df.groupby(["init", "method"]).agg(params=("params", "max"), backbone=("backbone_params", "max"))
    wide = wide.join(meta)
    wide["params %"] = 100 * wide["params"] / wide["backbone"]
    order = {"pretrained": 0, "random": 1}
    wide = wide.reset_index()
    wide["_o"] = wide["init"].map(order)
    wide["_b"] = ~wide["method"].isin(["full", "linear"])
    wide = wide.sort_values(["_o", "_b", "method"]).drop(columns=["_o", "_b"]).reset_index(drop=True)
    return wide, tasks


def mini_outputs(records: list[dict], out_dir: str, quick: bool, n_planned: int) -> dict[str, str]:
    """mini.md / mini.csv / mini.png (accuracy vs trainable parameters) from the mini records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wide, tasks = mini_frame(records)
    os.makedirs(out_dir, exist_ok=True)
    stem = "mini_quick" if quick else "mini"
    paths = {k: os.path.join(out_dir, f"{stem}.{k}") for k in ("csv", "md", "png")}
    write_text(paths["csv"], wide.to_csv(index=False, float_format="%.4g"))
    header = ["backbone", "method", "trainable params", "% of backbone"] + tasks + \
        [c for c in wide.columns if str(c).startswith("mean")]
    rows = []
    for r in wide.to_dict("records"):
        rows.append([r["init"], r["method"], _fmt_int(r["params"]), _fmt(r["params %"], 2)] +
                    [_fmt(r[t], 1) for t in tasks] + [_fmt(r[c], 1) for c in header[4 + len(tasks):]])
    title = "Offline mini-benchmark" + (" (quick smoke run: 2 epochs, not a result)" if quick else "")
    foot = [
        "",
        f"Top-1 (%) on the test split, {len(records)} of {n_planned} planned runs present. Backbone "
        "`petlbench_vit_mini` (32 px ViT, 0.67M parameters) pretrained by scripts/pretrain_mini.py on a "
        "procedural upstream task (*pretrained*), or randomly initialised (*random*). Selection: best of the "
        "periodic test evaluations (the VTAB-1k reproduction protocol). Params: trainable, head excluded.",
        "This is an end-to-end check on generated data, not VTAB-1k: it says nothing about accuracy on real "
        "benchmarks.",
    ]
    write_text(paths["md"], f"# {title}\n\n" + markdown_table(header, rows) + "\n" + "\n".join(foot) + "\n")
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for init, marker in (("pretrained", "o"), ("random", "x")):
        sub = wide[wide["init"] == init]
        ax.scatter(sub["params"].clip(lower=1), sub["mean of tasks"], marker=marker, label=f"{init} backbone")
        for r in sub.to_dict("records"):
            ax.annotate(r["method"], (max(r["params"], 1), r["mean of tasks"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters, head excluded (log scale; linear probe at 1)")
    ax.set_ylabel("mean top-1 over mini tasks (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths["png"])
    plt.close(fig)
    return paths
