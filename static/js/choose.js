// Pick the variant this device should run, and say why in plain words. Pure: capabilities + catalog in,
// decision out (no I/O), so every branch can be exercised with any capability report.
// Every fact about a build (its device limits, which library and files each adapter kind gets, download
// sizes) comes from /api/models (webapp/models_api.py, build_pipeline/contract.py): nothing is derived here.

import { ONE_THREAD_BECAUSE } from "./capabilities.js";
import { formatBytes } from "./format.js";
import { buildKey } from "./probe.js";

const F16 = "shader-f16";

function needsF16(variant) {
  return (variant.required_features || []).includes(F16);
}

// Quality comes from the server (/api/models: the build's measured perplexity ratio and its wording).
function isFullQuality(variant) {
  return Boolean(variant.quality && variant.quality.full_quality);
}

function qualityRatio(variant) {
  return variant.quality && typeof variant.quality.ratio === "number" ? variant.quality.ratio : Infinity;
}

/** The server's words for a variant's quality, or "" when the build measured none. */
export function qualityLabel(variant) {
  return (variant && variant.quality && variant.quality.label) || "";
}

function shortfalls(variant, gpu) {
  const missingFeatures = (variant.required_features || []).filter((f) => !gpu.features.includes(f));
  const limits = [];
  // The server's limits already include web-llm's own floor (checked up front: before a download, not after).
  for (const [name, need] of Object.entries(variant.required_limits || {})) {
    const have = gpu.limits[name] ?? 0;
    if (have < need) limits.push({ name, need, have });
  }
  return { missingFeatures, limits };
}

function describeLimit({ name, need, have }) {
  const bytes = /Size$/.test(name) && !/Workgroup/.test(name);
  const show = (v) => (bytes ? formatBytes(v) : String(v));
  return `${name} ${show(need)} needed, your GPU offers ${show(have)}`;
}

function problem(code, message) {
  return { code, message };
}

/**
 * The variant as this adapter will use it. f32 builds ship two WebGPU libraries: one scheduled for real
 * GPUs and one for software adapters (SwiftShader), whose shader compiler chokes on the big tiled
 * kernels. The server lists each adapter kind's library, files and download size (`adapters`); take
 * this adapter's, so the downloader and the engine see a single library.
 */
export function forAdapter(variant, software) {
  const view = variant.adapters && variant.adapters[software ? "software" : "hardware"];
  return view ? { ...variant, ...view, software_library: null } : variant;
}

function emptyResult(model, tier) {
  return {
    ok: false, canChat: false, model: model ? model.id : null, variant: null, variantId: null,
    quantization: null, quality: "", reason: "", problems: [], warnings: [], summary: "", tier, tiers: [],
  };
}

function storageProblem(caps, model, variant, cachedBytes) {
  const need = Math.max(0, (variant.download_bytes || 0) - cachedBytes);
  const avail = caps.storage ? caps.storage.available : null;
  if (avail != null && need > avail) {
    return problem("quota-too-small",
      `${model.name} needs ${formatBytes(need)} of browser storage, but this browser only allows ` +
      `${formatBytes(avail)} more for this site. Free up disk space or remove other downloaded models.`);
  }
  return null;
}

function sizeText(variant, cachedBytes) {
  const need = Math.max(0, (variant.download_bytes || 0) - cachedBytes);
  return cachedBytes >= (variant.download_bytes || 0) ? "already downloaded" : `${formatBytes(need)} download`;
}

/**
 * The CPU tier (llama.cpp in WebAssembly, model.gguf from the server's build) for this browser:
 * private like the GPU path, needs no GPU at all. Returns a result like chooseGpu's.
 */
export function chooseCpu(caps, model, { cachedBytes = 0 } = {}) {
  const result = emptyResult(model, "cpu");
  const cpu = model && model.cpu;
  if (!cpu) {
    result.problems.push(problem("no-cpu-build", "This model has no build for running on the processor."));
    return result;
  }
  if (!caps.wasm || !caps.wasm.simd) {
    result.problems.push(problem("no-wasm-simd",
      "This browser can't run WebAssembly with SIMD, which the on-device CPU engine needs."));
    return result;
  }
  if (!caps.secureContext || !caps.cacheApi || !caps.subtleCrypto) {
    result.problems.push(problem("insecure-context",
      "This page must be opened over HTTPS (or from localhost) so the browser allows model storage and verification."));
    return result;
  }
  result.variant = cpu;
  result.variantId = cpu.id;
  result.quantization = cpu.quantization;
  result.canChat = true;
  const quota = storageProblem(caps, model, cpu, cachedBytes);
  if (quota) result.problems.push(quota);
  if (caps.deviceMemoryGB && caps.deviceMemoryGB * 1024 ** 3 < cpu.ram_bytes) {
    result.warnings.push(`This device reports about ${caps.deviceMemoryGB} GB of memory and the model needs ` +
      `about ${formatBytes(cpu.ram_bytes)} on the processor: it may not fit.`);
  }
  const threads = caps.wasm.threads;
  if (caps.wasm.oneThreadReason) {
    result.warnings.push(`The processor engine uses one thread here (slower), because ${ONE_THREAD_BECAUSE[caps.wasm.oneThreadReason]}.`);
  }
  result.ok = result.problems.length === 0;
  result.summary = result.ok
    ? `Runs on your processor (${threads} thread${threads > 1 ? "s" : ""}, slower than a GPU), ` +
      `${sizeText(cpu, cachedBytes)}, needs about ${formatBytes(cpu.ram_bytes)} of memory; nothing leaves this device.`
    : `${model.name} can't be stored on this device.`;
  return result;
}

/**
 * Decide for one model: the GPU (WebGPU) build if this device can run one, else the CPU tier, else
 * nothing local (the page then offers the server, with consent). `tier` "gpu" / "cpu" forces a local
 * tier (the Settings switch); "auto" also prefers the CPU tier over a software GPU adapter when the
 * build says it is faster there (measured: bench/cpu_tier_bench.py). `cachedBytes` (already verified
 * in this browser) lowers the storage need. Returns { ok, canChat, tier, tiers[], variant, variantId,
 * quantization, quality, reason, problems[], warnings[], summary }; `tiers` lists the local tiers that can run.
 */
export function chooseVariant(caps, model, { cachedBytes = 0, tier = "auto" } = {}) {
  const gpu = chooseGpu(caps, model, { cachedBytes });
  const cpu = chooseCpu(caps, model, { cachedBytes });
  const tiers = [gpu, cpu].filter((r) => r.ok && r.canChat).map((r) => r.tier);
  let chosen;
  const wrongOnGpu = gpu.problems.length > 0 && gpu.problems[0].code === "wrong-answers";
  if (tier === "gpu" && wrongOnGpu && cpu.ok) {
    // The GPU computed wrong answers with every build: the processor is the next rung, whatever Settings say.
    chosen = cpu;
    cpu.reason = `${gpu.problems[0].message} Lantern runs ${model.name} on your processor instead.`;
  } else if (tier === "gpu" || tier === "cpu") {
    chosen = tier === "gpu" ? gpu : cpu;
  } else if (gpu.ok && gpu.canChat && !(caps.webgpu.software && cpu.ok && model.cpu.preferred_on_software_adapter)) {
    chosen = gpu;
  } else if (cpu.ok) {
    chosen = cpu;
    cpu.reason = caps.webgpu.available && caps.webgpu.software
      ? `Your GPU is a software renderer (${caps.webgpu.name}); ${model.name} runs faster on your processor.`
      : `${gpu.problems[0] ? gpu.problems[0].message + " " : ""}Lantern runs ${model.name} on your processor instead.`;
  } else {
    chosen = gpu.ok || gpu.problems.length ? gpu : cpu;
  }
  return { ...chosen, tiers };
}

/** The WebGPU decision for one model (see chooseVariant). */
export function chooseGpu(caps, model, { cachedBytes = 0 } = {}) {
  const result = emptyResult(model, "gpu");
  const gpu = caps.webgpu;
  if (!model || !model.variants || model.variants.length === 0) {
    result.problems.push(problem("no-models", "No model has been built on this server yet."));
    result.summary = result.problems[0].message;
    return result;
  }
  if (!gpu.available) {
    result.problems.push(problem(gpu.code, gpu.reason));
    result.summary = `${model.name} can't run on this device.`;
    return result;
  }
  if (!caps.secureContext || !caps.cacheApi || !caps.subtleCrypto) {
    result.problems.push(problem("insecure-context",
      "This page must be opened over HTTPS (or from localhost) so the browser allows model storage and verification."));
    result.summary = result.problems[0].message;
    return result;
  }

  const wrong = new Set(gpu.wrongBuilds || []);
  const all = model.variants.map((v) => forAdapter(v, gpu.software)).map((v) => ({ variant: v, ...shortfalls(v, gpu) }));
  // Builds this GPU answered wrongly with in the answer check (probe.js) are never used on it again.
  const failed = all.filter((c) => wrong.has(buildKey(c.variant)));
  const checked = all.filter((c) => !wrong.has(buildKey(c.variant)));
  const usable = checked.filter((c) => c.missingFeatures.length === 0 && c.limits.length === 0);
  if (usable.length === 0 && failed.length > 0) {
    const builds = failed.map((c) => c.variant.quantization).join(" and ");
    result.problems.push(problem("wrong-answers",
      `Your GPU (${gpu.name}) computed wrong answers with the ${builds} build of ${model.name} in Lantern's ` +
      "answer check, so Lantern doesn't use it there."));
    result.summary = `${model.name} can't run correctly on this GPU.`;
    return result;
  }
  if (usable.length === 0) {
    const onlyF16 = checked.every((c) => c.missingFeatures.length === 1 && c.missingFeatures[0] === F16
      && c.limits.length === 0);
    if (onlyF16) {
      result.problems.push(problem("f16-missing",
        `${model.name} is only built for GPUs with 16-bit float shaders (shader-f16). ` +
        "Your GPU or browser doesn't offer them, and no 32-bit (q4f32) build is available on this server."));
    } else {
      const closest = checked.filter((c) => c.missingFeatures.length === 0)[0] || checked[0];
      const details = [
        ...closest.missingFeatures.map((f) => `missing GPU feature ${f}`),
        ...closest.limits.map(describeLimit),
      ];
      result.problems.push(problem("adapter-too-small",
        `Your GPU is too small for ${model.name}: ${details.join("; ")}.`));
    }
    result.summary = `${model.name} can't run on this device.`;
    return result;
  }

  // Preference: a build that can chat (has its WebGPU library), then f16 math when the GPU has it,
  // then full quality (as the server measured and judged it), then the smallest download, then the
  // lower measured perplexity ratio.
  usable.sort((a, b) => {
    const lib = Number(Boolean(b.variant.library)) - Number(Boolean(a.variant.library));
    if (lib) return lib;
    const f16 = gpu.shaderF16 ? Number(needsF16(b.variant)) - Number(needsF16(a.variant)) : 0;
    if (f16) return f16;
    const full = Number(isFullQuality(b.variant)) - Number(isFullQuality(a.variant));
    if (full) return full;
    const size = (a.variant.download_bytes || 0) - (b.variant.download_bytes || 0);
    if (size) return size;
    return qualityRatio(a.variant) - qualityRatio(b.variant);
  });
  const chosen = usable[0].variant;
  result.variant = chosen;
  result.variantId = chosen.id;
  result.quantization = chosen.quantization;
  result.canChat = Boolean(chosen.library);

  const hasF16Builds = model.variants.some(needsF16);
  if (failed.length > 0) {
    const builds = failed.map((c) => c.variant.quantization).join(" and ");
    result.reason = `Your GPU computed wrong answers with the ${builds} build in Lantern's answer check, ` +
      `so Lantern uses the ${chosen.quantization} build.`;
  } else if (needsF16(chosen)) {
    result.reason = `Your GPU supports 16-bit float shaders (shader-f16), so Lantern uses the ${chosen.quantization} build.`;
  } else if (!gpu.shaderF16 && hasF16Builds) {
    result.reason = `Your GPU has no 16-bit float shaders (shader-f16), so Lantern uses the ${chosen.quantization} build (32-bit math).`;
  } else {
    result.reason = `Lantern uses the ${chosen.quantization} build.`;
  }

  const quota = storageProblem(caps, model, chosen, cachedBytes);
  if (quota) result.problems.push(quota);
  if (gpu.software) {
    result.warnings.push(`Your GPU is a software renderer (${gpu.name}): it works, but answers will be slow.`);
  }
  const memory = chosen.estimated_gpu_memory_bytes;
  if (caps.deviceMemoryGB && memory && caps.deviceMemoryGB * 1024 ** 3 < memory) {
    result.warnings.push(`This device reports about ${caps.deviceMemoryGB} GB of memory and the model needs ` +
      `about ${formatBytes(memory)}: it may not fit.`);
  }
  if (!result.canChat) {
    result.warnings.push(`This build of ${model.name} has no WebGPU model library yet: it can be downloaded ` +
      "and verified, but not chatted with.");
  }
  result.ok = result.problems.length === 0;
  const where = gpu.software ? `${gpu.name}, a software renderer — slow` : gpu.name;
  const quality = qualityLabel(chosen);
  result.quality = quality;
  result.summary = result.ok
    ? `Runs on your GPU (${where}), ${sizeText(chosen, cachedBytes)}${quality ? `, ${quality}` : ""}, nothing leaves this device.`
    : `${model.name} can't be stored on this device.`;
  return result;
}
