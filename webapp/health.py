"""GET /healthz: 200 only when every check passes, with a body saying what was checked.

Anyone may ask whether the site is healthy (`{"status": ...}` and the status code, what load balancers and
the page's offline check read). What was checked (paths, engine pid, CPU features, models, queue) is only
for a request made on this machine directly (from loopback, to a loopback host name, not forwarded by a
proxy) or carrying a valid API key: it maps the deployment for an attacker otherwise.

Other parts of the app add checks by appending callables to
`app.extensions.setdefault("lantern_health_checks", [])`; each returns `(name, ok, detail_dict)`.
A check that raises counts as failed (a health endpoint must not 500 because one probe broke).
"""

from __future__ import annotations

import ipaddress

from flask import Blueprint, current_app, jsonify, request

from webapp.artifacts import store
from webapp.security import LOOPBACK_HOSTS

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


FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-IP")


def from_this_machine() -> bool:
    """A request straight from loopback to a loopback name: not a client that a reverse proxy relayed."""
    try:
        loopback = ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        loopback = False
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    relayed = any(name in request.headers for name in FORWARDING_HEADERS)
    return loopback and host.lower() in LOOPBACK_HOSTS and not relayed


def may_see_details() -> bool:
    """Loopback, or a valid API key (only when the fallback has keys configured)."""
    if from_this_machine():
        return True
    keys = getattr(current_app.extensions.get("lantern_fallback"), "keys", None)
    return keys is not None and keys.admits(request.headers.get("Authorization"))


@bp.get("/healthz")
def healthz():
    checks = run_checks()
    healthy = all(c["ok"] for c in checks)
    body: dict = {"status": "ok" if healthy else "unavailable"}
    if may_see_details():
        body["checks"] = checks
    response = jsonify(body)
    response.status_code = 200 if healthy else 503
    response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app) -> None:
    checks = app.extensions.setdefault(CHECKS_KEY, [])
    # Ours first, so the body reads in dependency order; others may already have registered.
    checks[0:0] = [artifacts_check, page_bundle_check]
    app.register_blueprint(bp)
