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


# ---------------------------------------------------------------------- models and decoding
ORDERS = ("l2r", "r2l", "random", "confidence", "margin", "entropy")
ORDER_LABELS = {"l2r": "L2R", "r2l": "R2L", "random": "random", "confidence": "low-confidence",
                "margin": "margin", "entropy": "entropy"}
FIXED_ORDERS = ("l2r", "r2l")
CONFIDENCE_ORDERS = ("confidence", "margin", "entropy")
HARD_CATEGORIES = ("hard", "extreme", "edge")
LOSSES = ("answer", "full")


def training_source(D: int):
    """A sampler ``(batch, generator) -> LongTensor[batch, 3D+3]`` of :func:`training_sampler`
    problems for :func:`mdmprob.training.train`, seeded by the trainer's generator (so a resumed
    run sees the same data as an uninterrupted one)."""
    D = _check_digits(D)

    def sample(batch: int, generator: torch.Generator) -> torch.Tensor:
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        return next(training_sampler(D, seed=seed, batch_size=batch, n_batches=1))

    return sample


def neural_config(D: int, *, loss: str = "answer", **fields):
    """The :class:`~mdmprob.denoisers.neural.NeuralConfig` of an addition MDM for D digits:
    ``loss="answer"`` trains on the answer digits only (the prompt is never masked, as the paper
    supervises the answer only), ``"full"`` masks and predicts every position. ``fields``: the
    other NeuralConfig fields (d_model, n_layers, steps, batch_size, lr, seed, ...)."""
    from mdmprob.denoisers.neural import NeuralConfig

    if loss not in LOSSES:
        raise MdmprobError(f"loss={loss!r} must be one of {', '.join(LOSSES)}")
    positions = tuple(answer_positions(D)) if loss == "answer" else None
    return NeuralConfig(vocab=VOCAB, n_tokens=seq_len(D), train_positions=positions, **fields)


def masked_prompts(problems: Sequence[Problem], D: int, mask_id: int, device=None) -> torch.Tensor:
    """The problems' sequences with the D+1 answer positions set to ``mask_id`` (a decoder's
    ``initial=``)."""
    tokens = encode_problems(problems, D)
    tokens[:, answer_positions(D)] = mask_id
    return tokens.to(device) if device is not None else tokens


def answer_decoder(order: str, k: int):
    """Greedy (T = 0) decoding, ``k`` tokens per step in ``order`` (one of :data:`ORDERS`), ties to
    the lowest position; run it with ``initial=`` the prompts (:func:`masked_prompts`)."""
    from mdmprob.decoders import Decoder
    from mdmprob.decoders.primitives import SCORES, PerStep

    if order not in ORDERS:
        raise MdmprobError(f"order={order!r}: choose from {', '.join(ORDERS)}")
    check_int("k", k, 1)
    return Decoder(f"{order}(k={k})", SCORES[order](), PerStep(k), window="all",
                   temperature=0.0, ties="lowest_position")


def answer_error(model, problems: Sequence[Problem], D: int, chunk: int = 8192) -> dict:
    """The exact model error at each answer digit (most significant first).

    For answer position i, every problem and every subset S of the other D answer positions, the
    prompt and the true digits at S are shown and the rest of the answer is masked; the answer is
    a function of the prompt, so ``-log p_theta(c_i | prompt, c_S)`` is KL(p || p_theta) of that
    conditional. Returns ``{"nll": [D+1], "error": [D+1], "nll_mean", "error_mean"}``: the mean
    over problems and the 2^D subsets (uniformly) of that KL (nats) and of the indicator that the
    most likely digit is wrong; no sampling is involved.
    """
    D = _check_digits(D)
    m = D + 1
    truth = encode_problems(problems, D)
    pos = torch.tensor(answer_positions(D))
    patterns = torch.tensor([[(p >> j) & 1 for j in range(m)] for p in range(1, 2**m)],
                            dtype=torch.bool)  # which answer positions are masked
    nll, wrong = torch.zeros(m, dtype=torch.float64), torch.zeros(m, dtype=torch.float64)
    rows = torch.arange(len(problems)).repeat_interleave(len(patterns))
    pats = patterns.repeat(len(problems), 1)
    for s in range(0, len(rows), chunk):
        x = truth[rows[s:s + chunk]].clone()
        hid = pats[s:s + chunk]
        ans = x[:, pos]
        x[:, pos] = torch.where(hid, torch.full_like(ans, model.mask_id), ans)
        logp = model(x.to(model.device))[:, pos.to(model.device)].double().cpu()
        lp_true = logp.gather(-1, ans[..., None])[..., 0]
        miss = logp.argmax(-1) != ans
        nll += torch.where(hid, -lp_true, 0.0).sum(0)
        wrong += (hid & miss).sum(0)
    count = len(problems) * 2**D  # masked patterns per position
    nll, wrong = (nll / count).tolist(), (wrong / count).tolist()
    return {"nll": nll, "error": wrong, "nll_mean": sum(nll) / m, "error_mean": sum(wrong) / m}


# ---------------------------------------------------------------------- the order study
FLOOR = 0.5  # a model whose best order is below this is "at the floor": every order fails
SIGNIFICANT = 2.0  # a difference counts when it exceeds this many standard errors


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def rung_table(records: Sequence[dict], k: int = 1) -> list[dict]:
    """One row per rung ``(D, d_model, steps)`` of the arithmetic-orders records, its training
    seeds pooled: model error (``answer_nll`` of :func:`answer_error`), the spread of overall
    accuracy across orders at ``k`` (best minus worst order), the R2L - L2R gap and the best
    order's accuracy, each a mean over seeds with its standard error across seeds (NaN for one
    seed); ``orders``: per order, ``(mean, se)`` of overall accuracy over seeds; ``hard``: per
    order, ``(correct, n)`` summed over seeds and :data:`HARD_CATEGORIES`."""
    acc, err, hard = {}, {}, {}
    for r in records:
        rung, seed = (r["D"], r["d_model"], r["steps"]), r["train_seed"]
        if r["metric"] == "answer_nll":
            err[rung, seed] = r["value"]
        elif r["metric"] == "accuracy" and r["k"] == k:
            if r["category"] == "overall":
                acc.setdefault((rung, seed), {})[r["order"]] = r["value"]
            elif r["category"] in HARD_CATEGORIES:
                c, n = hard.setdefault(rung, {}).get(r["order"], (0, 0))
                hard[rung][r["order"]] = (c + r["correct"], n + r["n"])
    rows = []
    for rung in sorted({key[0] for key in acc}):
        seeds = sorted(s for (g, s) in acc if g == rung)
        per = [acc[rung, s] for s in seeds]
        stats = {"spread": [max(a.values()) - min(a.values()) for a in per],
                 "gap": [a["r2l"] - a["l2r"] for a in per if {"l2r", "r2l"} <= set(a)],
                 "best": [max(a.values()) for a in per],
                 "error": [err[rung, s] for s in seeds if (rung, s) in err]}
        row = {"D": rung[0], "d_model": rung[1], "steps": rung[2], "seeds": len(seeds),
               "hard": hard.get(rung, {}),
               "orders": {o: _mean_se([a[o] for a in per]) for o in per[0]}}
        for name, values in stats.items():
            row[name], row[f"{name}_se"] = _mean_se(values) if values else (float("nan"),) * 2
        rows.append(row)
    return rows


def _compare(diff: float, se: float) -> int:
    """+1 / -1 when ``diff`` is more than SIGNIFICANT standard errors above / below 0, else 0."""
    if not math.isfinite(se) or se <= 0:
        return 0
    return 1 if diff > SIGNIFICANT * se else -1 if diff < -SIGNIFICANT * se else 0


def claim_order_invariance(rows: Sequence[dict]) -> dict:
    """Verdict on "differences between orders grow with model error and shrink as the model
    approaches perfection", per task D then overall, from :func:`rung_table` rows.

    Per D, among rungs off the floor (best order >= FLOOR): the spread of the rung with the largest
    model error minus that of the rung with the smallest, with the standard errors across seeds
    combined (``diff``: ``{D: (difference, se)}``). ``yes`` when it is positive by more than
    SIGNIFICANT standard errors and the smallest-error rung is near-perfect (best order >= 0.99),
    ``no`` when it is negative by as much, ``inconclusive`` otherwise (also with fewer than two
    such rungs). Overall: the common verdict of the tasks, else ``inconclusive``."""
    per_d, diffs, evidence = {}, {}, []
    for D in sorted({r["D"] for r in rows}):
        live = sorted((r for r in rows if r["D"] == D and r["best"] >= FLOOR), key=lambda r: r["error"])
        if len(live) < 2:
            per_d[D] = "inconclusive"
            evidence.append(f"D={D}: fewer than two rungs off the floor")
            continue
        near, far = live[0], live[-1]
        diff, se = far["spread"] - near["spread"], math.hypot(far["spread_se"], near["spread_se"])
        sign = _compare(diff, se)
        diffs[D] = (diff, se)
        per_d[D] = ("yes" if sign > 0 and near["best"] >= 0.99 else "no" if sign < 0
                    else "inconclusive")
        evidence.append(
            f"D={D}: spread {far['spread']:.3f}±{far['spread_se']:.3f} at error "
            f"{far['error']:.3f} nats/digit (d{far['d_model']}/{far['steps']} steps) vs "
            f"{near['spread']:.3f}±{near['spread_se']:.3f} at {near['error']:.4f} (d{near['d_model']}"
            f"/{near['steps']}, best order {near['best']:.3f}): difference {diff:+.3f}±{se:.3f}")
    verdicts = set(per_d.values())
    verdict = verdicts.pop() if len(verdicts) == 1 else "inconclusive"
    return {"verdict": verdict, "per_D": per_d, "diff": diffs, "evidence": "; ".join(evidence)}


def claim_confidence(rows_by_k: dict[int, Sequence[dict]]) -> dict:
    """Verdict on "confidence-based orders beat the fixed L2R / R2L orders on the hard
    categories", from :func:`rung_table` rows per k (``{k: rows}``).

    For every rung off the floor and every k: the accuracy on :data:`HARD_CATEGORIES` (seeds
    pooled) of low-confidence minus that of the better of L2R and R2L, with the binomial standard
    error of the difference (unpaired, conservative). ``yes`` when some difference is positive by
    more than SIGNIFICANT standard errors and none is negative by as much, ``no`` in the mirror
    case, ``inconclusive`` otherwise. Margin and entropy are reported alongside."""
    comparisons = []
    for k, rows in sorted(rows_by_k.items()):
        for r in rows:
            h = r["hard"]
            if r["best"] < FLOOR or not set(FIXED_ORDERS) | {"confidence"} <= set(h):
                continue
            rate = {o: h[o][0] / h[o][1] for o in h if h[o][1]}
            fixed = max(FIXED_ORDERS, key=lambda o: rate[o])

            def diff(order, r=r, rate=rate, fixed=fixed):
                se = math.hypot(*(math.sqrt(rate[o] * (1 - rate[o]) / r["hard"][o][1])
                                  for o in (order, fixed)))
                return rate[order] - rate[fixed], se

            d, se = diff("confidence")
            others = {o: diff(o)[0] for o in CONFIDENCE_ORDERS[1:] if o in rate}
            comparisons.append({"D": r["D"], "d_model": r["d_model"], "steps": r["steps"], "k": k,
                                "fixed": fixed, "diff": d, "se": se, "sign": _compare(d, se),
                                "others": others})
    signs = {c["sign"] for c in comparisons}
    verdict = ("yes" if 1 in signs and -1 not in signs else "no" if -1 in signs and 1 not in signs
               else "inconclusive")
    lines = [f"D={c['D']} d{c['d_model']}/{c['steps']} k={c['k']}: {c['diff']:+.3f}±{c['se']:.3f} vs "
             f"{ORDER_LABELS[c['fixed']]}" for c in comparisons if c["sign"]]
    return {"verdict": verdict, "comparisons": comparisons,
            "evidence": (f"{sum(c['sign'] > 0 for c in comparisons)} of {len(comparisons)} "
                         f"comparisons favour low-confidence, {sum(c['sign'] < 0 for c in comparisons)}"
                         " favour the best fixed order (beyond 2 se)"
                         + (": " + "; ".join(lines) if lines else ""))}
