"""Chat page, model list API and artifact routes (placeholder until the site issue lands)."""

from flask import Blueprint

bp = Blueprint("site", __name__)


@bp.get("/")
def index():
    return "Lantern: the chat page arrives with the site issue.\n", 200, {"Content-Type": "text/plain"}


def init_app(app) -> None:
    app.register_blueprint(bp)
