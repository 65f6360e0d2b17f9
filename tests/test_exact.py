"""The exact engine against brute force, against Pyro's own enumeration, and its error paths.

Every query of ``ExactEngine`` is compared with the brute-force oracle of ``tests/brute.py``
(every full assignment scored by Pyro, no mdmprob engine code) on tiny zoo instances and on
random Bayesian networks, then cross-checked against ``pyro.infer.TraceEnum_ELBO``.
"""

import functools
import math
import warnings

import brute
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pyro.infer import TraceEnum_ELBO, config_enumerate
from pyro.ops.indexing import Vindex

from mdmprob import Structure, load_model
from mdmprob.errors import BudgetError, EnumerationError, EvidenceError
from mdmprob.exact import ExactEngine
from mdmprob.graph import elimination_order

ATOL = 1e-9  # float64 log-space agreement with the oracle

# Tiny zoo instances, each small enough for the oracle (<= 1024 full assignments).
ZOO = {
    # z0 -> z1 ; z_n -> y_n1, y_n2 ; p_n = noisy parity(y_n1, y_n2) (running parity latent s_n1)
    "block_hmm-eta0": ("block_hmm", dict(n_blocks=2, block_size=3, eta=0.0)),
    "block_hmm-eta0.1": ("block_hmm", dict(n_blocks=2, block_size=3, eta=0.1)),
    # y1 -> s1 -> s2 -> p, y2 -> s2, y3 -> p  (s_i = running parity of y_1..y_i)
    "parity_block-eta0": ("parity_block", dict(k=4, eta=0.0)),
    "parity_block-eta0.2": ("parity_block", dict(k=4, eta=0.2)),
    # x1 -> x2
    "agreement": ("agreement", dict(delta=0.1, vocab=3)),
    # x0 -> x1 -> x2 -> x3 -> x4
    "markov_chain": ("markov_chain", dict(length=5, vocab=3)),
    # x00 - x01 - x02 / x10 - x11 - x12, columns coupled (pyro.factor, unnormalised)
    "ising_grid": ("ising_grid", dict(rows=2, cols=3)),
    # same grid, strong coupling and a field: joint probabilities down to ~e^-170
    "ising_grid-strong": ("ising_grid", dict(rows=2, cols=3, coupling=12.0, field=0.7)),
}
NORMALISED = [k for k in ZOO if not k.startswith("ising")]  # no pyro.factor


@functools.cache
def zoo(key: str) -> Structure:
    name, params = ZOO[key]
    return load_model(name, **params)


# ---------------------------------------------------------------------------- helpers
def assert_log_close(actual, expected, atol=ATOL):
    """Equal log-probabilities: the same -inf pattern, finite values within ``atol``; no NaN."""
    actual = actual.detach().cpu()
    expected = expected.detach().cpu()
    assert actual.shape == expected.shape
    assert not actual.isnan().any(), "engine returned NaN"
    assert not expected.isnan().any()
    a_inf, e_inf = actual == -math.inf, expected == -math.inf
    assert torch.equal(a_inf, e_inf), (
        f"-inf pattern differs at {(a_inf != e_inf).nonzero().tolist()[:5]}: "
        f"engine {actual[a_inf != e_inf][:5].tolist()} vs oracle "
        f"{expected[a_inf != e_inf][:5].tolist()}")
    torch.testing.assert_close(actual[~a_inf], expected[~e_inf], atol=atol, rtol=0)


def random_rows(joint, batch, gen, from_joint=0.75, mask_token=True):
    """``batch`` evidence rows: most tokens drawn from ``joint`` (so the evidence is usually
    possible), the rest uniform; each position visible with a per-row random rate; row 0 fully
    visible, row 1 fully masked. Masked positions of half the rows hold the out-of-range value V
    (a mask id) that the engine must ignore."""
    n, vocab = joint.dim(), joint.shape[0]
    k = max(1, int(batch * from_joint))
    idx = torch.multinomial(joint.exp().reshape(-1), k, replacement=True, generator=gen)
    sampled = torch.stack(torch.unravel_index(idx, joint.shape), -1)
    uniform = torch.randint(0, vocab, (batch - k, n), generator=gen)
    tokens = torch.cat([sampled, uniform])
    rate = torch.rand(batch, 1, generator=gen)
    visible = torch.rand(batch, n, generator=gen) < rate
    visible[0] = True
    if batch > 1:
        visible[1] = False
    if mask_token:
        tokens = torch.where(~visible & (torch.arange(batch)[:, None] % 2 == 0), vocab, tokens)
    return tokens, visible


def check_conditionals(engine, joint, tokens, visible):
    """Engine conditionals vs oracle; rows with impossible evidence must be uniform where masked
    (their visible positions are checked separately, see test_impossible_evidence)."""
    got = engine.conditionals(tokens, visible).cpu()
    n, vocab = joint.dim(), joint.shape[0]
    assert got.shape == (tokens.shape[0], n, vocab)
    assert not got.isnan().any()
    possible = brute.log_prob_visible(joint, tokens, visible) > -math.inf
    want = brute.conditionals(joint, tokens, visible)
    assert_log_close(got[possible], want[possible])
    masked_impossible = ~possible[:, None] & ~visible
    uniform = torch.full((int(masked_impossible.sum()), vocab), -math.log(vocab))
    assert_log_close(got[masked_impossible], uniform)


# ---------------------------------------------------------------------------- zoo vs oracle
@pytest.mark.parametrize("key", ZOO)
def test_log_prob_of_every_sequence(key, device):
    s = zoo(key)
    joint = brute.token_log_joint(s)
    every = torch.cartesian_prod(*[torch.arange(s.vocab)] * s.n_tokens).reshape(-1, s.n_tokens)
    got = s.engine(device=device).log_prob(every)
    assert_log_close(got, joint.reshape(-1))


@pytest.mark.parametrize("key", ZOO)
def test_log_prob_visible_random_masks(key, device):
    s = zoo(key)
    joint = brute.token_log_joint(s)
    tokens, visible = random_rows(joint, 64, torch.Generator().manual_seed(1))
    got = s.engine(device=device).log_prob_visible(tokens, visible)
    assert_log_close(got, brute.log_prob_visible(joint, tokens, visible))
    # nothing visible: log p() = 0, also for the unnormalised models
    assert got[1].item() == pytest.approx(0.0, abs=ATOL)


@pytest.mark.parametrize("key", ZOO)
def test_conditionals_random_masks(key, device):
    s = zoo(key)
    joint = brute.token_log_joint(s)
    tokens, visible = random_rows(joint, 64, torch.Generator().manual_seed(2))
    check_conditionals(s.engine(device=device), joint, tokens, visible)


@pytest.mark.parametrize("key", ZOO)
def test_block_joint_random_subsets(key, device):
    s = zoo(key)
    joint = brute.token_log_joint(s)
    engine = s.engine(device=device)
    gen = torch.Generator().manual_seed(3)
    for _ in range(8):
        size = int(torch.randint(1, min(3, s.n_tokens) + 1, (), generator=gen))
        positions = torch.randperm(s.n_tokens, generator=gen)[:size].tolist()  # any order
        tokens, visible = random_rows(joint, 8, gen)
        visible[:, positions] = False
        got = engine.block_joint(tokens, visible, positions).cpu()
        assert got.shape == (8,) + (s.vocab,) * size
        possible = brute.log_prob_visible(joint, tokens, visible) > -math.inf
        assert_log_close(got[possible], brute.block_joint(joint, tokens, visible,
                                                          positions)[possible])
        uniform = torch.full_like(got[~possible], -size * math.log(s.vocab))
        assert_log_close(got[~possible], uniform)


@pytest.mark.parametrize("key", ZOO)
def test_sample_matches_exact_conditional(key, device):
    """One evidence row repeated N = 20000 times: the empirical frequency of every masked
    completion is within 4 standard errors sqrt(p(1-p)/N) of the exact p(x_masked | x_visible)
    (so completions of probability 0 never appear). Fixed seeds: deterministic."""
    s = zoo(key)
    joint = brute.token_log_joint(s)
    n, vocab, N = s.n_tokens, s.vocab, 20000
    gen = torch.Generator().manual_seed(4)
    tokens, _ = random_rows(joint, 1, gen, from_joint=1.0, mask_token=False)
    masked = sorted(torch.randperm(n, generator=gen)[: min(4, max(1, n // 2 + 1))].tolist())
    visible = torch.ones(1, n, dtype=torch.bool)
    visible[0, masked] = False
    exact = brute.masked_posterior(joint, tokens[0], visible[0]).exp().reshape(-1)
    assert exact.sum().item() == pytest.approx(1.0)

    sampler = torch.Generator(device=device).manual_seed(2024)
    out = s.engine(device=device).sample(tokens.expand(N, n), visible.expand(N, n),
                                         generator=sampler).cpu()
    assert out.shape == (N, n) and out.dtype == torch.long
    assert torch.equal(out[:, visible[0]], tokens.expand(N, n)[:, visible[0]])
    assert ((out >= 0) & (out < vocab)).all()
    code = torch.zeros(N, dtype=torch.long)
    for i in masked:  # row-major code of the completion, matching exact's layout
        code = code * vocab + out[:, i]
    freq = torch.bincount(code, minlength=vocab ** len(masked)).double() / N
    se = (exact * (1 - exact) / N).sqrt()
    bad = (freq - exact).abs() > 4 * se + 1e-12
    assert not bad.any(), (f"cells {bad.nonzero().flatten().tolist()}: freq "
                           f"{freq[bad].tolist()} vs exact {exact[bad].tolist()}")


@pytest.mark.parametrize("key", ZOO)
def test_most_likely_marginal_map(key, device):
    """marginalize_latents=True: argmax_{x_masked} p(x_masked | x_visible), on rows without
    ties."""
    s = zoo(key)
    joint = brute.token_log_joint(s)
    tokens, visible = random_rows(joint, 128, torch.Generator().manual_seed(5))
    keep, want = [], []
    for b in range(tokens.shape[0]):
        best = brute.masked_argmax(brute.masked_posterior(joint, tokens[b], visible[b]))
        if best is None:
            continue
        row = tokens[b].clone()
        row[~visible[b]] = torch.tensor(best, dtype=torch.long)
        keep.append(b)
        want.append(row)
    assert len(keep) >= 10, "too few tie-free rows to test"
    got = s.engine(device=device).most_likely(tokens[keep], visible[keep],
                                              marginalize_latents=True)
    assert torch.equal(got.cpu(), torch.stack(want))


@pytest.mark.parametrize("key", ZOO)
def test_most_likely_joint_map(key, device):
    """marginalize_latents=False: the token part of argmax_{x_masked, z} p(x_masked, z | x_vis),
    on rows where that token part is unique."""
    s = zoo(key)
    full = brute.full_log_joint(s)
    n = s.n_tokens
    tokens, visible = random_rows(brute.token_log_joint(s), 128, torch.Generator().manual_seed(6))
    keep, want = [], []
    for b in range(tokens.shape[0]):
        table = brute.restrict(full, n, tokens[b], visible[b])
        m = int((~visible[b]).sum())
        if table.dim() > m:  # max over the latents
            table = table.amax(dim=tuple(range(m, table.dim())))
        best = brute.masked_argmax(table)
        if best is None:
            continue
        row = tokens[b].clone()
        row[~visible[b]] = torch.tensor(best, dtype=torch.long)
        keep.append(b)
        want.append(row)
    assert len(keep) >= 10, "too few tie-free rows to test"
    got = s.engine(device=device).most_likely(tokens[keep], visible[keep],
                                              marginalize_latents=False)
    assert torch.equal(got.cpu(), torch.stack(want))


def test_marginal_and_joint_map_differ(device):
    """The two MAP flavours are different queries, and the engine answers each one."""
    # z -> x0 -> x1 : z = 0 (p 0.5) spreads x0 over {0: 0.6, 1: 0.4}; z = 1, 2 (p 0.25 each)
    # force x0 = 1. Marginal MAP x0 = 1 (0.7 vs 0.3); joint MAP (z=0, x0=0) (0.3 vs 0.25).
    prior = torch.tensor([0.5, 0.25, 0.25])
    emit = torch.tensor([[0.6, 0.4], [0.0, 1.0], [0.0, 1.0]]).log()
    copy = torch.tensor([[0.9, 0.1], [0.2, 0.8]])

    def model():
        z = pyro.sample("z", dist.Categorical(prior))
        x0 = pyro.sample("x0", dist.Categorical(logits=Vindex(emit)[z]))
        pyro.sample("x1", dist.Categorical(Vindex(copy)[x0]))

    s = Structure(model, ["x0", "x1"], vocab=2)
    full, joint = brute.full_log_joint(s), brute.token_log_joint(s)
    tokens = torch.zeros(1, 2, dtype=torch.long)
    visible = torch.zeros(1, 2, dtype=torch.bool)
    # oracle: p(x0, x1) best at (1, 1) (0.56); p(z, x0, x1) best at (0, 0, 0) (0.27)
    assert brute.masked_argmax(brute.masked_posterior(joint, tokens[0], visible[0])) == (1, 1)
    assert brute.masked_argmax(full.amax(dim=2)) == (0, 0)
    engine = s.engine(device=device)
    marginal = engine.most_likely(tokens, visible, marginalize_latents=True).cpu()
    joint_map = engine.most_likely(tokens, visible, marginalize_latents=False).cpu()
    assert marginal.tolist() == [[1, 1]]
    assert joint_map.tolist() == [[0, 0]]


# ---------------------------------------------------------------------------- hard zeros
IMPOSSIBLE = {
    # p_n != parity(y_n.) is impossible at eta = 0
    "block_hmm-eta0": lambda s, x: s.violations(x).reshape(x.shape[0], -1).any(-1),
    "parity_block-eta0": lambda s, x: s.violations(x).reshape(x.shape[0], -1).any(-1),
    # x1 -> x2 with delta = 0: x2 == x1
    "agreement-delta0": lambda s, x: x[:, 0] != x[:, 1],
    # x0 -> x1 -> x2 -> x3 with T[0, 1] = T[2, 0] = 0
    "markov_chain-zeros": lambda s, x: (s.transition[x[:, :-1], x[:, 1:]] == 0).any(-1),
}
HARD_ZERO = {
    "block_hmm-eta0": ZOO["block_hmm-eta0"],
    "parity_block-eta0": ZOO["parity_block-eta0"],
    "agreement-delta0": ("agreement", dict(delta=0.0, vocab=3)),
    "markov_chain-zeros": ("markov_chain", dict(
        length=4, vocab=3,
        transition=[[0.5, 0.0, 0.5], [0.2, 0.3, 0.5], [0.0, 0.6, 0.4]])),
}


@pytest.mark.parametrize("key", HARD_ZERO)
def test_hard_zeros_impossible_sequences_have_log_prob_minus_inf(key, device):
    """Exact zeros stay exact: log p(x) = -inf exactly for the impossible sequences (not the
    log(1e-16) ~ -36 that torch's probs= clamping produces) and finite for the others."""
    name, params = HARD_ZERO[key]
    s = load_model(name, **params)
    every = torch.cartesian_prod(*[torch.arange(s.vocab)] * s.n_tokens).reshape(-1, s.n_tokens)
    impossible = IMPOSSIBLE[key](s, every)
    assert impossible.any() and not impossible.all()
    got = s.engine(device=device).log_prob(every).cpu()
    assert not got.isnan().any()
    exact = torch.equal(got == -math.inf, impossible)
    assert exact, (
        f"log p of impossible sequences: {got[impossible][:4].tolist()}; of possible ones: "
        f"{got[~impossible][:4].tolist()}")


@pytest.mark.parametrize("key", ["block_hmm-eta0", "parity_block-eta0"])
def test_hard_zeros_conditionals_have_no_nan(key, device):
    s = zoo(key)
    joint = brute.token_log_joint(s)
    # half the rows uniform: many have impossible evidence
    tokens, visible = random_rows(joint, 96, torch.Generator().manual_seed(8), from_joint=0.5)
    check_conditionals(s.engine(device=device), joint, tokens, visible)
    out = s.engine(device=device).conditionals(tokens, visible).cpu()
    assert not out.isnan().any()
    masked_sums = out.exp().sum(-1)[~visible]
    torch.testing.assert_close(masked_sums, torch.ones_like(masked_sums), atol=1e-12, rtol=0)


def test_impossible_evidence(device):
    """Evidence of probability 0: p(x_visible) = 0; the documented fallbacks hold. Visible
    positions come back as their indicator (docstring of conditionals), masked ones uniform,
    block joints uniform, samples keep the visible tokens."""
    # z0 -> z1 ; block 0 = (p0, y01, y02) fully visible with the wrong parity, block 1 masked
    s = zoo("block_hmm-eta0")
    tokens = torch.tensor([[1, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0]])
    visible = torch.tensor([[True, True, True, False, False, False]] * 2)
    engine = s.engine(device=device)
    lp = engine.log_prob_visible(tokens, visible).cpu()
    assert lp[0].item() == -math.inf and lp[1].item() > -math.inf
    cond = engine.conditionals(tokens, visible).cpu()
    assert not cond.isnan().any()
    torch.testing.assert_close(cond[0, 3:], torch.full((3, 2), -math.log(2)))
    joint = engine.block_joint(tokens, visible, [4, 3]).cpu()
    torch.testing.assert_close(joint[0], torch.full((2, 2), -2 * math.log(2)))
    out = engine.sample(tokens, visible, generator=torch.Generator(device=device).manual_seed(0))
    assert torch.equal(out.cpu()[:, :3], tokens[:, :3])
    for flavour in (True, False):
        best = engine.most_likely(tokens, visible, marginalize_latents=flavour).cpu()
        assert torch.equal(best[:, :3], tokens[:, :3]) and ((best >= 0) & (best < 2)).all()
    onehot = torch.nn.functional.one_hot(tokens[:, :3], 2).bool()
    indicator = torch.zeros(2, 3, 2).masked_fill(~onehot, -math.inf)
    assert torch.equal(cond[1, :3], indicator[1])
    assert torch.equal(cond[0, :3], indicator[0]), (
        f"visible positions of an impossible row are {cond[0, :3].tolist()}, not the indicator")


def test_zoo_hard_zeros_use_logits_not_clamped_probs(device):
    """The agreement model at delta = 0 has an exactly zero off-diagonal (regression for the
    probs= clamping to 1e-16)."""
    s = load_model("agreement", delta=0.0, vocab=2)
    lp = s.engine(device=device).log_prob(torch.tensor([[0, 1], [1, 1]])).cpu()
    assert lp[0].item() == -math.inf
    assert lp[1].item() == pytest.approx(math.log(0.5))


# ---------------------------------------------------------------------------- random networks
@given(spec=brute.networks(), seed=st.integers(0, 2**31 - 1))
def test_random_networks_match_brute_force(spec, seed, device):
    """Random DAGs over tokens and latents (e.g. z0 -> x1 <- x0, x1 -> x2, tokens declared in any
    order), with or without hard zeros, logits or probs, and an optional pyro.factor."""
    check_network(spec, seed, device)


@pytest.mark.slow
@settings(max_examples=400)
@given(spec=brute.networks(), seed=st.integers(0, 2**31 - 1))
def test_random_networks_match_brute_force_thoroughly(spec, seed, device):
    check_network(spec, seed, device)


def check_network(spec, seed, device):
    s = brute.build_network(spec)
    joint = brute.token_log_joint(s)
    engine = s.engine(device=device)
    tokens, visible = random_rows(joint, 16, torch.Generator().manual_seed(seed))
    assert_log_close(engine.log_prob_visible(tokens, visible),
                     brute.log_prob_visible(joint, tokens, visible))
    check_conditionals(engine, joint, tokens, visible)


# ---------------------------------------------------------------------------- Pyro cross-check
def _pyro_enum(s: Structure, row, vis):
    """-TraceEnum_ELBO loss (= log p(x_visible)) and compute_marginals of the model conditioned
    on the visible tokens of one row."""
    data = {s.tokens[i]: torch.tensor(int(row[i])) for i in range(s.n_tokens) if vis[i]}
    model = config_enumerate(poutine.condition(s.model, data=data), default="parallel")

    def guide():
        return None

    elbo = TraceEnum_ELBO(max_plate_nesting=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        log_p = -elbo.loss(model, guide)
        marginals = elbo.compute_marginals(model, guide) if not vis.all() else {}
    return log_p, marginals


@pytest.mark.parametrize("key", NORMALISED)
def test_pyro_trace_enum_elbo_agrees(key, device):
    s = zoo(key)
    engine = s.engine(device=device)
    joint = brute.token_log_joint(s)
    tokens, visible = random_rows(joint, 6, torch.Generator().manual_seed(9), from_joint=1.0,
                                  mask_token=False)
    _check_against_pyro(s, engine, tokens, visible)


def _check_against_pyro(s, engine, tokens, visible):
    lpv = engine.log_prob_visible(tokens, visible).cpu()
    cond = engine.conditionals(tokens, visible).cpu()
    values = torch.arange(s.vocab)
    for b in range(tokens.shape[0]):
        log_p, marginals = _pyro_enum(s, tokens[b], visible[b])
        assert log_p == pytest.approx(lpv[b].item(), abs=1e-9)
        for i in range(s.n_tokens):
            if not visible[b, i]:
                probs = marginals[s.tokens[i]].log_prob(values).exp()
                torch.testing.assert_close(probs, cond[b, i].exp(), atol=1e-9, rtol=0)


def test_pyro_trace_enum_elbo_agrees_on_the_paper_block_hmm(device):
    # Z_1 -> ... -> Z_8, 8 blocks of 8 bits (64 tokens), eta = 0.01: beyond brute force
    s = load_model("block_hmm", n_blocks=8, eta=0.01)
    gen = torch.Generator().manual_seed(11)
    tokens = torch.randint(0, 2, (1, s.n_tokens), generator=gen)
    visible = torch.rand(1, s.n_tokens, generator=gen) < 0.5
    _check_against_pyro(s, s.engine(device=device), tokens, visible)


@pytest.mark.slow
@pytest.mark.parametrize("name,params", [("block_hmm", dict(n_blocks=16, eta=1e-8)),
                                         ("markov_chain", dict(length=40, vocab=5)),
                                         ("parity_block", dict(k=16, eta=0.05))])
def test_pyro_trace_enum_elbo_agrees_at_larger_sizes(name, params, device):
    s = load_model(name, **params)
    gen = torch.Generator().manual_seed(12)
    tokens = torch.randint(0, s.vocab, (4, s.n_tokens), generator=gen)
    visible = torch.rand(4, s.n_tokens, generator=gen) < torch.rand(4, 1, generator=gen)
    _check_against_pyro(s, s.engine(device=device), tokens, visible)


# ---------------------------------------------------------------------------- scale
def test_block_hmm_64_blocks_conditionals(device):
    """The paper's Block-HMM with 64 blocks (512 tokens, 2^512 sequences): compiles, its
    elimination width stays small, and conditionals of 1000 random partial sequences come back
    normalised, NaN-free and one-hot at the visible positions."""
    s = load_model("block_hmm", n_blocks=64)
    assert s.n_tokens == 512
    _, width = elimination_order(s.factor_graph)
    assert width <= 4
    engine = s.engine(device=device)
    gen = torch.Generator().manual_seed(10)
    tokens = torch.randint(0, 2, (1000, 512), generator=gen)
    visible = torch.rand(1000, 512, generator=gen) < torch.rand(1000, 1, generator=gen)
    out = engine.conditionals(tokens, visible).cpu()
    assert out.shape == (1000, 512, 2)
    assert not out.isnan().any()
    sums = out.exp().sum(-1)
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-9, rtol=0)
    onehot = torch.nn.functional.one_hot(tokens, 2).double()
    assert torch.equal(out.exp()[visible], onehot[visible])
    # spot checks against a different code path: p(x_i = v | x_vis) = p(x_vis, x_i = v) / p(x_vis)
    # from two forward eliminations (Pyro's own TraceEnum_ELBO takes minutes at this size)
    rows = torch.arange(0, 1000, 100)
    position = torch.stack([(~visible[b]).nonzero()[0, 0] for b in rows])
    more = visible[rows].clone()
    more[torch.arange(len(rows)), position] = True
    ones = tokens[rows].clone()
    ones[torch.arange(len(rows)), position] = 1
    direct = engine.log_prob_visible(ones, more) - engine.log_prob_visible(tokens[rows], visible[rows])
    torch.testing.assert_close(direct.cpu(), out[rows, position, 1], atol=1e-9, rtol=0)


@pytest.mark.parametrize("method", ["messages", pytest.param("autograd", marks=pytest.mark.xfail(
    strict=True, reason="the reference's conditionals are gradients in probability space: below "
    "~e^-745 they underflow to 0 and come back as -inf"))])
def test_conditionals_stay_finite_far_below_float_range(method, device):
    """log p(x_1 = 1 | x_0 = 0) = -800 on a two-spin Ising chain with J = 400: finite by
    log_prob_visible and by the log-space messages (the autograd reference reports -inf)."""
    # x_0_0 - x_0_1
    s = load_model("ising_grid", rows=1, cols=2, coupling=400.0)
    engine = ExactEngine(s.factor_graph, device=device, method=method)
    tokens, visible = torch.tensor([[0, 0]]), torch.tensor([[True, False]])
    direct = (engine.log_prob_visible(torch.tensor([[0, 1]]))
              - engine.log_prob_visible(tokens, visible)).item()
    assert direct == pytest.approx(-800.0)
    assert engine.conditionals(tokens, visible)[0, 1, 1].item() == pytest.approx(direct)


# ---------------------------------------------------------------------------- inputs
def test_empty_batch(device):
    """A batch of zero sequences (e.g. an empty chunk) gives empty results, for every query."""
    s = zoo("block_hmm-eta0.1")
    engine = s.engine(device=device)
    tokens = torch.zeros(0, 6, dtype=torch.long)
    visible = torch.zeros(0, 6, dtype=torch.bool)
    assert engine.log_prob_visible(tokens, visible).shape == (0,)
    assert engine.conditionals(tokens, visible).shape == (0, 6, 2)
    assert engine.sample(tokens, visible).shape == (0, 6)
    assert engine.most_likely(tokens, visible).shape == (0, 6)
    assert engine.block_joint(tokens, visible, [0, 1]).shape == (0, 2, 2)


def test_one_dimensional_tokens_and_mask_broadcast(device):
    s = zoo("markov_chain")
    engine = s.engine(device=device)
    joint = brute.token_log_joint(s)
    row = torch.tensor([0, 2, 1, 1, 0])
    vis = torch.tensor([True, False, True, False, True])
    assert_log_close(engine.log_prob_visible(row, vis), brute.log_prob_visible(joint, row, vis))
    both = engine.conditionals(torch.stack([row, row]), vis).cpu()  # 1-D mask for a batch
    assert torch.equal(both[0], both[1])
    assert_log_close(both[:1], brute.conditionals(joint, row, vis))


def test_token_out_of_range(device):
    engine = zoo("markov_chain").engine(device=device)
    with pytest.raises(EvidenceError, match=r"visible token 3 at sequence 1, position 2"):
        engine.log_prob(torch.tensor([[0, 1, 2, 0, 1], [0, 1, 3, 0, 1]]))
    with pytest.raises(EvidenceError, match=r"visible token -1"):
        engine.conditionals(torch.tensor([[-1, 1, 2, 0, 1]]),
                            torch.tensor([[True, False, False, False, False]]))
    # the same values are fine where masked
    engine.conditionals(torch.tensor([[-1, 1, 3, 0, 1]]),
                        torch.tensor([[False, True, False, True, True]]))


def test_mask_shape_mismatch(device):
    engine = zoo("markov_chain").engine(device=device)
    with pytest.raises(EvidenceError, match=r"visible mask has shape \(2, 4\)"):
        engine.conditionals(torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(EvidenceError, match=r"shape \[B, 5\].*got \(2, 4\)"):
        engine.log_prob(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(EvidenceError, match=r"integer tensor, got dtype torch.float"):
        engine.log_prob(torch.zeros(2, 5))


def test_block_joint_over_budget_points_to_monte_carlo(device):
    s = load_model("markov_chain", length=5, vocab=3)
    engine = s.engine(device=device, budget=64)
    hidden = torch.zeros(1, 5, dtype=torch.bool)
    tokens = torch.zeros(1, 5, dtype=torch.long)
    assert engine.block_joint(tokens, hidden, [0, 1, 2]).shape == (1, 3, 3, 3)  # 27 <= 64
    # typed: callers fall back to Monte Carlo by catching EnumerationError (a BudgetError)
    with pytest.raises(EnumerationError, match=r"81 entries.*budget of 64.*Monte Carlo"):
        engine.block_joint(tokens, hidden, [0, 1, 2, 3])
    with pytest.raises(EnumerationError, match=r"budget of 64.*Monte Carlo"):  # batch counts too
        engine.log_prob(torch.zeros(100, 5, dtype=torch.long))
    assert issubclass(EnumerationError, BudgetError)


def test_block_joint_positions_must_be_masked_and_distinct(device):
    engine = zoo("markov_chain").engine(device=device)
    tokens = torch.zeros(1, 5, dtype=torch.long)
    visible = torch.tensor([[True, False, False, False, False]])
    with pytest.raises(EvidenceError, match=r"positions \[0, 1\] must be masked"):
        engine.block_joint(tokens, visible, [0, 1])
    with pytest.raises(EvidenceError, match=r"positions \[1, 1\] must be distinct"):
        engine.block_joint(tokens, visible, [1, 1])
    with pytest.raises(EvidenceError, match=r"positions \[7\]"):
        engine.block_joint(tokens, visible, [7])


def test_latent_with_a_single_state(device):
    """A latent with one state carries no factor (log 1 = 0, and Pyro drops size-1 dims): the
    engine must simply ignore it. block_hmm allows n_states=1."""
    # z (1 state) ; x ~ Categorical(0.3, 0.7)
    def model():
        pyro.sample("z", dist.Categorical(torch.ones(1)))
        pyro.sample("x", dist.Categorical(torch.tensor([0.3, 0.7])))

    s = Structure(model, ["x"], vocab=2)
    assert s.factor_graph.cards == [2, 1]
    lp = s.engine(device=device).log_prob(torch.tensor([[0], [1]])).cpu()
    torch.testing.assert_close(lp, torch.tensor([0.3, 0.7]).log())

    hmm = load_model("block_hmm", n_blocks=2, block_size=3, n_states=1, rho=(0.3,), eta=0.1)
    joint = brute.token_log_joint(hmm)
    every = torch.cartesian_prod(*[torch.arange(2)] * 6)
    assert_log_close(hmm.engine(device=device).log_prob(every), joint.reshape(-1))
