"""The verification-cost (Prop. 5.1, paper-spec §4-C) and remasking (Prop. C.5, §4-E) experiments:
tiny sweeps through ``run_sweep``, their numbers against independent computations (analytic values
and the brute-force oracle of ``tests/brute.py``), outputs, and resume."""

import csv
import itertools
import json
import math
import re

import torch

torch.set_num_threads(1)

import brute  # noqa: E402
import pytest  # noqa: E402

from mdmprob import load_model, measures  # noqa: E402
from mdmprob.errors import MdmprobError  # noqa: E402
from mdmprob.experiments import get_experiment, run_sweep  # noqa: E402

VC_TINY = dict(block_sizes=(3,), etas=(0.0, 0.01), n_blocks=2, samples=400, prefix_samples=400,
               exact_limit=4)  # block 1: exact (empty prefix); block 2: Monte Carlo (8 > 4)
RM_TINY = dict(block_size=4, ks=(1, 2, 4), etas=(0.0, 0.01), sweeps=(0, 1, 3), chains=2, draws=8)


def _sweep(exp, config, out, **kw):
    """run_sweep with SVG text kept as text, so the labels can be read back."""
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none"}):
        return run_sweep(exp, config, out, **kw)


def _by(records, **cols):
    return [r for r in records if all(r.get(k) == v for k, v in cols.items())]


def _one(records, **cols):
    (r,) = _by(records, **cols)
    return r


def _svg_text(path) -> str:
    return " ".join(re.findall(r">([^<>]+)<", path.read_text()))


# ------------------------------------------------------------------------------ verification-cost
@pytest.fixture(scope="module")
def vc_sweep(tmp_path_factory):
    exp = get_experiment("verification-cost")
    config = exp.make_config(**VC_TINY)
    out = tmp_path_factory.mktemp("verification_cost")
    return exp, config, _sweep(exp, config, out), out


def _brute_block_costs(structure, m):
    """E_{x_P ~ p}[M], E[exp TC], min log M - TC of block m, from the brute-force joint."""
    joint = brute.token_log_joint(structure)  # [2] * n
    block, B = structure.blocks[m], len(structure.blocks[m])
    prefix = [i for b in structure.blocks[:m] for i in b]
    later = tuple(i for i in range(structure.n_tokens) if i not in prefix and i not in block)
    table = torch.logsumexp(joint, later) if later else joint  # axes: prefix then block (in order)
    table = table.reshape(2 ** len(prefix), *[2] * B)
    log_w = torch.logsumexp(table.reshape(len(table), -1), -1)
    e_m = e_tc = 0.0
    gap_min = math.inf
    for row, lw in zip(table, log_w, strict=True):
        if lw == -math.inf:
            continue
        p = (row - lw).exp().reshape(-1)
        marg = [(row - lw).exp().sum(tuple(a for a in range(B) if a != i)) for i in range(B)]
        q = torch.tensor([math.prod(marg[i][x[i]].item() for i in range(B))
                          for x in itertools.product(range(2), repeat=B)], dtype=p.dtype)
        big_m = max((p[j] / q[j]).item() for j in range(len(p)) if p[j] > 0)
        tc = sum(p[j].item() * math.log(p[j] / q[j]) for j in range(len(p)) if p[j] > 0)
        e_m += lw.exp().item() * big_m
        e_tc += lw.exp().item() * math.exp(tc)
        gap_min = min(gap_min, math.log(big_m) - tc)
    return e_m, e_tc, gap_min


def test_verification_cost_records_match_independent_computations(vc_sweep):
    _, config, result, _ = vc_sweep
    records = result.records
    assert {r["metric"] for r in records} == {
        "m", "log_m", "exp_forward_tc", "forward_tc", "log_gap", "log_gap_min", "enumeration_cost",
        "proposals", "rejection_blocks"}
    for eta in config.etas:
        rows = _by(records, eta=eta, block_size=3)
        s = load_model("block_hmm", eta=eta, n_blocks=2, block_size=3)
        # block 1 (exact), analytic: under the prior w = (1/2, 1/2) the two content bits are equal
        # w.p. (0.81 + 0.01) / 2 * 2 = 0.82 and each is Bern(1/2); the parity bit is 1 w.p. p1.
        # q is the product of those marginals; the largest ratios p/q sit at valid blocks.
        p1 = 0.82 * eta + 0.18 * (1 - eta)
        analytic = max(0.41 * (1 - eta) / (0.25 * (1 - p1)), 0.09 * (1 - eta) / (0.25 * p1))
        m0 = _one(rows, block=1, metric="m")
        assert m0["expectation"] == "exact" and m0["se"] is None
        assert m0["value"] == pytest.approx(analytic, rel=1e-9)
        if eta == 0:
            assert m0["value"] == pytest.approx(2.0, rel=1e-12)
        # ... and from the engine's block table vs its mean-field product
        engine = s.engine()
        empty = torch.zeros(1, s.n_tokens, dtype=torch.long)
        joint = engine.block_joint(empty, empty.bool(), s.blocks[0])
        direct = (joint - measures.mean_field(joint, 3)).masked_fill(joint == -math.inf, -math.inf)
        assert m0["value"] == pytest.approx(direct.amax().exp().item(), rel=1e-12)
        assert _one(rows, block=1, metric="forward_tc")["value"] == pytest.approx(
            measures.forward_tc(joint, 3).item(), abs=1e-12)
        # both blocks against the brute-force oracle (block 2 is Monte Carlo over prefixes)
        for m in (0, 1):  # 0-based for the oracle; records number blocks from 1
            e_m, e_tc, gap_min = _brute_block_costs(s, m)
            got_m, got_tc = _one(rows, block=m + 1, metric="m"), _one(rows, block=m + 1,
                                                                       metric="exp_forward_tc")
            if m == 0:
                assert got_m["value"] == pytest.approx(e_m, rel=1e-9)
                assert got_tc["value"] == pytest.approx(e_tc, rel=1e-9)
                assert _one(rows, block=m + 1, metric="log_gap_min")["value"] == pytest.approx(
                    gap_min, abs=1e-9)
            else:
                assert got_m["expectation"] == "mc" and got_m["se"] > 0
                assert abs(got_m["value"] - e_m) <= 4 * got_m["se"]
                assert abs(got_tc["value"] - e_tc) <= 4 * got_tc["se"]
                assert _one(rows, block=m + 1, metric="log_gap_min")["value"] >= gap_min - 1e-9
            # Prop. 5.1 pointwise, and the enumeration cost
            assert _one(rows, block=m + 1, metric="log_gap_min")["value"] >= -1e-12
            assert _one(rows, block=m + 1, metric="enumeration_cost")["value"] == 8
            # the rejection corrector's empirical mean number of proposals is M
            prop = _one(rows, block=m + 1, metric="proposals")
            assert abs(prop["value"] - got_m["value"]) <= 4 * math.hypot(prop["se"],
                                                                          got_m["se"] or 0)
        mean = _by(rows, block="mean")
        assert _one(mean, metric="m")["expectation"] == "mixed"
        assert _one(mean, metric="rejection_blocks")["value"] == 2  # all blocks within budget
        assert _one(mean, metric="m")["value"] == pytest.approx(
            (_one(rows, block=1, metric="m")["value"] + _one(rows, block=2, metric="m")["value"])
            / 2, rel=1e-12)
        assert _one(mean, metric="proposals")["se"] > 0


def test_verification_cost_outputs_summary_and_resume(vc_sweep):
    exp, config, result, out = vc_sweep
    for name in ("records.csv", "records.jsonl", "meta.json", "verification_cost.png",
                 "verification_cost.svg"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(out / "records.csv")))
    assert len(rows) == len(result.records)
    assert {"block_size", "eta", "block", "expectation", "metric", "value", "se"} <= set(rows[0])
    text = _svg_text(out / "verification_cost.svg")
    for label in ("block size B [tokens]", "expected proposals per block [draws]", "η = 0.01",
                  "optimal M", "Prop. 5.1", "enumeration", "rejection()", "mean over blocks"):
        assert label in text, label
    summary = exp.summary(result.records, config)
    assert len(summary) == 4 and all(row["holds"] for row in summary)
    # resume: nothing reruns, the records and their timings are unchanged
    before = json.loads((out / "meta.json").read_text())["timings"]["settings"]
    seen = []
    again = _sweep(exp, config, out, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 2)]
    assert again.records == result.records
    assert json.loads((out / "meta.json").read_text())["timings"]["settings"] == before


def test_verification_cost_budget_and_config_checks():
    exp = get_experiment("verification-cost")
    config = exp.make_config(**{**VC_TINY, "max_proposals": 0})
    records = exp.run_setting(config, {"block_size": 3, "eta": 0.0}, seed=1)
    assert _one(records, block="mean", metric="rejection_blocks")["value"] == 0
    assert not _by(records, metric="proposals")  # over budget: not run, not invented
    for bad in (dict(block_sizes=(1,)), dict(etas=(0.7,)), dict(samples=1), dict(max_proposals=-1)):
        with pytest.raises(MdmprobError):
            exp.make_config(**bad)


# ------------------------------------------------------------------------------ remasking
@pytest.fixture(scope="module")
def rm_sweep(tmp_path_factory):
    exp = get_experiment("remasking")
    config = exp.make_config(**RM_TINY)
    out = tmp_path_factory.mktemp("remasking")
    return exp, config, _sweep(exp, config, out), out


def _brute_chain(structure, k, sweeps):
    """q^(n) of R_k (uniform k-subsets, independent redraws from the exact conditionals) on the
    first block, by direct loops over the 2^B states: {n: tensor [2^B]}; also p and violations."""
    B = len(structure.blocks[0])
    joint = brute.token_log_joint(structure)
    later = tuple(range(B, structure.n_tokens))
    p = (torch.logsumexp(joint, later) if later else joint).exp().reshape(-1)
    states = list(itertools.product(range(2), repeat=B))
    index = {x: j for j, x in enumerate(states)}
    marg = [sum(p[j] for j, x in enumerate(states) if x[i] == 1).item() for i in range(B)]
    q = torch.tensor([math.prod(marg[i] if x[i] else 1 - marg[i] for i in range(B))
                      for x in states], dtype=torch.float64)
    subsets = list(itertools.combinations(range(B), k))

    def cond(i, value, rest, subset):  # p(x_i = value | x_{B \ S} = rest)
        match = [j for j, x in enumerate(states) if all(x[a] == rest[a] for a in range(B)
                                                          if a not in subset)]
        den = sum(p[j].item() for j in match)
        return sum(p[j].item() for j in match if states[j][i] == value) / den

    out = {}
    for n in range(max(sweeps) + 1):
        if n in sweeps:
            out[n] = q
        new = torch.zeros_like(q)
        for subset in subsets:
            for j, x in enumerate(states):
                if q[j] == 0:
                    continue
                for redraw in itertools.product(range(2), repeat=k):
                    y = list(x)
                    for i, v in zip(subset, redraw, strict=True):
                        y[i] = v
                    prob = math.prod(cond(i, v, x, subset) for i, v in zip(subset, redraw,
                                                                             strict=True))
                    new[index[tuple(y)]] += q[j] * prob / len(subsets)
        q = new
    violated = torch.tensor([x[0] != sum(x[1:]) % 2 for x in states])
    return out, p, violated


def test_remasking_matches_a_brute_force_chain(rm_sweep):
    _, config, result, _ = rm_sweep
    records = result.records
    for eta in config.etas:
        s = load_model("block_hmm", eta=eta, n_blocks=1, block_size=4)
        for k in config.ks:
            chain, p, violated = _brute_chain(s, k, config.sweeps)
            for n, q in chain.items():
                viol = _one(records, eta=eta, k=k, n=n, metric="violation")["value"]
                kl = _one(records, eta=eta, k=k, n=n, metric="kl_qp")["value"]
                assert viol == pytest.approx(q[violated].sum().item(), abs=1e-12)
                support = q > 0
                if (support & (p == 0)).any():
                    assert kl == math.inf
                else:
                    expected = (q[support] * (q[support] / p[support]).log()).sum().item()
                    assert kl == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_remasking_prop_c5_and_where_it_stops(rm_sweep):
    exp, config, result, out = rm_sweep
    records = result.records
    # n = 0 is the mean-field proposal: violation 1/2, KL = reverse TC (+inf at eta = 0)
    for eta in config.etas:
        s = load_model("block_hmm", eta=eta, n_blocks=1, block_size=4)
        empty = torch.zeros(1, 4, dtype=torch.long)
        rtc = measures.reverse_tc(s.engine().block_joint(empty, empty.bool(), [0, 1, 2, 3]), 4).item()
        for k in config.ks:
            assert _one(records, eta=eta, k=k, n=0, metric="violation")["value"] == pytest.approx(
                0.5, abs=1e-12)
            assert _one(records, eta=eta, k=k, n=0, metric="kl_qp")["value"] == pytest.approx(rtc)
    assert _one(records, eta=0.0, k=1, n=0, metric="kl_qp")["value"] == math.inf
    # R_1: no violation after one sweep at eta = 0, then frozen (finite, constant KL)
    kl1 = [_one(records, eta=0.0, k=1, n=n, metric="kl_qp")["value"] for n in (1, 3)]
    assert _one(records, eta=0.0, k=1, n=1, metric="violation")["value"] == 0.0
    assert math.isfinite(kl1[0]) and kl1[0] > 0 and kl1[0] == pytest.approx(kl1[1], abs=1e-12)
    # k >= 2 at eta = 0: +inf for every n (Prop. C.5), stored as +inf, never NaN
    for k in (2, 4):
        for n in config.sweeps:
            assert _one(records, eta=0.0, k=k, n=n, metric="kl_qp")["value"] == math.inf
    assert all(r["value"] is None or not math.isnan(r["value"]) for r in records)
    csv_rows = list(csv.DictReader(open(out / "records.csv")))
    assert any(r["metric"] == "kl_qp" and r["value"] == "inf" for r in csv_rows)
    # MCMC diagnostics: present per (eta, k); None (not NaN) where the trace is constant
    for eta in config.etas:
        for k in config.ks:
            for metric in ("ess_bulk_log_p", "rhat_log_p", "ess_bulk_violation", "rhat_violation",
                           "mcmc_mean_violation", "mcmc_violation_final", "log_p_clamped"):
                r = _one(records, eta=eta, k=k, metric=metric)
                assert r["n"] is None and r["diagnostics"] in ("arviz", "pyro")
    frozen = _one(records, eta=0.0, k=1, metric="ess_bulk_violation")
    assert frozen["value"] is None  # violation indicator constant 0 after the first sweep
    assert _one(records, eta=0.0, k=1, metric="mcmc_mean_violation")["value"] == 0.0
    summary = exp.summary(records, config)
    assert len(summary) == 4 and all(row["holds"] for row in summary), summary


def test_remasking_outputs_and_resume(rm_sweep):
    exp, config, result, out = rm_sweep
    names = {p.name for p in result.figures}
    assert names == {"remasking.png", "remasking.svg", "remasking_diagnostics.png",
                     "remasking_diagnostics.svg"}
    for name in ("records.csv", "records.jsonl", "meta.json", *names):
        assert (out / name).stat().st_size > 0, name
    text = _svg_text(out / "remasking.svg")
    for label in ("remasking sweeps n [kernel steps]", "parity-violation rate", "KL(q^(n) ‖ p) [nats]",
                  "KL = +∞", "η = 0.01", "k = 2", "Prop. C.5"):
        assert label in text, label
    text = _svg_text(out / "remasking_diagnostics.svg")
    for label in ("bulk ESS", "R-hat", "remasking kernel R_k"):
        assert label in text, label
    seen = []
    again = _sweep(exp, config, out, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(6, 6)] and again.records == result.records


def test_remasking_config_checks():
    exp = get_experiment("remasking")
    for bad in (dict(ks=(9,)), dict(block_size=13), dict(kernels=("nope",)), dict(sweeps=(-1,)),
                dict(chains=1), dict(draws=2), dict(etas=(1.0,))):
        with pytest.raises(MdmprobError):
            exp.make_config(**bad)
