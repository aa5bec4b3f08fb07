"""`make run` / `python -m webapp` as a user runs it: a real process on loopback, served by gunicorn (one
process, threads), not Flask's development server. Its log keeps to method, path, status and time (no
query strings, docs/privacy.md), a streamed answer arrives token by token, and stopping it stops the
engine process too. And `make run` builds only the variants the page picks (the q0 builds on request)."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from build_pipeline.paths import REPO_ROOT

SECRETS = ("SECRET-KEY-7731", "PROMPT-MARKER-5512", "QUERY-MARKER-9043")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """`python -m webapp` in its own process group; everything it prints is collected."""

    def __init__(self, models: Path):
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LANTERN_")}
        env.update(LANTERN_MODELS_DIR=str(models), LANTERN_FALLBACK_THREADS="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "webapp", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 60):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        return conn, conn.getresponse()

    def wait_healthy(self, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output
            try:
                conn, resp = self.request("GET", "/healthz", timeout=5)
                body = resp.read()
                conn.close()
                if resp.status == 200:
                    return json.loads(body)
            except OSError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"not healthy in {timeout} s:\n{self.output}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)  # gunicorn's master: a graceful stop
        try:
            return self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.reader.join(10)


def children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def served(smollm2_models):
    server = Served(smollm2_models)
    yield server
    server.stop()


def test_make_run_serves_with_gunicorn_streams_and_logs_no_query_strings(served):
    health = served.wait_healthy()
    engine_pid = next(c for c in health["checks"] if c["name"] == "fallback")["detail"]["pid"]
    # One worker process (each would load its own engine): the master has exactly one child.
    assert len(children(served.proc.pid)) == 1

    conn, resp = served.request("GET", f"/?api_key={SECRETS[0]}&prompt={SECRETS[1]}")
    assert resp.status == 200 and resp.getheader("Server", "").startswith("gunicorn")
    resp.read()
    conn.close()
    conn, resp = served.request("GET", f"/api/models?q={SECRETS[2]}")
    assert resp.status == 200
    resp.read()
    conn.close()

    # A streamed answer is flushed token by token: the events arrive spread over the generation.
    body = {
        "messages": [{"role": "user", "content": "Count from one to thirty in words."}],
        "stream": True,
        "max_tokens": 32,
        "temperature": 0,
    }
    started = time.monotonic()
    conn, resp = served.request("POST", f"/v1/chat/completions?api_key={SECRETS[0]}", body)
    assert resp.status == 200 and resp.getheader("Content-Type", "").startswith("text/event-stream")
    arrivals = []
    while line := resp.readline():
        if line.startswith(b"data: ") and b'"content"' in line and b'"content":""' not in line:
            arrivals.append(time.monotonic() - started)
        if line.startswith(b"data: [DONE]"):
            break
    conn.close()
    assert len(arrivals) >= 8, arrivals
    distinct = len({round(t, 3) for t in arrivals})
    assert distinct >= len(arrivals) // 2 and arrivals[-1] - arrivals[0] > 0.05, arrivals

    assert served.stop() == 0, served.output
    out = served.output
    for secret in SECRETS:
        assert secret not in out, f"{secret} reached the log:\n{out}"
    assert "development server" not in out.lower()
    assert re.search(r"^GET / 200 \d+ms$", out, re.M), out
    assert re.search(r"^GET /api/models 200 \d+ms$", out, re.M), out
    assert re.search(r"^POST /v1/chat/completions 200 \d+ms$", out, re.M), out
    # The engine process goes with the site.
    deadline = time.monotonic() + 15
    while alive(engine_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(engine_pid)


def test_make_run_builds_only_the_variants_the_page_picks():
    """The page prefers the smallest full-quality build; the unquantized q0 builds are never picked over
    the q4 ones (minutes of compiling for nothing), so `make run` leaves them to `MODEL_QUANTS=...`."""
    config = tomllib.loads((REPO_ROOT / "model_configs" / "smollm2-135m-instruct.toml").read_text())

    def planned(*args: str) -> tuple[str, str]:
        plan = subprocess.run(["make", "-n", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
        build = next(line for line in plan.stdout.splitlines() if "build_pipeline build" in line)
        serve = next((line for line in plan.stdout.splitlines() if " -m webapp" in line), "")
        return build, serve

    build, serve = planned("run")
    quants = re.findall(r"-q (\S+)", build)
    assert "--if-missing" in build and quants, build
    assert set(quants) == {q for q in config["quantizations"] if not q.startswith("q0")}
    assert "-m webapp --host 127.0.0.1 --port 8000" in serve
    build, _ = planned("build-model", "MODEL_QUANTS=q0f32 q0f16")
    assert re.findall(r"-q (\S+)", build) == ["q0f32", "q0f16"]
