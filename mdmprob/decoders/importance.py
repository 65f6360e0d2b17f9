"""Importance weighting / resampling over whole sequences (sampling-importance-resampling).

Each output sequence is chosen among ``particles`` proposals from another decoder, with
probability proportional to the exact weight p(x) / q(x) (p: the target structure, latents summed
out by the engine). The run reports the Kish effective sample size per sequence. The output law
tends to p as the number of particles grows; its density is not tractable, so ``log_q`` is the
proposal's log q of the chosen particle (``log_q_is_marginal`` is False).
"""

from __future__ import annotations

import math

import torch

from mdmprob.decoders.protocol import DecoderBase, DecodeResult, check_num, make_generator
from mdmprob.errors import MdmprobError
from mdmprob.sampling import gumbel_argmax


class ImportanceResampling(DecoderBase):
    """SIR with ``particles`` proposals from ``proposal`` per output sequence."""

    def __init__(self, proposal: DecoderBase, particles: int = 8):
        if isinstance(particles, bool) or not isinstance(particles, int) or particles < 1:
            raise MdmprobError(f"particles={particles!r} must be an integer >= 1")
        if not proposal.log_q_is_marginal:
            raise MdmprobError(f"importance weights need the proposal's log q(x); {proposal.name} "
                               "only has a trajectory density")
        self.name = f"importance({proposal.name}, particles={particles})"
        self.proposal, self.particles = proposal, particles

    @property
    def log_q_is_marginal(self) -> bool:
        return False

    def run(self, denoiser, num=1, *, seed=0, generator=None, initial=None, blocks=None,
            oracle=None, target=None) -> DecodeResult:
        target = target if target is not None else getattr(denoiser, "structure", None)
        if target is None:
            raise MdmprobError("importance weights need the exact target: pass target=structure")
        check_num(num)
        K = self.particles
        generator = make_generator(denoiser, seed, generator)
        if initial is not None:
            initial = torch.as_tensor(initial, device=denoiser.device)
            initial = initial[None] if initial.dim() == 1 else initial
            initial = initial.repeat_interleave(K, 0) if initial.shape[0] == num else initial
        inner = self.proposal.run(denoiser, num * K, generator=generator, initial=initial,
                                  oracle=oracle, blocks=blocks, target=target)
        engine = target.engine(device=denoiser.device, dtype=denoiser.dtype)
        # the weight p(x) / q(x | prompt) targets p(x | prompt): p(prompt) is a common factor
        log_w = (engine.log_prob(inner.tokens) - inner.log_q).reshape(num, K)
        log_w = torch.where(torch.isnan(log_w), torch.full_like(log_w, -math.inf), log_w)
        norm = torch.logsumexp(log_w, -1, keepdim=True)
        ess = torch.where(norm[:, 0] > -math.inf, 1.0 / (2 * (log_w - norm)).exp().sum(-1),
                          torch.zeros_like(norm[:, 0]))
        pick = gumbel_argmax(log_w, generator)
        rows = torch.arange(num, device=log_w.device) * K + pick
        info = {"ess": ess, "particles": torch.full_like(ess, K),
                "log_mean_weight": (norm[:, 0] - math.log(K))}
        committed = [c[rows] for c in inner.committed]
        return DecodeResult(inner.tokens[rows], inner.log_q[rows], inner.nfe.reshape(num, K).sum(-1),
                            committed, False, info, inner.log_q_tokens[rows])

    def log_prob(self, denoiser, tokens, *, committed=None, initial=None, blocks=None,
                 oracle=None, target=None):
        """The proposal's log q of ``tokens`` (what a run reports as ``log_q``)."""
        return self.proposal.log_prob(denoiser, tokens, initial=initial, blocks=blocks,
                                      oracle=oracle, target=target)

    def distribution(self, denoiser, *, initial=None, blocks=None, oracle=None, target=None,
                     max_states: int = 2**16):
        raise MdmprobError(
            f"{self.name}: exact mode would enumerate (V^n)^{self.particles} particle sets; "
            "use Monte Carlo mode (evaluate(..., mode='mc')) for importance resampling")
