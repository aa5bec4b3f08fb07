"""Several models on one site, in Chromium: the picker lists each built model with its size, quality and
needs (from /api/models), the config's default first; switching keeps each model's verified cache; Remove
frees one model's bytes and leaves the other's. Real builds: SmolLM2-135M and the tiny random Llama."""

from __future__ import annotations

import json
import shutil
import urllib.request

import pytest

pytestmark = pytest.mark.browser

SMOL = "smollm2-135m-instruct"
TINY = "tiny-llama"

OPTIONS = """() => [...document.querySelectorAll('#model-picker option')].map((o) => ({
  id: o.value, text: o.textContent, bytes: Number(o.dataset.bytes), isDefault: o.dataset.default === 'yes',
  selected: o.selected }))"""


@pytest.fixture(scope="module")
def two_site_models(tmp_path_factory, smollm2_models, tiny_site_models):
    models = tmp_path_factory.mktemp("two-site-models") / "models"
    shutil.copytree(smollm2_models / SMOL, models / SMOL)
    shutil.copytree(tiny_site_models / TINY, models / TINY)
    return models


SELECTED = "() => window.lantern.events.filter((e) => e.type === 'selected').length"


def pick(s, model_id):
    """Choose `model_id` in the picker; its state once the page has checked what is stored for it."""
    before = s.page.evaluate(SELECTED)
    s.page.select_option("#model-picker", model_id)
    s.page.wait_for_function(f"(n) => ({SELECTED})() > n", arg=before, timeout=120_000)
    assert s.lantern(".model") == model_id
    return s.lantern(".state")


def model_files_fetched(server, model_id):
    return len(server.paths(f"/models/{model_id}/", status=200))


def test_the_page_switches_between_two_built_models(serve, chromium, two_site_models):
    server = serve(two_site_models)
    catalog = json.load(urllib.request.urlopen(server.url + "/api/models"))
    assert [m["id"] for m in catalog["models"]] == [SMOL, TINY] and catalog["models"][0]["default"]

    s = chromium(webgpu=True)
    s.page.goto(server.url + "/")
    assert s.wait_state("needs-download") == "needs-download"
    options = s.page.evaluate(OPTIONS)
    assert [o["id"] for o in options] == [SMOL, TINY]
    assert options[0]["isDefault"] and options[0]["selected"] and s.lantern(".model") == SMOL
    assert not s.page.is_disabled("#model-picker")
    for option in options:
        assert "needs a WebGPU GPU" in option["text"] and any(unit in option["text"] for unit in (" MB", " kB"))
    assert options[0]["bytes"] == s.lantern(".selection.variant.download_bytes")

    # Download and verify each model in turn.
    s.page.click("#download-button")
    assert s.wait_state("downloaded", "download-failed", timeout=180_000) == "downloaded", s.lantern(".error")
    smol_bytes = s.lantern(".cache.cachedBytes")
    assert pick(s, TINY) == "needs-download"
    assert options[1]["bytes"] == s.lantern(".selection.variant.download_bytes")
    s.page.click("#download-button")
    assert s.wait_state("downloaded", "download-failed", timeout=120_000) == "downloaded", s.lantern(".error")
    tiny_bytes = s.lantern(".cache.cachedBytes")

    # Back to SmolLM2: its files are still stored and re-hashed, nothing is fetched again.
    fetched = model_files_fetched(server, SMOL)
    assert pick(s, SMOL) == "downloaded"
    assert s.lantern(".cache.cachedBytes") == smol_bytes and s.lantern(".storedCheck.damaged") == []
    assert model_files_fetched(server, SMOL) == fetched

    # Remove SmolLM2: its bytes are freed and said; the tiny model keeps its verified cache.
    s.page.click("#remove-button")
    assert s.wait_state("needs-download") == "needs-download"
    removal = s.lantern(".lastRemoval")
    assert removal["model"] == SMOL and removal["bytes"] == smol_bytes
    assert "freed" in s.page.text_content("#engine-status")
    assert s.poll("() => window.lantern.api.inspectCache()")["cachedBytes"] == 0
    fetched_tiny = model_files_fetched(server, TINY)
    assert pick(s, TINY) == "downloaded"
    assert s.lantern(".cache.cachedBytes") == tiny_bytes and s.lantern(".storedCheck.damaged") == []
    assert model_files_fetched(server, TINY) == fetched_tiny
    assert s.lantern(".stateErrors") == []

    # The pick is remembered: a reload starts on the tiny model, from its verified cache.
    s.page.reload()
    assert s.wait_state("downloaded", "needs-download") == "downloaded"
    assert s.lantern(".model") == TINY and s.page.evaluate(OPTIONS)[1]["selected"]
    assert model_files_fetched(server, TINY) == fetched_tiny
    print(f"\nmeasured: smollm2 stored {smol_bytes} B, tiny stored {tiny_bytes} B, freed {removal['bytes']} B")


STATE_TABLE = """async () => {
  const m = await import('/static/js/state.js');
  const record = {};
  const state = m.createState(record);
  state.go('detecting');
  let refused = null;
  try { state.go('generating'); } catch (e) { refused = e.name; }
  let unknown = null;
  try { state.go('nonsense'); } catch (e) { unknown = e.message; }
  const reachable = new Set(Object.values(m.TRANSITIONS).flat());
  return { refused, unknown, state: record.state, history: record.stateHistory.map((h) => h.state),
           errors: record.stateErrors, states: m.STATES, unreachable: m.STATES.filter((s) => !reachable.has(s)) };
}"""


def test_the_state_table_refuses_moves_it_does_not_list(serve, chromium, tiny_site_models):
    server = serve(tiny_site_models)
    s = chromium(webgpu=True)
    s.page.goto(server.url + "/")
    s.wait_state("needs-download")
    # The live page: read-only, with its history, every state it went through declared in the table.
    page_history = [h["state"] for h in s.lantern(".stateHistory")]
    assert page_history[:2] == ["starting", "detecting"] and page_history[-1] == "needs-download"
    s.page.evaluate("() => { try { window.lantern.state = 'ready'; } catch (e) {} }")
    assert s.lantern(".state") == "needs-download"
    result = s.page.evaluate(STATE_TABLE)
    assert set(page_history) <= set(result["states"])
    assert result["refused"] == "IllegalTransition" and result["state"] == "detecting"
    assert result["history"] == ["starting", "detecting"]
    assert [(e["from"], e["to"]) for e in result["errors"]] == [("detecting", "generating")]
    assert "unknown state" in result["unknown"]
    assert result["unreachable"] == ["starting", "error"]  # error: allowed from anywhere (state.js)


def test_server_mode_answers_with_the_picked_model(serve, chromium, two_site_models):
    """Without WebGPU, with consent: the real fallback answers with SmolLM2, then (picker) with the tiny model,
    each from its own engine process."""
    server = serve(two_site_models)
    s = chromium(webgpu=False)
    s.page.goto(server.url + "/")
    s.wait_state("unsupported")
    s.set_greedy()
    s.page.fill("#prompt", "What is the capital of France?")
    s.page.click("#send")
    s.page.wait_for_function("() => document.getElementById('consent').open")
    s.page.click("#consent-accept")
    s.page.wait_for_function("() => window.lantern.replyCount === 1", timeout=300_000)
    first = s.lantern(".lastReply")
    assert first["kind"] == "server" and first["text"].strip(), s.lantern(".error")
    assert SMOL in s.page.text_content("#engine-status")
    fallback = server.app.extensions["lantern_fallback"]
    assert set(fallback.engines) == {SMOL}  # the tiny model's engine is not started before it is asked for

    pick(s, TINY)  # still server mode: the page reconnects for the tiny model
    s.page.wait_for_function(
        "(id) => window.lantern.state === 'ready' && document.getElementById('engine-status').textContent.includes(id)",
        arg=TINY,
    )
    reply = s.ask("hi", timeout=300_000)
    assert reply["finishReason"] in ("stop", "length") and reply["kind"] == "server", s.lantern(".error")
    assert set(fallback.engines) == {SMOL, TINY}
    assert fallback.engines[SMOL].process.ready.pid != fallback.engines[TINY].process.ready.pid
