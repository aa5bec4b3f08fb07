// The local engine's life: start the verified build on the GPU (web-llm) or the processor (wllama), say
// what runs and how fast, and unload it.

import { deviceLost, discardLostEngine, offerServer, retryDownload } from "./actions.js";
import { ONE_THREAD_BECAUSE } from "./capabilities.js";
import { CpuEngine } from "./cpu-engine.js";
import { inspectCache } from "./downloader.js";
import { WebGpuEngine, classifyEngineError } from "./engines.js";
import { formatSeconds } from "./format.js";
import { collapseDownload } from "./loading.js";
import { selectModel } from "./model.js";
import { rememberProbe, rememberedProbe, runProbe, wrongAnswerText } from "./probe.js";
import { currentModel, fail, lantern, log, shared, state, variant } from "./record.js";
import * as view from "./view.js";

export async function unloadLocal() {
  if (!shared.localEngine) return;
  await shared.localEngine.unload();
  shared.localEngine = null;
  lantern.engine = { ...lantern.engine, status: "none" };
}

export async function startLocalEngine() {
  const v = variant();
  const { timeline } = shared;
  // selectModel() re-hashed the stored files just before; this only guards against them vanishing since.
  const stored = await inspectCache(v);
  if (!stored.complete) {
    fail("download-failed", "Some model files are missing or damaged in browser storage; download them again.", [retryDownload]);
    state.go("needs-download");
    return;
  }
  if (shared.localEngine) await shared.localEngine.unload();
  shared.localEngine = null;
  state.go("loading-engine");
  const tier = lantern.selection.tier;
  const where = tier === "cpu" ? "your processor" : "your GPU";
  lantern.engine = { ...lantern.engine, kind: "local", tier, status: "loading", startedCount: lantern.engine.startedCount + 1 };
  view.setEngineStatus(`Starting the model on ${where}…`);
  timeline.stage("starting", tier === "cpu" ? "Starting on your processor" : "Starting the engine");
  // The device lost while idle; during an answer or a load, those report it themselves.
  const engine = tier === "cpu"
    ? new CpuEngine(v, { threads: lantern.capabilities.wasm.threads })
    : new WebGpuEngine(v, {
      onLost: (e) => {
        if (shared.busy || shared.localEngine !== engine) return;
        discardLostEngine(engine);
        if (lantern.mode === "local") deviceLost(e);
      },
    });
  const started = performance.now();
  try {
    await engine.load((p) => {
      lantern.engine.progress = p;
      view.setEngineStatus(p.text || `Starting the model on ${where}…`);
      if (tier === "gpu" && /shader/i.test(p.text || "")) timeline.stage("starting", "Compiling shaders");
    });
    // The first time this build runs on this GPU: does it compute the answers the verified build does?
    if (tier === "gpu" && v.probe && !rememberedProbe(lantern.capabilities.webgpu, v)) {
      if (!(await answerCheck(engine, v))) return;
    }
  } catch (err) {
    const e = classifyEngineError(err);
    timeline.stop();
    lantern.engine.status = "failed";
    state.go("engine-failed");
    view.setEngineStatus("");
    if (e.code === "device-lost") deviceLost(e);
    else fail(e.code, e.message, [offerServer(e.message)]);
    return;
  }
  shared.localEngine = engine;
  lantern.engine = {
    ...lantern.engine, kind: "local", status: "ready", loadSeconds: (performance.now() - started) / 1000,
    threads: tier === "cpu" ? engine.threads : null,
  };
  view.setEngineStatus(readyText(v));
  timeline.stage("ready");
  const model = currentModel();
  collapseDownload(lantern.load, (model && model.name) || v.id, v.download_bytes);
  if (lantern.mode === "local") state.go("ready");
}

/**
 * The per-device answer check (probe.js): a short greedy answer compared with the verified CPU build's.
 * Remembered per adapter and build. On a wrong answer the engine is dropped, the page says so and chooses
 * again without that build: the f32 build after an f16 one, then the processor. Returns whether it passed.
 */
async function answerCheck(engine, v) {
  const gpu = lantern.capabilities.webgpu;
  view.setEngineStatus(`Checking that your GPU computes ${v.id} correctly (a short test answer)…`);
  shared.timeline.stage("starting", "Checking the GPU's answers");
  let result;
  try {
    result = await runProbe(engine, v.probe);
  } catch (err) {
    await engine.unload().catch(() => {}); // the GPU failed during the check: reported like a failed load
    throw err;
  }
  lantern.probe = { variant: v.id, adapter: gpu.name, ...result };
  log("probe", { variant: v.id, ok: result.ok, checked: result.checked, seconds: result.seconds });
  rememberProbe(gpu, v, result);
  if (result.ok) return true;
  await engine.unload();
  shared.timeline.stop();
  lantern.engine = { ...lantern.engine, status: "none" };
  // Said plainly while the page moves on, and kept among the notes beside the next rung's own reason.
  const message = wrongAnswerText(gpu.name, v, result);
  view.setEngineStatus(message);
  await selectModel(lantern.model);
  if (lantern.selection && !lantern.selection.warnings.includes(message)) {
    lantern.selection.warnings.unshift(message);
    view.showCapabilities(lantern.selection);
  }
  return false;
}

/** What the local engine is, in plain words; the CPU tier says how fast it really ran here. */
export function readyText(v, stats = null) {
  const started = `started in ${formatSeconds(lantern.engine.loadSeconds)}`;
  if (lantern.engine.tier !== "cpu") return `Ready: ${v.id} runs on your GPU (${started}).`;
  const threads = lantern.engine.threads;
  const reason = lantern.capabilities.wasm.oneThreadReason;
  const how = `${threads} thread${threads > 1 ? "s" : ""}${reason ? `, one because ${ONE_THREAD_BECAUSE[reason]}` : ""}`;
  const speed = stats && stats.decodeTokensPerSecond ? `, ~${Math.round(stats.decodeTokensPerSecond)} tokens/s` : "";
  return `Ready: ${v.id} runs on your processor (${how}${speed}; ${started}). Private, slower than a GPU.`;
}
