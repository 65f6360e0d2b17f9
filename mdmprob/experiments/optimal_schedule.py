"""The optimal mean-field schedule's exact KL(q‖p)-NFE frontier, and each decoder's regret to it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from mdmprob.experiments.base import (
    Experiment,
    check_decoder_specs,
    check_numbers,
    check_structure_specs,
    parse_spec,
    record,
)


@dataclass
class Config:
    """structures / decoders: specs ``name:key=value:key=value``; every structure small enough for
    the dynamic programme ((V+1)^n states); decoders are evaluated exactly (q enumerated), their NFE
    from ``samples`` runs, and their regret read on the frontier of their own windows (the
    structure's blocks, or one window for a decoder that commits anywhere)."""

    structures: tuple = ("block_hmm:n_blocks=2:block_size=3:eta=0.05",
                         "block_hmm:n_blocks=2:block_size=3:eta=1e-8",
                         "markov_chain:length=6:vocab=2:block_size=3", "ising_grid:rows=2:cols=3")
    decoders: tuple = ("mean_field_blocks", "sequential:order=l2r", "sequential:order=max_prob",
                       "sequential:order=entropy", "fast_dllm_threshold:tau=0.9:confidence=max_prob",
                       "fast_dllm_threshold:tau=0.7:confidence=max_prob", "eb_sampler:gamma=0.5",
                       "eb_sampler:gamma=0.1", "llada:steps=4", "mdlm:steps=3")
    samples: int = 1000

    def check(self):
        check_structure_specs("structures", self.structures)
        check_decoder_specs("decoders", self.decoders)
        check_numbers("samples", self.samples, low=2, integer=True)


class OptimalSchedule(Experiment):
    name = "optimal-schedule"
    title = "The optimal mean-field schedule: exact KL(q‖p) frontier against NFE, decoders' regret"
    Config = Config
    quick = {"structures": ("block_hmm:n_blocks=2:block_size=3:eta=0.05",),
             "decoders": ("mean_field_blocks", "sequential:order=entropy",
                          "fast_dllm_threshold:tau=0.7:confidence=max_prob"), "samples": 200}

    def settings(self, config: Config):
        return [{"structure": s} for s in config.structures]

    def run_setting(self, config: Config, setting, seed: int):
        from mdmprob import schedule
        from mdmprob.decoders import get_decoder
        from mdmprob.denoisers import Oracle
        from mdmprob.evaluate import evaluate
        from mdmprob.structure import load_model

        model, model_params = parse_spec(setting["structure"])
        s = load_model(model, **model_params)
        out = []
        anywhere = [list(range(s.n_tokens))]
        frontiers = {}
        for window, blocks in (("blocks", s.blocks), ("all", anywhere)):
            points = frontiers[str(blocks)] = schedule.frontier(s, blocks=blocks)
            for k, p in enumerate(points):
                extra = {"decoder": "optimal", "window": window, "vertex": k}
                out.append(record(setting, "frontier_nfe", p.nfe, **extra))
                out.append(record(setting, "frontier_kl_qp", p.kl, **extra))
        for k, p in enumerate(schedule.budget_frontier(s), start=len(s.blocks)):
            out.append(record(setting, "budget_kl_qp", p.kl, decoder="optimal", window="blocks",
                              budget=k))
        oracle = Oracle(s)
        for spec in config.decoders:
            name, params = parse_spec(spec)
            decoder = get_decoder(name, **params)
            blocks = schedule.decoder_windows(decoder, oracle, s)  # regret within its windows
            if str(blocks) not in frontiers:
                frontiers[str(blocks)] = schedule.frontier(s, blocks=blocks)
            ev = evaluate(s, decoder, oracle, mode="exact", samples=config.samples, seed=seed)
            regret = schedule.regret(frontiers[str(blocks)], ev["nfe"], ev["kl_qp"])
            window = "blocks" if blocks == s.blocks else "all" if blocks == anywhere else str(blocks)
            out += [record(setting, "kl_qp", ev["kl_qp"], decoder=spec, window=window),
                    record(setting, "nfe", ev["nfe"], ev["nfe_se"], decoder=spec, window=window),
                    record(setting, "regret", regret, decoder=spec, window=window)]
        return out

    def plot(self, records, config: Config, out_dir: Path) -> list[Path]:
        import textwrap

        from mdmprob.experiments.plotting import pyplot, save_figure, shared_legend

        plt = pyplot()

        structures = list(dict.fromkeys(r["structure"] for r in records))
        fig, axes = plt.subplots(1, len(structures), figsize=(4.8 * len(structures), 4.6),
                                 squeeze=False, layout="constrained")
        markers = "osD^v<>phH*XPd8"
        decoders = [d for d in dict.fromkeys(r["decoder"] for r in records) if d != "optimal"]
        for ax, st in zip(axes[0], structures, strict=True):
            mine = [r for r in records if r["structure"] == st]
            for window, style, label in (("blocks", "k-", "optimal within the blocks"),
                                         ("all", "k--", "optimal, one window")):
                hull = {}
                for r in mine:
                    if r["metric"] in ("frontier_nfe", "frontier_kl_qp") and r["window"] == window:
                        hull.setdefault(r["vertex"], {})[r["metric"]] = r["value"]
                xs = [hull[k]["frontier_nfe"] for k in sorted(hull)]
                ys = [hull[k]["frontier_kl_qp"] for k in sorted(hull)]
                ax.plot(xs, ys, style, lw=1.3, marker=".", label=label, zorder=2)
            for i, dec in enumerate(decoders):
                m = {r["metric"]: r["value"] for r in mine if r["decoder"] == dec}
                if m.get("nfe") is None or m.get("kl_qp") is None:
                    continue
                y = m["kl_qp"] if math.isfinite(m["kl_qp"]) else max(ys) * 2 + 1
                ax.scatter([m["nfe"]], [y], marker=markers[i % len(markers)], s=46,
                           color=plt.get_cmap("tab10")(i % 10), edgecolors="black",
                           linewidths=0.4, label=dec, zorder=3)
            ax.set_yscale("symlog", linthresh=1e-3)
            ax.set_xlabel("expected denoiser calls per sequence (NFE)")
            ax.set_ylabel("KL(q‖p) (sampling risk) [nats]")
            ax.set_title(textwrap.fill(st.replace(":", " ", 1), 36), fontsize=9)
            ax.grid(alpha=0.3, which="both")
        shared_legend(fig, axes, ncol=4)
        fig.suptitle(textwrap.fill(self.title, 45 * len(structures)))
        return save_figure(fig, out_dir / "optimal_schedule", dpi=110)


EXPERIMENT = OptimalSchedule()
