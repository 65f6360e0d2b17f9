"""The published decoders of 2025–2026 (Dream, DUS, PC-Sampler, Prophet): each preset's exact q
against a deliberately simple one-sequence implementation of its paper written here (only the
denoiser is called), its exact q against its batched runs (chi-square, fixed seed), replay, the
listing, and the error paths."""

import itertools
import math
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from mdmprob import load_model
from mdmprob.catalog import decoders as listed_decoders
from mdmprob.decoders import get_decoder
from mdmprob.decoders.presets import (
    dream,
    dus,
    llada,
    mdlm,
    pc_sampler,
    prophet,
    remdm_loop,
)
from mdmprob.decoders.published import dilated_levels
from mdmprob.denoisers import Oracle, Table
from mdmprob.errors import MdmprobError, UnknownNameError
from tests.brute import assert_runs_follow

sys.path.insert(0, str(Path(__file__).parent))
import conformance_decoders as ref  # noqa: E402


def _symmetric():
    # Block-HMM, 2 blocks of 2 bits, eta = 1e-3: z1 -> z2, each z -> its 2 bits (exchangeable
    # within a block, so keys tie)
    s = load_model("block_hmm", n_blocks=2, block_size=2, eta=1e-3)
    return Oracle(s)


def _generic():
    return Table.random(4, 2, seed=8, concentration=0.6)  # incoherent, no ties


def _ternary():
    return Table.random(3, 3, seed=5, concentration=0.7)  # V = 3: margins and top-p matter


DENOISERS = [_symmetric, _generic, _ternary]


def _q(decoder, den, **kw):
    return decoder.distribution(den, **kw).reshape(-1).exp()


def _close(q, law, n, V, atol=1e-10):
    torch.testing.assert_close(q.cpu(), ref.as_table(law, n, V), atol=atol, rtol=0)


# ------------------------------------------------------------------------- reference: Dream
def dream_ref(model, steps, alg, temperature=0.0, top_k=None, top_p=None, alg_temp=0.0,
              eps=1e-3, ties="random", initial=None) -> dict:
    """Dream ``diffusion_generate`` (arXiv 2508.15487; ``generation_utils.py``): time grid
    linspace(1, eps, steps + 1); at step i with (t, s): ``origin`` reveals each mask with
    probability 1 - s/t (1 at the last step), values drawn; otherwise every mask is drawn, a key
    is computed from the drawing law (maskgit_plus: the drawn value's probability at T > 0, the
    largest at T = 0; topk_margin: top-1 minus top-2; entropy: sum p log p) and
    k = floor(|M| (1 - s/t)) (|M| at the last step) positions are committed: the top k by key, or
    (alg_temp > 0) k draws without replacement from softmax(key / alg_temp)."""
    n = model.n
    ts = [1 - i * (1 - eps) / steps for i in range(steps + 1)]
    start = tuple(initial) if initial is not None else (model.mask,) * n

    def law(p):  # the law keys are read from: T > 0 tempered, T = 0 the cut softmax at T = 1
        return ref.value_law(p, temperature if temperature > 0 else 1.0, top_k, top_p)

    def step(tokens, i, prob, out):
        masked = [j for j in range(n) if tokens[j] == model.mask]
        if not masked:
            out[tokens] += prob
            return
        t, s = ts[i], ts[i + 1]
        last = i == steps - 1
        P = model.probs(tokens)
        if alg == "origin":
            rate = 1.0 if last else 1 - s / t
            for reveal in itertools.product([False, True], repeat=len(masked)):
                pr = math.prod(rate if r else 1 - rate for r in reveal)
                if pr == 0:
                    continue
                chosen = [j for j, r in zip(masked, reveal, strict=True) if r]
                for draw, pd in ref._draws(model, tokens, chosen, temperature, top_k, top_p,
                                           "standard"):
                    new = list(tokens)
                    for j in chosen:
                        new[j] = draw[j]
                    out[tuple(new)] += prob * pr * pd
            return
        k = len(masked) if last else math.floor(len(masked) * (1 - s / t))
        for draw, pd in ref._draws(model, tokens, masked, temperature, top_k, top_p, "standard"):
            key = {}
            for j in masked:
                q = law(P[j])
                probs = sorted(q.values(), reverse=True) + [0.0]
                if alg == "maskgit_plus":
                    key[j] = q.get(draw[j], 0.0) if temperature > 0 else probs[0]
                elif alg == "topk_margin":
                    key[j] = probs[0] - probs[1]
                else:
                    key[j] = sum(p * math.log(p) for p in q.values() if p > 0)
            if alg_temp > 0:
                z = sum(math.exp(key[j] / alg_temp) for j in masked)
                w = {j: math.exp(key[j] / alg_temp) / z for j in masked}
                for seq in itertools.permutations(masked, k):
                    pw, left = 1.0, 1.0
                    for j in seq:
                        pw *= w[j] / left
                        left -= w[j]
                    new = list(tokens)
                    for j in seq:
                        new[j] = draw[j]
                    out[tuple(new)] += prob * pd * pw
                continue
            for new, pw in ref.top_commits(tokens, masked, key, k, draw, ties):
                out[new] += prob * pd * pw

    level = {start: 1.0}  # the law of the state after each step (equal states merged)
    for i in range(steps):
        out: dict = defaultdict(float)
        for tokens, prob in level.items():
            step(tokens, i, prob, out)
        level = out
    return dict(level)


@pytest.mark.parametrize("make", DENOISERS, ids=["ties", "generic", "ternary"])
@pytest.mark.parametrize("alg", ["origin", "maskgit_plus", "topk_margin", "entropy"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_dream_matches_its_published_algorithm(make, alg, temperature):
    den = make()
    n, V = den.n_tokens, den.vocab
    m = ref.Model(den)
    for steps in (2, 3, 5):
        law = dream_ref(m, steps, alg, temperature)
        _close(_q(dream(steps, alg, temperature), den), law, n, V)


@pytest.mark.parametrize("make", DENOISERS, ids=["ties", "generic", "ternary"])
@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
def test_dream_alg_temp_and_top_p(make, alg):
    den = make()
    n, V = den.n_tokens, den.vocab
    m = ref.Model(den)
    for temperature in (0.0, 0.9):
        law = dream_ref(m, 3, alg, temperature, alg_temp=0.4)
        _close(_q(dream(3, alg, temperature, alg_temp=0.4), den), law, n, V)
    law = dream_ref(m, 3, alg, 0.7, top_p=0.8)
    _close(_q(dream(3, alg, 0.7, top_p=0.8), den), law, n, V)


def test_dream_count_and_prompt():
    den = _generic()
    n, V, mask = den.n_tokens, den.vocab, den.mask_id
    initial = [mask, 1, mask, mask]
    m = ref.Model(den)
    for alg in ("origin", "entropy"):
        law = dream_ref(m, 4, alg, 0.8, initial=initial)
        d = dream(4, alg, 0.8)
        _close(_q(d, den, initial=torch.tensor(initial)), law, n, V)
        assert (d.run(den, 20, initial=torch.tensor(initial)).tokens[:, 1] == 1).all()
    # 4 masks, 3 steps on linspace(1, 1e-3, 4): floor(4 (1 - s/t)) = 1, then floor(3 / 2) = 1,
    # then all: one position per step, and a model call on every step
    run = dream(3, "entropy").run(den, 8, seed=0)
    assert [int(c[0].sum()) for c in run.committed] == [1, 1, 2]
    assert (run.nfe == 3).all()


# ------------------------------------------------------------------------- reference: DUS
def levels_ref(length, base=2):
    """DUS (arXiv 2506.19037): reveal the positions at multiples of stride B/2, then B/4, ...,
    1, each once (leftovers last); a last level smaller than the previous one joins it."""
    levels, seen, stride = [], set(), length // base
    while stride >= 1:
        level = [i for i in range(length) if i % stride == 0 and i not in seen]
        if level:
            levels.append(level)
        seen |= set(level)
        stride //= base
    if len(seen) < length:  # a block shorter than base: no stride, everything at once
        levels.append([i for i in range(length) if i not in seen])
    if len(levels) >= 2 and len(levels[-1]) < len(levels[-2]):
        last = levels.pop()
        levels[-1] = levels[-1] + last
    return levels


def test_dilated_levels():
    assert dilated_levels(8) == [[0, 4], [2, 6], [1, 3, 5, 7]]
    assert dilated_levels(6) == [[0, 3], [1, 2, 4, 5]]
    assert dilated_levels(5) == [[0, 2, 4, 1, 3]]  # [1, 3] is smaller than [0, 2, 4]: merged
    assert dilated_levels(16, base=4) == [[0, 4, 8, 12], list(set(range(16)) - {0, 4, 8, 12})]
    assert dilated_levels(1) == [[0]]
    for length in range(1, 20):
        assert dilated_levels(length) == levels_ref(length)
        assert sorted(sum(dilated_levels(length), [])) == list(range(length))


def dus_ref(model, block_length, temperature, initial=None) -> dict:
    n = model.n
    start = tuple(initial) if initial is not None else (model.mask,) * n
    groups = []
    length = n if block_length is None else block_length
    for a in range(0, n, length):
        groups += [[a + i for i in lv] for lv in levels_ref(min(length, n - a))]
    out: dict = defaultdict(float)

    def go(tokens, g, prob):
        if g == len(groups):
            out[tokens] += prob
            return
        todo = [i for i in groups[g] if tokens[i] == model.mask]
        for draw, pd in ref._draws(model, tokens, todo, temperature, None, None, "standard"):
            new = list(tokens)
            for i in todo:
                new[i] = draw[i]
            go(tuple(new), g + 1, prob * pd)

    go(start, 0, 1.0)
    return dict(out)


@pytest.mark.parametrize("make", DENOISERS, ids=["ties", "generic", "ternary"])
def test_dus_matches_its_published_algorithm(make):
    den = make()
    n, V, mask = den.n_tokens, den.vocab, den.mask_id
    m = ref.Model(den)
    for block_length, t in [(None, 1.0), (2, 0.0), (3, 0.7)]:
        _close(_q(dus(block_length, temperature=t), den), dus_ref(m, block_length, t), n, V)
    initial = [mask] * n
    initial[0] = 1
    _close(_q(dus(None), den, initial=torch.tensor(initial)),
           dus_ref(m, None, 1.0, initial), n, V)


def test_dus_calls_log_many_times():
    s = load_model("markov_chain", length=8, vocab=2, block_size=8)
    run = dus(None).run(Oracle(s), 4)
    assert (run.nfe == 3).all()  # levels [0, 4], [2, 6], [1, 3, 5, 7]
    assert [sorted(c[0].nonzero().squeeze(-1).tolist()) for c in run.committed] == \
        [[0, 4], [2, 6], [1, 3, 5, 7]]


# ------------------------------------------------------------------------- reference: PC-Sampler
def pc_ref(model, steps, lam, alpha, background, temperature, ties="random") -> dict:
    """PC-Sampler (arXiv 2508.13021) on LLaDA's loop (one block): the masks split evenly over
    the steps; every mask drawn; key = exp(-lam i) min(alpha, p(drawn) (-log p_bg(drawn)))."""
    n, V = model.n, model.V
    bg = background if background is not None else [1 / V] * V
    out: dict = defaultdict(float)

    def go(tokens, j, counts, prob):
        masked = [i for i in range(n) if tokens[i] == model.mask]
        if not masked:
            out[tokens] += prob
            return
        P = model.probs(tokens)
        for draw, pd in ref._draws(model, tokens, masked, temperature, None, None, "standard"):
            key = {i: math.exp(-lam * i) * min(alpha, P[i][draw[i]] * -math.log(bg[draw[i]]))
                   for i in masked}
            for new, pw in ref.top_commits(tokens, masked, key, counts[j], draw, ties):
                go(new, j + 1, counts, prob * pd * pw)

    go((model.mask,) * n, 0, [n // steps + (s < n % steps) for s in range(steps)], 1.0)
    return dict(out)


@pytest.mark.parametrize("make", DENOISERS, ids=["ties", "generic", "ternary"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_pc_sampler_matches_its_published_algorithm(make, temperature):
    den = make()
    n, V = den.n_tokens, den.vocab
    m = ref.Model(den)
    bg = [0.7, 0.3] if V == 2 else [0.5, 0.3, 0.2]
    for steps, lam, alpha, background in [(2, 0.25, 10.0, None), (3, 0.0, 0.2, bg),
                                          (2, 1.0, 0.5, bg)]:
        law = pc_ref(m, steps, lam, alpha, background, temperature)
        d = pc_sampler(steps, lam, alpha, background, temperature=temperature)
        _close(_q(d, den), law, n, V)


# ------------------------------------------------------------------------- reference: Prophet
def prophet_ref(model, steps, gaps, temperature, ties="random") -> dict:
    """Prophet (arXiv 2508.19982) on LLaDA low-confidence decoding (one block): before each step,
    the mean over the masks of log p(top-1) - log p(top-2); above the threshold of the progress
    (steps taken / steps: gaps[0] before 1/3, gaps[1] before 2/3, gaps[2] after) every mask is
    committed at once with its drawn value; otherwise LLaDA's step."""
    n = model.n
    out: dict = defaultdict(float)

    def go(tokens, j, counts, prob):
        masked = [i for i in range(n) if tokens[i] == model.mask]
        if not masked:
            out[tokens] += prob
            return
        P = model.probs(tokens)
        gap = 0.0
        for i in masked:
            top = sorted(P[i], reverse=True)
            gap += (math.log(top[0]) - math.log(top[1])) if top[1] > 0 else math.inf
        gap /= len(masked)
        progress = j / steps
        tau = gaps[0] if progress < 1 / 3 else gaps[1] if progress < 2 / 3 else gaps[2]
        for draw, pd in ref._draws(model, tokens, masked, temperature, None, None, "standard"):
            if gap > tau:
                go(tuple(draw.get(i, x) for i, x in enumerate(tokens)), j + 1, counts, prob * pd)
                continue
            conf = {i: P[i][draw[i]] for i in masked}
            for new, pw in ref.top_commits(tokens, masked, conf, counts[j], draw, ties):
                go(new, j + 1, counts, prob * pd * pw)

    go((model.mask,) * n, 0, [n // steps + (s < n % steps) for s in range(steps)], 1.0)
    return dict(out)


@pytest.mark.parametrize("make", DENOISERS, ids=["ties", "generic", "ternary"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_prophet_matches_its_published_algorithm(make, temperature):
    den = make()
    n, V = den.n_tokens, den.vocab
    m = ref.Model(den)
    gaps = (1.0, 0.6, 0.3)
    q = _q(prophet(3, gap_early=gaps[0], gap_mid=gaps[1], gap_late=gaps[2],
                   temperature=temperature), den)
    _close(q, prophet_ref(m, 3, gaps, temperature), n, V)
    _close(_q(prophet(n, temperature=temperature), den), prophet_ref(m, n, (7.5, 5.0, 2.5),
                                                                     temperature), n, V)


def test_prophet_early_commit_saves_calls_and_changes_the_law():
    s = load_model("block_hmm", n_blocks=2, block_size=2, eta=1e-3)
    o = Oracle(s)
    early = prophet(4, gap_early=0.5, gap_mid=0.5, gap_late=0.5, temperature=0.8)
    base = llada(4, temperature=0.8)
    assert early.run(o, 200, seed=2).nfe.float().mean() < base.run(o, 200, seed=2).nfe.float().mean()
    assert (_q(early, o) - _q(base, o)).abs().max() > 1e-3


# ------------------------------------------------------------------------- reference: ReMDM loop
def remdm_loop_ref(model, steps, eta, t_on, t_off, alpha_on, temperature) -> dict:
    """ReMDM loop (arXiv 2503.00307): alpha rises linearly to alpha_on at t_on, holds to t_off,
    rises to 1 at t = 0; every position moves independently given the state: a visible token is
    remasked with probability sigma (eta while alpha is held, else 0), a mask is revealed with
    probability (alpha_s - (1 - sigma) alpha_t) / (1 - alpha_t), its value drawn. The law of the
    state is propagated over the grid t_j = 1 - j / steps."""
    n = model.n

    def alpha(t):
        if t >= t_on:
            return alpha_on * (1 - t) / (1 - t_on)
        return alpha_on if t >= t_off else 1 - (1 - alpha_on) * t / t_off

    level = {(model.mask,) * n: 1.0}
    for j in range(steps):
        a_t, a_s = alpha(1 - j / steps), alpha(1 - (j + 1) / steps)
        sigma = eta if t_off <= 1 - (j + 1) / steps and 1 - j / steps <= t_on else 0.0
        reveal = (a_s - (1 - sigma) * a_t) / (1 - a_t)
        out: dict = defaultdict(float)
        for tokens, prob in level.items():
            P = model.probs(tokens)
            moves = []
            for i in range(n):
                if tokens[i] != model.mask:
                    moves.append([(tokens[i], 1 - sigma), (model.mask, sigma)])
                else:
                    law = ref.value_law(P[i], temperature)
                    moves.append([(v, reveal * pv) for v, pv in law.items()] +
                                 [(model.mask, 1 - reveal)])
            for combo in itertools.product(*moves):
                pr = math.prod(p for _, p in combo)
                if pr > 0:
                    out[tuple(v for v, _ in combo)] += prob * pr
        level = out
    return dict(level)


@pytest.mark.parametrize("make", DENOISERS, ids=["ties", "generic", "ternary"])
def test_remdm_loop_matches_its_published_algorithm(make):
    den = make()
    n, V = den.n_tokens, den.vocab
    m = ref.Model(den)
    for steps, eta, t_on, t_off, alpha_on, t in [(6, 0.05, 0.55, 0.05, 0.9, 1.0),
                                                 (5, 0.3, 0.7, 0.3, 0.6, 0.8)]:
        law = remdm_loop_ref(m, steps, eta, t_on, t_off, alpha_on, t)
        assert all(tok != den.mask_id for x in law for tok in x)  # everything revealed at t = 0
        d = remdm_loop(steps, eta, t_on, t_off, alpha_on, temperature=t)
        _close(_q(d, den), law, n, V)
    # the loop remasks: the law differs from MDLM on the same grid
    assert (_q(remdm_loop(5, 0.3, 0.7, 0.3, 0.6), den) - _q(mdlm(5), den)).abs().max() > 1e-4


# ------------------------------------------------------------------------- runs against exact q
CHI_SQUARE_CASES = [
    dream(3, "origin"), dream(3, "maskgit_plus", 0.8), dream(3, "topk_margin", 0.8),
    dream(3, "entropy", 0.8, alg_temp=0.5), dream(3, "maskgit_plus", 0.8, alg_temp=0.3),
    dus(2, temperature=0.8), pc_sampler(2, temperature=0.8),
    prophet(3, gap_early=1.0, gap_mid=0.6, gap_late=0.3, temperature=0.8),
    remdm_loop(5, 0.3, 0.7, 0.3, 0.6),
]


@pytest.mark.parametrize("decoder", CHI_SQUARE_CASES, ids=lambda d: d.name)
def test_batched_runs_follow_the_exact_q(decoder):
    den = _generic()
    assert_runs_follow(decoder, den, _q(decoder, den), 20000)


@pytest.mark.parametrize("decoder", CHI_SQUARE_CASES, ids=lambda d: d.name)
def test_runs_replay_and_log_q(decoder):
    den = _ternary()
    n, V = den.n_tokens, den.vocab
    run = decoder.run(den, 64, seed=1)
    replay = decoder.log_prob(den, run.tokens, committed=run.committed)
    assert torch.isfinite(run.log_q).all()
    if decoder.log_q_is_marginal:
        q = decoder.distribution(den).reshape(-1)
        codes = (run.tokens * V ** torch.arange(n - 1, -1, -1)).sum(-1)
        torch.testing.assert_close(run.log_q, q[codes], atol=1e-10, rtol=0)
        assert (replay <= run.log_q + 1e-10).all()
    else:
        torch.testing.assert_close(run.log_q, replay, atol=1e-10, rtol=0)


def test_listed_with_description_and_parameters():
    listing = listed_decoders()
    for name, params in [("dream", {"steps", "alg", "alg_temp", "eps", "temperature"}),
                         ("dus", {"block_length", "base", "skip"}),
                         ("pc_sampler", {"steps", "lam", "alpha", "background"}),
                         ("prophet", {"steps", "gap_early", "gap_mid", "gap_late"}),
                         ("remdm_loop", {"steps", "eta", "t_on", "t_off", "alpha_on"})]:
        assert len(listing[name]["description"]) > 40
        assert params <= set(listing[name]["params"])
    assert get_decoder("dream", alg="entropy", steps=2).name == "dream(entropy, steps=2)"


def test_errors():
    den = _generic()
    with pytest.raises(UnknownNameError, match="entropy"):
        dream(alg="entropi")
    with pytest.raises(MdmprobError, match="alg_temp=0.5 has no effect"):
        dream(alg="origin", alg_temp=0.5)
    with pytest.raises(MdmprobError, match="alg_temp=-1"):
        dream(alg="entropy", alg_temp=-1)
    with pytest.raises(MdmprobError, match="eps=0"):
        dream(eps=0)
    with pytest.raises(MdmprobError, match="steps=0"):
        dream(steps=0, alg="entropy")
    with pytest.raises(MdmprobError, match="base=1"):
        dus(base=1)
    with pytest.raises(MdmprobError, match="block_length=0"):
        dus(block_length=0)
    with pytest.raises(MdmprobError, match="lam=-1"):
        pc_sampler(lam=-1)
    with pytest.raises(MdmprobError, match="alpha=0"):
        pc_sampler(alpha=0)
    with pytest.raises(MdmprobError, match="summing to 1"):
        pc_sampler(background=[0.5, 0.6])
    with pytest.raises(MdmprobError, match="V = 2 values"):
        pc_sampler(background=[0.5, 0.3, 0.2]).run(den, 2)
    with pytest.raises(MdmprobError, match="gaps"):
        prophet(gap_mid=-1.0)
    with pytest.raises(MdmprobError, match="t_off=0.6 must be below t_on=0.55"):
        remdm_loop(t_off=0.6)
    with pytest.raises(MdmprobError, match="alpha_on=1"):
        remdm_loop(alpha_on=1)
    with pytest.raises(MdmprobError, match="eta <= 0.111"):
        remdm_loop(eta=0.5)


ZOO = [("block_hmm", dict(n_blocks=2, block_size=3, eta=0.05)),  # z1 -> z2, each -> 3 bits
       ("markov_chain", dict(length=4, vocab=3, block_size=2))]  # x1 -> x2 -> x3 -> x4


@pytest.mark.parametrize("name,params", ZOO)
def test_zoo_runs_are_valid_and_replay(name, params):
    s = load_model(name, **params)
    o = Oracle(s)
    for decoder in [dream(3, "maskgit_plus", 0.8, alg_temp=0.5), dream(4, "topk_margin", 0.0),
                    dus(None), pc_sampler(2, temperature=0.8), prophet(s.n_tokens),
                    remdm_loop(4, 0.05)]:
        run = decoder.run(o, 32, seed=3)
        assert ((run.tokens >= 0) & (run.tokens < s.vocab)).all() and (run.nfe >= 1).all()
        q = decoder.distribution(o).reshape(-1)
        assert q.exp().sum().item() == pytest.approx(1.0, abs=1e-10)
        codes = (run.tokens * s.vocab ** torch.arange(s.n_tokens - 1, -1, -1)).sum(-1)
        assert (q[codes] > -math.inf).all()
        replay = decoder.log_prob(o, run.tokens, committed=run.committed)
        if decoder.log_q_is_marginal:
            torch.testing.assert_close(run.log_q, q[codes], atol=1e-10, rtol=0)
        else:
            torch.testing.assert_close(run.log_q, replay, atol=1e-10, rtol=0)
