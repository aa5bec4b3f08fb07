"""Fallback configuration, read once from app.config (LANTERN_* env vars arrive there without the prefix).

Environment values arrive as the raw strings the operator wrote (create_app never JSON-decodes them, so
a key `1e3` stays `1e3` and `null` is not "no keys"); config dicts may also hold typed values (tests).
Everything is coerced and range-checked here so a bad setting fails at start, not mid-request.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

# Values that mean "nothing" in some other notation; as a secret they are a mistake, never a key.
_EMPTY_WORDS = ("", "null", "none", "[]", '""', "''")


class ConfigError(ValueError):
    """A LANTERN_* setting has an unusable value."""


def _bool(name, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"LANTERN_{name} must be true/false, not {value!r}")


def _number(name, value, kind, minimum):
    try:
        if isinstance(value, bool):
            raise ValueError
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"LANTERN_{name} must be a {kind.__name__}, not {value!r}") from None
    if number < minimum:
        raise ConfigError(f"LANTERN_{name} must be at least {minimum}, not {number}")
    return number


def _text(value) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _secret(name: str, value) -> str | None:
    """A secret (or a secret's file) as given. Unset is None; set but empty or `null` stops the start,
    because reading it as "unset" would quietly turn auth off (or send no key upstream)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"LANTERN_{name} must be a string, not {type(value).__name__}")
    text = value.strip()
    if text.lower() in _EMPTY_WORDS:
        raise ConfigError(
            f"LANTERN_{name} is set but holds no value ({value!r}); give a value, or unset the variable to leave it off"
        )
    return text


def _keys(value) -> tuple[str, ...]:
    """API keys: one string with keys separated by commas or whitespace, a JSON list of strings
    (`["k1", "k2"]`), or a list (config dicts). Each key is taken verbatim, never JSON-decoded."""
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _EMPTY_WORDS:
            value = []
        elif text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise ConfigError(
                    'LANTERN_API_KEYS starts with "[" but is not a JSON list of strings; write'
                    ' ["key1", "key2"] or separate the keys with commas'
                ) from None
        else:
            value = text.replace(",", " ").split()
    if not isinstance(value, (list, tuple)) or not all(isinstance(k, str) for k in value):
        raise ConfigError("LANTERN_API_KEYS must list keys as strings (commas or spaces between them)")
    keys = tuple(k.strip() for k in value if k.strip())
    if not keys:
        raise ConfigError(
            "LANTERN_API_KEYS is set but holds no key; give at least one key, or unset the variable to leave"
            " the API open"
        )
    return keys


@dataclass(frozen=True)
class Settings:
    enabled: bool = True
    upstream: str | None = None  # OpenAI-compatible base URL (…/v1); set = proxy mode
    upstream_model: str | None = None  # model name sent upstream (default: the Lantern model id)
    upstream_api_key: str | None = None  # bearer token Lantern sends upstream
    model: str | None = None  # Lantern model id to serve (default: the default model config)
    gguf: str | None = None  # explicit GGUF path (default: dist/models/<id>/model.gguf, else the source GGUF)
    threads: int = 1  # llama.cpp threads per generation slot
    preload: bool = True  # start the engine process with the site (else on first use)
    ready_wait: float = 15.0  # seconds a request waits for a starting/restarting engine before 503
    api_keys: tuple[str, ...] = ()
    api_keys_file: str | None = None
    max_concurrent: int = 2
    max_queue: int = 8
    max_per_client: int = 4  # running + queued requests one client (API key, else address) may have
    max_tokens_cap: int = 1024
    request_timeout: float = 120.0

    @property
    def proxy(self) -> bool:
        return self.upstream is not None


def _default_threads(max_concurrent: int) -> int:
    """Split the cores among the slots: llama.cpp slows down badly when threads outnumber cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max_concurrent)


def load_settings(config) -> Settings:
    """Settings from a Flask config mapping (keys without the LANTERN_ prefix)."""
    get = config.get
    max_concurrent = _number("MAX_CONCURRENT", get("MAX_CONCURRENT", 2), int, 1)
    threads = get("FALLBACK_THREADS")
    return Settings(
        enabled=_bool("FALLBACK_ENABLED", get("FALLBACK_ENABLED", True)),
        upstream=_text(get("FALLBACK_UPSTREAM")),
        upstream_model=_text(get("FALLBACK_UPSTREAM_MODEL")),
        upstream_api_key=_secret("FALLBACK_UPSTREAM_API_KEY", get("FALLBACK_UPSTREAM_API_KEY")),
        model=_text(get("FALLBACK_MODEL")),
        gguf=_text(get("FALLBACK_GGUF")),
        threads=_number("FALLBACK_THREADS", threads, int, 1)
        if threads is not None
        else _default_threads(max_concurrent),
        preload=_bool("FALLBACK_PRELOAD", get("FALLBACK_PRELOAD", True)),
        ready_wait=_number("FALLBACK_READY_WAIT", get("FALLBACK_READY_WAIT", 15.0), float, 0.0),
        api_keys=_keys(get("API_KEYS")),
        api_keys_file=_secret("API_KEYS_FILE", get("API_KEYS_FILE")),
        max_concurrent=max_concurrent,
        max_queue=_number("MAX_QUEUE", get("MAX_QUEUE", 8), int, 0),
        max_per_client=_number("MAX_PER_CLIENT", get("MAX_PER_CLIENT", 4), int, 1),
        max_tokens_cap=_number("MAX_TOKENS_CAP", get("MAX_TOKENS_CAP", 1024), int, 1),
        request_timeout=_number("REQUEST_TIMEOUT", get("REQUEST_TIMEOUT", 120.0), float, 0.1),
    )
