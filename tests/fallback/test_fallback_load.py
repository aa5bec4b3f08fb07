"""Bounded load on the real engine: slots + queue, 429 beyond, timeouts, and disconnects freeing slots."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time

import pytest

from testing.fallback import FRANCE, OpenStream, make_app, metric, read_events, running, wait_until

PROMPTS = [f"Write one sentence about the number {n}." for n in (3, 7, 12, 25, 40, 64, 81, 99, 120, 256)]


@pytest.fixture(scope="module")
def models(smollm2_models):
    return smollm2_models


def ask(client, prompt: str, stream: bool, max_tokens: int = 12):
    return client.chat(
        messages=[{"role": "user", "content": prompt}],
        temperature=0,
        max_tokens=max_tokens,
        stream=stream,
        stream_options={"include_usage": True} if stream else None,
    )


def idle(client) -> bool:
    m = client.metrics()
    return metric(m, "lantern_fallback_active_generations") == 0 and metric(m, "lantern_fallback_queue_depth") == 0


@pytest.mark.slow
def test_more_requests_than_slots_and_queue(models):
    """2 slots + 2 queue places, 10 at once: some 429 + Retry-After, every 200 is its own answer, all drain."""
    with running(make_app(models, MAX_CONCURRENT=2, MAX_QUEUE=2)) as c:
        reference = {}
        for p in PROMPTS:  # one at a time: what each prompt's greedy answer is
            r = ask(c, p, stream=False)
            reference[p] = (r.text, r.json["usage"]["prompt_tokens"])
        barrier = threading.Barrier(len(PROMPTS))

        def one(i):
            barrier.wait()
            return ask(c, PROMPTS[i], stream=bool(i % 2))

        with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
            replies = list(pool.map(one, range(len(PROMPTS))))

        statuses = [r.status for r in replies]
        assert set(statuses) <= {200, 429}, statuses
        assert statuses.count(429) >= 1 and statuses.count(200) >= 4, statuses
        for prompt, r in zip(PROMPTS, replies, strict=True):
            if r.status == 429:
                assert int(r.headers["retry-after"]) >= 1
                assert r.json["error"]["code"] == "server_busy"
                assert r.json["error"]["type"] == "rate_limit_error"
                continue
            usage = r.events[-2]["usage"] if r.events else r.json["usage"]
            assert (r.text, usage["prompt_tokens"]) == reference[prompt], prompt  # not lost, not mixed up
        assert wait_until(lambda: idle(c), 10)
        m = c.metrics()
        assert metric(m, "lantern_fallback_rejected_total", reason="queue_full") == statuses.count(429)
        assert metric(m, "lantern_fallback_queue_wait_seconds_count") == len(PROMPTS) + statuses.count(200)
        # Drained: the refused ones succeed when retried.
        for prompt, r in zip(PROMPTS, replies, strict=True):
            if r.status == 429:
                assert ask(c, prompt, stream=False).text == reference[prompt][0]


def test_queue_wait_gives_up_at_the_request_timeout(models):
    app = make_app(models, MAX_CONCURRENT=1, MAX_QUEUE=4, REQUEST_TIMEOUT=1.5)
    with running(app) as c:
        c.chat(messages=FRANCE, max_tokens=1)  # load the engine first
        # Any generation would end at the same timeout, so hold the only slot directly for longer.
        lease = app.extensions["lantern_fallback"].admission.acquire(time.monotonic() + 1)
        try:
            start = time.monotonic()
            r = c.chat(messages=FRANCE, max_tokens=4)
            waited = time.monotonic() - start
        finally:
            lease.release()
        assert r.status == 503 and r.json["error"]["code"] == "queue_timeout"
        assert int(r.headers["retry-after"]) >= 1
        assert 1.4 < waited < 5
        assert metric(c.metrics(), "lantern_fallback_rejected_total", reason="queue_timeout") == 1
        assert c.chat(messages=FRANCE, max_tokens=2).status == 200


def test_generation_timeout(models):
    with running(make_app(models, MAX_CONCURRENT=1, REQUEST_TIMEOUT=1.0)) as c:
        c.chat(messages=FRANCE, max_tokens=1)
        # The greedy France answer never ends on its own; 1000 tokens take far longer than 1 s.
        r = c.chat(messages=FRANCE, temperature=0, max_tokens=1000)
        assert r.status == 504 and r.json["error"]["code"] == "timeout"
        s = c.chat(messages=FRANCE, temperature=0, max_tokens=1000, stream=True)
        assert s.status == 200
        assert s.events[-1] == "[DONE]" and s.events[-2]["error"]["code"] == "timeout"
        assert wait_until(lambda: idle(c), 5)
        assert metric(c.metrics(), "lantern_fallback_generations_total", outcome="timeout") == 2


def test_disconnect_mid_stream_frees_the_slot(models):
    with running(make_app(models, MAX_CONCURRENT=1, MAX_QUEUE=0)) as c:
        c.chat(messages=FRANCE, max_tokens=1)
        stream = c.open_stream(messages=FRANCE, temperature=0, max_tokens=1000)
        assert stream.response.status == 200
        assert len(read_events(stream.response, 4)) == 4
        busy = c.chat(messages=FRANCE, max_tokens=2)  # one slot, no queue: refused while streaming
        assert busy.status == 429
        stream.abort()
        assert wait_until(lambda: idle(c), 5), "slot still held after the client left"
        m = c.metrics()
        assert metric(m, "lantern_fallback_generations_total", outcome="disconnected") == 1
        assert metric(m, "lantern_fallback_completion_tokens_total") < 300  # it stopped, not ran to 1000
        assert c.chat(messages=FRANCE, max_tokens=2).status == 200


def test_disconnect_during_non_streaming_request_stops_generation(models):
    with running(make_app(models, MAX_CONCURRENT=1, MAX_QUEUE=0)) as c:
        c.chat(messages=FRANCE, max_tokens=1)
        conn = c.connection()
        conn.request(
            "POST",
            "/v1/chat/completions",
            headers={"Content-Type": "application/json"},
            body=json.dumps({"messages": FRANCE, "temperature": 0, "max_tokens": 1000}),
        )
        assert wait_until(lambda: metric(c.metrics(), "lantern_fallback_active_generations") == 1, 5)
        OpenStream(conn.sock, conn, None).abort()  # gone before any answer byte
        assert wait_until(lambda: idle(c), 5)
        m = c.metrics()
        assert metric(m, "lantern_fallback_generations_total", outcome="disconnected") == 1
        assert metric(m, "lantern_fallback_completion_tokens_total") < 300
