"""The exact oracle: p(x_i | x_visible) of the structure, from the exact engine."""

from __future__ import annotations

import torch

from mdmprob.denoisers.base import Denoiser
from mdmprob.structure import Structure


class Oracle(Denoiser):
    """Exact conditionals of ``structure`` (one contraction plus its adjoint per call)."""

    def __init__(self, structure: Structure, device=None, dtype=None):
        self.structure = structure
        self.engine = structure.engine(device=device, dtype=dtype)
        self.vocab, self.n_tokens = structure.vocab, structure.n_tokens
        self.device, self.dtype = self.engine.device, self.engine.dtype

    def predict(self, tokens: torch.Tensor) -> torch.Tensor:
        visible = tokens != self.mask_id
        return self.engine.conditionals(torch.where(visible, tokens, 0), visible)

    def __repr__(self) -> str:
        return f"Oracle({self.structure.name})"
