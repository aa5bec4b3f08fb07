"""OpenAI response shapes: the chat.completion object and the Server-Sent Events stream of chunks."""

from __future__ import annotations

import json
import secrets
import time


class Completion:
    """Identity shared by every chunk of one answer (id, creation time, model name)."""

    def __init__(self, model: str, fingerprint: str):
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.model = model
        self.fingerprint = fingerprint

    def _head(self, obj: str) -> dict:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
        }

    @staticmethod
    def usage(job) -> dict:
        prompt = job.prompt_tokens or 0
        return {
            "prompt_tokens": prompt,
            "completion_tokens": job.completion_tokens,
            "total_tokens": prompt + job.completion_tokens,
        }

    def full(self, job, text: str) -> dict:
        return {
            **self._head("chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": job.finish_reason,
                }
            ],
            "usage": self.usage(job),
        }

    def chunk(self, delta: dict, finish_reason: str | None = None) -> bytes:
        body = {
            **self._head("chat.completion.chunk"),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        return event(body)

    def usage_chunk(self, job) -> bytes:
        return event({**self._head("chat.completion.chunk"), "choices": [], "usage": self.usage(job)})


def event(data: dict) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
