"""A small neural masked diffusion model: a bidirectional transformer over the token sequence.

:class:`Neural` embeds every position (``V + 1`` token embeddings, the last one the mask token,
plus a learned position embedding), runs ``torch.nn.TransformerEncoder`` layers without an
attention mask (every position sees every other) and maps each position to ``V`` logits. It is
trained with :func:`mdmprob.training.train` and loaded with :func:`mdmprob.training.load_neural`.

The weights are float32; :meth:`Neural.predict` runs a copy of the network in the denoiser's
dtype (float64 by default), so its log-probabilities do not depend on how rows are batched.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from mdmprob.checks import check_int, check_match
from mdmprob.config import default_device, default_dtype
from mdmprob.denoisers.base import Denoiser
from mdmprob.errors import MdmprobError

LOSS_WEIGHTINGS = ("none", "1/t")
LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class NeuralConfig:
    """Architecture and training hyper-parameters of a :class:`Neural` denoiser.

    Attributes:
        vocab, n_tokens: the structure's vocabulary size V and sequence length n.
        d_model, n_layers, n_heads, dropout: the transformer (``d_model % n_heads == 0``).
        steps, batch_size, lr, weight_decay: AdamW training.
        lr_schedule: ``"constant"`` (``lr``; a longer run continues a shorter one) or ``"cosine"``
            (``lr * (1 + cos(pi * step / steps)) / 2``, annealed to 0 at ``steps``).
        decay_steps: with ``"constant"``, the last ``decay_steps`` steps lower the rate linearly
            to 0 (0: none); the run continues a constant-rate run of ``steps - decay_steps``.
        loss_weighting: ``"none"`` (mean cross-entropy over masked positions) or ``"1/t"``
            (the masked-diffusion ELBO weight ``1/t`` per sequence, averaged over the
            supervised tokens).
        train_positions: the positions training masks and supervises, sorted (``None``: all);
            the others are always visible, a prompt (e.g. the answer digits of an addition).
        seed: fixes the initial weights, the training data and the masks.
    """

    vocab: int
    n_tokens: int
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    dropout: float = 0.0
    steps: int = 2000
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.0
    loss_weighting: str = "none"
    train_positions: tuple | None = None
    lr_schedule: str = "constant"
    decay_steps: int = 0
    seed: int = 0

    def __post_init__(self):
        ints = {"vocab": 2, "n_tokens": 1, "d_model": 1, "n_layers": 1, "n_heads": 1,
                "steps": 0, "batch_size": 1, "decay_steps": 0, "seed": 0}
        for key, low in ints.items():
            check_int(f"NeuralConfig {key}", getattr(self, key), low)
        if self.d_model % self.n_heads:
            raise MdmprobError(f"NeuralConfig d_model={self.d_model} must be divisible by "
                               f"n_heads={self.n_heads}")
        for key, ok in (("dropout", 0 <= _num(self.dropout) < 1), ("lr", _num(self.lr) > 0),
                        ("weight_decay", _num(self.weight_decay) >= 0)):
            if not ok:
                raise MdmprobError(f"NeuralConfig {key}={getattr(self, key)!r} is out of range "
                                   "(dropout in [0, 1), lr > 0, weight_decay >= 0)")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise MdmprobError(f"NeuralConfig loss_weighting={self.loss_weighting!r} must be one "
                               f"of {', '.join(LOSS_WEIGHTINGS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise MdmprobError(f"NeuralConfig lr_schedule={self.lr_schedule!r} must be one of "
                               f"{', '.join(LR_SCHEDULES)}")
        if self.decay_steps > self.steps or (self.decay_steps and self.lr_schedule != "constant"):
            raise MdmprobError(f"NeuralConfig decay_steps={self.decay_steps} must be at most "
                               f"steps={self.steps}, and 0 unless lr_schedule='constant'")
        if self.train_positions is not None:
            object.__setattr__(self, "train_positions", _positions(self.train_positions,
                                                                   self.n_tokens))

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NeuralConfig:
        """The config from :meth:`as_dict`; unknown or missing keys raise MdmprobError."""
        if not isinstance(data, dict):
            raise MdmprobError(f"a NeuralConfig must be a dict, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise MdmprobError(f"unknown NeuralConfig keys {unknown}; known: {sorted(names)}")
        try:
            return cls(**data)
        except TypeError as e:
            raise MdmprobError(f"incomplete NeuralConfig {data}: {e}") from None

    def architecture(self) -> dict:
        """The fields that fix the network's shape."""
        return {k: getattr(self, k) for k in ("vocab", "n_tokens", "d_model", "n_layers",
                                              "n_heads")}


def _positions(pos, n: int) -> tuple:
    try:
        out = tuple(sorted({int(p) for p in pos}))
        ok = all(int(p) == p for p in pos) and len(out) == len(pos)
    except (TypeError, ValueError):
        out, ok = (), False
    if not ok or not out or out[0] < 0 or out[-1] >= n:
        raise MdmprobError(f"NeuralConfig train_positions={pos!r} must be distinct positions in "
                           f"0..{n - 1} (at least one), or None for all")
    return out


def _num(x) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return float("nan")
    return float(x)


class TransformerMDM(nn.Module):
    """Token + position embedding, bidirectional encoder layers, a final norm and a V-way head."""

    def __init__(self, config: NeuralConfig):
        super().__init__()
        c = config
        self.vocab = c.vocab
        self.embed = nn.Embedding(c.vocab + 1, c.d_model)
        self.position = nn.Parameter(torch.randn(c.n_tokens, c.d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(c.d_model, c.n_heads, dim_feedforward=4 * c.d_model,
                                           dropout=c.dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, c.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, n, V]`` of ``tokens [B, n]`` (values ``0..V``, ``V`` = mask)."""
        h = self.embed(tokens) + self.position
        return self.head(self.norm(self.encoder(h)))


def build_network(config: NeuralConfig, device=None) -> TransformerMDM:
    """A freshly initialised float32 network, its weights fixed by ``config.seed`` alone (the
    caller's global torch RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = TransformerMDM(config)
    return net.to(device=device, dtype=torch.float32)


class Neural(Denoiser):
    """A trained (or untrained) transformer MDM as a :class:`Denoiser`.

    Args:
        config: the architecture (and the training settings it was trained with).
        net: the network (default: freshly initialised from ``config.seed``).
        device: where :meth:`predict` computes (default ``MDMPROB_DEVICE``, the CPU).
        dtype: the precision of :meth:`predict` (default ``MDMPROB_DTYPE``, float64).
        structure: optional exact target; decoders with correctors use it when no ``target=``
            is passed, and decoders read its blocks.
    """

    def __init__(self, config: NeuralConfig, net: TransformerMDM | None = None, *, device=None,
                 dtype=None, structure=None):
        if not isinstance(config, NeuralConfig):
            raise MdmprobError(f"config must be a NeuralConfig, got {type(config).__name__}")
        self.config = config
        self.vocab, self.n_tokens = config.vocab, config.n_tokens
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = dtype if dtype is not None else default_dtype()
        if structure is not None:
            check_match(self, structure)
        self.structure = structure
        self.net = (net if net is not None else build_network(config)).to(self.device)
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the inference copy of :attr:`net` (call after changing its weights)."""
        self._eval = copy.deepcopy(self.net).to(self.device, self.dtype).eval()
        self._eval.requires_grad_(False)

    def predict(self, tokens: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = self._eval(tokens)
        return torch.log_softmax(logits, dim=-1)

    def __repr__(self) -> str:
        c = self.config
        return (f"Neural(vocab={c.vocab}, n_tokens={c.n_tokens}, d_model={c.d_model}, "
                f"n_layers={c.n_layers}, n_heads={c.n_heads})")
