// Which model and build run here, and its files: choose the variant for this device, re-hash what is
// stored, download what is missing, remove it, switch tiers or models. A complete, verified build goes
// on to the local engine (local-run.js).

import { offerCpu, offerServer, reloadPage, retryDownload, runFromMemory } from "./actions.js";
import { chooseVariant, qualityLabel } from "./choose.js";
import { checkStorage, downloadVariant, inspectCache, removeModel, verifyStored } from "./downloader.js";
import { formatBytes } from "./format.js";
import { expandDownload } from "./loading.js";
import { startLocalEngine, unloadLocal } from "./local-run.js";
import { reconnectServer } from "./server-mode.js";
import { MODEL_KEY, TIER_KEY, clearFailure, currentModel, fail, lantern, log, shared, state, variant } from "./record.js";
import { applyModelDefaults } from "./settings.js";
import * as view from "./view.js";

const { $ } = view;

export async function refreshStorage() {
  if (!navigator.storage || !navigator.storage.estimate) return;
  try {
    const { quota, usage } = await navigator.storage.estimate();
    lantern.capabilities.storage = { ...lantern.capabilities.storage, quota, usage, available: Math.max(0, quota - usage) };
    view.showStorage(lantern.capabilities.storage);
  } catch {
    /* best effort */
  }
}

export async function selectModel(modelId, { justVerified = false } = {}) {
  const { timeline } = shared;
  const model = lantern.catalog.models.find((m) => m.id === modelId) || lantern.catalog.models[0] || null;
  lantern.model = model ? model.id : null;
  const tier = lantern.tierPreference;
  let selection = chooseVariant(lantern.capabilities, model, { tier });
  // Too little room for a fresh download: the build may be stored (or held in memory) already, so look
  // at the one that would run; the choice below counts what is there.
  if (!selection.ok) {
    const roomless = chooseVariant({ ...lantern.capabilities, storage: null }, model, { tier });
    if (roomless.ok) selection = roomless;
  }
  lantern.cache = null;
  if (selection.variant) {
    let stored = await inspectCache(selection.variant);
    if (stored.complete && !justVerified) {
      // Everything is stored: re-hash it before trusting it (storage can be damaged after the download).
      let check;
      timeline.reset();
      timeline.stage("verifying", "Verifying the stored files");
      try {
        check = await verifyStored(selection.variant);
      } catch (err) {
        timeline.stop();
        state.go("error");
        fail("verify-failed", `Lantern could not check the stored model files: ${err.message || err}`, [reloadPage]);
        return;
      }
      lantern.storedCheck = check;
      log("verified-stored", { damaged: check.damaged, seconds: check.seconds });
      if (check.damaged.length) stored = await inspectCache(selection.variant);
    }
    lantern.cache = { cached: [...stored.cached], cachedBytes: stored.cachedBytes, complete: stored.complete };
    selection = chooseVariant(lantern.capabilities, model, { cachedBytes: stored.cachedBytes, tier });
  }
  lantern.selection = selection;
  labelModelPicker();
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
    const memoryOffer = canRunFromMemory(selection.variant || {}) ? [runFromMemory] : [];
    const actions = first.code === "quota-too-small" ? [retryDownload, ...memoryOffer, offerServer(first.message)] : [offerServer(first.message)];
    // Settings asked for the GPU, which can't run here, but the processor can: offer that first.
    if (selection.tier === "gpu" && selection.tiers.includes("cpu")) actions.unshift(offerCpu);
    if (local) {
      state.go("unsupported");
      fail(first.code, first.message, actions);
    }
    return;
  }
  if (lantern.cache.complete) {
    if (selection.canChat) {
      if (local) await startLocalEngine();
    } else if (local) {
      timeline.stop();
      state.go("downloaded");
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
  if (local) state.go("needs-download");
}

/** Both tiers run from memory: the processor tier reads through downloader.storedFile(), the GPU tier's
 * web-llm worker through a Cache API answered from the verified Blobs (worker.js). */
function canRunFromMemory(v) {
  return v.tier === "cpu" || Boolean(v.library);
}

/** What the browser said about keeping this site's storage, in words (shown next to the storage line). */
function persistText(room) {
  if (room.persisted == null) return "";
  return room.persisted
    ? "The browser agreed to keep the model files (persistent storage granted)."
    : "The browser did not grant persistent storage: it may clear the model files when disk space runs low.";
}

function showPersist(text) {
  let line = document.getElementById("storage-persist");
  if (!line) {
    line = document.createElement("p");
    line.id = "storage-persist";
    line.className = "hint";
    $("storage-info").after(line);
  }
  line.textContent = text;
}

/**
 * Download the chosen build and start it. memory: true keeps the verified files in this page only
 * (for a browser that cannot store them): nothing is stored and they are gone when the page closes.
 */
export async function startDownload({ memory = false } = {}) {
  const v = variant();
  if (!v || state.is("downloading") || shared.busy) return; // not while an answer streams
  const { timeline } = shared;
  clearFailure();
  $("download-button").hidden = true;
  state.go("downloading");
  const progress = {};
  lantern.download = progress;
  timeline.reset();
  timeline.stage("downloading", memory ? "Downloading into memory" : "Downloading");
  const memoryOffer = canRunFromMemory(v) ? [runFromMemory] : [];
  if (!memory) {
    // Ask to keep the files, and refuse up front (with the bytes needed) rather than fail halfway.
    const room = await checkStorage(v);
    lantern.storageCheck = room;
    lantern.capabilities.storage = { ...lantern.capabilities.storage, persisted: room.persisted };
    showPersist(persistText(room));
    log("storage-check", room);
    if (!room.fits) {
      timeline.stop();
      state.go("download-failed");
      const message = `This model needs ${formatBytes(room.needBytes)} (${room.needBytes.toLocaleString("en")} bytes) of ` +
        `browser storage, but this browser allows only ${formatBytes(room.availableBytes)} ` +
        `(${room.availableBytes.toLocaleString("en")} bytes) more for this site. Nothing was downloaded. Free up disk ` +
        "space or remove other downloaded models, then retry" + (memoryOffer.length ? ", or run it from memory for this visit." : ".");
      fail("quota-too-small", message, [retryDownload, ...memoryOffer, offerServer(message)]);
      await refreshStorage();
      return;
    }
  }
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
    await downloadVariant(v, progress, render, { memory });
    view.showDownload(progress);
    log("downloaded", { fetched: progress.fetched.length, verifyMBps: progress.verifyMBps, keep: progress.keep });
  } catch (err) {
    view.showDownload(progress);
    timeline.stop();
    state.go("download-failed");
    const code = err.code || "download-failed";
    let message;
    let actions = [retryDownload];
    if (err.storageFailed) {
      message = (code === "quota-too-small"
        ? "The browser ran out of storage for this site while saving the model."
        : "This browser could not store the model files (a private window, or a storage error).") +
        " Verified files are kept; the rest was not saved." +
        (memoryOffer.length ? " You can run the model from memory for this visit: it is downloaded and verified the same way, and nothing is stored."
          : " Free up disk space or use a normal (not private) window, then retry.");
      actions = [...memoryOffer, retryDownload];
    } else {
      message = `${err.message} Files that were already verified are kept; a retry fetches only the rest.`;
    }
    fail(code, message, [...actions, offerServer(message)]);
    return;
  } finally {
    await refreshStorage();
  }
  await selectModel(lantern.model, { justVerified: true });
  if (memory) {
    lantern.memoryOnly = true;
    if (state.is("ready")) {
      view.setEngineStatus(`${$("engine-status").textContent} Running from memory for this visit: nothing was stored.`);
    }
  }
  if (lantern.mode === "server") state.go(shared.serverEngine ? "ready" : "server-unavailable");
}

/** Start over with the model as it is stored now (after a tier, model or storage change). */
async function reselect(modelId) {
  view.hideDownload();
  shared.timeline.reset();
  await selectModel(modelId);
}

/** Settings: which local engine (auto / GPU / processor). Takes effect at once, no reload. */
export async function switchTier(tier) {
  if (shared.busy) {
    $("local-tier").value = lantern.tierPreference;
    return;
  }
  lantern.tierPreference = tier;
  localStorage.setItem(TIER_KEY, tier);
  log("tier", { tier });
  await unloadLocal();
  await reselect(lantern.model);
}

/** The model picker: the new model starts from its own verified cache (or offers its download); the
 * others' stored files stay as they are. In server mode the server answers with the new model. */
export async function switchModel(modelId) {
  if (shared.busy) {
    $("model-picker").value = lantern.model;
    return;
  }
  await unloadLocal();
  log("model", { model: modelId });
  localStorage.setItem(MODEL_KEY, modelId);
  await reselect(modelId);
  $("model-picker").value = lantern.model;
  if (lantern.mode === "server") await reconnectServer();
}

/** Bytes this browser holds for every build of `model` (GPU variants and the processor tier). */
async function storedBytes(model) {
  let bytes = 0;
  for (const v of [...(model ? model.variants : []), ...(model && model.cpu ? [model.cpu] : [])]) {
    bytes += (await inspectCache(v)).cachedBytes;
  }
  return bytes;
}

/** Remove this model's stored files (every build of it; other models keep theirs) and say what it freed. */
export async function removeDownloaded() {
  if (shared.busy) return;
  await unloadLocal();
  const model = currentModel();
  const bytes = await storedBytes(model);
  const removed = await removeModel(lantern.model, variant()?.base_url);
  lantern.lastRemoval = { model: lantern.model, files: removed, bytes };
  log("removed", { model: lantern.model, entries: removed, bytes });
  const name = (model && model.name) || lantern.model;
  view.setEngineStatus(`Removed the downloaded model ${name} (${removed} files, ${formatBytes(bytes)} freed).`);
  await refreshStorage();
  await reselect(lantern.model);
}

/** What a model needs here, in words, from the chosen build's facts in /api/models. */
function needsText(v) {
  if (v.tier === "cpu") return `needs ${formatBytes(v.ram_bytes)} of memory (runs on the processor)`;
  const f16 = (v.required_features || []).includes("shader-f16") ? " with 16-bit shaders" : "";
  const memory = v.estimated_gpu_memory_bytes ? ` and ~${formatBytes(v.estimated_gpu_memory_bytes)} of GPU memory` : "";
  return `needs a WebGPU GPU${f16}${memory}`;
}

/** The model picker: every built model with its size, quality and needs (the build this device would run);
 * the config's default model first and selected until the user picks another (remembered across visits
 * while that model is still served). */
export function showModelPicker(catalog) {
  const picker = $("model-picker");
  const remembered = catalog.models.find((m) => m.id === localStorage.getItem(MODEL_KEY));
  const fallback = remembered || catalog.models.find((m) => m.default) || catalog.models[0] || {};
  const selected = lantern.model || fallback.id;
  picker.replaceChildren(...catalog.models.map((m) => {
    const option = document.createElement("option");
    option.value = m.id;
    option.dataset.default = m.default ? "yes" : "no";
    return option;
  }));
  labelModelPicker(catalog);
  picker.value = selected;
  picker.disabled = catalog.models.length < 2;
}

/** The picker's words for each model, for the tier chosen now: the current model's from the build it
 * runs (lantern.selection), the others' from the build the same tier preference would pick for them.
 * Run again whenever the selection changes (a tier switch in Settings, another model, a download). */
export function labelModelPicker(catalog = lantern.catalog) {
  if (!catalog) return;
  for (const option of $("model-picker").options) {
    const m = catalog.models.find((model) => model.id === option.value);
    if (!m) continue;
    const current = lantern.selection && lantern.model === m.id ? lantern.selection : null;
    const choice = current || (lantern.capabilities ? chooseVariant(lantern.capabilities, m, { tier: lantern.tierPreference }) : null);
    const v = choice && choice.variant;
    const parts = v ? [formatBytes(v.download_bytes), qualityLabel(v), needsText(v)].filter(Boolean) : ["can't run on this device"];
    option.textContent = `${m.name || m.id} — ${parts.join(", ")}`;
    option.dataset.bytes = v ? String(v.download_bytes) : "";
  }
}
