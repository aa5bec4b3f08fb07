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

self.onmessage = (message) => {
  if (message.data && message.data.lantern === "events") {
    [events] = message.ports;
    return;
  }
  handler.onmessage(message);
};
