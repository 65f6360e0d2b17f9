"""One categorical sampler for the whole package: Gumbel-max with float64 noise.

``gumbel_argmax(log_w, generator)`` draws one index per row of unnormalised log-weights
``[..., K]`` (exact: Pr[i] = w_i / sum w). float64 noise avoids the effective-temperature drop of
float32 Gumbel noise; rows with no mass at all (every weight -inf) are undefined and drawn uniformly.
"""

from __future__ import annotations

import torch


def gumbel_argmax(log_w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of ``log_w [..., K]``, drawn with probability proportional to exp(log_w)."""
    log_w = log_w.to(torch.float64)
    u = torch.rand(log_w.shape, generator=generator, device=log_w.device, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(u.clamp(min=torch.finfo(torch.float64).tiny)))
    empty = log_w.amax(-1, keepdim=True) == -torch.inf
    return (torch.where(empty, torch.zeros_like(log_w), log_w) + gumbel).argmax(-1)
