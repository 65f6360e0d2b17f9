"""Figures for experiments: labelled axes with units, legends, titles; saved as PNG and SVG."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path


def line_panels(records, panels, *, x: str, series: str, xlabel: str, title: str, out: Path,
                logx: bool = False) -> list[Path]:
    """One panel per ``(metric, ylabel, logy)``: value vs ``x`` with ±1 se error bars, one line per
    value of the ``series`` column. Returns the PNG and SVG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(len(panels), 2)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 3.9 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (metric, ylabel, logy) in zip(axes.flat, panels, strict=False):
        lines = defaultdict(list)
        for r in records:
            if r["metric"] == metric and r.get(x) is not None:
                lines[r[series]].append((float(r[x]), r["value"], r["se"] or 0.0))
        for name, points in sorted(lines.items()):
            points.sort()
            xs = [p[0] for p in points]
            ys = [p[1] if p[1] is not None and math.isfinite(p[1]) else float("nan")
                  for p in points]
            es = [p[2] for p in points]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=str(name))
            infinite = [p[0] for p in points if p[1] == math.inf]
            if infinite:
                ax.plot(infinite, [ax.get_ylim()[1]] * len(infinite), "^", color="red",
                        label=f"{name}: +inf")
        if logx:
            xs = [float(r[x]) for r in records if r["metric"] == metric and r.get(x) is not None]
            positive = [v for v in xs if v > 0]
            if len(positive) < len(xs) and positive:  # eta = 0 beside small etas
                ax.set_xscale("symlog", linthresh=min(positive))
            elif positive:
                ax.set_xscale("log")
        if logy and any(r["metric"] == metric and (r["value"] or 0) > 0 for r in records):
            ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    paths = [out.with_suffix(".png"), out.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p, dpi=120)
    plt.close(fig)
    return paths
