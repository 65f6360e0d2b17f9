"""Two tokens that agree with probability 1 - delta, with uniform marginals over V symbols.

    X_1 ~ Uniform(V),  X_2 = X_1 w.p. 1 - delta, else uniform over the other V - 1 symbols.

For V = 2: forward TC = ln 2 - h(delta), reverse TC = -ln 2 - (1/2) ln(delta (1 - delta)).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from mdmprob.models._common import check_int, check_prob
from pyro.ops.indexing import Vindex

from mdmprob.structure import Structure


def build(delta: float = 0.01, vocab: int = 2) -> Structure:
    delta = check_prob("delta", delta)
    vocab = check_int("vocab", vocab, 2, 1024)
    uniform = torch.full((vocab,), 1.0 / vocab, dtype=torch.float64)
    copy = torch.full((vocab, vocab), delta / (vocab - 1), dtype=torch.float64)
    copy.fill_diagonal_(1 - delta)
    copy = copy.log()  # logits keep delta = 0 a hard zero (torch clamps probs to 1e-16)

    def model():
        x1 = pyro.sample("x1", dist.Categorical(uniform))
        pyro.sample("x2", dist.Categorical(logits=Vindex(copy)[x1]))

    def agree(x: torch.Tensor) -> torch.Tensor:
        return (x[:, 0] == x[:, 1])[:, None]

    return Structure(model, ["x1", "x2"], vocab=vocab, blocks=[[0, 1]], constraint=agree,
                     name="agreement", description=__doc__.splitlines()[0])
