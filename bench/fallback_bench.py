"""Server fallback, measured side by side in one run on this machine (2 shared cores are noisy, so
peers alternate round by round and the report is ratios):

* raw llama.cpp (llama-cpp-python, same GGUF, same threads) decode tok/s and time to first token
  vs the same greedy generation streamed through the Flask API over loopback, which reaches the
  engine in its own process over a second loopback hop (target >= 0.95x);
* restart after a crash: SIGKILL the engine process, time until /healthz says ready again and until
  the next answer arrives (the site itself keeps serving meanwhile);
* 8 concurrent streaming clients: aggregate tok/s, p50/p95 time to first token (queue wait included),
  errors — with the default slot layout (2 slots x 1 thread) and with 1 slot x 2 threads;
* the greedy answer to the France prompt from the server, next to the browser build's greedy answer
  (its verified CPU build when the library was compiled, else the numpy reference on its weights).

    python -m bench fallback          # or: python -m bench.fallback_bench [--json]
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import statistics
import threading
import time
from pathlib import Path

from bench.support import MODEL, QUANT, cli, smollm2_models
from build_pipeline.contract import VERIFY_FILE

FRANCE = "What is the capital of France?"
STORY = "Write a long story about a dragon who learns to cook. Chapter {i}."
ROUNDS = 5
MAX_TOKENS = 128
CLIENTS = 8
CLIENT_TOKENS = 64


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _serve_child(config: dict, port_pipe) -> None:
    """Child process: the real app on werkzeug's threaded server (a browser is another process too, and a
    client in the server's process would compete with it for the GIL)."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    from webapp import create_app

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args, **kwargs):
            pass

    app = create_app({"FALLBACK_PRELOAD": True, **config})
    app.extensions["lantern_fallback"].engine.wait_ready(time.monotonic() + 120)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    port_pipe.send(server.server_port)
    server.serve_forever()


@contextlib.contextmanager
def serving(models: Path, **config):
    """Yields the port of a server process running the app with `config`."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold llama.cpp threads
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve_child, args=({"MODELS_DIR": str(models), **config}, child), daemon=True)
    proc.start()
    try:
        if not parent.poll(180):
            raise RuntimeError("the server process did not start")
        yield parent.recv()
    finally:
        proc.terminate()
        proc.join(10)


# ---------------------------------------------------------------------------------------------- runs
def raw_generate(llm, fmt, prompt: str, max_tokens: int) -> dict:
    """llama.cpp alone: the same Llama.generate loop the engine drives, without HTTP, JSON or Flask."""
    ids = fmt.encode([("user", prompt)])
    out = []
    start = time.perf_counter()
    first = last = None
    for token in llm.generate(ids, temp=0.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0, repeat_penalty=1.0):
        now = time.perf_counter()
        first = first or now
        if token in fmt.stop_token_ids or len(out) >= max_tokens:
            break
        last = now
        out.append(token)
    text = llm.detokenize(out).decode("utf-8", "replace")
    return {"tokens": len(out), "ttft": first - start, "tps": (len(out) - 1) / (last - first), "text": text}


def stream_chat(port: int, prompt: str, max_tokens: int, seed=None) -> dict:
    """One streaming request, timed on the client: first content chunk, last content chunk, usage."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    first = last = None
    text, usage, error = "", None, None
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            return {
                "status": resp.status,
                "error": resp.read().decode()[:200],
                "start": start,
                "end": time.perf_counter(),
            }
        for line in resp:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                error = chunk["error"]["message"]
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    text += piece
            usage = chunk.get("usage") or usage
    finally:
        conn.close()
    tokens = usage["completion_tokens"] if usage else 0
    tps = (tokens - 1) / (last - first) if first and last and last > first and tokens > 1 else None
    return {
        "status": 200,
        "error": error,
        "tokens": tokens,
        "ttft": (first - start) if first else None,
        "tps": tps,
        "text": text,
        "start": start,
        "end": time.perf_counter(),
    }


def chat_once(port: int, prompt: str, max_tokens: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
    }
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    reply = json.loads(conn.getresponse().read())
    conn.close()
    return reply["choices"][0]["message"]["content"]


def single_stream(models: Path, threads: int) -> dict:
    """Raw llama.cpp and the Flask stream alternate, same prompt per round, same thread count."""
    from webapp.fallback.chat_format import ChatFormat
    from webapp.fallback.engine_worker import load_llama
    from webapp.fallback.model_files import find_gguf, load_chat_files, resolve_model

    ref = resolve_model(MODEL, models)
    fmt = ChatFormat(*load_chat_files(ref))
    # The engine's own loader (no extra buffer types: the AMX repack crashes on AMX Xeons).
    llm = load_llama(str(find_gguf(ref)), fmt.context_window, threads)
    raw, served, same_text = [], [], []
    try:
        with serving(models, MAX_CONCURRENT=1, FALLBACK_THREADS=threads) as port:
            stream_chat(port, "Hello", 4)  # warm both paths once
            raw_generate(llm, fmt, "Hello", 4)
            for i in range(ROUNDS):
                prompt = STORY.format(i=i + 1)
                pair = [
                    lambda p=prompt: raw.append(raw_generate(llm, fmt, p, MAX_TOKENS)),
                    lambda p=prompt: served.append(stream_chat(port, p, MAX_TOKENS)),
                ]
                for run in pair if i % 2 == 0 else pair[::-1]:  # alternate who goes first
                    run()
                same_text.append(raw[-1]["text"] == served[-1]["text"])
            france = chat_once(port, FRANCE, 48)
    finally:
        llm.close()
    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    best = lambda rows, key: max(r[key] for r in rows)  # noqa: E731
    ratios = [s["tps"] / r["tps"] for r, s in zip(raw, served, strict=True)]
    return {
        "threads": threads,
        "rounds": ROUNDS,
        "tokens": [r["tokens"] for r in served],
        "raw_tps": med(raw, "tps"),
        "served_tps": med(served, "tps"),
        "raw_best_tps": best(raw, "tps"),
        "served_best_tps": best(served, "tps"),
        # Each round's pair ran back to back, so its ratio sees (nearly) the same machine load.
        "ratio": statistics.median(ratios),
        "best_ratio": best(served, "tps") / best(raw, "tps"),
        "round_ratios": ratios,
        "raw_ttft_ms": 1000 * med(raw, "ttft"),
        "served_ttft_ms": 1000 * med(served, "ttft"),
        "same_text": all(same_text),
        "france": france,
    }


def concurrent_clients(models: Path, slots: int, threads: int) -> dict:
    results = [None] * CLIENTS
    with serving(models, MAX_CONCURRENT=slots, FALLBACK_THREADS=threads, MAX_QUEUE=CLIENTS) as port:
        stream_chat(port, "Hello", 4)
        barrier = threading.Barrier(CLIENTS)

        def client(i):
            barrier.wait()
            try:
                results[i] = stream_chat(port, f"Tell me a fact about the number {i * 7 + 3}.", CLIENT_TOKENS)
            except Exception as exc:  # noqa: BLE001 - a failed client is a result of the load test
                results[i] = {"status": 0, "error": f"{type(exc).__name__}: {exc}"}

        workers = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    ok = [r for r in results if r.get("status") == 200 and not r.get("error")]
    wall = max(r["end"] for r in ok) - min(r["start"] for r in ok) if ok else float("nan")
    ttfts = sorted(r["ttft"] for r in ok if r.get("ttft") is not None)
    q = statistics.quantiles(ttfts, n=20, method="inclusive") if len(ttfts) >= 2 else ttfts * 19
    return {
        "slots": slots,
        "threads": threads,
        "clients": CLIENTS,
        "errors": CLIENTS - len(ok),
        "tokens": sum(r["tokens"] for r in ok),
        "wall_s": wall,
        "aggregate_tps": sum(r["tokens"] for r in ok) / wall if ok else 0.0,
        "ttft_p50_ms": 1000 * statistics.median(ttfts) if ttfts else None,
        "ttft_p95_ms": 1000 * q[18] if ttfts else None,
    }


def browser_build_answer(models: Path, max_new_tokens: int = 48) -> tuple[str, str]:
    """What the browser build answers greedily: its verified CPU build if available, else the numpy
    reference on the variant's own (4-bit) weights."""
    variant = models / MODEL / QUANT
    from build_pipeline.compiler.verify import cut_at_stop, prompt_token_ids

    if (variant / VERIFY_FILE).is_file():
        try:
            from build_pipeline.compiler.verify import cpu_chat

            return cpu_chat(variant, FRANCE, max_new_tokens)["text"], "compiled model (CPU build, = web-llm greedy)"
        except Exception as exc:  # noqa: BLE001 - the bench falls back to the numpy reference
            print(f"(CPU build unavailable: {type(exc).__name__}: {exc})")
    from build_pipeline.convert import dense_variant_params
    from build_pipeline.families.llama.config import LlamaConfig
    from build_pipeline.reference import ReferenceModel

    ids, chat, tok = prompt_token_ids(variant, FRANCE)
    config = LlamaConfig(**chat["model_config"])
    ref = ReferenceModel(config, dense_variant_params(variant))
    stop = set(chat["conv_template"]["stop_token_ids"])
    out, _ = cut_at_stop(ref.generate_greedy(ids, max_new_tokens, stop), stop, max_new_tokens)
    return tok.decode(out, skip_special_tokens=False), f"numpy reference on the {QUANT} weights"


def _fallback_health(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        checks = json.loads(conn.getresponse().read())["checks"]
    finally:
        conn.close()
    return next(c["detail"] for c in checks if c["name"] == "fallback")


def _site_ok(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/api/models")
        return conn.getresponse().status == 200
    finally:
        conn.close()


def restart_after_crash(models: Path, rounds: int = 3) -> dict:
    """SIGKILL the engine process; time until /healthz is ready again and until the next answer."""
    import signal

    ready_s, answer_s, site_up = [], [], True
    with serving(models, MAX_CONCURRENT=1, FALLBACK_THREADS=1, FALLBACK_READY_WAIT=60) as port:
        chat_once(port, "Hello", 2)
        for _ in range(rounds):
            before = _fallback_health(port)
            killed = time.perf_counter()
            os.kill(before["pid"], signal.SIGKILL)
            site_up = site_up and _site_ok(port)
            while True:
                detail = _fallback_health(port)
                if detail["state"] == "ready" and detail.get("pid") != before["pid"]:
                    break
                time.sleep(0.02)
            ready_s.append(time.perf_counter() - killed)
            chat_once(port, "Hello", 2)
            answer_s.append(time.perf_counter() - killed)
            site_up = site_up and _site_ok(port)
        restarts = _fallback_health(port)["restarts"]
    return {
        "rounds": rounds,
        "ready_s": statistics.median(ready_s),
        "answer_s": statistics.median(answer_s),
        "restarts": restarts,
        "site_answered_throughout": site_up,
    }


# ---------------------------------------------------------------------------------------------- report
def run() -> dict:
    n = cores()
    with smollm2_models() as models:
        singles = [single_stream(models, t) for t in sorted({1, n})]
        crowds = [concurrent_clients(models, 2, max(1, n // 2)), concurrent_clients(models, 1, n)]
        restart = restart_after_crash(models)
        browser_text, browser_source = browser_build_answer(models)
    return {
        "cores": n,
        "load_average": os.getloadavg()[0],
        "single": singles,
        "concurrent": crowds,
        "restart": restart,
        "france": {"server": singles[0]["france"], "browser": browser_text, "browser_source": browser_source},
    }


def report(r: dict) -> None:
    print(
        f"machine: {r['cores']} cores, load average {r['load_average']:.1f} at the end (other work on the machine "
        f"makes multi-thread llama.cpp numbers erratic); model {MODEL}, server: llama.cpp on the model's GGUF"
    )
    for s in r["single"]:
        print(
            f"single stream, {s['threads']} thread(s), greedy, {ROUNDS} alternating rounds of up to {MAX_TOKENS} "
            f"tokens (tokens per round {s['tokens']}; same text raw vs served: {s['same_text']})"
        )
        print(
            f"  raw llama.cpp decode      median {s['raw_tps']:6.1f} tok/s, best {s['raw_best_tps']:6.1f}, "
            f"TTFT {s['raw_ttft_ms']:6.1f} ms"
        )
        print(
            f"  streamed through Flask    median {s['served_tps']:6.1f} tok/s, best {s['served_best_tps']:6.1f}, "
            f"TTFT {s['served_ttft_ms']:6.1f} ms (client-side: HTTP, checks, tokenization, prefill)"
        )
        verdict = "meets" if s["ratio"] >= 0.95 else "BELOW"
        print(
            f"  ratio served/raw          {s['ratio']:.3f}x median of rounds ({verdict} the 0.95x target), "
            f"{s['best_ratio']:.3f}x best vs best; rounds {', '.join(f'{x:.2f}' for x in s['round_ratios'])}"
        )
    s = r["single"][0]  # one thread: the steadiest yardstick for the crowd runs
    for c in r["concurrent"]:
        print(
            f"{c['clients']} concurrent streaming clients, {c['slots']} slot(s) x {c['threads']} thread(s), "
            f"{CLIENT_TOKENS} tokens each:"
        )
        print(
            f"  aggregate {c['aggregate_tps']:.1f} tok/s ({c['aggregate_tps'] / s['raw_tps']:.2f}x one raw stream), "
            f"TTFT p50 {c['ttft_p50_ms']:.0f} ms, p95 {c['ttft_p95_ms']:.0f} ms, errors {c['errors']}, "
            f"wall {c['wall_s']:.1f} s"
        )
    rs = r["restart"]
    print(
        f"engine crash (SIGKILL of the engine process, {rs['rounds']} rounds, 1 slot x 1 thread): ready again "
        f"after {rs['ready_s']:.2f} s, next answer {rs['answer_s']:.2f} s after the kill (median); restarts "
        f"counted {rs['restarts']}; site answered throughout: {rs['site_answered_throughout']}"
    )
    f = r["france"]
    print(f"greedy answer to {FRANCE!r}:")
    print(f"  server  (llama.cpp, GGUF)   {f['server']!r}")
    print(f"  browser ({f['browser_source']}) {f['browser']!r}")


def main(argv=None) -> None:
    cli("python -m bench.fallback_bench", run, report, argv)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
