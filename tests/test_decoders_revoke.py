"""Revoking and stateful decoders (KLASS, ReMDM conf, WINO, P2): each preset's exact q against a
deliberately simple one-sequence implementation of its paper (tests/conformance_decoders.py), at
T = 0 and T > 0; exact q against batched runs (chi-square, fixed seed); replay; that the rule
matters (the law moves when remasking / readiness fires); the listing; the error paths."""

import math
import sys
from pathlib import Path

import pytest
import torch

from mdmprob import load_model
from mdmprob.catalog import decoders as listed_decoders
from mdmprob.decoders import get_decoder, klass, llada, mdlm, p2, remdm_conf, wino
from mdmprob.denoisers import Oracle, Table
from mdmprob.errors import MdmprobError, UnknownNameError
from tests.brute import assert_runs_follow

sys.path.insert(0, str(Path(__file__).parent))
import conformance_decoders as ref  # noqa: E402


def _symmetric():
    # Block-HMM, 2 blocks of 2 bits: exchangeable within a block, so confidences tie
    return Oracle(load_model("block_hmm", n_blocks=2, block_size=2, eta=1e-3))


def _generic():
    return Table.random(4, 2, seed=8, concentration=0.6)


def _ternary():
    return Table.random(3, 3, seed=5, concentration=0.7)


DENOISERS = [_symmetric, _generic, _ternary]


def _q(decoder, den, **kw):
    return decoder.distribution(den, **kw).reshape(-1).exp()


def _close(q, law, n, V):
    torch.testing.assert_close(q.cpu(), ref.as_table(law, n, V), atol=1e-10, rtol=0)


@pytest.mark.parametrize("make", DENOISERS, ids=["ties", "generic", "ternary"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_klass_matches_its_published_algorithm(make, temperature):
    den = make()
    n, V, m = den.n_tokens, den.vocab, ref.Model(den)
    for c, kl, H, block, steps in [(0.6, 0.5, 1, n, 4), (0.3, 10.0, 2, 2 if n == 4 else 1,
                                                           4 if n == 4 else 3)]:
        law = ref.klass(m, steps, c, kl, H, block, temperature)
        _close(_q(klass(steps, c, kl, H, block, temperature), den), law, n, V)


def test_klass_readiness_matters_and_never_ready_is_llada():
    den = Table.random(5, 2, seed=0, concentration=0.5)
    # H = 2: ready after two steps of stable distributions; it changes the law
    law = ref.klass(ref.Model(den), 4, 0.6, 0.1, 2, 5, 0.0)
    _close(_q(klass(4, 0.6, 0.1, 2, 5), den), law, 5, 2)
    assert (_q(klass(4, 0.6, 0.1, 2, 5), den) - _q(klass(4, 1.0, 0.1, 2, 5), den)).abs().max() > 0.5
    # confidence never > 1: nothing is ever ready, and KLASS is LLaDA low-confidence at T = 0
    for d in (_generic(), _symmetric()):
        torch.testing.assert_close(_q(klass(4, 1.0, 0.01, 2, 2), d), _q(llada(4, 2, temperature=0.0), d),
                                   atol=1e-12, rtol=0)


def test_klass_with_a_prompt_and_structure_blocks():
    s = load_model("block_hmm", n_blocks=2, block_size=2, eta=0.05)
    den = Oracle(s)
    initial = torch.tensor([1, den.mask_id, den.mask_id, den.mask_id])
    law = ref.klass(ref.Model(den), 4, 0.6, 0.5, 1, 2, 0.8, initial=initial.tolist())
    _close(_q(klass(4, 0.6, 0.5, 1, None, 0.8), den, initial=initial), law, 4, 2)


@pytest.mark.parametrize("make", DENOISERS, ids=["ties", "generic", "ternary"])
def test_remdm_conf_matches_its_published_algorithm(make):
    den = make()
    n, V, m = den.n_tokens, den.vocab, ref.Model(den)
    for steps, t in [(4, 1.0), (3, 0.7)]:
        _close(_q(remdm_conf(steps, temperature=t), den), ref.remdm_conf(m, steps, t), n, V)
    # the remasking changes the law against MDLM on the same grid
    assert (_q(remdm_conf(4), den) - _q(mdlm(4), den)).abs().max() > 1e-3


@pytest.mark.parametrize("make", DENOISERS, ids=["ties", "generic", "ternary"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_wino_matches_its_published_algorithm(make, temperature):
    den = make()
    n, V, m = den.n_tokens, den.vocab, ref.Model(den)
    for wide, narrow, block in [(0.6, 0.9, n), (0.3, 0.95, 2)]:
        law = ref.wino(m, wide, narrow, block, temperature)
        _close(_q(wino(wide, narrow, block, temperature), den), law, n, V)


def test_wino_verification_remasks():
    den = Table.random(5, 2, seed=5, concentration=0.5)
    m = ref.Model(den)
    for t in (0.0, 0.8):
        _close(_q(wino(0.8, 0.95, 5, t), den), ref.wino(m, 0.8, 0.95, 5, t), 5, 2)
    # tau_narrow = 0 never remasks: a different law
    assert (_q(wino(0.8, 0.95, 5), den) - _q(wino(0.8, 0.0, 5), den)).abs().max() > 0.5
    runs = wino(0.8, 0.95, 5).run(den, 4, seed=0)
    states = [torch.full_like(runs.tokens, den.mask_id)] + runs.committed.states
    revoked = sum(int(((a != den.mask_id) & (b == den.mask_id)).sum())
                  for a, b in zip(states[:-1], states[1:], strict=True))
    assert revoked > 0


def test_wino_and_p2_with_a_prompt():
    den = _generic()
    m = ref.Model(den)
    initial = [den.mask_id, 1, den.mask_id, den.mask_id]
    for t in (0.0, 0.8):
        _close(_q(wino(0.3, 0.99, 4, t), den, initial=torch.tensor(initial)),
               ref.wino(m, 0.3, 0.99, 4, t, initial=initial), 4, 2)
        _close(_q(p2(3, 2.0, 0.5, t), den, initial=torch.tensor(initial)),
               ref.p2(m, 3, 2.0, 0.5, t, initial=initial), 4, 2)


@pytest.mark.parametrize("make", DENOISERS, ids=["ties", "generic", "ternary"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_p2_matches_its_published_algorithm(make, temperature):
    den = make()
    n, V, m = den.n_tokens, den.vocab, ref.Model(den)
    for steps, eta, alpha in [(4, 1.0, 1.0), (3, 2.0, 0.5), (5, 3.0, 0.0)]:
        law = ref.p2(m, steps, eta, alpha, temperature)
        _close(_q(p2(steps, eta, alpha, temperature), den), law, n, V)


def test_p2_eta_changes_the_law():
    den = _generic()
    assert (_q(p2(4, 3.0, 1.0, 0.8), den) - _q(p2(4, 1.0, 1.0, 0.8), den)).abs().max() > 0.1


# ------------------------------------------------------------------------- runs against exact q
CHI_SQUARE_CASES = [
    klass(4, 0.6, 0.5, 1, 2, temperature=0.8), klass(4, 0.3, 10.0, 2, 4, temperature=0.8),
    remdm_conf(4), wino(0.6, 0.9, 4, temperature=0.8), p2(4, 1.5, 0.5, temperature=0.8),
]


@pytest.mark.parametrize("decoder", CHI_SQUARE_CASES, ids=lambda d: d.name)
def test_batched_runs_follow_the_exact_q(decoder):
    den = _generic()
    assert_runs_follow(decoder, den, _q(decoder, den), 10000)


@pytest.mark.parametrize("decoder", CHI_SQUARE_CASES + [
    klass(4, 0.6, 0.5, 1, 2, temperature=0.8, ties="lowest_position")], ids=lambda d: d.name)
def test_runs_replay_and_log_q(decoder):
    den = _ternary()
    n, V = den.n_tokens, den.vocab
    run = decoder.run(den, 64, seed=1)
    replay = decoder.log_prob(den, run.tokens, committed=run.committed)
    assert torch.isfinite(run.log_q).all() and (run.nfe >= 1).all()
    torch.testing.assert_close(run.log_q, replay, atol=1e-10, rtol=0)
    q = decoder.distribution(den).reshape(-1)
    codes = (run.tokens * V ** torch.arange(n - 1, -1, -1)).sum(-1)
    assert (run.log_q <= q[codes] + 1e-10).all()  # a trajectory is part of q(x)
    if decoder.log_q_is_marginal:
        torch.testing.assert_close(run.log_q, q[codes], atol=1e-10, rtol=0)
        torch.testing.assert_close(decoder.log_prob(den, run.tokens), q[codes], atol=1e-10,
                                   rtol=0)
    # a trajectory that ends elsewhere has probability 0
    other = (run.tokens + 1) % V
    assert (decoder.log_prob(den, other, committed=run.committed) == -math.inf).all()


def test_listed_with_description_and_parameters():
    listing = listed_decoders()
    for name, params in [("klass", {"steps", "conf_threshold", "kl_threshold", "history"}),
                         ("remdm_conf", {"steps", "temperature", "top_p"}),
                         ("wino", {"tau_wide", "tau_narrow", "block_length"}),
                         ("p2", {"steps", "eta", "alpha", "temperature"})]:
        assert len(listing[name]["description"]) > 40
        assert params <= set(listing[name]["params"])
    assert get_decoder("p2", steps=3).name == "p2(steps=3, eta=1, alpha=1)"


def test_errors():
    den = _generic()
    with pytest.raises(MdmprobError, match="conf_threshold=1.5"):
        klass(conf_threshold=1.5)
    with pytest.raises(MdmprobError, match="kl_threshold=0"):
        klass(kl_threshold=0)
    with pytest.raises(MdmprobError, match="history=0"):
        klass(history=0)
    with pytest.raises(UnknownNameError, match="ties"):
        klass(ties="first")
    with pytest.raises(MdmprobError, match="steps=0"):
        remdm_conf(steps=0)
    with pytest.raises(MdmprobError, match="tau_wide=-0.1"):
        wino(tau_wide=-0.1)
    with pytest.raises(MdmprobError, match="tau_narrow=2"):
        wino(tau_narrow=2)
    with pytest.raises(MdmprobError, match="block_length|window=0"):
        wino(block_length=0)
    with pytest.raises(MdmprobError, match="eta=0"):
        p2(eta=0)
    with pytest.raises(MdmprobError, match="alpha=1.5"):
        p2(alpha=1.5)
    with pytest.raises(MdmprobError, match="no prompt mode"):
        remdm_conf(3).run(den, 2, initial=torch.tensor([0, den.mask_id, den.mask_id,
                                                         den.mask_id]))
    run = p2(3).run(den, 2)
    with pytest.raises(MdmprobError, match="committed=run.committed"):
        p2(3).log_prob(den, run.tokens)
    with pytest.raises(MdmprobError, match="Trajectory"):
        p2(3).log_prob(den, run.tokens, committed=list(run.committed))
    with pytest.raises(MdmprobError, match="steps=6 is the total over 4 blocks"):
        klass(6, block_length=1).run(den, 1)


ZOO = [("block_hmm", dict(n_blocks=2, block_size=3, eta=0.05)),
       ("markov_chain", dict(length=4, vocab=3, block_size=2))]


@pytest.mark.parametrize("name,params", ZOO)
def test_zoo_runs_are_valid_and_replay(name, params):
    s = load_model(name, **params)
    o = Oracle(s)
    decoders = [klass(4, 0.6, 0.1, 2, None), wino(0.6, 0.9), p2(4, 2.0, temperature=0.5)]
    if s.n_tokens <= 4:  # ReMDM conf's exact states carry each token's confidence: many
        decoders.append(remdm_conf(3))
    for decoder in decoders:
        run = decoder.run(o, 32, seed=3)
        assert ((run.tokens >= 0) & (run.tokens < s.vocab)).all()
        q = decoder.distribution(o).reshape(-1)
        assert q.exp().sum().item() == pytest.approx(1.0, abs=1e-10)
        codes = (run.tokens * s.vocab ** torch.arange(s.n_tokens - 1, -1, -1)).sum(-1)
        assert (q[codes] > -math.inf).all()
        replay = decoder.log_prob(o, run.tokens, committed=run.committed)
        torch.testing.assert_close(run.log_q, replay, atol=1e-10, rtol=0)
