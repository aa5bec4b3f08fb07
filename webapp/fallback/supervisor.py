"""Keep the engine process running: start it, notice it die, restart it with backoff, give up on a
broken model.

States (what /healthz shows):
  idle        not started yet (the site starts it at once unless LANTERN_FALLBACK_PRELOAD=0)
  starting    the first process is loading the model
  ready       serving on its loopback port
  restarting  the process died (`last_exit` says how); a new one starts after a backoff
  stopped     the site closed it
  failed      it cannot start (`error` says why): the model file is broken or missing, or the process
              died while loading too many times in a row; the site keeps serving everything else

A crash after a good run restarts at once-ish (0.5 s, doubling while crashes keep coming, at most 30 s);
a process that dies while loading is retried MAX_START_FAILURES times before `failed`. A load error the
engine reported itself (e.g. "Failed to load model") is final at once: retrying the same file cannot help.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from build_pipeline.paths import REPO_ROOT

MAX_START_FAILURES = 3
START_TIMEOUT_SECONDS = 300.0
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
STABLE_SECONDS = 60.0  # a process that ran this long resets the crash streak
STDERR_TAIL_LINES = 20


@dataclass(frozen=True)
class Ready:
    port: int
    pid: int
    load_seconds: float
    system_info: str


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class EngineProcess:
    """One supervised child process running `python -m webapp.fallback.engine_worker <config>`."""

    def __init__(self, config: dict, on_restart: Callable[[], None] | None = None):
        self.config = config
        self.token = secrets.token_urlsafe(24)
        self.state = "idle"
        self.error: str | None = None
        self.last_exit: str | None = None
        self.restarts = 0
        self.ready: Ready | None = None
        self.retry_at: float | None = None  # time.monotonic() of the next start while restarting
        self._on_restart = on_restart
        self._cond = threading.Condition()
        self._closed = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._thread: threading.Thread | None = None

    # -- public ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start supervising (idempotent)."""
        with self._cond:
            if self._thread is not None or self._closed.is_set():
                return
            self.state = "starting"
            self._thread = threading.Thread(target=self._supervise, name="lantern-engine-supervisor", daemon=True)
            self._thread.start()

    def wait(self, timeout: float) -> str:
        """Wait until ready or failed (or `timeout` seconds); returns the state then."""
        end = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while self.state in ("starting", "restarting") and not self._closed.is_set():
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self.state

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def close(self, timeout: float = 10.0) -> None:
        """Stop the process and the supervision; the engine is not restarted."""
        self._closed.set()
        self._set("stopped", ready=None)
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- supervision ---------------------------------------------------------------------------------
    def _set(self, state: str, **fields) -> None:
        with self._cond:
            self.state = state
            for name, value in fields.items():
                setattr(self, name, value)
            self._cond.notify_all()

    def _supervise(self) -> None:
        start_failures = 0
        crash_streak = 0
        while not self._closed.is_set():
            began = time.monotonic()
            outcome, detail = self._run_once()
            if self._closed.is_set():
                break
            if outcome == "load_error":
                self._set("failed", error=detail, ready=None)
                return
            if outcome == "start_died":
                start_failures += 1
                if start_failures >= MAX_START_FAILURES:
                    self._set(
                        "failed",
                        ready=None,
                        error=f"the engine died while loading {start_failures} times in a row ({detail})",
                    )
                    return
            else:  # it ran, then died
                start_failures = 0
                crash_streak = 1 if time.monotonic() - began > STABLE_SECONDS else crash_streak + 1
                self.restarts += 1
                if self._on_restart is not None:
                    self._on_restart()
            backoff = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** max(0, crash_streak + start_failures - 1))
            self._set("restarting", ready=None, last_exit=detail, retry_at=time.monotonic() + backoff)
            if self._closed.wait(backoff):
                break

    def _spawn(self) -> subprocess.Popen:
        env = dict(os.environ)
        env["LANTERN_ENGINE_TOKEN"] = self.token
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        return subprocess.Popen(
            [sys.executable, "-m", "webapp.fallback.engine_worker", json.dumps(self.config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=str(REPO_ROOT),
            start_new_session=True,  # a Ctrl-C at the terminal reaches the site, which then stops the engine
        )

    def _drain_stderr(self, proc: subprocess.Popen) -> None:
        """Pass the engine's stderr on (llama.cpp prints no prompt text: verbose is off) and keep its tail."""
        assert proc.stderr is not None  # _spawn pipes it
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self._stderr_tail.append(line)
            print(f"[lantern-engine {proc.pid}] {line}", file=sys.stderr, flush=True)

    def _run_once(self) -> tuple[str, str]:
        """Run one process to its end: ("load_error" | "start_died" | "died", what happened)."""
        self._stderr_tail.clear()
        proc = self._proc = self._spawn()
        threading.Thread(target=self._drain_stderr, args=(proc,), name="lantern-engine-stderr", daemon=True).start()
        line = self._first_line(proc)
        message = _parse(line)
        if message.get("event") == "ready":
            self._set(
                "ready",
                error=None,
                retry_at=None,
                ready=Ready(
                    int(message["port"]),
                    int(message["pid"]),
                    float(message.get("load_seconds", 0)),
                    str(message.get("system_info", "")),
                ),
            )
            assert proc.stdout is not None  # _spawn pipes it
            proc.stdout.close()
            proc.wait()
            return "died", describe_exit(proc.returncode)
        if proc.poll() is None:  # no ready line in time (or garbage): treat as a failed start
            proc.kill()
        proc.wait()
        if message.get("event") == "error":
            return "load_error", str(message.get("error"))
        tail = "; ".join(list(self._stderr_tail)[-3:])
        return "start_died", describe_exit(proc.returncode) + (f": {tail}" if tail else "")

    def _first_line(self, proc: subprocess.Popen) -> bytes:
        """The engine's protocol line, or b"" if it died or took longer than START_TIMEOUT_SECONDS."""
        result: list[bytes] = []
        stdout = proc.stdout
        assert stdout is not None  # _spawn pipes it
        reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
        reader.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while reader.is_alive() and time.monotonic() < deadline and not self._closed.is_set():
            reader.join(0.1)
        return result[0] if result else b""


def _parse(line: bytes) -> dict:
    try:
        message = json.loads(line)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}
