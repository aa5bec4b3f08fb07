"""The page's own downloader in headless Chromium with WebGPU: progress, SHA-256 verification, Cache API
layout that web-llm reads, reuse after reload, resume after an interruption, removal, stale revisions."""

from __future__ import annotations

import json

import pytest

from build_pipeline.contract import CHAT_CONFIG_FILE, MANIFEST_FILE
from testing.fixtures import NetworkFaults

pytestmark = pytest.mark.browser

SCOPES = ("webllm/config", "webllm/wasm", "webllm/model")

CACHE_DUMP = """async (scopes) => {
  const out = {};
  for (const scope of scopes) {
    if (!(await caches.has(scope))) continue;
    const cache = await caches.open(scope);
    out[scope] = {};
    for (const request of await cache.keys()) {
      const bytes = await (await cache.match(request)).arrayBuffer();
      const digest = await crypto.subtle.digest('SHA-256', bytes);
      out[scope][request.url] = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
    }
  }
  return out;
}"""

# web-llm's own cache check (tensor-cache.json + every shard in "webllm/model"), run on our record.
WEBLLM_HAS_MODEL = """async () => {
  const { hasModelInCache } = await import('/static/vendor/web-llm/index.js');
  const { modelRecord } = await import('/static/js/engines.js');
  const variant = window.lantern.selection.variant;
  return hasModelInCache(variant.id, { model_list: [modelRecord(variant)], cacheBackend: 'cache' });
}"""


def open_page(serve, chromium, models, faults=None):
    server = serve(models, wsgi_wrapper=faults.wrap if faults else None)
    s = chromium(webgpu=True)
    s.page.goto(server.url + "/")
    s.wait_state("needs-download", "downloaded")
    return server, s


def download(s, *end_states, timeout=120_000):
    s.page.click("#download-button")
    return s.wait_state(*(end_states or ("downloaded",)), timeout=timeout)


def expected_keys(server, variant):
    base = server.url + variant["base_url"]
    keys = {scope: set() for scope in SCOPES}
    for f in variant["files"]:
        scope = "webllm/config" if f["path"] == CHAT_CONFIG_FILE else "webllm/model"
        keys[scope].add(base + f["path"])
    return {scope: urls for scope, urls in keys.items() if urls}


def test_download_shows_progress_verifies_and_stores_what_webllm_reads(serve, chromium, tiny_site_models):
    server, s = open_page(serve, chromium, tiny_site_models)
    variant = s.lantern(".selection.variant")
    assert variant["quantization"] == "q4f32_1"
    assert download(s) == "downloaded"

    progress = s.lantern(".download")
    manifest = {f["path"]: f for f in variant["files"]}
    assert progress["status"] == "done"
    assert progress["totalBytes"] == progress["verifiedBytes"] == progress["receivedBytes"] == variant["download_bytes"]
    assert progress["rejected"] == [] and progress["failures"] == []
    assert sorted(progress["fetched"]) == sorted(manifest)  # each file once
    assert progress["updates"] > len(manifest)  # per-chunk progress, not just per file
    for path, state in progress["files"].items():
        assert state["status"] == "done"
        assert state["sha256"] == manifest[path]["sha256"]
        assert state["received"] == manifest[path]["bytes"]
    assert progress["hashBytes"] == variant["download_bytes"] and progress["verifyMBps"] > 0

    # The page shows it: total bar full, one row per file, all verified.
    assert s.page.locator("#total-progress").evaluate("(p) => p.value === p.max")
    rows = s.page.locator("#file-progress li")
    assert rows.count() == len(manifest)
    assert set(rows.evaluate_all("(rows) => rows.map((r) => r.dataset.status)")) == {"done"}

    # Exactly web-llm's cache names and keys, holding exactly the manifest's bytes.
    stored = s.page.evaluate(CACHE_DUMP, list(SCOPES))
    want = expected_keys(server, variant)
    assert {scope: set(urls) for scope, urls in stored.items()} == want
    by_url = {server.url + variant["base_url"] + p: f["sha256"] for p, f in manifest.items()}
    for urls in stored.values():
        for url, digest in urls.items():
            assert digest == by_url[url]
    assert s.page.evaluate(WEBLLM_HAS_MODEL) is True

    # On the wire: every file exactly once, nothing else under /models/.
    served = server.paths("/models/")
    assert sorted(p.rsplit("/", 1)[1] for p in served) == sorted(manifest)
    assert s.engine_workers() == []  # no library in this build: the engine is never started
    assert "no WebGPU library" in s.page.locator("#engine-status").inner_text()
    assert s.lantern(".cspViolations") == []


def test_reload_reuses_verified_files_without_refetching(serve, chromium, tiny_site_models):
    server, s = open_page(serve, chromium, tiny_site_models)
    download(s)
    before = len(server.paths("/models/"))
    s.page.reload()
    assert s.wait_state("downloaded", "needs-download") == "downloaded"
    cache = s.lantern(".cache")
    assert cache["complete"] is True
    assert cache["cachedBytes"] == s.lantern(".selection.variant.download_bytes")
    assert "already downloaded" in s.page.locator("#capability-summary").inner_text()
    s.page.wait_for_timeout(300)
    assert len(server.paths("/models/")) == before


def test_interrupted_download_resumes_with_what_is_verified(serve, chromium, tiny_site_models):
    faults = NetworkFaults()
    faults.set("/params_shard_0.bin", "hang")
    server, s = open_page(serve, chromium, tiny_site_models, faults)
    s.page.click("#download-button")
    variant = s.lantern(".selection.variant")
    others = [f["path"] for f in variant["files"] if f["path"] != "params_shard_0.bin"]
    s.page.wait_for_function(
        "(paths) => paths.every((p) => window.lantern.download.files?.[p]?.status === 'done')", arg=others
    )
    assert s.lantern(".download.files")["params_shard_0.bin"]["status"] == "downloading"

    s.page.reload()  # the tab goes away mid-download
    assert s.wait_state("needs-download") == "needs-download"
    cache = s.lantern(".cache")
    assert sorted(cache["cached"]) == sorted(others)
    assert "Resume download" in s.page.locator("#download-button").inner_text()

    faults.clear()
    served_before = len(server.paths("/models/", status=200))
    assert download(s) == "downloaded"
    progress = s.lantern(".download")
    assert progress["fetched"] == ["params_shard_0.bin"]
    assert progress["cachedBytes"] == sum(f["bytes"] for f in variant["files"] if f["path"] in others)
    assert [p.rsplit("/", 1)[1] for p in server.paths("/models/", status=200)[served_before:]] == ["params_shard_0.bin"]


def test_failed_download_offers_retry_and_keeps_verified_files(serve, chromium, tiny_site_models):
    faults = NetworkFaults()
    faults.set("/tokenizer.json", "fail")
    server, s = open_page(serve, chromium, tiny_site_models, faults)
    assert download(s, "download-failed") == "download-failed"
    error = s.lantern(".error")
    assert error["code"] == "download-failed"
    assert "tokenizer.json" in error["message"] and "503" in error["message"]
    assert s.page.locator("#retry-download").is_visible()
    progress = s.lantern(".download")
    assert progress["files"]["tokenizer.json"]["attempts"] == 3  # 5xx is retried, then reported
    assert progress["files"]["params_shard_0.bin"]["status"] == "done"

    faults.clear()
    s.page.click("#retry-download")
    assert s.wait_state("downloaded") == "downloaded"
    assert s.lantern(".download.fetched") == ["tokenizer.json"]
    assert s.page.locator("#error").is_hidden()


def test_remove_downloaded_model_frees_the_storage(serve, chromium, tiny_site_models):
    server, s = open_page(serve, chromium, tiny_site_models)
    # The app shell's cache (service worker) is this site's too: measure the model's part on top of it.
    s.poll(
        "async () => (await caches.keys()).some((k) => k.startsWith('lantern-shell-')) && "
        "(await navigator.serviceWorker.getRegistration())?.active?.state === 'activated'",
        timeout=30_000,
    )
    shell_usage = s.page.evaluate("async () => (await navigator.storage.estimate()).usageDetails.caches || 0")
    download(s)
    cached_usage = s.page.evaluate("async () => (await navigator.storage.estimate()).usageDetails.caches")
    assert cached_usage >= shell_usage + s.lantern(".selection.variant.download_bytes")
    assert s.page.locator("#remove-button").is_visible()
    s.page.click("#remove-button")
    assert s.wait_state("needs-download") == "needs-download"
    assert s.page.evaluate("async () => (await caches.keys()).filter((k) => k.startsWith('webllm/'))") == []
    assert s.lantern(".cache.cachedBytes") == 0
    assert "Removed the downloaded model" in s.page.locator("#engine-status").inner_text()
    assert s.page.locator("#remove-button").is_hidden()
    # Chrome frees a deleted cache's bytes once no script holds a handle to it (GC); a reload ensures that.
    s.page.reload()
    s.wait_state("needs-download")
    # usageDetails (Chromium) splits usage by storage type: the model's Cache API part must be gone.
    assert s.poll(
        "async (shell) => ((await navigator.storage.estimate()).usageDetails?.caches || 0) <= shell",
        shell_usage,
        timeout=30_000,
    )
    assert s.page.evaluate(WEBLLM_HAS_MODEL) is False


def test_a_rebuilt_model_replaces_the_old_revision_in_storage(serve, chromium, tiny_site_models, tmp_path):
    from testing.fixtures import copy_models

    models = copy_models(tiny_site_models, tmp_path / "models")
    server, s = open_page(serve, chromium, models)
    download(s)
    old = s.lantern(".selection.variant")

    manifest_path = models / "tiny-llama" / "q4f32_1" / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest["rebuilt"] = True
    manifest_path.write_text(json.dumps(manifest))

    s.page.reload()
    assert s.wait_state("needs-download") == "needs-download"
    new = s.lantern(".selection.variant")
    assert new["revision"] != old["revision"]
    assert download(s) == "downloaded"
    stored = s.page.evaluate(CACHE_DUMP, list(SCOPES))
    urls = [u for scope in stored.values() for u in scope]
    assert urls and all(f"/resolve/{new['revision']}/" in u for u in urls)
