"""Decoders as Pyro inference programs.

:func:`as_guide` turns a decoder run into a Pyro guide over the structure's token sites: a batch of
``num`` decoded sequences under ``pyro.plate("sequences", num)``, each token site a ``Delta`` whose
``log_density`` is that token's exact share of log q (they sum to the run's log q). Pyro's machinery
then applies:

* ``TraceEnum_ELBO(max_plate_nesting=1)`` on :func:`plated_model` (the structure's own Pyro model,
  latents enumerated by Pyro) gives ELBO = sum_sequences [log p(x) - log q(x)], i.e. -KL(q‖p)
  per sequence on average (:func:`pyro_kl_qp`);
* ``pyro.infer.Importance(collapsed_model(s), as_guide(..., num=1), num_samples=K)`` uses the
  decoder as a proposal with weights p(x) / q(x) (latents summed out exactly by the engine).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate

from mdmprob.checks import check_match
from mdmprob.decoders.protocol import DecoderBase
from mdmprob.denoisers.base import Denoiser
from mdmprob.errors import MdmprobError
from mdmprob.structure import Structure


def as_guide(decoder: DecoderBase, denoiser: Denoiser, structure: Structure, *, num: int = 1,
             seed: int | None = None, oracle: Denoiser | None = None) -> Callable[[], torch.Tensor]:
    """A Pyro guide that decodes ``num`` sequences per call (fresh randomness from torch's global
    RNG when ``seed`` is None, so ``pyro.set_rng_seed`` controls it) and returns the tokens."""
    if not decoder.log_q_is_marginal:
        raise MdmprobError(
            f"{decoder.name}: a guide needs log q(x) of its output, but this decoder's log q is a "
            "trajectory density (random or sample-then-choose choices)")
    check_match(denoiser, structure)

    def guide(*args, **kwargs):
        run_seed = seed if seed is not None else int(torch.randint(0, 2**62, ()).item())
        run = decoder.run(denoiser, num, seed=run_seed, oracle=oracle, blocks=structure.blocks,
                          target=structure)
        values = run.tokens.cpu()
        shares = run.log_q_tokens.cpu().to(torch.float64)
        with pyro.plate("sequences", num, dim=-1):
            for i, name in enumerate(structure.tokens):
                pyro.sample(name, dist.Delta(values[:, i], log_density=shares[:, i]))
        return run.tokens

    return guide


def plated_model(structure: Structure, num: int) -> Callable[[], None]:
    """The structure's Pyro model vectorised over ``num`` sequences (latents enumerated)."""
    model = config_enumerate(structure.model, default="parallel")

    def plated(*args, **kwargs):
        with pyro.plate("sequences", num, dim=-1):
            model()

    return plated


def collapsed_model(structure: Structure) -> Callable[[], None]:
    """A one-sequence model whose log-joint is log p(x) with the latents summed out exactly:
    uniform token sites plus one factor ``log p(x) + n log V``."""
    engine = structure.engine()
    uniform = torch.zeros(structure.vocab, dtype=torch.float64)

    def model(*args, **kwargs):
        values = [pyro.sample(name, dist.Categorical(logits=uniform)) for name in structure.tokens]
        x = torch.stack([v.reshape(()) for v in values]).long()[None]
        log_p = engine.log_prob(x)[0].cpu()
        pyro.factor("log_p_minus_uniform", log_p + structure.n_tokens * math.log(structure.vocab))

    return model


def pyro_kl_qp(decoder: DecoderBase, denoiser: Denoiser, structure: Structure, *, num: int = 256,
               seed: int = 0) -> float:
    """KL(q‖p) estimated by Pyro itself: ``TraceEnum_ELBO(...).loss / num + log Z`` on the decoder's
    guide (log Z = 0 for a normalised model; models written with ``pyro.factor`` are not)."""
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    guide = as_guide(decoder, denoiser, structure, num=num, seed=seed)
    with pyro.validation_enabled(False):
        loss = elbo.loss(plated_model(structure, num), guide)
    return loss / num + structure.engine().log_normalizer


__all__ = ["as_guide", "collapsed_model", "plated_model", "pyro_kl_qp"]
