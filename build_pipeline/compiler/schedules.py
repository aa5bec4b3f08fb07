"""Lantern's own dlight schedule rules (the swiftshader profile), measured on SwiftShader in Chromium.

SwiftShader runs WGSL on the CPU: workgroupBarrier and shared memory are slow, dynamically indexed
local arrays are slow, and many small workgroups with cross-thread reductions are slow. What is fast
is plain per-thread loops with register accumulators. Both rules keep the dequantization inline
(the q4 weight is decoded from the uint32 words inside the loop, never materialised).
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import is_gemv, normalize_prim_func
from tvm.s_tir.dlight.base import try_inline_contiguous_spatial


class RowPerThreadGEMV(dl.gpu.GEMV):  # subclassed for the GPU-target plumbing only
    """Decode GEMV for CPU-backed WebGPU: one output row per thread, the reduction runs in a register
    loop (unrolled over one quantization group), no shared memory and no barriers. SwiftShader
    executes workgroupBarrier very slowly, which makes dlight's cross-thread GEMV reduction ~20x
    slower there than this plain loop."""

    threads = 64
    unroll = 32  # one q4 group (4 uint32 words) per unrolled step

    def apply(self, func, target, _):  # pylint: disable=too-many-return-statements
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        infos = try_inline_contiguous_spatial(sch, infos)
        if infos is None or len(infos) not in (1, 2):
            return None
        if len(infos) == 2 and not infos[1].is_injective():
            return None
        info = infos[0]
        if not info.is_reduction() or is_gemv(sch, info) is None:
            return None
        block = info.block_rv
        loops = sch.get_loops(block)
        if len(loops) != len(info.iters):
            return None
        s_loops = [lp for lp, it in zip(loops, info.iters, strict=True) if it.kind == "S"]
        r_loops = [lp for lp, it in zip(loops, info.iters, strict=True) if it.kind == "R"]
        if len(r_loops) != 1 or not s_loops:
            return None
        extent = info.iters[[it.kind for it in info.iters].index("R")].dom
        if not isinstance(extent, (int, tirx.IntImm)):
            return None
        sch.reorder(*s_loops, *r_loops)
        spatial = sch.fuse(*s_loops)
        bx, tx = sch.split(spatial, [None, self.threads])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        unroll = next(u for u in (self.unroll, 8, 4, 1) if int(extent) % u == 0)
        ro, ri = sch.split(r_loops[0], [None, unroll])
        acc = sch.cache_write(block, 0, "local")
        sch.reverse_compute_at(acc, tx, preserve_unit_loops=True)
        if len(infos) == 2:
            sch.reverse_compute_inline(infos[1].block_rv)
        sch.decompose_reduction(block, ro)
        sch.unroll(ri)
        return sch


class RowPerThreadMatmul(dl.gpu.GEMV):  # (idem)
    """Prefill matmul for CPU-backed WebGPU: a grid of (feature blocks) x (token tiles), each thread
    owns one output feature and `tokens` consecutive tokens with register accumulators; the k loop
    is unrolled by `unroll`. No shared memory, no barriers. The token dim is padded to the tile so the
    accumulators have a static size.

    Measured on SwiftShader (37 and 128 tokens, SmolLM2 shapes): tokens=1 / unroll=32 -- i.e. the
    decode GEMV's loop once per token -- was ~2x faster than 8-token register tiles (which reuse
    each dequantized weight 8 times but spill), and kernels stay ~60 WGSL lines (compile < 0.1 s).
    Larger tiles with a larger unroll (8x8) produced 500-line kernels that crashed SwiftShader."""

    threads = 64
    tokens = 1
    unroll = 32

    def apply(self, func, target, _):  # pylint: disable=too-many-return-statements,too-many-locals
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        reductions = [i for i, b in enumerate(infos) if b.is_reduction()]
        if len(reductions) != 1:
            return None
        idx = reductions[0]
        info = infos[idx]
        before, after = infos[:idx], infos[idx + 1 :]
        if any(not b.is_injective() for b in before + after) or len(after) > 1:
            return None
        kinds = "".join(it.kind for it in info.iters)
        if kinds.count("R") != 1 or not kinds.endswith("R") or kinds.count("S") < 2:
            return None
        tok_it, feat_it, red_it = info.iters[-3], info.iters[-2], info.iters[-1]
        static = (int, tirx.IntImm)
        if isinstance(tok_it.dom, static) or not isinstance(feat_it.dom, static) or not isinstance(red_it.dom, static):
            return None  # a static token count is a GEMV/other rule's job
        block = info.block_rv
        n_lead = len(info.iters) - 3
        try:
            # Pad while the block is still a plain einsum (the dequantize block is inlined after).
            sch.pad_einsum(block, [1] * n_lead + [self.tokens, 1, 1])
        except Exception:  # noqa: BLE001 - TVM raises many kinds; the rule then does not apply
            return None
        loops = sch.get_loops(block)
        lead, (tok_loop, feat_loop, red_loop) = loops[:n_lead], loops[n_lead:]
        to, ti = sch.split(tok_loop, [None, self.tokens])
        fo, fi = sch.split(feat_loop, [None, self.threads])
        unroll = next(u for u in (self.unroll, 8, 4, 1) if int(red_it.dom) % u == 0)
        ro, ri = sch.split(red_loop, [None, unroll])
        sch.reorder(*lead, fo, to, fi, ro, ri, ti)
        by = sch.fuse(*lead, to) if lead else to
        sch.bind(fo, "blockIdx.x")
        sch.bind(by, "blockIdx.y")
        sch.bind(fi, "threadIdx.x")
        acc = sch.cache_write(block, 0, "local")
        sch.reverse_compute_at(acc, fi, preserve_unit_loops=True)
        # Inline the pad/dequantize producers into the reduction, the unpad/epilogue into the store.
        _inline_all(lambda: sch.get_producers(block), sch.compute_inline)
        _inline_all(lambda: sch.get_consumers(acc), sch.reverse_compute_inline)
        if list(sch.get_producers(block)) or list(sch.get_consumers(acc)):
            return None  # something could not be fused: leave the function to the other rules
        init = sch.decompose_reduction(block, ro)
        sch.unroll(ri)
        sch.unroll(ti)
        sch.unroll(sch.get_loops(init)[-1])
        sch.unroll(sch.get_loops(acc)[-2])
        return sch


def _inline_all(neighbours, inline, rounds: int = 4) -> None:
    """Inline what `neighbours()` returns, repeating while something moved (chains fold step by step);
    blocks that cannot be inlined stay, and the caller checks what is left."""
    for _ in range(rounds):
        progressed = False
        for b in list(neighbours()):
            try:
                inline(b)
                progressed = True
            except Exception:  # noqa: BLE001 - TVM raises many kinds; try the next rule
                pass
        if not progressed:
            break
