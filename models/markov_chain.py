"""A first-order Markov chain over V symbols, with a given or seeded random transition matrix.

    X_1 ~ init,   X_t | X_{t-1} ~ T[X_{t-1}]        X_1 -> X_2 -> ... -> X_n

``transition`` (a V x V row-stochastic nested list) overrides the seeded Dirichlet draw.
Decoding blocks are contiguous runs of ``block_size`` positions.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from mdmprob.models._common import check_int
from pyro.ops.indexing import Vindex

from mdmprob.errors import MdmprobError
from mdmprob.structure import Structure


def build(length: int = 8, vocab: int = 3, block_size: int = 2, seed: int = 0,
          concentration: float = 0.5, transition: list | None = None) -> Structure:
    length = check_int("length", length, 1)
    vocab = check_int("vocab", vocab, 2, 4096)
    block_size = check_int("block_size", block_size, 1)
    seed = check_int("seed", seed, 0)
    if transition is None:
        g = torch.Generator().manual_seed(seed)
        alpha = torch.full((vocab,), float(concentration), dtype=torch.float64)
        gammas = torch._standard_gamma(alpha.expand(vocab, vocab).contiguous(), generator=g)
        trans = gammas / gammas.sum(-1, keepdim=True)
    else:
        trans = torch.as_tensor(transition, dtype=torch.float64)
        if trans.shape != (vocab, vocab) or (trans < 0).any() or not torch.allclose(
                trans.sum(-1), torch.ones(vocab, dtype=torch.float64)):
            raise MdmprobError(f"parameter transition must be a {vocab}x{vocab} row-stochastic "
                               f"matrix, got {transition!r}")
    init = torch.full((vocab,), 1.0 / vocab, dtype=torch.float64)
    log_trans = trans.log()  # logits keep zero transitions hard zeros (torch clamps probs)

    def model():
        x = None
        for t in pyro.markov(range(length)):
            logits = init.log() if x is None else Vindex(log_trans)[x]
            x = pyro.sample(f"x_{t}", dist.Categorical(logits=logits))

    blocks = [list(range(s, min(s + block_size, length))) for s in range(0, length, block_size)]
    structure = Structure(model, [f"x_{t}" for t in range(length)], vocab=vocab, blocks=blocks,
                          name="markov_chain", description=__doc__.splitlines()[0])
    structure.transition = trans
    return structure
