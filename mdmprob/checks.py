"""Argument checks shared by the library: integers, numbers, probabilities, seeds, generators and
the denoiser/structure match. Each raises :class:`~mdmprob.errors.MdmprobError` (or the subclass
given) with a message that names the offending value and the valid range."""

from __future__ import annotations

import math

import torch

from mdmprob.errors import EvidenceError, MdmprobError


def check_int(name: str, value, low: int | None = None, high: int | None = None) -> int:
    """``value`` is an ``int`` (not a ``bool``) in ``[low, high]``; returns it."""
    if isinstance(value, bool) or not isinstance(value, int) or (
            low is not None and value < low) or (high is not None and value > high):
        raise MdmprobError(f"{name}={value!r} must be an integer{_range(low, high, False, True)}")
    return value


def check_number(name: str, value, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False, finite: bool = True) -> float:
    """``value`` is an ``int`` or ``float`` (not a ``bool``, not NaN; finite unless
    ``finite=False``) in ``[low, high]`` (open at ``low`` if ``low_open``, at ``high`` if
    ``high_open``); returns it as float."""
    ok = not isinstance(value, bool) and isinstance(value, int | float) and value == value
    if ok:
        ok = (not finite or math.isfinite(value)) and (
            low is None or (value > low if low_open else value >= low)) and (
            high is None or (value < high if high_open else value <= high))
    if not ok:
        raise MdmprobError(f"{name}={value!r} must be a number"
                           f"{_range(low, high, low_open, False, high_open)}"
                           + (" (finite)" if finite and (high is None or low is None) else ""))
    return float(value)


def check_prob(name: str, value, low: float = 0.0, high: float = 1.0) -> float:
    """``value`` is a number in ``[low, high]`` (default: a probability); returns it as float."""
    return check_number(name, value, low, high)


def check_seed(seed) -> int:
    """A seed that must reproduce a run (a recorded one) is a non-negative ``int``; ``None`` is
    refused here (it never silently means 0; :func:`generator` takes it as fresh randomness)."""
    if seed is None:
        raise MdmprobError("seed=None: give an integer seed >= 0 (runs are reproducible by "
                           "default; pass e.g. seed=0)")
    return check_int("seed", seed, 0)


def generator(seed, device: torch.device | str | None = None) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` (default CPU): seeded with ``seed`` (an ``int`` >= 0,
    reproducible), or, for ``seed=None``, from the operating system's entropy (fresh,
    non-reproducible randomness, as ``torch.Generator().seed()`` and numpy's
    ``default_rng(None)``). The one place a seed becomes a generator."""
    gen = torch.Generator(device=device if device is not None else "cpu")
    if seed is None:
        gen.seed()
        return gen
    return gen.manual_seed(check_seed(seed))


def check_device(device=None) -> torch.device:
    """``device`` as a ``torch.device`` (``None``: :func:`mdmprob.config.default_device`), refused
    when it names no device torch can use here."""
    if device is None:
        from mdmprob.config import default_device

        return default_device()
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise MdmprobError(f"device={device!r} is not a torch device; use 'cpu' or 'cuda' "
                           "(or 'cuda:N')") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MdmprobError(f"device={str(device)!r} but torch sees no CUDA device; use 'cpu'")
    if device.type not in ("cpu", "cuda", "mps"):
        raise MdmprobError(f"device={str(device)!r} is not supported; use 'cpu' or 'cuda'")
    return device


def check_dtype(dtype=None) -> torch.dtype:
    """``dtype`` as a floating ``torch.dtype`` of at least 32 bits (``None``:
    :func:`mdmprob.config.default_dtype`, float64 unless configured)."""
    if dtype is None:
        from mdmprob.config import default_dtype

        return default_dtype()
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point or dtype.itemsize < 4:
        raise MdmprobError(f"dtype={dtype!r} is not a floating dtype the engine computes in; "
                           "use torch.float64 (the default) or torch.float32")
    return dtype


def check_tokens(tokens, length: int, name: str = "tokens", *, one_row: bool = False,
                 shape_hint: str = "") -> torch.Tensor:
    """``tokens`` as an integer tensor ``[B, length]`` (a 1-D ``[length]`` is one row when
    ``one_row``); otherwise :class:`~mdmprob.errors.EvidenceError` naming the dtype or shape
    (``shape_hint`` follows the expected shape in the message). Values are not checked."""
    if not isinstance(tokens, torch.Tensor):
        tokens = torch.as_tensor(tokens)
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise EvidenceError(f"{name} must be an integer tensor, got dtype {tokens.dtype}")
    if one_row and tokens.dim() == 1:
        tokens = tokens.unsqueeze(0)
    if tokens.dim() != 2 or tokens.shape[1] != length:
        raise EvidenceError(f"{name} must have shape [B, {length}]{shape_hint}, got "
                            f"{tuple(tokens.shape)}")
    return tokens


def check_window_mask(window, tokens: torch.Tensor, device=None) -> torch.Tensor:
    """``window`` as a bool tensor of the shape of ``tokens [B, n]`` (on ``device``, default the
    tokens'); otherwise :class:`~mdmprob.errors.EvidenceError`."""
    from mdmprob.errors import EvidenceError

    window = torch.as_tensor(window)
    if window.dtype != torch.bool or window.shape != tokens.shape:
        raise EvidenceError(f"window must be a bool tensor of shape {tuple(tokens.shape)} "
                            f"(the tokens' shape), got {window.dtype} {tuple(window.shape)}")
    return window.to(tokens.device if device is None else device)


def check_match(denoiser, other, what: str = "structure",
                error: type[MdmprobError] = MdmprobError) -> None:
    """``denoiser`` and ``other`` (a structure, engine or denoiser) have the same number of tokens
    and vocabulary; otherwise ``error`` naming both shapes."""
    if denoiser.n_tokens != other.n_tokens or denoiser.vocab != other.vocab:
        raise error(f"denoiser/{what} mismatch: the denoiser has n_tokens={denoiser.n_tokens}, "
                    f"vocab={denoiser.vocab} but the {what} has n_tokens={other.n_tokens}, "
                    f"vocab={other.vocab}; use a denoiser of the same structure")


def _range(low, high, low_open: bool, integer: bool, high_open: bool = False) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if low_open else '>='} {low}"
    if low is None:
        return f" {'<' if high_open else '<='} {high}"
    if integer:
        return f" in {low}..{high}"
    return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


# ------------------------------------------------------------------------------ memory
def check_budget(what: str, samples: int, bytes_per_sample: float, fix: str) -> None:
    """Refuse up front (BudgetError) a request whose working memory, ``samples *
    bytes_per_sample`` bytes, exceeds the budget: ``MDMPROB_MEMORY_BUDGET`` bytes, default half
    of the machine's physical memory."""
    from mdmprob.errors import BudgetError

    need = float(samples) * float(bytes_per_sample)
    budget = memory_budget()
    if need > budget:
        raise BudgetError(f"{what}: {samples:g} samples need about {need / 2**30:.3g} GiB of "
                          f"memory, over the budget of {budget / 2**30:.3g} GiB "
                          f"(MDMPROB_MEMORY_BUDGET); {fix}")


def mc_bytes_per_sample(n_tokens: int, vocab: int) -> float:
    """Working memory of one Monte Carlo sequence, bytes: its float64 conditionals ``[n, V]``
    held in about 32 working copies by a decode and its exact evaluation (a generous bound)."""
    return 32.0 * 8 * n_tokens * vocab


def exact_state_limit(n_tokens: int, vocab: int) -> int:
    """Default bound on the decoder states an exact-mode enumeration holds at once: what the
    memory budget allows at about 16 float64 copies of each state's ``[n, V]`` conditionals,
    capped at 2^24."""
    return int(max(1, min(2**24, memory_budget() // (16 * 8 * n_tokens * vocab))))


def memory_budget() -> float:
    """Bytes a single request may use: ``MDMPROB_MEMORY_BUDGET`` or half the physical memory."""
    import os

    env = os.environ.get("MDMPROB_MEMORY_BUDGET")
    if env:
        try:
            return float(env)
        except ValueError:
            raise MdmprobError(f"MDMPROB_MEMORY_BUDGET={env!r} must be a number of bytes") from None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30
