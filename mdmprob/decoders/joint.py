"""Joint proposals and self-speculative verification: values of a parallel commit drawn from a
law over the committed set instead of the product of its marginals.

Both walk the selected set S = (s_1 < s_2 < ... < s_m) left to right and read the denoiser's
one-token-at-a-time conditionals p_j = p_theta(x_{s_j} | state, x_{s_1..s_{j-1}}) (the value
law applied: temperature, top-k, top-p); p_1 is the marginal at the state, each later one costs
a denoiser call at a sub-state.

* **Joint proposal** (CoDD, arXiv 2603.00045; CoDiLA, arXiv 2603.20216): the committed block is
  drawn from the left-to-right chain of conditionals, log-pmf sum_j log p_j(x_{s_j}). CoDD
  replaces the factorised output by a tractable copula and CoDiLA decodes each block with a small
  autoregressive model; here the explicit joint law is the denoiser's own chain inside the set
  (its exact log-pmf is what matters). With exact conditionals the block is drawn from the true
  p(x_S | state): mean-field blocks made joint have KL(q || p) = 0.
* **Self-speculative verification** (S2D2, arXiv 2603.25702): a parallel draft d_j (the value
  law of the marginals at the state, all positions drawn at once) verified against the same
  denoiser's conditionals p_j left to right: accept x_j with probability min(1, p_j / d_j), on
  the first rejection resample x_j from the residual (p_j - d_j)_+ and end the step (later
  positions of S stay masked for the next step). The step commits a prefix T = s_1..s_L of S
  with probability prod_{j<L} min(p_j, d_j)(x_j) * [(p_L - d_L)_+(x_L), or p_L(x_L) when
  L = m]; every committed token is drawn from p_j, so with an exact denoiser the output law is
  exact. A *router* decides, from the state, whether a step verifies; an unverified step commits
  the whole draft (the product of the marginals).

NFE: each sub-state conditional of the joint proposal is one call; a verification costs one
call per step (``verify_cost="pass"``: the reference scores the whole draft in one block-causal
pass) or one per verified token after the first (``"token"``: a denoiser without a causal mode
evaluates each prefix). Run records: ``verified`` (positions checked) and ``rejected`` per
sequence, in ``DecodeResult.diagnostics``.
"""

from __future__ import annotations

import math

import torch

from mdmprob.checks import check_prob
from mdmprob.decoders.composed import StepState, restrict
from mdmprob.errors import MdmprobError, unknown_name
from mdmprob.sampling import gumbel_argmax

MODES = {"joint": "the left-to-right chain of conditionals inside the set (joint proposal)",
         "speculative": "a parallel draft verified against the conditionals (self-speculative)"}
ROUTERS = {"always": "verify every step that commits two or more positions",
           "confidence": "verify when the least confident selected position has a largest "
                         "marginal probability below route_tau"}
VERIFY_COSTS = {"pass": "one call per verification (one block-causal pass)",
                "token": "one call per verified token after the first"}


class PrefixKernel:
    """The kernel of both laws (see the module docstring), ``mode`` ``"joint"`` or
    ``"speculative"``; ``router`` (speculative) a name of :data:`ROUTERS` or a callable
    ``(logp [B, n, V], sel [B, n]) -> bool [B]``."""

    product = False

    def __init__(self, mode: str = "joint", router="always", route_tau: float = 0.9,
                 verify_cost: str = "pass"):
        if mode not in MODES:
            raise unknown_name("joint kernel mode", str(mode), MODES)
        if isinstance(router, str) and router not in ROUTERS:
            raise unknown_name("router", router, ROUTERS)
        if not isinstance(router, str) and not callable(router):
            raise MdmprobError(f"router={router!r} must be one of {list(ROUTERS)} or a callable "
                               "(logp [B, n, V], sel [B, n]) -> bool [B]")
        if verify_cost not in VERIFY_COSTS:
            raise unknown_name("verify_cost", str(verify_cost), VERIFY_COSTS)
        check_prob("route_tau", route_tau)
        self.mode, self.router, self.route_tau = mode, router, float(route_tau)
        self.verify_cost = verify_cost
        self.joint = mode == "joint"
        self.commits_selection = self.marginal = self.joint
        self.name = mode

    # ------------------------------------------------------------------------------- pieces
    @staticmethod
    def order(sel: torch.Tensor):
        """``(positions [B, n] of sel in ascending order first, m [B])``."""
        return torch.sort((~sel).to(torch.int8), dim=-1, stable=True).indices, sel.sum(-1)

    def verifies(self, state: StepState, sel: torch.Tensor) -> torch.Tensor:
        """Rows whose step reads sub-state conditionals, ``bool [B]``."""
        many = sel.sum(-1) >= 2
        if self.joint or self.router == "always":
            return many
        if self.router == "confidence":
            conf = state.view.logp.amax(-1).exp().masked_fill(~sel, math.inf)
            return many & (conf.amin(-1) < self.route_tau)
        out = torch.as_tensor(self.router(state.view.logp, sel), device=sel.device)
        if out.shape != many.shape or out.dtype != torch.bool:
            raise MdmprobError(f"the router returned {out.dtype} {tuple(out.shape)}; it must "
                               f"return bool [B] = [{many.shape[0]}] (verify this step or not)")
        return many & out

    def laws(self, state: StepState, tokens, pos, check, j: int):
        """``(p, d)`` ``[R, V]`` at level ``j``: the target (a conditional at ``tokens`` for the
        ``check`` rows, past the first level) and the draft law."""
        row = torch.arange(tokens.shape[0], device=tokens.device)
        q = state.values_lp[row, pos]
        p = q.clone()
        need = check if j >= 1 else torch.zeros_like(check)
        if need.any():
            p[need] = state.value_law_at(tokens[need])[torch.arange(
                int(need.sum()), device=tokens.device), pos[need]]
        return p, (p if self.joint else q), need

    @staticmethod
    def weights(p, d, last):
        """log weights ``[R, V]`` of (continue with v, stop with v); at the last position
        of the set only stop, with weight p."""
        cont = torch.minimum(p, d)
        stop = (p.exp() - d.exp()).clamp(min=0).log()
        last = last[:, None]
        return torch.where(last, torch.full_like(cont, -math.inf), cont), \
            torch.where(last, p, stop)

    def cost(self, need, j: int) -> torch.Tensor:
        if self.joint or self.verify_cost == "token":
            return need.long()
        return (need & torch.full_like(need, j == 1)).long()

    # ------------------------------------------------------------------------------- law
    def sample(self, state: StepState, sel, generator):
        order, m = self.order(sel)
        B, n = sel.shape
        check = self.verifies(state, sel)
        row = torch.arange(B, device=sel.device)
        draft = gumbel_argmax(state.values_lp, generator)
        tokens = state.tokens.clone()
        committed = torch.zeros_like(sel)
        lp = torch.zeros(B, dtype=state.values_lp.dtype, device=sel.device)
        calls = torch.zeros(B, dtype=torch.long, device=sel.device)
        open_ = m > 0
        verified, rejected = torch.zeros_like(calls), torch.zeros_like(calls)
        for j in range(int(m.max()) if B else 0):
            act = open_ & (m > j)
            pos = order[:, j]
            p, d, need = self.laws(state, tokens, pos, check & act, j)
            calls += self.cost(need, j)
            if self.joint:
                x, accept = gumbel_argmax(p, generator), torch.ones_like(act)
            else:
                x0 = draft[row, pos]
                u = torch.rand(B, generator=generator, device=sel.device, dtype=p.dtype)
                gap = p.gather(-1, x0[:, None])[:, 0] - d.gather(-1, x0[:, None])[:, 0]
                accept = u.log() < gap.clamp(max=0)
                residual = (p.exp() - d.exp()).clamp(min=0)
                fix = gumbel_argmax(torch.where(residual.sum(-1, keepdim=True) > 0, residual,
                                                p.exp()).log(), generator)
                x = torch.where(accept, x0, fix)
                verified += (act & check & (j >= 1)).long()
                rejected += (act & ~accept).long()
            last = m == j + 1
            cont, stop = self.weights(p, d, last)
            go_on = accept & ~last
            w = torch.where(go_on, cont.gather(-1, x[:, None])[:, 0],
                            stop.gather(-1, x[:, None])[:, 0])
            lp = lp + torch.where(act, w, torch.zeros_like(w))
            tokens[row[act], pos[act]] = x[act]
            committed[row[act], pos[act]] = True
            open_ = act & go_on
        if not self.joint:
            state.denoiser.diagnostics.setdefault("verified", []).append(verified)
            state.denoiser.diagnostics.setdefault("rejected", []).append(rejected)
        return committed, tokens, lp, calls

    def log_prob(self, state: StepState, sel, committed, values):
        order, m = self.order(sel)
        B = sel.shape[0]
        row = torch.arange(B, device=sel.device)
        L = committed.sum(-1)
        prefix = torch.arange(sel.shape[-1], device=sel.device)[None] < L[:, None]
        expected = torch.zeros_like(sel).scatter(1, order, prefix)
        ok = (expected == committed).all(-1) & (L <= m) & ((L >= 1) | (m == 0))
        if self.joint:
            ok = ok & (L == m)
        check = self.verifies(state, sel)
        tokens = state.tokens.clone()
        lp = torch.zeros(B, dtype=state.values_lp.dtype, device=sel.device)
        for j in range(int(L.max()) if B else 0):
            act = L > j
            pos = order[:, j]
            p, d, _ = self.laws(state, tokens, pos, check & act, j)
            x = values[row, pos]
            cont, stop = self.weights(p, d, m == j + 1)
            w = torch.where(L == j + 1, stop.gather(-1, x[:, None])[:, 0],
                            cont.gather(-1, x[:, None])[:, 0])
            lp = lp + torch.where(act, w, torch.zeros_like(w))
            tokens[row[act], pos[act]] = x[act]
        return torch.where(ok, lp, torch.full_like(lp, -math.inf))

    def enumerate(self, state: StepState, sel, forced):
        order, m = self.order(sel)
        K, n = sel.shape
        V = state.values_lp.shape[-1]
        device = sel.device
        check = self.verifies(state, sel)
        parent = torch.arange(K, device=device)
        tokens = state.tokens.clone()
        committed = torch.zeros_like(sel)
        lp = torch.zeros(K, dtype=state.values_lp.dtype, device=device)
        open_ = m > 0
        for j in range(int(m.max()) if K else 0):
            act = open_ & (m[parent] > j)
            if not act.any():
                break
            pos = order[parent, j]
            sub = state.rows(parent)
            p, d, _ = self.laws(sub, tokens, pos, check[parent] & act, j)
            cont, stop = self.weights(p, d, m[parent] == j + 1)
            opts = torch.cat([cont, stop], -1)  # choice c: value c % V, stop when c >= V
            if forced is not None:
                want = forced[parent, pos]
                opts = restrict(opts.reshape(-1, 2, V), want[:, None].expand(-1, 2)).reshape(
                    -1, 2 * V)
            idle = torch.full_like(opts, -math.inf)
            idle[:, 0] = 0.0
            opts = torch.where(act[:, None], opts, idle)
            src, choice = (opts > -math.inf).nonzero(as_tuple=True)
            gain = opts[src, choice]
            act, pos = act[src], pos[src]
            parent, tokens, committed = parent[src], tokens[src], committed[src]
            lp, open_ = lp[src] + gain, open_[src]
            r = torch.arange(len(src), device=device)
            tokens[r[act], pos[act]] = (choice % V)[act]
            committed[r[act], pos[act]] = True
            open_ = open_ & ~(act & (choice >= V))
        return parent, committed, tokens, lp


__all__ = ["MODES", "PrefixKernel", "ROUTERS", "VERIFY_COSTS"]
