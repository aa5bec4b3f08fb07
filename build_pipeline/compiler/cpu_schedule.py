"""Schedules for the CPU (llvm) verification build's linears, so the quality gate's teacher-forced
perplexity runs in seconds, not minutes.

Unscheduled, TVM lowers `matmul[s, o] = sum_k x[s, k] * w[o, k]` to scalar loops with the reduction
innermost (~8 tokens/s for SmolLM2-135M prefill) after materialising the whole dequantized weight. Here
the output rows are split into blocks of `lanes` (64 where the row count allows), in parallel; each
block's weight slab is dequantized inside the block (as [k, lanes] for prefill), once per call, and the
prefill matmul runs `lanes` outputs per token and k step, vectorized over the slab's contiguous columns:
64 lanes are four independent vector accumulators, where 16 were one chain of dependent adds (1.3x the
prefill speed on Qwen2.5-0.5B). The WebGPU libraries are untouched (dlight / schedules.py); the parity
check verifies this build as before.
"""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx

LANES = (64, 32, 16)  # outputs per block, the widest that divides the output count


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
    if not isinstance(out_extent, tirx.IntImm):
        return None
    lanes = next((n for n in LANES if int(out_extent) % n == 0), None)
    if lanes is None:
        return None
    tokens = sch.get(loops[-3]).extent
    decode = isinstance(tokens, tirx.IntImm) and int(tokens) == 1
    *lead, s, o, k = loops
    oo, oi = sch.split(o, [None, lanes])
    if decode:
        # One token: each output is a dot product over a contiguous weight row, in parallel over row blocks.
        sch.reorder(*lead, oo, s, oi, k)
    else:
        # The dequantized slab as [k, lanes]: the matmul's innermost (vectorized) loop reads contiguous memory.
        sch.transform_layout(dq, ("write", 0), lambda o, i: (i, o))
        # Tokens are not split: a split of the symbolic length would need a guard, which TVM refuses to
        # vectorize under. One token x lanes outputs per k step; the [k, lanes] weight slab stays in cache.
        sch.reorder(*lead, oo, s, k, oi)
        sch.vectorize(oi)  # before decompose_reduction: TVM vectorizes only complete/reduction blocks
    sch.parallel(oo)
    # Each block of `lanes` output rows is dequantized where it is used, once per call: the whole float32
    # weight is never materialised (a 151,936-row lm_head would be a 545 MB workspace, kept by TVM's pool).
    sch.compute_at(dq, oo)
    init = sch.decompose_reduction(mm, k)
    if not decode:
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
