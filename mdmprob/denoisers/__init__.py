"""Denoisers: the exact oracle, perturbed oracles with named model-error families, tables, a
small trainable transformer (Neural), and Hugging Face masked and diffusion LMs
(HuggingFaceMLM; ``transformers`` is imported only when a checkpoint is loaded)."""

from mdmprob.denoisers.base import Denoiser
from mdmprob.denoisers.huggingface import HuggingFaceMLM
from mdmprob.denoisers.loaders import load_denoiser
from mdmprob.denoisers.neural import Neural
from mdmprob.denoisers.oracle import Oracle
from mdmprob.denoisers.perturbed import FAMILIES, Perturbed
from mdmprob.denoisers.table import Table, all_states
from mdmprob.model_error import ModelError, model_error

__all__ = ["FAMILIES", "Denoiser", "HuggingFaceMLM", "ModelError", "Neural", "Oracle",
           "Perturbed", "Table", "all_states", "load_denoiser", "model_error"]
