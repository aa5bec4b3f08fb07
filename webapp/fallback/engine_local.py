"""The embedded engine: llama.cpp (llama-cpp-python) on the model's GGUF, one context per slot.

Loading happens in a background thread on first need (or at start with LANTERN_FALLBACK_PRELOAD), so
the site starts at once and /healthz can say "loading". The weights are memory-mapped, so N slots
share one copy; each slot owns only its KV cache, which also keeps the conversation prefix of its
last request (a follow-up turn in the same slot skips re-reading the shared history).
"""

from __future__ import annotations

import codecs
import secrets
import time

from webapp.fallback.background import BackgroundLoad
from webapp.fallback.chat_format import ChatFormat, StopScanner
from webapp.fallback.errors import APIError
from webapp.fallback.job import ClientGone, GenerationTimeout, Job
from webapp.fallback.model_files import find_gguf, load_chat_files

CLIENT_CHECK_SECONDS = 0.25


class LocalEngine(BackgroundLoad):
    kind = "llama.cpp"

    def __init__(self, ref, settings):
        super().__init__()
        self.ref = ref
        self.slots = settings.max_concurrent
        self.threads = settings.threads
        self.gguf = find_gguf(ref, settings.gguf)
        self.format: ChatFormat | None = None
        self.load_seconds: float | None = None
        self._llamas: list = []

    # -- lifecycle ---------------------------------------------------------------------------
    def _load(self) -> None:
        from llama_cpp import Llama

        started = time.monotonic()
        try:
            if self.gguf is None or not self.gguf.is_file():
                raise FileNotFoundError(f"no GGUF for model {self.ref.id} (looked for {self.gguf or 'model.gguf'})")
            fmt = ChatFormat(*load_chat_files(self.ref))
            llamas = [
                Llama(model_path=str(self.gguf), n_ctx=fmt.context_window, n_batch=512, n_threads=self.threads,
                      n_threads_batch=self.threads, verbose=False)
                for _ in range(self.slots)
            ]
            self.format, self._llamas = fmt, llamas
            self.load_seconds = time.monotonic() - started
            self.state = "ready"
        except Exception as exc:  # noqa: BLE001 - reported through /healthz and 503s
            self.error = f"{type(exc).__name__}: {exc}"
            self.state = "error"
        finally:
            self._done.set()

    def wait_ready(self, deadline: float) -> None:
        self.start()
        if not self._done.wait(max(0.0, deadline - time.monotonic())):
            raise APIError(503, "The model is still loading; retry shortly.", type="server_error",
                           code="model_loading", headers={"Retry-After": "2"})
        if self.state != "ready":
            raise APIError(503, "The server model is unavailable (see /healthz).", type="server_error",
                           code="model_unavailable")

    def status(self) -> tuple[bool, dict]:
        detail = {"engine": self.kind, "state": self.state, "model": self.ref.id,
                  "gguf": str(self.gguf) if self.gguf else None, "slots": self.slots, "threads": self.threads}
        if self.load_seconds is not None:
            detail["load_seconds"] = round(self.load_seconds, 3)
        if self.error:
            detail["error"] = self.error
        if self.state == "idle" and (self.gguf is None or not self.gguf.is_file()):
            detail["error"] = "no GGUF file for this model (build it: python -m build_pipeline build ...)"
            return False, detail
        return self.state in ("idle", "ready"), detail

    def close(self) -> None:
        for llm in self._llamas:
            llm.close()
        self._llamas = []

    # -- generation --------------------------------------------------------------------------
    def generate(self, job: Job, slot: int, client_gone=None):
        """Text pieces for `job` on the llama.cpp context of `slot`; sets job.finish_reason and counts."""
        return self._pieces(job, self._llamas[slot], client_gone)

    def _pieces(self, job: Job, llm, client_gone):
        fmt = self.format
        req = job.request
        seed = req.seed % (2**32) if req.seed is not None else secrets.randbits(32)
        llm.set_seed(seed)
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopScanner(job.stop)
        tokens = llm.generate(
            job.prompt_ids, temp=job.temperature, top_p=job.top_p, top_k=0, min_p=0.0, typical_p=1.0,
            repeat_penalty=fmt.repetition_penalty, frequency_penalty=req.frequency_penalty,
            presence_penalty=req.presence_penalty,
        )
        next_check = time.monotonic() + CLIENT_CHECK_SECONDS
        stopped_by_text = False
        try:
            for token in tokens:
                if job.first_token_at is None:
                    job.first_token_at = time.monotonic()
                if token in fmt.stop_token_ids:
                    job.finish_reason = "stop"
                    break
                job.completion_tokens += 1
                text, stopped_by_text = stops.push(utf8.decode(llm.detokenize([token])))
                if text:
                    yield text
                if stopped_by_text:
                    job.finish_reason = "stop"
                    break
                if job.completion_tokens >= job.max_tokens:
                    job.finish_reason = "length"
                    break
                now = time.monotonic()
                if now > job.deadline:
                    raise GenerationTimeout()
                if client_gone is not None and now >= next_check:
                    if client_gone():
                        raise ClientGone()
                    next_check = now + CLIENT_CHECK_SECONDS
        finally:
            tokens.close()
        if not stopped_by_text:
            tail = stops.flush() + utf8.decode(b"", final=True)
            if tail:
                yield tail
