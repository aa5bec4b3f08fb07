"""Site routes on a real Flask app: model catalog, artifact files (MIME, ETag/304, Range, caching,
traversal), security headers, the page shell and /healthz."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from build_pipeline.contract import CHAT_CONFIG_FILE, MANIFEST_FILE, TENSOR_CACHE_FILE, WEBLLM_DEVICE_FLOOR
from testing.fixtures import copy_models
from webapp import create_app

MODEL = "tiny-llama"
WASM_MAGIC = b"\0asm\x01\0\0\0"


def app_for(models_dir: Path, **config):
    # Route tests never generate: the fallback engine process starts only if one asks for it.
    return create_app({"MODELS_DIR": str(models_dir), "TESTING": True, "FALLBACK_PRELOAD": False, **config})


@pytest.fixture
def models(tiny_site_models, tmp_path) -> Path:
    return copy_models(tiny_site_models, tmp_path / "models")


@pytest.fixture
def client(models):
    return app_for(models).test_client()


def manifest_of(models: Path, quant: str) -> dict:
    return json.loads((models / MODEL / quant / MANIFEST_FILE).read_text())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def variant(client, quant: str) -> dict:
    catalog = client.get("/api/models").get_json()
    model = next(m for m in catalog["models"] if m["id"] == MODEL)
    return next(v for v in model["variants"] if v["quantization"] == quant)


def add_library(models: Path, quant: str = "q4f32_1", name: str = "tiny-llama-q4f32_1-webgpu.wasm") -> bytes:
    """Give a variant a (stand-in) library file listed in its manifest, as a compiled build has."""
    data = WASM_MAGIC + bytes(range(256)) * 4
    vdir = models / MODEL / quant
    (vdir / name).write_bytes(data)
    manifest = manifest_of(models, quant)
    manifest["library"] = {"file": name, "profile": "test"}
    manifest["files"].append({"path": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    (vdir / MANIFEST_FILE).write_text(json.dumps(manifest))
    return data


# ------------------------------------------------------------------------------------------ /api/models
def test_models_api_describes_each_built_variant_from_its_manifest(client, models):
    response = client.get("/api/models")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    catalog = response.get_json()
    [model] = catalog["models"]
    assert model["id"] == MODEL and model["license"] == "Apache-2.0" and model["name"] == "Tiny test Llama"
    assert sorted(v["quantization"] for v in model["variants"]) == ["q4f16_1", "q4f32_1"]
    for v in model["variants"]:
        manifest = manifest_of(models, v["quantization"])
        vdir = models / MODEL / v["quantization"]
        assert v["id"] == manifest["id"]
        assert v["estimated_gpu_memory_bytes"] == manifest["estimated_gpu_memory_bytes"] > 0
        assert v["required_features"] == manifest["required_features"]
        # The device limits: the model's own needs, raised to web-llm's floor (the page checks them as given).
        assert v["required_limits"] == {
            name: max(manifest["required_limits"].get(name, 0), WEBLLM_DEVICE_FLOOR.get(name, 0))
            for name in {*manifest["required_limits"], *WEBLLM_DEVICE_FLOOR}
        }
        assert v["context_window"] == manifest["context_window"]
        assert v["library"] is None
        assert re.fullmatch(r"[0-9a-f]{16}", v["revision"])
        assert v["base_url"] == f"/models/{MODEL}/{v['quantization']}/resolve/{v['revision']}/"
        paths = [f["path"] for f in v["files"]]
        assert MANIFEST_FILE not in paths
        for name in (TENSOR_CACHE_FILE, CHAT_CONFIG_FILE, "tokenizer.json", "params_shard_0.bin"):
            assert name in paths
        for f in v["files"]:
            assert f["bytes"] == (vdir / f["path"]).stat().st_size
            assert f["sha256"] == sha256(vdir / f["path"])
        assert v["download_bytes"] == sum(f["bytes"] for f in v["files"])
    by_quant = {v["quantization"]: v for v in model["variants"]}
    assert "shader-f16" in by_quant["q4f16_1"]["required_features"]
    assert by_quant["q4f32_1"]["required_features"] == []


def test_models_api_carries_the_models_sampling_defaults(models):
    chat = json.loads((models / MODEL / "q4f32_1" / CHAT_CONFIG_FILE).read_text())
    v = variant(app_for(models).test_client(), "q4f32_1")
    assert v["generation"]["temperature"] == chat["temperature"] == 0.0  # the tiny config's [generation]
    assert v["generation"]["top_p"] == chat["top_p"] == 1.0


def test_models_api_reports_library_url_when_built_with_one(models):
    add_library(models)
    v = variant(app_for(models).test_client(), "q4f32_1")
    assert v["library"]["file"].endswith(".wasm")
    assert v["library"]["url"] == v["base_url"] + v["library"]["file"]


def test_models_api_skips_staging_dirs_and_broken_manifests(models):
    shutil.copytree(models / MODEL / "q4f32_1", models / MODEL / ".q4f32_1.tmp-abc")
    broken = models / MODEL / "q0f32"
    broken.mkdir()
    (broken / MANIFEST_FILE).write_text("{not json")
    app = app_for(models)
    catalog = app.test_client().get("/api/models").get_json()
    assert sorted(v["quantization"] for v in catalog["models"][0]["variants"]) == ["q4f16_1", "q4f32_1"]
    health = app.test_client().get("/healthz").get_json()
    artifacts = next(c for c in health["checks"] if c["name"] == "artifacts")
    assert artifacts["detail"]["unreadable_manifests"] == [f"{MODEL}/q0f32"]


def test_models_api_with_no_models_is_an_empty_list(tmp_path):
    assert app_for(tmp_path).test_client().get("/api/models").get_json() == {"models": []}


# ------------------------------------------------------------------------------------------ artifact files
@pytest.mark.parametrize(
    "name, mime",
    [
        (TENSOR_CACHE_FILE, "application/json"),
        (CHAT_CONFIG_FILE, "application/json"),
        ("tokenizer.json", "application/json"),
        ("params_shard_0.bin", "application/octet-stream"),
        (MANIFEST_FILE, "application/json"),
    ],
)
def test_artifact_files_have_exact_bytes_and_mime_type(client, models, name, mime):
    v = variant(client, "q4f32_1")
    response = client.get(v["base_url"] + name)
    assert response.status_code == 200
    assert response.mimetype == mime
    assert response.data == (models / MODEL / "q4f32_1" / name).read_bytes()
    assert int(response.headers["Content-Length"]) == len(response.data)


def test_model_library_is_served_as_application_wasm(models):
    data = add_library(models)
    client = app_for(models).test_client()
    v = variant(client, "q4f32_1")
    response = client.get(v["library"]["url"])
    assert response.status_code == 200
    assert response.mimetype == "application/wasm"
    assert response.data == data


def test_content_addressed_revision_is_immutable_and_main_revalidates(client, models):
    v = variant(client, "q4f32_1")
    pinned = client.get(v["base_url"] + "params_shard_0.bin")
    assert "immutable" in pinned.headers["Cache-Control"]
    assert "max-age=31536000" in pinned.headers["Cache-Control"]
    for url in (
        f"/models/{MODEL}/q4f32_1/resolve/main/params_shard_0.bin",
        f"/models/{MODEL}/q4f32_1/params_shard_0.bin",
    ):
        current = client.get(url)
        assert current.status_code == 200
        assert current.headers["Cache-Control"] == "no-cache"
        assert current.data == pinned.data


def test_strong_etag_is_the_manifest_sha256_and_if_none_match_gives_304(client, models):
    v = variant(client, "q4f32_1")
    url = v["base_url"] + "params_shard_0.bin"
    response = client.get(url)
    digest = sha256(models / MODEL / "q4f32_1" / "params_shard_0.bin")
    assert response.headers["ETag"] == f'"{digest}"'  # strong: no W/ prefix
    again = client.get(url, headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304
    assert again.data == b""
    assert client.get(url, headers={"If-None-Match": '"something-else"'}).status_code == 200


def test_range_requests(client, models):
    v = variant(client, "q4f32_1")
    url = v["base_url"] + "params_shard_0.bin"
    data = (models / MODEL / "q4f32_1" / "params_shard_0.bin").read_bytes()
    n = len(data)
    assert client.get(url).headers["Accept-Ranges"] == "bytes"

    first = client.get(url, headers={"Range": "bytes=0-99"})
    assert first.status_code == 206
    assert first.headers["Content-Range"] == f"bytes 0-99/{n}"
    assert first.data == data[:100]

    tail = client.get(url, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.data == data[-10:]

    middle = client.get(url, headers={"Range": f"bytes={n // 2}-"})
    assert middle.status_code == 206 and middle.data == data[n // 2 :]

    beyond = client.get(url, headers={"Range": f"bytes={n}-{n + 10}"})
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{n}"

    # If-Range with the current ETag honours the range; with a stale one the whole file comes back.
    etag = client.get(url).headers["ETag"]
    assert client.get(url, headers={"Range": "bytes=0-9", "If-Range": etag}).status_code == 206
    stale = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert stale.status_code == 200 and stale.data == data


def test_head_gives_length_without_body(client):
    v = variant(client, "q4f32_1")
    response = client.head(v["base_url"] + "params_shard_0.bin")
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) > 0
    assert response.data == b""


def test_unknown_and_stale_revisions_are_404(models):
    app = app_for(models)
    client = app.test_client()
    old = variant(client, "q4f32_1")
    assert client.get(f"/models/{MODEL}/q4f32_1/resolve/0123456789abcdef/params_shard_0.bin").status_code == 404
    # A rebuild (new manifest) gets a new revision; the old one must stop resolving.
    manifest_path = models / MODEL / "q4f32_1" / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest["rebuilt"] = True
    manifest_path.write_text(json.dumps(manifest))
    new = variant(client, "q4f32_1")
    assert new["revision"] != old["revision"]
    assert client.get(old["base_url"] + "params_shard_0.bin").status_code == 404
    assert client.get(new["base_url"] + "params_shard_0.bin").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/models/../../../etc/passwd",
        "/models/tiny-llama/q4f32_1/..%2f..%2f..%2fetc%2fpasswd",
        "/models/tiny-llama/q4f32_1/resolve/main/..%2flantern-manifest.json",
        "/models/tiny-llama/q4f32_1/resolve/main/%2e%2e/%2e%2e/tiny-llama.toml",
        "/models/tiny-llama/..%2f..%2fhf/q4f32_1/config.json",
        "/models/tiny-llama/q4f32_1/resolve/main/%2fetc%2fpasswd",
        "/models/tiny-llama/q4f32_1/resolve/main/secret.txt",
        "/models/tiny-llama/q4f32_1/resolve/main/.hidden",
        "/models/tiny-llama/.q4f32_1.tmp-abc/params_shard_0.bin",
        "/models/tiny-llama/q9f99_9/params_shard_0.bin",
        "/models/no-such-model/q4f32_1/params_shard_0.bin",
        "/models/tiny-llama/q4f32_1/resolve/main/params_shard_99.bin",
    ],
)
def test_traversal_and_unlisted_files_are_404(models, path):
    vdir = models / MODEL / "q4f32_1"
    (vdir / "secret.txt").write_text("not in the manifest")
    (vdir / ".hidden").write_text("not in the manifest")
    shutil.copytree(vdir, models / MODEL / ".q4f32_1.tmp-abc", ignore=shutil.ignore_patterns("*.bin"))
    (models / MODEL / ".q4f32_1.tmp-abc" / "params_shard_0.bin").write_bytes(b"staged")
    client = app_for(models).test_client()
    response = client.get(path)
    assert response.status_code == 404, path
    assert b"not in the manifest" not in response.data and b"root:" not in response.data


def test_listed_file_missing_on_disk_is_404_not_500(models):
    (models / MODEL / "q4f32_1" / "tokenizer.json").unlink()
    client = app_for(models).test_client()
    assert client.get(variant(client, "q4f32_1")["base_url"] + "tokenizer.json").status_code == 404


# ------------------------------------------------------------------------------------------ headers + page
def _csp(response) -> dict:
    policy = {}
    for part in response.headers["Content-Security-Policy"].split(";"):
        name, *values = part.split()
        policy[name] = values
    return policy


def test_security_headers_on_every_kind_of_response(client):
    v = variant(client, "q4f32_1")
    shard = v["base_url"] + "params_shard_0.bin"
    etag = client.get(shard).headers["ETag"]
    responses = {
        "page": client.get("/"),
        "api": client.get("/api/models"),
        "artifact": client.get(shard),
        "not-modified": client.get(shard, headers={"If-None-Match": etag}),
        "partial": client.get(shard, headers={"Range": "bytes=0-1"}),
        "not-found": client.get("/models/nope/nope/nope"),
        "static": client.get("/static/js/app.js"),
        "health": client.get("/healthz"),
    }
    for kind, response in responses.items():
        h = response.headers
        assert h["X-Content-Type-Options"] == "nosniff", kind
        assert h["Referrer-Policy"] == "no-referrer", kind
        policy = _csp(response)
        assert policy["default-src"] == ["'self'"], kind
        assert policy["script-src"] == ["'self'", "'wasm-unsafe-eval'"], kind
        assert policy["worker-src"] == ["'self'", "blob:"], kind  # blob: for wllama's own workers (CPU tier)
        # Cross-origin isolated (wasm threads for the CPU tier), and nothing here is embeddable cross-origin.
        assert h["Cross-Origin-Opener-Policy"] == "same-origin", kind
        assert h["Cross-Origin-Embedder-Policy"] == "require-corp", kind
        assert h["Cross-Origin-Resource-Policy"] == "same-origin", kind
        assert policy["connect-src"] == ["'self'"], kind
        assert policy["object-src"] == ["'none'"], kind
        joined = h["Content-Security-Policy"]
        assert "unsafe-inline" not in joined and "'unsafe-eval'" not in joined and "*" not in joined, kind


class _PageParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts, self.inline_scripts, self.inline_styles, self.style_blocks = [], 0, 0, 0
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "style" in attrs or any(name.startswith("on") for name in attrs):
            self.inline_styles += 1
        if tag == "script":
            self._in_script = True
            if attrs.get("src"):
                self.scripts.append(attrs)
        if tag == "style":
            self.style_blocks += 1

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.inline_scripts += 1


def test_page_shell_has_no_inline_script_or_style(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    parser = _PageParser()
    parser.feed(response.get_data(as_text=True))
    assert parser.inline_scripts == 0 and parser.inline_styles == 0 and parser.style_blocks == 0
    assert [s["src"] for s in parser.scripts] == ["/static/js/app.js"]
    assert all(s.get("type") == "module" for s in parser.scripts)
    for path in ("/static/js/app.js", "/static/js/worker.js", "/static/css/app.css", "/static/favicon.svg"):
        assert client.get(path).status_code == 200, path
    assert client.get("/static/js/app.js").mimetype in ("text/javascript", "application/javascript")


def test_static_js_uses_no_inner_html_or_eval():
    """The page builds DOM with textContent only; model output must never be parsed as HTML."""
    static = Path(__file__).resolve().parents[2] / "static" / "js"
    for path in static.glob("*.js"):
        # Comments may name the APIs they avoid; only code counts.
        source = re.sub(r"(^|\s)//.*$", "", path.read_text(), flags=re.M)
        for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert banned not in source, f"{path.name} uses {banned}"


# ------------------------------------------------------------------------------------------ /healthz
def test_healthz_ok_when_artifacts_readable(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    artifacts = next(c for c in body["checks"] if c["name"] == "artifacts")
    assert artifacts["ok"] and artifacts["detail"]["variants"] == 2
    assert response.headers["Cache-Control"] == "no-store"


def test_healthz_503_when_artifacts_dir_unreadable(tmp_path):
    response = app_for(tmp_path / "does-not-exist").test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    artifacts = next(c for c in body["checks"] if c["name"] == "artifacts")
    assert artifacts["ok"] is False and "error" in artifacts["detail"]


def test_healthz_includes_checks_registered_by_other_parts(models):
    app = app_for(models)
    checks = app.extensions.setdefault("lantern_health_checks", [])
    checks.append(lambda: ("engine", True, {"state": "ready"}))
    client = app.test_client()
    body = client.get("/healthz").get_json()
    assert {"name": "engine", "ok": True, "detail": {"state": "ready"}} in body["checks"]

    checks.append(lambda: ("queue", False, {"why": "loading"}))
    response = client.get("/healthz")
    assert response.status_code == 503
    assert {"name": "queue", "ok": False, "detail": {"why": "loading"}} in response.get_json()["checks"]

    checks.pop()

    def broken():
        raise RuntimeError("probe exploded")

    checks.append(broken)
    response = client.get("/healthz")
    assert response.status_code == 503
    failed = next(c for c in response.get_json()["checks"] if c["name"] == "broken")
    assert "probe exploded" in failed["detail"]["error"]


def test_healthz_503_when_page_engine_bundle_missing(models, tmp_path):
    app = app_for(models, WEB_LLM_BUNDLE=tmp_path / "missing" / "index.js")
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    bundle = next(c for c in response.get_json()["checks"] if c["name"] == "web_llm_bundle")
    assert bundle["ok"] is False


# ------------------------------------------------------------------------------------------ on the wire
def test_real_http_range_and_headers_over_loopback(serve, models):
    server = serve(models)
    with urllib.request.urlopen(server.url + "/api/models") as r:
        v = next(x for x in json.load(r)["models"][0]["variants"] if x["quantization"] == "q4f32_1")
    url = server.url + v["base_url"] + "params_shard_0.bin"
    request = urllib.request.Request(url, headers={"Range": "bytes=10-19"})
    with urllib.request.urlopen(request) as r:
        assert r.status == 206
        assert r.read() == (models / MODEL / "q4f32_1" / "params_shard_0.bin").read_bytes()[10:20]
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert "wasm-unsafe-eval" in r.headers["Content-Security-Policy"]
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server.url + "/models/tiny-llama/q4f32_1/resolve/main/..%2f..%2ftiny-llama.toml")
    assert err.value.code == 404


def test_quality_wording_is_derived_by_the_server():
    """The page shows these words as they are (static/js/choose.js does not compute quality)."""
    from webapp.quality import describe

    assert describe(None) is None and describe({"perplexity": 3.0}) is None
    full = describe({"ratio": 1.0004, "perplexity": 26.2, "reference_perplexity": 26.19, "eval_tokens": 2079})
    assert full["full_quality"] and full["label"] == "full quality" and full["eval_tokens"] == 2079
    assert describe({"ratio": 1.01})["label"] == "full quality"
    worse = describe({"ratio": 1.5})
    assert not worse["full_quality"] and worse["label"] == "≈ 50% higher perplexity than full precision"
    assert describe({"ratio": 1.012})["label"] == "≈ 1% higher perplexity than full precision"


def test_models_api_states_each_variants_measured_quality(models):
    """A manifest's measured quality reaches the page with the server's wording; none stays None."""
    manifest = manifest_of(models, "q4f32_1")
    assert manifest["quality"] is None  # built without a library: nothing was measured
    assert variant(app_for(models).test_client(), "q4f32_1")["quality"] is None
    manifest["quality"] = {"perplexity": 39.3, "reference_perplexity": 26.2, "ratio": 1.5, "eval_tokens": 2079}
    (models / MODEL / "q4f32_1" / MANIFEST_FILE).write_text(json.dumps(manifest))
    q = variant(app_for(models).test_client(), "q4f32_1")["quality"]
    assert q["ratio"] == 1.5 and not q["full_quality"]
    assert q["label"] == "≈ 50% higher perplexity than full precision"
