"""Chat page capability detection in headless Chromium: with WebGPU (SwiftShader) and without it."""

from __future__ import annotations

import pytest

from build_pipeline.contract import WEBLLM_DEVICE_FLOOR

pytestmark = pytest.mark.browser


def test_without_webgpu_the_page_says_why_and_downloads_nothing(serve, chromium, tiny_site_models):
    server = serve(tiny_site_models)
    s = chromium(webgpu=False)
    s.page.goto(server.url + "/")
    assert s.wait_state("unsupported") == "unsupported"

    caps = s.lantern(".capabilities")
    assert caps["webgpu"]["available"] is False
    assert caps["webgpu"]["code"] == "no-adapter"  # navigator.gpu exists, requestAdapter() gives null
    error = s.page.locator("#error")
    assert error.is_visible()
    assert "WebGPU" in error.inner_text() and "no GPU" in error.inner_text()
    assert s.page.locator("#offer-server").is_visible()
    assert s.page.locator("#privacy").inner_text() == "On this device"
    assert s.page.locator("#download-button").is_hidden()

    s.page.wait_for_timeout(500)  # anything late would show up here
    assert s.request_urls("/models/") == []
    assert server.paths("/models/") == []
    assert s.workers == []  # not even the storage verifier
    assert s.lantern(".cspViolations") == []


def test_without_navigator_gpu_at_all(serve, chromium, tiny_site_models):
    server = serve(tiny_site_models)
    s = chromium(webgpu=True, init_script="delete Navigator.prototype.gpu;")
    s.page.goto(server.url + "/")
    s.wait_state("unsupported")
    assert s.lantern(".capabilities.webgpu.code") == "no-webgpu"
    assert "does not support WebGPU" in s.page.locator("#error-message").inner_text()
    assert server.paths("/models/") == []


def test_swiftshader_is_detected_flagged_slow_and_q4f32_chosen(serve, chromium, tiny_site_models):
    server = serve(tiny_site_models)
    s = chromium(webgpu=True)
    s.page.goto(server.url + "/")
    s.wait_state("needs-download")

    gpu = s.lantern(".capabilities.webgpu")
    assert gpu["available"] is True
    assert gpu["adapter"]["isFallbackAdapter"] is True
    assert gpu["adapter"]["architecture"] == "swiftshader"
    assert gpu["software"] is True
    assert gpu["shaderF16"] is False
    assert gpu["limits"]["maxStorageBuffersPerShaderStage"] >= 10

    selection = s.lantern(".selection")
    assert selection["ok"] is True
    # Nothing saved yet: the temperature setting starts at the model's own default (0 in its config).
    assert s.page.input_value("#temperature") == "0"
    assert selection["quantization"] == "q4f32_1"  # the q4f16_1 build needs shader-f16
    assert "shader-f16" in selection["reason"]
    assert any("software renderer" in w for w in selection["warnings"])

    summary = s.page.locator("#capability-summary").inner_text()
    assert "Swiftshader" in summary and "nothing leaves this device" in summary
    assert "download" in summary
    # Detection happens before, and instead of, any download.
    assert server.paths("/models/") == []
    assert s.page.locator("#download-button").is_visible()


CHOOSER = """async ([caps, model, opts]) => {
  const { chooseVariant } = await import('/static/js/choose.js');
  const r = chooseVariant(caps, model, opts || {});
  return { ok: r.ok, quantization: r.quantization, codes: r.problems.map((p) => p.code),
           messages: r.problems.map((p) => p.message), warnings: r.warnings, reason: r.reason, summary: r.summary };
}"""

GIB = 1024**3


def _caps(features=(), limits=None, storage_available=10 * GIB, device_memory=16):
    base = {
        "maxBufferSize": GIB,
        "maxStorageBufferBindingSize": GIB,
        "maxStorageBuffersPerShaderStage": 10,
        "maxComputeWorkgroupStorageSize": 32768,
        "maxComputeInvocationsPerWorkgroup": 256,
    }
    return {
        "secureContext": True,
        "cacheApi": True,
        "subtleCrypto": True,
        "deviceMemoryGB": device_memory,
        "storage": {"quota": storage_available, "usage": 0, "available": storage_available},
        "webgpu": {
            "available": True,
            "name": "Test GPU",
            "software": False,
            "features": list(features),
            "shaderF16": "shader-f16" in features,
            "limits": {**base, **(limits or {})},
        },
    }


def _limits(model_needs: dict) -> dict:
    """What /api/models serves as a variant's required_limits: the model's needs raised to web-llm's floor."""
    return {k: max(model_needs.get(k, 0), WEBLLM_DEVICE_FLOOR.get(k, 0)) for k in {*model_needs, *WEBLLM_DEVICE_FLOOR}}


def _model(*quants, binding=64 * 1024 * 1024, download=80_000_000, memory=200_000_000):
    variants = []
    for q in quants:
        variants.append(
            {
                "id": f"m-{q}",
                "quantization": q,
                "download_bytes": download,
                "estimated_gpu_memory_bytes": memory,
                "required_features": ["shader-f16"] if "f16" in q else [],
                "required_limits": _limits({"maxStorageBufferBindingSize": binding, "maxBufferSize": binding}),
                "library": {"file": "lib.wasm", "url": "/x/lib.wasm"},
                "files": [],
            }
        )
    return {"id": "m", "name": "Model M", "variants": variants}


def test_variant_choice_and_plain_word_errors(serve, chromium, tiny_site_models):
    """Every decision branch of the page's chooser, with capability reports real devices produce."""
    server = serve(tiny_site_models)
    s = chromium(webgpu=False)
    s.page.goto(server.url + "/")
    s.wait_state("unsupported")
    choose = lambda caps, model, opts=None: s.page.evaluate(CHOOSER, [caps, model, opts])  # noqa: E731

    f16 = choose(_caps(features=["shader-f16"]), _model("q4f32_1", "q4f16_1"))
    assert f16["ok"] and f16["quantization"] == "q4f16_1" and "supports 16-bit" in f16["reason"]

    f32 = choose(_caps(), _model("q4f32_1", "q4f16_1"))
    assert f32["ok"] and f32["quantization"] == "q4f32_1" and "no 16-bit" in f32["reason"]

    only_f16 = choose(_caps(), _model("q4f16_1"))
    assert not only_f16["ok"] and only_f16["codes"] == ["f16-missing"]
    assert "shader-f16" in only_f16["messages"][0] and "32-bit" in only_f16["messages"][0]

    small = choose(
        _caps(limits={"maxStorageBufferBindingSize": 128 * 1024 * 1024}), _model("q4f32_1", binding=512 * 1024 * 1024)
    )
    assert not small["ok"] and small["codes"] == ["adapter-too-small"]
    assert "maxStorageBufferBindingSize" in small["messages"][0] and "537 MB" in small["messages"][0]

    # web-llm itself asks for 10 storage buffers per stage, whatever the model says (the server's floor).
    eight = choose(_caps(limits={"maxStorageBuffersPerShaderStage": 8}), _model("q4f32_1"))
    assert eight["codes"] == ["adapter-too-small"] and "maxStorageBuffersPerShaderStage" in eight["messages"][0]

    quota = choose(_caps(storage_available=10_000_000), _model("q4f32_1"))
    assert not quota["ok"] and quota["codes"] == ["quota-too-small"]
    assert "80 MB" in quota["messages"][0] and "10 MB" in quota["messages"][0]
    # Already-verified files count: a resumed download needs only the rest.
    resumed = choose(_caps(storage_available=10_000_000), _model("q4f32_1"), {"cachedBytes": 75_000_000})
    assert resumed["ok"]

    tight = choose(_caps(device_memory=0.25), _model("q4f32_1", memory=600_000_000))
    assert tight["ok"] and any("may not fit" in w for w in tight["warnings"])

    no_lib = _model("q4f32_1")
    no_lib["variants"][0]["library"] = None
    unbuilt = choose(_caps(), no_lib)
    assert unbuilt["ok"] and any("no WebGPU model library" in w for w in unbuilt["warnings"])

    nothing = choose(_caps(), {"id": "m", "name": "M", "variants": []})
    assert nothing["codes"] == ["no-models"]


ADAPTER_LIBRARY = """async ([variant, software]) => {
  const { forAdapter } = await import('/static/js/choose.js');
  return forAdapter(variant, software);
}"""


def test_each_adapter_gets_its_own_library(serve, chromium, tiny_site_models):
    """f32 builds carry a library for real GPUs and one for software adapters: the page keeps the one the
    server lists for its adapter kind, as the server computed it (sizes here are the server's, not sums)."""
    server = serve(tiny_site_models)
    s = chromium(webgpu=False)
    s.page.goto(server.url + "/")
    s.wait_state("unsupported")
    shard = {"path": "shard.bin", "bytes": 100, "sha256": "a", "role": "weights"}
    gpu = {"path": "gpu.wasm", "bytes": 10, "sha256": "b", "role": "library"}
    soft = {"path": "soft.wasm", "bytes": 7, "sha256": "c", "role": "library"}
    variant = {
        "id": "m-q4f32_1",
        "download_bytes": 110,
        "library": {"file": "gpu.wasm", "url": "/x/gpu.wasm"},
        "software_library": {"file": "soft.wasm", "url": "/x/soft.wasm"},
        "files": [shard, gpu],
        "adapters": {
            "hardware": {
                "library": {"file": "gpu.wasm", "url": "/x/gpu.wasm"},
                "files": [shard, gpu],
                "download_bytes": 110,
            },
            "software": {
                "library": {"file": "soft.wasm", "url": "/x/soft.wasm"},
                "files": [shard, soft],
                "download_bytes": 107,
            },
        },
    }
    hardware = s.page.evaluate(ADAPTER_LIBRARY, [variant, False])
    assert hardware["library"]["file"] == "gpu.wasm" and hardware["download_bytes"] == 110
    assert [f["path"] for f in hardware["files"]] == ["shard.bin", "gpu.wasm"]
    software = s.page.evaluate(ADAPTER_LIBRARY, [variant, True])
    assert software["library"]["file"] == "soft.wasm" and software["download_bytes"] == 107
    assert [f["path"] for f in software["files"]] == ["shard.bin", "soft.wasm"]
    assert software["software_library"] is None


def test_chooser_prefers_full_quality_and_states_the_servers_words(serve, chromium, tiny_site_models):
    """Two builds fit equally: the page takes the one the server reports as full quality (even if it is
    a larger download), and its summary carries the server's wording, not a figure it computed."""
    server = serve(tiny_site_models)
    s = chromium(webgpu=False)
    s.page.goto(server.url + "/")
    s.wait_state("unsupported")
    choose = lambda caps, model, opts=None: s.page.evaluate(CHOOSER, [caps, model, opts])  # noqa: E731

    model = _model("q4f32_1", "q4f32_asym", "q0f32")
    words = {
        "q4f32_1": (1.5, False, "≈ 50% higher perplexity than full precision"),
        "q4f32_asym": (1.0, True, "full quality"),
        "q0f32": (1.0, True, "full quality"),
    }
    for v in model["variants"]:
        ratio, full, label = words[v["quantization"]]
        v["quality"] = {"ratio": ratio, "full_quality": full, "label": label}
        v["download_bytes"] = {"q4f32_1": 80_000_000, "q4f32_asym": 100_000_000, "q0f32": 540_000_000}[
            v["quantization"]
        ]
    best = choose(_caps(), model)
    assert best["ok"] and best["quantization"] == "q4f32_asym"
    assert "full quality" in best["summary"]
    only_mlc = _model("q4f32_1")
    only_mlc["variants"][0]["quality"] = {"ratio": 1.5, "full_quality": False, "label": "SERVER WORDS"}
    worse = choose(_caps(), only_mlc)
    assert worse["ok"] and "SERVER WORDS" in worse["summary"]
    unmeasured = choose(_caps(), _model("q4f32_1"))
    assert unmeasured["ok"] and "quality" not in unmeasured["summary"]
