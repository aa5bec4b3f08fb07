// Lantern downloads a variant itself, before the engine starts: parallel fetches with progress, each
// file checked against the SHA-256 in the manifest, then stored in the Cache API under the exact
// names and keys web-llm 0.2.86 reads (cache "webllm/config" | "webllm/wasm" | "webllm/model", key
// = new Request(absolute URL)). web-llm then finds everything cached and makes no request of its own.
// Only verified bytes are ever stored, so a corrupt or truncated file can never reach the engine.
//
// The bytes never pass through the page: a worker (verify-worker.js) streams each response through an
// incremental SHA-256 straight into Cache.put(), which commits the entry only if the stream ends with
// every byte verified. Memory stays bounded by a few chunks per file, whatever the file's size.
//
// Where the browser cannot store the files (a private window, a storage error mid-download), the same
// verified stream goes into a Blob held by this page instead (`{memory: true}`): the model runs from
// memory for this visit and nothing is stored. `storedFile()` is how the engines read a file either way.
export const SCOPES = { config: "webllm/config", wasm: "webllm/wasm", model: "webllm/model" };
const SHA_HEADER = "X-Lantern-SHA256";
const BYTES_HEADER = "X-Lantern-Bytes";
const CONCURRENCY = 4;
const MAX_ATTEMPTS = 3;

export class DownloadError extends Error {
  constructor(message, failures) {
    super(message);
    this.name = "DownloadError";
    this.code = failures.some((f) => f.kind === "quota") ? "quota-too-small"
      : failures.some((f) => f.kind === "storage") ? "storage-failed" : "download-failed";
    /** The bytes arrived but the browser would not keep them: running from memory can still work. */
    this.storageFailed = failures.some((f) => f.kind === "quota" || f.kind === "storage");
    this.failures = failures;
  }
}

class FileProblem extends Error {
  constructor(kind, message, retry = true) {
    super(message);
    this.kind = kind; // "http" | "network" | "truncated" | "oversize" | "corrupt" | "quota" | "storage" | "memory"
    this.retry = retry;
  }
}

/** Absolute URL of a variant file: what web-llm builds from the model URL, byte for byte. */
export function fileUrl(variant, path) {
  return new URL(variant.base_url + path, location.href).href;
}

export function modelUrl(variant) {
  return new URL(variant.base_url, location.href).href;
}

// Where web-llm looks for a file, by the role the server gives it (/api/models, build_pipeline/contract.py).
const ROLE_SCOPES = { chat_config: SCOPES.config, package_manifest: SCOPES.config, library: SCOPES.wasm };

/** web-llm's cache for one file entry of a variant. */
export function scopeFor(file) {
  return ROLE_SCOPES[file.role] || SCOPES.model;
}

/** The variant's file with this role (see build_pipeline/contract.py's Role), or undefined. */
export function fileWithRole(variant, role) {
  return variant.files.find((f) => f.role === role);
}

export function toHex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

export function hexToBase64(hex) {
  let binary = "";
  for (let i = 0; i < hex.length; i += 2) binary += String.fromCharCode(parseInt(hex.slice(i, i + 2), 16));
  return btoa(binary);
}

// Files held in memory for this visit only (absolute URL -> {blob, sha256, bytes, scope}): verified like
// stored ones, gone with the page.
const memory = new Map();

/** True when some file of `variant` is held in memory for this visit (nothing of it is stored). */
export function inMemory(variant) {
  return variant.files.some((f) => memory.has(fileUrl(variant, f.path)));
}

/** The files of `variant` held in memory for this visit, as {url, blob} (Blobs are handles: no copy). */
export function heldFiles(variant) {
  return variant.files
    .map((f) => fileUrl(variant, f.path))
    .filter((url) => memory.has(url))
    .map((url) => ({ url, blob: memory.get(url).blob }));
}

/** A verified file as a Response: from this visit's memory, else from browser storage; null if neither. */
export async function storedFile(scope, url) {
  const held = memory.get(url);
  if (held) {
    return new Response(held.blob, {
      headers: { "Content-Type": "application/octet-stream", [SHA_HEADER]: held.sha256, [BYTES_HEADER]: String(held.bytes) },
    });
  }
  try {
    if (!("caches" in self) || !(await caches.has(scope))) return null;
    return (await (await caches.open(scope)).match(new Request(url))) || null;
  } catch {
    return null;
  }
}

/**
 * Before a download: ask the browser to keep this site's storage (navigator.storage.persist()) and compare
 * the room it allows with what the variant still needs (the API's bytes, less what is stored already).
 * Resolves to {needBytes, availableBytes, quota, usage, persisted, fits}; unknown values are null (fits
 * is then true: the browser gave no estimate to refuse on; persisted is null while the user has not
 * answered the browser's question).
 */
const PERSIST_WAIT_MS = 2000;

export async function checkStorage(variant) {
  const { cachedBytes } = await inspectCache(variant);
  const out = { needBytes: Math.max(0, variant.download_bytes - cachedBytes), availableBytes: null, quota: null, usage: null, persisted: null, fits: true };
  const storage = navigator.storage;
  if (!storage) return out;
  // Firefox asks the user (a permission prompt) and answers only then: the download never waits on that.
  const answer = storage.persist ? storage.persist().catch(() => false) : Promise.resolve(null);
  out.persisted = await Promise.race([answer, new Promise((resolve) => setTimeout(() => resolve(null), PERSIST_WAIT_MS))]);
  try {
    const { quota, usage } = await storage.estimate();
    out.quota = quota ?? null;
    out.usage = usage ?? null;
    if (quota != null && usage != null) out.availableBytes = Math.max(0, quota - usage);
  } catch {
    /* no estimate: nothing to refuse on */
  }
  out.fits = out.availableBytes == null || out.needBytes <= out.availableBytes;
  return out;
}

/** Which files of `variant` are already stored and verified (their stored hash matches the manifest). */
export async function inspectCache(variant) {
  const cached = new Set();
  let cachedBytes = 0;
  const held = new Set();
  for (const file of variant.files) {
    if (memory.has(fileUrl(variant, file.path))) {
      held.add(file.path);
      cached.add(file.path);
      cachedBytes += file.bytes;
    }
  }
  const result = () => ({ cached, cachedBytes, complete: cached.size === variant.files.length, inMemory: [...held] });
  if (!("caches" in self)) return result();
  for (const file of variant.files) {
    if (held.has(file.path)) continue;
    const scope = scopeFor(file);
    let hit;
    try {
      // caches.open() would create the cache: only look into ones that exist.
      if (!(await caches.has(scope))) continue;
      hit = await (await caches.open(scope)).match(new Request(fileUrl(variant, file.path)));
    } catch {
      break; // storage this browser refuses here (some private windows): nothing is stored
    }
    // Only Lantern stores verified bytes here, with their hash as a header. This is the cheap check (no
    // body is read); verifyStored() re-hashes the bytes before they are trusted for a start.
    if (hit && hit.headers.get(SHA_HEADER) === file.sha256 && Number(hit.headers.get(BYTES_HEADER)) === file.bytes) {
      cached.add(file.path);
      cachedBytes += file.bytes;
    }
  }
  return result();
}

/**
 * Re-hash every stored file of `variant` (in a worker). Damaged entries are deleted, so a following
 * download fetches exactly them. Resolves to {damaged: [paths], hashedBytes, seconds}. Files held in memory are not
 * re-read: they were verified as they arrived, and a Blob cannot change.
 */
export function verifyStored(variant) {
  const files = variant.files.filter((f) => !memory.has(fileUrl(variant, f.path))).map((f) => ({
    path: f.path, bytes: f.bytes, sha256: f.sha256, scope: scopeFor(f), url: fileUrl(variant, f.path),
  }));
  const worker = new Worker(new URL("./verify-worker.js", import.meta.url), { type: "module", name: "lantern-verify" });
  return new Promise((resolve, reject) => {
    worker.onmessage = ({ data }) => resolve(data);
    worker.onerror = (event) => reject(new Error(event.message || "the verification worker failed"));
    worker.postMessage({ files });
  }).finally(() => worker.terminate());
}

/** Every cache entry that belongs to this model variant (any revision), or to the whole model. */
async function entriesOf(prefix) {
  const out = [];
  for (const scope of Object.values(SCOPES)) {
    if (!(await caches.has(scope).catch(() => false))) continue;
    const cache = await caches.open(scope);
    for (const request of await cache.keys()) {
      if (request.url.startsWith(prefix)) out.push({ scope, cache, request });
    }
  }
  return out;
}

function variantPrefix(variant) {
  // base_url = /models/<model>/<quant>/resolve/<rev>/ ; everything of the variant is under <quant>/.
  return new URL(variant.base_url.replace(/resolve\/[^/]+\/$/, ""), location.href).href;
}

/** Drop entries of older revisions of this variant: a rebuilt model must not keep the old one's space. */
export async function dropStaleRevisions(variant) {
  const current = modelUrl(variant);
  let dropped = 0;
  for (const { cache, request } of await entriesOf(variantPrefix(variant))) {
    if (!request.url.startsWith(current)) {
      await cache.delete(request);
      dropped += 1;
    }
  }
  return dropped;
}

/**
 * "Remove downloaded model": delete every stored file of every variant of `modelId`. baseUrl: any variant's
 * base_url, which says where the files came from (this site, or the CDN of MODEL_FILES_BASE_URL).
 */
export async function removeModel(modelId, baseUrl = "/models/") {
  const base = new URL(baseUrl, location.href).href;
  const prefix = `${base.slice(0, base.indexOf("/models/"))}/models/${modelId}/`;
  let removed = 0;
  for (const url of [...memory.keys()]) {
    if (url.startsWith(prefix)) {
      memory.delete(url);
      removed += 1;
    }
  }
  for (const { cache, request } of await entriesOf(prefix)) {
    await cache.delete(request);
    removed += 1;
  }
  // A scope left empty is deleted outright so the browser reclaims its storage.
  for (const scope of Object.values(SCOPES)) {
    if (await caches.has(scope).catch(() => false)) {
      const cache = await caches.open(scope);
      if ((await cache.keys()).length === 0) await caches.delete(scope);
    }
  }
  return removed;
}

/**
 * Download whatever of `variant` is not yet stored. `progress` is a plain object updated in place
 * (the page renders it and tests read it); `onUpdate(progress)` is called on every change.
 * Resolves when every file is verified and stored; rejects with DownloadError listing the failed files.
 */
export async function downloadVariant(variant, progress, onUpdate = () => {}, { signal, memory: toMemory = false } = {}) {
  const { cached } = await inspectCache(variant);
  if (!toMemory) await dropStaleRevisions(variant);
  Object.assign(progress, {
    variantId: variant.id, status: "downloading", keep: toMemory ? "memory" : "cache", startedAt: performance.now(), finishedAt: null,
    totalBytes: 0, receivedBytes: 0, verifiedBytes: 0, cachedBytes: 0, updates: 0, maxPartialFraction: 0,
    hashBytes: 0, hashSeconds: 0, verifyMBps: null, fetched: [], rejected: [], failures: [], files: {},
  });
  for (const file of variant.files) {
    const isCached = cached.has(file.path);
    progress.files[file.path] = {
      bytes: file.bytes, received: isCached ? file.bytes : 0, status: isCached ? "cached" : "pending",
      attempts: 0, sha256: isCached ? file.sha256 : null, error: null,
    };
    progress.totalBytes += file.bytes;
    if (isCached) {
      progress.cachedBytes += file.bytes;
      progress.receivedBytes += file.bytes;
      progress.verifiedBytes += file.bytes;
    }
  }
  const update = () => {
    progress.updates += 1;
    const fraction = progress.totalBytes ? progress.receivedBytes / progress.totalBytes : 1;
    if (fraction < 1) progress.maxPartialFraction = Math.max(progress.maxPartialFraction, fraction);
    onUpdate(progress);
  };
  update();

  const queue = variant.files.filter((f) => !cached.has(f.path));
  const files = fileWorker();
  const abort = () => files.close();
  if (signal) signal.addEventListener("abort", abort);
  const keep = toMemory ? "memory" : "cache";
  const worker = async () => {
    while (queue.length) {
      const file = queue.shift();
      await fetchVerifyStore(variant, file, progress, update, signal, files, keep);
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, queue.length) }, worker));
  } finally {
    if (signal) signal.removeEventListener("abort", abort);
    files.close();
  }

  progress.finishedAt = performance.now();
  progress.verifyMBps = progress.hashSeconds > 0 ? progress.hashBytes / 1e6 / progress.hashSeconds : null;
  if (progress.failures.length) {
    progress.status = "failed";
    update();
    const names = progress.failures.map((f) => `${f.path} (${f.message})`).join(", ");
    throw new DownloadError(`Download failed: ${names}.`, progress.failures);
  }
  progress.status = "done";
  update();
  return progress;
}

/** The file worker (verify-worker.js) running fetch jobs: `run(job, onBytes)` resolves to the worker's
 * "done" message or rejects with a FileProblem; `close()` ends it (and every job still running). */
function fileWorker() {
  const worker = new Worker(new URL("./verify-worker.js", import.meta.url), { type: "module", name: "lantern-download" });
  const jobs = new Map();
  let next = 0;
  const failAll = (err) => {
    for (const job of jobs.values()) job.reject(err);
    jobs.clear();
  };
  worker.onmessage = ({ data }) => {
    const job = jobs.get(data.id);
    if (!job) return;
    if (data.type === "fetched") job.onFetched();
    else if (data.type === "bytes") job.onBytes(data.n);
    else {
      jobs.delete(data.id);
      if (data.type === "done") job.resolve(data);
      else job.reject(Object.assign(new FileProblem(data.kind, data.message, data.retry), { hashSeconds: data.hashSeconds || 0 }));
    }
  };
  worker.onerror = (event) => failAll(new FileProblem("error", event.message || "the download worker failed", false));
  return {
    run(job, { onFetched, onBytes }) {
      const id = ++next;
      return new Promise((resolve, reject) => {
        jobs.set(id, { resolve, reject, onFetched, onBytes });
        worker.postMessage({ type: "fetch", id, ...job });
      });
    },
    close() {
      worker.terminate();
      failAll(new DOMException("aborted", "AbortError"));
    },
  };
}

/** WebKitGTK (2.50) resolves the worker's streamed Cache.put yet the entry never appears: the file is fetched
 * and verified again into memory and stored from the page, as Lantern stored files before the worker did
 * (the browser holds it once as a Blob meanwhile). Other engines never get here. */
async function storeFromPage(files, file, url) {
  const again = await files.run({ url, bytes: file.bytes, sha256: file.sha256, scope: scopeFor(file), keep: "memory" }, {
    onFetched: () => {},
    onBytes: () => {},
  });
  const cache = await caches.open(scopeFor(file));
  await cache.put(new Request(url), new Response(again.blob, {
    headers: { "Content-Type": "application/octet-stream", [SHA_HEADER]: again.sha256, [BYTES_HEADER]: String(file.bytes) },
  }));
}

async function fetchVerifyStore(variant, file, progress, update, signal, files, keep) {
  const state = progress.files[file.path];
  const url = fileUrl(variant, file.path);
  for (;;) {
    if (signal && signal.aborted) throw new DOMException("aborted", "AbortError");
    state.attempts += 1;
    state.status = "downloading";
    let counted = 0;
    try {
      const done = await files.run({ url, bytes: file.bytes, sha256: file.sha256, scope: scopeFor(file), keep }, {
        onFetched: () => progress.fetched.push(file.path),
        onBytes: (n) => {
          counted += n;
          state.received += n;
          progress.receivedBytes += n;
          // Every byte is in: the worker finishes the hash (and the store) now.
          if (state.received === file.bytes) state.status = "verifying";
          update();
        },
      });
      progress.hashSeconds += done.hashSeconds;
      progress.hashBytes += file.bytes;
      if (keep === "memory") memory.set(url, { blob: done.blob, sha256: done.sha256, bytes: file.bytes, scope: scopeFor(file) });
      else if (!(await storedFile(scopeFor(file), url))) await storeFromPage(files, file, url);
      state.sha256 = done.sha256;
      state.status = "done";
      progress.verifiedBytes += file.bytes;
      update();
      return;
    } catch (err) {
      if (err.name === "AbortError") {
        state.status = "aborted";
        throw err;
      }
      progress.hashSeconds += err.hashSeconds || 0;
      // Discard what this attempt counted; the bytes were never stored.
      state.received -= counted;
      progress.receivedBytes -= counted;
      if (err.kind === "corrupt" || err.kind === "truncated" || err.kind === "oversize") {
        progress.rejected.push({ path: file.path, kind: err.kind, attempt: state.attempts });
      }
      state.error = err.message;
      if (!(err instanceof FileProblem) || !err.retry || state.attempts >= MAX_ATTEMPTS) {
        state.status = "failed";
        progress.failures.push({ path: file.path, kind: err.kind || "error", message: err.message || String(err) });
        update();
        return;
      }
      state.status = "retrying";
      update();
      await new Promise((resolve) => setTimeout(resolve, 200 * state.attempts));
    }
  }
}
