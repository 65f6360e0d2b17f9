"""Pyro model --(traced once, every discrete site enumerated in parallel)--> FactorGraph.

The model is run once under ``poutine.enum``; each sample site's log-prob tensor is packed
with Pyro's unique per-variable symbols (``Trace.pack_tensors``), which stay unique even when
``pyro.markov`` recycles tensor dims. Each packed tensor becomes a log-factor over named
variables; evidence (visible tokens) is not part of the graph and enters at query time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import config_enumerate

from mdmprob.errors import StructureError


@dataclass(frozen=True)
class Factor:
    """A log-factor: ``table[i_1, ..., i_k] = log phi(v_1 = i_1, ..., v_k = i_k)``."""

    variables: tuple[int, ...]  # indices into FactorGraph.names
    table: torch.Tensor  # shape [card(v_1), ..., card(v_k)], float64, CPU
    site: str


@dataclass
class FactorGraph:
    """Discrete variables with cardinalities and log-factors over them.

    Variables ``0 .. n_tokens-1`` are the tokens in sequence order; the rest are latents.
    ``log p(x, z) = sum_f table_f[...]`` and sums to one over all variables.
    """

    names: list[str]
    cards: list[int]
    n_tokens: int
    factors: list[Factor] = field(default_factory=list)

    @property
    def n_variables(self) -> int:
        return len(self.names)

    @property
    def latent_names(self) -> list[str]:
        return self.names[self.n_tokens :]


def compile_model(model: Callable[[], object], tokens: Sequence[str], vocab: int) -> FactorGraph:
    """Trace ``model()`` once with every discrete site enumerated and return its factor graph.

    ``tokens`` are the names of the token sample sites in sequence order; each must be an
    unobserved discrete site whose support is ``0 .. vocab-1``.
    """
    tokens = list(tokens)
    if len(set(tokens)) != len(tokens):
        dup = sorted({t for t in tokens if tokens.count(t) > 1})
        raise StructureError(f"token sites are listed more than once: {dup}")
    trace = _enumerated_trace(model)
    sites = {n: s for n, s in trace.nodes.items() if s["type"] == "sample"}
    missing = [t for t in tokens if t not in sites]
    if missing:
        raise StructureError(
            f"token site(s) {missing} are not sample sites of the model; "
            f"its sample sites are {list(sites)}"
        )
    symbol_of: dict[str, str] = {}
    token_set = set(tokens)
    for name, site in sites.items():
        _check_site(name, site, is_token=name in token_set, vocab=vocab)
        if not site["is_observed"]:
            symbol_of[name] = site["infer"]["_enumerate_symbol"]

    latents = [n for n in symbol_of if n not in token_set]
    names = tokens + latents
    index_of_symbol = {symbol_of[n]: i for i, n in enumerate(names)}
    cards = [int(sites[n]["fn"].enumerate_support(expand=False).shape[0]) for n in names]
    graph = FactorGraph(names=names, cards=cards, n_tokens=len(tokens))
    for name, site in sites.items():
        packed = site["packed"]["log_prob"]
        table = packed.detach().to(torch.float64, copy=True)
        if table.isnan().any() or (table == float("inf")).any():
            raise StructureError(f"site {name!r} has a NaN or +inf log-probability")
        if table.dim() == 0 or not (table != 0).any():
            continue  # a constant zero factor (e.g. pyro.deterministic) carries nothing
        variables = tuple(index_of_symbol[s] for s in packed._pyro_dims)
        graph.factors.append(Factor(variables, table.contiguous(), name))
    return graph


def _enumerated_trace(model: Callable[[], object]):
    enumerated = poutine.enum(config_enumerate(model, default="parallel"), first_available_dim=-1)
    try:
        with pyro.validation_enabled(False), torch.no_grad():
            trace = poutine.trace(enumerated).get_trace()
            _reject_plates(trace)
            trace.compute_log_prob()
            trace.pack_tensors()
    except StructureError:
        raise
    except Exception as e:  # Pyro's own messages, re-raised with what to do about them
        raise StructureError(
            f"the model could not be traced under parallel enumeration ({type(e).__name__}: {e}). "
            "Tokens and latents must be discrete sample sites; use pyro.markov for chains, "
            "Vindex or torch.where instead of Python branches on sampled values."
        ) from e
    return trace


def _reject_plates(trace) -> None:
    plates = sorted(
        {f.name for s in trace.nodes.values() if s["type"] == "sample"
         for f in s["cond_indep_stack"] if f.vectorized}
    )
    if plates:
        raise StructureError(
            f"the model uses vectorized pyro.plate {plates}; mdmprob compiles scalar sites only: "
            "write each token and latent as its own site (a Python loop, pyro.markov for chains)"
        )


def _check_site(name: str, site: dict, *, is_token: bool, vocab: int) -> None:
    fn = site["fn"]
    if is_token and site["is_observed"]:
        raise StructureError(f"token site {name!r} is observed in the model; tokens must be free")
    if site["is_observed"]:
        return
    if site["infer"].get("_enumerate_symbol") is None:
        raise StructureError(
            f"site {name!r} ({type(fn).__name__}) is not enumerable: mdmprob needs discrete, "
            "finitely supported sites (Categorical, Bernoulli, ...); continuous latents are "
            "not supported"
        )
    if is_token:
        support = fn.enumerate_support(expand=False).reshape(-1)
        expected = torch.arange(vocab, dtype=support.dtype)
        if support.numel() != vocab or not torch.equal(support, expected):
            raise StructureError(
                f"token site {name!r} has support {support.tolist()[:8]}... but vocab={vocab}: "
                f"a token's support must be 0..{vocab - 1} (use Categorical with {vocab} classes)"
            )
