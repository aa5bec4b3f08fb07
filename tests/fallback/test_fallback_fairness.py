"""One client cannot take the whole fallback, nor learn another's prompt: on the real engine, over loopback.

Clients are told apart as the server does it: by remote address (this test connects from several
127.0.0.x addresses) or, with API keys configured, by key.
"""

from __future__ import annotations

import concurrent.futures
import json

import pytest

from testing.fallback import FRANCE, MODEL_ID, make_app, metric, read_events, running, wait_until


@pytest.fixture(scope="module")
def models(smollm2_models):
    return smollm2_models


def queue_depth(client) -> float:
    return metric(client.metrics(), "lantern_fallback_queue_depth")


def test_per_client_limit_is_not_server_full(models):
    """With room on the server, a client over its own cap gets 429 saying so; a full server says that
    instead; and a queued request whose client hangs up leaves the queue while the slot is still busy."""
    app = make_app(models, MAX_CONCURRENT=1, MAX_QUEUE=2, MAX_PER_CLIENT=2)
    with running(app) as c:
        a, b, d = (c.as_client(source=f"127.0.0.{n}") for n in (2, 3, 4))
        assert a.chat(messages=FRANCE, max_tokens=1).status == 200  # engine warm
        # The greedy France answer never ends on its own: it holds the only slot until a hangs up.
        running_a = a.open_stream(messages=FRANCE, temperature=0, max_tokens=1000)
        assert running_a.response.status == 200 and len(read_events(running_a.response, 3)) == 3
        queued_a = a.send_chat(messages=FRANCE, max_tokens=2)
        assert wait_until(lambda: queue_depth(c) == 1, 5)

        over = a.chat(messages=FRANCE, max_tokens=2)  # a: 1 running + 1 queued = its cap of 2
        assert over.status == 429, over.body
        assert over.json["error"]["code"] == "client_limit_reached"
        assert over.json["error"]["type"] == "rate_limit_error"
        assert "this client" in over.json["error"]["message"] and int(over.headers["retry-after"]) >= 1

        queued_b = b.send_chat(messages=FRANCE, max_tokens=2)  # another client still gets a queue place
        assert wait_until(lambda: queue_depth(c) == 2, 5)
        full = d.chat(messages=FRANCE, max_tokens=2)
        assert full.status == 429 and full.json["error"]["code"] == "server_busy"
        assert "busy" in full.json["error"]["message"]

        queued_b.abort()  # b gives up while a's generation still holds the only slot
        assert wait_until(lambda: queue_depth(c) == 1, 3), "a departed client kept its queue place"
        m = c.metrics()
        assert metric(m, "lantern_fallback_active_generations") == 1
        assert metric(m, "lantern_fallback_rejected_total", reason="client_limit") == 1
        assert metric(m, "lantern_fallback_rejected_total", reason="queue_full") == 1
        assert metric(m, "lantern_fallback_rejected_total", reason="client_gone") == 1

        running_a.abort()
        reply = queued_a.conn.getresponse()
        assert reply.status == 200 and json.loads(reply.read())["choices"][0]["message"]["content"]
        queued_a.conn.close()
        assert b.chat(messages=FRANCE, max_tokens=2).status == 200
        assert metric(c.metrics(), "lantern_fallback_generations_total", outcome="disconnected") == 1  # a's only


def test_oversized_prompts_are_refused_without_tokenizing(models):
    """Bodies too large for the context by size alone get 400 before any tokenizer pass (so a flood of them
    cannot stall the site); a prompt that fits that bound but not the context is tokenized with a slot
    held and refused exactly."""
    with running(make_app(models, MAX_CONCURRENT=1, MAX_QUEUE=8, MAX_PER_CLIENT=8)) as c:
        huge = [{"role": "user", "content": "lighthouse " * 22_000}]  # 242 KB, under the body limit

        def flood(_):
            return c.chat(messages=huge, max_tokens=4)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(flood, range(8)))
        assert [r.status for r in replies] == [400] * 8
        assert {r.json["error"]["code"] for r in replies} == {"context_length_exceeded"}
        assert "by their size alone" in replies[0].json["error"]["message"]
        m = c.metrics()
        assert metric(m, "lantern_fallback_tokenize_seconds_count") == 0
        assert metric(m, "lantern_fallback_queue_wait_seconds_count") == 0  # never queued either

        over = [{"role": "user", "content": "lighthouse " * 2_500}]  # ~2,500 tokens, 2,048 fit: needs counting
        r = c.chat(messages=over, max_tokens=4)
        assert r.status == 400 and r.json["error"]["code"] == "context_length_exceeded"
        assert "messages use" in r.json["error"]["message"]
        assert c.chat(messages=FRANCE, max_tokens=2).status == 200
        m = c.metrics()
        assert metric(m, "lantern_fallback_tokenize_seconds_count") == 2  # the two that needed it, no more
        assert metric(m, "lantern_fallback_queue_wait_seconds_count") == 2


def test_size_bound_never_exceeds_the_real_token_count(models):
    """The bound may only refuse what cannot fit: on the real tokenizer, for text built to pack many bytes
    into few tokens, the bound stays at or below the exact count."""
    from webapp.fallback.chat_format import ChatFormat
    from webapp.fallback.model_files import load_chat_files, resolve_model

    fmt = ChatFormat(*load_chat_files(resolve_model(MODEL_ID, models)))
    assert fmt.bytes_per_token is not None and fmt.bytes_per_token < 120  # SmolLM2: byte-level BPE
    vocab = fmt.tokenizer.get_vocab(with_added_tokens=True)
    longest = max(vocab, key=len)
    texts = [
        "lighthouse " * 500,
        fmt.tokenizer.decode([vocab[longest]], skip_special_tokens=False) * 200,
        "<|im_start|><|im_end|>" * 200,
        "{function_string}" * 200,
        "🌊" * 300 + "naïve façade " * 50,
        " " * 3000,
    ]
    for text in texts:
        messages = [("system", text[:50]), ("user", text)]
        assert 0 < fmt.min_prompt_tokens(messages) <= len(fmt.encode(messages)), text[:40]


def test_a_slot_cache_serves_only_the_client_that_built_it(models):
    """llama.cpp reuses a slot's longest cached prefix; across clients that would leak the prefix through
    timing. The engine's own count of tokens it skipped shows reuse for the same client only."""
    keys = {"API_KEYS": "key-alice key-bob"}
    with running(make_app(models, MAX_CONCURRENT=1, **keys)) as c:
        alice = c.as_client(headers={"Authorization": "Bearer key-alice"})
        bob = c.as_client(headers={"Authorization": "Bearer key-bob"})
        shared = [{"role": "user", "content": "Here are my private notes. " + "Meeting at the harbour. " * 60}]

        def cached_by(client) -> tuple[float, int]:
            before = metric(client.metrics(), "lantern_fallback_prompt_cached_tokens_total")
            r = client.chat(messages=shared, temperature=0, max_tokens=1)
            assert r.status == 200, r.body
            after = metric(client.metrics(), "lantern_fallback_prompt_cached_tokens_total")
            return after - before, r.json["usage"]["prompt_tokens"]

        first, prompt = cached_by(alice)
        assert prompt > 200 and first == 0
        again, _ = cached_by(alice)
        assert again >= prompt - 1  # her own follow-up reuses her prefix: the count sees reuse
        for_bob, _ = cached_by(bob)
        assert for_bob == 0  # the same prefix, another client: computed afresh
        bob_again, _ = cached_by(bob)
        assert bob_again >= prompt - 1
        back_to_alice, _ = cached_by(alice)
        assert back_to_alice == 0  # bob's cache is not hers either


def test_behind_a_proxy_each_client_has_its_own_limit(models):
    """LANTERN_PROXY_HOPS=1 (one nginx in front): every request comes from the proxy's address, and the
    per-client limit goes by the address the proxy forwards. Without the setting the header is ignored
    (a client could write anything there) and all of them are one client."""
    for hops, second_gets in ((1, 200), (0, 429)):
        app = make_app(models, MAX_CONCURRENT=1, MAX_QUEUE=2, MAX_PER_CLIENT=1, PROXY_HOPS=hops)
        with running(app) as c:
            alice = c.as_client(headers={"X-Forwarded-For": "192.0.2.10"})
            bob = c.as_client(headers={"X-Forwarded-For": "192.0.2.20"})
            holding = alice.open_stream(messages=FRANCE, temperature=0, max_tokens=1000)
            assert holding.response.status == 200 and len(read_events(holding.response, 2)) == 2
            over = alice.chat(messages=FRANCE, max_tokens=2)
            assert over.status == 429 and over.json["error"]["code"] == "client_limit_reached"
            queued = bob.send_chat(messages=FRANCE, max_tokens=2)
            if second_gets == 200:
                assert wait_until(lambda: queue_depth(c) == 1, 5), "bob was not queued as a client of his own"
                holding.abort()
                assert queued.conn.getresponse().status == 200
            else:
                reply = queued.conn.getresponse()
                assert reply.status == 429 and json.loads(reply.read())["error"]["code"] == "client_limit_reached"
                holding.abort()
            queued.conn.close()
