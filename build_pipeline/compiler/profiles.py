"""Build profiles: how kernels are scheduled, and the device limits each profile must respect.

* ``gpu`` (every variant's default library, for real GPUs): dlight's stock GPU rules, including the
  shared-memory tiled Matmul for fast prefill.
* ``swiftshader`` (a second library of f32 variants, for software adapters: CI, machines without a
  GPU): every kernel must compile quickly in SwiftShader (Chromium's CPU WebGPU), where big unrolled shared-memory
  matmul kernels were reported to take minutes to compile and ``workgroupBarrier`` is very slow.
  Linears use schedules.py's register-only rules: decode GEMVs one output row per thread (measured
  10-30x faster than dlight's cross-thread GEMV on SwiftShader: lm_head 2.4 s -> 54-98 ms), prefill
  matmuls the same loop once per token (~60-line kernels that compile in < 0.1 s). No shared memory
  or barriers in linears, every workgroup <= 256 invocations, a WGSL size guard.
"""

from __future__ import annotations

from dataclasses import dataclass

from build_pipeline.contract import WEBLLM_DEVICE_FLOOR
from build_pipeline.errors import BuildError

AUTO = "auto"


@dataclass(frozen=True)
class Limits:
    """WebGPU limits every kernel must fit: web-llm's device floor (it requests exactly these; SwiftShader
    offers them). See docs/webllm_contract.md."""

    max_storage_buffers: int = WEBLLM_DEVICE_FLOOR["maxStorageBuffersPerShaderStage"]
    max_workgroup_storage_bytes: int = WEBLLM_DEVICE_FLOOR["maxComputeWorkgroupStorageSize"]
    max_invocations: int = WEBLLM_DEVICE_FLOOR["maxComputeInvocationsPerWorkgroup"]
    max_wgsl_lines: int | None = None  # a size guard for slow shader compilers


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    limits: Limits
    # Bumped when a profile's schedule changes meaning (part of the library cache key).
    revision: int = 1

    def schedule_rules(self, target):
        # Heavy (TVM, which schedules.py imports too): only when compiling; profiles are read without it.
        from tvm.s_tir import dlight as dl

        from build_pipeline.compiler import schedules

        if self.name == "gpu":
            return [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()]
        return [
            schedules.RowPerThreadGEMV(),
            schedules.RowPerThreadMatmul(),
            dl.gpu.Reduction(),
            dl.gpu.GeneralReduction(),
            dl.gpu.Fallback(),
        ]

    def schedule_pass(self, target):
        from tvm.s_tir import dlight as dl  # heavy (TVM): only when compiling

        return dl.ApplyDefaultSchedule(*self.schedule_rules(target))


PROFILES = {
    p.name: p
    for p in (
        Profile("gpu", "dlight GPU schedules (shared-memory tiled prefill matmul); for real GPUs", Limits()),
        Profile(
            "swiftshader",
            "register-tiled kernels without shared memory or unrolling; compiles "
            "and runs on SwiftShader (no GPU), also valid on real GPUs",
            Limits(max_wgsl_lines=1500),
        ),
    )
}


def resolve_profiles(requested: str | None, scheme) -> list[Profile]:
    """The libraries a variant ships, hardware default first.

    auto: every variant gets "gpu" (fast prefill on real GPUs). f32 variants are also what software
    adapters run (SwiftShader has no shader-f16), so they get a second "swiftshader" library, which
    the page picks on a fallback adapter. A named profile builds just that one library.
    """
    name = requested or AUTO
    if name == AUTO:
        return [PROFILES["gpu"]] if scheme.needs_shader_f16 else [PROFILES["gpu"], PROFILES["swiftshader"]]
    try:
        return [PROFILES[name]]
    except KeyError:
        raise BuildError(
            f"unknown build profile {name!r}",
            f"use one of: {AUTO}, {', '.join(PROFILES)} (--profile)",
        ) from None
