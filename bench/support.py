"""What several benchmarks share: the default model built once, and the site served on loopback."""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import threading
from pathlib import Path

from build_pipeline.contract import CHAT_CONFIG_FILE, SERVER_GGUF_FILE
from build_pipeline.paths import model_configs_dir, models_dir

MODEL, QUANT = "smollm2-135m-instruct", "q4f32_asym"  # the default q4 build


@contextlib.contextmanager
def smollm2_models(require: str = CHAT_CONFIG_FILE):
    """A models dir holding the SmolLM2 variant (the repo's if built with `require` in it, else a fresh
    build without the WebGPU library, removed afterwards)."""
    have = models_dir()
    if (have / MODEL / QUANT / require).is_file() and (have / MODEL / SERVER_GGUF_FILE).is_file():
        yield have
        return
    from build_pipeline.build import build
    from build_pipeline.model_config import load_model_config

    with tempfile.TemporaryDirectory(prefix="lantern-bench-") as tmp:
        print(f"building {MODEL} {QUANT} (no library) into {tmp} ...", flush=True)
        build(load_model_config(model_configs_dir() / f"{MODEL}.toml"), Path(tmp), [QUANT], compile_library=False)
        yield Path(tmp)


@contextlib.contextmanager
def serving_in_thread(models: Path, **config):
    """The real app on werkzeug's threaded server in this process; yields its base URL. The server
    fallback's engine starts only if a page asks for it (browser benchmarks never do)."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    from webapp import create_app

    class Quiet(WSGIRequestHandler):
        def log_request(self, *a, **k):
            pass

    app = create_app({"MODELS_DIR": str(models), "FALLBACK_PRELOAD": False, **config})
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        fallback = app.extensions.get("lantern_fallback")
        if fallback is not None:
            fallback.close()


def cli(prog: str, run, report, argv=None) -> None:
    """A benchmark's command line: run it, print its report, and with --json the raw numbers too."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--json", action="store_true", help="also print the raw numbers as JSON")
    args = parser.parse_args(argv or [])
    results = run()
    report(results)
    if args.json:
        print(json.dumps(results, indent=1, default=str))


def swiftshader_run(variant: Path, decode_steps: int) -> dict:
    """Stock web-llm in headless Chromium (SwiftShader) with the variant's software-adapter library: load it,
    prefill the verification prompt (verify.json), decode `decode_steps` greedy tokens. Returns load_s,
    prefill_ms, decode_ms (per token), tokens (the first from the prefill) and the manifest."""
    import time

    from playwright.sync_api import sync_playwright

    from build_pipeline.contract import VERIFY_FILE
    from build_pipeline.manifest import read_manifest
    from testing import chromium
    from testing.browser_harness.server import GREEDY, HarnessServer, harness_page

    manifest = read_manifest(variant)
    ids = json.loads((variant / VERIFY_FILE).read_text())["prompt_token_ids"]
    assert manifest.software_library is not None, "no software-adapter library in this build"
    with (
        sync_playwright() as pw,
        HarnessServer() as server,
        harness_page(server, chromium.launch(pw), timeout_ms=3_600_000) as page,
    ):
        url = server.add("bench", variant)
        lib = manifest.software_library["file"]
        start = time.perf_counter()
        page.evaluate(
            "a => window.lantern.load(a)",
            {"modelId": "bench", "modelUrl": url, "chatOpts": GREEDY, "libUrl": f"{url}/resolve/main/{lib}"},
        )
        load_s = time.perf_counter() - start
        run = page.evaluate("a => window.lantern.timeDecode(a)", {"ids": ids, "steps": decode_steps, "model": "bench"})
    return {
        "load_s": load_s,
        "prompt_tokens": len(ids),
        "prefill_ms": run["prefillMs"],
        "decode_ms": run["decodeMs"],
        "tokens": run["tokens"],
        "manifest": manifest,
    }
