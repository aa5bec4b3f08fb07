// The buttons an error banner offers, and the GPU-loss policy that picks them.

import { startDownload, switchTier } from "./model.js";
import { DEVICE_LOSSES_KEY, fail, lantern, log, shared, state } from "./record.js";
import { useServer } from "./server-mode.js";
import * as view from "./view.js";

export const offerServer = (reason) => ({ label: "Answer on the server instead", id: "offer-server", onClick: () => useServer(reason) });
export const offerCpu = { label: "Run it on my processor instead", id: "offer-cpu", onClick: () => switchTier("cpu") };
export const retryDownload = { label: "Retry download", id: "retry-download", onClick: () => startDownload() };
/** The browser cannot store the files: download them into this page's memory (verified the same way). */
export const runFromMemory = {
  label: "Run it from memory for this visit (nothing is stored)", id: "run-from-memory", onClick: () => startDownload({ memory: true }),
};
export const reloadPage = { label: "Reload the page", id: "reload-page", onClick: () => location.reload() };

/** A lost GPU first gets a reload; lost again in this session, the server is offered as well. */
export function deviceLost(e) {
  lantern.deviceLosses += 1;
  sessionStorage.setItem(DEVICE_LOSSES_KEY, String(lantern.deviceLosses));
  log("device-lost", { losses: lantern.deviceLosses });
  fail(e.code, e.message, lantern.deviceLosses >= 2 ? [reloadPage, offerServer(e.message)] : [reloadPage]);
}

/** Drop a local engine whose GPU is gone; chatting locally needs a reload now. */
export function discardLostEngine(engine) {
  if (shared.localEngine === engine) shared.localEngine = null;
  lantern.engine.status = "lost";
  engine.unload();
  if (lantern.mode === "local") {
    state.go("engine-failed");
    view.setEngineStatus("");
  }
}
