"""False-alarm rate of each audit detector at its default threshold (alpha = 1e-3), and the rate
at which each known-bad sampler gets its verdict.

Known-good samplers (tests/samplers/good.py) are audited R times with independent seeds; every
flag is a false alarm. Prints, per detector, the flags, the runs where it could run, the rate and
a one-sided 95% upper bound (Clopper-Pearson). Then each known-bad sampler (tests/samplers/bad.py)
is audited R // 5 times with the settings of tests/test_audit.py and the detection rate of its
verdict printed.

    python bench/audit_false_alarms.py [R]
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import torch

import mdmprob
from mdmprob.audit import audit

torch.set_num_threads(1)
GOOD = Path(__file__).resolve().parents[1] / "tests" / "samplers" / "good.py"
BAD = GOOD.with_name("bad.py")
E = 1e-3


def main(runs: int) -> None:
    chain = mdmprob.load_model("markov_chain", length=6, vocab=3, block_size=3)
    rare = mdmprob.load_model("markov_chain", length=6, vocab=3, block_size=3,
                              transition=[[1 - 2 * E, E, E], [E, 1 - 2 * E, E], [E, E, 1 - 2 * E]])
    cases = [  # (label, sampler, structure, options)
        ("speculative vs p", "speculative", chain, dict(presets=[])),
        ("eb_sampler vs eb_sampler:gamma=1.0", "eb_sampler", chain,
         dict(params=dict(gamma=1.0), presets=["eb_sampler:gamma=1.0"])),
        ("speculative vs p, rare chain (tail)", "speculative", rare,
         dict(presets=[], samples=3000, batch=500)),
    ]
    flags, ran = Counter(), Counter()
    start = time.time()
    for label, name, structure, options in cases:
        options = dict(dict(samples=500, batch=100, size_check=200), **options)
        for r in range(runs):
            report = audit(f"{GOOD}:{name}", structure, seed=10_000 * (r + 1), **options)
            for f in report.findings:
                if f.passed is not None:
                    ran[f.check] += 1
                    flags[f.check] += f.passed is False
        print(f"{label}: {runs} audits done ({time.time() - start:.0f} s)", file=sys.stderr)
    print("| detector | flags / audits | rate | 95% upper bound |")
    print("|---|---|---|---|")
    for check in ("mask_tokens", "prompt_changed", "tail", "seed", "batch", "law"):
        n, k = ran[check], flags[check]
        if n == 0:
            print(f"| {check} | - | - | - |")
            continue
        upper = _upper(k, n)
        print(f"| {check} | {k} / {n} | {k / n:.3g} | {upper:.3g} |")
    bad = [  # the settings of tests/test_audit.py
        ("mask_after_argmax", chain, dict(lm_options=dict(special_mass=0.05)), "mask_tokens"),
        ("low_precision_gumbel", rare, dict(params=dict(bits=8), samples=3000, batch=500), "tail"),
        ("shared_seed_speculative", chain, {}, "law"),
        ("eb_noised_entropy", chain, dict(params=dict(gamma=1.0), samples=2000,
                                          presets=["eb_sampler:gamma=1.0"]), "law"),
        ("ignores_seed", chain, {}, "seed"),
        ("batch_coupled", chain, dict(size_check=200), "batch"),
        ("rewrites_prompt", chain, dict(prompt=[0, 1]), "prompt_changed"),
    ]
    print()
    print("| known-bad sampler | verdict | detected / audits |")
    print("|---|---|---|")
    for name, structure, options, verdict in bad:
        options = dict(dict(samples=1000, batch=200, presets=[], size_check=0), **options)
        hits = sum(verdict in audit(f"{BAD}:{name}", structure, seed=7_000 * (r + 1),
                                    **options).failed for r in range(max(1, runs // 5)))
        print(f"| {name} | {verdict} | {hits} / {max(1, runs // 5)} |")


def _upper(k: int, n: int, level: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound, by bisection on the binomial cdf."""
    import math

    def cdf(p):
        return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))
    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > 1 - level else (lo, mid)
    return hi


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
