"""Decoders as inference programs: primitives (scores, commit rules, correctors) and presets."""

from mdmprob.decoders.core import Decoder, DecodeResult
from mdmprob.decoders.presets import (
    PRESETS,
    dapd,
    dawn,
    dream,
    dus,
    eb_sampler,
    fast_dllm_factor,
    fast_dllm_threshold,
    get_decoder,
    gibbs_remask,
    importance,
    joint_proposal,
    klass,
    learned_policy,
    llada,
    mdlm,
    mean_field_blocks,
    p2,
    pc_sampler,
    prophet,
    rejection,
    remdm,
    remdm_conf,
    remdm_loop,
    self_speculative,
    sequential,
    speculative,
    verified_blocks,
    wino,
)
from mdmprob.decoders.protocol import DecoderBase

__all__ = [
    "PRESETS", "DecodeResult", "Decoder", "DecoderBase", "eb_sampler", "fast_dllm_factor",
    "importance", "fast_dllm_threshold", "get_decoder", "llada", "mdlm", "mean_field_blocks", "rejection",
    "sequential", "speculative", "verified_blocks", "gibbs_remask", "remdm", "dream", "dus",
    "pc_sampler", "prophet", "remdm_loop", "dapd", "dawn", "learned_policy", "joint_proposal",
    "self_speculative", "klass", "remdm_conf", "wino", "p2",
]
