"""Chat conveniences in real Chromium (CPU tier, tiny model: instant answers): copy an answer and a code
block, regenerate, edit and resend, export (Markdown, JSON) and import, rename, search by title; and an
accessibility smoke test (every control reachable by keyboard, every input labelled)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CURRENT = """async () => (await window.lantern.api.listConversations())
    .find((c) => c.id === window.lantern.conversationId)"""
CODE_ANSWER = "Here is code:\n\n```python\nprint('hi')\n```\n\nDone."


def ready_page(serve, chromium, models):
    server = serve(models)
    s = chromium(webgpu=False, tier=None)
    s.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    s.page.goto(server.url + "/")
    s.wait_state("needs-download")
    s.page.click("#download-button")
    assert s.wait_state("ready", "engine-failed", "download-failed", timeout=120_000) == "ready", s.lantern(".error")
    s.page.evaluate("""() => { const t = document.getElementById('temperature'); t.value = '0';
        t.dispatchEvent(new Event('input')); const m = document.getElementById('max-tokens'); m.value = '6';
        m.dispatchEvent(new Event('change')); }""")
    return server, s


def ask(s, text: str | None = None, click: str = "#send") -> dict:
    count = s.lantern(".replyCount")
    if text is not None:
        s.page.fill("#prompt", text)
    s.page.click(click)
    s.page.wait_for_function(
        "(n) => window.lantern.replyCount > n && window.lantern.state === 'ready'", arg=count, timeout=60_000
    )
    return s.lantern(".lastReply")


def clipboard(s) -> str:
    return s.page.evaluate("() => navigator.clipboard.readText()")


def titles(s) -> list[str]:
    return s.page.locator("#conversations li button.open").all_inner_texts()


def test_copy_regenerate_edit_export_import_rename_search(serve, chromium, tiny_site_models, tmp_path):
    server, s = ready_page(serve, chromium, tiny_site_models)
    first = ask(s, "Tell me about lanterns\nand their light")
    assert titles(s) == ["Tell me about lanterns"]  # the first line of the first message

    # Copy the answer.
    s.page.locator(".message.assistant .copy-answer").click()
    assert clipboard(s) == first["text"]

    # Regenerate: the last answer is replaced (greedy: the same words), not added.
    assert s.page.locator(".message.assistant .regenerate").count() == 1
    again = ask(s, click=".message.assistant .regenerate")
    assert again["text"] == first["text"]
    conv = s.page.evaluate(CURRENT)
    assert [m["role"] for m in conv["messages"]] == ["user", "assistant"]

    # Edit a sent message and resend: it and everything after it are replaced.
    ask(s, "A second question")
    assert len(s.page.evaluate(CURRENT)["messages"]) == 4
    s.page.locator(".message.user .edit").first.click()
    assert s.page.locator("#editing").is_visible()
    assert s.page.input_value("#prompt") == "Tell me about lanterns\nand their light"
    ask(s, "An edited question")
    conv = s.page.evaluate(CURRENT)
    assert [m["content"] for m in conv["messages"] if m["role"] == "user"] == ["An edited question"]
    assert len(conv["messages"]) == 2 and s.page.locator("#editing").is_hidden()
    assert s.page.locator(".message").count() == 2

    # Rename.
    s.page.locator("#conversations li.current button.rename").click()
    s.page.fill("#conversations li .title-input", "Lantern notes")
    s.page.press("#conversations li .title-input", "Enter")
    s.page.wait_for_function(
        "() => document.querySelector('#conversations li button.open')?.textContent === 'Lantern notes'"
    )
    assert s.page.evaluate(CURRENT)["title"] == "Lantern notes"

    # Export as Markdown and JSON.
    with s.page.expect_download() as d:
        s.page.click("#export-md")
    markdown = Path(d.value.path()).read_text(encoding="utf-8")
    assert d.value.suggested_filename == "lantern-notes.md"
    assert markdown.startswith("# Lantern notes") and "## You\n\nAn edited question" in markdown
    with s.page.expect_download() as d:
        s.page.click("#export-json")
    exported = Path(d.value.path()).read_text(encoding="utf-8")
    data = json.loads(exported)
    assert data["format"] == "lantern.conversation" and data["conversation"] == s.page.evaluate(CURRENT)

    # Delete it, import the file: the same conversation comes back, field for field.
    s.page.locator("#conversations li.current button.delete").click()
    s.page.wait_for_function("() => document.querySelectorAll('#conversations li').length === 0")
    path = tmp_path / "conversation.json"
    path.write_text(exported, encoding="utf-8")
    s.page.set_input_files("#import-file", str(path))
    s.page.wait_for_function(
        "() => document.querySelector('#conversations li.current button.open')?.textContent === 'Lantern notes'"
    )
    assert s.page.evaluate(CURRENT) == data["conversation"]
    with s.page.expect_download() as d:
        s.page.click("#export-json")
    assert json.loads(Path(d.value.path()).read_text(encoding="utf-8")) == data
    assert s.page.locator(".message").count() == 2

    # A code block in an answer (imported, so its content is known) has its own copy button.
    code = {
        **data["conversation"],
        "id": "code-conversation",
        "title": "Code sample",
        "messages": [{"role": "user", "content": "Show code"}, {"role": "assistant", "content": CODE_ANSWER}],
    }
    path.write_text(
        json.dumps({"format": "lantern.conversation", "version": 1, "conversation": code}), encoding="utf-8"
    )
    s.page.set_input_files("#import-file", str(path))
    s.page.wait_for_function(
        "() => document.querySelector('#conversations li.current button.open')?.textContent === 'Code sample'"
    )
    s.page.locator(".message.assistant .copy-code").click()
    assert clipboard(s) == "print('hi')"

    # Search the list by title.
    assert sorted(titles(s)) == ["Code sample", "Lantern notes"]
    s.page.fill("#conversation-search", "NOTES")
    s.page.wait_for_function("() => document.querySelectorAll('#conversations li').length === 1")
    assert titles(s) == ["Lantern notes"]
    s.page.fill("#conversation-search", "")
    s.page.wait_for_function("() => document.querySelectorAll('#conversations li').length === 2")

    # A file that is not a Lantern conversation is refused, and nothing is stored.
    path.write_text('{"hello": 1}', encoding="utf-8")
    s.page.set_input_files("#import-file", str(path))
    s.page.wait_for_function("() => window.lantern.error?.code === 'import-failed'")
    assert len(s.page.evaluate("() => window.lantern.api.listConversations()")) == 2
    assert s.lantern(".cspViolations") == []
    assert not server.paths("/v1/")


FOCUSABLE = """() => [...document.querySelectorAll('button, input, select, textarea, a[href], summary')]
  .filter((e) => !e.disabled && !e.closest('[hidden], dialog:not([open])') && e.getClientRects().length)
  .map((e) => e.id || e.className || e.textContent.trim())"""
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')].filter((e) => {
  if (e.type === 'hidden') return false;
  const name = (e.getAttribute('aria-label') || '').trim() || (e.labels && [...e.labels].some((l) => l.textContent.trim()))
    || (e.getAttribute('aria-labelledby') && document.getElementById(e.getAttribute('aria-labelledby')));
  return !(name || (e.tagName === 'BUTTON' && e.textContent.trim()));
}).map((e) => e.outerHTML.slice(0, 80))"""


def test_accessibility_smoke_keyboard_and_labels(serve, chromium, tiny_site_models, tmp_path):
    server, s = ready_page(serve, chromium, tiny_site_models)
    ask(s, "Hello")
    assert s.page.evaluate(UNLABELLED) == []
    controls = s.page.evaluate(FOCUSABLE)
    assert "prompt" in controls and "export-json" in controls and "import-file" in controls
    # Tab through the whole page: every visible, enabled control gets the focus.
    s.page.locator("body").focus()
    reached = []
    for _ in range(len(controls) * 2 + 10):
        s.page.keyboard.press("Tab")
        reached.append(
            s.page.evaluate("""() => { const e = document.activeElement;
            return e.id || e.className || e.textContent.trim(); }""")
        )
    assert set(controls) <= set(reached), set(controls) - set(reached)
    # The answer's actions work from the keyboard too.
    s.page.locator(".message.assistant .copy-answer").focus()
    s.page.keyboard.press("Enter")
    s.page.wait_for_function("() => document.querySelector('.message.assistant .copy-answer').textContent === 'Copied'")


def test_loading_shows_stages_then_folds_into_one_line(serve, chromium, tiny_site_models):
    server, s = ready_page(serve, chromium, tiny_site_models)
    load = s.lantern(".load")
    assert [st["name"] for st in load["stages"]] == ["downloading", "verifying", "starting", "ready"], load
    assert all(st["seconds"] is not None and st["seconds"] >= 0 for st in load["stages"])
    assert load["readySeconds"] > 0
    stages = s.page.locator("#load-stages li").all_inner_texts()
    assert stages[0].startswith("Downloading ") and stages[-1].startswith("Ready (")
    # One line once verified and running; the file rows are still there, folded.
    summary = s.page.locator("#download-summary").inner_text()
    variant = s.lantern(".selection.variant")
    assert summary == load["summary"]
    assert summary.startswith("Tiny test Llama · ") and " verified · ready in " in summary and summary.endswith(" s")
    assert s.page.evaluate("() => document.getElementById('download').open") is False
    assert s.page.locator("#file-progress li").first.is_hidden()
    s.page.click("#download-summary")  # expandable for the detail
    assert s.page.locator("#file-progress li").count() == len(variant["files"])
    assert s.page.locator("#file-progress li").first.is_visible()

    # A returning visit: the stored files are re-verified, then started; the same single line.
    s.page.reload()
    assert s.wait_state("ready", timeout=60_000) == "ready"
    names = [st["name"] for st in s.lantern(".load.stages")]
    assert names == ["verifying", "starting", "ready"]
    assert " verified · ready in " in s.page.locator("#download-summary").inner_text()
