"""The sampler audit: known-good samplers (tests/samplers/good.py) pass against the exact law of
their preset; every known-bad one (tests/samplers/bad.py) is flagged with its verdict; the
statistics are checked against direct formulas; bad samplers get typed errors; an interrupted
audit resumes to the same result.

    markov_chain(length=6, vocab=3, block_size=3):   x0 -> x1 -> ... -> x5
    the "rare" chain: the same with transitions 1 - 2e on the diagonal, e = 1e-3 elsewhere
"""

import math
from pathlib import Path

import brute
import pytest
import torch

import mdmprob
from mdmprob import audit as audit_module
from mdmprob.audit import audit, load_sampler, parse_preset
from mdmprob.errors import MdmprobError, UnknownNameError
from mdmprob.lm import SamplerError, SamplerTimeout

torch.set_num_threads(1)

SAMPLERS = Path(__file__).parent / "samplers"
E = 1e-3


def good(name):
    return f"{SAMPLERS / 'good.py'}:{name}"


def bad(name):
    return f"{SAMPLERS / 'bad.py'}:{name}"


@pytest.fixture(scope="module")
def chain():
    return mdmprob.load_model("markov_chain", length=6, vocab=3, block_size=3)


@pytest.fixture(scope="module")
def rare():
    t = [[1 - 2 * E, E, E], [E, 1 - 2 * E, E], [E, E, 1 - 2 * E]]
    return mdmprob.load_model("markov_chain", length=6, vocab=3, block_size=3, transition=t)


GOOD = [  # sampler, its params, the preset whose exact law it must have
    ("llada_generate", dict(steps=3), "llada:steps=3"),
    # LLaDA's `steps` counts the steps of the whole generation, and so does the preset
    ("llada_generate", dict(steps=6, block_length=3), "llada:steps=6:block_length=3"),
    ("fast_dllm_threshold", dict(threshold=0.6, block_length=3), "fast_dllm_threshold:tau=0.6"),
    ("eb_sampler", dict(gamma=1.0), "eb_sampler:gamma=1.0"),
    ("speculative", {}, "sequential:order=l2r"),
]


@pytest.mark.parametrize("name, params, preset", GOOD, ids=[g[2] for g in GOOD])
def test_known_good_samplers_pass(chain, name, params, preset):
    report = audit(good(name), chain, samples=1000, batch=200, params=params, presets=[preset],
                   size_check=0, seed=1)
    assert report.passed, report.summary()
    assert report.reference == preset and report.finding("law").passed
    assert report.finding("seed").passed and report.finding("batch").passed


BAD = [  # sampler, structure, audit options, the verdict it must get
    ("mask_after_argmax", "chain", dict(lm_options=dict(special_mass=0.05)), "mask_tokens"),
    ("low_precision_gumbel", "rare", dict(params=dict(bits=8), samples=3000, batch=500),
     "tail"),
    ("shared_seed_speculative", "chain", {}, "law"),
    ("eb_noised_entropy", "chain", dict(params=dict(gamma=1.0), samples=2000,
                                        presets=["eb_sampler:gamma=1.0"]), "law"),
    ("ignores_seed", "chain", {}, "seed"),
    ("batch_coupled", "chain", dict(size_check=200), "batch"),
    ("rewrites_prompt", "chain", dict(prompt=[0, 1]), "prompt_changed"),
]


@pytest.mark.parametrize("name, which, options, verdict", BAD, ids=[b[0] for b in BAD])
def test_known_bad_samplers_are_flagged(request, name, which, options, verdict):
    structure = request.getfixturevalue(which)
    options = dict(dict(samples=1000, batch=200, presets=[], size_check=0), **options)
    report = audit(bad(name), structure, **options)
    assert verdict in report.failed, report.summary()
    assert not report.passed


def test_the_good_sampler_passes_the_tail_check_on_the_rare_chain(rare):
    report = audit(good("speculative"), rare, samples=3000, batch=500, presets=[], size_check=0)
    tail = report.finding("tail")
    assert tail.passed is True, report.summary()
    assert report.passed


def test_log_p_and_nfe_of_the_samples(chain):
    report = audit(good("llada_generate"), chain, samples=60, batch=20, params=dict(steps=3),
                   presets=[], size_check=0)
    joint = brute.token_log_joint(chain)
    want = joint[tuple(report.tokens.T)]
    assert torch.allclose(report.log_p, want, atol=1e-10)
    assert report.metrics["nfe"] == 3 and report.metrics["calls_per_batch"] == 3
    ce = -want.mean().item()
    assert report.metrics["cross_entropy"] == pytest.approx(ce, abs=1e-10)
    assert report.metrics["entropy_p"] == pytest.approx(
        -(joint.exp() * joint).sum().item(), abs=1e-10)


def test_which_preset_is_this_sampler(chain):
    presets = ["sequential:order=l2r", "llada:steps=3", "mean_field_blocks"]
    report = audit(good("llada_generate"), chain, samples=400, batch=200,
                   params=dict(steps=3), presets=presets, reference="llada:steps=3",
                   size_check=0)
    assert [f.name for f in report.presets][0] == "llada:steps=3"
    assert report.passed, report.summary()


def test_a_prompt_is_checked_against_the_conditional_and_the_prompted_preset(chain):
    """Under a prompt the preset's law is its exact q from that prompt (``initial=``), and the
    sample's log p is log p(x | prompt) by brute force."""
    report = audit(good("llada_generate"), chain, samples=600, batch=200,
                   params=dict(steps=4), prompt=[2, 0], presets=["llada:steps=4", "mean_field_blocks"],
                   size_check=0)
    assert report.passed, report.summary()
    assert [f.name for f in report.presets][0] == "llada:steps=4"
    assert report.finding("prompt_changed").passed
    joint = brute.token_log_joint(chain)
    cond = joint[2, 0] - joint[2, 0].logsumexp(tuple(range(4)))
    assert torch.allclose(report.log_p, cond[tuple(report.tokens[:, 2:].T)], atol=1e-10)


def test_prompt_style_sampler_with_a_prefix(chain):
    """LLaDA's signature (prompt, gen_length) gets the prefix and the prompt as its prompt; one
    token per step in a random order is exact, so the law is p(x | prompt)."""
    report = audit(good("llada_generate"), chain, samples=400, batch=100,
                   params=dict(steps=4, remasking="random"),
                   prompt=[1, 1], lm_options=dict(prefix=[4], special_tokens={"bos": 4}),
                   size_check=0)
    assert report.finding("prompt_changed").passed and report.passed, report.summary()
    assert (report.tokens[:, :2] == 1).all() and report.metrics["nfe"] == 4


# ----------------------------------------------------------------------------- statistics
def test_plug_in_kl_tv_and_chi_square_against_direct_formulas():
    # samples over V^n = 2^2 outcomes, target r = (0.4, 0.3, 0.2, 0.1)
    r = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    tokens = torch.tensor([[0, 0]] * 50 + [[0, 1]] * 20 + [[1, 0]] * 20 + [[1, 1]] * 10)
    codes = tokens[:, 0] * 2 + tokens[:, 1]
    fit = audit_module._fit("r", tokens, r.log()[codes], r.log(), seed=0)
    q = torch.tensor([0.5, 0.2, 0.2, 0.1], dtype=torch.float64)
    kl = float((q * (q / r).log()).sum()) - (4 - 1) / (2 * 100)
    assert fit.kl == pytest.approx(kl, abs=1e-12)
    assert fit.kl_low <= fit.kl <= fit.kl_high
    assert fit.tv == pytest.approx(0.5 * float((q - r).abs().sum()), abs=1e-12)
    chi2 = float(((q * 100 - r * 100) ** 2 / (r * 100)).sum())
    assert fit.chi2 == pytest.approx(chi2, abs=1e-9) and fit.dof == 3
    assert fit.p_value == pytest.approx(audit_module._chi2_sf(chi2, 3))


def test_distribution_tails_against_closed_forms():
    for x in (0.5, 2.0, 9.0):
        assert audit_module._chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-10)
    lam = 3.7
    for k in (0, 2, 6):
        direct = sum(math.exp(-lam) * lam**i / math.factorial(i) for i in range(k + 1))
        assert audit_module._poisson_cdf(k, lam) == pytest.approx(direct, rel=1e-10)
    n, p = 12, 0.3
    for k in (0, 4, 12):
        direct = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
        assert audit_module._binom_sf(k, n, p) == pytest.approx(direct, rel=1e-10)


def test_a_sample_outside_the_support_makes_kl_infinite():
    r = torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64)
    tokens = torch.tensor([[0, 0], [1, 0], [0, 1]])
    fit = audit_module._fit("r", tokens, r.log()[tokens[:, 0] * 2 + tokens[:, 1]], r.log(), 0)
    assert fit.kl == math.inf and fit.outside_support == 1 and fit.p_value == 0.0


# ----------------------------------------------------------------------------- bad input
def raises(model, input_ids, mask_id=None):
    raise RuntimeError("boom")


def returns_floats(model, input_ids):
    return model(input_ids).logits


def wrong_shape(model, input_ids):
    return input_ids[:, :2]


def out_of_range(model, input_ids):
    return torch.full_like(input_ids, 99)


def spins(model, input_ids):
    while True:
        pass


def calls_forever(model, input_ids):
    while True:
        model(input_ids)


def returns_list(model, input_ids):
    return [[0] * input_ids.shape[1]]


@pytest.mark.parametrize("fn, error, match", [
    (raises, SamplerError, "raises raised RuntimeError: boom"),
    (returns_floats, SamplerError, "returned a torch.float32 tensor"),
    (wrong_shape, SamplerError, r"returned shape \(50, 2\)"),
    (out_of_range, SamplerError, "returned token id 99"),
    (returns_list, SamplerError, "returned list"),
    (spins, SamplerTimeout, "spins ran past its time limit"),
    (calls_forever, SamplerTimeout, "time limit"),
])
def test_bad_samplers_get_typed_errors_naming_them(chain, fn, error, match):
    with pytest.raises(error, match=match):
        audit(fn, chain, samples=100, batch=50, presets=[], size_check=0, time_limit=0.5)


def test_bad_sampler_specs(chain, tmp_path):
    with pytest.raises(SamplerError, match="does not exist"):
        load_sampler("nowhere.py:f")
    with pytest.raises(SamplerError, match="no function 'nope'.*llada_generate"):
        load_sampler(good("nope"))
    with pytest.raises(SamplerError, match="path/to/file.py:function"):
        load_sampler("generate")
    broken = tmp_path / "broken.py"
    broken.write_text("raise ImportError('no such lib')\n")
    with pytest.raises(SamplerError, match="no such lib"):
        load_sampler(f"{broken}:f")
    with pytest.raises(UnknownNameError, match="lada"):
        parse_preset("lada:steps=2")
    with pytest.raises(MdmprobError, match="prompt"):
        audit(good("speculative"), chain, samples=10, prompt=[5])
    with pytest.raises(MdmprobError, match="samples"):
        audit(good("speculative"), chain, samples=1)


def test_an_interrupted_audit_resumes_to_the_same_result(chain, tmp_path):
    fn, _ = load_sampler(good("speculative"))
    seen = []

    def flaky(model, input_ids, mask_id=None):
        seen.append(1)
        if len(seen) == 3:
            raise KeyboardInterrupt
        return fn(model, input_ids, mask_id=mask_id)

    options = dict(samples=200, batch=50, presets=[], size_check=0, seed=3)
    with pytest.raises(KeyboardInterrupt):
        audit(flaky, chain, out=tmp_path, **options)
    seen.clear()
    resumed = audit(flaky, chain, out=tmp_path, **options)
    assert len(seen) == 2  # the two calls saved before the interrupt are not redone
    fresh = audit(fn, chain, **options)
    assert torch.equal(resumed.tokens, fresh.tokens)
    assert (tmp_path / "report.json").exists()
    with pytest.raises(MdmprobError, match="other settings"):
        audit(flaky, chain, out=tmp_path, **dict(options, seed=4))
