"""The emcc-built TVM web runtime and model-library link, checked against the tvmjs runtime
that web-llm 0.2.86 bundles (same JS, same WebGPU path, headless Chromium + SwiftShader).

The first run compiles the runtime (~1.5-2 min) into <cache>/wasm-runtime/; later runs reuse it,
and each run links the tiny model once (~25-50 s of wasm-opt on 2 shared cores).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import relax as R
from tvm.target import Target

from build_pipeline import paths
from build_pipeline.compiler import wasm_runtime as wr

WEBGPU_WASM = Target({"kind": "webgpu"}, host={"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"})


@tvm.script.ir_module
class Tiny:
    @R.function
    def add(x: R.Tensor((64,), "float32"), y: R.Tensor((64,), "float32")):
        with R.dataflow():
            z = R.add(x, y)
            R.output(z)
        return z

    @R.function
    def mm(a: R.Tensor((8, 16), "float32"), b: R.Tensor((16, 4), "float32"), bias: R.Tensor((4,), "float32")):
        with R.dataflow():
            c = R.add(R.matmul(a, b), bias)
            R.output(c)
        return c


# Bound as a constant so the VM executable's constant pool (tensor deserialization) is exercised.
BIAS = np.array([0.5, -1.0, 2.0, 0.25], dtype="float32")


def _webllm_lib() -> Path | None:
    """web-llm's lib/ dir: $LANTERN_WEBLLM_DIR or the repo's node_modules (make install)."""
    for root in (os.environ.get("LANTERN_WEBLLM_DIR"), paths.REPO_ROOT / "node_modules/@mlc-ai/web-llm"):
        if root and (Path(root) / "lib" / "index.js.map").is_file():
            return Path(root) / "lib"
    return None


def _bundled_tvmjs() -> str:
    """The @mlc-ai/web-runtime source web-llm's index.js inlines (taken from its source map)."""
    lib = _webllm_lib()
    if lib is None:
        pytest.skip("web-llm not installed: run `make install` (npm ci) or set LANTERN_WEBLLM_DIR")
    smap = json.loads((lib / "index.js.map").read_text())
    for name, text in zip(smap["sources"], smap["sourcesContent"], strict=True):
        if name.endswith("@mlc-ai/web-runtime/lib/index.js"):
            return text
    raise AssertionError("web-llm's source map no longer contains @mlc-ai/web-runtime")


@pytest.fixture(scope="module")
def runtime() -> list[Path]:
    return wr.ensure_runtime(paths.cache_dir())


@pytest.fixture(scope="module")
def model_wasm(runtime, tmp_path_factory) -> Path:
    mod = relax.transform.BindParams("mm", {"bias": BIAS})(Tiny)
    ex = tvm.compile(relax.get_default_pipeline(WEBGPU_WASM)(mod), target=WEBGPU_WASM)
    out = tmp_path_factory.mktemp("lib") / "tiny-webgpu.wasm"
    start = time.monotonic()
    wr.link_model_library(ex, out, paths.cache_dir())
    print(f"link: {time.monotonic() - start:.1f}s, {out.stat().st_size / 1e6:.2f} MB")
    return out


def test_runtime_cache_is_complete_and_reused(runtime):
    assert [p.name for p in runtime] == [f"{u}.o" for u in wr.RUNTIME_UNITS]
    assert all(p.stat().st_size > 0 and p.read_bytes()[:4] == b"\0asm" for p in runtime)
    cache = runtime[0].parent
    assert json.loads((cache / "build.json").read_text())["apache-tvm"] == tvm.__version__
    assert not [p for p in cache.parent.iterdir() if ".tmp-" in p.name], "half-built cache left behind"
    start = time.monotonic()
    assert wr.ensure_runtime(paths.cache_dir()) == runtime
    assert time.monotonic() - start < 10, "cached runtime was rebuilt"


def test_library_exports_what_tvmjs_calls(model_wasm):
    imports, exports = wr.wasm_interface(model_wasm)
    assert exports >= wr.REQUIRED_EXPORTS
    assert {n for _, n in imports} <= set().union(*wr.WEBLLM_IMPORTS.values())
    assert ("env", "TVMFFIWasmSafeCall") in imports  # JS callbacks come from tvmjs' Environment
    wr.check_interface(model_wasm)


def test_interface_constants_match_the_bundled_runtime(model_wasm):
    """If web-llm is upgraded, this shows which imports/exports its runtime now expects."""
    js = _bundled_tvmjs()
    glue = re.search(r"var wasmImports=\{([^}]*)\}", js)
    assert glue, "emscripten glue not found in bundled tvmjs"
    provided = {kv.split(":")[0] for kv in glue.group(1).split(",")}
    assert provided == set(wr._GLUE_IMPORTS)
    ts_runtime = js.replace(glue.group(0), "")
    called = set(re.findall(r"exports\)?\s*\.\s*(TVMFFI\w+|TVMWasm\w+|memory)\b", ts_runtime))
    assert called and called <= wr.REQUIRED_EXPORTS
    assert called <= wr.wasm_interface(model_wasm)[1]


PAGE = """<!doctype html><html><head><meta charset="utf-8"><script src="tvmjs.js"></script></head>
<body><script type="module">
async function runOnce(inputs, log) {
  const wasm = await (await fetch("model.wasm")).arrayBuffer();
  // exactly how web-llm 0.2.86 loads a model library
  const tvm = await tvmjs.instantiate(new Uint8Array(wasm).buffer, tvmjs.createPolyfillWASI(),
                                      (m) => log.push(String(m)));
  const gpu = await tvmjs.detectGPUDevice();
  if (!gpu) throw new Error("no WebGPU adapter (is --enable-unsafe-webgpu set?)");
  tvm.initWebGPU(gpu.device);
  const dev = tvm.webgpu();
  tvm.beginScope();
  const vm = tvm.detachFromCurrentScope(tvm.createVirtualMachine(dev));
  await tvm.asyncLoadWebGPUPipelines(vm.getInternalModule());
  const toGPU = ([data, shape]) => {
    const g = tvm.empty(shape, "float32", dev);
    g.copyFrom(tvm.empty(shape, "float32", tvm.cpu()).copyFrom(data));
    return g;
  };
  const call = async (fname, args) => {
    const res = vm.getFunction(fname)(...args.map(toGPU));
    const cpu = tvm.empty(res.shape, "float32", tvm.cpu());
    cpu.copyFrom(res);
    await dev.sync();
    return {shape: res.shape, data: Array.from(cpu.toArray())};
  };
  const out = {adapter: gpu.adapterInfo.vendor, missing: String(vm.getFunction("no_such_function"))};
  for (const [fname, args] of Object.entries(inputs)) out[fname] = await call(fname, args);
  try {  // a failing shape check must surface as a JS Error and leave the instance usable
    vm.getFunction("add")(toGPU([new Array(32).fill(0), [32]]), toGPU([new Array(32).fill(0), [32]]));
    out.error = "no error";
  } catch (e) { out.error = String(e && e.message); }
  out.addAfterError = await call("add", inputs.add);
  tvm.endScope();
  return out;
}
window.runTest = async (inputs, times) => {
  const log = [], runs = [];
  for (let i = 0; i < times; ++i) runs.push(await runOnce(inputs, log));  // 2nd = web-llm reload
  return {runs, log};
};
window.ready = true;
</script></body></html>
"""


@pytest.mark.browser
def test_runs_webgpu_kernels_in_chromium(model_wasm, tmp_path, _browsers):
    (tmp_path / "tvmjs.js").write_text(_bundled_tvmjs())
    shutil.copy(model_wasm, tmp_path / "model.wasm")
    (tmp_path / "index.html").write_text(PAGE)

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 64), dtype=np.float32)
    a = rng.standard_normal((8, 16), dtype=np.float32)
    b = rng.standard_normal((16, 4), dtype=np.float32)
    inputs = {
        "add": [[x.tolist(), [64]], [y.tolist(), [64]]],
        "mm": [[a.ravel().tolist(), [8, 16]], [b.ravel().tolist(), [16, 4]]],
    }

    handler = functools.partial(
        type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}), directory=str(tmp_path)
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    errors: list[str] = []
    try:
        context = _browsers(True).new_context()
        try:
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{server.server_port}/index.html")
            page.wait_for_function("window.ready === true", timeout=30_000)
            result = page.evaluate(
                "([i, n]) => Promise.race([runTest(i, n), new Promise((_, rej) =>"
                " setTimeout(() => rej(new Error('timed out after 60 s')), 60000))])",
                [inputs, 2],
            )
        finally:
            context.close()
    finally:
        server.shutdown()

    assert not errors, errors
    assert len(result["runs"]) == 2
    for run in result["runs"]:
        assert run["missing"] in ("undefined", "null")  # web-llm probes optional functions this way
        assert run["add"]["shape"] == [64]
        np.testing.assert_allclose(run["add"]["data"], x + y, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(run["addAfterError"]["data"], x + y, rtol=1e-6, atol=1e-6)
        assert run["mm"]["shape"] == [8, 4]
        np.testing.assert_allclose(np.reshape(run["mm"]["data"], (8, 4)), a @ b + BIAS, rtol=1e-4, atol=1e-4)
        assert "mismatch" in run["error"], run["error"]


def test_missing_emcc_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(wr.WasmBuildError, match=r"apt-get install -y emscripten"):
        wr.ensure_runtime(tmp_path)


def test_non_system_lib_is_rejected_with_the_fix(runtime, tmp_path):
    ex = relax.build(Tiny, target="llvm")  # x86 host, not a system library
    with pytest.raises(wr.WasmBuildError, match="not a system library") as info:
        wr.link_model_library(ex, tmp_path / "x.wasm", paths.cache_dir())
    assert "wasm32-unknown-unknown-wasm" in str(info.value)
    assert not list(tmp_path.iterdir())


def test_link_failure_shows_emcc_output(runtime, tmp_path):
    # A system-lib executable for the *x86* host: export works, the wasm link must fail loudly.
    ex = relax.build(Tiny, target="llvm", system_lib=True)
    out = tmp_path / "bad.wasm"
    with pytest.raises(wr.WasmBuildError, match=r"could not link.*emcc exit") as info:
        wr.link_model_library(ex, out, paths.cache_dir())
    assert "wasm-ld" in str(info.value) or "error" in str(info.value).lower()
    assert "fix:" in str(info.value)
    assert not out.exists() and not list(tmp_path.glob(".bad.wasm*"))
