"""Deliberately simple one-sequence implementations of the dependency-aware, learned-policy,
joint-proposal and self-speculative decoders, for conformance.

Each function follows its paper's description on ONE sequence with plain Python floats and
returns the exact output law ``{x: q(x)}`` by walking every random choice recursively (the
conventions of :mod:`conformance_decoders`: values from :func:`conformance_decoders.value_law`,
confidences compared after rounding to 12 decimals). Nothing here imports mdmprob's decoder
code: only the denoiser is called (``probs(tokens)``), and the exact dependency graph is computed
by brute force from the structure's joint table.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import conformance_decoders as ref
import torch


def _go(model, start, step) -> dict:
    """The law of the final state of ``step(tokens, prob, emit)``, each state expanded until
    no mask is left (``emit(new_tokens, prob)`` continues from a new state)."""
    out: dict = defaultdict(float)

    def emit(tokens, prob):
        if prob == 0:
            return
        if model.mask not in tokens:
            out[tokens] += prob
            return
        step(tokens, prob, emit)

    emit(tuple(start), 1.0)
    return dict(out)


def _conf(P, i) -> float:
    return round(max(P[i]), 12)


def _by_confidence(P, masked) -> list[int]:
    return sorted(masked, key=lambda i: (-_conf(P, i), i))


def _commit_values(model, tokens, chosen, temperature, prob, emit):
    """Draw the values at ``chosen`` independently from the value law at ``tokens``."""
    P = model.probs(tokens)
    laws = [ref.value_law(P[i], temperature) for i in chosen]
    for combo in itertools.product(*[list(law.items()) for law in laws]):
        new = list(tokens)
        for i, (v, _) in zip(chosen, combo, strict=True):
            new[i] = v
        emit(tuple(new), prob * math.prod(p for _, p in combo))


# ------------------------------------------------------------------------------ exact graphs
class JointTable:
    """The target's joint law over all V^n sequences, for brute-force conditional MI."""

    def __init__(self, structure):
        n, V = structure.n_tokens, structure.vocab
        xs = list(itertools.product(range(V), repeat=n))
        lp = structure.engine().log_prob(torch.tensor(xs)).tolist()
        self.p = {x: math.exp(v) for x, v in zip(xs, lp, strict=True)}
        self.mask = V

    def cmi(self, tokens, i, j) -> float:
        """I(X_i; X_j | the visible tokens) in nats."""
        pair: dict = defaultdict(float)
        for x, px in self.p.items():
            if all(t == self.mask or t == x[k] for k, t in enumerate(tokens)):
                pair[(x[i], x[j])] += px
        z = sum(pair.values())
        a: dict = defaultdict(float)
        b: dict = defaultdict(float)
        for (u, v), w in pair.items():
            a[u] += w / z
            b[v] += w / z
        return sum(w / z * math.log((w / z) / (a[u] * b[v])) for (u, v), w in pair.items()
                   if w > 0)

    def graph(self, threshold):
        """``edges(tokens) -> set of frozenset pairs`` of masked positions."""
        def edges(tokens):
            masked = [i for i, t in enumerate(tokens) if t == self.mask]
            return {frozenset((i, j)) for i, j in itertools.combinations(masked, 2)
                    if self.cmi(tokens, i, j) > threshold}
        return edges


# ------------------------------------------------------------------------------ DAPD / DAWN
def dapd(model, edges, tau=0.0, temperature=0.0) -> dict:
    """DAPD (arXiv 2603.12996), one window: rank the masks by confidence (ties: lowest
    position); walk them in order, taking a mask when it has no graph edge to one taken and its
    confidence is >= tau (the first always); draw the taken values independently."""
    def step(tokens, prob, emit):
        P = model.probs(tokens)
        masked = [i for i, t in enumerate(tokens) if t == model.mask]
        graph = edges(tokens)
        taken = []
        for r, i in enumerate(_by_confidence(P, masked)):
            free = all(frozenset((i, j)) not in graph for j in taken)
            if r == 0 or (free and _conf(P, i) >= tau):
                taken.append(i)
        _commit_values(model, tokens, taken, temperature, prob, emit)
    return _go(model, [model.mask] * model.n, step)


def dawn(model, edges, tau_high, tau_relaxed, tau_low, temperature=0.0) -> dict:
    """DAWN (arXiv 2602.06953), one window: anchors = masks with confidence >= tau_high; a mask
    with an edge to an anchor joins at tau_relaxed; if none, the most confident; then, most
    confident first, any mask with confidence >= tau_low and no edge to a chosen one."""
    def step(tokens, prob, emit):
        P = model.probs(tokens)
        masked = [i for i, t in enumerate(tokens) if t == model.mask]
        graph = edges(tokens)
        anchors = [i for i in masked if _conf(P, i) >= tau_high]
        chosen = set(anchors) | {i for i in masked if _conf(P, i) >= tau_relaxed and any(
            frozenset((i, a)) in graph for a in anchors if a != i)}
        ranked = _by_confidence(P, masked)
        if not chosen:
            chosen = {ranked[0]}
        for i in ranked:
            if i not in chosen and _conf(P, i) >= tau_low and all(
                    frozenset((i, j)) not in graph for j in chosen):
                chosen.add(i)
        _commit_values(model, tokens, sorted(chosen), temperature, prob, emit)
    return _go(model, [model.mask] * model.n, step)


# ------------------------------------------------------------------------------ learned policy
def policy(model, module, temperature=1.0) -> dict:
    """Learned unmasking policy (arXiv 2512.09106), one window: features per mask (largest
    probability, entropy in nats, top-1 minus top-2, share of the masks already decoded);
    ``module`` maps them to unmask probabilities; each mask is unmasked independently with its
    probability; when none is, the most probable (lowest position among equal ones)."""
    n = model.n

    def step(tokens, prob, emit):
        P = model.probs(tokens)
        masked = [i for i, t in enumerate(tokens) if t == model.mask]
        feats = torch.zeros(1, n, 4, dtype=torch.float64)
        for i in masked:
            top = sorted(P[i], reverse=True)
            ent = -sum(p * math.log(p) for p in P[i] if p > 0)
            feats[0, i] = torch.tensor([top[0], ent, top[0] - top[1], 1 - len(masked) / n])
        with torch.no_grad():
            pi = module(feats).reshape(-1).tolist()
        best = max(masked, key=lambda i: (pi[i], -i))
        for pick in itertools.product([False, True], repeat=len(masked)):
            pr = math.prod(pi[i] if s else 1 - pi[i] for i, s in zip(masked, pick, strict=True))
            chosen = [i for i, s in zip(masked, pick, strict=True) if s] or [best]
            _commit_values(model, tokens, chosen, temperature, prob * pr, emit)
    return _go(model, [model.mask] * n, step)


# ------------------------------------------------------------------------------ joint / S2D2
def _selection(model, tokens, P, k, blocks, ties="random"):
    """The step's sets with their probabilities, inside the first block with masks: all its
    masks (k None), else its k most confident masks (random tie-break: every order of equal
    confidences)."""
    block = next(b for b in blocks if any(tokens[i] == model.mask for i in b))
    masked = sorted(i for i in block if tokens[i] == model.mask)
    if k is None:
        return [(masked, 1.0)]
    conf = {i: max(P[i]) for i in masked}
    out: dict = defaultdict(float)
    for order, w in ref._tie_orders(masked, ties, conf):
        out[tuple(sorted(ref._ranked(masked, conf, order)[:k]))] += w
    return [(list(s), w) for s, w in out.items()]


def joint(model, k=None, blocks=None, temperature=1.0) -> dict:
    """Joint proposal (CoDD arXiv 2603.00045, CoDiLA arXiv 2603.20216): the step's set is
    filled left to right, each value drawn from the value law of the model at the state with the
    set's earlier values written."""
    def step(tokens, prob, emit):
        P = model.probs(tokens)
        for chosen, w in _selection(model, tokens, P, k, blocks):
            def chain(cur, pr, rest):
                if not rest:
                    emit(cur, pr)
                    return
                law = ref.value_law(model.probs(cur)[rest[0]], temperature)
                for v, pv in law.items():
                    chain(cur[:rest[0]] + (v,) + cur[rest[0] + 1:], pr * pv, rest[1:])
            chain(tokens, prob * w, chosen)
    return _go(model, [model.mask] * model.n, step)


def self_speculative(model, k=None, blocks=None, temperature=1.0, verify=None) -> dict:
    """S2D2 (arXiv 2603.25702): draft every position of the step's set at once from the value
    law of the marginals; then left to right, the first position is kept, each later draft x
    is accepted with probability min(1, p(x) / q(x)), p the value law of the model at the state
    with the accepted prefix written; the first rejected position is redrawn from the residual
    (p - q)_+ and the step ends. ``verify(P, chosen) -> bool`` (default: always) decides whether
    the step verifies; if not, the draft is kept whole. Walks every draft and every coin."""
    def step(tokens, prob, emit):
        P = model.probs(tokens)
        for chosen, w in _selection(model, tokens, P, k, blocks):
            qs = [ref.value_law(P[i], temperature) for i in chosen]
            check = verify is None or verify(P, chosen)
            for draft in itertools.product(*[list(q.items()) for q in qs]):
                pd = math.prod(p for _, p in draft)
                values = [v for v, _ in draft]

                def walk(cur, pr, j, chosen=chosen, values=values, check=check, qs=qs):
                    if j == len(chosen):
                        emit(cur, pr)
                        return
                    i, x = chosen[j], values[j]
                    put = lambda v: cur[:i] + (v,) + cur[i + 1:]  # noqa: E731
                    if j == 0 or not check:
                        walk(put(x), pr, j + 1)
                        return
                    p = ref.value_law(model.probs(cur)[i], temperature)
                    q = qs[j]
                    a = min(1.0, p.get(x, 0.0) / q[x])
                    walk(put(x), pr * a, j + 1)
                    res = {v: max(0.0, p.get(v, 0.0) - q.get(v, 0.0)) for v in range(model.V)}
                    z = sum(res.values())
                    if 1 - a > 0 and z > 0:
                        for v, r in res.items():
                            if r > 0:
                                emit(put(v), pr * (1 - a) * r / z)
                walk(tokens, prob * w * pd, 0)
    return _go(model, [model.mask] * model.n, step)
