"""The artifact contract (build_pipeline/contract.py): the manifest reads back typed and checked, and every
fact /api/models derives from it (files, library and download size per adapter kind, file roles, device
limits) equals what the manifest and the files on disk say, over real HTTP on loopback."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path

import pytest

from build_pipeline.contract import (
    CHAT_CONFIG_FILE,
    MANIFEST_FILE,
    SHARD_PREFIX,
    TENSOR_CACHE_FILE,
    TOKENIZER_FILE,
    WEBLLM_DEVICE_FLOOR,
    ManifestError,
    load_manifest,
    parse_manifest,
)
from testing.fixtures import copy_models

MODEL = "tiny-llama"
WASM_MAGIC = b"\0asm\x01\0\0\0"


def _add_libraries(variant_dir: Path) -> dict[str, bytes]:
    """Give an f32 variant the two libraries a compiled build has (stand-in bytes of different sizes)."""
    libs = {
        "library": (f"{MODEL}-q4f32_1-webgpu-gpu.wasm", WASM_MAGIC + b"g" * 3000),
        "software_library": (f"{MODEL}-q4f32_1-webgpu-swiftshader.wasm", WASM_MAGIC + b"s" * 1700),
    }
    raw = json.loads((variant_dir / MANIFEST_FILE).read_text())
    for key, (name, data) in libs.items():
        (variant_dir / name).write_bytes(data)
        raw[key] = {"file": name, "profile": key}
        raw["files"].append({"path": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    (variant_dir / MANIFEST_FILE).write_text(json.dumps(raw))
    return {key: data for key, (_, data) in libs.items()}


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url) as r:
        return r.read()


def test_api_derived_facts_equal_the_manifest_and_the_files(serve, tiny_site_models, tmp_path):
    models = copy_models(tiny_site_models, tmp_path / "models")
    libs = _add_libraries(models / MODEL / "q4f32_1")
    server = serve(models)
    [model] = json.loads(_get(server.url + "/api/models"))["models"]
    assert {v["quantization"] for v in model["variants"]} == {"q4f16_1", "q4f32_1"}
    for v in model["variants"]:
        vdir = models / MODEL / v["quantization"]
        raw = json.loads((vdir / MANIFEST_FILE).read_text())
        lib_files = {key: raw[key]["file"] for key in ("library", "software_library") if raw.get(key)}
        for kind, keep in (("hardware", "library"), ("software", "software_library")):
            view = v["adapters"][kind]
            # The library this adapter runs (the hardware one when there is no software build) ...
            expect_lib = lib_files.get(keep) or lib_files.get("library")
            assert (view["library"] or {}).get("file") == expect_lib
            # ... and the files it downloads: all the manifest lists but the other kind's library.
            expect = [f["path"] for f in raw["files"] if f["path"] not in set(lib_files.values()) - {expect_lib}]
            assert [f["path"] for f in view["files"]] == expect
            on_disk = 0
            for f in view["files"]:
                data = _get(server.url + v["base_url"] + f["path"])  # what a browser really receives
                assert len(data) == f["bytes"] == (vdir / f["path"]).stat().st_size
                assert hashlib.sha256(data).hexdigest() == f["sha256"]
                on_disk += len(data)
            assert view["download_bytes"] == on_disk
            roles = {f["path"]: f["role"] for f in view["files"]}
            assert roles[CHAT_CONFIG_FILE] == "chat_config" and roles[TENSOR_CACHE_FILE] == "tensor_cache"
            assert roles[TOKENIZER_FILE] == "tokenizer"
            shards = [p for p in roles if p.startswith(SHARD_PREFIX)]
            assert shards and all(roles[p] == "weights" for p in shards)
            assert [p for p, r in roles.items() if r == "library"] == ([expect_lib] if expect_lib else [])
        # The top level is the hardware view, and the build's own figure is the same number (for q4f32_1,
        # the build's figure plus the hardware library added here after it).
        added = len(libs["library"]) if lib_files else 0
        assert v["download_bytes"] == v["adapters"]["hardware"]["download_bytes"] == raw["download_bytes"] + added
        assert v["files"] == v["adapters"]["hardware"]["files"]
        # Device limits: the model's own needs, never below what web-llm requests of every device.
        assert set(v["required_limits"]) == set(raw["required_limits"]) | set(WEBLLM_DEVICE_FLOOR)
        for name, need in v["required_limits"].items():
            assert need == max(raw["required_limits"].get(name, 0), WEBLLM_DEVICE_FLOOR.get(name, 0))
    f32 = next(v for v in model["variants"] if v["quantization"] == "q4f32_1")
    hardware, software = f32["adapters"]["hardware"], f32["adapters"]["software"]
    gap = len(libs["library"]) - len(libs["software_library"])
    assert hardware["download_bytes"] - software["download_bytes"] == gap
    if model["cpu"]:  # the CPU tier: its GGUF (or its parts, in load order) and chat config, by role
        cpu = model["cpu"]
        roles = {f["role"]: f for f in cpu["files"]}
        assert [f["path"] for f in cpu["files"] if f["role"] == "gguf"] == cpu["gguf_parts"]
        assert cpu["gguf_parts"][0] == cpu["gguf"] and roles["chat_config"]["path"] == CHAT_CONFIG_FILE
        assert cpu["download_bytes"] == sum(len(_get(server.url + cpu["base_url"] + f["path"])) for f in cpu["files"])


def test_the_built_manifest_reads_back_typed(tiny_site_models):
    m = load_manifest(tiny_site_models / MODEL / "q4f32_1")
    assert m.model == MODEL and m.quantization == "q4f32_1" and m.library is None
    assert m.download_bytes == sum(f["bytes"] for f in m.files)
    assert parse_manifest(m.to_json()) == m


@pytest.mark.parametrize(
    "change, says",
    [
        ({"context_window": "2048"}, "context_window"),
        ({"files": [{"path": "../secret", "bytes": 1, "sha256": "00"}]}, "plain file name"),
        ({"files": [{"path": "a.bin", "bytes": 1}]}, "files[0]: missing 'sha256'"),
        ({"library": {"profile": "gpu"}}, "library: missing 'file'"),
        ({"required_limits": {"maxBufferSize": True}}, "required_limits.maxBufferSize"),
    ],
)
def test_a_malformed_manifest_is_refused_naming_the_field(tiny_site_models, change, says):
    raw = json.loads((tiny_site_models / MODEL / "q4f32_1" / MANIFEST_FILE).read_text())
    with pytest.raises(ManifestError, match=says.replace("[", r"\[").replace("]", r"\]")):
        parse_manifest({**raw, **change})
    missing = dict(raw)
    del missing["id"]
    with pytest.raises(ManifestError, match="missing field 'id'"):
        parse_manifest(missing)
