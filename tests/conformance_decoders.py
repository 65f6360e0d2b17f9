"""Deliberately simple one-sequence implementations of the published decoders, for conformance.

Each function follows its paper's pseudo-code (and the documented behaviour of the published code,
research/decoders.md, decoders-2026.md) on ONE sequence with plain Python floats, and returns the
exact output law ``{x: q(x)}`` by walking every random choice recursively:

* values: drawn at every masked position of the block from softmax(log p / T) (T = 0: argmax,
  probabilities rounded to 12 decimals, the lowest value among equal ones), optionally cut to
  the top-k values or the top-p nucleus (:func:`value_law`);
* ties: a uniformly random tie-break is a uniformly random permutation of the positions used as
  the second sort key, so the law is the average over all permutations (``ties="random"``);
  ``ties="lowest_position"`` sorts by position instead;
* confidences are compared after rounding to 12 decimals (float round-off is not a preference).

Nothing here imports mdmprob's decoder code: only the denoiser is called, as ``probs(tokens)``.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import torch


class Model:
    """``probs(tokens) -> [n][V]`` probabilities from an mdmprob denoiser, cached per state."""

    def __init__(self, denoiser):
        self.denoiser, self.cache = denoiser, {}
        self.n, self.V, self.mask = denoiser.n_tokens, denoiser.vocab, denoiser.mask_id

    def probs(self, tokens: tuple) -> list[list[float]]:
        if tokens not in self.cache:
            t = torch.tensor([tokens], dtype=torch.long, device=self.denoiser.device)
            self.cache[tokens] = self.denoiser(t)[0].exp().tolist()
        return self.cache[tokens]


def value_law(p: list[float], temperature: float, top_k=None, top_p=None,
              nucleus: str = "standard") -> dict[int, float]:
    """The law of one drawn value (see the module docstring)."""
    V = len(p)
    if temperature == 0:
        best = max(range(V), key=lambda v: (round(p[v], 12), -v))
        return {best: 1.0}
    w = [pv ** (1 / temperature) if pv > 0 else 0.0 for pv in p]
    total = sum(w)
    q = [x / total for x in w]
    keep = [qv > 0 for qv in q]
    if top_k is not None:
        kth = sorted(q, reverse=True)[min(top_k, V) - 1]
        keep = [k and qv >= kth for k, qv in zip(keep, q, strict=True)]
        total = sum(qv for k, qv in zip(keep, q, strict=True) if k)
        q = [qv / total if k else 0.0 for k, qv in zip(keep, q, strict=True)]
    if top_p is not None:
        top = max(q)
        if nucleus == "standard":
            keep = [sum(u for u in q if u > qv) < top_p for qv in q]
        else:
            keep = [sum(u for u in q if u >= qv) <= top_p + 1e-12 or qv == top for qv in q]
        keep = [k and qv > 0 for k, qv in zip(keep, q, strict=True)]
        total = sum(qv for k, qv in zip(keep, q, strict=True) if k)
        q = [qv / total if k else 0.0 for k, qv in zip(keep, q, strict=True)]
    return {v: qv for v, qv in enumerate(q) if qv > 0}


def _ranked(positions, conf, order) -> list[int]:
    """Positions by confidence (rounded) descending, ties by their rank in ``order``."""
    rank = {p: i for i, p in enumerate(order)}
    return sorted(positions, key=lambda i: (-round(conf[i], 12), rank[i]))


def _tie_orders(positions, ties, conf=None):
    """(order, weight) pairs: the positions in order (``lowest_position``), or every order of the
    positions with equal confidence, equally likely (random ties: a uniformly random permutation
    of all positions as second key, with the orders that cannot matter summed out)."""
    if ties == "lowest_position":
        return [(sorted(positions), 1.0)]
    if conf is None:
        conf = dict.fromkeys(positions, 0.0)
    groups = defaultdict(list)
    for i in sorted(positions):
        groups[round(conf[i], 12)].append(i)
    parts = [list(itertools.permutations(g)) for g in groups.values()]
    weight = 1.0 / math.prod(len(p) for p in parts)
    return [([i for perm in combo for i in perm], weight) for combo in itertools.product(*parts)]


def top_commits(tokens, masked, key, count, draw, ties):
    """Each way of committing the ``count`` masks with the largest ``key`` to their drawn
    values, over the orders of tied keys: (new tokens as a tuple, probability of that order)."""
    for order, weight in _tie_orders(masked, ties, key):
        new = list(tokens)
        for i in _ranked(masked, key, order)[:count]:
            new[i] = draw[i]
        yield tuple(new), weight


def _draws(model, tokens, positions, temperature, top_k, top_p, nucleus):
    """Every joint draw at ``positions``: (dict position -> value, probability)."""
    P = model.probs(tokens)
    laws = [value_law(P[i], temperature, top_k, top_p, nucleus) for i in positions]
    for combo in itertools.product(*[list(law.items()) for law in laws]):
        prob = math.prod(pr for _, pr in combo)
        yield dict(zip(positions, (v for v, _ in combo), strict=True)), prob


# ------------------------------------------------------------------------------------ LLaDA
def llada(model, steps: int, block_length: int | None, remasking: str = "low_confidence",
          temperature: float = 0.0, ties: str = "random", initial=None, top_k=None,
          top_p=None) -> dict:
    """LLaDA ``generate`` (arXiv 2502.09992, Alg. 4-5 and the released code): blocks of
    ``block_length``; ``steps`` in all, steps / blocks per block; each block's masks split evenly
    over its steps (remainder to the earliest); at every step draw all masked positions of the
    block, confidence = probability of the drawn value (``low_confidence``) or uniform random
    (``random``), commit the top ``k`` of this step (possibly 0)."""
    n = model.n
    blocks = _contiguous(n, block_length)
    assert steps % len(blocks) == 0
    per = steps // len(blocks)
    start = tuple(initial) if initial is not None else (model.mask,) * n
    out: dict = defaultdict(float)

    def block_loop(tokens, b, step, counts, prob):
        if b == len(blocks):
            out[tokens] += prob
            return
        if step == per:
            nxt = b + 1
            if nxt < len(blocks):
                m = sum(tokens[i] == model.mask for i in blocks[nxt])
                counts = [m // per + (s < m % per) for s in range(per)]
            block_loop(tokens, nxt, 0, counts, prob)
            return
        masked = [i for i in blocks[b] if tokens[i] == model.mask]
        k = counts[step]
        if k == 0 or not masked:
            block_loop(tokens, b, step + 1, counts, prob)
            return
        for draw, pd in _draws(model, tokens, masked, temperature, top_k, top_p, "standard"):
            P = model.probs(tokens)
            conf = {i: P[i][draw[i]] if remasking == "low_confidence" else 0.0 for i in masked}
            order_ties = "random" if remasking == "random" else ties
            for order, pw in _tie_orders(masked, order_ties, conf):
                chosen = _ranked(masked, conf, order)[:k]
                new = list(tokens)
                for i in chosen:
                    new[i] = draw[i]
                block_loop(tuple(new), b, step + 1, counts, prob * pd * pw)

    m0 = sum(start[i] == model.mask for i in blocks[0])
    block_loop(start, 0, 0, [m0 // per + (s < m0 % per) for s in range(per)], 1.0)
    return dict(out)


# ------------------------------------------------------------------------------------ Fast-dLLM
def fast_dllm(model, rule: str, param: float, blocks, temperature: float = 0.0,
              confidence: str = "draw", variant: str = "reference", ties: str = "random",
              initial=None, top_k=None, top_p=None) -> dict:
    """Fast-dLLM (arXiv 2505.22618) parallel decoding inside each block until it is complete:
    draw every masked position of the block; confidence = probability of the drawn value
    (``draw``, the released ``get_transfer_index``) or the largest probability (``max_prob``);
    ``threshold``: the most confident one plus every other with confidence >= tau; ``factor``:
    thresholds 1 - f / (n + 1) on the sorted confidences, the first one always passes, stop at
    the first failure; the released code commits all when that failure is at the last candidate
    (``variant="reference"``); the paper's rule is the largest n with (n + 1)(1 - c_(n)) < f."""
    n = model.n
    start = tuple(initial) if initial is not None else (model.mask,) * n
    out: dict = defaultdict(float)

    def go(tokens, b, prob):
        while b < len(blocks) and all(tokens[i] != model.mask for i in blocks[b]):
            b += 1
        if b == len(blocks):
            out[tokens] += prob
            return
        masked = [i for i in blocks[b] if tokens[i] == model.mask]
        P = model.probs(tokens)
        for draw, pd in _draws(model, tokens, masked, temperature, top_k, top_p, "standard"):
            conf = {i: P[i][draw[i]] if confidence == "draw" else max(P[i]) for i in masked}
            for order, pw in _tie_orders(masked, ties, conf):
                ranked = _ranked(masked, conf, order)
                c = [round(conf[i], 12) for i in ranked]
                if rule == "threshold":
                    k = max(1, sum(ci >= param for ci in c))
                elif variant == "reference":
                    thresholds = [1 - param / (j + 1) for j in range(1, len(c) + 1)]
                    thresholds[0] = -1
                    top = len(c) - 1
                    for j, (ci, th) in enumerate(zip(c, thresholds, strict=True)):
                        if ci < th:
                            top = j
                            break
                    k = top + 1 if top in (0, len(c) - 1) else top
                else:
                    k = max([1] + [j for j in range(1, len(c) + 1)
                                   if (j + 1) * (1 - c[j - 1]) < param])
                new = list(tokens)
                for i in ranked[:k]:
                    new[i] = draw[i]
                go(tuple(new), b, prob * pd * pw)

    go(start, 0, 1.0)
    return dict(out)


# ------------------------------------------------------------------------------------ MDLM
def mdlm(model, steps: int, temperature: float = 1.0, initial=None, top_k=None,
         top_p=None) -> dict:
    """MDLM ancestral sampling (arXiv 2406.07524) on a linear schedule over ``steps`` steps: at
    step j (0-based) every masked position is revealed independently with probability
    1 / (steps - j) (everything at the last step), its value drawn from the model."""
    n = model.n
    start = tuple(initial) if initial is not None else (model.mask,) * n
    out: dict = defaultdict(float)

    def go(tokens, j, prob):
        masked = [i for i in range(n) if tokens[i] == model.mask]
        if not masked:
            out[tokens] += prob
            return
        rate = 1.0 / (steps - j)
        for reveal in itertools.product([False, True], repeat=len(masked)):
            pr = math.prod(rate if r else 1 - rate for r in reveal)
            if pr == 0:
                continue
            chosen = [i for i, r in zip(masked, reveal, strict=True) if r]
            for draw, pd in _draws(model, tokens, chosen, temperature, top_k, top_p,
                                   "standard"):
                new = list(tokens)
                for i in chosen:
                    new[i] = draw[i]
                go(tuple(new), j + 1, prob * pr * pd)

    go(start, 0, 1.0)
    return dict(out)


# ------------------------------------------------------------------------------------ Easy-First
def sequential_entropy(model, temperature: float = 1.0, ties: str = "random",
                       initial=None) -> dict:
    """Easy-First (one token per step, the masked position of lowest model entropy first, its
    value drawn from the model)."""
    n = model.n
    start = tuple(initial) if initial is not None else (model.mask,) * n
    out: dict = defaultdict(float)

    def go(tokens, prob):
        masked = [i for i in range(n) if tokens[i] == model.mask]
        if not masked:
            out[tokens] += prob
            return
        P = model.probs(tokens)
        key = {i: sum(p * math.log(p) for p in P[i] if p > 0) for i in masked}  # -entropy
        for order, pw in _tie_orders(masked, ties, key):
            i = _ranked(masked, key, order)[0]
            for v, pv in value_law(P[i], temperature).items():
                new = list(tokens)
                new[i] = v
                go(tuple(new), prob * pw * pv)

    go(start, 1.0)
    return dict(out)


def _contiguous(n, block_length):
    length = n if block_length is None else block_length
    return [list(range(s, min(s + length, n))) for s in range(0, n, length)]


def as_table(law: dict, n: int, V: int) -> torch.Tensor:
    """The law as a probability vector over row-major codes ``[V^n]``."""
    table = torch.zeros(V ** n, dtype=torch.float64)
    for x, pr in law.items():
        table[sum(v * V ** (n - 1 - i) for i, v in enumerate(x))] += pr
    return table


# ------------------------------------------------------------------------------------ revoking
def _kl(p, q) -> float:
    total = 0.0
    for pv, qv in zip(p, q, strict=True):
        if pv > 0:
            if qv == 0:
                return math.inf
            total += pv * math.log(pv / qv)
    return total


def _hidden(tokens, i, mask):
    return tokens[:i] + (mask,) + tokens[i + 1:]


def klass(model, steps: int, conf_threshold: float, kl_threshold: float, history: int,
          block_length: int | None, temperature: float = 0.0, ties: str = "random",
          initial=None) -> dict:
    """KLASS ``stable_confident_decode`` (arXiv 2511.05664): blocks of ``block_length``, steps /
    blocks steps each. At every step q = the model's distribution; KL_i = KL(q_i || q_i of the
    previous step) (+inf at the first step; the history runs across blocks); a masked position
    of the block is ready when max q_i > conf_threshold, the block step j >= history - 1 and its
    last ``history`` KLs are < kl_threshold. Ready positions are all committed; none ready: the
    top k by max q_i, k = LLaDA's even split of the block's masks (at least 1); the block's last
    step commits all. Values drawn from q^(1/T) (T = 0: argmax)."""
    n = model.n
    blocks = _contiguous(n, block_length)
    per = steps // len(blocks)
    start = tuple(initial) if initial is not None else (model.mask,) * n
    out: dict = defaultdict(float)

    def go(tokens, b, j, opened, prev, hist, prob):
        while b < len(blocks) and all(tokens[i] != model.mask for i in blocks[b]):
            b, j = b + 1, 0
            opened = sum(tokens[i] == model.mask for i in blocks[b]) if b < len(blocks) else 0
        if b == len(blocks):
            out[tokens] += prob
            return
        P = model.probs(tokens)
        kls = [_kl(P[i], prev[i]) if prev is not None else math.inf for i in range(n)]
        hist = tuple(h[1:] + (k,) for h, k in zip(hist, kls, strict=True))
        masked = [i for i in blocks[b] if tokens[i] == model.mask]
        conf = {i: max(P[i]) for i in masked}
        ready = [i for i in masked if conf[i] > conf_threshold and j >= history - 1
                 and all(h < kl_threshold for h in hist[i])]
        if j >= per - 1:
            choices = [(masked, 1.0)]
        elif ready:
            choices = [(ready, 1.0)]
        else:
            k = max(1, opened // per + (j < opened % per))
            choices = [(_ranked(masked, conf, order)[:k], w)
                       for order, w in _tie_orders(masked, ties, conf)]
        for chosen, w in choices:
            for draw, pd in _draws(model, tokens, chosen, temperature, None, None, "standard"):
                new = list(tokens)
                for i in chosen:
                    new[i] = draw[i]
                go(tuple(new), b, j + 1, opened, P, hist, prob * w * pd)

    opened0 = sum(start[i] == model.mask for i in blocks[0])
    go(start, 0, 0, opened0, None, tuple((math.inf,) * history for _ in range(n)), 1.0)
    return dict(out)


def remdm_conf(model, steps: int, temperature: float = 1.0, top_k=None, top_p=None,
               nucleus: str = "drop_crossing") -> dict:
    """ReMDM ``conf`` (arXiv 2503.00307): alpha_j = j/steps; at step j every visible token i is
    remasked with probability sigma_max * softmax_k(-c_k)_i over the visible k (c_k: the
    probability of its value under the drawing law when it was committed), sigma_max =
    min(1, (1 - alpha_s)/alpha_t) (1 at the first step); every mask is revealed with probability
    (alpha_s - alpha_t)/(1 - alpha_t), value drawn. The law of (tokens, c) is propagated."""
    n = model.n
    laws: dict = {((model.mask,) * n, (0.0,) * n): 1.0}
    for j in range(1, steps + 1):
        a_t, a_s = (j - 1) / steps, j / steps
        sigma_max = 1.0 if a_t == 0 else min(1.0, (1 - a_s) / a_t)
        u = (a_s - a_t) / (1 - a_t)
        nxt: dict = defaultdict(float)
        for (tokens, conf), prob in laws.items():
            P = model.probs(tokens)
            vis = [i for i in range(n) if tokens[i] != model.mask]
            z = sum(math.exp(-conf[i]) for i in vis)
            options = []
            for i in range(n):
                if tokens[i] != model.mask:
                    s = sigma_max * math.exp(-conf[i]) / z
                    options.append([((tokens[i], conf[i]), 1 - s), ((model.mask, 0.0), s)])
                else:
                    law = value_law(P[i], temperature, top_k, top_p, nucleus)
                    options.append([((model.mask, 0.0), 1 - u)] +
                                   [((v, pv), u * pv) for v, pv in law.items()])
            for combo in itertools.product(*options):
                pr = math.prod(p for _, p in combo)
                if pr > 0:
                    nxt[(tuple(t for (t, _), _ in combo),
                         tuple(c for (_, c), _ in combo))] += prob * pr
        laws = nxt
    out: dict = defaultdict(float)
    for (tokens, _), prob in laws.items():
        out[tokens] += prob
    return dict(out)


def wino(model, tau_wide: float, tau_narrow: float, block_length: int | None,
         temperature: float = 0.0, initial=None) -> dict:
    """WINO ``decoding_wino`` (arXiv 2507.18578): per step of a block, values drawn at every
    mask of the block, c_i = q_i(draw); commit c_i > tau_wide, at most min(max(floor(0.7|M|), 5),
    20) (most confident), at least the most confident (lower position first among equals); if
    more than one was committed, remask the earlier drafts of the block whose leave-one-out
    probability < tau_narrow, or the L - 1 least such when there are >= L of them (L: the last
    step's accept count, 30 when a block opens). Prompt tokens are never remasked."""
    n = model.n
    blocks = _contiguous(n, block_length)
    start = tuple(initial) if initial is not None else (model.mask,) * n
    fixed = {i for i in range(n) if start[i] != model.mask}
    out: dict = defaultdict(float)

    def go(tokens, b, last, prob):
        while b < len(blocks) and all(tokens[i] != model.mask for i in blocks[b]):
            b, last = b + 1, 30
        if b == len(blocks):
            out[tokens] += prob
            return
        P = model.probs(tokens)
        masked = [i for i in blocks[b] if tokens[i] == model.mask]
        drafts = [i for i in blocks[b] if tokens[i] != model.mask and i not in fixed]
        back = {i: model.probs(_hidden(tokens, i, model.mask))[i][tokens[i]] for i in drafts}
        for draw, pd in _draws(model, tokens, masked, temperature, None, None, "standard"):
            conf = {i: P[i][draw[i]] for i in masked}
            ranked = sorted(masked, key=lambda i: (-round(conf[i], 12), i))
            cap = min(max(len(masked) * 7 // 10, 5), 20)
            take = [i for i in masked if conf[i] > tau_wide]
            if len(take) > cap:
                take = ranked[:cap]
            elif not take:
                take = ranked[:1]
            remask = []
            if len(take) > 1:
                remask = [i for i in drafts if back[i] < tau_narrow]
                if len(remask) >= last:
                    remask = sorted(drafts, key=lambda i: (round(back[i], 12), i))[:last - 1]
            new = list(tokens)
            for i in take:
                new[i] = draw[i]
            for i in remask:
                new[i] = model.mask
            go(tuple(new), b, len(take), prob * pd)

    go(start, 0, 30, 1.0)
    return dict(out)


def p2(model, steps: int, eta: float, alpha: float, temperature: float = 0.0,
       initial=None) -> dict:
    """P2 self-planning (arXiv 2502.03540): step i = 1..steps draws x0 at every mask and scores
    every non-prompt position j: masked alpha log q_j(x0_j) + (1 - alpha) negent(q_j); generated
    eta (alpha log r_j(x_j) + (1 - alpha) negent(r_j)), r_j the leave-one-out conditional; the
    floor((1 - i/steps) N) lowest are masked (the later position first among equal scores), masks
    not chosen take x0, generated tokens not chosen keep their value."""
    n = model.n
    start = tuple(initial) if initial is not None else (model.mask,) * n
    free = [i for i in range(n) if start[i] == model.mask]

    def score(p, v):
        negent = sum(pv * math.log(pv) for pv in p if pv > 0)
        lp = math.log(p[v]) if p[v] > 0 else -math.inf
        return (1 - alpha) * negent + (alpha * lp if alpha > 0 else 0.0)

    laws: dict = {start: 1.0}
    for i in range(1, steps + 1):
        k = (steps - i) * len(free) // steps
        nxt: dict = defaultdict(float)
        for tokens, prob in laws.items():
            P = model.probs(tokens)
            masked = [j for j in free if tokens[j] == model.mask]
            gen = {j: eta * score(model.probs(_hidden(tokens, j, model.mask))[j], tokens[j])
                   for j in free if tokens[j] != model.mask}
            for draw, pd in _draws(model, tokens, masked, temperature, None, None, "standard"):
                s = dict(gen)
                s.update({j: score(P[j], draw[j]) for j in masked})
                chosen = sorted(free, key=lambda j: (round(s[j], 12), -j))[:k]
                new = list(tokens)
                for j in masked:
                    new[j] = draw[j]
                for j in chosen:
                    new[j] = model.mask
                nxt[tuple(new)] += prob * pd
        laws = nxt
    return dict(laws)
