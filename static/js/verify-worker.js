// Lantern's file worker: it fetches model files and re-hashes stored ones, off the UI thread, with the
// SHA-256 computed as the bytes stream past (hash-wasm's incremental SHA-256, vendored), so no file is
// ever held whole in memory to be checked.
//
// * {type: "fetch", id, url, bytes, sha256, scope, keep: "cache" | "memory"}: fetch one file. Each chunk
//   is counted and hashed as it arrives and handed straight on:
//   - keep "cache": into Cache.put() of a Response built on the stream. The stream ends in an error,
//     never a close, unless every byte arrived and the SHA-256 matches the manifest; Cache.put() commits
//     an entry only once its body has closed, so a corrupt, truncated or oversize file is never stored
//     (no temporary key, no second copy, nothing for the engine to find);
//   - keep "memory": into a Blob assembled from the chunks (for a browser that cannot store the files:
//     the model runs from memory for this visit, and nothing is stored). Sent back only when verified.
//   Answers {type: "fetched", id} once the server answered, {type: "bytes", id, n} as bytes arrive, then
//   {type: "done", id, sha256, hashSeconds, blob?} or {type: "failed", id, kind, message, retry}.
// * {type: "verify", files}: re-hash stored files before Lantern trusts them again (page start, engine
//   start), reading each entry as a stream. Damaged entries are deleted. Answers {damaged, hashedBytes,
//   seconds}. That worker is short-lived: terminating it releases every Cache API handle it took, so
//   "Remove downloaded model" can free the space at once.

import "../vendor/hash-wasm/sha256.umd.min.js";

const { createSHA256 } = self.hashwasm;
const SHA_HEADER = "X-Lantern-SHA256";
const BYTES_HEADER = "X-Lantern-Bytes";
const REPORT_BYTES = 1 << 20; // progress messages: at most one per MiB (and one per 100 ms)
const REPORT_MS = 100;
const BLOB_PART = 16 << 20; // memory mode: chunks are gathered into Blobs of this size as they arrive

class Problem extends Error {
  constructor(kind, message, retry = true) {
    super(message);
    this.kind = kind; // "http" | "network" | "truncated" | "oversize" | "corrupt" | "quota" | "storage"
    this.retry = retry;
  }
}

/**
 * The response body, counted and hashed chunk by chunk: a stream that closes only when exactly
 * `file.bytes` arrived and their SHA-256 is `file.sha256`, and errors otherwise. `outcome.problem` says
 * why it errored; `outcome.hashSeconds` is the time spent hashing.
 */
function verifiedStream(body, file, hash, onBytes, outcome) {
  const reader = body.getReader();
  let received = 0;
  const fail = (controller, problem) => {
    outcome.problem = problem;
    controller.error(problem);
    reader.cancel(problem).catch(() => {});
  };
  return new ReadableStream({
    async pull(controller) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch {
        fail(controller, new Problem("network", "the connection broke off"));
        return;
      }
      if (chunk.done) {
        if (received !== file.bytes) {
          fail(controller, new Problem("truncated", `only ${received} of ${file.bytes} bytes arrived`));
          return;
        }
        const t0 = performance.now();
        const digest = hash.digest("hex");
        outcome.hashSeconds += (performance.now() - t0) / 1000;
        if (digest !== file.sha256) {
          fail(controller, new Problem("corrupt", "its SHA-256 does not match the manifest"));
          return;
        }
        outcome.sha256 = digest;
        controller.close();
        return;
      }
      const bytes = chunk.value;
      received += bytes.byteLength;
      if (received > file.bytes) {
        fail(controller, new Problem("oversize", `received more than the ${file.bytes} bytes the manifest lists`));
        return;
      }
      const t0 = performance.now();
      hash.update(bytes);
      outcome.hashSeconds += (performance.now() - t0) / 1000;
      onBytes(bytes.byteLength);
      controller.enqueue(bytes);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
}

function storageProblem(err) {
  const quota = err && (err.name === "QuotaExceededError" || /quota/i.test(String(err.message)));
  return new Problem(quota ? "quota" : "storage",
    quota ? "the browser's storage quota is full" : `the browser could not store it (${err && err.name ? `${err.name}: ${err.message}` : err})`,
    false);
}

/** Gathers a verified stream into one Blob, a part at a time (no whole-file ArrayBuffer is ever made). */
async function intoBlob(stream) {
  const reader = stream.getReader();
  const parts = [];
  let pending = [];
  let pendingBytes = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending.push(value);
    pendingBytes += value.byteLength;
    if (pendingBytes >= BLOB_PART) {
      parts.push(new Blob(pending));
      pending = [];
      pendingBytes = 0;
    }
  }
  if (pending.length) parts.push(new Blob(pending));
  return new Blob(parts, { type: "application/octet-stream" });
}

const jobs = new Map(); // id -> AbortController

async function fetchFile(job) {
  const controller = new AbortController();
  jobs.set(job.id, controller);
  let pending = 0;
  let lastReport = performance.now();
  const report = (force = false) => {
    if (!pending || (!force && pending < REPORT_BYTES && performance.now() - lastReport < REPORT_MS)) return;
    self.postMessage({ type: "bytes", id: job.id, n: pending });
    pending = 0;
    lastReport = performance.now();
  };
  const outcome = { problem: null, sha256: null, hashSeconds: 0 };
  try {
    let response;
    try {
      // no-store: the Cache API entry is the only copy kept (none in the HTTP cache).
      response = await fetch(job.url, { cache: "no-store", credentials: "same-origin", signal: controller.signal });
    } catch {
      throw new Problem("network", "the connection failed");
    }
    self.postMessage({ type: "fetched", id: job.id });
    if (!response.ok) {
      response.body?.cancel().catch(() => {});
      throw new Problem("http", `the server answered ${response.status}`, response.status >= 500);
    }
    const hash = await createSHA256();
    hash.init();
    const body = verifiedStream(response.body, job, hash, (n) => {
      pending += n;
      report();
    }, outcome);
    let blob = null;
    if (job.keep === "memory") {
      try {
        blob = await intoBlob(body);
      } catch (err) {
        throw outcome.problem || new Problem("memory", `the browser could not hold it in memory (${err})`, false);
      }
    } else {
      let cache;
      try {
        cache = await caches.open(job.scope);
      } catch (err) {
        throw storageProblem(err);
      }
      const key = new Request(job.url);
      try {
        await cache.put(key, new Response(body, {
          headers: { "Content-Type": "application/octet-stream", [SHA_HEADER]: job.sha256, [BYTES_HEADER]: String(job.bytes) },
        }));
      } catch (err) {
        throw outcome.problem || storageProblem(err);
      }
      if (outcome.problem || outcome.sha256 !== job.sha256) {
        // Cannot happen (the body errored, so put() rejected); never leave an unverified entry regardless.
        await cache.delete(key);
        throw outcome.problem || new Problem("corrupt", "its SHA-256 does not match the manifest");
      }
    }
    report(true);
    self.postMessage({ type: "done", id: job.id, sha256: outcome.sha256, hashSeconds: outcome.hashSeconds, blob });
  } catch (err) {
    report(true);
    const problem = err instanceof Problem ? err : new Problem("error", String(err && err.message ? err.message : err), false);
    self.postMessage({
      type: "failed", id: job.id, kind: problem.kind, message: problem.message, retry: problem.retry,
      hashSeconds: outcome.hashSeconds,
    });
  } finally {
    jobs.delete(job.id);
  }
}

/** Streams a stored entry through SHA-256: true when it is exactly the manifest's bytes. */
async function storedMatches(response, file) {
  const hash = await createSHA256();
  hash.init();
  const reader = response.body.getReader();
  let received = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    received += value.byteLength;
    if (received > file.bytes) {
      await reader.cancel();
      return { ok: false, received };
    }
    hash.update(value);
  }
  return { ok: received === file.bytes && hash.digest("hex") === file.sha256, received };
}

async function verifyStored(files) {
  const damaged = [];
  let hashedBytes = 0;
  const started = performance.now();
  for (const file of files) {
    try {
      const cache = await caches.open(file.scope);
      const key = new Request(file.url);
      const hit = await cache.match(key);
      const check = hit ? await storedMatches(hit, file) : { ok: false, received: 0 };
      hashedBytes += check.received;
      if (!check.ok) {
        // Damaged bytes must never be read by the engine: drop them so they are fetched again.
        await cache.delete(key);
        damaged.push(file.path);
      }
    } catch {
      damaged.push(file.path);
    }
  }
  return { damaged, hashedBytes, seconds: (performance.now() - started) / 1000 };
}

self.onmessage = async ({ data }) => {
  if (data.type === "fetch") fetchFile(data);
  else if (data.type === "abort") jobs.get(data.id)?.abort();
  else self.postMessage(await verifyStored(data.files));
};
