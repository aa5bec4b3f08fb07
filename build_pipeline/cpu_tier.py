"""The in-browser CPU tier: the model's GGUF run by llama.cpp compiled to WebAssembly (wllama) in a
browser without a usable GPU — private like the WebGPU path, slower than a real GPU, much faster than a
software WebGPU adapter.

Its weights are the very tensors of the model.gguf the server fallback runs, so a CPU-tier answer and a
server answer come from the same bytes. A GGUF larger than PART_MAX_BYTES is served to the browser as
llama.cpp "gguf-split" parts (gguf_split.py), each with its own SHA-256, which wllama loads together;
the server keeps the whole file. This module states what the tier downloads and needs of a device (one
source of truth: the manifest carries it, the site serves it, the page only loads the listed parts in
order and compares the needs with what the browser reports).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from build_pipeline.atomic import replace_dir
from build_pipeline.contract import CPU_TIER_PARTS_DIR
from build_pipeline.errors import BuildError
from build_pipeline.gguf_split import split_gguf

ENGINE = "wllama"
ENGINE_VERSION = "2.3.7"  # npm @wllama/wllama, vendored into static/vendor/wllama by the Makefile
# wasm32 linear memory ends at 4 GiB; wllama's llama.cpp also needs room for its own heap and threads.
WASM_MEMORY_LIMIT = 4 * 1024**3
KV_BYTES_PER_VALUE = 2  # llama.cpp's default f16 KV cache
RUNTIME_OVERHEAD_BYTES = 96 * 1024**2  # compute buffers, logits, wasm runtime (measured ~60-80 MB for 135M)
# Measured (bench/cpu_tier_bench.py, 2-core machine, SmolLM2-135M): wllama decodes ~8x faster than
# WebGPU on SwiftShader, so on a software adapter the page prefers this tier.
PREFERRED_ON_SOFTWARE_ADAPTER = True

# The largest GGUF file the browser is given: 512 MB, decimal (512,000,000 B), as wllama's README
# recommends ("chunks of maximum 512MB", the unit of `llama-gguf-split --split-max-size 512M`) and as
# issue 19 asks (<= 512 MB). Decimal is the stricter reading, so a part meets either (< 488.3 MiB).
# Smaller parts also keep each download, hash and Cache entry small; wllama streams each part into its
# wasm heap, so splitting costs no memory.
PART_MAX_BYTES = 512_000_000
# wllama's hard limit per file: llama.cpp reads it through wasm32 ftell (a signed 32-bit long).
WLLAMA_FILE_LIMIT = 2**31 - 1
# Tests and benches override the limit (e.g. split the 100 MB SmolLM2 GGUF into 3 parts); never the site.
PART_MAX_BYTES_ENV = "LANTERN_CPU_PART_MAX_BYTES"
PARTS_DIR = CPU_TIER_PARTS_DIR  # <out>/<model>/cpu-gguf/model-0000i-of-0000n.gguf, beside model.gguf
PARTS_STEM = "model"
PARTS_SIDECAR = "parts.json"  # what the parts were split from (rebuilds reuse them); never served
SPLIT_VERSION = 1  # bump when gguf_split's output for the same input changes


def part_max_bytes() -> int:
    raw = os.environ.get(PART_MAX_BYTES_ENV)
    if not raw:
        return PART_MAX_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 0 < value <= WLLAMA_FILE_LIMIT:
        raise BuildError(
            f"{PART_MAX_BYTES_ENV}={raw!r} is not a part size wllama can load",
            f"use a number of bytes from 1 to {WLLAMA_FILE_LIMIT}, or unset it for {PART_MAX_BYTES}",
        )
    return value


def kv_cache_bytes(model_config, context_window: int) -> int:
    """K and V for every layer at the full context window."""
    per_token = 2 * model_config.num_hidden_layers * model_config.num_key_value_heads * model_config.head_dim
    return per_token * context_window * KV_BYTES_PER_VALUE


def cpu_tier(model_config, context_window: int, server_gguf: dict | None) -> dict | None:
    """The manifest's `cpu_tier` block: what the browser downloads and how much memory it needs.

    `gguf` is the whole model.gguf (the server's); `parts` is what wllama loads, in order: that file
    itself when it fits in one part, else its gguf-split parts (staged_parts below). None when the model
    has no GGUF (nothing for llama.cpp to run) or would not fit wasm32 memory.
    """
    if not server_gguf:
        return None
    split = server_gguf.get("cpu_parts")
    if split is None:
        limit = part_max_bytes()
        if int(server_gguf["bytes"]) > limit:
            return None  # too big for one part and not split (the build warned why)
        split = whole_file(server_gguf, limit)
    parts = split["parts"]
    # wllama copies every part into its wasm heap: the parts' bytes, not the whole file's, are resident.
    ram = sum(p["bytes"] for p in parts) + kv_cache_bytes(model_config, context_window) + RUNTIME_OVERHEAD_BYTES
    if ram > WASM_MEMORY_LIMIT:
        return None
    return {
        "engine": ENGINE,
        "engine_version": ENGINE_VERSION,
        "gguf": {
            "path": server_gguf["path"],
            "bytes": int(server_gguf["bytes"]),
            "sha256": server_gguf["sha256"],
            "type": server_gguf.get("type"),
        },
        "parts": [{"path": p["path"], "bytes": int(p["bytes"]), "sha256": p["sha256"]} for p in parts],
        "part_max_bytes": split["part_max_bytes"],
        "context_window": context_window,
        "ram_bytes": ram,
        "preferred_on_software_adapter": PREFERRED_ON_SOFTWARE_ADAPTER,
    }


def whole_file(server_gguf: dict, limit: int) -> dict:
    """The split of a GGUF that fits in one part: the file itself (no second copy on disk)."""
    part = {"path": server_gguf["path"], "bytes": int(server_gguf["bytes"]), "sha256": server_gguf["sha256"]}
    return {"part_max_bytes": limit, "parts": [part]}


# ------------------------------------------------------------------------------- the parts on disk
def prepare_parts(gguf_file: Path, server_gguf: dict, model_dir: Path) -> tuple[dict, Path | None]:
    """(the `cpu_parts` split description, a staged parts dir to commit or None when nothing is to write).

    `gguf_file` holds the bytes `server_gguf` describes (the staged or the current model.gguf). Entry
    paths are relative to a variant dir, like the GGUF's own (`../cpu-gguf/model-00001-of-00002.gguf`).
    """
    limit = part_max_bytes()
    model_dir = Path(model_dir)
    if int(server_gguf["bytes"]) <= limit:
        return whole_file(server_gguf, limit), None
    key = {"version": SPLIT_VERSION, "source_sha256": server_gguf["sha256"], "part_max_bytes": limit}
    current = _read_sidecar(model_dir / PARTS_DIR)
    if current and current.get("key") == key and _parts_present(model_dir / PARTS_DIR, current["parts"]):
        return _split_entry(limit, current["parts"]), None
    staged = Path(tempfile.mkdtemp(prefix=f".{PARTS_DIR}.tmp-", dir=model_dir))
    try:
        os.chmod(staged, 0o755)
        written = split_gguf(gguf_file, staged, limit, PARTS_STEM)
        too_big = [p for p in written if p.bytes > WLLAMA_FILE_LIMIT]
        if too_big:
            raise BuildError(
                f"{too_big[0].path.name} would be {too_big[0].bytes} bytes: one tensor is larger than wllama "
                f"can load from a file ({WLLAMA_FILE_LIMIT} bytes)",
                "use a smaller quantization of this model for the CPU tier",
            )
        parts = [{"path": p.path.name, "bytes": p.bytes, "sha256": p.sha256} for p in written]
        (staged / PARTS_SIDECAR).write_text(json.dumps({"key": key, "parts": parts}, indent=1))
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return _split_entry(limit, parts), staged


def commit_parts(model_dir: Path, staged: Path | None, split: dict) -> None:
    """Put staged parts in place in one rename; a model whose GGUF is now one part drops old parts."""
    final = Path(model_dir) / PARTS_DIR
    if staged is not None:
        replace_dir(staged, final)
    elif len(split["parts"]) == 1 and final.exists():
        shutil.rmtree(final, ignore_errors=True)


def discard_parts(staged: Path | None) -> None:
    if staged is not None:
        shutil.rmtree(staged, ignore_errors=True)


def _split_entry(limit: int, parts: list[dict]) -> dict:
    return {
        "part_max_bytes": limit,
        "parts": [{**p, "path": f"../{PARTS_DIR}/{p['path']}"} for p in parts],
    }


def _read_sidecar(parts_dir: Path) -> dict | None:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((parts_dir / PARTS_SIDECAR).read_text())
        if isinstance(data, dict) and isinstance(data.get("parts"), list):
            return data
    return None


def _parts_present(parts_dir: Path, parts: list[dict]) -> bool:
    try:
        return all((parts_dir / p["path"]).stat().st_size == p["bytes"] for p in parts)
    except (OSError, KeyError, TypeError):
        return False
