"""Proxy engine: forward generations to an OpenAI-compatible upstream (llama.cpp's llama-server,
`python -m llama_cpp.server`, vLLM, ...) and stream its answer back through Lantern's own API.

Lantern keeps doing everything a public endpoint needs (auth, validation, limits, metrics, privacy);
the upstream only generates. It is always asked to stream, whatever the client wants: one code path,
a first-token time for the metrics, and closing the connection is how a client disconnect or a
timeout stops the upstream's generation. Stdlib http.client keeps this free of extra dependencies.
"""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit

from webapp.fallback.background import BackgroundLoad
from webapp.fallback.chat_format import ChatFormat
from webapp.fallback.errors import APIError
from webapp.fallback.job import ClientGone, GenerationTimeout, Job
from webapp.fallback.model_files import load_chat_files

PROBE_TTL_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 2.0
MAX_ERROR_BODY = 64 * 1024


def split_base_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path prefix) of an upstream base URL; a bare host:port gets `/v1`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"LANTERN_FALLBACK_UPSTREAM must be an http(s) URL, not {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    prefix = parts.path.rstrip("/") or "/v1"
    return parts.scheme, parts.hostname, port, prefix


class UpstreamEngine(BackgroundLoad):
    kind = "upstream"

    def __init__(self, ref, settings):
        super().__init__()
        self.ref = ref
        self.scheme, self.host, self.port, self.prefix = split_base_url(settings.upstream)
        self.upstream_model = settings.upstream_model or ref.id
        self.api_key = settings.upstream_api_key
        self.format: ChatFormat | None = None
        self._probe: tuple[float, bool, str | None] | None = None

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.prefix}"

    # -- lifecycle ---------------------------------------------------------------------------
    def _load(self) -> None:
        """The local chat format (if the model is built here) lets Lantern count tokens and check context."""
        try:
            self.format = ChatFormat(*load_chat_files(self.ref))
        except Exception:  # noqa: BLE001 - optional: without it the upstream enforces its own context
            self.format = None
        self._state = "ready"
        self._done.set()

    def wait_ready(self, deadline: float) -> None:
        self.start()
        self._done.wait(max(0.0, deadline - time.monotonic()))

    def _connection(self, timeout: float):
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout)

    def _headers(self, slot: int | None = None) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _broken(self, what: str) -> APIError:
        """The error for an upstream that failed mid-request (`what` happened); subclasses say more."""
        messages = {
            "unreachable": "The upstream server is unreachable.",
            "broke_off": "The upstream server broke off the answer.",
            "ended_early": "The upstream server ended the answer early.",
        }
        code = "upstream_unavailable" if what == "unreachable" else "upstream_error"
        return APIError(502, messages[what], type="server_error", code=code)

    def _reachable(self) -> tuple[bool, str | None]:
        now = time.monotonic()
        if self._probe and now - self._probe[0] < PROBE_TTL_SECONDS:
            return self._probe[1], self._probe[2]
        conn = self._connection(PROBE_TIMEOUT_SECONDS)
        try:
            conn.request("GET", f"{self.prefix}/models", headers=self._headers())
            resp = conn.getresponse()
            resp.read(MAX_ERROR_BODY)
            ok, err = resp.status == 200, None if resp.status == 200 else f"GET /models answered {resp.status}"
        except OSError as exc:
            ok, err = False, f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        self._probe = (now, ok, err)
        return ok, err

    def status(self) -> tuple[bool, dict]:
        ok, err = self._reachable()
        detail = {
            "engine": self.kind,
            "state": self.state,
            "model": self.ref.id,
            "upstream": self.base_url,
            "upstream_model": self.upstream_model,
            "reachable": ok,
            "local_tokenizer": self.format is not None,
        }
        if err:
            detail["error"] = err
        return ok, detail

    def close(self) -> None:
        return None

    # -- generation --------------------------------------------------------------------------
    def _payload(self, job: Job) -> dict:
        req = job.request
        body = {
            "model": self.upstream_model,
            "messages": [{"role": role, "content": content} for role, content in req.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": job.max_tokens,
        }
        optional = {
            "temperature": job.temperature,
            "top_p": job.top_p,
            "seed": req.seed,
            "stop": job.stop or None,
            "frequency_penalty": req.frequency_penalty or None,
            "presence_penalty": req.presence_penalty or None,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        # Sample the way web-llm does (temperature + top_p only). llama.cpp-based servers otherwise add
        # top_k 40, min_p 0.05 and a 1.1 repeat penalty, so even greedy answers would differ.
        body.update(top_k=0, min_p=0.0, repeat_penalty=self.format.repetition_penalty if self.format else 1.0)
        return body

    def generate(self, job: Job, slot: int, client_gone=None):
        """Send the request now (so an upstream refusal becomes this request's status), then stream pieces."""
        remaining = job.deadline - time.monotonic()
        conn = self._connection(max(0.1, remaining))
        try:
            conn.request(
                "POST",
                f"{self.prefix}/chat/completions",
                body=json.dumps(self._payload(job)),
                headers=self._headers(slot),
            )
            resp = conn.getresponse()
        except TimeoutError:
            conn.close()
            raise APIError(
                504, "The upstream server did not answer in time.", type="server_error", code="upstream_timeout"
            ) from None
        except OSError:
            conn.close()
            raise self._broken("unreachable") from None
        if resp.status != 200:
            err = _upstream_error(resp)
            conn.close()
            raise err
        return _Answer(self._pieces(job, conn, resp, client_gone), conn)

    def _pieces(self, job: Job, conn, resp, client_gone):
        done = False
        try:
            while not done:
                remaining = job.deadline - time.monotonic()
                if remaining <= 0:
                    raise GenerationTimeout()
                if conn.sock is not None:
                    conn.sock.settimeout(remaining)
                try:
                    line = resp.readline()
                except TimeoutError:
                    raise GenerationTimeout() from None
                except (OSError, http.client.HTTPException):
                    raise self._broken("broke_off") from None
                if not line:
                    # Some servers answer 200 and then fail (llama_cpp.server on a prompt over its context).
                    raise self._broken("ended_early")
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    continue
                text = self._apply_chunk(job, data)
                if text:
                    yield text
                if client_gone is not None and client_gone():
                    raise ClientGone()
        finally:
            conn.close()  # on disconnect/timeout this is what makes the upstream stop generating
        if job.finish_reason is None:
            job.finish_reason = "stop"

    def _apply_chunk(self, job: Job, data: bytes) -> str:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise APIError(
                502, "The upstream server sent a malformed event.", type="server_error", code="upstream_error"
            ) from None
        if "error" in chunk:
            message = (chunk["error"] or {}).get("message") if isinstance(chunk["error"], dict) else None
            raise APIError(
                502,
                f"The upstream server failed: {message or 'unknown error'}",
                type="server_error",
                code="upstream_error",
            )
        if isinstance(chunk.get("usage"), dict):
            job.upstream_usage = chunk["usage"]
        text = ""
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str) and delta["content"]:
                text += delta["content"]
                job.completion_tokens += 1  # one content event per token, unless usage says otherwise
                if job.first_token_at is None:
                    job.first_token_at = time.monotonic()
            if choice.get("finish_reason"):
                job.finish_reason = choice["finish_reason"]
        if job.upstream_usage:
            job.completion_tokens = int(job.upstream_usage.get("completion_tokens") or job.completion_tokens)
            if job.prompt_tokens is None and job.upstream_usage.get("prompt_tokens") is not None:
                job.prompt_tokens = int(job.upstream_usage["prompt_tokens"])
        return text


class _Answer:
    """The upstream's streamed pieces; close() hangs up even if reading never started (a generator
    closed before its first step never runs its cleanup)."""

    def __init__(self, pieces, conn):
        self._pieces, self._conn = pieces, conn

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._pieces)

    def close(self) -> None:
        self._pieces.close()
        self._conn.close()


def _upstream_error(resp) -> APIError:
    """Relay an upstream refusal: client errors keep their status, server errors become 502."""
    raw = resp.read(MAX_ERROR_BODY)
    message = None
    try:
        body = json.loads(raw)
        err = body.get("error") if isinstance(body, dict) else None
        message = err.get("message") if isinstance(err, dict) else (err if isinstance(err, str) else None)
        if message is None and isinstance(body, dict) and isinstance(body.get("detail"), str):
            message = body["detail"]
    except ValueError:
        pass
    # The client's request was refused: keep the status. Lantern's own credentials refused, or the
    # upstream broken: that is this server's failure (502), not the client's.
    status = resp.status if 400 <= resp.status < 500 and resp.status not in (401, 403) else 502
    headers = {}
    if resp.status in (429, 503) and resp.getheader("Retry-After"):
        headers["Retry-After"] = resp.getheader("Retry-After")
    return APIError(
        status,
        f"The upstream server refused the request ({resp.status}): {message or 'no detail'}",
        type="invalid_request_error" if status < 500 else "server_error",
        code="upstream_error",
        headers=headers,
    )
