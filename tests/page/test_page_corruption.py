"""Damaged model files: the page detects them by SHA-256/size, discards and re-fetches them, and never
hands them to the engine (nothing unverified is ever stored where web-llm reads)."""

from __future__ import annotations

import pytest

from testing.fixtures import NetworkFaults, copy_models

pytestmark = pytest.mark.browser

SHARD = "params_shard_0.bin"
STORED_URLS = """async () => {
  const urls = [];
  for (const scope of ['webllm/config', 'webllm/wasm', 'webllm/model']) {
    if (!(await caches.has(scope))) continue;
    for (const r of await (await caches.open(scope)).keys()) urls.push(r.url);
  }
  return urls;
}"""
WEBLLM_HAS_MODEL = """async () => {
  const { hasModelInCache } = await import('/static/vendor/web-llm/index.js');
  const { modelRecord } = await import('/static/js/engines.js');
  const v = window.lantern.selection.variant;
  return hasModelInCache(v.id, { model_list: [modelRecord(v)], cacheBackend: 'cache' });
}"""


def start(serve, chromium, models, faults=None):
    server = serve(models, wsgi_wrapper=faults.wrap if faults else None)
    s = chromium(webgpu=True)
    s.page.goto(server.url + "/")
    s.wait_state("needs-download")
    s.page.click("#download-button")
    return server, s


def assert_never_reached_the_engine(s, bad_path):
    stored = s.page.evaluate(STORED_URLS)
    assert not [u for u in stored if u.endswith("/" + bad_path)]
    assert s.page.evaluate(WEBLLM_HAS_MODEL) is False
    assert s.lantern(".engine.startedCount") == 0
    assert s.engine_workers() == []


@pytest.mark.parametrize("damage, kind", [("altered", "corrupt"), ("truncated", "truncated")])
def test_damaged_shard_on_the_server_is_rejected_and_never_stored(
    serve, chromium, tiny_site_models, tmp_path, damage, kind
):
    models = copy_models(tiny_site_models, tmp_path / "models")
    shard = models / "tiny-llama" / "q4f32_1" / SHARD
    good = shard.read_bytes()
    bad = bytearray(good)
    if damage == "altered":
        bad[len(bad) // 3] ^= 0x01  # one bit
    else:
        bad = bad[: len(bad) - 4096]
    shard.write_bytes(bytes(bad))

    server, s = start(serve, chromium, models)
    assert s.wait_state("download-failed", "downloaded") == "download-failed"
    progress = s.lantern(".download")
    assert progress["rejected"] == [{"path": SHARD, "kind": kind, "attempt": n} for n in (1, 2, 3)]
    assert [f["path"] for f in progress["failures"]] == [SHARD]
    assert progress["files"][SHARD]["status"] == "failed"
    others = [p for p in progress["files"] if p != SHARD]
    assert all(progress["files"][p]["status"] == "done" for p in others)

    message = s.page.locator("#error-message").inner_text()
    assert SHARD in message
    assert ("SHA-256" in message) if damage == "altered" else ("bytes arrived" in message)
    assert s.page.locator("#retry-download").is_visible()
    assert_never_reached_the_engine(s, SHARD)

    # Fixed on the server: a retry fetches only the bad file and finishes.
    shard.write_bytes(good)
    before = len(server.paths("/models/"))
    s.page.click("#retry-download")
    assert s.wait_state("downloaded", "download-failed") == "downloaded"
    assert s.lantern(".download.fetched") == [SHARD]
    assert [p.rsplit("/", 1)[1] for p in server.paths("/models/")[before:]] == [SHARD]
    assert s.page.evaluate(WEBLLM_HAS_MODEL) is True


def test_corruption_in_transit_is_discarded_and_refetched(serve, chromium, tiny_site_models):
    faults = NetworkFaults()
    faults.set("/" + SHARD, "corrupt-once")
    server, s = start(serve, chromium, tiny_site_models, faults)
    assert s.wait_state("downloaded", "download-failed") == "downloaded"
    progress = s.lantern(".download")
    assert progress["rejected"] == [{"path": SHARD, "kind": "corrupt", "attempt": 1}]
    assert progress["files"][SHARD]["attempts"] == 2
    assert progress["files"][SHARD]["status"] == "done"
    assert faults.served and faults.served[0][1] == "corrupt-once"
    assert s.page.evaluate(WEBLLM_HAS_MODEL) is True


def test_damaged_entry_in_browser_storage_is_not_trusted(serve, chromium, tiny_site_models):
    """Stored bytes are re-hashed before they are trusted again: a flipped bit in storage (headers intact,
    same size) is caught, dropped and fetched again before anything could start."""
    server, s = start(serve, chromium, tiny_site_models)
    s.wait_state("downloaded")
    url = s.lantern(".selection.variant.base_url")
    s.page.evaluate(
        """async (url) => {
      const cache = await caches.open('webllm/model');
      const key = new Request(new URL(url + 'params_shard_0.bin', location.href).href);
      const old = await cache.match(key);
      const bytes = new Uint8Array(await old.arrayBuffer());
      bytes[7] ^= 0x01;
      await cache.put(key, new Response(bytes, { headers: old.headers }));
    }""",
        url,
    )
    s.page.reload()
    assert s.wait_state("needs-download", "downloaded") == "needs-download"
    assert s.lantern(".storedCheck.damaged") == [SHARD]
    assert SHARD not in s.lantern(".cache.cached")
    assert s.page.evaluate(WEBLLM_HAS_MODEL) is False  # the damaged entry is gone, not left for web-llm
    before = len(server.paths("/models/"))
    s.page.click("#download-button")
    assert s.wait_state("downloaded", "download-failed") == "downloaded"
    assert s.lantern(".download.fetched") == [SHARD]
    assert [p.rsplit("/", 1)[1] for p in server.paths("/models/")[before:]] == [SHARD]
    s.page.reload()
    assert s.wait_state("needs-download", "downloaded") == "downloaded"
    assert s.lantern(".storedCheck.damaged") == []
