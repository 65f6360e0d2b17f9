"""HuggingFaceMLM: a tiny randomly initialised BertForMaskedLM (nothing downloaded) as a
denoiser: shapes, normalisation, visible rows as point masses, the logit restriction, and a
decoder run whose log q replays."""

import math

import pytest
import torch

from mdmprob.decoders import sequential
from mdmprob.errors import MdmprobError

transformers = pytest.importorskip("transformers")

from mdmprob.denoisers.huggingface import HuggingFaceMLM  # noqa: E402

torch.set_num_threads(1)

N, TOKEN_MAP, MASK, CLS, SEP = 5, [7, 3, 11], 4, 1, 2


@pytest.fixture(scope="module")
def bert():
    config = transformers.BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=16)
    torch.manual_seed(0)
    return transformers.BertForMaskedLM(config).eval()


@pytest.fixture(scope="module")
def den(bert):
    return HuggingFaceMLM(bert, TOKEN_MAP, N, MASK, prefix=[CLS], suffix=[SEP])


def tokens_batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(3, (6, N), generator=g)
    masked = torch.rand(6, N, generator=g) < 0.5
    masked[0] = True
    return torch.where(masked, torch.full_like(x, 3), x)


def test_shapes_normalisation_point_masses(den):
    tokens = tokens_batch()
    out = den(tokens)
    assert out.shape == (6, N, 3) and out.dtype == torch.float64
    assert torch.allclose(out.logsumexp(-1), torch.zeros(6, N, dtype=out.dtype), atol=1e-12)
    visible = tokens != den.mask_id
    point = torch.nn.functional.one_hot(tokens.clamp(max=2), 3).bool()
    assert torch.all(out[visible].exp() == point[visible].to(out.dtype))
    assert torch.isfinite(out[~visible]).all()


def test_restricts_the_model_logits(den, bert):
    tokens = tokens_batch()
    ids = torch.tensor(TOKEN_MAP + [MASK])[tokens]
    ids = torch.cat([torch.full((6, 1), CLS), ids, torch.full((6, 1), SEP)], 1)
    with torch.no_grad():
        logits = bert(input_ids=ids).logits[:, 1:-1][..., TOKEN_MAP].double()
    expect = torch.log_softmax(logits, -1)
    masked = tokens == den.mask_id
    assert torch.allclose(den(tokens)[masked], expect[masked], atol=1e-6)


def test_decoder_runs_and_replays(den):
    decoder = sequential("entropy")
    run = decoder.run(den, 8, seed=0)
    assert run.tokens.shape == (8, N) and (run.tokens < 3).all()
    assert torch.isfinite(run.log_q).all() and (run.log_q <= 0).all()
    replay = decoder.log_prob(den, run.tokens, committed=run.committed)
    assert torch.allclose(replay, run.log_q, atol=1e-9)


def test_bad_arguments(bert):
    with pytest.raises(MdmprobError, match="distinct"):
        HuggingFaceMLM(bert, [3, 3], N, MASK)
    with pytest.raises(MdmprobError, match="also in token_map"):
        HuggingFaceMLM(bert, [3, MASK], N, MASK)
    with pytest.raises(MdmprobError, match="outside the model's vocabulary"):
        HuggingFaceMLM(bert, [3, 25], N, MASK)
    with pytest.raises(MdmprobError, match="torch.nn.Module"):
        HuggingFaceMLM(object(), [3, 5], N, MASK)


def test_mean_log_q_is_a_probability(den):
    """Over all 3^N outputs of a deterministic decoder, q sums to one (exact mode)."""
    log_q = sequential("l2r").distribution(den)
    assert math.isclose(log_q.exp().sum().item(), 1.0, abs_tol=1e-9)


# ------------------------------------------------------------------------ diffusion LMs
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "d"]


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """A tiny random LLaDA-style model (aligned logits) and a Dream-style one (a causal LM:
    shifted logits), each saved with a local word-piece tokenizer; nothing is downloaded."""
    root = tmp_path_factory.mktemp("diffusion_lms")
    (root / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tok = transformers.BertTokenizer(str(root / "vocab.txt"))
    torch.manual_seed(0)
    small = dict(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1,
                 num_attention_heads=2, intermediate_size=32, max_position_embeddings=16)
    aligned = transformers.BertForMaskedLM(transformers.BertConfig(**small))
    causal = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(num_key_value_heads=2,
                                                                    **small))
    paths = {}
    for name, model in (("llada", aligned), ("dream", causal)):
        paths[name] = root / name
        model.save_pretrained(paths[name])
        tok.save_pretrained(paths[name])
    return paths, {"llada": aligned.eval(), "dream": causal.eval()}


@pytest.mark.parametrize("style, model_class", [("llada", "AutoModelForMaskedLM"),
                                                ("dream", "AutoModelForCausalLM")])
def test_diffusion_lm_layouts(saved_models, style, model_class):
    paths, models = saved_models
    den = HuggingFaceMLM.from_diffusion_lm(str(paths[style]), ["a", "b", "c"], 4, style=style,
                                           model_class=model_class, trust_remote_code=False)
    assert den.mask_token_id == 4 and den.token_map == [5, 6, 7]
    tokens = torch.tensor([[3, 3, 3, 3], [0, 3, 2, 3]])
    ids = torch.tensor([5, 6, 7, 4])[tokens]
    with torch.no_grad():
        logits = models[style](input_ids=ids).logits.double()
    if style == "dream":  # output i - 1 predicts token i
        logits = torch.cat([logits[:, :1], logits[:, :-1]], 1)
    expect = torch.log_softmax(logits[..., [5, 6, 7]], -1)
    masked = tokens == 3
    assert torch.allclose(den(tokens)[masked], expect[masked], atol=1e-6)


def test_diffusion_lm_bad_arguments(saved_models):
    paths, _ = saved_models
    with pytest.raises(MdmprobError, match="style"):
        HuggingFaceMLM.from_diffusion_lm(str(paths["llada"]), ["a", "b"], 2, style="mdlm")
    with pytest.raises(MdmprobError, match="auto class"):
        HuggingFaceMLM.from_diffusion_lm(str(paths["llada"]), ["a", "b"], 2,
                                         model_class="NoSuchModel")
    with pytest.raises(MdmprobError, match="not a single token"):
        HuggingFaceMLM.from_diffusion_lm(str(paths["llada"]), ["a", "zz"], 2,
                                         model_class="AutoModelForMaskedLM",
                                         trust_remote_code=False)


def test_from_pretrained_wraps_cls_and_sep(saved_models):
    paths, _ = saved_models
    den = HuggingFaceMLM.from_pretrained(str(paths["llada"]), ["a", "b", "c"], 3)
    assert den.prefix == [2] and den.suffix == [3] and den.shift == 0


def test_the_audit_runs_a_sampler_on_a_hugging_face_model(bert):
    """A real (tiny, random) masked LM behind the OracleLM: the audit compares the sampler
    with the preset's exact law on the same model and with the structure's p."""
    from pathlib import Path

    from mdmprob import load_model
    from mdmprob.audit import audit

    structure = load_model("markov_chain", length=N, vocab=3)
    den = HuggingFaceMLM(bert, TOKEN_MAP, N, MASK, prefix=[CLS], suffix=[SEP])
    sampler = f"{Path(__file__).parent / 'samplers' / 'good.py'}:speculative"
    report = audit(sampler, structure, samples=300, batch=100, presets=["sequential"],
                   denoiser=den, size_check=0)
    assert report.passed, report.summary()
    assert report.finding("law").message.startswith("vs sequential")
