"""Model files from another origin (a CDN or object store) set by one base URL: the page fetches them there,
still verifies each against the SHA-256 in the manifest this site served, refuses a tampered one, and the
CSP allows exactly that origin. The "CDN" is a second loopback server on another port."""

from __future__ import annotations

import pytest

from testing.fixtures import NetworkFaults, copy_models

pytestmark = pytest.mark.browser


def cdn_headers(app):
    """What the second origin must send to a cross-origin isolated page (COEP require-corp): CORS, and
    Cross-Origin-Resource-Policy: cross-origin instead of same-origin."""

    def wsgi(environ, start_response):
        def start(status, headers, exc_info=None):
            kept = [(k, v) for k, v in headers if k.lower() != "cross-origin-resource-policy"]
            kept += [("Access-Control-Allow-Origin", "*"), ("Cross-Origin-Resource-Policy", "cross-origin")]
            return start_response(status, kept, exc_info)

        return app(environ, start)

    return wsgi


def open_site(serve, chromium, models, faults=None):
    cdn = serve(models, wsgi_wrapper=(lambda app: cdn_headers(faults.wrap(app))) if faults else cdn_headers)
    site = serve(models, config={"MODEL_FILES_BASE_URL": cdn.url + "/"})
    s = chromium(webgpu=False, tier=None)
    response = s.page.goto(site.url + "/")
    s.wait_state("needs-download")
    return site, cdn, s, response


def test_model_files_come_from_the_cdn_verified_and_used(serve, chromium, tiny_site_models):
    site, cdn, s, response = open_site(serve, chromium, tiny_site_models)
    csp = response.headers["content-security-policy"]
    assert f"connect-src 'self' {cdn.url};" in csp  # exactly that origin, nothing wider
    variant = s.lantern(".selection.variant")
    assert variant["base_url"].startswith(cdn.url + "/models/")
    s.page.click("#download-button")
    assert s.wait_state("ready", "download-failed", "engine-failed", timeout=120_000) == "ready", s.lantern(".error")
    progress = s.lantern(".download")
    assert progress["rejected"] == [] and all(f["status"] == "done" for f in progress["files"].values())
    assert sorted(p.rsplit("/", 1)[1] for p in cdn.paths("/models/", status=200)) == sorted(
        f["path"] for f in variant["files"]
    )
    assert site.paths("/models/") == []  # this site served the manifest (catalog), never a model file
    count = s.lantern(".replyCount")
    s.page.fill("#prompt", "Hello")
    s.page.click("#send")
    s.page.wait_for_function("(n) => window.lantern.replyCount > n", arg=count, timeout=60_000)
    assert s.lantern(".lastReply.finishReason") in ("stop", "length")
    assert s.lantern(".cspViolations") == []
    # Remove finds the files under the CDN's URLs too.
    s.page.click("#remove-button")
    assert s.wait_state("needs-download", timeout=30_000) == "needs-download"
    assert s.poll("() => window.lantern.api.inspectCache()")["cachedBytes"] == 0


def test_a_tampered_file_on_the_cdn_is_refused(serve, chromium, tiny_site_models, tmp_path):
    faults = NetworkFaults()
    faults.set(".gguf", "corrupt")
    site, cdn, s, _ = open_site(serve, chromium, copy_models(tiny_site_models, tmp_path / "models"), faults)
    s.page.click("#download-button")
    assert s.wait_state("download-failed", "ready", timeout=120_000) == "download-failed"
    rejected = s.lantern(".download.rejected")
    assert rejected and all(r["kind"] == "corrupt" and r["path"].endswith(".gguf") for r in rejected)
    assert s.lantern(".engine.startedCount") == 0
    assert not [p for p in s.poll("() => window.lantern.api.inspectCache()")["cached"] if p.endswith(".gguf")]


def test_base_url_must_be_plain_http(serve, tiny_site_models):
    from webapp import create_app

    with pytest.raises(ValueError):
        create_app({"MODELS_DIR": str(tiny_site_models), "MODEL_FILES_BASE_URL": "javascript:alert(1)"})
