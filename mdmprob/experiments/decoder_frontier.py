"""Every decoder preset on the zoo: KL(q‖p) and incoherence against NFE, with a Pareto plot, the
optimal mean-field frontier (:mod:`mdmprob.schedule`) and each decoder's regret to it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdmprob.errors import MdmprobError
from mdmprob.experiments.base import (
    Experiment,
    check_budget,
    check_decoder_specs,
    check_numbers,
    check_structure_specs,
    mc_bytes_per_sample,
    parse_spec,
    record,
    records_from,
)


@dataclass
class Config:
    """structures / decoders: specs ``name:key=value:key=value``; exact mode where V^n <= exact_limit,
    else Monte Carlo with ``samples`` sequences. On structures small enough for the dynamic
    programme ((V+1)^n <= ``mdmprob.schedule.MAX_STATES``) the optimal mean-field frontier is
    recorded (decoder ``optimal``) and every decoder's regret to the frontier of its own windows
    (negative: below every deterministic mean-field policy, as verifiers and correctors can be).
    Every decoder samples its values (T = 1 where a preset's default is greedy): KL(q‖p) is a
    sampling risk, and a greedy decoder's q is a point mass."""

    structures: tuple = ("block_hmm:n_blocks=2:block_size=4:eta=1e-8", "parity_block:k=6:eta=1e-8",
                         "markov_chain:length=6:vocab=3:block_size=3", "ising_grid:rows=2:cols=3",
                         "block_hmm:eta=1e-8")
    decoders: tuple = ("mean_field_blocks", "verified_blocks", "sequential:order=l2r",
                       "sequential:order=entropy", "llada:steps=2", "llada:steps=4",
                       "llada:steps=2:remasking=random", "fast_dllm_threshold:tau=0.9",
                       "fast_dllm_factor:f=1.0", "eb_sampler:gamma=0.5", "mdlm:steps=3",
                       "rejection", "speculative", "importance:particles=8",
                       "gibbs_remask:k=1:sweeps=1", "remdm:steps=4:eta=0.1",
                       "dream:steps=4:alg=entropy", "dus", "pc_sampler:steps=4",
                       "prophet:steps=4:temperature=1", "remdm_loop:steps=6",
                       "klass:steps=3:steps_per=window:conf_threshold=0.7:kl_threshold=0.05:"
                       "temperature=1", "remdm_conf:steps=4", "wino:temperature=1",
                       "p2:steps=4:eta=2.0:temperature=1", "dapd", "dawn", "learned_policy",
                       "joint_proposal", "self_speculative")
    samples: int = 400
    exact_limit: int = 4096
    frontier: bool = True  # the optimal mean-field frontier and each decoder's regret to it

    def check(self):
        check_structure_specs("structures", self.structures)
        check_decoder_specs("decoders", self.decoders)
        check_numbers("samples", self.samples, low=2, integer=True)
        check_numbers("exact_limit", self.exact_limit, low=1, integer=True)
        if not isinstance(self.frontier, bool):
            raise MdmprobError(f"frontier={self.frontier!r} must be true or false")
        check_budget("decoder-frontier", self.samples, mc_bytes_per_sample(64, 4), "lower samples")


class DecoderFrontier(Experiment):
    name = "decoder-frontier"
    title = "Decoder frontier: KL(q‖p) and incoherence against denoiser calls (NFE)"
    Config = Config
    quick = {"structures": ("block_hmm:n_blocks=2:block_size=3:eta=1e-8", "agreement:delta=0.01"),
             "decoders": ("mean_field_blocks", "verified_blocks", "sequential:order=entropy",
                          "llada:steps=2"), "samples": 100}

    def settings(self, config: Config):
        first = ("optimal",) if config.frontier else ()
        return [{"structure": s, "decoder": d} for s in config.structures
                for d in first + tuple(config.decoders)]

    def run_setting(self, config: Config, setting, seed: int):
        from mdmprob.decoders import get_decoder
        from mdmprob.denoisers import Oracle
        from mdmprob.evaluate import evaluate
        from mdmprob.structure import load_model

        model, model_params = parse_spec(setting["structure"])
        s = load_model(model, **model_params)
        if setting["decoder"] == "optimal":
            points = _frontier(setting["structure"], s, s.blocks)
            return [record(setting, metric, getattr(p, attr), vertex=k)
                    for k, p in enumerate(points or [])
                    for metric, attr in (("frontier_nfe", "nfe"), ("frontier_kl_qp", "kl"))]
        name, params = parse_spec(setting["decoder"])
        decoder = get_decoder(name, **params)
        oracle = Oracle(s)
        ev = evaluate(s, decoder, oracle, mode="auto", samples=config.samples, seed=seed,
                      exact_limit=config.exact_limit)
        keys = ("kl_qp", "kl_pq", "tv", "incoherence", "violation", "nfe")
        if ev.get("kl_qp_lower") != ev.get("kl_qp_upper"):  # a KL interval (mdmprob.bounds)
            keys += ("kl_qp_lower", "kl_qp_upper", "kl_pq_upper")
        out = records_from(setting, ev, keys, mode=ev.mode)
        from mdmprob import schedule

        blocks = schedule.decoder_windows(decoder, oracle, s)  # regret within its own windows
        exact = config.frontier and ev.mode == "exact"
        points = _frontier(setting["structure"], s, blocks) if exact else None
        if points:
            out.append(record(setting, "regret", schedule.regret(points, ev["nfe"], ev["kl_qp"]),
                              mode=ev.mode))
        return out

    def plot(self, records, config: Config, out_dir: Path) -> list[Path]:
        import textwrap

        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        from mdmprob.experiments.plotting import pyplot, save_figure, shared_legend

        plt = pyplot()

        structures = list(dict.fromkeys(r["structure"] for r in records))
        decoders = [d for d in dict.fromkeys(r["decoder"] for r in records) if d != "optimal"]
        cmap = plt.get_cmap("tab20")
        # a marker per decoder (15 shapes), colours from tab20: no two decoders look alike
        markers = "osD^v<>phH*XPd8"
        style = {d: (cmap(i % 20), markers[i % len(markers)]) for i, d in enumerate(decoders)}
        fig, axes = plt.subplots(2, len(structures), figsize=(4.8 * len(structures), 8.6),
                                 squeeze=False, layout="constrained")
        for j, st in enumerate(structures):
            by_decoder: dict[str, dict[str, Any]] = {}
            for r in records:
                if r["structure"] == st:
                    by_decoder.setdefault(r["decoder"], {})[r["metric"]] = r["value"]
            for i, metric in enumerate(("kl_qp", "incoherence")):
                ax = axes[i][j]
                points = []
                for dec in decoders:
                    m = by_decoder.get(dec, {})
                    nfe, y = m.get("nfe"), m.get(metric)
                    if nfe is None or y is None:
                        continue
                    color, marker = style[dec]
                    if math.isfinite(y):
                        ax.scatter([nfe], [max(y, 0.0)], color=color, marker=marker, s=48,
                                   edgecolors="black", linewidths=0.4, label=dec, zorder=3)
                    else:
                        ax.scatter([nfe], [1e3], color=color, marker=marker, s=48,
                                   edgecolors="black", linewidths=0.4, label=dec, zorder=3)
                        ax.annotate("+inf", (nfe, 1e3), fontsize=7, color="red")
                    lo, hi = m.get(metric + "_lower"), m.get(metric + "_upper")
                    if lo is None or lo == hi:  # an interval's midpoint is not on the front
                        points.append((nfe, y))
                    if lo is not None and hi is not None and lo != hi and math.isfinite(lo):
                        # a trajectory decoder: its KL(q‖p) interval (mdmprob.bounds)
                        top = hi if math.isfinite(hi) else 1e3
                        ax.vlines(nfe, max(lo, 0.0), top, color=color, lw=2, alpha=0.6,
                                  zorder=2)
                if metric == "kl_qp":
                    hull = sorted((r["vertex"], r["metric"], r["value"]) for r in records
                                  if r["structure"] == st and r["decoder"] == "optimal")
                    xs = [v for _, m, v in hull if m == "frontier_nfe"]
                    ys = [max(v, 0.0) for _, m, v in hull if m == "frontier_kl_qp"]
                    if xs:
                        ax.plot(xs, ys, "--", color="dimgray", lw=1.5, marker=".",
                                label="optimal mean-field frontier", zorder=1)
                front = _pareto(points)
                if front:
                    ax.step([p[0] for p in front], [p[1] for p in front], where="post",
                            color="black", lw=1, alpha=0.6, label="Pareto front")
                if metric == "kl_qp":
                    ax.set_yscale("symlog", linthresh=1e-2)
                ax.set_xscale("log")  # NFE spans 1 to ~100: ticks at 1, 2, 5, 10, 20, 50, ...
                ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.set_xlabel("denoiser calls per sequence (NFE, log scale)")
                ax.set_ylabel("KL(q‖p) (sampling risk) [nats]" if metric == "kl_qp"
                              else "incoherence rate (τ = 1e-8) [fraction of blocks]")
                ax.set_title(textwrap.fill(st.replace(":", " ", 1), 34), fontsize=9)
                ax.grid(alpha=0.3, which="both")
        shared_legend(fig, axes, ncol=6)
        fig.suptitle(textwrap.fill(self.title, 40 * len(structures)))
        return save_figure(fig, out_dir / "decoder_frontier", dpi=110)


_FRONTIERS: dict = {}


def _frontier(spec: str, structure, blocks):
    """The optimal mean-field frontier of ``structure`` within ``blocks`` (cached per spec and
    blocks), or None where its (V+1)^n states exceed the dynamic programme's budget."""
    from mdmprob import schedule

    if (structure.vocab + 1) ** structure.n_tokens > schedule.MAX_STATES:
        return None
    key = (spec, str(blocks))
    if key not in _FRONTIERS:
        _FRONTIERS[key] = schedule.frontier(structure, blocks=blocks)
    return _FRONTIERS[key]


def _pareto(points):
    """Points not dominated in (lower NFE, lower value), sorted by NFE."""
    finite = sorted(p for p in points if p[1] is not None and math.isfinite(p[1]))
    front, best = [], math.inf
    for nfe, y in finite:
        if y < best:
            front.append((nfe, y))
            best = y
    return front


EXPERIMENT = DecoderFrontier()
