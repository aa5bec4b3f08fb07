"""GET /api/models: what is built, grouped by model, in the shape the page's variant chooser reads.

Everything comes from each variant's typed manifest (build_pipeline/contract.py); every fact the page
needs that follows from it (download size and library per adapter kind, the device limits including
web-llm's floor, each file's role) is derived here, once, so the page computes none of it. The site
adds only what it owns: the URLs and the content revision.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from build_pipeline.contract import ADAPTERS, FileEntry, LibraryEntry, download_bytes, file_role
from webapp.artifacts import CpuTier, Variant, store
from webapp.quality import describe as describe_quality

bp = Blueprint("models_api", __name__)


def files_base() -> str:
    """Where the browser fetches model files: this site ("") or MODEL_FILES_BASE_URL (a CDN mirroring /models/).
    Only the URLs change; the SHA-256 of every file still comes from this site's manifest."""
    return (current_app.config.get("MODEL_FILES_BASE_URL") or "").rstrip("/")


def _library(base_url: str, library: LibraryEntry | None) -> dict | None:
    return {"file": library["file"], "url": base_url + library["file"]} if library else None


def describe_variant(variant: Variant) -> dict:
    """A variant as the page uses it. `files`, `library` and `download_bytes` are the hardware adapter's
    view (`software_library` names the other library); `adapters` holds the view of each adapter kind,
    which the page picks by its adapter and takes as is."""
    m = variant.manifest
    base_url = files_base() + variant.base_path()

    def entries(files: list[FileEntry], library: LibraryEntry | None) -> list[dict]:
        # The library an adapter kind runs is, for that adapter, simply "library".
        return [
            {**f, "role": "library" if library and f["path"] == library["file"] else m.role_of(f["path"])}
            for f in files
        ]

    adapters = {}
    for kind in ADAPTERS:
        files, library = m.files_for(kind), m.library_for(kind)
        adapters[kind] = {
            "library": _library(base_url, library),
            "files": entries(files, library),
            "download_bytes": download_bytes(files),
        }
    hardware = adapters["hardware"]
    return {
        "id": m.id,
        "quantization": m.quantization,
        "context_window": m.context_window,
        "prefill_chunk_size": m.prefill_chunk_size,
        "param_count": m.param_count,
        "bits_per_param": m.bits_per_param,
        "required_features": m.required_features,
        # What the device must offer: the model's own needs raised to web-llm's floor.
        "required_limits": m.device_limits(),
        "estimated_gpu_memory_bytes": m.estimated_gpu_memory_bytes,
        "package_manifest": m.package_manifest,
        "revision": variant.revision,
        "base_url": base_url,
        "library": hardware["library"],
        "software_library": _library(base_url, m.software_library),
        "files": hardware["files"],
        "download_bytes": hardware["download_bytes"],
        "adapters": adapters,
        "generation": variant.generation,
        # Measured by the build (perplexity vs the unquantized model); the label is worded here, not on the page.
        "quality": describe_quality(m.quality),
        # The answer check the page runs on the first load on an adapter (build_pipeline/probe.py).
        "probe": m.probe,
    }


def describe_cpu_tier(tier: CpuTier) -> dict:
    """The in-browser CPU tier in the shape of a variant (the page's downloader and cache handle both)."""
    files = [{**f, "role": file_role(f["path"])} for f in tier.files.values()]
    # What wllama loads, in order: one GGUF, or its gguf-split parts (each an ordinary file of the tier).
    parts = [f["path"] for f in files if f["role"] == "gguf"]
    return {
        "id": tier.id,
        "tier": "cpu",
        "quantization": tier.needs["gguf"]["type"],
        "engine": tier.needs["engine"],
        "context_window": tier.needs["context_window"],
        "ram_bytes": tier.needs["ram_bytes"],
        "preferred_on_software_adapter": tier.needs["preferred_on_software_adapter"],
        "gguf": parts[0],
        "gguf_parts": parts,
        "part_max_bytes": tier.needs.get("part_max_bytes"),
        "download_bytes": download_bytes(list(tier.files.values())),
        "revision": tier.revision,
        "base_url": files_base() + tier.base_path(),
        "library": None,
        "software_library": None,
        "package_manifest": None,
        "required_features": [],
        "required_limits": {},
        "files": files,
    }


def catalog() -> dict:
    models: dict[str, dict] = {}
    for variant in store().scan():
        m = variant.manifest
        entry = models.setdefault(
            variant.model,
            {
                "id": variant.model,
                "name": m.name,
                "family": m.family,
                "license": m.license,
                "default": False,
                "variants": [],
                "cpu": None,
            },
        )
        entry["default"] = entry["default"] or m.default
        entry["variants"].append(describe_variant(variant))
    for model_id, entry in models.items():
        tier = store().cpu_tier(model_id)
        if tier is not None:
            entry["cpu"] = {**describe_cpu_tier(tier), "generation": _generation_of(entry)}
    ordered = sorted(models.values(), key=lambda e: (not e["default"], e["id"]))
    return {"models": ordered}


def _generation_of(entry: dict) -> dict:
    """Sampling defaults are the model's (the same chat config every variant carries)."""
    return next((v["generation"] for v in entry["variants"] if v["generation"]), {})


@bp.get("/api/models")
def list_models():
    response = jsonify(catalog())
    response.headers["Cache-Control"] = "no-cache"
    return response


def init_app(app) -> None:
    app.register_blueprint(bp)
