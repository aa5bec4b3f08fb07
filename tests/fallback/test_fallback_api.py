"""The fallback's OpenAI-compatible API on the real SmolLM2 GGUF, over a real socket."""

from __future__ import annotations

import pytest

from testing.fallback import FRANCE, MODEL_ID, make_app, metric, running, wait_for_engine


@pytest.fixture(scope="module")
def models(smollm2_models):
    return smollm2_models


@pytest.fixture(scope="module")
def client(models):
    with running(make_app(models, MAX_CONCURRENT=1)) as c:
        yield c


def test_models_list_and_lookup(client):
    r = client.get("/v1/models")
    assert r.status == 200
    assert r.json["object"] == "list"
    assert [m["id"] for m in r.json["data"]] == [MODEL_ID]
    assert client.get(f"/v1/models/{MODEL_ID}").json["id"] == MODEL_ID
    # The page may name the variant it would have run locally.
    assert client.get(f"/v1/models/{MODEL_ID}-q4f32_1").status == 200
    missing = client.get("/v1/models/gpt-4")
    assert missing.status == 404 and missing.json["error"]["code"] == "model_not_found"


def test_non_streaming_completion_has_usage(client, models):
    r = client.chat(messages=FRANCE, temperature=0, max_tokens=24)
    assert r.status == 200, r.body
    body = r.json
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == MODEL_ID
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["completion_tokens"] <= 24
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # The prompt is the browser build's: its conv_template and tokenizer.json, cut into web-llm's pieces.
    from build_pipeline.compiler.verify import prompt_token_ids

    expected, _, _ = prompt_token_ids(models / MODEL_ID / "q4f32_1", FRANCE[0]["content"])
    assert usage["prompt_tokens"] == len(expected)


def test_streaming_matches_non_streaming(client):
    plain = client.chat(messages=FRANCE, temperature=0, max_tokens=20)
    streamed = client.chat(
        messages=FRANCE, temperature=0, max_tokens=20, stream=True, stream_options={"include_usage": True}
    )
    assert streamed.status == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.headers["cache-control"] == "no-cache"
    events = streamed.events
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == plain.json["choices"][0]["finish_reason"]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert streamed.text == plain.text
    usage = events[-2]["usage"]
    assert events[-2]["choices"] == [] and usage == plain.json["usage"]


def test_stops_at_end_of_turn_token(client):
    r = client.chat(messages=[{"role": "user", "content": "Say hello."}], temperature=0, max_tokens=200)
    assert r.status == 200
    assert r.json["choices"][0]["finish_reason"] == "stop"
    assert r.json["usage"]["completion_tokens"] < 200
    assert "<|im_end|>" not in r.text and "<|im_start|>" not in r.text


def test_stop_sequences_cut_the_answer(client):
    full = client.chat(messages=FRANCE, temperature=0, max_tokens=24).text
    cut_at = full.index(",")  # the greedy answer lists places separated by commas
    for stream in (False, True):
        r = client.chat(messages=FRANCE, temperature=0, max_tokens=24, stop=[",", "never-appears"], stream=stream)
        assert r.text == full[:cut_at]
        final = r.events[-2] if stream else r.json
        assert final["choices"][0]["finish_reason"] == "stop"


def test_seed_makes_sampling_repeatable(client):
    def sample(seed):
        return client.chat(messages=FRANCE, temperature=1.0, top_p=0.95, seed=seed, max_tokens=16).text

    assert sample(1234) == sample(1234)
    assert len({sample(s) for s in (1, 2, 3, 4)}) > 1


def test_multi_turn_with_system_message_and_text_parts(client):
    r = client.chat(
        messages=[
            {"role": "system", "content": "You answer in one word."},
            {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Another one?"},
        ],
        temperature=0,
        max_tokens=8,
    )
    assert r.status == 200 and r.json["usage"]["prompt_tokens"] > 20


def test_health_and_metrics_report_the_engine(client):
    client.chat(messages=FRANCE, temperature=0, max_tokens=4)
    health = client.get("/healthz")
    assert health.status == 200
    fallback = next(c for c in health.json["checks"] if c["name"] == "fallback")
    assert fallback["ok"] and fallback["detail"]["state"] == "ready"
    assert fallback["detail"]["engine"] == "llama.cpp" and fallback["detail"]["model"] == MODEL_ID
    m = client.metrics()
    assert metric(m, "lantern_fallback_requests_total", endpoint="/v1/chat/completions", status="200") >= 1
    assert metric(m, "lantern_fallback_completion_tokens_total") >= 4
    assert metric(m, "lantern_fallback_prompt_tokens_total") >= 30
    assert metric(m, "lantern_fallback_time_to_first_token_seconds_count") >= 1
    assert metric(m, "lantern_fallback_request_duration_seconds_count", endpoint="/v1/chat/completions") >= 1
    assert metric(m, "lantern_fallback_engine_ready") == 1
    assert metric(m, "lantern_fallback_queue_depth") == 0
    assert metric(m, "lantern_fallback_active_generations") == 0


def test_engine_runs_in_its_own_process_started_with_the_site(models):
    import os

    app = make_app(models)
    engine = app.extensions["lantern_fallback"].engine
    try:
        assert engine.state in ("starting", "ready")  # started by create_app, loading in the background
        assert wait_for_engine(app) == "ready"
        ok, detail = engine.status()
        assert ok and detail["isolated"] and detail["pid"] != os.getpid() and detail["restarts"] == 0
        # The portable build: no AMX, no AVX-512, no native tuning (docs/fallback.md, Makefile).
        assert "AMX_INT8 = 1" not in detail["cpu_features"] and "AVX512 = 1" not in detail["cpu_features"]
    finally:
        engine.close()
    assert engine.state == "stopped"


def test_engine_starts_on_first_use_without_preload(models):
    app = make_app(models, FALLBACK_PRELOAD=False)
    with running(app) as c:
        assert app.extensions["lantern_fallback"].engine.state == "idle"
        assert next(x for x in c.get("/healthz").json["checks"] if x["name"] == "fallback")["ok"]
        r = c.chat(messages=FRANCE, temperature=0, max_tokens=2)  # waits for the engine to load
        assert r.status == 200
        assert app.extensions["lantern_fallback"].engine.state == "ready"


def test_missing_gguf_fails_with_a_reason_and_the_site_keeps_serving(models, tmp_path):
    broken = make_app(models, FALLBACK_GGUF=str(tmp_path / "missing.gguf"))
    with running(broken) as c:
        assert c.get("/healthz").status == 503
        r = c.chat(messages=FRANCE, max_tokens=2)
        assert r.status == 503 and r.json["error"]["code"] == "model_unavailable"
        check = next(x for x in c.get("/healthz").json["checks"] if x["name"] == "fallback")
        assert check["detail"]["state"] == "failed" and "missing.gguf" in check["detail"]["error"]
        assert c.get("/").status == 200 and c.get("/api/models").status == 200


def test_fallback_can_be_disabled(models, monkeypatch):
    monkeypatch.setenv("LANTERN_FALLBACK_ENABLED", "0")
    with running(make_app(models)) as c:
        assert c.get("/v1/models").status == 404
        assert c.request("POST", "/v1/chat/completions", {"messages": FRANCE}).status in (404, 405)
        assert c.get("/metrics").status == 404
        check = next(x for x in c.get("/healthz").json["checks"] if x["name"] == "fallback")
        assert check == {"name": "fallback", "ok": True, "detail": {"enabled": False}}
