"""Known-good samplers, written the way the published ones are: plain torch that calls
``model(x).logits``, knows nothing of mdmprob, and reads the mask id from an argument.

Each is written from the algorithm's description (LLaDA ``generate``; Fast-dLLM's threshold rule;
EB-Sampler; token-wise speculative verification) and must match the named mdmprob preset's exact
law (or the target p), so the audit must pass it. Ties between equal confidences go to the lower
position (a stable descending sort); the structures the tests audit them on have no exact ties,
where the presets' default random tie-break would differ.
"""

import torch
import torch.nn.functional as F


def gumbel_argmax(logits, temperature):
    """A draw from softmax(logits / T) by the Gumbel-max trick, float64 noise; argmax at T = 0."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.to(torch.float64)
    noise = torch.rand_like(logits).clamp(min=torch.finfo(torch.float64).tiny)
    return (logits.exp() / (-torch.log(noise)) ** temperature).argmax(-1)


def content_logits(model, x, mask_id):
    """The model's logits in float64 with the mask token suppressed before anything is drawn."""
    logits = model(x).logits.to(torch.float64)
    logits[..., mask_id] = -torch.inf
    return logits


def num_transfer_tokens(mask_index, steps):
    """LLaDA: the masked count split evenly over ``steps``, the remainder to the earliest."""
    count = mask_index.sum(dim=1, keepdim=True)
    base, rem = count // steps, count % steps
    out = base.expand(-1, steps).clone()
    out += (torch.arange(steps, device=count.device)[None] < rem).long()
    return out


def llada_generate(model, prompt, steps=4, gen_length=4, block_length=None, temperature=1.0,
                   remasking="low_confidence", mask_id=None):
    """LLaDA ``generate``: semi-AR blocks, ``steps`` in total; low_confidence commits the drawn
    tokens with the highest model probability (sample-then-choose)."""
    block_length = gen_length if block_length is None else block_length
    x = torch.full((prompt.shape[0], prompt.shape[1] + gen_length), mask_id, dtype=torch.long,
                   device=prompt.device)
    x[:, :prompt.shape[1]] = prompt.clone()
    n_blocks = gen_length // block_length
    steps_per_block = steps // n_blocks
    for b in range(n_blocks):
        lo = prompt.shape[1] + b * block_length
        block_mask = x[:, lo:lo + block_length] == mask_id
        schedule = num_transfer_tokens(block_mask, steps_per_block)
        for i in range(steps_per_block):
            mask_index = x == mask_id
            logits = content_logits(model, x, mask_id)
            x0 = gumbel_argmax(logits, temperature)
            if remasking == "low_confidence":
                conf = F.softmax(logits, dim=-1).gather(-1, x0[..., None]).squeeze(-1)
            else:
                conf = torch.rand(x0.shape, dtype=torch.float64, device=x.device)
            conf[:, lo + block_length:] = -torch.inf
            x0 = torch.where(mask_index, x0, x)
            conf = torch.where(mask_index, conf, -torch.inf)
            order = torch.sort(conf, dim=-1, descending=True, stable=True).indices
            for j in range(x.shape[0]):
                k = int(schedule[j, i])
                x[j, order[j, :k]] = x0[j, order[j, :k]]
    return x


def fast_dllm_threshold(model, input_ids, threshold=0.9, block_length=None, temperature=1.0,
                        mask_id=None):
    """Fast-dLLM threshold rule per block: draw a value at every masked position, then commit
    every one whose drawn value has probability >= threshold, and at least the most confident."""
    x = input_ids.clone()
    L = x.shape[1]
    block_length = L if block_length is None else block_length
    for lo in range(0, L, block_length):
        in_block = torch.zeros(L, dtype=torch.bool, device=x.device)
        in_block[lo:lo + block_length] = True
        while ((x == mask_id) & in_block).any():
            cand = (x == mask_id) & in_block
            logits = content_logits(model, x, mask_id)
            x0 = gumbel_argmax(logits, temperature)
            conf = F.softmax(logits, dim=-1).gather(-1, x0[..., None]).squeeze(-1)
            conf = torch.where(cand, conf, -torch.inf)
            top = conf.argmax(-1, keepdim=True)
            commit = (conf >= threshold) | torch.zeros_like(cand).scatter(1, top, True)
            commit &= cand
            x = torch.where(commit, x0, x)
    return x


def eb_sampler(model, input_ids, gamma=0.1, temperature=1.0, mask_id=None):
    """EB-Sampler: rank masked positions by the entropy of the model's distribution, commit the
    longest prefix whose entropies sum, minus the largest, stay within gamma (at least one)."""
    x = input_ids.clone()
    while (x == mask_id).any():
        cand = x == mask_id
        logits = content_logits(model, x, mask_id)
        x0 = gumbel_argmax(logits, temperature)
        logp = F.log_softmax(logits, dim=-1)
        entropy = -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1)
        commit = entropy_budget(entropy, cand, gamma)
        x = torch.where(commit, x0, x)
    return x


def entropy_budget(entropy, cand, gamma):
    key = torch.where(cand, entropy, torch.inf)
    order = torch.sort(key, dim=-1, stable=True).indices
    h = torch.where(cand, entropy, 0.0).gather(-1, order)
    n = torch.arange(1, h.shape[1] + 1, device=h.device)
    ok = (h.cumsum(-1) - h.cummax(-1).values <= gamma + 1e-12) & (n <= cand.sum(-1, keepdim=True))
    count = torch.where(ok, n, 0).amax(-1).clamp(min=1)
    rank = torch.empty_like(order).scatter_(-1, order, (n - 1).expand_as(order))
    return (rank < count[:, None]) & cand


def speculative(model, input_ids, mask_id=None):
    """Draft every masked position from its current marginal, then verify left to right: accept
    the draft d with probability min(1, p(d) / q(d)), else draw from the residual (p - q)+; a
    rejection re-drafts the later positions from the new marginals. Exact for p."""
    return _speculative(model, input_ids, mask_id, shared_seed=None)


def _speculative(model, input_ids, mask_id, shared_seed):
    x = input_ids.clone()
    B, L = x.shape
    q = F.softmax(content_logits(model, x, mask_id), dim=-1)
    if shared_seed is not None:
        torch.manual_seed(shared_seed)
    u_draft = torch.rand(B, L, dtype=torch.float64, device=x.device)
    draft = inverse_cdf(q, u_draft)
    if shared_seed is not None:  # the verifier re-seeds: its uniforms are the draft's
        torch.manual_seed(shared_seed)
    u_accept = torch.rand(B, L, dtype=torch.float64, device=x.device)
    for j in range(L):
        todo = x[:, j] == mask_id
        if not todo.any():
            continue
        p_all = F.softmax(content_logits(model, x, mask_id), dim=-1)
        p, qj = p_all[:, j], q[:, j]
        d = draft[:, j]
        ratio = p.gather(-1, d[:, None]).squeeze(-1) / qj.gather(-1, d[:, None]).squeeze(-1)
        accept = u_accept[:, j] < ratio
        residual = (p - qj).clamp(min=0)
        residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, p)
        fix = torch.multinomial(residual, 1).squeeze(-1)
        x[:, j] = torch.where(todo, torch.where(accept, d, fix), x[:, j])
        redo = todo & ~accept
        q[redo] = p_all[redo]
        fresh = inverse_cdf(p_all, torch.rand(B, L, dtype=torch.float64, device=x.device))
        draft[redo] = fresh[redo]
    return x


def inverse_cdf(probs, u):
    cdf = probs.cumsum(-1)
    return torch.searchsorted(cdf, (u * cdf[..., -1])[..., None]).squeeze(-1).clamp(
        max=probs.shape[-1] - 1)
