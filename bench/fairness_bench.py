"""Server fallback under a flooding client, measured side by side in one run (ratios, not absolutes):

* two clients told apart by address (127.0.0.2 floods, 127.0.0.3 chats one request at a time): the
  quiet client's p50/p95 time to first token alone, and while the other floods (FLOODERS threads that
  resend after FLOOD_RETRY_S, ignoring Retry-After) — with the per-client limit on (the default) and,
  as the peer, effectively off (LANTERN_MAX_PER_CLIENT = slots + queue, the old single pool). The quiet
  client retries a 429 after its Retry-After (at most VICTIM_PATIENCE_S per request); its time to
  first token counts from its first attempt;
* /healthz latency while 8 clients send bodies too large for the context (refused by their size
  before any tokenizer pass), against /healthz on the same server when idle.

Bounded: VICTIM_REQUESTS per phase, each phase at most PHASE_LIMIT_S, loopback only.

    python -m bench fairness          # or: python -m bench.fairness_bench [--json]
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import threading
import time

from bench.fallback_bench import serving
from bench.support import MODEL, cli, smollm2_models

SLOTS, QUEUE = 2, 8  # the defaults
FLOOD_SOURCE, VICTIM_SOURCE = "127.0.0.2", "127.0.0.3"
FLOODERS = SLOTS + QUEUE  # enough to fill every slot and queue place alone
FLOOD_TOKENS, VICTIM_TOKENS = 32, 8
VICTIM_REQUESTS = 8
VICTIM_PATIENCE_S = 20.0
FLOOD_RETRY_S = 0.1
PHASE_LIMIT_S = 90.0
HEALTH_PROBES = 40
OVERSIZED = "lighthouse " * 22_000  # ~242 KB: under the body limit, far over a 2,048-token context


def first_token(port: int, source: str, prompt: str, max_tokens: int) -> dict:
    """One streaming chat from `source`: status and seconds to the first content chunk (client-side)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PHASE_LIMIT_S, source_address=(source, 0))
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": True,
    }
    start = time.perf_counter()
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            resp.read()
            return {"status": resp.status, "retry_after": float(resp.getheader("Retry-After") or 1)}
        ttft = None
        for line in resp:
            if ttft is None and line.startswith(b"data: {") and b'"content":"' in line and b'"content":""' not in line:
                ttft = time.perf_counter() - start
        return {"status": 200, "ttft": ttft}
    finally:
        conn.close()


def _flood(port: int, stop: threading.Event, counts: dict, lock: threading.Lock) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        try:
            r = first_token(port, FLOOD_SOURCE, f"Write a long poem about the number {i}.", FLOOD_TOKENS)
        except OSError:
            r = {"status": 0}
        with lock:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        if r["status"] != 200:
            time.sleep(FLOOD_RETRY_S)  # an abusive client: retries soon, whatever Retry-After says


def patient_first_token(port: int, prompt: str) -> dict:
    """The quiet client: retries after Retry-After until answered or VICTIM_PATIENCE_S have passed."""
    start, refusals = time.perf_counter(), 0
    while True:
        r = first_token(port, VICTIM_SOURCE, prompt, VICTIM_TOKENS)
        if r["status"] == 200 and r.get("ttft") is not None:
            return {"ttft": time.perf_counter() - start, "refusals": refusals}
        refusals += 1
        wait = min(r.get("retry_after", 1.0), 5.0)
        if time.perf_counter() - start + wait > VICTIM_PATIENCE_S:
            return {"ttft": None, "refusals": refusals}
        time.sleep(wait)


def _quantiles(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], values[0]
    q = statistics.quantiles(values, n=20, method="inclusive")
    return statistics.median(values), q[18]


def victim_phase(port: int, flood: bool) -> dict:
    """The quiet client's requests, alone or while the other client floods."""
    stop, lock, counts = threading.Event(), threading.Lock(), {}
    flooders = [
        threading.Thread(target=_flood, args=(port, stop, counts, lock)) for _ in range(FLOODERS if flood else 0)
    ]
    for t in flooders:
        t.start()
    if flood:
        time.sleep(2.0)  # let the flood fill the slots and the queue first
    ttfts, refused, gave_up, began = [], 0, 0, time.perf_counter()
    try:
        for i in range(VICTIM_REQUESTS):
            if time.perf_counter() - began > PHASE_LIMIT_S:
                break
            r = patient_first_token(port, f"Name a colour, please ({i}).")
            refused += r["refusals"]
            if r["ttft"] is None:
                gave_up += 1
            else:
                ttfts.append(r["ttft"])
    finally:
        stop.set()
        for t in flooders:
            t.join(PHASE_LIMIT_S)
    p50, p95 = _quantiles(ttfts)
    return {
        "answered": len(ttfts),
        "gave_up": gave_up,
        "refusals": refused,
        "p50_s": p50,
        "p95_s": p95,
        "flood_statuses": counts,
    }


def fairness(models, per_client: int) -> dict:
    with serving(models, MAX_CONCURRENT=SLOTS, MAX_QUEUE=QUEUE, FALLBACK_THREADS=1, MAX_PER_CLIENT=per_client) as port:
        first_token(port, VICTIM_SOURCE, "Hello", 2)  # warm
        quiet = victim_phase(port, flood=False)
        flooded = victim_phase(port, flood=True)
    return {"per_client": per_client, "quiet": quiet, "flooded": flooded}


def _healthz(port: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    start = time.perf_counter()
    try:
        conn.request("GET", "/healthz")
        conn.getresponse().read()
    finally:
        conn.close()
    return time.perf_counter() - start


def _oversized(port: int, stop: threading.Event, statuses: list) -> None:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": OVERSIZED}], "max_tokens": 4})
    while not stop.is_set():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(FLOOD_SOURCE, 0))
        try:
            conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            statuses.append(conn.getresponse().status)
        except OSError:
            statuses.append(0)
        finally:
            conn.close()


def health_under_oversized_flood(models) -> dict:
    with serving(models, FALLBACK_THREADS=1) as port:
        _healthz(port)
        idle = sorted(_healthz(port) for _ in range(HEALTH_PROBES))
        stop, statuses = threading.Event(), []
        senders = [threading.Thread(target=_oversized, args=(port, stop, statuses)) for _ in range(8)]
        for t in senders:
            t.start()
        time.sleep(0.5)
        flooded = []
        try:
            for _ in range(HEALTH_PROBES):
                flooded.append(_healthz(port))
                time.sleep(0.02)
        finally:
            stop.set()
            for t in senders:
                t.join(30)
    i50, i95 = _quantiles(idle)
    f50, f95 = _quantiles(flooded)
    return {
        "idle_p50_ms": 1000 * i50,
        "idle_p95_ms": 1000 * i95,
        "flooded_p50_ms": 1000 * f50,
        "flooded_p95_ms": 1000 * f95,
        "oversized_sent": len(statuses),
        "oversized_statuses": sorted(set(statuses)),
    }


def run() -> dict:
    with smollm2_models() as models:
        capped = fairness(models, per_client=4)
        uncapped = fairness(models, per_client=SLOTS + QUEUE)
        health = health_under_oversized_flood(models)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {
        "cores": cores,
        "load_average": os.getloadavg()[0],
        "capped": capped,
        "uncapped": uncapped,
        "health": health,
    }


def _ms(x: float | None) -> str:
    return "   n/a" if x is None else f"{1000 * x:6.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.1f}x"


def report(r: dict) -> None:
    print(
        f"machine: {r['cores']} cores, load average {r['load_average']:.1f} at the end (other work on the machine "
        f"inflates every latency; compare within this run only); {SLOTS} slots x 1 thread, queue {QUEUE}; model {MODEL}; quiet client: "
        f"{VICTIM_REQUESTS} sequential streams of {VICTIM_TOKENS} tokens; flooder: {FLOODERS} threads of "
        f"{FLOOD_TOKENS}-token streams, retrying {FLOOD_RETRY_S:g} s after a 429; TTFT includes the quiet "
        f"client's own retries after Retry-After (it gives up after {VICTIM_PATIENCE_S:g} s)"
    )
    for name in ("capped", "uncapped"):
        f = r[name]
        q, fl = f["quiet"], f["flooded"]
        label = "per-client limit 4 (default)" if name == "capped" else f"no per-client limit ({SLOTS + QUEUE})"
        print(f"{label}:")
        print(f"  quiet client alone         TTFT p50 {_ms(q['p50_s'])} ms, p95 {_ms(q['p95_s'])} ms")
        print(
            f"  quiet client during flood  TTFT p50 {_ms(fl['p50_s'])} ms, p95 {_ms(fl['p95_s'])} ms "
            f"({_ratio(fl['p50_s'], q['p50_s'])} / {_ratio(fl['p95_s'], q['p95_s'])} of alone); answered "
            f"{fl['answered']}/{VICTIM_REQUESTS}, gave up {fl['gave_up']}, 429s on the way {fl['refusals']}; "
            f"flooder's statuses {fl['flood_statuses']}"
        )
    c, u = r["capped"]["flooded"], r["uncapped"]["flooded"]
    print(
        f"quiet client's p95 TTFT during the flood, limit on vs off: {_ratio(c['p95_s'], u['p95_s'])} "
        f"(p50 {_ratio(c['p50_s'], u['p50_s'])})"
    )
    h = r["health"]
    print(
        f"/healthz while 8 clients send ~242 KB over-context bodies ({h['oversized_sent']} sent, statuses "
        f"{h['oversized_statuses']}): p50 {h['flooded_p50_ms']:.1f} ms, p95 {h['flooded_p95_ms']:.1f} ms vs idle "
        f"p50 {h['idle_p50_ms']:.1f} ms, p95 {h['idle_p95_ms']:.1f} ms "
        f"({h['flooded_p95_ms'] / h['idle_p95_ms']:.1f}x at p95)"
    )


def main(argv=None) -> None:
    cli("python -m bench.fairness_bench", run, report, argv)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
