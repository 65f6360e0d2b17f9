"""Benchmarks of decoding: batched ``Decoder.run`` against a one-sequence-at-a-time Python loop,
and exact mode (``Decoder.distribution``) against the naive enumeration.

Three presets on the default Block-HMM (``load_model("block_hmm")``: 64 tokens, 8 blocks of 8,
V = 2) with the exact oracle denoiser ``Oracle(structure)``:

* ``mean_field_blocks()``            each block sampled at once from its marginals (8 calls);
* ``sequential("entropy")``          one token per step, lowest-entropy masked position first
                                     (64 calls);
* ``llada(steps=16, block_length=8)`` semi-AR blocks of 8, the block's masks split evenly over
                                     16 steps (here: one per step, 8 calls per block, 64 in all),
                                     the positions whose drawn token is most probable first.

Ours: ``decoder.run(oracle, N, seed=0)`` on the whole batch (median of ``--repeats`` runs after
one warm-up run). Baseline: the same algorithm written the way reference implementations are
written, one sequence at a time: call the oracle on a ``[1, n]`` tensor, pick the positions with
torch ops on that one sequence, commit, repeat (the three ``loop_*`` functions below; they use
nothing of mdmprob but the denoiser call ``oracle(tokens)`` and the block list). The loop is timed
on M sequences and extrapolated per sequence.

Same algorithm check (fails the run): at temperature 0 every decoder here is deterministic, so the
loop's output must equal ``preset(..., temperature=0.0).run(...)`` token for token;
``sequential("entropy")`` is the required check, mean_field_blocks and llada are checked too.
At temperature 1 the random streams differ, so outputs are compared only through the parity
violation rate (printed, not a pass/fail check).

Exact mode: ``decoder.distribution(oracle)`` (tensor states, one batched denoiser call per level)
against ``tests/naive_decoders.NaiveDecoder.distribution`` (the original breadth-first enumeration
over dicts with ``.item()`` calls), the same decoder, one run each, on the Block-HMM with 2 blocks
of 4 (``--quick``: 2 blocks of 3); ties go to the lowest position in both so the laws must agree
(the maximum |q - q_naive| is printed, and must be below 1e-9 for mdlm, whose keys never tie).
Ours is timed ``--repeats`` times after a warm-up call (min and median), the naive enumeration
once; the ratio is naive / our minimum (the CPU-time ratio is printed too, as the machine may be
shared). Then the exact-mode time (wall and process CPU) of mdlm(4), llada, sequential(entropy)
and the Fast-dLLM threshold / factor rules on 12 binary tokens (3 blocks of 4; goal: under a
minute each on one core).

Device from ``MDMPROB_DEVICE`` (the oracle's default), dtype from ``MDMPROB_DTYPE``; CUDA is
synchronised around every timed region. Timings are wall-clock: other load on the machine skews
them (the load average is printed).

    .venv/bin/python bench/bench_decoders.py                 # N=256, M=8, 3 repeats
    .venv/bin/python bench/bench_decoders.py --quick         # small sizes, ~30 s
    MDMPROB_DEVICE=cuda .venv/bin/python bench/bench_decoders.py --json out/decoders.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import mdmprob
from mdmprob.decoders import (
    fast_dllm_factor,
    fast_dllm_threshold,
    llada,
    mdlm,
    mean_field_blocks,
    sequential,
)
from mdmprob.denoisers import Oracle
from mdmprob.errors import BudgetError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    fmt_s,
    load_line,
    loadavg,
    parse_with_preset,
    repeat,
    timed,
    verdict,
)
from naive_decoders import NaiveDecoder  # noqa: E402

RATIO_GOAL = 50.0
EXACT_RATIO_GOAL = 50.0
EXACT_12_GOAL_S = 60.0
LLADA_STEPS, LLADA_BLOCK = 16, 8
FULL = {"n": 256, "m": 8, "repeats": 3}
QUICK = {"n": 16, "m": 1, "repeats": 1}
LLADA_LOOP = {"steps_per": "window", "ties": "lowest_position"}  # the loop's conventions


# ---------------------------------------------------------------------- helpers

# ---------------------------------------------------------------------- the baseline loops
# One sequence at a time, as reference implementations decode: x is [1, n], the denoiser is
# called on it, positions are chosen with torch ops on that one row, committed, repeat.
def _draw(logp: torch.Tensor, temperature: float, gen: torch.Generator) -> torch.Tensor:
    """One value per row of ``logp [k, V]``: argmax at T = 0, else a sample of softmax(logp / T)."""
    if temperature == 0:
        return logp.argmax(-1)
    probs = torch.softmax(logp.to(torch.float64) / temperature, -1)
    return torch.multinomial(probs, 1, generator=gen)[:, 0]


def loop_mean_field(oracle, blocks, temperature: float, gen: torch.Generator) -> torch.Tensor:
    """mean_field_blocks: for each block in order, sample all its positions at once from the
    marginals given everything decoded so far."""
    mask = oracle.mask_id
    x = torch.full((1, oracle.n_tokens), mask, dtype=torch.long, device=oracle.device)
    for block in blocks:
        logp = oracle(x)[0]  # [n, V]
        idx = torch.tensor(block, device=x.device)
        x[0, idx] = _draw(logp[idx], temperature, gen)
    return x[0]


def loop_sequential_entropy(oracle, temperature: float, gen: torch.Generator) -> torch.Tensor:
    """sequential("entropy") (window = the whole sequence): each step commits the masked position
    of lowest entropy (ties: the lowest position), its value drawn from the denoiser."""
    mask = oracle.mask_id
    x = torch.full((1, oracle.n_tokens), mask, dtype=torch.long, device=oracle.device)
    while (x == mask).any():
        logp = oracle(x)[0]  # [n, V]
        p = logp.exp()
        entropy = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)
        entropy = entropy.masked_fill(x[0] != mask, math.inf)
        i = int(entropy.argmin())  # argmin returns the first minimum: lowest position on ties
        x[0, i] = _draw(logp[i:i + 1], temperature, gen)[0]
    return x[0]


def loop_llada(oracle, steps: int, block_length: int, temperature: float,
               gen: torch.Generator) -> torch.Tensor:
    """llada(steps, block_length), low_confidence remasking, as in LLaDA's ``generate``: for each
    semi-AR block, draw x0 at every position (Gumbel-max at temperature T), confidence = p(x0),
    commit the most confident masked positions of the block, as many as the schedule says.

    Schedule as the preset defines it (per block): the block's masks split evenly over ``steps``
    steps, the remainder to the earliest, at least one per step, the last step takes the rest; the
    block ends when it has no masks left (LLaDA's own loop would also spend model calls on steps
    that commit 0 tokens; that is not done here, as it is not done by the preset)."""
    mask, n = oracle.mask_id, oracle.n_tokens
    x = torch.full((1, n), mask, dtype=torch.long, device=oracle.device)
    for start in range(0, n, block_length):
        in_block = torch.zeros(n, dtype=torch.bool, device=x.device)
        in_block[start:start + block_length] = True
        n_masked = int(((x[0] == mask) & in_block).sum())
        base, rem = divmod(n_masked, steps)
        step = 0
        while True:
            candidates = (x[0] == mask) & in_block
            n_cand = int(candidates.sum())
            if n_cand == 0:
                break
            logp = oracle(x)[0]  # [n, V]
            if temperature == 0:
                x0 = logp.argmax(-1)
            else:  # LLaDA's add_gumbel_noise, in float64
                u = torch.rand(logp.shape, generator=gen, dtype=torch.float64, device=x.device)
                gumbel = -torch.log(-torch.log(u.clamp(min=torch.finfo(torch.float64).tiny)))
                x0 = (logp.to(torch.float64) / temperature + gumbel).argmax(-1)
            confidence = logp.gather(-1, x0[:, None])[:, 0].exp()
            confidence = torch.where(candidates, confidence, torch.full_like(confidence, -math.inf))
            k = n_cand if step >= steps - 1 else max(1, base + (step < rem))
            k = min(k, n_cand)
            # LLaDA uses topk; a stable sort breaks ties to the lowest position, deterministically
            chosen = torch.sort(confidence, descending=True, stable=True).indices[:k]
            x[0, chosen] = x0[chosen]
            step += 1
    return x[0]


# ---------------------------------------------------------------------- the benchmark
def decoders(structure):
    """name -> (preset at T = 1, preset at T = 0, loop(oracle, temperature, generator))."""
    blocks = structure.blocks
    return {
        "mean_field_blocks": (
            mean_field_blocks(), mean_field_blocks(temperature=0.0),
            lambda o, t, g: loop_mean_field(o, blocks, t, g)),
        "sequential(entropy)": (
            sequential("entropy", ties="lowest_position"),
            sequential("entropy", temperature=0.0, ties="lowest_position"),
            loop_sequential_entropy),
        f"llada(steps={LLADA_STEPS}, block_length={LLADA_BLOCK})": (
            llada(steps=LLADA_STEPS, block_length=LLADA_BLOCK, **LLADA_LOOP),
            llada(steps=LLADA_STEPS, block_length=LLADA_BLOCK, temperature=0.0, **LLADA_LOOP),
            lambda o, t, g: loop_llada(o, LLADA_STEPS, LLADA_BLOCK, t, g)),
    }


def check_same_algorithm(name, det_decoder, loop, oracle, m: int, device) -> dict:
    """At T = 0 both are deterministic: the loop's sequence must equal every row of the batched
    run (m rows). Returns the check's record; the caller fails the run on a mismatch."""
    gen = torch.Generator(device=device).manual_seed(0)
    dt_loop, _, ref = timed(lambda: loop(oracle, 0.0, gen), device)
    dt_ours, _, res = timed(lambda: det_decoder.run(oracle, m, seed=0), device)
    ours = res.tokens
    mismatch = (ours != ref[None, :]).any(-1)
    ok = not bool(mismatch.any())
    first_bad = None
    if not ok:
        b = int(mismatch.nonzero()[0, 0])
        pos = (ours[b] != ref).nonzero()[:, 0].tolist()
        first_bad = {"row": b, "positions": pos[:16]}
    print(f"check {name:<34} T=0: loop == Decoder.run on {m} row(s): "
          f"{'OK' if ok else 'MISMATCH'} (loop {fmt_s(dt_loop)}, ours {fmt_s(dt_ours)}, "
          f"nfe {int(res.nfe[0])})")
    if not ok:
        print(f"FAIL: {name} at temperature 0: loop output\n  {ref.tolist()}\ndiffers from "
              f"Decoder.run row {first_bad['row']}\n  {ours[first_bad['row']].tolist()}\n"
              f"at positions {first_bad['positions']}", file=sys.stderr)
    return {"ok": ok, "rows": m, "loop_tokens": ref.tolist(), "mismatch": first_bad}


def bench_one(name, decoder, loop, structure, oracle, args, device) -> dict:
    n, m = args.n, args.m
    # ours: one batched run of N sequences, median of repeats after one warm-up run
    warm, _, _ = timed(lambda: decoder.run(oracle, n, seed=args.seed), device)
    times, res = [], None
    for _ in range(args.repeats):
        dt, _, res = timed(lambda: decoder.run(oracle, n, seed=args.seed), device)
        times.append(dt)
    ours_batch = statistics.median(times)
    ours_seq = ours_batch / n
    ours_viol = structure.violations(res.tokens).any(-1).double().mean().item()
    nfe = int(res.nfe[0])

    # baseline: M sequences one at a time, each timed, mean per sequence
    gen = torch.Generator(device=device).manual_seed(args.seed)
    loop_times, outs = [], []
    for _ in range(m):
        dt, _, x = timed(lambda: loop(oracle, 1.0, gen), device)
        loop_times.append(dt)
        outs.append(x)
    loop_seq = sum(loop_times) / m
    loop_viol = structure.violations(torch.stack(outs)).any(-1).double().mean().item()
    ratio = loop_seq / ours_seq

    print(f"\n-- {name}  ({nfe} oracle calls per sequence) --")
    print(f"ours : warm-up {fmt_s(warm)}; batch of {n}: median {fmt_s(ours_batch)} over "
          f"{args.repeats} (min {fmt_s(min(times))}, max {fmt_s(max(times))})")
    print(f"ours : {fmt_s(ours_seq)} per sequence = {1 / ours_seq:,.1f} sequences/s")
    print(f"loop : {m} sequences one at a time: total {fmt_s(sum(loop_times))}, "
          f"min {fmt_s(min(loop_times))}, max {fmt_s(max(loop_times))}")
    print(f"loop : {fmt_s(loop_seq)} per sequence = {1 / loop_seq:,.2f} sequences/s "
          f"(extrapolated to N={n}: {fmt_s(loop_seq * n)} vs ours {fmt_s(ours_batch)})")
    print(f"RATIO batched/loop: {ratio:.1f}x sequences/s (goal >= {RATIO_GOAL:.0f}x) -> "
          f"{'met' if ratio >= RATIO_GOAL else 'NOT met'}")
    print(f"T=1 parity-violation rate (sanity, not a check): ours {ours_viol:.3f} on {n}, "
          f"loop {loop_viol:.3f} on {m}")
    return {
        "nfe_per_seq": nfe, "ours_warmup_s": warm, "ours_batch_times_s": times,
        "ours_batch_median_s": ours_batch, "ours_per_seq_s": ours_seq,
        "ours_seq_per_s": 1 / ours_seq, "loop_times_s": loop_times, "loop_per_seq_s": loop_seq,
        "loop_seq_per_s": 1 / loop_seq, "ratio": ratio, "ratio_goal": RATIO_GOAL,
        "ours_violation_rate": ours_viol, "loop_violation_rate": loop_viol,
    }


def bench_exact(quick: bool, repeats: int) -> dict:
    """Exact mode against the naive enumeration (ratio in one run), then 12 binary tokens."""
    blocks = (2, 3) if quick else (2, 4)
    structure = mdmprob.load_model("block_hmm", n_blocks=blocks[0], block_size=blocks[1])
    oracle = Oracle(structure)
    device = oracle.device
    print(f"\n== exact mode: tensor states vs naive enumeration, {structure} "
          f"({blocks[0]} blocks of {blocks[1]}); {load_line()} ==")
    out = {"model": str(structure), "blocks": blocks, "ratios": {}, "twelve": {}}
    for decoder in (mdlm(4), llada(4, ties="lowest_position")):
        naive = NaiveDecoder(decoder.name, decoder.score, decoder.commit, decoder.window,
                             decoder.temperature)
        # the naive enumeration once (it is the slow side), ours after a warm-up call
        dt_naive, cpu_naive, q_naive = timed(lambda: naive.distribution(oracle), device)  # noqa: B023
        ours = repeat(lambda: decoder.distribution(oracle), repeats, device)  # noqa: B023
        q = decoder.distribution(oracle)
        diff = (q.exp() - q_naive.exp()).abs().max().item()
        ratio = dt_naive / ours.min
        print(f"{decoder.name:<40} naive {fmt_s(dt_naive):>10}  ours {ours}  "
              f"RATIO {ratio:7.1f}x (vs ours' min; vs median {dt_naive / ours.median:.1f}x; "
              f"CPU-time ratio {cpu_naive / ours.cpu_min:.1f}x; goal >= {EXACT_RATIO_GOAL:.0f}x: "
              f"{verdict(ratio, EXACT_RATIO_GOAL)})  max|q - q_naive| {diff:.2g}")
        out["ratios"][decoder.name] = {"naive_s": dt_naive, "naive_cpu_s": cpu_naive,
                                       "ours": ours.as_dict(), "ratio": ratio,
                                       "max_abs_diff": diff}
    print("(llada's |q - q_naive| comes from ties: the oracle's symmetric conditionals give equal "
          "keys, which ours compares\n after rounding to 2^-32 and the naive code as raw floats; "
          "on tie-free conditionals they agree to 1e-12,\n tests/test_decoder_drivers.py)")
    twelve = mdmprob.load_model("block_hmm", n_blocks=3, block_size=4)
    oracle = Oracle(twelve)
    print(f"\n== exact mode on 12 binary tokens ({twelve}, 3 blocks of 4; goal < "
          f"{EXACT_12_GOAL_S:.0f} s each on one core); {load_line()} ==")
    presets = [mdlm(4), llada(6, block_length=4), sequential("entropy"),
               fast_dllm_threshold(0.9), fast_dllm_factor(1.0)]
    for decoder in presets:
        try:
            dt, cpu, q = timed(lambda: decoder.distribution(oracle),  # noqa: B023
                               device)
            mass = q.exp().sum().item()
            print(f"{decoder.name:<40} wall {fmt_s(dt):>10}  CPU {fmt_s(cpu):>10}  "
                  f"sum q = {mass:.12f}  wall {verdict(dt, EXACT_12_GOAL_S, at_most=True)}, "
                  f"CPU {verdict(cpu, EXACT_12_GOAL_S, at_most=True)}")
            out["twelve"][decoder.name] = {"seconds": dt, "cpu_seconds": cpu, "mass": mass}
        except BudgetError as e:
            print(f"{decoder.name:<40} over the exact-mode budget: {str(e)[:90]}")
            out["twelve"][decoder.name] = {"seconds": None, "error": str(e)}
    return out


# ---------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, help=f"sequences per batched run (default {FULL['n']}; "
                        f"quick {QUICK['n']})")
    parser.add_argument("--m", type=int, help="sequences decoded one at a time by the loop, and "
                        f"rows of the T=0 check (default {FULL['m']}; quick {QUICK['m']})")
    parser.add_argument("--repeats", type=int, help="timed batched runs after the warm-up "
                        f"(default {FULL['repeats']}; quick {QUICK['repeats']})")
    parser.add_argument("--quick", action="store_true", help="small sizes (about 30 s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of both (default 0)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads (default 1, as the mdmprob command uses)")
    parser.add_argument("--exact-only", action="store_true",
                        help="only the exact-mode part (ratios vs the naive enumeration, 12 tokens)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this path")
    args = parse_with_preset(parser, argv, QUICK, FULL)
    for key in ("n", "m", "repeats"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    structure = mdmprob.load_model("block_hmm")
    oracle = Oracle(structure)  # device and dtype from MDMPROB_DEVICE / MDMPROB_DTYPE
    device, dtype = oracle.device, oracle.dtype
    load = loadavg()
    env = {
        "python": platform.python_version(), "torch": torch.__version__,
        "device": str(device), "dtype": str(dtype),
        "MDMPROB_DEVICE": os.environ.get("MDMPROB_DEVICE"),
        "threads": torch.get_num_threads(), "threads_option": args.threads,
        "cpu_count": os.cpu_count(), "loadavg_start": load, "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "quick": args.quick,
    }
    print("== mdmprob decoder benchmark" + (" (--quick)" if args.quick else "") + " ==")
    print(f"torch {env['torch']}, python {env['python']}")
    print(f"device {device}" + (f" ({env['gpu']})" if env["gpu"] else "") +
          f" (MDMPROB_DEVICE={env['MDMPROB_DEVICE'] or 'unset'}), dtype {dtype}, "
          f"torch threads {env['threads']}"
          f" ({'set by --threads' if args.threads is not None else 'torch default'}), "
          f"cpus {env['cpu_count']}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"model: {structure} ({len(structure.blocks)} blocks of "
          f"{len(structure.blocks[0])}); denoiser {oracle}")
    print(f"options: n={args.n} m={args.m} repeats={args.repeats} seed={args.seed}")

    table = {} if args.exact_only else decoders(structure)
    if table:
        print("\n== same-algorithm check at temperature 0 (deterministic: outputs must be "
              "equal) ==")
    checks = {name: check_same_algorithm(name, det, loop, oracle, args.m, device)
              for name, (_, det, loop) in table.items()}
    results = {"env": env, "options": {k: getattr(args, k) for k in ("n", "m", "repeats", "seed")},
               "checks": checks, "decoders": {}}
    failed = [name for name, c in checks.items() if not c["ok"]]
    if failed:
        print(f"FAIL: the loop is not the same algorithm as Decoder.run for {failed}; "
              "no timings taken", file=sys.stderr)
    elif table:
        print(f"\n== throughput at temperature 1: batched N={args.n} vs loop M={args.m} ==")
        for name, (decoder, _, loop) in table.items():
            results["decoders"][name] = bench_one(name, decoder, loop, structure, oracle, args,
                                                  device)

    results["exact"] = bench_exact(args.quick, args.repeats)
    total = time.perf_counter() - start
    env["loadavg_end"] = loadavg()
    results["total_s"] = total
    if results["decoders"]:
        print("\n== summary ==")
        print(f"{'decoder':<34} {'nfe':>4} {'ours/seq':>11} {'ours seq/s':>11} "
              f"{'loop/seq':>11} {'loop seq/s':>11} {'ratio':>8}  goal {RATIO_GOAL:.0f}x")
        for name, r in results["decoders"].items():
            print(f"{name:<34} {r['nfe_per_seq']:>4} {fmt_s(r['ours_per_seq_s']):>11} "
                  f"{r['ours_seq_per_s']:>11.1f} {fmt_s(r['loop_per_seq_s']):>11} "
                  f"{r['loop_seq_per_s']:>11.3f} {r['ratio']:>7.1f}x  "
                  f"{'met' if r['ratio'] >= RATIO_GOAL else 'NOT met'}")
    end = env["loadavg_end"]
    print(f"total runtime: {total:.1f} s (load average at the end {end[0]:.2f} {end[1]:.2f} "
          f"{end[2]:.2f}; timings are wall-clock, so other load skews them)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
        print(f"results written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
