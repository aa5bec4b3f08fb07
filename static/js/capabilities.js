// What this browser and GPU can do, measured before anything is downloaded.
// Only requestAdapter() is called (no device is created): cheap, and enough to read features and limits.

import { wrongBuilds } from "./probe.js";

export const LIMIT_NAMES = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
];

const SOFTWARE_ADAPTERS = /swiftshader|llvmpipe|lavapipe|softpipe|warp|software/i;

async function adapterInfo(adapter) {
  if (adapter.info) return adapter.info;
  if (typeof adapter.requestAdapterInfo === "function") {
    try {
      return await adapter.requestAdapterInfo();
    } catch {
      return {};
    }
  }
  return {};
}

async function detectWebGPU() {
  if (!("gpu" in navigator) || !navigator.gpu) {
    return {
      available: false,
      code: "no-webgpu",
      reason: "This browser does not support WebGPU, which Lantern needs to run the model on your device. " +
        "Recent Chrome, Edge and Safari versions have it.",
    };
  }
  let adapter = null;
  let failure = null;
  try {
    adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch (err) {
    failure = String(err && err.message ? err.message : err);
  }
  if (!adapter) {
    return {
      available: false,
      code: "no-adapter",
      reason: "WebGPU is present in this browser, but it offered no GPU to use " +
        "(the GPU may be disabled, blocklisted, or missing a driver)." + (failure ? ` Details: ${failure}` : ""),
    };
  }
  const info = await adapterInfo(adapter);
  const limits = {};
  for (const name of LIMIT_NAMES) limits[name] = Number(adapter.limits[name] ?? 0);
  const features = [...adapter.features].sort();
  const isFallbackAdapter = Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter ?? false);
  const label = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" ");
  const software = isFallbackAdapter || SOFTWARE_ADAPTERS.test(label);
  const report = {
    available: true,
    code: null,
    reason: null,
    adapter: {
      vendor: info.vendor || "",
      architecture: info.architecture || "",
      device: info.device || "",
      description: info.description || "",
      isFallbackAdapter,
    },
    name: describeAdapter(info),
    software,
    features,
    shaderF16: features.includes("shader-f16"),
    limits,
  };
  // Builds that computed wrong answers on this adapter before (probe.js): choose.js skips them.
  report.wrongBuilds = wrongBuilds(report);
  return report;
}

function describeAdapter(info) {
  const cap = (s) => (s ? s[0].toUpperCase() + s.slice(1) : "");
  const parts = [cap(info.vendor), cap(info.architecture)].filter(Boolean);
  if (info.description && !parts.join(" ").toLowerCase().includes(info.description.toLowerCase())) {
    parts.push(info.description);
  }
  return parts.join(" ") || "unnamed GPU";
}

async function detectStorage() {
  const out = { quota: null, usage: null, available: null, persisted: null };
  if (!navigator.storage || typeof navigator.storage.estimate !== "function") return out;
  try {
    const { quota, usage } = await navigator.storage.estimate();
    out.quota = quota ?? null;
    out.usage = usage ?? null;
    out.available = quota != null && usage != null ? Math.max(0, quota - usage) : null;
  } catch {
    /* estimate is best effort */
  }
  try {
    out.persisted = navigator.storage.persisted ? await navigator.storage.persisted() : null;
  } catch {
    /* ignore */
  }
  return out;
}

// The smallest module using a SIMD instruction (i8x16.splat + i8x16.popcnt): validates only where wasm
// SIMD exists, which the CPU tier's llama.cpp build needs.
const WASM_SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1,
  8, 0, 65, 0, 253, 15, 253, 98, 11]);

/** Why the processor engine gets one thread (wllama's threads need both), in words the page shows. */
export const ONE_THREAD_BECAUSE = Object.freeze({
  "not-isolated": "this page isn't cross-origin isolated",
  "no-shared-memory": "this browser gives web pages no shared memory (SharedArrayBuffer)",
});

/** WebAssembly for the CPU tier: SIMD, and threads when the page is cross-origin isolated *and* the browser
 * offers SharedArrayBuffer (WebKitGTK, for one, has none even when isolated). */
function detectWasm() {
  let simd = false;
  try {
    simd = typeof WebAssembly === "object" && WebAssembly.validate(WASM_SIMD_PROBE);
  } catch {
    simd = false;
  }
  const isolated = Boolean(self.crossOriginIsolated);
  const sharedMemory = typeof SharedArrayBuffer === "function";
  const oneThreadReason = !isolated ? "not-isolated" : !sharedMemory ? "no-shared-memory" : null;
  // Half the logical cores (wllama's own default; llama.cpp runs best on physical cores): llama.cpp's
  // threads wait for each other at every step by spinning, so a thread that has no core to itself (the
  // browser's UI and GPU processes need one too) stalls them all, which made a load or an answer take ten
  // times longer on a busy 2-core machine than on an idle one.
  const cores = navigator.hardwareConcurrency || 1;
  const threads = oneThreadReason ? 1 : Math.max(1, Math.min(8, Math.floor(cores / 2)));
  return { simd, isolated, sharedMemory, oneThreadReason, threads };
}

/** The full capability report the page shows and tests read as `window.lantern.capabilities`. */
export async function detectCapabilities() {
  const [webgpu, storage] = await Promise.all([detectWebGPU(), detectStorage()]);
  return {
    detectedAt: new Date().toISOString(),
    secureContext: Boolean(self.isSecureContext),
    cacheApi: "caches" in self,
    subtleCrypto: Boolean(self.crypto && crypto.subtle),
    indexedDB: "indexedDB" in self,
    deviceMemoryGB: navigator.deviceMemory ?? null,
    hardwareConcurrency: navigator.hardwareConcurrency ?? null,
    wasm: detectWasm(),
    webgpu,
    storage,
  };
}
