// Text-safe markdown: model output becomes DOM nodes built with createElement + textContent, never
// innerHTML, so "<script>" or "<img onerror>" in an answer is shown as text. Images are never loaded
// (an image URL would make the browser contact another site); links only keep http(s)/mailto targets.

const SAFE_LINK = /^(https?:\/\/|mailto:)/i;
const INLINE = /(`+)([^`][\s\S]*?)\1|\*\*([^*][\s\S]*?)\*\*|~~([^~][\s\S]*?)~~|\*([^*\s](?:[^*]*[^*\s])?)\*|(!?)\[([^\]\n]*)\]\(([^()\s]+)\)/g;

function el(tag, parent, text) {
  const node = document.createElement(tag);
  if (text != null) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

export function renderInline(text, parent) {
  let last = 0;
  INLINE.lastIndex = 0;
  const matches = [...text.matchAll(INLINE)];
  for (const m of matches) {
    if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
    last = m.index + m[0].length;
    if (m[1]) {
      el("code", parent, m[2].replace(/^ (.*) $/, "$1"));
    } else if (m[3] !== undefined) {
      renderInline(m[3], el("strong", parent));
    } else if (m[4] !== undefined) {
      renderInline(m[4], el("del", parent));
    } else if (m[5] !== undefined) {
      renderInline(m[5], el("em", parent));
    } else if (m[6] === "!") {
      // An image: show its description, do not fetch it.
      el("span", parent, `[image: ${m[7] || m[8]}]`).className = "md-image";
    } else {
      const href = m[8];
      if (SAFE_LINK.test(href)) {
        const a = el("a", parent);
        a.href = href;
        a.rel = "noopener noreferrer nofollow";
        a.target = "_blank";
        renderInline(m[7] || href, a);
      } else {
        parent.appendChild(document.createTextNode(m[0]));
      }
    }
  }
  if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
}

function paragraph(lines, parent) {
  const p = el("p", parent);
  lines.forEach((line, i) => {
    if (i) el("br", p);
    renderInline(line, p);
  });
}

const FENCE = /^\s*(```|~~~)\s*([\w+-]*)\s*$/;
const HEADING = /^(#{1,6})\s+(.*?)\s*#*\s*$/;
const BULLET = /^\s*[-*+]\s+(.*)$/;
const NUMBERED = /^\s*(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^\s*>\s?(.*)$/;
const RULE = /^\s*([-*_])(\s*\1){2,}\s*$/;

/** Render markdown `text` into a DocumentFragment. Unfinished fences (mid-stream) render as code so far. */
export function renderMarkdown(text) {
  const root = document.createDocumentFragment();
  const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(FENCE);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !new RegExp(`^\\s*${fence[1]}\\s*$`).test(lines[i])) body.push(lines[i++]);
      i += 1;
      const pre = el("pre", root);
      const code = el("code", pre, body.join("\n"));
      if (fence[2]) code.dataset.lang = fence[2];
      continue;
    }
    if (line.trim() === "") {
      i += 1;
      continue;
    }
    const heading = line.match(HEADING);
    if (heading) {
      renderInline(heading[2], el(`h${Math.min(6, heading[1].length + 2)}`, root));
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      el("hr", root);
      i += 1;
      continue;
    }
    if (QUOTE.test(line)) {
      const quoted = [];
      while (i < lines.length && QUOTE.test(lines[i])) quoted.push(lines[i++].match(QUOTE)[1]);
      el("blockquote", root).appendChild(renderMarkdown(quoted.join("\n")));
      continue;
    }
    const listKind = BULLET.test(line) ? BULLET : NUMBERED.test(line) ? NUMBERED : null;
    if (listKind) {
      const list = el(listKind === BULLET ? "ul" : "ol", root);
      if (listKind === NUMBERED) {
        const start = Number(line.match(NUMBERED)[1]);
        if (start !== 1) list.start = start;
      }
      while (i < lines.length && listKind.test(lines[i])) {
        const m = lines[i].match(listKind);
        renderInline(listKind === BULLET ? m[1] : m[2], el("li", list));
        i += 1;
      }
      continue;
    }
    const para = [];
    while (i < lines.length && lines[i].trim() !== "" && !FENCE.test(lines[i]) && !HEADING.test(lines[i])
      && !BULLET.test(lines[i]) && !NUMBERED.test(lines[i]) && !QUOTE.test(lines[i])) {
      para.push(lines[i++]);
    }
    if (para.length === 0) {
      // A line no block rule consumed (defensive): keep it as text.
      paragraph([lines[i++]], root);
    } else {
      paragraph(para, root);
    }
  }
  return root;
}
