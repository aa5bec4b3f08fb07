"""A race-free attention-state merge kernel for the paged KV cache on GPUs (WebGPU).

TVM 0.27's `_merge_state_inplace` (tvm/relax/frontend/nn/llm/_decode_kernels.py) merges two partial
attention results in place: V = V * a + V_other * b, S = log2(2^S + 2^S_other). Each (token, head) is
handled by head_dim / 4 threads along threadIdx.x; every one of them reads S[token, head] and then
writes it, with no barrier in between. That is a read-after-write race (it only works where those
threads run in lock-step, as one warp). SwiftShader runs a workgroup 4 invocations at a time, so for
head_dim >= 32 all but the first 4 threads read the already-merged S: the merged attention output is
wrong from feature 16 on. The runtime merges whenever a prefill attends to tokens already in the cache
(a prompt longer than prefill_chunk_size, a second chat turn), e.g. 8 query / 2 KV heads at head_dim 64
gave wrong tokens in Chromium while the same prompt in one chunk was right.

Here one thread owns one (token, head): it reads both states, merges the whole head and writes S last,
so no other thread touches that S. The kernel is tiny (once per layer per chunk); no barrier is needed.
"""

from __future__ import annotations

# The KV cache constructor's GPU merge kernels (kv_cache.py adds them under these names).
MERGE_KERNELS = ("tir_attention_merge_state", "tir_attention_merge_state_mla")


def merge_state_inplace(num_heads: int, dtype: str, max_threads: int = 256):
    """PrimFunc(v, s, v_other, s_other), the signature and semantics of TVM's merge kernel."""
    from tvm.script import tirx as T  # heavy (TVM): only when compiling

    bdx = num_heads
    while bdx > max_threads and bdx > 1:
        bdx = (bdx + 1) // 2
    gdy = (num_heads + bdx - 1) // bdx

    # fmt: off
    @T.prim_func(s_tir=True)
    def merge_state_inplace(v: T.handle, s: T.handle, v_other: T.handle, s_other: T.handle):
        T.func_attr({"tirx.is_scheduled": True})
        N = T.int32()
        H = T.int32()
        D = T.int32()
        V = T.match_buffer(v, (N, H, D), dtype)
        S = T.match_buffer(s, (N, H), "float32")
        V_other = T.match_buffer(v_other, (N, H, D), dtype)
        S_other = T.match_buffer(s_other, (N, H), "float32")
        for bx in T.thread_binding(N, thread="blockIdx.x"):
            for by in T.thread_binding(gdy, thread="blockIdx.y"):
                for tx in T.thread_binding(bdx, thread="threadIdx.x"):
                    with T.sblock("merge"):
                        h: T.let[T.int32] = by * bdx + tx
                        scale = T.sblock_alloc_buffer((2,), "float32", scope="local")
                        exp = T.sblock_alloc_buffer((2,), "float32", scope="local")
                        s_max = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        if h < H:
                            # the same arithmetic as TVM's kernel (and its CPU twin)
                            s_max[0] = T.max(S[bx, h], S_other[bx, h])
                            exp[0] = T.exp2(S[bx, h] - s_max[0])
                            exp[1] = T.exp2(S_other[bx, h] - s_max[0])
                            scale[0] = exp[0] / (exp[0] + exp[1])
                            scale[1] = exp[1] / (exp[0] + exp[1])
                            for d in T.serial(D):
                                V[bx, h, d] = V[bx, h, d] * T.Cast(dtype, scale[0]) + V_other[bx, h, d] * T.Cast(dtype, scale[1])
                            S[bx, h] = T.log2(exp[0] + exp[1]) + s_max[0]
    # fmt: on
    return merge_state_inplace


def use_race_free_merge(mod, target, num_heads: int, dtype: str):
    """`mod` with the KV cache's GPU merge kernel(s) replaced by `merge_state_inplace` for `num_heads`
    query heads of `dtype` (CPU builds use TVM's sequential `tir_attention_merge_state_cpu`: unchanged)."""
    from tvm import tirx  # heavy (TVM): only when compiling

    if "gpu" not in target.keys:
        return mod
    mod = mod.clone()
    max_threads = int(target.attrs.get("max_num_threads", 256))
    for gv, func in list(mod.functions.items()):
        if gv.name_hint in MERGE_KERNELS and isinstance(func, tirx.PrimFunc):
            new = merge_state_inplace(num_heads, dtype, max_threads)
            mod[gv] = new.with_attr("global_symbol", func.attrs["global_symbol"])
    return mod
