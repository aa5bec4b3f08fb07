"""GET /api/models: what is built, grouped by model, in the shape the page's variant chooser reads.

Everything comes from each variant's lantern-manifest.json (nothing is duplicated in the site's config);
the site adds only what it owns: the URLs and the content revision.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from webapp.artifacts import store
from webapp.quality import describe as describe_quality

bp = Blueprint("models_api", __name__)

MODEL_FIELDS = ("name", "family", "license")
VARIANT_FIELDS = (
    "quantization", "context_window", "prefill_chunk_size", "param_count", "bits_per_param", "download_bytes",
    "required_features", "required_limits", "estimated_gpu_memory_bytes", "package_manifest",
)


def describe_variant(variant) -> dict:
    """`files` lists both libraries when there are two; the page keeps the one its adapter needs
    (choose.js), so `download_bytes` counts the default library only."""
    m = variant.manifest
    out = {"id": variant.id, **{k: m.get(k) for k in VARIANT_FIELDS}}
    files = variant.download_files()
    software = variant.software_library_file
    out["download_bytes"] = sum(f["bytes"] for f in files if f["path"] != software)
    out["revision"] = variant.revision
    out["base_url"] = variant.base_path()
    for key, name in (("library", variant.library_file), ("software_library", software)):
        out[key] = {"file": name, "url": variant.base_path() + name} if name else None
    out["files"] = files
    out["generation"] = variant.generation
    # Measured by the build (perplexity vs the unquantized model); the label is worded here, not on the page.
    out["quality"] = describe_quality(m.get("quality"))
    return out


def catalog() -> dict:
    models: dict[str, dict] = {}
    for variant in store().scan():
        m = variant.manifest
        entry = models.setdefault(variant.model, {
            "id": variant.model, **{k: m.get(k) for k in MODEL_FIELDS}, "default": False, "variants": [],
        })
        entry["default"] = entry["default"] or bool(m.get("default"))
        entry["variants"].append(describe_variant(variant))
    ordered = sorted(models.values(), key=lambda e: (not e["default"], e["id"]))
    return {"models": ordered}


@bp.get("/api/models")
def list_models():
    response = jsonify(catalog())
    response.headers["Cache-Control"] = "no-cache"
    return response


def init_app(app) -> None:
    app.register_blueprint(bp)
