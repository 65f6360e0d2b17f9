"""The decoders' names: seeds, renamed classes, fields and arguments, and the moved orders module
(old names warn and give the same objects, new ones do not warn)."""

import pytest
import torch

from mdmprob import load_model
from mdmprob.decoders import get_decoder
from mdmprob.denoisers import Oracle


def test_seed_none_is_fresh_randomness_and_seed_zero_repeats():
    # markov_chain(length=6, vocab=4): 4^6 = 4096 sequences, each of probability <= 1/4 per
    # token draw given the rest, so two batches of 32 sequences agree with probability far below
    # 2^-60
    den = Oracle(load_model("markov_chain", length=6, vocab=4, block_size=6))
    dec = get_decoder("sequential", order="random")
    fresh = [dec.run(den, 32, seed=None).tokens for _ in range(2)]
    assert not torch.equal(fresh[0], fresh[1])
    same = [dec.run(den, 32).tokens for _ in range(2)] + [dec.run(den, 32, seed=0).tokens]
    assert torch.equal(same[0], same[1]) and torch.equal(same[0], same[2])


def test_factor_commit_rule_is_factor_rule():
    from mdmprob.decoders import primitives

    with pytest.warns(DeprecationWarning, match="Factor is now FactorRule"):
        old = primitives.Factor
    assert old is primitives.FactorRule
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        primitives.Nothing  # noqa: B018
    # the preset builds the renamed rule; its law is unchanged (f = 1: the strict rule keeps the
    # largest n with (n + 1)(1 - c_(n)) < 1, here n = 1 of c = (0.6, 0.55))
    rule = primitives.FactorRule(1.0)
    step = primitives.Step(torch.zeros(1, 2, 2), torch.ones(1, 2, dtype=torch.bool),
                           torch.zeros(1, dtype=torch.long), torch.full((1,), 2))
    assert rule.count(step, torch.tensor([[0.6, 0.55]]), None).tolist() == [1]


def test_run_diagnostics_and_their_former_names():
    from mdmprob.decoders import verified_blocks

    s = load_model("parity_block", k=3, eta=0.05)
    den = Oracle(s)
    run = verified_blocks().run(den, 4, target=s)
    assert run.diagnostics["enumerated"][0].tolist() == [2 ** 3] * 4  # V^|block| values
    with pytest.warns(DeprecationWarning, match="DecodeResult.corrector is now diagnostics"):
        assert run.corrector is run.diagnostics
    # the corrector's former argument name still records into the same dict
    dec = verified_blocks()
    window = s.blocks[0]
    tokens = torch.full((2, s.n_tokens), den.mask_id, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    with pytest.warns(DeprecationWarning, match=r"decode_window\(info=...\) is now "
                                                r"decode_window\(diagnostics=...\)"):
        seen: dict = {}
        dec.corrector.decode_window(dec, den, tokens, window, gen, target=s, info=seen)
    assert seen["enumerated"][0].tolist() == [2 ** 3] * 2


def test_evaluation_diagnostics_keep_their_former_name():
    from mdmprob.evaluate import evaluate

    s = load_model("block_hmm", n_blocks=2, block_size=2, eta=0.05)
    ev = evaluate(s, get_decoder("rejection"), Oracle(s), samples=64, seed=0)
    assert ev.diagnostics and "proposals" in str(sorted(ev.diagnostics))
    with pytest.warns(DeprecationWarning, match="corrector is now diagnostics"):
        assert ev.corrector == ev.diagnostics
