"""The published decoders as named compositions of primitives."""

from __future__ import annotations

from mdmprob.decoders.core import Decoder
from mdmprob.decoders.primitives import (
    SCORES,
    BernoulliSchedule,
    DrawConfidence,
    EntropyBudget,
    EvenSplit,
    Factor,
    LeftToRight,
    MaxProb,
    NegEntropy,
    PerStep,
    RandomOrder,
    Threshold,
    WholeWindow,
)
from mdmprob.errors import MdmprobError, unknown_name


def mean_field_blocks(temperature: float = 1.0) -> Decoder:
    """The paper's mean-field decoder: each block sampled at once from its marginals (Eq. 5, 23)."""
    return Decoder("mean_field_blocks", LeftToRight(), WholeWindow(), "blocks", temperature)


def sequential(order: str = "l2r", temperature: float = 1.0, window="all") -> Decoder:
    """One token per step in the given order: l2r, r2l, random, entropy (Easy-First), max_prob,
    margin, oracle_entropy, hard_first, confidence."""
    if order not in SCORES:
        raise unknown_name("order", order, SCORES)
    return Decoder(f"sequential({order})", SCORES[order](), PerStep(1), window, temperature)


def llada(steps: int = 8, block_length: int | None = None, remasking: str = "low_confidence",
          temperature: float = 1.0) -> Decoder:
    """LLaDA ``generate``: semi-AR blocks of ``block_length`` (None: the whole sequence), the
    block's masks split evenly over ``steps`` steps per block; ``low_confidence`` commits the
    positions whose *drawn* token is most probable (sample-then-choose), ``random`` random ones."""
    if remasking not in ("low_confidence", "random"):
        raise MdmprobError(f"remasking={remasking!r} must be 'low_confidence' or 'random'")
    score = DrawConfidence() if remasking == "low_confidence" else RandomOrder()
    return Decoder(f"llada({remasking}, steps={steps})", score, EvenSplit(steps),
                   "all" if block_length is None else block_length, temperature)


def fast_dllm_threshold(tau: float = 0.9, block_length: int | None = None,
                        temperature: float = 1.0) -> Decoder:
    """Fast-dLLM threshold rule: commit every position whose max probability is >= tau (and
    always the most confident one)."""
    return Decoder(f"fast_dllm_threshold(tau={tau})", MaxProb(), Threshold(tau),
                   "blocks" if block_length is None else block_length, temperature)


def fast_dllm_factor(f: float = 1.0, block_length: int | None = None,
                     temperature: float = 1.0) -> Decoder:
    """Fast-dLLM factor rule: the largest n with (n + 1)(1 - c_(n)) < f."""
    return Decoder(f"fast_dllm_factor(f={f})", MaxProb(), Factor(f),
                   "blocks" if block_length is None else block_length, temperature)


def eb_sampler(gamma: float = 0.1, proxy: str = "entropy", block_length: int | None = None,
               temperature: float = 1.0) -> Decoder:
    """EB-Sampler: most certain first (by entropy or max_prob), the longest prefix whose
    sum of entropies minus the largest stays within gamma nats."""
    if proxy not in ("entropy", "max_prob"):
        raise MdmprobError(f"proxy={proxy!r} must be 'entropy' or 'max_prob'")
    score = NegEntropy() if proxy == "entropy" else MaxProb()
    return Decoder(f"eb_sampler(gamma={gamma})", score, EntropyBudget(gamma),
                   "all" if block_length is None else block_length, temperature)


def mdlm(steps: int = 4, temperature: float = 1.0) -> Decoder:
    """MDLM ancestral sampler: each masked position commits independently with probability
    1 / (steps left) (linear schedule)."""
    return Decoder(f"mdlm(steps={steps})", RandomOrder(), BernoulliSchedule(steps), "all",
                   temperature)


def verified_blocks() -> Decoder:
    """The paper's verified decoder: each block sampled exactly from p(x_B | x_P) by enumerating
    its V^|B| configurations (zero sampling error)."""
    from mdmprob.decoders.correctors import ExactBlock

    return Decoder("verified_blocks", LeftToRight(), WholeWindow(), "blocks", 1.0, ExactBlock())


def rejection(proposal: str = "mean_field") -> Decoder:
    """Block rejection verification of the mean-field proposal against the exact block
    conditional, with the optimal constant M = sup p/q (exact samples; E[proposals] = M)."""
    from mdmprob.decoders.correctors import Rejection

    if proposal != "mean_field":
        raise MdmprobError(f"proposal={proposal!r}: only 'mean_field' is implemented")
    return Decoder("rejection(mean_field)", LeftToRight(), WholeWindow(), "blocks", 1.0,
                   Rejection())


def speculative() -> Decoder:
    """Token-wise speculative verification: draft the block from its marginals, accept left to
    right with min(1, p/q), resample the first rejection from the residual (exact)."""
    from mdmprob.decoders.correctors import Speculative

    return Decoder("speculative", LeftToRight(), WholeWindow(), "blocks", 1.0, Speculative())


PRESETS = {
    "mean_field_blocks": mean_field_blocks, "verified_blocks": verified_blocks,
    "sequential": sequential, "llada": llada, "fast_dllm_threshold": fast_dllm_threshold,
    "fast_dllm_factor": fast_dllm_factor, "eb_sampler": eb_sampler, "mdlm": mdlm,
    "rejection": rejection, "speculative": speculative,
}


def get_decoder(name: str, **params) -> Decoder:
    """A preset by name, e.g. ``get_decoder("llada", steps=4)``."""
    if name not in PRESETS:
        raise unknown_name("decoder", name, PRESETS)
    return PRESETS[name](**params)


def importance(proposal: Decoder | None = None, particles: int = 8) -> Decoder:
    """Sampling-importance-resampling over ``particles`` sequences from ``proposal`` (default:
    mean_field_blocks), with exact weights p(x) / q(x); reports the effective sample size."""
    from mdmprob.decoders.importance import ImportanceResampling

    return ImportanceResampling(proposal if proposal is not None else mean_field_blocks(),
                                particles)


PRESETS["importance"] = importance


def gibbs_remask(k: int = 2, sweeps: int = 1, kernel: str = "random") -> Decoder:
    """Mean-field blocks, then ``sweeps`` steps of the remasking kernel R_k per block: remask k
    positions (``random``: a uniform k-subset; ``lowest_confidence``: the k least confident by
    leave-one-out probability) and redraw them independently from the denoiser (paper-spec §4-E)."""
    from mdmprob.decoders.remask import gibbs_remask_decoder

    return gibbs_remask_decoder(k=k, sweeps=sweeps, kernel=kernel)


def remdm(steps: int = 4, eta: float = 0.1, schedule: str = "cap") -> Decoder:
    """ReMDM (linear alpha over ``steps`` steps): visible tokens remasked with probability sigma
    (``cap``: min(eta, (1 - alpha_s)/alpha_t); ``rescale``: eta * sigma_max), masked ones unmasked
    with probability (alpha_s - (1 - sigma) alpha_t)/(1 - alpha_t); eta = 0 is ``mdlm(steps)``."""
    from mdmprob.decoders.remask import ReMDM

    return ReMDM(steps=steps, eta=eta, schedule=schedule)


PRESETS.update(gibbs_remask=gibbs_remask, remdm=remdm)
