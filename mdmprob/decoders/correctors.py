"""Block-level correctors: replace a window's step loop by an exact (verified) block sampler.

Prompt tokens (``initial=``) inside a window are kept: the corrector samples the window's masked
positions from p(x_masked | everything visible).

All three return exact samples of the target's block conditional p(x_B | x_P) — the target is a
Structure (by default the Oracle denoiser's own) — and differ in what exactness costs:

* :class:`ExactBlock` enumerates the V^|B| block configurations (the paper's verified decoder);
* :class:`Rejection` proposes from the denoiser's mean-field marginals and accepts with
  probability p / (M q), M = sup p/q: E[#proposals] = M >= exp(forward TC) (Prop. 5.1);
* :class:`Speculative` drafts from the marginals and verifies token by token (min(1, p/q), residual
  resampling on the first rejection).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mdmprob import measures
from mdmprob.decoders.protocol import all_values
from mdmprob.deprecation import renamed_arguments
from mdmprob.errors import MdmprobError
from mdmprob.sampling import gumbel_argmax


def free_positions(tokens: torch.Tensor, window: list[int], mask_id: int) -> torch.Tensor:
    """The positions of ``window`` a corrector decodes in each row, bool ``[B, n]``: those
    masked in ``tokens`` (the others are prompt tokens, never rewritten)."""
    win = torch.zeros(tokens.shape[-1], dtype=torch.bool, device=tokens.device)
    win[window] = True
    return win & (tokens == mask_id)


def _groups(free: torch.Tensor, window: list[int]):
    """``(rows, positions)`` per group of rows with the same masked positions of ``window``
    (groups with none left out)."""
    patterns, group = torch.unique(free[:, window], dim=0, return_inverse=True)
    for g, bits in enumerate(patterns.tolist()):
        positions = [p for p, b in zip(window, bits, strict=True) if b]
        if positions:
            yield (group == g).nonzero().squeeze(-1), positions


class _BlockCorrector:
    name = "corrector"
    log_q_is_marginal = True  # the output is an exact sample of p(x_B | x_P)

    def target_engine(self, denoiser, target):
        """The exact engine of ``target`` (default: the denoiser's structure) on the denoiser's
        device and dtype; refused when there is none or its shape differs from the denoiser's."""
        target = target if target is not None else getattr(denoiser, "structure", None)
        if target is None:
            raise MdmprobError(f"{self.name} verifies against an exact target: pass "
                               "target=structure (the denoiser has no structure of its own)")
        if (target.n_tokens, target.vocab) != (denoiser.n_tokens, denoiser.vocab):
            raise MdmprobError(
                f"target {target.name!r} has {target.n_tokens} tokens over vocab {target.vocab} "
                f"but the denoiser has {denoiser.n_tokens} over {denoiser.vocab}")
        return target.engine(device=denoiser.device, dtype=denoiser.dtype)

    def block_table(self, engine, tokens, window, mask_id):
        """log p(x_window | the visible tokens) of ``tokens [B, n]`` (``mask_id`` marks the
        masked ones), ``[B, V, ..., V]`` with one axis per position of ``window``."""
        visible = tokens != mask_id
        return engine.block_joint(torch.where(visible, tokens, 0), visible, window)

    @renamed_arguments(info="diagnostics")
    def decode_window(self, decoder, denoiser, tokens, window, generator, target=None,
                      diagnostics: dict[str, Any] | None = None):
        """Sample the masked positions of ``window`` in every row from p(x_B | x_P) (tokens of
        the window visible in ``tokens`` are prompt tokens, kept): rows are grouped by which
        window positions are masked. Returns (tokens, committed [B, n], log q [B], nfe [B])."""
        free = free_positions(tokens, window, denoiser.mask_id)
        if free[:, window].all():
            return self._decode(decoder, denoiser, tokens, window, generator, target, diagnostics)
        B, device = tokens.shape[0], tokens.device
        out = tokens.clone()
        lq = torch.zeros(B, dtype=denoiser.dtype, device=device)
        calls = torch.zeros(B, dtype=torch.long, device=device)
        records: dict[str, list] = {}
        for rows, sub in _groups(free, window):
            local: dict[str, Any] = {}
            out[rows], _, lq[rows], calls[rows] = self._decode(
                decoder, denoiser, tokens[rows], sub, generator, target, local)
            for key, values in local.items():
                records.setdefault(key, []).append((rows, values[0]))
        for key, pieces in records.items() if diagnostics is not None else ():
            full = torch.zeros(B, dtype=pieces[0][1].dtype, device=device)
            for rows, values in pieces:
                full[rows] = values
            self._record(diagnostics, key, full)
        return out, free, lq, calls

    def window_distribution(self, decoder, denoiser, tokens, window, target=None):
        """(values, log prob) of every configuration of ``window`` given ``tokens [1, n]`` (the
        window's visible positions keep their tokens)."""
        engine = self.target_engine(denoiser, target)
        free = [i for i, p in enumerate(window) if int(tokens[0, p]) == denoiser.mask_id]
        table = self.block_table(engine, tokens, [window[i] for i in free],
                                  denoiser.mask_id).reshape(-1)
        configs = tokens[0, window].repeat(table.shape[0], 1)
        configs[:, free] = all_values(len(free), denoiser.vocab, tokens.device)
        for values, lp in zip(configs.tolist(), table.tolist(), strict=True):
            if lp > -math.inf:
                yield tuple(values), lp

    def window_log_prob(self, denoiser, state, tokens, window, target=None) -> torch.Tensor:
        """log p(x_W | state) ``[B]`` of the window's values in complete ``tokens [B, n]``, the
        positions masked in ``state`` decoded (the others are prompt tokens)."""
        engine = self.target_engine(denoiser, target)
        V = denoiser.vocab
        free = free_positions(state, window, denoiser.mask_id)
        out = torch.zeros(tokens.shape[0], dtype=denoiser.dtype, device=tokens.device)
        for rows, sub in _groups(free, window):
            table = self.block_table(engine, state[rows], sub, denoiser.mask_id)
            code = (tokens[rows][:, sub] * V ** torch.arange(len(sub) - 1, -1, -1,
                                                              device=tokens.device)).sum(-1)
            out[rows] = table.reshape(len(rows), -1).gather(-1, code[:, None])[:, 0]
        return out

    @staticmethod
    def _record(diagnostics: dict, key: str, value: torch.Tensor):
        diagnostics.setdefault(key, []).append(value)


class ExactBlock(_BlockCorrector):
    """Sample the block from its exact conditional table (V^|B| entries, one call)."""

    name = "verified"

    def _decode(self, decoder, denoiser, tokens, window, generator, target, diagnostics):
        engine = self.target_engine(denoiser, target)
        table = self.block_table(engine, tokens, window, denoiser.mask_id).reshape(
            tokens.shape[0], -1)
        choice = gumbel_argmax(table, generator)
        configs = all_values(len(window), denoiser.vocab, tokens.device)
        tokens = tokens.clone()
        tokens[:, window] = configs[choice]
        sel = torch.zeros_like(tokens, dtype=torch.bool)
        sel[:, window] = True
        lq = table.gather(-1, choice[:, None]).squeeze(-1)
        calls = torch.ones(tokens.shape[0], dtype=torch.long, device=tokens.device)
        if diagnostics is not None:
            self._record(diagnostics, "enumerated", torch.full_like(calls, denoiser.vocab ** len(window)))
        return tokens, sel, lq, calls


class Rejection(_BlockCorrector):
    """Rejection sampling of the block from the mean-field proposal with the optimal M."""

    name = "rejection"

    def _decode(self, decoder, denoiser, tokens, window, generator, target, diagnostics):
        engine = self.target_engine(denoiser, target)
        B, k, V = tokens.shape[0], len(window), denoiser.vocab
        log_p = self.block_table(engine, tokens, window, denoiser.mask_id).reshape(B, -1)
        marg = denoiser(tokens)[:, window]  # [B, k, V]
        configs = all_values(k, V, tokens.device)  # [V^k, k]
        log_q = marg.gather(-1, configs.T[None].expand(B, k, -1)).sum(1)  # [B, V^k]
        ratio = torch.where(log_p > -math.inf, log_p - log_q, torch.full_like(log_p, -math.inf))
        log_m = ratio.amax(-1)  # log sup p/q
        if torch.isinf(log_m).any() and (log_m == math.inf).any():
            raise MdmprobError("rejection: the target puts mass where the proposal has none "
                               "(M = +inf); use verified_blocks")
        accepted = torch.zeros(B, dtype=torch.bool, device=tokens.device)
        choice = torch.zeros(B, dtype=torch.long, device=tokens.device)
        proposals = torch.zeros(B, dtype=torch.long, device=tokens.device)
        # Proposals are drawn in chunks (about 2M per row at a time) and the first accepted one
        # of each row is kept: the same sequential accept-reject process, vectorised.
        expected = float(log_m[log_m > -math.inf].max().exp()) if (log_m > -math.inf).any() else 1
        chunk = int(max(1, min(2 * expected, 2**22 // max(B, 1), 8192)))
        cdf = log_q.exp().cumsum(-1)
        while not accepted.all():
            rows = (~accepted).nonzero().squeeze(-1)
            u = torch.rand(len(rows), chunk, generator=generator, device=tokens.device,
                           dtype=log_p.dtype)
            draw = torch.searchsorted(cdf[rows], u * cdf[rows, -1:]).clamp(max=cdf.shape[-1] - 1)
            v = torch.rand(len(rows), chunk, generator=generator, device=tokens.device,
                           dtype=log_p.dtype)
            log_a = ratio[rows].gather(-1, draw) - log_m[rows, None]
            ok = v.log() < log_a
            hit = ok.any(-1)
            first = ok.long().argmax(-1)
            proposals[rows] += torch.where(hit, first + 1, torch.full_like(first, chunk))
            choice[rows] = torch.where(hit, draw.gather(-1, first[:, None])[:, 0], choice[rows])
            accepted[rows] = hit
        tokens = tokens.clone()
        tokens[:, window] = configs[choice]
        sel = torch.zeros_like(tokens, dtype=torch.bool)
        sel[:, window] = True
        if diagnostics is not None:
            self._record(diagnostics, "proposals", proposals)
            self._record(diagnostics, "log_m", log_m)
            self._record(diagnostics, "forward_tc", measures.kl(p=log_p, q=log_q))
        lq = log_p.gather(-1, choice[:, None]).squeeze(-1)
        return tokens, sel, lq, torch.ones_like(proposals)


class Speculative(_BlockCorrector):
    """Draft the block from the denoiser's marginals, verify left to right against the target's
    sequential conditionals; the first rejected position is resampled from the residual
    (p - q)_+ and the rest of the block is drafted again."""

    name = "speculative"

    def _decode(self, decoder, denoiser, tokens, window, generator, target, diagnostics):
        engine = self.target_engine(denoiser, target)
        B, mask = tokens.shape[0], denoiser.mask_id
        tokens = tokens.clone()
        calls = torch.zeros(B, dtype=torch.long, device=tokens.device)
        drafted = torch.zeros(B, dtype=torch.long, device=tokens.device)
        accepted_total = torch.zeros(B, dtype=torch.long, device=tokens.device)
        lq = torch.zeros(B, dtype=denoiser.dtype, device=tokens.device)
        while (tokens[:, window] == mask).any():
            todo = (tokens[:, window] == mask).any(-1)
            q = denoiser(tokens)  # draft marginals given the current prefix
            calls += todo.long()
            draft = gumbel_argmax(q.reshape(-1, q.shape[-1]), generator).reshape(B, -1)
            open_ = todo.clone()  # rows still verifying this round
            for pos in window:
                need = open_ & (tokens[:, pos] == mask)
                if not need.any():
                    continue
                visible = tokens != mask
                p = engine.conditionals(torch.where(visible, tokens, 0), visible)[:, pos]
                calls += need.long()
                drafted += need.long()
                x = draft[:, pos]
                log_ratio = p.gather(-1, x[:, None]).squeeze(-1) - \
                    q[:, pos].gather(-1, x[:, None]).squeeze(-1)
                u = torch.rand(B, generator=generator, device=tokens.device, dtype=p.dtype)
                accept = need & (u.log() < log_ratio.clamp(max=0))
                residual = (p.exp() - q[:, pos].exp()).clamp(min=0)
                residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, p.exp())
                fix = gumbel_argmax(residual.log(), generator)
                value = torch.where(accept, x, fix)
                tokens[:, pos] = torch.where(need, value, tokens[:, pos])
                lq = lq + torch.where(need, p.gather(-1, value[:, None]).squeeze(-1),
                                      torch.zeros_like(lq))
                accepted_total += accept.long()
                open_ = open_ & ~(need & ~accept)  # a rejection ends this row's round
        sel = torch.zeros_like(tokens, dtype=torch.bool)
        sel[:, window] = True
        if diagnostics is not None:
            self._record(diagnostics, "drafted", drafted)
            self._record(diagnostics, "accepted", accepted_total)
        return tokens, sel, lq, calls
