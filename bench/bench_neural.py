"""Benchmark of the small neural MDM: training and decoding throughput.

A :class:`~mdmprob.denoisers.neural.Neural` transformer is trained with
:func:`mdmprob.training.train` on exact samples of a zoo structure (default ``block_hmm``: 64
tokens, V = 2; ``--model markov_chain`` for the 8-token chain with V = 3), then decodes with

* ``sequential("entropy")``  one token per step, lowest-entropy masked position first (n calls);
* ``mean_field_blocks()``    each decoding block sampled at once from its marginals (one call
                             per block).

Reported:

* training throughput, tokens/s = steps x batch x n / wall time of ``train`` (exact sampling of
  the training data, forward, backward and AdamW step included; after a 2-step warm-up run);
* decoding throughput, sequences/s = N / median wall time of ``decoder.run(neural, N)`` over
  ``--repeats`` runs after one warm-up run, in the denoiser's dtype (``MDMPROB_DTYPE``, float64
  by default: ``Neural.predict`` runs a float64 copy of the network);
* the trained model's exact error ``KL(p || p_theta)`` (``model_error``, 2000 contexts) so a
  throughput figure can be read next to the quality it bought.

Torch uses ``--threads`` intra-op threads (default 1, as the test suite). Device from
``MDMPROB_DEVICE`` (CUDA synchronised around every timed region). Wall-clock timings: other load
on the machine skews them (the load average is printed).

    .venv/bin/python bench/bench_neural.py --quick          # a few seconds
    .venv/bin/python bench/bench_neural.py                  # block_hmm, 300 steps, N = 256
    MDMPROB_DEVICE=cuda .venv/bin/python bench/bench_neural.py --json out/neural.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
from pathlib import Path

import torch

import mdmprob
from mdmprob.config import default_device
from mdmprob.decoders import mean_field_blocks, sequential
from mdmprob.denoisers import Oracle, model_error
from mdmprob.denoisers.neural import NeuralConfig
from mdmprob.training import train

sys.path.insert(0, str(Path(__file__).parent))
from _common import loadavg, timed  # noqa: E402

FULL = {"model": "block_hmm", "params": {}, "d_model": 64, "n_layers": 2, "n_heads": 4,
        "steps": 300, "batch": 256, "decode": 256, "repeats": 3, "error_num": 2000}
QUICK = {"model": "markov_chain", "params": {}, "d_model": 32, "n_layers": 2, "n_heads": 4,
         "steps": 20, "batch": 64, "decode": 32, "repeats": 1, "error_num": 500}



def bench(settings: dict, device: torch.device) -> dict:
    structure = mdmprob.load_model(settings["model"], **settings["params"])
    n, vocab = structure.n_tokens, structure.vocab
    config = NeuralConfig(vocab=vocab, n_tokens=n, d_model=settings["d_model"],
                          n_layers=settings["n_layers"], n_heads=settings["n_heads"],
                          steps=settings["steps"], batch_size=settings["batch"], seed=0)
    # warm-up (allocator, kernels), then the timed run
    train(structure, NeuralConfig(**{**config.as_dict(), "steps": 2}), device=device)
    seconds, _, (neural, history) = timed(lambda: train(structure, config, device=device), device)
    tokens = config.steps * config.batch_size * n
    out = {"structure": structure.name, "n_tokens": n, "vocab": vocab,
           "blocks": len(structure.blocks), "config": config.as_dict(),
           "params": sum(p.numel() for p in neural.net.parameters()),
           "train": {"seconds": seconds, "steps": config.steps, "tokens": tokens,
                     "tokens_per_s": tokens / seconds, "steps_per_s": config.steps / seconds,
                     "loss_first": history[0]["loss"] if history else math.nan,
                     "loss_last": history[-1]["loss"] if history else math.nan},
           "decode": {}}
    oracle = Oracle(structure, device=device)
    err = model_error(neural, oracle, num=settings["error_num"], seed=0)
    out["kl_pq"] = err.kl_pq.value
    out["kl_qp"] = err.kl_qp.value
    num = settings["decode"]
    for name, decoder in (("sequential(entropy)", sequential("entropy")),
                          ("mean_field_blocks", mean_field_blocks())):
        decoder.run(neural, num, seed=0)  # warm-up
        times, run = [], None
        for r in range(settings["repeats"]):
            t, _, run = timed(lambda d=decoder, r=r: d.run(neural, num, seed=r), device)
            times.append(t)
        median = statistics.median(times)
        out["decode"][name] = {"num": num, "seconds": median, "seq_per_s": num / median,
                               "nfe": float(run.nfe.double().mean()),
                               "calls_per_s": float(run.nfe.double().mean()) / median,
                               "times": times}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a few seconds)")
    ap.add_argument("--model", choices=("block_hmm", "markov_chain"), default=None)
    ap.add_argument("--steps", type=int, default=None, help="training steps")
    ap.add_argument("--batch", type=int, default=None, help="training batch size")
    ap.add_argument("--decode", type=int, default=None, help="sequences per decoder run")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    for key in ("model", "steps", "batch", "decode", "repeats"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    torch.set_num_threads(args.threads)
    device = default_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        print("MDMPROB_DEVICE=cuda but CUDA is not available", file=sys.stderr)
        return 2
    result = bench(settings, device)
    result["env"] = {"device": str(device), "gpu": torch.cuda.get_device_name(device)
                     if device.type == "cuda" else None, "threads": torch.get_num_threads(),
                     "torch": torch.__version__, "python": platform.python_version(),
                     "cpu": platform.processor() or platform.machine(), "loadavg": loadavg(),
                     "dtype": str(torch.get_default_dtype()), "quick": args.quick}
    r, tr = result, result["train"]
    print(f"neural MDM on {r['structure']} (n={r['n_tokens']}, V={r['vocab']}, "
          f"{r['blocks']} blocks), d_model={r['config']['d_model']}, "
          f"{r['config']['n_layers']} layers, {r['params']} parameters; device {device}, "
          f"{torch.get_num_threads()} thread(s), load {result['env']['loadavg'][0]:.2f}")
    print(f"  train   {tr['steps']} steps x batch {r['config']['batch_size']}: "
          f"{tr['seconds']:.3f} s, {tr['tokens_per_s']:,.0f} tokens/s, "
          f"{tr['steps_per_s']:.1f} steps/s; loss {tr['loss_first']:.4f} -> {tr['loss_last']:.4f}")
    print(f"  error   KL(p || p_theta) = {r['kl_pq']:.4f} nats, "
          f"KL(p_theta || p) = {r['kl_qp']:.4f} nats (model_error)")
    for name, d in r["decode"].items():
        print(f"  decode  {name:<20} N={d['num']}: {d['seconds'] * 1e3:.1f} ms, "
              f"{d['seq_per_s']:,.1f} seq/s, NFE {d['nfe']:.0f}, {d['calls_per_s']:,.1f} calls/s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
