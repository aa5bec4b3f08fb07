"""Proxy mode against a real OpenAI-compatible upstream process on loopback (`python -m llama_cpp.server`
on the same GGUF): same answers as the embedded engine, streaming included, and Lantern's own checks,
limits and disconnect handling still in front of it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from build_pipeline.contract import SERVER_GGUF_FILE
from testing.fallback import FRANCE, MODEL_ID, make_app, metric, read_events, running, wait_until

pytest.importorskip("uvicorn", reason="proxy tests need llama-cpp-python[server] (the test extra)")
pytestmark = pytest.mark.slow

UPSTREAM_ALIAS = "smol-upstream"
PROMPTS = [FRANCE, [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def models(smollm2_models):
    return smollm2_models


@pytest.fixture(scope="module")
def upstream(models, tmp_path_factory):
    """llama_cpp.server on the GGUF the build wrote, one thread, on a free loopback port."""
    port = _free_port()
    with open(tmp_path_factory.mktemp("upstream") / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(models / MODEL_ID / SERVER_GGUF_FILE),
                "--model_alias",
                UPSTREAM_ALIAS,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "2048",
                "--n_threads",
                "1",
                "--n_threads_batch",
                "1",
                "--verbose",
                "False",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}/v1"

        def up():
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return proc.poll() is not None  # stop waiting if it died

        try:
            assert wait_until(up, 120, 0.25) and proc.poll() is None, "llama_cpp.server did not start"
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def proxy(models, upstream):
    with running(
        make_app(
            models, FALLBACK_UPSTREAM=upstream, FALLBACK_UPSTREAM_MODEL=UPSTREAM_ALIAS, MAX_CONCURRENT=2, MAX_QUEUE=4
        )
    ) as c:
        yield c


@pytest.fixture(scope="module")
def embedded(models):
    with running(make_app(models, MAX_CONCURRENT=1)) as c:
        yield c


def test_same_answers_as_the_embedded_engine(proxy, embedded):
    for messages in PROMPTS:
        ours = embedded.chat(messages=messages, temperature=0, max_tokens=24)
        theirs = proxy.chat(messages=messages, temperature=0, max_tokens=24)
        assert theirs.status == 200, theirs.body
        assert theirs.json["model"] == MODEL_ID and theirs.json["object"] == "chat.completion"
        assert theirs.text == ours.text  # same GGUF, same chat template, same stop token, same sampling
        assert theirs.json["choices"][0]["finish_reason"] == ours.json["choices"][0]["finish_reason"]
        assert theirs.json["usage"] == ours.json["usage"]


def test_streaming_through_the_proxy(proxy):
    plain = proxy.chat(messages=FRANCE, temperature=0, max_tokens=16)
    streamed = proxy.chat(
        messages=FRANCE, temperature=0, max_tokens=16, stream=True, stream_options={"include_usage": True}
    )
    assert streamed.status == 200 and streamed.events[-1] == "[DONE]"
    chunks = [e for e in streamed.events[:-1] if e["choices"]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert len(chunks) >= 10  # token by token, not one buffered blob
    assert {c["model"] for c in chunks} == {MODEL_ID}
    assert streamed.text == plain.text
    assert streamed.events[-2]["usage"] == plain.json["usage"]


def test_lantern_checks_stay_in_front(models, upstream):
    with running(
        make_app(
            models,
            FALLBACK_UPSTREAM=upstream,
            FALLBACK_UPSTREAM_MODEL=UPSTREAM_ALIAS,
            API_KEYS="proxy-key",
            MAX_TOKENS_CAP=64,
        )
    ) as c:
        key = {"Authorization": "Bearer proxy-key"}
        assert c.chat(messages=FRANCE).status == 401
        assert c.chat(messages=FRANCE, temperature=9, headers=key).json["error"]["param"] == "temperature"
        assert c.chat(messages=FRANCE, max_tokens=65, headers=key).json["error"]["code"] == "max_tokens_too_large"
        long = c.chat(messages=[{"role": "user", "content": "word " * 2500}], headers=key)
        assert long.status == 400 and long.json["error"]["code"] == "context_length_exceeded"  # checked locally
        assert c.chat(messages=FRANCE, max_tokens=2, headers=key).status == 200
        health = next(x for x in c.get("/healthz").json["checks"] if x["name"] == "fallback")
        assert health["ok"] and health["detail"]["engine"] == "upstream" and health["detail"]["reachable"]


def test_upstream_failure_after_200_is_an_error(tmp_path, upstream):
    # No local build of this model, so Lantern cannot count tokens; llama_cpp.server then answers 200
    # and closes the stream empty on a prompt over its context. That must not look like an empty answer.
    with running(make_app(tmp_path, FALLBACK_UPSTREAM=upstream, FALLBACK_MODEL="remote-only")) as c:
        long = [{"role": "user", "content": "word " * 2500}]
        r = c.chat(model="remote-only", messages=long, max_tokens=8)
        assert r.status == 502 and r.json["error"]["code"] == "upstream_error"
        s = c.chat(model="remote-only", messages=long, max_tokens=8, stream=True)
        assert s.events[-1] == "[DONE]" and s.events[-2]["error"]["code"] == "upstream_error"


def test_upstream_down(models):
    with running(make_app(models, FALLBACK_UPSTREAM=f"http://127.0.0.1:{_free_port()}")) as c:
        r = c.chat(messages=FRANCE, max_tokens=4)
        assert r.status == 502 and r.json["error"]["code"] == "upstream_unavailable"
        assert c.get("/healthz").status == 503
        assert wait_until(lambda: metric(c.metrics(), "lantern_fallback_active_generations") == 0, 2)


def test_disconnect_through_the_proxy_frees_the_slot(models, upstream):
    with running(
        make_app(
            models, FALLBACK_UPSTREAM=upstream, FALLBACK_UPSTREAM_MODEL=UPSTREAM_ALIAS, MAX_CONCURRENT=1, MAX_QUEUE=0
        )
    ) as c:
        stream = c.open_stream(messages=FRANCE, temperature=0, max_tokens=1000)
        assert len(read_events(stream.response, 4)) == 4
        assert c.chat(messages=FRANCE, max_tokens=2).status == 429
        stream.abort()
        assert wait_until(lambda: metric(c.metrics(), "lantern_fallback_active_generations") == 0, 5)
        m = c.metrics()
        assert metric(m, "lantern_fallback_generations_total", outcome="disconnected") == 1
        time.sleep(0.5)  # the upstream notices the closed connection and frees its own model
        assert c.chat(messages=FRANCE, max_tokens=2).status == 200
