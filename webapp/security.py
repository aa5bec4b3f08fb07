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
"""

from urllib.parse import urlsplit

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


def files_origin(base_url: str | None) -> str | None:
    """The origin of MODEL_FILES_BASE_URL (None when the files come from this site)."""
    if not base_url:
        return None
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"MODEL_FILES_BASE_URL must be an http(s) URL without query or fragment: {base_url!r}")
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(extra_connect: str | None = None) -> str:
    if not extra_connect:
        return CONTENT_SECURITY_POLICY
    return CONTENT_SECURITY_POLICY.replace("connect-src 'self'", f"connect-src 'self' {extra_connect}")


def init_app(app) -> None:
    headers = {
        **HEADERS,
        "Content-Security-Policy": content_security_policy(files_origin(app.config.get("MODEL_FILES_BASE_URL"))),
    }

    @app.after_request
    def _security_headers(response):
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response
