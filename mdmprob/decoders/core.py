"""A step decoder = window policy x position score x commit rule x value law (x an optional
block corrector), answering the decoder protocol through the three drivers.

``Decoder.run`` decodes a batch of sequences and returns the tokens, the exact log-probability of
each run's trajectory, NFE and the committed positions per step; ``Decoder.log_prob`` replays;
``Decoder.distribution`` enumerates the decoder-induced distribution q over all V^n sequences
exactly (small spaces), including adaptive and random orders, random tie-breaks, stochastic
schedules and sample-then-choose rules. All three read the one step definition of
:mod:`mdmprob.decoders.step`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mdmprob.decoders import drivers
from mdmprob.decoders.primitives import CommitRule, EvenSplit, Score, ValueLaw
from mdmprob.decoders.protocol import (
    DecoderBase,
    DecodeResult,
    all_values,
    check_complete,
    check_num,
    check_table_size,
    check_window,
    initial_tokens,
    make_generator,
    windows_of,
)
from mdmprob.decoders.step import TIES
from mdmprob.denoisers.base import Denoiser
from mdmprob.errors import MdmprobError, unknown_name

WEIGHT_ROWS = 2 ** 13  # forced replays run in one batch by log_weights

NFE_ACCOUNTING = {
    "steps": "one denoiser call per step that commits something",
    "reference": "LLaDA's generate: every one of a block's steps calls the model, even when it "
                 "commits nothing",
}


@dataclass(repr=False)
class Decoder(DecoderBase):
    """Window policy x position score x commit rule x value law, with an optional corrector.

    Args:
        score: which candidates first (see :mod:`mdmprob.decoders.primitives`).
        commit: how many per step.
        window: ``"blocks"`` (the structure's decoding blocks, in order), ``"all"`` (the whole
            sequence), or an int (contiguous semi-AR blocks of that length).
        temperature: values are drawn from softmax(log p_theta / T); T = 0 is argmax.
        corrector: a block-level corrector (rejection, speculative, exact block) that replaces
            the step loop inside each window.
        top_k: keep the values at least as probable as the k-th (:class:`ValueLaw`).
        top_p: keep the nucleus of mass p (:class:`ValueLaw`).
        nucleus: ``"standard"`` or ``"drop_crossing"`` (:class:`ValueLaw`).
        ties: ``"random"`` (a uniform choice among equal keys) or ``"lowest_position"``.
        nfe: ``"steps"`` or ``"reference"`` (see :data:`NFE_ACCOUNTING`; needs an even split).
    """

    name: str
    score: Score
    commit: CommitRule
    window: str | int = "blocks"
    temperature: float = 1.0
    corrector: Any = None
    top_k: int | None = None
    top_p: float | None = None
    nucleus: str = "standard"
    ties: str = "random"
    nfe: str = "steps"

    def __post_init__(self):
        self.values  # validates temperature, top_k, top_p, nucleus  # noqa: B018
        check_window(self.window)
        if self.ties not in TIES:
            raise unknown_name("ties", str(self.ties), TIES)
        if self.nfe not in NFE_ACCOUNTING:
            raise unknown_name("nfe accounting", str(self.nfe), NFE_ACCOUNTING)
        if self.nfe == "reference" and not isinstance(self.commit, EvenSplit):
            raise MdmprobError(f"nfe='reference' counts a fixed number of steps per window; the "
                               f"commit rule {self.commit.name} has none (use nfe='steps')")

    @property
    def values(self) -> ValueLaw:
        """The law of a drawn value (temperature, top-k, top-p); built once per setting (it is
        read several times per step)."""
        key = (self.temperature, self.top_k, self.top_p, self.nucleus)
        held = getattr(self, "_values", None)
        if held is None or held[0] != key:
            held = self._values = (key, ValueLaw(*key))
        return held[1]

    @property
    def log_q_is_marginal(self) -> bool:
        """True when a run's trajectory is determined by its output up to tie-breaks (which runs
        and replays sum over), so log q(traj) = log q(x)."""
        if self.corrector is not None:
            return self.corrector.log_q_is_marginal
        return not (self.score.random or self.commit.stochastic or
                    (self.score.uses_draws and not self.values.deterministic))

    def windows(self, denoiser: Denoiser, blocks=None) -> list[list[int]]:
        """The decoding windows in order (see :func:`~mdmprob.decoders.protocol.windows_of`)."""
        return windows_of(self.window, denoiser, blocks)

    # ------------------------------------------------------------------------------- protocol
    def run(self, denoiser: Denoiser, num: int = 1, *, seed: int | None = 0,
            generator: torch.Generator | None = None, initial=None, blocks=None,
            oracle: Denoiser | None = None, target=None) -> DecodeResult:
        """Decode ``num`` sequences (B = ``num``) in one batch: a :class:`DecodeResult` with
        ``tokens`` LongTensor ``[B, n]``, ``log_q`` ``[B]`` and ``nfe`` ``[B]``. ``seed``
        (default 0; an ``int`` >= 0 repeats, ``None`` draws fresh randomness from the operating
        system) or an explicit ``generator`` on the denoiser's device fixes every random choice;
        ``initial`` LongTensor ``[n]`` or ``[B, n]`` (the mask id where to decode) is a prompt;
        ``oracle`` supplies exact conditionals for oracle scores; ``target`` (a Structure) is
        what correctors verify against."""
        check_num(num, denoiser)
        generator = make_generator(denoiser, seed, generator)
        return drivers.run(self, denoiser, num, generator, self.windows(denoiser, blocks),
                           initial=initial, oracle=oracle, target=target)

    def log_prob(self, denoiser: Denoiser, tokens: torch.Tensor, *, committed=None,
                 initial=None, blocks=None, oracle: Denoiser | None = None,
                 target=None) -> torch.Tensor:
        """``tokens`` LongTensor ``[B, n]`` (complete sequences); returns ``[B]`` log-probabilities
        log q(x), exactly (values forced to ``x``, tie-breaks summed over; valid when
        ``log_q_is_marginal``). With ``committed`` (a run's per-step selections, BoolTensor
        ``[B, n]`` each) the log-probability of that trajectory instead, for every decoder."""
        tokens = check_complete(denoiser, tokens, initial)
        windows = self.windows(denoiser, blocks)
        if committed is not None:
            return drivers.replay(self, denoiser, tokens, committed, windows, initial=initial,
                                  oracle=oracle, target=target)
        if not self.log_q_is_marginal:
            raise MdmprobError(
                f"{self.name}: log q(x) is a sum over trajectories (random or sample-then-choose "
                "choices); pass committed= (a run's trajectory) or use exact mode "
                "(Decoder.distribution) on small spaces")
        start = initial_tokens(denoiser, initial, tokens.shape[0])
        if self.corrector is not None:
            return drivers.replay(self, denoiser, tokens, [None] * len(windows), windows,
                                  initial=start, oracle=oracle, target=target)
        return drivers.marginal_log_prob(self, denoiser, tokens, start, windows, oracle=oracle,
                                         target=target)

    def log_weights(self, denoiser: Denoiser, tokens: torch.Tensor, *, draws: int, generator,
                    committed=None, diagnostics=None, initial=None, blocks=None,
                    oracle: Denoiser | None = None, target=None):
        """Importance weights log q(x, tau) - log r(tau | x) (:class:`~mdmprob.bounds.LogWeights`)
        with r the decoder replayed with its values forced to x
        (:func:`~mdmprob.decoders.drivers.forced`): ``draws`` proposed trajectories per row of
        ``tokens [B, n]``, and the run's own trajectory when ``committed`` is given."""
        from mdmprob.bounds import LogWeights, check_draws

        check_draws(draws)
        tokens = check_complete(denoiser, tokens, initial)
        windows = self.windows(denoiser, blocks)
        B = tokens.shape[0]
        start = initial_tokens(denoiser, initial, B)
        proposed = []
        for part in torch.arange(B, device=tokens.device).split(max(1, WEIGHT_ROWS // draws)):
            rows = part.repeat_interleave(draws)
            lq, lr = drivers.forced(self, denoiser, tokens[rows], windows, generator,
                                    initial=start[rows], oracle=oracle, target=target)
            proposed.append((lq - lr).reshape(len(part), draws))
        own = None
        if committed is not None:
            lq, lr = drivers.forced(self, denoiser, tokens, windows, generator,
                                    committed=committed, initial=start, oracle=oracle,
                                    target=target)
            own = lq - lr
        return LogWeights(torch.cat(proposed), own)

    def distribution(self, denoiser: Denoiser, *, initial=None, blocks=None,
                     oracle: Denoiser | None = None, target=None,
                     max_states: int | None = None) -> torch.Tensor:
        """The exact decoder-induced distribution q as a log-table of shape ``[V] * n`` (one axis
        per position; from the prompt ``initial`` LongTensor ``[n]`` if given: q then lives on its
        completions)."""
        n, V = denoiser.n_tokens, denoiser.vocab
        check_table_size(denoiser)
        start = initial_tokens(denoiser, initial, 1)
        table = drivers.enumerate_states(self, denoiser, start, self.windows(denoiser, blocks),
                                         oracle=oracle, target=target, max_states=max_states)
        return table.reshape([V] * n)


__all__ = ["DecodeResult", "Decoder", "NFE_ACCOUNTING", "all_values"]
