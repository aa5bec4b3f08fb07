"""GET /healthz: 200 only when every check passes, with a body saying what was checked.

Other parts of the app add checks by appending callables to
`app.extensions.setdefault("lantern_health_checks", [])`; each returns `(name, ok, detail_dict)`.
A check that raises counts as failed (a health endpoint must not 500 because one probe broke).
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from webapp.artifacts import store

bp = Blueprint("health", __name__)
CHECKS_KEY = "lantern_health_checks"


def artifacts_check():
    ok, detail = store().check()
    return "artifacts", ok, detail


def page_bundle_check():
    """The chat page cannot run a local model without the vendored web-llm bundle (`make install`)."""
    bundle = current_app.config["WEB_LLM_BUNDLE"]
    ok = bundle.is_file()
    return "web_llm_bundle", ok, {"path": str(bundle), "present": ok}


def run_checks() -> list[dict]:
    results = []
    for check in current_app.extensions.get(CHECKS_KEY, []):
        try:
            name, ok, detail = check()
        except Exception as exc:  # noqa: BLE001 - a failing check is reported, not raised
            name = getattr(check, "__name__", repr(check))
            ok, detail = False, {"error": f"{type(exc).__name__}: {exc}"}
        results.append({"name": name, "ok": bool(ok), "detail": detail})
    return results


@bp.get("/healthz")
def healthz():
    checks = run_checks()
    healthy = all(c["ok"] for c in checks)
    response = jsonify({"status": "ok" if healthy else "unavailable", "checks": checks})
    response.status_code = 200 if healthy else 503
    response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app) -> None:
    checks = app.extensions.setdefault(CHECKS_KEY, [])
    # Ours first, so the body reads in dependency order; others may already have registered.
    checks[0:0] = [artifacts_check, page_bundle_check]
    app.register_blueprint(bp)
