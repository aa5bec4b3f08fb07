"""Every bad input gets a 4xx with an OpenAI-style error body, before any slot is taken."""

from __future__ import annotations

import json

import pytest

from testing.fallback import FRANCE, MODEL_ID, make_app, metric, running

USER = [{"role": "user", "content": "hi"}]

# (name, body, status, code, param)
BAD_BODIES = [
    ("messages missing", {"model": MODEL_ID}, 400, "missing_required_parameter", "messages"),
    ("messages not a list", {"messages": "hi"}, 400, "invalid_type", "messages"),
    ("messages empty", {"messages": []}, 400, "empty_array", "messages"),
    ("message not an object", {"messages": ["hi"]}, 400, "invalid_type", "messages[0]"),
    ("role missing", {"messages": [{"content": "hi"}]}, 400, "invalid_type", "messages[0].role"),
    ("role unknown", {"messages": [{"role": "wizard", "content": "hi"}]}, 400, "invalid_value", "messages[0].role"),
    ("content missing", {"messages": [{"role": "user"}]}, 400, "missing_required_parameter", "messages[0].content"),
    ("content a number", {"messages": [{"role": "user", "content": 5}]}, 400, "invalid_type", "messages[0].content"),
    (
        "content an image",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        400,
        "invalid_type",
        "messages[0].content",
    ),
    (
        "system not first",
        {"messages": USER + [{"role": "system", "content": "x"}] + USER},
        400,
        "invalid_value",
        "messages[1].role",
    ),
    (
        "last not user",
        {"messages": USER + [{"role": "assistant", "content": "x"}]},
        400,
        "invalid_value",
        "messages[1].role",
    ),
    ("model not a string", {"messages": USER, "model": 7}, 400, "invalid_type", "model"),
    ("temperature a string", {"messages": USER, "temperature": "hot"}, 400, "invalid_type", "temperature"),
    ("temperature too high", {"messages": USER, "temperature": 2.5}, 400, "invalid_value", "temperature"),
    ("temperature a boolean", {"messages": USER, "temperature": True}, 400, "invalid_type", "temperature"),
    ("top_p zero", {"messages": USER, "top_p": 0}, 400, "invalid_value", "top_p"),
    ("top_p above one", {"messages": USER, "top_p": 1.5}, 400, "invalid_value", "top_p"),
    ("max_tokens a string", {"messages": USER, "max_tokens": "10"}, 400, "invalid_type", "max_tokens"),
    ("max_tokens a float", {"messages": USER, "max_tokens": 10.5}, 400, "invalid_type", "max_tokens"),
    ("max_tokens zero", {"messages": USER, "max_tokens": 0}, 400, "invalid_value", "max_tokens"),
    ("max_tokens over the cap", {"messages": USER, "max_tokens": 5000}, 400, "max_tokens_too_large", "max_tokens"),
    ("stop a number", {"messages": USER, "stop": 3}, 400, "invalid_type", "stop"),
    ("stop too many", {"messages": USER, "stop": ["a", "b", "c", "d", "e"]}, 400, "invalid_value", "stop"),
    ("stop empty string", {"messages": USER, "stop": [""]}, 400, "invalid_value", "stop"),
    ("seed a float", {"messages": USER, "seed": 1.5}, 400, "invalid_type", "seed"),
    ("stream a string", {"messages": USER, "stream": "yes"}, 400, "invalid_type", "stream"),
    ("stream_options not an object", {"messages": USER, "stream_options": True}, 400, "invalid_type", "stream_options"),
    ("n above one", {"messages": USER, "n": 2}, 400, "unsupported_value", "n"),
    ("tools", {"messages": USER, "tools": [{"type": "function"}]}, 400, "unsupported_parameter", "tools"),
    (
        "json mode",
        {"messages": USER, "response_format": {"type": "json_object"}},
        400,
        "unsupported_value",
        "response_format",
    ),
    ("unknown model", {"messages": USER, "model": "gpt-4o"}, 404, "model_not_found", "model"),
]


@pytest.fixture(scope="module")
def client(smollm2_models):
    models = smollm2_models
    with running(make_app(models, MAX_TOKENS_CAP=1000, MAX_BODY_BYTES=64 * 1024, MAX_CONTENT_LENGTH=64 * 1024)) as c:
        yield c


def assert_openai_error(reply, status: int, code: str | None = None, param: str | None = None) -> dict:
    assert reply.status == status, reply.body[:300]
    assert reply.headers["content-type"].startswith("application/json")
    err = reply.json["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param
    return err


@pytest.mark.parametrize("name,body,status,code,param", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_body(client, name, body, status, code, param):
    err = assert_openai_error(client.request("POST", "/v1/chat/completions", body), status, code, param)
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b"   ", b"[1, 2]", b'"text"', b"\xff\xfe{}", b"null"],
    ids=["malformed", "empty", "blank", "array", "string", "not utf-8", "null"],
)
def test_body_that_is_not_a_json_object(client, raw):
    assert_openai_error(client.request("POST", "/v1/chat/completions", raw=raw), 400, "invalid_json")


def test_prompt_longer_than_the_context(client):
    long_text = "word " * 2500  # ~2500 tokens against a 2048-token context, well under the body limit
    err = assert_openai_error(
        client.chat(messages=[{"role": "user", "content": long_text}]), 400, "context_length_exceeded", "messages"
    )
    assert "2048" in err["message"]


def test_body_over_the_size_limit(client):
    huge = {"messages": [{"role": "user", "content": "x" * (80 * 1024)}]}
    assert_openai_error(client.request("POST", "/v1/chat/completions", huge), 413, "request_too_large")


def test_wrong_method(client):
    assert_openai_error(client.get("/v1/chat/completions"), 405)


def test_rejected_requests_never_took_a_slot(client):
    client.chat(messages=USER, temperature=3)
    m = client.metrics()
    assert metric(m, "lantern_fallback_generations_total") == 0
    assert metric(m, "lantern_fallback_requests_total", status="400") >= 1


@pytest.mark.slow  # prefills 2031 tokens (~10 s on one thread)
def test_max_tokens_is_clamped_to_the_remaining_context(client):
    # 1000 is within the cap but the prompt leaves less room in 2048: the answer is cut, not refused.
    text = "word " * 2000  # 2031 prompt tokens: 17 left
    r = client.chat(messages=[{"role": "user", "content": text}], max_tokens=1000, temperature=0)
    assert r.status == 200
    assert r.json["usage"]["total_tokens"] <= 2048
    assert r.json["choices"][0]["finish_reason"] in ("stop", "length")


def test_missing_model_means_the_served_one(client):
    r = client.request("POST", "/v1/chat/completions", {"messages": FRANCE, "max_tokens": 2, "temperature": 0})
    assert r.status == 200 and r.json["model"] == MODEL_ID


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 60_000,  # the 100,000 would pass this client's 64 KB body limit
        b'{"messages": ' + b"[" * 25_000 + b"]" * 25_000 + b"}",
        b'{"a": ' * 8_000 + b"1" + b"}" * 8_000,
    ],
    ids=["open-brackets", "deep-array", "deep-object"],
)
def test_deeply_nested_json_is_a_400(client, raw):
    """Python's JSON parser recurses per level: 100,000 `[` used to end in a RecursionError and a 500.
    (Well within the body limit: a thousand levels are enough to hit the recursion limit.)"""
    err = assert_openai_error(client.request("POST", "/v1/chat/completions", raw=raw), 400, "invalid_json")
    assert "nested too deeply" in err["message"]


@pytest.mark.parametrize(
    "body,param",
    [
        ('{"messages": [{"role": "user", "content": "hi \\ud800 there"}]}', "messages[0].content"),
        ('{"messages": [{"role": "user", "content": "\\udfff"}]}', "messages[0].content"),
        (
            '{"messages": [{"role": "user", "content": [{"type": "text", "text": "a\\udc00"}]}]}',
            "messages[0].content[0].text",
        ),
        ('{"messages": [{"role": "user", "content": "hi"}], "stop": ["\\ud800"]}', "stop"),
        ('{"messages": [{"role": "user", "content": "hi"}], "model": "\\ud83d"}', "model"),
    ],
    ids=["content", "low-surrogate", "text-part", "stop", "model"],
)
def test_lone_surrogates_are_a_400(client, body, param):
    """A `\\ud800` escape decodes to half a UTF-16 pair, which the tokenizer cannot take (it was a 500)."""
    err = assert_openai_error(
        client.request("POST", "/v1/chat/completions", raw=body.encode()), 400, "invalid_value", param
    )
    assert "surrogate" in err["message"]


def test_a_lone_surrogate_is_a_400_and_a_pair_is_text(client):
    """Half a pair was a 500 from the tokenizer; an escaped pair (here U+1F600) is one character, answered."""
    lone = '{"messages": [{"role": "user", "content": "\\ud83d hi"}], "max_tokens": 2, "temperature": 0}'
    pair = '{"messages": [{"role": "user", "content": "\\ud83d\\ude00 hi"}], "max_tokens": 2, "temperature": 0}'
    err = assert_openai_error(client.request("POST", "/v1/chat/completions", raw=lone.encode()), 400)
    assert err["param"] == "messages[0].content" and "surrogate" in err["message"]
    assert client.request("POST", "/v1/chat/completions", raw=pair.encode()).status == 200


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""]
)
def test_chat_needs_a_json_content_type(client, content_type):
    """A page on another site can POST these without a CORS preflight; JSON it cannot."""
    before = metric(client.metrics(), "lantern_fallback_generations_total")
    body = b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}'
    headers = {"Content-Type": content_type} if content_type else {}
    conn = client.connection()
    try:
        conn.putrequest("POST", "/v1/chat/completions", skip_accept_encoding=True)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        resp = conn.getresponse()
        status, payload, ctype = resp.status, resp.read(), resp.getheader("Content-Type", "")
    finally:
        conn.close()
    assert status == 415 and ctype.startswith("application/json")
    err = json.loads(payload)["error"]
    assert err["code"] == "unsupported_media_type" and "application/json" in err["message"]
    assert metric(client.metrics(), "lantern_fallback_generations_total") == before
    # The same body declared as JSON (with a charset parameter, as browsers send it) is answered.
    ok = client.request(
        "POST", "/v1/chat/completions", raw=body, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert ok.status == 200
