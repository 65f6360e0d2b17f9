"""mdmprob: exact probabilistic analysis of generation order and parallel decoding in masked
diffusion models.

    >>> import mdmprob
    >>> s = mdmprob.load_model("parity_block", k=4, eta=0.01)
    >>> engine = s.engine()                      # exact engine on the compiled factor graph
    >>> round(mdmprob.block_report(s)["blocks"][0]["forward_tc"], 4)   # ln 2 - h(0.01)
    0.6371
"""

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

__version__ = "0.1.0"

__all__ = [
    "BudgetError", "EvidenceError", "ExactEngine", "Factor", "FactorGraph", "MdmprobError",
    "Structure", "StructureError", "UnknownNameError", "block_report", "compile_model",
    "elimination_order", "interaction_graph", "list_models", "load_model", "model_parameters",
    "sample_mean_field",
]
