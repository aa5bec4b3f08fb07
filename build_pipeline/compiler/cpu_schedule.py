"""Schedules for the CPU (llvm) verification build's linears, so the quality gate's teacher-forced
perplexity runs in seconds, not minutes.

Unscheduled, TVM lowers `matmul[s, o] = sum_k x[s, k] * w[o, k]` to scalar loops with the reduction
innermost (~8 tokens/s for SmolLM2-135M prefill). Here each linear's dequantize block writes the weight
as [k, o] (once per call, in parallel over rows), and the matmul runs a register tile of LANES
outputs per token and k step, vectorized over contiguous output columns and parallel over column blocks. The
WebGPU libraries are untouched (dlight / schedules.py); the parity check verifies this build as before.
"""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx

LANES = 16


def schedule_linear(func: tirx.PrimFunc) -> tirx.PrimFunc | None:
    """The scheduled PrimFunc, or None when `func` is not one of our linears (left as it is)."""
    sch = s_tir.Schedule(func)
    try:
        mm = sch.get_sblock("matmul")
        dq = sch.get_sblock("dequantize")
    except Exception:  # noqa: BLE001  (no such blocks: not a linear)
        return None
    loops = sch.get_loops(mm)
    if len(loops) < 3:
        return None
    out_extent = sch.get(loops[-2]).extent
    if not isinstance(out_extent, tirx.IntImm) or int(out_extent) % LANES:
        return None
    tokens = sch.get(loops[-3]).extent
    if isinstance(tokens, tirx.IntImm) and int(tokens) == 1:
        return None  # decode: one token per call, where a transposed copy of the weight costs more than it saves
    # Weight as [k, o]: the matmul's innermost (vectorized) loop then reads contiguous memory.
    sch.transform_layout(dq, ("write", 0), lambda o, i: (i, o))
    d_o, d_i = sch.get_loops(dq)
    sch.reorder(d_i, d_o)
    sch.parallel(d_i)
    *lead, s, o, k = loops
    # Tokens are not split: a split of the symbolic length would need a guard, which TVM refuses to
    # vectorize under. One token x LANES outputs per k step; the [k, LANES] weight slab stays in cache.
    oo, oi = sch.split(o, [None, LANES])
    sch.reorder(*lead, oo, s, k, oi)
    sch.vectorize(oi)  # before decompose_reduction: TVM vectorizes only complete/reduction blocks
    sch.parallel(oo)
    init = sch.decompose_reduction(mm, k)
    sch.vectorize(sch.get_loops(init)[-1])
    return sch.mod["main"]


def schedule_cpu_linears():
    """Module pass: schedule every linear PrimFunc of a CPU build (others stay unscheduled)."""

    @tvm.transform.module_pass(opt_level=0, name="LanternScheduleCPULinears")
    def _pass(mod: tvm.ir.IRModule, _ctx) -> tvm.ir.IRModule:
        mod = mod.clone()
        for gv, func in list(mod.functions.items()):
            if not isinstance(func, tirx.PrimFunc):
                continue
            try:
                new = schedule_linear(func)
            except Exception:  # noqa: BLE001  (an unusual fused shape: keep the plain lowering)
                new = None
            if new is not None:
                mod[gv] = new
        return mod

    return _pass
