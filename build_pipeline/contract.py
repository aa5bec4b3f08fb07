"""The artifact contract: every file a built variant holds, the manifest's typed shape, and the facts
derived from it, defined once.

The pipeline writes these files, the site serves them and /api/models hands the page the derived facts
(download size and library per adapter kind, device limits, file roles), so the page computes none of
them. What web-llm 0.2.86 itself expects of the files is documented in docs/webllm_contract.md.
This module imports nothing else from the pipeline, so any module (and the site) can depend on it.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal, TypedDict

# ---------------------------------------------------------------------------------------- file names
MANIFEST_FILE = "lantern-manifest.json"  # Lantern's own description of a variant (this module's Manifest)
CHAT_CONFIG_FILE = "mlc-chat-config.json"  # web-llm: tokenizing, prompting, sampling (chat_config.py)
TENSOR_CACHE_FILE = "tensor-cache.json"  # web-llm: the weight shards' index (tensor_cache.py)
SHARD_PREFIX = "params_shard_"  # web-llm: params_shard_<n>.bin, listed in the tensor cache
PACKAGE_MANIFEST_FILE = "mlc-model-manifest.json"  # web-llm's optional model package (model_package.py)
TOKENIZER_FILE = "tokenizer.json"  # the tokenizer web-llm loads (tokenizer_files in the chat config)
VERIFY_FILE = "verify.json"  # the build's parity report (compiler/verify.py); never served
SERVER_GGUF_FILE = "model.gguf"  # llama.cpp weights, one per model beside its variants (gguf_export.py)
SERVER_GGUF_SIDECAR = "model.gguf.json"  # what that GGUF was exported from (gguf_export.py)
CPU_TIER_PARTS_DIR = "cpu-gguf"  # beside model.gguf: its gguf-split parts for the browser (cpu_tier.py)


def library_file_name(model_id: str, scheme_name: str, profile: str) -> str:
    """The WebGPU model library of one build profile (compiler/profiles.py)."""
    return f"{model_id}-{scheme_name}-webgpu-{profile}.wasm"


# ---------------------------------------------------------------------------------------- file roles
# What each served file is for: the page maps a role to web-llm's cache scope and integrity entry.
Role = Literal[
    "chat_config",
    "package_manifest",
    "tensor_cache",
    "weights",
    "tokenizer",
    "library",
    "software_library",
    "gguf",
    "other",
]

# ---------------------------------------------------------------------------------------- devices
# Limits web-llm 0.2.86 requests for every model when it creates its GPUDevice (it fails if the adapter
# offers less, whatever the model): our kernels must fit them and the page must check them up front.
WEBLLM_DEVICE_FLOOR: dict[str, int] = {
    "maxBufferSize": 256 * 1024 * 1024,
    "maxStorageBufferBindingSize": 128 * 1024 * 1024,
    "maxComputeWorkgroupStorageSize": 32768,
    "maxStorageBuffersPerShaderStage": 10,
    "maxComputeInvocationsPerWorkgroup": 256,
}

Adapter = Literal["hardware", "software"]
ADAPTERS: tuple[Adapter, ...] = ("hardware", "software")


# ---------------------------------------------------------------------------------------- manifest
SCHEMA_VERSION = 1  # of lantern-manifest.json; bump when a reader could misread an older one


class FileEntry(TypedDict):
    path: str
    bytes: int
    sha256: str


class _LibraryReport(TypedDict, total=False):
    profile: str  # compiler/profiles.py
    target: str
    kernels: int


class LibraryEntry(_LibraryReport):
    """One compiled WebGPU library. `file` is the only key the site needs; the rest is the compiler's
    report (compiler.compile_variant: profile, kernels, verify, ...), kept as written."""

    file: str


class ServerGguf(TypedDict):
    """The model's llama.cpp weights, relative to the variant dir (`../model.gguf`)."""

    path: str
    bytes: int
    sha256: str


class CpuTierGguf(ServerGguf):
    type: str | None  # the GGUF's main tensor type (Q8_0, ...)


class CpuTierPart(TypedDict):
    """One file wllama loads, relative to the variant dir: `../model.gguf` itself, or one of its
    gguf-split parts (`../cpu-gguf/model-00001-of-00003.gguf`)."""

    path: str
    bytes: int
    sha256: str


class _CpuTierSplit(TypedDict, total=False):
    # What the browser downloads and wllama loads, in this order; absent in older manifests (the whole GGUF).
    parts: list[CpuTierPart]
    part_max_bytes: int


class CpuTierNeeds(_CpuTierSplit):
    """The in-browser CPU tier (wllama) and what it needs of the device (cpu_tier.py)."""

    engine: str
    engine_version: str
    gguf: CpuTierGguf  # the whole GGUF (the server's)
    context_window: int
    ram_bytes: int
    preferred_on_software_adapter: bool


class ManifestError(ValueError):
    """A lantern-manifest.json that does not have the contract's shape."""


@dataclass(frozen=True)
class Manifest:
    """lantern-manifest.json. Written by manifest.build_manifest, read only through load_manifest."""

    id: str
    model: str
    name: str
    family: str
    quantization: str
    context_window: int
    prefill_chunk_size: int
    param_count: int
    bits_per_param: float
    download_bytes: int  # hardware adapter's download (download_bytes(..., "hardware"))
    required_features: list[str]
    required_limits: dict[str, int]  # the model's own needs; device_limits() adds web-llm's floor
    estimated_gpu_memory_bytes: int
    files: list[FileEntry]
    schema_version: int = SCHEMA_VERSION
    license: str | None = None
    default: bool = False
    weight_formats: dict = field(default_factory=dict)
    quality: dict | None = None
    package_manifest: str | None = None
    library: LibraryEntry | None = None
    software_library: LibraryEntry | None = None
    server_gguf: ServerGguf | None = None
    cpu_tier: CpuTierNeeds | None = None
    # The per-device answer check (probe.py): prompt, token count and the verified CPU build's tokens.
    probe: dict | None = None

    def to_json(self) -> dict:
        return asdict(self)

    # ------------------------------------------------------------------ derived facts (one place)
    def library_for(self, adapter: Adapter) -> LibraryEntry | None:
        return library_for(adapter, self.library, self.software_library)

    def files_for(self, adapter: Adapter) -> list[FileEntry]:
        return files_for(adapter, self.files, self.library, self.software_library)

    def device_limits(self) -> dict[str, int]:
        """The limits a device must offer: the model's own, raised to web-llm's floor."""
        out = dict(WEBLLM_DEVICE_FLOOR)
        for name, value in self.required_limits.items():
            out[name] = max(out.get(name, 0), int(value))
        return out

    def role_of(self, path: str) -> Role:
        return file_role(path, self.library, self.software_library, self.package_manifest)


def library_for(
    adapter: Adapter, library: LibraryEntry | None, software_library: LibraryEntry | None
) -> LibraryEntry | None:
    """The library an adapter kind runs: software adapters (SwiftShader) get theirs when there is one."""
    return software_library if adapter == "software" and software_library else library


def files_for(
    adapter: Adapter, files: list[FileEntry], library: LibraryEntry | None, software_library: LibraryEntry | None
) -> list[FileEntry]:
    """What a browser with this adapter kind downloads: every file but the other kind's library."""
    keep = library_for(adapter, library, software_library)
    others = {lib["file"] for lib in (library, software_library) if lib and lib is not keep}
    return [f for f in files if f["path"] not in others]


def download_bytes(files: list[FileEntry]) -> int:
    return sum(f["bytes"] for f in files)


def file_role(
    path: str,
    library: LibraryEntry | None = None,
    software_library: LibraryEntry | None = None,
    package_manifest: str | None = None,
) -> Role:
    if path == CHAT_CONFIG_FILE:
        return "chat_config"
    if package_manifest and path == package_manifest:
        return "package_manifest"
    if path == TENSOR_CACHE_FILE:
        return "tensor_cache"
    if path == TOKENIZER_FILE:
        return "tokenizer"
    if library and path == library["file"]:
        return "library"
    if software_library and path == software_library["file"]:
        return "software_library"
    if path.startswith(SHARD_PREFIX):
        return "weights"
    if path.endswith(".gguf"):
        return "gguf"
    return "other"


def is_plain_name(path: object) -> bool:
    """A file name directly in the variant dir: the only kind the manifest may list (and the site serve)."""
    return isinstance(path, str) and path not in ("", ".", "..") and "/" not in path and "\\" not in path


def parse_manifest(data: bytes | str | dict) -> Manifest:
    """The typed manifest, or ManifestError saying which field is wrong. Unknown keys are ignored."""
    try:
        raw = json.loads(data) if isinstance(data, (bytes, str)) else data
    except ValueError as exc:
        raise ManifestError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ManifestError("not a JSON object")
    hints = typing.get_type_hints(Manifest)
    values = {}
    for f in fields(Manifest):
        if f.name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:  # a required field
                raise ManifestError(f"missing field {f.name!r}")
            continue
        _check(raw[f.name], hints[f.name], f.name)
        values[f.name] = raw[f.name]
    manifest = Manifest(**values)
    for entry in manifest.files:
        if not is_plain_name(entry["path"]):
            raise ManifestError(f"files: {entry['path']!r} is not a plain file name")
    return manifest


def load_manifest(variant_dir: Path) -> Manifest:
    return parse_manifest((Path(variant_dir) / MANIFEST_FILE).read_bytes())


def _check(value, hint, where: str) -> None:
    """Raise ManifestError unless `value` has the JSON shape of the type hint `hint`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for arg in options[:-1]:
            try:
                return _check(value, arg, where)
            except ManifestError:
                continue
        return _check(value, options[-1], where)
    if hint is type(None):
        if value is not None:
            raise ManifestError(f"{where}: expected null")
        return
    if typing.is_typeddict(hint):
        if not isinstance(value, dict):
            raise ManifestError(f"{where}: expected an object")
        sub = typing.get_type_hints(hint)
        for key in hint.__required_keys__:
            if key not in value:
                raise ManifestError(f"{where}: missing {key!r}")
        for key, sub_hint in sub.items():
            if key in value:
                _check(value[key], sub_hint, f"{where}.{key}")
        return
    if origin is list:
        if not isinstance(value, list):
            raise ManifestError(f"{where}: expected a list")
        for i, item in enumerate(value):
            _check(item, args[0], f"{where}[{i}]")
        return
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ManifestError(f"{where}: expected an object")
        if args:
            for key, item in value.items():
                _check(item, args[1], f"{where}.{key}")
        return
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise ManifestError(f"{where}: {value!r} is not {getattr(hint, '__name__', hint)}")
