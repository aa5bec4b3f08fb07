// Lantern downloads a variant itself, before the engine starts: parallel fetches with progress, each
// file checked against the SHA-256 in the manifest, then stored in the Cache API under the exact
// names and keys web-llm 0.2.86 reads (cache "webllm/config" | "webllm/wasm" | "webllm/model", key
// = new Request(absolute URL)). web-llm then finds everything cached and makes no request of its own.
// Only verified bytes are ever stored, so a corrupt or truncated file can never reach the engine.

export const SCOPES = { config: "webllm/config", wasm: "webllm/wasm", model: "webllm/model" };
const SHA_HEADER = "X-Lantern-SHA256";
const BYTES_HEADER = "X-Lantern-Bytes";
const CONCURRENCY = 4;
const MAX_ATTEMPTS = 3;

export class DownloadError extends Error {
  constructor(message, failures) {
    super(message);
    this.name = "DownloadError";
    this.code = failures.some((f) => f.kind === "quota") ? "quota-too-small" : "download-failed";
    this.failures = failures;
  }
}

class FileProblem extends Error {
  constructor(kind, message, retry = true) {
    super(message);
    this.kind = kind; // "http" | "network" | "truncated" | "oversize" | "corrupt" | "quota"
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

/** Which files of `variant` are already stored and verified (their stored hash matches the manifest). */
export async function inspectCache(variant) {
  const cached = new Set();
  let cachedBytes = 0;
  if (!("caches" in self)) return { cached, cachedBytes, complete: false };
  for (const file of variant.files) {
    const scope = scopeFor(file);
    // caches.open() would create the cache: only look into ones that exist.
    if (!(await caches.has(scope))) continue;
    const hit = await (await caches.open(scope)).match(new Request(fileUrl(variant, file.path)));
    // Only Lantern stores verified bytes here, with their hash as a header. This is the cheap check (no
    // body is read); verifyStored() re-hashes the bytes before they are trusted for a start.
    if (hit && hit.headers.get(SHA_HEADER) === file.sha256 && Number(hit.headers.get(BYTES_HEADER)) === file.bytes) {
      cached.add(file.path);
      cachedBytes += file.bytes;
    }
  }
  return { cached, cachedBytes, complete: cached.size === variant.files.length };
}

/**
 * Re-hash every stored file of `variant` (in a worker). Damaged entries are deleted, so a following
 * download fetches exactly them. Resolves to {damaged: [paths], hashedBytes, seconds}.
 */
export function verifyStored(variant) {
  const files = variant.files.map((f) => ({
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
    if (!(await caches.has(scope))) continue;
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
  for (const { cache, request } of await entriesOf(prefix)) {
    await cache.delete(request);
    removed += 1;
  }
  // A scope left empty is deleted outright so the browser reclaims its storage.
  for (const scope of Object.values(SCOPES)) {
    if (await caches.has(scope)) {
      const cache = await caches.open(scope);
      if ((await cache.keys()).length === 0) await caches.delete(scope);
    }
  }
  return removed;
}

async function readAll(response, expected, onBytes, signal) {
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    if (signal && signal.aborted) throw new DOMException("aborted", "AbortError");
    const { value, done } = await reader.read();
    if (done) break;
    received += value.byteLength;
    if (received > expected) {
      await reader.cancel();
      throw new FileProblem("oversize", `received more than the ${expected} bytes the manifest lists`);
    }
    chunks.push(value);
    onBytes(value.byteLength);
  }
  if (received !== expected) {
    throw new FileProblem("truncated", `only ${received} of ${expected} bytes arrived`);
  }
  const out = new Uint8Array(received);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

/**
 * Download whatever of `variant` is not yet stored. `progress` is a plain object updated in place
 * (the page renders it and tests read it); `onUpdate(progress)` is called on every change.
 * Resolves when every file is verified and stored; rejects with DownloadError listing the failed files.
 */
export async function downloadVariant(variant, progress, onUpdate = () => {}, { signal } = {}) {
  const { cached } = await inspectCache(variant);
  await dropStaleRevisions(variant);
  Object.assign(progress, {
    variantId: variant.id, status: "downloading", startedAt: performance.now(), finishedAt: null,
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
  const worker = async () => {
    while (queue.length) {
      const file = queue.shift();
      await fetchVerifyStore(variant, file, progress, update, signal);
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, queue.length) }, worker));

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

async function fetchVerifyStore(variant, file, progress, update, signal) {
  const state = progress.files[file.path];
  const url = fileUrl(variant, file.path);
  for (;;) {
    state.attempts += 1;
    state.status = "downloading";
    let counted = 0;
    try {
      // no-store: the Cache API copy below is the only one kept (no second copy in the HTTP cache).
      let response;
      try {
        response = await fetch(url, { cache: "no-store", credentials: "same-origin", signal });
      } catch (err) {
        if (err.name === "AbortError") throw err;
        throw new FileProblem("network", "the connection failed");
      }
      progress.fetched.push(file.path);
      if (!response.ok) {
        throw new FileProblem("http", `the server answered ${response.status}`, response.status >= 500);
      }
      const bytes = await readAll(response, file.bytes, (n) => {
        counted += n;
        state.received += n;
        progress.receivedBytes += n;
        update();
      }, signal);
      state.status = "verifying";
      update();
      const t0 = performance.now();
      const digest = toHex(await crypto.subtle.digest("SHA-256", bytes));
      progress.hashSeconds += (performance.now() - t0) / 1000;
      progress.hashBytes += bytes.byteLength;
      if (digest !== file.sha256) {
        throw new FileProblem("corrupt", "its SHA-256 does not match the manifest");
      }
      try {
        const cache = await caches.open(scopeFor(file));
        await cache.put(new Request(url), new Response(bytes, {
          headers: { "Content-Type": "application/octet-stream", [SHA_HEADER]: digest, [BYTES_HEADER]: String(file.bytes) },
        }));
      } catch (err) {
        const quota = err && (err.name === "QuotaExceededError" || /quota/i.test(String(err.message)));
        throw new FileProblem(quota ? "quota" : "storage",
          quota ? "the browser's storage quota is full" : `the browser could not store it (${err})`, false);
      }
      state.sha256 = digest;
      state.status = "done";
      progress.verifiedBytes += file.bytes;
      update();
      return;
    } catch (err) {
      if (err.name === "AbortError") {
        state.status = "aborted";
        throw err;
      }
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
