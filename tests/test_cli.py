"""The mdmprob command: output, JSON schema, and exit status 2 with clear messages on bad input."""

import json
import math

import pytest

from mdmprob.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_models_lists_the_zoo(capsys):
    code, out, _ = run(capsys, "models", "--json")
    zoo = json.loads(out)
    assert code == 0
    assert {"block_hmm", "parity_block", "agreement", "markov_chain", "ising_grid"} <= set(zoo)
    assert zoo["block_hmm"]["params"]["eta"] == 1e-8


def test_info_json_schema_and_values(capsys):
    code, out, _ = run(capsys, "info", "parity_block", "-p", "k=6", "-p", "eta=0.01", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["model"] == "parity_block" and doc["params"] == {"k": 6, "eta": 0.01}
    assert doc["n_tokens"] == 6 and doc["vocab"] == 2
    (block,) = doc["blocks"]
    for key in ("index", "positions", "forward_tc", "forward_tc_se", "reverse_tc_mean_field",
                "reverse_tc_mean_field_se", "violation_mean_field", "exact"):
        assert key in block
    h = -(0.01 * math.log(0.01) + 0.99 * math.log(0.99))
    assert block["forward_tc"] == pytest.approx(math.log(2) - h, abs=1e-9)
    assert doc["kl_pq_mean_field"] == pytest.approx(block["forward_tc"])


def test_info_table_output(capsys):
    code, out, _ = run(capsys, "info", "agreement", "-p", "delta=0")
    assert code == 0 and "+inf" in out and "forward TC" in out


def test_info_user_model_file(tmp_path, capsys):
    path = tmp_path / "two_bits.py"
    path.write_text(
        "import pyro, pyro.distributions as dist, torch\n"
        "from mdmprob import Structure\n"
        "def build(p=0.5):\n"
        "    def model():\n"
        "        pyro.sample('a', dist.Categorical(torch.tensor([1 - p, p])))\n"
        "        pyro.sample('b', dist.Categorical(torch.tensor([0.5, 0.5])))\n"
        "    return Structure(model, ['a', 'b'], vocab=2, blocks=[[0, 1]], name='two_bits')\n")
    code, out, _ = run(capsys, "info", str(path), "-p", "p=0.2", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["blocks"][0]["forward_tc"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("argv,needle", [
    (["info", "block_hm"], "did you mean 'block_hmm'"),
    (["info", "parity_block", "-p", "kk=3"], "did you mean 'k'"),
    (["info", "parity_block", "-p", "k=six"], "cannot parse parameter k='six'"),
    (["info", "parity_block", "-p", "eta=2"], "eta=2.0 must be a number in [0.0, 1.0]"),
    (["info", "parity_block", "-p", "eta"], "not key=value"),
    (["info", "missing_file.py"], "does not exist"),
    (["info"], "Missing argument"),
    (["info", "agreement", "--no-such-option"], "No such option"),
])
def test_bad_input_exits_2_with_message(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert needle in err
    assert out == ""


def test_version_and_listings_start_without_torch(tmp_path):
    """--help, --version and the listings import neither torch nor Pyro."""
    import subprocess
    import sys

    from mdmprob import __version__

    probe = ("import sys, io, contextlib\n"
             "from mdmprob.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
             "    code = main(sys.argv[1:])\n"
             "print(code, 'torch' in sys.modules, 'pyro' in sys.modules, out.getvalue()[:40])\n")
    for argv in (["--help"], ["--version"], ["models"], ["decoders"], ["experiments", "--json"]):
        done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True,
                              timeout=120)
        code, torch_loaded, pyro_loaded, head = done.stdout.split(" ", 3)
        assert (code, torch_loaded, pyro_loaded) == ("0", "False", "False"), (argv, done.stderr)
        if argv == ["--version"]:
            assert head.strip() == f"mdmprob {__version__}"


def test_listings_read_from_source_equal_the_imported_ones():
    from mdmprob import catalog

    for kind in ("models", "decoders", "experiments"):
        static = getattr(catalog, f"_static_{kind}")()
        assert static == getattr(catalog, kind)(from_source=False), kind


def test_listings_match_what_the_command_prints(capsys):
    from mdmprob import catalog

    for kind in ("models", "decoders", "experiments"):
        code, out, _ = run(capsys, kind, "--json")
        assert code == 0 and json.loads(out) == catalog.__dict__[kind](from_source=False)


def test_info_json_is_strict_and_blocks_are_numbered_from_1(capsys):
    code, out, _ = run(capsys, "info", "agreement", "-p", "delta=0", "--json")
    assert code == 0 and "Infinity" not in out
    doc = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert doc["kl_qp_mean_field"] == "+inf"
    assert [b["block"] for b in doc["blocks"]] == [i + 1 for i in range(len(doc["blocks"]))]


@pytest.mark.parametrize("argv,needle", [
    (["info", "agreement", "--device", "tpu"], "--device 'tpu' must be cpu, cuda or cuda:N"),
    (["info", "block_hmm", "--samples", "100000000000"], "over the budget"),
    (["run", "block-hmm-eta", "--backend", "spark"], "--backend 'spark' must be local or ray"),
])
def test_more_bad_input(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2 and needle in " ".join(err.split()) and out == ""


def test_cuda_on_a_build_without_it_is_a_typed_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this build has CUDA")
    code, _, err = run(capsys, "info", "agreement", "--device", "cuda")
    assert code == 2 and "sees no CUDA device" in err


def test_an_unwritable_reproduce_folder_is_a_typed_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run(capsys, "reproduce", "--quick", "--out", str(blocker / "out"))
    assert code == 2 and "is not writable" in err


def test_ctrl_c_outside_a_run_exits_130(monkeypatch, capsys):
    import mdmprob.blockwise

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mdmprob.blockwise, "block_report", interrupt)
    code, _, err = run(capsys, "info", "agreement")
    assert code == 130 and "interrupted" in err
