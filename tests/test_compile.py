"""The compiler: Pyro model -> FactorGraph (variables, cardinalities, factor scopes and tables),
pyro.markov dim recycling, plates grounded into elements, and every way a model or its
declaration can be rejected (the replay check included)."""

import itertools
import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import config_enumerate
from pyro.ops.indexing import Vindex

from mdmprob import Structure, load_model
from mdmprob.compile import ReplayMismatchError, compile_model
from mdmprob.errors import MdmprobError, StructureError, UnknownNameError

P0 = torch.tensor([0.2, 0.8])
PZ = torch.tensor([0.5, 0.3, 0.2])
T = torch.tensor([[[0.1, 0.9], [0.6, 0.4], [0.3, 0.7]],
                  [[0.5, 0.5], [0.8, 0.2], [0.25, 0.75]]])  # T[x0, z, x1]


def tiny():
    # x0 -> x1 <- z   (z latent with 3 states)
    x0 = pyro.sample("x0", dist.Categorical(P0))
    z = pyro.sample("z", dist.Categorical(PZ))
    pyro.sample("x1", dist.Categorical(Vindex(T)[x0, z]))


def compiled(model, tokens, vocab):
    return Structure(model, tokens, vocab=vocab).factor_graph


def scopes(graph):
    return {f.site: f.variables for f in graph.factors}


def aligned(factor, order):
    """``factor.table`` with its axes in the order of the variable indices ``order``."""
    return factor.table.permute([factor.variables.index(v) for v in order])


def test_tiny_model_variables_cards_and_factors():
    s = Structure(tiny, ["x1", "x0"], vocab=2)  # sequence order differs from sampling order
    graph = s.factor_graph
    assert graph.names == ["x1", "x0", "z"]
    assert graph.cards == [2, 2, 3]
    assert graph.n_tokens == 2 and graph.n_variables == 3
    assert graph.latent_names == ["z"]
    assert {site: set(v) for site, v in scopes(graph).items()} == {
        "x0": {1}, "z": {2}, "x1": {0, 1, 2}}
    factors = {f.site: f for f in graph.factors}
    for f in graph.factors:
        assert f.table.dtype == torch.float64
        assert f.table.shape == tuple(graph.cards[v] for v in f.variables)
    torch.testing.assert_close(factors["x0"].table, P0.log())
    torch.testing.assert_close(factors["z"].table, PZ.log())
    torch.testing.assert_close(aligned(factors["x1"], (1, 2, 0)), T.log())
    # log p(x, z) = sum of the factors, normalised over all 12 assignments
    total = torch.logsumexp(torch.stack([
        sum(f.table[tuple(a[v] for v in f.variables)] for f in graph.factors)
        for a in itertools.product(range(2), range(2), range(3))]), 0)
    assert total.item() == pytest.approx(0.0, abs=1e-12)


def test_factor_and_observed_sites():
    # x0 - x1 coupled by pyro.factor "bond"; x1 -> w with w observed (a factor, not a variable)
    bond = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    emit = torch.tensor([[0.7, 0.3], [0.1, 0.9]])

    def m():
        x0 = pyro.sample("x0", dist.Categorical(torch.tensor([0.5, 0.5])))
        x1 = pyro.sample("x1", dist.Categorical(torch.tensor([0.5, 0.5])))
        pyro.factor("bond", Vindex(bond)[x0, x1])
        pyro.factor("nothing", torch.tensor(0.0))  # a constant zero factor carries nothing
        pyro.sample("w", dist.Categorical(Vindex(emit)[x1]), obs=torch.tensor(1))

    graph = compiled(m, ["x0", "x1"], vocab=2)
    assert graph.names == ["x0", "x1"] and graph.latent_names == []
    assert {site: set(v) for site, v in scopes(graph).items()} == {
        "x0": {0}, "x1": {1}, "bond": {0, 1}, "w": {1}}
    factors = {f.site: f for f in graph.factors}
    torch.testing.assert_close(aligned(factors["bond"], (0, 1)), bond)
    torch.testing.assert_close(factors["w"].table, emit[:, 1].log())


def test_markov_chain_of_70_recycles_dims_but_not_variables():
    # x_0 -> x_1 -> ... -> x_69 under pyro.markov: Pyro reuses a handful of tensor dims
    s = load_model("markov_chain", length=70, vocab=3)
    enumerated = poutine.enum(config_enumerate(s.model, default="parallel"), first_available_dim=-1)
    trace = poutine.trace(enumerated).get_trace()
    dims = {site["value"].dim() for site in trace.nodes.values() if site["type"] == "sample"}
    assert len(dims) <= 3  # recycled: far fewer dims than variables

    graph = s.factor_graph
    assert graph.names == [f"x_{t}" for t in range(70)]
    assert len(set(graph.names)) == graph.n_variables == 70 and graph.cards == [3] * 70
    factors = {f.site: f for f in graph.factors}
    assert set(factors["x_0"].variables) == {0}
    for t in range(1, 70):
        f = factors[f"x_{t}"]
        assert set(f.variables) == {t - 1, t}
        torch.testing.assert_close(aligned(f, (t - 1, t)), s.transition.log())


def test_markov_chain_of_70_log_prob_is_the_chain_rule(device):
    s = load_model("markov_chain", length=70, vocab=3, seed=3)
    x = torch.randint(0, 3, (32, 70), generator=torch.Generator().manual_seed(0))
    want = -math.log(3) + s.transition.log()[x[:, :-1], x[:, 1:]].sum(-1)
    got = s.engine(device=device).log_prob(x).cpu()
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


def test_a_bernoulli_token_is_a_binary_variable():
    # x0 -> x1
    def m():
        x0 = pyro.sample("x0", dist.Bernoulli(torch.tensor(0.3)))
        pyro.sample("x1", dist.Categorical(Vindex(torch.tensor([[0.9, 0.1], [0.2, 0.8]]))[x0.long()]))

    graph = compiled(m, ["x0", "x1"], vocab=2)
    assert graph.cards == [2, 2]
    torch.testing.assert_close({f.site: f for f in graph.factors}["x0"].table,
                               torch.tensor([0.7, 0.3]).log())


# ---------------------------------------------------------------------------- rejections
def test_unknown_model_name_suggests_the_closest():
    with pytest.raises(UnknownNameError, match=r"unknown model 'block_hm'; did you mean 'block_hmm'"):
        load_model("block_hm")


def test_unknown_parameter_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match=r"'etaa'.*did you mean 'eta'.*block_size"):
        load_model("block_hmm", etaa=0.1)


@pytest.mark.parametrize("name,params,pattern", [
    ("block_hmm", dict(eta=2), r"eta=2 must be a number in \[0\.0, 1\.0\]"),
    ("block_hmm", dict(n_blocks=0), r"n_blocks=0 must be an integer >= 1"),
    ("parity_block", dict(k=1.5), r"k=1\.5 must be an integer"),
    ("markov_chain", dict(vocab=2, transition=[[0.5, 0.6], [0.5, 0.5]]),
     r"transition must be a 2x2 row-stochastic matrix"),
])
def test_bad_parameter_values_are_named(name, params, pattern):
    with pytest.raises(MdmprobError, match=pattern):
        load_model(name, **params)


def test_model_file_by_path(tmp_path):
    path = tmp_path / "two_bits.py"
    path.write_text(
        "import pyro, pyro.distributions as dist, torch\n"
        "from mdmprob import Structure\n"
        "def build(p: float = 0.5):\n"
        "    def model():\n"  # x0 , x1 independent
        "        pyro.sample('x0', dist.Categorical(torch.tensor([p, 1 - p])))\n"
        "        pyro.sample('x1', dist.Categorical(torch.tensor([p, 1 - p])))\n"
        "    return Structure(model, ['x0', 'x1'], vocab=2)\n")
    s = load_model(str(path), p=0.25)
    assert s.params == {"p": 0.25} and s.factor_graph.n_variables == 2
    with pytest.raises(StructureError, match=r"model file '.*missing\.py' does not exist"):
        load_model(str(tmp_path / "missing.py"))


def test_continuous_latent_is_rejected():
    # z (Normal) -> x
    def m():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Categorical(logits=torch.stack([z, -z])))

    with pytest.raises(StructureError, match=r"site 'z' \(Normal\) is not enumerable"):
        compiled(m, ["x"], vocab=2)


def test_missing_token_site_is_named():
    with pytest.raises(StructureError, match=r"token site\(s\) \['x2'\] are not sample sites.*"
                                             r"\['x0', 'z', 'x1'\]"):
        compiled(tiny, ["x0", "x2"], vocab=2)


def test_duplicate_token_is_named():
    with pytest.raises(StructureError, match=r"listed more than once: \['x0'\]"):
        compiled(tiny, ["x0", "x1", "x0"], vocab=2)


def test_token_support_must_match_vocab():
    with pytest.raises(StructureError, match=r"token site 'z' has support \[0, 1, 2\].*vocab=2"):
        compiled(tiny, ["x0", "z"], vocab=2)


def test_observed_token_is_rejected():
    observed = poutine.condition(tiny, data={"x1": torch.tensor(0)})
    with pytest.raises(StructureError, match=r"token site 'x1' is observed"):
        compiled(observed, ["x0", "x1"], vocab=2)


def test_python_branch_on_a_sampled_value_is_explained():
    # x0 -> x1, but x1 exists only if x0 == 1 (a Python branch)
    def m():
        x0 = pyro.sample("x0", dist.Categorical(torch.tensor([0.5, 0.5])))
        if x0 == 1:  # ambiguous under enumeration
            pyro.sample("x1", dist.Categorical(torch.tensor([0.5, 0.5])))

    pattern = r"(?s)could not be traced.*Boolean value.*Vindex or torch\.where"
    with pytest.raises(StructureError, match=pattern):
        compiled(m, ["x0"], vocab=2)


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(vocab=1), r"vocab must be an integer >= 2, got 1"),
    (dict(vocab=2, blocks=[[0], [0]]), r"blocks \[\[0\], \[0\]\] must be non-empty and partition"),
])
def test_structure_declaration_errors(kwargs, pattern):
    with pytest.raises(StructureError, match=pattern):
        Structure(tiny, ["x0", "x1"], **kwargs)


# ---------------------------------------------------------------------------- plates
def test_a_plated_latent_and_token_become_one_variable_per_element():
    # z[i] -> x[i] in a plate of 3; g global -> z[i]
    pg = torch.tensor([0.3, 0.7])
    pz = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    px = torch.tensor([[0.6, 0.4], [0.3, 0.7]])

    def m():
        g = pyro.sample("g", dist.Categorical(pg))
        with pyro.plate("items", 3):
            z = pyro.sample("z", dist.Categorical(Vindex(pz)[g]))
            pyro.sample("x", dist.Categorical(Vindex(px)[z]))

    graph = compiled(m, ["x"], vocab=2)
    assert graph.names == ["x[0]", "x[1]", "x[2]", "g", "z[0]", "z[1]", "z[2]"]
    assert graph.cards == [2] * 7
    factors = {f.site: f for f in graph.factors}
    assert set(factors) == {"g", "z[0]", "z[1]", "z[2]", "x[0]", "x[1]", "x[2]"}
    for i in range(3):
        torch.testing.assert_close(aligned(factors[f"z[{i}]"], (3, 4 + i)), pz.log())
        torch.testing.assert_close(aligned(factors[f"x[{i}]"], (4 + i, i)), px.log())


def test_a_plate_over_observations_only_is_summed():
    # z -> obs[i] (observed, plate of 4): one factor over z, sum_i log E[z, obs_i]
    emit = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    data = torch.tensor([0, 2, 2, 1])

    def m():
        z = pyro.sample("z", dist.Categorical(torch.tensor([0.5, 0.5])))
        with pyro.plate("data", 4):
            pyro.sample("obs", dist.Categorical(Vindex(emit)[z]), obs=data)

    graph = compiled(m, ["z"], vocab=2)
    obs = {f.site: f for f in graph.factors}["obs"]
    assert obs.variables == (0,)
    torch.testing.assert_close(obs.table, emit.log()[:, data].sum(-1))


def test_a_masked_plate_over_observations_sums_the_kept_elements():
    # z -> obs[i] (observed, plate of 4, elements 1 and 2 masked out)
    emit = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    data = torch.tensor([0, 2, 2, 1])
    keep = torch.tensor([True, False, False, True])

    def m():
        z = pyro.sample("z", dist.Categorical(torch.tensor([0.5, 0.5])))
        with pyro.plate("data", 4), poutine.mask(mask=keep):
            pyro.sample("obs", dist.Categorical(Vindex(emit)[z]), obs=data)

    obs = {f.site: f for f in compiled(m, ["z"], vocab=2).factors}["obs"]
    torch.testing.assert_close(obs.table, emit.log()[:, data[keep]].sum(-1))


def test_tokens_pick_elements_and_names_must_exist():
    def m():
        with pyro.plate("items", 3):
            pyro.sample("x", dist.Categorical(torch.tensor([0.5, 0.5])))

    assert compiled(m, ["x[2]", "x[0]"], vocab=2).names == ["x[2]", "x[0]", "x[1]"]
    with pytest.raises(StructureError, match=r"\['x\[3\]'\] are not sample sites.*named like "
                                             r"\['x\[0\]', 'x\[1\]', 'x\[2\]'\]"):
        compiled(m, ["x[3]"], vocab=2)
    with pytest.raises(StructureError, match=r"listed more than once: \['x\[0\]'\] \(a plated"):
        compiled(m, ["x", "x[0]"], vocab=2)


def test_a_subsampled_plate_is_refused():
    def m():
        with pyro.plate("data", 10, subsample_size=3):
            pyro.sample("x", dist.Categorical(torch.tensor([0.5, 0.5])))

    with pytest.raises(StructureError, match=r"pyro\.plate 'data' subsamples 3 of 10"):
        compiled(m, ["x"], vocab=2)


def test_a_site_outside_a_plate_reading_inside_is_refused():
    # z[i] in a plate; y outside it reads z (Pyro forbids this)
    def m():
        with pyro.plate("items", 2):
            z = pyro.sample("z", dist.Categorical(torch.tensor([0.5, 0.5])))
        pyro.sample("y", dist.Categorical(Vindex(torch.tensor([[0.9, 0.1], [0.1, 0.9]]))[z]))

    with pytest.raises(StructureError, match=r"could not be traced|not in that plate"):
        compiled(m, ["y"], vocab=2)


# ---------------------------------------------------------------------------- semantics
def test_constant_minus_inf_sites_are_refused():
    def factor():
        pyro.sample("x", dist.Categorical(torch.tensor([0.5, 0.5])))
        pyro.factor("never", torch.tensor(-math.inf))

    def observation():
        pyro.sample("x", dist.Categorical(torch.tensor([0.5, 0.5])))
        pyro.sample("o", dist.Categorical(logits=torch.tensor([0.0, -math.inf])),
                    obs=torch.tensor(1))

    for m, site in ((factor, "never"), (observation, "o")):
        with pytest.raises(StructureError, match=rf"site '{site}' has log-probability -inf "
                                                 "whatever the variables are"):
            compiled(m, ["x"], vocab=2)


def test_a_finite_constant_enters_the_log_likelihood_only():
    def m():
        pyro.sample("x", dist.Categorical(torch.tensor([0.25, 0.75])))
        pyro.factor("c", torch.tensor(-0.5))
        pyro.sample("o", dist.Categorical(torch.tensor([0.2, 0.8])), obs=torch.tensor(0))

    graph = compiled(m, ["x"], vocab=2)
    assert [f.site for f in graph.factors] == ["x"]
    assert graph.log_constant == pytest.approx(-0.5 + math.log(0.2), abs=1e-15)


def test_a_shared_scale_is_kept_apart_and_different_scales_are_refused():
    px, po = torch.tensor([0.4, 0.6]), torch.tensor([[0.9, 0.1], [0.3, 0.7]])

    def shared():
        with poutine.scale(scale=10.0):
            x = pyro.sample("x", dist.Categorical(px))
            pyro.sample("o", dist.Categorical(Vindex(po)[x]), obs=torch.tensor(1))

    graph = compiled(shared, ["x"], vocab=2)
    assert graph.scale == 10.0
    table = sum(aligned(f, (0,)) for f in graph.factors)
    torch.testing.assert_close(table, px.log() + po[:, 1].log())  # unscaled: the same law

    def different():
        x = pyro.sample("x", dist.Categorical(px))
        with poutine.scale(scale=10.0):
            pyro.sample("o", dist.Categorical(Vindex(po)[x]), obs=torch.tensor(1))

    with pytest.raises(StructureError, match=r"different poutine\.scale values \{'x': 1\.0, "
                                             r"'o': 10\.0\}"):
        compiled(different, ["x"], vocab=2)

    def tensor_scale():
        x = pyro.sample("x", dist.Categorical(px))
        with pyro.plate("data", 2), poutine.scale(scale=torch.tensor([1.0, 2.0])):
            pyro.sample("o", dist.Categorical(Vindex(po)[x]), obs=torch.tensor([1, 0]))

    with pytest.raises(StructureError, match=r"site 'o' has a tensor poutine\.scale of shape"):
        compiled(tensor_scale, ["x"], vocab=2)


@pytest.mark.parametrize("site_fn,pattern", [
    (lambda: dist.Normal(0.0, 1.0), r"site 'z' \(Normal\) is not enumerable: it is continuous "
                                    r"\(support Real\(\)\).*poutine\.condition"),
    (lambda: dist.Poisson(3.0), r"site 'z' \(Poisson\) is not enumerable: it is discrete but not "
                                r"finitely supported"),
    (lambda: dist.MaskedMixture(torch.tensor(True), dist.Categorical(torch.ones(2) / 2),
                                dist.Categorical(torch.ones(2) / 2)),
     r"site 'z' \(MaskedMixture\) is not enumerable: it is a MaskedMixture"),
])
def test_non_enumerable_sites_say_what_they_are(site_fn, pattern):
    def m():
        pyro.sample("z", site_fn())
        pyro.sample("x", dist.Categorical(torch.tensor([0.5, 0.5])))

    with pytest.raises(StructureError, match=pattern):
        compiled(m, ["x"], vocab=2)


def test_a_conditioned_continuous_global_compiles():
    # loc (Normal, conditioned to 0.3) -> x ~ Bernoulli(sigmoid(loc))
    def m():
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Bernoulli(logits=loc))

    graph = compiled(poutine.condition(m, data={"loc": torch.tensor(0.3)}), ["x"], vocab=2)
    x = {f.site: f for f in graph.factors}["x"]
    p = torch.sigmoid(torch.tensor(0.3))
    torch.testing.assert_close(x.table, torch.stack([1 - p, p]).log())
    assert graph.log_constant == pytest.approx(dist.Normal(0.0, 1.0).log_prob(
        torch.tensor(0.3)).item(), abs=1e-15)


# ---------------------------------------------------------------------------- replay check
P_ANY = torch.tensor([0.5, 0.5])


def escapes_by_any():
    # x0 -> x1 through a Python branch on (x0 == 1).any(): always true under enumeration
    x0 = pyro.sample("x0", dist.Categorical(P_ANY))
    if (x0 == 1).any():
        pyro.sample("x1", dist.Categorical(torch.tensor([0.1, 0.9])))
    else:
        pyro.sample("x1", dist.Categorical(torch.tensor([0.9, 0.1])))


def escapes_by_site_count():
    # x0 -> the number of y sites (1 + max of x0): two sites under enumeration
    x0 = pyro.sample("x0", dist.Categorical(P_ANY))
    for i in range(int(x0.max()) + 1):
        pyro.sample(f"y{i}", dist.Categorical(torch.tensor([0.5, 0.5])))


def escapes_by_squeeze():
    # x0 -> x[i] (plate of 2), but squeeze(-1) moves x0's enumeration dim onto the plate's
    x0 = pyro.sample("x0", dist.Categorical(torch.tensor([0.3, 0.7])))
    with pyro.plate("items", 2):
        pyro.sample("x", dist.Categorical(Vindex(torch.tensor([[0.9, 0.1], [0.2, 0.8]]))[
            x0.squeeze(-1)]))


@pytest.mark.parametrize("model,tokens,pattern", [
    (escapes_by_any, ["x0", "x1"], r"disagrees with the model at site 'x1'"),
    (escapes_by_site_count, ["x0", "y0"], r"site 'y1' of the enumerated trace does not occur"),
    (escapes_by_squeeze, ["x0", "x"], r"disagrees with the model at site 'x'"),
])
def test_control_flow_on_sampled_values_is_caught_by_the_replay(model, tokens, pattern):
    with pytest.raises(ReplayMismatchError, match=pattern + r".*control flow on sampled values "
                                                            r"cannot be compiled; use Vindex / "
                                                            r"torch\.where"):
        compiled(model, tokens, vocab=2)
    # without the check the same model compiles to another one: p(x1 = 1) = 0.9, truth 0.5
    if model is escapes_by_any:
        s = Structure(model, tokens, vocab=2, replay_check=False)
        p = s.engine(device="cpu").conditionals(torch.zeros(1, 2, dtype=torch.long),
                                    torch.zeros(1, 2, dtype=torch.bool))[0, 1].exp()
        assert p[1].item() == pytest.approx(0.9, abs=1e-12)


def test_the_replay_check_accepts_every_zoo_model():
    from mdmprob.structure import list_models

    for name in list_models():
        graph = load_model(name).factor_graph
        again = compile_model(load_model(name).model, graph.names[:graph.n_tokens],
                              graph.cards[0], replay_samples=5, seed=1)
        assert again.names == graph.names


def test_a_plated_one_state_latent_reading_a_global(device):
    # g -> one[i] (one state each, log 1 squeezed away), g -> x[i]
    pg, px = torch.tensor([0.3, 0.7]), torch.tensor([[0.9, 0.1], [0.2, 0.8]])

    def m():
        g = pyro.sample("g", dist.Categorical(pg))
        with pyro.plate("items", 2):
            pyro.sample("one", dist.Categorical(Vindex(torch.ones(2, 1))[g]))
            pyro.sample("x", dist.Categorical(Vindex(px)[g]))

    s = Structure(m, ["x"], vocab=2)
    assert s.factor_graph.names == ["x[0]", "x[1]", "g", "one[0]", "one[1]"]
    assert s.factor_graph.cards == [2, 2, 2, 1, 1]
    every = torch.cartesian_prod(torch.arange(2), torch.arange(2))
    want = (pg[:, None] * px[:, every[:, 0]] * px[:, every[:, 1]]).sum(0).log()
    got = s.engine(device=device).log_prob(every).cpu()
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
