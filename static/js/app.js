// Lantern chat page: detect → choose → download + verify → start the engine → chat. This file only
// starts the page and wires its controls; each job lives in its own module:
//   record.js       window.lantern (what tests read), the event log, the error banner, shared engines
//   state.js        the page states and every allowed move between them
//   model.js        choose the build for this device, verify/download/remove its files, switch tier/model
//   local-run.js    start and stop the local engine (GPU or processor)
//   server-mode.js  consent and server answers
//   actions.js      error-banner actions and the GPU-loss policy
//   chat.js         send/answer/stop/regenerate/edit;  history.js  saved conversations
//   settings.js     answer settings;  stream.js  the streamed answer and its speeds (all engines)
//   drawers.js      the phone layout's conversations and settings drawers

import { reloadPage } from "./actions.js";
import { send, regenerate, setEditing, stop } from "./chat.js";
import { detectCapabilities } from "./capabilities.js";
import { hasServerConsent } from "./consent.js";
import { inspectCache } from "./downloader.js";
import { bindDrawers } from "./drawers.js";
import { exportConversation, importConversation, newChat, refreshConversations } from "./history.js";
import {
  removeDownloaded, selectModel, showModelPicker, startDownload, switchModel, switchTier,
} from "./model.js";
import { loadCatalog, registerServiceWorker, showOffline, watchConnectivity } from "./offline.js";
import { MODE_KEY, fail, lantern, log, state, variant } from "./record.js";
import { useLocal, useServer } from "./server-mode.js";
import { bindSettings, loadSettings } from "./settings.js";
import { listConversations } from "./store.js";
import * as view from "./view.js";

const { $ } = view;

function setOffline(offline) {
  if (lantern.offline === offline) return;
  lantern.offline = offline;
  log("offline", { offline });
  showOffline(offline);
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
  bindSettings();
  bindDrawers();
  $("mode").addEventListener("change", (e) => (e.target.value === "server" ? useServer() : useLocal()));
  $("local-tier").addEventListener("change", (e) => switchTier(e.target.value));
  $("model-picker").addEventListener("change", (e) => {
    newChat();
    return switchModel(e.target.value);
  });
  document.addEventListener("securitypolicyviolation", (e) => {
    lantern.cspViolations.push({ directive: e.violatedDirective, blocked: e.blockedURI });
  });
}

async function main() {
  bindUI();
  loadSettings();
  view.setPrivacy("local");
  view.setBusy(false);
  Object.assign(lantern.api, {
    send, stop, newChat, regenerate, startDownload, removeDownloaded, useServer, useLocal, selectModel, switchTier,
    switchModel,
    inspectCache: async () => {
      const s = await inspectCache(variant());
      return { cached: [...s.cached], cachedBytes: s.cachedBytes, complete: s.complete };
    },
    listConversations,
  });
  state.go("detecting");
  try {
    const [{ catalog, offline }, capabilities] = await Promise.all([loadCatalog(), detectCapabilities()]);
    lantern.catalog = catalog;
    lantern.capabilities = capabilities;
    setOffline(offline);
  } catch (err) {
    state.go("error");
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
  state.go("error");
  fail("startup", `Lantern hit an unexpected error: ${err.message || err}`, [reloadPage]);
});
