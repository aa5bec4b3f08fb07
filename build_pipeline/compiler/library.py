"""One model library: compile the nn.Module for a target (WebGPU+wasm32 or the CPU), check and link it,
through the library cache (cache.py). The compile stage (stages/compile.py) builds the WebGPU ones; the
verify and quality stages build the CPU (llvm) one of the same definition."""

from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from importlib import metadata
from pathlib import Path

from build_pipeline import gpu_needs, model_package
from build_pipeline.compiler import cache, limits
from build_pipeline.compiler.profiles import Profile
from build_pipeline.compiler.wasm_runtime import WasmBuildError, link_model_library
from build_pipeline.errors import BuildError
from build_pipeline.paths import cache_dir

WASM_TARGET_HOST = {"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"}
LIB_FILE_IN_CACHE = {"webgpu": "model.wasm", "llvm": "model.so"}


def log(msg: str) -> None:
    print(f"[compiler] {msg}", file=sys.stderr, flush=True)


def webgpu_target():
    import tvm  # heavy (TVM): only when compiling

    return tvm.target.Target({"kind": "webgpu", "host": WASM_TARGET_HOST})


# The CPU verification build targets a fixed, portable x86-64 baseline (x86-64-v3: AVX2, FMA, F16C, BMI2;
# the same one as the server engine's llama.cpp build), never this machine's own CPU: native f16
# conversions (F16C) make f16 variants' quality gate ~2.5x faster, and the library still runs on any
# machine of the last decade. Elsewhere (no such CPU, another architecture): LLVM's generic target.
X86_64_BASELINE = "haswell"
X86_64_BASELINE_FLAGS = frozenset({"avx2", "fma", "f16c", "bmi2"})


def cpu_baseline() -> str | None:
    """The `mcpu` of the CPU verification build: the portable baseline when this CPU has it, else None."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return None
    return X86_64_BASELINE if flags >= X86_64_BASELINE_FLAGS else None


def cpu_target():
    import tvm  # heavy (TVM): only when compiling

    baseline = cpu_baseline()
    return tvm.target.Target({"kind": "llvm", **({"mcpu": baseline} if baseline else {})})


def library_metadata(config, scheme, settings, params, profile: Profile) -> dict:
    """`_metadata` JSON (web-llm reads params/prefill_chunk_size/kv_state_kind, and `artifact` when the
    variant ships a model package; the rest is for mlc parity)."""
    needs = gpu_needs.needs(config, scheme, settings.context_window, settings.prefill_chunk_size, params)
    return {
        "model_type": config.family,
        "quantization": scheme.name,
        "context_window_size": settings.context_window,
        "sliding_window_size": -1,
        "attention_sink_size": -1,
        "prefill_chunk_size": settings.prefill_chunk_size,
        "tensor_parallel_shards": 1,
        "pipeline_parallel_stages": 1,
        "kv_state_kind": "kv_cache",
        "max_batch_size": 1,
        "params": [{"name": n, "shape": s, "dtype": d, "preprocs": []} for n, s, d in params],
        "artifact": model_package.compiled_program(params, needs),
        "lantern": {
            "profile": profile.name,
            "compiler": cache.compiler_fingerprint()[:16],
            "tvm": metadata.version("apache-tvm"),
        },
    }


def compile_executable(family, config, scheme, settings, profile: Profile, target):
    """(relax VMExecutable, metadata dict) for `target` (webgpu+wasm32 or llvm)."""
    import tvm  # heavy (TVM), and so are these two modules that import it: only when compiling

    from build_pipeline.compiler.module import export_ir
    from build_pipeline.compiler.pipeline import build_pipeline

    mod, params = export_ir(family, config, scheme, target, settings)
    meta = library_metadata(config, scheme, settings, params, profile)
    try:
        ex = _compile(tvm, mod, target, build_pipeline(target, profile, meta), {})
    except tvm.error.InternalError as exc:
        if CSE_FAILURE not in str(exc):
            raise
        log("TVM's TIR common-subexpression elimination failed on this model's kernels; compiling without it")
        ex = _compile(tvm, mod, target, build_pipeline(target, profile, meta), {"tirx.disable_cse_tir": True})
    return ex, meta


# TVM 0.27's TIR common-subexpression elimination breaks the paged KV cache's prefill kernels
# (batch_prefill_paged_kv / _ragged_kv) for some head layouts: Llama-3 RoPE scaling at head_dim 64 with
# 4 query heads per KV head (Llama-3.2-1B's shapes), 4 query heads on one KV head at head_dim 16, ... The
# kernels compile without that pass (for WebGPU and the CPU alike; shader compilers eliminate common
# subexpressions themselves), so such a model is compiled again without it.
CSE_FAILURE = "has been used before definition"


def _compile(tvm, mod, target, pipeline, config: dict):
    current = tvm.transform.PassContext.current()
    with tvm.transform.PassContext(opt_level=current.opt_level, config={**current.config, **config}):
        return tvm.compile(mod, target=target, relax_pipeline=pipeline)


def webgpu_source(ex) -> str:
    """All WGSL of a webgpu executable (the webgpu module is nested under the llvm host module)."""
    return ex.mod.imports_[0].imports_[0].inspect_source()


def _check_emcc() -> None:
    if shutil.which("emcc") is None:
        raise BuildError(
            "emcc (emscripten) is not installed, so the WebGPU model library cannot be linked",
            "install Debian's emscripten (`make system-deps` or apt-get install emscripten), "
            "or build with --no-compile",
        )


def build_library(family, config, scheme, settings, profile: Profile, kind: str = "webgpu") -> tuple[Path, dict, bool]:
    """Compile (or reuse from the cache) a library; returns (path in cache, info, from_cache)."""
    settings_desc = settings.to_dict() if kind == "webgpu" else {**settings.to_dict(), "cpu": cpu_baseline()}
    key, desc = cache.library_key(kind, config.to_dict(), scheme.cache_name(), settings_desc, profile.revision)
    if scheme.formats:
        desc["weight_formats"] = dict(scheme.formats)
    filename = LIB_FILE_IN_CACHE[kind]
    hit = cache.lookup(key, filename)
    if hit:
        return hit[0], hit[1], True
    if kind == "webgpu":
        _check_emcc()
    with cache.key_lock(key):
        hit = cache.lookup(key, filename)  # another process may have built it meanwhile
        if hit:
            return hit[0], hit[1], True
        log(f"compiling {config.family} {scheme.name} for {kind} (profile {profile.name}); cache key {key}")
        start = time.monotonic()
        target = webgpu_target() if kind == "webgpu" else cpu_target()
        ex, meta = compile_executable(family, config, scheme, settings, profile, target)
        compiled = time.monotonic() - start
        info = {
            "key": key,
            "kind": kind,
            "description": desc,
            "compile_seconds": round(compiled, 2),
            "param_names": [p["name"] for p in meta["params"]],
        }
        with cache.staged_entry(key) as tmp:
            if kind == "webgpu":
                _finish_webgpu(ex, tmp / filename, info, scheme, profile)
            else:
                ex.export_library(str(tmp / filename))
            info["total_seconds"] = round(time.monotonic() - start, 2)
            info["bytes"] = (tmp / filename).stat().st_size
            (tmp / cache.INFO_FILE).write_text(json.dumps(info, indent=1))
        log(f"{kind} library ready in {info['total_seconds']:.1f} s ({info['bytes']:,} bytes)")
        for old in cache.prune():
            log(f"removed least recently used cached library {old}")
        return cache.libs_root() / key / filename, info, False


def _finish_webgpu(ex, out: Path, info: dict, scheme, profile: Profile) -> None:
    stats = limits.analyze(webgpu_source(ex))
    limits.check(stats, profile.limits, profile.name, allow_f16=scheme.needs_shader_f16)
    largest = max(stats, key=lambda k: k.lines)
    info["kernels"] = len(stats)
    info["largest_kernel"] = {"name": largest.name, "lines": largest.lines}
    info["max_storage_buffers"] = max(k.storage_buffers for k in stats)
    info["max_invocations"] = max(k.invocations for k in stats)
    info["max_workgroup_storage_bytes"] = max(k.workgroup_storage_bytes for k in stats)
    info["kernel_stats"] = [k.to_dict() for k in stats]
    link_start = time.monotonic()
    try:
        link_model_library(ex, out, cache_dir())
    except WasmBuildError as err:
        raise BuildError(
            f"linking the WebGPU model library failed: {err}",
            "check the emscripten install (emcc --version) and the message above",
        ) from err
    info["link_seconds"] = round(time.monotonic() - link_start, 2)
