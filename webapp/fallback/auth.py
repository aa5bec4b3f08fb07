"""Optional bearer API keys for the fallback API (LANTERN_API_KEYS and/or LANTERN_API_KEYS_FILE).

Keys are kept only as SHA-256 digests and every request is compared against every key with
hmac.compare_digest, so neither timing nor an early exit reveals how much of a key matched. The keys
file (one key per line, `#` comments) is re-read when it changes, so keys rotate without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading

from webapp.fallback.errors import APIError


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def read_keys_file(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        lines = (line.strip() for line in f)
        return [line for line in lines if line and not line.startswith("#")]


def bearer_token(authorization: str | None) -> str | None:
    """The key in `Authorization: Bearer <key>` (None when the header is absent or another scheme)."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class ApiKeys:
    def __init__(self, keys=(), keys_file: str | None = None):
        self._static = [_digest(k) for k in keys]
        self._file = keys_file
        self._file_stamp: tuple[int, int, int] | None = None
        self._file_digests: list[bytes] = []
        self._lock = threading.Lock()
        if keys_file:
            self._reload_file()  # a missing or unreadable file fails app start, not the first request

    @property
    def enabled(self) -> bool:
        return bool(self._static or self._file)

    def _reload_file(self) -> None:
        assert self._file  # only called when a keys file is configured
        st = os.stat(self._file)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._file_stamp:
            self._file_digests = [_digest(k) for k in read_keys_file(self._file)]
            self._file_stamp = stamp

    def _digests(self) -> list[bytes]:
        if self._file:
            with self._lock:
                try:
                    self._reload_file()
                except OSError:
                    pass  # keep the last good keys while the file is being replaced
            return self._static + self._file_digests
        return self._static

    def is_valid(self, token: str) -> bool:
        candidate = _digest(token)
        ok = False
        for digest in self._digests():
            ok |= hmac.compare_digest(candidate, digest)
        return ok

    def admits(self, authorization: str | None) -> bool:
        """Whether the Authorization header carries a valid bearer key (never true with no keys set)."""
        token = bearer_token(authorization)
        return self.enabled and token is not None and self.is_valid(token)

    def check(self, authorization: str | None) -> None:
        """Raise a 401 APIError unless the Authorization header carries a valid bearer key."""
        if not self.enabled:
            return
        token = bearer_token(authorization)
        if token is None:
            raise APIError(
                401,
                "Missing API key: send `Authorization: Bearer <key>`.",
                code="invalid_api_key",
                headers={"WWW-Authenticate": 'Bearer realm="lantern"'},
            )
        if not self.is_valid(token):
            raise APIError(
                401,
                "Incorrect API key provided.",
                code="invalid_api_key",
                headers={"WWW-Authenticate": 'Bearer realm="lantern", error="invalid_token"'},
            )
