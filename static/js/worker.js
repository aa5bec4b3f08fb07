// The engine's module worker: web-llm runs here so token generation never blocks the page.
import { WebWorkerMLCEngineHandler } from "../vendor/web-llm/index.js";

const handler = new WebWorkerMLCEngineHandler();
let events = null; // MessagePort to the page for what web-llm itself only logs

// A device lost for any reason but our own unload (a driver reset, a GPU process crash) makes every
// later request fail obscurely or hang; tell the page at once so it can offer a reload.
if (self.GPUAdapter) {
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = async function lanternRequestDevice(...args) {
    const device = await requestDevice.apply(this, args);
    device.lost.then((info) => {
      if (info.reason !== "destroyed" && events) events.postMessage({ kind: "device-lost", message: info.message });
    });
    return device;
  };
}

/** Run from memory (a browser that cannot store the files): web-llm reads every model file through the
 * Cache API (caches.open(scope).match/add). Here that API is answered from the verified Blobs the page
 * hands over, so web-llm gets exactly the files Lantern verified, nothing is stored, and a file that is
 * not among them is an error, never a fetch past the verification. */
function memoryCaches(files) {
  const held = new Map(files.map((f) => [f.url, f.blob]));
  const urlOf = (request) => new URL(typeof request === "string" ? request : request.url, self.location.href).href;
  const cache = {
    async match(request) {
      const blob = held.get(urlOf(request));
      return blob ? new Response(blob, { headers: { "Content-Type": "application/octet-stream" } }) : undefined;
    },
    async add(request) {
      throw new Error(`${urlOf(request)} is not among the verified files held in memory for this visit`);
    },
    async put() {},
    async delete() {
      return false;
    },
    async keys() {
      return [...held.keys()].map((url) => new Request(url));
    },
  };
  return {
    open: async () => cache,
    has: async () => true,
    delete: async () => false,
    keys: async () => [],
    match: (request) => cache.match(request),
  };
}

self.onmessage = (message) => {
  const data = message.data;
  if (data && data.lantern === "events") {
    [events] = message.ports;
    return;
  }
  if (data && data.lantern === "memory") {
    Object.defineProperty(self, "caches", { value: memoryCaches(data.files), configurable: true });
    return;
  }
  handler.onmessage(message);
};
