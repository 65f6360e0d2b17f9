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
# # 2. Writing your own structure
#
# A *structure* is an ordinary Pyro model over discrete sample sites (plates, `pyro.markov`,
# `pyro.factor` and observations included), plus a declaration of which sites are the tokens,
# the vocabulary size, the decoding blocks and, optionally, a constraint predicate. mdmprob traces
# the model once under parallel enumeration, compiles it into a factor graph (a plated site becomes
# one variable per element, `b[0]`, `b[1]`, ...), checks it by rerunning the model on samples of
# the graph, and answers every query exactly by variable elimination.
#
# This tutorial writes two new constraints in the two ways Pyro offers:
#
# 1. **exactly one hot**: a latent picks the hot position; the tokens, one `pyro.plate` of K
#    elements, are deterministic given it (`logits=` with `-inf` for hard zeros, `Vindex`);
# 2. **a Latin rectangle**: every row and every column of a grid holds distinct symbols
#    (pairwise `pyro.factor` terms that are `-inf` on a clash).
#
# Then it draws their interaction graphs, reads off an elimination order and its width, and
# computes the total correlation (TC) of each decoding block, that is, what parallel decoding of
# that block loses. All quantities are in nats.

# %%
import math
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import networkx as nx
import pyro
import pyro.distributions as dist
import torch
from matplotlib.patches import Patch
from pyro.ops.indexing import Vindex

import mdmprob
from mdmprob.decoders import mean_field_blocks, verified_blocks
from mdmprob.denoisers import Oracle
from mdmprob.evaluate import evaluate
from mdmprob.tutorial import setup, show

SMOKE = setup()  # MDMPROB_SMOKE or CI shrink everything; headless figures; one torch thread

NEG_INF = -math.inf
PENALTIES = [0.5, 2.0, 8.0, math.inf] if SMOKE else [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, math.inf]


# %% [markdown]
# ## 1. Exactly one hot, with a latent and hard zeros
#
# A latent `z` chooses which of K binary tokens is hot: token i is 1 exactly when `z == i`.
# The K tokens are one site `b` in a `pyro.plate` of K positions, as a Pyro user writes
# independent copies; `tokens=["b"]` stands for its elements `b[0], ..., b[K-1]` in order.
# Whether position i is hot is a tensor expression of the *sampled* `z` (`z == arange(K)`),
# used to index the logits with `Vindex`, never a Python `if` (under enumeration `z` is a tensor
# of all its values at once). Hard zeros are written as `logits=` with `-inf`: `probs=` would be
# clamped by torch to 1e-16.
#
# The constraint predicate returns one column per decoding block; column m may only read
# blocks ≤ m: "at most one hot so far" for the first block, "exactly one hot" for the last.

# %%
K = 4
weights = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)  # Pr[z = i]
off_on = torch.tensor([[0.0, NEG_INF], [NEG_INF, 0.0]], dtype=torch.float64)  # rows: is hot?


def one_hot_model():
    z = pyro.sample("z", dist.Categorical(weights))
    with pyro.plate("positions", K):
        hot = (z == torch.arange(K)).long()  # [..., K]: is position i the chosen one?
        pyro.sample("b", dist.Categorical(logits=Vindex(off_on)[hot]))


def one_hot_ok(x):  # x: LongTensor[B, K] -> satisfied [B, n_blocks]
    return torch.stack([x[:, :2].sum(-1) <= 1, x.sum(-1) == 1], -1)


one_hot = mdmprob.Structure(one_hot_model, tokens=["b"], vocab=2,
                            blocks=[[0, 1], [2, 3]], constraint=one_hot_ok, name="one_hot")
print(one_hot, one_hot.tokens)
assert one_hot.tokens == [f"b[{i}]" for i in range(K)]

# %% [markdown]
# ## 2. A Latin rectangle, with `pyro.factor`
#
# Two rows of three cells over the symbols {0, 1, 2}, each cell (r, c) with a mild preference
# (one nat) for the cyclic pattern (r + c) mod 3. Every pair of cells in the same row or column
# gets a factor that is `-penalty` when they clash; `penalty = inf` makes the constraint hard.
# `pyro.factor` makes the model unnormalised, and the engine divides by the normaliser exactly.
# The decoding blocks are the rows.

# %%
ROWS, COLS, V = 2, 3, 3


def preference(r, c):  # logits of cell (r, c): one nat for the symbol (r + c) mod 3
    return (torch.arange(V) == (r + c) % V).to(torch.float64)


def latin_structure(penalty=math.inf):
    def model():
        cells = {}
        for r in range(ROWS):
            for c in range(COLS):
                x = pyro.sample(f"x_{r}_{c}", dist.Categorical(logits=preference(r, c)))
                for (r2, c2), other in cells.items():
                    if r2 == r or c2 == c:  # a Python branch on *positions* is fine
                        clash = torch.where(x == other, -penalty, 0.0)
                        pyro.factor(f"differ_{r2}{c2}_{r}{c}", clash)
                cells[r, c] = x

    def latin_ok(x):  # row m distinct, and distinct from the rows above it in every column
        grid = x.reshape(-1, ROWS, COLS)
        ok = []
        for r in range(ROWS):
            row = grid[:, r]
            distinct = (row[:, :, None] != row[:, None, :]).sum((-1, -2)) == COLS * (COLS - 1)
            above = (grid[:, :r] != row[:, None, :]).all(-1).all(-1)
            ok.append(distinct & above)
        return torch.stack(ok, -1)

    tokens = [f"x_{r}_{c}" for r in range(ROWS) for c in range(COLS)]
    blocks = [[r * COLS + c for c in range(COLS)] for r in range(ROWS)]
    return mdmprob.Structure(model, tokens, vocab=V, blocks=blocks, constraint=latin_ok,
                             name="latin", params={"penalty": penalty})


latin = latin_structure()
engine = latin.engine()
print(latin, f"log Z = {engine.log_normalizer:.4f}")
most_likely = engine.most_likely(torch.zeros(1, 6, dtype=torch.long),
                                 torch.zeros(1, 6, dtype=torch.bool))
print("most likely rectangle:\n", most_likely.reshape(ROWS, COLS))
assert most_likely.tolist() == [[0, 1, 2, 1, 2, 0]]  # the cyclic pattern
assert not latin.violations(most_likely).any()

# %% [markdown]
# ## 3. The interaction graph and an elimination order
#
# `mdmprob.interaction_graph` is a networkx graph on the variables: an edge joins two variables
# that share a factor. `mdmprob.elimination_order` returns a greedy min-fill order and its
# induced width w; exact queries cost about `B · V^(w+1)` per eliminated variable, never `V^n`.

# %%
graphs = {}
for name, structure in (("one_hot", one_hot), ("latin", latin)):
    fg = structure.factor_graph
    order, width = mdmprob.elimination_order(fg)
    graphs[name] = mdmprob.interaction_graph(fg)
    print(f"{name}: {fg.n_variables} variables ({len(fg.latent_names)} latent), "
          f"{len(fg.factors)} factors, elimination order {[fg.names[v] for v in order]}, "
          f"width {width}")

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
colors = {"token": "tab:blue", "latent": "tab:orange"}
for ax, (name, g) in zip(axes, graphs.items(), strict=True):
    if name == "latin":  # cells at (column, row)
        # the middle column is raised so that the row edge from column 0 to 2 stays visible
        pos = {n: (int(n.split("_")[2]), -int(n.split("_")[1]) + 0.3 * (n.endswith("_1")))
               for n in g}
        ax.set_xlabel("grid column c (cell index)")
        ax.set_ylabel("grid row r (cell index, top = 0)")
    else:  # tokens on a line, the latent above them
        pos = {n: ((d["position"], 0) if d["kind"] == "token" else ((K - 1) / 2, 1))
               for n, d in g.nodes(data=True)}
        ax.set_xlabel("token position i")
        ax.set_ylabel("layer (0 = tokens, 1 = latent)")
    nx.draw_networkx(g, pos, ax=ax, node_size=900, font_size=8,
                     node_color=[colors[d["kind"]] for _, d in g.nodes(data=True)])
    ax.tick_params(left=True, bottom=True, labelleft=True, labelbottom=True)
    ax.set_title(f"interaction graph: {name}")
    ax.margins(0.25)
    ax.legend(handles=[Patch(color=c, label=k) for k, c in colors.items()], loc="upper right")
show(fig, "interaction_graphs")

# %% [markdown]
# The one-hot structure is a star around its latent (width 1); the Latin rectangle couples every
# row and every column (width 3 with six cells).
#
# ## 4. Total correlation per block
#
# `mdmprob.block_report` gives, for each decoding block, the forward TC (what mean-field
# decoding *loses*, averaged over prefixes from p) and the reverse TC (its *sampling risk*,
# averaged over the mean-field decoder's own prefixes), plus the mean-field violation rate. Both
# structures have hard zeros, so the mean-field decoder puts mass on impossible blocks and the
# reverse TC is `+inf` while the forward TC stays finite.

# %%
for name, structure in (("one_hot", one_hot), ("latin", latin)):
    report = mdmprob.block_report(structure)
    for row in report["blocks"]:
        print(f"{name} block {row['index']} {row['positions']}: forward TC "
              f"{row['forward_tc']:.4f}, reverse TC {row['reverse_tc_mean_field']}, "
              f"violation {row['violation_mean_field']:.3f}")
    assert math.isinf(report["kl_qp_mean_field"])

# %% [markdown]
# `evaluate` runs a decoder against the exact structure. These spaces are tiny (3^6 = 729
# sequences), so it enumerates the decoder's output distribution q exactly.

# %%
for decoder in (mean_field_blocks(), verified_blocks()):
    print(decoder.name, evaluate(latin, decoder, Oracle(latin), mode="exact", samples=100))

# %% [markdown]
# ## 5. Soft constraints: how the TCs depend on the penalty
#
# With a finite penalty every configuration is possible, so both TCs are finite. As the
# penalty grows, the forward TC approaches its hard-constraint value while the reverse TC keeps
# growing: the mean-field decoder's clash rate tends to the hard constraint's violation rate,
# which is not zero, and each clash costs more nats the larger the penalty.

# %%
fwd, rev, viol = [], [], []
for penalty in PENALTIES:
    rep = mdmprob.block_report(latin_structure(penalty))
    fwd.append([b["forward_tc"] for b in rep["blocks"]])
    rev.append([b["reverse_tc_mean_field"] for b in rep["blocks"]])
    viol.append([b["violation_mean_field"] for b in rep["blocks"]])
finite = [p for p in PENALTIES if math.isfinite(p)]

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
for m in range(ROWS):
    ax1.semilogx(finite, [f[m] for f, p in zip(fwd, PENALTIES, strict=True) if p < math.inf],
                 "s-", label=f"forward TC, row {m}")
    ax1.semilogx(finite, [r[m] for r, p in zip(rev, PENALTIES, strict=True) if p < math.inf],
                 "o-", label=f"reverse TC, row {m}")
    ax1.axhline(fwd[-1][m], ls=":", color=f"C{2 * m}", label=f"forward TC at penalty = ∞, row {m}")
    ax2.semilogx(finite, [v[m] for v, p in zip(viol, PENALTIES, strict=True) if p < math.inf],
                 "o-", label=f"row {m}")
for ax in (ax1, ax2):
    ax.set_xticks(finite, [f"{p:g}" for p in finite])
    ax.minorticks_off()
ax1.set_xlabel("clash penalty (nats per clashing pair)")
ax1.set_ylabel("expected conditional TC (nats)")
ax1.set_title("Latin rectangle: TC per decoding block")
ax1.legend(fontsize=7)
ax2.set_xlabel("clash penalty (nats per clashing pair)")
ax2.set_ylabel("Pr[row violates the constraint] under mean field")
ax2.set_title("Mean-field violation rate per block")
ax2.legend()
show(fig, "soft_penalty")

# %% [markdown]
# ## 6. A model file, for the zoo loader and the command line
#
# A Python file that defines `build(**params) -> Structure` is a model: load it with
# `mdmprob.load_model(path, **params)`, or from the shell with
# `mdmprob info path/to/latin.py -p penalty=2.0`. Parameters are typed by their defaults.

# %%
MODEL_FILE = '''
"""A 2 x 3 Latin rectangle over 3 symbols with a clash penalty (inf: a hard constraint)."""
import math

import pyro
import pyro.distributions as dist
import torch

from mdmprob.structure import Structure


def build(penalty: float = math.inf) -> Structure:
    def model():
        cells = {}
        for r in range(2):
            for c in range(3):
                logits = (torch.arange(3) == (r + c) % 3).to(torch.float64)
                x = pyro.sample(f"x_{r}_{c}", dist.Categorical(logits=logits))
                for (r2, c2), other in cells.items():
                    if r2 == r or c2 == c:
                        pyro.factor(f"differ_{r2}{c2}_{r}{c}", torch.where(x == other, -penalty, 0.0))
                cells[r, c] = x

    tokens = [f"x_{r}_{c}" for r in range(2) for c in range(3)]
    return Structure(model, tokens, vocab=3, blocks=[[0, 1, 2], [3, 4, 5]], name="latin_file")
'''
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "latin.py"
    path.write_text(MODEL_FILE)
    print(mdmprob.model_parameters(str(path)))
    from_file = mdmprob.load_model(str(path), penalty=2.0)
    loss = mdmprob.block_report(from_file)["kl_pq_mean_field"]
    print(from_file, f"KL(p||q_MF) = {loss:.4f} nats")
    assert abs(loss - mdmprob.block_report(latin_structure(2.0))["kl_pq_mean_field"]) < 1e-12

# %% [markdown]
# ## 7. The one mistake the compiler cannot accept
#
# Under enumeration a sampled value is a tensor of *all* its values, so a Python `if` on it is
# meaningless. mdmprob reports a `StructureError` that says what to write instead.

# %%
def branching_model():
    x = pyro.sample("x", dist.Categorical(torch.ones(3) / 3))
    if x == 0:  # wrong: use torch.where or Vindex on x
        pyro.sample("y", dist.Categorical(torch.ones(3) / 3))
    else:
        pyro.sample("y", dist.Categorical(torch.tensor([0.5, 0.5, 0.0])))


try:
    mdmprob.Structure(branching_model, ["x", "y"], vocab=3)
except mdmprob.StructureError as err:
    lines = str(err).splitlines()
    print(lines[0], "...", lines[-1])

# %% [markdown]
# Worse, some branches do *not* fail under enumeration: `(x == 0).any()` is simply true when `x`
# holds all its values, so the trace sees one branch and would compile another model. After
# compiling, mdmprob reruns the model on a few samples of the compiled graph and compares every
# site's log-probability; the first site that differs is named.

# %%
def silently_branching_model():
    x = pyro.sample("x", dist.Categorical(torch.ones(3) / 3))
    if (x == 0).any():  # wrong: true for every x under enumeration
        pyro.sample("y", dist.Categorical(torch.ones(3) / 3))
    else:
        pyro.sample("y", dist.Categorical(torch.tensor([0.5, 0.5, 0.0])))


try:
    mdmprob.Structure(silently_branching_model, ["x", "y"], vocab=3)
    raise AssertionError("the replay check should have refused this model")
except mdmprob.StructureError as err:
    print(type(err).__name__, ":", err)
