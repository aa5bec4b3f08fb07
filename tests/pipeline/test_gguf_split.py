"""The CPU tier's GGUF parts (gguf_split.py, cpu_tier.py): llama.cpp gguf-split parts of at most the
limit, byte-exact copies of the source's metadata and tensors, reproducible, written atomically by the
build, listed with a SHA-256 each in the manifest, served by the site in load order, and loaded by
llama.cpp exactly like the whole file."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from gguf import GGUFReader

from build_pipeline import cpu_tier
from build_pipeline.build import build
from build_pipeline.contract import CPU_TIER_PARTS_DIR, SERVER_GGUF_FILE
from build_pipeline.errors import BuildError
from build_pipeline.gguf_split import part_names, split_gguf
from build_pipeline.model_config import load_model_config
from testing.tiny_model import write_gguf, write_hf_folder, write_model_config

SPLIT_KEYS = {"split.no", "split.count", "split.tensors.count"}


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return write_gguf(tmp_path_factory.mktemp("split-src") / "tiny.gguf")


def kvs(reader: GGUFReader) -> dict:
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_parts_are_llama_cpp_splits_of_the_exact_bytes(tiny_gguf, tmp_path):
    size = tiny_gguf.stat().st_size
    limit = size // 3
    parts = split_gguf(tiny_gguf, tmp_path, limit)
    assert len(parts) >= 3
    assert [p.path.name for p in parts] == part_names("model", len(parts))
    assert parts[0].path.name == f"model-00001-of-{len(parts):05d}.gguf"
    source = GGUFReader(tiny_gguf)
    readers = [GGUFReader(p.path) for p in parts]
    for i, (part, reader) in enumerate(zip(parts, readers, strict=True)):
        assert part.bytes == part.path.stat().st_size <= limit  # the whole file, metadata included
        assert part.sha256 == sha256(part.path)
        assert part.tensors == len(reader.tensors) > 0
        fields = kvs(reader)
        assert {k: fields[k] for k in SPLIT_KEYS} == {
            "split.no": i,
            "split.count": len(parts),
            "split.tensors.count": len(source.tensors),
        }
        # The first part carries all of the source's metadata, the others only the split keys.
        assert fields == ({**kvs(source), **fields} if i == 0 else {k: fields[k] for k in SPLIT_KEYS})
    # Every tensor once, in the source's order, with its exact type, shape and bytes.
    got = [t for r in readers for t in r.tensors]
    assert [t.name for t in got] == [t.name for t in source.tensors]
    for a, b in zip(got, source.tensors, strict=True):
        assert a.tensor_type == b.tensor_type and list(a.shape) == list(b.shape)
        assert np.asarray(a.data).tobytes() == np.asarray(b.data).tobytes()


def test_split_is_reproducible(tiny_gguf, tmp_path):
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        runs.append(split_gguf(tiny_gguf, tmp_path / name, tiny_gguf.stat().st_size // 2))
    first, second = runs
    assert [(p.path.name, p.bytes, p.sha256) for p in first] == [(p.path.name, p.bytes, p.sha256) for p in second]
    assert all(a.path.read_bytes() == b.path.read_bytes() for a, b in zip(first, second, strict=True))


def test_a_tensor_larger_than_the_limit_gets_a_part_to_itself(tiny_gguf, tmp_path):
    biggest = max(GGUFReader(tiny_gguf).tensors, key=lambda t: t.n_bytes)
    parts = split_gguf(tiny_gguf, tmp_path, biggest.n_bytes // 2)
    over = [p for p in parts if p.bytes > biggest.n_bytes // 2]
    assert over and all(p.tensors == 1 for p in over)
    assert sum(p.tensors for p in parts) == len(GGUFReader(tiny_gguf).tensors)


def test_a_split_gguf_is_not_split_again(tiny_gguf, tmp_path):
    parts = split_gguf(tiny_gguf, tmp_path, tiny_gguf.stat().st_size // 2)
    with pytest.raises(BuildError, match="already one part"):
        split_gguf(parts[0].path, tmp_path / "again", 10**9)


def test_llama_cpp_loads_the_parts_like_the_whole_file(tiny_gguf, tmp_path):
    """From the first part's name alone (llama.cpp finds the others, checking split.no), same logits."""
    llama_cpp = pytest.importorskip("llama_cpp")
    parts = split_gguf(tiny_gguf, tmp_path, tiny_gguf.stat().st_size // 3)
    assert len(parts) >= 3
    logits = []
    for path in (tiny_gguf, parts[0].path):
        model = llama_cpp.Llama(str(path), n_ctx=64, n_threads=1, logits_all=True, verbose=False)
        tokens = model.tokenize(b"the cat in the hat", add_bos=False)
        model.eval(tokens)
        logits.append(np.array(model.scores[: len(tokens)]))
        model.close()
    assert np.array_equal(logits[0], logits[1])


def test_llama_cpp_refuses_parts_missing_or_out_of_order(tiny_gguf, tmp_path):
    """What the page relies on: wllama hands llama.cpp the parts as a list (llama_model_load_from_splits),
    which loads only the complete set in split.no order, so a model that answers had every part."""
    import ctypes

    llama_cpp = pytest.importorskip("llama_cpp")
    paths = [str(p.path).encode() for p in split_gguf(tiny_gguf, tmp_path, tiny_gguf.stat().st_size // 3)]
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True  # the split checks happen before any tensor is read

    def loads(order: list[bytes]) -> bool:
        model = llama_cpp.llama_model_load_from_splits((ctypes.c_char_p * len(order))(*order), len(order), params)
        if model:
            llama_cpp.llama_model_free(model)
        return bool(model)

    assert loads(paths)
    assert not loads([paths[1], paths[0], *paths[2:]])
    assert not loads(paths[:-1])


def test_part_limit_override_is_checked(monkeypatch):
    monkeypatch.delenv(cpu_tier.PART_MAX_BYTES_ENV, raising=False)
    assert cpu_tier.part_max_bytes() == cpu_tier.PART_MAX_BYTES == 512_000_000
    monkeypatch.setenv(cpu_tier.PART_MAX_BYTES_ENV, "123456")
    assert cpu_tier.part_max_bytes() == 123456
    for bad in ("0", "-1", "lots", str(2**31)):
        monkeypatch.setenv(cpu_tier.PART_MAX_BYTES_ENV, bad)
        with pytest.raises(BuildError):
            cpu_tier.part_max_bytes()


# ------------------------------------------------------------------------------- through the build
def _tiny_build(tmp_path, monkeypatch, limit: int | None):
    if limit is None:
        monkeypatch.delenv(cpu_tier.PART_MAX_BYTES_ENV, raising=False)
    else:
        monkeypatch.setenv(cpu_tier.PART_MAX_BYTES_ENV, str(limit))
    config = write_model_config(tmp_path / "tiny.toml", write_hf_folder(tmp_path / "hf"), quantizations=["q4f32_1"])
    out = tmp_path / "models"
    build(load_model_config(config), out, compile_library=False)
    variant = out / "tiny-llama" / "q4f32_1"
    return out, variant, json.loads((variant / "lantern-manifest.json").read_text())


def test_build_lists_each_part_with_its_sha256_and_the_site_serves_them_in_order(tmp_path, monkeypatch):
    from webapp import create_app

    _, _, probe = _tiny_build(tmp_path / "probe", monkeypatch, None)
    whole = probe["cpu_tier"]["gguf"]["bytes"]
    # Small enough the tiny model's GGUF becomes 3+ parts.
    out, variant, manifest = _tiny_build(tmp_path / "split", monkeypatch, whole // 3)
    tier = manifest["cpu_tier"]
    parts = tier["parts"]
    assert tier["part_max_bytes"] == whole // 3 and len(parts) >= 3
    assert tier["gguf"]["path"] == f"../{SERVER_GGUF_FILE}"  # the server keeps the whole file
    for part in parts:
        path = (variant / part["path"]).resolve()
        assert path.parent == (out / "tiny-llama" / CPU_TIER_PARTS_DIR).resolve()
        assert part["bytes"] == path.stat().st_size <= tier["part_max_bytes"]
        assert part["sha256"] == sha256(path)
    assert tier["ram_bytes"] > sum(p["bytes"] for p in parts)
    assert not [p for p in (out / "tiny-llama").iterdir() if p.name.startswith(".")]  # nothing staged is left

    # A rebuild with the same GGUF and limit reuses the parts (same bytes, same files).
    stamps = {p["path"]: (variant / p["path"]).stat().st_mtime_ns for p in parts}
    build(load_model_config(tmp_path / "split" / "tiny.toml"), out, compile_library=False)
    again = json.loads((variant / "lantern-manifest.json").read_text())["cpu_tier"]
    assert again["parts"] == parts
    assert {p["path"]: (variant / p["path"]).stat().st_mtime_ns for p in parts} == stamps

    # The site: the parts, in order, as ordinary files of the tier, each with its own hash.
    client = create_app({"MODELS_DIR": str(out), "TESTING": True}).test_client()
    cpu = client.get("/api/models").get_json()["models"][0]["cpu"]
    names = [p["path"].rsplit("/", 1)[1] for p in parts]
    assert cpu["gguf_parts"] == names and cpu["gguf"] == names[0]
    assert cpu["part_max_bytes"] == tier["part_max_bytes"]
    files = {f["path"]: f for f in cpu["files"]}
    for part, name in zip(parts, names, strict=True):
        assert files[name]["role"] == "gguf" and files[name]["sha256"] == part["sha256"]
        body = client.get(cpu["base_url"] + name)
        assert body.status_code == 200 and hashlib.sha256(body.data).hexdigest() == part["sha256"]
    assert client.get(cpu["base_url"] + SERVER_GGUF_FILE).status_code == 404  # the browser gets the parts only
    assert client.get(cpu["base_url"] + cpu_tier.PARTS_SIDECAR).status_code == 404
    assert cpu["download_bytes"] == sum(f["bytes"] for f in cpu["files"])

    # Without the override the tiny GGUF is one part: the model.gguf itself, and old parts are dropped.
    _, variant, manifest = _tiny_build(tmp_path / "split", monkeypatch, None)
    assert manifest["cpu_tier"]["parts"] == [{k: manifest["cpu_tier"]["gguf"][k] for k in ("path", "bytes", "sha256")}]
    assert manifest["cpu_tier"]["part_max_bytes"] == cpu_tier.PART_MAX_BYTES
    assert not (out / "tiny-llama" / CPU_TIER_PARTS_DIR).exists()
