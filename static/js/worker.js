// The engine's module worker: web-llm runs here so token generation never blocks the page.
import { WebWorkerMLCEngineHandler } from "../vendor/web-llm/index.js";

const handler = new WebWorkerMLCEngineHandler();
self.onmessage = (message) => handler.onmessage(message);
