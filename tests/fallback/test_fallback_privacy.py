"""Prompt and completion text never reach a log or a file: every log record and every byte written to
stdout/stderr is captured while real requests (good, bad, streamed, aborted) carry a canary string."""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from pathlib import Path

import pytest

from build_pipeline.paths import REPO_ROOT
from testing.fallback import make_app, metric, read_events, running, wait_until

CANARY = "canary-7f3a9c-PRIVATE-ZEBRA"
ACCESS_LINE = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) /[^\s?]* \d{3} \d+\.\dms$")


class Everything(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def all_logs():
    """Every record of every logger at DEBUG, formatted the way a handler would print it."""
    root = logging.getLogger()
    handler = Everything()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def _files_written_since(start: float, roots: list[Path]):
    skip = {".git", ".venv", "node_modules", "__pycache__", ".pytest_cache"}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in skip]
            for name in filenames:
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except OSError:
                    continue
                if st.st_mtime >= start and st.st_size < 64 * 1024 * 1024 and path.is_file():
                    yield path


def test_no_prompt_or_completion_text_in_logs_output_or_files(smollm2_models, all_logs, capfd):
    models = smollm2_models
    started = time.time()
    user = f"My secret is {CANARY}. What is the capital of France?"
    messages = [{"role": "system", "content": f"Remember {CANARY}."}, {"role": "user", "content": user}]
    completions = []
    with running(make_app(models, MAX_CONCURRENT=1, MAX_QUEUE=0, REQUEST_TIMEOUT=20)) as c:
        ok = c.chat(messages=messages, temperature=0, max_tokens=24)
        assert ok.status == 200
        completions.append(ok.text)
        streamed = c.chat(messages=messages, temperature=0.8, seed=5, max_tokens=24, stream=True)
        assert streamed.status == 200
        completions.append(streamed.text)
        # Errors that see the content: bad parameter, context overflow, malformed JSON, unknown model.
        assert c.chat(messages=messages, temperature="hot").status == 400
        assert c.chat(messages=[{"role": "user", "content": f"{CANARY} " * 2100}]).status == 400
        assert c.request("POST", "/v1/chat/completions", raw=f'{{"messages": "{CANARY}'.encode()).status == 400
        assert c.chat(messages=messages, model=f"model-{CANARY}").status == 404
        # A stream dropped half-way, and a busy refusal while it runs.
        s = c.open_stream(messages=messages, temperature=0, max_tokens=500)
        completions.append("".join(e["choices"][0]["delta"].get("content", "") for e in read_events(s.response, 6)[1:]))
        assert c.chat(messages=messages, max_tokens=2).status == 429
        s.abort()
        assert wait_until(lambda: metric(c.metrics(), "lantern_fallback_active_generations") == 0, 5)
    with running(make_app(models, API_KEYS="k-123456")) as c:
        assert c.chat(messages=messages).status == 401

    out, err = capfd.readouterr()
    printed = out + err
    logged = "\n".join(r.getMessage() + " " + repr(r.args) for r in all_logs.records)
    secrets = [CANARY] + [t.strip() for t in completions if len(t.strip()) >= 12]
    for secret in secrets:
        assert secret not in logged, f"logged: {secret[:30]!r}"
        assert secret not in printed, f"printed: {secret[:30]!r}"
    access = [r.getMessage() for r in all_logs.records if r.name == "lantern.access"]
    assert len(access) >= 8
    assert all(ACCESS_LINE.match(line) for line in access), access
    assert any(line.startswith("POST /v1/chat/completions 200 ") for line in access)

    roots = [models, Path(tempfile.gettempdir()), REPO_ROOT]
    for path in _files_written_since(started, roots):
        with open(path, "rb") as f:
            assert CANARY.encode() not in f.read(), f"prompt text written to {path}"
