// What the page knows, in one place: `window.lantern` (plain data tests read, plus `api` actions), the
// one state (state.js), the event log, the error banner, and the engines and flags the modules share.

import { hasServerConsent } from "./consent.js";
import { LoadTimeline } from "./loading.js";
import { createState } from "./state.js";
import * as view from "./view.js";

export const TIER_KEY = "lantern.tier"; // localStorage: "auto" | "gpu" | "cpu" (Settings: which local engine)
export const MODEL_KEY = "lantern.model"; // localStorage: the model last picked (the config's default until then)
export const MODE_KEY = "lantern.mode"; // sessionStorage: server mode lasts as long as the consent does
export const DEVICE_LOSSES_KEY = "lantern.deviceLosses"; // sessionStorage: GPU losses survive the reload they ask for

export const lantern = {
  version: 1,
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

export function log(type, detail = {}) {
  lantern.events.push({ t: Math.round(performance.now()), type, ...detail });
}

/** The page state: `state.go(name)` (legal moves in state.js), read as `lantern.state`. */
export const state = createState(lantern, (name) => {
  document.body.dataset.state = name;
  log("state", { state: name });
});

/** Engines and flags shared by the modules (not data for tests). */
export const shared = {
  localEngine: null,
  serverEngine: null,
  busy: false, // an answer is streaming
  timeline: new LoadTimeline(lantern.load),
};

export function variant() {
  return lantern.selection && lantern.selection.variant;
}

export function currentModel() {
  return lantern.catalog.models.find((m) => m.id === lantern.model) || null;
}

export function fail(code, message, actions = []) {
  if (lantern.offline) actions = actions.filter((a) => a.id !== "offer-server");
  lantern.error = { code, message };
  log("error", { code, message });
  view.showError(message, actions);
}

export function clearFailure() {
  lantern.error = null;
  view.clearError();
}
