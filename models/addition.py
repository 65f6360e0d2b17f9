"""D-digit addition a + b = c: uniform operands, answer digits computed by a latent carry chain.

Tokens follow ``mdmprob.tasks.addition`` (vocabulary 0-9, '+' = 10, '=' = 11, pad = 12; zero-padded,
most significant digit first)::

    a_{D-1} .. a_0  '+'  b_{D-1} .. b_0  '='  c_D c_{D-1} .. c_0

Every digit a_i, b_i is uniform over 0..9; the operator tokens are fixed. From the least to the
most significant position (``pyro.markov``), with latent carries k_0 = 0 and k_{i+1} in {0, 1}
(i < D-1; the last carry is the token c_D itself):

    c_i = (a_i + b_i + k_i) mod 10,   k_{i+1} = [a_i + b_i + k_i >= 10],   c_D = k_D.

All deterministic sites are Categoricals with -inf logits off the one allowed value, so the
answer digits have zero conditional entropy given both operands. Decoding blocks: the prompt
(a, '+', b, '=') is block 0, the D+1 answer digits are block 1. Constraint, per block: block 0
is a well-formed prompt (digits and the two operators in place), block 1 spells a + b.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from mdmprob.models._common import check_int
from pyro.ops.indexing import Vindex

from mdmprob.structure import Structure
from mdmprob.tasks import addition as task


def _one_point(value: int, vocab: int = task.VOCAB) -> torch.Tensor:
    """Logits of the one-point distribution on ``value`` over the shared vocabulary."""
    logits = torch.full((vocab,), -math.inf, dtype=torch.float64)
    logits[value] = 0.0
    return logits


def build(digits: int = 2) -> Structure:
    D = check_int("digits", digits, 1, 3)
    V = task.VOCAB
    uniform_digit = torch.full((V,), -math.inf, dtype=torch.float64)
    uniform_digit[:10] = -math.log(10)
    # Tables indexed [carry_in, a, b] over all V token values; rows where a or b is not a digit
    # are unreachable (their operand has probability 0) and are filled with a harmless one-point.
    k = torch.arange(2)[:, None, None]
    v = torch.arange(V)
    total = k + v[None, :, None] + v[None, None, :]  # [2, V, V]
    digit_table = torch.full((2, V, V, V), -math.inf, dtype=torch.float64)
    digit_table.scatter_(-1, (total % 10)[..., None], 0.0)
    carry_table = torch.full((2, V, V, 2), -math.inf, dtype=torch.float64)
    carry_table.scatter_(-1, (total >= 10).long()[..., None], 0.0)
    top_table = torch.full((2, V, V, V), -math.inf, dtype=torch.float64)  # c_D = k_D
    top_table.scatter_(-1, (total >= 10).long()[..., None], 0.0)
    plus, eq = _one_point(task.PLUS), _one_point(task.EQ)

    def model():
        pyro.sample("plus", dist.Categorical(logits=plus))
        pyro.sample("eq", dist.Categorical(logits=eq))
        carry = 0
        for i in pyro.markov(range(D)):  # least significant digit first
            a = pyro.sample(f"a_{i}", dist.Categorical(logits=uniform_digit))
            b = pyro.sample(f"b_{i}", dist.Categorical(logits=uniform_digit))
            pyro.sample(f"c_{i}", dist.Categorical(logits=Vindex(digit_table)[carry, a, b]))
            if i < D - 1:
                carry = pyro.sample(f"k_{i + 1}",
                                    dist.Categorical(logits=Vindex(carry_table)[carry, a, b]))
            else:  # the last carry is the top answer digit itself (inside the markov context)
                pyro.sample(f"c_{D}", dist.Categorical(logits=Vindex(top_table)[carry, a, b]))

    tokens = ([f"a_{i}" for i in reversed(range(D))] + ["plus"] + [f"b_{i}" for i in reversed(range(D))]
              + ["eq"] + [f"c_{i}" for i in reversed(range(D + 1))])
    prompt = task.operand_positions(D)

    def sum_holds(x: torch.Tensor) -> torch.Tensor:
        x = x.long().cpu()
        digits_ok = (x[:, prompt] < 10).sum(-1) == 2 * D
        prompt_ok = digits_ok & (x[:, D] == task.PLUS) & (x[:, 2 * D + 1] == task.EQ)
        a, b = task.decode_operands(x, D)
        answer_ok = prompt_ok & (task.decode_answers(x, D) == a + b)
        return torch.stack([prompt_ok, answer_ok], -1)

    structure = Structure(model, tokens, vocab=V, blocks=[prompt, task.answer_positions(D)],
                          constraint=sum_holds, name="addition",
                          description=__doc__.splitlines()[0])
    structure.digits = D
    return structure
