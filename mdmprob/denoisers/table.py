"""Tabulated denoisers: arbitrary (possibly mutually inconsistent) conditionals on tiny spaces.

A :class:`Table` stores ``log p_theta(x_i = v | state)`` for every state of ``n`` tokens with the
mask id ``V`` as an extra digit: ``log_probs [(V+1)**n, n, V]`` (nats), row ``code(state) =
sum_j state[j] * (V+1)**j``. Nothing forces the rows to be the conditionals of one joint
distribution, which makes tables the test bed for incoherent denoisers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from mdmprob.checks import check_int
from mdmprob.config import default_device, default_dtype
from mdmprob.denoisers.base import Denoiser, point_mass
from mdmprob.errors import BudgetError, MdmprobError

MAX_STATES = 2**20  # (V+1)**n states at most
_TOLERANCE = 1e-9  # |sum_v p(v) - 1| allowed at masked positions
_CHUNK = 4096  # states per call when snapshotting a denoiser


def n_states(n_tokens: int, vocab: int) -> int:
    """``(V+1)**n``, the number of partially masked states; BudgetError past ``2**20``."""
    check_int("n_tokens", n_tokens, 1)
    check_int("vocab", vocab, 2)
    count = (vocab + 1) ** n_tokens
    if count > MAX_STATES:
        raise BudgetError(
            f"a table over n_tokens={n_tokens}, vocab={vocab} has (V+1)**n = {count:.3g} states, "
            f"over the limit of 2**20 = {MAX_STATES}; tables are for tiny spaces — use fewer "
            "tokens or a smaller vocabulary, or a structured denoiser (Oracle, Perturbed)"
        )
    return count


def all_states(n_tokens: int, vocab: int, device=None) -> torch.Tensor:
    """Every state, ``LongTensor[(V+1)**n, n]`` with entries ``0..V`` (``V`` = mask), in code
    order: row ``c`` has digits ``(c // (V+1)**j) % (V+1)``."""
    count = n_states(n_tokens, vocab)
    device = torch.device(device) if device is not None else default_device()
    codes = torch.arange(count, dtype=torch.long, device=device)
    radix = torch.tensor([(vocab + 1) ** j for j in range(n_tokens)], dtype=torch.long,
                         device=device)
    return (codes[:, None] // radix) % (vocab + 1)


class Table(Denoiser):
    """A denoiser read from a table of conditionals.

    Args:
        log_probs: ``[(V+1)**n, n, V]`` floating tensor of ``log p_theta(x_j = v | state)`` in
            nats, indexed by ``code(state) = sum_j state[j] * (V+1)**j``. Rows of masked
            positions must be normalised (``|sum_v p - 1| <= 1e-9``); rows of visible positions
            are ignored (calls return the point mass there).
        vocab: the vocabulary size V.
        n_tokens: the sequence length n.

    The table lives on ``log_probs``' device and dtype.
    """

    def __init__(self, log_probs: torch.Tensor, vocab: int, n_tokens: int, blocks=None):
        count = n_states(n_tokens, vocab)
        if not isinstance(log_probs, torch.Tensor) or not log_probs.dtype.is_floating_point:
            raise MdmprobError("log_probs must be a floating torch tensor of shape "
                               f"[(V+1)**n, n, V] = [{count}, {n_tokens}, {vocab}]")
        if tuple(log_probs.shape) != (count, n_tokens, vocab):
            raise MdmprobError(f"log_probs has shape {tuple(log_probs.shape)}; a table over "
                               f"n_tokens={n_tokens}, vocab={vocab} needs [(V+1)**n, n, V] = "
                               f"[{count}, {n_tokens}, {vocab}]")
        self.vocab, self.n_tokens = vocab, n_tokens
        self.device, self.dtype = log_probs.device, log_probs.dtype
        masked = all_states(n_tokens, vocab, self.device) == vocab
        if torch.isnan(log_probs[masked]).any():
            raise MdmprobError("log_probs contains NaN at a masked position")
        total = torch.logsumexp(log_probs, -1).exp()
        error = torch.where(masked, (total - 1).abs(), torch.zeros_like(total))
        if (error > _TOLERANCE).any():
            code, pos = (error > _TOLERANCE).nonzero()[0].tolist()
            raise MdmprobError(
                f"the row of masked position {pos} in state code {code} sums to "
                f"{total[code, pos].item():.12g}, not 1 (tolerance {_TOLERANCE:g}); pass "
                "normalised log-probabilities (e.g. log_probs.log_softmax(-1))")
        self.log_probs = log_probs
        self._blocks = None if blocks is None else [list(b) for b in blocks]
        self._radix = torch.tensor([(vocab + 1) ** j for j in range(n_tokens)],
                                   dtype=torch.long, device=self.device)

    @property
    def blocks(self) -> list[list[int]] | None:
        """The decoding blocks given at construction (``from_denoiser`` copies the source's)."""
        return self._blocks

    def code(self, tokens: torch.Tensor) -> torch.Tensor:
        """State codes ``sum_j tokens[:, j] * (V+1)**j``, ``LongTensor[B]``."""
        return (self.check(tokens) * self._radix).sum(-1)

    def predict(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.log_probs[(tokens * self._radix).sum(-1)]

    def states(self) -> torch.Tensor:
        """All states in code order, ``LongTensor[(V+1)**n, n]`` (see :func:`all_states`)."""
        return all_states(self.n_tokens, self.vocab, self.device)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_function(cls, fn: Callable[[tuple], Sequence[Sequence[float]]], n_tokens: int,
                      vocab: int, device=None, dtype=None) -> Table:
        """Tabulate ``fn(state) -> probs [n][V]`` over every state; ``state`` is a tuple with
        ``None`` at masked positions. Rows of visible positions are ignored (stored as the point
        mass). Probabilities, not log-probabilities; masked rows must sum to 1."""
        states = all_states(n_tokens, vocab, device)
        dtype = dtype if dtype is not None else default_dtype()
        rows = []
        for state in states.tolist():
            arg = tuple(None if t == vocab else t for t in state)
            probs = torch.as_tensor(fn(arg), dtype=dtype)
            if tuple(probs.shape) != (n_tokens, vocab):
                raise MdmprobError(f"fn{arg} returned shape {tuple(probs.shape)}; it must return "
                                   f"probabilities of shape [n_tokens, vocab] = [{n_tokens}, "
                                   f"{vocab}]")
            if (probs < 0).any():
                raise MdmprobError(f"fn{arg} returned a negative probability")
            rows.append(probs)
        probs = torch.stack(rows).to(states.device)
        return cls(_fill_visible(probs.log(), states, vocab), vocab, n_tokens)

    @classmethod
    def random(cls, n_tokens: int, vocab: int, seed: int = 0, concentration: float = 1.0,
               device=None, dtype=None) -> Table:
        """Independent ``Dirichlet(concentration)`` rows at every masked position of every state,
        drawn on the CPU from ``torch.Generator().manual_seed(seed)`` (identical on every device),
        then moved to ``device``."""
        count = n_states(n_tokens, vocab)
        if not isinstance(concentration, int | float) or not concentration > 0 or not \
                math.isfinite(concentration):
            raise MdmprobError(f"concentration={concentration!r} must be a finite number > 0")
        dtype = dtype if dtype is not None else default_dtype()
        device = torch.device(device) if device is not None else default_device()
        g = torch.Generator().manual_seed(int(seed))
        alpha = torch.full((count, n_tokens, vocab), float(concentration), dtype=torch.float64)
        gammas = torch._standard_gamma(alpha, generator=g).clamp(min=1e-300)
        log_probs = (gammas / gammas.sum(-1, keepdim=True)).log().to(device, dtype)
        return cls(_fill_visible(log_probs, all_states(n_tokens, vocab, device), vocab),
                   vocab, n_tokens)

    @classmethod
    def from_denoiser(cls, denoiser: Denoiser) -> Table:
        """Snapshot ``denoiser`` on every state (in chunks of 4096 states), on its device."""
        states = all_states(denoiser.n_tokens, denoiser.vocab, denoiser.device)
        with torch.no_grad():
            out = torch.cat([denoiser(chunk) for chunk in states.split(_CHUNK)])
        return cls(out, denoiser.vocab, denoiser.n_tokens, blocks=denoiser.blocks)

    def __repr__(self) -> str:
        return f"Table(n_tokens={self.n_tokens}, vocab={self.vocab})"


def _fill_visible(log_probs: torch.Tensor, states: torch.Tensor, vocab: int) -> torch.Tensor:
    visible = states != vocab
    point = point_mass(states.clamp(max=vocab - 1), vocab, log_probs.dtype)
    return torch.where(visible[..., None], point, log_probs)
