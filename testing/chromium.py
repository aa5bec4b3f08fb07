"""How every test and benchmark starts Debian's Chromium: one path, one set of flags.

`--enable-unsafe-webgpu` gives the SwiftShader (CPU) WebGPU adapter; without it requestAdapter()
returns null, which is how tests exercise the no-WebGPU path. The networking flags keep Chromium
from calling home (this machine has no network but the package registries).
"""

from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BASE_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
]
WEBGPU_ARGS = ["--enable-unsafe-webgpu"]


def args(webgpu: bool = True) -> list[str]:
    return BASE_ARGS + (WEBGPU_ARGS if webgpu else [])


def launch(playwright, webgpu: bool = True):
    """A headless Chromium browser from a running (sync) Playwright."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=args(webgpu), headless=True)


def launch_persistent(playwright, profile_dir, webgpu: bool = True):
    """A browser context on an on-disk profile: storage behaves as for a real user."""
    return playwright.chromium.launch_persistent_context(
        str(profile_dir), executable_path=CHROMIUM, args=args(webgpu), headless=True
    )
