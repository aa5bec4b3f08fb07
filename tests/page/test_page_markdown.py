"""Answers are rendered as text-safe markdown: formatting yes, HTML/script/image injection no; and in
linear time, whatever the input (a backtracking pattern froze the tab for minutes on one line)."""

from __future__ import annotations

import json
import random

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

pytestmark = pytest.mark.browser

RENDER = """async (text) => {
  const { renderMarkdown } = await import('/static/js/markdown.js');
  const box = document.createElement('div');
  box.id = 'md-test';
  box.appendChild(renderMarkdown(text));
  document.body.appendChild(box);
  const tags = [...box.querySelectorAll('*')].map((n) => n.tagName.toLowerCase());
  const attrs = [...box.querySelectorAll('*')].flatMap((n) => [...n.attributes].map((a) => a.name + '=' + a.value));
  const out = { tags, attrs, text: box.textContent, links: [...box.querySelectorAll('a')].map((a) => a.href) };
  box.remove();
  return out;
}"""

ATTACKS = [
    "<script>window.pwned = 1</script>",
    '<img src=x onerror="window.pwned = 2">',
    '<iframe src="javascript:window.pwned=3"></iframe>',
    "[click](javascript:window.pwned=4)",
    "![tracker](http://evil.example/pixel.png)",
    '<a href="http://evil.example" onclick="window.pwned=5">x</a>',
    "**<svg onload=window.pwned=6>**",
    "`<b>code</b>`",
    "```html\n<script>window.pwned=7</script>\n```",
]


@pytest.fixture
def page(serve, chromium, tiny_site_models):
    server = serve(tiny_site_models)
    s = chromium(webgpu=False)
    s.page.goto(server.url + "/")
    s.wait_state("unsupported")
    return s


def test_markdown_formatting(page):
    md = (
        "# Title\n\nSome **bold**, *em*, `code` and ~~gone~~.\n\n- one\n- two\n\n3. c\n4. d\n\n> quoted\n\n"
        "```py\nprint('hi')\n```\n\nA [link](https://example.org/x) here.\nsecond line\n\n---"
    )
    out = page.page.evaluate(RENDER, md)
    for tag in ("h3", "strong", "em", "code", "del", "ul", "ol", "li", "blockquote", "pre", "a", "br", "hr"):
        assert tag in out["tags"], tag
    assert "start=3" in out["attrs"]
    assert out["links"] == ["https://example.org/x"]
    assert "rel=noopener noreferrer nofollow" in out["attrs"]
    assert "print('hi')" in out["text"]


def test_injection_is_shown_as_text(page):
    for attack in ATTACKS:
        out = page.page.evaluate(RENDER, attack)
        assert not {"script", "img", "iframe", "svg", "b", "object", "embed"} & set(out["tags"]), (attack, out["tags"])
        assert not [a for a in out["attrs"] if a.startswith("on") or "javascript:" in a], (attack, out["attrs"])
        assert all(link.startswith(("http://", "https://", "mailto:")) for link in out["links"]), attack
    page.page.wait_for_timeout(100)
    assert page.page.evaluate("() => window.pwned") is None
    assert page.request_urls("evil.example") == []


# ------------------------------------------------------------------------------------------ linear time
# Inputs built against each pattern markdown.js uses (block markers, inline spans): long runs of what
# its quantifiers repeat, ending in what makes a backtracking match fail. A linear renderer takes
# milliseconds on each; the old patterns took seconds (quadratic), or never finished (the heading's
# cubic one), or overflowed the stack (">" nesting).
N = 50_000
RENDER_BOUND_S = 2.0  # generous for 2 busy cores: linear is ~0.05 s here, quadratic ~4 s, cubic hours
HANG_S = 20  # a frozen page gets this long before the case is reported and the page replaced


def _rep(unit: str, n: int = N) -> str:
    return unit * max(1, n // len(unit))


_rng = random.Random(20)
_MARKERS = " \t#*_`[]()|>!~-+.1\n"
ADVERSARIAL = {
    "heading: '# a', spaces, 'x'": "# a" + " " * N + "x",
    "heading: ' #' runs": "# a" + _rep(" #") + " x",
    "heading: a '#' run, then text": "# " + "#" * N + " x",
    "heading: too many '#'": "#" * N + " x",
    "heading: no-break spaces": "# a" + "\u00a0" * N + "x",
    "heading: tabs": "#\t" + "\t" * N + "x",
    "fence: ``` spaces '!'": "```" + " " * N + "!",
    "fence: spaces, ```, spaces, two words": " " * N + "```" + " " * N + "a b",
    "fence: ~~~ spaces word spaces '!'": "~~~" + " " * N + "py" + " " * N + "!",
    "fence: many opened and closed": _rep("```\n"),
    "bullet: '- ', spaces, x, U+2028": "- " + " " * N + "x\u2028y",
    "bullet: spaces, then '-x'": " " * N + "-x",
    "bullet: '- ' run": _rep("- ") + "x",
    "numbered: '1.', spaces, x, U+2028": "1." + " " * N + "x\u2028y",
    "numbered: a digit run": "1" * N + ". x",
    "numbered: '1.' run": _rep("1."),
    "numbered: spaces, digits, ')'": " " * N + "1" * N + ")",
    "quote: a '>' run": ">" * N,
    "quote: a '> ' run": _rep("> ") + "x",
    "quote: many quoted lines": _rep("> a\n"),
    "rule: '-', spaces, '-', spaces, '-x'": "-" + " " * N + "-" + " " * N + "-x",
    "rule: '- ' run, then '-x'": _rep("- ") + "-x",
    "rule: a '*' run, then x": "*" * N + "x",
    "rule: '_ ' run, then a": _rep("_ ") + "a",
    "code: a backtick run, then text": "`" * (N // 2) + "a" * (N // 2),
    "code: backtick runs of growing length": "".join("`" * k + "a" for k in range(1, 310)),
    "code: '`a' run": _rep("`a"),
    "code: '``a`' run": _rep("``a`"),
    "code: spaces inside": "` " + " " * N + "a\u2028 `",
    "bold: '**a' run": _rep("**a"),
    "bold: '**', then 'a *' run": "**" + _rep("a *"),
    "strike: a '~' run": "~" * N,
    "strike: '~~a ' run": _rep("~~a "),
    "em: '*a ' run": _rep("*a "),
    "em: '* a' run": _rep("* a"),
    "em: an '_' run": "_" * N,
    "link: a '[' run": "[" * N,
    "link: '](' run": _rep("]("),
    "link: '[a](' run": _rep("[a]("),
    "link: '![' run": _rep("!["),
    "link: a '[' run, then one unclosed target": "[" * (N // 2) + "a](" + "x" * (N // 2),
    "link: a '[' run, then a link": "[" * (N // 2) + "a](http://x" + "y" * (N // 2) + ")",
    "link: a long label, no target": "[" + "a" * N + "](",
    "table: a '|' run": "|" * N,
    "table: '| a ' run": _rep("| a "),
    "table: many rows": _rep("| a | b |\n"),
    "newlines: a '\\n' run": "\n" * N,
    "newlines: a '\\r' run": "\r" * N,
    "newlines: '\\r\\n' run": _rep("\r\n"),
    "newlines: one-letter lines": _rep("a\n"),
    "mixed: every marker, repeated": _rep("# *_`[](|>1. ~"),
    "mixed: random markers": "".join(_rng.choice(_MARKERS) for _ in range(N)),
    "mixed: random markers and letters": "".join(_rng.choice(_MARKERS + "abc") for _ in range(N)),
}
# What renderMarkdown may produce: anything else (or an on* attribute) would be injected markup.
SAFE_TAGS = {"p", "br", "h3", "h4", "h5", "h6", "strong", "em", "del", "code", "pre", "ul", "ol", "li"}
SAFE_TAGS |= {"blockquote", "hr", "a", "span"}

DONE = "markdown-test: "  # the page logs this, then the result, when a render ends

START_RENDER = """async (text) => {
  const { renderMarkdown } = await import('/static/js/markdown.js');
  // From a task of its own, and reported on the console: Playwright waits for that message without
  // touching the page, so a render that freezes the page only makes the wait time out.
  setTimeout(() => {
    const started = performance.now();
    let result;
    try {
      const box = document.createElement('div');
      box.appendChild(renderMarkdown(text));
      const seconds = (performance.now() - started) / 1000;
      const nodes = [...box.querySelectorAll('*')];
      result = { seconds, tags: [...new Set(nodes.map((n) => n.tagName.toLowerCase()))],
        handlers: nodes.flatMap((n) => [...n.attributes].map((a) => a.name)).filter((a) => a.startsWith('on')) };
    } catch (e) {
      result = { error: String(e) };
    }
    console.log('markdown-test: ' + JSON.stringify(result));
  }, 0);
}"""


def _interrupter(s):
    """stop(): end the script a render froze the page with. DevTools can interrupt a busy page; a wait on
    the page itself (wait_for_function, evaluate, close) would last as long as the render."""
    cdp = s.context.new_cdp_session(s.page)
    return lambda: cdp.send("Runtime.terminateExecution")


def _is_done(message) -> bool:
    return message.text.startswith(DONE)


def test_markdown_renders_adversarial_inputs_in_linear_time(serve, chromium, tiny_site_models):
    server = serve(tiny_site_models)
    s = chromium(webgpu=False)
    s.page.goto(server.url + "/")
    s.wait_state("unsupported")
    stop = _interrupter(s)
    problems = []
    for name, text in ADVERSARIAL.items():
        try:
            with s.page.expect_console_message(_is_done, timeout=HANG_S * 1000) as message:
                s.page.evaluate(START_RENDER, text)
        except PlaywrightTimeout:
            problems.append(f"{name} ({len(text)} chars): still rendering after {HANG_S} s")
            stop()
            continue
        out = json.loads(message.value.text[len(DONE) :])
        if "error" in out:
            problems.append(f"{name} ({len(text)} chars): {out['error']}")
        elif out["seconds"] > RENDER_BOUND_S:
            problems.append(f"{name} ({len(text)} chars): {out['seconds']:.1f} s")
        elif not set(out["tags"]) <= SAFE_TAGS or out["handlers"]:
            problems.append(f"{name}: unsafe markup {sorted(set(out['tags']) - SAFE_TAGS)} {out['handlers']}")
    assert not problems, (
        f"markdown.js must render every input in linear time (under {RENDER_BOUND_S} s for {N} characters) "
        "and only safe markup; these failed (a pattern that backtracks, or unbounded recursion; match only "
        "anchored markers and scan spans forward):\n" + "\n".join(problems)
    )


WATCH_ANSWER = """() => new MutationObserver((records, observer) => {
  if (document.querySelector('.message.assistant h3')) {
    observer.disconnect();
    console.log('markdown-test: rendered');
  }
}).observe(document.getElementById('messages'), { childList: true, subtree: true })"""


def test_imported_answer_that_froze_the_tab_renders_at_once(serve, chromium, tiny_site_models, tmp_path):
    """Issue 20: one imported answer with a heading line of 8k spaces froze the tab for 72 s."""
    server = serve(tiny_site_models)
    s = chromium(webgpu=False)
    s.page.goto(server.url + "/")
    s.wait_state("unsupported")
    answer = "# a" + " " * N + "x\n\n" + ">" * N + "\n\n" + "`" * (N // 2) + "a" * (N // 2)
    conversation = {
        "id": "frozen",
        "title": "Adversarial answer",
        "createdAt": 1_700_000_000_000,
        "updatedAt": 1_700_000_000_000,
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": answer}],
    }
    path = tmp_path / "frozen.json"
    path.write_text(json.dumps({"format": "lantern.conversation", "version": 1, "conversation": conversation}))
    stop = _interrupter(s)
    s.page.evaluate(WATCH_ANSWER)
    try:
        with s.page.expect_console_message(_is_done, timeout=HANG_S * 1000):
            s.page.set_input_files("#import-file", str(path))
    except PlaywrightTimeout:
        stop()
        pytest.fail(f"the imported answer did not render within {HANG_S} s: markdown.js backtracks (issue 20)")
    heading = s.page.locator(".message.assistant h3").inner_text()
    assert heading.split() == ["a", "x"], heading[:40]
    assert s.page.locator(".message.assistant blockquote").count() >= 1
    assert s.lantern(".conversationId") == "frozen"
