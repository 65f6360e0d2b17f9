"""Denoisers: the exact oracle, perturbed oracles with named model-error families, tables."""

from mdmprob.denoisers.base import Denoiser
from mdmprob.denoisers.error import ModelError, model_error
from mdmprob.denoisers.oracle import Oracle
from mdmprob.denoisers.perturbed import FAMILIES, Perturbed
from mdmprob.denoisers.table import Table, all_states

__all__ = ["FAMILIES", "Denoiser", "ModelError", "Oracle", "Perturbed", "Table", "all_states",
           "model_error"]
