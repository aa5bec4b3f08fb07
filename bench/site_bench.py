"""Chat page in headless Chromium (SwiftShader WebGPU): cold load (download from loopback + SHA-256 verify +
engine init), warm load (from the verified cache), time to first token, decode tok/s, and the page's
SHA-256 throughput (SubtleCrypto) on the real download and on a fixed buffer.

Uses SmolLM2 q4f32_asym from $LANTERN_MODELS_DIR (or dist/models: `make build-model`). Without a compiled
library it still measures download + verification and says the engine part was skipped.

    python -m bench site            # or: python -m bench.site_bench [--models DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.support import serving_in_thread
from build_pipeline.contract import MANIFEST_FILE
from build_pipeline.paths import models_dir
from testing import chromium

MODEL, QUANT = "smollm2-135m-instruct", "q4f32_asym"  # the default q4 build
PROMPT = "What is the capital of France?"
LOAD_TIMEOUT_MS = 1_800_000
HASH_PROBE_MB = 64
MAX_TOKENS = 128

HASH_PROBE = """async (mb) => {
  const buf = new Uint8Array(mb * 1024 * 1024);
  for (let i = 0; i < buf.length; i += 65536) crypto.getRandomValues(buf.subarray(i, i + 65536));
  let best = Infinity;
  for (let round = 0; round < 3; round++) {
    const t = performance.now();
    await crypto.subtle.digest('SHA-256', buf);
    best = Math.min(best, performance.now() - t);
  }
  return (buf.length / 1e6) / (best / 1000);
}"""


def lantern(page, expr=""):
    return page.evaluate(f"() => JSON.parse(JSON.stringify(window.lantern{expr} ?? null))")


def wait_state(page, states, timeout=LOAD_TIMEOUT_MS):
    page.wait_for_function("(s) => window.lantern && s.includes(window.lantern.state)", arg=states, timeout=timeout)
    return page.evaluate("() => window.lantern.state")


def run(models: Path, model: str = MODEL, quant: str = QUANT) -> dict:
    from playwright.sync_api import sync_playwright

    manifest = json.loads((models / model / quant / MANIFEST_FILE).read_text())
    has_library = bool(manifest.get("library"))
    results = {"model": manifest["id"], "download_mb": manifest["download_bytes"] / 1e6, "library": has_library}
    profile = tempfile.mkdtemp(prefix="lantern-bench-profile-")
    try:
        with serving_in_thread(models) as url, sync_playwright() as p:
            # A persistent profile on disk: storage behaves as for a real user (not in-memory incognito).
            context = chromium.launch_persistent(p, profile)
            # This bench measures the WebGPU path (on SwiftShader the page would pick the CPU tier).
            context.add_init_script("try { localStorage.setItem('lantern.tier', 'gpu'); } catch (e) {}")
            page = context.new_page()
            page.goto(url + "/")
            wait_state(page, ["needs-download", "downloaded", "unsupported"], 60_000)
            if lantern(page, ".model") != model:
                page.select_option("#model-picker", model)
                page.wait_for_function("(m) => window.lantern.model === m", arg=model)
            wait_state(page, ["needs-download"], 60_000)
            results["variant"] = lantern(page, ".selection.variantId")
            results["hash_probe_mb_per_s"] = page.evaluate(HASH_PROBE, HASH_PROBE_MB)
            want = ["ready", "engine-failed"] if has_library else ["downloaded"]

            t = time.perf_counter()
            page.click("#download-button")
            end = wait_state(page, want + ["download-failed"])
            results["cold_load_s"] = time.perf_counter() - t
            d = lantern(page, ".download")
            results["download_verify_s"] = (d["finishedAt"] - d["startedAt"]) / 1000
            results["verify_mb_per_s"] = d["verifyMBps"]
            if end != "ready":
                results["engine"] = (
                    "skipped: no model library in this build" if not has_library else lantern(page, ".error")
                )
                t = time.perf_counter()
                page.reload()
                wait_state(page, ["downloaded", "needs-download"])
                results["warm_load_s"] = time.perf_counter() - t  # page start + cache check only
                context.close()
                return results
            results["cold_engine_init_s"] = lantern(page, ".engine.loadSeconds")

            t = time.perf_counter()
            page.reload()
            wait_state(page, ["ready", "engine-failed"])
            results["warm_load_s"] = time.perf_counter() - t
            results["warm_engine_init_s"] = lantern(page, ".engine.loadSeconds")
            results["warm_rehash_s"] = lantern(page, ".storedCheck.seconds")

            page.fill("#temperature", "0")
            page.locator("#temperature").dispatch_event("input")
            page.fill("#max-tokens", str(MAX_TOKENS))
            page.locator("#max-tokens").dispatch_event("change")
            page.fill("#prompt", PROMPT)
            page.click("#send")
            page.wait_for_function(
                "() => window.lantern.state === 'ready' && window.lantern.lastReply?.finishReason",
                timeout=LOAD_TIMEOUT_MS,
            )
            reply = lantern(page, ".lastReply")
            results["ttft_s"] = reply["stats"]["ttftSeconds"]
            results["decode_tok_per_s"] = reply["stats"]["decodeTokensPerSecond"]
            results["completion_tokens"] = reply["stats"]["completionTokens"]
            results["answer"] = reply["text"]
            context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return results


def report(r: dict) -> None:
    def num(key, fmt):
        return fmt.format(r[key]) if isinstance(r.get(key), (int, float)) else "n/a"

    print(f"model {r['model']}: {r['download_mb']:.1f} MB, library {'yes' if r['library'] else 'no'}")
    print(
        f"cold load (download + verify{' + engine init' if 'cold_engine_init_s' in r else ''}): "
        f"{num('cold_load_s', '{:.2f} s')}  (download+verify {num('download_verify_s', '{:.2f} s')}, "
        f"engine init {num('cold_engine_init_s', '{:.2f} s')})"
    )
    print(
        f"warm load (from cache): {num('warm_load_s', '{:.2f} s')}  (re-hash of stored files "
        f"{num('warm_rehash_s', '{:.2f} s')}, engine init {num('warm_engine_init_s', '{:.2f} s')})"
    )
    print(
        f"SHA-256 in the page: {num('verify_mb_per_s', '{:.0f} MB/s')} on the download, "
        f"{num('hash_probe_mb_per_s', '{:.0f} MB/s')} on a {HASH_PROBE_MB} MB buffer"
    )
    print(f"time to first token: {num('ttft_s', '{:.2f} s')}, decode: {num('decode_tok_per_s', '{:.1f} tok/s')}")
    if "answer" in r:
        print(f"greedy answer: {r['answer']!r}")
    if "engine" in r:
        print(f"engine: {r['engine']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.site_bench")
    parser.add_argument("--models", type=Path, default=models_dir())
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--quant", default=QUANT)
    parser.add_argument("--json", action="store_true", help="print the raw numbers as JSON too")
    args = parser.parse_args(argv if argv is not None else [])
    if not (args.models / args.model / args.quant / MANIFEST_FILE).exists():
        raise SystemExit(f"{args.model} {args.quant} is not built in {args.models} (make build-model)")
    results = run(args.models, args.model, args.quant)
    report(results)
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
