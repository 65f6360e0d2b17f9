"""mdmprob reproduce --quick: every experiment runs and the report puts ours beside the paper's."""

import pytest

from mdmprob.cli import main
from mdmprob.experiments import registry


@pytest.mark.slow
def test_reproduce_quick_writes_one_report(tmp_path, capsys):
    assert main(["reproduce", "--quick", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    for name in registry():
        assert f"mdmprob run {name}" in report
        assert (tmp_path / name / "records.csv").exists()
    assert "| mean-field KL(q‖p) at η = 1e-08 | > 70 nats |" in report
    assert "Some settings failed" not in report
    for line in report.splitlines():
        if line.startswith("![") and "(" in line:
            assert (tmp_path / line.split("(")[1].rstrip(")")).exists()
