// The per-device answer check. A GPU can run every kernel and still compute wrong numbers (a driver bug,
// f16 overflow): on the first load of a build on an adapter, the page asks the engine for a short greedy
// answer to a fixed prompt and compares it with the tokens the verified CPU build produced at build time
// (the manifest's `probe`, build_pipeline/probe.py, served as is by /api/models). A build that answers
// wrongly is not used on that adapter again; the result is remembered per adapter and build.

export const PROBES_KEY = "lantern.probes"; // localStorage: {adapter key: {build key: {ok, at, ...}}}

/** Who computes: the adapter as the browser describes it (vendor, architecture, device, fallback or not). */
export function adapterKey(webgpu) {
  const a = (webgpu && webgpu.adapter) || {};
  return [a.vendor, a.architecture, a.device, a.description, a.isFallbackAdapter ? "fallback" : "hardware"]
    .map((s) => s || "").join("|");
}

/** What is checked: one build (its id and content revision; a rebuild is checked again). */
export function buildKey(variant) {
  return `${variant.id}@${variant.revision || ""}`;
}

function readAll() {
  try {
    return JSON.parse(localStorage.getItem(PROBES_KEY) || "{}") || {};
  } catch {
    return {};
  }
}

/** The remembered result of this build on this adapter, or null (never checked here). */
export function rememberedProbe(webgpu, variant) {
  return (readAll()[adapterKey(webgpu)] || {})[buildKey(variant)] || null;
}

/** Keep a result; a failure is also added to `webgpu.wrongBuilds`, which choose.js skips. */
export function rememberProbe(webgpu, variant, result) {
  const all = readAll();
  const key = adapterKey(webgpu);
  all[key] = { ...(all[key] || {}), [buildKey(variant)]: { ok: result.ok, at: new Date().toISOString(),
    checked: result.checked, expected: result.expected, got: result.got } };
  try {
    localStorage.setItem(PROBES_KEY, JSON.stringify(all));
  } catch {
    /* storage full or refused: the check simply runs again next time */
  }
  webgpu.wrongBuilds = wrongBuilds(webgpu);
  if (!result.ok && !webgpu.wrongBuilds.includes(buildKey(variant))) webgpu.wrongBuilds.push(buildKey(variant));
}

/** The builds remembered as answering wrongly on this adapter (their buildKey). */
export function wrongBuilds(webgpu) {
  const mine = readAll()[adapterKey(webgpu)] || {};
  return Object.keys(mine).filter((k) => mine[k] && mine[k].ok === false);
}

/** The web-llm request: greedy (temperature 1 with the smallest top_p picks the best token, and keeps the
 * log-probabilities meaningful, which temperature 0 would flatten), neutral penalties, the best few
 * alternatives of each step. */
export function probeRequest(probe) {
  return {
    messages: [{ role: "user", content: probe.prompt }],
    stream: false,
    temperature: 1,
    top_p: 1e-5,
    max_tokens: probe.max_tokens,
    frequency_penalty: 0, presence_penalty: 0, repetition_penalty: 1,
    logprobs: true,
    top_logprobs: probe.top_logprobs,
  };
}

/**
 * Compare the engine's answer with the build's: `probe.tokens[i]` is {text, stop, tie, tolerance}. A step
 * must give the expected token (web-llm lists a stop token's step too, so a stop where none was expected
 * is a different token); at a tie the device may pick another if the expected one is among its
 * alternatives within `tolerance` (logits) of its pick, and the check ends there (the continuations
 * differ from then on). Returns {ok, checked, endedAtTie, expected, got, at}.
 */
export function judgeProbe(probe, choice) {
  const content = (choice && choice.logprobs && choice.logprobs.content) || [];
  const stopped = choice && choice.finish_reason === "stop";
  const expectedText = probe.expected_text;
  const gotText = (choice && choice.message && choice.message.content) || content.map((c) => c.token).join("");
  const result = (ok, checked, extra = {}) => ({ ok, checked, endedAtTie: false, expected: expectedText, got: gotText, ...extra });
  for (let i = 0; i < probe.tokens.length; i += 1) {
    const want = probe.tokens[i];
    const got = content[i];
    if (want.stop) {
      // The CPU build stopped here: the device must stop here too (a stop token, or nothing more).
      if (stopped && content.length <= i + 1) return result(true, i + 1);
      if (want.tie) return result(true, i, { endedAtTie: true });
      return result(false, i, { at: i });
    }
    if (got && got.token === want.text) continue;
    if (want.tie && got) {
      const alt = (got.top_logprobs || []).find((t) => t.token === want.text);
      if (alt && got.logprob - alt.logprob <= want.tolerance) return result(true, i, { endedAtTie: true });
    }
    if (want.tie && !got && stopped) return result(true, i, { endedAtTie: true });
    return result(false, i, { at: i });
  }
  return result(true, probe.tokens.length);
}

/**
 * Run the check on a started web-llm engine (engines.js WebGpuEngine) and say how it went.
 * `engine.untilLost` makes a GPU lost during the check end it with that error.
 */
export async function runProbe(engine, probe) {
  const started = performance.now();
  const reply = await engine.untilLost(engine.engine.chat.completions.create(probeRequest(probe)));
  // The next answer starts from an empty conversation, as if the check never ran.
  await engine.untilLost(engine.engine.resetChat());
  return { ...judgeProbe(probe, reply.choices && reply.choices[0]), seconds: (performance.now() - started) / 1000 };
}

/** The plain words for a failed check. */
export function wrongAnswerText(gpuName, variant, result) {
  return `Lantern checked the ${variant.quantization} build on your GPU (${gpuName}) with a short test prompt, ` +
    `and the GPU computed a wrong answer ("${(result.got || "").trim().slice(0, 60)}" instead of ` +
    `"${(result.expected || "").trim().slice(0, 60)}"). Lantern won't use that build on this GPU.`;
}
