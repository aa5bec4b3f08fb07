// Test/bench harness: drives STOCK @mlc-ai/web-llm 0.2.86 against a Lantern-built variant.
// The page is served by testing/browser_harness/server.py; Python calls window.lantern.* via playwright.
import * as webllm from "/vendor/web-llm/index.js";

const status = (text) => { document.getElementById("status").textContent = text; };

async function gpuInfo() {
  if (!navigator.gpu) return { ok: false, reason: "navigator.gpu is missing" };
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) return { ok: false, reason: "requestAdapter() returned null" };
  const info = adapter.info || {};
  return {
    ok: true, vendor: info.vendor, architecture: info.architecture, isFallbackAdapter: adapter.isFallbackAdapter,
    features: [...adapter.features], maxStorageBuffersPerShaderStage: adapter.limits.maxStorageBuffersPerShaderStage,
  };
}

// Engines by model id (several can be loaded side by side, e.g. to compare builds in one run);
// the most recently loaded one is the default for every call.
const engines = new Map();
let engine = null;
let modelId = null;

function use(id) {
  if (id !== undefined && id !== modelId) {
    if (!engines.has(id)) throw new Error("model not loaded: " + id);
    engine = engines.get(id);
    modelId = id;
  }
}

// Load one variant. `modelUrl` is `<origin>/models/<name>` (web-llm appends resolve/main/).
// `modelManifest` (e.g. "mlc-model-manifest.json") loads through web-llm's model-package path.
async function load({ modelId: id, modelUrl, libUrl, requiredFeatures = [], chatOpts = undefined,
                      modelManifest = undefined }) {
  const gpu = await gpuInfo();
  if (!gpu.ok) throw new Error("WebGPU unavailable: " + gpu.reason);
  const progress = [];
  const t0 = performance.now();
  const appConfig = {
    model_list: [{ model: modelUrl, model_id: id, model_lib: libUrl, required_features: requiredFeatures,
                   ...(modelManifest ? { model_manifest: modelManifest } : {}) }],
  };
  engine = await webllm.CreateMLCEngine(id, {
    appConfig,
    logLevel: "WARN",
    initProgressCallback: (r) => { progress.push({ t: Math.round(performance.now() - t0), text: r.text }); status(r.text); },
  }, chatOpts);
  modelId = id;
  engines.set(id, engine);
  const loadMs = performance.now() - t0;
  const packaged = engine.loadedModelIdToPipeline.get(id).artifact !== undefined;
  // web-llm reports "Loading GPU shader modules[i/N]" while compiling every WGSL kernel up front.
  const shaderMarks = progress.filter((p) => /shader/i.test(p.text));
  return { loadMs, gpu, packaged, progressTail: progress.slice(-3),
           shaderStartMs: shaderMarks.length ? shaderMarks[0].t : null };
}

// Greedy chat completion through the public API; the generated token ids are read from the pipeline
// (web-llm keeps them in `outputIds`; there is no public accessor). `extra` overrides request fields
// (e.g. penalties or logit_bias, which run the library's apply_*_inplace kernels).
async function chat({ prompt, maxTokens, model, extra = {} }) {
  use(model);
  const t0 = performance.now();
  const reply = await engine.chat.completions.create({
    messages: [{ role: "user", content: prompt }],
    temperature: 0, top_p: 1, repetition_penalty: 1, frequency_penalty: 0, presence_penalty: 0,
    max_tokens: maxTokens, stream: false, ...extra,
  });
  const ms = performance.now() - t0;
  const pipeline = engine.loadedModelIdToPipeline.get(modelId);
  const outputIds = pipeline && pipeline.outputIds ? Array.from(pipeline.outputIds) : null;
  await engine.resetChat();
  return {
    text: reply.choices[0].message.content,
    finishReason: reply.choices[0].finish_reason,
    usage: reply.usage,
    outputIds,
    ms,
  };
}

// Prefill `ids` then greedily decode through web-llm's low-level path (same kernels, no chat template).
async function forwardIds({ ids, steps, model }) {
  use(model);
  await engine.resetChat();
  const out = [];
  let next = await engine.forwardTokensAndSample(ids, true);
  out.push(next);
  for (let i = 1; i < steps; i++) {
    next = await engine.forwardTokensAndSample([next], false);
    out.push(next);
  }
  await engine.resetChat();
  return out;
}

// Time functions of the loaded library one by one: kernels (PrimFuncs) straight from the system
// library, or relax functions through the VM (`vm: true`). `calls`: [{fn, vm?, args: [{shape, dtype}]}]
// -- for kernels, inputs then the output buffer(s) (destination-passing style).
// Tensors hold garbage: this measures speed only. Returns the median ms per call of each entry.
async function timeCalls({ calls, iters = 10, warmup = 2, model }) {
  use(model);
  const pipeline = engine.loadedModelIdToPipeline.get(modelId);
  const tvm = pipeline.tvm;
  const dev = tvm.webgpu();
  const results = [];
  for (const call of calls) {
    tvm.beginScope();
    const fn = call.vm ? pipeline.vm.getFunction(call.fn) : tvm.systemLib().getFunction(call.fn);
    const args = call.args.map((a) => tvm.empty(a.shape, a.dtype, dev));
    const times = [];
    for (let i = 0; i < warmup + iters; i++) {
      await dev.sync();
      const t0 = performance.now();
      fn(...args);
      await dev.sync();
      if (i >= warmup) times.push(performance.now() - t0);
    }
    tvm.endScope();
    times.sort((a, b) => a - b);
    results.push({ fn: call.fn, ms: times[Math.floor(times.length / 2)], min: times[0] });
  }
  return results;
}

// Time web-llm's own decode step as it runs it (embed + decode + softmax + argsort + sample), using
// the low-level forwardTokensAndSample path after a prefill of `ids`.
async function timeDecode({ ids, steps, model }) {
  use(model);
  await engine.resetChat();
  const t0 = performance.now();
  let next = await engine.forwardTokensAndSample(ids, true);
  const prefillMs = performance.now() - t0;
  const tokens = [next];
  const t1 = performance.now();
  for (let i = 0; i < steps; i++) {
    next = await engine.forwardTokensAndSample([next], false);
    tokens.push(next);
  }
  const decodeMs = (performance.now() - t1) / steps;
  await engine.resetChat();
  return { prefillMs, decodeMs, tokens };
}

async function unload() {
  for (const e of engines.values()) await e.unload();
  engines.clear();
  engine = null;
  modelId = null;
}

window.lantern = { gpuInfo, load, chat, forwardIds, timeCalls, timeDecode, unload, ready: true };
status("harness ready");
