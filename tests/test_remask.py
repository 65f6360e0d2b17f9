"""Remasking decoders: the R_k corrector (paper-spec §4-E, Prop. C.5), ReMDM, and MCMC diagnostics
of the kernel (ESS / R-hat via ArviZ)."""

import itertools
import math

import pytest
import torch

from mdmprob import load_model, measures
from mdmprob.decoders import Decoder, get_decoder, gibbs_remask, mdlm, remdm
from mdmprob.decoders.primitives import LeftToRight, WholeWindow
from mdmprob.decoders.remask import Remask, Trajectory
from mdmprob.denoisers import Oracle, Table
from mdmprob.diagnostics import mcmc_diagnostics
from mdmprob.errors import MdmprobError, UnknownNameError
from mdmprob.evaluate import evaluate

torch.set_num_threads(1)

SWEEPS = [0, 1, 2, 5]


def first_block_chain(structure, kernel, k, device, sweeps=SWEEPS):
    """Exact q^(n) of the first block, flattened, with log p(x_B) and the violation indicator."""
    o = Oracle(structure, device=device)
    block = structure.blocks[0]
    masked = torch.full((1, structure.n_tokens), o.mask_id, device=device)
    chain = Remask(kernel, k).window_chain(o, masked, block, sweeps=sweeps)
    configs = torch.tensor(list(itertools.product(range(2), repeat=len(block))), device=device)
    full = torch.zeros(len(configs), structure.n_tokens, dtype=torch.long, device=device)
    full[:, block] = configs
    engine = structure.engine(device=device)
    log_p = engine.block_joint(torch.zeros_like(masked), torch.zeros_like(masked, dtype=torch.bool),
                               block).reshape(-1)
    violated = structure.violations(full)[:, 0]
    return {n: q.reshape(-1) for n, q in chain.items()}, log_p, violated


def stats(log_q, log_p, violated):
    return measures.violation_rate(log_q, violated).item(), measures.kl(q=log_q, p=log_p).item()


# ------------------------------------------------------------------ (a) §4-E and Prop. C.5
@pytest.mark.parametrize("eta", [0.0, 1e-8])
@pytest.mark.parametrize("kernel", ["random", "lowest_confidence"])
def test_r1_removes_parity_violation_in_one_sweep_then_freezes(eta, kernel, device):
    chain, log_p, violated = first_block_chain(load_model("parity_block", k=4, eta=eta), kernel,
                                               1, device)
    assert stats(chain[0], log_p, violated)[0] == pytest.approx(0.5, abs=1e-12)  # mean field
    for n in SWEEPS[1:]:
        viol, kl = stats(chain[n], log_p, violated)
        assert viol <= eta * (1 + 1e-6)  # exactly 0 at eta = 0; p's own rate eta otherwise
        assert math.isfinite(kl)
        # the uniform-marginal parity block: one Gibbs step from the uniform proposal lands on p
        assert kl < 1e-12
        torch.testing.assert_close(chain[n], chain[1], atol=1e-12, rtol=0)  # frozen


@pytest.mark.parametrize("eta", [0.0, 1e-8])
def test_r1_is_coherent_but_biased_on_block_hmm(eta, device):
    # non-uniform block conditional: R_1 lands on the constraint set but not on p, and stays
    chain, log_p, violated = first_block_chain(load_model("block_hmm", n_blocks=1, block_size=4,
                                                          eta=eta), "random", 1, device)
    kls = []
    for n in SWEEPS[1:]:
        viol, kl = stats(chain[n], log_p, violated)
        assert viol <= 3 * eta
        assert 0.1 < kl < math.inf
        kls.append(kl)
    assert max(kls) - min(kls) < 1e-6  # frozen (exactly at eta = 0, mixing time ~1/eta else)


@pytest.mark.parametrize("eta", [0.0, 1e-8])
@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("kernel", ["random", "lowest_confidence"])
def test_rk_with_k_at_least_2_keeps_violation_prop_c5(eta, k, kernel, device):
    chain, log_p, violated = first_block_chain(load_model("parity_block", k=4, eta=eta), kernel,
                                               k, device)
    for n in SWEEPS[1:]:
        viol, kl = stats(chain[n], log_p, violated)
        assert viol > 0.1
        if eta == 0:
            assert kl == math.inf  # Prop. C.5: KL(q^(n) || p) = +inf for every finite n
        else:
            assert 1.0 < kl < math.inf


def test_exact_mode_evaluate_agrees_with_the_chain():
    s = load_model("parity_block", k=4, eta=0.0)
    o = Oracle(s)
    r1 = evaluate(s, gibbs_remask(k=1, sweeps=1), o, mode="exact", samples=64)
    assert r1["violation"] == 0.0 and r1["kl_qp"] < 1e-12 and r1["incoherence"] == 0.0
    r2 = evaluate(s, gibbs_remask(k=2, sweeps=5), o, mode="exact", samples=64)
    assert r2["violation"] == pytest.approx(0.5, abs=1e-12) and r2["kl_qp"] == math.inf
    # the run's committed steps: the proposal, then one step of k positions per sweep
    run = gibbs_remask(k=2, sweeps=5).run(o, 8)
    assert run.steps == 6 and all(int(c.sum(-1).max()) == 2 for c in run.committed[1:])
    assert (run.nfe == 6).all()


# ------------------------------------------------------------------ (b) run vs exact
def assert_frequencies_match(tokens, log_q, V, z=4.0):
    """Per-cell |freq - q| <= z se for cells with an expected count >= 5; the other cells are
    pooled into one (chi-square style)."""
    num, n = tokens.shape
    q = log_q.reshape(-1).exp()
    assert q.sum().item() == pytest.approx(1.0, abs=1e-12)
    codes = (tokens * V ** torch.arange(n - 1, -1, -1, device=tokens.device)).sum(-1)
    freq = torch.bincount(codes, minlength=V ** n).double() / num
    big = q * num >= 5
    cells_q = torch.cat([q[big], q[~big].sum()[None]])
    cells_f = torch.cat([freq[big], freq[~big].sum()[None]])
    se = (cells_q * (1 - cells_q) / num).sqrt()
    assert ((cells_f - cells_q).abs() <= z * se + 1e-12).all(), (cells_f - cells_q).abs() / se
    assert freq[q == 0].sum() == 0  # nothing where q has no mass


@pytest.mark.parametrize("kernel,k,sweeps,blocks", [
    ("random", 2, 3, [[0, 1, 2, 3]]), ("lowest_confidence", 2, 2, [[0, 1, 2, 3]]),
    ("random", 1, 2, [[0, 1], [2, 3]]), ("lowest_confidence", 1, 3, [[2, 3], [0, 1]]),
])
def test_run_frequencies_match_exact_window_chain(kernel, k, sweeps, blocks, device):
    den = Table.random(4, 3, seed=5, concentration=0.7, device=device)  # incoherent conditionals
    d = gibbs_remask(k=k, sweeps=sweeps, kernel=kernel)
    run = d.run(den, 30000, seed=7, blocks=blocks)
    assert_frequencies_match(run.tokens, d.distribution(den, blocks=blocks), 3)


# ------------------------------------------------------------------ (c) log q replay
@pytest.mark.parametrize("kernel", ["random", "lowest_confidence"])
def test_log_q_replays_the_trajectory(kernel, device):
    s = load_model("block_hmm", n_blocks=2, block_size=3, eta=0.0)
    o = Oracle(s, device=device)
    d = gibbs_remask(k=2, sweeps=3, kernel=kernel)
    run = d.run(o, 256, seed=3)
    assert isinstance(run.committed, Trajectory) and not run.log_q_is_marginal
    assert torch.isfinite(run.log_q).all() and ((run.tokens >= 0) & (run.tokens < 2)).all()
    replay = d.log_prob(o, run.tokens, committed=run.committed)
    torch.testing.assert_close(replay, run.log_q, atol=1e-10, rtol=0)
    torch.testing.assert_close(run.log_q_tokens.sum(-1), run.log_q, atol=1e-10, rtol=0)
    other = run.tokens.clone()
    other[0, 0] = 1 - other[0, 0]
    assert d.log_prob(o, other, committed=run.committed)[0] == -math.inf
    # the base Decoder with the same corrector draws the same sequences (same random stream)
    base = Decoder("plain", LeftToRight(), WholeWindow(), "blocks", 1.0, Remask(kernel, 2, 3))
    plain = base.run(o, 256, seed=3)
    assert torch.equal(plain.tokens, run.tokens)
    torch.testing.assert_close(plain.log_q, run.log_q, atol=1e-12, rtol=0)
    with pytest.raises(MdmprobError, match="gibbs_remask"):
        base.log_prob(o, run.tokens, committed=plain.committed)
    with pytest.raises(MdmprobError, match="Trajectory"):
        d.log_prob(o, run.tokens, committed=list(run.committed))
    with pytest.raises(MdmprobError, match="sums over"):
        d.log_prob(o, run.tokens)


# ------------------------------------------------------------------ (d) ReMDM
@pytest.mark.parametrize("eta,schedule", [(0.3, "cap"), (0.5, "rescale")])
def test_remdm_exact_distribution_matches_runs_and_replays(eta, schedule, device):
    s = load_model("parity_block", k=3, eta=0.1)
    o = Oracle(s, device=device)
    d = remdm(steps=4, eta=eta, schedule=schedule)
    q = d.distribution(o)
    assert q.exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    run = d.run(o, 30000, seed=2)
    assert_frequencies_match(run.tokens, q, 2)
    assert not run.log_q_is_marginal and (run.nfe >= 1).all() and (run.nfe <= 4).all()
    assert torch.cat(run.diagnostics["remasked"]).sum() > 0  # remasking happened
    sub = slice(0, 512)
    committed = Trajectory([c[sub] for c in run.committed], [t[sub] for t in run.committed.states])
    replay = d.log_prob(o, run.tokens[sub], committed=committed)
    torch.testing.assert_close(replay, run.log_q[sub], atol=1e-10, rtol=0)
    assert (q - mdlm(4).distribution(o)).abs().max() > 1e-3  # remasking changes q


@pytest.mark.parametrize("steps", [1, 2, 3, 5])
def test_remdm_with_eta_0_is_mdlm_exactly(steps, device):
    for den in (Oracle(load_model("parity_block", k=3, eta=0.1), device=device),
                Table.random(3, 3, seed=1, device=device)):
        a, b = remdm(steps=steps, eta=0.0).distribution(den), mdlm(steps).distribution(den)
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


# ------------------------------------------------------------------ (e) MCMC diagnostics
@pytest.fixture(scope="module")
def hmm():
    s = load_model("block_hmm", n_blocks=2, block_size=4)
    return s, Table.from_denoiser(Oracle(s))  # the oracle, tabulated (fast calls)


def test_mcmc_diagnostics_by_arviz(hmm):
    s, den = hmm
    a = mcmc_diagnostics(s, gibbs_remask(k=2), den, chains=4, draws=200, seed=0)
    assert a["backend"] == "arviz" and a["block"] == [0, 1, 2, 3]
    for key in ("log_p", "violation"):
        assert 10 < a["ess_bulk"][key] < 4 * 200 * 2 and math.isfinite(a["rhat"][key])
        assert 0.9 < a["rhat"][key] < 1.1
        assert a["traces"][key].shape == (4, 200)
    assert 0 < a["violation_exact"] < 1 and math.isfinite(a["kl_qp"]) and a["kl_qp"] > 1
    assert 0 <= a["violation_rate"] <= 1
    assert abs(a["mean"]["violation"] - a["violation_exact"]) < 0.1


def test_mcmc_diagnostics_frozen_chain_and_errors(hmm):
    s, den = hmm
    r1 = mcmc_diagnostics(s, Remask("random", 1), den, chains=2, draws=8, seed=1)
    assert r1["violation_exact"] < 1e-6 and math.isfinite(r1["kl_qp"])
    with pytest.raises(MdmprobError, match="Remask"):
        mcmc_diagnostics(s, get_decoder("mean_field_blocks"), den)
    with pytest.raises(MdmprobError, match="chains"):
        mcmc_diagnostics(s, gibbs_remask(), den, chains=1)
    with pytest.raises(MdmprobError, match="draws"):
        mcmc_diagnostics(s, gibbs_remask(), den, draws=2)
    other = Oracle(load_model("parity_block", k=3))
    with pytest.raises(MdmprobError, match="denoiser/structure mismatch.*n_tokens=3"):
        mcmc_diagnostics(s, gibbs_remask(), other)


# ------------------------------------------------------------------ (f) errors
def test_errors():
    s = load_model("parity_block", k=4, eta=0.0)
    o = Oracle(s)
    with pytest.raises(MdmprobError, match="k=0"):
        gibbs_remask(k=0)
    with pytest.raises(MdmprobError, match="sweeps=-1"):
        gibbs_remask(sweeps=-1)
    with pytest.raises(MdmprobError, match="k=5 exceeds the window of 4"):
        gibbs_remask(k=5).run(o, 2)
    with pytest.raises(MdmprobError, match="k=5 exceeds"):
        gibbs_remask(k=5).distribution(o)
    with pytest.raises(MdmprobError, match="eta=-0.1"):
        remdm(eta=-0.1)
    with pytest.raises(MdmprobError, match="steps=0"):
        remdm(steps=0)
    with pytest.raises(UnknownNameError, match="did you mean 'lowest_confidence'"):
        gibbs_remask(kernel="lowest_confidense")
    with pytest.raises(UnknownNameError, match="did you mean 'rescale'"):
        remdm(schedule="rescal")
    with pytest.raises(MdmprobError, match="sums over"):
        remdm().log_prob(o, torch.zeros(1, 4, dtype=torch.long))
    assert get_decoder("remdm", steps=2).steps == 2
    assert get_decoder("gibbs_remask", k=1).corrector.k == 1
