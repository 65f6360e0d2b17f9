"""MCMC diagnostics of remasking kernels: the kernel R_k run as a Markov chain on one block.

:func:`mcmc_diagnostics` starts ``chains`` chains (a batch dimension) from the mean-field proposal
of the structure's first decoding block, applies the decoder's :class:`~mdmprob.decoders.remask.Remask`
kernel ``draws`` times, and reports, for scalar functionals of the block — never raw token labels —

* ``log_p``: log p(x_B | x_P), exact from the structure's engine (x_P the block's prefix; empty for
  the first block), clamped below at log(float64 tiny) ~ -708.4 so hard zeros stay finite;
* ``violation``: the block's constraint-violation indicator (structures with a per-block
  constraint),

the bulk ESS and the (rank-normalised split) R-hat from ArviZ — ``az.ess`` / ``az.rhat`` on
``az.convert_to_dataset`` of ``(chain, draw)`` arrays, calls that work on ArviZ 0.x and 1.x
(ArviZ is a core dependency). The final violation rate over
the chains and, for blocks with V^|B| <= 4096, the exact law q^(draws) = q^(0) K^draws of the
chain (:meth:`Remask.window_chain`) with its KL(q^(draws) || p(. | x_P)) and violation rate come
with them.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from mdmprob import measures
from mdmprob.checks import check_int, check_match
from mdmprob.decoders.protocol import DecoderBase, all_values
from mdmprob.decoders.remask import Remask
from mdmprob.denoisers.base import Denoiser
from mdmprob.errors import MdmprobError
from mdmprob.structure import Structure

EXACT_LIMIT = 4096  # V^|B| up to which q^(draws) is computed exactly
_LOG_FLOOR = math.log(torch.finfo(torch.float64).tiny)  # ~ -708.4


def mcmc_diagnostics(structure: Structure, decoder: DecoderBase | Remask, denoiser: Denoiser, *,
                     chains: int = 4, draws: int = 200, seed: int = 0) -> dict[str, Any]:
    """Run the remasking kernel as MCMC on the first block and diagnose it.

    Args:
        structure: the exact target (its engine gives log p; its constraint the violations).
        decoder: a decoder whose corrector is a :class:`Remask` (e.g. ``gibbs_remask(k=2)``), or
            the :class:`Remask` itself; its ``sweeps`` is ignored (``draws`` kernel steps are run).
        denoiser: the conditionals the kernel uses.
        chains: independent chains (>= 2), run as one batch; draws: kernel steps (>= 4), each
            recorded; seed: the torch.Generator seed (on the denoiser's device).

    Returns a dict: ``backend`` (always "arviz"), ``chains``, ``draws``, ``block``, ``kernel``,
    ``ess_bulk`` / ``rhat`` / ``mean`` (each ``{functional: float}``; NaN where a functional is
    constant), ``log_p_clamped`` (fraction of recorded draws with p = 0), ``violation_rate`` (mean
    over chains of the final draw's indicator, None without a per-block constraint),
    ``violation_exact`` and ``kl_qp`` (exact, for q^(draws); None when V^|B| > 4096), and
    ``traces`` (the functionals as ``(chain, draw)`` float64 tensors).
    """
    kernel = decoder.corrector if isinstance(decoder, DecoderBase) else decoder
    if not isinstance(kernel, Remask):
        raise MdmprobError(f"mcmc_diagnostics runs a Remask kernel; {decoder!r} has none (use "
                           "gibbs_remask(...) or pass a Remask)")
    check_int("chains", chains, 2)  # R-hat compares chains
    check_int("draws", draws, 4)
    check_match(denoiser, structure)
    windows = (decoder.windows(denoiser, structure.blocks) if isinstance(decoder, DecoderBase)
               else [list(b) for b in structure.blocks])
    window = windows[0]
    kernel.check_window(window)
    device, mask, V = denoiser.device, denoiser.mask_id, denoiser.vocab
    engine = structure.engine(device=device, dtype=denoiser.dtype)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    start = torch.full((chains, structure.n_tokens), mask, dtype=torch.long, device=device)
    prefix = torch.zeros(structure.n_tokens, dtype=torch.bool, device=device)  # first block
    tokens, _, _ = kernel.propose(denoiser, start, window, gen)
    states = []
    for _ in range(draws):
        tokens, _, _, _ = kernel.step(denoiser, tokens, window, gen)
        states.append(tokens)
    xs = torch.stack(states, 1)  # [chains, draws, n]
    flat = xs.reshape(chains * draws, -1)

    # functionals: exact log p(x_B | x_P), and the block's violation indicator
    filled = torch.where(flat == mask, torch.zeros_like(flat), flat)
    seen = prefix.clone()
    seen[window] = True
    log_p = engine.log_prob_visible(filled, seen.expand_as(flat))
    if prefix.any():
        log_p = log_p - engine.log_prob_visible(filled, prefix.expand_as(flat))
    clamped = (log_p < _LOG_FLOOR).double().mean().item()
    traces = {"log_p": log_p.clamp(min=_LOG_FLOOR).reshape(chains, draws).double().cpu()}
    column = _block_column(structure, window)
    if column is not None:
        viol = structure.violations(filled)
        traces["violation"] = viol[:, column].double().reshape(chains, draws).cpu()

    backend, ess, rhat = _ess_rhat(traces)
    out: dict[str, Any] = {
        "backend": backend, "chains": chains, "draws": draws, "block": list(window),
        "kernel": kernel.name, "ess_bulk": ess, "rhat": rhat,
        "mean": {k: v.mean().item() for k, v in traces.items()},
        "log_p_clamped": clamped,
        "violation_rate": traces["violation"][:, -1].mean().item() if column is not None else None,
        "violation_exact": None, "kl_qp": None, "traces": traces,
    }
    if V ** len(window) <= EXACT_LIMIT:
        base = torch.full((1, structure.n_tokens), mask, dtype=torch.long, device=device)
        log_q = kernel.window_chain(denoiser, base, window, sweeps=[draws])[draws].reshape(-1)
        log_pb = engine.block_joint(torch.zeros_like(base), prefix[None], window).reshape(-1)
        out["kl_qp"] = measures.kl(q=log_q, p=log_pb).item()
        if column is not None:
            configs = all_values(len(window), V, device)
            full = torch.zeros(len(configs), structure.n_tokens, dtype=torch.long, device=device)
            full[:, window] = configs
            violated = structure.violations(full)[:, column]
            out["violation_exact"] = measures.violation_rate(log_q, violated).item()
    return out


def _block_column(structure: Structure, window) -> int | None:
    """The constraint column of ``window`` (a per-block constraint whose block is the window)."""
    if structure.constraint is None or sorted(window) not in [sorted(b) for b in structure.blocks]:
        return None
    probe = torch.zeros(1, structure.n_tokens, dtype=torch.long)
    if structure.violations(probe).dim() != 2:
        return None  # a sequence-level constraint says nothing about one block
    return [sorted(b) for b in structure.blocks].index(sorted(window))


def _ess_rhat(traces: dict[str, torch.Tensor]) -> tuple[str, dict[str, float], dict[str, float]]:
    """Bulk ESS and (rank-normalised, split) R-hat of each ``(chain, draw)`` trace, by ArviZ."""
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant traces: NaN with a RuntimeWarning
        data = az.convert_to_dataset({k: v.cpu().numpy() for k, v in traces.items()})
        ess, rhat = az.ess(data, method="bulk"), az.rhat(data)
    return "arviz", {k: float(ess[k]) for k in traces}, {k: float(rhat[k]) for k in traces}


__all__ = ["EXACT_LIMIT", "mcmc_diagnostics"]
