"""Stage 4, compile: the variant's WebGPU model libraries (.wasm) for web-llm 0.2.86, into the variant dir.

One library per build profile (`gpu`, plus `swiftshader` for f32 variants; see compiler/profiles.py),
each compiled, checked against the profile's device limits and linked by compiler/library.py, or reused
from the library cache. Returns one manifest entry per library, hardware default first.
"""

from __future__ import annotations

import shutil
import time
from importlib import metadata
from pathlib import Path

from build_pipeline.compiler.library import WASM_TARGET_HOST, build_library
from build_pipeline.compiler.module import LibrarySettings
from build_pipeline.compiler.profiles import Profile, resolve_profiles
from build_pipeline.contract import library_file_name


def settings_for(model, profile: Profile) -> LibrarySettings:
    return LibrarySettings(model.spec.context_window, model.spec.prefill_chunk_size, profile.name)


def compile_libraries(model, scheme, variant_dir: Path, profile: str | None = None) -> list[dict]:
    """Build the variant's WebGPU libraries into `variant_dir`; one manifest entry per library."""
    start = time.monotonic()
    entries = []
    for prof in resolve_profiles(profile, scheme):
        lib, info, from_cache = build_library(
            model.family, model.config, scheme, settings_for(model, prof), prof, "webgpu"
        )
        name = library_file_name(model.spec.id, scheme.name, prof.name)
        shutil.copyfile(lib, Path(variant_dir) / name)
        entries.append(
            {
                "file": name,
                "profile": prof.name,
                "profile_description": prof.description,
                "target": "webgpu",
                "host": WASM_TARGET_HOST["mtriple"],
                "kernels": info.get("kernels"),
                "largest_kernel": info.get("largest_kernel"),
                "max_storage_buffers": info.get("max_storage_buffers"),
                "max_invocations": info.get("max_invocations"),
                "max_workgroup_storage_bytes": info.get("max_workgroup_storage_bytes"),
                "cache_key": info["key"],
                "tvm": metadata.version("apache-tvm"),
                "from_cache": from_cache,
                "compile_seconds": info.get("total_seconds"),
            }
        )
    for entry in entries:
        entry["seconds"] = round(time.monotonic() - start, 2)
    return entries
