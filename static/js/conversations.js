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
  const when = new Date(conversation.createdAt || Date.now()).toISOString();
  lines.push(`_Exported from Lantern · ${conversation.modelId || "unknown model"} · started ${when}_`, "");
  if (conversation.systemPrompt) lines.push("## System prompt", "", conversation.systemPrompt, "");
  for (const m of conversation.messages) {
    lines.push(`## ${m.role === "user" ? "You" : m.role === "assistant" ? "Assistant" : "System"}`, "", m.content || "", "");
  }
  return lines.join("\n");
}

/** Parse an exported JSON file; throws an Error saying what is wrong (nothing is stored then). */
export function parseImport(text) {
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    throw new Error("This file is not JSON.");
  }
  const c = data && data.format === EXPORT_FORMAT ? data.conversation : null;
  if (!c || typeof c !== "object" || !Array.isArray(c.messages)) {
    throw new Error("This file is not a conversation exported from Lantern.");
  }
  for (const m of c.messages) {
    if (!m || !ROLES.has(m.role) || typeof m.content !== "string") {
      throw new Error("This conversation has a message Lantern can't read.");
    }
  }
  const now = Date.now();
  return {
    ...c,
    id: typeof c.id === "string" && c.id ? c.id : crypto.randomUUID(),
    title: typeof c.title === "string" && c.title ? c.title : titleFrom(c.messages[0]?.content || ""),
    createdAt: Number.isFinite(c.createdAt) ? c.createdAt : now,
    updatedAt: Number.isFinite(c.updatedAt) ? c.updatedAt : now,
  };
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
