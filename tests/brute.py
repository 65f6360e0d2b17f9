"""A brute-force oracle that shares nothing with mdmprob's engine.

Every full assignment of every site (tokens and latents) is enumerated with itertools.product
and scored by Pyro itself (``poutine.condition`` + ``poutine.trace(...).log_prob_sum()``); the
table is normalised (models written with ``pyro.factor`` are unnormalised) and the latents are
summed out with a plain logsumexp. Only the names and cardinalities of the sites are read from
the compiled factor graph. Queries on the resulting table (visible-token marginals,
conditionals, block joints, posteriors over the masked completion) are direct sums over axes.

Only for tiny instances: at most ``MAX_ASSIGNMENTS`` full assignments. Tables are cached per
Structure object. Everything here is float64 on the CPU.

The last section builds random small Bayesian networks as Pyro programs (and a hypothesis
strategy for them) for the property tests.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from hypothesis import strategies as st
from pyro.ops.indexing import Vindex

from mdmprob.structure import Structure

MAX_ASSIGNMENTS = 4096

# id(structure) -> (structure, full log joint); the structure is kept alive so ids are not reused
_CACHE: dict[int, tuple[object, torch.Tensor]] = {}


def full_log_joint(structure) -> torch.Tensor:
    """Normalised ``log p(x, z)`` with shape ``cards``: tokens in sequence order, then latents
    in ``factor_graph.latent_names`` order."""
    hit = _CACHE.get(id(structure))
    if hit is not None and hit[0] is structure:
        return hit[1]
    graph = structure.factor_graph
    names, cards = list(graph.names), list(graph.cards)
    total = math.prod(cards)
    if total > MAX_ASSIGNMENTS:
        raise ValueError(f"{total} full assignments: too many for the brute-force oracle")
    scores = []
    with torch.no_grad(), pyro.validation_enabled(False):
        for values in itertools.product(*(range(c) for c in cards)):
            data = {name: torch.tensor(v) for name, v in zip(names, values, strict=True)}
            trace = poutine.trace(poutine.condition(structure.model, data=data)).get_trace()
            if not scores:  # every random choice of the model must be pinned by `data`
                free = [n for n, s in trace.nodes.items()
                        if s["type"] == "sample" and not s["is_observed"]]
                assert not free, f"sites {free} are not covered by the enumeration"
            scores.append(trace.log_prob_sum().to(torch.float64))
    table = torch.stack(scores).reshape(cards)
    log_z = torch.logsumexp(table.reshape(-1), 0)
    assert torch.isfinite(log_z), "the model puts no mass anywhere"
    table = table - log_z
    _CACHE[id(structure)] = (structure, table)
    return table


def token_log_joint(structure) -> torch.Tensor:
    """Normalised ``log p(x)`` over the tokens, shape ``[V] * n`` (latents summed out)."""
    full = full_log_joint(structure)
    n = structure.factor_graph.n_tokens
    if full.dim() == n:
        return full
    return torch.logsumexp(full, dim=tuple(range(n, full.dim())))


# ---------------------------------------------------------------------------- queries
def _rows(tokens, visible, n):
    tokens = torch.as_tensor(tokens).cpu().long().reshape(-1, n)
    if visible is None:
        visible = torch.ones_like(tokens, dtype=torch.bool)
    visible = torch.as_tensor(visible).cpu().bool().reshape(-1, n)
    return tokens, visible


def restrict(joint: torch.Tensor, n: int, tokens_row, visible_row) -> torch.Tensor:
    """``joint`` (tokens first, maybe latents after) at the visible tokens of one row: a table
    over the masked positions in increasing order (then any latent axes)."""
    index = tuple(int(t) if v else slice(None)
                  for t, v in zip(tokens_row.tolist(), visible_row.tolist(), strict=True))
    assert len(index) == n
    return joint[index]


def log_prob_visible(joint, tokens, visible=None) -> torch.Tensor:
    """``log p(x_visible)`` per row, ``[B]``."""
    n = joint.dim()
    tokens, visible = _rows(tokens, visible, n)
    return torch.stack([torch.logsumexp(restrict(joint, n, t, v).reshape(-1), 0)
                        for t, v in zip(tokens, visible, strict=True)])


def masked_posterior(joint, tokens_row, visible_row) -> torch.Tensor:
    """``log p(x_masked | x_visible)`` over the masked positions in increasing order; NaN where
    the evidence is impossible."""
    n = joint.dim()
    table = restrict(joint, n, torch.as_tensor(tokens_row), torch.as_tensor(visible_row))
    return table - torch.logsumexp(table.reshape(-1), 0)


def conditionals(joint, tokens, visible=None) -> torch.Tensor:
    """``log p(x_i = v | x_visible)``, ``[B, n, V]``; visible positions are their indicator and
    masked positions of impossible rows are NaN (undefined)."""
    n, vocab = joint.dim(), joint.shape[0]
    tokens, visible = _rows(tokens, visible, n)
    out = torch.empty(tokens.shape[0], n, vocab)
    for b, (t, v) in enumerate(zip(tokens, visible, strict=True)):
        post = masked_posterior(joint, t, v)
        masked = [i for i in range(n) if not v[i]]
        for i in range(n):
            if v[i]:
                out[b, i] = -math.inf
                out[b, i, t[i]] = 0.0
            else:
                k = masked.index(i)
                others = tuple(a for a in range(len(masked)) if a != k)
                out[b, i] = torch.logsumexp(post, dim=others) if others else post
    return out


def block_joint(joint, tokens, visible, positions) -> torch.Tensor:
    """``log p(x_S | x_visible)`` per row, ``[B] + [V] * |S|`` with axes in ``positions``
    order; NaN for impossible rows."""
    n = joint.dim()
    tokens, visible = _rows(tokens, visible, n)
    positions = list(positions)
    rows = []
    for t, v in zip(tokens, visible, strict=True):
        masked = [i for i in range(n) if not v[i]]
        post = masked_posterior(joint, t, v)
        axes = [masked.index(p) for p in positions]
        others = tuple(a for a in range(len(masked)) if a not in axes)
        table = torch.logsumexp(post, dim=others) if others else post
        kept = [a for a in range(len(masked)) if a in axes]  # remaining axes, increasing
        rows.append(table.permute([kept.index(a) for a in axes]) if axes else table)
    return torch.stack(rows)


def masked_argmax(table: torch.Tensor, tol: float = 1e-9):
    """The unique argmax (as a tuple of indices) of a table, or None if the best two entries
    are within ``tol`` (a tie) or nothing is possible."""
    flat = table.reshape(-1)
    if flat.numel() == 1:
        return () if torch.isfinite(flat[0]) else None
    top = torch.topk(flat, 2).values
    if not torch.isfinite(top[0]) or top[0] - top[1] <= tol:
        return None
    return tuple(int(i) for i in torch.unravel_index(torch.argmax(flat), table.shape))


# ---------------------------------------------------------------------------- random structures
# Random small Bayesian networks written as ordinary Pyro programs, for property tests. Each site
# is a Categorical whose probability table is indexed (Vindex) by up to two earlier sites.


class SiteSpec(NamedTuple):
    name: str
    card: int
    parents: tuple[int, ...]  # indices of earlier sites in sampling order


class NetSpec(NamedTuple):
    sites: tuple[SiteSpec, ...]  # in sampling order
    tokens: tuple[str, ...]  # the token sites, in sequence order (not necessarily sampling order)
    vocab: int
    seed: int  # of the random tables
    zeros: bool  # some exact zeros in the tables (passed as logits = -inf)
    logits: bool  # Categorical(logits=...) instead of Categorical(probs=...)
    coupling: tuple[int, int] | None  # an extra pyro.factor between two sites (unnormalised)


def build_network(spec: NetSpec):
    """The Structure of a random network described by ``spec``."""
    g = torch.Generator().manual_seed(spec.seed)
    tables = []
    for site in spec.sites:
        shape = [spec.sites[p].card for p in site.parents] + [site.card]
        probs = torch.rand(shape, generator=g, dtype=torch.float64) + 0.05
        if spec.zeros:
            keep = torch.nn.functional.one_hot(
                torch.randint(site.card, shape[:-1], generator=g), site.card).bool()
            drop = (torch.rand(shape, generator=g, dtype=torch.float64) < 0.35) & ~keep
            probs = probs.masked_fill(drop, 0.0)
        tables.append(probs / probs.sum(-1, keepdim=True))
    coupling = None
    if spec.coupling is not None:
        a, b = spec.coupling
        coupling = torch.randn(spec.sites[a].card, spec.sites[b].card, generator=g,
                               dtype=torch.float64)

    def model():
        values = []
        for site, table in zip(spec.sites, tables, strict=True):
            parents = tuple(values[p] for p in site.parents)
            t = Vindex(table)[parents] if parents else table
            if spec.logits or spec.zeros:
                d = dist.Categorical(logits=t.log())
            else:
                d = dist.Categorical(probs=t)
            values.append(pyro.sample(site.name, d))
        if coupling is not None:
            a, b = spec.coupling
            pyro.factor("coupling", Vindex(coupling)[values[a], values[b]])

    return Structure(model, list(spec.tokens), vocab=spec.vocab, name="random_network")


def networks():
    """A hypothesis strategy of NetSpecs: 2-5 tokens, 0-2 latents, vocab 2-3, at most 729 full
    assignments."""
    @st.composite
    def strategy(draw):
        vocab = draw(st.integers(2, 3))
        n_tok = draw(st.integers(2, 5 if vocab == 2 else 4))
        n_lat = draw(st.integers(0, 2))
        kinds = draw(st.permutations(["token"] * n_tok + ["latent"] * n_lat))
        sites = []
        counts = {"token": 0, "latent": 0}
        for j, kind in enumerate(kinds):
            name = f"{'x' if kind == 'token' else 'z'}{counts[kind]}"
            counts[kind] += 1
            card = vocab if kind == "token" else draw(st.integers(2, 3))
            parents = () if j == 0 else tuple(
                draw(st.lists(st.integers(0, j - 1), max_size=min(2, j), unique=True)))
            sites.append(SiteSpec(name, card, parents))
        tokens = draw(st.permutations([s.name for s in sites if s.name.startswith("x")]))
        coupling = None
        if draw(st.booleans()):
            a, b = draw(st.lists(st.integers(0, len(sites) - 1), min_size=2, max_size=2,
                                 unique=True))
            coupling = (a, b)
        return NetSpec(tuple(sites), tuple(tokens), vocab, draw(st.integers(0, 2**31 - 1)),
                       draw(st.booleans()), draw(st.booleans()), coupling)

    return strategy()


def chi_square_p(tokens: torch.Tensor, q: torch.Tensor, vocab: int) -> tuple[float, float, int]:
    """Goodness of fit of sampled sequences ``tokens [N, n]`` to the law ``q`` (flat ``[V^n]``,
    probabilities, codes most significant position first): ``(p-value, statistic, df)``, cells
    with expected count < 5 pooled into one. Also asserts that no sample falls outside the
    support of ``q``."""
    from scipy.stats import chi2

    n = tokens.shape[1]
    num = tokens.shape[0]
    codes = (tokens.cpu() * vocab ** torch.arange(n - 1, -1, -1)).sum(-1)
    observed = torch.bincount(codes, minlength=vocab ** n).double()
    expected = q.cpu().double() * num
    assert observed[expected == 0].sum() == 0, "a sample outside the support of q"
    big = expected >= 5
    obs = torch.cat([observed[big], observed[~big].sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    keep = exp > 0
    stat = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
    df = max(int(keep.sum()) - 1, 1)
    return float(chi2.sf(stat, df)), stat, df


def assert_runs_follow(decoder, denoiser, q: torch.Tensor, num: int, level: float = 1e-4):
    """``num`` batched runs of ``decoder`` (seed 0) fit its exact law ``q`` (flat ``[V^n]``,
    probabilities): chi-square, cells with expected count < 5 pooled, rejected at ``level``;
    no run outside the support."""
    run = decoder.run(denoiser, num, seed=0)
    p, stat, df = chi_square_p(run.tokens, q, denoiser.vocab)
    assert p > level, (stat, df)
