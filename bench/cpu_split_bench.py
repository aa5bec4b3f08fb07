"""The CPU tier's GGUF parts at 1B scale (issue 19): a synthetic Llama-3.2-1B-shaped Q4_K_M GGUF
(testing/real_shapes.py: real shapes, vocabulary and type mix, random weights) split by the build's own
splitter at the site's limit (build_pipeline/cpu_tier.PART_MAX_BYTES, 512 MB), then:

* split: wall time and peak RSS of a child process doing only the split, part sizes against the limit,
  and a second split's bytes against the first (reproducible: same input, same bytes);
* llama.cpp (llama-cpp-python, the server fallback's engine): load time from the whole file and from
  the first part's name (llama.cpp finds the rest), logits of a prompt equal bit for bit, decode tok/s;
* wllama 2.3.7 in headless Chromium (no GPU), as the page runs it: the parts fetched as separate Blobs,
  handed to `loadModel` as named Files, load time, a few greedy tokens and their speed (2 threads,
  cross-origin isolated), and the tokens compared with llama.cpp's greedy tokens on the whole file.

    python -m bench cpu_split        # or: python -m bench.cpu_split_bench [--json]
    LANTERN_BENCH_SKIP_BROWSER=1 ... # without the Chromium step
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.support import cli
from build_pipeline.cpu_tier import PART_MAX_BYTES
from testing import real_shapes

REPO = Path(__file__).resolve().parents[1]
SHAPE = real_shapes.LLAMA_32_1B
PROMPT_IDS = [128000, 791, 6864, 315, 9635, 374]  # BOS + 5 ordinary ids (random weights: any ids do)
NEW_TOKENS = 8
N_CTX = 512

# The peak is read in the child from /proc (VmHWM, per address space): a child's rusage ru_maxrss also
# counts the parent's peak, which the vfork+exec that starts it carries over on Linux.
SPLIT_CHILD = """
import json, re, sys, time
from pathlib import Path
from build_pipeline.gguf_split import split_gguf
def kb(key):
    return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1))
base = kb("VmRSS")
t = time.perf_counter()
parts = split_gguf(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
print(json.dumps({"seconds": time.perf_counter() - t, "base_mb": base / 1024, "peak_mb": kb("VmHWM") / 1024,
                  "parts": [{"name": p.path.name, "bytes": p.bytes, "sha256": p.sha256, "tensors": p.tensors}
                            for p in parts]}))
"""

PAGE = b"""<!doctype html><meta charset="utf-8"><title>wllama split bench</title><body>bench</body>"""

WLLAMA_RUN = """async ([parts, promptIds, nTokens, nCtx, threads]) => {
  const { Wllama } = await import('/static/vendor/wllama/index.js');
  const base = new URL('/static/vendor/wllama/', location.href);
  const t0 = performance.now();
  const files = await Promise.all(parts.map(async (name) => {
    const blob = await (await fetch('/parts/' + name)).blob();
    return new File([blob], name);
  }));
  const fetched = performance.now();
  const w = new Wllama({
    'single-thread/wllama.wasm': new URL('single-thread/wllama.wasm', base).href,
    'multi-thread/wllama.wasm': new URL('multi-thread/wllama.wasm', base).href,
  }, { suppressNativeLog: true });
  await w.loadModel(files, { n_ctx: nCtx, n_batch: 512, n_threads: threads });
  const loaded = performance.now();
  const meta = w.getModelMetadata().meta;
  await w.samplingInit({ temp: 0, top_k: 1 }, []);
  await w.decode(promptIds, {});
  const prefilled = performance.now();
  const tokens = [];
  for (let i = 0; i < nTokens; i++) {
    const { token } = await w.samplingSample();
    tokens.push(token);
    await w.samplingAccept([token]);
    await w.decode([token], {});
  }
  const done = performance.now();
  const threadsUsed = w.getNumThreads();
  await w.exit();
  return {
    fetchSeconds: (fetched - t0) / 1000, loadSeconds: (loaded - fetched) / 1000,
    prefillSeconds: (prefilled - loaded) / 1000, decodeTokensPerSecond: nTokens / ((done - prefilled) / 1000),
    tokens, threads: threadsUsed, splitCount: Number(meta['split.count']), isolated: crossOriginIsolated,
  };
}"""


def split(gguf: Path, out: Path, limit: int) -> dict:
    import json

    out.mkdir(parents=True)
    start = time.perf_counter()
    text = subprocess.run(
        [sys.executable, "-c", SPLIT_CHILD, str(gguf), str(out), str(limit)],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {"wall_s": time.perf_counter() - start, **json.loads(text)}


def llama_cpp_run(path: Path) -> dict:
    from llama_cpp import Llama

    t = time.perf_counter()
    model = Llama(str(path), n_ctx=N_CTX, n_threads=2, logits_all=True, verbose=False)
    load = time.perf_counter() - t
    model.eval(PROMPT_IDS)
    logits = np.array(model.scores[: len(PROMPT_IDS)])
    tokens = []
    t = time.perf_counter()
    for _ in range(NEW_TOKENS):
        token = int(np.argmax(model.scores[model.n_tokens - 1]))
        tokens.append(token)
        model.eval([token])
    decode = NEW_TOKENS / (time.perf_counter() - t)
    model.close()
    return {"load_s": load, "logits": logits, "tokens": tokens, "decode_tok_s": decode}


def browser_run(parts_dir: Path, names: list[str]) -> dict:
    from playwright.sync_api import sync_playwright
    from werkzeug.serving import WSGIRequestHandler, make_server
    from werkzeug.wrappers import Request, Response
    from werkzeug.wsgi import wrap_file

    from testing import chromium

    def app(environ, start_response):
        path = Request(environ).path
        headers = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
        if path == "/":
            return Response(PAGE, mimetype="text/html", headers=headers)(environ, start_response)
        if path.startswith("/parts/") and path[7:] in names:
            file = (parts_dir / path[7:]).open("rb")
            mime = "application/octet-stream"
        elif path.startswith("/static/vendor/wllama/") and ".." not in path:
            file = (REPO / path.lstrip("/")).open("rb")
            mime = "application/wasm" if path.endswith(".wasm") else "text/javascript"
        else:
            return Response("not found", 404)(environ, start_response)
        return Response(wrap_file(environ, file), mimetype=mime, headers=headers, direct_passthrough=True)(
            environ, start_response
        )

    class Quiet(WSGIRequestHandler):
        def log_request(self, *a, **k):
            pass

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as p:
            browser = chromium.launch(p, webgpu=False)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{server.server_port}/")
            result = page.evaluate(WLLAMA_RUN, [names, PROMPT_IDS, NEW_TOKENS, N_CTX, 2])
            browser.close()
    finally:
        server.shutdown()
    return result


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="cpu-split-bench-") as tmp:
        work = Path(tmp)
        gguf = work / f"{SHAPE.name}.gguf"
        t = time.perf_counter()
        real_shapes.write_gguf(gguf, SHAPE)
        out: dict = {
            "model": SHAPE.name,
            "params": SHAPE.params(),
            "gguf_bytes": gguf.stat().st_size,
            "gguf_write_s": time.perf_counter() - t,
            "part_max_bytes": PART_MAX_BYTES,
        }
        first = split(gguf, work / "a", PART_MAX_BYTES)
        second = split(gguf, work / "b", PART_MAX_BYTES)
        out["split"] = first
        out["reproducible"] = [p["sha256"] for p in first["parts"]] == [p["sha256"] for p in second["parts"]]
        out["parts_within_limit"] = all(p["bytes"] <= PART_MAX_BYTES for p in first["parts"])
        out["sha256_checked"] = all(
            hashlib.sha256((work / "a" / p["name"]).read_bytes()).hexdigest() == p["sha256"] for p in first["parts"]
        )
        names = [p["name"] for p in first["parts"]]
        whole = llama_cpp_run(gguf)
        parts = llama_cpp_run(work / "a" / names[0])
        out["llama_cpp"] = {
            "whole_load_s": whole["load_s"],
            "split_load_s": parts["load_s"],
            "logits_equal": bool(np.array_equal(whole["logits"], parts["logits"])),
            "tokens_equal": whole["tokens"] == parts["tokens"],
            "decode_tok_s_whole": whole["decode_tok_s"],
            "decode_tok_s_split": parts["decode_tok_s"],
            "tokens": whole["tokens"],
        }
        if os.environ.get("LANTERN_BENCH_SKIP_BROWSER") != "1":
            wllama = browser_run(work / "a", names)
            wllama["tokens_equal_llama_cpp"] = wllama["tokens"] == whole["tokens"]
            out["wllama"] = wllama
    return out


def report(r: dict) -> None:
    mb = 1e6
    s = r["split"]
    print(f"{r['model']}: {r['params'] / 1e9:.2f}B params, GGUF {r['gguf_bytes'] / mb:.1f} MB "
          f"(written in {r['gguf_write_s']:.0f} s); part limit {r['part_max_bytes'] / mb:.0f} MB")  # fmt: skip
    print(f"split: {len(s['parts'])} parts in {s['seconds']:.1f} s (child {s['wall_s']:.1f} s wall, "
          f"peak RSS {s['peak_mb']:.0f} MB, {s['peak_mb'] - s['base_mb']:.0f} MB above the child's start); within limit: {r['parts_within_limit']}; "
          f"reproducible: {r['reproducible']}; sha256 re-checked: {r['sha256_checked']}")  # fmt: skip
    for p in s["parts"]:
        print(f"  {p['name']}: {p['bytes'] / mb:.1f} MB, {p['tensors']} tensors, sha256 {p['sha256'][:16]}…")
    c = r["llama_cpp"]
    print(f"llama.cpp: load whole {c['whole_load_s']:.2f} s, from parts {c['split_load_s']:.2f} s; "
          f"logits equal {c['logits_equal']}, greedy tokens equal {c['tokens_equal']}; "
          f"decode {c['decode_tok_s_whole']:.1f} / {c['decode_tok_s_split']:.1f} tok/s (whole / parts)")  # fmt: skip
    w = r.get("wllama")
    if w:
        print(f"wllama 2.3.7 in Chromium ({w['threads']} threads, isolated {w['isolated']}): split.count "
              f"{w['splitCount']}, fetch {w['fetchSeconds']:.1f} s, load {w['loadSeconds']:.1f} s, prefill "
              f"{w['prefillSeconds']:.1f} s, decode {w['decodeTokensPerSecond']:.2f} tok/s; greedy tokens equal "
              f"llama.cpp's: {w['tokens_equal_llama_cpp']}")  # fmt: skip


def main(argv=None) -> None:
    cli("python -m bench cpu_split", run, report, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
