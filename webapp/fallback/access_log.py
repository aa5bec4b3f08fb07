"""Access log and request metrics for the fallback routes: method, path, status and timing — nothing else.

Query strings, headers and bodies are never logged: the prompt lives in the body, and keeping the log
line to four fields makes that easy to check (tests capture every log record and look for the prompt).
The line is written when the response is closed, so a stream's time covers the whole stream.
"""

from __future__ import annotations

import logging
import time

from flask import current_app, g, request

log = logging.getLogger("lantern.access")


def install(bp) -> None:
    """Time, count and log every request routed to blueprint `bp`."""

    @bp.before_request
    def _start():
        g.lantern_started = time.monotonic()

    @bp.after_request
    def _finish(response):
        started = g.get("lantern_started", time.monotonic())
        method, path, status = request.method, request.path, response.status_code
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics = current_app.extensions["lantern_fallback"].metrics

        def record():
            seconds = time.monotonic() - started
            metrics.requests.labels(endpoint, method, str(status)).inc()
            metrics.request_seconds.labels(endpoint).observe(seconds)
            log.info("%s %s %d %.1fms", method, path, status, seconds * 1000)

        response.call_on_close(record)
        return response
