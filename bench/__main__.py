"""`python -m bench [name ...]`: run every bench/*_bench.py (or the named ones) in turn."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = argv or sorted(p.stem.removesuffix("_bench") for p in here.glob("*_bench.py"))
    failed = []
    for name in names:
        module = importlib.import_module(f"bench.{name.removesuffix('_bench')}_bench")
        print(f"\n=== bench: {name} ===", flush=True)
        start = time.perf_counter()
        try:
            module.main()
        except Exception as exc:  # noqa: BLE001 - one broken bench should not hide the others' numbers
            failed.append(name)
            print(f"bench {name} failed: {type(exc).__name__}: {exc}", flush=True)
        print(f"=== {name}: {time.perf_counter() - start:.0f} s ===", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
