"""Model error as a named family: a denoiser that perturbs another denoiser's conditionals.

``Perturbed(denoiser, family, level)`` returns ``log p_theta(x_i = v | x_visible)`` built from the
wrapped denoiser's ``log p(x_i = v | x_visible)`` row by row (``[B, n, V]``, nats). Every family
is the identity at ``level = 0`` (bitwise: the wrapped output is returned unchanged) and moves
further from ``p`` as ``level`` grows:

==================  ============================================================  ============
family              perturbed conditional                                          level
==================  ============================================================  ============
``temperature``     ``log p_theta = log_softmax(log p / (1 + level))``              ``>= 0``
``uniform``         ``p_theta = (1 - level) p + level / V``                         ``[0, 1]``
``logit_noise``     ``log p_theta = log_softmax(log p + level * xi(h, i, v))``      ``>= 0``
``entropy_scaled``  mass moved off the mode so ``KL(p_theta || p) = level * H(p)``  ``>= 0``
==================  ============================================================  ============

``xi(h, i, v) ~ N(0, 1)`` is a fixed hash of ``(seed, the row h of visible tokens with mask ids,
position i, value v)``: the perturbed model is one consistent conditional table, independent of
the batch a row appears in. Hard zeros (``-inf``) stay hard zeros in ``temperature``,
``logit_noise`` and ``entropy_scaled``; ``uniform`` fills them with ``level / V``.
"""

from __future__ import annotations

import math

import torch

from mdmprob.checks import check_int
from mdmprob.denoisers.base import Denoiser
from mdmprob.errors import MdmprobError, unknown_name

FAMILIES: dict[str, str] = {
    "temperature": "log p_theta = log_softmax(log p / (1 + level)); level >= 0 flattens p "
                   "(level = 1 halves every log-probability before renormalising)",
    "uniform": "p_theta = (1 - level) p + level / V; level in [0, 1] is the weight of the "
               "uniform distribution mixed in",
    "logit_noise": "log p_theta = log_softmax(log p + level * xi), xi ~ N(0, 1) a fixed function "
                   "of (seed, visible row, position, value); level >= 0 is the noise scale in nats",
    "entropy_scaled": "mass moved from the mode to the other supported values (proportionally) "
                      "until KL(p_theta || p) = min(level * H(p), -log(1 - p_mode)); level >= 0 "
                      "is the KL per nat of true conditional entropy",
}

_RANGES = {"temperature": (0.0, math.inf), "uniform": (0.0, 1.0),
           "logit_noise": (0.0, math.inf), "entropy_scaled": (0.0, math.inf)}

_BISECTION_STEPS = 60  # halves [0, p_mode] down to float64 resolution


def check_level(family: str, level) -> float:
    """``family`` is one of :data:`FAMILIES` and ``level`` a finite number in its range
    (``[0, 1]`` for ``uniform``, ``[0, inf)`` for the others); returns ``float(level)``."""
    if family not in FAMILIES:
        raise unknown_name("error family", str(family), FAMILIES)
    low, high = _RANGES[family]
    valid = "[0, 1]" if high == 1.0 else "[0, inf) (finite)"
    if isinstance(level, bool) or not isinstance(level, int | float) or not (
            low <= level <= high) or not math.isfinite(level):
        raise MdmprobError(f"level={level!r} is invalid for error family {family!r}; "
                           f"it must be a number in {valid}")
    return float(level)


class Perturbed(Denoiser):
    """``denoiser`` with model error of a named ``family`` at strength ``level``.

    Args:
        denoiser: any :class:`~mdmprob.denoisers.base.Denoiser` (the "true" conditionals p).
        family: one of :data:`FAMILIES` (``temperature``, ``uniform``, ``logit_noise``,
            ``entropy_scaled``); see the module docstring for the formulas.
        level: the strength; 0 reproduces ``denoiser`` exactly. Valid ranges: ``[0, 1]`` for
            ``uniform``, ``[0, inf)`` (finite) for the others.
        seed: the noise seed of ``logit_noise`` (ignored by the other families).

    Calling it maps ``tokens [B, n]`` (mask id ``V``) to ``log p_theta [B, n, V]`` in nats, on the
    wrapped denoiser's device and dtype.
    """

    def __init__(self, denoiser: Denoiser, family: str, level: float, seed: int = 0):
        check_level(family, level)
        check_int("seed", seed)
        self.denoiser, self.family, self.level, self.seed = denoiser, family, float(level), seed
        self.vocab, self.n_tokens = denoiser.vocab, denoiser.n_tokens
        self.device, self.dtype = denoiser.device, denoiser.dtype

    def predict(self, tokens: torch.Tensor) -> torch.Tensor:
        log_p = self.denoiser(tokens)
        if self.level == 0.0:
            return log_p
        if self.family == "temperature":
            return _normalize(log_p / (1.0 + self.level))
        if self.family == "uniform":
            mixed = torch.logaddexp(log_p + math.log1p(-self.level) if self.level < 1 else
                                    torch.full_like(log_p, -math.inf),
                                    torch.full_like(log_p, math.log(self.level / self.vocab)))
            return _normalize(mixed)
        if self.family == "logit_noise":
            xi = gaussian_noise(tokens, self.vocab, self.seed).to(log_p.dtype)
            return _normalize(log_p + self.level * xi)
        return entropy_scaled(log_p, self.level)

    @property
    def blocks(self) -> list[list[int]] | None:
        """The wrapped denoiser's decoding blocks (model error does not change the structure)."""
        return self.denoiser.blocks

    def __repr__(self) -> str:
        seed = f", seed={self.seed}" if self.family == "logit_noise" else ""
        return f"Perturbed({self.denoiser!r}, {self.family!r}, level={self.level:g}{seed})"


def _normalize(log_q: torch.Tensor) -> torch.Tensor:
    """Renormalise along the last axis; rows that are all ``-inf`` stay ``-inf`` (no NaN)."""
    return log_q - torch.logsumexp(log_q, -1, keepdim=True).nan_to_num(nan=0.0, neginf=0.0)


# ---------------------------------------------------------------------- entropy-scaled error
def entropy_scaled(log_p: torch.Tensor, level: float) -> torch.Tensor:
    """Move mass ``w`` from the mode ``m`` of each row to the other values, proportionally, so
    that ``KL(p_theta || p) = min(level * H(p), -log(1 - p_m))`` (see :func:`away_from_mode`).
    Rows with ``H(p) = 0`` are returned unchanged. ``log_p [..., V]`` -> ``log p_theta [..., V]``.
    """
    p = log_p.exp()
    entropy = -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(-1)  # 0 log 0 = 0
    return away_from_mode(log_p, level * entropy, _BISECTION_STEPS)[0]


def away_from_mode(log_r: torch.Tensor, target: torch.Tensor, steps: int = 80):
    """Move mass w from the mode m of each row of ``log_r [..., V]`` to the other values
    (proportionally; for V = 2: to the side away from the mode) so that
    ``KL(r_theta ‖ r) = (r_m - w) log(1 - w / r_m) + (s + w) log(1 + w / s)`` (s = 1 - r_m) equals
    ``target [...]`` (nats), saturating at w = r_m (KL = -log s). Ties for the mode go to the
    lowest value; ``steps`` bisection halvings of [0, r_m]. Returns
    ``(log r_theta [..., V], KL [...], saturated [...] bool)``."""
    mode = log_r.argmax(-1, keepdim=True)
    is_mode = torch.zeros_like(log_r, dtype=torch.bool).scatter_(-1, mode, True)
    log_pm = log_r.gather(-1, mode).squeeze(-1)
    pm = log_pm.exp()
    s = torch.logsumexp(log_r.masked_fill(is_mode, -math.inf), -1).exp()
    movable = s > 0
    s_safe = torch.where(movable, s, torch.ones_like(s))

    def kl_of(w):
        first = torch.where(w < pm, (pm - w) * torch.log1p(-w / pm), torch.zeros_like(w))
        return first + (s_safe + w) * torch.log1p(w / s_safe)

    kl_max = torch.where(movable, -torch.log(s_safe), torch.zeros_like(s))
    target = target.expand_as(pm)
    saturated = movable & (target >= kl_max)
    lo, hi = torch.zeros_like(pm), pm.clone()
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        below = kl_of(mid) < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    w = torch.where(saturated, pm, 0.5 * (lo + hi))
    w = torch.where(movable & (target > 0), w, torch.zeros_like(w))
    log_mode = torch.where(w < pm, log_pm + torch.log1p(-w / pm), torch.full_like(pm, -math.inf))
    log_rest = log_r + torch.log1p(w / s_safe)[..., None]
    log_theta = torch.where(is_mode, log_mode[..., None], log_rest)
    return log_theta, kl_of(w), saturated


# ---------------------------------------------------------------------- context-hashed noise
_M32 = 0xFFFFFFFF
_PRIME = 2**31 - 1  # Mersenne prime: residues < 2^31, products with a base < 2^31 stay < 2^62
_BASES = (1_000_003, 2_147_483_029)


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x * c mod 2^32`` for ``0 <= x < 2^32`` in int64 without overflow (16-bit halves)."""
    lo = (x & 0xFFFF) * c
    hi = ((x >> 16) * c) & 0xFFFF
    return (lo + (hi << 16)) & _M32


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser (a bijection of ``0 .. 2^32 - 1``) on int64 tensors."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


def _row_hashes(tokens: torch.Tensor) -> list[torch.Tensor]:
    """Two polynomial hashes ``sum_j t_j b^j mod (2^31 - 1)`` of each row, int64 ``[B]`` each."""
    n = tokens.shape[1]
    out = []
    for base in _BASES:
        powers = [1]
        for _ in range(n - 1):
            powers.append(powers[-1] * base % _PRIME)
        pw = torch.tensor(powers, dtype=torch.long, device=tokens.device)
        out.append(((tokens % _PRIME) * pw % _PRIME).sum(-1) % _PRIME)
    return out


def gaussian_noise(tokens: torch.Tensor, vocab: int, seed: int = 0) -> torch.Tensor:
    """Standard normal noise ``xi [B, n, V]`` (float64), a deterministic function of
    ``(seed, tokens[b] (the whole row, mask ids included), position i, value v)``.

    Two 31-bit polynomial hashes of the row are mixed with the seed, ``i`` and ``v`` by chains of
    MurmurHash3 finalisers (exact int64 arithmetic, no overflow) into two 32-bit words, mapped to
    uniforms ``u = (k + 1/2) / 2^32`` in (0, 1) and turned into ``xi`` by Box-Muller,
    ``sqrt(-2 log u1) cos(2 pi u2)``. Identical on every device and batch layout.
    """
    tokens = tokens.to(torch.long)
    batch, n = tokens.shape
    device = tokens.device
    h1, h2 = (h[:, None, None] for h in _row_hashes(tokens))
    pos = torch.arange(n, dtype=torch.long, device=device)[None, :, None]
    val = torch.arange(vocab, dtype=torch.long, device=device)[None, None, :]
    seed_lo, seed_hi = seed & _M32, (seed >> 32) & _M32
    words = []
    for salt in (0x9E3779B9, 0x7F4A7C15):
        k = torch.full((1, 1, 1), salt ^ seed_lo, dtype=torch.long, device=device)
        k = _fmix32(_fmix32(k) ^ seed_hi)
        for part in (h1, h2, pos, val):
            k = _fmix32(k ^ (part & _M32))
        words.append(k.expand(batch, n, vocab))
    u1, u2 = ((w.to(torch.float64) + 0.5) / 2.0**32 for w in words)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
