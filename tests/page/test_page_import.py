"""Import reads a file as data, never trusts it: every field of a conversation and of its messages is
whitelisted and type-checked, times are clamped into a sane range, a conversation that does not fit is
refused with a message naming the field, and the file's good conversations are kept. Driven through the
page's own Import control in real Chromium (no model needed: the page stays "unsupported")."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

FORMAT = {"format": "lantern.conversation", "version": 1}
ALL = "async () => window.lantern.api.listConversations()"
CURRENT = """async () => (await window.lantern.api.listConversations())
    .find((c) => c.id === window.lantern.conversationId)"""
YEAR_2000 = 946_684_800_000  # the earliest time an import keeps (ms since 1970)
STATS = {
    "source": "engine",
    "tier": "cpu",
    "threads": 2,
    "ttftSeconds": 0.5,
    "decodeTokensPerSecond": 12.5,
    "prefillTokensPerSecond": None,
    "promptTokens": 20,
    "completionTokens": 6,
}


def conversation(n: int, **fields) -> dict:
    return {
        "id": f"conv-{n}",
        "title": f"Conversation {n}",
        "createdAt": 1_700_000_000_000 + n,
        "updatedAt": 1_700_000_100_000 + n,
        "modelId": "tiny-q4f32",
        "mode": "local",
        "systemPrompt": "Be brief.",
        "messages": [
            {"role": "user", "content": f"Question {n}"},
            {"role": "assistant", "content": f"Answer {n}", "finishReason": "stop", "stats": dict(STATS)},
        ],
        **fields,
    }


@pytest.fixture
def page(serve, chromium, tiny_site_models):
    server = serve(tiny_site_models)
    s = chromium(webgpu=False)
    s.page.goto(server.url + "/")
    s.wait_state("unsupported")
    return s


def import_file(s, path: Path, data) -> None:
    """Choose `data` (written as JSON) in the page's Import control; wait until the import is done."""
    events = len(s.lantern(".events"))
    path.write_text(json.dumps(data), encoding="utf-8")
    s.page.set_input_files("#import-file", str(path))
    s.page.wait_for_function(
        """(n) => window.lantern.events.slice(n).some((e) => e.type === 'imported' || e.type === 'error')
            && document.getElementById('import-file').value === ''""",
        arg=events,
    )


def events(s, kind: str) -> list[dict]:
    return [e for e in s.lantern(".events") if e["type"] == kind]


def test_import_keeps_the_conversations_that_fit_and_names_the_rest(page, tmp_path):
    s = page
    good = conversation(1, renamed=True, html="<img src=x onerror=alert(1)>", __proto__={"admin": True})
    good["messages"][1]["html"] = "<b>extra</b>"  # not a message field: dropped
    good["messages"][1]["stats"]["gpu"] = "injected"  # not a stats field: dropped
    twin = conversation(2, id="conv-1", createdAt=1e20, updatedAt=-5)  # same id as `good`; absurd times
    bad = [
        conversation(3, systemPrompt={"text": "obey"}),
        conversation(4, messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": 5}]),
        conversation(5, createdAt="yesterday"),
        conversation(6, title=["a", "list"]),
        conversation(7, messages=[{"role": "user", "content": "hi", "stats": {"ttftSeconds": "fast"}}]),
        conversation(8, messages=[{"role": "root", "content": "hi"}]),
        conversation(9, messages="hello"),
        conversation(10, renamed="yes"),
        conversation(11, id={"$gt": ""}),
        "not a conversation",
    ]
    before = time.time() * 1000
    import_file(s, tmp_path / "bundle.json", {**FORMAT, "conversations": [good, twin, *bad]})

    refused = events(s, "import-refused")
    assert refused and refused[-1]["problems"] == [
        "conversation 3: systemPrompt must be text",
        "conversation 4: message 2: content must be text",
        "conversation 5: createdAt must be a number (milliseconds since 1970)",
        "conversation 6: title must be text",
        "conversation 7: message 1: stats.ttftSeconds must be a number",
        "conversation 8: message 1: role must be user, assistant or system",
        "conversation 9: messages must be a list",
        "conversation 10: renamed must be true or false",
        "conversation 11: id must be text of at most 200 characters",
        "conversation 12: must be an object with messages",
    ], "each refused conversation is named with the field that does not fit"
    error = s.lantern(".error")
    assert error["code"] == "import-partial", error
    assert error["message"].startswith("Imported 2 of 12 conversations from bundle.json; left out conversation 3: ")
    assert "(and 7 more)" in error["message"]
    assert s.page.locator("#error-message").inner_text() == error["message"]

    stored = {c["title"]: c for c in s.page.evaluate(ALL)}
    assert sorted(stored) == ["Conversation 1", "Conversation 2"], "the good conversations are kept"
    # Only known fields, with the types Lantern writes: extra fields (and their markup) are dropped.
    expected = {k: v for k, v in copy.deepcopy(good).items() if k not in ("html", "__proto__")}
    del expected["messages"][1]["html"], expected["messages"][1]["stats"]["gpu"]
    assert stored["Conversation 1"] == expected
    # The twin keeps its content under a new id (an import never overwrites), its times clamped.
    twin_stored = stored["Conversation 2"]
    assert twin_stored["id"] != "conv-1" and twin_stored["messages"] == twin["messages"]
    assert before <= twin_stored["createdAt"] <= time.time() * 1000, "a time in the future becomes now"
    assert twin_stored["updatedAt"] == twin_stored["createdAt"], "updatedAt is clamped, never before createdAt"
    assert s.lantern(".conversationId") == twin_stored["id"], "the last imported conversation is opened"
    assert s.page.locator("#conversations li").count() == 2


def test_import_clamps_times_so_markdown_export_works(page, tmp_path):
    """Issue 20: createdAt 1e20 was stored as is, and Export Markdown then threw (no file)."""
    s = page
    import_file(s, tmp_path / "future.json", {**FORMAT, "conversation": conversation(1, createdAt=1e20)})
    current = s.page.evaluate(CURRENT)
    assert current is not None, s.lantern(".error")
    assert YEAR_2000 <= current["createdAt"] <= time.time() * 1000, current["createdAt"]
    with s.page.expect_download(timeout=15_000) as download:
        s.page.click("#export-md")
    markdown = Path(download.value.path()).read_text(encoding="utf-8")
    assert markdown.startswith("# Conversation 1\n")
    assert f"· started {time.strftime('%Y', time.gmtime(current['createdAt'] / 1000))}-" in markdown

    # A time before 2000 (or negative) is clamped up to 2000-01-01.
    import_file(s, tmp_path / "past.json", {**FORMAT, "conversation": conversation(2, createdAt=-1e20)})
    assert s.page.evaluate(CURRENT)["createdAt"] == YEAR_2000
    with s.page.expect_download(timeout=15_000) as download:
        s.page.click("#export-md")
    assert "· started 2000-01-01T00:00:00.000Z_" in Path(download.value.path()).read_text(encoding="utf-8")


def test_import_refuses_a_system_prompt_that_is_not_text(page, tmp_path):
    """Issue 20: an object systemPrompt was stored and shown (and used) as "[object Object]"."""
    s = page
    data = {**FORMAT, "conversation": conversation(1, systemPrompt={"role": "system", "content": "obey"})}
    import_file(s, tmp_path / "prompt.json", data)
    error = s.lantern(".error")
    assert error == {
        "code": "import-failed",
        "message": "Could not import prompt.json: conversation 1: systemPrompt must be text.",
    }
    assert s.page.evaluate(ALL) == [], "nothing is stored from a file whose only conversation does not fit"
    assert s.page.input_value("#system-prompt") != "[object Object]"

    # The same conversation with text there imports, and its prompt is shown; the complaint goes.
    import_file(s, tmp_path / "prompt.json", {**FORMAT, "conversation": conversation(1)})
    assert s.page.input_value("#system-prompt") == "Be brief."
    assert s.lantern(".error") is None
