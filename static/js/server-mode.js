// Local or server answers: the consent dialog, connecting to the site's /v1 API, and going back to the
// local engine. Nothing is sent to the server before the user has agreed in this browser session.

import { grantServerConsent, hasServerConsent } from "./consent.js";
import { ServerEngine } from "./engines.js";
import { selectModel } from "./model.js";
import { MODE_KEY, clearFailure, fail, lantern, log, shared, state } from "./record.js";
import * as view from "./view.js";

const { $ } = view;

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

/** Switch to server answers (asking consent first); true once the server is ready. */
export async function useServer(reason) {
  if (shared.busy) {
    $("mode").value = lantern.mode; // not while an answer streams (Stop it first)
    return false;
  }
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
  state.go("connecting-server");
  view.setEngineStatus("Connecting to the server…");
  const engine = new ServerEngine(lantern.model);
  try {
    await engine.load();
  } catch (err) {
    shared.serverEngine = null;
    lantern.engine = { ...lantern.engine, kind: "server", status: "failed" };
    state.go("server-unavailable");
    view.setEngineStatus("");
    fail(err.code || "server-unavailable", err.message, [
      { label: "Try the server again", id: "retry-server", onClick: () => useServer(reason) },
    ]);
    return false;
  }
  shared.serverEngine = engine;
  lantern.engine = { ...lantern.engine, kind: "server", status: "ready" };
  view.setEngineStatus(`Answers come from the server (${engine.model}).`);
  state.go("ready");
  return true;
}

export async function useLocal() {
  if (shared.busy) {
    $("mode").value = lantern.mode;
    return;
  }
  if (shared.serverEngine) await shared.serverEngine.unload();
  shared.serverEngine = null;
  lantern.mode = "local";
  lantern.privacy = "local";
  sessionStorage.removeItem(MODE_KEY);
  $("mode").value = "local";
  view.setPrivacy("local");
  view.setEngineStatus("");
  if (shared.localEngine) {
    lantern.engine = { ...lantern.engine, kind: "local", status: "ready" };
    clearFailure();
    state.go("ready");
  } else {
    await selectModel(lantern.model);
  }
}

/** Server mode after a model change: connect again so the server answers with the page's model. */
export async function reconnectServer() {
  if (shared.serverEngine) await shared.serverEngine.unload();
  shared.serverEngine = null;
  await useServer();
}

/** The engine that answers in the current mode (null when none is ready). */
export function activeEngine() {
  return lantern.mode === "server" ? shared.serverEngine : shared.localEngine;
}
