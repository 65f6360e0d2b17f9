"""An HMM over several independent sequences, written as Pyro users write it: a plate of sequences.

Z_b,1 ~ uniform, Z_b,t | Z_b,t-1 ~ A with A_zz = stay, A_zz' = (1-stay)/(K-1); Y_b,t | Z_b,t = z
~ Categorical(E_z), E_z putting 1-noise on symbol z mod V and noise spread over the others.
One site per time step, vectorized over the sequences b by ``pyro.plate``; the tokens are the
elements ``y_t[b]``, sequence by sequence, and each sequence is a decoding block.

    plate b:  Z_b,1 ---> Z_b,2 ---> ... ---> Z_b,T
                |          |                  |
              Y_b,1      Y_b,2              Y_b,T
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from mdmprob.models._common import check_int, check_prob
from pyro.ops.indexing import Vindex

from mdmprob.structure import Structure


def build(n_seqs: int = 2, length: int = 4, n_states: int = 2, vocab: int = 2,
          stay: float = 0.9, noise: float = 0.1) -> Structure:
    n_seqs = check_int("n_seqs", n_seqs, 1)
    length = check_int("length", length, 1)
    n_states = check_int("n_states", n_states, 2)
    vocab = check_int("vocab", vocab, 2, 4096)
    stay = check_prob("stay", stay)
    noise = check_prob("noise", noise)
    trans = torch.full((n_states, n_states), (1 - stay) / (n_states - 1), dtype=torch.float64)
    trans.fill_diagonal_(stay)
    emit = torch.full((n_states, vocab), noise / (vocab - 1), dtype=torch.float64)
    emit[torch.arange(n_states), torch.arange(n_states) % vocab] = 1 - noise
    init = torch.full((n_states,), 1.0 / n_states, dtype=torch.float64)
    # logits keep stay = 1 or noise = 0 hard zeros (torch clamps probs)
    log_trans, log_emit = trans.log(), emit.log()

    def model():
        with pyro.plate("sequences", n_seqs):
            z = None
            for t in pyro.markov(range(length)):
                z = pyro.sample(f"z_{t}", dist.Categorical(
                    logits=init.log() if z is None else Vindex(log_trans)[z]))
                pyro.sample(f"y_{t}", dist.Categorical(logits=Vindex(log_emit)[z]))

    tokens = [f"y_{t}[{b}]" for b in range(n_seqs) for t in range(length)]
    blocks = [list(range(b * length, (b + 1) * length)) for b in range(n_seqs)]
    return Structure(model, tokens, vocab=vocab, blocks=blocks, name="plated_hmm",
                     description=__doc__.splitlines()[0])
