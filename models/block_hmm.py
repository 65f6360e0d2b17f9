"""The paper's Block-HMM: a latent Markov chain over blocks, each block a noisy parity bit plus content bits.

Z_1 ~ pi0, Z_n | Z_{n-1} ~ A with A_zz = a, A_zz' = (1-a)/(K-1). Block n emits B bits
(P_n, Y_n1, ..., Y_n,B-1): content bits Y_ni | Z_n = z ~ Bern(rho_z) i.i.d., and the parity bit
P_n = XOR(Y_n) flipped with probability eta (eta = 0: hard zeros). Defaults are the paper's
(K=2, a=0.9, rho=(0.9, 0.1), B=8, 8 blocks, T=64). Decoding blocks are the emission blocks.

    Z_1 ---> Z_2 ---> ... ---> Z_N
     |        |                 |
    Y_1.     Y_2.              Y_N.     (B-1 content bits each)
     |        |                 |
    P_1      P_2               P_N      (noisy parity of the block's content)
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from mdmprob.models._common import check_int, check_prob
from pyro.ops.indexing import Vindex

from mdmprob.errors import MdmprobError
from mdmprob.structure import Structure


def build(n_blocks: int = 8, block_size: int = 8, n_states: int = 2, a: float = 0.9,
          rho: tuple = (0.9, 0.1), eta: float = 1e-8) -> Structure:
    n_blocks = check_int("n_blocks", n_blocks, 1)
    block_size = check_int("block_size", block_size, 2, 16)
    n_states = check_int("n_states", n_states, 1)
    a = check_prob("a", a)
    eta = check_prob("eta", eta)
    rho = tuple(float(r) for r in (rho if isinstance(rho, list | tuple) else [rho]))
    if len(rho) != n_states or not all(0 <= r <= 1 for r in rho):
        raise MdmprobError(f"parameter rho={rho!r} must list {n_states} probabilities "
                           "(one per latent state)")
    if n_states == 1:
        trans = torch.ones(1, 1, dtype=torch.float64)
    else:
        off = (1 - a) / (n_states - 1)
        trans = torch.full((n_states, n_states), off, dtype=torch.float64)
        trans.fill_diagonal_(a)
    init = torch.full((n_states,), 1.0 / n_states, dtype=torch.float64)
    rho_t = torch.tensor(rho, dtype=torch.float64)
    # logits, not probs: torch clamps probs to [1e-16, 1], which would turn eta = 0 into e^-36.
    content = torch.stack([1 - rho_t, rho_t], -1).log()  # [K, 2]: log p(Y | z)
    parity = torch.tensor([[1 - eta, eta], [eta, 1 - eta]], dtype=torch.float64).log()
    copy = torch.eye(2, dtype=torch.float64).log()

    def model():
        z = None
        for n in pyro.markov(range(n_blocks)):
            z = pyro.sample(f"z_{n}", dist.Categorical(init if z is None else Vindex(trans)[z]))
            # s = running parity of the content bits, a deterministic latent chain: every factor
            # then touches at most three variables instead of all B bits of the block.
            s = 0
            for i in range(1, block_size):
                y = pyro.sample(f"y_{n}_{i}", dist.Categorical(logits=Vindex(content)[z]))
                s = (s + y) % 2
                if i < block_size - 1:
                    s = pyro.sample(f"s_{n}_{i}", dist.Categorical(logits=Vindex(copy)[s]))
            pyro.sample(f"p_{n}", dist.Categorical(logits=Vindex(parity)[s]))

    tokens, blocks = [], []
    for n in range(n_blocks):
        blocks.append(list(range(len(tokens), len(tokens) + block_size)))
        tokens += [f"p_{n}"] + [f"y_{n}_{i}" for i in range(1, block_size)]

    def parity_holds(x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], n_blocks, block_size)
        return x[..., 0] == x[..., 1:].sum(-1) % 2

    return Structure(model, tokens, vocab=2, blocks=blocks, constraint=parity_holds,
                     name="block_hmm", description=__doc__.splitlines()[0])
