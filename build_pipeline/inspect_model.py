"""Check a built model against its own manifest and tensor-cache: every file present, every hash right."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from build_pipeline.contract import MANIFEST_FILE, TENSOR_CACHE_FILE, VERIFY_FILE, Manifest
from build_pipeline.errors import BuildError
from build_pipeline.manifest import read_manifest
from build_pipeline.tensor_cache import file_md5, file_sha256, read_index


@dataclass
class VariantReport:
    path: Path
    manifest: Manifest
    problems: list[str] = field(default_factory=list)
    verify: dict | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def variant_dirs(path: Path) -> list[Path]:
    """A variant dir itself, or every variant dir under a model dir."""
    path = Path(path)
    if (path / MANIFEST_FILE).exists():
        return [path]
    found = sorted(p.parent for p in path.glob(f"*/{MANIFEST_FILE}"))
    if not found:
        raise BuildError(
            f"{path} holds no built model (no {MANIFEST_FILE} in it or its subfolders)",
            "pass dist/models/<model-id> or dist/models/<model-id>/<quantization>; build it first if missing",
        )
    return found


def inspect_variant(variant_dir: Path) -> VariantReport:
    report = VariantReport(variant_dir, read_manifest(variant_dir))
    for entry in report.manifest.files:
        path = variant_dir / entry["path"]
        if not path.exists():
            report.problems.append(f"{entry['path']}: missing")
        elif path.stat().st_size != entry["bytes"]:
            report.problems.append(f"{entry['path']}: {path.stat().st_size} bytes, manifest says {entry['bytes']}")
        elif file_sha256(path) != entry["sha256"]:
            report.problems.append(f"{entry['path']}: sha256 mismatch")
    for shard in read_index(variant_dir)["records"]:
        path = variant_dir / shard["dataPath"]
        if not path.exists():
            continue  # already reported above
        if file_md5(path) != shard["md5sum"]:
            report.problems.append(f"{shard['dataPath']}: md5sum differs from {TENSOR_CACHE_FILE}")
        end = 0
        for rec in shard["records"]:
            if rec["byteOffset"] != end:
                report.problems.append(f"{rec['name']}: byteOffset {rec['byteOffset']}, expected {end}")
            end = rec["byteOffset"] + rec["nbytes"]
        if end != shard["nbytes"]:
            report.problems.append(f"{shard['dataPath']}: records cover {end} of {shard['nbytes']} bytes")
    verify = variant_dir / VERIFY_FILE
    if verify.exists():
        report.verify = json.loads(verify.read_text())
        if not report.verify.get("passed"):
            report.problems.append(f"{VERIFY_FILE} records a failed parity check")
    return report
