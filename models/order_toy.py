"""Five bits for order sensitivity (paper-spec 4-F): two noisy copies, two independent bits, one XOR.

    X1 ~ Bern(1/2)                 X2 = X1 xor Bern(p2)            (p2 = 0.02: nearly a copy)
    X3 ~ Bern(p3)                  X4 = X3 xor X1 xor Bern(p4)     (p3 = 0.05, p4 = 0.1)
    X5 ~ Bern(p5)                                                  (p5 = 0.3: independent)

    X1 ---> X2        X1 --+
                           +--> X4        X5
    X3 ----------------+

Entropies differ widely across positions and orders (X2 is nearly free given X1, X4 given X1, X3),
so under model error the decoding order matters. Every joint probability is > 0. Tokens are
(X1, ..., X5); one decoding block of all five.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from mdmprob.models._common import check_prob
from pyro.ops.indexing import Vindex

from mdmprob.structure import Structure


def build(p2: float = 0.02, p3: float = 0.05, p4: float = 0.1, p5: float = 0.3) -> Structure:
    p2, p3, p4, p5 = (check_prob(name, value) for name, value in
                      (("p2", p2), ("p3", p3), ("p4", p4), ("p5", p5)))

    def bern(p: float) -> torch.Tensor:  # log [P(0), P(1)]; logits keep p = 0 a hard zero
        return torch.tensor([1 - p, p], dtype=torch.float64).log()

    def flip(p: float) -> torch.Tensor:  # log P(out | in) of out = in xor Bern(p)
        return torch.tensor([[1 - p, p], [p, 1 - p]], dtype=torch.float64).log()

    half, x3_prior, x5_prior = bern(0.5), bern(p3), bern(p5)
    copy2 = flip(p2)
    # log P(X4 | X1, X3) as [x1, x3, x4]: X4 = (X1 xor X3) xor Bern(p4)
    xor4 = torch.stack([flip(p4), flip(p4).flip(0)])

    def model():
        x1 = pyro.sample("x1", dist.Categorical(logits=half))
        pyro.sample("x2", dist.Categorical(logits=Vindex(copy2)[x1]))
        x3 = pyro.sample("x3", dist.Categorical(logits=x3_prior))
        pyro.sample("x4", dist.Categorical(logits=Vindex(xor4)[x1, x3]))
        pyro.sample("x5", dist.Categorical(logits=x5_prior))

    return Structure(model, ["x1", "x2", "x3", "x4", "x5"], vocab=2, blocks=[[0, 1, 2, 3, 4]],
                     name="order_toy", description=__doc__.splitlines()[0])
