"""The fallback's small pure parts: stop-string scanning, the admission queue, settings parsing."""

from __future__ import annotations

import threading
import time

import pytest

from webapp.fallback.chat_format import StopScanner
from webapp.fallback.engine_upstream import split_base_url
from webapp.fallback.limits import Admission, ClientLeft, ClientLimit, QueueFull, QueueTimeout
from webapp.fallback.settings import ConfigError, load_settings


def scan(stops, pieces):
    s = StopScanner(stops)
    out, hit = [], False
    for p in pieces:
        text, hit = s.push(p)
        out.append(text)
        if hit:
            break
    if not hit:
        out.append(s.flush())
    return "".join(out), hit, out


def test_stop_string_split_across_pieces():
    text, hit, parts = scan(["<|im_end|>"], ["Paris", ".<|im", "_en", "d|>", "more"])
    assert (text, hit) == ("Paris.", True)
    assert parts[1] == "."  # the possible start of a stop string was held back, nothing else


def test_no_stop_means_everything_flows_through():
    text, hit, parts = scan(["STOP"], ["a S", "TO", "x", "y"])
    assert (text, hit) == ("a STOxy", False)
    assert parts[0] == "a "  # "S" held back until "TOx" showed it was not STOP


def test_earliest_of_several_stops_wins():
    assert scan(["cd", "b"], ["abcd"])[:2] == ("a", True)
    assert scan([], ["x", "y"])[:2] == ("xy", False)


def test_admission_fifo_queue_full_and_timeout():
    adm = Admission(slots=1, max_queue=2)
    first = adm.acquire(time.monotonic() + 1)
    order, threads = [], []

    def waiter(name):
        lease = adm.acquire(time.monotonic() + 5)
        order.append(name)
        time.sleep(0.05)
        lease.release()

    for name in ("a", "b"):
        t = threading.Thread(target=waiter, args=(name,))
        t.start()
        threads.append(t)
        while adm.queued < len(threads):
            time.sleep(0.01)
    with pytest.raises(QueueFull) as full:
        adm.acquire(time.monotonic() + 1)
    assert full.value.retry_after >= 1
    first.release()
    first.release()  # idempotent: the slot is not freed twice
    for t in threads:
        t.join()
    assert order == ["a", "b"] and adm.active == 0 and adm.queued == 0
    blocker = adm.acquire(time.monotonic() + 1)
    start = time.monotonic()
    with pytest.raises(QueueTimeout):
        adm.acquire(time.monotonic() + 0.2)
    assert 0.15 < time.monotonic() - start < 2 and adm.queued == 0
    blocker.release()


def _queue(adm, client, order, gone=None):
    """Start a thread that queues for a slot as `client`, records its turn, and keeps the slot."""
    leases = []

    def wait():
        try:
            leases.append(adm.acquire(time.monotonic() + 5, client, gone))
            order.append(client)
        except ClientLeft:
            order.append(f"{client} left")

    before = adm.queued
    t = threading.Thread(target=wait)
    t.start()
    while adm.queued == before and t.is_alive():
        time.sleep(0.005)
    return t, leases


def test_admission_caps_each_client_and_serves_the_lighter_client_first():
    """A client at its cap is refused (ClientLimit, not QueueFull) while others still get in; a freed
    slot goes to the waiting client holding fewer slots, even if it came later."""
    adm = Admission(slots=2, max_queue=4, per_client=3)
    a1, a2 = adm.acquire(time.monotonic() + 1, "a"), adm.acquire(time.monotonic() + 1, "a")
    order: list[str] = []
    ta, la = _queue(adm, "a", order)
    with pytest.raises(ClientLimit) as capped:
        adm.acquire(time.monotonic() + 1, "a")
    assert capped.value.limit == 3 and capped.value.retry_after >= 1
    tb, lb = _queue(adm, "b", order)  # came after a's third request
    a1.release()
    tb.join(2)
    assert order == ["b"]  # b holds no slot, a holds one: b goes first
    a2.release()
    ta.join(2)
    assert order == ["b", "a"]
    for lease in [*la, *lb]:
        lease.release()
    assert adm.active == 0 and adm.queued == 0
    # A client gets back the slot its cache is in when that slot is free.
    x = adm.acquire(time.monotonic() + 1, "x")
    y = adm.acquire(time.monotonic() + 1, "y")
    slot_x = x.slot
    y.release()
    x.release()
    again = adm.acquire(time.monotonic() + 1, "x")
    assert again.slot == slot_x
    again.release()


def test_admission_drops_a_queued_request_whose_client_left():
    adm = Admission(slots=1, max_queue=2)
    held = adm.acquire(time.monotonic() + 1, "a")
    left = threading.Event()
    order: list[str] = []
    t, _ = _queue(adm, "b", order, gone=left.is_set)
    left.set()
    t.join(2)
    assert order == ["b left"] and adm.queued == 0  # gone while the slot was still held
    held.release()
    assert adm.active == 0


def test_settings_from_env_style_values():
    s = load_settings(
        {
            "MAX_CONCURRENT": 3,
            "MAX_QUEUE": "0",
            "FALLBACK_ENABLED": "false",
            "API_KEYS": "a, b c",
            "REQUEST_TIMEOUT": 2,
            "FALLBACK_PRELOAD": 1,
            "MAX_PER_CLIENT": "3",
        }
    )
    assert (s.max_concurrent, s.max_queue, s.enabled, s.api_keys, s.request_timeout, s.preload) == (
        3,
        0,
        False,
        ("a", "b", "c"),
        2.0,
        True,
    )
    assert s.max_per_client == 3 and load_settings({}).max_per_client == 4
    assert s.threads >= 1 and not s.proxy
    assert load_settings({"FALLBACK_UPSTREAM": "http://h:1/v1"}).proxy


@pytest.mark.parametrize(
    "config",
    [
        {"MAX_CONCURRENT": 0},
        {"MAX_QUEUE": "many"},
        {"FALLBACK_ENABLED": "maybe"},
        {"REQUEST_TIMEOUT": True},
        {"MAX_TOKENS_CAP": -5},
        {"MAX_PER_CLIENT": 0},
    ],
)
def test_bad_settings_fail_at_start(config):
    with pytest.raises(ConfigError, match="LANTERN_"):
        load_settings(config)


def test_upstream_urls():
    assert split_base_url("http://127.0.0.1:8080") == ("http", "127.0.0.1", 8080, "/v1")
    assert split_base_url("https://llm.example/openai/v1/") == ("https", "llm.example", 443, "/openai/v1")
    with pytest.raises(ValueError):
        split_base_url("127.0.0.1:8080")


def test_nothing_to_serve_keeps_the_site_up(tmp_path, monkeypatch):
    import webapp.fallback.model_files as model_files
    from webapp import create_app

    monkeypatch.setattr(model_files, "model_configs_dir", lambda: tmp_path)  # no configs, nothing built
    client = create_app({"MODELS_DIR": str(tmp_path), "TESTING": True}).test_client()
    assert client.get("/v1/models").status_code == 404
    health = client.get("/healthz")
    assert health.status_code == 503
    check = next(c for c in health.json["checks"] if c["name"] == "fallback")
    assert "no model to serve" in check["detail"]["error"]
