"""A tiny random model of any Llama-shaped family, written in the layouts Lantern imports (HF folder,
GGUF), for fast real tests.

Two layers, hidden 64, GQA 4/2 heads, a byte-level BPE tokenizer with ChatML specials. Weights are
seeded, so every writer below produces the same model. `family` picks the architecture (llama, qwen2 =
+ q/k/v bias, qwen3 = + per-head q/k norms, mistral = + sliding window); `extra` config.json keys add
features (e.g. rope_scaling, sliding_window).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from build_pipeline.families import get_family

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("r", "e")]
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-in for each byte 0..255 (byte-level BPE's alphabet)."""
    keep = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def vocab() -> list[str]:
    return SPECIALS + byte_symbols() + ["".join(m) for m in MERGES]


HF_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "mistral": "MistralForCausalLM",
}
# What llama.cpp calls each family in GGUF `general.architecture` (Mistral GGUFs are `llama`).
GGUF_ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "mistral": "llama"}


def hf_config(tie: bool = True, qkv_bias: bool = False, family: str | None = None, **extra) -> dict:
    family = family or ("qwen2" if qkv_bias else "llama")
    return {
        "architectures": [HF_ARCHITECTURES[family]],
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": len(vocab()),
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": tie,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
        **extra,
    }


def tiny_llama_config(**extra):
    """The tiny Llama's parsed family config (context 512), for tests that compile without weights."""
    from build_pipeline.families import get_family

    return get_family("llama").config_from_hf(hf_config(max_position_embeddings=512, **extra))


def weights(cfg: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """HF-named float32 weights; sizes large enough that greedy choices are not near-ties."""
    rng = np.random.default_rng(seed)
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd, nh, nkv = cfg["head_dim"], cfg["num_attention_heads"], cfg["num_key_value_heads"]

    def mat(rows, cols, std):
        return (rng.standard_normal((rows, cols)) * std).astype(np.float32)

    w = {"model.embed_tokens.weight": mat(v, h, 1.0)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        w[f"{p}.input_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(h)).astype(np.float32)
        w[f"{p}.self_attn.q_proj.weight"] = mat(nh * hd, h, 0.2)
        w[f"{p}.self_attn.k_proj.weight"] = mat(nkv * hd, h, 0.2)
        w[f"{p}.self_attn.v_proj.weight"] = mat(nkv * hd, h, 0.2)
        if cfg["architectures"] == ["Qwen2ForCausalLM"]:
            for name, rows in (("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)):
                w[f"{p}.self_attn.{name}_proj.bias"] = (0.1 * rng.standard_normal(rows)).astype(np.float32)
        if cfg["architectures"] == ["Qwen3ForCausalLM"]:
            for name in "qk":
                w[f"{p}.self_attn.{name}_norm.weight"] = (1 + 0.3 * rng.standard_normal(hd)).astype(np.float32)
        w[f"{p}.self_attn.o_proj.weight"] = mat(h, nh * hd, 0.2)
        w[f"{p}.post_attention_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(h)).astype(np.float32)
        w[f"{p}.mlp.gate_proj.weight"] = mat(f, h, 0.2)
        w[f"{p}.mlp.up_proj.weight"] = mat(f, h, 0.2)
        w[f"{p}.mlp.down_proj.weight"] = mat(h, f, 0.2)
    w["model.norm.weight"] = (1 + 0.1 * rng.standard_normal(h)).astype(np.float32)
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = mat(v, h, 0.5)
    return w


def tokenizer_json() -> dict:
    toks = vocab()
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": t,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for i, t in enumerate(SPECIALS)
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(toks)},
            "merges": [f"{a} {b}" for a, b in MERGES],
        },
    }


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """The safetensors format by hand (8-byte header length, JSON header, raw little-endian data)."""
    header, offset, blobs = {}, 0, []
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr).tobytes()
        header[name] = {
            "dtype": {"float32": "F32", "float16": "F16"}[str(arr.dtype)],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for b in blobs:
            f.write(b)


def write_hf_folder(
    folder: Path, seed: int = 0, tie: bool = True, qkv_bias: bool = False, family: str | None = None, **extra
) -> Path:
    """A Hugging Face model folder (what snapshot_download leaves on disk)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = hf_config(tie, qkv_bias, family, **extra)
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    write_safetensors(folder / "model.safetensors", weights(cfg, seed))
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json(), ensure_ascii=False))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<|im_start|>",
                "eos_token": "<|im_end|>",
                "pad_token": "<|im_end|>",
                "add_bos_token": False,
                "chat_template": CHAT_TEMPLATE,
            }
        )
    )
    return folder


def _permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert-time q/k row interleave (the inverse of what the importer undoes)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def add_shape_metadata(writer, cfg: dict, name: str) -> None:
    """The GGUF metadata every family's writer sets the same way from config.json keys."""
    writer.add_name(name)
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_head_count_kv(cfg["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_rope_freq_base(cfg["rope_theta"])


def write_gguf(
    path: Path, seed: int = 0, types: dict[str, str] | None = None, family: str = "llama", tie: bool = True, **extra
) -> Path:
    """The same model as a llama.cpp GGUF (F32 tensors, q/k permuted for arch llama, tokenizer + template
    in metadata), written the way llama.cpp's convert_hf_to_gguf.py lays each feature out.

    `types` quantizes tensors with gguf's own quantizer: {GGUF tensor-name suffix: type name}, e.g.
    {"attn_q.weight": "Q4_1", "token_embd.weight": "Q8_0"}. `extra` are config.json keys (see hf_config)."""
    from testing import tiny_families  # the non-Llama families' writer (it imports this module: imported here)

    if family in tiny_families.FAMILIES:
        return tiny_families.write_gguf(path, family, seed, **extra)
    import gguf

    cfg = hf_config(tie, family=family, **extra)
    w = weights(cfg, seed)
    arch = GGUF_ARCHITECTURES[family]
    writer = gguf.GGUFWriter(str(path), arch)
    add_shape_metadata(writer, cfg, f"tiny-{family}")
    writer.add_rope_dimension_count(cfg["head_dim"])
    writer.add_vocab_size(cfg["vocab_size"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab())
    writer.add_token_types([3] * len(SPECIALS) + [1] * (len(vocab()) - len(SPECIALS)))
    writer.add_token_merges([f"{a} {b}" for a, b in MERGES])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    if cfg.get("sliding_window"):
        writer.add_sliding_window(cfg["sliding_window"])
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    block = {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
        "self_attn.q_norm.weight": "attn_q_norm.weight",
        "self_attn.k_norm.weight": "attn_k_norm.weight",
        **{f"self_attn.{p}_proj.bias": f"attn_{p}.bias" for p in "qkv"},
    }
    types = types or {}

    def add(gguf_name: str, arr: np.ndarray) -> None:
        kind = types.get(gguf_name.split(".", 2)[-1] if gguf_name.startswith("blk.") else gguf_name)
        if kind is None:
            writer.add_tensor(gguf_name, arr)
            return
        qtype = gguf.GGMLQuantizationType[kind]
        q = gguf.quants.quantize(arr, qtype)
        writer.add_tensor(gguf_name, q, raw_shape=q.shape, raw_dtype=qtype)

    for name, arr in w.items():
        if name in names:
            add(names[name], arr)
            continue
        _, _, i, rest = name.split(".", 3)
        if arch == "llama" and rest == "self_attn.q_proj.weight":
            arr = _permute_rows(arr, cfg["num_attention_heads"])
        elif arch == "llama" and rest == "self_attn.k_proj.weight":
            arr = _permute_rows(arr, cfg["num_key_value_heads"])
        add(f"blk.{i}.{block[rest]}", arr)
    if (cfg.get("rope_scaling") or {}).get(
        "rope_type"
    ) == "llama3":  # Llama-3 RoPE: llama.cpp divides each frequency by a `rope_freqs` entry
        config = get_family(family).config_from_hf(cfg)
        plain = get_family(family).config_from_hf({**cfg, "rope_scaling": None})
        writer.add_tensor("rope_freqs.weight", (plain.rope_inv_freq() / config.rope_inv_freq()).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def write_model_config(
    path: Path,
    source: Path,
    quantizations=("q4f32_1",),
    model_id: str = "tiny-llama",
    context_window: int = 256,
    prefill_chunk_size: int = 64,
    source_type: str = "hf-folder",
    family: str = "llama",
    max_ratio: float = 1e6,
    eval_tokens: int = 256,
) -> Path:
    """A model_configs/*.toml for the tiny model (absolute source path).

    The random model's perplexity is astronomical and any rounding moves it a lot, so its quality gate
    is opened wide by default (tests of the gate itself pass a real `max_ratio`); 256 evaluation
    tokens keep the gate fast."""
    quants = ", ".join(f'"{q}"' for q in quantizations)
    Path(path).write_text(
        f'id = "{model_id}"\nname = "Tiny test Llama"\nfamily = "{family}"\nlicense = "Apache-2.0"\n'
        f"quantizations = [{quants}]\ncontext_window = {context_window}\nprefill_chunk_size = {prefill_chunk_size}\n"
        f'\n[source]\ntype = "{source_type}"\npath = "{Path(source).resolve()}"\n'
        f"\n[generation]\ntemperature = 0.0\ntop_p = 1.0\n"
        f"\n[quality]\nmax_ratio = {float(max_ratio)}\neval_tokens = {int(eval_tokens)}\n"
    )
    return Path(path)
