"""The exact oracle: p(x_i | x_visible) of the structure, from the exact engine."""

from __future__ import annotations

import torch

from mdmprob.denoisers.base import Denoiser
from mdmprob.structure import Structure


class Oracle(Denoiser):
    """Exact conditionals of ``structure``.

    The oracle carries the engine's messages from call to call
    (:meth:`~mdmprob.exact.ExactEngine.incremental`): a call with a ``window`` recomputes only
    the messages that the tokens changed since the last call and that the window needs, so a
    decoder that commits one window at a time pays for its windows, not for the whole sequence
    at every step; :meth:`~mdmprob.denoisers.base.Denoiser.rows` answers the window's rows
    only (``[B, w, V]``), so nothing of the call is the size of the sequence but one comparison
    of the tokens with the last call's. A call without a window answers every position (one
    stacked two-pass sweep).
    """

    def __init__(self, structure: Structure, device=None, dtype=None):
        self.structure = structure
        self.engine = structure.engine(device=device, dtype=dtype)
        self.vocab, self.n_tokens = structure.vocab, structure.n_tokens
        self.device, self.dtype = self.engine.device, self.engine.dtype
        self._state = None

    def predict(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._conditionals(tokens, None)

    def predict_window(self, tokens: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        return self._conditionals(tokens, window)

    def predict_rows(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if self._state is None:
            self._state = self.engine.incremental()
        need = (tokens[:, positions] == self.mask_id).any(0)  # visible rows: the point mass
        return self._state.update_at(tokens, positions, need)

    def _conditionals(self, tokens, window):
        visible = tokens != self.mask_id
        if self._state is None:
            self._state = self.engine.incremental()
        if window is not None:
            window = window & ~visible  # visible rows are the point mass anyway
        # tokens were checked by Denoiser.check: skip the engine's second check
        return self._state.update(tokens, visible, window)

    def __repr__(self) -> str:
        return f"Oracle({self.structure.name})"
