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
    assert doc["forward_kl_mean_field"] == pytest.approx(block["forward_tc"])


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
