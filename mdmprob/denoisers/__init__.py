"""Denoisers: the exact oracle, perturbed oracles with named model-error families, tables, and a
small trainable transformer (Neural)."""

from mdmprob.denoisers.base import Denoiser
from mdmprob.denoisers.error import ModelError, model_error
from mdmprob.denoisers.neural import Neural
from mdmprob.denoisers.oracle import Oracle
from mdmprob.denoisers.perturbed import FAMILIES, Perturbed
from mdmprob.denoisers.table import Table, all_states

__all__ = ["FAMILIES", "Denoiser", "ModelError", "Neural", "Oracle", "Perturbed", "Table",
           "all_states", "model_error"]
