"""GET /: the chat page. All behaviour lives in static ES modules (the CSP forbids inline script)."""

from flask import Blueprint, render_template

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    response = render_template("index.html")
    return response, 200, {"Cache-Control": "no-cache"}


def init_app(app) -> None:
    app.register_blueprint(bp)
