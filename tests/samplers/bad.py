"""Known-bad samplers: each reproduces one published kind of sampler bug in a few lines on top of
the known-good samplers of ``good.py``; the audit must flag each with the right verdict.

=========================  ====================================================  ==============
sampler                    bug                                                   verdict
=========================  ====================================================  ==============
mask_after_argmax          the mask token is suppressed after the draw, so it    mask_tokens
                           can be drawn (and left in the output)
low_precision_gumbel       Gumbel noise from uniforms on a coarse grid (float32  tail
                           rand: 2^-24; the tests use 2^-10 to see it)
shared_seed_speculative    the draft and its verifier re-seed with one seed:     law
                           the acceptance uniform is the draft's
eb_noised_entropy          EB-Sampler port measuring the entropy of the          law
                           Gumbel-noised logits instead of the model's
ignores_seed               a hard-coded ``torch.manual_seed(0)`` inside          seed
batch_coupled              LLaDA's top-k taken over the flattened batch          batch
rewrites_prompt            decodes on a fresh canvas: the prompt is not copied                prompt_changed
=========================  ====================================================  ==============
"""

import torch
import torch.nn.functional as F

# the audit loads a sampler file with its folder on sys.path, so it may import its neighbours
from good import _speculative, content_logits, entropy_budget, gumbel_argmax


def mask_after_argmax(model, input_ids, temperature=1.0, mask_id=None):
    """One token per step, left to right; the mask logit is set to -inf only after the draw."""
    x = input_ids.clone()
    for j in range(x.shape[1]):
        if not (x[:, j] == mask_id).any():
            continue
        logits = model(x).logits.to(torch.float64)
        x0 = gumbel_argmax(logits[:, j], temperature)  # the bug: the mask id can win here
        logits[..., mask_id] = -torch.inf              # suppression comes too late
        x[:, j] = torch.where(x[:, j] == mask_id, x0, x[:, j])
    return x


def low_precision_gumbel(model, input_ids, bits=24, mask_id=None):
    """Left to right, one token per step, Gumbel-max with uniforms on the grid k / 2^bits,
    0 < k < 2^bits: float32 ``torch.rand`` (clamped away from 0) at bits = 24, where a token
    below p ~ 4e-9 is never drawn; the tests use fewer bits so the cut shows at their sizes."""
    x = input_ids.clone()
    for j in range(x.shape[1]):
        logits = content_logits(model, x, mask_id)[:, j]
        u = torch.randint(1, 2**bits, logits.shape, device=x.device) / 2**bits  # the bug
        x0 = (logits.exp() / (-torch.log(u))).argmax(-1)
        x[:, j] = torch.where(x[:, j] == mask_id, x0, x[:, j])
    return x


def shared_seed_speculative(model, input_ids, seed=0, mask_id=None):
    """Speculative verification whose verifier re-seeds with the draft's seed."""
    return _speculative(model, input_ids, mask_id, shared_seed=seed)


def eb_noised_entropy(model, input_ids, gamma=0.1, temperature=1.0, mask_id=None):
    """EB-Sampler with the entropy taken from the Gumbel-noised logits."""
    x = input_ids.clone()
    while (x == mask_id).any():
        cand = x == mask_id
        logits = content_logits(model, x, mask_id)
        noise = torch.rand_like(logits).clamp(min=torch.finfo(torch.float64).tiny)
        noised = logits / temperature - torch.log(-torch.log(noise))
        x0 = noised.argmax(-1)
        logp = F.log_softmax(noised, dim=-1)  # the bug: entropy of the noised logits
        entropy = -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1)
        x = torch.where(entropy_budget(entropy, cand, gamma), x0, x)
    return x


def ignores_seed(model, input_ids, temperature=1.0, mask_id=None):
    """Left to right, exact, but seeded inside with a constant."""
    torch.manual_seed(0)
    x = input_ids.clone()
    for j in range(x.shape[1]):
        x0 = gumbel_argmax(content_logits(model, x, mask_id)[:, j], temperature)
        x[:, j] = torch.where(x[:, j] == mask_id, x0, x[:, j])
    return x


def batch_coupled(model, input_ids, temperature=1.0, mask_id=None):
    """LLaDA low_confidence, one token per row and step, but the top-k runs over the whole batch
    flattened: confident rows commit several tokens while others wait."""
    x = input_ids.clone()
    B, L = x.shape
    while (x == mask_id).any():
        mask_index = x == mask_id
        logits = content_logits(model, x, mask_id)
        x0 = gumbel_argmax(logits, temperature)
        conf = F.softmax(logits, dim=-1).gather(-1, x0[..., None]).squeeze(-1)
        conf = torch.where(mask_index, conf, -torch.inf)
        k = min(B, int(mask_index.sum()))
        flat = conf.reshape(-1).topk(k).indices  # the bug: one top-k for the whole batch
        commit = torch.zeros(B * L, dtype=torch.bool, device=x.device)
        commit[flat] = True
        x = torch.where(commit.reshape(B, L) & mask_index, x0, x)
    return x


def rewrites_prompt(model, input_ids, temperature=1.0, mask_id=None):
    """Left to right on a fresh all-masked canvas: the prompt is never copied in."""
    x = torch.full_like(input_ids, mask_id)  # the bug: should start from input_ids
    for j in range(x.shape[1]):
        x[:, j] = gumbel_argmax(content_logits(model, x, mask_id)[:, j], temperature)
    return x
