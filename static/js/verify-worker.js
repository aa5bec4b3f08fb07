// Re-hashes stored model files before Lantern trusts them again (page start, engine start). Runs in a
// short-lived worker: hashing stays off the UI thread, and terminating the worker releases every
// Cache API handle it took, so "Remove downloaded model" can free the space at once.

function toHex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

self.onmessage = async ({ data }) => {
  const damaged = [];
  let hashedBytes = 0;
  const started = performance.now();
  for (const file of data.files) {
    try {
      const cache = await caches.open(file.scope);
      const key = new Request(file.url);
      const hit = await cache.match(key);
      const bytes = hit ? await hit.arrayBuffer() : null;
      const ok = bytes && bytes.byteLength === file.bytes
        && toHex(await crypto.subtle.digest("SHA-256", bytes)) === file.sha256;
      if (bytes) hashedBytes += bytes.byteLength;
      if (!ok) {
        // Damaged bytes must never be read by the engine: drop them so they are fetched again.
        await cache.delete(key);
        damaged.push(file.path);
      }
    } catch (err) {
      damaged.push(file.path);
    }
  }
  self.postMessage({ damaged, hashedBytes, seconds: (performance.now() - started) / 1000 });
};
