// Lantern's service worker: the app shell (page, scripts, styles, vendored engines, icons) for offline use.
// Served by the site at /sw.js with `self.LANTERN_SHELL = {version, files}` prepended (webapp/shell.py):
// a new build of the app means new bytes here, so the browser installs a new worker.
//
// * Install: every shell file of this build goes into "lantern-shell-<version>" (fetched past the HTTP
//   cache), all or nothing.
// * Activate: every older "lantern-shell-*" cache is deleted. The model caches ("webllm/config|wasm|model",
//   verified files the engines read) are never touched here.
// * Fetch: only GET requests for shell URLs of this origin are answered, network first: online, the page
//   always gets the site's current files (never a stale app after an update); when the server can't be
//   reached (or answers 5xx), the copy of this build. Everything else (/api/*, /v1/*, /models/*, other
//   origins) is not handled at all, so no API answer is ever cached by this worker.

const SHELL = self.LANTERN_SHELL;
const PREFIX = "lantern-shell-";
const CACHE = PREFIX + SHELL.version;
const PATHS = new Set(SHELL.files);

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.addAll(SHELL.files.map((url) => new Request(url, { cache: "reload" })));
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith(PREFIX) && name !== CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

self.addEventListener("message", (event) => {
  if (event.data === "version" && event.source) event.source.postMessage({ version: SHELL.version, cache: CACHE });
});

async function fromCache(request) {
  const cache = await caches.open(CACHE);
  return cache.match(request, { ignoreSearch: true });
}

async function networkFirst(request) {
  try {
    const response = await fetch(request);
    if (response.status < 500) return response;
    return (await fromCache(request)) || response;
  } catch (err) {
    const cached = await fromCache(request);
    if (cached) return cached;
    throw err;
  }
}

self.addEventListener("fetch", (event) => {
  const { request } = event;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin || !PATHS.has(url.pathname)) return;
  event.respondWith(networkFirst(request));
});
