"""The model picker's words follow the build the page actually chose: after a tier switch in Settings the
option says what the new tier needs ("runs on the processor" / "needs a WebGPU GPU"), not the old one."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

# The page chose again (a "selected" event after the "tier" one) and settled.
SETTLED = """(n) => window.lantern.events.slice(n).some((e) => e.type === 'selected')
    && window.lantern.state === 'needs-download'"""


def current_option(s) -> dict:
    return s.page.evaluate("""() => { const o = document.querySelector('#model-picker').selectedOptions[0];
        return { text: o.textContent, bytes: o.dataset.bytes }; }""")


def switch_tier(s, tier: str, says: str, not_says: str) -> None:
    """Settings → "On this device, use" → `tier`; then the picker's option names the new build's needs."""
    events = s.page.evaluate("() => window.lantern.events.length")
    s.page.select_option("#local-tier", tier)
    s.page.wait_for_function(SETTLED, arg=events, timeout=30_000)
    option = current_option(s)
    assert says in option["text"] and not_says not in option["text"], option
    assert option["bytes"] == str(s.lantern(".selection.variant.download_bytes")), option


def test_picker_label_follows_a_switch_from_the_gpu_to_the_processor(serve, chromium, tiny_site_models):
    server = serve(tiny_site_models)
    s = chromium(webgpu=True)  # the page starts on the GPU tier (Settings: "The GPU")
    s.page.goto(server.url + "/")
    s.wait_state("needs-download")
    assert s.lantern(".selection.tier") == "gpu"
    text = current_option(s)["text"]
    assert "needs a WebGPU GPU" in text and "processor" not in text, text

    switch_tier(s, "cpu", says="(runs on the processor)", not_says="WebGPU")
    assert s.lantern(".selection.tier") == "cpu"
    # "The fastest that works here": this build has no WebGPU library, so the processor again.
    switch_tier(s, "auto", says="(runs on the processor)", not_says="WebGPU")
    assert s.lantern(".selection.tier") == "cpu"


def test_picker_label_follows_tier_switches_both_ways(serve, chromium, tiny_chat_models):
    server = serve(tiny_chat_models)
    s = chromium(webgpu=True, tier=None)  # SwiftShader: both tiers run, "auto" prefers the processor
    s.page.goto(server.url + "/")
    s.wait_state("needs-download")
    assert set(s.lantern(".selection.tiers")) == {"cpu", "gpu"} and s.lantern(".selection.tier") == "cpu"
    assert "(runs on the processor)" in current_option(s)["text"]

    switch_tier(s, "gpu", says="needs a WebGPU GPU", not_says="processor")
    assert s.lantern(".selection.tier") == "gpu"
    switch_tier(s, "cpu", says="(runs on the processor)", not_says="WebGPU")
    assert s.lantern(".selection.tier") == "cpu"
