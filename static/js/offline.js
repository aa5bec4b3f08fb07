// Offline use: the service worker (app shell), the model list when the server is unreachable, and the
// page's "offline" indication.
//
// The model list (/api/models) is an API answer, so the service worker never caches it. The page keeps
// the last one it received in localStorage instead: it is used only when the server cannot be reached,
// and it carries the same SHA-256 of every file as before, so stored model files are still re-hashed
// against the manifest this site gave (downloader.js / verify-worker.js) before an engine reads them.

const CATALOG_KEY = "lantern.catalog";
export const OFFLINE_TEXT = "Offline — answers still come from this device";

function savedCatalog() {
  try {
    const saved = JSON.parse(localStorage.getItem(CATALOG_KEY) || "null");
    return saved && Array.isArray(saved.models) ? saved : null;
  } catch {
    return null;
  }
}

/** {catalog, offline}: the server's list, or (server unreachable) the last one this browser received. */
export async function loadCatalog() {
  let response;
  try {
    response = await fetch("/api/models", { cache: "no-cache" });
  } catch {
    const saved = savedCatalog();
    if (saved) return { catalog: saved, offline: true };
    throw new Error("the server can't be reached and this browser has no model from an earlier visit");
  }
  if (!response.ok) {
    const saved = response.status >= 500 ? savedCatalog() : null; // a proxy in front of a stopped site
    if (saved) return { catalog: saved, offline: true };
    throw new Error(`the model list could not be loaded (${response.status})`);
  }
  const catalog = await response.json();
  try {
    localStorage.setItem(CATALOG_KEY, JSON.stringify(catalog));
  } catch {
    /* storage full: the next offline visit just can't start */
  }
  return { catalog, offline: false };
}

/** Is the site reachable now? (navigator.onLine only knows about the network cable.) */
export async function serverReachable() {
  try {
    const response = await fetch("/healthz", { cache: "no-store" });
    return response.status < 500 || response.status === 503;
  } catch {
    return false;
  }
}

/**
 * Register /sw.js (root scope). Resolves to {status, version} once this build's worker is active, or
 * {status: "unsupported" | "failed"}; never rejects (the page works without it, just not offline).
 */
export async function registerServiceWorker() {
  if (!("serviceWorker" in navigator)) return { status: "unsupported" };
  try {
    await navigator.serviceWorker.register("/sw.js", { scope: "/", updateViaCache: "none" });
    const registration = await navigator.serviceWorker.ready;
    const version = await new Promise((resolve) => {
      const channel = (event) => {
        navigator.serviceWorker.removeEventListener("message", channel);
        resolve(event.data && event.data.version);
      };
      navigator.serviceWorker.addEventListener("message", channel);
      registration.active.postMessage("version");
      setTimeout(() => resolve(null), 5000);
    });
    return { status: "active", version };
  } catch (err) {
    return { status: "failed", error: String(err && err.message ? err.message : err) };
  }
}

/** Show or hide the offline notice; the server option is hidden and disabled while offline. */
export function showOffline(offline) {
  const notice = document.getElementById("offline");
  notice.hidden = !offline;
  notice.textContent = offline ? OFFLINE_TEXT : "";
  const server = document.querySelector('#mode option[value="server"]');
  server.disabled = offline;
  server.hidden = offline;
  document.body.dataset.offline = offline ? "yes" : "no";
}

/** Calls onChange(offline) when the browser's connectivity changes, after checking the server itself. */
export function watchConnectivity(onChange) {
  window.addEventListener("offline", () => onChange(true));
  window.addEventListener("online", async () => onChange(!(await serverReachable())));
}
