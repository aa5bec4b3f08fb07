"""Synthetic GGUFs at real model shapes (issue 19): the architecture, vocabulary size, special tokens,
chat template and llama.cpp Q4_K_M type mix of Llama-3.2-1B/3B, Qwen2.5-1.5B and Phi-3.5-mini, with
random weights. What a real file of that model costs the pipeline (memory, time, bytes, GPU limits)
depends on its shapes and block types, not on the trained values, so these stand in for the gated
or multi-GB originals in tests and `python -m bench scale`.

K-quant blocks are written as random bytes with bounded scales (gguf-py has no K-quant quantizer):
every block is valid for `gguf.quants.dequantize` and llama.cpp, and the weights come out with a
standard deviation of ~0.03-0.1, so activations stay finite through every layer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from testing.tiny_model import byte_symbols

MERGES = ["Ġ t", "h e", "i n"]  # a few byte-pair merges (their results are in the vocabulary)
# (block elements, block bytes) of the block types written here.
_BLOCKS = {"Q4_K": (256, 144), "Q6_K": (256, 210), "Q8_0": (32, 34), "Q5_0": (32, 22), "Q4_0": (32, 18)}

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
PHI3_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


@dataclass(frozen=True)
class RealShape:
    """One model's shapes as its config.json states them, and what its GGUF's tokenizer looks like."""

    name: str
    config: str  # model_configs/<config>: the real model config the synthetic file stands in for
    arch: str  # GGUF general.architecture
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tie: bool
    rope_theta: float
    eps: float
    pre: str  # tokenizer.ggml.pre
    specials: dict[int, str]  # id -> special token
    bos: int
    eos: int
    template: str
    qkv_bias: bool = False
    head_dim: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def params(self) -> int:
        """Parameter count (the figure model cards give)."""
        h, f, d = self.hidden, self.intermediate, self.dim
        attn = h * d * (self.heads + 2 * self.kv_heads) + self.heads * d * h
        per_layer = attn + 3 * h * f + 2 * h + (d * (self.heads + 2 * self.kv_heads) if self.qkv_bias else 0)
        return self.layers * per_layer + self.vocab * h * (1 if self.tie else 2) + h


def _llama3_specials() -> dict[int, str]:
    names = {
        0: "<|begin_of_text|>",
        1: "<|end_of_text|>",
        6: "<|start_header_id|>",
        7: "<|end_header_id|>",
        8: "<|eom_id|>",
        9: "<|eot_id|>",
    }
    return {128000 + i: names.get(i, f"<|reserved_special_token_{i}|>") for i in range(256)}


def _qwen2_specials() -> dict[int, str]:
    names = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [f"<|extra_{i}|>" for i in range(19)]
    return {151643 + i: t for i, t in enumerate(names)}


def _phi3_specials() -> dict[int, str]:
    names = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>"]
    names += ["<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>"]
    return {32000 + i: t for i, t in enumerate(names)}


LLAMA_32_1B = RealShape(
    "llama-3.2-1b", "llama-3.2-1b-instruct.toml", "llama", 2048, 8192, 16, 32, 8, 128256, True, 500000.0, 1e-5,
    "llama-bpe", _llama3_specials(), 128000, 128009, LLAMA3_TEMPLATE, head_dim=64,
    extra={"llama3_rope": (32.0, 1.0, 4.0, 8192)},
)  # fmt: skip
LLAMA_32_3B = RealShape(
    "llama-3.2-3b", "llama-3.2-1b-instruct.toml", "llama", 3072, 8192, 28, 24, 8, 128256, True, 500000.0, 1e-5,
    "llama-bpe", _llama3_specials(), 128000, 128009, LLAMA3_TEMPLATE, head_dim=128,
    extra={"llama3_rope": (32.0, 1.0, 4.0, 8192)},
)  # fmt: skip
QWEN25_15B = RealShape(
    "qwen2.5-1.5b", "qwen2.5-1.5b-instruct.toml", "qwen2", 1536, 8960, 28, 12, 2, 151936, True, 1000000.0, 1e-6,
    "qwen2", _qwen2_specials(), 151643, 151645, CHATML_TEMPLATE, qkv_bias=True,
)  # fmt: skip
PHI_35_MINI = RealShape(
    "phi-3.5-mini", "phi-3.5-mini-instruct.toml", "phi3", 3072, 8192, 32, 32, 32, 32064, False, 10000.0, 1e-5,
    # The real file's tokenizer is SentencePiece (tokenizer.ggml.model "llama"), which Lantern's GGUF route
    # cannot rebuild (it builds Phi-3.5 from the Hub folder's tokenizer.json): a byte-level BPE stands in.
    "default", _phi3_specials(), 1, 32007, PHI3_TEMPLATE,
    extra={"original_context": 4096, "context": 131072},
)  # fmt: skip
SHAPES = {s.name: s for s in (LLAMA_32_1B, QWEN25_15B, LLAMA_32_3B, PHI_35_MINI)}


def q4_k_m_type(tensor: str, layer: int, layers: int, in_dim: int) -> str:
    """llama.cpp's Q4_K_M choice for a tensor (llama-quant.cpp): Q6_K for the output/embedding and for
    attn_v/ffn_down in the "more bits" layers (first and last eighth, every third between), else Q4_K;
    rows that are not a multiple of 256 fall back to Q5_0 / Q8_0 as llama.cpp does."""
    more_bits = layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2
    if tensor in ("token_embd.weight", "output.weight") or (
        tensor in ("attn_v.weight", "ffn_down.weight") and more_bits
    ):
        kind = "Q6_K"
    else:
        kind = "Q4_K"
    if in_dim % 256:
        return "Q8_0" if kind == "Q6_K" else "Q5_0"
    return kind


def _f16_bytes(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16).view(np.uint8).reshape(-1, 2)


def random_blocks(kind: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """[rows, row bytes] of valid `kind` blocks with random integers and bounded scales."""
    elems, nbytes = _BLOCKS[kind]
    n = rows * cols // elems
    b = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    if kind == "Q4_K":  # d, dmin (f16), 12 bytes of 6-bit scales/mins (any bits are valid), 128 of nibbles
        b[:, 0:2] = _f16_bytes(rng.uniform(1e-4, 3e-4, n))
        b[:, 2:4] = _f16_bytes(rng.uniform(1e-4, 3e-4, n))
    elif kind == "Q6_K":  # 128 low nibbles, 64 high 2-bit pairs, 16 int8 scales, d (f16)
        b[:, 192:208] = rng.integers(-24, 25, size=(n, 16), dtype=np.int8).view(np.uint8)
        b[:, 208:210] = _f16_bytes(rng.uniform(8e-5, 1.5e-4, n))
    else:  # Q8_0 / Q5_0 / Q4_0: d (f16) first
        scale = {"Q8_0": 8e-4, "Q5_0": 5e-3, "Q4_0": 1e-2}[kind]
        b[:, 0:2] = _f16_bytes(rng.uniform(0.5 * scale, scale, n))
    return b.reshape(rows, cols // elems * nbytes)


def _tokens(shape: RealShape) -> tuple[list[str], list[int]]:
    """The vocabulary: byte symbols, filler tokens up to the first special id, the specials, padding."""
    symbols = byte_symbols() + ["".join(pair.split()) for pair in MERGES]
    first_special = min(shape.specials)
    tokens = symbols + [f"Ġtok{i}" for i in range(first_special - len(symbols))]
    types = [1] * len(tokens)
    for i in range(first_special, shape.vocab):
        tokens.append(shape.specials.get(i, f"[PAD{i}]"))
        types.append(3 if i in shape.specials else 4)
    return tokens, types


def _llama3_rope_freqs(shape: RealShape) -> np.ndarray:
    """llama.cpp's rope_freqs: the divisor of each rotary frequency under Llama-3 scaling."""
    factor, low, high, original = shape.extra["llama3_rope"]
    dim = shape.dim
    inv = 1.0 / shape.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    wavelen = 2 * np.pi / inv
    smooth = (original / wavelen - low) / (high - low)
    divisor = np.where(
        wavelen < original / high,
        1.0,
        np.where(wavelen > original / low, factor, 1.0 / ((1 - smooth) / factor + smooth)),
    )
    return divisor.astype(np.float32)


def write_gguf(path: Path, shape: RealShape, seed: int = 0) -> Path:
    """Write `shape` as a Q4_K_M-typed GGUF the way llama.cpp's converter lays it out; returns the path."""
    import gguf

    rng = np.random.default_rng(seed)
    path = Path(path)
    writer = gguf.GGUFWriter(str(path), shape.arch)
    writer.add_name(f"synthetic-{shape.name}")
    writer.add_block_count(shape.layers)
    writer.add_context_length(shape.extra.get("context", 131072))
    writer.add_embedding_length(shape.hidden)
    writer.add_feed_forward_length(shape.intermediate)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_layer_norm_rms_eps(shape.eps)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_rope_dimension_count(shape.dim)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    tokens, types = _tokens(shape)
    writer.add_vocab_size(shape.vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(shape.pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(shape.bos)
    writer.add_eos_token_id(shape.eos)
    writer.add_add_bos_token(shape.arch == "llama")
    writer.add_chat_template(shape.template)
    if shape.arch == "phi3":
        original = shape.extra["original_context"]
        writer.add_rope_scaling_orig_ctx_len(original)
        scale = shape.extra["context"] / original
        writer.add_rope_scaling_attn_factors(float(np.sqrt(1 + np.log(scale) / np.log(original))))
        half = shape.dim // 2
        writer.add_tensor("rope_factors_long.weight", np.linspace(1.0, 40.0, half, dtype=np.float32))
        writer.add_tensor("rope_factors_short.weight", np.linspace(1.0, 1.5, half, dtype=np.float32))
    if "llama3_rope" in shape.extra:
        writer.add_tensor("rope_freqs.weight", _llama3_rope_freqs(shape))

    def quantized(name: str, rows: int, cols: int, layer: int = 0) -> None:
        kind = q4_k_m_type(name.split(".", 2)[-1] if name.startswith("blk.") else name, layer, shape.layers, cols)
        qtype = gguf.GGMLQuantizationType[kind]
        raw = random_blocks(kind, rows, cols, rng)
        writer.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=qtype)

    def norm(name: str) -> None:
        writer.add_tensor(name, (1.0 + 0.05 * rng.standard_normal(shape.hidden)).astype(np.float32))

    h, f, d = shape.hidden, shape.intermediate, shape.dim
    quantized("token_embd.weight", shape.vocab, h)
    for i in range(shape.layers):
        norm(f"blk.{i}.attn_norm.weight")
        if shape.arch == "phi3":  # q/k/v and gate/up stored fused
            quantized(f"blk.{i}.attn_qkv.weight", d * (shape.heads + 2 * shape.kv_heads), h, i)
        else:
            quantized(f"blk.{i}.attn_q.weight", d * shape.heads, h, i)
            quantized(f"blk.{i}.attn_k.weight", d * shape.kv_heads, h, i)
            quantized(f"blk.{i}.attn_v.weight", d * shape.kv_heads, h, i)
        if shape.qkv_bias:
            for p, n in (("q", shape.heads), ("k", shape.kv_heads), ("v", shape.kv_heads)):
                writer.add_tensor(f"blk.{i}.attn_{p}.bias", (0.02 * rng.standard_normal(n * d)).astype(np.float32))
        quantized(f"blk.{i}.attn_output.weight", h, d * shape.heads, i)
        norm(f"blk.{i}.ffn_norm.weight")
        if shape.arch == "phi3":
            quantized(f"blk.{i}.ffn_up.weight", 2 * f, h, i)
        else:
            quantized(f"blk.{i}.ffn_gate.weight", f, h, i)
            quantized(f"blk.{i}.ffn_up.weight", f, h, i)
        quantized(f"blk.{i}.ffn_down.weight", h, f, i)
    norm("output_norm.weight")
    if not shape.tie:
        quantized("output.weight", shape.vocab, h)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def model_spec(gguf_path: Path, shape: RealShape, quantizations: tuple[str, ...] | None = None):
    """The real model config of `shape` (its id prefixed "synthetic-"), built from the synthetic file (the
    `--source-file` route); written next to the file."""
    from build_pipeline.model_config import load_model_config, with_source_file
    from build_pipeline.paths import model_configs_dir

    text = (model_configs_dir() / shape.config).read_text()
    text = re.sub(r'(?m)^id = ".*"$', f'id = "synthetic-{shape.name}"', text, count=1)
    text = re.sub(r'(?m)^name = ".*"$', f'name = "Synthetic {shape.name}"', text, count=1)
    if quantizations:
        text = re.sub(r"(?m)^quantizations = .*$", f"quantizations = {list(quantizations)!r}".replace("'", '"'), text)
    config = Path(gguf_path).with_suffix(".toml")
    config.write_text(text)
    return with_source_file(load_model_config(config), gguf_path)
