"""The published decoders as named compositions of primitives."""

from __future__ import annotations

import inspect

from mdmprob.decoders.core import Decoder
from mdmprob.decoders.primitives import (
    SCORES,
    BernoulliSchedule,
    DrawConfidence,
    EntropyBudget,
    EvenSplit,
    FactorRule,
    LeftToRight,
    MaxProb,
    NegEntropy,
    PerStep,
    RandomOrder,
    Threshold,
    WholeWindow,
)
from mdmprob.decoders.protocol import DecoderBase
from mdmprob.errors import MdmprobError, unknown_name

CONFIDENCES = {"draw": "the probability of the drawn value (the published code: sample, then "
                       "rank)", "max_prob": "the largest probability (the paper's text)"}


def mean_field_blocks(temperature: float = 1.0, top_k: int | None = None,
                      top_p: float | None = None) -> Decoder:
    """The paper's mean-field decoder: each block sampled at once from its marginals (Eq. 5, 23)."""
    return Decoder("mean_field_blocks", LeftToRight(), WholeWindow(), "blocks", temperature,
                   top_k=top_k, top_p=top_p)


def sequential(order: str = "l2r", temperature: float = 1.0, window="all",
               ties: str = "random", top_k: int | None = None,
               top_p: float | None = None) -> Decoder:
    """One token per step in a given order (l2r, r2l, random, entropy, max_prob, margin, ...).

    Orders: ``l2r``, ``r2l``, ``random`` (fixed or uniformly random); model-ranked, reading the
    denoiser's p_theta: ``entropy`` (Easy-First on the model's entropy), ``hard_first`` (highest
    model entropy), ``max_prob``, ``margin``, ``confidence`` (sample, then rank); truth-ranked,
    reading the true conditionals (pass ``oracle=`` to ``run``): ``oracle_entropy`` (the paper's
    Easy-First). The paper's Hard-First, ``oracle_hard_first``, is a policy of
    :func:`mdmprob.decoders.orders.a42_rollout`. Equal keys are broken by ``ties``. The table
    "Order names and what ranks them" in the decoders guide lists them.
    """
    if order not in SCORES:
        raise unknown_name("order", order, SCORES)
    return Decoder(f"sequential({order})", SCORES[order](), PerStep(1), window, temperature,
                   top_k=top_k, top_p=top_p, ties=ties)


def llada(steps: int = 8, block_length: int | None = None, remasking: str = "low_confidence",
          temperature: float = 1.0, steps_per: str = "total", nfe: str = "steps",
          ties: str = "random", top_k: int | None = None, top_p: float | None = None) -> Decoder:
    """LLaDA generate: semi-AR blocks, masks split evenly over steps, most confident draws first.

    Each block's masks are split evenly over its share of the steps; ``low_confidence`` samples
    every mask, then keeps the most probable draws, ``random`` keeps random positions.

    ``steps`` is the total over the whole decode, split across the blocks and required to divide
    by their number, as in the reference code (``steps_per="window"``: ``steps`` per block, the
    earlier mdmprob convention). ``nfe="reference"`` counts a model call on every step, also those
    that commit nothing (the reference's cost); ``"steps"`` counts the steps taken. The reference
    decodes greedily (temperature 0) by default and breaks equal confidences by ``torch.topk``'s
    order; ``ties="random"`` is exact in q and does not depend on position numbering.
    """
    if remasking not in ("low_confidence", "random"):
        raise unknown_name("remasking", str(remasking), ("low_confidence", "random"))
    score = DrawConfidence() if remasking == "low_confidence" else RandomOrder()
    total = "" if steps_per == "window" else " total"
    return Decoder(f"llada({remasking}, steps={steps}{total})", score,
                   EvenSplit(steps, per=steps_per), "all" if block_length is None else
                   block_length, temperature, top_k=top_k, top_p=top_p, ties=ties, nfe=nfe)


def fast_dllm_threshold(tau: float = 0.9, block_length: int | None = None,
                        temperature: float = 1.0, confidence: str = "draw",
                        ties: str = "random", top_k: int | None = None,
                        top_p: float | None = None) -> Decoder:
    """Fast-dLLM threshold rule: commit every confidence >= tau, and always the most confident.

    ``confidence="draw"`` (the published code's ``get_transfer_index``): the probability of the
    value drawn at T > 0; ``"max_prob"``: the largest probability (the paper's text). Both agree
    at temperature 0, the reference's default. ``block_length=None`` decodes the structure's
    blocks.
    """
    score = _confidence(confidence)
    return Decoder(f"fast_dllm_threshold(tau={tau}{_tag(confidence)})", score, Threshold(tau),
                   "blocks" if block_length is None else block_length, temperature,
                   top_k=top_k, top_p=top_p, ties=ties)


def fast_dllm_factor(f: float = 1.0, block_length: int | None = None,
                     temperature: float = 1.0, confidence: str = "draw",
                     variant: str = "reference", ties: str = "random",
                     top_k: int | None = None, top_p: float | None = None) -> Decoder:
    """Fast-dLLM factor rule: commit the n most confident with (n + 1)(1 - c_(n)) <= f.

    ``variant="reference"`` (the published code): non-strict test, and all candidates when only
    the last one fails; ``"strict"``: the paper's (n + 1)(1 - c_(n)) < f. ``confidence`` as for
    the threshold rule.

    The reference decodes greedily (temperature 0) by default.
    """
    score = _confidence(confidence)
    tag = _tag(confidence) + ("" if variant == "reference" else f", {variant}")
    return Decoder(f"fast_dllm_factor(f={f}{tag})", score, FactorRule(f, variant=variant),
                   "blocks" if block_length is None else block_length, temperature,
                   top_k=top_k, top_p=top_p, ties=ties)


def eb_sampler(gamma: float = 0.1, proxy: str = "entropy", block_length: int | None = None,
               temperature: float = 1.0, ties: str = "random", top_k: int | None = None,
               top_p: float | None = None) -> Decoder:
    """EB-Sampler: most certain first, while sum of entropies minus the largest <= gamma nats.

    Certainty by ``proxy`` (entropy or max_prob).

    Entropies come from the model's (untempered) distribution; the reference decodes greedily.
    """
    if proxy not in ("entropy", "max_prob"):
        raise unknown_name("proxy", str(proxy), ("entropy", "max_prob"))
    score = NegEntropy() if proxy == "entropy" else MaxProb()
    return Decoder(f"eb_sampler(gamma={gamma})", score, EntropyBudget(gamma),
                   "all" if block_length is None else block_length, temperature,
                   top_k=top_k, top_p=top_p, ties=ties)


def mdlm(steps: int = 4, temperature: float = 1.0, top_k: int | None = None,
         top_p: float | None = None) -> Decoder:
    """MDLM ancestral sampler: each mask commits independently with probability 1/(steps left).

    Linear schedule; values from the model at temperature 1, as in the reference.
    """
    return Decoder(f"mdlm(steps={steps})", RandomOrder(), BernoulliSchedule(steps), "all",
                   temperature, top_k=top_k, top_p=top_p)


def _confidence(confidence: str):
    if confidence not in CONFIDENCES:
        raise unknown_name("confidence", str(confidence), CONFIDENCES)
    return DrawConfidence() if confidence == "draw" else MaxProb()


def _tag(confidence: str) -> str:
    return "" if confidence == "draw" else f", {confidence}"


def verified_blocks() -> Decoder:
    """The paper's verified decoder: each block sampled exactly from p(x_B | x_P) (zero error).

    The block's V^|B| configurations are enumerated.
    """
    from mdmprob.decoders.correctors import ExactBlock

    return Decoder("verified_blocks", LeftToRight(), WholeWindow(), "blocks", 1.0, ExactBlock())


def rejection(proposal: str = "mean_field") -> Decoder:
    """Block rejection sampling of the mean-field proposal, optimal M = sup p/q (exact samples).

    E[proposals per block] = M.
    """
    from mdmprob.decoders.correctors import Rejection

    if proposal != "mean_field":
        raise MdmprobError(f"proposal={proposal!r}: only 'mean_field' is implemented")
    return Decoder("rejection(mean_field)", LeftToRight(), WholeWindow(), "blocks", 1.0,
                   Rejection())


def speculative() -> Decoder:
    """Speculative verification: draft a block from its marginals, check token by token (exact).

    Accept left to right with min(1, p/q); resample the first rejection from the residual.
    """
    from mdmprob.decoders.correctors import Speculative

    return Decoder("speculative", LeftToRight(), WholeWindow(), "blocks", 1.0, Speculative())


PRESETS = {
    "mean_field_blocks": mean_field_blocks, "verified_blocks": verified_blocks,
    "sequential": sequential, "llada": llada, "fast_dllm_threshold": fast_dllm_threshold,
    "fast_dllm_factor": fast_dllm_factor, "eb_sampler": eb_sampler, "mdlm": mdlm,
    "rejection": rejection, "speculative": speculative,
}


def get_decoder(name: str, **params) -> DecoderBase:
    """A preset by name, e.g. ``get_decoder("llada", steps=4)``; an unknown parameter raises an
    :class:`~mdmprob.errors.UnknownNameError` listing the preset's parameters."""
    if name not in PRESETS:
        raise unknown_name("decoder", name, PRESETS)
    fn = PRESETS[name]
    valid = [p for p in inspect.signature(fn).parameters]
    for key in params:
        if key not in valid:
            raise unknown_name(f"{name} parameter", str(key), valid)
    return fn(**params)


def importance(proposal: DecoderBase | None = None, particles: int = 8) -> DecoderBase:
    """Sampling-importance-resampling: one of ``particles`` proposals, by exact weight p/q.

    The proposal defaults to mean_field_blocks; runs report the effective sample size.
    """
    from mdmprob.decoders.resampling import ImportanceResampling

    return ImportanceResampling(proposal if proposal is not None else mean_field_blocks(),
                                particles)


PRESETS["importance"] = importance


def gibbs_remask(k: int = 2, sweeps: int = 1, kernel: str = "random") -> DecoderBase:
    """Mean-field blocks, then ``sweeps`` steps of the remasking kernel R_k per block.

    R_k remasks k positions (``random``: a uniform k-subset; ``lowest_confidence``: the k least
    confident by leave-one-out probability) and redraws them independently (paper-spec §4-E).
    """
    from mdmprob.decoders.remask import gibbs_remask_decoder

    return gibbs_remask_decoder(k=k, sweeps=sweeps, kernel=kernel)


def remdm(steps: int = 4, eta: float = 0.1, schedule: str = "cap", temperature: float = 1.0,
          top_k: int | None = None, top_p: float | None = None,
          nucleus: str = "drop_crossing") -> DecoderBase:
    """ReMDM: MDLM steps that also remask visible tokens with probability sigma (eta = 0: mdlm).

    Linear schedule; masks unmasked with probability (alpha_s - (1 - sigma) alpha_t)/(1 - alpha_t).

    ``schedule``: ``cap`` sigma = min(eta, (1 - alpha_s)/alpha_t), ``rescale`` eta * sigma_max.
    The reference scripts sample with ``top_p=0.9`` and a nucleus that drops the value crossing p
    (``nucleus="drop_crossing"``, the default here when ``top_p`` is set).
    """
    from mdmprob.decoders.remask import ReMDM

    return ReMDM(steps=steps, eta=eta, schedule=schedule, temperature=temperature, top_k=top_k,
                 top_p=top_p, nucleus=nucleus)


PRESETS.update(gibbs_remask=gibbs_remask, remdm=remdm)


# ----------------------------------------------------------------------------- 2025–2026
def dream(steps: int = 8, alg: str = "origin", temperature: float = 1.0,
          top_k: int | None = None, top_p: float | None = None, alg_temp: float = 0.0,
          eps: float = 1e-3, ties: str = "random") -> DecoderBase:
    """Dream diffusion_generate: steps on linspace(1, eps); origin reveals masks w.p. 1 - s/t,
    the others commit floor(|M|(1 - s/t)) by maskgit_plus / topk_margin / entropy keys, drawn
    when alg_temp > 0.

    ``alg``: ``origin`` (each mask independently, MDLM-style), ``maskgit_plus`` (the probability
    of the drawn value; the largest at T = 0), ``topk_margin`` (top-1 minus top-2), ``entropy``
    (lowest entropy first). Keys are read from the law values are drawn from (softmax(logits /
    T) cut to top-p / top-k), as the reference's ``sample_tokens``; ``alg_temp > 0`` draws the
    committed positions without replacement from softmax(key / alg_temp). The whole sequence is
    one window; the last step commits every mask. The reference's default is ``origin`` and
    its README decodes with T = 0.2, top_p = 0.95, ``alg="entropy"``.
    """
    from mdmprob.decoders.primitives import ValueLaw
    from mdmprob.decoders.published import (
        DREAM_ALGS,
        DreamBernoulli,
        DreamSchedule,
        DreamScore,
        RandomizedPositions,
    )

    if alg not in DREAM_ALGS:
        raise unknown_name("Dream alg", str(alg), DREAM_ALGS)
    tag = f"dream({alg}, steps={steps}" + (f", alg_temp={alg_temp})" if alg_temp else ")")
    if alg == "origin":
        if alg_temp:
            raise MdmprobError(f"alg_temp={alg_temp!r} has no effect with alg='origin' (its "
                               "positions are already random); use another alg or alg_temp=0")
        return Decoder(tag, RandomOrder(), DreamBernoulli(steps, eps), "all", temperature,
                       top_k=top_k, top_p=top_p)
    score = DreamScore(alg, ValueLaw(temperature, top_k, top_p))
    return RandomizedPositions(tag, score, DreamSchedule(steps, eps), "all", temperature,
                               top_k=top_k, top_p=top_p, ties=ties, alg_temp=alg_temp)


def dus(block_length: int | None = None, base: int = 2, skip: int = 1,
        temperature: float = 1.0, top_k: int | None = None,
        top_p: float | None = None) -> Decoder:
    """DUS dilated unmasking: in each block, commit the dilated groups of stride B/2, B/4, ...,
    1 (about log2 B model calls per block), positions fixed in advance.

    The levels of a block of B positions (:func:`~mdmprob.decoders.published.dilated_levels`):
    stride ``B // base**skip`` divided by ``base`` down to 1, positions revealed earlier skipped,
    leftovers last, the last level merged into the previous one when smaller. A level whose
    positions are all visible (a prompt) is skipped. ``block_length=None``: one block. The
    reference decodes greedily (T = 0); its optional remasking of low-confidence tokens is not
    included.
    """
    from mdmprob.decoders.published import BestTied, DilatedOrder

    name = f"dus(block_length={block_length}, base={base})"
    return Decoder(name, DilatedOrder(block_length, base, skip), BestTied(),
                   "all" if block_length is None else block_length, temperature,
                   top_k=top_k, top_p=top_p)


def pc_sampler(steps: int = 8, lam: float = 0.25, alpha: float = 10.0, background=None,
               block_length: int | None = None, temperature: float = 1.0,
               steps_per: str = "total", ties: str = "random") -> Decoder:
    """PC-Sampler: LLaDA's even split of masks over steps, ranked by exp(-lam i) * min(alpha,
    p(drawn) * -log p_bg(drawn)) (position prior x calibrated confidence).

    ``background``: token frequencies ``[V]`` of a reference corpus (None: uniform, so the
    calibration is a constant factor); ``lam = 0`` removes the position prior. Sample-then-choose
    at T > 0, as LLaDA's low-confidence rule. Steps are the total over the blocks
    (``steps_per="window"``: per block).
    """
    from mdmprob.decoders.published import PositionCalibrated

    return Decoder(f"pc_sampler(steps={steps}, lam={lam})",
                   PositionCalibrated(lam, alpha, background), EvenSplit(steps, per=steps_per),
                   "all" if block_length is None else block_length, temperature, ties=ties)


def prophet(steps: int = 8, block_length: int | None = None, gap_early: float = 7.5,
            gap_mid: float = 5.0, gap_late: float = 2.5, temperature: float = 0.0,
            steps_per: str = "total", ties: str = "random") -> Decoder:
    """Prophet early commit: LLaDA low-confidence steps, and every remaining mask of the window
    at once when the mean top-2 logit gap exceeds the threshold for the progress.

    Thresholds (nats) ``gap_early`` before a third of the window's steps, ``gap_mid`` before two
    thirds, ``gap_late`` after; the gap is averaged over the window's masked positions. The early
    commit draws its values from the value law (the argmax at the default T = 0, as the
    reference). With semi-AR blocks the early commit fills the current block and each later block
    tests its own gap (the reference stops the whole decode).
    """
    from mdmprob.decoders.published import EarlyCommit

    rule = EarlyCommit(EvenSplit(steps, per=steps_per), (gap_early, gap_mid, gap_late))
    return Decoder(f"prophet(steps={steps})", DrawConfidence(), rule,
                   "all" if block_length is None else block_length, temperature, ties=ties)


def remdm_loop(steps: int = 8, eta: float = 0.02, t_on: float = 0.55, t_off: float = 0.05,
               alpha_on: float = 0.9, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, nucleus: str = "drop_crossing") -> DecoderBase:
    """ReMDM loop schedule: MDLM up to alpha_on at t_on, then remask (prob. eta) and re-unmask at
    equal rates down to t_off, then MDLM to the end.

    Steps on the grid t_j = 1 - j/steps; see :class:`~mdmprob.decoders.published.ReMDMLoop`.
    The reference scripts use t_on = 0.55, t_off = 0.05, alpha_on = 0.9, eta = 0.02 and
    ``top_p=0.9`` with a nucleus that drops the value crossing p.
    """
    from mdmprob.decoders.published import ReMDMLoop

    return ReMDMLoop(steps, eta, t_on, t_off, alpha_on, temperature, top_k, top_p, nucleus)


PRESETS.update(dream=dream, dus=dus, pc_sampler=pc_sampler, prophet=prophet,
               remdm_loop=remdm_loop)


# ----------------------------------------------------------------------------- dependency-aware
def dapd(graph="cmi", threshold: float | None = None, tau: float = 0.0,
         block_length: int | None = None, temperature: float = 1.0, top_k: int | None = None,
         top_p: float | None = None) -> DecoderBase:
    """DAPD: each step commits a greedy maximal independent set of the masked positions'
    dependency graph, most confident first, values drawn independently.

    ``graph``: ``"cmi"`` (exact conditional mutual information > ``threshold`` nats, default
    1e-3, for structures), ``"attention"`` (the denoiser's attention > ``threshold``, default
    0.1) or a callable ``(tokens, candidates) -> [B, n, n]``. A position joins when its largest
    marginal probability is >= ``tau`` (the most confident always). ``block_length=None``: one
    window. See :mod:`mdmprob.decoders.dependency_aware` (arXiv 2603.12996).
    """
    from mdmprob.decoders.composed import ComposedDecoder, ComposedRule, ProductKernel
    from mdmprob.decoders.dependency_aware import IndependentSet, graph_source

    selector = IndependentSet(graph_source(graph, threshold), tau)
    return ComposedDecoder(f"dapd({selector.graph.name}, tau={tau:g})", MaxProb(),
                           ComposedRule(selector), "all" if block_length is None else
                           block_length, temperature, top_k=top_k, top_p=top_p,
                           selector=selector, kernel=ProductKernel())


def dawn(graph="cmi", threshold: float | None = None, tau_high: float = 0.9,
         tau_relaxed: float = 0.7, tau_low: float = 0.5, block_length: int | None = None,
         temperature: float = 1.0, top_k: int | None = None,
         top_p: float | None = None) -> DecoderBase:
    """DAWN: commit the anchors (confidence >= tau_high), their graph dependents at
    tau_relaxed, then conflict-free positions at tau_low with no edge to a chosen one.

    The dependency graph as for :func:`dapd`; confidence is the largest marginal probability;
    at least the most confident position per step; values drawn independently. See
    :mod:`mdmprob.decoders.dependency_aware` (arXiv 2602.06953).
    """
    from mdmprob.decoders.composed import ComposedDecoder, ComposedRule, ProductKernel
    from mdmprob.decoders.dependency_aware import AnchorRelaxed, graph_source

    selector = AnchorRelaxed(graph_source(graph, threshold), tau_high, tau_relaxed, tau_low)
    return ComposedDecoder(f"dawn({selector.graph.name}, {tau_high:g}/{tau_relaxed:g}/"
                           f"{tau_low:g})", MaxProb(), ComposedRule(selector),
                           "all" if block_length is None else block_length, temperature,
                           top_k=top_k, top_p=top_p, selector=selector, kernel=ProductKernel())


def learned_policy(policy=None, init_logit: float = 0.0, block_length: int | None = None,
                   temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None) -> DecoderBase:
    """Learned unmasking policy: a torch module maps each position's confidence, entropy,
    margin and step fraction to its probability of being unmasked; positions drawn as
    independent Bernoulli variables.

    ``policy=None``: a fresh :class:`~mdmprob.decoders.policy.UnmaskPolicy` whose every
    probability starts at sigmoid(init_logit). When no position is drawn the most probable one
    is committed. Train it with :func:`~mdmprob.decoders.policy.train_policy` (reward: exact
    log p(x)). ``block_length=None``: one window. See :mod:`mdmprob.decoders.policy`
    (arXiv 2512.09106).
    """
    from mdmprob.decoders.composed import ComposedDecoder, ComposedRule, ProductKernel
    from mdmprob.decoders.policy import PolicySelector, UnmaskPolicy

    selector = PolicySelector(UnmaskPolicy(init_logit=init_logit) if policy is None else policy)
    return ComposedDecoder(f"learned_policy({selector.name})", MaxProb(),
                           ComposedRule(selector), "all" if block_length is None else
                           block_length, temperature, top_k=top_k, top_p=top_p,
                           selector=selector, kernel=ProductKernel())


def _composed_rule(name: str, k, block_length, confidence: str, temperature, top_k, top_p,
                   kernel) -> DecoderBase:
    """A decoder whose selection is a ranking (k per step, or the whole window) and whose
    values come from ``kernel``."""
    from mdmprob.decoders.composed import ComposedDecoder, RuleSelector

    choices = ("max_prob", "entropy", "margin", "l2r")
    if confidence not in choices:
        raise unknown_name("confidence", str(confidence), choices)
    score = LeftToRight() if k is None else SCORES[confidence]()
    commit = WholeWindow() if k is None else PerStep(k)
    window = ("blocks" if k is None else "all") if block_length is None else block_length
    return ComposedDecoder(name, score, commit, window, temperature, top_k=top_k, top_p=top_p,
                           selector=RuleSelector(name, score, commit), kernel=kernel)


def joint_proposal(k: int | None = None, block_length: int | None = None,
                   confidence: str = "max_prob", temperature: float = 1.0,
                   top_k: int | None = None, top_p: float | None = None) -> DecoderBase:
    """Joint proposal: each step's committed set is drawn from a left-to-right chain of the
    denoiser's conditionals inside the set, not from the product of its marginals.

    ``k=None``: each block at once (the structure's blocks, or ``block_length``): mean-field
    blocks made joint, exact with exact conditionals. Otherwise the ``k`` best positions per step
    by ``confidence`` (max_prob, entropy, margin, l2r). Each conditional after the first costs
    one call. See :mod:`mdmprob.decoders.joint` (CoDD arXiv 2603.00045, CoDiLA arXiv 2603.20216).
    """
    from mdmprob.decoders.joint import PrefixKernel

    name = "joint_proposal(" + ("blocks" if k is None else f"k={k}, {confidence}") + ")"
    return _composed_rule(name, k, block_length, confidence, temperature, top_k, top_p,
                          PrefixKernel("joint"))


def self_speculative(k: int | None = None, block_length: int | None = None,
                     router="always", route_tau: float = 0.9, verify_cost: str = "pass",
                     confidence: str = "max_prob", temperature: float = 1.0,
                     top_k: int | None = None, top_p: float | None = None) -> DecoderBase:
    """Self-speculative decoding: a parallel draft of the step's positions verified left to
    right against the same denoiser's one-token conditionals (accept min(1, p/q), resample the
    first rejection from the residual).

    Selection as :func:`joint_proposal` (``k=None``: each block). ``router``: ``always``,
    ``confidence`` (verify when a selected position's largest probability is below
    ``route_tau``; otherwise the draft is committed as drawn) or a callable (logp, sel) -> bool
    [B]. ``verify_cost``: ``pass`` (one call per verification) or ``token`` (one per verified
    token). Exact output law with an exact denoiser when every step verifies. See
    :mod:`mdmprob.decoders.joint` (S2D2 arXiv 2603.25702).
    """
    from mdmprob.decoders.joint import PrefixKernel

    name = "self_speculative(" + ("blocks" if k is None else f"k={k}, {confidence}") + \
        (f", {router}" if isinstance(router, str) else ", router") + \
        ("" if verify_cost == "pass" else f", verify_cost={verify_cost}") + ")"
    return _composed_rule(name, k, block_length, confidence, temperature, top_k, top_p,
                          PrefixKernel("speculative", router, route_tau, verify_cost))


PRESETS.update(dapd=dapd, dawn=dawn, learned_policy=learned_policy,
               joint_proposal=joint_proposal, self_speculative=self_speculative)

# ----------------------------------------------------------------------------- revoking decoders
def klass(steps: int = 8, conf_threshold: float = 0.9, kl_threshold: float = 0.01,
          history: int = 2, block_length: int | None = None, temperature: float = 0.0,
          ties: str = "random", steps_per: str = "total") -> DecoderBase:
    """KLASS: commit the masks of the block whose confidence > conf_threshold and whose last
    history KL(q^t || q^(t-1)) values are all < kl_threshold; none ready: LLaDA's even split.

    Confidence and KL read the clean model distribution; the history runs across blocks; the
    block's last scheduled step commits every mask left (see
    :class:`~mdmprob.decoders.revoke.KLASS`). The reference's function defaults are 0.9 / 0.01 /
    2 (its GSM8K script: 0.6 / 0.015) and it decodes greedily.
    """
    from mdmprob.decoders.revoke import KLASS

    return KLASS(steps, conf_threshold, kl_threshold, history, block_length, temperature, ties,
                 steps_per)


def remdm_conf(steps: int = 8, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, nucleus: str = "drop_crossing") -> DecoderBase:
    """ReMDM conf: MDLM steps that remask each visible token with probability sigma_max *
    softmax(-commit-time confidence), the least confident first.

    Linear schedule, sigma_max = min(1, (1 - alpha_s)/alpha_t); masks unmask at the MDLM rate
    (see :class:`~mdmprob.decoders.revoke.ReMDMConf`). The reference scripts sample with
    ``top_p=0.9`` and a nucleus that drops the value crossing p.
    """
    from mdmprob.decoders.revoke import ReMDMConf

    return ReMDMConf(steps, temperature, top_k, top_p, nucleus)


def wino(tau_wide: float = 0.6, tau_narrow: float = 0.9, block_length: int | None = None,
         temperature: float = 0.0) -> DecoderBase:
    """WINO: draft every mask of the block with confidence > tau_wide (at least one), verify the
    earlier drafts by their leave-one-out probability and remask those < tau_narrow.

    Verification runs when a step drafts more than one token and remasks fewer than the previous
    step accepted (see :class:`~mdmprob.decoders.revoke.WINO`); one model call per step. The
    reference decodes greedily with tau_wide = 0.6, tau_narrow = 0.9.
    """
    from mdmprob.decoders.revoke import WINO

    return WINO(tau_wide, tau_narrow, block_length, temperature)


def p2(steps: int = 8, eta: float = 1.0, alpha: float = 1.0,
       temperature: float = 0.0) -> DecoderBase:
    """P2 path planning: each step the model scores masked (drawn value) and generated
    (leave-one-out) positions and masks the floor((1 - i/steps) N) lowest, filling the rest.

    Generated tokens' scores are multiplied by eta (> 1: remasked more readily); alpha mixes
    log-probability and negative entropy (see :class:`~mdmprob.decoders.revoke.P2`).
    """
    from mdmprob.decoders.revoke import P2

    return P2(steps, eta, alpha, temperature)


PRESETS.update(klass=klass, remdm_conf=remdm_conf, wino=wino, p2=p2)
