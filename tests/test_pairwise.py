"""Pairwise order laws: for the exact oracle both orders give the true pair marginal (order KL and
circulation 0, mutual information = brute force); for a denoiser with incompatible conditionals
(a tiny random BERT) every number matches a direct loop over pairs and values.

    markov_chain(length=4, vocab=3):   x0 -> x1 -> x2 -> x3
"""

import math

import brute
import pytest
import torch

import mdmprob
from mdmprob.denoisers import Oracle
from mdmprob.pairwise import pairwise_orders

torch.set_num_threads(1)


def test_the_oracle_is_order_invariant_and_its_mi_is_exact():
    s = mdmprob.load_model("markov_chain", length=4, vocab=3)
    r = pairwise_orders(Oracle(s))
    assert r.order_kl.abs().max() < 1e-12 and r.circulation.abs().max() < 1e-12
    joint = brute.token_log_joint(s)
    for i in range(4):
        for j in range(4):
            if i == j:
                continue
            others = tuple(k for k in range(4) if k not in (i, j))
            pij = joint.logsumexp(others)
            pij = pij if i < j else pij.T
            mi = (pij.exp() * (pij - pij.logsumexp(1, keepdim=True)
                               - pij.logsumexp(0, keepdim=True))).sum()
            assert r.mutual_information[i, j].item() == pytest.approx(mi.item(), abs=1e-12)
            mf = (pij.logsumexp(1)[:, None] + pij.logsumexp(0)[None, :])
            kl = (mf.exp() * (mf - pij)).sum()
            assert r.mean_field_kl[i, j].item() == pytest.approx(kl.item(), abs=1e-12)


def test_incompatible_conditionals_against_a_direct_loop():
    transformers = pytest.importorskip("transformers")
    from mdmprob.denoisers import HuggingFaceMLM

    torch.manual_seed(1)
    config = transformers.BertConfig(vocab_size=12, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=16)
    den = HuggingFaceMLM(transformers.BertForMaskedLM(config).eval(), [5, 6, 7], 3, 4)
    r = pairwise_orders(den)
    V, mask = 3, 3
    for i in range(3):
        for j in range(3):
            if i == j:
                continue
            def law(first, second):  # log q_{first->second}(x_first, x_second)
                row = torch.full((1, 3), mask)
                m = den(row)[0, first]
                out = torch.empty(V, V, dtype=torch.float64)
                for a in range(V):
                    row = torch.full((1, 3), mask)
                    row[0, first] = a
                    out[a] = m[a] + den(row)[0, second]
                return out
            q, p = law(i, j), law(j, i).T
            kl = (q.exp() * (q - p)).sum().item()
            assert r.order_kl[i, j].item() == pytest.approx(kl, abs=1e-9)
            circ = (q.exp() * (q - p).abs()).sum().item()
            assert r.circulation[i, j].item() == pytest.approx(circ, abs=1e-9)
            assert torch.allclose(r.log_pair[i, j], q, atol=1e-9)
    assert r.order_kl.max() > 0 and math.isfinite(r.order_kl.max().item())
