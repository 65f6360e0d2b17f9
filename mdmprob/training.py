"""Train a :class:`~mdmprob.denoisers.neural.Neural` denoiser on exact samples of a structure.

The objective is the standard masked-diffusion one: each step draws ``batch_size`` exact sequences
``x ~ p`` (``structure.engine().sample`` on an all-masked batch), a masking ratio ``t ~ U(0, 1]``
per sequence, masks each supervised position (``NeuralConfig.train_positions``, default all)
independently with probability ``t`` (and one uniformly chosen supervised position when none was
masked), and minimises the cross-entropy of the network's prediction at the masked positions —
averaged over them (``loss_weighting="none"``) or weighted by ``1/t`` and averaged over the
supervised tokens (``"1/t"``, the ELBO) — with AdamW at a constant rate (optionally decayed
linearly to 0 over the last ``NeuralConfig.decay_steps``) or a cosine-annealed one
(``NeuralConfig.lr_schedule``; :func:`learning_rate`). Positions outside ``train_positions`` are
never masked: a prompt the model always sees.

Checkpoints (``checkpoint.pt`` in ``out_dir``) hold the config, the weights, the optimizer and
every random state, the step and the loss curve; they are written to a temporary file and renamed
into place, every ``checkpoint_every`` steps and at the end. ``resume=True`` continues from the
folder's checkpoint (a longer ``steps`` when the learning rates of the steps done agree), and a run
continued to the end ends with exactly the weights of an uninterrupted run with the same seed.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mdmprob.checks import check_int
from mdmprob.denoisers.neural import Neural, NeuralConfig, build_network
from mdmprob.errors import MdmprobError

CHECKPOINT = "checkpoint.pt"
FORMAT = "mdmprob-neural-v1"

Sampler = Callable[[int, torch.Generator], torch.Tensor]


def train(structure_or_sampler, config: NeuralConfig | None = None, out_dir=None,
          progress: Callable[[int, int], Any] | None = None, resume: bool = True, *,
          checkpoint_every: int = 500, device=None, dtype=None) -> tuple[Neural, list[dict]]:
    """Train a :class:`Neural` denoiser; returns it and the loss curve ``[{"step", "loss"}]``.

    Args:
        structure_or_sampler: a :class:`~mdmprob.structure.Structure` (exact samples from its
            engine), or a callable ``(batch, generator) -> LongTensor[batch, n]`` of samples.
        config: the network and training settings (default: ``NeuralConfig(vocab, n_tokens)``
            of the structure; required with a sampler).
        out_dir: where ``checkpoint.pt`` goes (None: no checkpoints).
        progress: called as ``progress(done_steps, total_steps)`` after every step.
        resume: continue from ``out_dir/checkpoint.pt`` if there is one (its config must equal
            ``config`` except for ``steps``); False starts afresh and overwrites it.
        checkpoint_every: steps between checkpoints (one is always written at the end).
        device: where to train (default: the structure engine's default device).
        dtype: the dtype of the returned denoiser's outputs (default float64).
    """
    structure, sampler, device = _source(structure_or_sampler, device)
    if config is None:
        if structure is None:
            raise MdmprobError("training from a sampler needs a NeuralConfig(vocab, n_tokens)")
        config = NeuralConfig(vocab=structure.vocab, n_tokens=structure.n_tokens)
    if not isinstance(config, NeuralConfig):
        raise MdmprobError(f"config must be a NeuralConfig, got {type(config).__name__}")
    if structure is not None:
        _check_matches(config, structure, "the config")
    check_int("checkpoint_every", checkpoint_every, 1)

    net = build_network(config, device)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    path = Path(out_dir) / CHECKPOINT if out_dir is not None else None
    step, history = 0, []
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(config.seed + 1)  # dropout draws from the global generator
        if path is not None and resume and path.exists():
            ckpt = _read(path, device)
            problem = _resume_problem(path, ckpt, config)
            if problem is not None:
                raise MdmprobError(problem)
            if ckpt["step"] > config.steps:
                raise MdmprobError(f"{path} is already at step {ckpt['step']} > steps="
                                   f"{config.steps}; ask for at least {ckpt['step']} steps")
            if not ckpt["optimizer"]:
                raise MdmprobError(f"{path} holds weights only (an exported checkpoint, no "
                                   "optimizer state) and cannot be resumed; load it with "
                                   "load_neural or train in another folder")
            _load_state(net, ckpt["model"], path)
            opt.load_state_dict(ckpt["optimizer"])
            gen.set_state(ckpt["rng"]["data"].cpu())
            torch.set_rng_state(ckpt["rng"]["torch"].cpu())
            if cuda and ckpt["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu(), device)
            step, history = int(ckpt["step"]), list(ckpt["history"])
        if progress is not None:
            progress(step, config.steps)
        net.train()
        pos = _positions(config, device)
        while step < config.steps:
            for group in opt.param_groups:
                group["lr"] = learning_rate(config, step)
            loss = _step(net, opt, sampler, gen, config, device, pos)
            step += 1
            history.append({"step": step, "loss": loss})
            if path is not None and (step % checkpoint_every == 0 or step == config.steps):
                _save(path, net, opt, gen, config, step, history, cuda)
            if progress is not None:
                progress(step, config.steps)
        if path is not None and not path.exists():  # steps == 0
            _save(path, net, opt, gen, config, step, history, cuda)
    net.eval()
    return Neural(config, net, device=device, dtype=dtype, structure=structure), history


def _source(obj, device) -> tuple[Any, Sampler, torch.device]:
    from mdmprob.structure import Structure

    if isinstance(obj, Structure):
        engine = obj.engine(device=device)
        n = obj.n_tokens

        def sampler(batch: int, generator: torch.Generator) -> torch.Tensor:
            empty = torch.zeros(batch, n, dtype=torch.long, device=engine.device)
            hidden = torch.zeros(batch, n, dtype=torch.bool, device=engine.device)
            return engine.sample(empty, hidden, generator=generator)

        return obj, sampler, engine.device
    if callable(obj):
        from mdmprob.config import default_device

        return None, obj, torch.device(device) if device is not None else default_device()
    raise MdmprobError(f"train needs a Structure or a sampler (batch, generator) -> tokens, got "
                       f"{type(obj).__name__}")


def _positions(config: NeuralConfig, device: torch.device) -> torch.Tensor:
    """The positions training masks and scores: ``config.train_positions``, or all."""
    if config.train_positions is None:
        return torch.arange(config.n_tokens, device=device)
    return torch.tensor(config.train_positions, device=device)


def _step(net, opt, sampler: Sampler, gen: torch.Generator, config: NeuralConfig,
          device: torch.device, pos: torch.Tensor) -> float:
    """One optimizer step on a fresh batch, masking among the positions ``pos`` only."""
    B, n, V = config.batch_size, config.n_tokens, config.vocab
    x = sampler(B, gen).to(device, torch.long)
    if x.shape != (B, n) or ((x < 0) | (x >= V)).any():
        raise MdmprobError(f"the sampler returned shape {tuple(x.shape)} or values outside "
                           f"0..{V - 1}; it must return LongTensor[{B}, {n}]")
    m_pos = len(pos)
    t = 1 - torch.rand(B, 1, generator=gen, device=device)  # U(0, 1]
    sub = torch.rand(B, m_pos, generator=gen, device=device) < t
    forced = torch.randint(m_pos, (B,), generator=gen, device=device)
    none = ~sub.any(-1)
    sub[none, forced[none]] = True
    masked = torch.zeros(B, n, dtype=torch.bool, device=device)
    masked[:, pos] = sub
    logits = net(torch.where(masked, torch.full_like(x, V), x))
    ce = torch.nn.functional.cross_entropy(logits.reshape(B * n, V), x.reshape(B * n),
                                           reduction="none").reshape(B, n)
    m = masked.to(ce.dtype)
    if config.loss_weighting == "1/t":
        loss = (ce * m / t.to(ce.dtype)).sum() / (B * m_pos)
    else:
        loss = (ce * m).sum() / m.sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def train_cached(source, config: NeuralConfig, folder: Callable[[int], str], root: Path | None,
                 shipped: Path | None = None):
    """With ``shipped`` (a read-only folder of checkpoints, e.g. exported by
    :func:`export_checkpoint`) holding ``folder(steps)`` at exactly ``config.steps`` with this
    config, load that model and train nothing. Otherwise: Train to ``config.steps`` with
    checkpoints under ``root / folder(steps)``, continuing from the largest cached shorter budget
    ``root / folder(s)`` (``s < steps``) when this one has no checkpoint yet and its first steps
    had the same learning rates (:func:`same_schedule`). ``source`` is a structure or a sampler (as
    :func:`train`); ``root=None`` trains without checkpoints. Returns ``(model, final loss, steps
    trained in this call)``."""
    steps = config.steps
    ready = Path(shipped) / folder(steps) / CHECKPOINT if shipped is not None else None
    if ready is not None and ready.exists() and checkpoint_step(ready) == steps:
        model = load_neural(ready, config=config, device=config_device(source))
        history = _read(ready, torch.device("cpu"))["history"]
        return model, history[-1]["loss"] if history else math.nan, 0
    out = root / folder(steps) if root is not None else None
    start = 0
    if out is not None:
        path = out / CHECKPOINT
        if not path.exists():
            shorter = next((s for s in range(steps - 1, 0, -1)
                            if (root / folder(s) / CHECKPOINT).exists()
                            and _continues(root / folder(s) / CHECKPOINT, config)), None)
            if shorter is not None:  # the largest one that continues
                out.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(root / folder(shorter) / CHECKPOINT, path)
        if path.exists():
            start = checkpoint_step(path)
    model, history = train(source, config, out_dir=out, resume=True)
    loss = history[-1]["loss"] if history else math.nan
    return model, loss, steps - start


def checkpoint_root(checkpoint_dir, workdir: Path | None) -> Path | None:
    """Where an experiment caches trained models: ``checkpoint_dir`` when given, else
    ``workdir / "checkpoints"`` (``None``: no cache)."""
    if checkpoint_dir is not None:
        return Path(checkpoint_dir)
    return workdir / "checkpoints" if workdir is not None else None


def learning_rate(config: NeuralConfig, step: int) -> float:
    """The rate of optimizer step ``step`` (0-based): ``config.lr``, cosine-annealed to 0 over
    ``config.steps`` with ``lr_schedule="cosine"``, and lowered linearly to 0 over the last
    ``decay_steps`` steps with ``"constant"`` (the rate of step i of the decay is
    ``lr * (decay_steps - i) / decay_steps``)."""
    if config.lr_schedule == "cosine":
        return config.lr * (1 + math.cos(math.pi * step / config.steps)) / 2
    start = config.steps - config.decay_steps
    if config.decay_steps and step >= start:
        return config.lr * (config.steps - step) / config.decay_steps
    return config.lr


def same_schedule(a: NeuralConfig, b: NeuralConfig, steps: int) -> bool:
    """Whether ``a`` and ``b`` give the same learning rate to each of the first ``steps`` optimizer
    steps (so a checkpoint of ``a`` at ``steps`` can be continued as ``b``)."""
    return all(learning_rate(a, t) == learning_rate(b, t) for t in range(steps))


def _resume_problem(path: Path, ckpt: dict, config: NeuralConfig) -> str | None:
    """Why the checkpoint ``ckpt`` (read from ``path``) cannot be continued as ``config``: another
    config (beyond its budget) or other learning rates in the steps it has done; None if it can."""
    saved = NeuralConfig.from_dict(ckpt["config"])
    free = {"steps": config.steps, "decay_steps": config.decay_steps}
    if {**saved.as_dict(), **free} != config.as_dict():
        diff = {k: (v, getattr(config, k)) for k, v in saved.as_dict().items()
                if k not in free and v != getattr(config, k)}
        return (f"{path} was trained with a different config (field: (checkpoint, requested)) "
                f"{diff}; use another output folder or resume=False")
    if not same_schedule(saved, config, int(ckpt["step"])):
        return (f"{path} was trained with other learning rates in its first {ckpt['step']} steps "
                f"(steps={saved.steps}, decay_steps={saved.decay_steps}, {saved.lr_schedule}) "
                f"than steps={config.steps}, decay_steps={config.decay_steps} give; use another "
                "output folder or resume=False")
    return None


def _continues(path: Path, config: NeuralConfig) -> bool:
    ckpt = _read(path, torch.device("cpu"))
    return bool(ckpt["optimizer"]) and _resume_problem(path, ckpt, config) is None


def config_device(source) -> torch.device:
    """The device :func:`train` would use for ``source`` (a structure or a sampler)."""
    return _source(source, None)[2]


def export_checkpoint(src, dst, keep_history: int = 200) -> Path:
    """Write the checkpoint ``src`` (a file or a folder holding ``checkpoint.pt``) to ``dst`` (a
    folder) without its optimizer and random states, and with at most ``keep_history`` entries of
    its loss curve (evenly spaced, the last one kept): the weights to ship, about a third of the
    size; :func:`load_neural` reads it, :func:`train` refuses to resume it. Written atomically;
    returns the new file."""
    src = Path(src)
    src = src / CHECKPOINT if src.is_dir() else src
    check_int("keep_history", keep_history, 1)
    ckpt = _read(src, torch.device("cpu"))
    history = ckpt["history"]
    stride = max(1, math.ceil(len(history) / keep_history))
    kept = history[::-1][::stride][::-1]
    slim = {**ckpt, "optimizer": {}, "rng": {}, "history": kept}
    path = Path(dst) / CHECKPOINT
    _write(path, slim)
    return path


def checkpoint_step(path) -> int:
    """The optimizer steps a checkpoint holds (its ``step``), read on the CPU."""
    return int(_read(Path(path), torch.device("cpu"))["step"])


def _save(path: Path, net, opt, gen, config, step, history, cuda) -> None:
    rng = {"data": gen.get_state(), "torch": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state(cuda[0]) if cuda else None}
    ckpt = {"format": FORMAT, "config": config.as_dict(), "model": net.state_dict(),
            "optimizer": opt.state_dict(), "rng": rng, "step": step, "history": history}
    _write(path, ckpt)


def _write(path: Path, ckpt: dict) -> None:
    """Save to a temporary file and rename it into place (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def _read(path: Path, device) -> dict:
    path = Path(path)
    if not path.exists():
        raise MdmprobError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated, not a zip, not a pickle ...
        raise MdmprobError(f"checkpoint {path} is corrupted or not a torch checkpoint "
                           f"({type(e).__name__}: {str(e)[:200]}); retrain or restore it") from None
    required = {"format", "config", "model", "optimizer", "rng", "step", "history"}
    if not isinstance(ckpt, dict) or not required <= set(ckpt):
        have = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise MdmprobError(f"checkpoint {path} is not an mdmprob Neural checkpoint (needs keys "
                           f"{sorted(required)}, has {have})")
    if ckpt["format"] != FORMAT:
        raise MdmprobError(f"checkpoint {path} has format {ckpt['format']!r}, expected {FORMAT!r}")
    return ckpt


def _load_state(net, state, path) -> None:
    try:
        net.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as e:
        raise MdmprobError(f"checkpoint {path}: the weights do not fit its config "
                           f"({str(e)[:300]})") from None


def _check_matches(config: NeuralConfig, structure, what: str) -> None:
    bad = [f"{k}={getattr(config, k)} but the structure has {k}={getattr(structure, k)}"
           for k in ("vocab", "n_tokens") if getattr(config, k) != getattr(structure, k)]
    if bad:
        raise MdmprobError(f"{what} does not match structure {structure.name!r}: "
                           f"{'; '.join(bad)}")


def load_neural(path, structure=None, *, device=None, dtype=None,
                config: NeuralConfig | None = None) -> Neural:
    """The :class:`Neural` denoiser saved in ``path`` (a checkpoint file, or a folder holding
    ``checkpoint.pt``). With ``structure``, its vocab and n_tokens must match; with ``config``,
    the checkpoint's config must equal it. Raises MdmprobError naming any mismatch."""
    from mdmprob.config import default_device

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    device = torch.device(device) if device is not None else default_device()
    ckpt = _read(path, device)
    cfg = NeuralConfig.from_dict(ckpt["config"])
    if structure is not None:
        _check_matches(cfg, structure, f"checkpoint {path}")
    if config is not None and config != cfg:
        diff = {k: (v, getattr(config, k)) for k, v in cfg.as_dict().items()
                if v != getattr(config, k)}
        raise MdmprobError(f"checkpoint {path} has a different config (field: (checkpoint, "
                           f"requested)) {diff}")
    net = build_network(cfg, device)
    _load_state(net, ckpt["model"], path)
    net.eval()
    return Neural(cfg, net, device=device, dtype=dtype, structure=structure)
