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
# # 6. Order under real model error: training small MDMs on addition
#
# Tutorial 4 studied decoding order under *synthetic* model error, added to an exact oracle. Here
# the error is real: we train two small transformer MDMs (`Neural`) on D-digit addition, one with a
# small and one with a larger training budget, and decode the answer digits given the prompt in
# four orders. Section 5 then runs the study on a whole ladder of trained models, from near-chance
# to near-perfect, and computes a verdict on each claim from the records. The paper (Section 6.2,
# Fig. 4 and Table 1) makes two claims we can look at:
#
# 1. **order matters more as model error grows**: a near-perfect model is nearly order-invariant,
#    a weak one is not;
# 2. **confidence order vs fixed orders**: decoding the most confident position first
#    (LLaDA's low-confidence remasking) beats left-to-right (L2R), right-to-left (R2L) and random.
#
# Two models and a few hundred test problems are a small experiment: we report every accuracy with
# a 95% Wilson interval and say only what the intervals support. The sweep behind the paper-scale
# comparison is the `arithmetic-orders` experiment (`mdmprob.experiments.arithmetic_orders`); the
# decoder, the training config and the verdict rules it uses live in `mdmprob.tasks.addition`.

# %%
import math
import time
from tempfile import TemporaryDirectory

import matplotlib.pyplot as plt
import torch

from mdmprob.experiments.arithmetic_orders import EXPERIMENT as ARITHMETIC
from mdmprob.tasks import addition
from mdmprob.tasks.addition import (
    CATEGORIES,
    SYMBOLS,
    accuracy,
    answer_decoder,
    answer_positions,
    claim_confidence,
    claim_order_invariance,
    decode_answers,
    encode_problems,
    neural_config,
    rung_table,
    seq_len,
    test_suite,
    training_source,
)
from mdmprob.training import train
from mdmprob.tutorial import setup, show

SMOKE = setup()  # MDMPROB_SMOKE or CI shrink everything; headless figures; one torch thread

D = 2 if SMOKE else 3  # digits per operand
BUDGETS = (40, 160) if SMOKE else (300, 2000)  # optimizer steps of the two models
BATCH = 128
D_MODEL = 32
TEST_SIZE = 120 if SMOKE else 600  # test-suite problems
ORDERS = {"l2r": "L2R", "r2l": "R2L", "random": "random", "confidence": "low-confidence"}


# %% [markdown]
# ## 1. The task
#
# A sequence is `a + b = c` with zero-padded operands of D digits and an answer of D + 1 digits,
# most significant digit first (`mdmprob.tasks.addition`; vocabulary: 10 digits, `+`, `=`, and a
# padding token that this layout never uses). The prompt is everything up to `=`; the decoder fills
# in the D + 1 answer positions. The test suite has the paper's six categories (easy, medium, hard,
# extreme, edge, mixed) in its proportions; for small D some digit-length ranges coincide.

# %%
problems = test_suite(D, TEST_SIZE, seed=0)
prompts = encode_problems(problems, D)
answer_pos = answer_positions(D)
print(f"D = {D}: sequences of {seq_len(D)} tokens, answer positions {answer_pos}")
for p, x in list(zip(problems, prompts, strict=True))[:4]:
    print(f"  {p.category:8s} {p.a:>{D}} + {p.b:>{D}}  ->  {' '.join(SYMBOLS[int(t)] for t in x)}")
print({row["category"]: row["n"] for row in addition.category_table(problems)})

# %% [markdown]
# ## 2. Training two models
#
# `train` minimises the masked-diffusion loss on the **answer digits only**, as the paper
# supervises only the answer: `neural_config(D, loss="answer")` sets `train_positions` to the
# D + 1 answer positions, so the prompt is never masked, a random fraction t ~ U(0, 1] of the
# answer digits is, and the network predicts them (cross-entropy in nats, averaged over masked
# positions). `loss="full"` is the plain MDM loss over every position; its loss has a floor of up
# to ln 10 nats per masked operand digit (random operands cannot be predicted), and in our
# measurements it trains the answer far more slowly. The training problems come from the task's
# sampler (each operand's length uniform in 1 .. D). Because the learning rate is constant, the
# larger budget simply *continues* the smaller run from its checkpoint (`resume=True`): both models
# share the first part of one loss curve.
#
# A measure of the error that matters here is the **answer loss**: the mean cross-entropy of the
# true answer digits given the prompt with all answer positions masked. The answer is a
# deterministic function of the prompt, so this is also the mean KL(p ‖ p_θ) of the model's
# first-step conditionals at the answer positions: zero for a perfect model.

# %%
def answer_loss(model):
    """Mean -log p_theta(true answer digit | prompt, answer masked) over the test suite (nats)."""
    tokens = prompts.clone()
    tokens[:, answer_pos] = model.mask_id
    logp = model(tokens)[:, answer_pos]
    truth = prompts[:, answer_pos]
    return float(-logp.gather(-1, truth[..., None]).mean())


models, curves, seconds = {}, {}, {}
with TemporaryDirectory() as ckpt_dir:
    for steps in BUDGETS:  # the second run resumes the first from its checkpoint
        config = neural_config(D, loss="answer", d_model=D_MODEL, n_layers=2, n_heads=4,
                               steps=steps, batch_size=BATCH, lr=3e-3, seed=0)
        t0 = time.perf_counter()
        models[steps], curves[steps] = train(training_source(D), config, out_dir=ckpt_dir,
                                             resume=True, checkpoint_every=10**9)
        seconds[steps] = time.perf_counter() - t0

WINDOW = max(BUDGETS[0] // 5, 5)  # steps averaged for a "final" training loss
final_loss = {s: sum(h["loss"] for h in curves[s][-WINDOW:]) / WINDOW for s in BUDGETS}
ans_loss = {s: answer_loss(models[s]) for s in BUDGETS}
for s in BUDGETS:
    print(f"{s:5d} steps ({seconds[s]:5.1f} s of training in this run): training loss over the last "
          f"{WINDOW} steps {final_loss[s]:.3f} nats, answer loss {ans_loss[s]:.3f} nats/digit")

# %%
fig, ax = plt.subplots(figsize=(7, 4))
big = curves[BUDGETS[-1]]
ax.plot([h["step"] for h in big], [h["loss"] for h in big], color="lightgray", lw=1,
        label="per-step loss")
smooth = [sum(h["loss"] for h in big[max(0, i - WINDOW + 1):i + 1]) / len(big[max(0, i - WINDOW + 1):i + 1])
          for i in range(len(big))]
ax.plot([h["step"] for h in big], smooth, "k", lw=2, label=f"running mean over {WINDOW} steps")
for s, color in zip(BUDGETS, ("C3", "C0"), strict=True):
    ax.axvline(s, color=color, ls="--", label=f"model with {s} steps")
ax.axhline(math.log(10), color="gray", ls=":", label="ln 10 (one uniform digit)")
ax.set_xlabel("optimizer step")
ax.set_ylabel("masked answer-digit cross-entropy (nats)")
ax.set_title(f"training curve, D = {D}, d_model = {D_MODEL}, batch {BATCH}")
ax.legend(fontsize=8)
show(fig, "training_curve")

# %% [markdown]
# ## 3. Decoding the answer in four orders
#
# `answer_decoder(order, k).run(model, num, initial=...)`, the answer positions of the prompts
# masked in `initial`, decodes them greedily (the most likely digit at each committed position),
# k positions per step, the positions chosen by the order: L2R (most significant digit first),
# R2L (least significant first, the order in which carries propagate), random, and low-confidence
# (the positions whose greedy digit has the highest probability first). We use k = 1 and
# k = D + 1 (all answer digits in one step). With k = D + 1 every order commits all positions at
# once from the same prediction, so the four orders must give identical answers there: a built-in
# sanity check.

# %%
K_VALUES = (1, D + 1)
results = {}  # (budget, order, k) -> accuracy dict of mdmprob.tasks.addition.accuracy
answers = {}
for s in BUDGETS:
    for order in ORDERS:
        for k in K_VALUES:
            initial = prompts.clone()
            initial[:, answer_pos] = models[s].mask_id
            run = answer_decoder(order, k).run(models[s], len(prompts), seed=0, initial=initial)
            tokens, nfe = run.tokens, int(run.nfe.max())
            assert nfe == math.ceil(len(answer_pos) / k)
            answers[s, order, k] = decode_answers(tokens, D)
            results[s, order, k] = accuracy(answers[s, order, k], problems)


def cell(row):
    lo, hi = row["ci"]
    return f"{row['accuracy']:.2f} [{lo:.2f}, {hi:.2f}]"


cats = [c for c in CATEGORIES if results[BUDGETS[0], "l2r", 1]["per_category"][c]["n"]]
header = f"{'steps':>5} {'order':15} {'k':>2} | {'overall':17} | " + " | ".join(f"{c:17}" for c in cats)
print("exact-match accuracy [95% Wilson interval]; n per category:",
      {c: results[BUDGETS[0], "l2r", 1]["per_category"][c]["n"] for c in cats})
print(header)
print("-" * len(header))
for s in BUDGETS:
    for k in K_VALUES:
        for order, label in ORDERS.items():
            r = results[s, order, k]
            print(f"{s:5d} {label:15} {k:2d} | {cell(r['overall']):17} | "
                  + " | ".join(f"{cell(r['per_category'][c]):17}" for c in cats))

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True)
width = 0.8 / len(ORDERS)
groups = ["overall", *cats]
for ax, s in zip(axes, BUDGETS, strict=True):
    for j, (order, label) in enumerate(ORDERS.items()):
        r = results[s, order, 1]
        rows = [r["overall"]] + [r["per_category"][c] for c in cats]
        xs = [i + (j - (len(ORDERS) - 1) / 2) * width for i in range(len(groups))]
        ys = [row["accuracy"] for row in rows]
        # max(0, .): at 0 or 1 rounding can put a Wilson bound 1e-17 past the estimate
        err = [[max(0.0, y - row["ci"][0]) for y, row in zip(ys, rows, strict=True)],
               [max(0.0, row["ci"][1] - y) for y, row in zip(ys, rows, strict=True)]]
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=f"{label}, k = 1", color=f"C{j}")
    all_at_once = results[s, "l2r", D + 1]
    ax.scatter(range(len(groups)), [all_at_once["overall"]["accuracy"]]
               + [all_at_once["per_category"][c]["accuracy"] for c in cats],
               marker="_", s=600, color="k", zorder=3, label=f"all at once, k = {D + 1}")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_xlabel("test-suite category")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"model trained {s} steps (answer loss {ans_loss[s]:.2f} nats/digit)")
    ax.grid(axis="y", alpha=0.3)
axes[0].set_ylabel("exact-match accuracy (fraction, 95% Wilson CI)")
axes[1].legend(fontsize=8, loc="lower right")
fig.suptitle(f"D = {D} addition: accuracy by decoding order and training budget")
fig.tight_layout()
show(fig, "accuracy_by_order")

# %% [markdown]
# ## 4. What the numbers show, and what they do not
#
# The summary below prints, for each model, the spread of k = 1 overall accuracy across the four
# orders (best minus worst) and the gap between low-confidence and the best fixed order (L2R or
# R2L), each with the larger of the two Wilson half-widths as a rough yardstick of its noise.
#
# How to read it:
#
# * **Training budget and error.** The larger budget has the lower training loss (checked below);
#   the answer loss tells whether that translated into a better answer model in this run.
# * **Claim 1 (order matters more as error grows).** Compare the two spreads. The paper's picture
#   is a large spread for the weak model and a small one for the strong model. With two models
#   and a few hundred problems, a difference between spreads that is not well outside the
#   half-widths is not evidence either way. Note also the floor effect: a model that gets almost
#   nothing right has a small spread *because* every order fails, which is not order-invariance.
# * **Claim 2 (confidence vs fixed orders).** The sign and size of the low-confidence gap are
#   printed for each model; only a gap clearly larger than the half-widths supports (or refutes)
#   the paper's ranking. Which fixed order is best is itself informative: R2L follows the
#   carries, so a model that has learned carrying can profit from it.
# * **All at once.** Decoding all D + 1 digits in one step gives the same answer in every order
#   (checked below): order can only matter when the model sees its own earlier commitments.
#
# Two models are two points: they cannot show how the spread across orders depends on model
# error, and a weak model that fails in every order has a small spread *because* it fails (a floor
# effect, not order-invariance). Section 5 runs the same measurements on a ladder of models and
# computes the verdicts from the records.
#
# Only robust facts are asserted; the comparisons that depend on the training noise are printed,
# not asserted. Re-run with other seeds (`neural_config(D, seed=...)`, `test_suite(seed=...)`).

# %%
def overall(s, order, k=1):
    return results[s, order, k]["overall"]


def half_width(row):
    return (row["ci"][1] - row["ci"][0]) / 2


for s in BUDGETS:
    accs = {o: overall(s, o) for o in ORDERS}
    best, worst = max(accs, key=lambda o: accs[o]["accuracy"]), min(accs, key=lambda o: accs[o]["accuracy"])
    fixed = max(("l2r", "r2l"), key=lambda o: accs[o]["accuracy"])
    conf = accs["confidence"]
    spread = accs[best]["accuracy"] - accs[worst]["accuracy"]
    print(f"{s:5d} steps: k=1 accuracy spread across orders = {spread:.3f}"
          f" ({ORDERS[best]} {accs[best]['accuracy']:.3f} vs {ORDERS[worst]} {accs[worst]['accuracy']:.3f}, "
          f"half-widths {half_width(accs[best]):.3f} / {half_width(accs[worst]):.3f}); "
          f"low-confidence minus best fixed order ({ORDERS[fixed]}) = "
          f"{conf['accuracy'] - accs[fixed]['accuracy']:+.3f} "
          f"(half-widths {half_width(conf):.3f} / {half_width(accs[fixed]):.3f}); "
          f"all at once {overall(s, 'l2r', D + 1)['accuracy']:.3f}")

# %%
# Robust facts only.
assert final_loss[BUDGETS[1]] < final_loss[BUDGETS[0]]  # more training, lower training loss
for acc in results.values():
    for row in [acc["overall"], *acc["per_category"].values()]:
        if row["n"] == 0:
            continue
        lo, hi = row["ci"]
        assert 0 <= row["accuracy"] <= 1 and 0 <= lo <= hi <= 1
        assert lo - 1e-12 <= row["accuracy"] <= hi + 1e-12  # the interval contains the estimate
    assert acc["overall"]["n"] == TEST_SIZE
if not SMOKE:  # the full budget gap is large: the answer model improves by an order of magnitude
    assert ans_loss[BUDGETS[1]] < ans_loss[BUDGETS[0]]
for s in BUDGETS:  # all at once: the order cannot matter
    assert all(torch.equal(answers[s, o, D + 1], answers[s, "l2r", D + 1]) for o in ORDERS)
print("all asserted statements hold in this run")


# %% [markdown]
# ## 5. The ladder: order spread against model error, and the verdicts
#
# The `arithmetic-orders` experiment ships a trained ladder (`mdmprob/data/arithmetic`): models of
# width 16 and 32 trained for 250, 500, 1000 and 2000 steps on 3-digit addition with the
# answer-only loss, plus a rung that continues the 2000-step run for 1000 steps at a linearly
# decaying learning rate; three training seeds each, from near-chance to near-perfect. Here we evaluate
# its width-32 half (smoke mode: two rungs and two seeds, fewer problems) with the experiment's own
# `run_setting`, which loads each model, measures its exact model error
# (`answer_error`: the mean KL(p ‖ p_θ) of every answer digit given the prompt and every subset of
# the other answer digits) and decodes the test suite in the six orders.
#
# Two functions of `mdmprob.tasks.addition` turn the records into verdicts:
#
# * `claim_order_invariance` — *"differences between orders grow with model error and shrink as
#   the model approaches perfection"*. Among rungs off the floor (best order at least 50%), it
#   compares the spread (best minus worst order, k = 1) of the rung with the largest error with
#   that of the rung with the smallest; **yes** when the first is larger by more than two standard
#   errors (across seeds) and the smallest-error rung is near-perfect (at least 99%), **no** when it
#   is smaller by as much, **inconclusive** otherwise.
# * `claim_confidence` — *"confidence-based orders beat the fixed L2R / R2L orders on the hard
#   categories"*. For each rung off the floor and each k, low-confidence minus the better of L2R
#   and R2L on the hard, extreme and edge problems (seeds pooled, binomial standard error);
#   **yes** when some difference is above +2 se and none below -2 se, **no** in the mirror case.

# %%
if SMOKE:
    LADDER = ARITHMETIC.make_config(d_models=(32,), steps=(250, 2000), train_seeds=(0, 1),
                                    headroom_D=0, ks=(1,), test_size=60, error_size=20)
else:
    LADDER = ARITHMETIC.make_config(d_models=(32,), headroom_D=0, ks=(1, 2), test_size=500,
                                    error_size=100)
t0 = time.perf_counter()
records = [r for setting in ARITHMETIC.settings(LADDER)
           for r in ARITHMETIC.run_setting(LADDER, setting, seed=0)]
trained_now = sum(r["value"] for r in records if r["metric"] == "steps_trained_now")
print(f"{len(ARITHMETIC.settings(LADDER))} models evaluated in {time.perf_counter() - t0:.1f} s "
      f"({trained_now:.0f} optimizer steps trained now: 0 when the shipped ladder is used)")
rows = rung_table(records, k=1)
print(f"{'rung':>12} | {'model error (nats/digit)':>24} | {'best order':>13} | {'spread':>13} "
      "| R2L - L2R")
for r in rows:
    rung = f"d{r['d_model']}/{r['steps']}"
    print(f"{rung:>12} | {r['error']:12.4f} ± {r['error_se']:.4f} | "
          f"{r['best']:.3f} ± {r['best_se']:.3f} | {r['spread']:.3f} ± {r['spread_se']:.3f} | "
          f"{r['gap']:+.3f}")
one = claim_order_invariance(rows)
two = claim_confidence({k: rung_table(records, k=k) for k in LADDER.ks})
print(f"claim 1 (order spread shrinks near perfection): {one['verdict']} -- {one['evidence']}")
print(f"claim 2 (low-confidence beats L2R/R2L on hard problems): {two['verdict']} -- "
      f"{two['evidence']}")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
xs = [r["error"] for r in rows]
ax1.errorbar(xs, [r["spread"] for r in rows], yerr=[r["spread_se"] for r in rows], marker="o",
             capsize=3, color="k", label="best - worst order")
ax1.plot(xs, [abs(r["gap"]) for r in rows], "x:", color="gray", label="|R2L - L2R|")
ax1.set_ylabel("spread of k = 1 accuracy across orders (fraction)")
ax1.set_title("order spread vs model error (error bars: 1 se over seeds)")
for order, label in addition.ORDER_LABELS.items():
    ax2.errorbar(xs, [r["orders"][order][0] for r in rows],
                 yerr=[r["orders"][order][1] for r in rows], marker="o", capsize=3, label=label)
ax2.set_ylabel("exact-match accuracy, k = 1 (fraction)")
ax2.set_title("accuracy by order along the ladder")
for ax in (ax1, ax2):
    ax.set_xscale("log")
    ax.set_xlabel("model error: mean KL(p || p_theta) per answer digit (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
show(fig, "ladder_spread_vs_error")

# %% [markdown]
# `docs/results.md` reports the verdicts of the full experiment (both widths and a 5-digit
# headroom task), computed by the same two functions.

# %%
assert {one["verdict"], two["verdict"]} <= {"yes", "no", "inconclusive"}
assert all(r["spread"] >= 0 and r["error"] > 0 for r in rows)
if not SMOKE:  # the shipped ladder spans near-chance to near-perfect
    assert min(r["best"] for r in rows) < 0.5 and max(r["best"] for r in rows) >= 0.99
