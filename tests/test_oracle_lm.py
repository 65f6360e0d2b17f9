"""OracleLM: a structure dressed as ``model(input_ids).logits``; its softmax over the content
ids is the brute-force conditional, specials get exactly ``special_mass``, the prefix and visible
positions are point masses, calls are counted, and bad ids raise typed errors.

    markov_chain(length=4, vocab=3):   x0 -> x1 -> x2 -> x3
"""

import math

import brute
import pytest
import torch

import mdmprob
from mdmprob.denoisers import Oracle
from mdmprob.errors import EvidenceError, MdmprobError
from mdmprob.lm import LMOutput, OracleLM

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def chain():
    return mdmprob.load_model("markov_chain", length=4, vocab=3, block_size=2)


def rows():
    # 3 = mask in the structure's tokens
    return torch.tensor([[3, 3, 3, 3], [0, 3, 2, 3], [1, 1, 1, 3]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softmax_is_the_exact_conditional(chain, dtype, device):
    lm = OracleLM(chain, token_ids=[10, 11, 12], mask_id=5, special_tokens={"eos": 7},
                  vocab_size=13, prefix=[8], dtype=dtype, device=device)
    tokens = rows()
    ids = torch.tensor([10, 11, 12, 5])[tokens]
    ids = torch.cat([torch.full((3, 1), 8), ids], 1)
    out = lm(ids)
    assert isinstance(out, LMOutput) and out.logits.shape == (3, 5, 13)
    assert out.logits.dtype == dtype and out[0] is out.logits
    probs = out.logits.double().softmax(-1).cpu()
    want = brute.conditionals(brute.token_log_joint(chain), tokens.clamp(max=2),
                              tokens != 3).exp()
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    assert torch.allclose(probs[:, 1:, 10:13], want, atol=tol)
    assert torch.all(probs[:, 0, 8] == 1)  # the prefix copies itself
    assert probs[..., [5, 7]].max() == 0  # specials: no mass by default
    assert lm.calls == 1 and lm.rows == 3
    lm(ids[:2])
    assert lm.calls == 2 and lm.rows == 5


def test_special_mass_goes_to_the_specials_at_masked_positions(chain):
    lm = OracleLM(chain, special_tokens={"eos": 4}, special_mass=0.1, dtype=torch.float64)
    tokens = rows()
    probs = lm(tokens).logits.softmax(-1)
    masked = tokens == 3
    assert torch.allclose(probs[masked][:, 3:].sum(-1), torch.full((int(masked.sum()),), 0.1))
    assert torch.allclose(probs[masked][:, 3], probs[masked][:, 4])
    want = brute.conditionals(brute.token_log_joint(chain), tokens.clamp(max=2),
                              ~masked).exp()
    assert torch.allclose(probs[masked][:, :3], 0.9 * want[masked], atol=1e-12)
    assert torch.all(probs[~masked].max(-1).values == 1)


def test_wraps_any_denoiser_and_round_trips_ids(chain):
    lm = OracleLM(Oracle(chain), token_ids=[2, 0, 1], mask_id=3)
    tokens = rows()
    ids = lm.to_model(tokens)
    assert torch.equal(ids, torch.tensor([2, 0, 1, 3])[tokens])
    assert torch.equal(lm.to_structure(ids), tokens)
    assert lm.config.mask_token_id == 3 and lm.config.vocab_size == 4


def test_zero_probability_is_a_finite_floor_that_underflows(chain):
    hard = mdmprob.load_model("markov_chain", length=2, vocab=2,
                              transition=[[1.0, 0.0], [0.5, 0.5]])
    lm = OracleLM(hard, dtype=torch.float32)
    logits = lm(torch.tensor([[0, 2]])).logits
    assert torch.isfinite(logits).all()
    assert logits[0, 1].softmax(-1)[1] == 0 and logits[0, 1, 1] == -1e4
    # entropies computed the usual way stay finite
    logp = logits.log_softmax(-1)
    assert torch.isfinite((logp.exp() * logp).sum(-1)).all()


def test_a_published_style_sampler_runs_unchanged(chain):
    """LLaDA-style code: float64 Gumbel noise on model(x).logits, low-confidence commits."""
    lm = OracleLM(chain, mask_id=7, vocab_size=9)
    x = torch.full((5, 4), 7)
    torch.manual_seed(0)
    for _ in range(4):
        mask_index = x == 7
        logits = lm(x).logits.to(torch.float64)
        logits[..., 7] = -torch.inf
        noise = torch.rand_like(logits)
        x0 = (logits.exp() / -torch.log(noise)).argmax(-1)
        conf = torch.where(mask_index, logits.softmax(-1).gather(-1, x0[..., None])[..., 0],
                           -math.inf)
        top = conf.argmax(-1)
        x[torch.arange(5), top] = x0[torch.arange(5), top]
    assert (x < 3).all() and lm.calls == 4


@pytest.mark.parametrize("ids, match", [
    (torch.zeros(2, 3, dtype=torch.long), "shape"),
    (torch.zeros(2, 4), "integer"),
    (torch.tensor([[0, 1, 2, 9]]), "outside"),
    (torch.tensor([[0, 1, 2, 4]]), "neither a content id nor the mask"),
])
def test_bad_input_ids(chain, ids, match):
    lm = OracleLM(chain, special_tokens={"eos": 4})
    with pytest.raises(EvidenceError, match=match):
        lm(ids)


def test_changed_prefix_is_an_error(chain):
    lm = OracleLM(chain, prefix=[5])
    with pytest.raises(EvidenceError, match="prefix"):
        lm(torch.tensor([[4, 3, 3, 3, 3]]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(token_ids=[0, 1]), "one model id per token"),
    (dict(mask_id=1), "distinct"),
    (dict(vocab_size=3), "outside vocab_size"),
    (dict(special_mass=1.0), "special_mass"),
    (dict(mask_id=-1), "non-negative"),
    (dict(dtype=torch.int64), "floating"),
])
def test_bad_options(chain, kwargs, match):
    with pytest.raises(MdmprobError, match=match):
        OracleLM(chain, **kwargs)


def test_needs_a_structure_or_denoiser():
    with pytest.raises(MdmprobError, match="Structure or a Denoiser"):
        OracleLM("block_hmm")
