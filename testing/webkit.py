"""WebKit (Debian's WebKitGTK MiniBrowser) driven from Python with Selenium through WebKitWebDriver, on a
private Xvfb display (MiniBrowser needs an X display; without one it hangs). WebKitSession has PageSession's
helpers (testing/browser_session.py).

WebKitGTK has no WebGPU, and no SharedArrayBuffer even when the page is cross-origin isolated: the page's
processor tier runs single-threaded here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from pathlib import Path

from testing.browser_session import BrowserSession

WEBKIT_DRIVER = shutil.which("WebKitWebDriver") or "/usr/bin/WebKitWebDriver"
MINIBROWSER_CANDIDATES = [
    "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser",
    "/usr/lib/x86_64-linux-gnu/webkitgtk-6.0/MiniBrowser",
    "/usr/lib/aarch64-linux-gnu/webkit2gtk-4.1/MiniBrowser",
]
XVFB = shutil.which("Xvfb") or "/usr/bin/Xvfb"

EVALUATE = """const done = arguments[arguments.length - 1];
Promise.resolve().then(() => (%s)(arguments[0]))
  .then((v) => done(JSON.stringify({ ok: true, value: v ?? null })),
        (e) => done(JSON.stringify({ ok: false, error: String(e && e.stack ? e.stack : e) })));"""


def minibrowser() -> str | None:
    return next((p for p in MINIBROWSER_CANDIDATES if Path(p).exists()), None)


def missing() -> str | None:
    """Why WebKit cannot be started here, or None."""
    if not Path(WEBKIT_DRIVER).exists() or not minibrowser():
        return "WebKitWebDriver or MiniBrowser is missing: install Debian's webkit2gtk-driver (make system-test-deps)"
    if not Path(XVFB).exists():
        return "Xvfb is missing: install Debian's xvfb (make system-test-deps)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "Python selenium is missing (pip install -e '.[test]', as make install-test runs it)"
    return None


class Xvfb:
    """A virtual X display of our own (Xvfb picks a free number and tells us through -displayfd)."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [XVFB, "-displayfd", "1", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        number = self.proc.stdout.readline().strip()
        if not number:
            self.proc.kill()
            raise RuntimeError("Xvfb did not start")
        self.display = f":{number}"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class WebKitSession(BrowserSession):
    name = "webkit"

    def __init__(self):
        problem = missing()
        if problem:
            raise RuntimeError(f"cannot start WebKit: {problem}")
        from selenium import webdriver
        from selenium.webdriver.webkitgtk.options import Options
        from selenium.webdriver.webkitgtk.service import Service

        self.xvfb = Xvfb()
        options = Options()
        options.binary_location = minibrowser()
        options.add_argument("--automation")
        service = Service(executable_path=WEBKIT_DRIVER, env={"DISPLAY": self.xvfb.display})
        try:
            with warnings.catch_warnings():  # selenium's own WebKitGTK class uses its deprecated remote_server_addr
                warnings.filterwarnings("ignore", "setting remote_server_addr", DeprecationWarning)
                self.driver = webdriver.WebKitGTK(options=options, service=service)
        except Exception:
            self.xvfb.close()
            raise
        self.driver.set_script_timeout(300)
        self.version = self.driver.capabilities.get("browserVersion", "")

    def goto(self, url: str) -> None:
        self.driver.get(url)

    def reload(self) -> None:
        self.driver.refresh()

    def evaluate(self, js: str, arg=None):
        answer = json.loads(self.driver.execute_async_script(EVALUATE % js, arg))
        if not answer["ok"]:
            raise RuntimeError(f"WebKit evaluate {js[:120]!r}: {answer['error']}")
        return answer["value"]

    def _element(self, selector: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def click(self, selector: str) -> None:
        self._element(selector).click()

    def fill(self, selector: str, text: str) -> None:
        element = self._element(selector)
        element.clear()
        element.send_keys(text)

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            self.xvfb.close()
