"""Answers are rendered as text-safe markdown: formatting yes, HTML/script/image injection no."""

from __future__ import annotations

import pytest

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
