// DOM updates for the chat page. No innerHTML anywhere: every string is set with textContent.

import { formatBytes, formatRate, formatSeconds } from "./format.js";
import { renderMarkdown } from "./markdown.js";

export const $ = (id) => document.getElementById(id);

function el(tag, { text, className, attrs } = {}) {
  const node = document.createElement(tag);
  if (text != null) node.textContent = text;
  if (className) node.className = className;
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

export function setPrivacy(mode) {
  const badge = $("privacy");
  badge.dataset.mode = mode;
  badge.textContent = mode === "server" ? "Sent to server" : "On this device";
  badge.title = mode === "server"
    ? "Your messages are sent to this site's server to be answered."
    : "Your messages are processed on this device; nothing you type leaves it.";
}

export function showCapabilities(selection) {
  $("capability-summary").textContent = selection.summary;
  $("choice-reason").textContent = selection.ok ? selection.reason : "";
  const notes = $("capability-notes");
  notes.replaceChildren(...selection.warnings.map((w) => el("li", { text: w })));
}

/** Settings' local-engine switch: only tiers that can run here are selectable. */
export function showTiers(tiers, preference) {
  const select = $("local-tier");
  for (const option of select.options) option.disabled = option.value !== "auto" && !tiers.includes(option.value);
  select.value = preference;
}

/** actions: [{label, id, onClick}] */
export function showError(message, actions = []) {
  $("error-message").textContent = message;
  $("error-actions").replaceChildren(...actions.map(({ label, id, onClick }) => {
    const button = el("button", { text: label, attrs: { type: "button", id } });
    button.addEventListener("click", onClick);
    return button;
  }));
  $("error").hidden = false;
}

export function clearError() {
  $("error").hidden = true;
  $("error-message").textContent = "";
  $("error-actions").replaceChildren();
}

const STATUS_WORDS = {
  pending: "waiting", downloading: "downloading", verifying: "checking", done: "verified",
  cached: "already stored", retrying: "damaged, fetching again", failed: "failed", aborted: "stopped",
};

export function showDownload(progress) {
  $("download").hidden = false;
  const total = $("total-progress");
  total.max = progress.totalBytes || 1;
  total.value = progress.receivedBytes;
  const verb = progress.status === "done" ? "Verified" : progress.status === "failed" ? "Stopped at" : "Downloaded";
  $("total-text").textContent = `${verb} ${formatBytes(progress.receivedBytes)} of ${formatBytes(progress.totalBytes)}`;
  const list = $("file-progress");
  const rows = Object.entries(progress.files).map(([path, f]) => {
    const li = el("li", { attrs: { "data-file": path, "data-status": f.status } });
    li.append(el("span", { text: path }));
    const bar = el("progress");
    bar.max = f.bytes || 1;
    bar.value = f.received;
    li.append(bar, el("span", { text: `${STATUS_WORDS[f.status] || f.status} · ${formatBytes(f.bytes)}` }));
    return li;
  });
  list.replaceChildren(...rows);
}

export function hideDownload() {
  $("download").hidden = true;
}

export function setEngineStatus(text) {
  $("engine-status").textContent = text;
}

export function showStats(stats, kind) {
  if (!stats) {
    $("stats").textContent = "";
    return;
  }
  const where = kind === "server" ? "on the server" : stats.tier === "cpu" ? "on this device's processor" : "on this device";
  $("stats").textContent = `First token after ${formatSeconds(stats.ttftSeconds)} · ` +
    `${formatRate(stats.decodeTokensPerSecond, "tokens/s")} · answered ${where}`;
}

export function clearMessages() {
  $("messages").replaceChildren();
}

export function addMessage(role, content, { stopped = false } = {}) {
  const bubble = el("div", { className: `message ${role}`, attrs: { "data-role": role } });
  const body = el("div", { className: "body" });
  bubble.append(body);
  $("messages").append(bubble);
  updateMessage(bubble, content, { stopped });
  return bubble;
}

export function updateMessage(bubble, content, { stopped = false } = {}) {
  const body = bubble.querySelector(".body");
  if (bubble.dataset.role === "assistant") {
    body.replaceChildren(renderMarkdown(content));
  } else {
    body.textContent = content;
  }
  let meta = bubble.querySelector(".meta");
  if (stopped) {
    if (!meta) bubble.append((meta = el("div", { className: "meta" })));
    meta.textContent = "Stopped";
  }
  bubble.scrollIntoView({ block: "end" });
}

/** conversations: [{id, title, updatedAt}] (already filtered by the search box). */
export function showConversations(conversations, currentId, { onOpen, onDelete, onRename }) {
  const items = conversations.map((c) => {
    const li = el("li", { className: c.id === currentId ? "current" : "", attrs: { "data-id": c.id } });
    const open = el("button", { text: c.title || "Untitled", className: "open", attrs: { type: "button" } });
    open.title = new Date(c.updatedAt).toLocaleString();
    open.addEventListener("click", () => onOpen(c.id));
    const rename = el("button", { text: "✎", className: "rename", attrs: { type: "button", "aria-label": `Rename “${c.title}”` } });
    rename.addEventListener("click", () => editTitle(li, c, onRename));
    const del = el("button", { text: "✕", className: "delete", attrs: { type: "button", "aria-label": `Delete “${c.title}”` } });
    del.addEventListener("click", () => onDelete(c.id));
    li.append(open, rename, del);
    return li;
  });
  $("conversations").replaceChildren(...items);
}

/** Inline rename: Enter saves, Escape (or an empty title) keeps the old one. */
function editTitle(li, conversation, onRename) {
  const input = el("input", { className: "title-input", attrs: { type: "text", "aria-label": "Conversation title" } });
  input.value = conversation.title || "";
  let done = false;
  const finish = (save) => {
    if (done) return;
    done = true;
    const title = input.value.trim();
    onRename(conversation.id, save && title ? title : null);
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") finish(true);
    if (e.key === "Escape") finish(false);
  });
  input.addEventListener("blur", () => finish(true));
  li.replaceChildren(input);
  input.focus();
  input.select();
}

export function showStorage(storage) {
  if (!storage || storage.quota == null) {
    $("storage-info").textContent = "";
    return;
  }
  $("storage-info").textContent = `This site uses ${formatBytes(storage.usage)} of browser storage ` +
    `(${formatBytes(storage.available)} more allowed).`;
}

export function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}
