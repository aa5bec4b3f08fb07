"""The in-browser CPU tier, measured side by side in one headless Chromium run (no GPU):

* Lantern's CPU tier (static/js/cpu-engine.js: wllama 2.3.7 driven token by token with web-llm's prompt
  assembly) vs stock wllama 2.3.7 (`createCompletion`, its own loop) on the same GGUF, 1 and 2 threads,
  alternating who goes first each round: prefill and decode tok/s, time to first token;
* a ~40-token prompt's time to first token on the CPU tier (target <= 2 s);
* Lantern's WebGPU path on SwiftShader (the software library), when the model was built with one
  (`make build-model`), as the page would otherwise run on a software adapter.

Targets (ratios, same run): CPU-tier decode >= 1.0x the best stock wllama at equal threads, >= 10x the
SwiftShader path. The last ratio is why the page prefers the CPU tier on software adapters
(build_pipeline/cpu_tier.py PREFERRED_ON_SOFTWARE_ADAPTER).

    python -m bench cpu_tier        # or: python -m bench.cpu_tier_bench [--json]
"""

from __future__ import annotations

import statistics
import sys

from bench.support import MODEL, cli, serving_in_thread, smollm2_models
from testing import chromium

STORY = "Write a long story about a dragon who learns to cook."
SHORT = "In two sentences, explain why the sky is blue to a curious child."  # ~40 tokens with the template
NEW_TOKENS = 64
ROUNDS = 3
SWIFTSHADER_TOKENS = 16

MEASURE = """async ([threads, prompt, nTokens, leanFirst]) => {
  const { CpuEngine } = await import('/static/js/cpu-engine.js');
  const { Wllama } = await import('/static/vendor/wllama/index.js');
  const { promptPieces } = await import('/static/js/prompt.js');
  const v = window.cpuTierVariant;
  const messages = [{ role: 'user', content: prompt }];

  async function lantern() {
    const engine = new CpuEngine(v, { threads });
    const t = performance.now();
    await engine.load();
    const load = (performance.now() - t) / 1000;
    const r = await engine.chat(messages, { temperature: 0, maxTokens: nTokens });
    await engine.unload();
    return { load, tokens: r.stats.completionTokens, promptTokens: r.stats.promptTokens, ttft: r.stats.ttftSeconds,
             prefill: r.stats.prefillTokensPerSecond, decode: r.stats.decodeTokensPerSecond, text: r.text };
  }

  async function stock() {
    const blobs = await Promise.all((v.gguf_parts || [v.gguf]).map(async (name) =>
      new File([await (await fetch(v.base_url + name)).blob()], name)));  // one GGUF or its split parts
    const config = await (await fetch(v.base_url + v.files.find((f) => f.role === 'chat_config').path)).json();
    const text = promptPieces(config.conv_template, messages).join('');
    const base = new URL('/static/vendor/wllama/', location.href);
    const w = new Wllama({ 'single-thread/wllama.wasm': new URL('single-thread/wllama.wasm', base).href,
                           'multi-thread/wllama.wasm': new URL('multi-thread/wllama.wasm', base).href },
                         { suppressNativeLog: true });
    const t = performance.now();
    await w.loadModel(blobs, { n_ctx: v.context_window, n_threads: threads, n_batch: 512 });
    const load = (performance.now() - t) / 1000;
    const promptTokens = (await w.tokenize(text, true)).length;
    let first = null, last = null, n = 0;
    const start = performance.now();
    await w.createCompletion(text, { nPredict: nTokens, sampling: { temp: 0, top_k: 0, min_p: 0 },
      onNewToken: () => { const now = performance.now(); if (first === null) first = now; last = now; n += 1; } });
    await w.exit();
    const ttft = (first - start) / 1000;
    return { load, tokens: n, promptTokens, ttft, prefill: promptTokens / ttft,
             decode: n > 1 ? (n - 1) / ((last - first) / 1000) : null };
  }

  const out = {};
  for (const name of leanFirst ? ['lantern', 'stock'] : ['stock', 'lantern']) {
    out[name] = name === 'lantern' ? await lantern() : await stock();
  }
  return out;
}"""


def _ready_page(browser, url: str, tier: str):
    context = browser.new_context()
    context.add_init_script(f"try {{ localStorage.setItem('lantern.tier', {tier!r}); }} catch (e) {{}}")
    page = context.new_page()
    page.goto(url + "/")
    page.wait_for_function(
        "() => window.lantern && ['needs-download', 'ready', 'unsupported'].includes(window.lantern.state)",
        timeout=120_000,
    )
    if page.evaluate("window.lantern.state") == "needs-download":
        page.evaluate("window.lantern.api.startDownload()")
    page.wait_for_function(
        "() => ['ready', 'engine-failed', 'download-failed', 'unsupported', 'downloaded']"
        ".includes(window.lantern.state)",
        timeout=1_800_000,
    )
    return context, page


def cpu_tier_rounds(browser, url: str) -> dict:
    context, page = _ready_page(browser, url, "cpu")
    try:
        if page.evaluate("window.lantern.state") != "ready":
            raise RuntimeError(f"the CPU tier did not start: {page.evaluate('JSON.stringify(window.lantern.error)')}")
        # Keep the CPU tier's description, then let the page drop its own engine (no GPU here: switching
        # to the GPU just unloads it), so only the engines under test run.
        page.evaluate("() => { window.cpuTierVariant = window.lantern.selection.variant; }")
        page.evaluate("window.lantern.api.switchTier('gpu')")
        rows = {1: [], 2: []}
        for rnd in range(ROUNDS):
            for threads in (1, 2):
                rows[threads].append(page.evaluate(MEASURE, [threads, STORY, NEW_TOKENS, rnd % 2 == 0]))
        short = page.evaluate(MEASURE, [2, SHORT, 8, True])["lantern"]
    finally:
        context.close()
    return {"rows": rows, "short": short}


def swiftshader(playwright, url: str) -> dict | None:
    browser = chromium.launch(playwright, webgpu=True)
    try:
        context, page = _ready_page(browser, url, "gpu")
        if page.evaluate("window.lantern.state") != "ready":
            return None  # no compiled library in this build: nothing to compare
        page.evaluate(
            """(tokens) => { const t = document.getElementById('temperature'); t.value = '0';
                          t.dispatchEvent(new Event('input'));
                          document.getElementById('max-tokens').value = String(tokens); }""",
            SWIFTSHADER_TOKENS,
        )
        page.evaluate("(p) => window.lantern.api.send(p)", STORY)
        page.wait_for_function("() => window.lantern.replyCount >= 1", timeout=1_800_000)
        stats = page.evaluate("window.lantern.lastReply.stats") or {}
        load = page.evaluate("window.lantern.engine.loadSeconds")
        context.close()
        return {"decode": stats.get("decodeTokensPerSecond"), "ttft": stats.get("ttftSeconds"), "load": load}
    finally:
        browser.close()


def run() -> dict:
    from playwright.sync_api import sync_playwright

    with smollm2_models() as models, serving_in_thread(models) as url, sync_playwright() as p:
        browser = chromium.launch(p, webgpu=False)
        try:
            cpu = cpu_tier_rounds(browser, url)
        finally:
            browser.close()
        gpu = swiftshader(p, url)
    return {"cpu": cpu, "swiftshader": gpu}


def _median(rows: list, who: str, key: str) -> float | None:
    values = [r[who][key] for r in rows if r[who].get(key)]
    return statistics.median(values) if values else None


def report(r: dict) -> None:
    print(
        f"model {MODEL}, headless Chromium without a GPU, greedy, {NEW_TOKENS} new tokens, {ROUNDS} alternating "
        "rounds per thread count"
    )
    best_decode = {}
    for threads, rows in r["cpu"]["rows"].items():
        lan_d, stock_d = _median(rows, "lantern", "decode"), _median(rows, "stock", "decode")
        lan_p, stock_p = _median(rows, "lantern", "prefill"), _median(rows, "stock", "prefill")
        best_decode[threads] = lan_d
        print(
            f"  {threads} thread(s): Lantern CPU tier prefill {lan_p:6.1f}, decode {lan_d:6.1f} tok/s | stock wllama "
            f"2.3.7 prefill {stock_p:6.1f}, decode {stock_d:6.1f} tok/s | decode ratio {lan_d / stock_d:.2f}x "
            f"({'meets' if lan_d / stock_d >= 1.0 else 'BELOW'} the 1.0x target), prefill ratio {lan_p / stock_p:.2f}x"
        )
        print(
            "      rounds (Lantern/stock decode): "
            + ", ".join(f"{x['lantern']['decode']:.1f}/{x['stock']['decode']:.1f}" for x in rows)
        )
    short = r["cpu"]["short"]
    print(
        f"  time to first token, {short['promptTokens']}-token prompt, 2 threads: {short['ttft']:.2f} s "
        f"({'meets' if short['ttft'] <= 2.0 else 'ABOVE'} the 2 s target)"
    )
    gpu = r["swiftshader"]
    if gpu and gpu.get("decode"):
        ratio = best_decode[2] / gpu["decode"]
        print(
            f"  Lantern WebGPU on SwiftShader: decode {gpu['decode']:.2f} tok/s, TTFT {gpu['ttft']:.1f} s, "
            f"load {gpu['load']:.1f} s | CPU tier (2 threads) is {ratio:.1f}x faster "
            f"({'meets' if ratio >= 10 else 'BELOW'} the 10x target)"
        )
    else:
        print("  Lantern WebGPU on SwiftShader: not measured (this build has no WebGPU library: make build-model)")


def main(argv=None) -> None:
    cli("python -m bench.cpu_tier_bench", run, report, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
