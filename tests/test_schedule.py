"""The optimal schedule against exhaustive search over every deterministic policy.

The reference enumerates every assignment of a commit set to every decoding state of a tiny
structure, builds each policy's q(x) along its trajectories from brute-force conditionals, and
computes KL(q‖p) directly from the tables (not through the TC identity the DP relies on)."""

import itertools
import math

import brute
import pytest

from mdmprob import load_model, schedule
from mdmprob.decoders import get_decoder
from mdmprob.denoisers import Oracle
from mdmprob.errors import MdmprobError
from mdmprob.evaluate import evaluate


# ----------------------------------------------------------------------------- exhaustive reference
def _conditionals(joint):
    """p(x_i = v | state) for every state with a mask, as {state: [[p per value] per position]}."""
    n, V = joint.dim(), joint.shape[0]
    p = joint.exp()
    out = {}
    for state in itertools.product(range(-1, V), repeat=n):
        if all(v >= 0 for v in state):
            continue
        rows = [[0.0] * V for _ in range(n)]
        for x in itertools.product(range(V), repeat=n):
            if all(s < 0 or s == v for s, v in zip(state, x, strict=True)):
                for i in range(n):
                    rows[i][x[i]] += float(p[x])
        total = sum(rows[0])
        out[state] = [[r / total for r in row] for row in rows] if total > 0 else None
    return out


def _policies(n, V, blocks):
    def valid(s):  # an open block: every later block is still fully masked
        first = next(k for k, b in enumerate(blocks) if any(s[i] < 0 for i in b))
        return all(s[i] < 0 for b in blocks[first + 1:] for i in b)

    states = [s for s in itertools.product(range(-1, V), repeat=n)
              if any(v < 0 for v in s) and valid(s)]
    choices = []
    for s in states:
        block = next(b for b in blocks if any(s[i] < 0 for i in b))
        open_ = [i for i in block if s[i] < 0]
        choices.append([c for r in range(1, len(open_) + 1)
                        for c in itertools.combinations(open_, r)])
    for pick in itertools.product(*choices):
        yield dict(zip(states, pick, strict=True))


def _value(policy, joint, cond):
    """(E[NFE], KL(q‖p), worst-case NFE) of one policy, from its q table."""
    n, V = joint.dim(), joint.shape[0]
    kl = nfe = 0.0
    worst = 0
    for x in itertools.product(range(V), repeat=n):
        state, q, steps = (-1,) * n, 1.0, 0
        while any(v < 0 for v in state):
            rows = cond[state]
            if rows is None:  # impossible state: this x already has p(x) = 0
                break
            subset = policy[state]
            for i in subset:
                q *= rows[i][x[i]]
            steps += 1
            state = tuple(x[i] if i in subset else v for i, v in enumerate(state))
        if q > 0:
            p = math.exp(float(joint[x]))
            kl = math.inf if p == 0 else kl + q * math.log(q / p)
            nfe += q * steps
            worst = max(worst, steps)
    return nfe, max(kl, 0.0), worst


def _lower_hull(points):
    """Vertices of the lower convex hull from the fewest NFE to the first least KL."""
    pts = sorted(set((round(a, 12), round(b, 12)) for a, b in points if math.isfinite(b)))
    hull = []
    for p in pts:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) <= 1e-12:
                hull.pop()
            else:
                break
        hull.append(p)
    low = min(range(len(hull)), key=lambda k: (hull[k][1], hull[k][0]))
    return hull[: low + 1]


def _tiny(seed, zeros=False, latent=True):
    #   z0 -> x0, z0 -> x1, z0 -> x2, x0 -> x2   (three binary tokens, one ternary latent)
    sites = ((brute.SiteSpec("z0", 3, ()),) if latent else ()) + (
        brute.SiteSpec("x0", 2, (0,) if latent else ()),
        brute.SiteSpec("x1", 2, (0,) if latent else (0,)),
        brute.SiteSpec("x2", 2, (0, 1) if latent else (0, 1)))
    spec = brute.NetSpec(sites, ("x0", "x1", "x2"), 2, seed, zeros, False, None)
    return brute.build_network(spec)


@pytest.fixture(scope="module", params=[(3, False), (11, False), (5, True)],
                ids=["seed3", "seed11", "zeros"])
def exhaustive(request):
    seed, zeros = request.param
    structure = _tiny(seed, zeros)
    joint = brute.token_log_joint(structure)
    cond = _conditionals(joint)
    values = [(_value(pi, joint, cond), pi) for pi in _policies(3, 2, structure.blocks)]
    assert len(values) == 7 * 3 ** 6
    return structure, values


def test_lagrangian_optimum_equals_exhaustive_search(exhaustive):
    structure, values = exhaustive
    for cost in (0.0, 0.01, 0.1, 0.5, 2.0):
        best = min(kl + cost * nfe for (nfe, kl, _), _ in values)
        got = schedule.optimal_policy(structure, nfe_cost=cost)
        assert got.kl + cost * got.nfe == pytest.approx(best, abs=1e-9)
        again = schedule.policy_value(structure, got.policy)
        assert (again.nfe, again.kl) == pytest.approx((got.nfe, got.kl), abs=1e-12)


def test_frontier_is_the_lower_hull_of_all_policies(exhaustive):
    structure, values = exhaustive
    want = _lower_hull([(nfe, kl) for (nfe, kl, _), _ in values])
    got = [(p.nfe, p.kl) for p in schedule.frontier(structure)]
    assert len(got) == len(want)
    for (a, b), (c, d) in zip(got, want, strict=True):
        assert a == pytest.approx(c, abs=1e-9) and b == pytest.approx(d, abs=1e-9)


def test_budget_frontier_equals_exhaustive_search(exhaustive):
    structure, values = exhaustive
    got = schedule.budget_frontier(structure)
    assert len(got) == 3  # budgets 1, 2, 3
    for k, point in zip((1, 2, 3), got, strict=True):
        best = min(kl for (_, kl, worst), _ in values if worst <= k)
        assert point.kl == pytest.approx(best, abs=1e-9) or point.kl == best == math.inf


def test_blocks_restrict_the_policies():
    structure = load_model("block_hmm", n_blocks=2, block_size=2, eta=0.05)
    joint = brute.token_log_joint(structure)
    cond = _conditionals(joint)
    values = [_value(pi, joint, cond) for pi in _policies(4, 2, structure.blocks)]
    assert len(values) == 3 * 3 ** 4
    for cost in (0.0, 0.05, 1.0):
        got = schedule.optimal_policy(structure, nfe_cost=cost)
        assert got.kl + cost * got.nfe == pytest.approx(
            min(kl + cost * nfe for nfe, kl, _ in values), abs=1e-9)
    cheapest = schedule.optimal_policy(structure, max_nfe=2)
    assert cheapest.nfe == 2.0
    assert cheapest.kl == pytest.approx(min(kl for nfe, kl, w in values if w <= 2), abs=1e-9)


# ----------------------------------------------------------------------------- presets vs frontier
@pytest.mark.parametrize("name, params", [
    ("mean_field_blocks", {}), ("sequential", {"order": "l2r"}),
    ("sequential", {"order": "max_prob"}),
    ("fast_dllm_threshold", {"tau": 0.7, "confidence": "max_prob"}),
    ("eb_sampler", {}), ("eb_sampler", {"gamma": 0.5, "ties": "lowest_position"}),
])
def test_no_preset_beats_the_frontier_of_its_windows(name, params):
    structure = load_model("block_hmm", n_blocks=2, block_size=3, eta=0.05)
    oracle = Oracle(structure)
    decoder = get_decoder(name, **params)
    points = schedule.frontier(structure, blocks=decoder.windows(oracle, structure.blocks))
    assert [p.nfe for p in points] == sorted(p.nfe for p in points)
    assert [p.kl for p in points] == sorted((p.kl for p in points), reverse=True)
    result = evaluate(structure, decoder, oracle, mode="exact", samples=2000, seed=0)
    # the frontier falls with NFE: reading it 4 standard errors to the right is conservative
    nfe = result["nfe"] + 4 * (result["nfe_se"] or 0.0)
    assert schedule.regret(points, nfe, result["kl_qp"]) >= -1e-9


def test_one_window_frontier_lies_below_the_blocks_frontier():
    structure = load_model("block_hmm", n_blocks=2, block_size=2, eta=0.05)
    within = schedule.frontier(structure)
    anywhere = schedule.frontier(structure, blocks=[range(4)])
    assert anywhere[0].nfe == 1.0 and within[0].nfe == 2.0
    for p in within:
        assert schedule.frontier_kl(anywhere, p.nfe) <= p.kl + 1e-12


def test_frontier_kl_reads_the_hull_linearly():
    pts = [schedule.SchedulePoint(1.0, 4.0, {}), schedule.SchedulePoint(3.0, 0.0, {})]
    assert schedule.frontier_kl(pts, 0.5) == 4.0
    assert schedule.frontier_kl(pts, 2.0) == pytest.approx(2.0)
    assert schedule.frontier_kl(pts, 9.0) == 0.0
    assert schedule.regret(pts, 2.0, math.inf) == math.inf


# ----------------------------------------------------------------------------- bad input
def test_bad_input_is_a_typed_error():
    structure = load_model("block_hmm", n_blocks=2, block_size=2)
    with pytest.raises(MdmprobError, match="below one denoiser call per block"):
        schedule.optimal_policy(structure, max_nfe=1)
    with pytest.raises(MdmprobError, match="nfe_cost"):
        schedule.optimal_policy(structure, nfe_cost=-1.0)
    with pytest.raises(MdmprobError, match="initial state"):
        schedule.optimal_policy(structure, initial=(0, 2, -1, -1))
    with pytest.raises(MdmprobError, match="commits"):
        schedule.policy_value(structure, {(-1, -1, -1, -1): (0, 2)})
    with pytest.raises(MdmprobError, match="no set"):
        schedule.policy_value(structure, {})
    with pytest.raises(MdmprobError, match="non-empty frontier"):
        schedule.regret([], 1.0, 0.0)
    with pytest.raises(MdmprobError, match="partition"):
        schedule.frontier(structure, blocks=[[0, 1], [1, 2, 3]])
    with pytest.raises(MdmprobError, match="decoding states"):
        schedule.frontier(load_model("block_hmm", n_blocks=4, block_size=4))


def test_a_prompt_starts_the_programme_from_its_state():
    structure = load_model("block_hmm", n_blocks=2, block_size=2, eta=0.05)
    prompt = schedule.optimal_policy(structure, initial=(1, 0, -1, -1), max_nfe=1)
    assert prompt.nfe == 1.0
    assert prompt.policy == {((1, 0, -1, -1), 1): (2, 3)}  # under a budget: keyed by steps left
    post = brute.token_log_joint(structure)[1, 0].exp()
    post = post / post.sum()
    a, b = post.sum(1), post.sum(0)
    want = sum(a[i] * b[j] * math.log(a[i] * b[j] / post[i, j]) for i in range(2) for j in range(2))
    assert prompt.kl == pytest.approx(float(want), abs=1e-12) and prompt.kl > 0


def test_experiment_records_frontiers_and_regrets():
    from mdmprob.experiments import get_experiment

    exp = get_experiment("optimal-schedule")
    config = exp.Config(**exp.quick)
    config.check()
    (setting,) = exp.settings(config)
    records = exp.run_setting(config, setting, seed=0)
    windows = {r["window"] for r in records if r["metric"] == "frontier_nfe"}
    assert windows == {"blocks", "all"}
    regrets = [r["value"] for r in records if r["metric"] == "regret"]
    assert len(regrets) == len(config.decoders)
    assert all(r >= -1e-9 for r in regrets)
