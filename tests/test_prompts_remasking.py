"""Prompts (``initial=``) on the remasking decoders, the block correctors and importance
resampling: the prompt's tokens never change, and the exact law with a prompt agrees with brute
force (the engine's p(x | prompt), an explicit transition matrix of the remasking chain) and with
the runs' frequencies."""

import itertools
import math
import sys
from pathlib import Path

import pytest
import torch

from mdmprob import load_model
from mdmprob.decoders import (
    gibbs_remask,
    mdlm,
    mean_field_blocks,
    rejection,
    remdm,
    speculative,
    verified_blocks,
)
from mdmprob.decoders.presets import importance  # the package's name is shadowed by the module
from mdmprob.decoders.remask import Remask, RemaskDecoder
from mdmprob.denoisers import Oracle, Table
from mdmprob.errors import MdmprobError

sys.path.insert(0, str(Path(__file__).parent))
import conformance_decoders as ref  # noqa: E402
from test_remask import assert_frequencies_match  # noqa: E402


@pytest.fixture(scope="module")
def hmm():
    s = load_model("block_hmm", n_blocks=2, block_size=3)
    return s, Oracle(s)


def _prompt(o, values):
    return torch.tensor([o.mask_id if v is None else v for v in values], device=o.device)


def _conditional(structure, o, prompt):
    """Brute force: log p(x | prompt) over all V^n sequences, from the engine's joint."""
    n, V = structure.n_tokens, structure.vocab
    xs = torch.tensor(list(itertools.product(range(V), repeat=n)), device=o.device)
    log_p = structure.engine(device=o.device, dtype=o.dtype).log_prob(xs)
    keep = ((prompt == o.mask_id) | (xs == prompt)).all(-1)
    log_p = torch.where(keep, log_p, torch.full_like(log_p, -math.inf))
    return (log_p - torch.logsumexp(log_p, 0)).reshape([V] * n)


def _keeps(tokens, prompt, mask):
    return ((prompt == mask) | (tokens == prompt)).all()


PROMPT = [1, None, None, None, 0, None]


@pytest.mark.parametrize("make", [verified_blocks, rejection, speculative],
                         ids=["verified", "rejection", "speculative"])
def test_exact_block_correctors_give_the_conditional_law_of_the_prompt(hmm, make):
    s, o = hmm
    prompt = _prompt(o, PROMPT)
    d = make()
    p = _conditional(s, o, prompt)
    q = d.distribution(o, initial=prompt)
    torch.testing.assert_close(q.exp(), p.exp(), atol=1e-12, rtol=0)
    run = d.run(o, 20000, seed=3, initial=prompt)
    assert _keeps(run.tokens, prompt, o.mask_id)
    assert_frequencies_match(run.tokens, p, s.vocab)
    lp = d.log_prob(o, run.tokens[:50], initial=prompt)
    torch.testing.assert_close(lp, p.reshape(-1)[_codes(run.tokens[:50], s.vocab)])


def _codes(tokens, V):
    n = tokens.shape[-1]
    return (tokens * V ** torch.arange(n - 1, -1, -1, device=tokens.device)).sum(-1)


@pytest.mark.parametrize("d", [gibbs_remask(k=2, sweeps=2), remdm(steps=3, eta=0.5)],
                         ids=["gibbs_remask", "remdm"])
def test_one_free_position_per_window_is_decoded_exactly(hmm, d):
    """With the exact oracle and one masked position per window, each is drawn from its exact
    conditional (remasking redraws it from the same law), so q = p(x | prompt)."""
    s, o = hmm
    prompt = _prompt(o, [1, None, 1, 0, 0, None])
    torch.testing.assert_close(d.distribution(o, initial=prompt).exp(),
                               _conditional(s, o, prompt).exp(), atol=1e-12, rtol=0)


def _chain(den, prompt, k, sweeps):
    """Brute force of one window's remasking chain (window = the whole sequence): the explicit
    V^c x V^c transition matrix over the c free positions, q0 K^sweeps."""
    n, V, mask = den.n_tokens, den.vocab, den.mask_id
    free = [i for i in range(n) if int(prompt[i]) == mask]
    ys = list(itertools.product(range(V), repeat=len(free)))

    def probs(fill):  # conditionals with the free positions set to fill (None: masked)
        x = prompt.clone()
        for i, v in zip(free, fill, strict=True):
            x[i] = mask if v is None else v
        return den(x[None])[0].exp()

    p0 = probs([None] * len(free))
    q = torch.tensor([math.prod(float(p0[i, v]) for i, v in zip(free, y, strict=True))
                      for y in ys], dtype=torch.float64)
    kk = min(k, len(free))
    subsets = list(itertools.combinations(range(len(free)), kk))
    K = torch.zeros(len(ys), len(ys), dtype=torch.float64)
    for a, y in enumerate(ys):
        for S in subsets:
            p = probs([None if j in S else y[j] for j in range(len(free))])
            for b, z in enumerate(ys):
                if all(z[j] == y[j] for j in range(len(free)) if j not in S):
                    K[a, b] += math.prod(float(p[free[j], z[j]]) for j in S) / len(subsets)
    for _ in range(sweeps):
        q = q @ K
    table = torch.zeros([V] * n, dtype=torch.float64)
    for y, mass in zip(ys, q.tolist(), strict=True):
        x = prompt.clone()
        x[free] = torch.tensor(y)
        table[tuple(x.tolist())] = mass
    return table


@pytest.mark.parametrize("k,sweeps", [(2, 2), (3, 1), (4, 1)])
def test_remask_chain_with_a_prompt_equals_the_explicit_transition_matrix(k, sweeps):
    den = Table.random(5, 2, seed=4, concentration=0.7)
    prompt = _prompt(den, [None, 1, None, 0, None])  # three free positions; k = 4 clips to 3
    d = RemaskDecoder("remask-all", Remask("random", k, sweeps), window="all")
    q = d.distribution(den, initial=prompt).exp()
    torch.testing.assert_close(q, _chain(den, prompt, k, sweeps), atol=1e-12, rtol=0)


@pytest.mark.parametrize("kernel", ["random", "lowest_confidence"])
def test_remask_runs_keep_the_prompt_and_follow_the_exact_law(kernel):
    den = Table.random(4, 3, seed=5, concentration=0.7)
    prompt = torch.tensor([[den.mask_id, 2, den.mask_id, den.mask_id]])
    d = gibbs_remask(k=2, sweeps=2, kernel=kernel)
    blocks = [[0, 1, 2, 3]]
    run = d.run(den, 30000, seed=7, blocks=blocks, initial=prompt)
    assert _keeps(run.tokens, prompt, den.mask_id)
    assert all((step <= (prompt == den.mask_id)).all() for step in run.committed)
    q = d.distribution(den, blocks=blocks, initial=prompt)
    assert_frequencies_match(run.tokens, q, 3)
    replayed = d.log_prob(den, run.tokens, committed=run.committed, blocks=blocks, initial=prompt)
    torch.testing.assert_close(replayed, run.log_q)


def test_remdm_with_a_prompt_matches_mdlm_at_eta_zero_and_its_runs():
    den = Table.random(5, 2, seed=9, concentration=0.6)
    prompt = _prompt(den, [None, 0, None, None, 1])
    q0 = remdm(steps=3, eta=0.0, top_p=None).distribution(den, initial=prompt)
    torch.testing.assert_close(q0.exp(), mdlm(3).distribution(den, initial=prompt).exp(),
                               atol=1e-12, rtol=0)
    d = remdm(steps=4, eta=0.6, top_p=None)
    run = d.run(den, 30000, seed=2, initial=prompt)
    assert _keeps(run.tokens, prompt, den.mask_id)
    assert all(((s == prompt) | (prompt == den.mask_id)).all() for s in run.committed.states)
    assert_frequencies_match(run.tokens, d.distribution(den, initial=prompt), 2)
    replayed = d.log_prob(den, run.tokens, committed=run.committed, initial=prompt)
    torch.testing.assert_close(replayed, run.log_q)


def test_importance_resampling_completes_the_prompt(hmm):
    s, o = hmm
    prompt = _prompt(o, PROMPT)
    d = importance(mean_field_blocks(), particles=4)
    run = d.run(o, 64, seed=1, initial=prompt)
    assert _keeps(run.tokens, prompt, o.mask_id)
    torch.testing.assert_close(run.log_q, d.log_prob(o, run.tokens, initial=prompt))


@pytest.mark.parametrize("d", [gibbs_remask(), remdm(steps=3), verified_blocks(),
                               importance(mean_field_blocks(), particles=2)],
                         ids=["gibbs_remask", "remdm", "verified", "importance"])
def test_a_bad_prompt_raises_a_typed_error_naming_it(hmm, d):
    s, o = hmm
    with pytest.raises(MdmprobError, match=r"initial has shape \(5,\)"):
        d.run(o, 2, initial=torch.full((5,), o.mask_id))
    with pytest.raises(MdmprobError, match=r"token value 7 is outside"):
        d.run(o, 2, initial=torch.tensor([7, o.mask_id, 0, 0, 0, 0]))
    with pytest.raises(MdmprobError, match=r"initial has shape \(3, 6\)"):
        d.run(o, 2, initial=torch.full((3, 6), o.mask_id))


def remdm_cap_ref(model, prompt, steps, eta) -> dict:
    """ReMDM ``cap`` (arXiv 2503.00307) from a prompt, on the linear schedule alpha_t = 1 - t over
    the grid t_j = 1 - j / steps: at step j every free visible token is remasked with probability
    sigma = min(eta, (1 - alpha_s) / alpha_t), every mask revealed with probability
    (alpha_s - (1 - sigma) alpha_t) / (1 - alpha_t), its value drawn from the model; prompt
    tokens never move. The law of the state, propagated exactly over the steps."""
    n, mask = model.n, model.mask
    free = [i for i in range(n) if prompt[i] == mask]
    law = {tuple(prompt): 1.0}
    for j in range(1, steps + 1):
        a_t, a_s = (j - 1) / steps, j / steps
        sigma = 0.0 if a_t == 0 else min(eta, (1 - a_s) / a_t)
        reveal = (a_s - (1 - sigma) * a_t) / (1 - a_t)
        nxt: dict = {}
        for x, px in law.items():
            P = model.probs(x)
            moves = []
            for i in free:
                if x[i] == mask:
                    moves.append([(mask, 1 - reveal)] + [(v, reveal * P[i][v])
                                                         for v in range(model.V)])
                else:
                    moves.append([(mask, sigma), (x[i], 1 - sigma)])
            for combo in itertools.product(*moves):
                pr = px * math.prod(w for _, w in combo)
                if pr == 0:
                    continue
                y = list(x)
                for i, (v, _) in zip(free, combo, strict=True):
                    y[i] = v
                nxt[tuple(y)] = nxt.get(tuple(y), 0.0) + pr
        law = nxt
    return law


def test_remdm_with_a_prompt_matches_its_published_algorithm():
    den = Table.random(4, 2, seed=3, concentration=0.6)
    prompt = [den.mask_id, 1, den.mask_id, den.mask_id]
    law = remdm_cap_ref(ref.Model(den), prompt, 4, 0.6)
    assert all(x[1] == 1 and den.mask_id not in x for x in law)  # complete, prompt kept
    q = remdm(steps=4, eta=0.6, top_p=None).distribution(
        den, initial=torch.tensor(prompt)).exp().reshape(-1)
    expected = torch.zeros_like(q)
    for x, pr in law.items():
        expected[int("".join(map(str, x)), 2)] += pr
    torch.testing.assert_close(q, expected, atol=1e-12, rtol=0)
