"""Per-block decomposition of blockwise decoding (paper Eqs. 15-18), exact or Monte Carlo.

For decoding blocks B_1..B_M with prefixes P_m = B_1 ∪ ... ∪ B_{m-1}:

* ``forward_tc``: E_{x_P ~ p}[ KL(p(x_B|x_P) ‖ prod_i p(x_i|x_P)) ]; their sum is KL(p ‖ q_MF) (Eq. 16);
* ``reverse_tc_mean_field``: E_{x_P ~ q_MF}[ KL(prod_i p(x_i|x_P) ‖ p(x_B|x_P)) ]; their sum is
  KL(q_MF ‖ p) (Eq. 18), prefixes drawn from the mean-field decoder itself;
* ``violation_mean_field``: Pr_{q_MF}[block m violates the constraint].

A block is computed exactly when its prefix space V^|P| is at most ``exact_limit``; otherwise by
Monte Carlo over exact prefix samples (from p, and from the mean-field decoder) with the block's
conditional tables still exact, and a standard error.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from mdmprob import measures
from mdmprob.deprecation import renamed_arguments
from mdmprob.graph import elimination_order
from mdmprob.sampling import gumbel_argmax
from mdmprob.structure import Structure


def block_report(structure: Structure, *, samples: int = 2000, seed: int = 0,
                 exact_limit: int = 4096, device=None, progress=None) -> dict[str, Any]:
    """The structure's summary and, per decoding block, the decomposition terms above.

    Returns a JSON-ready dict (keys documented in the CLI's ``info --json``).
    """
    if needs_monte_carlo(structure, exact_limit):
        from mdmprob.experiments.base import check_budget, mc_bytes_per_sample

        check_budget(f"block_report({structure.name})", samples,
                     2 * mc_bytes_per_sample(structure.n_tokens, structure.vocab),
                     "lower --samples (or raise --exact-limit to enumerate more blocks)")
    engine = structure.engine(device=device)
    graph = structure.factor_graph
    _, width = elimination_order(graph)
    V, n = structure.vocab, structure.n_tokens
    generator = torch.Generator(device=engine.device).manual_seed(seed)
    p_samples = q_samples = None
    rows, mc_forward, mc_reverse = [], [], []
    for m, block in enumerate(structure.blocks):
        prefix = [i for b in structure.blocks[:m] for i in b]
        if V ** len(prefix) <= exact_limit:
            row = _exact_block(structure, engine, m, prefix, block)
        else:
            if p_samples is None:
                masked = torch.zeros(samples, n, dtype=torch.long, device=engine.device)
                p_samples = engine.sample(masked, torch.zeros_like(masked, dtype=torch.bool),
                                          generator=generator)
                q_samples = sample_mean_field(structure, samples, generator, engine)
            row, fwd, rev = _mc_block(structure, engine, m, prefix, block, p_samples, q_samples)
            mc_forward.append(fwd)
            mc_reverse.append(rev)
        rows.append(row)
        if progress is not None:
            progress(m + 1, len(structure.blocks))
    report = BlockReport({
        "model": structure.name,
        "params": {k: _jsonable(v) for k, v in structure.params.items()},
        "n_tokens": n,
        "tokens": list(structure.tokens),
        "vocab": V,
        "latents": graph.latent_names,
        "n_latents": len(graph.latent_names),
        "n_factors": len(graph.factors),
        "elimination_width": width,
        "has_constraint": structure.constraint is not None,
        "samples": samples,
        "seed": seed,
        "blocks": rows,
    })
    for key, mc_terms in (("forward_tc", mc_forward), ("reverse_tc_mean_field", mc_reverse)):
        exact_sum = sum(r[key] for r in rows if r["exact"])
        if mc_terms:
            est = measures.mc_mean(torch.stack(mc_terms).sum(0))
            total, se = exact_sum + est.value, est.se
        else:
            total, se = exact_sum, None
        name = "kl_pq_mean_field" if key == "forward_tc" else "kl_qp_mean_field"
        report[name], report[name + "_se"] = total, se
    return report


RENAMED_KEYS = {"forward_kl_mean_field": "kl_pq_mean_field",
                "forward_kl_mean_field_se": "kl_pq_mean_field_se",
                "reverse_kl_mean_field": "kl_qp_mean_field",
                "reverse_kl_mean_field_se": "kl_qp_mean_field_se"}


class BlockReport(dict):
    """The dict :func:`block_report` returns. KL totals are named by their arguments:
    ``kl_pq_mean_field`` = KL(p ‖ q_MF) (information loss, the sum of forward TCs) and
    ``kl_qp_mean_field`` = KL(q_MF ‖ p) (sampling risk, the sum of reverse TCs). The former
    ``forward_kl_mean_field`` / ``reverse_kl_mean_field`` keys are still read, with a
    ``DeprecationWarning`` naming the new key; they are not written (nor in ``info --json``)."""

    def __missing__(self, key):
        if key in RENAMED_KEYS:
            import warnings

            warnings.warn(f"block_report key {key!r} is now {RENAMED_KEYS[key]!r}",
                          DeprecationWarning, stacklevel=2)
            return self[RENAMED_KEYS[key]]
        raise KeyError(key)

    def get(self, key, default=None):
        return self[key] if key in self or key in RENAMED_KEYS else default


@renamed_arguments(joint="log_joint", k="event_dims")
def block_costs(log_joint: torch.Tensor, event_dims: int) -> dict[str, torch.Tensor]:
    """Per row of a block table ``log_joint`` ``[R] + [V] * event_dims`` (log p(x_B | x_P)):
    log M = log sup p / q with q the product of its marginals, forward TC = KL(p ‖ q), and their
    difference; each value ``[R]``. ``joint=`` and ``k=`` are the arguments' former names."""
    joint, k = log_joint, event_dims
    flat = joint.reshape(joint.shape[0], -1)
    mf = measures.mean_field(joint, k).reshape(flat.shape)
    ratio = torch.where(flat > -math.inf, flat - mf, torch.full_like(flat, -math.inf))
    log_m = ratio.amax(-1)
    tc = measures.forward_tc(joint, k)
    return {"log_m": log_m, "m": log_m.exp(), "forward_tc": tc, "exp_forward_tc": tc.exp(),
            "log_gap": log_m - tc}


def needs_monte_carlo(structure: Structure, exact_limit: int) -> bool:
    """Whether some block's prefix space V^|P| exceeds ``exact_limit`` (Monte Carlo needed)."""
    prefix = sum(len(b) for b in structure.blocks[:-1])
    return structure.vocab ** prefix > exact_limit


def sample_mean_field(structure: Structure, num: int, generator=None, engine=None) -> torch.Tensor:
    """``num`` sequences from the mean-field blockwise decoder q_MF with the exact conditionals:
    each block's positions sampled independently from p(x_i | decoded prefix); returns
    LongTensor ``[num, n]``. ``engine``: the structure's engine to use (default:
    ``structure.engine()``)."""
    engine = engine if engine is not None else structure.engine()
    tokens = torch.zeros(num, structure.n_tokens, dtype=torch.long, device=engine.device)
    visible = torch.zeros_like(tokens, dtype=torch.bool)
    for block in structure.blocks:
        log_cond = engine.conditionals(tokens, visible)[:, block]  # [num, |B|, V]
        tokens[:, block] = gumbel_argmax(log_cond, generator)
        visible[:, block] = True
    return tokens


def _exact_block(structure, engine, m, prefix, block) -> dict[str, Any]:
    V, k = structure.vocab, len(block)
    configs = torch.tensor(list(itertools.product(range(V), repeat=len(prefix))),
                           dtype=torch.long, device=engine.device)
    configs = configs.reshape(V ** len(prefix), len(prefix))
    tokens = torch.zeros(configs.shape[0], structure.n_tokens, dtype=torch.long,
                         device=engine.device)
    tokens[:, prefix] = configs
    visible = torch.zeros_like(tokens, dtype=torch.bool)
    visible[:, prefix] = True
    log_p_prefix = engine.log_prob_visible(tokens, visible)
    log_q_prefix = _mean_field_log_q(structure, engine, tokens, m)
    joint = engine.block_joint(tokens, visible, block)  # [R, V, ..., V]
    forward = measures.expectation(log_p_prefix, measures.forward_tc(joint, k))
    reverse = measures.expectation(log_q_prefix, measures.reverse_tc(joint, k))
    violation = None
    if structure.constraint is not None:
        block_configs = torch.tensor(list(itertools.product(range(V), repeat=k)),
                                     dtype=torch.long, device=engine.device)
        full = tokens[:, None, :].repeat(1, block_configs.shape[0], 1)
        full[:, :, block] = block_configs
        violated = structure.violations(full.reshape(-1, structure.n_tokens))
        if violated.dim() == 2:
            violated = violated[:, m].reshape(tokens.shape[0], *([V] * k))
            mf = measures.mean_field(joint, k)
            violation = measures.expectation(log_q_prefix, measures.violation_rate(mf, violated, k)).item()
    return _row(m, block, forward.item(), None, reverse.item(), None, violation, None, True)


def _mc_block(structure, engine, m, prefix, block, p_samples, q_samples):
    k = len(block)
    out = []
    for samples in (p_samples, q_samples):
        visible = torch.zeros_like(samples, dtype=torch.bool)
        visible[:, prefix] = True
        out.append(engine.block_joint(samples, visible, block))
    fwd = measures.forward_tc(out[0], k)
    rev = measures.reverse_tc(out[1], k)
    f, r = measures.mc_mean(fwd), measures.mc_mean(rev)
    violation = violation_se = None
    violated = structure.violations(q_samples)
    if violated is not None and violated.dim() == 2:
        v = measures.mc_rate(violated[:, m])
        violation, violation_se = v.value, v.se
    row = _row(m, block, f.value, f.se, r.value, r.se, violation, violation_se, False)
    return row, fwd, rev


def _mean_field_log_q(structure, engine, tokens, m) -> torch.Tensor:
    """log q_MF(x_{P_m}) = sum_{l<m} sum_{i in B_l} log p(x_i | x_{P_l}) for each row."""
    log_q = torch.zeros(tokens.shape[0], dtype=engine.dtype, device=engine.device)
    visible = torch.zeros_like(tokens, dtype=torch.bool)
    for block in structure.blocks[:m]:
        log_cond = engine.conditionals(tokens, visible)[:, block]
        log_q = log_q + log_cond.gather(-1, tokens[:, block, None]).squeeze(-1).sum(-1)
        visible[:, block] = True
    return log_q


def _row(m, block, f, f_se, r, r_se, v, v_se, exact) -> dict[str, Any]:
    return {"block": m + 1, "index": m, "positions": list(block), "forward_tc": f, "forward_tc_se": f_se,
            "reverse_tc_mean_field": r, "reverse_tc_mean_field_se": r_se,
            "violation_mean_field": v, "violation_mean_field_se": v_se, "exact": exact}


def _jsonable(v):
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v
