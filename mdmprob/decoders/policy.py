"""A learned unmasking policy (arXiv 2512.09106): a small network reads per-position features and
returns each candidate's probability of being unmasked at this step; the positions are drawn as
independent Bernoulli variables.

Features of each position (:data:`FEATURES`, :func:`policy_features`), from the denoiser's
marginals at the state: the confidence max_v p(v), the entropy (nats), the margin top-1 minus
top-2 probability, and the step fraction (the share of the window's masks already decoded, the
same for every position). The policy is any ``torch.nn.Module`` mapping ``[B, n, 4]`` to
``[B, n]`` (or ``[B, n, 1]``) probabilities in [0, 1]; rows of non-candidates are ignored.

Step law: each candidate i is selected independently with probability pi_i; when no candidate
is drawn, the one with the largest pi_i (the lowest position among equal ones) is committed, so
every step commits something (a choice: the paper's policy always has a fallback commit, the
detail is ours). Values are drawn independently from the value law at the state. The exact q
sums over the 2^|candidates| selections (exact mode, small spaces); a run's log-probability is
its trajectory's (the selections are random).

:func:`train_policy` runs a policy-gradient loop (REINFORCE with a mean baseline) whose reward is
the exact log p(x) of the decoded sequence under a structure. The paper trains a one-layer
transformer over the confidences with GRPO; :class:`UnmaskPolicy` is a smaller per-position
network (any module can replace it, including one that mixes positions).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mdmprob.checks import check_int, check_number, generator
from mdmprob.decoders.composed import StepState, expand
from mdmprob.decoders.primitives import Step, entropy_of
from mdmprob.errors import MdmprobError

FEATURES = ("confidence", "entropy", "margin", "step_fraction")


def policy_features(view: Step) -> torch.Tensor:
    """The features ``[B, n, 4]`` of :data:`FEATURES` (0 at non-candidates)."""
    probs = view.logp.exp()
    top = probs.topk(min(2, probs.shape[-1]), dim=-1).values
    margin = top[..., 0] - (top[..., 1] if top.shape[-1] > 1 else 0.0)
    done = 1.0 - view.n_candidates.to(probs.dtype) / view.window_masked.clamp(min=1).to(
        probs.dtype)
    feats = torch.stack([top[..., 0], entropy_of(view.logp), margin,
                         done[:, None].expand_as(margin)], -1)
    return feats.masked_fill(~view.candidates[..., None], 0.0)


class UnmaskPolicy(nn.Module):
    """pi_i = sigmoid(w . features_i + b) (``hidden=0``), or a one-hidden-layer network with
    ``hidden`` tanh units. Float64; the output layer starts at zero weights and bias
    ``init_logit``, so every candidate starts at probability sigmoid(init_logit)."""

    def __init__(self, hidden: int = 0, init_logit: float = 0.0, seed: int = 0):
        super().__init__()
        check_int("hidden", hidden, 0)
        check_number("init_logit", init_logit)
        gen = generator(seed)
        layers: list[nn.Module] = []
        width = len(FEATURES)
        if hidden:
            first = nn.Linear(width, hidden, dtype=torch.float64)
            with torch.no_grad():
                first.weight.copy_(torch.randn(hidden, width, generator=gen,
                                               dtype=torch.float64) / math.sqrt(width))
                first.bias.zero_()
            layers += [first, nn.Tanh()]
            width = hidden
        out = nn.Linear(width, 1, dtype=torch.float64)
        with torch.no_grad():
            out.weight.zero_()
            out.bias.fill_(float(init_logit))
        self.net = nn.Sequential(*layers, out)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(features)[..., 0])


class PolicySelector:
    """Independent Bernoulli selections with the policy's probabilities (module docstring)."""

    random = True

    def __init__(self, policy: nn.Module):
        if not isinstance(policy, nn.Module):
            raise MdmprobError(f"policy={policy!r} must be a torch.nn.Module mapping features "
                               "[B, n, 4] to unmask probabilities [B, n]")
        self.policy = policy
        self.name = f"policy({type(policy).__name__})"

    def probs(self, state: StepState) -> torch.Tensor:
        """pi ``[B, n]`` (0 off the candidates), checked."""
        view = state.view
        feats = policy_features(view)
        param = next(iter(self.policy.parameters()), None)
        if param is not None:
            feats = feats.to(device=param.device, dtype=param.dtype)
        out = self.policy(feats)
        if not isinstance(out, torch.Tensor):
            raise MdmprobError(f"the policy returned {type(out).__name__}; it must return a "
                               "tensor of unmask probabilities [B, n]")
        B, n = view.candidates.shape
        if out.dim() == 3 and out.shape[-1] == 1:
            out = out[..., 0]
        if tuple(out.shape) != (B, n):
            raise MdmprobError(f"the policy returned shape {tuple(out.shape)}; it must return "
                               f"[B, n] = [{B}, {n}] (or [B, n, 1]) unmask probabilities, one "
                               "per position")
        out = out.to(device=view.logp.device, dtype=view.logp.dtype)
        bad = view.candidates & ~((out >= 0) & (out <= 1))
        if bad.any():
            value = float(out[bad][0])
            raise MdmprobError(f"the policy returned the probability {value} at a candidate; "
                               "its outputs must lie in [0, 1] (end it with a sigmoid)")
        return torch.where(view.candidates, out, torch.zeros_like(out))

    @staticmethod
    def fallback(pi, cand) -> torch.Tensor:
        """The position committed when no candidate is drawn: the largest pi (lowest position
        among equal ones)."""
        best = pi.detach().masked_fill(~cand, -1.0).argmax(-1)
        return torch.nn.functional.one_hot(best, cand.shape[-1]).bool() & cand

    def sample(self, state, generator):
        cand = state.view.candidates
        with torch.no_grad():
            pi = self.probs(state)
        u = torch.rand(pi.shape, generator=generator, device=pi.device, dtype=pi.dtype)
        sel = (u < pi) & cand
        sel = torch.where(sel.any(-1, keepdim=True), sel, self.fallback(pi, cand))
        with torch.no_grad():
            lp = self._lp(pi, sel, cand)
        return sel, lp, torch.zeros_like(cand[:, 0])

    def log_prob(self, state, sel):
        cand = state.view.candidates
        return self._lp(self.probs(state), sel & cand, cand)

    def _lp(self, pi, sel, cand):
        """log Pr[selection = sel]: the Bernoulli law, plus the empty draw's mass on the
        fallback position."""
        one = torch.ones_like(pi)
        bern = torch.where(cand, torch.where(sel, pi, 1 - pi), one).log().sum(-1)
        empty = torch.where(cand, 1 - pi, one).log().sum(-1)
        is_fallback = (sel == self.fallback(pi, cand)).all(-1) & sel.any(-1)
        lp = torch.where(is_fallback, torch.logaddexp(bern, empty), bern)
        return torch.where(sel.any(-1) | ~cand.any(-1), lp, torch.full_like(lp, -math.inf))

    def outcomes(self, state):
        cand = state.view.candidates
        pi = self.probs(state)
        one = torch.ones_like(pi)
        opts = torch.stack([torch.where(cand, 1 - pi, one), pi], -1).log()  # [B, n, 2]
        row, chosen, lp = expand(opts, cand, torch.zeros_like(state.tokens))
        sel = (chosen == 1) & cand[row]
        fallback = self.fallback(pi, cand)[row]
        sel = torch.where(sel.any(-1, keepdim=True), sel, fallback)
        return row, sel, lp


def train_policy(decoder, denoiser, structure, *, steps: int = 20, num: int = 64,
                 lr: float = 0.05, seed: int = 0) -> list[float]:
    """Policy-gradient training of ``decoder``'s policy (a :func:`learned_policy` decoder) in
    place: ``steps`` updates, each from ``num`` runs with reward log p(x) under ``structure``
    (exact; an impossible sequence, log p = -inf, is rewarded -1000), advantage = reward minus
    its batch mean, Adam with learning rate ``lr``. Returns the mean reward of each update's
    runs."""
    selector = getattr(decoder, "selector", None)
    if not isinstance(selector, PolicySelector):
        raise MdmprobError(f"{decoder!r} has no learned policy to train; build it with "
                           "learned_policy(policy)")
    check_int("steps", steps, 1)
    check_int("num", num, 2)
    check_number("lr", lr, 0, low_open=True)
    engine = structure.engine(device=denoiser.device, dtype=denoiser.dtype)
    params = [p for p in selector.policy.parameters() if p.requires_grad]
    if not params:
        raise MdmprobError("the policy has no trainable parameters")
    opt = torch.optim.Adam(params, lr=lr)
    gen = generator(seed, denoiser.device)
    history = []
    for _ in range(steps):
        with torch.no_grad():
            run = decoder.run(denoiser, num, generator=gen)
            reward = engine.log_prob(run.tokens)
        reward = torch.where(torch.isfinite(reward), reward, torch.full_like(reward, -1e3))
        advantage = reward - reward.mean()
        log_q = decoder.log_prob(denoiser, run.tokens, committed=run.committed)
        loss = -(advantage * log_q).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(reward.mean()))
    return history


__all__ = ["FEATURES", "PolicySelector", "UnmaskPolicy", "policy_features", "train_policy"]
