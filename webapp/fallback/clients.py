"""Who a request comes from, for the per-client limit and for the engine's per-client KV cache.

A client is its API key when keys are configured (the key was already checked, so a client cannot
invent new identities by sending made-up keys), else its remote address (`REMOTE_ADDR`; behind a
reverse proxy that is the proxy's unless LANTERN_PROXY_HOPS lets security.py take it from X-Forwarded-For).
Keys are kept only as digests; the engine process gets an opaque tag, salted per site process, so it
never sees an address or a key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

_TAG_SALT = secrets.token_bytes(16)


def client_key(remote_addr: str | None, authorization: str | None, keys_enabled: bool) -> str:
    """The identity the per-client limit counts: a key digest (keys on) or the remote address."""
    if keys_enabled:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return "key:" + hashlib.sha256(token.strip().encode()).hexdigest()
    return "addr:" + (remote_addr or "unknown")


def cache_tag(key: str) -> str:
    """An opaque, per-process name for `key` that the engine uses to keep one client's cache to itself."""
    return hmac.new(_TAG_SALT, key.encode(), hashlib.sha256).hexdigest()[:32]
