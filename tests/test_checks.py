"""Shared argument checks, the generator helper, use_device and the engine cache."""

import math
import os

import pytest
import torch

from mdmprob import checks, load_model
from mdmprob.config import default_device, use_device
from mdmprob.denoisers import Oracle
from mdmprob.errors import EvidenceError, MdmprobError


@pytest.mark.parametrize("bad", [True, 1.0, "3", None, 0, 11])
def test_check_int_refuses_bools_floats_and_out_of_range(bad):
    with pytest.raises(MdmprobError, match=rf"k={bad!r} must be an integer in 1\.\.10"):
        checks.check_int("k", bad, 1, 10)


def test_check_int_accepts_and_returns():
    assert checks.check_int("k", 3, 1) == 3 and checks.check_int("k", -5) == -5


@pytest.mark.parametrize("bad", [False, "0.5", math.nan, math.inf, -0.1, 0.0])
def test_check_number_open_low(bad):
    with pytest.raises(MdmprobError, match=r"rate=.* must be a number in \(0, 1\]"):
        checks.check_number("rate", bad, 0, 1, low_open=True)


def test_check_number_infinite_only_when_allowed():
    assert checks.check_number("x", math.inf, 0, finite=False) == math.inf
    with pytest.raises(MdmprobError, match=r"x=inf must be a number >= 0 \(finite\)"):
        checks.check_number("x", math.inf, 0)
    assert checks.check_prob("p", 1) == 1.0 and isinstance(checks.check_prob("p", 1), float)


def test_generator_is_seeded_and_none_is_fresh_randomness():
    a = torch.rand(5, generator=checks.generator(7), dtype=torch.float64)
    b = torch.rand(5, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert torch.equal(a, b)
    for bad in (-1, 1.5, True):
        with pytest.raises(MdmprobError, match="seed"):
            checks.generator(bad)
    # seed=None: seeded from the OS; two generators share their first 8 doubles with
    # probability ~2^-416 (and never with the seed-0 stream)
    fresh = [torch.rand(8, generator=checks.generator(None), dtype=torch.float64)
             for _ in range(2)]
    assert not torch.equal(fresh[0], fresh[1])
    assert not torch.equal(fresh[0], torch.rand(8, generator=checks.generator(0),
                                                dtype=torch.float64))
    with pytest.raises(MdmprobError, match="seed=None"):
        checks.check_seed(None)


def test_check_match_names_both_shapes_and_the_error_type():
    small, big = Oracle(load_model("parity_block", k=3)), Oracle(load_model("parity_block", k=4))
    checks.check_match(small, load_model("parity_block", k=3))
    with pytest.raises(EvidenceError, match=r"n_tokens=3, vocab=2 but the oracle has n_tokens=4"):
        checks.check_match(small, big, "oracle", EvidenceError)


def test_check_device_and_dtype():
    assert checks.check_device("cpu") == torch.device("cpu")
    with pytest.raises(MdmprobError, match="not a torch device"):
        checks.check_device("gpu0")
    assert checks.check_dtype(torch.float32) is torch.float32
    with pytest.raises(MdmprobError, match="floating dtype"):
        checks.check_dtype(torch.int64)


def test_use_device_is_scoped_and_leaves_the_environment_alone(monkeypatch):
    monkeypatch.setenv("MDMPROB_DEVICE", "cpu")
    with use_device("meta"):
        assert default_device() == torch.device("meta")
        assert os.environ["MDMPROB_DEVICE"] == "cpu"
    assert default_device() == torch.device("cpu")
    with use_device(None):
        assert default_device() == torch.device("cpu")


def test_structure_engine_is_built_once_per_device_dtype_budget(monkeypatch):
    import mdmprob.exact as exact

    s = load_model("parity_block", k=3)
    built = []
    original = exact.ExactEngine.__init__

    def counting(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(exact.ExactEngine, "__init__", counting)
    first = s.engine(device="cpu", dtype=torch.float64)
    assert s.engine(device="cpu", dtype=torch.float64) is first
    assert len(built) == 1
    assert s.engine(device="cpu", dtype=torch.float32) is not first and len(built) == 2


@pytest.mark.parametrize("bad,message", [
    (torch.zeros(2, 3, dtype=torch.float32), r"tokens must be an integer tensor, got dtype torch.float32"),
    (torch.zeros(2, 3, dtype=torch.bool), r"integer tensor, got dtype torch.bool"),
    (torch.zeros(2, 4, dtype=torch.long), r"tokens must have shape \[B, 3\] here, got \(2, 4\)"),
    (torch.zeros(3, dtype=torch.long), r"must have shape \[B, 3\] here, got \(3,\)"),
])
def test_check_tokens_names_dtype_and_shape(bad, message):
    with pytest.raises(EvidenceError, match=message):
        checks.check_tokens(bad, 3, shape_hint=" here")


def test_check_tokens_reads_lists_and_one_row():
    assert checks.check_tokens([[0, 1, 2]], 3).shape == (1, 3)
    assert checks.check_tokens([0, 1, 2], 3, one_row=True).tolist() == [[0, 1, 2]]
