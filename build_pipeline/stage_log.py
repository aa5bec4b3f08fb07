"""Per-stage wall time and peak memory of a build, for `python -m bench scale` (issue 19: "wall time and
peak RSS per stage"). Printed to stderr only when LANTERN_STAGE_LOG is set, so normal builds stay quiet.

The peak is the process's high-water mark (VmHWM) at the end of each stage: the stage where it rises
is the one that set it.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

ENV = "LANTERN_STAGE_LOG"
PREFIX = "lantern-stage"


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM belongs to the process's own memory map;
    ru_maxrss after fork/exec also carries the parent's peak (a pytest or bench parent's)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux, bytes on macOS


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block; on exit print `lantern-stage <name> <seconds> <peak MB>` when enabled."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if os.environ.get(ENV):
            print(f"{PREFIX} {name} {time.perf_counter() - start:.1f} {peak_rss_mb():.0f}", file=sys.stderr, flush=True)


def parse(stderr: str) -> list[tuple[str, float, float]]:
    """(stage, seconds, peak MB) lines back from a child's stderr."""
    out = []
    for line in stderr.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == PREFIX:
            out.append((parts[1], float(parts[2]), float(parts[3])))
    return out


# A child that loads what a build loads and reports its peak as stage "baseline" (run with ENV set).
BASELINE = (
    "import tvm, build_pipeline.build, build_pipeline.compiler\n"
    "from build_pipeline.stage_log import stage\n"
    "with stage('baseline'):\n    pass\n"
)


def run_child(args: list[str]) -> tuple[float, float, int, str]:
    """(seconds, peak RSS in MB, exit code, stderr) of a child process with the stage log on. The peak is the
    child's own (its stages' VmHWM): a child's ru_maxrss also carries its parent's peak (fork, then exec)."""
    start = time.perf_counter()
    ran = subprocess.run(args, stderr=subprocess.PIPE, text=True, env={**os.environ, ENV: "1"}, check=False)
    peaks = [mb for _, _, mb in parse(ran.stderr)]
    return time.perf_counter() - start, max(peaks, default=0.0), ran.returncode, ran.stderr
