"""Plots from `tables.Table`s and efficiency CSVs, as PNG and PDF: accuracy vs trainable parameters, latency vs
batch size (merged and unmerged); a benchmark draws its own others (`Benchmark.plots`) with `pyplot` and `save`.
Measured points are filled, published ones hollow and grey, so the two never read as one series."""
from __future__ import annotations

import math

from .tables import Cell, Table

PUBLISHED_STYLE = {"marker": "s", "facecolors": "none", "edgecolors": "0.45"}


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    try:
        import matplotlib
    except ImportError:
        from .errors import PETLBenchError

        raise PETLBenchError("plots need matplotlib: pip install 'petlbench[plots]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, stem: str) -> list[str]:
    """`stem.png` and `stem.pdf`, each written to a temporary file of its own and renamed (atomic.py): no
    half-written plot, and two `petlbench plot` commands at once never write into one temporary file."""
    from .atomic import atomic_write_bytes

    paths = []
    for ext in ("png", "pdf"):
        path = f"{stem}.{ext}"
        # no creation date in the PDF: regenerating an unchanged plot leaves the file unchanged
        atomic_write_bytes(path, lambda tmp, ext=ext: fig.savefig(
            tmp, format=ext, dpi=150 if ext == "png" else None,
            metadata={"CreationDate": None} if ext == "pdf" else None))
        paths.append(path)
    pyplot().close(fig)
    return paths


def accuracy_vs_params(table: Table, stem: str, key: str | None = None, metric: str = "top-1 (%)") -> list[str]:
    """One point per row: x = trainable parameters (paper convention, head excluded; log scale), y = column `key`,
    by default the average the table leads with (average of group means where there are groups, else the plain
    mean)."""
    plt = pyplot()
    if key is None:
        key = "mean:groups" if any(c.key == "mean:groups" for c in table.columns) else "mean:all"
    ylabel = next(c.header for c in table.columns if c.key == key)
    pts = [(r, r.params_m, r.cells.get(key, Cell())) for r in table.rows if r.source != "delta"]
    pts = [(r, p, c) for r, p, c in pts if p is not None and not math.isnan(p) and not c.missing]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    positive = [p for _, p, _ in pts if p > 0]
    floor = min(positive) / 4 if positive else 1e-3
    zero = False
    for r, p, c in pts:
        x = p * 1e6 if p > 0 else floor * 1e6
        zero |= p <= 0
        ours = r.source == "ours"
        if ours:
            ax.scatter(x, c.mean, color="C0", zorder=3, marker="x" if "random init" in r.label else "o")
            if c.std is not None:
                ax.errorbar(x, c.mean, yerr=c.std, color="C0", capsize=2, lw=1)
        else:
            ax.scatter(x, c.mean, **PUBLISHED_STYLE, zorder=2)
        ax.annotate(r.label.removesuffix(" (published)"), (x, c.mean), fontsize=6.5,
                    xytext=(4, 3 if len(ax.texts) % 2 else -8), textcoords="offset points",
                    color="black" if ours else "0.4")
    ax.scatter([], [], color="C0", label="measured (this suite)")
    if any(r.source != "ours" for r, _, _ in pts):
        ax.scatter([], [], label="published", **PUBLISHED_STYLE)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters, head excluded (log scale)" +
                  ("; 0 plotted at the left edge" if zero else ""))
    ax.set_ylabel(f"{metric}, {ylabel if metric != 'top-1 (%)' else ylabel.lower()}")
    ax.set_title(table.title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    if pts:
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no rows with parameters and a complete mean yet", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    return save(fig, stem)


def latency_vs_batch(df, meta: dict, stem: str) -> list[str]:
    """Latency per image (ms) vs batch size, one line per method and form (merged dashed), plain in black."""
    plt = pyplot()
    bss = sorted(int(c.removeprefix("latency_ms_bs")) for c in df.columns if c.startswith("latency_ms_bs"))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    cmap = plt.get_cmap("tab20")
    colors: dict[str, tuple] = {}
    for r in df.to_dict("records"):
        ys = [r[f"latency_ms_bs{bs}"] / bs for bs in bss]
        plain = r["form"] == "plain"
        color = "black" if plain else colors.setdefault(r["method"], cmap(2 * (len(colors) % 10)))
        ax.plot(bss, ys, marker="s" if r["form"] == "merged" else "o", ms=4, color=color,
                ls="--" if r["form"] == "merged" else "-", lw=2 if plain else 1,
                label="plain backbone" if plain else f"{r['method']} ({r['form']})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(bss, [str(b) for b in bss])
    ax.set_xlabel("batch size (images)")
    ax.set_ylabel("latency per image (ms)")
    env = meta.get("environment", {})
    ax.set_title(f"Inference latency: {meta.get('backbone')} at {meta.get('img_size')}px, "
                 f"{env.get('gpu') or env.get('device')} {env.get('dtype', '')}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save(fig, stem)
