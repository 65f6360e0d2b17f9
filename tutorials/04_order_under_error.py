# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. Generation order under model error
#
# With the exact conditionals, decoding one token at a time gives the same distribution in every
# order (the chain rule; the paper's *Ideal Regime I*). A real denoiser p_θ has model error, and
# then the order matters: the rollout q_π(x) = ∏_t p_θ(x_π(t) | x_π(<t)) depends on π, and so does
#
#     J(π) = KL(q_π ‖ p),
#
# the sampling risk of order π (Section 4 of the paper; *Realistic Regime I*). This tutorial
#
# 1. perturbs the exact oracle with named error families (`Perturbed`) and measures the error
#    with `model_error`;
# 2. checks Lemma 4.1 exactly: J(π) is the sum over steps of the local error
#    ε(h) = KL(p_θ(· | h) ‖ p(· | h)) averaged over the rollout's own prefixes h, for a fixed
#    and for an adaptive order;
# 3. computes J(π) for every fixed order of a five-token toy and compares Easy-First (lowest
#    entropy first) with Hard-First.
#
# All quantities are in nats.

# %%
import itertools
import math

import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

import mdmprob
from mdmprob import measures
from mdmprob.decoders import sequential
from mdmprob.decoders.core import Decoder
from mdmprob.decoders.primitives import PerStep, Score, Step
from mdmprob.denoisers import Oracle, Perturbed, model_error
from mdmprob.evaluate import evaluate
from mdmprob.tutorial import setup, show

SMOKE = setup()  # MDMPROB_SMOKE or CI shrink everything; headless figures; one torch thread

LEVELS = {  # error strength per family; 0 is the oracle itself
    "entropy_scaled": [0.0, 0.3] if SMOKE else [0.0, 0.05, 0.1, 0.2, 0.3, 0.5],
    "logit_noise": [0.0, 1.0] if SMOKE else [0.0, 0.25, 0.5, 1.0, 1.5, 2.0],
    "temperature": [0.0, 1.0] if SMOKE else [0.0, 0.25, 0.5, 1.0, 1.5, 2.0],
}
N_ORDERS = 24 if SMOKE else 120  # fixed orders evaluated (all 5! = 120 in the full run)
ERROR_CONTEXTS = 300 if SMOKE else 3000  # contexts sampled by model_error


# %% [markdown]
# ## 1. A five-token toy
#
# Five binary tokens with dependencies of different strength (a toy of our own; the paper has no
# synthetic order experiment): x2 copies x1 with 2% noise, x4 is x1 XOR x3 with 10% noise, and x3
# and x5 are independent biased bits.
#
#     x1 ──> x2          x3 ~ Bern(0.05)     x5 ~ Bern(0.3)
#      └───────> x4 <──── x3

# %%
def bern(p):
    return torch.tensor([1 - p, p], dtype=torch.float64).log()


def noisy_copy(p):  # logits of y given the bit it copies
    return torch.tensor([[1 - p, p], [p, 1 - p]], dtype=torch.float64).log()


COPY2, XOR10 = noisy_copy(0.02), noisy_copy(0.1)


def toy_model():
    x1 = pyro.sample("x1", dist.Categorical(logits=bern(0.5)))
    pyro.sample("x2", dist.Categorical(logits=Vindex(COPY2)[x1]))
    x3 = pyro.sample("x3", dist.Categorical(logits=bern(0.05)))
    pyro.sample("x4", dist.Categorical(logits=Vindex(XOR10)[(x1 + x3) % 2]))
    pyro.sample("x5", dist.Categorical(logits=bern(0.3)))


s = mdmprob.Structure(toy_model, tokens=["x1", "x2", "x3", "x4", "x5"], vocab=2, name="toy5")
oracle = Oracle(s)
n, V = s.n_tokens, s.vocab
xs = torch.tensor(list(itertools.product(range(V), repeat=n)))  # all 32 sequences
log_p = s.engine().log_prob(xs)

# %% [markdown]
# ## 2. Model error as a named family
#
# `Perturbed(oracle, family, level)` distorts every conditional the oracle returns; level 0 is the
# oracle exactly. `model_error` samples contexts as in MDM training (an exact sequence with a
# random subset masked) and reports the mean local error KL(p_θ‖p) and a least-squares fit
# local KL ≈ α · H + intercept against the true conditional entropy H (Assumption 4.2 with
# λ = 0). The `entropy_scaled` family is built to satisfy it with α = level.

# %%
for family, levels in LEVELS.items():
    den = Perturbed(oracle, family, levels[-1])
    err = model_error(den, oracle, num=ERROR_CONTEXTS, seed=0)
    print(f"{family:15s} level {levels[-1]:g}: mean KL(p_theta||p) = "
          f"{err.kl_qp.value:.4f} ± {err.kl_qp.se:.4f}, "
          f"alpha = {err.alpha:.3f}, intercept = {err.intercept:.4f}, R^2 = {err.r2:.3f}")


# %% [markdown]
# ## 3. Orders as scores
#
# Sequential decoding in a fixed order π is a one-line `Score`: position π(t) gets key −t, so it
# is committed at step t. `decoder.log_prob(denoiser, xs)` replays the decoder on every sequence
# at once and returns log q_π(x) exactly.

# %%
class FixedOrder(Score):
    """Decode positions in the given order (highest key first)."""

    name = "fixed"

    def __init__(self, order):
        self.keys = torch.empty(len(order), dtype=torch.float64)
        self.keys[list(order)] = -torch.arange(len(order), dtype=torch.float64)

    def __call__(self, step, draws=None):
        return self.keys.to(step.logp).expand(step.logp.shape[:2])


def in_order(order):
    return Decoder(f"order{tuple(order)}", FixedOrder(order), PerStep(1), window="all")


def J(decoder, den):
    """KL(q || p) of a decoder whose positions are a function of the state."""
    return measures.kl(q=decoder.log_prob(den, xs), p=log_p).item()


all_orders = list(itertools.permutations(range(n)))
orders = all_orders if N_ORDERS >= len(all_orders) else [
    all_orders[i] for i in torch.randperm(len(all_orders), generator=torch.Generator().manual_seed(0))
    [:N_ORDERS].tolist()]

# Ideal Regime I: with the exact conditionals every order gives q = p.
assert max(J(in_order(o), oracle) for o in orders) < 1e-12

# %% [markdown]
# ## 4. Lemma 4.1, exactly, for a fixed and an adaptive order
#
# Lemma 4.1 says J(π) = Σ_t E_{h ~ q_π}[ε(h)], the local errors weighted by the rollout's own
# prefixes. It holds path-wise, so also for adaptive orders such as Easy-First, whose next
# position depends on the values decoded so far. The function below walks the decoding tree of
# any deterministic score exactly, accumulating both the rollout q and the weighted local errors.

# %%
def walk(score, den):
    """(log q over all V^n sequences, sum_t E_q[eps_t]) for sequential decoding by ``score``."""
    log_q = torch.full([V] * n, -math.inf, dtype=torch.float64)
    total = 0.0

    def visit(state, log_w, t):
        nonlocal total
        if t == n:
            log_q[tuple(state)] = log_w
            return
        tokens = torch.tensor([state])
        logp, exact = den(tokens), oracle(tokens)
        candidates = tokens == V
        step = Step(logp, candidates, torch.tensor([t]), torch.tensor([n]))
        j = int(score(step, logp.argmax(-1)).masked_fill(~candidates, -math.inf).argmax())
        total += math.exp(log_w) * measures.kl(q=logp[0, j], p=exact[0, j]).item()
        for v in range(V):
            if logp[0, j, v] > -math.inf:
                visit(state[:j] + [v] + state[j + 1:], log_w + logp[0, j, v].item(), t + 1)

    visit([V] * n, 0.0, 0)
    return log_q.reshape(-1), total


den = Perturbed(oracle, "logit_noise", 1.0)
for label, decoder in (("fixed order (2, 0, 4, 1, 3)", in_order((2, 0, 4, 1, 3))),
                       ("Easy-First (model entropy)", sequential("entropy"))):
    log_q, weighted_errors = walk(decoder.score, den)
    assert torch.allclose(log_q.exp(), decoder.distribution(den).reshape(-1).exp(), atol=1e-12)
    j = measures.kl(q=log_q, p=log_p).item()
    print(f"{label}: J = KL(q||p) = {j:.10f}, sum of rollout-weighted local errors = "
          f"{weighted_errors:.10f}")
    assert abs(j - weighted_errors) < 1e-10

# %% [markdown]
# ## 5. Which order is best?
#
# For each family and level: J(π) for the fixed orders, and for three adaptive orders:
# Easy-First by the model's entropy (`sequential("entropy")`), Easy-First by the *true* entropy
# (`sequential("oracle_entropy")`, given `oracle=`), and Hard-First (highest model entropy
# first). `evaluate(..., mode="exact")` enumerates the adaptive decoders' output distributions.

# %%
def adaptive_J(decoder, den):
    return evaluate(s, decoder, den, mode="exact", samples=20, oracle=oracle)["kl_qp"]


results = {}
for family, levels in LEVELS.items():
    for level in levels:
        den = Perturbed(oracle, family, level)
        fixed = torch.tensor([J(in_order(o), den) for o in orders])
        results[family, level] = {
            "fixed": fixed, "l2r": J(in_order(range(n)), den),
            "easy": adaptive_J(sequential("entropy"), den),
            "oracle_easy": adaptive_J(sequential("oracle_entropy"), den),
            "hard": adaptive_J(sequential("hard_first"), den)}
        r = results[family, level]
        print(f"{family:15s} {level:5.2f}: fixed orders min {fixed.min():.4f} median "
              f"{fixed.median():.4f} max {fixed.max():.4f} | Easy-First {r['easy']:.4f}, "
              f"oracle Easy-First {r['oracle_easy']:.4f}, Hard-First {r['hard']:.4f}")
        if level == 0:  # Ideal Regime I again: no error, no order effect
            assert fixed.max() < 1e-12 and max(r["easy"], r["hard"]) < 1e-12

# %%
fig, axes = plt.subplots(1, len(LEVELS), figsize=(5 * len(LEVELS), 4))
for ax, (family, levels) in zip(axes, LEVELS.items(), strict=True):
    level = levels[len(levels) // 2]  # a middle error level
    r = results[family, level]
    ax.hist(r["fixed"].tolist(), bins=20, color="lightgray", edgecolor="gray",
            label=f"{len(orders)} fixed orders")
    for key, label, color, ls in (("easy", "Easy-First (model H)", "C0", "-"),
                                  ("oracle_easy", "Easy-First (true H)", "C0", ":"),
                                  ("hard", "Hard-First", "C3", "-"),
                                  ("l2r", "left to right", "k", "--")):
        ax.axvline(r[key], color=color, ls=ls, lw=2, label=label)
    ax.set_xlabel("J(π) = KL(q_π‖p) (nats)")
    ax.set_ylabel("number of fixed orders")
    ax.set_title(f"{family}, level {level:g}")
    ax.legend(fontsize=7)
show(fig, "order_histograms")

fig, axes = plt.subplots(1, len(LEVELS), figsize=(5 * len(LEVELS), 4))
for ax, (family, levels) in zip(axes, LEVELS.items(), strict=True):
    rows = [results[family, lv] for lv in levels]
    ax.fill_between(levels, [r["fixed"].min() for r in rows], [r["fixed"].max() for r in rows],
                    color="lightgray", label="fixed orders: min to max")
    ax.plot(levels, [r["fixed"].median() for r in rows], "k--", label="fixed orders: median")
    ax.plot(levels, [r["easy"] for r in rows], "C0o-", label="Easy-First (model H)")
    ax.plot(levels, [r["oracle_easy"] for r in rows], "C0^:", label="Easy-First (true H)")
    ax.plot(levels, [r["hard"] for r in rows], "C3s-", label="Hard-First")
    ax.set_xlabel(f"error level of {family} (family units, 0 = oracle)")
    ax.set_ylabel("J(π) = KL(q_π‖p) (nats)")
    ax.set_title(f"order sensitivity: {family}")
    ax.legend(fontsize=7)
show(fig, "order_vs_level")

# %% [markdown]
# What to read from these numbers (the assertions below check each statement on the orders and
# levels this run evaluated):
#
# * At level 0 every order has J = 0: order sensitivity needs model error.
# * The spread between the best and the worst fixed order grows with the error level in every
#   family.
# * With `entropy_scaled` error (local KL = level × H, the λ = 0 case of Assumption 4.2) the
#   spread stays small compared with J itself: along *exact* rollouts
#   Σ_t H(X_π(t) | x_π(<t)) = H(X) for every order, so the bound of Eq. 11 has no
#   order-dependent part when λ = 0. Easy-First is nevertheless the best order here.
# * With `temperature` error Easy-First is the *worst* order. The fit of Section 2 shows why it
#   can be: under this family the local error *decreases* with the true entropy (α < 0), so the
#   most certain positions are the most distorted, and Easy-First decides them first.
# * With `logit_noise` error, Easy-First by the *true* entropy stays below the median order at
#   every level, while Easy-First by the *model's* entropy is only as good as the model's own
#   confidence: in the full run (all 120 orders) it falls above the median at level 2, where
#   the noise dominates the model's entropies.
#
# So whether Easy-First helps depends on the error model: Eq. 11 is an upper bound, and
# Easy-First is a heuristic for minimising it, not a guarantee.

# %%
for family, levels in LEVELS.items():
    rows = [results[family, lv] for lv in levels]
    spreads = [float(r["fixed"].max() - r["fixed"].min()) for r in rows]
    assert all(a <= b + 1e-12 for a, b in zip(spreads, spreads[1:], strict=False)), (family, spreads)
    if family == "entropy_scaled":
        assert spreads[-1] < 0.15 * float(rows[-1]["fixed"].median())
    for r in rows[1:]:
        if family == "entropy_scaled":
            assert r["easy"] <= r["fixed"].min() + 1e-9
        if family == "temperature":
            assert r["easy"] >= r["fixed"].max() - 1e-9
        if family == "logit_noise":
            assert r["oracle_easy"] < r["fixed"].median()
if not SMOKE:
    r = results["logit_noise", 2.0]
    assert r["easy"] > r["fixed"].median()
print("all statements above hold in this run")
