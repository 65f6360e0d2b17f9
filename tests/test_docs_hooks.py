"""docs/hooks.py: Sphinx roles in rendered docstrings become code spans."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("jupytext", reason="docs/hooks.py needs the 'docs' extra")
spec = importlib.util.spec_from_file_location(
    "hooks", Path(__file__).resolve().parents[1] / "docs" / "hooks.py")
hooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hooks)


@pytest.mark.parametrize("html,expected", [
    ("raises :class:<code>~mdmprob.errors.MdmprobError</code>.", "raises <code>MdmprobError</code>."),
    ("see :func:<code>mc_kl</code>", "see <code>mc_kl</code>"),
    (":py:meth:<code>mdmprob.exact.ExactEngine.sample</code>",
     "<code>mdmprob.exact.ExactEngine.sample</code>"),
    ("a <code>plain</code> span and a colon: here", "a <code>plain</code> span and a colon: here"),
])
def test_sphinx_roles_render_as_code(html, expected):
    assert hooks.sphinx_roles(html) == expected
