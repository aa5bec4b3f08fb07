"""Parse and check a `POST /v1/chat/completions` body (OpenAI schema, the subset both engines honour).

The rules mirror web-llm's where they differ from OpenAI's (system message only first, last message
from the user), so a conversation the page can run locally is exactly one the server accepts.
Unknown fields are ignored, as OpenAI clients send many optional ones; features neither engine offers
(tools, n > 1, logprobs, JSON mode) are refused rather than silently dropped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from webapp.fallback.errors import APIError, invalid

ROLES = ("system", "user", "assistant")
MAX_STOP = 4


@dataclass
class ChatRequest:
    model: str | None
    messages: list[tuple[str, str]]
    stream: bool = False
    include_usage: bool = False
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0


def _type_name(value) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _wrong_type(param: str, expected: str, value) -> APIError:
    return invalid(f"'{param}' must be {expected}, got {_type_name(value)}.", param, "invalid_type")


def _number(body: dict, name: str, low: float, high: float, low_open: bool = False):
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _wrong_type(name, "a number", value)
    if value < low or value > high or (low_open and value == low):
        bound = f"greater than {low}" if low_open else f"at least {low}"
        raise invalid(f"'{name}' must be {bound} and at most {high}, got {value}.", name)
    return float(value)


def _integer(body: dict, name: str):
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(name, "an integer", value)
    return value


def _text(value: str, param: str) -> str:
    """A string the tokenizer and the engine can take: JSON's `\\ud800` escapes decode to lone UTF-16
    surrogates, which are not Unicode text and cannot be encoded (they would fail deep in the tokenizer)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(
            f"'{param}' contains an unpaired UTF-16 surrogate escape (such as \\ud800), which is not valid"
            " Unicode text; send well-formed text (a surrogate pair, or the character itself).",
            param,
        ) from None
    return value


def _content(value, i: int) -> str:
    param = f"messages[{i}].content"
    if isinstance(value, str):
        return _text(value, param)
    if isinstance(value, list):  # content parts: only text is supported
        texts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise invalid(
                    f'\'{param}[{j}]\' must be a text part ({{"type": "text", "text": ...}}); only text is supported.',
                    param,
                    "invalid_type",
                )
            texts.append(_text(part["text"], f"{param}[{j}].text"))
        return "".join(texts)
    raise _wrong_type(param, "a string or an array of text parts", value)


def _messages(value) -> list[tuple[str, str]]:
    if value is None:
        raise invalid("'messages' is required.", "messages", "missing_required_parameter")
    if not isinstance(value, list):
        raise _wrong_type("messages", "an array", value)
    if not value:
        raise invalid("'messages' must contain at least one message.", "messages", "empty_array")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise _wrong_type(f"messages[{i}]", "an object", msg)
        role = msg.get("role")
        if not isinstance(role, str):
            raise _wrong_type(f"messages[{i}].role", "a string", role)
        if role not in ROLES:
            raise invalid(f"'messages[{i}].role' must be one of {', '.join(ROLES)}.", f"messages[{i}].role")
        if role == "system" and i != 0:
            raise invalid("A system message is only allowed as the first message.", f"messages[{i}].role")
        if "content" not in msg or msg["content"] is None:
            raise invalid(
                f"'messages[{i}].content' is required.", f"messages[{i}].content", "missing_required_parameter"
            )
        out.append((role, _content(msg["content"], i)))
    if out[-1][0] != "user":
        raise invalid("The last message must be from the user.", f"messages[{len(out) - 1}].role")
    return out


def _stop(value) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise _wrong_type("stop", "a string or an array of strings", value)
    if len(items) > MAX_STOP:
        raise invalid(f"'stop' may list at most {MAX_STOP} sequences.", "stop")
    if any(not s for s in items):
        raise invalid("'stop' sequences must not be empty.", "stop")
    return [_text(s, "stop") for s in items]


def _refuse_unsupported(body: dict) -> None:
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int)):
        raise _wrong_type("n", "an integer", n)
    if n not in (None, 1):
        raise invalid("Only n=1 is supported.", "n", "unsupported_value")
    for name in ("tools", "functions"):
        if body.get(name):
            raise invalid(f"'{name}' is not supported by this server.", name, "unsupported_parameter")
    if body.get("logprobs"):
        raise invalid("'logprobs' is not supported by this server.", "logprobs", "unsupported_parameter")
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") in (None, "text")):
        raise invalid('Only response_format {"type": "text"} is supported.', "response_format", "unsupported_value")


def parse_json_body(raw: bytes) -> dict:
    if not raw.strip():
        raise invalid("The request body must be a JSON object.", None, "invalid_json")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise invalid("We could not parse the JSON body of your request.", None, "invalid_json") from None
    except RecursionError:  # e.g. 100,000 `[`: Python's JSON parser recurses once per level
        raise invalid(
            "The JSON body is nested too deeply to parse; a chat request needs only a few levels.", None, "invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise invalid(f"The request body must be a JSON object, got {_type_name(body)}.", None, "invalid_json")
    return body


def parse_chat_request(raw: bytes) -> ChatRequest:
    body = parse_json_body(raw)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _wrong_type("model", "a string", model)
    if model is not None:
        _text(model, "model")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _wrong_type("stream", "a boolean", stream)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _wrong_type("stream_options", "an object", options)
    include_usage = (options or {}).get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise _wrong_type("stream_options.include_usage", "a boolean", include_usage)
    _refuse_unsupported(body)
    max_tokens = _integer(body, "max_tokens")
    if max_tokens is None:
        max_tokens = _integer(body, "max_completion_tokens")
    if max_tokens is not None and max_tokens < 1:
        raise invalid(f"'max_tokens' must be at least 1, got {max_tokens}.", "max_tokens")
    seed = _integer(body, "seed")
    return ChatRequest(
        model=model,
        messages=_messages(body.get("messages")),
        stream=stream,
        include_usage=include_usage,
        temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 0.0, 1.0, low_open=True),
        max_tokens=max_tokens,
        stop=_stop(body.get("stop")),
        seed=seed,
        frequency_penalty=_number(body, "frequency_penalty", -2.0, 2.0) or 0.0,
        presence_penalty=_number(body, "presence_penalty", -2.0, 2.0) or 0.0,
    )
