"""mkdocs hooks: render the tutorials (``tutorials/NN_*.py``, jupytext percent format) as pages,
and show the Sphinx roles of docstrings (``:class:`~mdmprob.errors.MdmprobError```) as code.

At build time each tutorial is read with jupytext and written, in memory, as
``tutorials/NN_*.md``: markdown cells as they are, code cells as fenced Python, and after a code
cell the figures it shows (``show(fig, "name")``) when ``docs/tutorials/figures/NN_*/name.png``
exists (made by running the tutorial with ``MDMPROB_FIGDIR=docs/tutorials/figures/NN_*``).
Nothing is executed at build time (offline and fast). The pages are appended to the
``Tutorials`` section of the nav, after its index.

Docstrings use Sphinx roles (``:func:`mc_kl```, ``:class:`~mdmprob.outputs.OutputError```), which
the Google-style renderer leaves as text (":func:" before a code span). :func:`sphinx_roles`
turns each into the code span alone, with ``~`` meaning "show the last name only", as Sphinx does.
"""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
FIGURES = ROOT / "docs" / "tutorials" / "figures"


def tutorial_files() -> list[Path]:
    """The tutorials, in order: ``tutorials/[0-9]*.py``."""
    return sorted(TUTORIALS.glob("[0-9]*.py"))


def render(path: Path) -> str:
    """Markdown for one tutorial: a note on how to run it after the title, then the cells."""
    notebook = jupytext.read(path)
    note = (f'!!! note "Run it"\n'
            f"    This page is `tutorials/{path.name}` (jupytext percent format), shown without its "
            f"output. Run it with `python tutorials/{path.name}`, or open it as a notebook with "
            f"`jupytext --to ipynb tutorials/{path.name}`. `MDMPROB_SMOKE=1` shrinks it to a "
            f"quick check; `MDMPROB_FIGDIR=folder` also saves its figures as PNG.")
    parts: list[str] = []
    for cell in notebook.cells:
        source = cell.source.strip("\n")
        if not source.strip():
            continue
        if cell.cell_type == "markdown":
            parts.append(source)
            if len(parts) == 1:  # after the title cell
                parts.append(note)
        elif cell.cell_type == "code":
            parts.append(f"```python\n{source}\n```")
            for name in re.findall(r"show\(\s*\w+\s*,\s*f?[\"']([\w.-]+)[\"']", source):
                figure = FIGURES / path.stem / f"{name}.png"
                if figure.exists():
                    parts.append(f"![{name}](figures/{path.stem}/{name}.png)")
    return "\n\n".join(parts) + "\n"


_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const|ref|term):"
                   r"<code>(~?)([^<]*)</code>")


def sphinx_roles(html: str) -> str:
    """``:class:<code>~a.b.C</code>`` -> ``<code>C</code>``; without ``~`` the full name stays."""
    return _ROLE.sub(lambda m: f"<code>{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}</code>", html)


def on_page_content(html, page, config, files):
    return sphinx_roles(html)


def on_config(config):
    """Append one nav entry per tutorial to the ``Tutorials`` section."""
    for item in config.nav or []:
        if isinstance(item, dict) and "Tutorials" in item:
            section = item["Tutorials"]
            if not isinstance(section, list):
                section = item["Tutorials"] = [section]
            for path in tutorial_files():
                page = f"tutorials/{path.stem}.md"
                if page not in section:
                    section.append(page)
    return config


def on_files(files, config):
    for path in tutorial_files():
        files.append(File.generated(config, f"tutorials/{path.stem}.md", content=render(path)))
    return files


def on_serve(server, config, builder):
    server.watch(str(TUTORIALS))
    return server
