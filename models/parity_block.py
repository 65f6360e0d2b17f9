"""One parity block of k bits: k-1 uniform content bits, then their parity flipped with probability eta.

    Y_1 ... Y_{k-1} ~ Bern(1/2) i.i.d.,   P = XOR(Y) w.p. 1 - eta.      tokens: (Y_1..Y_{k-1}, P)

Analytic values (paper-spec 4-A): forward TC = ln 2 - h(eta) for every k, reverse TC of the
mean-field proposal = -ln 2 - (1/2) ln(eta (1 - eta)), mean-field violation 1/2, sup p/q = 2(1-eta).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from mdmprob.models._common import check_int, check_prob
from pyro.ops.indexing import Vindex

from mdmprob.structure import Structure


def build(k: int = 8, eta: float = 0.01) -> Structure:
    k = check_int("k", k, 2, 24)
    eta = check_prob("eta", eta)
    half = torch.tensor([0.5, 0.5], dtype=torch.float64)
    # logits, not probs: torch clamps probs to [1e-16, 1], which would turn eta = 0 into e^-36.
    parity = torch.tensor([[1 - eta, eta], [eta, 1 - eta]], dtype=torch.float64).log()
    copy = torch.eye(2, dtype=torch.float64).log()

    def model():
        # A running parity state s_i = XOR(Y_1..Y_i) keeps every factor small (linear in k).
        s = 0
        for i in pyro.markov(range(1, k)):
            y = pyro.sample(f"y_{i}", dist.Categorical(half))
            s = (s + y) % 2
            if i < k - 1:
                s = pyro.sample(f"s_{i}", dist.Categorical(logits=Vindex(copy)[s]))
            else:
                pyro.sample("p", dist.Categorical(logits=Vindex(parity)[s]))

    tokens = [f"y_{i}" for i in range(1, k)] + ["p"]

    def parity_holds(x: torch.Tensor) -> torch.Tensor:
        return (x[:, -1] == x[:, :-1].sum(-1) % 2)[:, None]

    return Structure(model, tokens, vocab=2, blocks=[list(range(k))], constraint=parity_holds,
                     name="parity_block", description=__doc__.splitlines()[0])
