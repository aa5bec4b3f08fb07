"""The chat page on phones, in real Chromium with a phone's viewport (is_mobile, touch): no sideways scroll,
the privacy badge and the composer on screen, conversations and settings in drawers behind header buttons
(aria-expanded, Escape, focus), touch targets of at least 44 px; and on a desktop the three columns as
before. Screenshots land in .cache/artifacts/phone/ (the path is printed)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / ".cache" / "artifacts" / "phone"

# Is the element's box entirely inside a viewport of this size (the phone's, not whatever the page widened to)?
ON_SCREEN = """([sel, w, h]) => { const e = document.querySelector(sel); if (!e) return null;
  const r = e.getBoundingClientRect();
  return r.width > 0 && r.height > 0 && r.left >= 0 && r.top >= 0 && r.right <= w && r.bottom <= h; }"""
# Every visible control of the header and the chat that is smaller than a 44 px touch target.
SMALL_TARGETS = """() => [...document.querySelectorAll('.topbar, .main')]
  .flatMap((root) => [...root.querySelectorAll('button, select, input, textarea, summary, label.import, a[href]')])
  .filter((e) => e.getClientRects().length && !e.classList.contains('visually-hidden'))
  .map((e) => { const r = e.getBoundingClientRect();
    return { name: e.id || e.className || e.textContent.trim().slice(0, 30), h: r.height, w: r.width }; })
  .filter((t) => t.h < 44 || t.w < 44)"""
# Text boxes whose content is wider than the box (cut off instead of wrapping).
CUT = """(sels) => sels.filter((s) => { const e = document.querySelector(s); return e && e.scrollWidth > e.clientWidth; })"""
WIDTHS = "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
# Text boxes that reach past the right edge of the screen or are cut.
OUTSIDE = """([sel, w]) => [...document.querySelectorAll(sel)]
  .filter((e) => e.getBoundingClientRect().right > w || e.scrollWidth > e.clientWidth).map((e) => e.textContent)"""
DOWNLOAD_TEXT = "#download, #download-summary, #total-text, #file-progress li span"


def phone(chromium, width: int, height: int = 844, webgpu: bool = False):
    return chromium(
        webgpu=webgpu,
        tier=None,
        context_options={"viewport": {"width": width, "height": height}, "is_mobile": True, "has_touch": True},
    )


def shot(s, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    s.page.screenshot(path=str(path))
    print(f"screenshot: {path}")
    return path


def on_screen(s, selector: str, width: int, height: int):
    return s.page.evaluate(ON_SCREEN, [selector, width, height])


def assert_fits(s, width: int, height: int, *selectors: str) -> None:
    scroll_width, client_width = s.page.evaluate(WIDTHS)
    assert scroll_width <= client_width == width, (scroll_width, client_width)
    for selector in ("#privacy", "#prompt", "#send", *selectors):
        assert on_screen(s, selector, width, height), f"{selector} is not within the {width}x{height} screen"
    assert s.page.evaluate(SMALL_TARGETS) == []


@pytest.mark.parametrize("width", [360, 390, 430])
def test_phone_needs_download_fits_the_screen(serve, chromium, tiny_site_models, width):
    server = serve(tiny_site_models)
    s = phone(chromium, width)
    s.page.goto(server.url + "/")
    s.wait_state("needs-download")
    # The download button and the "runs on…" summary: on the first screen, wrapped, not cut.
    assert_fits(s, width, 844, "#download-button", "#capability-summary", "#conversations-toggle", "#settings-toggle")
    assert "Runs on your processor" in s.page.locator("#capability-summary").inner_text()
    assert s.page.evaluate(CUT, ["#capability-summary", "#choice-reason", "#download-button", "#privacy"]) == []
    # Conversations and settings wait behind their buttons.
    assert s.page.locator("#conversations-drawer").is_hidden() and s.page.locator("#settings-drawer").is_hidden()
    assert s.page.locator("#new-chat").is_hidden() and s.page.locator("#local-tier").is_hidden()
    shot(s, f"needs-download-{width}")


def test_phone_error_banner_and_consent_dialog_fit(serve, chromium, tiny_site_models):
    server = serve(tiny_site_models)
    s = chromium(
        webgpu=False, context_options={"viewport": {"width": 360, "height": 640}, "is_mobile": True, "has_touch": True}
    )  # Settings ask for the GPU, and there is none: the error banner offers the processor and the server
    s.page.goto(server.url + "/")
    s.wait_state("unsupported")
    assert_fits(s, 360, 640, "#offer-server", "#offer-cpu")
    assert s.page.evaluate(CUT, ["#error-message", "#offer-server", "#offer-cpu"]) == []
    shot(s, "unsupported-360")
    s.page.locator("#offer-server").tap()
    for selector in ("#consent", "#consent-accept", "#consent-decline"):
        assert s.page.locator(selector).is_visible() and on_screen(s, selector, 360, 640), selector
    shot(s, "consent-360")
    s.page.locator("#consent-decline").tap()
    assert s.page.locator("#privacy").inner_text() == "On this device"


def test_phone_drawers_open_and_close(serve, chromium, tiny_site_models):
    server = serve(tiny_site_models)
    s = phone(chromium, 390)
    s.page.goto(server.url + "/")
    s.wait_state("needs-download")
    page = s.page
    conversations, settings = page.locator("#conversations-drawer"), page.locator("#settings-drawer")
    toggle = page.locator("#conversations-toggle")
    assert toggle.get_attribute("aria-label") == "Conversations" and toggle.get_attribute("aria-expanded") == "false"

    # Conversations: tap to open; the focus moves into it; Escape closes it and gives the focus back.
    toggle.tap()
    assert conversations.is_visible() and settings.is_hidden()
    assert toggle.get_attribute("aria-expanded") == "true"
    assert page.locator("#new-chat").is_visible() and page.locator("#conversation-search").is_visible()
    assert on_screen(s, "#conversations-drawer .drawer-close", 390, 844)
    assert page.evaluate("() => document.activeElement.matches('#conversations-drawer .drawer-close')")
    assert page.evaluate("() => document.querySelector('.main').inert")  # the page behind is out of reach
    shot(s, "drawer-conversations-390")
    page.keyboard.press("Escape")
    assert conversations.is_hidden() and toggle.get_attribute("aria-expanded") == "false"
    assert page.evaluate("() => document.activeElement.id") == "conversations-toggle"
    assert not page.evaluate("() => document.querySelector('.main').inert")

    # Settings: open, every setting reachable; its ✕ closes it; the backdrop closes it too.
    page.locator("#settings-toggle").tap()
    assert settings.is_visible() and conversations.is_hidden()
    assert page.locator("#settings-toggle").get_attribute("aria-expanded") == "true"
    for control in ("#system-prompt", "#temperature", "#max-tokens", "#mode", "#local-tier"):
        assert page.locator(control).is_visible(), control
    assert page.evaluate(WIDTHS)[0] <= 390
    shot(s, "drawer-settings-390")
    page.locator("#settings-drawer .drawer-close").tap()
    assert settings.is_hidden() and page.locator("#settings-toggle").get_attribute("aria-expanded") == "false"
    assert page.evaluate("() => document.activeElement.id") == "settings-toggle"
    page.locator("#settings-toggle").tap()
    page.locator("#drawer-backdrop").tap(position={"x": 20, "y": 400})  # beside the drawer
    assert settings.is_hidden() and page.locator("#drawer-backdrop").is_hidden()


def test_phone_after_a_chat_exchange(serve, chromium, tiny_site_models):
    server = serve(tiny_site_models)
    s = phone(chromium, 390)
    s.page.goto(server.url + "/")
    s.wait_state("needs-download")
    s.page.locator("#download-button").tap()
    assert s.wait_state("ready", "engine-failed", "download-failed", timeout=120_000) == "ready", s.lantern(".error")
    s.page.evaluate("""() => { const m = document.getElementById('max-tokens'); m.value = '6';
        m.dispatchEvent(new Event('change')); }""")
    # The folded download line opens on a tap to the file list: every row fits the screen's width.
    s.page.locator("#download-summary").tap()
    assert s.page.locator("#file-progress li").first.is_visible()
    assert s.page.evaluate(WIDTHS)[0] <= 390
    assert s.page.evaluate(OUTSIDE, [DOWNLOAD_TEXT, 390]) == []
    shot(s, "downloaded-files-390")

    long_word = "x" * 120  # no place to break: it must wrap anyway
    s.ask("Lanterns " * 30 + long_word)
    s.page.wait_for_function("() => document.querySelector('.message.assistant .copy-answer')")
    assert_fits(s, 390, 844, ".message.assistant .copy-answer")
    shot(s, "chat-390")
    # Scrolled back to the top, the badge and the composer are still on screen.
    s.page.evaluate("() => window.scrollTo(0, 0)")
    assert_fits(s, 390, 844)

    # The conversation is in the drawer; opening it closes the drawer and shows the chat.
    s.page.locator("#conversations-toggle").tap()
    opened = s.page.locator("#conversations li button.open")
    assert opened.count() == 1 and opened.is_visible()
    opened.tap()
    assert s.page.locator("#conversations-drawer").is_hidden()
    assert s.page.locator("#conversations-toggle").get_attribute("aria-expanded") == "false"
    assert s.page.locator(".message.user").is_visible()


def test_desktop_keeps_three_columns_and_hides_the_drawer_buttons(serve, chromium, tiny_site_models):
    server = serve(tiny_site_models)
    s = chromium(webgpu=False, tier=None, context_options={"viewport": {"width": 1280, "height": 800}})
    s.page.goto(server.url + "/")
    s.wait_state("needs-download")
    page = s.page
    # The drawer buttons are on the page, but not shown: both panels sit beside the chat.
    assert page.locator(".drawer-toggle").count() == 2 and page.locator(".drawer-close").count() == 2
    for hidden in (".drawer-toggle >> nth=0", ".drawer-toggle >> nth=1", "#drawer-backdrop"):
        assert page.locator(hidden).is_hidden(), hidden
    side = page.locator("#conversations-drawer").bounding_box()
    main = page.locator(".main").bounding_box()
    settings = page.locator("#settings-drawer").bounding_box()
    assert side["x"] + side["width"] <= main["x"] and main["x"] + main["width"] <= settings["x"]
    assert side["y"] == main["y"] == settings["y"]
    header = page.locator(".topbar").bounding_box()
    assert page.locator("#privacy").bounding_box()["y"] < header["y"] + header["height"]
    assert page.evaluate(WIDTHS) == [1280, 1280]
    shot(s, "desktop-1280")


def test_firefox_at_phone_width_fits_the_screen(serve, firefox, tiny_site_models):
    """The same layout in Firefox ESR at 390 x 844 (issue 21: the phone check in a second engine): no sideways
    scroll, the badge, the input, Send and the download button on the first screen, the drawers closed."""
    server = serve(tiny_site_models)
    s = firefox()
    s.viewport(390, 844)
    s.goto(server.url + "/")
    s.wait_state("needs-download")
    scroll_width, client_width = s.evaluate(WIDTHS)
    assert scroll_width <= client_width == 390, (scroll_width, client_width)
    for selector in ("#privacy", "#prompt", "#send", "#download-button", "#conversations-toggle", "#settings-toggle"):
        assert s.evaluate(ON_SCREEN, [selector, 390, 844]), f"{selector} is not within the 390x844 screen in Firefox"
    hidden = "(sels) => sels.map((q) => document.querySelector(q).getClientRects().length === 0)"
    assert s.evaluate(hidden, ["#conversations-drawer", "#settings-drawer"]) == [True, True]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    s.screenshot(ARTIFACTS / "firefox-needs-download-390.png")
    print(f"screenshot: {ARTIFACTS / 'firefox-needs-download-390.png'}")
