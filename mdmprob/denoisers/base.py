"""The denoiser protocol: visible tokens in, per-position log-probabilities out.

A denoiser maps ``tokens: LongTensor[B, n]`` — with ``mask_id == vocab`` at masked positions —
to ``log p_theta(x_i = v | x_visible)``, shape ``[B, n, V]``, for every position. Masked rows are
the model's predictions; visible rows are the point mass on the visible token (copy-over).
``leave_one_out(tokens)`` optionally gives ``log p_theta(x_i = v | x_{visible minus i})`` at the
visible positions (verifiers such as P2 or WINO need it).
"""

from __future__ import annotations

import math

import torch

from mdmprob.checks import check_window_mask
from mdmprob.errors import EvidenceError


class Denoiser:
    """Base class: subclasses implement :meth:`predict` on validated tokens."""

    vocab: int
    n_tokens: int
    device: torch.device
    dtype: torch.dtype

    @property
    def mask_id(self) -> int:
        return self.vocab

    @property
    def blocks(self) -> list[list[int]] | None:
        """The decoding blocks of the structure this denoiser is built on (None: no structure);
        decoders with ``window="blocks"`` read them."""
        structure = getattr(self, "structure", None)
        return None if structure is None else [list(b) for b in structure.blocks]

    def __call__(self, tokens: torch.Tensor, window: torch.Tensor | None = None) -> torch.Tensor:
        """``tokens`` LongTensor ``[B, n]`` (the mask id V at masked positions); returns ``[B, n, V]``
        log-probabilities ``log p_theta(x_i | x_visible)``; visible rows are their point mass.

        ``window`` (optional BoolTensor ``[B, n]``) marks the positions whose rows the caller
        needs; the other rows may hold any finite values or the full answer. A denoiser that
        can answer a window for less (the oracle) overrides :meth:`predict_window`."""
        tokens = self.check(tokens)
        if window is None:
            out = self.predict(tokens)
        else:
            out = self.predict_window(tokens, self.check_window(window, tokens))
        visible = tokens != self.mask_id
        point = point_mass(tokens.clamp(max=self.vocab - 1), self.vocab, out.dtype)
        return torch.where(visible[..., None], point, out)

    def rows(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The rows of :meth:`__call__` at ``positions`` only: ``tokens`` LongTensor ``[B, n]``
        and ``positions`` LongTensor ``[w]`` of distinct positions (shared by every sequence);
        returns ``[B, w, V]`` log-probabilities. Visible rows are
        their point mass; the masked rows are what ``self(tokens)[:, positions]`` holds there. A
        decoder working one window at a time asks this, so a denoiser that answers a window for
        less (the oracle, by :meth:`predict_rows`) costs what the window costs. The decoder
        writes its next tokens into the same tensor: a denoiser that keeps its input between
        calls keeps a copy."""
        tokens = self.check(tokens)
        positions = self.check_positions(positions)
        out = self.predict_rows(tokens, positions)
        seen = tokens[:, positions]
        point = point_mass(seen.clamp(max=self.vocab - 1), self.vocab, out.dtype)
        return torch.where((seen != self.mask_id)[..., None], point, out)

    def predict(self, tokens: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """What a denoiser implements: ``tokens`` LongTensor ``[B, n]`` (checked, the mask id V
        at masked positions); returns ``[B, n, V]`` log-probabilities of every row (only the
        masked rows are read; :meth:`__call__` writes the visible ones)."""
        raise NotImplementedError

    def predict_window(self, tokens: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        """:meth:`predict` restricted to ``window``; by default the whole :meth:`predict`."""
        return self.predict(tokens)

    def predict_rows(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """:meth:`predict` at ``positions`` only, ``[B, w, V]``; by default
        :meth:`predict_window` on the window of those positions, then its rows there."""
        window = torch.zeros(tokens.shape, dtype=torch.bool, device=tokens.device)
        window[:, positions] = True
        return self.predict_window(tokens, window)[:, positions]

    def check_positions(self, positions) -> torch.Tensor:
        """Validate ``positions``: a 1-D integer tensor of positions in ``0..n-1``."""
        positions = torch.as_tensor(positions)
        if positions.dim() != 1 or positions.dtype.is_floating_point or \
                positions.dtype == torch.bool:
            raise EvidenceError(f"positions must be a 1-D integer tensor, got {positions.dtype} "
                                f"{tuple(positions.shape)}")
        if len(positions) and (positions.min() < 0 or positions.max() >= self.n_tokens):
            bad = positions[(positions < 0) | (positions >= self.n_tokens)][0].item()
            raise EvidenceError(f"position {bad} is outside 0..{self.n_tokens - 1}")
        return positions.to(self.device, torch.long)

    def check_window(self, window, tokens: torch.Tensor) -> torch.Tensor:
        """Validate a window: a bool tensor of the tokens' shape ``[B, n]``."""
        return check_window_mask(window, tokens)

    def leave_one_out(self, tokens: torch.Tensor) -> torch.Tensor:
        """``log p_theta(x_i | x_{visible \\ i})`` at every visible position (masked rows as in
        ``__call__``: the copy that masks an already masked position is the state itself), by
        one batched call with each position masked in turn."""
        tokens = self.check(tokens)
        batch, n = tokens.shape
        eye = torch.eye(n, dtype=torch.bool, device=tokens.device)
        hidden = torch.where(eye[None], torch.full_like(tokens[:, None, :], self.mask_id),
                             tokens[:, None, :].expand(batch, n, n))
        preds = self(hidden.reshape(batch * n, n)).reshape(batch, n, n, self.vocab)
        return preds.diagonal(dim1=1, dim2=2).movedim(-1, 1)  # [B, n, V]: row i from copy i

    def check(self, tokens) -> torch.Tensor:
        """Validate ``tokens [B, n]`` with values in ``0..V`` (V = mask) and move them."""
        if not isinstance(tokens, torch.Tensor):
            tokens = torch.as_tensor(tokens)
        if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise EvidenceError(f"tokens must be an integer tensor, got dtype {tokens.dtype}")
        if tokens.dim() != 2 or tokens.shape[1] != self.n_tokens:
            raise EvidenceError(f"tokens must have shape [B, {self.n_tokens}], got "
                                f"{tuple(tokens.shape)}")
        low, high = torch.aminmax(tokens) if tokens.numel() else (0, 0)  # one pass
        if low < 0 or high > self.mask_id:
            bad = tokens[(tokens < 0) | (tokens > self.mask_id)][0].item()
            raise EvidenceError(f"token value {bad} is outside 0..{self.vocab - 1} "
                                f"(mask id {self.mask_id})")
        return tokens.to(self.device, torch.long)


def point_mass(tokens: torch.Tensor, vocab: int, dtype) -> torch.Tensor:
    """``log 1[v = tokens]``: ``tokens [...]`` (values in ``0..vocab-1``) -> ``[..., vocab]`` of
    ``0`` and ``-inf`` in ``dtype``."""
    # a comparison, not one_hot: one_hot builds an int64 table first (5x slower on the CPU)
    onehot = tokens[..., None] == torch.arange(vocab, device=tokens.device)
    return torch.zeros(onehot.shape, dtype=dtype, device=tokens.device).masked_fill(~onehot,
                                                                                    -math.inf)
