"""AntiBERTy, a pretrained antibody masked LM that installs offline, as a denoiser.

``pip install mdmprob[antiberty]`` pins ``antiberty==0.1.3``, the last version that ships its
weights (a BERT with a masked-LM head: 8 layers, hidden 512, 26M parameters, a 25-id vocabulary:
[PAD] [UNK] [CLS] [SEP] [MASK] and the 20 amino acids). :func:`antiberty` loads them into a plain
``transformers.BertForMaskedLM`` (the package's own class adds species/chain heads that are not
needed) and returns a :class:`~mdmprob.denoisers.huggingface.HuggingFaceMLM` over ``k`` masked
positions of an antibody sequence: V = 20 amino acids, the rest of the sequence fixed as context,

    log p_theta(x_i = a | x_visible) = log_softmax over the 20 amino acids of the MLM logits at i

so every decoder law over the ``20^k`` completions is exact. :func:`attention_graph` gives the
model's attention between the masked positions (the dependency graph attention-based samplers
such as DAPD or DAWN read).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import torch

from mdmprob.denoisers.huggingface import HuggingFaceMLM, require_transformers
from mdmprob.errors import MdmprobError

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
INSTALL_HINT = "install the extra: pip install 'mdmprob[antiberty]' (antiberty==0.1.3 ships the weights)"


def antiberty(sequence: str, positions: Sequence[int], *, device=None,
              dtype=None) -> HuggingFaceMLM:
    """AntiBERTy over the amino acids at ``positions`` (0-based indices into ``sequence``)."""
    sequence = sequence.strip().upper()
    bad = sorted(set(sequence) - set(AMINO_ACIDS))
    if bad:
        raise MdmprobError(f"sequence has {bad}, which are not among the 20 amino acids "
                           f"{AMINO_ACIDS}")
    positions = [int(p) for p in positions]
    if not positions or any(not 0 <= p < len(sequence) for p in positions):
        raise MdmprobError(f"positions={positions} must be indices 0..{len(sequence) - 1} of "
                           "the sequence")
    model, vocab = load_antiberty()
    ids = {t: i for i, t in enumerate(vocab)}
    context = [ids["[CLS]"]] + [ids[a] for a in sequence] + [ids["[SEP]"]]
    return HuggingFaceMLM(model, [ids[a] for a in AMINO_ACIDS], len(positions), ids["[MASK]"],
                          device, dtype, context=context, positions=[1 + p for p in positions])


def attention_graph(den: HuggingFaceMLM, tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Mean attention (over layers and heads, both directions) between the denoiser's positions,
    ``[n, n]`` with a zero diagonal, in the row ``tokens`` (default: all masked)."""
    if tokens is None:
        tokens = torch.full((1, den.n_tokens), den.mask_id, device=den.device)
    ids = den.model_ids(tokens)[:1]
    with torch.no_grad():
        out = den.model(input_ids=ids, attention_mask=torch.ones_like(ids),
                        output_attentions=True)
    att = torch.stack(out.attentions).mean(dim=(0, 2))[0]  # [L, L]
    pos = den.positions if den.positions is not None else list(
        range(len(den.prefix), len(den.prefix) + den.n_tokens))
    sub = att[pos][:, pos].double()
    sub = (sub + sub.T) / 2
    return sub.fill_diagonal_(0.0)


@cache
def load_antiberty():
    """``(BertForMaskedLM in eval mode, vocabulary list)`` from the installed package's files."""
    spec = importlib.util.find_spec("antiberty")
    if spec is None or spec.origin is None:
        raise MdmprobError(f"the antiberty package is not installed; {INSTALL_HINT}")
    root = Path(spec.origin).parent / "trained_models"
    weights = root / "AntiBERTy_md_smooth" / "pytorch_model.bin"
    if not weights.exists():
        raise MdmprobError(f"the installed antiberty has no weights at {weights} (versions "
                           f"after 0.1.3 do not ship them); {INSTALL_HINT}")
    tf = require_transformers()
    raw = json.loads((root / "AntiBERTy_md_smooth" / "config.json").read_text())
    keep = {k: v for k, v in raw.items() if not k.startswith("_") and
            k not in ("architectures", "transformers_version", "model_type")}
    config = tf.BertConfig(**keep)
    config._attn_implementation = "eager"  # attention weights are read by attention_graph
    model = tf.BertForMaskedLM(config)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    missing, _ = model.load_state_dict(state, strict=False)
    if missing:
        raise MdmprobError(f"the AntiBERTy weights lack {missing[:3]}...; reinstall "
                           "antiberty==0.1.3")
    vocab = (root / "vocab.txt").read_text().split()
    return model.eval(), vocab
