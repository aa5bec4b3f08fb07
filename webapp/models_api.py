"""GET /api/models: what is built, grouped by model, in the shape the page's variant chooser reads.

Everything comes from each variant's lantern-manifest.json (nothing is duplicated in the site's config);
the site adds only what it owns: the URLs and the content revision.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from webapp.artifacts import store
from webapp.quality import describe as describe_quality

bp = Blueprint("models_api", __name__)

MODEL_FIELDS = ("name", "family", "license")
VARIANT_FIELDS = (
    "quantization", "context_window", "prefill_chunk_size", "param_count", "bits_per_param", "download_bytes",
    "required_features", "required_limits", "estimated_gpu_memory_bytes", "package_manifest",
)


def files_base() -> str:
    """Where the browser fetches model files: this site ("") or MODEL_FILES_BASE_URL (a CDN mirroring /models/).
    Only the URLs change; the SHA-256 of every file still comes from this site's manifest."""
    return (current_app.config.get("MODEL_FILES_BASE_URL") or "").rstrip("/")


def describe_variant(variant) -> dict:
    """`files` lists both libraries when there are two; the page keeps the one its adapter needs
    (choose.js), so `download_bytes` counts the default library only."""
    m = variant.manifest
    out = {"id": variant.id, **{k: m.get(k) for k in VARIANT_FIELDS}}
    files = variant.download_files()
    software = variant.software_library_file
    out["download_bytes"] = sum(f["bytes"] for f in files if f["path"] != software)
    out["revision"] = variant.revision
    out["base_url"] = files_base() + variant.base_path()
    for key, name in (("library", variant.library_file), ("software_library", software)):
        out[key] = {"file": name, "url": out["base_url"] + name} if name else None
    out["files"] = files
    out["generation"] = variant.generation
    # Measured by the build (perplexity vs the unquantized model); the label is worded here, not on the page.
    out["quality"] = describe_quality(m.get("quality"))
    return out


def describe_cpu_tier(tier) -> dict:
    """The in-browser CPU tier in the shape of a variant (the page's downloader and cache handle both)."""
    files = list(tier.files.values())
    gguf = next(f for f in files if f["path"].endswith(".gguf"))
    return {
        "id": tier.id, "tier": "cpu", "quantization": tier.needs["gguf"].get("type"), "engine": tier.needs["engine"],
        "context_window": tier.needs["context_window"], "ram_bytes": tier.needs["ram_bytes"],
        "preferred_on_software_adapter": bool(tier.needs.get("preferred_on_software_adapter")),
        "gguf": gguf["path"], "download_bytes": sum(f["bytes"] for f in files), "revision": tier.revision,
        "base_url": files_base() + tier.base_path(), "library": None, "software_library": None, "package_manifest": None,
        "required_features": [], "required_limits": {}, "files": files,
    }


def catalog() -> dict:
    models: dict[str, dict] = {}
    for variant in store().scan():
        m = variant.manifest
        entry = models.setdefault(variant.model, {
            "id": variant.model, **{k: m.get(k) for k in MODEL_FIELDS}, "default": False, "variants": [],
            "cpu": None,
        })
        entry["default"] = entry["default"] or bool(m.get("default"))
        entry["variants"].append(describe_variant(variant))
    for model_id, entry in models.items():
        tier = store().cpu_tier(model_id)
        if tier is not None:
            entry["cpu"] = {**describe_cpu_tier(tier), "generation": _generation_of(entry)}
    ordered = sorted(models.values(), key=lambda e: (not e["default"], e["id"]))
    return {"models": ordered}


def _generation_of(entry: dict) -> dict:
    """Sampling defaults are the model's (the same chat config every variant carries)."""
    return next((v["generation"] for v in entry["variants"] if v.get("generation")), {})


@bp.get("/api/models")
def list_models():
    response = jsonify(catalog())
    response.headers["Cache-Control"] = "no-cache"
    return response


def init_app(app) -> None:
    app.register_blueprint(bp)
