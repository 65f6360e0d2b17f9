"""The decoder protocol: what every decoder answers, and the checks every decoder shares.

A decoder is an inference program over a denoiser. It answers

* ``run(denoiser, num, *, seed | generator, initial=None, blocks=None, ...)`` -> :class:`DecodeResult`
  (tokens, the exact log-probability of each run, NFE); ``seed=0`` by default (runs repeat), an
  ``int`` >= 0 for another reproducible run, ``None`` for fresh randomness from the operating
  system (as torch and numpy), or an explicit ``generator`` on the denoiser's device;
* ``log_prob(denoiser, tokens, *, committed=None, initial=None, blocks=None, ...)`` -> ``[B]``
  (log q(x) by replay, or a recorded trajectory's log-probability);
* ``distribution(denoiser, *, initial=None, blocks=None, ...)`` -> the exact log q as a table
  ``[V] * n`` (small spaces);
* ``log_q_is_marginal``: whether a run's log-probability is log q(x) (the trajectory is a function
  of the output) or a trajectory density.

Step decoders (:class:`~mdmprob.decoders.core.Decoder`) build it from one step distribution and
three drivers; remasking, ReMDM and importance resampling implement it directly.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mdmprob import checks
from mdmprob.checks import check_budget, check_int, mc_bytes_per_sample
from mdmprob.deprecation import renamed
from mdmprob.errors import EnumerationError, MdmprobError


class Commits(Sequence):
    """A run's committed positions: a sequence with one BoolTensor ``[B, n]`` per step (the
    positions committed then), each built when read. A step is stored as its window's columns
    and its selection over them, so a record costs what the windows cost, not steps x n (a
    4096-step decode of 4096 tokens x 64 sequences would otherwise hold 1 GiB of booleans).

    Args:
        batch: B, the rows of a step's tensor ``[B, n]``.
        n: the positions of a step's tensor.
        device: where the tensors live.
    """

    def __init__(self, batch: int, n: int, device):
        self.shape, self.device = (int(batch), int(n)), device
        self._steps: list[tuple[torch.Tensor | None, torch.Tensor]] = []

    def add(self, selected: torch.Tensor, columns: torch.Tensor | None = None) -> None:
        """Record a step: ``selected`` bool ``[B, w]`` at ``columns`` (LongTensor ``[w]``), or
        bool ``[B, n]`` with ``columns=None``."""
        self._steps.append((columns, selected))

    def __len__(self) -> int:
        return len(self._steps)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        columns, selected = self._steps[i]
        if columns is None:
            return selected
        out = torch.zeros(self.shape, dtype=torch.bool, device=self.device)
        return out.index_copy_(1, columns, selected)

    def __repr__(self) -> str:
        return f"Commits({len(self)} steps of {list(self.shape)})"


@dataclass
class DecodeResult:
    """What a batched decoder run returns (B sequences of n tokens over V values).

    Fields: ``tokens`` LongTensor ``[B, n]`` (complete sequences); ``log_q`` float ``[B]``, the
    exact log-probability of each run's trajectory (the decoder's random choices), equal to
    ``log q(tokens)`` when ``log_q_is_marginal`` (the trajectory is a function of the output),
    otherwise a trajectory density; ``nfe`` LongTensor ``[B]``, denoiser calls per sequence;
    ``committed`` a sequence with one BoolTensor ``[B, n]`` per step (the positions committed
    then: a list, the step decoders' compact :class:`Commits`, or the remasking decoders'
    :class:`~mdmprob.decoders.remask.Trajectory`); ``diagnostics`` named
    run diagnostics (``[B]`` tensors, or lists of them per window); ``log_q_tokens`` float
    ``[B, n]``, each position's share of ``log_q`` (sums to it over n).
    """

    tokens: torch.Tensor  # long [B, n]
    log_q: torch.Tensor  # [B]
    nfe: torch.Tensor  # long [B]: denoiser calls per sequence
    committed: Sequence[torch.Tensor]  # per step: bool [B, n] positions committed at that step
    log_q_is_marginal: bool
    #: run diagnostics by name (proposals, acceptance, ESS, remasked, ...): per window a ``[B]``
    #: tensor in a list, or one ``[B]`` tensor
    diagnostics: dict[str, Any] = field(default_factory=dict)
    log_q_tokens: torch.Tensor | None = None  # [B, n]: each token's share of log_q (sums to it)

    @property
    def steps(self) -> int:
        return len(self.committed)

    @property
    def corrector(self) -> dict[str, Any]:
        """Former name of :attr:`diagnostics` (warns)."""
        return renamed(self, "corrector", "diagnostics")


class DecoderBase:
    """The protocol (see the module docstring); subclasses implement the four members."""

    name: str

    @property
    def log_q_is_marginal(self) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, denoiser, num: int = 1, *, seed: int | None = 0, generator=None,
            initial=None, blocks=None, oracle=None, target=None) -> DecodeResult:
        """Decode ``num`` sequences (B = ``num``) in one batch: a :class:`DecodeResult` with
        ``tokens`` LongTensor ``[B, n]`` and ``log_q`` ``[B]``. ``initial`` LongTensor ``[n]``,
        ``[1, n]`` or ``[B, n]`` (the mask id where the decoder writes) is a prompt; ``seed``
        (default 0; ``None``: fresh randomness) or ``generator`` fixes the random choices."""
        raise NotImplementedError  # pragma: no cover - abstract

    def log_prob(self, denoiser, tokens, *, committed=None, initial=None, blocks=None,
                 oracle=None, target=None) -> torch.Tensor:
        """``tokens`` LongTensor ``[B, n]`` (complete); returns ``[B]`` log-probabilities: log
        q(x), or with ``committed`` (a run's per-step BoolTensors ``[B, n]``) the log-probability
        of that trajectory."""
        raise NotImplementedError  # pragma: no cover - abstract

    def distribution(self, denoiser, *, initial=None, blocks=None, oracle=None, target=None,
                     max_states: int | None = None) -> torch.Tensor:
        """The exact law q as log-probabilities of shape ``[V] * n`` (one axis per position;
        from the prompt ``initial`` LongTensor ``[n]``, q lives on its completions)."""
        raise NotImplementedError  # pragma: no cover - abstract

    #: whether a run's ``log_q`` is a joint log q(x, tau) of the output and the trajectory (so
    #: q(x) >= exp(log_q)); False where it is another density (importance resampling).
    log_q_is_joint: bool = True

    def log_weights(self, denoiser, tokens, *, draws: int, generator, committed=None,
                    diagnostics=None, initial=None, blocks=None, oracle=None, target=None):
        """Importance weights of trajectories ending in complete ``tokens [B, n]``, a
        :class:`~mdmprob.bounds.LogWeights`: ``draws`` trajectories per sequence from the
        decoder's proposal r(tau | x), and (with ``committed`` and ``diagnostics``, a run's record)
        the run's own trajectory. Decoders without a proposal raise NotImplementedError;
        :mod:`mdmprob.bounds` then falls back to the trajectory / cross-entropy bounds."""
        raise NotImplementedError(f"{self.name} has no trajectory proposal")

    def __repr__(self) -> str:
        return self.name


# ----------------------------------------------------------------------------------- shared checks
WINDOWS = ("blocks", "all")


def check_window(window) -> None:
    """A window policy is ``"blocks"``, ``"all"`` or a block length >= 1."""
    if isinstance(window, str):
        if window not in WINDOWS:
            raise MdmprobError(f"window={window!r} must be 'blocks', 'all' or an int block "
                               "length")
        return
    check_int("window", window, 1)


def windows_of(window, denoiser, blocks=None) -> list[list[int]]:
    """The decoding windows, in order: ``"all"`` (one window), an int (contiguous semi-AR blocks of
    that length) or ``"blocks"``: ``blocks`` if given, else the denoiser's own (``denoiser.blocks``,
    from the structure it is built on). A ``"blocks"`` window with neither raises: decoding the
    whole sequence as one window instead would be another decoder."""
    n = denoiser.n_tokens
    if window == "all":
        return [list(range(n))]
    if isinstance(window, int):
        return [list(range(s, min(s + window, n))) for s in range(0, n, window)]
    if blocks is None:
        blocks = getattr(denoiser, "blocks", None)
    if blocks is None:
        raise MdmprobError(
            f"window='blocks' needs the structure's decoding blocks, but the denoiser {denoiser!r} "
            "is not built on a structure; pass blocks=structure.blocks, or build the decoder with "
            "block_length=... (contiguous blocks) or window='all'")
    blocks = [list(b) for b in blocks]
    flat = sorted(p for b in blocks for p in b)
    if flat != list(range(n)):
        raise MdmprobError(f"blocks {blocks} do not partition the denoiser's {n} positions")
    return blocks


def make_generator(denoiser, seed: int | None, generator) -> torch.Generator:
    """``generator`` if given, else :func:`mdmprob.checks.generator` ``(seed)`` on the denoiser's
    device (``seed=None``: fresh, non-reproducible randomness)."""
    if generator is not None:
        return generator
    return checks.generator(seed, denoiser.device)


def check_num(num, denoiser=None) -> None:
    """``num`` sequences is an integer >= 1 whose working memory (about 32 float copies of
    ``[num, n, V]`` for ``denoiser``'s sizes) fits the memory budget: a BudgetError up front, not
    an allocator error mid-run."""
    check_int("num", num, 1)
    if denoiser is not None:

        check_budget(f"decoding num={num} sequences", num,
                     mc_bytes_per_sample(denoiser.n_tokens, denoiser.vocab),
                     "decode fewer sequences per call (several calls with different seeds), or "
                     "raise MDMPROB_MEMORY_BUDGET")


EXACT_TABLE = 2 ** 20  # sequences an exact output table may have


def check_table_size(denoiser) -> None:
    """Refuse (EnumerationError, so that evaluate falls back to Monte Carlo) an exact output
    table over all V^n sequences larger than :data:`EXACT_TABLE`."""
    n, V = denoiser.n_tokens, denoiser.vocab
    if V ** n > EXACT_TABLE:
        raise EnumerationError(f"exact mode enumerates all V^n = {V}^{n} sequences, over the "
                               "budget of 2^20; use Monte Carlo mode (evaluate(..., mode='mc'))")


def initial_tokens(denoiser, initial, num: int) -> torch.Tensor:
    """The start state ``[num, n]``: all masks, or ``initial`` (``[n]``, ``[1, n]`` or
    ``[num, n]``; the mask id ``denoiser.mask_id`` where the decoder writes, prompt tokens
    elsewhere)."""
    n = denoiser.n_tokens
    if initial is None:
        return torch.full((num, n), denoiser.mask_id, dtype=torch.long, device=denoiser.device)
    initial = torch.as_tensor(initial)
    shape = tuple(initial.shape)
    if initial.dim() == 1:
        initial = initial[None]
    if initial.dim() != 2 or initial.shape[-1] != n or initial.shape[0] not in (1, num):
        raise MdmprobError(
            f"initial has shape {shape}; it must be [n], [1, n] or [num, n] with "
            f"n = {n}, num = {num} (mask id {denoiser.mask_id} where the decoder decodes)")
    initial = denoiser.check(initial)
    return initial.expand(num, n).clone()


def check_complete(denoiser, tokens, initial=None) -> torch.Tensor:
    """Validate complete sequences ``tokens [B, n]`` (no mask id), consistent with ``initial``."""
    tokens = denoiser.check(tokens)
    if (tokens == denoiser.mask_id).any():
        raise MdmprobError("log_prob needs complete sequences (no mask ids)")
    if initial is not None:
        start = initial_tokens(denoiser, initial, tokens.shape[0])
        clash = (start != denoiser.mask_id) & (start != tokens)
        if clash.any():
            row = int(clash.any(-1).nonzero()[0, 0])
            raise MdmprobError(
                f"tokens row {row} differs from the prompt (initial) at positions "
                f"{clash[row].nonzero().squeeze(-1).tolist()}; a decoder never rewrites visible "
                "prompt tokens")
    return tokens


def all_values(k: int, V: int, device) -> torch.Tensor:
    """Every assignment of k positions, ``[V^k, k]`` (row-major codes)."""
    return torch.tensor(list(itertools.product(range(V), repeat=k)), dtype=torch.long,
                        device=device).reshape(V ** k, k)


__all__ = ["Commits", "DecodeResult", "DecoderBase", "all_values", "check_complete", "check_num",
           "check_window", "initial_tokens", "make_generator", "windows_of"]
