"""Benchmark of the exact engine: every row of the performance table, as ratios in one process.

Rows (Block-HMM, paper defaults unless said; all conditionals ``p(x_i | x_visible)`` of random
partial sequences: tokens drawn exactly from the model, each position masked with prob. 0.5):

1. **vs Pyro.** ``engine.conditionals`` on a batch of 64 and on one sequence, against Pyro's
   ``TraceEnum_ELBO.compute_marginals`` one sequence per call (``--m`` sequences, per-sequence
   mean). Both must agree to 1e-8 in probability, or the run fails. Goals >= 1000x at batch 64,
   >= 300x at batch 1.
2. **vs pgmpy** ``VariableElimination`` (one query per masked position, ``--m`` sequences);
   skipped when pgmpy is not importable.
3. **vs a hand-written forward-backward** (:func:`block_hmm_forward_backward`, below: log space,
   float64, batched over sequences and vectorised over blocks, sequential over the latent chain)
   on the same queries, same dtype, same batch: throughput ratio at batch 1, 64, 1024 (8 blocks)
   and 1, 64 at the largest size. Goal >= 0.5x everywhere. Agreement to 1e-9 is checked.
4. **Scaling of all conditionals** in the number of blocks (8 .. ``--max-blocks``, batch
   ``--scale-n``): trace (Pyro) and plan (orders + stacked message groups) apart from the
   query; log-log exponent (goal ~1).
5. **Decode scaling.** A mean-field block decoder emulated with the Oracle (batch ``--decode-n``):
   each block sampled at once from its conditionals, then committed. With ``window`` (the
   block's positions: messages carried from call to call) and without (every conditional each
   call; past ``--full-decode-max`` blocks timed on the first calls and extrapolated, the cost
   of a whole-sequence call not depending on the evidence). Both must draw the same tokens
   from the same seed. The same decode through the decoder driver (the ``mean_field_blocks``
   preset: each step sees its window's columns, the oracle answers those rows only). Goal,
   through the driver: exponent <= 1.1 and 512 blocks under 30 s.
6. **Start-up** of ``mdmprob --help`` and ``mdmprob models`` (subprocesses, min of 3).
7. **GPU**: 10^5 sequences on CUDA vs the CPU, when ``MDMPROB_DEVICE=cuda``; else not measured.

Every timing is the min (and median) over ``--repeats`` calls after a warm-up; the load average
is printed at the start and the end. Torch runs ``--threads`` intra-op threads (default 1).

    .venv/bin/python bench/bench_engine.py                 # full run (make bench)
    .venv/bin/python bench/bench_engine.py --quick         # small sizes, ~1 min
    MDMPROB_DEVICE=cuda .venv/bin/python bench/bench_engine.py --json out/bench.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate

from mdmprob.decoders import mean_field_blocks
from mdmprob.denoisers import Oracle
from mdmprob.structure import Structure, load_model

sys.path.insert(0, str(Path(__file__).parent))
from _common import (  # noqa: E402
    fmt_s,
    load_line,
    loadavg,
    parse_with_preset,
    peak_memory_mib,
    repeat,
    slope,
    verdict,
)

TOLERANCE = 1e-8  # max |p_ours - p_reference| allowed on the checked subset
GOALS = {"pyro_64": 1000.0, "pyro_1": 300.0, "handwritten": 0.5, "decode_exponent": 1.1,
         "decode_512_s": 30.0, "startup_s": 0.5, "gpu_speedup": 10.0}
FULL = {"m": 16, "repeats": 5, "max_blocks": 512, "scale_n": 64, "decode_n": 64,
        "full_decode_max": 64, "pgmpy_positions": 64}
QUICK = {"m": 4, "repeats": 3, "max_blocks": 64, "scale_n": 64, "decode_n": 64,
         "full_decode_max": 64, "pgmpy_positions": 16}


# ---------------------------------------------------------------------- the hand-written baseline
def block_hmm_forward_backward(tokens, visible, n_blocks, block_size=8, n_states=2, a=0.9,
                               rho=(0.9, 0.1), eta=1e-8) -> torch.Tensor:
    """``log p(x_i | x_visible)`` of the Block-HMM, ``[B, n, 2]``, written by hand.

    Per block (vectorised over sequences, blocks and latent states) a running-parity forward
    pass ``F_j(z, s)`` and backward pass ``G_j(z, s)`` over the content bits give the block's
    likelihood ``L_n(z)``; a forward and a backward pass over the latent chain give the weight
    ``O_n(z) = alpha_n^-(z) beta_n(z)`` of everything outside block n; a token's conditional
    sums ``O_n(z) F_{j-1}(z, s) e_j(z, v) G_j(z, s xor v)`` over ``z, s``. All in log space.
    """
    batch, n = tokens.shape
    nb, size, k = n_blocks, block_size, n_states
    dev, dt, lse = tokens.device, torch.float64, torch.logsumexp
    rho_t = torch.tensor(rho, dtype=dt, device=dev)
    content = torch.stack([1 - rho_t, rho_t], -1).log()  # [K, y]
    parity = torch.tensor([[1 - eta, eta], [eta, 1 - eta]], dtype=dt, device=dev).log()  # [s, p]
    off = (1 - a) / (k - 1) if k > 1 else 0.0
    trans = torch.full((k, k), off, dtype=dt, device=dev).fill_diagonal_(a).log()
    init = torch.full((k,), -math.log(k), dtype=dt, device=dev)
    onehot = torch.nn.functional.one_hot(tokens.clamp(0, 1), 2).bool()
    ev = torch.zeros(batch, n, 2, dtype=dt, device=dev).masked_fill(
        ~(onehot | ~visible[..., None]), -math.inf).reshape(batch, nb, size, 2)
    emit = content[None, None, None] + ev[:, :, 1:, None, :]  # [B, N, S-1, K, y]
    f = torch.full((batch, nb, k, 2), -math.inf, dtype=dt, device=dev)
    f[..., 0] = 0.0
    fs = [f]
    for j in range(size - 1):  # s' = s xor y
        e = emit[:, :, j]
        f = torch.stack([lse(torch.stack([f[..., 0] + e[..., 0], f[..., 1] + e[..., 1]], -1), -1),
                         lse(torch.stack([f[..., 0] + e[..., 1], f[..., 1] + e[..., 0]], -1), -1)],
                        -1)
        fs.append(f)
    par = parity[None, None, None] + ev[:, :, 0, None, None, :]  # [B, N, 1, s, p]
    g = lse(par, -1).expand(batch, nb, k, 2)
    gs = [g]
    for j in reversed(range(size - 1)):
        e = emit[:, :, j]
        g = torch.stack([lse(torch.stack([e[..., 0] + g[..., 0], e[..., 1] + g[..., 1]], -1), -1),
                         lse(torch.stack([e[..., 0] + g[..., 1], e[..., 1] + g[..., 0]], -1), -1)],
                        -1)
        gs.append(g)
    gs.reverse()
    lik = lse(fs[-1] + gs[-1], -1)  # [B, N, K]
    alpha_pre = [init.expand(batch, k)]
    alpha = init + lik[:, 0]
    for t in range(1, nb):
        alpha_pre.append(lse(alpha[:, :, None] + trans, 1))
        alpha = alpha_pre[-1] + lik[:, t]
    beta = torch.zeros(batch, k, dtype=dt, device=dev)
    betas = [beta]
    for t in reversed(range(1, nb)):
        beta = lse(trans + (lik[:, t] + beta)[:, None, :], -1)
        betas.append(beta)
    betas.reverse()
    outside = (torch.stack(alpha_pre, 1) + torch.stack(betas, 1))[..., None]  # [B, N, K, 1]
    out = torch.empty(batch, nb, size, 2, dtype=dt, device=dev)
    out[:, :, 0] = lse(lse(outside[..., None] + fs[-1][..., None] + par, -2), -2)
    for j in range(size - 1):
        e, fj, gj = emit[:, :, j], fs[j], gs[j + 1]
        v0 = lse(outside + fj + gj, -1) + e[..., 0]
        v1 = lse(outside + fj + gj.flip(-1), -1) + e[..., 1]
        out[:, :, j + 1] = lse(torch.stack([v0, v1], -1), -2)
    out = out.reshape(batch, n, 2)
    return out - lse(out, -1, keepdim=True).nan_to_num(neginf=0.0)


# ---------------------------------------------------------------------- inputs and baselines
def random_partial(engine, n: int, seed: int):
    """``n`` sequences drawn exactly from the model, each position masked with prob 0.5."""
    gen = torch.Generator(device=engine.device).manual_seed(seed)
    hidden = torch.zeros(n, engine.n, dtype=torch.bool, device=engine.device)
    tokens = engine.sample(torch.zeros(n, engine.n, dtype=torch.long, device=engine.device),
                           hidden, generator=gen)
    visible = torch.rand(n, engine.n, generator=gen, device=engine.device) >= 0.5
    return tokens, visible


def _empty_guide() -> None:
    pass


def pyro_marginals(structure: Structure, tokens, visible) -> torch.Tensor:
    """``[n, V]`` probabilities of the masked tokens of ONE sequence from Pyro's
    ``compute_marginals`` (NaN where visible)."""
    data = {name: torch.tensor(int(t))
            for name, t, v in zip(structure.tokens, tokens.tolist(), visible.tolist(), strict=True)
            if v}
    conditioned = poutine.condition(structure.model, data=data)
    marginals = TraceEnum_ELBO(max_plate_nesting=0).compute_marginals(
        config_enumerate(conditioned), _empty_guide)
    table = torch.full((structure.n_tokens, structure.vocab), math.nan, dtype=torch.float64)
    for i, name in enumerate(structure.tokens):
        if not visible[i]:
            table[i] = marginals[name].probs.detach().to(torch.float64).reshape(-1)
    return table


def _max_diff(ours: torch.Tensor, reference: torch.Tensor, masked: torch.Tensor) -> float:
    diff = (ours.detach().cpu().exp() - reference.cpu())[masked.cpu()].abs()
    return diff.max().item() if diff.numel() else 0.0


# ---------------------------------------------------------------------- 1. vs Pyro
def bench_pyro(args, device) -> dict:
    print("\n== 1. all conditionals vs Pyro TraceEnum_ELBO.compute_marginals (block_hmm) ==")
    structure = load_model("block_hmm")
    engine = structure.engine()
    tokens, visible = random_partial(engine, 64, args.seed)
    batch64 = repeat(lambda: engine.conditionals(tokens, visible), args.repeats, device)
    one = repeat(lambda: engine.conditionals(tokens[:1], visible[:1]), args.repeats, device)
    ours = engine.conditionals(tokens, visible)
    tok, vis = tokens[: args.m].cpu(), visible[: args.m].cpu()
    pyro.clear_param_store()
    pyro_marginals(structure, tok[0], vis[0])  # warm-up
    times, tables = [], []
    for b in range(args.m):
        start = time.perf_counter()
        tables.append(pyro_marginals(structure, tok[b], vis[b]))
        times.append(time.perf_counter() - start)
    pyro_seq = min(times)
    diff = _max_diff(ours[: args.m], torch.stack(tables), ~vis)
    r64, r1 = pyro_seq / (batch64.min / 64), pyro_seq / one.min
    print(f"ours : batch 64: {batch64} ({fmt_s(batch64.min / 64)} per sequence); batch 1: {one}")
    print(f"pyro : {args.m} sequences one call each: min {fmt_s(pyro_seq)}, median "
          f"{fmt_s(sorted(times)[len(times) // 2])} per sequence")
    print(f"RATIO batch 64: {r64:.0f}x (goal >= {GOALS['pyro_64']:.0f}x: "
          f"{verdict(r64, GOALS['pyro_64'])}); batch 1: {r1:.0f}x (goal >= "
          f"{GOALS['pyro_1']:.0f}x: {verdict(r1, GOALS['pyro_1'])})")
    print(f"check: max |p_ours - p_pyro| = {diff:.2e} on {args.m} sequences (< {TOLERANCE:g})")
    return {"batch64": batch64.as_dict(), "batch1": one.as_dict(), "pyro_times_s": times,
            "ratio_64": r64, "ratio_1": r1, "max_abs_diff": diff, "agree": diff < TOLERANCE}


# ---------------------------------------------------------------------- 2. vs pgmpy
def bench_pgmpy(args, device) -> dict:
    print("\n== 2. vs pgmpy VariableElimination (block_hmm) ==")
    try:
        import warnings

        warnings.filterwarnings("ignore", category=FutureWarning, module="pgmpy")
        from pgmpy.factors.discrete import DiscreteFactor
        from pgmpy.inference import VariableElimination
        try:
            from pgmpy.models import DiscreteMarkovNetwork as MarkovNetwork
        except ImportError:
            from pgmpy.models import MarkovNetwork
    except ImportError as e:
        print(f"skipped: pgmpy is not importable ({e})")
        return {"skipped": str(e)}
    structure = load_model("block_hmm")
    graph, engine = structure.factor_graph, structure.engine()
    tokens, visible = random_partial(engine, args.m, args.seed)
    net = MarkovNetwork()
    net.add_nodes_from(graph.names)
    factors = []
    for f in graph.factors:
        names = [graph.names[v] for v in f.variables]
        net.add_edges_from((a, b) for i, a in enumerate(names) for b in names[i + 1:])
        factors.append(DiscreteFactor(names, list(f.table.shape), f.table.exp().numpy()))
    net.add_factors(*factors)
    infer = VariableElimination(net)
    positions, diffs, start = 0, [], time.perf_counter()
    ours = engine.conditionals(tokens, visible).cpu().exp()
    for b in range(args.m):
        evidence = {graph.names[i]: int(tokens[b, i]) for i in range(engine.n) if visible[b, i]}
        for i in (~visible[b]).nonzero().flatten().tolist():
            if positions >= args.pgmpy_positions:
                break
            q = infer.query([graph.names[i]], evidence=evidence, show_progress=False)
            probs = q.values / q.values.sum()  # a Markov network's query is unnormalised
            diffs.append(abs(float(probs[1]) - float(ours[b, i, 1])))
            positions += 1
    per_position = (time.perf_counter() - start) / max(positions, 1)
    masked_per_seq = (~visible).sum(-1).double().mean().item()
    ours_seq = repeat(lambda: engine.conditionals(tokens, visible), args.repeats, device).min
    ratio = per_position * masked_per_seq / (ours_seq / args.m)
    if max(diffs, default=0) > TOLERANCE:
        print("FAIL: the engine and pgmpy disagree", file=sys.stderr)
    print(f"pgmpy: {positions} queries, {fmt_s(per_position)} per masked position "
          f"({masked_per_seq:.1f} masked per sequence); ours {fmt_s(ours_seq / args.m)} per "
          f"sequence; RATIO {ratio:.0f}x; max |dp| = {max(diffs, default=0):.2e}")
    return {"per_position_s": per_position, "ratio": ratio, "max_abs_diff": max(diffs, default=0),
            "agree": max(diffs, default=0) <= TOLERANCE}


# ---------------------------------------------------------------------- 3. vs hand-written
def bench_handwritten(args, device) -> dict:
    print("\n== 3. vs a hand-written batched forward-backward (same queries, float64) ==")
    rows = []
    cases = [(8, 1), (8, 64), (8, 1024), (args.max_blocks, 1), (args.max_blocks, 64)]
    for nb, batch in cases:
        structure = load_model("block_hmm", n_blocks=nb)
        engine = structure.engine()
        tokens, visible = random_partial(engine, batch, args.seed)
        ours = repeat(lambda e=engine, t=tokens, v=visible: e.conditionals(t, v), args.repeats,
                      device)
        hand = repeat(lambda t=tokens, v=visible, nb=nb: block_hmm_forward_backward(t, v, nb),
                      args.repeats, device)
        a, b = engine.conditionals(tokens, visible), block_hmm_forward_backward(tokens, visible, nb)
        diff = (a.exp() - b.exp()).abs().max().item()
        ratio = hand.min / ours.min
        rows.append({"n_blocks": nb, "batch": batch, "ours": ours.as_dict(),
                     "handwritten": hand.as_dict(), "ratio": ratio, "max_abs_diff": diff})
        print(f"{nb:>4} blocks, batch {batch:>5}: ours {ours}; hand-written {hand}; throughput "
              f"ratio {ratio:.2f}x (goal >= {GOALS['handwritten']}: "
              f"{verdict(ratio, GOALS['handwritten'])}); max |dp| {diff:.1e}", flush=True)
        if diff > TOLERANCE:
            print("FAIL: the engine and the hand-written forward-backward disagree",
                  file=sys.stderr)
    return {"rows": rows, "min_ratio": min(r["ratio"] for r in rows),
            "agree": all(r["max_abs_diff"] <= TOLERANCE for r in rows)}


# ---------------------------------------------------------------------- 4. scaling
def bench_scaling(args, device) -> dict:
    sizes = [nb for nb in (8, 16, 32, 64, 128, 256, 512) if nb <= args.max_blocks]
    print(f"\n== 4. scaling: all conditionals of {args.scale_n} sequences, n_blocks in {sizes} ==")
    print(f"{'blocks':>6} {'tokens':>6} {'trace':>9} {'plan':>9} {'query min':>10} "
          f"{'query med':>10} {'us/blk/seq':>10} {'peak MiB':>9}")
    rows = []
    for nb in sizes:
        start = time.perf_counter()
        structure = load_model("block_hmm", n_blocks=nb)
        structure.factor_graph  # noqa: B018  (traces the Pyro model)
        trace_s = time.perf_counter() - start
        start = time.perf_counter()
        engine = structure.engine()
        engine.message_tree()  # orders and stacked groups, cached for every later query
        plan_s = time.perf_counter() - start
        tokens, visible = random_partial(engine, args.scale_n, args.seed)
        t = repeat(lambda e=engine, x=tokens, v=visible: e.conditionals(x, v), args.repeats,
                   device)
        rows.append({"n_blocks": nb, "trace_s": trace_s, "plan_s": plan_s, "query": t.as_dict(),
                     "peak_mib": peak_memory_mib(device)})
        print(f"{nb:>6} {engine.n:>6} {fmt_s(trace_s):>9} {fmt_s(plan_s):>9} {fmt_s(t.min):>10} "
              f"{fmt_s(t.median):>10} {t.min / nb / args.scale_n * 1e6:>10.3f} "
              f"{rows[-1]['peak_mib']:>9.0f}", flush=True)
    xs = [r["n_blocks"] for r in rows]
    out = {"rows": rows, "exponent": slope(xs, [r["query"]["min_s"] for r in rows]),
           "trace_exponent": slope(xs, [r["trace_s"] for r in rows]),
           "plan_exponent": slope(xs, [r["plan_s"] for r in rows])}
    print(f"exponents (log-log): query {out['exponent']:.2f} (goal ~1), trace "
          f"{out['trace_exponent']:.2f}, plan {out['plan_exponent']:.2f}")
    return out


# ---------------------------------------------------------------------- 5. decode scaling
def mean_field_decode(oracle, blocks, batch: int, seed: int, window: bool, calls=None):
    """Block by block: the block's conditionals, one independent draw per position, commit."""
    gen = torch.Generator(device=oracle.device).manual_seed(seed)
    tokens = torch.full((batch, oracle.n_tokens), oracle.mask_id, device=oracle.device)
    for block in blocks[:calls]:
        win = torch.zeros(tokens.shape, dtype=torch.bool, device=oracle.device)
        win[:, block] = True
        logp = oracle(tokens, window=win if window else None)[:, block]
        draws = torch.multinomial(logp.exp().reshape(-1, oracle.vocab), 1, generator=gen)
        tokens[:, block] = draws.reshape(batch, len(block))
    return tokens


def engine_side_decode(engine, blocks, batch: int, seed: int):
    """:func:`mean_field_decode` on the engine's incremental state alone (no denoiser protocol
    around it: no token check, no point-mass overlay), to separate the engine's cost."""
    gen = torch.Generator(device=engine.device).manual_seed(seed)
    state = engine.incremental()
    tokens = torch.zeros(batch, engine.n, dtype=torch.long, device=engine.device)
    visible = torch.zeros(batch, engine.n, dtype=torch.bool, device=engine.device)
    for block in blocks:
        win = torch.zeros_like(visible)
        win[:, block] = True
        logp = state.update(tokens, visible, win)[:, block]
        draws = torch.multinomial(logp.exp().reshape(-1, engine.vocab), 1, generator=gen)
        tokens[:, block] = draws.reshape(batch, len(block))
        visible = visible | win
    return tokens


def bench_decode(args, device) -> dict:
    sizes = [nb for nb in (8, 64, 512) if nb <= args.max_blocks]
    print(f"\n== 5. mean-field block decode, batch {args.decode_n}, n_blocks in {sizes} ==")
    rows = []
    for nb in sizes:
        structure = load_model("block_hmm", n_blocks=nb)
        blocks = structure.blocks
        structure.engine().message_tree()  # planning is timed in 4, not here

        def windowed(s=structure, b=blocks):
            return mean_field_decode(Oracle(s), b, args.decode_n, args.seed, window=True)

        win = repeat(windowed, max(1, args.repeats // 2), device, slow=10.0)
        # the same decode through the decoder driver (the mean_field_blocks preset), which passes
        # each step's candidates to the oracle as its window
        preset = repeat(lambda s=structure: mean_field_blocks().run(
            Oracle(s), args.decode_n, seed=args.seed), max(1, args.repeats // 2), device, slow=10.0)
        bare = repeat(lambda s=structure, b=blocks: engine_side_decode(
            s.engine(), b, args.decode_n, args.seed), max(1, args.repeats // 2), device, slow=10.0)
        full_calls = nb if nb <= args.full_decode_max else 3
        whole = repeat(lambda s=structure, b=blocks, c=full_calls: mean_field_decode(
            Oracle(s), b, args.decode_n, args.seed, window=False, calls=c),
            max(1, args.repeats // 2), device, slow=10.0)
        whole_s = whole.min * nb / full_calls
        same = None
        if full_calls == nb:
            same = torch.equal(windowed(), mean_field_decode(Oracle(structure), blocks,
                                                             args.decode_n, args.seed, False))
        rows.append({"n_blocks": nb, "window": win.as_dict(), "engine_side": bare.as_dict(),
                     "preset": preset.as_dict(),
                     "whole_s": whole_s,
                     "whole_extrapolated": full_calls < nb, "same_tokens": same})
        print(f"{nb:>4} blocks: with window {fmt_s(win.min)} ({fmt_s(win.min / nb)} per call; "
              f"engine side {fmt_s(bare.min / nb)}); "
              f"without {fmt_s(whole_s)}{' (extrapolated from 3 calls)' if full_calls < nb else ''}"
              f" ({fmt_s(whole_s / nb)} per call); same tokens: {same}; "
              f"mean_field_blocks preset {fmt_s(preset.min)}", flush=True)
    xs = [r["n_blocks"] for r in rows]
    exp_w = slope(xs, [r["window"]["min_s"] for r in rows])
    exp_f = slope(xs, [r["whole_s"] for r in rows])
    exp_e = slope(xs, [r["engine_side"]["min_s"] for r in rows])
    exp_p = slope(xs, [r["preset"]["min_s"] for r in rows])
    last = rows[-1]["window"]["min_s"]
    driver = rows[-1]["preset"]["min_s"]
    print(f"decode exponent: with window {exp_w:.2f}, engine side alone {exp_e:.2f}, "
          f"without window {exp_f:.2f}; {xs[-1]} blocks in {fmt_s(last)} with window")
    print(f"decode through the decoder driver (mean_field_blocks): exponent {exp_p:.2f} (goal <= "
          f"{GOALS['decode_exponent']}: {verdict(exp_p, GOALS['decode_exponent'], at_most=True)})"
          f"; {xs[-1]} blocks in {fmt_s(driver)}"
          + (f" (goal < {GOALS['decode_512_s']:.0f} s: "
             f"{verdict(driver, GOALS['decode_512_s'], True)})" if xs[-1] == 512 else ""))
    return {"rows": rows, "exponent_window": exp_w, "exponent_whole": exp_f,
            "exponent_engine_side": exp_e, "exponent_preset": exp_p,
            "agree": all(r["same_tokens"] in (None, True) for r in rows)}


# ---------------------------------------------------------------------- 6. start-up
def bench_startup(args) -> dict:
    print("\n== 6. command-line start-up (subprocess wall time, min of 3) ==")
    exe = Path(sys.executable).parent / "mdmprob"
    if not exe.exists():
        print(f"skipped: {exe} not found")
        return {"skipped": str(exe)}
    out = {}
    for argv in (["--help"], ["models"]):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([str(exe), *argv], capture_output=True, check=False,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
            times.append(time.perf_counter() - start)
        out[" ".join(argv)] = min(times)
        print(f"mdmprob {' '.join(argv):<7}: {fmt_s(min(times))} (goal < "
              f"{GOALS['startup_s']} s: {verdict(min(times), GOALS['startup_s'], True)})")
    return out


# ---------------------------------------------------------------------- 7. GPU
def bench_gpu(args, device) -> dict:
    print("\n== 7. 10^5 sequences on the GPU vs the CPU ==")
    if device.type != "cuda":
        print("not measured: no CUDA device under test (set MDMPROB_DEVICE=cuda)")
        return {"skipped": "no cuda"}
    structure = load_model("block_hmm")
    gpu, cpu = structure.engine(device=device), structure.engine(device="cpu")
    tokens, visible = random_partial(cpu, 100_000, args.seed)
    chunk = 10_000

    def run_cpu():
        for i in range(0, len(tokens), chunk):
            cpu.conditionals(tokens[i:i + chunk], visible[i:i + chunk])

    tg, vg = tokens.to(device), visible.to(device)
    g = repeat(lambda: gpu.conditionals(tg, vg), args.repeats, device)
    c = repeat(run_cpu, 1, torch.device("cpu"))
    print(f"GPU {g}; CPU (chunks of {chunk}) {c}; speed-up {c.min / g.min:.1f}x (goal >= "
          f"{GOALS['gpu_speedup']:.0f}x: {verdict(c.min / g.min, GOALS['gpu_speedup'])})")
    return {"gpu": g.as_dict(), "cpu": c.as_dict(), "speedup": c.min / g.min}


# ---------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    for key, help_ in (("m", "sequences run through Pyro / pgmpy, one call each"),
                       ("repeats", "timed calls after the warm-up"),
                       ("max_blocks", "largest n_blocks of the scaling rows"),
                       ("scale_n", "sequences per call in the scaling rows"),
                       ("decode_n", "sequences decoded at once"),
                       ("full_decode_max", "largest n_blocks decoded whole without a window"),
                       ("pgmpy_positions", "pgmpy queries in all")):
        parser.add_argument("--" + key.replace("_", "-"), type=int,
                            help=f"{help_} (default {FULL[key]}; quick {QUICK[key]})")
    parser.add_argument("--seed", type=int, default=0, help="torch.Generator seed (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this path")
    args = parse_with_preset(parser, argv, QUICK, FULL)
    for key in FULL:
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    engine = load_model("block_hmm").engine()  # device and dtype from MDMPROB_DEVICE / _DTYPE
    device = engine.device
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "pyro": pyro.__version__, "device": str(device), "dtype": str(engine.dtype),
           "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "loadavg_start": loadavg(), "platform": platform.platform(), "quick": args.quick,
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    print("== mdmprob engine benchmark" + (" (--quick)" if args.quick else "") + " ==")
    print(f"torch {env['torch']}, pyro {env['pyro']}, device {device}, dtype {engine.dtype}, "
          f"{env['threads']} torch thread(s); {load_line()}")
    results = {"env": env}
    results["pyro"] = bench_pyro(args, device)
    results["pgmpy"] = bench_pgmpy(args, device)
    results["handwritten"] = bench_handwritten(args, device)
    results["scaling"] = bench_scaling(args, device)
    results["decode"] = bench_decode(args, device)
    results["startup"] = bench_startup(args)
    results["gpu"] = bench_gpu(args, device)
    env["loadavg_end"] = loadavg()
    results["total_s"] = time.perf_counter() - start

    p, h, sc, dc = results["pyro"], results["handwritten"], results["scaling"], results["decode"]
    print("\n== summary (min over repetitions) ==")
    print(f"vs Pyro               : {p['ratio_64']:.0f}x at batch 64, {p['ratio_1']:.0f}x at "
          "batch 1 (goals 1000x, 300x)")
    if "ratio" in results["pgmpy"]:
        print(f"vs pgmpy VE           : {results['pgmpy']['ratio']:.0f}x")
    print("vs hand-written f-b   : " + ", ".join(
        f"{r['ratio']:.2f}x ({r['n_blocks']} blk, B={r['batch']})" for r in h["rows"])
        + f" (goal >= 0.5x: {verdict(h['min_ratio'], GOALS['handwritten'])})")
    print(f"conditionals exponent : {sc['exponent']:.2f} ({sc['rows'][0]['n_blocks']}.."
          f"{sc['rows'][-1]['n_blocks']} blocks; trace {sc['trace_exponent']:.2f}, plan "
          f"{sc['plan_exponent']:.2f})")
    print(f"decode exponent       : {dc['exponent_preset']:.2f} through the decoder driver, "
          f"{dc['rows'][-1]['n_blocks']} blocks in {fmt_s(dc['rows'][-1]['preset']['min_s'])} "
          f"(goals <= {GOALS['decode_exponent']}, < {GOALS['decode_512_s']:.0f} s at 512); "
          f"oracle with window {dc['exponent_window']:.2f} (engine side "
          f"{dc['exponent_engine_side']:.2f}), {dc['exponent_whole']:.2f} without")
    for k, v in results["startup"].items():
        if k != "skipped":
            print(f"start-up mdmprob {k:<5}: {fmt_s(v)}")
    print(f"total {results['total_s']:.1f} s; {load_line()} at the end")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
        print(f"results written to {args.json}")
    ok = p["agree"] and h["agree"] and dc["agree"] and results["pgmpy"].get("agree", True)
    if not ok:
        print("FAIL: a result disagrees with its reference beyond tolerance", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
