"""Denoisers: perturbed oracles (model-error families), tables, leave-one-out, model_error."""

import itertools
import math

import pytest
import torch

import mdmprob
from mdmprob import measures
from mdmprob.denoisers import FAMILIES, Oracle, Perturbed, Table, all_states, model_error
from mdmprob.denoisers.perturbed import gaussian_noise
from mdmprob.errors import BudgetError, EvidenceError, MdmprobError, UnknownNameError

torch.set_num_threads(1)  # tiny tensors: thread start-up costs more than the work


@pytest.fixture(scope="module")
def chain(device):
    return Oracle(mdmprob.load_model("markov_chain", length=4, vocab=3), device=device)


@pytest.fixture(scope="module")
def agreement(device):
    return Oracle(mdmprob.load_model("agreement", delta=0.1, vocab=3), device=device)


@pytest.fixture(scope="module")
def parity(device):
    # tokens (P, Y1, Y2), P = Y1 xor Y2 exactly: H(P | Y1, Y2) = 0
    return Oracle(mdmprob.load_model("block_hmm", n_blocks=1, block_size=3, eta=0.0),
                  device=device)


def masked_mean_kl(denoiser, oracle):
    """Mean KL(p_theta || p) over every masked position of every state."""
    states = all_states(oracle.n_tokens, oracle.vocab, oracle.device)
    masked = states == oracle.vocab
    return measures.kl(q=denoiser(states), p=oracle(states))[masked].mean().item()


# ---------------------------------------------------------------------- Perturbed
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_level_zero_is_the_wrapped_denoiser(family, chain, agreement):
    for oracle in (chain, agreement):
        states = all_states(oracle.n_tokens, oracle.vocab, oracle.device)
        assert torch.equal(Perturbed(oracle, family, 0.0, seed=3)(states), oracle(states))


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("which", ["chain", "agreement"])
def test_error_grows_with_level(family, which, request):
    oracle = request.getfixturevalue(which)
    kls = [masked_mean_kl(Perturbed(oracle, family, level), oracle) for level in (0, 0.1, 0.5)]
    assert kls[0] == 0.0
    assert kls[0] < kls[1] < kls[2] < math.inf


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_perturbed_rows_are_distributions(family, chain):
    states = all_states(4, 3, chain.device)
    out = Perturbed(chain, family, 0.7 if family == "uniform" else 2.0)(states)
    assert out.dtype == torch.float64 and out.device == chain.device
    assert not torch.isnan(out).any()
    torch.testing.assert_close(out.logsumexp(-1), torch.zeros(out.shape[:2], dtype=out.dtype,
                                                              device=out.device), atol=1e-12,
                               rtol=0)


def test_temperature_and_uniform_formulas(agreement):
    states = all_states(2, 3, agreement.device)
    log_p = agreement(states)
    masked = (states == 3)[..., None]
    temp = Perturbed(agreement, "temperature", 1.0)(states)
    torch.testing.assert_close(temp[masked.expand_as(temp)],
                               (log_p / 2).log_softmax(-1)[masked.expand_as(temp)])
    mix = Perturbed(agreement, "uniform", 0.25)(states).exp()
    torch.testing.assert_close(mix[masked.expand_as(mix)],
                               (0.75 * log_p.exp() + 0.25 / 3)[masked.expand_as(mix)])
    flat = Perturbed(agreement, "uniform", 1.0)(states)[masked.expand_as(mix)].exp()
    torch.testing.assert_close(flat, torch.full_like(flat, 1 / 3))


def test_hard_zeros_stay_zero(parity):
    states = all_states(3, 2, parity.device)
    zero = parity(states) == -math.inf
    for family in ("temperature", "logit_noise", "entropy_scaled"):
        out = Perturbed(parity, family, 0.5)(states)
        assert torch.equal(out == -math.inf, zero), family
    assert not (Perturbed(parity, "uniform", 0.5)(states)[states == 2] == -math.inf).any()


def test_logit_noise_is_a_function_of_the_context(chain):
    states = all_states(4, 3, chain.device)
    noisy = Perturbed(chain, "logit_noise", 0.8, seed=7)
    full = noisy(states)
    perm = torch.randperm(states.shape[0], generator=torch.Generator().manual_seed(0)).to(
        chain.device)
    assert torch.equal(noisy(states[perm]), full[perm])  # other batch positions
    for i in (0, 17, 255):
        assert torch.equal(noisy(states[i:i + 1]), full[i:i + 1])  # batch size 1
    assert torch.equal(noisy(states[[5, 5, 5]]), full[[5, 5, 5]])  # repeats
    again = Perturbed(chain, "logit_noise", 0.8, seed=7)(states)
    assert torch.equal(again, full)  # a fresh instance with the same seed
    other = Perturbed(chain, "logit_noise", 0.8, seed=8)(states)
    masked = states == 3
    assert not torch.isclose(other, full)[masked].all(-1).any()  # every masked row moves


def test_gaussian_noise_is_standard_normal_and_context_specific(device):
    tokens = all_states(4, 3, device)  # 256 contexts x 4 positions x 3 values
    xi = gaussian_noise(tokens, 3, seed=0)
    assert xi.shape == (256, 4, 3) and xi.device.type == torch.device(device).type
    assert abs(xi.mean().item()) < 0.1 and abs(xi.std().item() - 1) < 0.1
    assert xi.reshape(-1).unique().numel() == xi.numel()  # no repeated draw
    # contexts that differ only in one visible token (or in a mask) get unrelated noise
    a = torch.tensor([[0, 1, 2, 3], [0, 1, 1, 3], [0, 3, 2, 3]], device=device)
    xa = gaussian_noise(a, 3, seed=0)
    assert not torch.isclose(xa[0], xa[1]).any() and not torch.isclose(xa[0], xa[2]).any()
    big = torch.tensor([[2**40 % 5] * 9], device=device)
    assert torch.isfinite(gaussian_noise(big, 5, seed=2**62)).all()


@pytest.mark.parametrize("level", [0.05, 0.3, 1.0, 3.0])
def test_entropy_scaled_kl_is_level_times_entropy(level, parity, chain):
    for oracle in (parity, chain):
        states = all_states(oracle.n_tokens, oracle.vocab, oracle.device)
        masked = states == oracle.vocab
        log_p = oracle(states)[masked]
        out = Perturbed(oracle, "entropy_scaled", level)(states)[masked]
        h = measures.entropy(log_p)
        kl = measures.kl(q=out, p=log_p)
        reachable = -torch.log1p(-log_p.exp().amax(-1))  # KL when the whole mode is moved
        target = torch.minimum(level * h, reachable)
        torch.testing.assert_close(kl, target, atol=1e-6, rtol=0)
        deterministic = h == 0
        assert torch.equal(out[deterministic], log_p[deterministic])
        if oracle is parity:
            assert deterministic.any() and (~deterministic).any()
        if level <= 0.3:
            assert (target == level * h).all()  # every row reachable at small levels


# ---------------------------------------------------------------------- Table
def test_table_from_denoiser_round_trips(chain, parity):
    for oracle in (chain, parity):
        table = Table.from_denoiser(oracle)
        states = table.states()
        assert torch.equal(table(states), oracle(states))
        perm = torch.randperm(states.shape[0], generator=torch.Generator().manual_seed(1))
        assert torch.equal(table(states[perm.to(states.device)]),
                           oracle(states[perm.to(states.device)]))
        assert torch.equal(table.code(states), torch.arange(states.shape[0],
                                                            device=states.device))


def test_table_from_function_matches_the_oracle(parity):
    def fn(state):
        tokens = torch.tensor([[2 if t is None else t for t in state]])
        return parity(tokens)[0].exp().cpu().tolist()

    table = Table.from_function(fn, n_tokens=3, vocab=2, device=parity.device)
    states = table.states()
    torch.testing.assert_close(table(states), parity(states), atol=1e-15, rtol=0)


def test_table_random_rows_are_normalised_and_seeded(device):
    table = Table.random(3, 3, seed=4, concentration=0.5, device=device)
    states = table.states()
    out = table(states)
    assert out.shape == (64, 3, 3) and out.device.type == torch.device(device).type
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(64, 3, dtype=torch.float64,
                                                             device=out.device), atol=1e-12,
                               rtol=0)
    assert torch.equal(Table.random(3, 3, seed=4, concentration=0.5, device=device)(states), out)
    assert not torch.equal(Table.random(3, 3, seed=5, concentration=0.5, device=device)(states),
                           out)


def test_table_can_be_incoherent(device):
    # p(x1 | x2 masked) says "always 0", p(x2 | x1 masked) says "always 1" for x1 = 0, ...:
    # conditionals no joint distribution has; the table must still accept and serve them.
    def fn(state):
        return [[1.0, 0.0], [0.0, 1.0]] if state[0] is None or state[1] is None else [[.5, .5]] * 2

    table = Table.from_function(fn, 2, 2, device=device)
    out = table(torch.tensor([[2, 2], [0, 2]], device=device)).exp()
    assert out[0, 0, 0] == 1.0 and out[1, 1, 1] == 1.0


# ---------------------------------------------------------------------- leave-one-out
def test_leave_one_out_matches_brute_force(chain):
    n, vocab = 4, 3
    seqs = torch.tensor(list(itertools.product(range(vocab), repeat=n)), device=chain.device)
    joint = chain.engine.log_prob(seqs).reshape([vocab] * n).cpu()
    states = all_states(n, vocab, chain.device)
    loo = chain.leave_one_out(states).cpu()
    expected = torch.empty_like(loo)
    for b, state in enumerate(states.cpu().tolist()):
        for i in range(n):
            if state[i] == vocab:  # masked rows: p(x_i | x_visible), as in __call__
                expected[b, i] = chain(states[b:b + 1])[0, i].cpu()
                continue
            index = tuple(slice(None) if (j == i or t == vocab) else t
                          for j, t in enumerate(state))
            table = joint[index]  # axes: the masked positions and i, in position order
            keep = sum(1 for j in range(i) if state[j] == vocab)
            axes = [a for a in range(table.dim()) if a != keep]
            row = torch.logsumexp(table, axes) if axes else table
            expected[b, i] = row - torch.logsumexp(row, 0)
    torch.testing.assert_close(loo, expected, atol=1e-12, rtol=0)


# ---------------------------------------------------------------------- model_error
def test_model_error_of_the_oracle_is_zero(chain):
    err = model_error(chain, chain, num=300, seed=1)
    assert abs(err.kl_qp.value) < 1e-12 and abs(err.kl_pq.value) < 1e-12
    assert all(abs(v) < 1e-12 for v in err.per_position)
    assert err.entropy.value > 0 and err.n_masked == err.kl_qp.n > 0
    assert err.n_infinite == 0 and len(err.per_position) == 4


def test_model_error_of_a_perturbed_oracle(chain):
    err = model_error(Perturbed(chain, "entropy_scaled", 0.3), chain, num=300, seed=2)
    assert err.kl_qp.value > 0 and err.kl_pq.value > 0
    assert err.alpha == pytest.approx(0.3, abs=1e-6)  # KL = 0.3 H exactly at every position
    assert abs(err.intercept) < 1e-6 and err.r2 == pytest.approx(1.0, abs=1e-9)
    assert err.kl_qp.value == pytest.approx(0.3 * err.entropy.value, rel=1e-6)
    again = model_error(Perturbed(chain, "entropy_scaled", 0.3), chain, num=300, seed=2)
    assert again == err  # seeded
    noisy = model_error(Perturbed(chain, "logit_noise", 0.5), chain, num=300, seed=2,
                        mask_rate=0.5)
    assert noisy.kl_qp.value > 0 and noisy.kl_qp.se > 0
    assert noisy.as_dict()["kl_qp_se"] == noisy.kl_qp.se


def test_model_error_keeps_infinite_kl_infinite(parity):
    # uniform mixing puts mass on the impossible parity value: KL(p_theta || p) = +inf there
    err = model_error(Perturbed(parity, "uniform", 0.2), parity, num=400, seed=0)
    assert err.kl_qp.value == math.inf
    assert 0 < err.n_infinite < err.n_masked
    assert math.isfinite(err.kl_pq.value)
    assert math.isfinite(err.alpha) and math.isfinite(err.intercept)
    assert not any(math.isnan(v) for v in err.per_position)


# ---------------------------------------------------------------------- errors
def test_unknown_family_suggests_the_closest(chain):
    with pytest.raises(UnknownNameError, match="did you mean 'temperature'"):
        Perturbed(chain, "temprature", 0.1)


@pytest.mark.parametrize("family,level,valid", [
    ("temperature", -0.1, r"\[0, inf\)"), ("uniform", 1.5, r"\[0, 1\]"),
    ("logit_noise", math.nan, r"\[0, inf\)"), ("entropy_scaled", math.inf, r"\[0, inf\)"),
    ("uniform", "0.1", r"\[0, 1\]"),
])
def test_invalid_level(family, level, valid, chain):
    with pytest.raises(MdmprobError, match=rf"level={level!r}.*{valid}"):
        Perturbed(chain, family, level)


def test_table_errors(device):
    with pytest.raises(BudgetError, match=r"2\*\*20"):
        Table.random(13, 2, device=device)
    with pytest.raises(BudgetError):
        Table.from_denoiser(Oracle(mdmprob.load_model("parity_block", k=13), device=device))
    with pytest.raises(MdmprobError, match="shape"):
        Table(torch.zeros(8, 2, 2, dtype=torch.float64, device=device), 2, 2)
    bad = torch.full((9, 2, 2), math.log(0.6), dtype=torch.float64, device=device)
    with pytest.raises(MdmprobError, match="sums to 1.2"):
        Table(bad, 2, 2)


def test_wrong_tokens_are_evidence_errors(chain):
    table = Table.random(4, 3, device=chain.device)
    for den in (Perturbed(chain, "logit_noise", 0.1), table):
        with pytest.raises(EvidenceError, match=r"shape \[B, 4\]"):
            den(torch.zeros(2, 3, dtype=torch.long))
        with pytest.raises(EvidenceError, match="outside"):
            den(torch.tensor([[0, 1, 2, 4]]))
        with pytest.raises(EvidenceError, match="integer"):
            den(torch.zeros(1, 4))
    with pytest.raises(EvidenceError, match="n_tokens"):
        model_error(table, Oracle(mdmprob.load_model("markov_chain", length=3)))
