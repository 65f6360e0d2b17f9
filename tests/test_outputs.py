"""mdmprob.outputs: strict JSON with ±inf as strings, atomic writes with ordinary modes."""

import json
import math
import os
import stat

import numpy as np
import pytest

from mdmprob.outputs import OutputError, dumps, loads, write_text


def test_infinities_round_trip_through_strict_json():
    doc = {"kl": math.inf, "neg": -math.inf, "rows": [(1, math.inf)], "n": np.int64(3),
           "x": np.float64(0.5)}
    text = dumps(doc)
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict {c}")) == {
        "kl": "+inf", "neg": "-inf", "rows": [[1, "+inf"]], "n": 3, "x": 0.5}
    assert loads(text) == {"kl": math.inf, "neg": -math.inf, "rows": [[1, math.inf]], "n": 3,
                           "x": 0.5}
    with pytest.raises(ValueError):
        dumps({"bad": math.nan})  # NaN is never written


def test_write_text_is_atomic_with_the_umask_mode(tmp_path):
    path = tmp_path / "a.txt"
    write_text(path, "one")
    probe = tmp_path / "probe"
    probe.write_text("")  # what open() gives a new file under this umask
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(probe.stat().st_mode)
    write_text(path, "two")
    assert path.read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "probe"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_folder_is_a_typed_error(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="cannot write .* pass --out"):
            write_text(tmp_path / "x.txt", "x")
    finally:
        tmp_path.chmod(0o700)
