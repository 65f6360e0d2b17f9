"""A denoiser's rows at a window's positions (Denoiser.rows) and the step views over a window's
columns only (Step.positions): the same numbers as the whole answer at those positions."""

import pytest
import torch

from mdmprob import load_model
from mdmprob.decoders.primitives import SCORES, Step
from mdmprob.decoders.published import DilatedOrder, PositionCalibrated
from mdmprob.denoisers import Oracle, Table
from mdmprob.errors import EvidenceError
from tests.brute import conditionals as brute_conditionals
from tests.brute import token_log_joint


def test_oracle_rows_are_the_exact_conditionals_along_a_decode():
    """Window after window (the incremental messages carried between calls, rows asked in a
    different order each time), against brute-force enumeration of the joint."""
    s = load_model("block_hmm", n_blocks=3, block_size=2)
    oracle, joint = Oracle(s), token_log_joint(s)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.full((5, s.n_tokens), oracle.mask_id)
    tokens[1, 3] = 1  # one row already has a visible token in a later window
    for block in ([2, 3], [1, 0], [5, 4]):
        positions = torch.tensor(block)
        rows = oracle.rows(tokens, positions)
        assert rows.shape == (5, len(block), 2)
        visible = tokens != oracle.mask_id
        want = brute_conditionals(joint, tokens.clamp(max=1), visible)[:, block]
        assert torch.allclose(rows.exp(), want.exp(), atol=1e-10)
        draws = torch.multinomial(rows.exp().reshape(-1, 2), 1, generator=gen).reshape(5, -1)
        tokens[:, block] = torch.where(visible[:, block], tokens[:, block], draws)


def test_rows_of_a_table_denoiser_are_its_whole_answer_there():
    den = Table.random(4, 3, seed=2)
    tokens = torch.tensor([[3, 0, 3, 3], [1, 3, 3, 2]])
    positions = torch.tensor([3, 0, 2])
    assert torch.equal(den.rows(tokens, positions), den(tokens)[:, positions])


@pytest.mark.parametrize("positions, match", [
    (torch.tensor([0.0, 1.0]), "1-D integer"),
    (torch.tensor([[0, 1]]), "1-D integer"),
    (torch.tensor([True, False]), "1-D integer"),
    (torch.tensor([0, 4]), "position 4 is outside 0..3"),
    (torch.tensor([-1]), "position -1 is outside"),
])
def test_rows_reject_bad_positions(positions, match):
    den = Table.random(4, 2, seed=0)
    with pytest.raises(EvidenceError, match=match):
        den.rows(torch.full((1, 4), den.mask_id), positions)


@pytest.mark.parametrize("score", [SCORES["l2r"](), SCORES["r2l"](), DilatedOrder(),
                                   DilatedOrder(block_length=4), PositionCalibrated(lam=0.3)])
def test_position_scores_on_a_window_view_equal_the_whole_view(score):
    """The keys a score gives a window's columns (Step.positions) are the keys it gives those
    positions on the whole sequence: the step's ranking, ties and thresholds are unchanged."""
    B, n, V = 3, 10, 4
    gen = torch.Generator().manual_seed(1)
    logp = torch.log_softmax(torch.randn(B, n, V, generator=gen), -1)
    draws = torch.randint(0, V, (B, n), generator=gen)
    whole = Step(logp, torch.ones(B, n, dtype=torch.bool), torch.zeros(B, dtype=torch.long),
                 torch.full((B,), n))
    cols = torch.tensor([2, 5, 6, 9])
    part = Step(logp[:, cols], torch.ones(B, 4, dtype=torch.bool),
                torch.zeros(B, dtype=torch.long), torch.full((B,), 4), positions=cols, length=n)
    want = score(whole, draws)[:, cols]
    got = score(part, draws[:, cols])
    assert torch.equal(got, want)
    assert part.sequence_length == n and whole.sequence_length == n
    assert torch.equal(whole.position_index(), torch.arange(n))


def test_window_rows_cost_follows_the_window():
    """The oracle's window rows recompute a bounded number of messages per call, whatever the
    length of the sequence (the count the engine reports, not a timing)."""
    counts = {}
    for nb in (8, 32):
        s = load_model("block_hmm", n_blocks=nb, block_size=2)
        oracle = Oracle(s)
        tokens = torch.full((2, s.n_tokens), oracle.mask_id)
        per_call = []
        for block in s.blocks:
            positions = torch.tensor(block)
            oracle.rows(tokens, positions)
            per_call.append(oracle._state.recomputed)
            tokens[:, block] = 0
        counts[nb] = max(per_call[1:])  # the first call is the full pass
    assert counts[32] <= counts[8]
