"""What other web pages and hostile settings cannot do to the site (issue 20): answer a foreign Host (DNS
rebinding), read /healthz's details from outside, widen the CSP through the files base URL, or turn auth
off with a JSON-ish `LANTERN_API_KEYS`. Real app (create_app) through Flask's test client; the engine
never starts (no request here reaches it)."""

from __future__ import annotations

import pytest

from webapp import create_app
from webapp.fallback.settings import ConfigError

REMOTE = {"REMOTE_ADDR": "203.0.113.9"}  # a client on another machine (TEST-NET-3)


def app_for(models_dir, **config):
    return create_app({"MODELS_DIR": str(models_dir), "TESTING": True, "FALLBACK_PRELOAD": False, **config})


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("LANTERN_API_KEYS", "LANTERN_API_KEYS_FILE", "LANTERN_TRUSTED_HOSTS"):
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------------------------------ trusted hosts
def test_a_foreign_host_name_is_refused_by_default(tiny_site_models):
    """DNS rebinding: evil.example resolves to 127.0.0.1, so its page would be "same origin" with make run."""
    client = app_for(tiny_site_models).test_client()
    for path in ("/", "/api/models", "/healthz", "/v1/models"):
        r = client.get(path, headers={"Host": "evil.example"})
        assert r.status_code == 400, path
        err = r.get_json()["error"]
        assert err["code"] == "untrusted_host" and "LANTERN_TRUSTED_HOSTS" in err["message"]
    for host in ("localhost", "127.0.0.1:8000", "localhost:8000"):
        assert client.get("/api/models", headers={"Host": host}).status_code == 200, host


def test_trusted_hosts_from_the_environment(tiny_site_models, monkeypatch):
    monkeypatch.setenv("LANTERN_TRUSTED_HOSTS", "lantern.example.org, .mirror.example.net")
    client = app_for(tiny_site_models).test_client()
    for host in ("lantern.example.org", "lantern.example.org:443", "eu.mirror.example.net", "127.0.0.1:8000"):
        assert client.get("/api/models", headers={"Host": host}).status_code == 200, host
    for host in ("evil.example", "lantern.example.org.evil.example", "example.org"):
        assert client.get("/api/models", headers={"Host": host}).status_code == 400, host


@pytest.mark.parametrize("value", ["", "  ", "https://lantern.example.org", "*", "lantern.example.org/path"])
def test_a_bad_trusted_hosts_value_stops_the_start(tiny_site_models, monkeypatch, value):
    monkeypatch.setenv("LANTERN_TRUSTED_HOSTS", value)
    with pytest.raises(ValueError, match="LANTERN_TRUSTED_HOSTS"):
        app_for(tiny_site_models)


# ------------------------------------------------------------------------------------------------ /healthz
def test_healthz_tells_outsiders_the_status_only(tiny_site_models):
    client = app_for(tiny_site_models).test_client()
    outside = client.get("/healthz", environ_base=REMOTE)
    assert outside.status_code == 200 and outside.get_json() == {"status": "ok"}
    # Relayed by a reverse proxy on this machine: the client is still outside.
    relayed = client.get("/healthz", headers={"X-Forwarded-For": "203.0.113.9"})
    assert relayed.get_json() == {"status": "ok"}
    # Same proxy, public name as Host (nginx `proxy_set_header Host $host`), no forwarding header.
    public = app_for(tiny_site_models, TRUSTED_HOSTS="lantern.example.org").test_client()
    assert public.get("/healthz", headers={"Host": "lantern.example.org"}).get_json() == {"status": "ok"}
    # On this machine itself (an operator's curl, a local load balancer probe): the details.
    local = client.get("/healthz").get_json()
    assert local["status"] == "ok" and {c["name"] for c in local["checks"]} >= {"artifacts", "fallback"}


def test_healthz_details_for_a_valid_key(tiny_site_models):
    client = app_for(tiny_site_models, API_KEYS="health-key-0001").test_client()
    assert client.get("/healthz", environ_base=REMOTE).get_json() == {"status": "ok"}
    wrong = client.get("/healthz", environ_base=REMOTE, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 200 and wrong.get_json() == {"status": "ok"}
    keyed = client.get("/healthz", environ_base=REMOTE, headers={"Authorization": "Bearer health-key-0001"})
    assert "checks" in keyed.get_json()


def test_unhealthy_status_is_public_without_details(tmp_path):
    missing = tmp_path / "no-such-models-dir"
    r = app_for(missing, FALLBACK_ENABLED=False).test_client().get("/healthz", environ_base=REMOTE)
    assert r.status_code == 503 and r.get_json() == {"status": "unavailable"}


# ----------------------------------------------------------------------------------- POST bodies: JSON only
@pytest.mark.parametrize(
    "content_type,data",
    [
        ("text/plain", '{"messages": [{"role": "user", "content": "hi"}]}'),
        ("application/x-www-form-urlencoded", "messages=hi"),
        ("multipart/form-data; boundary=x", "--x--"),
        (None, '{"messages": [{"role": "user", "content": "hi"}]}'),
    ],
    ids=["text-plain", "form", "multipart", "none"],
)
def test_api_posts_must_be_json(tiny_site_models, content_type, data):
    """What a cross-site page may send without a CORS preflight is refused before anything runs."""
    client = app_for(tiny_site_models).test_client()
    headers = {"Content-Type": content_type} if content_type else {}
    r = client.post("/v1/chat/completions", data=data, headers=headers)
    assert r.status_code == 415
    err = r.get_json()["error"]
    assert err["code"] == "unsupported_media_type" and "application/json" in err["message"]
    assert set(err) == {"message", "type", "param", "code"}
    engine = client.application.extensions["lantern_fallback"].engine
    assert engine.state == "idle"  # nothing started the engine


# ----------------------------------------------------------------------------------- files base URL
@pytest.mark.parametrize(
    "base,why",
    [
        ("https://*", "wildcard"),
        ("https://*.example.org", "wildcard"),
        ("https://cdn.example.org; connect-src *", "Content-Security-Policy"),
        ("https://cdn.example.org;script-src", "Content-Security-Policy"),
        ("https://cdn.example.org/ https://evil.example", "Content-Security-Policy"),
        ("https://cdn_1.example.org", "not a plain host name or IP address"),
        ("https://user:secret@cdn.example.org", "user name or password"),
        ("http://cdn.example.org", "use https"),
        ("https://cdn.example.org/lantern", "no path"),
        ("https://cdn.example.org/?x=1", "no path, query"),
        ("https://cdn.example.org:99999", "port"),
        ("javascript:alert(1)", "https://"),
        ("cdn.example.org", "https://"),
    ],
)
def test_files_base_url_must_be_a_plain_origin(tiny_site_models, base, why):
    with pytest.raises(ValueError, match="LANTERN_MODEL_FILES_BASE_URL") as refused:
        app_for(tiny_site_models, MODEL_FILES_BASE_URL=base)
    assert why in str(refused.value)


ALLOWED_BASES = [
    ("https://cdn.example.org", "https://cdn.example.org"),
    ("https://CDN.example.org:8443/", "https://cdn.example.org:8443"),  # normalised: the CSP gets the origin
    ("http://127.0.0.1:9000/", "http://127.0.0.1:9000"),  # plain http on loopback (the page tests' CDN)
    ("http://localhost:9000", "http://localhost:9000"),
]


def test_files_base_url_allows_exactly_that_origin(tiny_site_models):
    for base, origin in ALLOWED_BASES:
        client = app_for(tiny_site_models, MODEL_FILES_BASE_URL=base).test_client()
        r = client.get("/api/models")
        policy = dict(d.strip().split(" ", 1) for d in r.headers["Content-Security-Policy"].split(";"))
        assert policy["connect-src"] == f"'self' {origin}", base
        variant = r.get_json()["models"][0]["variants"][0]
        assert variant["base_url"].startswith(origin + "/models/"), base


def test_files_base_url_from_the_environment_is_checked(tiny_site_models, monkeypatch):
    monkeypatch.setenv("LANTERN_MODEL_FILES_BASE_URL", "https://*")
    with pytest.raises(ValueError, match="wildcard"):
        app_for(tiny_site_models)


# ----------------------------------------------------------------------------------- secrets: raw strings
@pytest.mark.parametrize("value", ["", "   ", "null", "NULL", "None", "[]", '""', ", ,"])
def test_set_but_empty_api_keys_stop_the_start(tiny_site_models, monkeypatch, value):
    """Read as "no keys", these would quietly leave the API open."""
    monkeypatch.setenv("LANTERN_API_KEYS", value)
    with pytest.raises(ConfigError, match="LANTERN_API_KEYS is set but holds no"):
        app_for(tiny_site_models)


@pytest.mark.parametrize("name", ["LANTERN_API_KEYS_FILE", "LANTERN_FALLBACK_UPSTREAM_API_KEY"])
@pytest.mark.parametrize("value", ["", "null"])
def test_other_secrets_set_but_empty_stop_the_start(tiny_site_models, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"{name} is set but holds no value"):
        app_for(tiny_site_models)


def test_a_json_list_of_keys_must_hold_strings(tiny_site_models, monkeypatch):
    monkeypatch.setenv("LANTERN_API_KEYS", "[1000, true]")
    with pytest.raises(ConfigError, match="LANTERN_API_KEYS must list keys as strings"):
        app_for(tiny_site_models)


@pytest.mark.parametrize("value", ["-1", "one", "1.5", "99", ""])
def test_a_bad_proxy_hops_value_stops_the_start(tmp_path, value):
    with pytest.raises(ValueError, match="LANTERN_PROXY_HOPS"):
        create_app({"MODELS_DIR": str(tmp_path), "PROXY_HOPS": value})
