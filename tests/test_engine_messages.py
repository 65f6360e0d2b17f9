"""The message-passing engine against its reference, incremental conditionals, and error paths.

The default ``method="messages"`` (two passes of stacked log-space messages) must agree with the
reference ``method="autograd"`` (one elimination and its gradient) to 1e-12 on the zoo instances
of ``test_exact`` and on the random Bayesian networks of ``tests/brute.py``; both are checked
against brute force in ``test_exact``. Incremental conditionals (messages carried from call to
call) must equal a fresh full pass at every window position, whatever changed in between.
"""

import math

import brute
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_exact import ZOO, assert_log_close, random_rows, zoo

from mdmprob import load_model
from mdmprob.denoisers import Oracle
from mdmprob.errors import BudgetError, EvidenceError, MdmprobError
from mdmprob.exact import ExactEngine

TIGHT = 1e-12


def both(structure, device):
    graph = structure.factor_graph
    return (ExactEngine(graph, device=device, method="messages"),
            ExactEngine(graph, device=device, method="autograd"))


def check_against_reference(structure, tokens, visible, device):
    new, ref = both(structure, device)
    assert_log_close(new.conditionals(tokens, visible), ref.conditionals(tokens, visible), TIGHT)
    assert_log_close(new.log_prob_visible(tokens, visible),
                     ref.log_prob_visible(tokens, visible), TIGHT)


# ---------------------------------------------------------------------------- full pass
@pytest.mark.parametrize("key", ZOO)
def test_messages_match_the_reference_on_the_zoo(key, device):
    s = zoo(key)
    joint = brute.token_log_joint(s)
    tokens, visible = random_rows(joint, 64, torch.Generator().manual_seed(21), from_joint=0.5)
    check_against_reference(s, tokens, visible, device)


@given(spec=brute.networks(), seed=st.integers(0, 2**31 - 1))
def test_messages_match_the_reference_on_random_networks(spec, seed, device):
    """Random DAGs (tokens in any order, latents, hard zeros, a pyro.factor)."""
    s = brute.build_network(spec)
    joint = brute.token_log_joint(s)
    tokens, visible = random_rows(joint, 16, torch.Generator().manual_seed(seed))
    check_against_reference(s, tokens, visible, device)


@pytest.mark.parametrize("params", [dict(n_blocks=16), dict(n_blocks=5, block_size=3, eta=0.0,
                                                              n_states=3, rho=(0.9, 0.5, 0.1))])
def test_messages_match_the_reference_on_longer_block_hmms(params, device):
    """Beyond brute force: 16 blocks (128 tokens), and hard zeros with three latent states."""
    s = load_model("block_hmm", **params)
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 2, (32, s.n_tokens), generator=gen)
    visible = torch.rand(32, s.n_tokens, generator=gen) < torch.rand(32, 1, generator=gen)
    check_against_reference(s, tokens, visible, device)


def test_equal_steps_are_stacked(device):
    """Steps of equal shape at equal height run as one op: on the min-fill order one op per
    position of a block plus one per link of the latent chain; on the shallow order the chain
    halves each round, so the number of sequential groups grows like log2(blocks)."""
    s = load_model("block_hmm", n_blocks=64)
    engine = s.engine(device=device)
    deep, shallow = engine.message_tree(shallow=False), engine.message_tree()
    assert len(deep.steps) == len(shallow.steps) == 64 * 15  # 8 tokens, 7 latents per block
    assert len(deep.groups) <= 64 + 16
    assert len(shallow.groups) <= 2 * 6 + 16


def test_disconnected_structures(device):
    """Two independent components (two roots): log Z adds, conditionals stay per component."""
    # x0 -> x1    x2 -> x3   (no edge between the pairs)
    def chains():
        import pyro
        import pyro.distributions as dist
        trans = torch.tensor([[0.8, 0.2], [0.3, 0.7]], dtype=torch.float64)
        for c in range(2):
            a = pyro.sample(f"x{2 * c}", dist.Categorical(torch.tensor([0.4, 0.6])))
            pyro.sample(f"x{2 * c + 1}", dist.Categorical(trans[a]))

    from mdmprob import Structure
    s = Structure(chains, ["x0", "x1", "x2", "x3"], vocab=2)
    joint = brute.token_log_joint(s)
    tokens, visible = random_rows(joint, 32, torch.Generator().manual_seed(4))
    check_against_reference(s, tokens, visible, device)
    assert len(s.engine(device=device).message_tree().roots) == 2


# ---------------------------------------------------------------------------- incremental
def _random_walk(structure, device, seed, steps=40, batch=12, uniform_tokens=False):
    """Random changes of the evidence (reveal, hide, change tokens, reset) and random windows;
    after each change the incremental answer must equal a fresh full pass on the window."""
    engine = ExactEngine(structure.factor_graph, device=device)
    n, vocab = structure.n_tokens, structure.vocab
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (batch, n), generator=gen)
    if not uniform_tokens:
        tokens = engine.sample(tokens, torch.zeros(batch, n, dtype=torch.bool),
                               generator=torch.Generator(device=engine.device).manual_seed(seed))
    visible = torch.zeros(batch, n, dtype=torch.bool)
    state = engine.incremental(full_fraction=0.7)
    for step in range(steps):
        window = torch.zeros(batch, n, dtype=torch.bool)
        window[:, torch.randint(0, n, (1,), generator=gen)] = True
        if step % 3 == 0:  # different windows per row
            window[torch.randint(0, batch, (3,), generator=gen),
                   torch.randint(0, n, (3,), generator=gen)] = True
        got = state.conditionals(tokens, visible, window).cpu()
        want = engine.conditionals(tokens, visible).cpu()
        cols = window.any(0)
        assert_log_close(got[:, cols], want[:, cols], TIGHT)
        outside, full = got[:, ~cols], want[:, ~cols]  # finite, or the full answer
        same = (outside.isinf() == full.isinf()).all(-1) & (
            (outside - full).nan_to_num(nan=0.0).abs() <= TIGHT).all(-1)
        assert (outside.isfinite().all(-1) | same).all()
        visible = visible ^ (torch.rand(batch, n, generator=gen) < 0.15)
        if step % 4 == 3:
            tokens = torch.where(torch.rand(batch, n, generator=gen) < 0.2,
                                 torch.randint(0, vocab, (batch, n), generator=gen), tokens)
        if step % 11 == 10:
            visible[:] = False


@pytest.mark.parametrize("key", ZOO)
def test_incremental_conditionals_equal_the_full_pass(key, device):
    _random_walk(zoo(key), device, seed=5)


def test_incremental_conditionals_with_impossible_evidence(device):
    """Uniform tokens under hard zeros: many rows become impossible and possible again."""
    _random_walk(load_model("block_hmm", n_blocks=4, block_size=3, eta=0.0), device, seed=6,
                 uniform_tokens=True)


@given(spec=brute.networks(), seed=st.integers(0, 2**31 - 1))
def test_incremental_conditionals_on_random_networks(spec, seed, device):
    _random_walk(brute.build_network(spec), device, seed=seed % 1000, steps=12, batch=6)


def test_incremental_recomputes_only_what_the_window_needs(device):
    """Committing block k and asking block k + 1 of a 32-block chain recomputes a bounded number
    of messages, the same at every k (the decode is linear in the length)."""
    s = load_model("block_hmm", n_blocks=32)
    engine = s.engine(device=device)
    state = engine.incremental()
    gen = torch.Generator(device=engine.device).manual_seed(0)
    full = engine.sample(torch.zeros(4, s.n_tokens, dtype=torch.long),
                         torch.zeros(4, s.n_tokens, dtype=torch.bool), generator=gen)
    visible = torch.zeros(4, s.n_tokens, dtype=torch.bool)
    counts = []
    for block in s.blocks[:-1]:
        window = torch.zeros_like(visible)
        window[:, block] = True
        state.conditionals(full, visible, window)
        counts.append(state.recomputed)
        visible[:, block] = True
    assert counts[0] == 2 * len(engine.message_tree(shallow=False).steps)  # the first call: a full pass
    assert max(counts[1:]) <= 64
    early, late = sorted(counts[1:9]), sorted(counts[-8:])
    assert late[4] <= early[4] + 1  # medians: no growth along the sequence


def test_small_logsumexp_equals_torch_on_mixed_axes():
    """The small-table reduction (pairs of states by one logaddexp, other axes by logsumexp)
    against torch.logsumexp, on axes of 1, 2 and 3 states and slices that are all -inf."""
    import itertools

    from mdmprob.messages import _logsumexp, _normalise

    gen = torch.Generator().manual_seed(0)
    for shape in [(2, 3, 2, 1), (3, 2, 2, 4), (2, 2, 2), (5, 2, 3, 2)]:
        x = torch.randn(shape, generator=gen, dtype=torch.float64)
        x[x > 0.8] = -math.inf
        for r in range(1, len(shape) + 1):
            for dims in itertools.combinations(range(len(shape)), r):
                got, want = _logsumexp(x, dims), torch.logsumexp(x, dims)
                assert got.shape == want.shape, dims
                assert not got.isnan().any()
                assert torch.equal(got == -math.inf, want == -math.inf), dims
                finite = want > -math.inf
                assert torch.allclose(got[finite], want[finite], atol=1e-14), dims
        norm = _normalise(x)
        assert not norm.isnan().any()
        rows = (x > -math.inf).any(-1)
        assert torch.allclose(norm[rows].exp().sum(-1), torch.ones(()).double(), atol=1e-14)


def test_conditionals_are_ordinary_tensors(device):
    """The passes run in inference mode; what they return must still take in-place updates
    and enter autograd (a training loss against the oracle's conditionals)."""
    s = load_model("block_hmm", n_blocks=3)
    engine = s.engine(device=device)
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 2, (4, s.n_tokens), generator=gen).to(engine.device)
    visible = (torch.rand(4, s.n_tokens, generator=gen) < 0.5).to(engine.device)
    window = torch.zeros_like(visible)
    window[:, :4] = True
    outs = [engine.conditionals(tokens, visible), engine.log_prob_visible(tokens, visible),
            engine.incremental().conditionals(tokens, visible, window)]
    for out in outs:
        assert not out.is_inference()
        weight = torch.ones((), device=engine.device, dtype=out.dtype, requires_grad=True)
        (out.clamp(min=-50) * weight).sum().backward()
        assert weight.grad is not None
        out.add_(0.0)


# ---------------------------------------------------------------------------- the oracle
def test_oracle_window_rows_equal_the_full_answer_along_a_block_decode(device):
    """Emulate a block-by-block decoder: commit each block from the oracle's windowed answer;
    the window's rows equal the whole-sequence answer at every step."""
    s = load_model("block_hmm", n_blocks=6, block_size=4, eta=0.0)
    windowed, whole = Oracle(s, device=device), Oracle(s, device=device)
    mask = windowed.mask_id
    tokens = torch.full((8, s.n_tokens), mask)
    gen = torch.Generator().manual_seed(1)
    for block in s.blocks:
        window = torch.zeros(tokens.shape, dtype=torch.bool)
        window[:, block] = True
        got = windowed(tokens, window=window).cpu()
        want = whole(tokens).cpu()
        assert_log_close(got[:, block], want[:, block], TIGHT)
        assert got.isfinite().any(-1).all()
        # mean-field commit of the block (may create impossible evidence under eta = 0)
        draws = torch.multinomial(got[:, block].exp().reshape(-1, s.vocab), 1, generator=gen)
        tokens[:, block] = draws.reshape(8, len(block))
    assert (tokens != mask).all()


def test_denoiser_window_must_match_the_tokens(device):
    s = zoo("markov_chain")
    oracle = Oracle(s, device=device)
    tokens = torch.full((2, s.n_tokens), oracle.mask_id)
    with pytest.raises(EvidenceError, match="window must be a bool tensor of shape"):
        oracle(tokens, window=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(EvidenceError, match="bool"):
        oracle(tokens, window=torch.ones(2, s.n_tokens))


# ---------------------------------------------------------------------------- inputs
def test_engine_rejects_a_non_floating_dtype():
    s = zoo("markov_chain")
    with pytest.raises(MdmprobError, match=r"dtype=torch.int32 .*torch.float64"):
        s.engine(dtype=torch.int32)


def test_engine_rejects_an_unknown_device():
    s = zoo("markov_chain")
    with pytest.raises(MdmprobError, match="device='tpu'.*'cpu'"):
        s.engine(device="tpu")


def test_engine_rejects_an_unknown_method():
    with pytest.raises(MdmprobError, match="method='fast'"):
        ExactEngine(zoo("markov_chain").factor_graph, method="fast")


def test_engine_window_must_match_the_tokens(device):
    engine = zoo("markov_chain").engine(device=device)
    tokens = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(EvidenceError, match=r"window must be a bool tensor of shape \(2, 5\)"):
        engine.incremental().conditionals(tokens, None, torch.ones(2, 4, dtype=torch.bool))


def test_an_impossible_batch_is_a_budget_error_before_allocating(device, monkeypatch):
    """The memory the message tables need is estimated first: too much names the number of
    sequences that fit."""
    import mdmprob.exact as exact

    engine = zoo("block_hmm-eta0.1").engine(device=device)
    monkeypatch.setattr(exact, "_free_memory", lambda device: 10_000)
    monkeypatch.setattr(exact, "_PROBE_BYTES", 0)  # ask for every size, not only past 256 MiB
    tokens = torch.zeros(1000, 6, dtype=torch.long)
    with pytest.raises(BudgetError, match=r"1000 sequences need about .* at most about \d+"):
        engine.conditionals(tokens, None)
    assert engine.conditionals(tokens[:1], None).shape == (1, 6, 2)
    assert math.isfinite(engine.log_prob(tokens[:1]).item())


# ---------------------------------------------------------------------------- marginal MAP
def test_marginal_map_plans_with_the_visible_tokens(device):
    """Summing the latent out first joins all its children: a table of V^6 x K entries with no
    evidence. With four of the six tokens visible the plan conditions on them (slices them out
    of their factors) and needs only K x V^2 entries per row; the answer is brute force's."""
    #        z
    #   / / / \ \ \
    # x0 x1 x2 x3 x4 x5
    def star():
        import pyro
        import pyro.distributions as dist
        from pyro.ops.indexing import Vindex
        emit = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.3, 0.4, 0.3]],
                            dtype=torch.float64)
        z = pyro.sample("z", dist.Categorical(torch.tensor([0.5, 0.3, 0.2])))
        for i in range(6):
            pyro.sample(f"x{i}", dist.Categorical(Vindex(emit)[z]))

    from mdmprob import Structure
    s = Structure(star, [f"x{i}" for i in range(6)], vocab=3)
    engine = ExactEngine(s.factor_graph, device=device, budget=500)
    hidden = torch.zeros(1, 6, dtype=torch.bool)
    with pytest.raises(BudgetError, match="2.19e\\+03 entries"):
        engine.most_likely(torch.zeros(1, 6, dtype=torch.long), hidden)
    joint = brute.token_log_joint(s)
    gen = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 3, (40, 6), generator=gen)
    visible = torch.zeros(40, 6, dtype=torch.bool)
    for b in range(40):  # four visible positions per row, in varying patterns
        visible[b, torch.randperm(6, generator=gen)[:4]] = True
    got = engine.most_likely(tokens, visible).cpu()
    checked = 0
    for b in range(40):
        best = brute.masked_argmax(brute.masked_posterior(joint, tokens[b], visible[b]))
        if best is None:
            continue
        want = tokens[b].clone()
        want[~visible[b]] = torch.tensor(best)
        assert torch.equal(got[b], want)
        checked += 1
    assert checked >= 20


def test_a_denoiser_without_a_window_path_answers_in_full():
    """The base class accepts ``window`` and answers every row (predict_window -> predict)."""
    from mdmprob.denoisers.base import Denoiser

    class Counting(Denoiser):
        vocab, n_tokens, device, dtype = 3, 4, torch.device("cpu"), torch.float64

        def predict(self, tokens):
            return torch.log_softmax(torch.arange(12.0, dtype=self.dtype).reshape(1, 4, 3)
                                     .expand(tokens.shape[0], -1, -1), -1)

    d = Counting()
    tokens = torch.tensor([[0, 3, 3, 2], [3, 3, 1, 3]])
    window = torch.tensor([[False, True, False, False], [True, False, False, False]])
    assert torch.equal(d(tokens, window=window), d(tokens))
