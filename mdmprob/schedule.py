"""The optimal schedule: the best adaptive deterministic mean-field policy, by dynamic programming.

A policy decides at every decoding state s (the visible tokens) which masked positions S = pi(s)
to commit next; the committed values are drawn from the exact marginals p(x_i | s) (mean-field,
one denoiser call per step). Within decoding blocks, S lies in the first block that still has
masks. Because the trajectory of such a policy is a function of its output,

    KL(q‖p) = E_q[ sum_t TC_rev(S_t | s_t) ],   TC_rev(S | s) = KL(prod_{i in S} p(x_i|s) ‖ p(x_S|s)),

and NFE is the number of steps. Dynamic programming over the states gives, exactly,

* :func:`optimal_policy`: the policy minimising KL(q‖p) + ``nfe_cost`` * E[NFE], optionally
  under a worst-case budget of ``max_nfe`` steps;
* :func:`frontier`: the lower convex hull of (E[NFE], KL(q‖p)) over all deterministic policies
  (every vertex is a deterministic policy, found by the parametric DP of the Lagrangian; between
  vertices, a coin flip between the two neighbours attains the chord);
* :func:`budget_frontier`: for each worst-case budget k = n_blocks .. n, the least KL(q‖p);
* :func:`regret`: a decoder's KL(q‖p) above the frontier at its expected NFE.

Small spaces only: the states are the (V+1)^n partial assignments and the target is one exact
table of V^n entries (nats throughout).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch

from mdmprob.errors import MdmprobError

MAX_STATES = 200_000  # (V+1)^n partial assignments the dynamic programme may visit
_TOL = 1e-12  # values within this are ties; ties go to the policy with fewer expected NFE
_LARGE_COST = 1e6  # nats per call: the fewest-NFE policy of finite KL

State = tuple[int, ...]  # one entry per position, -1 where masked


@dataclass(frozen=True)
class SchedulePoint:
    """One policy: its expected NFE, its exact KL(q‖p) in nats, and the set it commits at each
    reachable state: ``policy[state] = positions`` (a state a tuple with -1 where masked); under a
    worst-case budget the choice also depends on the steps left, ``policy[(state, left)]``."""

    nfe: float
    kl: float
    policy: dict = field(compare=False, repr=False)


def optimal_policy(structure, *, nfe_cost: float = 0.0, max_nfe: int | None = None,
                   initial: State | None = None, blocks=None) -> SchedulePoint:
    """The deterministic mean-field policy minimising KL(q‖p) + ``nfe_cost`` * E[NFE].

    ``max_nfe``: at most that many steps on every trajectory (None: no cap; a cap below the number
    of blocks with masks raises). Ties go to fewer expected NFE. ``initial``: the start state
    (default all masked). ``blocks``: the decoding blocks, decoded in order (default the
    structure's; ``[range(n)]`` lets a policy commit anywhere, as a decoder with one window).
    """
    return _Problem.of(structure, blocks).solve(nfe_cost, max_nfe, initial)


def frontier(structure, *, initial: State | None = None, blocks=None) -> list[SchedulePoint]:
    """The vertices of the lower convex hull of (E[NFE], KL(q‖p)) over all deterministic adaptive
    mean-field policies, by increasing NFE (decreasing KL): from one step per block to the fewest
    NFE that reach the least KL. No deterministic mean-field policy within ``blocks`` (default the
    structure's; see :func:`optimal_policy`) lies below it."""
    problem = _Problem.of(structure, blocks)
    cheap = problem.solve(0.0, problem.blocks_left(problem.start(initial)), initial)
    if not math.isfinite(cheap.kl):  # whole blocks at once put mass outside the support
        cheap = problem.solve(_LARGE_COST, None, initial)
    best = problem.solve(0.0, None, initial)  # least KL, then fewest steps
    hull = [cheap]
    _bisect(problem, initial, cheap, best, hull)
    if best.nfe > hull[-1].nfe + 1e-9 and best.kl < hull[-1].kl - 1e-12:
        hull.append(best)
    return hull


def budget_frontier(structure, *, initial: State | None = None, blocks=None
                    ) -> list[SchedulePoint]:
    """For each worst-case budget k = (blocks with masks) .. (masked positions): the policy with
    the least KL(q‖p) that takes at most k steps on every trajectory (ties: fewer E[NFE])."""
    problem = _Problem.of(structure, blocks)
    start = problem.start(initial)
    low = problem.blocks_left(start)
    high = sum(1 for v in start if v < 0)
    return [problem.solve(0.0, k, initial) for k in range(low, max(low, high) + 1)]


def regret(points: list[SchedulePoint], nfe: float, kl: float) -> float:
    """``kl`` minus the frontier's KL at ``nfe`` (the hull read linearly between its vertices;
    below the first vertex's NFE, that vertex's KL; past the last, the last's). Nats; >= 0 for
    any mean-field decoder with deterministic sets, +inf when ``kl`` is."""
    if not points:
        raise MdmprobError("regret needs a non-empty frontier (schedule.frontier(structure))")
    return kl - frontier_kl(points, nfe)


def decoder_windows(decoder, denoiser, structure) -> list[list[int]]:
    """The windows a decoder's regret is read within: its own (:meth:`windows` of the decoder on
    ``denoiser`` and the structure's blocks), or the whole sequence for a decoder without them."""
    if hasattr(decoder, "windows"):
        return [list(w) for w in decoder.windows(denoiser, structure.blocks)]
    return [list(range(structure.n_tokens))]


def frontier_kl(points: list[SchedulePoint], nfe: float) -> float:
    """The frontier's KL(q‖p) at expected NFE ``nfe``, linear between vertices."""
    if nfe <= points[0].nfe:
        return points[0].kl
    for a, b in itertools.pairwise(points):
        if nfe <= b.nfe:
            w = (nfe - a.nfe) / (b.nfe - a.nfe)
            return a.kl + w * (b.kl - a.kl) if w < 1 else b.kl
    return points[-1].kl


def policy_value(structure, policy: dict, *, initial: State | None = None,
                 blocks=None) -> SchedulePoint:
    """The exact (E[NFE], KL(q‖p)) of a given stationary deterministic policy (``policy[state]`` =
    the positions committed there, for every reachable state)."""
    problem = _Problem.of(structure, blocks)
    return problem.evaluate(policy, problem.start(initial))


# ----------------------------------------------------------------------------------- the DP
class _Problem:
    """The exact target as one table, the states' options, and the dynamic programme."""

    def __init__(self, structure, blocks, joint):
        self.n, self.vocab = structure.n_tokens, structure.vocab
        self.blocks, self.joint = blocks, joint
        self._options: dict[State, list] = {}

    @classmethod
    def of(cls, structure, blocks=None) -> _Problem:
        """The problem of ``structure`` within ``blocks`` (cached on the structure)."""
        n = structure.n_tokens
        blocks = structure.blocks if blocks is None else blocks
        blocks = [sorted(int(i) for i in b) for b in blocks]
        if sorted(i for b in blocks for i in b) != list(range(n)) or not all(blocks):
            raise MdmprobError(f"blocks {blocks} must be non-empty and partition the positions "
                               f"0..{n - 1}")
        cache = structure.__dict__.setdefault("_schedule_problems", {})
        key = tuple(map(tuple, blocks))
        if key not in cache:
            joint = next(iter(cache.values())).joint if cache else cls.target(structure)
            cache[key] = cls(structure, blocks, joint)
        return cache[key]

    @staticmethod
    def target(structure) -> torch.Tensor:
        """log p(x) as one table ``[V] * n`` on the CPU."""
        n, vocab = structure.n_tokens, structure.vocab
        states = (vocab + 1) ** n
        if states > MAX_STATES:
            raise MdmprobError(
                f"{structure.name!r} has (V+1)^n = {states:.3g} decoding states, over the "
                f"{MAX_STATES} the optimal schedule enumerates; use a smaller instance "
                "(fewer positions or a smaller vocabulary)")
        engine = structure.engine()
        everything = torch.zeros(1, n, dtype=torch.long, device=engine.device)
        hidden = torch.zeros(1, n, dtype=torch.bool, device=engine.device)
        return engine.block_joint(everything, hidden, tuple(range(n)))[0].to("cpu", torch.float64)

    def start(self, initial) -> State:
        if initial is None:
            return (-1,) * self.n
        state = tuple(int(v) for v in initial)
        if len(state) != self.n or any(not -1 <= v < self.vocab for v in state):
            raise MdmprobError(f"initial state {state} must hold {self.n} entries in "
                               f"-1 (masked) .. {self.vocab - 1}")
        return state

    def blocks_left(self, state: State) -> int:
        return sum(1 for b in self.blocks if any(state[i] < 0 for i in b))

    def solve(self, nfe_cost: float, max_nfe: int | None, initial) -> SchedulePoint:
        if isinstance(nfe_cost, bool) or not math.isfinite(nfe_cost) or nfe_cost < 0:
            raise MdmprobError(f"nfe_cost={nfe_cost!r} must be a finite number >= 0 (nats per "
                               "denoiser call)")
        start = self.start(initial)
        if max_nfe is not None:
            need = self.blocks_left(start)
            if isinstance(max_nfe, bool) or not isinstance(max_nfe, int) or max_nfe < need:
                raise MdmprobError(
                    f"max_nfe={max_nfe!r} is below one denoiser call per block: the start state "
                    f"has {need} blocks with masks, so the budget must be an integer >= {need}")
        memo: dict = {}
        policy: dict = {}

        def value(state, left):
            key = (state, left)
            if key in memo:
                return memo[key]
            if all(v >= 0 for v in state):
                memo[key] = (0.0, 0.0, 0.0)
                return memo[key]
            if left is not None and left < self.blocks_left(state):
                memo[key] = (math.inf, math.inf, math.inf)
                return memo[key]
            best = None
            for subset, tc, successors in self.options(state):
                total, kl, nfe = nfe_cost + tc, tc, 1.0
                for prob, nxt in successors:
                    if nxt is None:  # impossible under p: its +inf is already in tc
                        continue
                    sub = value(nxt, None if left is None else left - 1)
                    total, kl, nfe = total + prob * sub[0], kl + prob * sub[1], nfe + prob * sub[2]
                if (best is None or total < best[0] - _TOL
                        or (abs(total - best[0]) <= _TOL and nfe < best[2])
                        or (total == best[0] == math.inf and nfe < best[2])):
                    best = (total, kl, nfe, subset)
            memo[key] = best[:3]
            policy[key] = best[3]
            return memo[key]

        _, kl, nfe = value(start, max_nfe)
        chosen = self._reachable(start, max_nfe, policy)
        return SchedulePoint(nfe, kl, chosen)

    def options(self, state: State) -> list:
        """Per candidate set S of the current block: (S, TC_rev(S | state), [(q(x_S), next)])."""
        if state in self._options:
            return self._options[state]
        masked = [i for i in range(self.n) if state[i] < 0]
        block = next(b for b in self.blocks if any(state[i] < 0 for i in b))
        open_ = [i for i in block if state[i] < 0]
        index = tuple(v if v >= 0 else slice(None) for v in state)
        post = self.joint[index]
        log_z = torch.logsumexp(post.reshape(-1), 0)
        post = post - log_z  # axes: masked positions, ascending
        out = []
        for r in range(1, len(open_) + 1):
            for subset in itertools.combinations(open_, r):
                axes = [masked.index(i) for i in subset]
                rest = [a for a in range(len(masked)) if a not in axes]
                joint_s = torch.logsumexp(post, rest) if rest else post
                singles = [torch.logsumexp(joint_s, [b for b in range(r) if b != a])
                           if r > 1 else joint_s for a in range(r)]
                successors, tc = [], 0.0
                for values in itertools.product(range(self.vocab), repeat=r):
                    log_q = sum(float(m[v]) for m, v in zip(singles, values, strict=True))
                    if log_q == -math.inf:
                        continue
                    log_p = float(joint_s[values])
                    q = math.exp(log_q)
                    nxt = list(state)
                    for i, v in zip(subset, values, strict=True):
                        nxt[i] = v
                    if log_p == -math.inf:
                        tc = math.inf
                        successors.append((q, None))
                    else:
                        tc += q * (log_q - log_p)
                        successors.append((q, tuple(nxt)))
                out.append((subset, max(tc, 0.0), successors))
        self._options[state] = out
        return out

    def evaluate(self, policy: dict, state: State) -> SchedulePoint:
        """(E[NFE], KL) of ``policy`` from ``state`` by the same recursion, no minimum."""
        if all(v >= 0 for v in state):
            return SchedulePoint(0.0, 0.0, policy)
        if state not in policy:
            raise MdmprobError(f"the policy has no set for the reachable state {state}")
        chosen = tuple(sorted(int(i) for i in policy[state]))
        found = [o for o in self.options(state) if o[0] == chosen]
        if not found:
            raise MdmprobError(f"the policy commits {chosen} at state {state}; a set must be "
                               "non-empty and hold masked positions of the first block with "
                               "masks")
        _, tc, successors = found[0]
        kl, nfe = tc, 1.0
        for prob, nxt in successors:
            if nxt is not None:
                sub = self.evaluate(policy, nxt)
                kl, nfe = kl + prob * sub.kl, nfe + prob * sub.nfe
        return SchedulePoint(nfe, kl, policy)

    def _reachable(self, start, max_nfe, policy) -> dict:
        out, stack = {}, [(start, max_nfe)]
        while stack:
            state, left = stack.pop()
            key = state if max_nfe is None else (state, left)
            if (state, left) not in policy or key in out:
                continue
            subset = policy[(state, left)]
            out[key] = subset
            for _, _, successors in (o for o in self.options(state) if o[0] == subset):
                stack.extend((nxt, None if left is None else left - 1)
                             for _, nxt in successors if nxt is not None)
        return out


def _bisect(problem, initial, a: SchedulePoint, b: SchedulePoint, hull: list) -> None:
    """Eisner-Severance: the hull vertices strictly between ``a`` (fewer NFE) and ``b``."""
    if not (math.isfinite(a.kl) and math.isfinite(b.kl)) or b.nfe <= a.nfe + 1e-9:
        return
    slope = (a.kl - b.kl) / (b.nfe - a.nfe)
    if slope <= 0:
        return
    c = problem.solve(slope, None, initial)
    chord = a.kl + slope * a.nfe
    if c.kl + slope * c.nfe < chord - 1e-10 and a.nfe + 1e-9 < c.nfe < b.nfe - 1e-9:
        _bisect(problem, initial, a, c, hull)
        hull.append(c)
        _bisect(problem, initial, c, b, hull)


__all__ = ["MAX_STATES", "SchedulePoint", "budget_frontier", "decoder_windows", "frontier",
           "frontier_kl",
           "optimal_policy", "policy_value", "regret"]
