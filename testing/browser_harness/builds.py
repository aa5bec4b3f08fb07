"""Built variants for the compiler / verify / browser tests (real pipeline, shared compile cache).

The compiled libraries live in the normal cache (<repo>/.cache/model-libs or $LANTERN_CACHE_DIR), so
only the first run of a test session on a machine compiles and links; later builds of the same
model take seconds (quantize, copy the cached .wasm, verify on the cached CPU library).
"""

from __future__ import annotations

from pathlib import Path

from testing.tiny_model import write_hf_folder, write_model_config


def tiny_spec(root: Path, quantizations=("q4f32_1",), qkv_bias: bool = False, tie: bool = True,
              model_id: str = "tiny-llama", family: str | None = None, hf_extra: dict | None = None, **config_kw):
    """A ModelSpec for the tiny random model (written under `root`); `hf_extra`: more config.json keys."""
    from build_pipeline.model_config import load_model_config

    root = Path(root)
    family = family or ("qwen2" if qkv_bias else "llama")
    hf = write_hf_folder(root / f"hf-{model_id}", tie=tie, qkv_bias=qkv_bias, family=family, **(hf_extra or {}))
    cfg = write_model_config(root / f"{model_id}.toml", hf, quantizations=quantizations, model_id=model_id,
                             family=family, **config_kw)
    return load_model_config(cfg)


def build(spec, quantization: str, out_root: Path, compile_library: bool = True, profile: str | None = None) -> Path:
    """Build one variant with the real pipeline (build.py, every stage); returns its dir."""
    from build_pipeline.build import build_variant, load_model

    return build_variant(load_model(spec), quantization, Path(out_root), compile_library, profile=profile)


def smollm2_spec():
    from build_pipeline.model_config import load_model_config
    from build_pipeline.paths import model_configs_dir

    return load_model_config(model_configs_dir() / "smollm2-135m-instruct.toml")


# Every lossless GGUF mapping the tiny model's sizes allow (K-quants need rows of 256): an 8-bit
# embedding (also the tied lm_head), q/k/v of two types fused into one 8-bit weight, 4-bit with and
# without a minimum, and an 8-bit down projection.
TINY_GGUF_TYPES = {"token_embd.weight": "Q8_0", "attn_q.weight": "Q4_1", "attn_k.weight": "Q4_1",
                   "attn_v.weight": "Q5_0", "attn_output.weight": "Q4_0", "ffn_gate.weight": "Q4_1",
                   "ffn_up.weight": "Q4_1", "ffn_down.weight": "Q8_0"}


def tiny_quantized_gguf_spec(root: Path, **config_kw):
    """The tiny model as a GGUF with quantized tensors (TINY_GGUF_TYPES), built as q4f32_asym."""
    from build_pipeline.model_config import load_model_config
    from testing.tiny_model import write_gguf

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = write_gguf(root / "tiny-q.gguf", types=TINY_GGUF_TYPES)
    cfg = write_model_config(root / "tiny-q.toml", path, quantizations=("q4f32_asym",), model_id="tiny-gguf-q",
                             source_type="gguf", **config_kw)
    return load_model_config(cfg)
