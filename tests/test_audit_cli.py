"""``mdmprob audit`` (exit 0 when every check passes, 1 when one fails, 2 on bad input),
``--denoiser`` specs, and the sampler-author helpers of ``mdmprob.testing`` (function and
pytest fixtures)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mdmprob.cli import main
from mdmprob.denoisers import Oracle, load_denoiser
from mdmprob.errors import MdmprobError
from mdmprob.structure import load_model
from mdmprob.testing import assert_sampler_matches

SAMPLERS = Path(__file__).parent / "samplers"
GOOD, BAD = f"{SAMPLERS / 'good.py'}", f"{SAMPLERS / 'bad.py'}"


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_audit_json_and_exit_status(capsys, tmp_path):
    code, out, _ = run(capsys, "audit", f"{GOOD}:llada_generate", "-M", "length=4", "-p",
                       "steps=2", "--samples", "300", "--batch", "100", "--preset",
                       "llada:steps=2", "--preset", "mean_field_blocks", "--json",
                       "--out", str(tmp_path))
    assert code == 0
    doc = json.loads(out)
    assert doc["passed"] and doc["reference"] == "llada:steps=2"
    assert doc["presets"][0]["name"] == "llada:steps=2"
    assert {f["check"] for f in doc["findings"]} == {"mask_tokens", "prompt_changed", "tail",
                                                     "seed", "batch", "law"}
    assert json.loads((tmp_path / "report.json").read_text())["samples"] == 300


def test_a_failing_audit_exits_1_with_the_verdict(capsys):
    code, out, _ = run(capsys, "audit", f"{BAD}:ignores_seed", "-M", "length=4", "--samples",
                       "200", "--batch", "100", "--preset", "sequential")
    assert code == 1 and "[FAIL] seed" in out


@pytest.mark.parametrize("argv, needle", [
    (["audit", "nowhere.py:f"], "does not exist"),
    (["audit", f"{GOOD}:speculative", "--prompt", "a,b"], "comma-separated"),
    (["audit", f"{GOOD}:speculative", "-p", "steps"], "not key=value"),
    (["audit", f"{GOOD}:speculative", "--denoiser", "nowhere.py"], "oracle"),
    (["audit", f"{GOOD}:speculative", "--preset", "lada"], "did you mean"),
])
def test_audit_bad_input_exits_2(capsys, argv, needle):
    code, _, err = run(capsys, *argv)
    assert code == 2 and needle in err


def test_denoiser_specs(tmp_path):
    structure = load_model("markov_chain", length=3, vocab=2)
    assert isinstance(load_denoiser("oracle", structure), Oracle)
    file = tmp_path / "den.py"
    file.write_text("from mdmprob.denoisers import Oracle\n"
                    "def denoiser(s):\n    return Oracle(s)\n"
                    "def wrong(s):\n    return 3\n"
                    "def other(s):\n    from mdmprob import load_model\n"
                    "    return Oracle(load_model('markov_chain', length=4, vocab=2))\n")
    assert isinstance(load_denoiser(str(file), structure), Oracle)
    assert isinstance(load_denoiser(f"{file}:denoiser", structure), Oracle)
    with pytest.raises(MdmprobError, match="not a Denoiser"):
        load_denoiser(f"{file}:wrong", structure)
    with pytest.raises(MdmprobError, match="n_tokens=4"):
        load_denoiser(f"{file}:other", structure)
    with pytest.raises(MdmprobError, match="no function 'nope'"):
        load_denoiser(f"{file}:nope", structure)


def test_assert_sampler_matches_passes_and_fails_with_numbers():
    report = assert_sampler_matches(f"{GOOD}:eb_sampler", preset="eb_sampler:gamma=1.0",
                                    structure="markov_chain", structure_params={"length": 4},
                                    params={"gamma": 1.0}, samples=600)
    assert report.passed
    with pytest.raises(AssertionError, match="fails law against eb_sampler:gamma=1.0") as e:
        assert_sampler_matches(f"{BAD}:eb_noised_entropy", preset="eb_sampler:gamma=1.0",
                               structure_params={"length": 6}, params={"gamma": 1.0},
                               samples=2000)
    assert "[FAIL] law: vs eb_sampler:gamma=1.0: chi2 = " in str(e.value)


def test_the_pytest_fixtures(tmp_path):
    (tmp_path / "test_user.py").write_text(textwrap.dedent(f"""
        import torch

        def test_lm(oracle_lm, sampler_audit):
            lm = oracle_lm("markov_chain", length=3, vocab=2, mask_id=5)
            assert lm(torch.full((1, 3), 5)).logits.shape == (1, 3, 6)
            report = sampler_audit({GOOD!r} + ":speculative", "markov_chain", samples=100,
                                   batch=50, presets=[], size_check=0)
            assert report.passed
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).parents[1])] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    # the plugin is loaded by name; "no:mdmprob" keeps an installed entry point from loading twice
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:mdmprob", "-p",
                           "mdmprob.testing", "-p", "no:cacheprovider", "test_user.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
