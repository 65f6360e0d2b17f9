"""Old module paths still import, warn with the new one's name, and give the same objects."""

import importlib
import subprocess
import sys

import pytest

MOVED = [
    ("mdmprob.info", "mdmprob.measures", ["kl", "forward_tc", "Estimate", "mc_kl"]),
    ("mdmprob.error_analysis", "mdmprob.model_error",
     ["error_by_position_and_ratio", "fit_assumption_4_2", "fit_points", "ErrorTable"]),
    ("mdmprob.denoisers.error", "mdmprob.model_error",
     ["model_error", "ModelError", "masked_pairs"]),
]


@pytest.mark.parametrize("old,new,names", MOVED)
def test_old_module_warns_and_reexports(old, new, names, monkeypatch):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=f"{old} is renamed {new}"):
        module = importlib.import_module(old)
    target = importlib.import_module(new)
    for name in names:
        assert getattr(module, name) is getattr(target, name)


def test_new_paths_import_without_a_warning():
    code = ("import warnings\n"
            "with warnings.catch_warnings(record=True) as seen:\n"
            "    warnings.simplefilter('always')\n"
            "    import mdmprob.measures, mdmprob.model_error, mdmprob.denoisers, mdmprob.decoders\n"
            "    import mdmprob.evaluate, mdmprob.blockwise, mdmprob.experiments.learned_block_hmm\n"
            "print([str(w.message) for w in seen if 'is renamed' in str(w.message)])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
