"""The site: chat page, model catalog API, artifact files and health, each in its own blueprint module."""

from pathlib import Path

from webapp import artifacts, health, models_api, pages, shell


def init_app(app) -> None:
    app.config.setdefault("WEB_LLM_BUNDLE", Path(app.static_folder) / "vendor" / "web-llm" / "index.js")
    artifacts.init_app(app)
    models_api.init_app(app)
    pages.init_app(app)
    health.init_app(app)
    shell.init_app(app)
