"""The addition task (mdmprob.tasks.addition) and the zoo's exact addition Structure."""

import itertools
import math

import pytest
import torch

import mdmprob
from mdmprob.errors import MdmprobError
from mdmprob.tasks import addition as task


@pytest.fixture(scope="module")
def suite10():
    return task.test_suite(D=10, size=1000, seed=0)


def _by(problems, category):
    return [p for p in problems if p.category == category]


def _len(x):
    return len(str(x))


# ---------------------------------------------------------------------- test suite
def test_category_counts_are_the_papers(suite10):
    assert len(suite10) == 1000
    counts = {c: len(_by(suite10, c)) for c in task.CATEGORIES}
    assert counts == {"easy": 100, "medium": 200, "hard": 300, "extreme": 200, "edge": 100,
                      "mixed": 100}
    assert sum(task.category_counts(37).values()) == 37


def test_digit_lengths_per_category(suite10):
    ranges = {"easy": (1, 3), "medium": (4, 6), "hard": (7, 9), "extreme": (10, 10)}
    assert {c: task.category_ranges(10)[c] for c in ranges} == ranges
    for cat, (lo, hi) in ranges.items():
        lens = {_len(x) for p in _by(suite10, cat) for x in (p.a, p.b)}
        assert min(lens) == lo and max(lens) == hi, (cat, lens)
    for p in suite10:
        assert 0 <= p.a < 10**10 and 0 <= p.b < 10**10


def test_edge_cases_and_mixed(suite10):
    edge = _by(suite10, "edge")
    kinds = {k: [p for p in edge if p.kind == k] for k in task.EDGE_KINDS}
    assert all(len(v) >= 33 for v in kinds.values())
    top = 10**10 - 1
    assert (top, 1, "edge", "carry") in edge
    for p in kinds["carry"]:  # an all-nines operand plus d * 10^k overflows from digit k up
        nines, other = (p.a, p.b) if set(str(p.a)) == {"9"} else (p.b, p.a)
        assert set(str(nines)) == {"9"} and len(str(p.answer)) == len(str(nines)) + 1
        assert other > 0
    zeros = kinds["zero"]
    assert any(p.b == 0 and p.a > 0 for p in zeros) and any(p.a == 0 and p.b > 0 for p in zeros)
    assert all(0 in (p.a, p.b) for p in zeros)
    assert (top, top, "edge", "near_max") in edge
    assert all(min(p.a, p.b) > top - 1000 for p in kinds["near_max"])
    for p in _by(suite10, "mixed"):
        assert _len(p.a) != _len(p.b)
        assert max(_len(p.a), _len(p.b)) >= 7 and min(_len(p.a), _len(p.b)) <= 3


def test_seeded_determinism(suite10):
    assert task.test_suite(10, 1000, 0) == suite10
    assert task.test_suite(10, 1000, 1) != suite10
    assert task.test_suite(4, 200, 3) == task.test_suite(4, 200, 3)


@pytest.mark.parametrize("D", [2, 3, 5])
def test_small_d_scaling(D):
    problems = task.test_suite(D=D, size=100, seed=0)
    assert len(problems) == 100
    ranges = task.category_ranges(D)
    for p in problems:
        assert 0 <= p.a < 10**D and 0 <= p.b < 10**D
        if p.category in ("easy", "medium", "hard", "extreme"):
            lo, hi = ranges[p.category]
            assert lo <= _len(p.a) <= hi and lo <= _len(p.b) <= hi
        if p.category == "mixed":
            assert _len(p.a) != _len(p.b)
    assert (10**D - 1, 1, "edge", "carry") in problems
    with pytest.raises(MdmprobError):
        task.test_suite(D=1)


# ---------------------------------------------------------------------- layout
def test_layout_and_round_trip():
    x = task.encode(12, 5, 3)
    assert x.tolist() == [0, 1, 2, task.PLUS, 0, 0, 5, task.EQ, 0, 0, 1, 7]
    assert task.answer_positions(3) == [8, 9, 10, 11]
    assert task.decode_answer(x, 3) == 17 == task.decode_answer(x)
    problems = task.test_suite(10, 200, seed=5)
    tokens = task.encode_problems(problems, 10)
    assert tokens.shape == (200, task.seq_len(10)) == (200, 33)
    assert task.decode_answers(tokens).tolist() == [p.answer for p in problems]
    a, b = task.decode_operands(tokens)
    assert a.tolist() == [p.a for p in problems] and b.tolist() == [p.b for p in problems]
    assert task.exact_match(tokens, problems).all()
    wrong = tokens.clone()
    wrong[0, task.answer_positions(10)[-1]] = (wrong[0, -1] + 1) % 10
    wrong[1, task.answer_positions(10)[0]] = task.PAD
    match = task.exact_match(wrong, problems)
    assert not match[0] and not match[1] and match[2:].all()
    assert task.decode_answer(wrong[1]) == -1
    with pytest.raises(MdmprobError):
        task.encode(10**3, 0, 3)


def test_training_sampler():
    batches = list(task.training_sampler(4, seed=0, batch_size=512, n_batches=3))
    assert len(batches) == 3 and batches[0].shape == (512, 15)
    x = torch.cat(batches)
    a, b = task.decode_operands(x)
    assert (task.decode_answers(x) == a + b).all()
    lens = torch.tensor([_len(v) for v in a.tolist()])
    assert set(lens.tolist()) == {1, 2, 3, 4}
    assert (lens == 1).float().mean() > 0.15  # lengths uniform, not values
    again = next(task.training_sampler(4, seed=0, batch_size=512))
    assert torch.equal(again, batches[0])
    assert not torch.equal(next(task.training_sampler(4, seed=1, batch_size=512)), batches[0])


# ---------------------------------------------------------------------- metrics
def test_accuracy_and_wilson(suite10):
    preds = [p.answer if i % 4 else p.answer + 1 for i, p in enumerate(suite10)]
    preds[1] = None
    out = task.accuracy(preds, suite10)
    overall = out["overall"]
    assert overall["n"] == 1000 and overall["correct"] == 749
    lo, hi = overall["ci"]
    assert lo < overall["accuracy"] < hi
    assert sum(r["n"] for r in out["per_category"].values()) == 1000
    for row in out["per_category"].values():
        assert row["ci"][0] <= row["accuracy"] <= row["ci"][1]
    widths = [task.wilson_interval(n // 2, n) for n in (10, 100, 1000)]
    widths = [h - lo for lo, h in widths]
    assert widths[0] > widths[1] > widths[2]
    assert task.wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = task.wilson_interval(0, 50)
    assert lo == 0.0 and 0 < hi < 0.1
    perfect = task.accuracy(torch.tensor([p.answer for p in suite10]), suite10)
    assert perfect["overall"]["accuracy"] == 1.0 and perfect["overall"]["ci"][1] == 1.0


# ---------------------------------------------------------------------- the Structure
@pytest.fixture(scope="module", params=[1, 2])
def adder(request):
    return mdmprob.load_model("addition", digits=request.param)


def _all_problems(D):
    pairs = list(itertools.product(range(10**D), repeat=2))
    return task.encode_batch([a for a, _ in pairs], [b for _, b in pairs], D)


def _chunked(fn, *tensors, size=2500):
    """``fn`` over row chunks (10^4 rows would exceed the engine's default table budget)."""
    return torch.cat([fn(*(t[i:i + size] for t in tensors)) for i in range(0, len(tensors[0]), size)])


def test_structure_layout(adder):
    D = adder.params["digits"]
    assert adder.vocab == task.VOCAB and adder.n_tokens == task.seq_len(D)
    assert adder.blocks == [task.operand_positions(D), task.answer_positions(D)]


def test_joint_sums_to_one(adder):
    D = adder.params["digits"]
    engine = adder.engine()
    assert abs(engine.log_normalizer) < 1e-9
    lp = _chunked(engine.log_prob, _all_problems(D))
    assert torch.allclose(lp, torch.full_like(lp, -2 * D * math.log(10)))
    assert abs(torch.logsumexp(lp, 0).item()) < 1e-9  # the correct sums carry all the mass
    wrong = _all_problems(D)[:50].clone()
    wrong[:, -1] = (wrong[:, -1] + 1) % 10
    assert (engine.log_prob(wrong) == -math.inf).all()


def test_samples_are_correct_sums(adder):
    engine = adder.engine()
    B, n = 2000, adder.n_tokens
    x = engine.sample(torch.zeros(B, n, dtype=torch.long), torch.zeros(B, n, dtype=torch.bool),
                      generator=torch.Generator().manual_seed(0))
    a, b = task.decode_operands(x)
    assert (task.decode_answers(x) == a + b).all()
    assert not adder.violations(x).any()
    D = adder.params["digits"]
    assert len(set(zip(a.tolist(), b.tolist(), strict=True))) > min(100 ** D, B) // 2
    bad = x.clone()
    bad[:, -1] = (bad[:, -1] + 1) % 10
    v = adder.violations(bad)
    assert not v[:, 0].any() and v[:, 1].all()


def test_answer_digits_have_zero_conditional_entropy(adder):
    D = adder.params["digits"]
    tokens = _all_problems(D)
    visible = torch.zeros_like(tokens, dtype=torch.bool)
    visible[:, task.operand_positions(D)] = True
    logp = _chunked(adder.engine().conditionals, tokens, visible)[:, task.answer_positions(D)]
    p = logp.exp()
    entropy = -(p * logp.nan_to_num(neginf=0.0)).sum(-1)
    assert entropy.abs().max().item() < 1e-9
    assert torch.equal(logp.argmax(-1), tokens[:, task.answer_positions(D)])
    # without the operands the top digit (the final carry) is uncertain
    marg = adder.engine().conditionals(tokens[:1], torch.zeros_like(visible[:1]))
    assert marg[0, task.answer_positions(D)[0], :2].exp().min() > 0.3


def test_load_model_checks_digits():
    s = mdmprob.load_model("addition", digits=2)
    assert s.name == "addition" and s.params == {"digits": 2}
    assert "addition" in mdmprob.list_models()
    with pytest.raises(MdmprobError):
        mdmprob.load_model("addition", digits=4)
