"""The real default model: GGUF import, tokenizer parity with llama.cpp, and the numpy reference's answers."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Tokenizer

from build_pipeline.build import load_model
from build_pipeline.chat_config import build_chat_config
from build_pipeline.chat_template import format_prompt, render
from build_pipeline.convert import convert, dense_params
from build_pipeline.model_config import load_model_config
from build_pipeline.paths import model_configs_dir
from build_pipeline.quantization import SCHEMES
from build_pipeline.reference import ReferenceModel

FRANCE = "What is the capital of France?"


@pytest.fixture(scope="module")
def smollm2():
    spec = load_model_config(model_configs_dir() / "smollm2-135m-instruct.toml")
    return load_model(spec)


@pytest.fixture(scope="module")
def tokenizer(smollm2):
    return Tokenizer.from_str(smollm2.source.tokenizer_files["tokenizer.json"].decode())


@pytest.fixture(scope="module")
def conv(smollm2):
    return build_chat_config(smollm2.spec, smollm2.source, smollm2.config, SCHEMES["q4f32_1"])["conv_template"]


@pytest.fixture(scope="module")
def llama_vocab(smollm2_gguf):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(smollm2_gguf), vocab_only=True, verbose=False)


PARITY_STRINGS = [
    "Hello world! 12345",
    "3.14159 and 2,000,000 dollars; 1st 22nd 333rd",
    "   leading spaces\n\n\ntrailing   \t",
    "I'm sure they'll say we've done it",
    "def f(x):\n    return {k: v**2 for k, v in x.items()}  # comment",
    "ünïcödé — «quotes» 日本語 русский عربى 🙂👍🏽",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><file_sep>x<repo_name>",
    "a" * 60 + " " + "ab" * 30,
]


@pytest.mark.parametrize("text", PARITY_STRINGS)
def test_tokenizer_ids_equal_llama_cpp(tokenizer, llama_vocab, text):
    ours = tokenizer.encode(text).ids
    theirs = llama_vocab.tokenize(text.encode(), add_bos=False, special=True)
    assert ours == theirs
    assert tokenizer.decode(ours, skip_special_tokens=False) == text


def test_config_from_gguf_metadata(smollm2):
    c = smollm2.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads) == (30, 576, 9, 3)
    assert (c.head_dim, c.intermediate_size, c.vocab_size, c.rope_theta) == (64, 1536, 49152, 100000.0)
    assert c.tie_word_embeddings


def test_conv_template_reproduces_the_jinja_template(smollm2, conv):
    msgs = [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"), ("user", FRANCE)]
    jinja = render(
        smollm2.source.chat_template,
        [{"role": r, "content": c} for r, c in msgs],
        {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"},
    )
    assert format_prompt(conv, msgs) == jinja
    assert conv["system_message"] == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert conv["stop_str"] == ["<|im_end|>"] and conv["stop_token_ids"] == [2]
    assert conv["system_prefix_token_ids"] is None


@pytest.fixture(scope="module")
def float_reference(smollm2):
    params = dense_params(
        (n, a) for n, a, _ in convert(smollm2.source, smollm2.config, smollm2.family, SCHEMES["q0f32"])
    )
    return ReferenceModel(smollm2.config, params)


def _answer(model, tokenizer, conv, question, n=16):
    ids = tokenizer.encode(format_prompt(conv, [("user", question)])).ids
    return tokenizer.decode(model.generate_greedy(ids, n, stop_ids=conv["stop_token_ids"]))


def test_reference_answers_france(float_reference, tokenizer, conv):
    assert _answer(float_reference, tokenizer, conv, FRANCE) == "The capital of France is Paris."


def test_reference_matches_llama_cpp_logits(smollm2_gguf, float_reference, tokenizer, conv):
    """llama.cpp runs the same GGUF with its own (permuted-q/k) kernels: its next-token logits must agree
    with ours, which only happens when the importer un-permutes q/k correctly."""
    pytest.importorskip("llama_cpp")
    from webapp.fallback.engine_worker import load_llama

    llm = load_llama(str(smollm2_gguf), 256, 2, logits_all=True)
    ids = tokenizer.encode(format_prompt(conv, [("user", FRANCE)])).ids
    llm.eval(ids)
    theirs = np.array(llm.scores[: len(ids)], dtype=np.float32)
    float_reference.reset()
    ours = float_reference.forward(ids)
    corr = min(np.corrcoef(a, b)[0, 1] for a, b in zip(ours, theirs, strict=True))
    assert corr > 0.98, corr  # measured 0.999; skipping the un-permute drops it far below
    assert np.mean(np.argmax(ours, -1) == np.argmax(theirs, -1)) > 0.9  # near-ties may flip (measured 0.95-1.0)


def test_skipping_the_unpermute_breaks_the_model(smollm2, float_reference, tokenizer, conv):
    """The same check in reverse: re-permuting q/k rows (what a missing un-permute leaves) changes the answer."""
    from build_pipeline.sources.gguf_file import unpermute_rows

    def permute(w, heads):  # llama.cpp's order, i.e. the inverse of unpermute_rows
        rows = w.shape[0]
        return w.reshape(heads, 2, rows // heads // 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)

    c = smollm2.config
    broken = dict(float_reference.p)
    q_rows = c.num_attention_heads * c.head_dim
    k_rows = c.num_key_value_heads * c.head_dim
    for i in range(c.num_hidden_layers):
        name = f"model.layers.{i}.self_attn.qkv_proj.weight"
        w = broken[name]
        q, k, v = w[:q_rows], w[q_rows : q_rows + k_rows], w[q_rows + k_rows :]
        assert np.array_equal(unpermute_rows(permute(q, c.num_attention_heads), c.num_attention_heads), q)
        broken[name] = np.concatenate([permute(q, c.num_attention_heads), permute(k, c.num_key_value_heads), v])
    answer = _answer(ReferenceModel(c, broken), tokenizer, conv, FRANCE)
    assert answer != "The capital of France is Paris."


def test_q4f32_reference_stays_coherent(smollm2, float_reference, tokenizer, conv):
    params = dense_params(
        (n, a) for n, a, _ in convert(smollm2.source, smollm2.config, smollm2.family, SCHEMES["q4f32_1"])
    )
    q4 = ReferenceModel(smollm2.config, params)
    for question, word in ((FRANCE, "Paris"), ("What is the capital of Germany?", "Berlin")):
        answer = _answer(q4, tokenizer, conv, question)
        assert word in answer, answer
    # Across a prompt plus some text, the float model's choice stays among the 4-bit model's top 5
    # (measured 0.82; argmax agreement alone is ~0.6: Q4_1 weights re-quantized to MLC's q4 lose more).
    ids = tokenizer.encode(
        format_prompt(conv, [("user", "Name three colors.")])
        + "Here are three colors: red, green and blue. The sky is blue."
    ).ids
    float_reference.reset()
    q4.reset()
    a, b = float_reference.forward(ids), q4.forward(ids)
    top5 = np.argsort(b, -1)[:, -5:]
    in_top5 = np.mean([t in row for t, row in zip(np.argmax(a, -1), top5, strict=True)])
    assert in_top5 > 0.7, in_top5
