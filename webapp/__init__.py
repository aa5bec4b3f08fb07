"""Lantern's Flask site: the chat page, the built model artifacts and (with consent) server fallback."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask

from build_pipeline.paths import REPO_ROOT, models_dir
from webapp import fallback, security, site


def create_app(config: dict | None = None) -> Flask:
    """App factory: `flask --app webapp run` and the tests both come through here."""
    app = Flask(__name__, static_folder=str(REPO_ROOT / "static"), static_url_path="/static")
    app.config.update(
        MODELS_DIR=str(models_dir()),
        MAX_CONTENT_LENGTH=int(os.environ.get("LANTERN_MAX_BODY_BYTES", 256 * 1024)),
    )
    # Raw strings, never JSON-decoded: `LANTERN_API_KEYS=null` must not mean "no keys", nor `1e3` the key
    # "1000.0". Each setting's reader (fallback/settings.py, security.py) parses and checks its own value.
    app.config.from_prefixed_env("LANTERN", loads=str)
    if config:
        app.config.update(config)
    app.config["MODELS_DIR"] = str(Path(app.config["MODELS_DIR"]))

    security.init_app(app)
    site.init_app(app)
    fallback.init_app(app)
    return app
