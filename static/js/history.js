// Saved conversations: the searchable list, open, rename, delete, export and import, new chat.

import { chat, renderConversation, setEditing } from "./chat.js";
import { fileName, matchesTitle, parseImport, saveFile, toJson, toMarkdown } from "./conversations.js";
import { clearFailure, fail, lantern, log, shared } from "./record.js";
import { deleteConversation, getConversation, listConversations, saveConversation } from "./store.js";
import * as view from "./view.js";

const { $ } = view;

export async function refreshConversations() {
  const all = await listConversations();
  const shown = all.filter((c) => matchesTitle(c, $("conversation-search").value));
  view.showConversations(shown, chat.conversation && chat.conversation.id,
    { onOpen: openConversation, onDelete: removeConversation, onRename: renameConversation });
  return all;
}

async function openConversation(id) {
  if (shared.busy) return;
  const found = await getConversation(id);
  if (!found) return;
  chat.conversation = found;
  lantern.conversationId = id;
  setEditing(null);
  renderConversation();
  $("system-prompt").value = found.systemPrompt || "";
  view.showStats(null);
  await refreshConversations();
}

async function removeConversation(id) {
  await deleteConversation(id);
  if (chat.conversation && chat.conversation.id === id) newChat();
  await refreshConversations();
}

async function renameConversation(id, title) {
  const found = chat.conversation && chat.conversation.id === id ? chat.conversation : await getConversation(id);
  if (found && title) {
    Object.assign(found, { title, renamed: true });
    await saveConversation(found);
    log("renamed", { id });
  }
  await refreshConversations();
}

export async function exportConversation(kind) {
  if (!chat.conversation) return;
  const saved = (await getConversation(chat.conversation.id)) || chat.conversation;
  if (kind === "json") saveFile(fileName(saved, "json"), "application/json", toJson(saved));
  else saveFile(fileName(saved, "md"), "text/markdown", toMarkdown(saved));
}

const PROBLEMS_SHOWN = 3;

/** Import a JSON export: every conversation in it that fits is stored (and the last one opened); the
 * ones that do not are named in the error banner. */
export async function importConversation(file) {
  if (!file || shared.busy) return;
  let parsed;
  try {
    parsed = parseImport(await file.text());
  } catch (err) {
    fail("import-failed", `Could not import ${file.name}: ${err.message}`);
    return;
  }
  const { conversations, problems } = parsed;
  for (const imported of conversations) {
    if (await getConversation(imported.id)) imported.id = crypto.randomUUID(); // never overwrite one of yours
    await saveConversation(imported, { touch: false });
    log("imported", { id: imported.id });
  }
  if (problems.length) reportRefused(file.name, conversations.length, problems);
  else if (lantern.error?.code?.startsWith("import-")) clearFailure(); // an earlier import's complaint is moot
  if (conversations.length) await openConversation(conversations.at(-1).id);
}

function reportRefused(name, imported, problems) {
  log("import-refused", { problems });
  const shown = problems.slice(0, PROBLEMS_SHOWN).join("; ");
  const more = problems.length > PROBLEMS_SHOWN ? ` (and ${problems.length - PROBLEMS_SHOWN} more)` : "";
  if (!imported) {
    fail("import-failed", `Could not import ${name}: ${shown}${more}.`);
  } else {
    fail("import-partial", `Imported ${imported} of ${imported + problems.length} conversations from ${name}; `
      + `left out ${shown}${more}.`);
  }
}

export function newChat() {
  if (shared.busy) return;
  setEditing(null);
  chat.conversation = null;
  lantern.conversationId = null;
  view.clearMessages();
  view.showStats(null);
  refreshConversations();
}
