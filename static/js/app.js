// Lantern chat page controller: detect → choose → download + verify → start the engine → chat.
// Everything tests need to observe is on `window.lantern` (plain data + a few actions in `api`).

import { detectCapabilities } from "./capabilities.js";
import { chooseVariant, qualityLabel } from "./choose.js";
import { grantServerConsent, hasServerConsent } from "./consent.js";
import { downloadVariant, inspectCache, removeModel, verifyStored } from "./downloader.js";
import { CpuEngine } from "./cpu-engine.js";
import { LocalEngine, ServerEngine, classifyEngineError } from "./engines.js";
import { formatBytes, formatSeconds } from "./format.js";
import { loadCatalog, registerServiceWorker, showOffline, watchConnectivity } from "./offline.js";
import {
  deleteConversation, getConversation, listConversations, newConversation, saveConversation,
} from "./store.js";
import * as view from "./view.js";
import { fileName, matchesTitle, parseImport, saveFile, titleFrom, toJson, toMarkdown } from "./conversations.js";
import { copyText, decorateMessage } from "./message-actions.js";
import { LoadTimeline, collapseDownload, expandDownload } from "./loading.js";

const { $ } = view;
const SETTINGS_KEY = "lantern.settings";
const TIER_KEY = "lantern.tier"; // localStorage: "auto" | "gpu" | "cpu" (Settings: which local engine)
const MODE_KEY = "lantern.mode"; // sessionStorage: server mode lasts as long as the consent does
const DEVICE_LOSSES_KEY = "lantern.deviceLosses"; // sessionStorage: GPU losses survive the reload they ask for
const LOCAL_UNAVAILABLE = new Set(["no-webgpu", "no-adapter", "adapter-too-small", "f16-missing", "insecure-context",
  "no-models", "quota-too-small"]);

const lantern = {
  version: 1,
  state: "starting",
  capabilities: null,
  catalog: null,
  model: null,
  selection: null,
  cache: null,
  download: { status: "idle" },
  engine: { kind: null, tier: null, status: "none", loadSeconds: null, progress: null, startedCount: 0, threads: null },
  tierPreference: localStorage.getItem(TIER_KEY) || "auto",
  mode: "local",
  privacy: "local",
  consent: hasServerConsent(),
  conversationId: null,
  storedCheck: null, // last re-hash of stored files: {damaged, hashedBytes, seconds}
  lastReply: null,
  replyCount: 0, // finished answers (stopped and failed ones included): lets tests wait for the next one
  error: null,
  deviceLosses: Number(sessionStorage.getItem(DEVICE_LOSSES_KEY) || 0),
  build: document.querySelector('meta[name="lantern-build"]')?.content || null, // this page's app version
  offline: false, // the server can't be reached: local answers only, the server option is hidden
  serviceWorker: { status: "pending" },
  load: { startedAt: null, stages: [], readySeconds: null, summary: null }, // stages with their seconds
  events: [],
  cspViolations: [],
  api: {},
};
window.lantern = lantern;

let localEngine = null;
let serverEngine = null;
let conversation = null;
let busy = false;
let editing = null; // index of the sent message being edited, or null
const timeline = new LoadTimeline(lantern.load);

function log(type, detail = {}) {
  lantern.events.push({ t: Math.round(performance.now()), type, ...detail });
}

function setState(state) {
  lantern.state = state;
  document.body.dataset.state = state;
  log("state", { state });
}

function fail(code, message, actions = []) {
  if (lantern.offline) actions = actions.filter((a) => a.id !== "offer-server");
  lantern.error = { code, message };
  log("error", { code, message });
  view.showError(message, actions);
}

function clearFailure() {
  lantern.error = null;
  view.clearError();
}

// ---------------------------------------------------------------------------------------------- actions
const offerServer = (reason) => ({ label: "Answer on the server instead", id: "offer-server", onClick: () => useServer(reason) });
const offerCpu = { label: "Run it on my processor instead", id: "offer-cpu", onClick: () => switchTier("cpu") };
const retryDownload = { label: "Retry download", id: "retry-download", onClick: () => startDownload() };
const reloadPage = { label: "Reload the page", id: "reload-page", onClick: () => location.reload() };

/** A lost GPU first gets a reload; lost again in this session, the server is offered as well. */
function deviceLost(e) {
  lantern.deviceLosses += 1;
  sessionStorage.setItem(DEVICE_LOSSES_KEY, String(lantern.deviceLosses));
  log("device-lost", { losses: lantern.deviceLosses });
  fail(e.code, e.message, lantern.deviceLosses >= 2 ? [reloadPage, offerServer(e.message)] : [reloadPage]);
}

/** Drop a local engine whose GPU is gone; chatting locally needs a reload now. */
function discardLostEngine(engine) {
  if (localEngine === engine) localEngine = null;
  lantern.engine.status = "lost";
  engine.unload();
  if (lantern.mode === "local") {
    setState("engine-failed");
    view.setEngineStatus("");
  }
}

function variant() {
  return lantern.selection && lantern.selection.variant;
}

async function refreshStorage() {
  if (!navigator.storage || !navigator.storage.estimate) return;
  try {
    const { quota, usage } = await navigator.storage.estimate();
    lantern.capabilities.storage = { ...lantern.capabilities.storage, quota, usage, available: Math.max(0, quota - usage) };
    view.showStorage(lantern.capabilities.storage);
  } catch {
    /* best effort */
  }
}

function setOffline(offline) {
  if (lantern.offline === offline) return;
  lantern.offline = offline;
  log("offline", { offline });
  showOffline(offline);
}

async function selectModel(modelId, { justVerified = false } = {}) {
  const model = lantern.catalog.models.find((m) => m.id === modelId) || lantern.catalog.models[0] || null;
  lantern.model = model ? model.id : null;
  const tier = lantern.tierPreference;
  let selection = chooseVariant(lantern.capabilities, model, { tier });
  lantern.cache = null;
  if (selection.variant) {
    let state = await inspectCache(selection.variant);
    if (state.complete && !justVerified) {
      // Everything is stored: re-hash it before trusting it (storage can be damaged after the download).
      let check;
      timeline.reset();
      timeline.stage("verifying", "Verifying the stored files");
      try {
        check = await verifyStored(selection.variant);
      } catch (err) {
        timeline.stop();
        setState("error");
        fail("verify-failed", `Lantern could not check the stored model files: ${err.message || err}`, [reloadPage]);
        return;
      }
      lantern.storedCheck = check;
      log("verified-stored", { damaged: check.damaged, seconds: check.seconds });
      if (check.damaged.length) state = await inspectCache(selection.variant);
    }
    lantern.cache = { cached: [...state.cached], cachedBytes: state.cachedBytes, complete: state.complete };
    selection = chooseVariant(lantern.capabilities, model, { cachedBytes: state.cachedBytes, tier });
  }
  lantern.selection = selection;
  applyModelDefaults(selection.variant);
  log("selected", { variant: selection.variantId, ok: selection.ok, tier: selection.tier });
  view.showCapabilities(selection);
  view.showTiers(selection.tiers, lantern.tierPreference);
  $("remove-button").hidden = !(lantern.cache && lantern.cache.cachedBytes > 0);
  $("download-button").hidden = true;
  clearFailure();

  // In server mode the state belongs to the server engine; this only prepares local mode for later.
  const local = lantern.mode === "local";
  if (!selection.ok) {
    const first = selection.problems[0];
    const actions = first.code === "quota-too-small" ? [retryDownload, offerServer(first.message)] : [offerServer(first.message)];
    // Settings asked for the GPU, which can't run here, but the processor can: offer that first.
    if (selection.tier === "gpu" && selection.tiers.includes("cpu")) actions.unshift(offerCpu);
    if (local) {
      setState("unsupported");
      fail(first.code, first.message, actions);
    }
    return;
  }
  if (lantern.cache.complete) {
    if (selection.canChat) {
      if (local) await startLocalEngine();
    } else if (local) {
      timeline.stop();
      setState("downloaded");
      view.setEngineStatus("Downloaded and verified. This build has no WebGPU library yet, so it can't chat.");
    }
    return;
  }
  timeline.stop();
  const need = selection.variant.download_bytes - lantern.cache.cachedBytes;
  const button = $("download-button");
  button.textContent = lantern.cache.cachedBytes > 0
    ? `Resume download (${formatBytes(need)} left)`
    : `Download ${formatBytes(need)} and start`;
  button.hidden = false;
  if (local) setState("needs-download");
}

async function startDownload() {
  const v = variant();
  if (!v || lantern.state === "downloading") return;
  clearFailure();
  $("download-button").hidden = true;
  setState("downloading");
  const progress = {};
  lantern.download = progress;
  timeline.reset();
  timeline.stage("downloading");
  expandDownload();
  let frame = 0;
  const render = () => {
    // Every byte is in: what remains is hashing the last files.
    if (progress.status === "downloading" && progress.receivedBytes >= progress.totalBytes) timeline.stage("verifying");
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      view.showDownload(progress);
    });
  };
  try {
    await downloadVariant(v, progress, render);
    view.showDownload(progress);
    log("downloaded", { fetched: progress.fetched.length, verifyMBps: progress.verifyMBps });
  } catch (err) {
    view.showDownload(progress);
    timeline.stop();
    setState("download-failed");
    const code = err.code || "download-failed";
    const message = code === "quota-too-small"
      ? "The browser ran out of storage for this site while saving the model. Free up disk space, then retry."
      : `${err.message} Files that were already verified are kept; a retry fetches only the rest.`;
    fail(code, message, [retryDownload, offerServer(message)]);
    return;
  } finally {
    await refreshStorage();
  }
  await selectModel(lantern.model, { justVerified: true });
  if (lantern.mode === "server") setState(serverEngine ? "ready" : "server-unavailable");
}

async function startLocalEngine() {
  const v = variant();
  // selectModel() re-hashed the stored files just before; this only guards against them vanishing since.
  const stored = await inspectCache(v);
  if (!stored.complete) {
    fail("download-failed", "Some model files are missing or damaged in browser storage; download them again.", [retryDownload]);
    setState("needs-download");
    return;
  }
  if (localEngine) await localEngine.unload();
  localEngine = null;
  setState("loading-engine");
  const tier = lantern.selection.tier;
  const where = tier === "cpu" ? "your processor" : "your GPU";
  lantern.engine = { ...lantern.engine, kind: "local", tier, status: "loading", startedCount: lantern.engine.startedCount + 1 };
  view.setEngineStatus(`Starting the model on ${where}…`);
  timeline.stage("starting", tier === "cpu" ? "Starting on your processor" : "Starting the engine");
  // The device lost while idle; during an answer or a load, those report it themselves.
  const engine = tier === "cpu"
    ? new CpuEngine(v, { threads: lantern.capabilities.wasm.threads })
    : new LocalEngine(v, {
      onLost: (e) => {
        if (busy || localEngine !== engine) return;
        discardLostEngine(engine);
        if (lantern.mode === "local") deviceLost(e);
      },
    });
  const started = performance.now();
  try {
    await engine.load((p) => {
      lantern.engine.progress = p;
      view.setEngineStatus(p.text || `Starting the model on ${where}…`);
      if (tier === "gpu" && /shader/i.test(p.text || "")) timeline.stage("starting", "Compiling shaders");
    });
  } catch (err) {
    const e = classifyEngineError(err);
    timeline.stop();
    lantern.engine.status = "failed";
    setState("engine-failed");
    view.setEngineStatus("");
    if (e.code === "device-lost") deviceLost(e);
    else fail(e.code, e.message, [offerServer(e.message)]);
    return;
  }
  localEngine = engine;
  lantern.engine = {
    ...lantern.engine, kind: "local", status: "ready", loadSeconds: (performance.now() - started) / 1000,
    threads: tier === "cpu" ? engine.threads : null,
  };
  view.setEngineStatus(readyText(v));
  timeline.stage("ready");
  const model = lantern.catalog.models.find((m) => m.id === lantern.model);
  collapseDownload(lantern.load, (model && model.name) || v.id, v.download_bytes);
  if (lantern.mode === "local") setState("ready");
}

/** What the local engine is, in plain words; the CPU tier says how fast it really ran here. */
function readyText(v, stats = null) {
  const started = `started in ${formatSeconds(lantern.engine.loadSeconds)}`;
  if (lantern.engine.tier !== "cpu") return `Ready: ${v.id} runs on your GPU (${started}).`;
  const threads = lantern.engine.threads;
  const isolated = lantern.capabilities.wasm.isolated;
  const how = `${threads} thread${threads > 1 ? "s" : ""}${isolated ? "" : ", one because this page isn't cross-origin isolated"}`;
  const speed = stats && stats.decodeTokensPerSecond ? `, ~${Math.round(stats.decodeTokensPerSecond)} tokens/s` : "";
  return `Ready: ${v.id} runs on your processor (${how}${speed}; ${started}). Private, slower than a GPU.`;
}

function askConsent(reason) {
  const dialog = $("consent");
  $("consent-origin").textContent = location.host;
  $("consent-reason").textContent = reason || "You chose to have answers computed on the server.";
  return new Promise((resolve) => {
    const done = (answer) => {
      $("consent-accept").removeEventListener("click", accept);
      $("consent-decline").removeEventListener("click", decline);
      dialog.removeEventListener("cancel", decline);
      dialog.close();
      log("consent", { answer });
      resolve(answer);
    };
    const accept = () => done(true);
    const decline = () => done(false);
    $("consent-accept").addEventListener("click", accept);
    $("consent-decline").addEventListener("click", decline);
    dialog.addEventListener("cancel", decline);
    dialog.showModal();
  });
}

async function useServer(reason) {
  if (lantern.offline) {
    $("mode").value = "local";
    view.setEngineStatus("Offline: the server can't be reached, so answers can only come from this device.");
    return false;
  }
  if (!hasServerConsent()) {
    const agreed = await askConsent(reason);
    if (!agreed) {
      $("mode").value = lantern.mode;
      return false;
    }
    grantServerConsent();
    lantern.consent = true;
  }
  lantern.mode = "server";
  lantern.privacy = "server";
  sessionStorage.setItem(MODE_KEY, "server");
  $("mode").value = "server";
  view.setPrivacy("server");
  clearFailure();
  setState("connecting-server");
  view.setEngineStatus("Connecting to the server…");
  const engine = new ServerEngine(lantern.model);
  try {
    await engine.load();
  } catch (err) {
    serverEngine = null;
    lantern.engine = { ...lantern.engine, kind: "server", status: "failed" };
    setState("server-unavailable");
    view.setEngineStatus("");
    fail(err.code || "server-unavailable", err.message, [
      { label: "Try the server again", id: "retry-server", onClick: () => useServer(reason) },
    ]);
    return false;
  }
  serverEngine = engine;
  lantern.engine = { ...lantern.engine, kind: "server", status: "ready" };
  view.setEngineStatus(`Answers come from the server (${engine.model}).`);
  setState("ready");
  return true;
}

async function useLocal() {
  if (serverEngine) await serverEngine.unload();
  serverEngine = null;
  lantern.mode = "local";
  lantern.privacy = "local";
  sessionStorage.removeItem(MODE_KEY);
  $("mode").value = "local";
  view.setPrivacy("local");
  view.setEngineStatus("");
  if (localEngine) {
    lantern.engine = { ...lantern.engine, kind: "local", status: "ready" };
    clearFailure();
    setState("ready");
  } else {
    await selectModel(lantern.model);
  }
}

function activeEngine() {
  return lantern.mode === "server" ? serverEngine : localEngine;
}

function settings() {
  const maxTokens = parseInt($("max-tokens").value, 10);
  return {
    systemPrompt: $("system-prompt").value.trim(),
    temperature: Number($("temperature").value),
    maxTokens: Number.isFinite(maxTokens) && maxTokens > 0 ? maxTokens : null,
  };
}

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
  if (lantern.mode === "local" && !localEngine) {
    // Local chat isn't possible (yet): nothing is sent anywhere without the user's explicit consent.
    if (lantern.engine.status === "lost") {
      view.setEngineStatus("The GPU stopped responding: reload the page, or switch to the server in Settings.");
      return null;
    }
    if (lantern.selection && !lantern.selection.ok) {
      const reason = lantern.selection.problems[0].message;
      if (!(await useServer(reason))) return null;
    } else {
      view.setEngineStatus(lantern.state === "needs-download"
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

async function send(text) {
  text = (text ?? $("prompt").value).trim();
  if (!text || busy) return;
  const engine = await readyEngine();
  if (!engine) return;
  if (!conversation) conversation = newConversation({ modelId: lantern.selection?.variantId || lantern.model });
  if (editing !== null) {
    // Edit and resend: the edited message replaces the old one and everything after it.
    conversation.messages.length = Math.min(editing, conversation.messages.length);
    setEditing(null);
  }
  if (!conversation.messages.length && !conversation.renamed) conversation.title = titleFrom(text);
  conversation.messages.push({ role: "user", content: text });
  $("prompt").value = "";
  renderConversation();
  await answer(engine);
}

/** Regenerate: the last answer is dropped and the same conversation is answered again. */
async function regenerate() {
  if (busy || !conversation || conversation.messages.at(-1)?.role !== "assistant") return;
  const engine = await readyEngine();
  if (!engine) return;
  conversation.messages.pop();
  log("regenerate");
  renderConversation();
  await answer(engine);
}

/** Edit a sent message: its text goes back to the box; sending replaces it and what followed. */
function setEditing(index) {
  editing = index;
  $("editing").hidden = index === null;
  if (index === null) return;
  $("prompt").value = conversation.messages[index].content;
  $("prompt").focus();
}

function renderConversation() {
  view.clearMessages();
  if (!conversation) return;
  const last = conversation.messages.length - 1;
  conversation.messages.forEach((m, index) => {
    const text = m.content || (m.finishReason === "error" ? "(no answer)" : "");
    const bubble = view.addMessage(m.role, text, { stopped: m.finishReason === "abort" || m.finishReason === "error" });
    decorateMessage(bubble, m, {
      index, isLastAnswer: index === last, onCopy: copyText, onRegenerate: regenerate,
      onEdit: (i) => !busy && setEditing(i),
    });
  });
}

/** Answer the conversation as it stands (its last message is the user's). */
async function answer(engine) {
  const { systemPrompt, temperature, maxTokens } = settings();
  conversation.mode = engine.kind;
  conversation.systemPrompt = systemPrompt;
  lantern.conversationId = conversation.id;
  const bubble = view.addMessage("assistant", "");
  await saveConversation(conversation);
  await refreshConversations();

  busy = true;
  view.setBusy(true);
  setState("generating");
  let frame = 0;
  let latest = "";
  const started = performance.now();
  lantern.lastReply = { text: "", finishReason: null, stats: null, kind: engine.kind, deltas: 0, startedAt: started };
  try {
    const result = await engine.chat(engineMessages(conversation, systemPrompt), { temperature, maxTokens }, (delta, full) => {
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
    if (frame) cancelAnimationFrame(frame);
    const stopped = result.finishReason === "abort";
    view.updateMessage(bubble, result.text, { stopped });
    conversation.messages.push({ role: "assistant", content: result.text, finishReason: result.finishReason, stats: result.stats });
    Object.assign(lantern.lastReply, { text: result.text, finishReason: result.finishReason, stats: result.stats });
    view.showStats(result.stats, engine.kind);
    if (engine.tier === "cpu" && localEngine === engine) view.setEngineStatus(readyText(variant(), result.stats));
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
    busy = false;
    view.setBusy(false);
    await saveConversation(conversation);
    await refreshConversations();
    if (lantern.state === "generating") setState("ready");
    renderConversation();
    lantern.replyCount += 1;
  }
}

function stop() {
  const engine = activeEngine();
  if (busy && engine) {
    log("stop");
    engine.stop();
  }
}

async function refreshConversations() {
  const all = await listConversations();
  const shown = all.filter((c) => matchesTitle(c, $("conversation-search").value));
  view.showConversations(shown, conversation && conversation.id,
    { onOpen: openConversation, onDelete: removeConversation, onRename: renameConversation });
  return all;
}

async function openConversation(id) {
  if (busy) return;
  const found = await getConversation(id);
  if (!found) return;
  conversation = found;
  lantern.conversationId = id;
  setEditing(null);
  renderConversation();
  $("system-prompt").value = conversation.systemPrompt || "";
  view.showStats(null);
  await refreshConversations();
}

async function removeConversation(id) {
  await deleteConversation(id);
  if (conversation && conversation.id === id) newChat();
  await refreshConversations();
}

async function renameConversation(id, title) {
  const found = conversation && conversation.id === id ? conversation : await getConversation(id);
  if (found && title) {
    Object.assign(found, { title, renamed: true });
    await saveConversation(found);
    log("renamed", { id });
  }
  await refreshConversations();
}

async function exportConversation(kind) {
  if (!conversation) return;
  const saved = (await getConversation(conversation.id)) || conversation;
  if (kind === "json") saveFile(fileName(saved, "json"), "application/json", toJson(saved));
  else saveFile(fileName(saved, "md"), "text/markdown", toMarkdown(saved));
}

async function importConversation(file) {
  if (!file || busy) return;
  let imported;
  try {
    imported = parseImport(await file.text());
  } catch (err) {
    fail("import-failed", `Could not import ${file.name}: ${err.message}`);
    return;
  }
  if (await getConversation(imported.id)) imported.id = crypto.randomUUID(); // never overwrite one of yours
  await saveConversation(imported, { touch: false });
  log("imported", { id: imported.id });
  await openConversation(imported.id);
}

function newChat() {
  if (busy) return;
  setEditing(null);
  conversation = null;
  lantern.conversationId = null;
  view.clearMessages();
  view.showStats(null);
  refreshConversations();
}

/** Settings: which local engine (auto / GPU / processor). Takes effect at once, no reload. */
async function switchTier(tier) {
  if (busy) {
    $("local-tier").value = lantern.tierPreference;
    return;
  }
  lantern.tierPreference = tier;
  localStorage.setItem(TIER_KEY, tier);
  log("tier", { tier });
  if (localEngine) {
    await localEngine.unload();
    localEngine = null;
    lantern.engine = { ...lantern.engine, status: "none" };
  }
  view.hideDownload();
  timeline.reset();
  await selectModel(lantern.model);
}

async function removeDownloaded() {
  if (busy) return;
  if (localEngine) {
    await localEngine.unload();
    localEngine = null;
    lantern.engine = { ...lantern.engine, status: "none" };
  }
  const removed = await removeModel(lantern.model, variant()?.base_url);
  log("removed", { entries: removed });
  view.hideDownload();
  timeline.reset();
  view.setEngineStatus(`Removed the downloaded model (${removed} files).`);
  await refreshStorage();
  await selectModel(lantern.model);
}

// ------------------------------------------------------------------------------------------------ wiring
// The temperature slider follows the model's own default (its build config) until the user moves it.
let userTemperature = false;

function applyModelDefaults(variant) {
  const t = variant && variant.generation ? variant.generation.temperature : undefined;
  if (userTemperature || !Number.isFinite(t)) return;
  $("temperature").value = String(t);
  $("temperature-value").textContent = $("temperature").value;
}

function loadSettings() {
  try {
    const saved = JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}");
    if (typeof saved.systemPrompt === "string") $("system-prompt").value = saved.systemPrompt;
    if (Number.isFinite(saved.temperature)) {
      $("temperature").value = String(saved.temperature);
      userTemperature = true;
    }
    if (Number.isFinite(saved.maxTokens)) $("max-tokens").value = String(saved.maxTokens);
  } catch {
    /* defaults */
  }
  $("temperature-value").textContent = $("temperature").value;
}

function saveSettings() {
  $("temperature-value").textContent = $("temperature").value;
  const { temperature, ...rest } = settings();
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(userTemperature ? { ...rest, temperature } : rest));
}

function bindUI() {
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  $("stop").addEventListener("click", stop);
  $("cancel-edit").addEventListener("click", () => setEditing(null));
  $("conversation-search").addEventListener("input", () => refreshConversations());
  $("export-md").addEventListener("click", () => exportConversation("md"));
  $("export-json").addEventListener("click", () => exportConversation("json"));
  $("import-file").addEventListener("change", async (e) => {
    await importConversation(e.target.files[0]);
    e.target.value = "";
  });
  $("new-chat").addEventListener("click", newChat);
  $("download-button").addEventListener("click", startDownload);
  $("remove-button").addEventListener("click", removeDownloaded);
  $("system-prompt").addEventListener("change", saveSettings);
  $("temperature").addEventListener("input", () => {
    userTemperature = true;
    saveSettings();
  });
  $("max-tokens").addEventListener("change", saveSettings);
  $("mode").addEventListener("change", (e) => (e.target.value === "server" ? useServer() : useLocal()));
  $("local-tier").addEventListener("change", (e) => switchTier(e.target.value));
  $("model-picker").addEventListener("change", async (e) => {
    if (localEngine) {
      await localEngine.unload();
      localEngine = null;
    }
    view.hideDownload();
    timeline.reset();
    newChat();
    await selectModel(e.target.value);
  });
  document.addEventListener("securitypolicyviolation", (e) => {
    lantern.cspViolations.push({ directive: e.violatedDirective, blocked: e.blockedURI });
  });
}

function showModelPicker(catalog) {
  const picker = $("model-picker");
  picker.replaceChildren(...catalog.models.map((m) => {
    const option = document.createElement("option");
    option.value = m.id;
    // The quality of the build this device would run, as the server words it.
    const choice = lantern.capabilities ? chooseVariant(lantern.capabilities, m, { tier: lantern.tierPreference }) : null;
    const quality = choice && choice.variant ? qualityLabel(choice.variant) : "";
    option.textContent = quality ? `${m.name || m.id} (${quality})` : (m.name || m.id);
    return option;
  }));
  picker.disabled = catalog.models.length < 2;
}

async function main() {
  bindUI();
  loadSettings();
  view.setPrivacy("local");
  view.setBusy(false);
  Object.assign(lantern.api, {
    send, stop, newChat, regenerate, startDownload, removeDownloaded, useServer, useLocal, selectModel, switchTier,
    inspectCache: async () => {
      const s = await inspectCache(variant());
      return { cached: [...s.cached], cachedBytes: s.cachedBytes, complete: s.complete };
    },
    listConversations,
  });
  setState("detecting");
  try {
    const [{ catalog, offline }, capabilities] = await Promise.all([loadCatalog(), detectCapabilities()]);
    lantern.catalog = catalog;
    lantern.capabilities = capabilities;
    setOffline(offline);
  } catch (err) {
    setState("error");
    fail("startup", `Lantern could not start: ${err.message || err}`, [reloadPage]);
    return;
  }
  view.showStorage(lantern.capabilities.storage);
  showModelPicker(lantern.catalog);
  await refreshConversations();
  watchConnectivity(setOffline);
  registerServiceWorker().then((sw) => {
    lantern.serviceWorker = sw;
    log("service-worker", sw);
  });
  const restoreServer = !lantern.offline && hasServerConsent() && sessionStorage.getItem(MODE_KEY) === "server";
  if (restoreServer) lantern.mode = "server";
  await selectModel($("model-picker").value);
  if (restoreServer) await useServer();
  log("started");
}

main().catch((err) => {
  setState("error");
  fail("startup", `Lantern hit an unexpected error: ${err.message || err}`, [reloadPage]);
});
