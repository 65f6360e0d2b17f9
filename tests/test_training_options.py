"""Training options: supervised positions (a prompt never masked), the cosine learning rate and its
resume rules, weights-only exported checkpoints, and train_cached loading a shipped model."""

import math

import pytest
import torch

from mdmprob import load_model
from mdmprob.denoisers.neural import NeuralConfig, build_network
from mdmprob.errors import MdmprobError
from mdmprob.training import (
    _positions,
    _step,
    export_checkpoint,
    learning_rate,
    load_neural,
    train,
    train_cached,
)

torch.set_num_threads(1)
CHAIN = dict(length=4, vocab=3)


def tiny(**kw) -> NeuralConfig:
    base = dict(vocab=3, n_tokens=4, d_model=16, n_layers=1, n_heads=2, batch_size=32, seed=0)
    return NeuralConfig(**{**base, **kw})


class _Spy(torch.nn.Module):
    """Wraps a network and keeps the inputs and logits of every call."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, x):
        out = self.net(x)
        self.calls.append((x.clone(), out.detach().clone()))
        return out


@pytest.mark.parametrize("weighting", ["none", "1/t"])
def test_only_train_positions_are_masked_and_scored(weighting):
    cfg = tiny(train_positions=[3, 1], loss_weighting=weighting)
    assert cfg.train_positions == (1, 3)
    spy = _Spy(build_network(cfg))
    opt = torch.optim.SGD(spy.parameters(), lr=0.0)
    gen = torch.Generator().manual_seed(0)
    truth = torch.tensor([[0, 1, 2, 0]]).repeat(32, 1)
    masked_once = torch.zeros(4, dtype=torch.bool)
    for _ in range(5):
        t_gen = torch.Generator().manual_seed(0)
        t_gen.set_state(gen.get_state())  # the sampler below draws nothing: t comes first
        t = 1 - torch.rand(32, 1, generator=t_gen)  # in the default dtype, as training
        loss = _step(spy, opt, lambda b, g: truth[:b], gen, cfg, torch.device("cpu"),
                     _positions(cfg, torch.device("cpu")))
        x, logits = spy.calls[-1]
        hidden = x == 3
        assert not hidden[:, [0, 2]].any() and hidden.any(-1).all()  # a prompt, never masked
        masked_once |= hidden.any(0)
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 3), truth.reshape(-1),
                                               reduction="none").reshape(32, 4)
        if weighting == "none":  # the mean over masked positions
            want = ce[hidden].mean()
        else:  # 1/t per sequence, averaged over the 2 supervised tokens of each sequence
            want = (ce * hidden / t).sum() / (32 * 2)
        assert loss == pytest.approx(float(want), rel=1e-5)
    assert masked_once.tolist() == [False, True, False, True]


def test_config_validation_and_old_checkpoints():
    for bad in ([], [4], [1, 1], [-1], ["a"], 3):
        with pytest.raises(MdmprobError, match="train_positions"):
            tiny(train_positions=bad)
    with pytest.raises(MdmprobError, match="lr_schedule='linear'"):
        tiny(lr_schedule="linear")
    for bad in (dict(steps=5, decay_steps=6), dict(steps=5, decay_steps=2, lr_schedule="cosine"),
                dict(decay_steps=-1)):
        with pytest.raises(MdmprobError, match="decay_steps"):
            tiny(**bad)
    old = {k: v for k, v in tiny().as_dict().items()
           if k not in ("train_positions", "lr_schedule", "decay_steps")}
    cfg = NeuralConfig.from_dict(old)  # a checkpoint written before these fields existed
    assert cfg.train_positions is None and cfg.lr_schedule == "constant"


def test_cosine_resume_equals_uninterrupted_and_fixes_the_budget(tmp_path):
    s = load_model("markov_chain", **CHAIN)
    cfg = tiny(steps=10, lr_schedule="cosine", train_positions=(1, 2, 3))
    full, full_hist = train(s, cfg, tmp_path / "full", checkpoint_every=4)

    class Interrupt(Exception):
        pass

    def stop(done, total):
        if done == 6:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(s, cfg, tmp_path / "cut", checkpoint_every=4, progress=stop)
    resumed, hist = train(s, cfg, tmp_path / "cut", checkpoint_every=4)
    assert hist == full_hist
    a, b = full.net.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # constant and cosine differ after the first step (the first step has the full rate)
    const, const_hist = train(s, tiny(steps=10, train_positions=(1, 2, 3)))
    assert const_hist[0] == full_hist[0] and const_hist[-1] != full_hist[-1]
    # the cosine budget is part of the schedule: a longer run cannot continue a shorter one
    with pytest.raises(MdmprobError, match="steps"):
        train(s, tiny(steps=20, lr_schedule="cosine", train_positions=(1, 2, 3)), tmp_path / "full")
    model, loss, trained = train_cached(
        s, tiny(steps=12, lr_schedule="cosine", train_positions=(1, 2, 3)),
        lambda n: "full" if n == 10 else f"s{n}", tmp_path)
    assert trained == 12  # trained from scratch, not from the 10-step folder


def test_export_checkpoint_and_shipped_models(tmp_path):
    s = load_model("markov_chain", **CHAIN)
    cfg = tiny(steps=30)
    model, hist = train(s, cfg, tmp_path / "run" / "s30")
    path = export_checkpoint(tmp_path / "run" / "s30", tmp_path / "ship" / "s30", keep_history=7)
    full, slim = (torch.load(p, weights_only=True) for p in (tmp_path / "run/s30/checkpoint.pt", path))
    assert slim["optimizer"] == {} and slim["rng"] == {} and slim["step"] == 30
    assert len(slim["history"]) <= 7 and slim["history"][-1] == hist[-1]
    assert path.stat().st_size < (tmp_path / "run/s30/checkpoint.pt").stat().st_size
    assert full["history"] == hist
    tokens = torch.tensor([[3, 0, 3, 1], [3, 3, 3, 3]])
    torch.testing.assert_close(load_neural(path, s)(tokens), model(tokens), atol=0, rtol=0)
    with pytest.raises(MdmprobError, match="weights only"):
        train(s, tiny(steps=40), tmp_path / "ship" / "s30")
    # train_cached loads a shipped model at exactly its budget and trains nothing
    got, loss, trained = train_cached(s, cfg, lambda n: f"s{n}", tmp_path / "cache",
                                      tmp_path / "ship")
    assert trained == 0 and loss == hist[-1]["loss"] and not (tmp_path / "cache").exists()
    torch.testing.assert_close(got(tokens), model(tokens), atol=0, rtol=0)
    # another budget is trained (the shipped 30-step weights cannot be continued)
    _, loss5, trained = train_cached(s, tiny(steps=5), lambda n: f"s{n}", tmp_path / "cache",
                                     tmp_path / "ship")
    assert trained == 5 and math.isfinite(loss5)


def test_learning_rates():
    assert [learning_rate(tiny(steps=4, lr=0.1), t) for t in range(4)] == [0.1] * 4
    decay = tiny(steps=6, decay_steps=4, lr=0.1)
    assert [learning_rate(decay, t) for t in range(6)] == pytest.approx([0.1, 0.1, 0.1, 0.075,
                                                                         0.05, 0.025])
    cos = tiny(steps=4, lr=0.1, lr_schedule="cosine")
    assert [learning_rate(cos, t) for t in range(4)] == pytest.approx(
        [0.1, 0.1 * (1 + math.sqrt(0.5)) / 2, 0.05, 0.1 * (1 - math.sqrt(0.5)) / 2])


def test_decayed_run_continues_a_constant_one(tmp_path):
    s = load_model("markov_chain", **CHAIN)
    direct, direct_hist = train(s, tiny(steps=9, decay_steps=4))
    train(s, tiny(steps=5), tmp_path / "s5")
    model, loss, trained = train_cached(s, tiny(steps=9, decay_steps=4),
                                        lambda n: f"s{n}", tmp_path)
    assert trained == 4 and loss == direct_hist[-1]["loss"]
    a, b = direct.net.state_dict(), model.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a decayed checkpoint is not continued by a longer constant run, nor resumed as one
    _, _, trained = train_cached(s, tiny(steps=12), lambda n: f"s{n}", tmp_path)
    assert trained == 7  # from the constant 5-step run, not the decayed 9-step one
    with pytest.raises(MdmprobError, match="other learning rates"):
        train(s, tiny(steps=12), tmp_path / "s9")
