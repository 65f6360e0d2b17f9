"""Dependency-aware selection (DAPD, DAWN), the learned unmasking policy, joint proposals and
self-speculative verification: each preset's exact q against a one-sequence implementation of
its paper (tests/conformance_decoders_2026b.py), its batched runs against the exact q
(chi-square, fixed seed) at T = 0 and T > 0, replay, exactness claims against brute force, NFE
accounting, training, the listing and the error paths."""

import itertools
import math
import sys
from pathlib import Path

import pytest
import torch

from mdmprob import dependency, load_model, measures
from mdmprob.catalog import decoders as listed_decoders
from mdmprob.decoders import (
    dapd,
    dawn,
    get_decoder,
    joint_proposal,
    learned_policy,
    mean_field_blocks,
    self_speculative,
    sequential,
)
from mdmprob.decoders.dependency_aware import CMIGraph
from mdmprob.decoders.policy import UnmaskPolicy, train_policy
from mdmprob.denoisers import Oracle, Table
from mdmprob.errors import MdmprobError, UnknownNameError
from tests.brute import assert_runs_follow

sys.path.insert(0, str(Path(__file__).parent))
import conformance_decoders as ref  # noqa: E402
import conformance_decoders_2026b as ref2  # noqa: E402


def _hmm():
    return load_model("block_hmm", n_blocks=2, block_size=2, eta=0.05)


def _generic():
    return Table.random(4, 2, seed=8, concentration=0.6)  # incoherent, no ties


def _ternary():
    return Table.random(3, 3, seed=5, concentration=0.7)


def _pairs(tokens, candidates):  # a fixed graph: (0, 1) and (1, 2) depend
    adj = torch.zeros(tokens.shape[-1], tokens.shape[-1], dtype=torch.bool)
    adj[0, 1] = adj[1, 0] = adj[1, 2] = adj[2, 1] = True
    return adj


def _pairs_ref(tokens):
    return {frozenset((0, 1)), frozenset((1, 2))}


def _q(decoder, den):
    with torch.no_grad():  # a policy's exact q carries its gradient otherwise
        return decoder.distribution(den).reshape(-1).exp()


def _close(q, law, n, V, atol=1e-10):
    torch.testing.assert_close(q.cpu(), ref.as_table(law, n, V), atol=atol, rtol=0)


def _true_log_p(s):
    xs = torch.tensor(list(itertools.product(range(s.vocab), repeat=s.n_tokens)))
    return s.engine().log_prob(xs)


# ------------------------------------------------------------------------------ conformance
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_dapd_and_dawn_match_their_papers_with_the_exact_cmi_graph(temperature):
    s = _hmm()
    o = Oracle(s)
    m = ref.Model(o)
    edges = ref2.JointTable(s).graph(1e-3)
    n, V = s.n_tokens, s.vocab
    for tau in (0.0, 0.9):
        _close(_q(dapd(threshold=1e-3, tau=tau, temperature=temperature), o),
               ref2.dapd(m, edges, tau, temperature), n, V)
    for taus in [(0.9, 0.7, 0.5), (0.99, 0.6, 0.55)]:
        _close(_q(dawn(threshold=1e-3, tau_high=taus[0], tau_relaxed=taus[1], tau_low=taus[2],
                       temperature=temperature), o),
               ref2.dawn(m, edges, *taus, temperature=temperature), n, V)


@pytest.mark.parametrize("make", [_generic, _ternary], ids=["generic", "ternary"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_dapd_and_dawn_match_their_papers_with_a_callable_graph(make, temperature):
    den = make()
    m = ref.Model(den)
    n, V = den.n_tokens, den.vocab
    edges = _pairs_ref
    _close(_q(dapd(_pairs, tau=0.3, temperature=temperature), den),
           ref2.dapd(m, edges, 0.3, temperature), n, V)
    _close(_q(dawn(_pairs, tau_high=0.8, tau_relaxed=0.6, tau_low=0.4,
                   temperature=temperature), den),
           ref2.dawn(m, edges, 0.8, 0.6, 0.4, temperature), n, V)


@pytest.mark.parametrize("make", [_generic, _ternary], ids=["generic", "ternary"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_learned_policy_matches_its_paper(make, temperature):
    den = make()
    policy = UnmaskPolicy(hidden=3, init_logit=-0.4, seed=2)
    with torch.no_grad():
        policy.net[-1].weight.copy_(torch.tensor([[1.5, -0.7, 0.9]], dtype=torch.float64))
    q = _q(learned_policy(policy, temperature=temperature), den)
    _close(q, ref2.policy(ref.Model(den), policy, temperature), den.n_tokens, den.vocab)


@pytest.mark.parametrize("make", [_generic, _ternary], ids=["generic", "ternary"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_joint_and_self_speculative_match_their_papers(make, temperature):
    den = make()
    m = ref.Model(den)
    n, V = den.n_tokens, den.vocab
    blocks = [list(range(s, min(s + 2, n))) for s in range(0, n, 2)]
    whole = [list(range(n))]
    for k, b, length in [(None, blocks, 2), (2, whole, None), (3, blocks + [[]], 2)]:
        _close(_q(joint_proposal(k, block_length=length, temperature=temperature), den),
               ref2.joint(m, k, b, temperature), n, V)
        _close(_q(self_speculative(k, block_length=length, temperature=temperature), den),
               ref2.self_speculative(m, k, b, temperature), n, V)
    _close(_q(self_speculative(None, block_length=n, temperature=temperature), den),
           ref2.self_speculative(m, None, whole, temperature), n, V)
    verify = lambda P, chosen: min(max(P[i]) for i in chosen) < 0.6  # noqa: E731
    _close(_q(self_speculative(None, block_length=n, router="confidence", route_tau=0.6,
                               temperature=temperature), den),
           ref2.self_speculative(m, None, whole, temperature, verify), n, V)


# ------------------------------------------------------------------------------ runs vs exact q
def _cases():
    policy = UnmaskPolicy(hidden=2, init_logit=0.3, seed=1)
    out = []
    for t in (0.0, 0.8):
        out += [dapd(_pairs, tau=0.3, temperature=t),
                dawn(_pairs, tau_high=0.8, tau_relaxed=0.6, tau_low=0.4, temperature=t),
                learned_policy(policy, temperature=t), joint_proposal(2, temperature=t),
                joint_proposal(None, 2, temperature=t),
                self_speculative(None, 4, temperature=t),
                self_speculative(2, router="confidence", route_tau=0.7, temperature=t)]
    return out


CASES = _cases()
IDS = [f"{d.name}-T{d.temperature:g}" for d in CASES]


@pytest.mark.parametrize("decoder", CASES, ids=IDS)
def test_batched_runs_follow_the_exact_q(decoder):
    den = _generic()
    assert_runs_follow(decoder, den, _q(decoder, den), 20000)


@pytest.mark.parametrize("decoder", CASES, ids=IDS)
def test_runs_replay_and_log_q(decoder):
    den = _ternary()
    n, V = den.n_tokens, den.vocab
    run = decoder.run(den, 64, seed=1)
    replay = decoder.log_prob(den, run.tokens, committed=run.committed)
    assert torch.isfinite(run.log_q).all()
    torch.testing.assert_close(run.log_q, replay, atol=1e-10, rtol=0)
    q = decoder.distribution(den).reshape(-1)
    codes = (run.tokens * V ** torch.arange(n - 1, -1, -1)).sum(-1)
    if decoder.log_q_is_marginal:
        torch.testing.assert_close(run.log_q, q[codes], atol=1e-10, rtol=0)
        torch.testing.assert_close(decoder.log_prob(den, run.tokens), q[codes], atol=1e-10,
                                   rtol=0)
    else:
        assert (run.log_q <= q[codes] + 1e-10).all()


# ------------------------------------------------------------------------------ exactness claims
@pytest.mark.parametrize("name,params", [("block_hmm", dict(n_blocks=2, block_size=2, eta=0.05)),
                                         ("markov_chain", dict(length=4, vocab=3, block_size=2))])
def test_joint_blocks_and_verified_drafts_are_exact_with_exact_conditionals(name, params):
    s = load_model(name, **params)
    o = Oracle(s)
    log_p = _true_log_p(s)
    assert measures.kl(q=mean_field_blocks().distribution(o).reshape(-1), p=log_p).item() > 1e-3
    for d in [joint_proposal(), joint_proposal(2), self_speculative(), self_speculative(2),
              self_speculative(None, s.n_tokens, verify_cost="token")]:
        q = d.distribution(o).reshape(-1)
        assert measures.kl(q=q, p=log_p).item() < 1e-12, d.name
    # an unverified draft is the product of the marginals: never routed = mean-field blocks
    never = self_speculative(router="confidence", route_tau=0.0)
    torch.testing.assert_close(never.distribution(o), mean_field_blocks().distribution(o),
                               atol=1e-12, rtol=0)


def test_joint_and_verified_blocks_equal_left_to_right_decoding_for_any_denoiser():
    den = _ternary()  # incoherent conditionals: exactness is not the claim, the chain law is
    l2r = sequential("l2r", window=2).distribution(den)
    for d in [joint_proposal(block_length=2), self_speculative(block_length=2)]:
        torch.testing.assert_close(d.distribution(den), l2r, atol=1e-12, rtol=0)


def test_cmi_graph_matches_brute_force_and_dapd_commits_independent_sets():
    s = _hmm()
    o = Oracle(s)
    edges = ref2.JointTable(s).graph(1e-3)
    assert edges((s.vocab,) * 4) == {frozenset(e) for e in
                                    itertools.combinations(range(4), 2)}  # all dependent
    # the exact CMI graph the decoders read agrees with the brute-force one, partly visible too
    for state in [(s.vocab,) * 4, (1, s.vocab, s.vocab, 0), (s.vocab, 0, s.vocab, s.vocab)]:
        cmi = dependency.pairwise_cmi(s, torch.tensor([state]))[0]
        got = {frozenset((i, j)) for i, j in (cmi > 1e-3).nonzero().tolist() if i < j}
        assert got == edges(state), state
    run = dapd(threshold=1e-3).run(o, 200, seed=0)
    assert (run.committed[0].sum(-1) == 1).all()  # everything depends: one at a time first
    # block_hmm with eta ~ 0 within-block copies: cross-block CMI small, so tighter graphs
    # commit more per step
    loose = dapd(threshold=10.0).run(o, 200, seed=0)
    assert loose.steps == 1 and (loose.nfe == 1).all()


# ------------------------------------------------------------------------------ NFE accounting
def test_self_speculative_counts_verification_calls():
    s = load_model("markov_chain", length=4, vocab=3, block_size=4)
    o = Oracle(s)
    per_pass = self_speculative(verify_cost="pass").run(o, 300, seed=0)
    per_token = self_speculative(verify_cost="token").run(o, 300, seed=0)
    assert torch.equal(per_pass.tokens, per_token.tokens)  # the same random choices
    steps = torch.stack([c.any(-1) for c in per_pass.committed], -1).sum(-1)
    verifying = torch.stack([c.sum(-1) >= 2 for c in per_pass.committed], -1).sum(-1)
    # one model call per step plus one per verification (pass), or per verified token after
    # the first (token): each committed token but the first of its step
    assert torch.equal(per_pass.nfe, steps + verifying)
    assert torch.equal(per_token.nfe, steps + 4 - steps)
    assert torch.equal(per_pass.diagnostics["verified"], torch.full_like(steps, 4) - steps)
    assert (per_pass.diagnostics["rejected"] <= steps).all()
    # a joint proposal pays one call per conditional after the first
    assert (joint_proposal().run(o, 10, seed=0).nfe == 4).all()


# ------------------------------------------------------------------------------ training
def test_policy_gradient_reduces_kl_on_a_tiny_structure():
    s = load_model("block_hmm", n_blocks=1, block_size=3, eta=1e-3)  # three near-copies
    o = Oracle(s)
    log_p = _true_log_p(s)
    decoder = learned_policy(init_logit=2.0)  # nearly everything at once: incoherent
    with torch.no_grad():
        before = measures.kl(q=decoder.distribution(o).reshape(-1), p=log_p).item()
    history = train_policy(decoder, o, s, steps=15, num=64, lr=0.2, seed=0)
    with torch.no_grad():
        after = measures.kl(q=decoder.distribution(o).reshape(-1), p=log_p).item()
    assert len(history) == 15
    assert after < 0.5 * before, (before, after)


# ------------------------------------------------------------------------------ graph sources
class _AttendingTable(Table):
    def attention(self, tokens):
        return _pairs(tokens, None).double()[None].expand(tokens.shape[0], -1, -1) * 0.5


def test_attention_hook_is_the_graph_source():
    base = _generic()
    den = _AttendingTable(base.log_probs, base.vocab, base.n_tokens)
    torch.testing.assert_close(dapd("attention", threshold=0.1).distribution(den),
                               dapd(_pairs).distribution(den), atol=0, rtol=0)
    with pytest.raises(MdmprobError, match="exposes no attention"):
        dapd("attention").run(base, 2)


def test_attention_of_a_hugging_face_model():
    transformers = pytest.importorskip("transformers")
    from mdmprob.denoisers.huggingface import HuggingFaceMLM

    config = transformers.BertConfig(vocab_size=12, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=16,
                                     max_position_embeddings=16)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(config).eval()
    den = HuggingFaceMLM(model, [5, 6], 3, 4, prefix=[1], suffix=[2])
    from mdmprob.decoders.dependency_aware import attention_of

    att = attention_of(den, torch.full((2, 3), den.mask_id))
    assert att.shape == (2, 3, 3) and (att >= 0).all() and (att.sum(-1) <= 1 + 1e-6).all()
    q = dapd("attention", threshold=0.0).distribution(den)
    assert q.exp().sum().item() == pytest.approx(1.0, abs=1e-10)


# ------------------------------------------------------------------------------ listing, errors
def test_listed_with_description_and_parameters():
    listing = listed_decoders()
    for name, params in [("dapd", {"graph", "threshold", "tau", "block_length"}),
                         ("dawn", {"graph", "tau_high", "tau_relaxed", "tau_low"}),
                         ("learned_policy", {"policy", "init_logit"}),
                         ("joint_proposal", {"k", "block_length", "confidence"}),
                         ("self_speculative", {"k", "router", "route_tau", "verify_cost"})]:
        assert len(listing[name]["description"]) > 60, name
        assert params <= set(listing[name]["params"])
    assert get_decoder("dapd", tau=0.5).name == "dapd(cmi(>0.001), tau=0.5)"


def test_errors():
    den = _generic()
    with pytest.raises(MdmprobError, match=r"shape \(3, 3\).*\[1, 4, 4\]"):
        dapd(lambda t, c: torch.ones(3, 3)).run(den, 1)
    with pytest.raises(MdmprobError, match="NaN"):
        dapd(lambda t, c: torch.full((4, 4), math.nan)).run(den, 1)
    with pytest.raises(MdmprobError, match="not built on a structure"):
        dapd("cmi").run(den, 1)
    with pytest.raises(UnknownNameError, match="cmi"):
        dapd("mutual")
    with pytest.raises(MdmprobError, match="graph=3"):
        dawn(3)
    with pytest.raises(MdmprobError, match="tau_low <= tau_relaxed <= tau_high"):
        dawn(_pairs, tau_high=0.5, tau_relaxed=0.7)
    with pytest.raises(MdmprobError, match="tau=1.5"):
        dapd(_pairs, tau=1.5)
    with pytest.raises(MdmprobError, match=r"shape \(1, 4, 2\)"):
        learned_policy(torch.nn.Linear(4, 2, dtype=torch.float64)).run(den, 1)
    over_one = torch.nn.Linear(4, 1, dtype=torch.float64)
    torch.nn.init.zeros_(over_one.weight)
    torch.nn.init.constant_(over_one.bias, 1.5)  # every output 1.5, whatever the features
    with pytest.raises(MdmprobError, match="probability 1.5 .*must lie in"):
        learned_policy(over_one).run(den, 1)
    with pytest.raises(MdmprobError, match="torch.nn.Module"):
        learned_policy(lambda f: f[..., 0])
    with pytest.raises(MdmprobError, match="no learned policy"):
        train_policy(dapd(_pairs), den, _hmm())
    with pytest.raises(UnknownNameError, match="always"):
        self_speculative(router="sometimes")
    with pytest.raises(UnknownNameError, match="pass"):
        self_speculative(verify_cost="free")
    with pytest.raises(MdmprobError, match="route_tau=2"):
        self_speculative(route_tau=2)
    with pytest.raises(MdmprobError, match="bool \\[B\\]"):
        self_speculative(block_length=4, router=lambda logp, sel: sel).run(den, 2)
    with pytest.raises(UnknownNameError, match="max_prob"):
        joint_proposal(2, confidence="draw")
    with pytest.raises(MdmprobError, match="steps=0"):
        train_policy(learned_policy(), den, _hmm(), steps=0)
    with pytest.raises(NotImplementedError):
        joint_proposal(2).log_weights(den, torch.zeros(1, 4, dtype=torch.long), draws=2,
                                      generator=torch.Generator())
    # a structure given explicitly serves a denoiser that has none (a table of the same shape)
    run = dapd(CMIGraph(1e-3, structure=_hmm())).run(_generic(), 8, seed=0)
    assert (run.tokens < 2).all() and (run.committed[0].sum(-1) == 1).all()
