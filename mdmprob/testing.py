"""Test helpers for sampler authors, and a pytest plugin.

One test checks a sampler against the exact law of the preset it implements::

    from mdmprob.testing import assert_sampler_matches

    def test_my_generate():
        assert_sampler_matches(my_generate, preset="llada:steps=3", structure="markov_chain",
                               params={"steps": 3})

It runs :func:`mdmprob.audit.audit` and raises ``AssertionError`` with the audit's numbers when
any detector fails (mask tokens, prompt changed, tail cut, seed ignored, batch dependence) or the
law differs from the preset's exact q (chi-square at ``alpha``); ``preset=None`` checks against the
structure's own law p (an exact sampler).

Installed with mdmprob, the plugin (entry point ``mdmprob`` in the ``pytest11`` group) provides
the fixtures ``oracle_lm`` (a factory: ``oracle_lm("markov_chain", length=4)``) and
``sampler_audit`` (the :func:`~mdmprob.audit.audit` function).
"""

from __future__ import annotations

from typing import Any

import pytest


def assert_sampler_matches(sampler, preset: str | None = None, structure="markov_chain", *,
                           structure_params: dict[str, Any] | None = None,
                           params: dict[str, Any] | None = None, samples: int = 1000,
                           batch: int = 200, alpha: float = 1e-3, seed: int = 0,
                           **audit_options):
    """Audit ``sampler`` (a callable or ``"file.py:function"``) on ``structure`` (a Structure, a
    zoo name or a model file, built with ``structure_params``) and fail with the numbers unless
    every check passes against ``preset`` (a spec ``"name:key=value,..."``; None: the target p).
    Returns the :class:`~mdmprob.audit.AuditReport`."""
    from mdmprob.audit import audit
    from mdmprob.structure import load_model

    if isinstance(structure, str):
        structure = load_model(structure, **(structure_params or {}))
    report = audit(sampler, structure, samples=samples, batch=batch, params=params,
                   presets=[] if preset is None else [preset],
                   reference="target" if preset is None else preset, alpha=alpha, seed=seed,
                   **audit_options)
    if not report.passed:
        raise AssertionError(f"the sampler fails {', '.join(report.failed)} against "
                             f"{report.reference}:\n{report.summary()}")
    return report


@pytest.fixture
def oracle_lm():
    """A factory: ``oracle_lm(structure_or_name, **OracleLM options or model params)``."""
    from mdmprob.lm import OracleLM
    from mdmprob.structure import Structure, load_model

    lm_keys = {"token_ids", "mask_id", "special_tokens", "vocab_size", "prefix", "special_mass",
               "dtype", "min_logit", "device"}

    def make(structure="markov_chain", **options):
        lm_options = {k: v for k, v in options.items() if k in lm_keys}
        if not isinstance(structure, Structure):
            structure = load_model(structure, **{k: v for k, v in options.items()
                                                  if k not in lm_keys})
        return OracleLM(structure, **lm_options)

    return make


@pytest.fixture
def sampler_audit():
    """The :func:`mdmprob.audit.audit` function."""
    from mdmprob.audit import audit

    return audit
