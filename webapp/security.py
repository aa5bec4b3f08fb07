"""Security headers on every response (pages, artifacts, API, errors).

The CSP allows only this origin. The page needs exactly two extras: `'wasm-unsafe-eval'` so
WebAssembly.instantiate may compile the model library and web-llm's embedded tokenizer/grammar wasm,
and `worker-src 'self'` for the engine's module worker. No inline script or style is allowed; no other
origin can be contacted (connect-src 'self'), which is also what keeps prompts on the device.
"""

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self' 'wasm-unsafe-eval'",
    "worker-src 'self'",
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
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}


def init_app(app) -> None:
    @app.after_request
    def _security_headers(response):
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response
