"""Server-side fallback inference: an OpenAI-compatible API the page uses only after the user consents.

`init_app` reads the LANTERN_* settings, picks the engine (llama.cpp in a supervised child process of
the site's own, or a proxy to an upstream server), and wires the API, /metrics and a /healthz check.
Nothing heavy happens in the site's process: the engine process loads the model in the background
(at start, or on first use with LANTERN_FALLBACK_PRELOAD=0), so the site starts fast and a crash in
llama.cpp never takes it down. With LANTERN_FALLBACK_ENABLED=0 no route is registered at all.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from build_pipeline.errors import BuildError
from webapp.fallback import api
from webapp.fallback import metrics as metrics_module
from webapp.fallback.auth import ApiKeys
from webapp.fallback.engine_local import LocalEngine
from webapp.fallback.engine_upstream import UpstreamEngine
from webapp.fallback.errors import APIError
from webapp.fallback.limits import Admission
from webapp.fallback.metrics import Metrics
from webapp.fallback.model_files import ModelRef, served_models
from webapp.fallback.settings import Settings, load_settings

EXTENSION_KEY = "lantern_fallback"
HEALTH_CHECKS_KEY = "lantern_health_checks"


@dataclass
class Fallback:
    """Everything the fallback routes share, kept in app.extensions["lantern_fallback"].

    `ref`/`engine` are the default model's (warmed at start, reported by /metrics); `refs` lists every
    served model, default first. The other models' engines are made on first use (`pick`) and stay loaded
    until the site closes: one engine process per model asked for. Proxy mode serves the default only.
    """

    settings: Settings
    ref: ModelRef
    engine: UpstreamEngine  # a LocalEngine (llama.cpp in a child process) is an UpstreamEngine too
    admission: Admission
    keys: ApiKeys
    metrics: Metrics
    refs: list[ModelRef] = field(default_factory=list)
    engines: dict[str, UpstreamEngine] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not self.refs:
            self.refs = [self.ref]
        self.engines.setdefault(self.ref.id, self.engine)

    def find(self, name: str | None) -> ModelRef | None:
        """The served model a request names (None: the default), or None when it names no served model."""
        return next((r for r in self.refs if r.accepts(name)), None)

    def engine_for(self, ref: ModelRef) -> UpstreamEngine:
        """The model's engine, made (not started) on first use."""
        with self._lock:
            engine = self.engines.get(ref.id)
            if engine is None:
                engine = self.engines[ref.id] = _make_engine(ref, self.settings, default=False)
            return engine

    def health(self) -> tuple[str, bool, dict]:
        ok, detail = self.engine.status()
        detail.update(
            active=self.admission.active,
            queued=self.admission.queued,
            max_queue=self.admission.max_queue,
            max_per_client=self.admission.per_client,
            auth=self.keys.enabled,
            models=[r.id for r in self.refs],
        )
        others = {ref_id: e.status()[1].get("state") for ref_id, e in self.engines.items() if e is not self.engine}
        if others:
            detail["other_engines"] = others
        return "fallback", ok, detail

    def close(self, wait: float = 10.0) -> bool:
        """Stop the engine (its process, for the local engine) once no generation uses it.

        Returns False, stopping nothing, if generations are still running after `wait` seconds.
        """
        deadline = time.monotonic() + wait
        while self.admission.active and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.admission.active:
            return False
        for engine in list(self.engines.values()):
            engine.close()
        return True


def _make_engine(ref: ModelRef, settings: Settings, default: bool = True) -> UpstreamEngine:
    """`default`: the model LANTERN_FALLBACK_GGUF (an explicit weights file) belongs to."""
    if settings.proxy:
        return UpstreamEngine(ref, settings)
    return LocalEngine(ref, settings if default or not settings.gguf else replace(settings, gguf=None))


def init_app(app) -> None:
    settings = load_settings(app.config)
    checks = app.extensions.setdefault(HEALTH_CHECKS_KEY, [])
    if not settings.enabled:
        app.extensions[EXTENSION_KEY] = None
        checks.append(lambda: ("fallback", True, {"enabled": False}))
        return

    try:
        refs = served_models(settings.model, Path(app.config["MODELS_DIR"]))
    except BuildError as exc:  # nothing to serve: the site still runs, /healthz says why
        app.extensions[EXTENSION_KEY] = None
        detail = {"enabled": True, "error": exc.problem}
        checks.append(lambda: ("fallback", False, detail))
        return
    ref = refs[0]
    engine = _make_engine(ref, settings)
    admission = Admission(settings.max_concurrent, settings.max_queue, settings.max_per_client)
    metrics = Metrics(admission, engine)
    if hasattr(engine, "restart_listeners"):
        engine.restart_listeners.append(metrics.engine_restarts.inc)
    service = Fallback(
        settings,
        ref,
        engine,
        admission,
        ApiKeys(settings.api_keys, settings.api_keys_file),
        metrics,
        refs=refs if not settings.proxy else [ref],
    )
    app.extensions[EXTENSION_KEY] = service
    checks.append(service.health)
    app.register_error_handler(APIError, lambda exc: exc.response())
    app.register_blueprint(api.bp)
    app.register_blueprint(metrics_module.bp)
    if settings.preload:
        engine.start()
