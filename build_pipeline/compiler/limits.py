"""Per-kernel WGSL analysis: the numbers a WebGPU device checks when it creates each pipeline."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from build_pipeline.errors import BuildError

_HEADER = re.compile(r"^// Function: (\S+)\s*$", re.M)
_STORAGE = re.compile(r"var<storage,")
_WORKGROUP_VAR = re.compile(r"var<workgroup>\s+\w+\s*:\s*array<(\w+),\s*(\d+)>")
_WG_SIZE = re.compile(r"@workgroup_size\((\d+)(?:,\s*(\d+))?(?:,\s*(\d+))?\)")
_BYTES = {"f32": 4, "i32": 4, "u32": 4, "f16": 2, "bool": 4}


@dataclass
class KernelStats:
    name: str
    lines: int
    storage_buffers: int
    workgroup_storage_bytes: int
    invocations: int
    uses_f16: bool

    def to_dict(self) -> dict:
        return asdict(self)


def split_kernels(source: str) -> dict[str, str]:
    """WGSL text of the whole webgpu module -> {kernel name: its declarations + entry point}."""
    marks = list(_HEADER.finditer(source))
    kernels: dict[str, str] = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(source)
        text = source[m.end() : end]
        if "@compute" in text:
            kernels[m.group(1)] = text.strip("\n/- ")
    return kernels


def kernel_stats(name: str, text: str) -> KernelStats:
    wg = _WG_SIZE.search(text)
    invocations = 1
    if wg:
        for g in wg.groups():
            invocations *= int(g or 1)
    shared = sum(_BYTES.get(t, 4) * int(n) for t, n in _WORKGROUP_VAR.findall(text))
    return KernelStats(
        name=name,
        lines=len([ln for ln in text.splitlines() if ln.strip()]),
        storage_buffers=len(_STORAGE.findall(text)),
        workgroup_storage_bytes=shared,
        invocations=invocations,
        uses_f16="f16" in re.sub(r"//.*", "", text),
    )


def analyze(source: str) -> list[KernelStats]:
    return [kernel_stats(n, t) for n, t in split_kernels(source).items()]


def check(stats: list[KernelStats], limits, profile_name: str, allow_f16: bool) -> None:
    """BuildError naming the first kernel that a device with `limits` would reject."""
    problems = []
    for k in stats:
        if k.storage_buffers > limits.max_storage_buffers:
            problems.append(
                f"kernel {k.name} binds {k.storage_buffers} storage buffers "
                f"(maxStorageBuffersPerShaderStage is {limits.max_storage_buffers})"
            )
        if k.workgroup_storage_bytes > limits.max_workgroup_storage_bytes:
            problems.append(
                f"kernel {k.name} uses {k.workgroup_storage_bytes} bytes of workgroup memory "
                f"(maxComputeWorkgroupStorageSize is {limits.max_workgroup_storage_bytes})"
            )
        if k.invocations > limits.max_invocations:
            problems.append(
                f"kernel {k.name} has {k.invocations} invocations per workgroup "
                f"(maxComputeInvocationsPerWorkgroup is {limits.max_invocations})"
            )
        if limits.max_wgsl_lines and k.lines > limits.max_wgsl_lines:
            problems.append(
                f"kernel {k.name} is {k.lines} WGSL lines (the {profile_name} profile allows "
                f"{limits.max_wgsl_lines}: larger shaders take minutes to compile on SwiftShader)"
            )
        if k.uses_f16 and not allow_f16:
            problems.append(f"kernel {k.name} uses f16, but this variant must run without shader-f16")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise BuildError(
            f"the compiled WebGPU library exceeds the device limits of the {profile_name} profile: "
            + "; ".join(problems[:3])
            + more,
            "use another --profile, a smaller prefill_chunk_size, or report the kernel as a compiler bug",
        )
