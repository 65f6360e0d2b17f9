"""Importance weighting / resampling over whole sequences (sampling-importance-resampling).

Each output sequence is chosen among ``particles`` proposals from another decoder, with
probability proportional to the exact weight p(x) / q(x) (p: the target structure, latents summed
out by the engine). The run reports the Kish effective sample size per sequence. The output law
tends to p as the number of particles grows; its density is not tractable, so ``log_q`` is the
proposal's log q of the chosen particle (``log_q_is_marginal`` is False). With a prompt
(``initial=``) every particle completes it and the weights p(x) / q(x | prompt) target
p(x | prompt).
"""

from __future__ import annotations

import math

import torch

from mdmprob.checks import check_int
from mdmprob.decoders.protocol import (
    DecoderBase,
    DecodeResult,
    check_num,
    initial_tokens,
    make_generator,
)
from mdmprob.errors import EnumerationError, MdmprobError
from mdmprob.sampling import gumbel_argmax


class ImportanceResampling(DecoderBase):
    """SIR with ``particles`` proposals from ``proposal`` per output sequence."""

    def __init__(self, proposal: DecoderBase, particles: int = 8):
        check_int("particles", particles, 1)
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
        check_num(num, denoiser)
        K = self.particles
        generator = make_generator(denoiser, seed, generator)
        if initial is not None:  # checked against num, then one copy per particle
            initial = initial_tokens(denoiser, initial, num).repeat_interleave(K, 0)
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
        diagnostics = {"ess": ess, "particles": torch.full_like(ess, K),
                "log_mean_weight": (norm[:, 0] - math.log(K))}
        committed = [c[rows] for c in inner.committed]
        return DecodeResult(inner.tokens[rows], inner.log_q[rows], inner.nfe.reshape(num, K).sum(-1),
                            committed, False, diagnostics, inner.log_q_tokens[rows])

    log_q_is_joint = False  # a run's log q is the proposal's, not a joint with the particles

    def log_weights(self, denoiser, tokens, *, draws: int, generator, committed=None,
                    diagnostics=None, initial=None, blocks=None, oracle=None, target=None):
        """Importance weights of the SIR trajectory tau = (the other particles, the index of x)
        (:class:`~mdmprob.bounds.LogWeights`). Joint law: q(x, tau) = q0(x) prod_k q0(y_k)
        w(x) / (w(x) + sum_k w(y_k)), w = p / q0; proposal r(tau | x): the index uniform, the
        other particles from q0; so q(x, tau) / r(tau | x) = q0(x) w(x) / mean(w over the
        particles). ``draws`` particle sets per row; the run's own set from ``diagnostics``'s
        ``log_mean_weight``."""
        from mdmprob.bounds import LogWeights, check_draws

        check_draws(draws)
        if initial is not None:
            raise MdmprobError(f"{self.name}: the KL bounds of importance resampling are for "
                               "unprompted decoding (initial=None)")
        target = target if target is not None else getattr(denoiser, "structure", None)
        if target is None:
            raise MdmprobError("importance weights need the exact target: pass target=structure")
        engine = target.engine(device=denoiser.device, dtype=denoiser.dtype)
        log_q0 = self.proposal.log_prob(denoiser, tokens, blocks=blocks, oracle=oracle,
                                        target=target)
        log_p = engine.log_prob(tokens)
        reach = log_q0 > -math.inf  # SIR outputs only what its proposal reaches
        log_wx = torch.where(reach, log_p - log_q0, torch.full_like(log_p, -math.inf))
        B, K = tokens.shape[0], self.particles
        cols = [log_wx[:, None, None].expand(B, draws, 1)]
        if K > 1:
            others = self.proposal.run(denoiser, B * draws * (K - 1), generator=generator,
                                       oracle=oracle, blocks=blocks, target=target)
            lw = engine.log_prob(others.tokens) - others.log_q
            lw = torch.where(torch.isnan(lw), torch.full_like(lw, -math.inf), lw)
            cols.append(lw.reshape(B, draws, K - 1))
        log_mean = torch.logsumexp(torch.cat(cols, -1), -1) - math.log(K)  # [B, draws]
        ninf = torch.full_like(log_mean, -math.inf)
        proposed = torch.where(reach[:, None] & (log_wx[:, None] > -math.inf),
                               log_p[:, None] - log_mean, ninf)
        own = None
        if diagnostics is not None and "log_mean_weight" in diagnostics:
            mean = torch.cat([t.reshape(-1) for t in diagnostics["log_mean_weight"]]) \
                if isinstance(diagnostics["log_mean_weight"], list) else \
                diagnostics["log_mean_weight"].reshape(-1)
            own = log_p - mean.to(log_p.device, log_p.dtype)
        return LogWeights(proposed, own)

    def log_prob(self, denoiser, tokens, *, committed=None, initial=None, blocks=None,
                 oracle=None, target=None):
        """The proposal's log q of ``tokens`` (what a run reports as ``log_q``)."""
        return self.proposal.log_prob(denoiser, tokens, initial=initial, blocks=blocks,
                                      oracle=oracle, target=target)

    def distribution(self, denoiser, *, initial=None, blocks=None, oracle=None, target=None,
                     max_states: int | None = None):
        raise EnumerationError(
            f"{self.name}: exact mode would enumerate (V^n)^{self.particles} particle sets; "
            "use Monte Carlo mode (evaluate(..., mode='mc')) for importance resampling")
