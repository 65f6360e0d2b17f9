"""Old module paths still import, warn with the new one's name, and give the same objects."""

import importlib
import math
import subprocess
import sys

import pytest

MOVED = [
    ("mdmprob.info", "mdmprob.measures", ["kl", "forward_tc", "Estimate", "mc_kl"]),
    ("mdmprob.error_analysis", "mdmprob.model_error",
     ["error_by_position_and_ratio", "fit_assumption_4_2", "fit_points", "ErrorTable"]),
    ("mdmprob.denoisers.error", "mdmprob.model_error",
     ["model_error", "ModelError", "masked_pairs"]),
    ("mdmprob.orders", "mdmprob.decoders.orders",
     ["FixedOrder", "fixed_decoder", "order_name", "a42_rollout", "GREEDY"]),
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
            "    import mdmprob.decoders.orders, mdmprob.experiments.order_under_error\n"
            "print([str(w.message) for w in seen if 'is renamed' in str(w.message)])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_renamed_arguments_still_accepted():
    import torch

    from mdmprob import load_model
    from mdmprob.blockwise import block_costs
    from mdmprob.denoisers import Oracle
    from mdmprob.errors import MdmprobError
    from mdmprob.pairwise import pairwise_orders

    den = Oracle(load_model("agreement", delta=0.1))
    with pytest.warns(DeprecationWarning, match=r"pairwise_orders\(den=...\) is now "
                                                r"pairwise_orders\(denoiser=...\)"):
        old = pairwise_orders(den=den)
    assert torch.equal(old.order_kl, pairwise_orders(denoiser=den).order_kl)
    # agreement: p(x1 != x2) = 0.1 with uniform marginals
    joint = torch.tensor([[[0.45, 0.05], [0.05, 0.45]]], dtype=torch.float64).log()
    with pytest.warns(DeprecationWarning, match="is now block_costs"):
        old = block_costs(joint=joint, k=2)
    new = block_costs(log_joint=joint, event_dims=2)
    assert old["log_m"].item() == new["log_m"].item() == pytest.approx(math.log(0.45 / 0.25))
    with pytest.raises(MdmprobError, match="got both joint= and log_joint="):
        block_costs(joint=joint, log_joint=joint, event_dims=2)
