"""`python -m webapp --host 127.0.0.1 --port 8000`: serve the site with gunicorn (what `make run` runs).

One process with threads, never several workers: each process would start its own fallback engine
(the model loaded again) and enforce its own slots and queue, doubling memory and limits. The access log
has four fields, method, path (never the query string), status and milliseconds, as docs/privacy.md says.

The settings below are gunicorn's own, as module variables, so a deployment that runs gunicorn itself
takes the same ones: `gunicorn -c python:webapp.__main__ --bind 127.0.0.1:8000 'webapp:create_app()'`.
"""

from __future__ import annotations

import argparse

from flask import Flask
from gunicorn.app.base import BaseApplication

from webapp import create_app

workers = 1
worker_class = "gthread"
threads = 8  # model downloads are long-lived streams; generations are bounded by LANTERN_MAX_CONCURRENT
accesslog = "-"
access_log_format = "%(m)s %(U)s %(s)s %(M)sms"  # %(U)s: the path without its query string
errorlog = "-"
control_socket_disable = True  # gunicorn's runtime control socket (in ~/.gunicorn): not used
GUNICORN_SETTINGS = {
    "workers": workers,
    "worker_class": worker_class,
    "threads": threads,
    "accesslog": accesslog,
    "access_log_format": access_log_format,
    "errorlog": errorlog,
    "control_socket_disable": control_socket_disable,
}


class LanternServer(BaseApplication):
    """gunicorn, configured here instead of from its command line; the app is made in the worker."""

    def __init__(self, options: dict) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for name, value in self.options.items():
            self.cfg.set(name, value)

    def load(self) -> Flask:
        app = create_app()
        print(f"Lantern is serving on http://{self.cfg.bind[0]}/ (models from {app.config['MODELS_DIR']})", flush=True)
        return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m webapp")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=threads, help="request threads (default %(default)s)")
    args = parser.parse_args()
    host = f"[{args.host}]" if ":" in args.host else args.host
    LanternServer({**GUNICORN_SETTINGS, "threads": args.threads, "bind": [f"{host}:{args.port}"]}).run()


if __name__ == "__main__":
    main()
