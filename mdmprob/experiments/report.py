"""``mdmprob reproduce``: every experiment, one Markdown report with our numbers beside the paper's."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

from mdmprob.experiments.base import registry
from mdmprob.experiments.executor import SweepError, run_sweep, writable_folder
from mdmprob.outputs import write_text


def reproduce(out_dir: str | Path, *, quick: bool = False, seed: int = 0, fresh: bool = False,
              progress: Callable[[str], None] | None = None,
              notice: Callable[[str], None] | None = None) -> Path:
    """Run every registered experiment (its ``quick`` config when ``quick``) into
    ``out_dir/<experiment>`` and write ``out_dir/report.md``; returns the report's path.

    Quick configurations are smaller than the paper's, so their verdicts read "quick: yes/no"
    (an indication, not a reproduction). ``fresh`` starts each experiment over."""
    out_dir = writable_folder(Path(out_dir))
    lines = ["# mdmprob: reproduction report", "",
             f"Seed {seed}; {'quick configurations' if quick else 'default configurations'}. "
             "Numbers are ours (± one standard error where estimated); the paper's claims are from "
             "arXiv 2602.00286 (Sec. 6 and App. E).", ""]
    if quick:
        lines += ["**Quick mode:** every experiment ran a small configuration (fewer samples, "
                  "smaller grids), so the *holds* column is marked *quick* and only indicates "
                  "the trend; run `mdmprob reproduce` without `--quick` for the verdicts.", ""]
    for name, exp in registry().items():
        if progress:
            progress(name)
        params = dict(getattr(exp, "quick", {})) if quick else {}
        config = exp.make_config(**params)
        start = time.perf_counter()
        try:
            result = run_sweep(exp, config, out_dir / name, seed=seed, fresh=fresh, notice=notice)
            records, figures, error = result.records, result.figures, None
        except SweepError as e:
            records, figures, error = e.result.records, e.result.figures, str(e)
        lines += [f"## {exp.title or name}", "", f"`mdmprob run {name}` — "
                  f"{len(records)} records in {time.perf_counter() - start:.1f} s, "
                  f"[records.csv]({name}/records.csv).", ""]
        if error:
            lines += [f"**Some settings failed:** {error}", ""]
        rows = exp.summary(records, config)
        if rows:
            lines += ["| claim | paper | ours | holds |", "|---|---|---|---|"]
            for row in rows:
                verdict = "yes" if row["holds"] else "**no**"
                if quick:
                    verdict = f"quick: {verdict}"
                lines.append(f"| {row['claim']} | {row['paper']} | {_pm(row['ours'], row['se'])} "
                             f"| {verdict} |")
            lines.append("")
        for fig in figures:
            if fig.suffix == ".png":
                lines += [f"![{name}]({fig.relative_to(out_dir)})", ""]
    path = out_dir / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def _pm(value, se) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "+inf"
    if isinstance(value, float):
        return f"{value:.4g}" if se is None else f"{value:.4g} ± {se:.2g}"
    return str(value)
