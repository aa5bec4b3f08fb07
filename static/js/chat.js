// The conversation on screen: send, answer (streamed from whichever engine answers), stop, regenerate,
// edit and resend. Every answer is saved as it ends, stopped and failed ones included.

import { deviceLost, discardLostEngine } from "./actions.js";
import { hasServerConsent } from "./consent.js";
import { titleFrom } from "./conversations.js";
import { classifyEngineError } from "./engines.js";
import { refreshConversations } from "./history.js";
import { readyText } from "./local-run.js";
import { copyText, decorateMessage } from "./message-actions.js";
import { fail, lantern, log, shared, state, variant } from "./record.js";
import { activeEngine, useServer } from "./server-mode.js";
import { settings } from "./settings.js";
import { newConversation, saveConversation } from "./store.js";
import * as view from "./view.js";

const { $ } = view;

/** The open conversation and the sent message being edited (its index, or null). */
export const chat = { conversation: null, editing: null };

function engineMessages(conv, systemPrompt) {
  const out = systemPrompt ? [{ role: "system", content: systemPrompt }] : [];
  for (const m of conv.messages) {
    if (m.role === "assistant" && !m.content) continue; // a reply stopped before its first token
    out.push({ role: m.role, content: m.content });
  }
  return out;
}

/** The engine that answers now, after asking consent where needed; null (with a status line) if none. */
async function readyEngine() {
  if (lantern.mode === "local" && !shared.localEngine) {
    // Local chat isn't possible (yet): nothing is sent anywhere without the user's explicit consent.
    if (lantern.engine.status === "lost") {
      view.setEngineStatus("The GPU stopped responding: reload the page, or switch to the server in Settings.");
      return null;
    }
    if (lantern.selection && !lantern.selection.ok) {
      const reason = lantern.selection.problems[0].message;
      if (!(await useServer(reason))) return null;
    } else {
      view.setEngineStatus(state.is("needs-download")
        ? "Download the model first (button above), or switch to the server in Settings."
        : "The model is still starting; your message is kept in the box.");
      return null;
    }
  }
  if (lantern.mode === "server" && !hasServerConsent()) {
    if (!(await useServer())) return null;
  }
  return activeEngine();
}

export async function send(text) {
  text = (text ?? $("prompt").value).trim();
  if (!text || shared.busy) return;
  const engine = await readyEngine();
  if (!engine) return;
  if (!chat.conversation) chat.conversation = newConversation({ modelId: lantern.selection?.variantId || lantern.model });
  const conversation = chat.conversation;
  if (chat.editing !== null) {
    // Edit and resend: the edited message replaces the old one and everything after it.
    conversation.messages.length = Math.min(chat.editing, conversation.messages.length);
    setEditing(null);
  }
  if (!conversation.messages.length && !conversation.renamed) conversation.title = titleFrom(text);
  conversation.messages.push({ role: "user", content: text });
  $("prompt").value = "";
  renderConversation();
  await answer(engine);
}

/** Regenerate: the last answer is dropped and the same conversation is answered again. */
export async function regenerate() {
  const conversation = chat.conversation;
  if (shared.busy || !conversation || conversation.messages.at(-1)?.role !== "assistant") return;
  const engine = await readyEngine();
  if (!engine) return;
  conversation.messages.pop();
  log("regenerate");
  renderConversation();
  await answer(engine);
}

/** Edit a sent message: its text goes back to the box; sending replaces it and what followed. */
export function setEditing(index) {
  chat.editing = index;
  $("editing").hidden = index === null;
  if (index === null) return;
  $("prompt").value = chat.conversation.messages[index].content;
  $("prompt").focus();
}

export function renderConversation() {
  view.clearMessages();
  const conversation = chat.conversation;
  if (!conversation) return;
  const last = conversation.messages.length - 1;
  conversation.messages.forEach((m, index) => {
    const text = m.content || (m.finishReason === "error" ? "(no answer)" : "");
    const bubble = view.addMessage(m.role, text, { stopped: m.finishReason === "abort" || m.finishReason === "error" });
    decorateMessage(bubble, m, {
      index, isLastAnswer: index === last, onCopy: copyText, onRegenerate: regenerate,
      onEdit: (i) => !shared.busy && setEditing(i),
    });
  });
}

/** How long a stopped engine may take to hand back its own last words before the page ends the answer
 * itself: a Stop always ends the answer on screen within a second, whatever the engine is doing. */
const STOP_GRACE_MS = 250;

/** The answer streaming now: its Stop signal exists from the moment Send is accepted. */
let current = null;

/** `run`'s result, or, once `signal` is aborted and `run` has not settled within the grace period,
 * `stoppedResult()`; a run that fails after a Stop counts as stopped, not as an error. The engine winds
 * the stopped run down on its own (its next answer waits for that). */
function untilStopped(run, signal, stoppedResult) {
  const settled = run.then((result) => ({ result }), (error) => ({ error }));
  const stopped = new Promise((resolve) => {
    const onAbort = () => setTimeout(() => resolve({ result: stoppedResult() }), STOP_GRACE_MS);
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  return Promise.race([settled, stopped]).then(({ result, error }) => {
    if (!error) return result;
    if (signal.aborted) return stoppedResult();
    throw error;
  });
}

/** Answer the conversation as it stands (its last message is the user's). */
async function answer(engine) {
  const conversation = chat.conversation;
  const { systemPrompt, temperature, maxTokens } = settings();
  // Busy (and Stop live) before the first await, so a Stop right after Send is never lost.
  const controller = new AbortController();
  current = { controller };
  shared.busy = true;
  view.setBusy(true);
  state.go("generating");
  conversation.mode = engine.kind;
  conversation.systemPrompt = systemPrompt;
  lantern.conversationId = conversation.id;
  const bubble = view.addMessage("assistant", "");
  let frame = 0;
  let latest = "";
  const started = performance.now();
  lantern.lastReply = { text: "", finishReason: null, stats: null, kind: engine.kind, deltas: 0, startedAt: started };
  try {
    await saveConversation(conversation);
    await refreshConversations();
    const messages = engineMessages(conversation, systemPrompt);
    const run = controller.signal.aborted
      ? Promise.resolve({ text: "", finishReason: "abort", stats: null })
      : engine.chat(messages, { temperature, maxTokens, signal: controller.signal }, (delta, full) => {
        if (controller.signal.aborted) return; // words after a Stop are not shown
        latest = full;
        lantern.lastReply.text = full;
        lantern.lastReply.deltas += 1;
        if (!frame) {
          frame = requestAnimationFrame(() => {
            frame = 0;
            view.updateMessage(bubble, latest);
          });
        }
      });
    const result = await untilStopped(run, controller.signal,
      () => ({ text: latest, finishReason: "abort", stats: null }));
    if (frame) cancelAnimationFrame(frame);
    const text = controller.signal.aborted ? latest : result.text;
    const finishReason = controller.signal.aborted ? "abort" : result.finishReason;
    view.updateMessage(bubble, text, { stopped: finishReason === "abort" });
    conversation.messages.push({ role: "assistant", content: text, finishReason, stats: result.stats });
    Object.assign(lantern.lastReply, { text, finishReason, stats: result.stats });
    view.showStats(result.stats, engine.kind);
    if (engine.tier === "cpu" && shared.localEngine === engine) view.setEngineStatus(readyText(variant(), result.stats));
  } catch (err) {
    const e = classifyEngineError(err);
    if (frame) cancelAnimationFrame(frame);
    view.updateMessage(bubble, latest || "(no answer)", { stopped: true });
    conversation.messages.push({ role: "assistant", content: latest, finishReason: "error" });
    lantern.lastReply.finishReason = "error";
    if (engine.kind === "local" && e.code === "device-lost") {
      discardLostEngine(engine);
      deviceLost(e);
    } else {
      fail(e.code, e.message);
    }
  } finally {
    await finishAnswer(conversation);
  }
}

/** Every answer ends here, however it ended: saved, listed, back to ready, counted. A failing save or
 * render is reported, never allowed to leave the page busy. */
async function finishAnswer(conversation) {
  current = null;
  try {
    await saveConversation(conversation);
    await refreshConversations();
  } catch (err) {
    fail("save-failed", `This answer could not be saved in the browser: ${err.message || err}`);
  }
  shared.busy = false;
  view.setBusy(false);
  if (state.is("generating")) state.go("ready");
  try {
    renderConversation();
  } finally {
    lantern.replyCount += 1;
  }
}

/** Stop: ends the answer on screen at once (see untilStopped) and tells its engine to stop computing. */
export function stop() {
  if (!current || current.controller.signal.aborted) return;
  log("stop");
  current.controller.abort();
}
