"""Conformance: every preset's exact q equals the law of a deliberately simple one-sequence
implementation of the published algorithm (tests/conformance_decoders.py), at T = 0 and T > 0,
with tied confidences, prompts, and steps or blocks that do not divide the length."""

import sys
from pathlib import Path

import pytest
import torch

from mdmprob import load_model
from mdmprob.decoders import (
    fast_dllm_factor,
    fast_dllm_threshold,
    llada,
    mdlm,
    sequential,
)
from mdmprob.denoisers import Oracle, Table

sys.path.insert(0, str(Path(__file__).parent))
import conformance_decoders as ref  # noqa: E402


def _symmetric():
    # Block-HMM, 2 blocks of 3 bits, eta = 1e-3: z1 -> z2, each z -> its 3 bits (exchangeable
    # within a block, so confidences tie)
    s = load_model("block_hmm", n_blocks=2, block_size=3, eta=1e-3)
    return Oracle(s), s.blocks


def _generic():
    # random Dirichlet conditionals on 5 ternary-free binary tokens: incoherent, no ties
    return Table.random(5, 2, seed=3, concentration=0.6), [[0, 1, 2], [3, 4]]


def _small_symmetric():
    s = load_model("block_hmm", n_blocks=2, block_size=2, eta=1e-3)  # 4 tokens, ties
    return Oracle(s), s.blocks


def _small_generic():
    return Table.random(4, 2, seed=8, concentration=0.6), [[0, 1], [2, 3]]


def _q(decoder, den, **kw):
    return decoder.distribution(den, **kw).reshape(-1).exp()


def _close(q, law, n, V):
    torch.testing.assert_close(q.cpu(), ref.as_table(law, n, V), atol=1e-10, rtol=0)


@pytest.mark.parametrize("temperature", [0.0, 0.8])
@pytest.mark.parametrize("make", [_symmetric, _generic], ids=["ties", "generic"])
@pytest.mark.parametrize("steps,block_length", [(4, 3), (2, None), (3, None)])
def test_llada(temperature, make, steps, block_length):
    den, _ = make()
    n, V = den.n_tokens, den.vocab
    if block_length is not None and steps % -(-n // block_length):
        pytest.skip("steps must divide by the number of blocks")
    law = ref.llada(ref.Model(den), steps, block_length, temperature=temperature)
    _close(_q(llada(steps, block_length, temperature=temperature), den), law, n, V)


@pytest.mark.parametrize("make", [_small_symmetric, _small_generic], ids=["ties", "generic"])
def test_llada_random_remasking_and_lowest_position_ties(make):
    # random remasking orders all positions uniformly: the reference averages over all n! orders
    den, _ = make()
    n, V = den.n_tokens, den.vocab
    law = ref.llada(ref.Model(den), 3, None, remasking="random", temperature=1.0)
    _close(_q(llada(3, remasking="random"), den), law, n, V)
    law = ref.llada(ref.Model(den), 2, None, temperature=0.0, ties="lowest_position")
    _close(_q(llada(2, temperature=0.0, ties="lowest_position"), den), law, n, V)


@pytest.mark.parametrize("temperature", [0.0, 0.9])
@pytest.mark.parametrize("confidence", ["draw", "max_prob"])
@pytest.mark.parametrize("make", [_symmetric, _generic], ids=["ties", "generic"])
def test_fast_dllm_threshold(temperature, confidence, make):
    den, blocks = make()
    n, V = den.n_tokens, den.vocab
    law = ref.fast_dllm(ref.Model(den), "threshold", 0.7, blocks, temperature=temperature,
                        confidence=confidence)
    d = fast_dllm_threshold(0.7, temperature=temperature, confidence=confidence)
    _close(_q(d, den, blocks=blocks), law, n, V)


@pytest.mark.parametrize("temperature", [0.0, 0.9])
@pytest.mark.parametrize("variant", ["reference", "strict"])
@pytest.mark.parametrize("confidence", ["draw", "max_prob"])
@pytest.mark.parametrize("make", [_symmetric, _generic], ids=["ties", "generic"])
def test_fast_dllm_factor(temperature, variant, confidence, make):
    den, blocks = make()
    n, V = den.n_tokens, den.vocab
    law = ref.fast_dllm(ref.Model(den), "factor", 1.0, blocks, temperature=temperature,
                        confidence=confidence, variant=variant)
    d = fast_dllm_factor(1.0, temperature=temperature, confidence=confidence, variant=variant)
    _close(_q(d, den, blocks=blocks), law, n, V)


@pytest.mark.parametrize("make", [_small_symmetric, _small_generic], ids=["ties", "generic"])
def test_mdlm_and_easy_first(make):
    den, _ = make()
    n, V = den.n_tokens, den.vocab
    _close(_q(mdlm(3), den), ref.mdlm(ref.Model(den), 3), n, V)
    _close(_q(sequential("entropy"), den), ref.sequential_entropy(ref.Model(den)), n, V)


@pytest.mark.parametrize("make", [_symmetric, _generic], ids=["ties", "generic"])
def test_prompts(make):
    den, blocks = make()
    n, V, mask = den.n_tokens, den.vocab, den.mask_id
    initial = [mask] * n
    initial[1], initial[3] = 1, 0
    m = ref.Model(den)
    cases = [
        (llada(2, temperature=0.7), ref.llada(m, 2, None, temperature=0.7, initial=initial)),
        (fast_dllm_threshold(0.7, temperature=0.9),
         ref.fast_dllm(m, "threshold", 0.7, blocks, temperature=0.9, initial=initial)),
        (mdlm(2), ref.mdlm(m, 2, initial=initial)),
        (sequential("entropy"), ref.sequential_entropy(m, initial=initial)),
    ]
    for decoder, law in cases:
        q = _q(decoder, den, initial=torch.tensor(initial), blocks=blocks)
        _close(q, law, n, V)
        x = torch.tensor([list(x) for x in law])
        assert (x[:, [1, 3]] == torch.tensor([1, 0])).all()  # the prompt is never rewritten
        run = decoder.run(den, 50, seed=0, initial=torch.tensor(initial), blocks=blocks)
        assert (run.tokens[:, [1, 3]] == torch.tensor([1, 0])).all()


@pytest.mark.parametrize("top_k,top_p,nucleus", [(1, None, "standard"), (2, None, "standard"),
                                                  (None, 0.6, "standard"),
                                                  (None, 0.6, "drop_crossing"),
                                                  (2, 0.9, "standard")])
def test_top_k_top_p_value_laws(top_k, top_p, nucleus):
    den = Table.random(3, 4, seed=1, concentration=0.8)  # V = 4: the cuts matter
    m = ref.Model(den)
    from mdmprob.decoders import Decoder
    from mdmprob.decoders.primitives import LeftToRight, WholeWindow

    d = Decoder("mf", LeftToRight(), WholeWindow(), "all", 0.9, top_k=top_k, top_p=top_p,
                nucleus=nucleus)
    P = m.probs((4, 4, 4))
    laws = [ref.value_law(P[i], 0.9, top_k, top_p, nucleus) for i in range(3)]
    expect = {(a, b, c): laws[0][a] * laws[1][b] * laws[2][c]
              for a in laws[0] for b in laws[1] for c in laws[2]}
    _close(_q(d, den), expect, 3, 4)
    _close(_q(mdlm(2, top_k=top_k, top_p=top_p), den),
           ref.mdlm(m, 2, temperature=1.0, top_k=top_k, top_p=top_p), 3, 4)
