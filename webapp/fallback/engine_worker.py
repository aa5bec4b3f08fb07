"""The llama.cpp engine process: `python -m webapp.fallback.engine_worker` (started by the supervisor).

llama.cpp is native code; a crash in it (a bad instruction, a driver bug, llama.cpp issue 20824's AMX
fault) kills the process it runs in. Here that is this process, not the site: the supervisor sees it
die, fails the one request it was serving and starts a new one.

Protocol with the supervisor (webapp/fallback/supervisor.py):
- the configuration comes as one JSON argument; the bearer token every request must carry comes in
  the environment (LANTERN_ENGINE_TOKEN), so no other local user can drive the engine;
- once loaded, one JSON line on stdout: {"event": "ready", "port": N, ...}, or on a load error
  {"event": "error", "error": "..."} and exit status 3 (retrying will not help);
- stdin stays open while the supervisor lives: at EOF this process exits, so it never outlives the site.

HTTP on 127.0.0.1 only: `GET /v1/models` (liveness) and `POST /v1/chat/completions` whose body carries
the prompt as token ids (`prompt_token_ids`, made by the site with web-llm's exact prompt assembly),
the sampling values the site already resolved, and `cache_owner`, an opaque tag of the client; the
answer streams as OpenAI chunks, the site's upstream client reads it. Nothing here logs a request
body or generated text.

A slot's KV cache serves only the client that filled it: llama.cpp reuses the longest cached prefix,
so a prompt sharing a prefix with another client's would answer measurably faster and leak that
prefix through timing. A slot taken by another `cache_owner` is reset first. The usage event reports
`prompt_tokens_details.cached_tokens`: the prompt tokens llama.cpp did not have to evaluate, counted
from the tokens actually sent to `Llama.eval`, not inferred.
"""

from __future__ import annotations

import codecs
import json
import os
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from webapp.fallback.chat_format import StopScanner
from webapp.fallback.responses import DONE, Completion, event

TOKEN_ENV = "LANTERN_ENGINE_TOKEN"
LOAD_ERROR_EXIT = 3
MAX_BODY = 4 * 1024 * 1024


def load_llama(gguf: str, n_ctx: int, threads: int, **options):
    """A llama.cpp context on `gguf` without extra buffer types.

    Extra buffer types are llama.cpp's weight-repacking paths; on AMX Xeons one of them (the AMX
    repack) faults on the first matmul. llama-cpp-python's `Llama()` has no keyword for the field, so
    the default-params factory it calls is wrapped (in the calling process: the engine process, or a
    test or benchmark that runs llama.cpp itself).
    """
    import llama_cpp  # heavy: only the engine process loads llama.cpp
    import llama_cpp.llama_cpp as native

    default_params = native.llama_model_default_params
    if not getattr(default_params, "lantern_no_extra_bufts", False):

        def params_without_extra_bufts():
            params = default_params()
            params.use_extra_bufts = False
            return params

        params_without_extra_bufts.lantern_no_extra_bufts = True  # type: ignore[attr-defined]
        native.llama_model_default_params = params_without_extra_bufts
    options = {"n_batch": 512, "verbose": False, **options}
    return llama_cpp.Llama(model_path=gguf, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, **options)


def system_info() -> str:
    """llama.cpp's own list of the CPU features its build uses (e.g. "AVX2 = 1 | AVX512 = 0 | AMX_INT8 = 0")."""
    import llama_cpp  # heavy: only the engine process (or a benchmark) loads llama.cpp

    raw = llama_cpp.llama_print_system_info()
    return (raw.decode() if isinstance(raw, bytes) else str(raw)).strip()


class Engine:
    """N llama.cpp contexts on one memory-mapped GGUF, one per site slot (each keeps its KV prefix)."""

    def __init__(self, config: dict):
        self.model = config["model"]
        self.stop_token_ids = frozenset(int(i) for i in config["stop_token_ids"])
        self.repetition_penalty = float(config.get("repetition_penalty", 1.0))
        started = time.monotonic()
        self.slots = [
            load_llama(config["gguf"], int(config["n_ctx"]), int(config["threads"]))
            for _ in range(int(config["slots"]))
        ]
        self.locks = [threading.Lock() for _ in self.slots]
        self.owners: list[str | None] = [None for _ in self.slots]  # whose prompt each slot's KV cache holds
        self.evaluated = [0 for _ in self.slots]  # tokens each slot has sent to llama.cpp for decoding
        for slot, llm in enumerate(self.slots):
            llm.eval = self._counting_eval(slot, llm.eval)
        self.load_seconds = time.monotonic() - started

    def _counting_eval(self, slot: int, evaluate):
        """Wrap a context's `eval` to count the tokens llama.cpp really decodes (what prefix reuse saved)."""

        def counted(tokens):
            self.evaluated[slot] += len(tokens)
            return evaluate(tokens)

        return counted

    def claim(self, slot: int, owner: str) -> None:
        """Give `slot` to `owner`; a cache another client filled is dropped, so nothing of it is reused."""
        if self.owners[slot] != owner:
            self.slots[slot].reset()
            self.owners[slot] = owner

    def pieces(self, slot: int, body: dict, progress: dict):
        """Text pieces of one generation; `progress` receives finish_reason and token counts."""
        llm = self.slots[slot]
        self.claim(slot, str(body.get("cache_owner") or ""))
        seed = body.get("seed")
        llm.set_seed(int(seed) % (2**32) if seed is not None else secrets.randbits(32))
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopScanner(body.get("stop") or [])
        max_tokens = int(body["max_tokens"])
        deadline = time.monotonic() + float(body.get("timeout", 600))
        temperature = body.get("temperature")
        top_p = body.get("top_p")
        tokens = llm.generate(
            [int(t) for t in body["prompt_token_ids"]],
            temp=0.0 if temperature is None else float(temperature),
            top_p=1.0 if top_p is None else float(top_p),
            top_k=0,
            min_p=0.0,
            typical_p=1.0,
            repeat_penalty=self.repetition_penalty,
            frequency_penalty=float(body.get("frequency_penalty") or 0.0),
            presence_penalty=float(body.get("presence_penalty") or 0.0),
        )
        stopped_by_text = False
        prompt = len(body["prompt_token_ids"])
        before = self.evaluated[slot]
        try:
            for token in tokens:
                if progress["cached_tokens"] is None:  # the prompt is evaluated before the first token
                    progress["cached_tokens"] = max(0, prompt - (self.evaluated[slot] - before))
                if token in self.stop_token_ids:
                    progress["finish_reason"] = "stop"
                    break
                progress["completion_tokens"] += 1
                text, stopped_by_text = stops.push(utf8.decode(llm.detokenize([token])))
                if text:
                    yield text
                if stopped_by_text:
                    progress["finish_reason"] = "stop"
                    break
                if progress["completion_tokens"] >= max_tokens:
                    progress["finish_reason"] = "length"
                    break
                if time.monotonic() > deadline:
                    progress["finish_reason"] = "timeout"
                    break
        finally:
            tokens.close()
        if not stopped_by_text:
            tail = stops.flush() + utf8.decode(b"", final=True)
            if tail:
                yield tail


def make_handler(engine: Engine, token: str):
    expected = f"Bearer {token}"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection; the stream ends when it closes
        server_version = "lantern-engine"

        def log_message(self, format, *args):
            pass  # nothing about requests is logged here; the site keeps the access log

        def _authorized(self) -> bool:
            if secrets.compare_digest(self.headers.get("Authorization", ""), expected):
                return True
            self._json(
                401,
                {
                    "error": {
                        "message": "engine token required",
                        "type": "invalid_request_error",
                        "code": "unauthorized",
                    }
                },
            )
            return False

        def _json(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if not self._authorized():
                return
            if self.path != "/v1/models":
                return self._json(404, {"error": {"message": "unknown path", "code": "not_found"}})
            self._json(
                200,
                {
                    "object": "list",
                    "data": [{"id": engine.model, "object": "model"}],
                    "slots": len(engine.slots),
                    "pid": os.getpid(),
                },
            )

        def do_POST(self):
            if not self._authorized():
                return
            if self.path != "/v1/chat/completions":
                return self._json(404, {"error": {"message": "unknown path", "code": "not_found"}})
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._json(413, {"error": {"message": "body too large", "code": "request_too_large"}})
            try:
                body = json.loads(self.rfile.read(length))
                slot = int(self.headers.get("X-Lantern-Slot", "0"))
                if not 0 <= slot < len(engine.slots) or not isinstance(body.get("prompt_token_ids"), list):
                    raise ValueError
            except (ValueError, TypeError):
                return self._json(
                    400,
                    {
                        "error": {
                            "message": "expected prompt_token_ids and a valid slot",
                            "type": "invalid_request_error",
                            "code": "bad_engine_request",
                        }
                    },
                )
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            completion = Completion(engine.model, "lantern-llama.cpp")
            progress = {"completion_tokens": 0, "finish_reason": None, "cached_tokens": None}
            with engine.locks[slot]:
                pieces = engine.pieces(slot, body, progress)
                try:
                    for text in pieces:
                        self.wfile.write(completion.chunk({"content": text}))
                        self.wfile.flush()
                    self.wfile.write(completion.chunk({}, progress["finish_reason"] or "stop"))
                    usage = {
                        "prompt_tokens": len(body["prompt_token_ids"]),
                        "completion_tokens": progress["completion_tokens"],
                        "total_tokens": len(body["prompt_token_ids"]) + progress["completion_tokens"],
                        "prompt_tokens_details": {"cached_tokens": progress["cached_tokens"] or 0},
                    }
                    self.wfile.write(event({"choices": [], "usage": usage}))
                    self.wfile.write(DONE)
                except OSError:
                    pass  # the site hung up (client gone, timeout): stop generating
                finally:
                    pieces.close()

    return Handler


def _exit_when_supervisor_goes() -> None:
    """stdin is a pipe from the supervisor: EOF means it is gone, so this engine must go too."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    config = json.loads((argv if argv is not None else sys.argv[1:])[0])
    token = os.environ.pop(TOKEN_ENV, "")
    out = sys.stdout
    sys.stdout = sys.stderr  # stdout carries the protocol line alone
    threading.Thread(target=_exit_when_supervisor_goes, name="lantern-engine-parent-watch", daemon=True).start()
    if not token:
        out.write(json.dumps({"event": "error", "error": f"{TOKEN_ENV} is not set"}) + "\n")
        out.flush()
        return LOAD_ERROR_EXIT
    try:
        engine = Engine(config)
        info = system_info()
    except Exception as exc:  # noqa: BLE001 - any load failure is reported to the site
        out.write(json.dumps({"event": "error", "error": f"{type(exc).__name__}: {exc}"}) + "\n")
        out.flush()
        return LOAD_ERROR_EXIT
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(engine, token))
    server.daemon_threads = True
    out.write(
        json.dumps(
            {
                "event": "ready",
                "port": server.server_port,
                "pid": os.getpid(),
                "load_seconds": round(engine.load_seconds, 3),
                "system_info": info,
            }
        )
        + "\n"
    )
    out.flush()
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
