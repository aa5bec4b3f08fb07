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
"""

CONTENT_SECURITY_POLICY = "; ".join([
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
])

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


def init_app(app) -> None:
    @app.after_request
    def _security_headers(response):
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response
