"""An exact structure dressed as a language model, so third-party sampler code runs against it.

:class:`OracleLM` wraps any :class:`~mdmprob.structure.Structure` (through its exact
:class:`~mdmprob.denoisers.oracle.Oracle`) or any :class:`~mdmprob.denoisers.base.Denoiser` as a
``torch.nn.Module`` with the interface published samplers call (LLaDA's ``generate``, Fast-dLLM,
EB-Sampler ports)::

    out = model(input_ids, attention_mask=None)     # input_ids: LongTensor [B, L]
    out.logits                                      # [B, L, vocab_size], float32 by default

Layout of a row: ``L = len(prefix) + n``: a fixed prefix of model ids (e.g. a BOS token; the
model copies it) followed by the structure's n positions, each a content id ``token_ids[v]`` or
the mask id. At a masked position the logits are

    logit[token_ids[v]] = log p(x_i = v | x_visible) + log(1 - special_mass)
    logit[s]            = log(special_mass / S)          for each of the S special ids
    (every other id: ``min_logit``)

so ``softmax(logits)`` restricted to the content ids is exactly the target's conditional; a
sampler that forgets to suppress the mask token draws it with probability ``special_mass``
(default 0: the specials get ``min_logit``). Visible positions and the prefix get a point mass
on their own id, as a trained masked LM nearly does. ``min_logit = -1e4`` stands for -inf: its
exponential underflows to exactly 0 in float32 and float64, and entropies ``p log p`` stay finite.

Every call is counted: ``calls`` (forward passes) and ``rows`` (rows processed), so
``rows / sequences`` is the number of function evaluations (NFE) per sequence.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from mdmprob.checks import check_number, check_tokens
from mdmprob.errors import EvidenceError, MdmprobError


class SamplerError(MdmprobError):
    """A sampler under audit raised, returned something that is not a token tensor of the right
    shape and range, or ran past its time limit."""


class SamplerTimeout(SamplerError):
    """A sampler under audit ran past its time limit."""


@dataclass
class LMOutput:
    """What :meth:`OracleLM.forward` returns: ``logits [B, L, vocab_size]``; ``out[0]`` also works."""

    logits: torch.Tensor

    def __getitem__(self, i):
        return (self.logits,)[i]


class OracleLM(torch.nn.Module):
    """A structure (or denoiser) exposed as ``model(input_ids).logits``.

    Args:
        target: a Structure (answered exactly by its Oracle) or any Denoiser.
        token_ids: the V model ids of the structure's tokens 0..V-1 (default ``0..V-1``).
        mask_id: the model's mask id (default V, the first id after the content ids).
        special_tokens: other special ids by name, e.g. ``{"eos": 4, "pad": 5}``; never valid
            inside the structure's positions.
        vocab_size: the logits' last dimension (default: the largest id + 1).
        prefix: model ids every row starts with (a prompt prefix such as ``[bos]``).
        special_mass: total probability the masked-position logits give the special ids
            (mask included), in ``[0, 1)``.
        dtype: dtype of the logits (float32 like a real model; float64, bfloat16 also accepted).
        min_logit: the finite value standing for log 0.
        device: where the logits live (default: the denoiser's device).

    Besides the arguments, ``token_of_id`` (LongTensor ``[vocab_size]``) maps each model id to
    the structure's token (content ids to 0..V-1, the mask id to V, any other id to -1) and
    ``special_ids`` (LongTensor) holds the special ids, mask included, sorted.
    """

    def __init__(self, target, *, token_ids: Sequence[int] | None = None,
                 mask_id: int | None = None, special_tokens: Mapping[str, int] | None = None,
                 vocab_size: int | None = None, prefix: Sequence[int] = (),
                 special_mass: float = 0.0, dtype: torch.dtype = torch.float32,
                 min_logit: float = -1e4, device=None):
        super().__init__()
        self.denoiser = _as_denoiser(target, device)
        V, n = self.denoiser.vocab, self.denoiser.n_tokens
        ids = list(range(V)) if token_ids is None else [_nonneg("token_ids", i) for i in token_ids]
        if len(ids) != V:
            raise MdmprobError(f"token_ids has {len(ids)} ids but the structure has V={V} tokens; "
                               "give one model id per token")
        mask = V if mask_id is None else _nonneg("mask_id", mask_id)
        specials = dict(special_tokens or {})
        specials = {"mask": mask, **{k: _nonneg(f"special_tokens[{k!r}]", v)
                                     for k, v in specials.items() if k != "mask"}}
        prefix = [_nonneg("prefix", i) for i in prefix]
        used = ids + list(specials.values())
        if len(set(used)) != len(used):
            raise MdmprobError(f"token_ids {ids} and special ids {specials} must all be distinct")
        size = max(used + prefix) + 1 if vocab_size is None else _nonneg("vocab_size", vocab_size)
        if max(used + prefix) >= size:
            raise MdmprobError(f"id {max(used + prefix)} is outside vocab_size={size}; raise "
                               "vocab_size or use smaller ids")
        check_number("special_mass", special_mass, 0, 1, high_open=True)
        if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            raise MdmprobError(f"dtype={dtype} must be a floating dtype (float32, float64, ...)")
        self.token_ids, self.mask_id, self.special_tokens = ids, mask, specials
        self.prefix, self.vocab_size, self.special_mass = prefix, size, float(special_mass)
        self.logits_dtype, self.min_logit = dtype, float(min_logit)
        self.n_tokens, self.vocab = n, V
        self.seq_len = len(prefix) + n
        self.config = SimpleNamespace(vocab_size=size, mask_token_id=mask,
                                      pad_token_id=specials.get("pad"),
                                      eos_token_id=specials.get("eos"),
                                      bos_token_id=specials.get("bos"),
                                      max_position_embeddings=self.seq_len)
        dev = self.denoiser.device
        table = torch.full((size,), -1, dtype=torch.long, device=dev)
        table[torch.tensor(ids, device=dev)] = torch.arange(V, device=dev)
        table[mask] = V
        self.token_of_id = table
        self._ids = torch.tensor(ids, dtype=torch.long, device=dev)
        self.special_ids = torch.tensor(sorted(specials.values()), dtype=torch.long, device=dev)
        self._prefix = torch.tensor(prefix, dtype=torch.long, device=dev)
        self.calls = self.rows = 0
        self.deadline: float | None = None  # time.monotonic() past which a call raises

    # ----------------------------------------------------------------------------- interface
    @property
    def device(self) -> torch.device:
        return self.denoiser.device

    @property
    def dtype(self) -> torch.dtype:
        return self.logits_dtype

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **ignored) -> LMOutput:
        """``logits [B, L, vocab_size]`` for ``input_ids [B, L]`` (see the module docstring);
        ``attention_mask`` and other keywords are accepted and ignored (every row is full)."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise SamplerTimeout("the sampler ran past its time limit (still calling the model)")
        tokens = self.to_structure(input_ids)
        self.calls += 1
        self.rows += tokens.shape[0]
        with torch.no_grad():
            logp = self.denoiser(tokens)  # [B, n, V], visible rows point masses
        B, n, V = logp.shape
        masked = tokens == self.vocab
        logits = torch.full((B, self.seq_len, self.vocab_size), self.min_logit,
                            dtype=torch.float64, device=logp.device)
        body = logp.to(torch.float64)
        if self.special_mass > 0:
            body = body + torch.where(masked[..., None], math.log1p(-self.special_mass), 0.0)
        body = body.clamp(min=self.min_logit)
        start = len(self.prefix)
        rows = logits[:, start:]
        rows[..., self._ids] = body
        if self.special_mass > 0:
            share = math.log(self.special_mass / len(self.special_ids))
            spec = rows[..., self.special_ids]
            rows[..., self.special_ids] = torch.where(masked[..., None], share, spec)
        if start:
            logits[:, torch.arange(start, device=logits.device), self._prefix] = 0.0
        return LMOutput(logits.to(self.logits_dtype))

    def to_structure(self, input_ids) -> torch.Tensor:
        """The structure's tokens ``[B, n]`` (mask = V) of model ``input_ids [B, L]``; raises
        :class:`~mdmprob.errors.EvidenceError` on a wrong shape, dtype or id."""
        input_ids = check_tokens(input_ids, self.seq_len, "input_ids",
                                 shape_hint=f" (prefix of {len(self.prefix)} + {self.n_tokens} "
                                            "positions)")
        ids = input_ids.to(self.device, torch.long)
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bad.any():
            raise EvidenceError(f"input id {ids[bad][0].item()} is outside 0..{self.vocab_size - 1}")
        start = len(self.prefix)
        if start and (ids[:, :start] != self._prefix).any():
            raise EvidenceError(f"the prefix {self.prefix} was changed in input_ids")
        tokens = self.token_of_id[ids[:, start:]]
        if (tokens < 0).any():
            col = int((tokens < 0).any(0).nonzero()[0])
            raise EvidenceError(f"input_ids column {start + col} holds id "
                                f"{ids[(tokens < 0).any(1), start + col][0].item()}, which is "
                                f"neither a content id nor the mask id {self.mask_id}")
        return tokens

    def to_model(self, tokens) -> torch.Tensor:
        """Model ``input_ids [B, L]`` of structure ``tokens [B, n]`` (values 0..V, V = mask)."""
        tokens = self.denoiser.check(tokens)
        lookup = torch.cat([self._ids, torch.tensor([self.mask_id], device=self.device)])
        body = lookup[tokens]
        return torch.cat([self._prefix.expand(body.shape[0], -1), body], 1)

    def reset_counts(self) -> None:
        self.calls = self.rows = 0

    def extra_repr(self) -> str:
        return (f"{self.denoiser!r}, vocab_size={self.vocab_size}, mask_id={self.mask_id}, "
                f"prefix={self.prefix}, dtype={self.logits_dtype}")


def _as_denoiser(target, device):
    from mdmprob.denoisers.base import Denoiser
    from mdmprob.denoisers.oracle import Oracle
    from mdmprob.structure import Structure

    if isinstance(target, Denoiser):
        return target
    if isinstance(target, Structure):
        return Oracle(target, device=device)
    raise MdmprobError(f"OracleLM needs a Structure or a Denoiser, got {type(target).__name__}")


def _nonneg(what: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MdmprobError(f"{what}={value!r} must be a non-negative integer id")
    return value
