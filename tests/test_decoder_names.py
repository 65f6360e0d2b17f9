"""The decoders' names: seeds, renamed classes, fields and arguments, and the moved orders module
(old names warn and give the same objects, new ones do not warn)."""

import torch

from mdmprob import load_model
from mdmprob.decoders import get_decoder
from mdmprob.denoisers import Oracle


def test_seed_none_is_fresh_randomness_and_seed_zero_repeats():
    # markov_chain(length=6, vocab=4): 4^6 = 4096 sequences, each of probability <= 1/4 per
    # token draw given the rest, so two batches of 32 sequences agree with probability far below
    # 2^-60
    den = Oracle(load_model("markov_chain", length=6, vocab=4, block_size=6))
    dec = get_decoder("sequential", order="random")
    fresh = [dec.run(den, 32, seed=None).tokens for _ in range(2)]
    assert not torch.equal(fresh[0], fresh[1])
    same = [dec.run(den, 32).tokens for _ in range(2)] + [dec.run(den, 32, seed=0).tokens]
    assert torch.equal(same[0], same[1]) and torch.equal(same[0], same[2])
