"""Pyro model --(traced once, every discrete site enumerated in parallel)--> FactorGraph.

The model runs once under ``poutine.enum`` with float64 as the default dtype; each sample site's
log-prob tensor is packed with Pyro's unique per-variable symbols (``Trace.pack_tensors``), which
stay unique even when ``pyro.markov`` recycles tensor dims. Enumeration starts left of the
model's plates (``first_available_dim = -1 - max_plate_nesting``, the nesting found by tracing).

A plated site is *grounded*: it becomes one variable per element, named ``site[i]`` (several plates:
``site[i,j]``, indices in the order of the site's batch dimensions), and every table is sliced along
the plates of the variables it reads; plates that no variable of a table lives in (observations
only) are summed. The compiled joint is the one Pyro's ``TraceEnum_ELBO`` computes::

    log p(x, z) = sum_enumerated log p(site | parents)        (unscaled; poutine.mask is ignored)
                + sum_observed-or-factor  mask * log p(site | variables)
                - log Z

and Pyro's log-likelihood of the model (``-TraceEnum_ELBO().loss`` with an empty guide) is
``graph.scale * log Z + graph.log_constant``: one ``poutine.scale`` shared by every site that reads a
variable, and the (scaled, masked) log-probs of the sites that read none. What differs from this
raises a :class:`StructureError` naming the construct.

After compiling, a *replay check* draws a few samples from the compiled graph (ancestrally, from
each site's own table in sampling order), reruns the model under ``poutine.condition`` on each, and
compares every site's log-prob: Python control flow on a sampled value escapes the enumerated
trace, and the check turns that into a :class:`ReplayMismatchError` instead of a different model.
"""

from __future__ import annotations

import itertools
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions import MaskedMixture
from pyro.distributions.util import scale_and_mask
from pyro.ops import packed
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample

from mdmprob.errors import StructureError
from mdmprob.sampling import gumbel_argmax

CONTROL_FLOW_HINT = ("control flow on sampled values cannot be compiled; use Vindex / torch.where "
                     "(or a pyro.plate) instead of Python branches, loops or shapes that depend on "
                     "a sampled value")


class ReplayMismatchError(StructureError):
    """The compiled graph and a rerun of the model on one of its samples disagree at a site."""


@dataclass(frozen=True)
class Factor:
    """A log-factor: ``table[i_1, ..., i_k] = log phi(v_1 = i_1, ..., v_k = i_k)``."""

    variables: tuple[int, ...]  # indices into FactorGraph.names
    table: torch.Tensor  # shape [card(v_1), ..., card(v_k)], float64, CPU
    site: str  # the Pyro site (with the element's plate indices, e.g. "obs[3]") it comes from


@dataclass
class FactorGraph:
    """Discrete variables with cardinalities and log-factors over them.

    Variables ``0 .. n_tokens-1`` are the tokens in sequence order; the rest are latents. A plated
    site contributes one variable per element (``"x[3]"``). The variable ``k`` of a site stands
    for the k-th value of the site's ``enumerate_support()`` (Categorical: k; Bernoulli: k;
    OneHotCategorical: the k-th basis vector; Binomial: k successes).

    ``log p(x, z) = sum_f table_f[...] - log Z``; Pyro's log-likelihood of the model (nats) is
    ``scale * log Z + log_constant``.
    """

    names: list[str]
    cards: list[int]
    n_tokens: int
    factors: list[Factor] = field(default_factory=list)
    scale: float = 1.0  # the poutine.scale shared by every site that reads a variable
    log_constant: float = 0.0  # scaled, masked log-probs of the sites that read no variable
    # the key of the model it was compiled from (set by compile_cached; None: not cached)
    cache_key: str | None = field(default=None, compare=False, repr=False)

    @property
    def n_variables(self) -> int:
        return len(self.names)

    @property
    def latent_names(self) -> list[str]:
        return self.names[self.n_tokens :]


def compile_model(model: Callable[[], object], tokens: Sequence[str], vocab: int, *,
                  replay_check: bool = True, replay_samples: int | None = None,
                  seed: int = 0) -> FactorGraph:
    """Trace ``model()`` once with every discrete site enumerated and return its factor graph.

    Args:
        model: a Pyro model taking no arguments.
        tokens: the token variables in sequence order: a site name stands for all its elements
            in index order (a plated site) or for itself; ``"x[3]"`` (``"x[1,2]"``) picks one
            element. Each token must be unobserved, discrete, with ``vocab`` values.
        vocab: V; the token value k is the k-th value of the site's support.
        replay_check: rerun the model on ``replay_samples`` samples of the compiled graph
            (seeded by ``seed``) and raise :class:`ReplayMismatchError` on any disagreement.
            The default is 3 reruns, 1 for models of over 1000 sites (a rerun exercises every
            site, so a large model checks each line of its code many times).
    """
    declared = [str(t) for t in tokens]
    if len(set(declared)) != len(declared):
        dup = sorted({t for t in declared if declared.count(t) > 1})
        raise StructureError(f"token sites are listed more than once: {dup}")
    trace = _enumerated_trace(model)
    sites = _read_sites(trace)
    element_of = _ground_variables(sites)
    token_names = _expand_tokens(declared, sites, element_of, vocab)
    taken = set(token_names)
    names = token_names + [n for n in element_of if n not in taken]
    cards = [element_of[n][0].card for n in names]
    graph = FactorGraph(names=names, cards=cards, n_tokens=len(token_names))
    grounded = _ground_factors(trace, sites, {n: i for i, n in enumerate(names)}, graph)
    if replay_check:
        if replay_samples is None:
            replay_samples = 3 if len(sites) <= 1000 else 1
        _replay_check(model, sites, graph, grounded, int(replay_samples), int(seed))
    return graph


def compile_cached(model: Callable[[], object], tokens: Sequence[str], vocab: int, *,
                   replay_check: bool = True) -> FactorGraph:
    """:func:`compile_model` through the caches of :mod:`mdmprob.cache`: in the process, then
    on disk (``MDMPROB_CACHE``), keyed by the model's code and closure, ``tokens``, ``vocab``,
    ``replay_check``, the versions and this compiler's source. A model the key cannot identify
    is compiled every time. Errors are never cached: a model that fails compiles (and fails)
    again."""
    from mdmprob import cache

    declared = [str(t) for t in tokens]
    parts = (cache.source_digest(sys.modules[__name__]), model, declared, vocab,
             bool(replay_check))
    graph, key = cache.cached(
        "graph", parts, lambda: compile_model(model, declared, vocab, replay_check=replay_check),
        graph_body, graph_from_body)
    graph.cache_key = key
    return graph


def graph_body(graph: FactorGraph) -> dict:
    """A factor graph as plain values and one flat float64 tensor of its tables (the disk
    cache's entry; :func:`graph_from_body` reads it back)."""
    tables = [f.table.detach().to("cpu", torch.float64).reshape(-1) for f in graph.factors]
    return {"names": list(graph.names), "cards": [int(c) for c in graph.cards],
            "n_tokens": int(graph.n_tokens), "scale": float(graph.scale),
            "log_constant": float(graph.log_constant),
            "variables": [[int(v) for v in f.variables] for f in graph.factors],
            "sites": [f.site for f in graph.factors],
            "tables": torch.cat(tables) if tables else torch.zeros(0, dtype=torch.float64)}


def graph_from_body(body: dict) -> FactorGraph | None:
    """The factor graph of :func:`graph_body`, or None when ``body`` is not a consistent one
    (types, sizes, variable indices, table entries: no NaN, no +inf)."""
    names, cards, variables, sites = body["names"], body["cards"], body["variables"], body["sites"]
    flat, n_tokens = body["tables"], body["n_tokens"]
    ints = all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in cards)
    if not (isinstance(names, list) and all(isinstance(x, str) for x in names) and ints
            and len(set(names)) == len(names) == len(cards) and isinstance(n_tokens, int)
            and 0 <= n_tokens <= len(names) and len(variables) == len(sites)
            and all(isinstance(x, str) for x in sites) and isinstance(flat, torch.Tensor)
            and flat.dtype == torch.float64 and flat.dim() == 1):
        return None
    if flat.isnan().any() or (flat == math.inf).any():
        return None
    factors, at = [], 0
    for vs, site in zip(variables, sites, strict=True):
        if not all(isinstance(v, int) and 0 <= v < len(cards) for v in vs):
            return None
        shape = tuple(cards[v] for v in vs)
        size = math.prod(shape)
        if at + size > flat.numel():
            return None
        factors.append(Factor(tuple(vs), flat[at:at + size].reshape(shape).clone(), site))
        at += size
    if at != flat.numel():
        return None
    return FactorGraph(names=list(names), cards=list(cards), n_tokens=n_tokens, factors=factors,
                       scale=float(body["scale"]), log_constant=float(body["log_constant"]))


# ---------------------------------------------------------------------------- tracing
class _DeeperPlates(Exception):
    def __init__(self, depth: int):
        self.depth = depth


class _Refusal(Exception):
    """Raised inside the traced model (Pyro rewrites the ValueErrors raised there)."""


class _Prepare(Messenger):
    """Enumerates every unobserved site in parallel (overriding any other annotation), refuses
    what cannot be enumerated exactly, and notices plates deeper than the assumed nesting."""

    def __init__(self, nesting: int):
        super().__init__()
        self.nesting = nesting

    def _process_message(self, msg) -> None:
        if msg["type"] != "sample":
            return
        fn, name = msg["fn"], msg["name"]
        if isinstance(fn, _Subsample):  # a pyro.plate is being built
            if fn.subsample_size is not None and fn.subsample_size < fn.size:
                raise _Refusal(
                    f"pyro.plate {name!r} subsamples {fn.subsample_size} of {fn.size} elements; a "
                    "subsampled plate is a random estimate, not a joint law: drop subsample_size")
            if self.nesting == 0:  # its dims would collide with the enumeration's: measure first
                raise _DeeperPlates(None)
            return
        depth = max((-f.dim for f in msg["cond_indep_stack"] if f.vectorized), default=0)
        if depth > self.nesting:
            raise _DeeperPlates(depth)
        if msg["is_observed"]:
            return
        if not getattr(fn, "has_enumerate_support", False):
            raise _Refusal(_not_enumerable(name, fn))
        infer = {k: v for k, v in (msg["infer"] or {}).items() if k != "num_samples"}
        infer["enumerate"] = "parallel"
        msg["infer"] = infer


def _not_enumerable(name: str, fn) -> str:
    base = fn
    while hasattr(base, "base_dist"):  # ExpandedDistribution, MaskedDistribution, Independent
        base = base.base_dist
    support = getattr(base, "support", None)
    if isinstance(base, MaskedMixture):
        what = ("a MaskedMixture, which Pyro cannot enumerate (it is meant for observed sites); "
                "for a latent, select the component's parameters with torch.where or Vindex")
    elif support is not None and support.is_discrete:
        what = f"discrete but not finitely supported (support {support})"
    elif support is not None:
        what = f"continuous (support {support})"
    else:
        what = "without a finite enumerate_support"
    return (f"site {name!r} ({type(base).__name__}) is not enumerable: it is {what}. mdmprob "
            "needs discrete, finitely supported sites (Categorical, Bernoulli, OneHotCategorical, "
            "Binomial, ...). A continuous global can be fixed with poutine.condition(model, "
            f"data={{{name!r}: value}}); a count can be written as a Categorical over 0..max.")


@contextmanager
def _float64():
    """The model's own constants (``torch.tensor([0.1, 0.9])``) are created in float64."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _enumerated_trace(model: Callable[[], object]):
    nesting = 0  # first try without plates; a plate restarts the trace left of its dims
    while True:
        try:
            return _trace_once(model, nesting)
        except _DeeperPlates as deeper:
            depth = _plate_nesting(model) if deeper.depth is None else deeper.depth
            nesting = max(nesting + 1, depth)


def _plate_nesting(model) -> int:
    """How many batch dims the model's vectorized plates take (``max_plate_nesting``), from one
    ordinary run of it (as TraceEnum_ELBO guesses it); 1 if that run fails."""
    try:
        with torch.random.fork_rng(), _float64(), pyro.validation_enabled(False), \
                torch.no_grad():
            trace = poutine.trace(model).get_trace()
    except Exception:
        return 1
    return max((-f.dim for node in trace.nodes.values() if node["type"] == "sample"
                for f in node["cond_indep_stack"] if f.vectorized), default=0)


def _trace_once(model, nesting: int):
    enumerated = poutine.enum(_Prepare(nesting)(model), first_available_dim=-1 - nesting)
    try:
        with _float64(), pyro.validation_enabled(False), torch.no_grad():
            trace = poutine.trace(enumerated).get_trace()
            trace.compute_log_prob()
            trace.pack_tensors()
    except _DeeperPlates:
        raise
    except _Refusal as refusal:
        raise StructureError(str(refusal)) from None
    except Exception as e:  # Pyro's own messages, re-raised with what to do about them
        raise StructureError(
            f"the model could not be traced under parallel enumeration ({type(e).__name__}: {e}). "
            "Tokens and latents must be discrete sample sites; use pyro.markov for chains and "
            "pyro.plate for independent copies (a site outside a plate may not read a site inside "
            "it); use Vindex or torch.where instead of Python branches on sampled values."
        ) from e
    return trace


# ---------------------------------------------------------------------------- grounding
@dataclass
class _Site:
    name: str
    node: dict
    plates: tuple[tuple[str, int, int], ...]  # (name, dim, size), leftmost batch dim first
    symbol: str | None  # Pyro's enumeration symbol; None for observed and factor sites
    support: torch.Tensor | None  # [card, *event_shape]

    @property
    def card(self) -> int:
        return int(self.support.shape[0])

    @property
    def plate_names(self) -> tuple[str, ...]:
        return tuple(p[0] for p in self.plates)

    def elements(self):
        return itertools.product(*(range(size) for _, _, size in self.plates))

    def element_name(self, index: tuple[int, ...]) -> str:
        return f"{self.name}[{','.join(map(str, index))}]" if index else self.name


def _read_sites(trace) -> list[_Site]:
    sites = []
    for name, node in trace.nodes.items():
        if node["type"] != "sample" or isinstance(node["fn"], _Subsample):
            continue
        plates = tuple(sorted(((f.name, f.dim, f.size) for f in node["cond_indep_stack"]
                               if f.vectorized), key=lambda p: p[1]))
        symbol = None if node["is_observed"] else node["infer"].get("_enumerate_symbol")
        if not node["is_observed"] and symbol is None:
            raise StructureError(_not_enumerable(name, node["fn"]))
        support = None
        if symbol is not None:
            fn = node["fn"]
            support = fn.enumerate_support(expand=False)
            support = support.reshape((support.shape[0],) + tuple(fn.event_shape))
        sites.append(_Site(name, node, plates, symbol, support))
    return sites


def _ground_variables(sites: list[_Site]) -> dict[str, tuple[_Site, tuple[int, ...]]]:
    """Every variable's name -> (its site, its element index), in sampling order."""
    site_names = {s.name for s in sites}
    out: dict[str, tuple[_Site, tuple[int, ...]]] = {}
    for s in sites:
        if s.symbol is None:
            continue
        for index in s.elements():
            name = s.element_name(index)
            if name in out or (index and name in site_names):
                raise StructureError(
                    f"element {index} of plated site {s.name!r} would be named {name!r}, which "
                    "is already a site's name; rename one of the two sites")
            out[name] = (s, index)
    return out


def _expand_tokens(declared: list[str], sites: list[_Site], element_of: dict, vocab: int):
    by_name = {s.name: s for s in sites}
    missing = [t for t in declared
               if t not in by_name and t.replace(" ", "") not in element_of]
    if missing:
        examples = [n for n in element_of if "[" in n][:3]
        raise StructureError(
            f"token site(s) {missing} are not sample sites of the model; its sample sites are "
            f"{list(by_name)}" + (f" (elements of plated sites are named like {examples})"
                                  if examples else ""))
    names: list[str] = []
    for t in declared:
        site = by_name.get(t)
        if site is not None and site.symbol is None:
            raise StructureError(f"token site {t!r} is observed in the model; tokens must be free")
        names += ([site.element_name(i) for i in site.elements()] if site is not None
                  else [t.replace(" ", "")])
    if len(set(names)) != len(names):
        dup = sorted({t for t in names if names.count(t) > 1})
        raise StructureError(f"token sites are listed more than once: {dup} (a plated site's "
                             "name already stands for all its elements)")
    for name in names:
        site = element_of[name][0]
        if site.card != vocab:
            values = site.support.tolist()
            raise StructureError(
                f"token site {name!r} has support {values[:8]}{'...' if len(values) > 8 else ''} "
                f"({site.card} values) but vocab={vocab}: a token takes the values 0..{vocab - 1} "
                f"(the k-th value of its support); use a site with {vocab} values (e.g. "
                f"Categorical with {vocab} classes)")
    return names


@dataclass
class _Grounded:
    """Per site, what the replay check needs: its element tables or its constant."""

    terms: dict[str, list[tuple[tuple[int, ...], torch.Tensor]]]  # site -> [(variables, table)]
    own: dict[int, tuple[tuple[int, ...], torch.Tensor]]  # variable -> its site's element table
    constants: dict[str, float]  # sites that read no variable -> their log-prob sum


def _ground_factors(trace, sites: list[_Site], index: dict[str, int], graph: FactorGraph):
    owner = {s.symbol: s for s in sites if s.symbol is not None}
    low = [(s.name, s.node["unscaled_log_prob"].dtype) for s in sites
           if s.node["unscaled_log_prob"].dtype != torch.float64]
    if low:  # constants made inside the model are float64; these come from outside it
        warnings.warn(
            f"site {low[0][0]!r} computes its log-probability in {low[0][1]}, which limits "
            "every exact result to that precision; "
            "create the model's tensors with dtype=torch.float64 (those made inside the model "
            "already are)", stacklevel=5)
    grounded = _Grounded({}, {}, {})
    scales: dict[float, str] = {}
    for s in sites:
        node, pk = s.node, s.node["packed"]
        if s.symbol is not None:  # TraceEnum_ELBO: enumerated sites enter unscaled and unmasked
            table = pk["unscaled_log_prob"]
        else:
            table = packed.scale_and_mask(pk["unscaled_log_prob"], mask=pk["mask"])
        dims = table._pyro_dims
        enum = [d for d in dims if d in owner]
        own_plates = {trace.plate_to_symbol[p[0]] for p in s.plates}
        strange = [d for d in dims if d not in owner and d not in own_plates]
        if strange:
            raise StructureError(f"site {s.name!r} has a batch dimension that is neither a plate "
                                 "of it nor an enumerated variable; " + CONTROL_FLOW_HINT)
        if not enum:
            grounded.constants[s.name] = _constant(s)
            graph.log_constant += grounded.constants[s.name]
            continue
        _check_finite(s.name, table)
        scale = node["scale"]
        if isinstance(scale, torch.Tensor) and scale.dim():
            raise StructureError(f"site {s.name!r} has a tensor poutine.scale of shape "
                                 f"{tuple(scale.shape)}; enumerated models take one scalar scale")
        scales.setdefault(float(scale), s.name)
        used = set().union(*(owner[d].plate_names for d in enum))
        outside = sorted(used - set(s.plate_names))
        if outside:
            raise StructureError(f"site {s.name!r} reads a variable inside pyro.plate "
                                 f"{outside} but is not in that plate; Pyro forbids a site "
                                 "outside a plate to depend on one inside it")
        ground = [p for p in s.plates if p[0] in used]
        symbol = {p[0]: trace.plate_to_symbol[p[0]] for p in s.plates}
        sliced = [symbol[p[0]] for p in ground if symbol[p[0]] in dims]
        summed = [symbol[p[0]] for p in s.plates if p[0] not in used and symbol[p[0]] in dims]
        order = sliced + summed + enum
        t = table.permute([dims.index(d) for d in order]).to("cpu", torch.float64)
        if summed:  # plates only observations live in: a product over their elements
            t = t.sum(tuple(range(len(sliced), len(sliced) + len(summed))))
        terms = grounded.terms.setdefault(s.name, [])
        for element in itertools.product(*(range(size) for _, _, size in ground)):
            at = {p[0]: i for p, i in zip(ground, element, strict=True)}
            cut = t[tuple(at[p[0]] for p in ground if symbol[p[0]] in dims)].contiguous()
            variables = tuple(index[owner[d].element_name(tuple(at[q] for q in
                                                                owner[d].plate_names))]
                              for d in enum)
            terms.append((variables, cut))
            if s.symbol in enum:  # (a one-state site's own dim is squeezed away)
                grounded.own[index[s.element_name(element)]] = (variables, cut)
            if (cut != 0).any():  # a zero table (pyro.deterministic, log 1) carries nothing
                name = f"{s.name}[{','.join(map(str, element))}]" if element else s.name
                graph.factors.append(Factor(variables, cut, name))
    if len(scales) > 1:
        raise StructureError(
            "sites that read variables carry different poutine.scale values "
            f"{ {v: k for k, v in scales.items()} }; Pyro's TraceEnum_ELBO needs one shared scale "
            "(and a scale never changes the distribution): drop poutine.scale or use one value")
    graph.scale = next(iter(scales), 1.0)
    return grounded


def _constant(s: _Site) -> float:
    """The (scaled, masked) log-prob of a site that reads no variable; refuses -inf and NaN."""
    value = float(s.node["packed"]["log_prob"].sum())
    if math.isnan(value) or value == math.inf:
        raise StructureError(f"site {s.name!r} has log-probability {value}; a log-probability "
                             "must be finite or -inf")
    if value == -math.inf:
        raise StructureError(
            f"site {s.name!r} has log-probability -inf whatever the variables are (an impossible "
            "constant observation or pyro.factor(..., -inf)): the model has probability zero, "
            "so it has no distribution to compile")
    return value


def _check_finite(name: str, table: torch.Tensor) -> None:
    if table.isnan().any() or (table == math.inf).any():
        raise StructureError(f"site {name!r} has a NaN or +inf log-probability; log-probabilities "
                             "must be finite or -inf")


# ---------------------------------------------------------------------------- replay check
def _replay_check(model, sites: list[_Site], graph: FactorGraph, grounded: _Grounded,
                  samples: int, seed: int) -> None:
    """Rerun the model on samples of the compiled graph; every site must have the same log-prob.

    Sample 0 is drawn from the compiled joint's directed part (each site's own table, in sampling
    order); samples 1.. from the same tables made uniform on their support, for coverage."""
    if samples <= 0:
        return
    index = {n: i for i, n in enumerate(graph.names)}
    generator = torch.Generator().manual_seed(seed)
    value: dict[int, torch.Tensor] = {}
    explore = (torch.arange(samples) > 0)[:, None]
    for s in sites:
        if s.symbol is None:
            continue
        for element in s.elements():
            v = index[s.element_name(element)]
            if v not in grounded.own:  # a one-state latent (its table is log 1, squeezed away)
                value[v] = torch.zeros(samples, dtype=torch.long)
                continue
            variables, table = grounded.own[v]
            if any(u not in value for u in variables if u != v):
                raise ReplayMismatchError(f"site {s.name!r} reads a variable sampled after it; "
                                          + CONTROL_FLOW_HINT)
            logits = table.movedim(variables.index(v), -1)
            logits = logits[tuple(value[u] for u in variables if u != v)].expand(samples, -1)
            # sample 0 follows the graph; the others are uniform on each conditional's support,
            # so that rare branches of the model are visited too
            flat = torch.where(logits > -math.inf, 0.0, -math.inf)
            value[v] = gumbel_argmax(torch.where(explore, flat, logits), generator)
    compiled: dict[str, torch.Tensor] = {
        name: sum((t[tuple(value[u] for u in vs)] for vs, t in terms),
                  torch.zeros(samples, dtype=torch.float64))
        for name, terms in grounded.terms.items()}
    for k in range(samples):
        data = {s.name: _site_value(s, index, value, k) for s in sites if s.symbol is not None}
        try:
            with _float64(), pyro.validation_enabled(False), torch.no_grad():
                rerun = poutine.trace(poutine.condition(model, data=data)).get_trace()
                rerun.compute_log_prob()
        except Exception as e:
            raise ReplayMismatchError(
                f"the model fails when rerun on a sample of its compiled graph ({type(e).__name__}: "
                f"{e}); " + CONTROL_FLOW_HINT) from e
        _compare(sites, rerun, compiled, grounded.constants, k)


def _site_value(s: _Site, index: dict[str, int], value: dict[int, torch.Tensor], k: int):
    """Sample ``k`` of site ``s``'s elements as the value Pyro would sample: batch shape by plate."""
    ks = torch.stack([value[index[s.element_name(e)]][k] for e in s.elements()])
    if not s.plates:
        return s.support[ks[0]]
    shape = [1] * max(-dim for _, dim, _ in s.plates)
    for _, dim, size in s.plates:
        shape[dim] = size
    return s.support[ks.reshape(shape)]


def _compare(sites: list[_Site], rerun, compiled: dict, constants: dict, k: int) -> None:
    known = {s.name: s for s in sites}
    seen = set()
    for name, node in rerun.nodes.items():
        if node["type"] != "sample" or isinstance(node["fn"], _Subsample):
            continue
        seen.add(name)
        if name not in known:
            raise ReplayMismatchError(
                f"site {name!r} occurs when the model is rerun on a sample of its compiled graph "
                "but not in the enumerated trace; " + CONTROL_FLOW_HINT)
        if name in constants:
            want, got = constants[name], float(node["log_prob"].sum())
        else:
            unscaled = node["unscaled_log_prob"]
            if known[name].symbol is None:
                unscaled = scale_and_mask(unscaled, mask=node["mask"])
            want, got = float(compiled[name][k]), float(unscaled.sum())
        if not _same(want, got):
            raise ReplayMismatchError(
                f"the compiled graph disagrees with the model at site {name!r}: log-prob {want:.6g} "
                f"compiled, {got:.6g} when the model is rerun on a sample of the compiled graph; "
                + CONTROL_FLOW_HINT)
    absent = [n for n in known if n not in seen]
    if absent:
        raise ReplayMismatchError(
            f"site {absent[0]!r} of the enumerated trace does not occur when the model is rerun on "
            "a sample of its compiled graph; " + CONTROL_FLOW_HINT)


def _same(a: float, b: float) -> bool:
    if a == b:  # also -inf == -inf
        return True
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
