"""The relax pass pipeline (ours, not TVM's default) and `_metadata` attachment."""

from __future__ import annotations

import json

import tvm
from tvm import relax

from build_pipeline.compiler import profiles
from build_pipeline.compiler.cpu_schedule import schedule_cpu_linears

METADATA_FUNC = "_metadata"


def _alloc_bytes(func) -> int:
    """Bytes of statically planned storage a lowered relax function allocates."""
    total = 0
    alloc = tvm.ir.Op.get("relax.memory.alloc_storage")

    def visit(expr):
        nonlocal total
        if isinstance(expr, relax.Call) and expr.op == alloc:
            size = expr.args[0]
            if isinstance(size, relax.ShapeExpr) and all(isinstance(v, tvm.tirx.IntImm) for v in size.values):
                n = 1
                for v in size.values:
                    n *= int(v)
                total += n

    relax.analysis.post_order_visit(func, visit)
    return total


def attach_metadata(metadata: dict):
    """Module pass: add `_metadata() -> str` (JSON), with memory_usage from the planned allocations."""

    @tvm.transform.module_pass(opt_level=0, name="LanternAttachMetadata")
    def _pass(mod: tvm.ir.IRModule, _ctx) -> tvm.ir.IRModule:
        usage = {
            gv.name_hint: _alloc_bytes(f)
            for gv, f in mod.functions.items()
            if isinstance(f, relax.Function) and gv.name_hint in ("prefill", "decode", "embed")
        }
        meta = {**metadata, "memory_usage": usage}
        body = tvm.ir.StringImm(json.dumps(meta, separators=(",", ":")))
        func = relax.Function([], body, relax.ObjectType()).with_attr("global_symbol", METADATA_FUNC)
        mod = mod.clone()
        mod[METADATA_FUNC] = func
        return mod

    return _pass


def fusion_passes(target) -> list:
    """Library dispatch, legalize and fuse: the passes before scheduling (also what the compile bench
    inspects kernels after)."""
    passes = []
    if "gpu" in target.keys:
        passes += [relax.backend.DispatchSampling(), relax.backend.DispatchSortScan()]
    return passes + [
        relax.transform.LegalizeOps(),
        # Reshapes become free views *before* FuseOps can glue them into copy kernels.
        relax.transform.RewriteDataflowReshape(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ]


def build_pipeline(target, profile: profiles.Profile, metadata: dict):
    """fusion_passes, schedule (per profile), lower; `_metadata` after memory planning."""
    is_gpu = "gpu" in target.keys
    passes = fusion_passes(target)
    if is_gpu:
        passes.append(profile.schedule_pass(target))
    else:
        passes.append(schedule_cpu_linears())
    passes += [
        relax.transform.RewriteDataflowReshape(),
        relax.transform.ToNonDataflow(),
        relax.transform.RemovePurityChecking(),
        relax.transform.CallTIRRewrite(),
        relax.transform.StaticPlanBlockMemory(),
        attach_metadata(metadata),
        relax.transform.LowerAllocTensor(),
        relax.transform.KillAfterLastUse(),
        relax.transform.LowerRuntimeBuiltin(),
        relax.transform.ComputePrimValue(),
        relax.transform.VMShapeLower(),
        relax.transform.AttachGlobalSymbol(),
    ]

    @tvm.transform.module_pass(opt_level=0, name="LanternPipeline")
    def _pipeline(mod, _ctx):
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
