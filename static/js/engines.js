// One client interface for both ways of answering:
//   engine.kind                      "local" | "server"
//   await engine.load(onProgress)    get ready (local: web-llm in a worker from the verified cache)
//   await engine.chat(messages, {temperature, maxTokens, signal}, onDelta) -> {text, finishReason, stats}
//                                    aborting `signal` (the page's Stop) ends the answer early, finishReason
//                                    "abort"; answers run one at a time, a new one after a stopped one ends
//   await engine.unload()
// stats = {ttftSeconds, decodeTokensPerSecond, promptTokens, completionTokens, source}.

import { fileUrl, fileWithRole, heldFiles, hexToBase64, modelUrl } from "./downloader.js";
import { readEventData } from "./sse.js";
import { AnswerStream } from "./stream.js";

export class EngineError extends Error {
  constructor(code, message, extra = {}) {
    super(message);
    this.name = "EngineError";
    this.code = code;
    Object.assign(this, extra);
  }
}

/** Worker errors reach the page as strings; map the ones users can act on. */
export function classifyEngineError(err) {
  if (err instanceof EngineError) return err;
  const text = String(err && err.message ? err.message : err);
  if (/device (was )?lost|DeviceLostError|GPUDevice.*(lost|destroyed)/i.test(text)) {
    return new EngineError("device-lost", DEVICE_LOST_MESSAGE, { detail: text });
  }
  if (/exceed context window|ContextWindowSizeExceededError/i.test(text)) {
    return new EngineError("context-full",
      "This conversation is longer than the model can keep in mind. Start a new chat to continue.", { detail: text });
  }
  if (/shader-f16|ShaderF16SupportError/i.test(text)) {
    return new EngineError("f16-missing", "This build needs 16-bit float GPU shaders, which your browser doesn't offer.",
      { detail: text });
  }
  if (/compatible GPU|WebGPU/i.test(text)) {
    return new EngineError("no-webgpu", `WebGPU failed while starting the model: ${text}`, { detail: text });
  }
  return new EngineError("engine-failed", `The model could not run: ${text}`, { detail: text });
}

function sri(file) {
  return file ? `sha256-${hexToBase64(file.sha256)}` : undefined;
}

/** The web-llm ModelRecord for a variant: absolute URLs (web-llm requires them), integrity from the manifest.
 * Files are found by the role the server gives them (docs/webllm_contract.md says what web-llm checks). */
export function modelRecord(variant) {
  const integrity = { onFailure: "error" };
  const config = fileWithRole(variant, "chat_config");
  const library = fileWithRole(variant, "library");
  const tokenizer = fileWithRole(variant, "tokenizer");
  if (config) integrity.config = sri(config);
  if (library) integrity.model_lib = sri(library);
  if (tokenizer) integrity.tokenizer = { [tokenizer.path]: sri(tokenizer) };
  return {
    model: modelUrl(variant),
    model_id: variant.id,
    model_lib: variant.library ? fileUrl(variant, variant.library.file) : undefined,
    // web-llm then checks, before loading, that library, weights and device fit together.
    ...(variant.package_manifest ? { model_manifest: variant.package_manifest } : {}),
    required_features: variant.required_features || [],
    overrides: { context_window_size: variant.context_window },
    integrity,
  };
}

const DEVICE_LOST_MESSAGE =
  "The GPU stopped responding (this often means it ran out of memory). Reload the page to start again.";

export class WebGpuEngine {
  /** onLost(error) runs once if the GPU device is lost after the engine started. */
  constructor(variant, { onLost = () => {} } = {}) {
    this.kind = "local";
    this.variant = variant;
    this.engine = null;
    this.worker = null;
    this.onLost = onLost;
    this.lost = null; // EngineError once the device is gone
    // Rejects when the device is lost, so a pending load or answer ends instead of hanging.
    this.lostSignal = new Promise((_, reject) => {
      this.rejectLost = reject;
    });
    this.lostSignal.catch(() => {});
    this.running = Promise.resolve(); // the answer being computed, stopped ones included
  }

  markLost(detail) {
    if (this.lost) return;
    this.lost = new EngineError("device-lost", DEVICE_LOST_MESSAGE, { detail });
    this.rejectLost(this.lost);
    this.onLost(this.lost);
  }

  /** The error to report for `err`: a request on a dying device often fails just before the loss
   * itself is reported, so give that report a moment to arrive. */
  async explain(err) {
    const moment = new Promise((resolve) => setTimeout(resolve, 1000));
    await Promise.race([this.lostSignal, moment]).catch(() => {});
    return this.lost || classifyEngineError(err);
  }

  /** Resolves like `promise`, or rejects as soon as the device is lost. */
  untilLost(promise) {
    return Promise.race([promise, this.lostSignal]);
  }

  async load(onProgress = () => {}) {
    if (!this.variant.library) {
      throw new EngineError("no-library", "This model build has no WebGPU library, so it cannot run in the browser yet.");
    }
    // Loaded only now: a device that cannot run locally never parses the 7 MB engine.
    const { CreateWebWorkerMLCEngine } = await import("../vendor/web-llm/index.js");
    this.worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module", name: "lantern-engine" });
    const events = new MessageChannel();
    events.port1.onmessage = (e) => {
      if (e.data && e.data.kind === "device-lost") this.markLost(e.data.message);
    };
    this.worker.postMessage({ lantern: "events" }, [events.port2]);
    // Run from memory: the worker's Cache API answers from these verified files (worker.js).
    const held = heldFiles(this.variant);
    if (held.length) this.worker.postMessage({ lantern: "memory", files: held });
    try {
      this.engine = await this.untilLost(CreateWebWorkerMLCEngine(this.worker, this.variant.id, {
        appConfig: { model_list: [modelRecord(this.variant)], cacheBackend: "cache" },
        initProgressCallback: (report) => onProgress({ fraction: report.progress, text: report.text }),
        logLevel: "WARN",
      }));
    } catch (err) {
      this.worker.terminate();
      this.worker = null;
      throw await this.explain(err);
    }
  }

  /** One answer at a time: web-llm's worker queues requests anyway, and a stopped answer must have ended
   * before the next one starts (so its interrupt cannot land on the new one). */
  chat(messages, options = {}, onDelta = () => {}) {
    const run = this.running.then(() => this.generate(messages, options, onDelta));
    this.running = run.then(() => {}, () => {});
    return run;
  }

  async generate(messages, { temperature, maxTokens, signal } = {}, onDelta = () => {}) {
    const answer = new AnswerStream(onDelta);
    // web-llm clears its interrupt flag when a request starts, so a Stop that reaches the worker before
    // that would be lost: it is sent again with every chunk that arrives after it, until the stream ends.
    const interrupt = () => {
      if (this.engine) this.engine.interruptGenerate();
    };
    if (signal) signal.addEventListener("abort", interrupt, { once: true });
    try {
      const request = {
        messages, stream: true, stream_options: { include_usage: true },
        // Neutral penalties: web-llm only runs the penalty kernel when one is set.
        frequency_penalty: 0, presence_penalty: 0, repetition_penalty: 1,
      };
      if (temperature != null) request.temperature = temperature;
      if (maxTokens != null) request.max_tokens = maxTokens;
      if (this.lost) throw this.lost;
      if (signal && signal.aborted) return { text: "", finishReason: "abort", stats: null };
      const chunks = await this.untilLost(this.engine.chat.completions.create(request));
      await answer.read(chunks, (p) => this.untilLost(p), () => {
        if (signal && signal.aborted) interrupt();
      });
    } catch (err) {
      throw await this.explain(err);
    } finally {
      if (signal) signal.removeEventListener("abort", interrupt);
    }
    const finishReason = signal && signal.aborted ? "abort" : answer.finishReason;
    return { text: answer.text, finishReason, stats: answer.stats("engine") };
  }

  async unload() {
    // A stopped answer still winding down ends within a token; a lost device may never answer at all.
    await Promise.race([this.running, this.lostSignal, new Promise((resolve) => setTimeout(resolve, 5000))]).catch(() => {});
    try {
      // On a lost device web-llm may never answer; terminating the worker frees everything anyway.
      if (this.engine && !this.lost) await this.engine.unload();
    } finally {
      if (this.worker) this.worker.terminate();
      this.engine = null;
      this.worker = null;
    }
  }
}

async function errorFromResponse(response) {
  let message = `the server answered ${response.status}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch {
    /* not JSON */
  }
  if (response.status === 404) {
    return new EngineError("server-unavailable",
      "This site doesn't offer answers from the server (its server fallback is not set up).", { status: 404 });
  }
  if (response.status === 503) {
    return new EngineError("server-unavailable",
      `The server can't answer right now (${message}). Try again in a moment.`, { status: 503 });
  }
  if (response.status === 429) {
    const retry = response.headers.get("Retry-After");
    return new EngineError("server-busy",
      `The server is busy${retry ? `; try again in ${retry} s` : "; try again shortly"}.`, { status: 429, retryAfter: retry });
  }
  if (response.status === 401 || response.status === 403) {
    return new EngineError("server-auth", `The server refused the request: ${message}`, { status: response.status });
  }
  return new EngineError("server-error", `The server could not answer: ${message}`, { status: response.status });
}

/** The chunks of a /v1 event stream, up to [DONE]; an error event ends the answer with that error. */
async function* serverChunks(body) {
  for await (const data of readEventData(body)) {
    if (data === "[DONE]") return;
    let chunk;
    try {
      chunk = JSON.parse(data);
    } catch {
      continue;
    }
    if (chunk.error) throw new EngineError("server-error", `The server stopped: ${chunk.error.message || "error"}`);
    yield chunk;
  }
}

/** Streams from this site's OpenAI-compatible /v1 API. Only ever constructed after the user consented. */
export class ServerEngine {
  constructor(preferredModel) {
    this.kind = "server";
    this.preferredModel = preferredModel;
    this.model = null;
    this.controller = null;
  }

  async load() {
    let response;
    try {
      response = await fetch("/v1/models", { cache: "no-store", credentials: "same-origin" });
    } catch {
      throw new EngineError("server-unavailable", "The server could not be reached.");
    }
    if (!response.ok) throw await errorFromResponse(response);
    const body = await response.json();
    const ids = (body.data || []).map((m) => m.id);
    if (!ids.length) throw new EngineError("server-unavailable", "The server has no model to answer with.");
    const wanted = this.preferredModel;
    this.model = ids.find((id) => id === wanted) || ids.find((id) => wanted && id.startsWith(wanted)) || ids[0];
    // The server loads a model other than its default on demand: asking for it starts that now.
    if (this.model !== ids[0]) await fetch(`/v1/models/${encodeURIComponent(this.model)}`, { cache: "no-store" }).catch(() => {});
  }

  async chat(messages, { temperature, maxTokens, signal } = {}, onDelta = () => {}) {
    const controller = new AbortController();
    this.controller = controller;
    const abort = () => controller.abort();
    if (signal) {
      if (signal.aborted) abort();
      signal.addEventListener("abort", abort, { once: true });
    }
    const answer = new AnswerStream(onDelta);
    const body = { model: this.model, messages, stream: true, stream_options: { include_usage: true } };
    if (temperature != null) body.temperature = temperature;
    if (maxTokens != null) body.max_tokens = maxTokens;
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(body),
        cache: "no-store",
        credentials: "same-origin",
        signal: controller.signal,
      });
      if (!response.ok) throw await errorFromResponse(response);
      await answer.read(serverChunks(response.body));
    } catch (err) {
      if (err.name === "AbortError") {
        answer.finishReason = "abort";
      } else if (err instanceof EngineError) {
        throw err;
      } else {
        throw new EngineError("server-error", `The connection to the server failed: ${err.message || err}`);
      }
    } finally {
      if (signal) signal.removeEventListener("abort", abort);
      if (this.controller === controller) this.controller = null;
    }
    return { text: answer.text, finishReason: answer.finishReason, stats: answer.stats("client") };
  }

  /** Leaving server mode ends an answer still streaming from it. */
  async unload() {
    if (this.controller) this.controller.abort();
  }
}
