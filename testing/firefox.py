"""Debian's Firefox ESR driven from Python: testing/firefox_driver.mjs (npm puppeteer-core over WebDriver BiDi)
in a Node process, one JSON command per line. FirefoxSession has PageSession's helpers (testing/browser_session.py).

Firefox on Linux has no WebGPU unless `dom.webgpu.enabled` is set (then Mesa's lavapipe gives it an adapter):
by default the page picks its processor tier here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path

from testing.browser_session import BrowserSession

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "testing" / "firefox_driver.mjs"
FIREFOX = shutil.which("firefox-esr") or "/usr/bin/firefox-esr"
# Keep Firefox from calling home (this machine has no network beyond loopback anyway).
QUIET_PREFS = {
    "app.update.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
}
WEBGPU_PREFS = {"dom.webgpu.enabled": True, "gfx.webgpu.ignore-blocklist": True}


def missing() -> str | None:
    """Why Firefox cannot be started here, or None."""
    if not Path(FIREFOX).exists():
        return f"{FIREFOX} is missing: install Debian's firefox-esr (make system-test-deps)"
    if not shutil.which("node"):
        return "node is missing (make system-deps)"
    if not (REPO / "node_modules" / "puppeteer-core").is_dir():
        return "npm puppeteer-core is missing (npm ci, as make install-test runs it)"
    return None


class FirefoxSession(BrowserSession):
    name = "firefox"

    def __init__(self, prefs: dict | None = None, timeout: float = 60):
        problem = missing()
        if problem:
            raise RuntimeError(f"cannot start Firefox: {problem}")
        launch = {"executablePath": FIREFOX, "prefs": {**QUIET_PREFS, **(prefs or {})}}
        self.proc = subprocess.Popen(
            ["node", str(DRIVER), json.dumps(launch)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._id = 0
        self.stderr: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        hello = self._read(timeout)
        if not hello.get("ready"):
            self.close()
            raise RuntimeError(f"Firefox did not start: {hello.get('error')}\n{''.join(self.stderr)[-2000:]}")
        self.version = hello["version"]

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def _read(self, timeout: float) -> dict:
        assert self.proc.stdout is not None
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not box or not box[0]:
            raise RuntimeError(f"Firefox driver gave no answer in {timeout} s; stderr: {''.join(self.stderr)[-2000:]}")
        return json.loads(box[0])

    def call(self, op: str, *args, timeout: float = 120):
        self._id += 1
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": self._id, "op": op, "args": list(args)}) + "\n")
        self.proc.stdin.flush()
        answer = self._read(timeout)
        assert answer.get("id") == self._id, answer
        if not answer["ok"]:
            raise RuntimeError(f"Firefox {op}{tuple(args)!r:.200}: {answer['error']}")
        return answer["value"]

    # ------------------------------------------------------------------ BrowserSession's primitives
    def goto(self, url: str) -> None:
        self.call("goto", url)

    def reload(self) -> None:
        self.call("reload")

    def evaluate(self, js: str, arg=None):
        return self.call("evaluate", js, arg)

    def click(self, selector: str) -> None:
        self.call("click", selector)

    def fill(self, selector: str, text: str) -> None:
        self.call("fill", selector, text)

    def viewport(self, width: int, height: int) -> None:
        self.call("viewport", width, height)

    def screenshot(self, path) -> None:
        self.call("screenshot", str(path))

    def requests(self) -> list[dict]:
        """Every request the page made (url, method, headers; bodies are not readable over BiDi)."""
        return self.call("requests")

    def console(self) -> list[str]:
        return self.call("console")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "close"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
