"""The site's own engine: llama.cpp on the model's GGUF, in a supervised child process.

To the API it is just an upstream that the site starts itself: the same streaming client as proxy
mode (engine_upstream) talks to it over loopback, so a native crash in llama.cpp ends one request with
a clear error instead of ending the site. What differs from a foreign upstream:

- the prompt goes as token ids made here with web-llm's prompt assembly, and the sampling values are
  the ones the site resolved, so both sides of the product answer alike;
- the request names its slot, so each slot keeps its llama.cpp context (and the KV prefix of its last
  conversation) in the engine process, and an opaque tag of its client, so that prefix is reused only
  for the same client (another client's request resets the slot: no cross-client timing channel);
- the engine's state (starting, ready, restarting, failed) comes from the supervisor, and a request
  that finds it not ready gets 503 + Retry-After after a short wait.
"""

from __future__ import annotations

import http.client
import math
import time

from build_pipeline.contract import SERVER_GGUF_FILE
from webapp.fallback.chat_format import ChatFormat
from webapp.fallback.engine_upstream import UpstreamEngine
from webapp.fallback.errors import APIError
from webapp.fallback.job import Job
from webapp.fallback.model_files import find_gguf, load_chat_files
from webapp.fallback.supervisor import EngineProcess

ENGINE_GRACE_SECONDS = 5.0  # the engine's own deadline trails the site's, which must fire first


class LocalEngine(UpstreamEngine):
    kind = "llama.cpp"

    def __init__(self, ref, settings):
        # No upstream URL: the port is the engine process's, known once it is ready (see _connection).
        self.ref = ref
        self.scheme, self.host, self.port, self.prefix = "http", "127.0.0.1", 0, "/v1"
        self.upstream_model = ref.id
        self.api_key = None
        self.format: ChatFormat | None = None
        self._probe = None
        self.slots = settings.max_concurrent
        self.threads = settings.threads
        self.ready_wait = settings.ready_wait
        self.gguf = find_gguf(ref, settings.gguf)
        self.restart_listeners: list = []
        self.process: EngineProcess | None = None
        self._format_error: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def state(self) -> str:
        if self._format_error:
            return "failed"
        return self.process.state if self.process is not None else "idle"

    @property
    def error(self) -> str | None:
        return self._format_error or (self.process.error if self.process is not None else None)

    def start(self) -> None:
        """Start the engine process (idempotent); the chat format is read here, once."""
        if self.process is not None or self._format_error:
            return
        try:
            if self.gguf is None or not self.gguf.is_file():
                raise FileNotFoundError(f"no GGUF for model {self.ref.id} (looked for {self.gguf or SERVER_GGUF_FILE})")
            self.format = ChatFormat(*load_chat_files(self.ref))
        except Exception as exc:  # noqa: BLE001 - reported in /healthz instead of crashing the site
            self._format_error = f"{type(exc).__name__}: {exc}"
            return
        self.process = EngineProcess(
            {
                "model": self.ref.id,
                "gguf": str(self.gguf),
                "n_ctx": self.format.context_window,
                "slots": self.slots,
                "threads": self.threads,
                "stop_token_ids": sorted(self.format.stop_token_ids),
                "repetition_penalty": self.format.repetition_penalty,
            },
            on_restart=self._restarted,
        )
        self.process.start()

    def _restarted(self) -> None:
        for listener in self.restart_listeners:
            listener()

    @property
    def restarts(self) -> int:
        return self.process.restarts if self.process is not None else 0

    def wait_ready(self, deadline: float) -> None:
        self.start()
        if self.process is not None:
            self.process.wait(min(self.ready_wait, deadline - time.monotonic()))
        state = self.state
        if state == "ready":
            return
        if state == "failed":
            raise APIError(
                503, "The server model is unavailable (see /healthz).", type="server_error", code="model_unavailable"
            )
        retry_after = 2
        process = self.process
        if state == "restarting" and process is not None and process.retry_at is not None:
            retry_after = max(1, math.ceil(process.retry_at - time.monotonic()) + 2)
        message = (
            "The server engine is restarting after a crash; retry shortly."
            if state == "restarting"
            else "The model is still loading; retry shortly."
        )
        raise APIError(
            503,
            message,
            type="server_error",
            code="engine_restarting" if state == "restarting" else "model_loading",
            headers={"Retry-After": str(retry_after)},
        )

    def status(self) -> tuple[bool, dict]:
        proc = self.process
        detail = {
            "engine": self.kind,
            "state": self.state,
            "model": self.ref.id,
            "gguf": str(self.gguf) if self.gguf else None,
            "slots": self.slots,
            "threads": self.threads,
            "isolated": True,
            "restarts": self.restarts,
        }
        if proc is not None and proc.ready is not None:
            detail.update(pid=proc.ready.pid, load_seconds=proc.ready.load_seconds, cpu_features=proc.ready.system_info)
        if proc is not None and proc.last_exit:
            detail["last_exit"] = proc.last_exit
        if self.error:
            detail["error"] = self.error
        if self.state == "idle" and (self.gguf is None or not self.gguf.is_file()):
            detail["error"] = "no GGUF file for this model (build it: python -m build_pipeline build ...)"
            return False, detail
        return self.state in ("idle", "ready"), detail

    def close(self) -> None:
        if self.process is not None:
            self.process.close()

    # -- generation --------------------------------------------------------------------------
    def _headers(self, slot: int | None = None) -> dict:
        headers = super()._headers(slot)
        assert self.process is not None  # requests reach the engine only after start()
        headers["Authorization"] = f"Bearer {self.process.token}"
        if slot is not None:
            headers["X-Lantern-Slot"] = str(slot)
        return headers

    def _payload(self, job: Job) -> dict:
        req = job.request
        return {
            "prompt_token_ids": job.prompt_ids,
            "max_tokens": job.max_tokens,
            "temperature": job.temperature,
            "top_p": job.top_p,
            "seed": req.seed,
            "stop": job.stop,
            "frequency_penalty": req.frequency_penalty,
            "presence_penalty": req.presence_penalty,
            "cache_owner": job.cache_tag,
            "timeout": max(0.1, job.deadline - time.monotonic()) + ENGINE_GRACE_SECONDS,
        }

    def _apply_chunk(self, job: Job, data: bytes) -> str:
        """As upstream, plus the engine's count of prompt tokens taken from the slot's cache."""
        text = super()._apply_chunk(job, data)
        details = (job.upstream_usage or {}).get("prompt_tokens_details")
        if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
            job.cached_tokens = details["cached_tokens"]
        return text

    def _broken(self, what: str) -> APIError:
        return APIError(
            503,
            "The server engine stopped while answering; it restarts by itself. Retry shortly.",
            type="server_error",
            code="engine_crashed",
            headers={"Retry-After": "2"},
        )

    def _connection(self, timeout: float):
        """A connection to the engine process that is running now (its port changes with each restart)."""
        ready = self.process.ready if self.process is not None else None
        if ready is None:
            raise self._broken("unreachable")
        return http.client.HTTPConnection(self.host, ready.port, timeout=timeout)
