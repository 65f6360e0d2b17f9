"""Benchmark of the dependency-aware, learned-policy, joint and self-speculative decoders against
mean-field blocks and one-token-at-a-time decoding, on a Block-HMM with the exact oracle.

Structure: ``load_model("block_hmm", n_blocks=4, block_size=4, eta=0.05)`` (16 binary tokens;
``--quick``: 2 blocks of 4). For each decoder, one batched run of ``--num`` sequences (seed 0):

* mean NFE per sequence and mean steps;
* mean log p(x) of the outputs under the structure (exact), and for decoders whose run
  log-probability is log q(x) the Monte Carlo KL(q || p) = mean(log q - log p) with its
  standard error;
* wall time of the run (min and median over ``--repeats`` after one warm-up) and its ratio to
  mean_field_blocks timed in the same process.

    .venv/bin/python bench/bench_dependency_aware.py [--quick] [--num 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import load_line, repeat  # noqa: E402

from mdmprob import load_model  # noqa: E402
from mdmprob.decoders import (  # noqa: E402
    dapd,
    dawn,
    joint_proposal,
    learned_policy,
    mean_field_blocks,
    self_speculative,
    sequential,
)
from mdmprob.denoisers import Oracle  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--num", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    blocks = 2 if args.quick else 4
    s = load_model("block_hmm", n_blocks=blocks, block_size=4, eta=0.05)
    o = Oracle(s)
    engine = s.engine()
    decoders = [mean_field_blocks(), sequential("l2r"), dapd(threshold=1e-2),
                dawn(threshold=1e-2), learned_policy(init_logit=0.0), joint_proposal(),
                self_speculative(), self_speculative(verify_cost="token"),
                self_speculative(router="confidence", route_tau=0.9)]
    print(f"block_hmm n={s.n_tokens} (blocks of 4), num={args.num}, {load_line()}")
    base = None
    for d in decoders:
        t = repeat(lambda d=d: d.run(o, args.num, seed=0), args.repeats, o.device)
        run = d.run(o, args.num, seed=0)
        log_p = engine.log_prob(run.tokens)
        line = (f"{d.name:45s} nfe {run.nfe.double().mean():6.2f}  steps {run.steps:3d}  "
                f"E log p {log_p.mean():8.4f}")
        if d.log_q_is_marginal:
            diff = (run.log_q - log_p).double()
            se = diff.std() / math.sqrt(len(diff))
            line += f"  KL(q||p) {diff.mean():.4f} +- {se:.4f}"
        base = t.min if base is None else base
        line += f"  time {t}  ratio(min) {t.min / base:.2f}"
        print(line)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
