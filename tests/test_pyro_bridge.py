"""Decoders as Pyro guides: Pyro's TraceEnum_ELBO and Importance agree with mdmprob's numbers."""

import pyro
import pytest
import torch

from mdmprob import load_model, measures
from mdmprob.decoders import llada, mean_field_blocks, sequential, verified_blocks
from mdmprob.denoisers import Oracle, Perturbed
from mdmprob.errors import MdmprobError
from mdmprob.pyro_bridge import as_guide, collapsed_model, pyro_kl_qp

MODELS = [
    ("block_hmm", dict(n_blocks=2, block_size=3, eta=0.05)),  # z1 -> z2, 3 bits each
    ("markov_chain", dict(length=5, vocab=3)),  # x1 -> ... -> x5
    ("ising_grid", dict(rows=2, cols=3)),  # unnormalised (pyro.factor), 2x3 grid
]


@pytest.mark.parametrize("name,params", MODELS)
@pytest.mark.parametrize("make", [mean_field_blocks, lambda: sequential("entropy"),
                                  verified_blocks], ids=["mean_field", "easy_first", "verified"])
def test_traceenum_elbo_equals_minus_kl_on_the_same_samples(name, params, make):
    s = load_model(name, **params)
    decoder, den = make(), Perturbed(Oracle(s), "temperature", 0.5)
    pyro_value = pyro_kl_qp(decoder, den, s, num=128, seed=3)
    run = decoder.run(den, 128, seed=3, blocks=s.blocks, target=s)
    ours = measures.mc_kl(run.log_q, s.engine().log_prob(run.tokens)).value
    assert pyro_value == pytest.approx(ours, abs=1e-10)


def test_importance_with_the_verified_decoder_has_unit_weights():
    s = load_model("block_hmm", n_blocks=2, block_size=3, eta=0.05)
    o = Oracle(s)
    pyro.set_rng_seed(0)
    imp = pyro.infer.Importance(collapsed_model(s), as_guide(verified_blocks(), o, s),
                                num_samples=40).run()
    assert abs(float(imp.get_log_normalizer())) < 1e-9
    assert float(imp.get_ESS()) == pytest.approx(40.0)


def test_importance_with_mean_field_estimates_log_z_zero():
    s = load_model("markov_chain", length=4, vocab=2, block_size=2)
    o = Oracle(s)
    pyro.set_rng_seed(1)
    imp = pyro.infer.Importance(collapsed_model(s), as_guide(mean_field_blocks(), o, s),
                                num_samples=300).run()
    log_w = torch.stack([torch.as_tensor(w) for w in imp.log_weights]).double()
    w = log_w.exp()
    se = (w.std() / len(w) ** 0.5).item()
    assert abs(w.mean().item() - 1.0) < 4 * se  # E_q[p/q] = 1
    assert 1 < float(imp.get_ESS()) <= 300


def test_guide_needs_a_marginal_log_q():
    s = load_model("agreement")
    with pytest.raises(MdmprobError, match="trajectory density"):
        as_guide(llada(steps=2), Oracle(s), s)
    with pytest.raises(MdmprobError, match="mismatch"):
        as_guide(mean_field_blocks(), Oracle(load_model("agreement", vocab=3)), s)
