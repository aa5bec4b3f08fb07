"""One generation, as both engines run it: the checked request turned into limits and sampling values.

Defaults come from the model's chat config (what web-llm uses when a request leaves them out), and the
limits are enforced before a slot is taken, so a request that cannot run never waits in the queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from webapp.fallback.errors import APIError, invalid
from webapp.fallback.schema import ChatRequest


class GenerationTimeout(Exception):
    """The per-request deadline passed while generating."""


class ClientGone(Exception):
    """The client closed its connection; stop spending compute on it."""


@dataclass
class Job:
    request: ChatRequest
    deadline: float  # time.monotonic() by which the whole request must be done
    max_tokens: int
    stop: list[str]
    temperature: float | None
    top_p: float | None
    prompt_ids: list[int] | None = None  # None when no local tokenizer (proxy without a built model)
    # Filled in while running:
    prompt_tokens: int | None = None
    completion_tokens: int = 0
    finish_reason: str | None = None
    first_token_at: float | None = None
    upstream_usage: dict | None = field(default=None, repr=False)


def make_job(req: ChatRequest, fmt, max_tokens_cap: int, deadline: float) -> Job:
    """Check the request against the model's context and the server's cap; fill in the model's defaults."""
    if req.max_tokens is not None and req.max_tokens > max_tokens_cap:
        raise invalid(
            f"'max_tokens' is {req.max_tokens}, more than this server allows ({max_tokens_cap}).",
            "max_tokens",
            "max_tokens_too_large",
        )
    limit = min(req.max_tokens or max_tokens_cap, max_tokens_cap)
    if fmt is None:
        return Job(req, deadline, limit, list(req.stop), req.temperature, req.top_p)
    ids = fmt.encode(req.messages)
    room = fmt.context_window - len(ids)
    if room < 1:
        raise APIError(
            400,
            f"This model's maximum context length is {fmt.context_window} tokens, but the "
            f"messages use {len(ids)} tokens. Shorten the conversation.",
            param="messages",
            code="context_length_exceeded",
        )
    return Job(
        req,
        deadline,
        max_tokens=min(limit, room),
        stop=list(dict.fromkeys([*req.stop, *fmt.stop_strings])),
        temperature=fmt.temperature if req.temperature is None else req.temperature,
        top_p=fmt.top_p if req.top_p is None else req.top_p,
        prompt_ids=ids,
        prompt_tokens=len(ids),
    )
