"""Shared test configuration: float64 everywhere, the device under test, hypothesis profiles.

``MDMPROB_DEVICE`` (default ``cpu``) picks the device every engine in the suite runs on; the
brute-force oracle in ``tests/brute.py`` always runs on the CPU. ``HYPOTHESIS_PROFILE=thorough``
runs the property tests with many more examples than the default profile.

Torch runs one intra-op thread per test process (``MDMPROB_TEST_THREADS`` to change it): the
suite runs under ``pytest -n 2`` and its tensors are small, so extra threads only contend (on a
busy 2-core machine a 20000-row sample took 1 s with 2 threads and 0.04 s with one).
"""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

torch.set_default_dtype(torch.float64)
# the suite leaves the user's disk cache of compiled structures alone (tests/test_cache.py
# points MDMPROB_CACHE at a temporary directory); the in-process cache stays on
os.environ.setdefault("MDMPROB_CACHE", "off")
torch.set_num_threads(int(os.environ.get("MDMPROB_TEST_THREADS", "1")))

settings.register_profile(
    "mdmprob",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("thorough", parent=settings.get_profile("mdmprob"), max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "mdmprob"))


def device_under_test() -> torch.device:
    return torch.device(os.environ.get("MDMPROB_DEVICE", "cpu"))


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The torch device engines are built on (``MDMPROB_DEVICE``, default cpu)."""
    dev = device_under_test()
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"MDMPROB_DEVICE={dev} but torch sees no CUDA device")
    return dev
