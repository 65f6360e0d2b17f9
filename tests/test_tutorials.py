"""Every tutorial in ``tutorials/`` runs end to end in smoke mode.

Each tutorial is a jupytext percent-format file with a ``SMOKE`` switch (``MDMPROB_SMOKE`` or
``CI`` in the environment) that shrinks its sample counts. With jupytext, nbclient and ipykernel
installed (the ``docs`` extra) it is executed as a notebook in a fresh kernel, cell by cell, as a
reader would run it; otherwise as a plain script in a subprocess. Any exception fails the test,
including the assertions the tutorials make about the numbers their text quotes.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("[0-9]*.py"))
TIMEOUT = 300  # seconds per tutorial (a smoke run takes well under 20 s)
SMOKE_ENV = {
    "MDMPROB_SMOKE": "1",
    "CI": "1",
    "MPLBACKEND": "Agg",
    "OMP_NUM_THREADS": "1",  # the kernel is a separate process; keep it to one thread
    "MDMPROB_THREADS": "1",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",  # silences a debugger warning at kernel start
}


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


AS_NOTEBOOK = _installed("jupytext", "nbclient", "ipykernel")


def test_the_tutorials_are_numbered_in_order():
    assert [p.name[:3] for p in TUTORIALS] == ["01_", "02_", "03_", "04_", "05_", "06_", "07_", "08_"]


# tutorials that need an optional extra: marked slow, skipped when the extra is absent
NEEDS = {"07_real_masked_lm": ("antiberty", "transformers")}


def _case(path):
    needs = NEEDS.get(path.stem)
    if needs is None:
        return pytest.param(path, id=path.stem)
    marks = [pytest.mark.slow, pytest.mark.skipif(
        not _installed(*needs), reason=f"needs {', '.join(needs)}: pip install 'mdmprob[antiberty]'")]
    return pytest.param(path, id=path.stem, marks=marks)


@pytest.mark.parametrize("path", [_case(p) for p in TUTORIALS])
def test_tutorial_runs_in_smoke_mode(path, tmp_path, monkeypatch):
    for key, value in SMOKE_ENV.items():
        monkeypatch.setenv(key, value)
    if AS_NOTEBOOK:
        import jupytext
        from nbclient import NotebookClient

        notebook = jupytext.read(path)
        client = NotebookClient(notebook, timeout=TIMEOUT, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}})
        client.execute()  # raises CellExecutionError with the failing cell and its traceback
    else:
        proc = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=dict(os.environ),
                              capture_output=True, text=True, timeout=TIMEOUT)
        assert proc.returncode == 0, f"{path.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
