"""A Hugging Face masked language model as a :class:`~mdmprob.denoisers.base.Denoiser`.

:class:`HuggingFaceMLM` wraps any ``transformers`` model with a masked-LM head (e.g. one from
``AutoModelForMaskedLM.from_pretrained``): mdmprob's tokens ``0..V-1`` are mapped to the model's
token ids by ``token_map`` (a list of ``V`` distinct ids), mdmprob's mask id ``V`` to the model's
mask token, the model is run on the whole row (every position attends to every other), and its
logits are restricted to the ``V`` mapped ids and renormalised with ``log_softmax``:

    log p_theta(x_i = v | x_visible) = logit_i[token_map[v]] - logsumexp_u logit_i[token_map[u]]

so the result is the model's conditional *given that the token is one of the mapped ones*.
Optional ``prefix``/``suffix`` ids (e.g. ``[CLS]`` and ``[SEP]``) are added around every row and
their outputs dropped.

Diffusion LMs load with :meth:`HuggingFaceMLM.from_diffusion_lm`: LLaDA-style models (logits
aligned: output i predicts token i; mask id 126336) and Dream-style models (built from a causal
LM: output i - 1 predicts token i, so ``shift=1``; mask id from the tokenizer), usually with
``trust_remote_code=True``.

``transformers`` is imported lazily: constructing a wrapper around an object that is already a
``torch.nn.Module`` does not need it, and :func:`from_pretrained` raises a clear
:class:`~mdmprob.errors.MdmprobError` when the package is missing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mdmprob.checks import check_match
from mdmprob.config import default_dtype
from mdmprob.denoisers.base import Denoiser
from mdmprob.errors import MdmprobError

INSTALL_HINT = "install it with `pip install transformers` (or the `hf` extra: pip install mdmprob[hf])"


def require_transformers():
    """The ``transformers`` module, or an MdmprobError saying how to install it."""
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MdmprobError(f"HuggingFaceMLM needs the `transformers` package, which is not "
                           f"installed ({e}); {INSTALL_HINT}") from None
    return transformers


def _int(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, int)


class HuggingFaceMLM(Denoiser):
    """A masked language model restricted to ``V = len(token_map)`` tokens.

    Args:
        model: a ``transformers`` masked-LM model (``model(input_ids=..., attention_mask=...)``
            returns an object with ``.logits [B, L, model_vocab]``), or any module that does.
        token_map: ``V >= 2`` distinct model token ids; mdmprob token ``v`` is ``token_map[v]``.
        n_tokens: the sequence length n.
        mask_token_id: the model's mask token id (``tokenizer.mask_token_id``).
        device: where the model runs (default: where its parameters are; the model is moved
            there if given).
        dtype: the dtype of the returned log-probabilities (default ``MDMPROB_DTYPE``, float64);
            the model itself runs in its own dtype and its logits are cast before normalising.
        prefix: model token ids put before every row (e.g. ``[cls_id]``); their outputs are
            discarded.
        suffix: model token ids put after every row (e.g. ``[sep_id]``).
        structure: optional exact target, as for :class:`~mdmprob.denoisers.neural.Neural`.
        shift: position i reads the model's output at ``i - shift`` (0: masked LMs and LLaDA;
            1: Dream, whose logits are next-token logits; position 0 reads output 0).
        context: a fixed row of model ids (e.g. a whole protein with its CLS/SEP) that replaces
            prefix and suffix.
        positions: the n indices of ``context`` that hold mdmprob's tokens.
    """

    def __init__(self, model, token_map: Sequence[int], n_tokens: int, mask_token_id: int,
                 device=None, dtype=None, *, prefix: Sequence[int] = (),
                 suffix: Sequence[int] = (), structure=None, shift: int = 0,
                 context: Sequence[int] | None = None, positions: Sequence[int] | None = None):
        if not isinstance(model, torch.nn.Module):
            raise MdmprobError(f"model must be a torch.nn.Module (a transformers masked-LM "
                               f"model), got {type(model).__name__}")
        ids = list(token_map) if isinstance(token_map, Sequence | torch.Tensor) else None
        if ids is not None and isinstance(token_map, torch.Tensor):
            ids = [int(i) for i in token_map.tolist()]
        if ids is None or len(ids) < 2 or not all(_int(i) and i >= 0 for i in ids):
            raise MdmprobError(f"token_map={token_map!r} must be a list of at least 2 "
                               "non-negative integer model token ids")
        if len(set(ids)) != len(ids):
            raise MdmprobError(f"token_map={ids} repeats a model token id; ids must be distinct")
        if not _int(n_tokens) or n_tokens < 1:
            raise MdmprobError(f"n_tokens={n_tokens!r} must be an integer >= 1")
        if not _int(mask_token_id) or mask_token_id < 0:
            raise MdmprobError(f"mask_token_id={mask_token_id!r} must be a non-negative integer "
                               "(the model tokenizer's mask_token_id)")
        if not _int(shift) or shift not in (0, 1):
            raise MdmprobError(f"shift={shift!r} must be 0 (aligned logits) or 1 (Dream-style "
                               "next-token logits)")
        if mask_token_id in ids:
            raise MdmprobError(f"mask_token_id={mask_token_id} is also in token_map={ids}")
        if (context is None) != (positions is None):
            raise MdmprobError("context and positions go together: give both or neither")
        if context is not None:
            context, positions = [int(i) for i in context], [int(i) for i in positions]
            if len(positions) != n_tokens or len(set(positions)) != n_tokens or \
                    not all(0 <= i < len(context) for i in positions):
                raise MdmprobError(f"positions={positions} must be {n_tokens} distinct indices "
                                   f"into the context of length {len(context)}")
            if prefix or suffix:
                raise MdmprobError("give either context/positions or prefix/suffix, not both")
            prefix = [i for i in context if i >= 0]  # checked below as model ids
        extra = [list(prefix), list(suffix)]
        if not all(_int(i) and i >= 0 for part in extra for i in part):
            raise MdmprobError(f"prefix={prefix!r} and suffix={suffix!r} must be lists of "
                               "non-negative integer model token ids")
        model_vocab = _model_vocab(model)
        used = ids + [mask_token_id] + extra[0] + extra[1]
        if model_vocab is not None and max(used) >= model_vocab:
            raise MdmprobError(f"token id {max(used)} is outside the model's vocabulary of "
                               f"{model_vocab} ids")
        if device is None:
            param = next(model.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.dtype = dtype if dtype is not None else default_dtype()
        self.vocab, self.n_tokens = len(ids), int(n_tokens)
        if structure is not None:
            check_match(self, structure)
        self.structure = structure
        self.token_map = ids
        self.mask_token_id = int(mask_token_id)
        self.prefix, self.suffix = extra
        self.shift = int(shift)
        self.context, self.positions = context, positions
        if context is not None:
            self.prefix = []
        # mdmprob id -> model id, the mask id V last
        self._lookup = torch.tensor(ids + [self.mask_token_id], dtype=torch.long, device=self.device)
        self._ids = self._lookup[:-1]

    @classmethod
    def from_pretrained(cls, name_or_path: str, tokens: Sequence[str], n_tokens: int, *,
                        special_tokens: bool = True, device=None, dtype=None, structure=None,
                        **kwargs) -> HuggingFaceMLM:
        """Load ``AutoModelForMaskedLM`` and its tokenizer; ``tokens`` are V strings, each a
        single tokenizer token (mdmprob token v is ``tokens[v]``). With ``special_tokens`` the
        tokenizer's CLS/SEP (or BOS/EOS) ids wrap every row. ``kwargs`` go to both loaders."""
        tf = require_transformers()
        tok = tf.AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        model = tf.AutoModelForMaskedLM.from_pretrained(name_or_path, **kwargs)
        if tok.mask_token_id is None:
            raise MdmprobError(f"the tokenizer of {name_or_path!r} has no mask token")
        ids = _single_token_ids(tok, tokens, name_or_path)
        first = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        last = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        prefix = [first] if special_tokens and first is not None else []
        suffix = [last] if special_tokens and last is not None else []
        return cls(model, ids, n_tokens, int(tok.mask_token_id), device, dtype, prefix=prefix,
                   suffix=suffix, structure=structure)

    @classmethod
    def from_diffusion_lm(cls, name_or_path: str, tokens: Sequence[str], n_tokens: int, *,
                          style: str = "llada", mask_token_id: int | None = None,
                          model_class: str = "AutoModel", trust_remote_code: bool = True,
                          prefix: Sequence[int] = (), device=None, dtype=None, structure=None,
                          **kwargs) -> HuggingFaceMLM:
        """A LLaDA- or Dream-style diffusion LM: ``model_class`` (``AutoModel`` for the
        ``trust_remote_code`` checkpoints) and its tokenizer; ``style`` sets the logits layout
        (``llada``: aligned, ``dream``: shifted by one) and the default mask id (the argument,
        else the tokenizer's, else the config's ``mask_token_id``, else LLaDA's 126336)."""
        if style not in DIFFUSION_STYLES:
            raise MdmprobError(f"style={style!r} must be one of {sorted(DIFFUSION_STYLES)}")
        tf = require_transformers()
        loader = getattr(tf, model_class, None)
        if loader is None or not hasattr(loader, "from_pretrained"):
            raise MdmprobError(f"model_class={model_class!r} is not a transformers auto class "
                               "(e.g. AutoModel, AutoModelForMaskedLM, AutoModelForCausalLM)")
        kwargs = dict(kwargs, trust_remote_code=trust_remote_code)
        tok = tf.AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        model = loader.from_pretrained(name_or_path, **kwargs)
        if mask_token_id is None:
            mask_token_id = tok.mask_token_id
        if mask_token_id is None:
            mask_token_id = getattr(getattr(model, "config", None), "mask_token_id", None)
        if mask_token_id is None:
            mask_token_id = DIFFUSION_STYLES[style]["mask_token_id"]
        if mask_token_id is None:
            raise MdmprobError(f"{name_or_path!r} names no mask token; pass mask_token_id=")
        ids = _single_token_ids(tok, tokens, name_or_path)
        return cls(model, ids, n_tokens, int(mask_token_id), device, dtype, prefix=prefix,
                   structure=structure, shift=DIFFUSION_STYLES[style]["shift"])

    def model_ids(self, tokens: torch.Tensor) -> torch.Tensor:
        """The model's ``input_ids`` for mdmprob ``tokens [B, n]`` (prefix and suffix added)."""
        tokens = self.check(tokens)
        ids = self._lookup[tokens]
        if self.context is not None:
            row = torch.tensor(self.context, dtype=torch.long, device=self.device)
            row = row.expand(ids.shape[0], -1).clone()
            row[:, self.positions] = ids
            return row
        parts = [torch.tensor(p, dtype=torch.long, device=self.device).expand(ids.shape[0], -1)
                 for p in (self.prefix, self.suffix)]
        return torch.cat([parts[0], ids, parts[1]], dim=1)

    def predict(self, tokens: torch.Tensor) -> torch.Tensor:
        input_ids = self.model_ids(tokens)
        with torch.no_grad():
            out = self.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
        logits = out.logits if hasattr(out, "logits") else out[0]
        if self.shift:  # Dream: output i - 1 predicts token i
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        if self.context is not None:
            logits = logits[:, self.positions].index_select(-1, self._ids)
            return torch.log_softmax(logits.to(self.dtype), dim=-1)
        start = len(self.prefix)
        logits = logits[:, start:start + self.n_tokens].index_select(-1, self._ids)
        return torch.log_softmax(logits.to(self.dtype), dim=-1)

    def __repr__(self) -> str:
        return (f"HuggingFaceMLM({type(self.model).__name__}, vocab={self.vocab}, "
                f"n_tokens={self.n_tokens})")


DIFFUSION_STYLES = {"llada": {"shift": 0, "mask_token_id": 126336},
                    "dream": {"shift": 1, "mask_token_id": None}}


def _single_token_ids(tok, tokens: Sequence[str], name_or_path: str) -> list[int]:
    ids = []
    for t in tokens:
        i = tok.convert_tokens_to_ids(t)
        if i is None or i == tok.unk_token_id:
            raise MdmprobError(f"{t!r} is not a single token of {name_or_path!r}")
        ids.append(int(i))
    return ids


def _model_vocab(model) -> int | None:
    config = getattr(model, "config", None)
    size = getattr(config, "vocab_size", None)
    return int(size) if _int(size) else None
