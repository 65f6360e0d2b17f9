"""Structure: a Pyro model plus its token layout (order, vocabulary, decoding blocks, constraint).

A user writes an ordinary Pyro program with one discrete sample site per token and per latent
and declares which sites are the tokens, in sequence order::

    def model():
        x0 = pyro.sample("x0", dist.Categorical(torch.tensor([0.5, 0.5])))
        pyro.sample("x1", dist.Categorical(Vindex(torch.tensor([[0.9, 0.1], [0.1, 0.9]]))[x0]))

    s = Structure(model, tokens=["x0", "x1"], vocab=2, blocks=[[0, 1]])

Models in the zoo (top-level ``models/``) define ``build(**params) -> Structure``; load them
with :func:`load_model`, or load any file with such a ``build`` by its path.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mdmprob.compile import FactorGraph, compile_cached
from mdmprob.errors import MdmprobError, StructureError, unknown_name

Constraint = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Structure:
    """A discrete generative structure over ``n`` tokens with vocabulary ``vocab``.

    Attributes:
        model: a Pyro model taking no arguments.
        tokens: the token sites in sequence order, as declared (a plated site's name stands for
            all its elements; ``"x[3]"`` picks one); after construction, the token variables'
            names, one per position (``["x[0]", "x[1]", ...]``).
        vocab: vocabulary size V; every token takes values ``0 .. V-1``.
        blocks: decoding blocks, a partition of ``0 .. n-1``, decoded in the listed order
            (default: one block of every position).
        constraint: optional predicate ``tokens [B, n] -> satisfied [B, M]`` (one column per
            block; column m may only read positions of blocks ``<= m``) or ``[B]`` (one check
            per sequence). Used for the violation rate.
        name, params, description: how it was built, for reports.
        replay_check: rerun the model on samples of its compiled graph to catch control flow
            on sampled values (default True; costs a few model runs).
    """

    model: Callable[[], Any]
    tokens: Sequence[str]
    vocab: int
    blocks: Sequence[Sequence[int]] | None = None
    constraint: Constraint | None = None
    name: str = "custom"
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    replay_check: bool = True

    def __post_init__(self):
        declared = [self.tokens] if isinstance(self.tokens, str) else list(self.tokens)
        if isinstance(self.vocab, bool) or not isinstance(self.vocab, int) or self.vocab < 2:
            raise StructureError(f"vocab must be an integer >= 2, got {self.vocab!r}")
        if not declared:
            raise StructureError("a structure needs at least one token site")
        # traced once per model: a structure built again (in this process or, through the
        # disk cache, in another) reuses the compiled graph (mdmprob.cache)
        graph = compile_cached(self.model, declared, self.vocab, replay_check=self.replay_check)
        self._factor_graph = graph
        self.tokens = graph.names[: graph.n_tokens]
        n = len(self.tokens)
        blocks = [list(range(n))] if self.blocks is None else [list(map(int, b))
                                                                for b in self.blocks]
        flat = sorted(p for b in blocks for p in b)
        if flat != list(range(n)) or any(len(b) == 0 for b in blocks):
            raise StructureError(
                f"blocks {blocks} must be non-empty and partition the positions 0..{n - 1}"
            )
        self.blocks = blocks
        self._engines: dict = {}

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def factor_graph(self) -> FactorGraph:
        """The compiled factor graph (traced once, when the structure is created)."""
        return self._factor_graph

    def engine(self, device=None, dtype=None, budget: int | None = None):
        """The exact engine for this structure on ``device``/``dtype`` (cached)."""
        from mdmprob.checks import check_device, check_dtype
        from mdmprob.exact import DEFAULT_BUDGET, ExactEngine

        key = (check_device(device), check_dtype(dtype),
               int(DEFAULT_BUDGET if budget is None else budget))
        if key not in self._engines:  # build only on a miss: compiling a plan is not free
            self._engines[key] = ExactEngine(self.factor_graph, *key)
        return self._engines[key]

    def violations(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """Where the constraint is violated: bool ``[B, M]`` (per block) or ``[B]``; None if the
        structure declares no constraint."""
        if self.constraint is None:
            return None
        out = torch.as_tensor(self.constraint(tokens))
        ok_shapes = {(tokens.shape[0],), (tokens.shape[0], len(self.blocks))}
        if tuple(out.shape) not in ok_shapes:
            raise StructureError(
                f"the constraint of {self.name!r} returned shape {tuple(out.shape)}; it must "
                f"return [B] or [B, n_blocks] = {sorted(ok_shapes)}"
            )
        return ~out.bool()

    def __repr__(self) -> str:
        return (f"Structure({self.name!r}, n_tokens={self.n_tokens}, vocab={self.vocab}, "
                f"blocks={len(self.blocks)}, params={self.params})")


# ---------------------------------------------------------------------- the zoo
def list_models() -> dict[str, str]:
    """Names of the zoo's models and the first line of their description."""
    import mdmprob.models as zoo

    out = {}
    for info in pkgutil.iter_modules(zoo.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"mdmprob.models.{info.name}")
        if hasattr(module, "build"):
            out[info.name] = (module.__doc__ or "").strip().splitlines()[0]
    return out


def model_parameters(name_or_path: str) -> dict[str, Any]:
    """Parameters of a zoo model or model file, with their defaults."""
    build = _builder(name_or_path)
    return {p.name: p.default for p in inspect.signature(build).parameters.values()}


def load_model(name_or_path: str, **params: Any) -> Structure:
    """A Structure from the zoo by name (``"block_hmm"``) or from a Python file by path.

    The module must define ``build(**params) -> Structure``; ``params`` override its defaults.
    Unknown parameters raise :class:`~mdmprob.errors.UnknownNameError` naming the known ones.
    """
    build = _builder(name_or_path)
    known = inspect.signature(build).parameters
    for key in params:
        if key not in known:
            raise unknown_name("parameter", key, known,
                               hint=f"(model {Path(str(name_or_path)).stem!r})")
    try:
        structure = build(**params)
    except MdmprobError:
        raise
    except (TypeError, ValueError) as e:
        raise StructureError(f"model {name_or_path!r} rejected parameters {params}: {e}") from e
    if not isinstance(structure, Structure):
        raise StructureError(f"build() of {name_or_path!r} returned {type(structure).__name__}, "
                             "not a Structure")
    defaults = {k: p.default for k, p in known.items()}
    structure.params = {**defaults, **params, **structure.params}
    return structure


def _builder(name_or_path: str) -> Callable[..., Structure]:
    name_or_path = str(name_or_path)
    path = Path(name_or_path)
    if path.suffix == ".py" or path.exists():
        if not path.is_file():
            raise StructureError(f"model file {name_or_path!r} does not exist")
        spec = importlib.util.spec_from_file_location(f"mdmprob_user_model_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        known = list_models()
        if name_or_path not in known:
            raise unknown_name("model", name_or_path, known,
                               hint="Pass a path to a .py file to load your own model.")
        module = importlib.import_module(f"mdmprob.models.{name_or_path}")
    if not hasattr(module, "build"):
        raise StructureError(f"model module {name_or_path!r} defines no build(**params) function")
    return module.build
