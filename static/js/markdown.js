// Text-safe markdown: model output becomes DOM nodes built with createElement + textContent, never
// innerHTML, so "<script>" or "<img onerror>" in an answer is shown as text. Images are never loaded
// (an image URL would make the browser contact another site); links only keep http(s)/mailto targets.
//
// Linear time on any input: answers are re-rendered every frame while streaming, and imported ones come
// from files. Block patterns only match a line's anchored opening marker (one quantifier per run, no
// two quantifiers that can share the same characters); the rest of the line is sliced off, never
// matched. Inline spans are found by one forward scan whose closer lookups are cached (see finder()), not
// by a backtracking regex that re-reads the rest of the line from every "[" or "`".

const SAFE_LINK = /^(https?:\/\/|mailto:)/i;
const MAX_QUOTE_DEPTH = 8; // deeper ">" stay text: each level re-reads its lines, and the DOM stays shallow

function el(tag, parent, text) {
  const node = document.createElement(tag);
  if (text != null) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function isSpace(ch) {
  return ch !== undefined && /\s/.test(ch);
}

/** find(str, from) = text.indexOf(str, from), each answer cached: callers only ask from further on. */
function finder(text) {
  const cache = new Map(); // str -> { from, at }
  return (str, from) => {
    const hit = cache.get(str);
    // The first match at or after hit.from is also the first at or after any later `from` up to it; a
    // miss stays a miss further on.
    if (hit && hit.from <= from && (hit.at >= from || hit.at === -1)) return hit.at;
    const at = text.indexOf(str, from);
    cache.set(str, { from, at });
    return at;
  };
}

/** Each backtick run's start -> its length and the start of the next run of that length (its closer, or -1). */
function backtickRuns(text) {
  const runs = [...text.matchAll(/`+/g)].map((m) => ({ start: m.index, length: m[0].length }));
  const byStart = new Map();
  const nextOfLength = new Map();
  for (let k = runs.length - 1; k >= 0; k -= 1) {
    const { start, length } = runs[k];
    byStart.set(start, { length, close: nextOfLength.get(length) ?? -1 });
    nextOfLength.set(length, start);
  }
  return byStart;
}

// Each span matcher: (text, i, ctx) -> { end, render(parent) } for a span starting at i, or null.

function codeSpan(text, i, ctx) {
  if (text[i] !== "`") return null;
  ctx.runs ??= backtickRuns(text);
  const run = ctx.runs.get(i); // undefined inside a run: only a whole run opens a span
  if (!run || run.close < 0) return null;
  let body = text.slice(i + run.length, run.close);
  if (body.length > 2 && body.startsWith(" ") && body.endsWith(" ")) body = body.slice(1, -1);
  return { end: run.close + run.length, render: (parent) => el("code", parent, body) };
}

/** **bold** and ~~struck~~: the marker, a first character that is not the marker's, up to the next marker. */
function pairedSpan(marker, tag) {
  return (text, i, ctx) => {
    if (!text.startsWith(marker, i) || i + 2 >= text.length || text[i + 2] === marker[0]) return null;
    const close = ctx.find(marker, i + 3);
    if (close < 0) return null;
    const body = text.slice(i + 2, close);
    return { end: close + 2, render: (parent) => renderInline(body, el(tag, parent)) };
  };
}

/** *em*: no "*" inside, and no space just inside either end. */
function emSpan(text, i, ctx) {
  if (text[i] !== "*" || i + 1 >= text.length || text[i + 1] === "*" || isSpace(text[i + 1])) return null;
  const close = ctx.find("*", i + 1);
  if (close < 0 || isSpace(text[close - 1])) return null;
  const body = text.slice(i + 1, close);
  return { end: close + 1, render: (parent) => renderInline(body, el("em", parent)) };
}

/** The end of a link target starting at `from` (no spaces or parentheses, then ")"), or -1. */
function targetEnd(text, from, ctx) {
  if (ctx.target && ctx.target.from === from) return ctx.target.end; // many "[" can share one "]("
  let j = from;
  while (j < text.length && !isSpace(text[j]) && text[j] !== "(" && text[j] !== ")") j += 1;
  const end = j > from && text[j] === ")" ? j : -1;
  ctx.target = { from, end };
  return end;
}

/** [label](target) and ![description](target): the label has no "]" or line break. */
function linkSpan(text, i, ctx) {
  const image = text[i] === "!";
  const open = image ? i + 1 : i;
  if (text[open] !== "[") return null;
  const labelEnd = ctx.find("]", open + 1);
  if (labelEnd < 0 || text[labelEnd + 1] !== "(") return null;
  const lineBreak = ctx.find("\n", open + 1);
  if (lineBreak >= 0 && lineBreak < labelEnd) return null;
  const end = targetEnd(text, labelEnd + 2, ctx);
  if (end < 0) return null;
  const label = text.slice(open + 1, labelEnd);
  const href = text.slice(labelEnd + 2, end);
  const whole = text.slice(i, end + 1);
  return { end: end + 1, render: (parent) => renderLink(parent, { image, label, href, whole }) };
}

function renderLink(parent, { image, label, href, whole }) {
  if (image) {
    // An image: show its description, do not fetch it.
    el("span", parent, `[image: ${label || href}]`).className = "md-image";
  } else if (SAFE_LINK.test(href)) {
    const a = el("a", parent);
    a.href = href;
    a.rel = "noopener noreferrer nofollow";
    a.target = "_blank";
    renderInline(label || href, a);
  } else {
    parent.appendChild(document.createTextNode(whole));
  }
}

const SPANS = [codeSpan, pairedSpan("**", "strong"), pairedSpan("~~", "del"), emSpan, linkSpan];
const OPENERS = new Set(["`", "*", "~", "!", "["]);

export function renderInline(text, parent) {
  const ctx = { find: finder(text), runs: null, target: null };
  let last = 0;
  let i = 0;
  while (i < text.length) {
    let span = null;
    if (OPENERS.has(text[i])) {
      for (const match of SPANS) if ((span = match(text, i, ctx))) break;
    }
    if (!span) {
      i += 1;
      continue;
    }
    if (i > last) parent.appendChild(document.createTextNode(text.slice(last, i)));
    span.render(parent);
    i = last = span.end;
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

// Opening markers only; what follows is line.slice(match[0].length).
const FENCE = /^\s*(```|~~~)/;
const HEADING = /^(#{1,6})\s/;
const BULLET = /^\s*[-*+]\s+/;
const NUMBERED = /^\s*(\d{1,9})[.)]\s+/;
const QUOTE = /^\s*>\s?/;

/** An opening fence: its marker and language, or null (the rest of the line must be one word at most). */
function fenceOf(line) {
  const m = FENCE.exec(line);
  if (!m) return null;
  const lang = line.slice(m[0].length).trim();
  return /^[\w+-]*$/.test(lang) ? { marker: m[1], lang } : null;
}

/** "# Title ##" -> "Title": a closing run of "#" goes only when it stands apart ("# C#" keeps its "#"). */
function headingText(line, hashes) {
  const text = line.slice(hashes).trim();
  let end = text.length;
  while (end > 0 && text[end - 1] === "#") end -= 1;
  return end === 0 || isSpace(text[end - 1]) ? text.slice(0, end).trimEnd() : text;
}

/** "---", "* * *", "___": three or more of one of -*_ and nothing else but spaces. */
function isRule(line) {
  const marks = line.replace(/\s+/g, "");
  return marks.length >= 3 && "-*_".includes(marks[0]) && marks === marks[0].repeat(marks.length);
}

function isQuote(line, depth) {
  return depth < MAX_QUOTE_DEPTH && QUOTE.test(line);
}

/** Lines that end a paragraph: a new block starts there. */
function startsBlock(line, depth) {
  return line.trim() === "" || fenceOf(line) !== null || HEADING.test(line) || BULLET.test(line)
    || NUMBERED.test(line) || isQuote(line, depth);
}

/** Render markdown `text` into a DocumentFragment. Unfinished fences (mid-stream) render as code so far. */
export function renderMarkdown(text) {
  const root = document.createDocumentFragment();
  renderBlocks(String(text).replace(/\r\n?/g, "\n").split("\n"), root, 0);
  return root;
}

function renderBlocks(lines, root, depth) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = fenceOf(line);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && lines[i].trim() !== fence.marker) body.push(lines[i++]);
      i += 1;
      const code = el("code", el("pre", root), body.join("\n"));
      if (fence.lang) code.dataset.lang = fence.lang;
      continue;
    }
    if (line.trim() === "") {
      i += 1;
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      renderInline(headingText(line, heading[1].length), el(`h${Math.min(6, heading[1].length + 2)}`, root));
      i += 1;
      continue;
    }
    if (isRule(line)) {
      el("hr", root);
      i += 1;
      continue;
    }
    if (isQuote(line, depth)) {
      const quoted = [];
      for (; i < lines.length && isQuote(lines[i], depth); i += 1) {
        quoted.push(lines[i].slice(QUOTE.exec(lines[i])[0].length));
      }
      renderBlocks(quoted, el("blockquote", root), depth + 1);
      continue;
    }
    const listKind = BULLET.test(line) ? BULLET : NUMBERED.test(line) ? NUMBERED : null;
    if (listKind) {
      i = renderList(lines, i, listKind, root);
      continue;
    }
    const para = [line];
    i += 1;
    while (i < lines.length && !startsBlock(lines[i], depth)) para.push(lines[i++]);
    paragraph(para, root);
  }
}

/** A list from lines[i] on (all of one kind); returns the index after it. */
function renderList(lines, i, kind, root) {
  const list = el(kind === BULLET ? "ul" : "ol", root);
  if (kind === NUMBERED) {
    const start = Number(NUMBERED.exec(lines[i])[1]);
    if (start !== 1) list.start = start;
  }
  let m;
  while (i < lines.length && (m = kind.exec(lines[i]))) {
    renderInline(lines[i].slice(m[0].length), el("li", list));
    i += 1;
  }
  return i;
}
