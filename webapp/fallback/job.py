"""One generation, as both engines run it: the checked request turned into limits and sampling values.

Defaults come from the model's chat config (what web-llm uses when a request leaves them out). The
cheap limits (`check_limits`: max_tokens, and a prompt certain to overflow the context by its size
alone) are enforced before a slot is taken, so such a request never waits in the queue and never
costs a tokenizer pass; tokenizing (`make_job`) happens only once the request holds a slot, so a
flood of large bodies is bounded by the slots and the per-client limit like any other work.
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
    cache_tag: str = ""  # opaque client name: the engine reuses a slot's cached prefix only for the same tag
    cached_tokens: int | None = None  # prompt tokens the engine took from the slot's KV cache


def check_limits(req: ChatRequest, fmt, max_tokens_cap: int) -> None:
    """The checks that need no tokenizer pass: the max_tokens cap, and a prompt whose size alone proves it
    cannot fit the context (see ChatFormat.min_prompt_tokens for why that bound is safe)."""
    if req.max_tokens is not None and req.max_tokens > max_tokens_cap:
        raise invalid(
            f"'max_tokens' is {req.max_tokens}, more than this server allows ({max_tokens_cap}).",
            "max_tokens",
            "max_tokens_too_large",
        )
    if fmt is None:
        return
    at_least = fmt.min_prompt_tokens(req.messages)
    if at_least >= fmt.context_window:
        raise APIError(
            400,
            f"This model's maximum context length is {fmt.context_window} tokens, but the messages are "
            f"too long to fit: at least {at_least} tokens by their size alone. Shorten the conversation.",
            param="messages",
            code="context_length_exceeded",
        )


def make_job(req: ChatRequest, fmt, max_tokens_cap: int, deadline: float) -> Job:
    """Tokenize and check the request against the model's context and the server's cap; fill in the
    model's defaults. The tokenizer pass is the expensive part: call it with a slot held."""
    check_limits(req, fmt, max_tokens_cap)
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
