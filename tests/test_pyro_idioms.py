"""Conformance corpus: the discrete Pyro idioms people write, compiled, and every query checked
against Pyro itself to 1e-9.

Oracles (none of them reads the compiled graph):
  * log-likelihood: ``-TraceEnum_ELBO(max_plate_nesting).loss`` with an empty guide;
  * the token joint, by exhaustive enumeration: ``log p(x) = (L(model | x) - L(model)) / scale``
    with ``L`` the log-likelihood above and ``model | x`` the model conditioned on every token site;
    single and joint posteriors and the marginal MAP come from that table (tests/brute.py);
  * the joint MAP: ``infer_discrete(temperature=0)``;
  * per-site marginals of latents: ``TraceEnum_ELBO.compute_marginals``.
A plated token site's elements are its batch entries in row-major order (``x[i, j]``).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import brute
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate, infer_discrete
from pyro.ops.indexing import Vindex

from mdmprob import Structure, load_model
from mdmprob.cli import main

ATOL = 1e-9


def _rand(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=torch.float64) * 0.8 + 0.1


def _stochastic(*shape, seed):
    p = _rand(*shape, seed=seed)
    return p / p.sum(-1, keepdim=True)


@dataclass
class Idiom:
    name: str
    model: Callable[[], None]
    tokens: list[str]  # token sites, as declared
    shapes: dict[str, tuple[int, ...]]  # each token site's batch shape as Pyro samples it
    vocab: int = 2
    nesting: int = 1
    value: Callable[[str, torch.Tensor], torch.Tensor] = lambda site, k: k  # k -> support value
    evidence: list[str] = field(default_factory=list)  # token sites to condition on
    # infer_discrete cannot pack OneHotCategorical values; compute_marginals returns the
    # marginal of a Binomial site as a Binomial of the wrong total count
    joint_map_oracle: bool = True
    marginals_oracle: bool = True
    # conditioning a token site makes it an observed site, to which a poutine.mask applies,
    # while TraceEnum_ELBO ignores masks on enumerated sites: with masked tokens the exhaustive
    # oracle is not Pyro's joint, and compute_marginals is the oracle instead
    masked_tokens: bool = False


# ---------------------------------------------------------------------------- the idioms
def hmm_over_sequences():
    # two sequences (plate "seqs"), each x_0 -> x_1 -> x_2 hidden, y_t | x_t emitted tokens
    init, trans, emit = _stochastic(3, seed=1), _stochastic(3, 3, seed=2), _stochastic(3, 2, seed=3)

    def model():
        with pyro.plate("seqs", 2, dim=-1):
            x = None
            for t in pyro.markov(range(3)):
                x = pyro.sample(f"x_{t}", dist.Categorical(init if x is None else Vindex(trans)[x]))
                pyro.sample(f"y_{t}", dist.Categorical(Vindex(emit)[x]))

    return Idiom("hmm_plate", model, ["y_0", "y_1", "y_2"], {f"y_{t}": (2,) for t in range(3)},
                 evidence=["y_1"])


def pyro_hmm_example():
    # the shape of Pyro's examples/hmm.py model_1: plate sequences (dim -2) x tones (dim -1);
    # hidden x_t[b] are the tokens, y_t[b, tone] observed; probs_y[x.squeeze(-1)] as written
    # there, and its poutine.mask(t < lengths) for sequences of different lengths
    probs_x, probs_y = _stochastic(2, 2, seed=28), _rand(2, 3, seed=29)
    data = (_rand(2, 2, 3, seed=30) > 0.5).double()  # [time, sequence, tone]
    lengths = torch.tensor([2, 1])

    def model():
        tones = pyro.plate("tones", 3, dim=-1)
        with pyro.plate("sequences", 2, dim=-2):
            x = 0
            for t in pyro.markov(range(2)):
                with poutine.mask(mask=(t < lengths).unsqueeze(-1)):
                    x = pyro.sample(f"x_{t}", dist.Categorical(Vindex(probs_x)[x]))
                    with tones:
                        pyro.sample(f"y_{t}", dist.Bernoulli(Vindex(probs_y)[x.squeeze(-1)]),
                                    obs=data[t])

    return Idiom("pyro_hmm_example", model, ["x_0", "x_1"], {"x_0": (2, 1), "x_1": (2, 1)},
                 nesting=2, masked_tokens=True)


def factorial_hmm():
    # two hidden chains w_t, x_t (each Markov); y_t | w_t, x_t; a plate of 2 sequences
    tw, tx = _stochastic(2, 2, seed=4), _stochastic(2, 2, seed=5)
    emit = _rand(2, 2, seed=6)

    def model():
        with pyro.plate("seqs", 2):
            w = x = 0
            for t in pyro.markov(range(2)):
                w = pyro.sample(f"w_{t}", dist.Categorical(Vindex(tw)[w]))
                x = pyro.sample(f"x_{t}", dist.Categorical(Vindex(tx)[x]))
                pyro.sample(f"y_{t}", dist.Bernoulli(Vindex(emit)[w, x]))

    return Idiom("factorial_hmm", model, ["y_0", "y_1"], {"y_0": (2,), "y_1": (2,)},
                 value=lambda site, k: k.double(), evidence=["y_0"])


def nested_bernoulli_plates():
    # z (3 states) -> u[i] (plate a, dim -2) -> x[i, j] (plates a x b)
    pz, pu, px = _stochastic(3, seed=7), _rand(3, seed=8), _rand(2, seed=9)

    def model():
        z = pyro.sample("z", dist.Categorical(pz))
        with pyro.plate("a", 2, dim=-2):
            u = pyro.sample("u", dist.Bernoulli(Vindex(pu)[z]))
            with pyro.plate("b", 3, dim=-1):
                pyro.sample("x", dist.Bernoulli(Vindex(px)[u.long()]))

    return Idiom("nested_plates", model, ["x"], {"x": (2, 3)}, nesting=2,
                 value=lambda site, k: k.double())


def masked_mixture():
    # g -> z[i] (tokens, plate of 3) -> obs[i] ~ MaskedMixture(z[i], component 0, component 1)
    pz = _rand(2, seed=10)
    p0, p1 = _stochastic(3, seed=11), _stochastic(3, seed=25)
    data = torch.tensor([0, 2, 1])

    def model():
        g = pyro.sample("g", dist.Bernoulli(0.3))
        with pyro.plate("items", 3):
            z = pyro.sample("z", dist.Bernoulli(Vindex(pz)[g.long()]))
            pyro.sample("obs", dist.MaskedMixture(z.bool(), dist.Categorical(p0),
                                                  dist.Categorical(p1)), obs=data)

    return Idiom("masked_mixture", model, ["z"], {"z": (3,)}, value=lambda site, k: k.double())


def gaussian_mixture():
    # z[i] (tokens, plate of 3) -> obs[i] ~ Normal(loc[z[i]], 1), observed: a continuous
    # likelihood is a factor over the latents it reads
    weights, locs = _stochastic(2, seed=31), torch.tensor([-1.0, 2.0], dtype=torch.float64)
    data = torch.tensor([0.3, -1.2, 2.5], dtype=torch.float64)

    def model():
        with pyro.plate("points", 3):
            z = pyro.sample("z", dist.Categorical(weights))
            pyro.sample("obs", dist.Normal(Vindex(locs)[z], 1.0), obs=data)

    return Idiom("gaussian_mixture", model, ["z"], {"z": (3,)})


def markov_history_2():
    # x_t | x_{t-2}, x_{t-1}, a plate of 2 sequences, 3 steps
    t2 = _stochastic(2, 2, 2, seed=12)

    def model():
        with pyro.plate("seqs", 2):
            prev = (0, 0)
            for t in pyro.markov(range(3), history=2):
                x = pyro.sample(f"x_{t}", dist.Categorical(Vindex(t2)[prev[0], prev[1]]))
                prev = (prev[1], x)

    return Idiom("markov_history_2", model, ["x_0", "x_1", "x_2"],
                 {f"x_{t}": (2,) for t in range(3)}, evidence=["x_1"])


def plate_inside_markov():
    # x_t[i] | x_{t-1}[i]: the plate is built once and entered at each step (Pyro's HMM examples)
    init, trans = _stochastic(2, seed=26), _stochastic(2, 2, seed=27)

    def model():
        x = None
        items = pyro.plate("items", 2)
        for t in pyro.markov(range(3)):
            with items:
                x = pyro.sample(f"x_{t}", dist.Categorical(init if x is None
                                                           else Vindex(trans)[x]))

    return Idiom("plate_inside_markov", model, ["x_0", "x_1", "x_2"],
                 {f"x_{t}": (2,) for t in range(3)}, evidence=["x_2"])


def plate_with_mask_and_scale():
    # z -> x[i] (tokens) -> o[i] observed, o[1] masked out; the whole model scaled by 3
    pz, px, po = _stochastic(2, seed=13), _stochastic(2, 2, seed=14), _stochastic(2, 2, seed=15)
    obs = torch.tensor([1, 0, 1])
    keep = torch.tensor([True, False, True])

    def model():
        with poutine.scale(scale=3.0):
            z = pyro.sample("z", dist.Categorical(pz))
            with pyro.plate("items", 3):
                x = pyro.sample("x", dist.Categorical(Vindex(px)[z]))
                with poutine.mask(mask=keep):
                    pyro.sample("o", dist.Categorical(Vindex(po)[x]), obs=obs)

    return Idiom("mask_and_scale", model, ["x"], {"x": (3,)})


def factors_in_a_plate():
    # x[i] independent; pyro.factor couples x[i] with y[i]; a constant factor changes only log Z
    px, py = _stochastic(3, seed=16), _stochastic(3, seed=17)
    bond = torch.randn(3, 3, generator=torch.Generator().manual_seed(18), dtype=torch.float64)

    def model():
        pyro.factor("constant", torch.tensor(-0.7))
        with pyro.plate("pairs", 2):
            x = pyro.sample("x", dist.Categorical(px))
            y = pyro.sample("y", dist.Categorical(py))
            pyro.factor("bond", Vindex(bond)[x, y])

    return Idiom("factor_plate", model, ["x", "y"], {"x": (2,), "y": (2,)}, vocab=3,
                 evidence=["y"])


def observed_with_obs_mask():
    # x[i] tokens -> y[i] observed where obs_mask, latent (enumerated) elsewhere
    px, py = _stochastic(2, seed=19), _stochastic(2, 3, seed=20)
    data = torch.tensor([2, 0, 1])
    seen = torch.tensor([True, False, True])

    def model():
        with pyro.plate("items", 3):
            x = pyro.sample("x", dist.Categorical(px))
            pyro.sample("y", dist.Categorical(Vindex(py)[x]), obs=data, obs_mask=seen)

    return Idiom("obs_mask", model, ["x"], {"x": (3,)})


def one_hot_and_binomial_tokens():
    # c (OneHotCategorical, 3 values) -> n (Binomial(2), 3 values): tokens take 0..2
    pc, pn = _stochastic(3, seed=21), _rand(3, seed=22)

    def model():
        c = pyro.sample("c", dist.OneHotCategorical(pc))
        pyro.sample("n", dist.Binomial(2, (c * pn).sum(-1)))

    def value(site, k):
        return torch.nn.functional.one_hot(k, 3).double() if site == "c" else k.double()

    return Idiom("onehot_binomial", model, ["c", "n"], {"c": (), "n": ()}, vocab=3, nesting=0,
                 value=value, evidence=["c"], joint_map_oracle=False,
                 marginals_oracle=False)


def sequential_plate():
    # for i in pyro.plate: x_i | z, scalar sites
    pz, px = _stochastic(2, seed=23), _stochastic(2, 2, seed=24)

    def model():
        z = pyro.sample("z", dist.Categorical(pz))
        for i in pyro.plate("items", 3):
            pyro.sample(f"x_{i}", dist.Categorical(Vindex(px)[z]))

    return Idiom("sequential_plate", model, ["x_0", "x_1", "x_2"],
                 {f"x_{i}": () for i in range(3)}, nesting=0, evidence=["x_0"])


IDIOMS = [hmm_over_sequences, pyro_hmm_example, factorial_hmm, nested_bernoulli_plates,
          masked_mixture, gaussian_mixture, markov_history_2, plate_inside_markov,
          plate_with_mask_and_scale, factors_in_a_plate, observed_with_obs_mask,
          one_hot_and_binomial_tokens, sequential_plate]


# ---------------------------------------------------------------------------- oracles
def _guide():
    pass


def pyro_log_likelihood(model, nesting: int) -> float:
    elbo = TraceEnum_ELBO(max_plate_nesting=nesting)
    with pyro.validation_enabled(False):
        return -elbo.loss(config_enumerate(model, "parallel"), _guide)


def site_values(idiom: Idiom, x: torch.Tensor, sites=None) -> dict[str, torch.Tensor]:
    """The token vector ``x [n]`` as Pyro values of the token sites (row-major per site)."""
    out, start = {}, 0
    for site in idiom.tokens:
        shape = idiom.shapes[site]
        size = math.prod(shape)
        if sites is None or site in sites:
            out[site] = idiom.value(site, x[start:start + size].reshape(shape))
        start += size
    return out


def pyro_token_joint(idiom: Idiom, n: int) -> torch.Tensor:
    """``log p(x)`` over every token assignment, shape ``[V] * n``, by exhaustive enumeration."""
    base = pyro_log_likelihood(idiom.model, idiom.nesting)
    scale = _scale(idiom)
    rows = []
    for x in itertools.product(range(idiom.vocab), repeat=n):
        data = site_values(idiom, torch.tensor(x))
        rows.append((pyro_log_likelihood(poutine.condition(idiom.model, data=data),
                                         idiom.nesting) - base) / scale)
    return torch.tensor(rows, dtype=torch.float64).reshape([idiom.vocab] * n)


def _scale(idiom):
    return 3.0 if idiom.name == "mask_and_scale" else 1.0


def pyro_joint_map(idiom: Idiom, model=None) -> list[int]:
    """The token part of ``argmax_{x, z} p(x, z)`` from ``infer_discrete(temperature=0)``."""
    decoded = infer_discrete(config_enumerate(model or idiom.model, "parallel"),
                             first_available_dim=-1 - idiom.nesting, temperature=0)
    with pyro.validation_enabled(False):
        trace = poutine.trace(decoded).get_trace()
    out = []
    for site in idiom.tokens:
        v = trace.nodes[site]["value"]
        if idiom.value(site, torch.tensor(0)).dim() == 1:  # one-hot: back to an index
            v = v.argmax(-1)
        out += v.reshape(-1).long().tolist()
    return out


@pytest.fixture(scope="module", params=IDIOMS, ids=lambda f: f.__name__)
def case(request):
    idiom = request.param()
    structure = Structure(idiom.model, idiom.tokens, vocab=idiom.vocab, name=idiom.name)
    joint = None if idiom.masked_tokens else pyro_token_joint(idiom, structure.n_tokens)
    return idiom, structure, joint


def _needs_joint(joint):
    if joint is None:
        pytest.skip("masked token sites: the exhaustive oracle is not Pyro's joint")


# ---------------------------------------------------------------------------- the checks
def test_log_likelihood_is_pyros(case, device):
    idiom, s, _ = case
    graph = s.factor_graph
    log_z = s.engine(device=device).log_normalizer
    want = pyro_log_likelihood(idiom.model, idiom.nesting)
    assert graph.scale * log_z + graph.log_constant == pytest.approx(want, abs=ATOL)


def test_token_joint_is_pyros(case, device):
    _, s, joint = case
    _needs_joint(joint)
    V, n = s.vocab, s.n_tokens
    every = torch.cartesian_prod(*[torch.arange(V)] * n).reshape(-1, n)
    got = s.engine(device=device).log_prob(every).cpu()
    torch.testing.assert_close(got, joint.reshape(-1), atol=ATOL, rtol=0)


def test_single_and_joint_posteriors_are_pyros(case, device):
    _, s, joint = case
    _needs_joint(joint)
    V, n = s.vocab, s.n_tokens
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, V, (12, n), generator=g)
    visible = torch.rand(12, n, generator=g) < 0.4
    visible[:, :2] = False
    engine = s.engine(device=device)
    finite = brute.log_prob_visible(joint, tokens, visible) > -math.inf
    got = engine.conditionals(tokens, visible).cpu()
    want = brute.conditionals(joint, tokens, visible)
    torch.testing.assert_close(got[finite], want[finite], atol=ATOL, rtol=0)
    got = engine.block_joint(tokens, visible, [0, 1]).cpu()
    want = brute.block_joint(joint, tokens, visible, [0, 1])
    torch.testing.assert_close(got[finite], want[finite], atol=ATOL, rtol=0)
    torch.testing.assert_close(engine.log_prob_visible(tokens, visible).cpu(),
                               brute.log_prob_visible(joint, tokens, visible), atol=ATOL, rtol=0)


def test_evidence_on_whole_sites_is_pyros(case, device):
    """log p(evidence) where evidence = whole token sites, against Pyro conditioning them."""
    idiom, s, _ = case
    if not idiom.evidence:
        pytest.skip("no evidence sites declared for this idiom")
    x = torch.randint(0, s.vocab, (s.n_tokens,), generator=torch.Generator().manual_seed(1))
    visible, start = torch.zeros(s.n_tokens, dtype=torch.bool), 0
    for site in idiom.tokens:
        size = math.prod(idiom.shapes[site])
        visible[start:start + size] = site in idiom.evidence
        start += size
    conditioned = poutine.condition(idiom.model, data=site_values(idiom, x, idiom.evidence))
    want = (pyro_log_likelihood(conditioned, idiom.nesting)
            - pyro_log_likelihood(idiom.model, idiom.nesting)) / _scale(idiom)
    got = s.engine(device=device).log_prob_visible(x[None], visible[None]).item()
    assert got == pytest.approx(want, abs=ATOL)


def test_token_marginals_are_compute_marginals(case, device):
    """p(x_i) of every token against Pyro's TraceEnum_ELBO.compute_marginals."""
    idiom, s, _ = case
    if not idiom.marginals_oracle:
        pytest.skip("compute_marginals gets a Binomial site's marginal wrong")
    with pyro.validation_enabled(False):
        marginals = TraceEnum_ELBO(max_plate_nesting=idiom.nesting).compute_marginals(
            config_enumerate(idiom.model, "parallel"), _guide)
    want = []
    for site in idiom.tokens:
        shape = idiom.shapes[site]
        values = torch.arange(s.vocab).reshape((s.vocab,) + (1,) * len(shape))
        table = marginals[site].log_prob(idiom.value(site, values))  # [V, *shape]
        want.append(table.reshape(s.vocab, -1).T)
    hidden = torch.zeros(1, s.n_tokens, dtype=torch.bool)
    got = s.engine(device=device).conditionals(torch.zeros(1, s.n_tokens, dtype=torch.long),
                                               hidden)[0].cpu()
    torch.testing.assert_close(got, torch.cat(want), atol=ATOL, rtol=0)


def test_joint_map_is_infer_discretes(case, device):
    idiom, s, _ = case
    if not idiom.joint_map_oracle:
        pytest.skip("infer_discrete cannot pack OneHotCategorical values")
    hidden = torch.zeros(1, s.n_tokens, dtype=torch.bool)
    got = s.engine(device=device).most_likely(torch.zeros(1, s.n_tokens, dtype=torch.long), hidden,
                                              marginalize_latents=False)
    assert got[0].tolist() == pyro_joint_map(idiom)


def test_marginal_map_is_the_argmax_of_pyros_joint(case, device):
    _, s, joint = case
    _needs_joint(joint)
    best = brute.masked_argmax(joint)
    assert best is not None  # random parameters: no ties
    hidden = torch.zeros(1, s.n_tokens, dtype=torch.bool)
    got = s.engine(device=device).most_likely(torch.zeros(1, s.n_tokens, dtype=torch.long), hidden)
    assert tuple(got[0].tolist()) == best


def test_plated_token_names_are_row_major():
    s = Structure(nested_bernoulli_plates().model, ["x"], vocab=2)
    assert s.tokens == ["x[0,0]", "x[0,1]", "x[0,2]", "x[1,0]", "x[1,1]", "x[1,2]"]
    assert s.factor_graph.latent_names == ["z", "u[0]", "u[1]"]
    picked = Structure(nested_bernoulli_plates().model, ["x[1, 2]", "x[0,0]"], vocab=2)
    assert picked.tokens == ["x[1,2]", "x[0,0]"]
    assert picked.factor_graph.latent_names[:3] == ["z", "u[0]", "u[1]"]


def test_mask_on_an_enumerated_latent_is_ignored_as_in_pyro(device):
    """TraceEnum_ELBO enumerates a masked latent with its full prior (the mask only applies to
    observed sites); the compiled joint does the same, checked by Pyro's compute_marginals."""
    # z (masked out) -> x
    pz, px = torch.tensor([0.9, 0.1]), torch.tensor([[0.8, 0.2], [0.1, 0.9]])

    def model():
        with poutine.mask(mask=False):
            z = pyro.sample("z", dist.Categorical(pz))
        pyro.sample("x", dist.Categorical(Vindex(px)[z]))

    s = Structure(model, ["x"], vocab=2)
    with pyro.validation_enabled(False):
        marginals = TraceEnum_ELBO(max_plate_nesting=0).compute_marginals(
            config_enumerate(model, "parallel"), _guide)
    want = marginals["x"].log_prob(torch.arange(2))
    got = s.engine(device=device).conditionals(torch.zeros(1, 1, dtype=torch.long),
                                               torch.zeros(1, 1, dtype=torch.bool))[0, 0].cpu()
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    torch.testing.assert_close(got.exp(), pz @ px, atol=ATOL, rtol=0)  # [0.73, 0.27]


def test_model_constants_are_traced_in_float64():
    """torch.tensor(0.1) inside the model is a float64 constant, whatever the default dtype."""
    # x ~ Bernoulli(0.1), tokens x
    def model():
        pyro.sample("x", dist.Categorical(torch.tensor([0.1, 0.9])))

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        s = Structure(model, ["x"], vocab=2)
    finally:
        torch.set_default_dtype(old)
    table = s.factor_graph.factors[0].table
    assert table.dtype == torch.float64
    assert table[0].item() == math.log(0.1)  # not log(float32(0.1)) = log(0.1) + 1.5e-9
    assert torch.get_default_dtype() == old


# ---------------------------------------------------------------------------- the plated zoo HMM
def test_plated_hmm_is_independent_hmms(device):
    """The zoo's plated_hmm against a hand-written forward algorithm per sequence."""
    n_seqs, length, K, V, stay, noise = 2, 3, 3, 2, 0.8, 0.15
    s = load_model("plated_hmm", n_seqs=n_seqs, length=length, n_states=K, vocab=V, stay=stay,
                   noise=noise)
    assert s.tokens == [f"y_{t}[{b}]" for b in range(n_seqs) for t in range(length)]
    trans = torch.full((K, K), (1 - stay) / (K - 1), dtype=torch.float64)
    trans.fill_diagonal_(stay)
    emit = torch.tensor([[1 - noise, noise], [noise, 1 - noise], [1 - noise, noise]],
                        dtype=torch.float64)  # state z emits z mod 2 with 1 - noise
    every = torch.cartesian_prod(*[torch.arange(V)] * (n_seqs * length))
    want = torch.zeros(len(every), dtype=torch.float64)
    for b in range(n_seqs):
        alpha = torch.full((len(every), K), 1.0 / K, dtype=torch.float64)
        for t in range(length):
            if t:
                alpha = alpha @ trans
            alpha = alpha * emit[:, every[:, b * length + t]].T
        want += alpha.sum(-1).log()
    got = s.engine(device=device).log_prob(every).cpu()
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_info_on_a_plated_hmm_file(tmp_path, capsys):
    """`mdmprob info path/to/model.py` on a model file with a plate of sequences."""
    path = tmp_path / "my_hmm.py"
    path.write_text((Path(__file__).parents[1] / "models" / "plated_hmm.py").read_text())
    code = main(["info", str(path), "-p", "n_seqs=3", "-p", "length=2", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["n_tokens"] == 6 and len(doc["blocks"]) == 3
    assert doc["latents"] == [f"z_{t}[{b}]" for t in range(2) for b in range(3)]
    # independent sequences: every block has the same forward TC
    tcs = [b["forward_tc"] for b in doc["blocks"]]
    assert tcs[0] > 0 and tcs == pytest.approx([tcs[0]] * 3, abs=1e-12)


def test_a_float32_table_from_outside_the_model_is_warned_about():
    probs = torch.tensor([0.1, 0.9], dtype=torch.float32)

    def model():
        pyro.sample("x", dist.Categorical(probs))

    with pytest.warns(UserWarning, match=r"site 'x' computes its log-probability in "
                                         r"torch\.float32.*dtype=torch\.float64"):
        Structure(model, ["x"], vocab=2)
