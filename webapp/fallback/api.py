"""The OpenAI-compatible HTTP API: GET /v1/models and POST /v1/chat/completions (streaming or not).

A chat request is checked (auth, body, model, max_tokens, and a size bound on the context) before it
may queue for a slot; the per-client limit and the queue decide whether it waits or gets 429. Only
with a slot held is the prompt tokenized (and checked exactly against the context), so no flood of
large bodies can make the site tokenize more than one prompt per slot at a time. The slot is released
on every way out: normal end, error, timeout, and the client going away while queued or mid-stream
(werkzeug closes the response iterable, which closes the generation).
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from webapp.fallback import access_log
from webapp.fallback.clients import cache_tag, client_key
from webapp.fallback.errors import APIError
from webapp.fallback.job import ClientGone, GenerationTimeout, check_limits, make_job
from webapp.fallback.limits import ClientLeft, ClientLimit, QueueFull, QueueTimeout
from webapp.fallback.pump import Pump
from webapp.fallback.responses import DONE, Completion, event
from webapp.fallback.schema import parse_chat_request
from webapp.fallback.transport import disconnect_probe, prepare_stream

log = logging.getLogger("lantern.fallback")


def service():
    return current_app.extensions["lantern_fallback"]


bp = Blueprint("fallback_api", __name__, url_prefix="/v1")
access_log.install(bp)


def _wrong_method(allowed: str):
    def view(**_):
        raise APIError(405, f"Use {allowed} for this endpoint.", code="method_not_allowed", headers={"Allow": allowed})

    return view


def _unknown_route(unknown):
    raise APIError(404, "Unknown API endpoint.", code="not_found")


@bp.before_request
def _auth():
    service().keys.check(request.headers.get("Authorization"))


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(exc):
    limit = request.max_content_length
    return APIError(
        413, f"The request body is larger than this server accepts ({limit} bytes).", code="request_too_large"
    ).response()


@bp.errorhandler(HTTPException)
def _http_error(exc):
    return APIError(
        exc.code or 500,
        exc.description or exc.name,
        code=exc.name.lower().replace(" ", "_"),
        type="invalid_request_error" if (exc.code or 500) < 500 else "server_error",
    ).response()


def _model_object(ref) -> dict:
    return {
        "id": ref.id,
        "object": "model",
        "created": 0,
        "owned_by": "lantern",
        "name": ref.name,
        "engine": service().engine.kind,
    }


@bp.get("/models")
def list_models():
    svc = service()
    svc.engine.start()  # the page asks for models before offering server mode: warm up meanwhile
    return jsonify({"object": "list", "data": [_model_object(ref) for ref in svc.refs]})


@bp.get("/models/<path:model_id>")
def get_model(model_id):
    """One model; asking for it warms its engine (the page does, for a model other than the default)."""
    ref = _served(model_id)
    service().engine_for(ref).start()
    return jsonify(_model_object(ref))


def _served(name: str | None):
    ref = service().find(name)
    if ref is None:
        raise _unknown_model(name or "")
    return ref


def _unknown_model(name: str) -> APIError:
    return APIError(
        404, f"The model '{name[:100]}' does not exist on this server.", param="model", code="model_not_found"
    )


@bp.post("/chat/completions")
def chat_completions():
    svc = service()
    started = g.get("lantern_started", time.monotonic())
    req = parse_chat_request(request.get_data(cache=False))
    ref = _served(req.model)
    engine = svc.engine_for(ref)
    deadline = started + svc.settings.request_timeout
    engine.wait_ready(deadline)
    check_limits(req, engine.format, svc.settings.max_tokens_cap)  # cheap: no tokenizer pass yet
    client = client_key(request.remote_addr, request.headers.get("Authorization"), svc.keys.enabled)
    gone = disconnect_probe(request.environ)
    lease = _admit(svc, deadline, client, gone)
    if lease is None:
        return Response(status=499)  # left while queued; nobody is listening, the status is for the access log
    try:
        job = _tokenized_job(svc, req, engine, deadline)
        job.cache_tag = cache_tag(client)
        pieces = engine.generate(job, lease.slot, None if req.stream else gone)
    except BaseException:
        lease.release()
        raise
    completion = Completion(ref.id, f"lantern-{engine.kind}")
    if req.stream:
        prepare_stream(request.environ, deadline - time.monotonic())
        run = _Generation(pieces, lease)
        response = Response(_stream(svc, job, run, completion, started), mimetype="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"  # nginx: pass chunks through at once
        response.call_on_close(run.close)  # also covers a stream the server never started to send
        return response
    return _complete(svc, job, pieces, lease, completion, started)


class _Generation:
    """A streamed generation's resources. Closing stops the model first, then frees the slot; both are
    idempotent, so the stream's own cleanup and the response's close may both call it."""

    def __init__(self, pieces, lease):
        self.pieces = pieces
        self.lease = lease
        self.pump: Pump | None = None

    def start(self) -> Pump:
        self.pump = Pump(self.pieces)  # decode on while the request thread writes
        return self.pump

    def close(self) -> None:
        try:
            (self.pump or self.pieces).close()
        finally:
            self.lease.release()


def _tokenized_job(svc, req, engine, deadline: float):
    """The job with its prompt tokenized (the GIL-free but CPU-heavy step), timed for /metrics."""
    began = time.monotonic()
    try:
        return make_job(req, engine.format, svc.settings.max_tokens_cap, deadline)
    finally:  # a prompt refused for its exact length was tokenized too
        if engine.format is not None:
            svc.metrics.tokenize_seconds.observe(time.monotonic() - began)


def _admit(svc, deadline: float, client: str, gone):
    """A slot lease, or None when the client disconnected while queued; refusals become APIErrors."""
    try:
        lease = svc.admission.acquire(deadline, client, gone)
    except ClientLimit as exc:
        svc.metrics.rejected.labels("client_limit").inc()
        raise APIError(
            429,
            f"Too many requests from this client: it already has {exc.limit} running or queued, the "
            f"most one client may have. Wait for one to finish; retry after {exc.retry_after} s.",
            type="rate_limit_error",
            code="client_limit_reached",
            headers={"Retry-After": str(exc.retry_after)},
        ) from None
    except ClientLeft:
        svc.metrics.rejected.labels("client_gone").inc()
        return None
    except QueueFull as exc:
        svc.metrics.rejected.labels("queue_full").inc()
        raise APIError(
            429,
            f"The server is busy (all {svc.admission.slots} slots and {svc.admission.max_queue} "
            f"queue places taken). Retry after {exc.retry_after} s.",
            type="rate_limit_error",
            code="server_busy",
            headers={"Retry-After": str(exc.retry_after)},
        ) from None
    except QueueTimeout as exc:
        svc.metrics.rejected.labels("queue_timeout").inc()
        raise APIError(
            503,
            "No generation slot became free before the request timeout.",
            type="server_error",
            code="queue_timeout",
            headers={"Retry-After": str(exc.retry_after)},
        ) from None
    svc.metrics.queue_wait.observe(lease.waited)
    return lease


def _complete(svc, job, pieces, lease, completion, started):
    outcome = "error"
    try:
        text = "".join(pieces)
        outcome = job.finish_reason or "stop"
    except GenerationTimeout:
        outcome = "timeout"
        raise APIError(
            504,
            f"The answer took longer than the request timeout ({svc.settings.request_timeout:g} s).",
            type="server_error",
            code="timeout",
        ) from None
    except ClientGone:
        outcome = "disconnected"
        return Response(status=499)  # nobody is listening; the status is for the access log
    except APIError:
        raise
    except Exception as exc:  # noqa: BLE001 - one failed generation must not take the site down
        log.error("generation failed: %s", type(exc).__name__)
        raise APIError(
            500, "The generation failed on the server.", type="server_error", code="generation_failed"
        ) from None
    finally:
        pieces.close()
        lease.release()
        svc.metrics.finished(job, outcome, started)
    return jsonify(completion.full(job, text))


def _error_event(message: str, type_: str, code: str) -> bytes:
    return event({"error": {"message": message, "type": type_, "param": None, "code": code}})


def _stream(svc, job, run: _Generation, completion, started):
    """SSE: a role chunk, one chunk per text piece, a finish chunk, optional usage, then [DONE]."""
    outcome = "error"
    try:
        yield completion.chunk({"role": "assistant", "content": ""})
        for text in run.start():
            yield completion.chunk({"content": text})
        outcome = job.finish_reason or "stop"
        yield completion.chunk({}, job.finish_reason or "stop")
        if job.request.include_usage:
            yield completion.usage_chunk(job)
    except GeneratorExit:
        outcome = "disconnected"
        raise
    except GenerationTimeout:
        outcome = "timeout"
        yield _error_event(
            f"The answer took longer than the request timeout ({svc.settings.request_timeout:g} s).",
            "server_error",
            "timeout",
        )
    except APIError as exc:
        yield _error_event(exc.message, exc.type, exc.code or "error")
    except Exception as exc:  # noqa: BLE001 - one failed generation must not take the site down
        log.error("generation failed: %s", type(exc).__name__)
        yield _error_event("The generation failed on the server.", "server_error", "generation_failed")
    finally:
        run.close()
        svc.metrics.finished(job, outcome, started)
    yield DONE


# Routing errors happen before blueprint error handlers apply: answer them here, in OpenAI's shape.
_WRITES = ["PUT", "PATCH", "DELETE"]
bp.add_url_rule("/chat/completions", "chat_wrong_method", _wrong_method("POST"), methods=["GET", *_WRITES])
bp.add_url_rule("/models", "models_wrong_method", _wrong_method("GET"), methods=["POST", *_WRITES])
bp.add_url_rule("/<path:unknown>", "unknown_route", _unknown_route, methods=["GET", "POST", *_WRITES])
