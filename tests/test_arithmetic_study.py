"""The addition order study's library: answer-only training configs, masked prompts, the exact
per-position model error against a brute-force value, and the verdict rules on hand-made records."""

import math

import pytest
import torch

from mdmprob.denoisers.base import Denoiser
from mdmprob.errors import MdmprobError
from mdmprob.tasks import addition as A


def test_neural_config_answer_and_full_loss():
    cfg = A.neural_config(3, d_model=16, steps=5)
    assert cfg.train_positions == tuple(A.answer_positions(3)) == (8, 9, 10, 11)
    assert cfg.n_tokens == 12 and cfg.vocab == A.VOCAB
    assert A.neural_config(3, loss="full", d_model=16).train_positions is None
    with pytest.raises(MdmprobError, match="loss='prompt'"):
        A.neural_config(3, loss="prompt")


def test_masked_prompts_and_decoder_errors():
    problems = [A.Problem(12, 5, "easy"), A.Problem(99, 99, "edge")]
    x = A.masked_prompts(problems, 2, mask_id=13)
    assert x.tolist() == [[1, 2, 10, 0, 5, 11, 13, 13, 13], [9, 9, 10, 9, 9, 11, 13, 13, 13]]
    with pytest.raises(MdmprobError, match="order='up'"):
        A.answer_decoder("up", 1)
    with pytest.raises(MdmprobError, match="k"):
        A.answer_decoder("l2r", 0)


class _Graded(Denoiser):
    """Puts probability q_j on the true answer digit at a masked answer position when j answer
    digits are visible (the rest uniform over the other 12 tokens); ignores everything else."""

    vocab, device, dtype = 13, torch.device("cpu"), torch.float64

    def __init__(self, truth, q):
        self.truth, self.n_tokens, self.q = truth, truth.shape[1], q
        self.pos = A.answer_positions(truth.shape[1] // 3 - 1)

    def predict(self, tokens):
        rows = torch.stack([self._row(t) for t in tokens])  # which problem (by its prompt)
        seen = (tokens[:, self.pos] != 13).sum(-1)
        q = torch.tensor(self.q, dtype=torch.float64)[seen]
        p = ((1 - q) / 12)[:, None, None].expand(len(tokens), self.n_tokens, 13).clone()
        truth = self.truth[rows]
        p.scatter_(-1, truth[..., None], q[:, None, None].expand(-1, self.n_tokens, 1))
        return p.log()

    def _row(self, t):
        prompt = t[: self.pos[0]]
        return (self.truth[:, : self.pos[0]] == prompt).all(-1).nonzero()[0, 0]


def test_answer_error_equals_brute_force_average_over_contexts():
    D = 2
    problems = [A.Problem(12, 5, "easy"), A.Problem(99, 99, "edge"), A.Problem(40, 7, "mixed")]
    truth = A.encode_problems(problems, D)
    q = [0.5, 0.9, 0.05]  # with 0, 1, 2 other answer digits visible
    err = A.answer_error(_Graded(truth, q), problems, D, chunk=5)
    # position i is masked; each of the D other answer digits is visible or not, uniformly:
    # j visible with probability C(D, j) / 2^D
    want = sum(math.comb(D, j) / 2**D * -math.log(q[j]) for j in range(D + 1))
    wrong = sum(math.comb(D, j) / 2**D for j in range(D + 1) if q[j] < (1 - q[j]) / 12)
    assert err["nll"] == pytest.approx([want] * (D + 1), rel=1e-12)
    assert err["error"] == pytest.approx([wrong] * (D + 1), abs=1e-12)
    assert err["nll_mean"] == pytest.approx(want, rel=1e-12)


def _records(rung, seed, acc, hard=None, nll=0.1, k=1, n=100):
    """Records of one model: overall accuracy per order, hard-category counts, model error."""
    D, d, steps = rung
    base = {"D": D, "d_model": d, "steps": steps, "train_seed": seed}
    out = [{**base, "metric": "answer_nll", "value": nll}]
    for order, value in acc.items():
        out.append({**base, "metric": "accuracy", "k": k, "order": order, "category": "overall",
                    "value": value, "correct": round(value * n), "n": n})
        c = (hard or acc)[order]
        out.append({**base, "metric": "accuracy", "k": k, "order": order, "category": "hard",
                    "value": c, "correct": round(c * n), "n": n})
    return out


def test_rung_table_means_and_seed_standard_errors():
    recs = (_records((3, 16, 100), 0, {"l2r": 0.6, "r2l": 0.8, "confidence": 0.7}, nll=0.3)
            + _records((3, 16, 100), 1, {"l2r": 0.7, "r2l": 0.8, "confidence": 0.9}, nll=0.5))
    [row] = A.rung_table(recs)
    assert row["seeds"] == 2 and row["error"] == pytest.approx(0.4)
    assert row["spread"] == pytest.approx(0.2)  # 0.2 and 0.2
    assert row["spread_se"] == pytest.approx(0.0, abs=1e-12)
    assert row["gap"] == pytest.approx(0.15) and row["gap_se"] == pytest.approx(0.05)
    assert row["best"] == pytest.approx(0.85) and row["best_se"] == pytest.approx(0.05)
    assert row["hard"]["r2l"] == (160, 200)
    assert row["orders"]["confidence"] == pytest.approx((0.8, 0.1))


def _ladder(spreads, bests, errors):
    recs = []
    for i, (s_vals, best, nll) in enumerate(zip(spreads, bests, errors, strict=True)):
        for seed, s in enumerate(s_vals):
            recs += _records((3, 32, 100 * (i + 1)), seed, {"l2r": best - s, "r2l": best}, nll=nll)
    return A.rung_table(recs)


def test_claim_order_invariance_verdicts():
    errors = (1.0, 0.3, 0.01)
    # spread falls from 0.2 to 0.01 as the error falls, best order reaches 0.995: yes
    yes = A.claim_order_invariance(_ladder([(0.19, 0.21), (0.1, 0.12), (0.0, 0.02)],
                                           (0.7, 0.9, 0.995), errors))
    assert yes["verdict"] == "yes" and yes["per_D"] == {3: "yes"}
    diff, se = yes["diff"][3]
    assert diff == pytest.approx(0.19) and se == pytest.approx(math.hypot(0.01, 0.01))
    # the same fall but the best model is not near-perfect: inconclusive
    assert A.claim_order_invariance(_ladder([(0.19, 0.21), (0.1, 0.12), (0.0, 0.02)],
                                            (0.7, 0.9, 0.95), errors))["verdict"] == "inconclusive"
    # spread grows as the error falls: no
    assert A.claim_order_invariance(_ladder([(0.0, 0.02), (0.1, 0.12), (0.19, 0.21)],
                                            (0.7, 0.9, 0.995), errors))["verdict"] == "no"
    # rungs at the floor (best order < 0.5) are left out: one rung left, inconclusive
    floor = A.claim_order_invariance(_ladder([(0.2, 0.2), (0.0, 0.02)], (0.3, 0.995), (1.0, 0.01)))
    assert floor["verdict"] == "inconclusive"


def test_claim_confidence_verdicts():
    def rows(conf_hard, n=400):
        acc = {"l2r": 0.8, "r2l": 0.9, "confidence": 0.9}
        hard = {"l2r": 0.7, "r2l": 0.8, "confidence": conf_hard}
        return A.rung_table(_records((3, 32, 100), 0, acc, hard, n=n))

    yes = A.claim_confidence({1: rows(0.9)})
    [c] = yes["comparisons"]
    se = math.hypot(math.sqrt(0.9 * 0.1 / 400), math.sqrt(0.8 * 0.2 / 400))
    assert c["fixed"] == "r2l" and c["diff"] == pytest.approx(0.1) and c["se"] == pytest.approx(se)
    assert yes["verdict"] == "yes"
    assert A.claim_confidence({1: rows(0.7)})["verdict"] == "no"
    assert A.claim_confidence({1: rows(0.81)})["verdict"] == "inconclusive"
    assert A.claim_confidence({1: rows(0.9), 2: rows(0.7)})["verdict"] == "inconclusive"
