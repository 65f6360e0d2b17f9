"""mdmprob: exact probabilistic analysis of generation order and parallel decoding in masked
diffusion models.

    >>> import mdmprob
    >>> s = mdmprob.load_model("parity_block", k=4, eta=0.01)
    >>> engine = s.engine()                      # exact engine on the compiled factor graph
    >>> round(mdmprob.block_report(s)["blocks"][0]["forward_tc"], 4)   # ln 2 - h(0.01)
    0.6371

The names below load on first use, so ``import mdmprob`` (and the ``mdmprob`` command's
listings) do not import torch and Pyro until something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "block_report": "mdmprob.blockwise", "sample_mean_field": "mdmprob.blockwise",
    "Factor": "mdmprob.compile", "FactorGraph": "mdmprob.compile",
    "compile_model": "mdmprob.compile",
    "BudgetError": "mdmprob.errors", "EvidenceError": "mdmprob.errors",
    "MdmprobError": "mdmprob.errors", "StructureError": "mdmprob.errors",
    "UnknownNameError": "mdmprob.errors",
    "ExactEngine": "mdmprob.exact",
    "elimination_order": "mdmprob.graph", "interaction_graph": "mdmprob.graph",
    "Structure": "mdmprob.structure", "list_models": "mdmprob.structure",
    "load_model": "mdmprob.structure", "model_parameters": "mdmprob.structure",
}

__all__ = [
    "BudgetError", "EvidenceError", "ExactEngine", "Factor", "FactorGraph", "MdmprobError",
    "Structure", "StructureError", "UnknownNameError", "block_report", "compile_model",
    "elimination_order", "interaction_graph", "list_models", "load_model", "model_parameters",
    "sample_mean_field",
]

if TYPE_CHECKING:
    from mdmprob.blockwise import block_report, sample_mean_field
    from mdmprob.compile import Factor, FactorGraph, compile_model
    from mdmprob.errors import (
        BudgetError,
        EvidenceError,
        MdmprobError,
        StructureError,
        UnknownNameError,
    )
    from mdmprob.exact import ExactEngine
    from mdmprob.graph import elimination_order, interaction_graph
    from mdmprob.structure import Structure, list_models, load_model, model_parameters


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mdmprob' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
