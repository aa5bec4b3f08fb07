"""Optional bearer API keys: off by default; when on, several keys from env and/or file, 401 otherwise."""

from __future__ import annotations

import pytest

from testing.fallback import FRANCE, make_app, running
from webapp.fallback.auth import ApiKeys


@pytest.fixture(scope="module")
def models(smollm2_models):
    return smollm2_models


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def assert_401(reply) -> None:
    assert reply.status == 401
    assert reply.headers["www-authenticate"].startswith("Bearer")
    err = reply.json["error"]
    assert err["code"] == "invalid_api_key" and err["type"] == "invalid_request_error"
    assert set(err) == {"message", "type", "param", "code"}


def test_no_keys_configured_means_open(models):
    with running(make_app(models)) as c:
        assert c.get("/v1/models").status == 200
        assert c.get("/metrics").status == 200


def test_keys_from_the_environment(models, monkeypatch):
    monkeypatch.setenv("LANTERN_API_KEYS", "alpha-key-0001, beta-key-0002")
    with running(make_app(models)) as c:
        assert_401(c.get("/v1/models"))
        assert_401(c.get("/v1/models", {"Authorization": "Basic YWxwaGE6YmV0YQ=="}))
        assert_401(c.get("/v1/models", bearer("alpha-key-000")))  # a prefix of a key is not a key
        assert_401(c.get("/v1/models", bearer("wrong")))
        assert_401(c.get("/metrics"))
        for key in ("alpha-key-0001", "beta-key-0002"):
            assert c.get("/v1/models", bearer(key)).status == 200
            assert c.get("/metrics", bearer(key)).status == 200
        # Auth is checked before the body: an unauthenticated chat costs nothing.
        assert_401(c.chat(messages=FRANCE, max_tokens=2))
        ok = c.chat(messages=FRANCE, max_tokens=2, headers={"authorization": "bearer beta-key-0002"})
        assert ok.status == 200
        # /healthz stays public (load balancers probe it without credentials).
        assert c.get("/healthz").status == 200


def test_keys_file_and_rotation(models, tmp_path, monkeypatch):
    keys = tmp_path / "keys.txt"
    keys.write_text("# one key per line\nfile-key-one\n\nfile-key-two\n")
    monkeypatch.setenv("LANTERN_API_KEYS_FILE", str(keys))
    monkeypatch.setenv("LANTERN_API_KEYS", '["env-key"]')  # JSON list form also works
    with running(make_app(models)) as c:
        for key in ("file-key-one", "file-key-two", "env-key"):
            assert c.get("/v1/models", bearer(key)).status == 200
        assert_401(c.get("/v1/models", bearer("# one key per line")))
        keys.write_text("file-key-three\n")  # rotated: takes effect without a restart
        assert_401(c.get("/v1/models", bearer("file-key-one")))
        assert c.get("/v1/models", bearer("file-key-three")).status == 200


def test_missing_keys_file_fails_at_start(models, tmp_path):
    with pytest.raises(FileNotFoundError):
        make_app(models, API_KEYS_FILE=str(tmp_path / "nope.txt"))


def test_every_key_is_compared(monkeypatch):
    """The check runs compare_digest against every key, whichever matches (no early exit)."""
    import hmac

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    keys = ApiKeys(["k1", "k2", "k3"])
    assert keys.is_valid("k1") and len(calls) == 3
    calls.clear()
    assert not keys.is_valid("nope") and len(calls) == 3


@pytest.mark.parametrize(
    "env,key,lookalikes",
    [
        ("1e3", "1e3", ["1000.0", "1000"]),
        ("true", "true", ["True", "1"]),
    ],
    ids=["number-like", "boolean-like"],
)
def test_keys_from_the_environment_are_taken_verbatim(models, monkeypatch, env, key, lookalikes):
    """Never JSON-decoded: `1e3` is the key "1e3", not 1000.0; `true` is "true", not True."""
    monkeypatch.setenv("LANTERN_API_KEYS", env)
    with running(make_app(models, FALLBACK_PRELOAD=False)) as c:
        assert c.get("/metrics", bearer(key)).status == 200
        for other in lookalikes:
            assert_401(c.get("/metrics", bearer(other)))


@pytest.mark.parametrize("value", ["null", ""])
def test_api_keys_set_but_empty_refuse_to_start(models, monkeypatch, value):
    """`LANTERN_API_KEYS=null` used to mean "no keys": the API open to anyone, silently."""
    from webapp.fallback.settings import ConfigError

    monkeypatch.setenv("LANTERN_API_KEYS", value)
    with pytest.raises(ConfigError, match="LANTERN_API_KEYS is set but holds no key"):
        make_app(models)
