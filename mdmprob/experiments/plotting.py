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


def shared_legend(fig, axes, ncol: int, fontsize: int = 8) -> None:
    """One legend below the panels with each label once (the first panel's handle for it)."""
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside lower center", ncol=min(ncol, len(labels)),
               fontsize=fontsize)


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


# ----------------------------------------------------------------------------- remasking
def remasking_chain(records, config, title: str, out: Path) -> list[Path]:
    """Remasking: violation rate and KL(q^(n) ‖ p) vs sweeps n, one column per η."""
    plt = pyplot()
    from matplotlib.lines import Line2D

    etas = sorted({r["eta"] for r in records})
    lines = sorted({(r["kernel"], r["k"]) for r in records})
    colors = {line: plt.cm.tab10(i % 10) for i, line in enumerate(lines)}
    finite = [r["value"] for r in records if r["metric"] == "kl_qp" and
              math.isfinite(r["value"])]
    top = max(finite, default=1.0)
    y_inf = 10 ** math.ceil(math.log10(max(top, 1e-2)) + 0.5)  # the "+inf" row, above all
    fig, axes = plt.subplots(2, len(etas), figsize=(5.6 * len(etas), 8.2), squeeze=False)
    sweeps = sorted({r["n"] for r in records if r["metric"] == "violation"})
    for col, eta in enumerate(etas):
        ax_v, ax_k = axes[0, col], axes[1, col]
        for j, line in enumerate(lines):
            kernel, k = line
            label = f"k = {k}" if len(config.kernels) == 1 else f"{kernel}, k = {k}"
            sel = [r for r in records if r["eta"] == eta and r["kernel"] == kernel and
                   r["k"] == k and r["n"] is not None]
            viol = sorted((r["n"], r["value"]) for r in sel if r["metric"] == "violation")
            kl = sorted((r["n"], r["value"]) for r in sel if r["metric"] == "kl_qp")
            if viol:
                ax_v.plot(*zip(*viol, strict=True), marker="o", color=colors[line], label=label)
            if kl:
                xs = [x for x, _ in kl]
                ys = [y if math.isfinite(y) else math.nan for _, y in kl]
                ax_k.plot(xs, ys, marker="o", color=colors[line], label=label)
                inf_x = [x for x, y in kl if y == math.inf]
                if inf_x:
                    jitter = 1 + 0.06 * (j - (len(lines) - 1) / 2)
                    ax_k.plot([x * jitter if x else 0.06 * (j - (len(lines) - 1) / 2)
                               for x in inf_x], [y_inf] * len(inf_x), "^", markersize=9,
                              color=colors[line], markeredgecolor="black", linestyle="none")
        target = [r["value"] for r in records if r["eta"] == eta and
                  r["metric"] == "violation_target"]
        if target:
            ax_v.axhline(target[0], color="gray", linestyle=":", label=f"target p: {target[0]:.2g}")
        ax_k.axhline(y_inf, color="red", linestyle="--", linewidth=0.8)
        ax_k.text(0.5, y_inf * 1.35, "KL = +∞ (▲ markers)", color="red", va="bottom",
                  ha="center", fontsize=8,
                  transform=ax_k.get_yaxis_transform())
        for ax in (ax_v, ax_k):
            ax.set_xscale("symlog", linthresh=1)
            ax.set_xlim(-0.25, max(sweeps) * 1.25 if max(sweeps) > 0 else 1)
            ax.set_xticks(sweeps)
            ax.set_xticklabels([str(n) for n in sweeps])
            ax.set_xlabel("remasking sweeps n [kernel steps]")
            ax.grid(alpha=0.3)
        ax_v.set_ylabel("parity-violation rate of q^(n) [fraction]")
        ax_v.set_ylim(-0.02, 0.6)
        ax_v.set_title(f"η = {eta:g}: violation", fontsize=10)
        ax_k.set_yscale("symlog", linthresh=1e-3)
        ax_k.set_ylim(0, y_inf * 3)
        ax_k.set_ylabel("KL(q^(n) ‖ p) [nats]")
        ax_k.set_title(f"η = {eta:g}: sampling risk", fontsize=10)
        handles, labels = ax_v.get_legend_handles_labels()
        ax_v.legend(fontsize=8)
        inf_handle = Line2D([], [], marker="^", color="gray", markeredgecolor="black",
                            linestyle="none", markersize=9, label="KL = +∞")
        handles_k, _ = ax_k.get_legend_handles_labels()
        ax_k.legend(handles=handles_k + [inf_handle], fontsize=8, loc="center right")
    fig.suptitle(f"{title}\nexact chain q^(n) = q^(0) K^n, B = {config.block_size}, "
                 "exact conditionals", fontsize=10.5)
    fig.tight_layout()
    return save_figure(fig, out)

def remasking_diagnostics(records, config, out: Path) -> list[Path]:
    """Remasking: bulk ESS and R-hat of each kernel (bars per functional and η)."""
    plt = pyplot()

    etas = sorted({r["eta"] for r in records})
    lines = sorted({(r["kernel"], r["k"]) for r in records})
    panels = [("ess_bulk", "bulk ESS [effective draws]"), ("rhat", "R-hat [ratio]")]
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4), squeeze=False)
    width = 0.8 / (2 * len(etas))
    for ax, (stat, ylabel) in zip(axes.flat, panels, strict=True):
        finite = [r["value"] for r in records if r["metric"].startswith(stat + "_") and
                  r["value"] is not None and math.isfinite(r["value"])]
        cap = 10 * max(finite + [10.0])  # where an infinite value (R-hat = inf) is drawn
        for e, eta in enumerate(etas):
            for f, functional in enumerate(("log_p", "violation")):
                values = []
                for kernel, k in lines:
                    v = [r["value"] for r in records if r["metric"] == f"{stat}_{functional}"
                         and r["eta"] == eta and r["kernel"] == kernel and r["k"] == k]
                    values.append(v[0] if v and v[0] is not None else math.nan)
                offset = (2 * e + f - (2 * len(etas) - 1) / 2) * width
                xs = [i + offset for i in range(len(lines))]
                base = 0.5 if stat == "rhat" else 0.0
                heights = [0 if math.isnan(v) else min(v, cap) - base for v in values]
                ax.bar(xs, heights, width, bottom=base, label=f"{functional}, η = {eta:g}",
                       hatch="//" if f else None, alpha=0.85)
                for x, v in zip(xs, values, strict=True):
                    if math.isnan(v) or v == math.inf:
                        ax.text(x, base if math.isnan(v) else cap, "n/a" if math.isnan(v)
                                else "+∞", ha="center", va="bottom", fontsize=7,
                                rotation=90 if math.isnan(v) else 0)
        if stat == "rhat":
            ax.axhline(1.01, color="red", linestyle="--", linewidth=0.8, label="R-hat = 1.01")
            ax.set_yscale("log")
        else:
            ax.axhline(config.chains * config.draws, color="gray", linestyle=":",
                       linewidth=0.8, label="chains × draws")
            ax.set_yscale("symlog", linthresh=10)
        ax.set_xticks(range(len(lines)))
        ax.set_xticklabels([f"k = {k}" if len(config.kernels) == 1 else f"{kern}\nk = {k}"
                            for kern, k in lines])
        ax.set_xlabel("remasking kernel R_k [positions redrawn per step]")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7.5)
    fig.suptitle(f"MCMC diagnostics of R_k (first block, {config.chains} chains × "
                 f"{config.draws} draws; n/a: constant trace; +∞: chains stuck apart)",
                 fontsize=10.5)
    fig.tight_layout()
    return save_figure(fig, out)


# ----------------------------------------------------------------------------- verification cost
def verification_cost(records, config, title: str, out: Path) -> list[Path]:
    """Verification cost: optimal M, its bound E[exp(forward TC)] and rejection proposals vs B."""
    from matplotlib.lines import Line2D

    plt = pyplot()

    etas = sorted({r["eta"] for r in records})
    sizes = sorted({r["block_size"] for r in records})
    colors = {e: plt.cm.viridis(i / max(1, len(etas) - 1) * 0.85) for i, e in enumerate(etas)}
    panels = [("mean", "mean over blocks"), (1, "block 1 (prefix empty: w = prior)")]
    if any(r["block"] == 2 for r in records):
        panels.append((2, "block 2 (prefix = block 1)"))
    styles = {"m": ("-", "o", "optimal M: E[sup p/q]"),
              "exp_forward_tc": ("--", "s", "bound E[exp(forward TC)] (Prop. 5.1)"),
              "proposals": ("none", "x", "rejection(): mean proposals (±1 se)")}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.4 * len(panels), 5.6), squeeze=False)
    for ax, (block, label) in zip(axes.flat, panels, strict=True):
        for i, eta in enumerate(etas):
            shift = 0.05 * (i - (len(etas) - 1) / 2)  # etas side by side, not on top
            for metric, (ls, marker, _) in styles.items():
                pts = sorted((r["block_size"], r["value"], r["se"] or 0.0) for r in records
                             if r["metric"] == metric and r["eta"] == eta and
                             r["block"] == block)
                if not pts:
                    continue
                xs, ys, es = zip(*pts, strict=True)
                ax.errorbar([x + shift for x in xs], ys, yerr=es, linestyle=ls, marker=marker,
                            color=colors[eta], capsize=3, markersize=9 if marker == "x" else 5,
                            alpha=0.85)
        ax.plot(sizes, [2.0 ** b for b in sizes], ":", color="black", marker="d")
        ax.set_yscale("log")
        ax.set_xticks(sizes)
        ax.set_xlabel("block size B [tokens]")
        ax.set_ylabel("expected proposals per block [draws]")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    handles = [Line2D([], [], color=colors[e], lw=2, label=f"η = {e:g}") for e in etas]
    handles += [Line2D([], [], color="gray", linestyle=ls, marker=mk, label=lab)
                for ls, mk, lab in styles.values()]
    handles.append(Line2D([], [], color="black", linestyle=":", marker="d",
                          label="enumeration: 2^B table entries (verified decoder)"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8.5)
    fig.suptitle(title + "\nexpectations over true prefixes x_P ~ p; Block-HMM, "
                 f"{config.n_blocks} blocks", fontsize=10.5)
    fig.tight_layout(rect=(0, 0.11, 1, 1))
    return save_figure(fig, out)


# ----------------------------------------------------------------------------- arithmetic
def arithmetic_orders(records, config, title: str, labels: dict[str, str], out: Path) -> list[Path]:
    """Addition across the ladder: (a) spread of k = 1 accuracy across orders vs the exact model
    error, one line per task D (rung means, error bars: standard error over training seeds); (b)
    overall and (c) hard-category (hard, extreme, edge; seeds pooled) k = 1 accuracy vs model error
    per order, for the smallest D."""
    from mdmprob.tasks.addition import HARD_CATEGORIES, rung_table

    plt = pyplot()
    rows = [r for r in rung_table(records, k=1) if math.isfinite(r["error"])]
    if not rows:
        return []
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    for j, D in enumerate(sorted({r["D"] for r in rows})):
        pts = sorted((r for r in rows if r["D"] == D), key=lambda r: r["error"])
        axes[0].errorbar([r["error"] for r in pts], [r["spread"] for r in pts],
                         xerr=[_se0(r["error_se"]) for r in pts],
                         yerr=[_se0(r["spread_se"]) for r in pts], marker="o", capsize=3,
                         color=f"C{j}", label=f"D = {D}: best - worst order")
        axes[0].plot([r["error"] for r in pts], [abs(r["gap"]) for r in pts], ls=":", marker="x",
                     color=f"C{j}", label=f"D = {D}: |R2L - L2R|")
    small = sorted((r for r in rows if r["D"] == min(r["D"] for r in rows)), key=lambda r: r["error"])
    xs = [r["error"] for r in small]
    for order in config.orders:
        if order not in small[0]["orders"]:
            continue
        axes[1].errorbar(xs, [r["orders"][order][0] for r in small],
                         yerr=[_se0(r["orders"][order][1]) for r in small], marker="o",
                         capsize=3, label=labels[order])
        rate = [r["hard"][order][0] / max(r["hard"][order][1], 1) for r in small]
        se = [math.sqrt(p * (1 - p) / max(r["hard"][order][1], 1)) for p, r in zip(rate, small,
                                                                                   strict=True)]
        axes[2].errorbar(xs, rate, yerr=se, marker="o", capsize=3, label=labels[order])
    D = small[0]["D"]
    texts = [("order spread of k = 1 accuracy [fraction]", "order spread vs model error"),
             ("exact-match accuracy, k = 1 [fraction]", f"D = {D}: overall accuracy"),
             ("exact-match accuracy, k = 1 [fraction]",
              f"D = {D}: {' + '.join(HARD_CATEGORIES)} (seeds pooled)")]
    for ax, (ylabel, name) in zip(axes, texts, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("model error: mean KL(p || p_theta) per answer digit [nats]")
        ax.set_ylabel(ylabel)
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="error bars: 1 se")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out)


def _se0(se: float) -> float:
    return se if math.isfinite(se) else 0.0

