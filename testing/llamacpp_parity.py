"""llama.cpp parity for a model family: the same tiny GGUF through llama.cpp and through Lantern.

llama.cpp (llama-cpp-python) is an independent implementation of every architecture Lantern builds. A
tiny random model of a family is written as a GGUF (tiny_model.write_gguf), llama.cpp computes every
position's logits from it, and Lantern imports the same file through its GGUF source, builds the q0f32
variant (the GGUF's own float32 weights, unrounded), compiles the CPU verification library and runs it
teacher-forced through the paged KV cache in prefill chunks (`prefill_all_logits`). A prompt longer
than the prefill chunk exercises chunked prefill; one longer than a sliding window exercises the window.
The numpy reference (the family's `Family.reference`) runs on the same weights as a third opinion,
and the only one where llama.cpp does not implement a feature (Mistral's window on GGUF arch `llama`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from build_pipeline.build import build, load_model
from build_pipeline.compiler.library import build_library
from build_pipeline.compiler.module import LibrarySettings
from build_pipeline.compiler.profiles import resolve_profiles
from build_pipeline.compiler.verify import CompiledModel
from build_pipeline.convert import dense_variant_params
from build_pipeline.families import Reference
from build_pipeline.model_config import load_model_config
from build_pipeline.quantization import get_scheme
from testing.tiny_model import vocab, write_gguf, write_hf_folder, write_model_config

PREFILL_CHUNK = 16
CONTEXT_WINDOW = 128
PROMPT_TOKENS = 40  # > PREFILL_CHUNK: three prefill chunks (16 + 16 + 8)
SCHEME = "q0f32"
GGML_TYPE_F32 = 0  # llama.cpp's KV cache in float32, so only the arithmetic order differs
# max |dlogit| allowed, relative to the logit range: both sides compute in float32 on the same float32
# weights (measured 1e-6..2e-6 of the range, i.e. ~5e-5 on logits of ~35), so 2e-4 leaves 100x headroom
# and still catches a feature computed differently (a missing RoPE scaling moves logits by ~1e-1..1e0).
TOLERANCE = 2e-4


def prompt_ids(n: int = PROMPT_TOKENS, seed: int = 1) -> list[int]:
    """A fixed run of ordinary (non-special) tokens of the tiny vocabulary."""
    return [int(t) for t in np.random.default_rng(seed).integers(3, len(vocab()), n)]


@dataclass(frozen=True)
class Parity:
    """Per-position logits of both implementations and how far apart they are."""

    ids: tuple[int, ...]
    llama_cpp: np.ndarray  # [positions, vocab]
    lantern: np.ndarray  # the compiled CPU build
    reference: np.ndarray  # the numpy reference on the variant's weights
    prefill_chunk: int
    seconds: dict[str, float]

    @property
    def max_abs_diff(self) -> float:
        return float(np.max(self.per_position()))

    @property
    def reference_diff(self) -> float:
        """max |dlogit| of the compiled build against the numpy reference (all positions)."""
        return float(np.max(np.abs(self.reference.astype(np.float64) - self.lantern)))

    @property
    def scale(self) -> float:
        return float(max(1.0, np.max(np.abs(self.llama_cpp))))

    @property
    def tolerance(self) -> float:
        """TOLERANCE scaled by the logit range, as the build's own check (verify.py) scales its own."""
        return TOLERANCE * self.scale

    def per_position(self) -> np.ndarray:
        return np.max(np.abs(self.llama_cpp.astype(np.float64) - self.lantern), axis=-1)

    def summary(self) -> str:
        return (
            f"{len(self.lantern)} positions (prefill chunk {self.prefill_chunk}), max |dlogit| vs llama.cpp "
            f"{self.max_abs_diff:.2e}, vs numpy reference {self.reference_diff:.2e} (tolerance "
            f"{self.tolerance:.2e}, logit range {self.scale:.1f}); "
            + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
        )


def llama_cpp_logits(gguf: Path, ids: list[int], n_ctx: int = CONTEXT_WINDOW) -> np.ndarray:
    """llama.cpp's logits at every position of `ids` (one batch, float32 KV cache)."""
    from webapp.fallback.engine_worker import load_llama  # the AMX-safe loader; imports llama_cpp (heavy)

    llm = load_llama(str(gguf), n_ctx, 2, logits_all=True, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def lantern_build(
    source: Path, family: str, root: Path, prefill_chunk: int = PREFILL_CHUNK, context_window: int = CONTEXT_WINDOW
) -> tuple[CompiledModel, Reference]:
    """Lantern's CPU verification build of `source` (a GGUF file or an HF folder) and the family's numpy
    reference on the same variant weights.

    The compiled library is cached by compiler/cache.py (keyed by config, scheme and compiler sources)."""
    root.mkdir(parents=True, exist_ok=True)
    spec = load_model_config(
        write_model_config(
            root / "model.toml",
            source,
            quantizations=(SCHEME,),
            model_id=f"tiny-{family}",
            source_type="gguf" if source.is_file() else "hf-folder",
            family=family,
            context_window=context_window,
            prefill_chunk_size=prefill_chunk,
        )
    )
    variant = build(spec, root / "out", [SCHEME], compile_library=False)[0]
    model, scheme = load_model(spec), get_scheme(SCHEME)
    profile = resolve_profiles(None, scheme)[0]
    settings = LibrarySettings(context_window, prefill_chunk, profile.name)
    lib, _, _ = build_library(model.family, model.config, scheme, settings, profile, "llvm")
    return CompiledModel(lib, variant), model.family.reference(model.config, dense_variant_params(variant))


def lantern_logits(
    source: Path,
    family: str,
    ids: list[int],
    root: Path,
    prefill_chunk: int = PREFILL_CHUNK,
    context_window: int = CONTEXT_WINDOW,
) -> tuple[np.ndarray, np.ndarray]:
    """Every position's logits of the compiled build (`prefill_chunk` tokens at a time) and the reference's."""
    compiled, reference = lantern_build(source, family, root, prefill_chunk, context_window)
    return compiled.all_logits(ids, context_window), reference.forward(ids)


def lantern_weights_logits(
    source,
    family_name: str,
    ids: list[int],
    root: Path,
    prefill_chunk: int = PREFILL_CHUNK,
    context_window: int = CONTEXT_WINDOW,
    scheme_name: str = SCHEME,
) -> tuple[np.ndarray, np.ndarray]:
    """lantern_logits for an opened source without a tokenizer Lantern can rebuild (a real GGUF used for
    architecture parity only): the variant's shards are written by the build's own write_params, the
    library is the same CPU verification build; no chat config or manifest."""
    from types import SimpleNamespace

    from build_pipeline.families import get_family
    from build_pipeline.stages.shards import write_params
    from build_pipeline.stages.source import LoadedModel

    family = get_family(family_name)
    config = family.config_from_hf(source.hf_config)
    scheme = get_scheme(scheme_name)
    variant = root / "variant"
    variant.mkdir(parents=True, exist_ok=True)
    # write_params reads only the spec's id (for its progress bar).
    write_params(LoadedModel(SimpleNamespace(id=family_name), source, family, config), scheme, variant)
    profile = resolve_profiles(None, scheme)[0]
    settings = LibrarySettings(context_window, prefill_chunk, profile.name)
    lib, _, _ = build_library(family, config, scheme, settings, profile, "llvm")
    reference = family.reference(config, dense_variant_params(variant))
    return CompiledModel(lib, variant).all_logits(ids, context_window), reference.forward(ids)


def run_parity(
    family: str,
    root: Path,
    ids: list[int] | None = None,
    prefill_chunk: int = PREFILL_CHUNK,
    lantern_source: str = "gguf",
    **features,
) -> Parity:
    """Write the tiny `family` model (config.json `features`, e.g. rope_scaling) as a GGUF for llama.cpp
    and compare. Lantern imports that same GGUF, or (`lantern_source="hf"`) the same weights as an HF
    folder, for features the GGUF of the family cannot carry (Mistral's window: its GGUF arch is llama)."""
    ids = ids or prompt_ids()
    root.mkdir(parents=True, exist_ok=True)
    gguf = write_gguf(root / f"tiny-{family}.gguf", family=family, **features)
    source = gguf if lantern_source == "gguf" else write_hf_folder(root / "hf", family=family, **features)
    t0 = time.monotonic()
    theirs = llama_cpp_logits(gguf, ids)
    t1 = time.monotonic()
    ours, reference = lantern_logits(source, family, ids, root / "lantern", prefill_chunk)
    t2 = time.monotonic()
    return Parity(tuple(ids), theirs, ours, reference, prefill_chunk, {"llama.cpp": t1 - t0, "lantern": t2 - t1})
