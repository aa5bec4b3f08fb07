"""Server-side fallback inference (OpenAI-compatible, consent-gated). Placeholder until its issue lands."""


def init_app(app) -> None:
    return None
