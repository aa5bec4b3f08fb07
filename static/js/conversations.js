// Conversations as files and titles: a title from the first message, search by title, and export
// (Markdown to read, JSON to import again) / import. Everything stays in this browser (store.js); an
// export is a file the user saves, made here from a blob, never sent anywhere.

export const EXPORT_FORMAT = "lantern.conversation";
const TITLE_CHARS = 60;
const ROLES = new Set(["system", "user", "assistant"]);

/** The first line of the first message, shortened: what the conversation list shows. */
export function titleFrom(text) {
  const line = String(text).trim().split("\n")[0].trim();
  return line.length > TITLE_CHARS ? `${line.slice(0, TITLE_CHARS - 1).trimEnd()}…` : line || "New chat";
}

export function matchesTitle(conversation, query) {
  const q = query.trim().toLowerCase();
  return !q || (conversation.title || "").toLowerCase().includes(q);
}

export function toJson(conversation) {
  return JSON.stringify({ format: EXPORT_FORMAT, version: 1, conversation }, null, 2);
}

export function toMarkdown(conversation) {
  const lines = [`# ${conversation.title || "Conversation"}`, ""];
  const started = new Date(conversation.createdAt || Date.now());
  // A time outside Date's range (stored by an import before times were checked) must not break the export.
  const when = Number.isNaN(started.getTime()) ? "at an unknown time" : started.toISOString();
  lines.push(`_Exported from Lantern · ${conversation.modelId || "unknown model"} · started ${when}_`, "");
  if (conversation.systemPrompt) lines.push("## System prompt", "", conversation.systemPrompt, "");
  for (const m of conversation.messages) {
    lines.push(`## ${m.role === "user" ? "You" : m.role === "assistant" ? "Assistant" : "System"}`, "", m.content || "", "");
  }
  return lines.join("\n");
}

// Import: a file is read as data, never trusted. Every field of a conversation and of its messages is
// whitelisted (others are dropped) and type-checked; a conversation with a field that does not fit is
// refused with a message naming it, and the file's other conversations are still imported.

const EARLIEST = Date.UTC(2000, 0, 1); // times are clamped into [EARLIEST, now]: Date and the export need sane ones
const ID_CHARS = 200;
// An answer's stats, as stream.js and cpu-engine.js write them (a new one must be added here to survive import).
const STATS_NUMBERS = ["ttftSeconds", "decodeTokensPerSecond", "prefillTokensPerSecond", "promptTokens",
  "completionTokens", "threads"];
const STATS_TEXT = ["source", "tier"];

/** A field of a conversation in the file that does not fit; its message names it ("message 2: content ..."). */
class Misfit extends Error {}

function has(obj, key) {
  return Object.hasOwn(obj, key) && obj[key] !== undefined;
}

function isPlainObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** Copy `key` from `from` to `to` when present: null, or a value `ok` accepts; else a Misfit. */
function copyOptional(from, to, key, ok, need) {
  if (!has(from, key)) return;
  if (from[key] !== null && !ok(from[key])) throw new Misfit(`${key} must be ${need}`);
  to[key] = from[key];
}

const isText = (v) => typeof v === "string";
const isNumber = (v) => typeof v === "number" && Number.isFinite(v);

function checkStats(stats) {
  if (!isPlainObject(stats)) throw new Misfit("stats must be an object");
  const out = {};
  try {
    for (const key of STATS_NUMBERS) copyOptional(stats, out, key, isNumber, "a number");
    for (const key of STATS_TEXT) copyOptional(stats, out, key, isText, "text");
  } catch (err) {
    throw new Misfit(`stats.${err.message}`);
  }
  return out;
}

function checkMessage(m) {
  if (!isPlainObject(m)) throw new Misfit("must be an object with a role and content");
  if (!ROLES.has(m.role)) throw new Misfit("role must be user, assistant or system");
  if (!isText(m.content)) throw new Misfit("content must be text");
  const out = { role: m.role, content: m.content };
  copyOptional(m, out, "finishReason", isText, "text");
  if (has(m, "stats")) out.stats = m.stats === null ? null : checkStats(m.stats);
  return out;
}

/** A time in ms since 1970, clamped into [EARLIEST, now]; `fallback` when absent. */
function checkTime(c, key, fallback, now) {
  if (!has(c, key) || c[key] === null) return fallback;
  if (!isNumber(c[key])) throw new Misfit(`${key} must be a number (milliseconds since 1970)`);
  return Math.min(now, Math.max(EARLIEST, c[key]));
}

function checkMessages(messages) {
  if (!Array.isArray(messages)) throw new Misfit("messages must be a list");
  return messages.map((m, k) => {
    try {
      return checkMessage(m);
    } catch (err) {
      throw new Misfit(`message ${k + 1}: ${err.message}`);
    }
  });
}

/** One conversation from the file, whitelisted and type-checked; throws a Misfit naming what does not fit. */
function checkConversation(c, now) {
  if (!isPlainObject(c)) throw new Misfit("must be an object with messages");
  const messages = checkMessages(c.messages);
  if (has(c, "id") && c.id !== null && !(isText(c.id) && c.id.length <= ID_CHARS)) {
    throw new Misfit(`id must be text of at most ${ID_CHARS} characters`);
  }
  const out = { id: c.id || crypto.randomUUID() };
  copyOptional(c, out, "title", isText, "text");
  out.title = out.title || titleFrom(messages[0]?.content || "");
  out.createdAt = checkTime(c, "createdAt", now, now);
  out.updatedAt = Math.max(out.createdAt, checkTime(c, "updatedAt", now, now));
  for (const key of ["modelId", "mode", "systemPrompt"]) copyOptional(c, out, key, isText, "text");
  copyOptional(c, out, "renamed", (v) => typeof v === "boolean", "true or false");
  out.messages = messages;
  return out;
}

/** The file's conversations: one ("conversation") or several ("conversations"); throws if it has none. */
function entriesOf(data) {
  if (!isPlainObject(data) || data.format !== EXPORT_FORMAT) {
    throw new Error("This file is not a conversation exported from Lantern.");
  }
  if (data.version !== 1) throw new Error(`This file's format version (${data.version ?? "none"}) is not one this Lantern reads (1).`);
  if (Array.isArray(data.conversations) && data.conversations.length) return data.conversations;
  if (has(data, "conversation")) return [data.conversation];
  throw new Error("This file holds no conversation.");
}

/** Parse an exported JSON file: {conversations: the ones that fit, problems: ["conversation 3: systemPrompt
 * must be text", ...]}. Throws an Error saying what is wrong when the file itself is not one. */
export function parseImport(text, now = Date.now()) {
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    throw new Error("This file is not JSON.");
  }
  const conversations = [];
  const problems = [];
  entriesOf(data).forEach((c, k) => {
    try {
      conversations.push(checkConversation(c, now));
    } catch (err) {
      if (!(err instanceof Misfit)) throw err;
      problems.push(`conversation ${k + 1}: ${err.message}`);
    }
  });
  return { conversations, problems };
}

/** Offer `text` as a file download (an object URL of this page; revoked right after). */
export function saveFile(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function fileName(conversation, ext) {
  const slug = (conversation.title || "conversation").toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
  return `${slug.slice(0, 40) || "conversation"}.${ext}`;
}
