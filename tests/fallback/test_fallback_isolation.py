"""The engine runs in its own process: killing it (SIGKILL, SIGSEGV) mid-answer costs that answer, never
the site; the supervisor restarts it; a model that cannot load leaves the site up with a reason."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from build_pipeline.contract import SERVER_GGUF_FILE
from testing.fallback import FRANCE, MODEL_ID, make_app, metric, read_events, running, wait_for_engine, wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]  # the site script below imports `testing` from the repo root


@pytest.fixture(scope="module")
def models(smollm2_models):
    return smollm2_models


def fallback_check(client) -> dict:
    return next(x for x in client.get("/healthz").json["checks"] if x["name"] == "fallback")


def engine_pid(app) -> int:
    pid = app.extensions["lantern_fallback"].engine.process.pid
    assert pid is not None and pid != os.getpid()
    return pid


def site_answers(client) -> bool:
    return client.get("/").status == 200 and client.get("/api/models").status == 200


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV], ids=["SIGKILL", "SIGSEGV"])
def test_engine_crash_mid_stream_costs_one_request(models, sig):
    app = make_app(models, MAX_CONCURRENT=1)
    with running(app) as c:
        first_pid = engine_pid(app)
        stream = c.open_stream(messages=FRANCE, temperature=0, max_tokens=1000)
        assert stream.response.status == 200
        assert len(read_events(stream.response, 3)) == 3  # the answer is flowing
        os.kill(first_pid, sig)
        rest = read_events(stream.response, 1000)  # ends: never hangs
        stream.conn.close()
        assert rest[-1] == "[DONE]"
        assert rest[-2]["error"]["code"] == "engine_crashed", rest[-2]
        assert "restarts by itself" in rest[-2]["error"]["message"]
        assert site_answers(c)  # the page and the model list keep answering throughout
        check = wait_until(lambda: (lambda x: x if x["detail"]["restarts"] >= 1 else None)(fallback_check(c)), 10)
        assert check and check["detail"]["last_exit"] == f"killed by {sig.name}"
        assert site_answers(c)
        again = c.chat(messages=FRANCE, temperature=0, max_tokens=8)  # waits for the restart, then answers
        assert again.status == 200, again.body
        assert engine_pid(app) != first_pid
        assert fallback_check(c)["detail"]["state"] == "ready"
        m = c.metrics()
        assert metric(m, "lantern_fallback_engine_restarts_total") == 1
        assert metric(m, "lantern_fallback_active_generations") == 0


def test_non_streaming_request_gets_a_clear_error_and_a_503_while_restarting(models):
    app = make_app(models, MAX_CONCURRENT=1, FALLBACK_READY_WAIT=0)
    with running(app) as c:
        pid = engine_pid(app)
        replies = []
        asking = threading.Thread(
            target=lambda: replies.append(c.chat(messages=FRANCE, temperature=0, max_tokens=1000))
        )
        asking.start()
        assert wait_until(lambda: metric(c.metrics(), "lantern_fallback_active_generations") == 1, 10)
        time.sleep(0.5)  # generating now (1000 tokens take far longer)
        os.kill(pid, signal.SIGKILL)
        asking.join(30)
        assert not asking.is_alive()
        r = replies[0]
        assert r.status == 503 and r.json["error"]["code"] == "engine_crashed"
        assert int(r.headers["retry-after"]) >= 1
        # While it restarts, a request is refused at once with Retry-After (READY_WAIT 0), not queued.
        assert wait_until(lambda: fallback_check(c)["detail"]["state"] == "restarting", 5)
        busy = c.chat(messages=FRANCE, max_tokens=2)
        if fallback_check(c)["detail"]["state"] == "restarting":
            assert busy.status == 503 and busy.json["error"]["code"] == "engine_restarting"
            assert int(busy.headers["retry-after"]) >= 1
        assert wait_for_engine(app) == "ready"
        assert c.chat(messages=FRANCE, max_tokens=2).status == 200


def test_corrupt_gguf_leaves_the_site_serving_with_a_reason(models, tmp_path):
    bad = tmp_path / "corrupt.gguf"
    good = (models / MODEL_ID / SERVER_GGUF_FILE).read_bytes()
    bad.write_bytes(good[:64] + b"\x00" * 4096)  # a GGUF header, then nothing usable
    app = make_app(models, FALLBACK_GGUF=str(bad))
    with running(app) as c:
        assert wait_for_engine(app, 60) == "failed"
        check = fallback_check(c)
        assert not check["ok"] and check["detail"]["state"] == "failed"
        assert check["detail"]["error"]  # the reason llama.cpp gave
        assert c.get("/healthz").status == 503
        r = c.chat(messages=FRANCE, max_tokens=2)
        assert r.status == 503 and r.json["error"]["code"] == "model_unavailable"
        assert site_answers(c)


def test_engine_binds_loopback_with_a_token_and_dies_with_its_site(models, tmp_path):
    """The engine process listens on 127.0.0.1 only, refuses requests without the site's token, and exits
    when the site's process is killed (no orphan holding the model in memory)."""
    script = tmp_path / "site.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from testing.fallback import make_app, wait_for_engine
        app = make_app({str(models)!r})
        wait_for_engine(app)
        ready = app.extensions["lantern_fallback"].engine.process.ready
        print(json.dumps({{"pid": ready.pid, "port": ready.port}}), flush=True)
        time.sleep(600)
    """)
    )
    site = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
    try:
        info = json.loads(site.stdout.readline())
        listening = _listening_addresses(info["port"])
        assert listening == {"127.0.0.1"}, listening
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{info['port']}/v1/models", timeout=5)
        assert refused.value.code == 401
        site.kill()
        site.wait(10)
        assert wait_until(lambda: not _alive(info["pid"]), 10), "the engine outlived its site"
    finally:
        site.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of sockets listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                if len(address) == 8:
                    found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
                else:
                    found.add(address)
    return found
