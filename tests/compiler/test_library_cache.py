"""The compiled-library cache stays bounded: least recently used entries go first, recent ones stay."""

from __future__ import annotations

import os
import time

from build_pipeline.compiler import cache


def _entry(key: str, last_used: float) -> None:
    with cache.staged_entry(key) as tmp:
        (tmp / "model.wasm").write_bytes(b"\0" * 1000)
        (tmp / cache.INFO_FILE).write_text("{}")
    info = cache.libs_root() / key / cache.INFO_FILE
    os.utime(info, (last_used, last_used))


def test_least_recently_used_libraries_are_pruned(tmp_path, monkeypatch):
    monkeypatch.setenv("LANTERN_CACHE_DIR", str(tmp_path))
    day = 86400
    now = time.time()
    _entry("old", now - 3 * day)
    _entry("mid", now - 2 * day)
    _entry("new", now - 1 * day)
    assert cache.lookup("old", "model.wasm")  # a reuse counts as a use: "old" is now the latest

    assert cache.prune(max_bytes=2500) == ["mid"]  # 3 x 1002 bytes -> 2 entries fit
    assert cache.lookup("mid", "model.wasm") is None
    assert not (cache.libs_root() / "mid").exists()
    assert cache.prune(max_bytes=2500) == []  # fits now

    # Over any limit, an entry used within the grace period stays (a build may be copying it).
    assert cache.prune(max_bytes=0) == ["new"]
    assert cache.lookup("old", "model.wasm")


def test_cache_limit_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LANTERN_CACHE_DIR", str(tmp_path))
    _entry("a", time.time() - 2 * cache.PRUNE_GRACE_SECONDS)
    monkeypatch.setenv("LANTERN_LIB_CACHE_MAX_MB", "1")
    assert cache.prune() == []
    monkeypatch.setenv("LANTERN_LIB_CACHE_MAX_MB", "0.0001")  # ~105 bytes
    assert cache.prune() == ["a"]
