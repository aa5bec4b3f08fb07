"""Property-based fuzzing of POST /v1/chat/completions: no body, however hostile, gets a 500.

The app is the real one (create_app) behind werkzeug on loopback, reached over TCP. Its engine is the proxy
engine pointed at a closed loopback port: every request goes through the whole checked path (parse and
validate, model lookup, chat formatting and tokenizing with the built model's own tokenizer, context and
cap checks, admission), and one that passes all of them ends as 502 `upstream_unavailable` instead of
spending a generation. So the property is: every answer is a 4xx or that 502, in OpenAI's error shape.

Bounded: a fixed number of examples with a fixed seed (derandomize), and no example database written.
"""

from __future__ import annotations

import json
import socket

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from testing.fallback import MODEL_ID, make_app, running

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
# 502: passed every check, then found the (deliberately closed) upstream. 413: a body over the limit.
EXPECTED = {400, 404, 413, 502}

# Text: any Unicode, the chat template's own markers, and (a quarter of the time) lone UTF-16 surrogates, which
# JSON's "\ud800" escapes decode to (hypothesis itself never draws them).
odd_chars = st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr), st.sampled_from(["<|im_end|>", "\x00"]))
text = st.one_of(
    st.text(max_size=16),
    st.lists(st.sampled_from(["a", " ", "\n", "<|im_start|>", "<|im_end|>", "é", "😀"]), max_size=8).map("".join),
    st.text(st.characters(codec="utf-8"), max_size=16),
    st.lists(odd_chars, max_size=16).map("".join),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=10,
)
numbers = st.integers(-5, 5000) | st.floats() | json_values
part = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url"]) | json_values}, optional={"text": text | json_values}
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool", "User"]) | json_values},
    optional={"content": text | st.lists(part, max_size=3) | json_values, "name": json_values},
)
# Well-formed conversations with odd text: these get past validation into formatting and tokenizing.
turn = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": text})
last = st.fixed_dictionaries(
    {
        "role": st.just("user"),
        "content": text | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": text})),
    }
)
system = st.lists(st.fixed_dictionaries({"role": st.just("system"), "content": text}), max_size=1)
plausible = st.fixed_dictionaries(
    {"messages": st.tuples(system, st.lists(turn, max_size=3), last).map(lambda t: [*t[0], *t[1], t[2]])},
    optional={
        "model": st.sampled_from([MODEL_ID, f"{MODEL_ID}-q4f32_1", None]),
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0.001, 1),
        "max_tokens": st.integers(1, 64),
        "stop": text.filter(bool) | st.lists(text.filter(bool), max_size=4),
        "seed": st.integers(0, 2**63),
        "frequency_penalty": st.floats(-2, 2),
        "presence_penalty": st.floats(-2, 2),
    },
)
hostile = st.fixed_dictionaries(
    {},
    optional={
        "messages": st.lists(message, max_size=4) | json_values,
        "model": st.sampled_from([MODEL_ID, f"{MODEL_ID}-q4f32_1", "gpt-4o"]) | text | json_values,
        "stream": st.booleans() | json_values,
        "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans() | json_values})
        | json_values,
        "temperature": numbers,
        "top_p": numbers,
        "max_tokens": numbers,
        "max_completion_tokens": numbers,
        "stop": text | st.lists(text, max_size=6) | json_values,
        "seed": st.integers() | json_values,
        "n": numbers,
        "tools": json_values,
        "logprobs": json_values,
        "response_format": st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"]) | json_values})
        | json_values,
        "frequency_penalty": numbers,
        "presence_penalty": numbers,
    },
)
body = plausible | hostile
nesting = st.tuples(st.integers(1, 20_000), st.sampled_from([b"[", b'{"a":', b'{"messages":['])).map(
    lambda t: t[1] * t[0]
)
raw_bodies = st.binary(max_size=300) | nesting | json_values.map(lambda v: json.dumps(v).encode())


def closed_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def client(smollm2_models):
    upstream = f"http://127.0.0.1:{closed_loopback_port()}/v1"
    with running(make_app(smollm2_models, FALLBACK_UPSTREAM=upstream, MAX_BODY_BYTES=64 * 1024)) as c:
        yield c


def assert_handled(reply) -> None:
    event(f"status {reply.status}")  # --hypothesis-show-statistics: how many got how far
    assert reply.status in EXPECTED, (reply.status, reply.body[:300])
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    err = reply.json["error"]
    assert set(err) == {"message", "type", "param", "code"} and isinstance(err["message"], str)


@FUZZ
@given(body=body)
def test_no_chat_request_gets_a_500(client, body):
    # ensure_ascii: lone surrogates travel as \udXXX escapes, the way a hostile client sends them
    raw = json.dumps(body, ensure_ascii=True).encode()
    assert_handled(client.request("POST", "/v1/chat/completions", raw=raw))


@FUZZ
@given(raw=raw_bodies)
def test_no_request_body_gets_a_500(client, raw):
    assert_handled(client.request("POST", "/v1/chat/completions", raw=raw))
