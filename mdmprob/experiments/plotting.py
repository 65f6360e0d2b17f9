"""Figures for experiments: labelled axes with units, legends, titles; saved as PNG and SVG.

Experiments keep their config, grid, records and one call to a function here; every figure is
written by :func:`save_figure`."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (figures are only saved)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_grid(n_panels: int, cols: int, width: float = 4.6, height: float = 3.6):
    """A figure of ``n_panels`` axes in rows of ``cols`` (inches per panel: ``width x height``);
    unused cells hidden. Returns ``(fig, [axes])``."""
    plt = pyplot()
    cols = max(1, min(cols, n_panels))
    rows = math.ceil(n_panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n_panels])


def save_figure(fig, out: Path, *, dpi: int = 120, tight: bool = False) -> list[Path]:
    """Write ``fig`` as ``out.png`` and ``out.svg`` (``bbox_inches="tight"`` if ``tight``), close
    it, and return the two paths."""
    paths = [out.with_suffix(".png"), out.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p, dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    pyplot().close(fig)
    return paths


def line_panels(records, panels, *, x: str, series: str, xlabel: str, title: str, out: Path,
                logx: bool = False) -> list[Path]:
    """One panel per ``(metric, ylabel, logy)``: value vs ``x`` with ±1 se error bars, one line per
    value of the ``series`` column. Returns the PNG and SVG paths."""
    fig, axes = figure_grid(len(panels), 2, width=5.6, height=3.9)
    for ax, (metric, ylabel, logy) in zip(axes, panels, strict=False):
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
    return save_figure(fig, out)


# ----------------------------------------------------------------------------- decoding orders


COLORS = {"l2r": "tab:blue", "r2l": "tab:orange", "random": "tab:gray", "entropy": "tab:green",
          "max_prob": "tab:olive", "margin": "tab:cyan", "oracle_entropy": "tab:purple",
          "hard_first": "tab:red", "oracle_hard_first": "tab:brown", "confidence": "tab:pink"}

def panels(records) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for r in records:
        key = (r["structure"], r["family"])
        if key not in seen:
            seen.append(key)
    return seen


def series(records, structure, family, metric, order=None) -> dict[float, float]:
    return {float(r["level"]): r["value"] for r in records
            if r["structure"] == structure and r["family"] == family and r["metric"] == metric
            and (order is None or r.get("order") == order) and r["value"] is not None}


def order_lines(records, title: str, out: Path, a42: str, units: dict[str, str]) -> list[Path]:
    """One panel per (structure, family): J vs level (or λ) with the min-max band over all fixed
    orders, their median, and a line per named order."""
    shown = panels(records)
    fig, axes = figure_grid(len(shown), 4)
    handles: dict[str, Any] = {}
    for ax, (s, f) in zip(axes, shown, strict=True):
        lo, hi = series(records, s, f, "J_min"), series(records, s, f, "J_max")
        xs = sorted(lo)
        if xs:
            band = ax.fill_between(xs, [lo[x] for x in xs], [hi[x] for x in xs], color="0.8",
                                   alpha=0.7, label="all fixed orders (min–max)")
            handles.setdefault("all fixed orders (min–max)", band)
            med = series(records, s, f, "J_median")
            (line,) = ax.plot(xs, [med[x] for x in xs], "k--", lw=1, label="median fixed order")
            handles.setdefault("median fixed order", line)
        names = []
        for r in records:
            if r["structure"] == s and r["family"] == f and r["metric"] == "J" and \
                    r["order"] not in names:
                names.append(r["order"])
        for name in names:
            pts = series(records, s, f, "J", name)
            xs_n = sorted(pts)
            (line,) = ax.plot(xs_n, [pts[x] for x in xs_n], marker="o", ms=3.5, lw=1.3,
                              color=COLORS.get(name), label=name)
            handles.setdefault(name, line)
        ax.set_xlabel(units.get(f, "error level"), fontsize=8)
        ax.set_ylabel("J(π) = KL(q_π ‖ p) [nats]")
        sub = f"§4-F model (α = {_alpha(records, s, a42)})" if f == a42 else f
        ax.set_title(f"{s}\n{sub}", fontsize=9)
        ax.grid(alpha=0.3)
    fig.legend(list(handles.values()), list(handles), loc="lower center",
               ncol=min(6, len(handles)), fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return save_figure(fig, out, tight=True)


def _alpha(records, structure, a42):
    for r in records:
        if r["structure"] == structure and r["family"] == a42 and "alpha" in r:
            return f"{r['alpha']:g}"
    return "?"


def order_spreads(records, out: Path, a42: str, units: dict[str, str]) -> list[Path]:
    """Spread, relative spread and Easy-First rank vs error level; §4-F spread and advantages."""
    shown = panels(records)
    fam = [p for p in shown if p[1] != a42]
    a42_panels = [p for p in shown if p[1] == a42]
    n_panels = (3 if fam else 0) + len(a42_panels)
    if n_panels == 0:
        return []
    fig, axes = figure_grid(n_panels, 2, width=5.6, height=4.0)
    it = iter(axes)
    if fam:
        ax_s, ax_r, ax_k = next(it), next(it), next(it)
        for s, f in fam:
            label = f"{s} / {f}"
            for ax, metric in ((ax_s, "spread"), (ax_r, "spread_rel")):
                pts = series(records, s, f, metric)
                xs = sorted(pts)
                ax.plot(xs, [pts[x] for x in xs], marker="o", ms=3.5, label=label)
            (line,) = ax_k.plot(*_xy(series(records, s, f, "rank", "oracle_entropy")),
                                marker="o", ms=3.5, label=f"{label}: oracle_entropy")
            ax_k.plot(*_xy(series(records, s, f, "rank", "entropy")), marker="x", ls="--",
                      color=line.get_color(), label=f"{label}: entropy (model)")
        n_orders = max((r["value"] for r in records if r["metric"] == "n_orders"), default=0)
        ax_s.set_ylabel("spread = max_π J − min_π J [nats]")
        ax_s.set_title("spread over all fixed orders", fontsize=9)
        ax_r.set_ylabel("spread / median_π J [ratio]")
        ax_r.set_title("spread relative to the median order", fontsize=9)
        ax_k.set_ylabel(f"rank among {int(n_orders)} fixed orders [1 = best]")
        ax_k.set_title("Easy-First rank (lower is better)", fontsize=9)
        for ax in (ax_s, ax_r, ax_k):
            ax.set_xlabel("error level [family units: see order_under_error.png]", fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
    for (s, f), ax in zip(a42_panels, it, strict=False):
        ef = series(records, s, f, "J", "oracle_entropy")
        curves = {"spread over fixed orders": series(records, s, f, "spread"),
                  "J(oracle_hard_first) − J(Easy-First)": _diff(series(
                      records, s, f, "J", "oracle_hard_first"), ef),
                  "J(median fixed) − J(Easy-First)": _diff(series(records, s, f, "J_median"), ef),
                  "J(best fixed) − J(Easy-First)": _diff(series(records, s, f, "J_min"), ef)}
        for label, pts in curves.items():
            ax.plot(*_xy(pts), marker="o", ms=3.5, label=label)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xlabel(units[a42], fontsize=8)
        ax.set_ylabel("difference of J [nats]")
        ax.set_title(f"{s}: §4-F model, α = {_alpha(records, s, a42)} "
                     "(Easy-First = oracle_entropy)",
                     fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Order sensitivity: spread across orders and the Easy-First advantage")
    fig.tight_layout()
    return save_figure(fig, out, tight=True)


def _xy(pts: dict[float, float]):
    xs = sorted(pts)
    return xs, [pts[x] for x in xs]


def _diff(a: dict[float, float], b: dict[float, float]) -> dict[float, float]:
    return {x: a[x] - b[x] for x in a if x in b}


# ----------------------------------------------------------------------------- orders x parallelism
def k_grid(records, metric: str, ylabel: str, title: str, out: Path) -> list[Path]:
    """Panels per (error level, structure): ``metric`` vs k, one line per selection rule."""
    plt = pyplot()
    structures, levels, rules = [], [], []
    for r in records:
        for seq, key in ((structures, "structure"), (levels, "level"), (rules, "rule")):
            if r[key] not in seq:
                seq.append(r[key])
    levels.sort()
    fig, axes = plt.subplots(len(levels), len(structures), squeeze=False,
                             figsize=(4.6 * len(structures), 3.5 * len(levels)))
    family = next((r["family"] for r in records), "")
    for i, level in enumerate(levels):
        for j, s in enumerate(structures):
            ax = axes[i][j]
            for rule in rules:
                pts = sorted((r["k"], r["value"]) for r in records
                             if r["metric"] == metric and r["structure"] == s and
                             r["level"] == level and r["rule"] == rule and r["value"] is not None)
                if not pts:
                    continue
                ys = [y if math.isfinite(y) else float("nan") for _, y in pts]
                ax.plot([k for k, _ in pts], ys, marker="o", ms=4, color=COLORS.get(rule),
                        label=rule)
            ax.set_xlabel("tokens committed per step k [tokens]")
            ax.set_ylabel(ylabel, fontsize=8)
            ax.set_title(f"{s}\n{family} level {level:g}", fontsize=9)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
            ax.legend(title="selection rule", fontsize=7, title_fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out)
