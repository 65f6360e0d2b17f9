"""Pairwise order laws of any denoiser: how much its rollouts over two positions depend on which
goes first.

With every other position masked, decoding position i then j gives the pair law

    q_{i->j}(a, b) = p_theta(x_i = a) p_theta(x_j = b | x_i = a)

and j then i gives ``q_{j->i}``. For an exact denoiser both equal the true pair marginal; a
learned model's conditionals need not be compatible. :func:`pairwise_orders` computes, from one
batched call of ``1 + m V`` rows (m = the denoiser's positions):

* ``order_kl[i, j] = KL(q_{i->j} ‖ q_{j->i})`` (nats);
* ``circulation[i, j] = E_{q_{i->j}} |log q_{i->j} - log q_{j->i}|``: the mean absolute log-ratio of
  the two pseudo-joints under a swap (the "circulation" of path-dependent denoising, arXiv
  2605.09303); zero iff the pair's conditionals are compatible on the support;
* ``mutual_information[i, j]`` = the mutual information (= total correlation) of ``q_{i->j}``;
* ``mean_field_kl[i, j] = KL(p_i ⊗ p_j ‖ q_{i->j})``: the sampling risk of committing both at once.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from mdmprob import measures
from mdmprob.deprecation import renamed_arguments


class PairwiseOrders(NamedTuple):
    """Shapes: ``marginals [m, V]`` (log p_theta(x_i) with all masked); ``log_pair [m, m, V, V]``
    (``log q_{i->j}(a, b)``, diagonal undefined); the rest ``[m, m]`` with a zero diagonal."""

    marginals: torch.Tensor
    log_pair: torch.Tensor
    order_kl: torch.Tensor
    circulation: torch.Tensor
    mutual_information: torch.Tensor
    mean_field_kl: torch.Tensor


@renamed_arguments(den="denoiser")
def pairwise_orders(denoiser) -> PairwiseOrders:
    """The pair laws of ``denoiser`` for every ordered pair of its m positions (see the module);
    returns :class:`PairwiseOrders` (``[m, V]``, ``[m, m, V, V]`` and ``[m, m]`` tensors).
    ``den=`` is the argument's former name."""
    den = denoiser
    m, V, mask = den.n_tokens, den.vocab, den.mask_id
    rows = torch.full((1 + m * V, m), mask, dtype=torch.long, device=den.device)
    i_idx = torch.arange(m, device=den.device).repeat_interleave(V)
    a_idx = torch.arange(V, device=den.device).repeat(m)
    rows[1 + torch.arange(m * V, device=den.device), i_idx] = a_idx
    logp = den(rows)  # [1 + mV, m, V]
    marg = logp[0]  # [m, V]
    cond = logp[1:].reshape(m, V, m, V)  # [i, a, j, b] = log p(x_j = b | x_i = a)
    pair = (marg[:, :, None, None] + cond).permute(0, 2, 1, 3)  # [i, j, a, b]
    swapped = pair.transpose(0, 1).transpose(2, 3)  # [i, j, a, b] = log q_{j->i}(a, b)
    eye = torch.eye(m, dtype=torch.bool, device=den.device)
    zero = torch.zeros((), dtype=pair.dtype, device=den.device)
    order_kl = torch.where(eye, zero, measures.kl(q=pair, p=swapped, event_dims=2))
    ratio = torch.where(pair > -torch.inf, (pair - swapped).abs(), zero)
    circulation = torch.where(eye, zero, measures.expectation(pair, ratio, event_dims=2))
    mi = torch.where(eye, zero, measures.forward_tc(pair, event_dims=2))
    product = marg[:, None, :, None] + marg[None, :, None, :]
    mf = torch.where(eye, zero, measures.kl(q=product, p=pair, event_dims=2))
    return PairwiseOrders(marg, pair, order_kl, circulation, mi, mf)
