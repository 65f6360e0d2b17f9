"""Exact mode's factorised path (stochastic commit rules: each candidate commits independently
given the state) against the naive reference enumeration and against the row-by-row path, in
probability and in log space, with prompts, several windows and the budgets."""

import math
import sys
from pathlib import Path

import pytest
import torch

from mdmprob.decoders import Decoder, drivers, mdlm
from mdmprob.decoders.primitives import BernoulliSchedule, RandomOrder
from mdmprob.denoisers import Table
from mdmprob.errors import EnumerationError

sys.path.insert(0, str(Path(__file__).parent))
from naive_decoders import NaiveDecoder  # noqa: E402

CASES = [  # n, V, blocks, steps, window, temperature
    (6, 2, [[0, 1, 2], [3, 4, 5]], 3, "blocks", 1.0),
    (5, 3, [[3, 4], [0, 1, 2]], 2, "blocks", 0.7),
    (5, 2, None, 4, 2, 1.0),
    (4, 3, None, 3, "all", 0.5),
]


def _pair(steps, window, t):
    name = f"bernoulli({steps})/{window}/T={t}"
    return (Decoder(name, RandomOrder(), BernoulliSchedule(steps), window, t),
            NaiveDecoder(name, RandomOrder(), BernoulliSchedule(steps), window, t))


def _row_by_row(monkeypatch, decoder, den, **kw):
    with monkeypatch.context() as m:
        m.setattr(drivers, "DENSE_STATES", 1)  # the factorised path declines every level
        return decoder.distribution(den, **kw)


@pytest.mark.parametrize("n,V,blocks,steps,window,t", CASES)
def test_factorised_exact_mode_equals_the_naive_enumeration(n, V, blocks, steps, window, t):
    den = Table.random(n, V, seed=7 * n + V, concentration=0.6)
    new, naive = _pair(steps, window, t)
    q = new.distribution(den, blocks=blocks)
    q_naive = naive.distribution(den, blocks=blocks)
    assert ((q == -math.inf) == (q_naive == -math.inf)).all()
    torch.testing.assert_close(q.exp(), q_naive.exp(), atol=1e-12, rtol=0)


def test_log_space_path_equals_the_probability_path(monkeypatch):
    den = Table.random(5, 3, seed=3, concentration=0.3)
    decoder, naive = _pair(3, "all", 1.0)
    q = decoder.distribution(den)
    with monkeypatch.context() as m:
        m.setattr(drivers, "_EXP_FLOOR", math.inf)  # no weight counts as a normal float
        q_log = decoder.distribution(den)
    torch.testing.assert_close(q_log.exp(), q.exp(), atol=1e-13, rtol=0)
    torch.testing.assert_close(q_log.exp(), naive.distribution(den).exp(), atol=1e-12, rtol=0)


def test_top_k_values_and_a_prompt_agree_with_the_row_by_row_path(monkeypatch):
    den = Table.random(6, 3, seed=11, concentration=0.5)
    prompt = torch.tensor([1, den.mask_id, 0, den.mask_id, den.mask_id, 2])
    decoder = mdlm(3, top_k=2)
    q = decoder.distribution(den, initial=prompt)
    q_rows = _row_by_row(monkeypatch, decoder, den, initial=prompt)
    assert ((q == -math.inf) == (q_rows == -math.inf)).all()
    torch.testing.assert_close(q.exp(), q_rows.exp(), atol=1e-12, rtol=0)
    support = (q > -math.inf).nonzero()
    assert (support[:, 0] == 1).all() and (support[:, 2] == 0).all() and (support[:, 5] == 2).all()
    assert abs(q.exp().sum().item() - 1) < 1e-12


class _Counting:
    """A denoiser that records every row it is asked about."""

    def __init__(self, inner):
        self.inner, self.rows = inner, []
        for name in ("n_tokens", "vocab", "mask_id", "device", "dtype"):
            setattr(self, name, getattr(inner, name))

    def __call__(self, tokens, window=None):
        self.rows.extend(map(tuple, tokens.tolist()))
        return self.inner(tokens)


def test_each_state_goes_to_the_denoiser_once_per_run():
    den = _Counting(Table.random(5, 2, seed=5))
    mdlm(4).distribution(den)
    assert len(den.rows) == len(set(den.rows))
    assert len(den.rows) == 3 ** 5 - 2 ** 5  # every state with a mask is reached (p = 1/4 > 0)


def test_budgets_raise_typed_errors_naming_the_size_and_the_fix(monkeypatch):
    den = Table.random(6, 2, seed=1)
    with pytest.raises(EnumerationError, match=r"max_states=8.*pass max_states=\d+.*Monte Carlo"):
        mdlm(4).distribution(den, max_states=8)
    monkeypatch.setattr(drivers, "OUTCOME_BUDGET", 100)
    with pytest.raises(EnumerationError, match=r"729 outcomes.*budget of 100.*Monte Carlo"):
        mdlm(4).distribution(den)
