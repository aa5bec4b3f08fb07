"""Security headers on every response (pages, artifacts, API, errors).

The CSP allows only this origin. The page needs exactly three extras: `'wasm-unsafe-eval'` so
WebAssembly.instantiate may compile the model library and web-llm's embedded tokenizer/grammar wasm,
`worker-src 'self'` for the engine's module worker, and `blob:` workers for the CPU tier: wllama starts
its llama.cpp worker and its wasm threads from code it carries (a blob: URL only this page's own
scripts can mint). No inline script or style is allowed; no other origin can be contacted
(connect-src 'self'), which is also what keeps prompts on the device.

Cross-origin isolation (COOP same-origin + COEP require-corp, with CORP same-origin on every response)
gives the page SharedArrayBuffer, which the CPU tier needs for wasm threads. Everything the page loads
is same-origin, so nothing is lost by requiring CORP.

One exception, set by the operator: with MODEL_FILES_BASE_URL (env LANTERN_MODEL_FILES_BASE_URL) the
model files come from that origin (a CDN or object store), so connect-src allows exactly that origin too.
The page still checks every file against the SHA-256 in the manifest this site served (docs/production.md).
Only a plain `https://host[:port]` is accepted (plain http for a loopback host only): a wildcard
(`https://*`) would let the page send prompts anywhere, and `;` would inject directives into the CSP.

Two more guards keep other web pages from spending this server's compute:

* Trusted hosts (TRUSTED_HOSTS, env LANTERN_TRUSTED_HOSTS): a request must name this site in its Host
  header, else 400. The loopback names are always trusted; a deployment adds its public name(s). This
  stops DNS rebinding, where a hostile page makes its own name resolve to 127.0.0.1 and then talks to a
  local `make run` as "same origin".
* POST bodies must be `application/json` (else 415): a cross-site page can send text/plain or form bodies
  without asking (no CORS preflight), but not JSON, and this site grants no preflight.
"""

import ipaddress
import re
from urllib.parse import urlsplit

from flask import Flask, request
from werkzeug.exceptions import SecurityError
from werkzeug.middleware.proxy_fix import ProxyFix

from webapp.fallback.errors import APIError

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "img-src 'self'",
        "style-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}


# Names a browser uses for this machine itself: always trusted as Host, and the only hosts a plain-http
# MODEL_FILES_BASE_URL may name.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_ORIGIN = re.compile(
    rf"(?P<scheme>[A-Za-z]+)://(?P<host>{_HOST_NAME.pattern}|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{{1,5}}))?/?"
)


def files_origin(base_url: str | None) -> str | None:
    """The origin of MODEL_FILES_BASE_URL (None when the files come from this site).

    It becomes part of the CSP, so anything but a plain origin is refused, with the reason."""
    if not base_url:
        return None
    text = str(base_url).strip()

    def refuse(why: str) -> ValueError:
        return ValueError(
            f"LANTERN_MODEL_FILES_BASE_URL must be a plain https://host[:port] (plain http only for"
            f" {', '.join(LOOPBACK_HOSTS)}): {why}; got {text!r}"
        )

    try:
        parts = urlsplit(text)
    except ValueError:
        raise refuse("it is not a URL") from None
    if parts.scheme.lower() not in ("http", "https") or not text.lower().startswith(f"{parts.scheme.lower()}://"):
        raise refuse("it must start with https://")
    if "@" in parts.netloc:
        raise refuse("a user name or password does not belong in it")
    if any(c in text for c in ";, \t'\"") or not text.isprintable():
        raise refuse(
            "it is not a plain host name: `;`, commas, quotes or spaces would add to the Content-Security-Policy"
        )
    if "*" in text:
        raise refuse("a wildcard would let the page send data to any host; name the one host")
    if parts.path not in ("", "/") or "?" in text or "#" in text:
        raise refuse("the files must be at /models/ of that origin, so no path, query or fragment")
    match = _ORIGIN.fullmatch(text)
    if match is None:
        raise refuse("the host is not a plain host name or IP address")
    scheme, host, port = match["scheme"].lower(), match["host"].lower(), match["port"]
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise refuse("the IPv6 address is not valid") from None
    if port is not None and not 0 < int(port) < 65536:
        raise refuse("the port must be between 1 and 65535")
    if scheme == "http" and host not in LOOPBACK_HOSTS:
        raise refuse("plain http would expose the downloads; use https")
    return f"{scheme}://{host}" + (f":{port}" if port else "")


def trusted_hosts(value: object) -> list[str]:
    """TRUSTED_HOSTS for Flask: the loopback names plus what the operator lists (LANTERN_TRUSTED_HOSTS,
    comma- or space-separated; a leading dot, `.example.org`, also trusts its subdomains)."""
    if value is None:
        extra: list[str] = []
    elif isinstance(value, str):
        extra = value.replace(",", " ").split()
        if not extra:
            raise ValueError(
                f"LANTERN_TRUSTED_HOSTS is set but names no host ({value!r}); list this site's public host"
                " name(s), e.g. lantern.example.org, or unset it to serve the loopback names only"
            )
    elif isinstance(value, (list, tuple)) and all(isinstance(h, str) for h in value):
        extra = list(value)
    else:
        raise ValueError(f"TRUSTED_HOSTS must be a list of host names, not {type(value).__name__}")
    for host in extra:
        name = host[1:] if host.startswith(".") else host
        if not (_HOST_NAME.fullmatch(name) or host in LOOPBACK_HOSTS):
            raise ValueError(
                f"LANTERN_TRUSTED_HOSTS: {host!r} is not a host name; give names like lantern.example.org"
                " (no scheme, port, path or wildcard; .example.org trusts its subdomains)"
            )
    return list(dict.fromkeys([*LOOPBACK_HOSTS, *(h.lower() for h in extra)]))


def content_security_policy(extra_connect: str | None = None) -> str:
    if not extra_connect:
        return CONTENT_SECURITY_POLICY
    return CONTENT_SECURITY_POLICY.replace("connect-src 'self'", f"connect-src 'self' {extra_connect}")


def _untrusted_host(exc: SecurityError):
    return APIError(
        400,
        "This server does not answer to the host name in this request. Its operator can add it to"
        " LANTERN_TRUSTED_HOSTS.",
        code="untrusted_host",
    ).response()


def _json_bodies_only():
    """415 for a POST whose body is not declared JSON (text/plain, forms: what other sites can send)."""
    if request.method == "POST" and request.mimetype != "application/json":
        return APIError(
            415,
            "This endpoint takes a JSON body: send it with `Content-Type: application/json`.",
            code="unsupported_media_type",
        ).response()
    return None


def proxy_hops(value: object) -> int:
    """LANTERN_PROXY_HOPS: how many reverse proxies in front of the app append to X-Forwarded-For.

    0 (the default, `make run`) trusts no forwarding header: a client could write any address there.
    Behind one nginx it is 1, so the per-client limit and the per-client KV cache see each client's own
    address instead of the proxy's (every client would otherwise share one limit)."""
    text = "0" if value is None else str(value).strip()
    if not text.isdigit() or int(text) > 8:
        raise ValueError(
            f"LANTERN_PROXY_HOPS must be the number of reverse proxies in front of Lantern (0-8), not {value!r}"
        )
    return int(text)


def init_app(app: Flask) -> None:
    """Check the host and files settings (a bad one stops the start) and guard every request and response."""
    hops = proxy_hops(app.config.get("PROXY_HOPS"))
    if hops:
        # The client address and scheme from the last `hops` proxies' headers; Host stays the one the
        # proxy forwards (proxy_set_header Host), which the trusted-hosts check reads.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    origin = files_origin(app.config.get("MODEL_FILES_BASE_URL"))
    app.config["MODEL_FILES_BASE_URL"] = origin  # the checked origin is the one the API hands out
    app.config["TRUSTED_HOSTS"] = trusted_hosts(app.config.get("TRUSTED_HOSTS"))
    headers = {**HEADERS, "Content-Security-Policy": content_security_policy(origin)}

    app.register_error_handler(SecurityError, _untrusted_host)
    app.before_request(_json_bodies_only)

    @app.after_request
    def _security_headers(response):
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response
