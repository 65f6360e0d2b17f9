"""D-digit addition "a + b = c" (paper-spec §3.2): token layout, test suite, metrics, training data.

Vocabulary (``VOCAB = 13`` ids)::

    0 .. 9   the digits            PLUS = 10  '+'          EQ = 11  '='          PAD = 12  padding

Layout (fixed length ``n = 3D + 3``, most significant digit first everywhere)::

    position   0 .. D-1     D      D+1 .. 2D     2D+1    2D+2 .. 3D+2
    token      a (D digits) '+'    b (D digits)  '='     c = a + b (D+1 digits)

Operands and answer are **zero-padded** to their fixed widths (``12 + 5`` with D = 3 is
``0 1 2 + 0 0 5 = 0 0 1 7``), so every sequence of the layout uses digits and the two operator
tokens only; ``PAD`` is part of the vocabulary (the paper's NanoAdder vocabulary has it) but never
appears in this layout. The answer digits, positions ``2D+2 .. 3D+2`` (:func:`answer_positions`),
are the ones a decoder fills in; the operands and operators are the prompt.

Test suite (:func:`test_suite`): the paper's six categories with its proportions, Easy 10%,
Medium 20%, Hard 30%, Extreme 20%, Edge 10%, Mixed 10% (for 1,000 problems exactly
100/200/300/200/100/100; other sizes by largest remainder). Digit-length ranges for D digits
(:func:`category_ranges`; for D = 10 they are the paper's 1-3 / 4-6 / 7-9 / 10)::

    easy     1 .. max(1, floor(3D/10))
    medium   floor(3D/10)+1 .. floor(6D/10)
    hard     floor(6D/10)+1 .. D-1
    extreme  D .. D

each clamped into ``1 .. D`` with an empty range widened to its lower end (so for D < 4 some
ranges coincide, e.g. D = 2: easy = medium = 1, hard = extreme = 2). Each operand of an
easy/medium/hard/extreme problem draws its length independently, uniformly from the range, then
its value uniformly among numbers of that length (length 1 is 0 .. 9). Edge cases are split as
evenly as possible into three kinds, recorded in ``Problem.kind``:

* ``carry``: an all-nines operand ``10^L - 1`` plus ``d * 10^k`` (k < L), a carry that cascades
  from digit k to the top; the first one is always ``(10^D - 1) + 1``;
* ``zero``: ``A + 0``, ``0 + B`` and ``0 + 0`` in rotation (A, B of uniform length 1 .. D);
* ``near_max``: both operands within ``min(1000, 10^(D-1))`` of the maximum ``10^D - 1``;
  the first one is ``(10^D - 1) + (10^D - 1)``.

Mixed problems have one long operand (length in the hard-or-extreme range ``floor(6D/10)+1 .. D``,
at least 2) and one short (length ``1 .. max(1, min(floor(3D/10), long - 1))``), in random order.
The suite needs D >= 2 (mixed lengths must differ). Problems are shuffled by the same seeded
``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch

from mdmprob.checks import check_int
from mdmprob.errors import MdmprobError

DIGITS = 10
PLUS = 10
EQ = 11
PAD = 12
VOCAB = 13
SYMBOLS = [str(d) for d in range(10)] + ["+", "=", "_"]

CATEGORIES = ("easy", "medium", "hard", "extreme", "edge", "mixed")
PROPORTIONS = {"easy": 0.1, "medium": 0.2, "hard": 0.3, "extreme": 0.2, "edge": 0.1, "mixed": 0.1}
EDGE_KINDS = ("carry", "zero", "near_max")
MAX_DIGITS = 18  # a + b must fit in int64


class Problem(NamedTuple):
    """One addition problem ``a + b``; ``kind`` names the edge-case type ('' otherwise)."""

    a: int
    b: int
    category: str
    kind: str = ""

    @property
    def answer(self) -> int:
        return self.a + self.b


# ---------------------------------------------------------------------- layout
def _check_digits(D) -> int:
    if isinstance(D, bool) or not isinstance(D, int) or not 1 <= D <= MAX_DIGITS:
        raise MdmprobError(f"the number of digits D={D!r} must be an integer in 1..{MAX_DIGITS}")
    return D


def seq_len(D: int) -> int:
    """Length of a sequence of the layout: ``3D + 3``."""
    return 3 * _check_digits(D) + 3


def operand_positions(D: int) -> list[int]:
    """Positions of the prompt (a, '+', b, '='): ``0 .. 2D+1``."""
    return list(range(2 * _check_digits(D) + 2))


def answer_positions(D: int) -> list[int]:
    """Positions of the D+1 answer digits (most significant first): ``2D+2 .. 3D+2``."""
    D = _check_digits(D)
    return list(range(2 * D + 2, 3 * D + 3))


def _digits(values: torch.Tensor, width: int) -> torch.Tensor:
    powers = torch.tensor([10**k for k in range(width - 1, -1, -1)], dtype=torch.long)
    return (values[:, None] // powers) % 10


def encode_batch(a, b, D: int) -> torch.Tensor:
    """Token sequences ``LongTensor[B, 3D+3]`` of the problems ``a[i] + b[i]`` (sequences of ints)."""
    D = _check_digits(D)
    a = torch.as_tensor(np.asarray(a, dtype=np.int64)).reshape(-1)
    b = torch.as_tensor(np.asarray(b, dtype=np.int64)).reshape(-1)
    if a.shape != b.shape:
        raise MdmprobError(f"a and b must have the same length, got {a.numel()} and {b.numel()}")
    top = 10**D
    bad = (a < 0) | (a >= top) | (b < 0) | (b >= top)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise MdmprobError(f"operands must be integers in 0..{top - 1} for D={D}, got "
                           f"a={int(a[i])}, b={int(b[i])}")
    col = torch.full((a.numel(), 1), 0, dtype=torch.long)
    return torch.cat([_digits(a, D), col + PLUS, _digits(b, D), col + EQ, _digits(a + b, D + 1)], 1)


def encode(a: int, b: int, D: int) -> torch.Tensor:
    """The token sequence ``LongTensor[3D+3]`` of ``a + b = (a+b)`` (zero-padded)."""
    return encode_batch([a], [b], D)[0]


def encode_problems(problems: Sequence[Problem], D: int) -> torch.Tensor:
    """``LongTensor[B, 3D+3]`` of a list of problems (e.g. the test suite)."""
    return encode_batch([p[0] for p in problems], [p[1] for p in problems], D)


def _width(tokens: torch.Tensor) -> int:
    n = tokens.shape[-1]
    if n < 6 or n % 3:
        raise MdmprobError(f"a sequence of the addition layout has length 3D+3, got {n}")
    return n // 3 - 1


def decode_answers(tokens, D: int | None = None) -> torch.Tensor:
    """The answers ``LongTensor[B]`` read from the answer positions of ``tokens [B, 3D+3]``;
    -1 where an answer position holds a non-digit token (never equal to a true sum)."""
    tokens = torch.as_tensor(tokens)
    if tokens.dim() == 1:
        tokens = tokens[None]
    D = _width(tokens) if D is None else _check_digits(D)
    if tokens.shape[-1] != seq_len(D):
        raise MdmprobError(f"tokens have length {tokens.shape[-1]}, expected 3D+3 = {seq_len(D)}")
    ans = tokens[:, answer_positions(D)].long().cpu()
    ok = ((ans >= 0) & (ans < 10)).all(-1)
    powers = torch.tensor([10**k for k in range(D, -1, -1)], dtype=torch.long)
    return torch.where(ok, (ans.clamp(0, 9) * powers).sum(-1), torch.full_like(ok, -1, dtype=torch.long))


def decode_answer(tokens, D: int | None = None) -> int:
    """The answer of one sequence ``tokens [3D+3]`` (-1 if an answer token is not a digit)."""
    return int(decode_answers(torch.as_tensor(tokens).reshape(1, -1), D)[0])


def decode_operands(tokens, D: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The operands ``(a, b)`` as ``LongTensor[B]`` each (digit tokens assumed)."""
    tokens = torch.as_tensor(tokens)
    if tokens.dim() == 1:
        tokens = tokens[None]
    D = _width(tokens) if D is None else _check_digits(D)
    powers = torch.tensor([10**k for k in range(D - 1, -1, -1)], dtype=torch.long)
    tokens = tokens.long().cpu()
    return (tokens[:, :D] * powers).sum(-1), (tokens[:, D + 1:2 * D + 1] * powers).sum(-1)


def exact_match(tokens, problems: Sequence[Problem]) -> torch.Tensor:
    """``BoolTensor[B]``: whether the answer digits of ``tokens [B, 3D+3]`` spell ``a + b`` of the
    corresponding problem (the paper's exact match on the whole sum)."""
    answers = decode_answers(tokens)
    if answers.numel() != len(problems):
        raise MdmprobError(f"{answers.numel()} sequences but {len(problems)} problems")
    target = torch.tensor([p[0] + p[1] for p in problems], dtype=torch.long)
    return answers == target


# ---------------------------------------------------------------------- test suite
def category_ranges(D: int) -> dict[str, tuple[int, int]]:
    """Operand digit-length ranges ``(lo, hi)`` of easy/medium/hard/extreme for D digits, and of
    the long and short operand of mixed (``mixed_long``, ``mixed_short``); see the module doc."""
    D = _check_digits(D)

    def clamp(lo, hi):
        lo = min(max(lo, 1), D)
        return lo, min(max(hi, lo), D)

    e, m = (3 * D) // 10, (6 * D) // 10
    out = {"easy": clamp(1, e), "medium": clamp(e + 1, m), "hard": clamp(m + 1, D - 1),
           "extreme": (D, D)}
    out["mixed_long"] = clamp(max(m + 1, 2), D)
    out["mixed_short"] = clamp(1, min(e, out["mixed_long"][0] - 1))
    return out


def category_counts(size: int) -> dict[str, int]:
    """How many of ``size`` problems each category gets (largest remainder of the proportions)."""
    raw = {c: PROPORTIONS[c] * size for c in CATEGORIES}
    counts = {c: int(math.floor(raw[c] + 1e-9)) for c in CATEGORIES}
    order = sorted(CATEGORIES, key=lambda c: (-(raw[c] - counts[c]), CATEGORIES.index(c)))
    for c in order[: size - sum(counts.values())]:
        counts[c] += 1
    return counts


def _number(rng: np.random.Generator, length: int) -> int:
    lo = 0 if length == 1 else 10 ** (length - 1)
    return int(rng.integers(lo, 10**length))


def _random_pair(rng, lo: int, hi: int) -> tuple[int, int]:
    la, lb = (int(x) for x in rng.integers(lo, hi + 1, size=2))
    return _number(rng, la), _number(rng, lb)


def _edge(rng: np.random.Generator, kind: str, i: int, D: int) -> tuple[int, int]:
    top = 10**D - 1
    if kind == "carry":
        if i == 0:
            return top, 1
        L = int(rng.integers(1, D + 1))
        k = int(rng.integers(0, L))
        a, b = 10**L - 1, int(rng.integers(1, 10)) * 10**k
        return (a, b) if rng.random() < 0.5 else (b, a)
    if kind == "zero":
        x = _number(rng, int(rng.integers(1, D + 1)))
        return [(x, 0), (0, x), (0, 0)][i % 3]
    span = min(1000, 10 ** (D - 1))
    if i == 0:
        return top, top
    return top - int(rng.integers(0, span)), top - int(rng.integers(0, span))


def test_suite(D: int = 10, size: int = 1000, seed: int = 0) -> list[Problem]:
    """The fixed test suite: ``size`` problems ``Problem(a, b, category, kind)`` in the paper's six
    categories and proportions, drawn from ``numpy.random.default_rng(seed)`` (module doc)."""
    D = _check_digits(D)
    if D < 2:
        raise MdmprobError(f"the test suite needs D >= 2 (mixed operands differ in length), got {D}")
    check_int("size", size, 0)
    rng = np.random.default_rng(seed)
    ranges = category_ranges(D)
    counts = category_counts(size)
    problems: list[Problem] = []
    for cat in ("easy", "medium", "hard", "extreme"):
        problems += [Problem(*_random_pair(rng, *ranges[cat]), cat) for _ in range(counts[cat])]
    n_edge = counts["edge"]
    per_kind = [n_edge // 3 + (j < n_edge % 3) for j in range(3)]
    for kind, count in zip(EDGE_KINDS, per_kind, strict=True):
        problems += [Problem(*_edge(rng, kind, i, D), "edge", kind) for i in range(count)]
    for _ in range(counts["mixed"]):
        long_ = _number(rng, int(rng.integers(ranges["mixed_long"][0], ranges["mixed_long"][1] + 1)))
        short = _number(rng, int(rng.integers(ranges["mixed_short"][0], ranges["mixed_short"][1] + 1)))
        problems.append(Problem(long_, short, "mixed") if rng.random() < 0.5
                        else Problem(short, long_, "mixed"))
    perm = rng.permutation(len(problems))
    return [problems[i] for i in perm]


test_suite.__test__ = False  # not a pytest test, despite its name


def category_table(problems: Sequence[Problem]) -> list[dict]:
    """Per category: count, share, and the observed operand digit lengths (min, max)."""
    rows = []
    total = max(len(problems), 1)
    for cat in CATEGORIES:
        ps = [p for p in problems if p.category == cat]
        lens = [len(str(x)) for p in ps for x in (p.a, p.b)]
        kinds = sorted({p.kind for p in ps if p.kind})
        rows.append({"category": cat, "n": len(ps), "share": len(ps) / total,
                     "min_len": min(lens, default=0), "max_len": max(lens, default=0),
                     "kinds": kinds})
    return rows


# ---------------------------------------------------------------------- metrics
def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (default 95%); ``(0, 1)`` for n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def accuracy(pred_answers, problems: Sequence[Problem], z: float = 1.959963984540054) -> dict:
    """Exact-match accuracy of predicted sums, overall and per category, with Wilson intervals.

    ``pred_answers``: one predicted integer sum per problem (a sequence, array or LongTensor;
    None or -1 counts as wrong). Returns ``{"overall": row, "per_category": {cat: row}}`` with
    ``row = {"n", "correct", "accuracy", "ci": (lo, hi)}`` (accuracy NaN for an empty category).
    """
    if isinstance(pred_answers, torch.Tensor):
        pred_answers = pred_answers.reshape(-1).tolist()
    preds = list(pred_answers)
    if len(preds) != len(problems):
        raise MdmprobError(f"{len(preds)} predictions but {len(problems)} problems")
    hits = [p is not None and int(p) == q[0] + q[1] for p, q in zip(preds, problems, strict=True)]

    def row(idx):
        n, k = len(idx), sum(hits[i] for i in idx)
        return {"n": n, "correct": k, "accuracy": k / n if n else float("nan"),
                "ci": wilson_interval(k, n, z)}

    per = {c: row([i for i, q in enumerate(problems) if q.category == c]) for c in CATEGORIES}
    return {"overall": row(list(range(len(problems)))), "per_category": per}


# ---------------------------------------------------------------------- training data
def training_sampler(D: int, seed: int = 0, batch_size: int = 256,
                     n_batches: int | None = None) -> Iterator[torch.Tensor]:
    """Batches ``LongTensor[batch_size, 3D+3]`` of random problems, forever (or ``n_batches``):
    each operand's length is uniform in 1 .. D (the paper's curriculum), its value uniform among
    numbers of that length (length 1 includes 0)."""
    D = _check_digits(D)
    check_int("batch_size", batch_size, 1)
    rng = np.random.default_rng(seed)
    produced = 0
    while n_batches is None or produced < n_batches:
        lengths = rng.integers(1, D + 1, size=(2, batch_size))
        lo = np.where(lengths == 1, 0, 10 ** (lengths - 1))
        values = rng.integers(lo, 10**lengths)
        yield encode_batch(values[0], values[1], D)
        produced += 1
