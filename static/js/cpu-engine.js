// The CPU tier: the model's GGUF (the same file the server fallback runs) in llama.cpp compiled to
// WebAssembly (npm @wllama/wllama, vendored), for browsers without a usable GPU. Private like the GPU
// path: the weights come from the verified browser cache and nothing is sent anywhere. wllama runs
// llama.cpp in its own worker (and wasm threads when the page is cross-origin isolated), so decoding
// never blocks the page.
//
// Same interface as engines.js (kind "local", load/chat/stop/unload). The prompt is assembled from the
// variant's conv_template exactly as web-llm does (prompt.js) and fed as token ids; sampling is
// temperature + top_p only (no top_k / min_p), as in web-llm and the server, so greedy answers equal
// the server's on the same GGUF.

import { fileUrl, fileWithRole, scopeFor, storedFile } from "./downloader.js";
import { EngineError } from "./engines.js";
import { promptPieces, promptTokenIds } from "./prompt.js";
import { AnswerStream } from "./stream.js";

const WLLAMA = new URL("../vendor/wllama/", import.meta.url);
/** A stopped answer ends within one token; a worker silent for this long has crashed and is replaced. */
const STUCK_MS = 15_000;

/** Cuts streamed text at the first stop string, holding back only a tail that could still become one. */
class StopScanner {
  constructor(stops) {
    this.stops = stops.filter(Boolean);
    this.longest = Math.max(0, ...this.stops.map((s) => s.length));
    this.buf = "";
  }

  push(text) {
    if (!this.stops.length) return [text, false];
    const buf = this.buf + text;
    const hits = this.stops.map((s) => buf.indexOf(s)).filter((i) => i >= 0);
    if (hits.length) {
      this.buf = "";
      return [buf.slice(0, Math.min(...hits)), true];
    }
    let hold = 0;
    for (let k = Math.min(buf.length, this.longest - 1); k > 0; k--) {
      const tail = buf.slice(-k);
      if (this.stops.some((s) => s.startsWith(tail))) {
        hold = k;
        break;
      }
    }
    this.buf = hold ? buf.slice(buf.length - hold) : "";
    return [buf.slice(0, buf.length - hold), false];
  }

  flush() {
    const out = this.buf;
    this.buf = "";
    return out;
  }
}

async function cached(scope, url) {
  const hit = await storedFile(scope, url); // browser storage, or this visit's memory
  if (!hit) throw new EngineError("download-failed", "A model file is missing from browser storage; download it again.");
  return hit;
}

/** The model's GGUF as wllama loads it: one file, or llama.cpp's gguf-split parts (each at most the
 * build's part size, verified and stored as ordinary files of the tier), in the order the server lists
 * them. llama.cpp checks each part's split.no, so the order matters: wllama keeps plain Blobs in the order
 * given (it re-sorts only named Files; wrapping them as Files also broke loading in WebKitGTK). */
async function ggufBlobs(variant) {
  const names = variant.gguf_parts || variant.files.filter((f) => f.role === "gguf").map((f) => f.path);
  return Promise.all(names.map(async (name) => {
    const file = variant.files.find((f) => f.path === name);
    return (await cached(scopeFor(file), fileUrl(variant, name))).blob();
  }));
}

export class CpuEngine {
  /** threads: from the capability report (half the cores when cross-origin isolated, else one). */
  constructor(variant, { threads = 1 } = {}) {
    this.kind = "local";
    this.tier = "cpu";
    this.variant = variant;
    this.requestedThreads = threads;
    this.wllama = null;
    this.chatConfig = null;
    this.kvTokens = []; // what the context holds now (null: unknown): a follow-up turn re-reads only what changed
    this.running = Promise.resolve(); // the answer being computed, stopped ones included
    this.modelBlobs = null; // the GGUF, or its gguf-split parts in load order
    this.restarts = 0; // workers replaced after they stopped answering
    this.threads = 1;
  }

  async load(onProgress = () => {}) {
    const v = this.variant;
    onProgress({ fraction: 0, text: "Reading the model from browser storage…" });
    const config = fileWithRole(v, "chat_config");
    this.chatConfig = await (await cached(scopeFor(config), fileUrl(v, config.path))).json();
    this.modelBlobs = await ggufBlobs(v);
    onProgress({ fraction: 0.5, text: `Starting the model on your processor (${this.requestedThreads} thread${this.requestedThreads > 1 ? "s" : ""})…` });
    await this.startWorker();
    onProgress({ fraction: 1, text: "Ready." });
  }

  /** wllama's worker on the stored GGUF parts (Blobs backed by browser storage, not copies in memory). */
  async startWorker() {
    const { Wllama } = await import("../vendor/wllama/index.js");
    this.wllama = new Wllama({
      "single-thread/wllama.wasm": new URL("single-thread/wllama.wasm", WLLAMA).href,
      "multi-thread/wllama.wasm": new URL("multi-thread/wllama.wasm", WLLAMA).href,
    }, { suppressNativeLog: true });
    try {
      await this.wllama.loadModel(this.modelBlobs, {
        n_ctx: this.variant.context_window, n_batch: 512, n_threads: this.requestedThreads,
      });
    } catch (err) {
      this.stopWorker();
      throw new EngineError("engine-failed", `The model could not start on your processor: ${err.message || err}`);
    }
    this.threads = this.wllama.getNumThreads();
    this.kvTokens = [];
    await this.warmSystemPrompt();
  }

  /** Ends wllama's worker at once: a worker that crashed never answers wllama's own exit call. */
  stopWorker() {
    const w = this.wllama;
    this.wllama = null;
    this.kvTokens = [];
    if (!w) return;
    const worker = w.proxy && w.proxy.worker;
    if (worker) worker.terminate();
    else w.exit().catch(() => {});
  }

  /** Read the model's default system prompt into the context now, while the user is still typing: every
   * conversation that keeps it starts with that prefix, so its first answer only reads the new words. */
  async warmSystemPrompt() {
    const conv = this.chatConfig.conv_template;
    const ids = await promptTokenIds(conv, [], (text) => this.wllama.tokenize(text, true));
    const prefix = ids.slice(0, ids.length - (await this.wllama.tokenize(promptPieces(conv, []).at(-1), true)).length);
    if (prefix.length < 2) return;
    await this.wllama.kvClear();
    await this.wllama.decode(prefix, {});
    this.kvTokens = prefix;
  }

  get stopTokenIds() {
    const c = this.chatConfig;
    const eos = Array.isArray(c.eos_token_id) ? c.eos_token_id : c.eos_token_id != null ? [c.eos_token_id] : [];
    return new Set([...(c.conv_template.stop_token_ids || []), ...eos]);
  }

  /** One answer at a time: wllama's context is one sequence, so an answer starts only once a stopped one
   * has wound down (within one token; the page does not wait for that to show the Stop). */
  chat(messages, options = {}, onDelta = () => {}) {
    const run = this.afterPrevious(this.running).then(() => this.generate(messages, options, onDelta));
    this.running = run.then(() => {}, () => {});
    return run;
  }

  /** Waits for the previous answer to end. A worker that stays silent that long has crashed (wllama then
   * leaves its calls pending for ever): it is replaced by a fresh one, so a crash costs one answer. */
  async afterPrevious(previous) {
    let timer;
    const silent = new Promise((resolve) => {
      timer = setTimeout(() => resolve(true), STUCK_MS);
    });
    const stuck = await Promise.race([previous.then(() => false), silent]);
    clearTimeout(timer);
    if (!stuck) return;
    this.restarts += 1;
    this.stopWorker();
    await this.startWorker();
  }

  async generate(messages, { temperature, maxTokens, signal } = {}, onDelta = () => {}) {
    const w = this.wllama;
    if (!w) throw new EngineError("engine-failed", "The model on your processor was unloaded.");
    const c = this.chatConfig;
    const conv = c.conv_template;
    const stopped = () => Boolean(signal && signal.aborted);
    const answer = new AnswerStream(onDelta);
    const started = answer.started;
    const ids = await promptTokenIds(conv, messages, (text) => w.tokenize(text, true));
    const room = this.variant.context_window - ids.length;
    if (room < 1) {
      throw new EngineError("context-full",
        "This conversation is longer than the model can keep in mind. Start a new chat to continue.");
    }
    const limit = Math.min(maxTokens ?? room, room);
    if (stopped()) return { text: "", finishReason: "abort", stats: null };
    // Keep the context's common prefix with this prompt (at least one token must be decoded for logits).
    const held = this.kvTokens || [];
    let keep = 0;
    while (keep < Math.min(held.length, ids.length - 1) && held[keep] === ids[keep]) keep += 1;
    if (keep === 0 || !this.kvTokens) {
      keep = 0;
      await w.kvClear();
    } else if (keep < held.length) {
      try {
        await w.kvRemove(keep, -1);
      } catch {
        keep = 0; // llama.cpp could not roll back: start from an empty context
        await w.kvClear();
      }
    }
    await w.samplingInit({
      temp: temperature ?? c.temperature ?? 0.7, top_p: c.top_p ?? 0.95, top_k: 0, min_p: 0, typ_p: 1,
      penalty_repeat: c.repetition_penalty ?? 1, penalty_freq: 0, penalty_present: 0,
    }, ids);
    // A Stop between two of the prompt's batches leaves the context holding part of it: unknown until read.
    this.kvTokens = null;
    try {
      await w.decode(ids.slice(keep), { abortSignal: signal });
    } catch (err) {
      if (stopped()) return { text: "", finishReason: "abort", stats: null };
      throw err;
    }
    this.kvTokens = ids.slice();
    const promptDone = performance.now();

    const stops = this.stopTokenIds;
    const scanner = new StopScanner(conv.stop_str || []);
    const utf8 = new TextDecoder("utf-8");
    let stoppedByText = false;
    let finishReason = "length";
    let completion = 0;
    while (completion < limit) {
      if (stopped()) {
        finishReason = "abort";
        break;
      }
      const { token, piece } = await w.samplingSample();
      if (stops.has(token)) {
        finishReason = "stop";
        break;
      }
      completion += 1;
      const [out, hit] = scanner.push(utf8.decode(piece, { stream: true }));
      answer.emit(out);
      if (hit) {
        stoppedByText = true;
        finishReason = "stop";
        break;
      }
      await w.samplingAccept([token]);
      await w.decode([token], {});
      this.kvTokens.push(token);
    }
    if (!stoppedByText) answer.emit(scanner.flush() + utf8.decode());
    const stats = answer.measured(completion, { source: "engine", promptTokens: ids.length });
    return {
      text: answer.text, finishReason,
      stats: {
        ...stats,
        tier: "cpu",
        threads: this.threads,
        ttftSeconds: stats.ttftSeconds ?? (promptDone - started) / 1000,
        prefillTokensPerSecond: ids.length - keep > 0 ? (ids.length - keep) / ((promptDone - started) / 1000) : null,
      },
    };
  }

  async unload() {
    // A stopped answer still winding down finishes its token first; a silent worker is ended regardless.
    let timer;
    await Promise.race([this.running, new Promise((resolve) => {
      timer = setTimeout(resolve, 5000);
    })]);
    clearTimeout(timer);
    this.stopWorker();
    this.modelBlobs = null;
  }
}
