"""The logit-processing and sampling functions web-llm 0.2.86 looks up in every model library.

Signatures follow docs/webllm_contract.md §4 "Logit functions" (what web-llm passes, in that order):

* softmax_with_temperature(logits f32[b,1,V], temperature f32[b]) -> probs f32[b,1,V];
  temperature <= 1e-5 means greedy: a one-hot over the maximum (ties share the mass evenly).
* argsort_probs(probs f32[b,V]) -> (sorted_probs f32[b,V] descending, sorted_indices i32[b,V])
* sample_with_top_p(sorted_probs, sorted_indices, uniform f32[n], sample_indices i32[n], top_p f32[b])
  -> i32[n]: the first sorted index whose cumulative probability exceeds u * (top-p prefix mass).
* apply_penalty_inplace(logits f32[b,V], seq_ids i32[b], pos2seq_id i32[k], token_ids i32[k],
  token_cnt i32[k], penalties f32[b,3] = [presence, frequency, repetition]):
  l -= presence + cnt * frequency; l = l < 0 ? l * repetition : l / repetition.
* apply_logit_bias_inplace(logits f32[b,V], pos2seq_id i32[k], token_ids i32[k], bias f32[k]).
* apply_bitmask_inplace(logits f32[b,V], seq_ids i32[m], bitmask i32[b, ceil(V/32)]):
  tokens whose bit is clear get -FLT_MAX.
"""

from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx
from tvm.script import tirx as T

from build_pipeline.contract import WEBLLM_DEVICE_FLOOR

GREEDY_TEMPERATURE = 1e-5
THREADS = WEBLLM_DEVICE_FLOOR["maxComputeInvocationsPerWorkgroup"]  # what web-llm's device (and SwiftShader) allows


def _softmax_with_temperature_te(logits, temperature):
    b, one, v = logits.shape
    k = te.reduce_axis((0, v), name="k")
    mx = te.compute((b, one), lambda i, j: te.max(logits[i, j, k], axis=k), name="max_logit")

    def expo(i, j, t):
        temp = temperature[i]
        greedy = temp <= tirx.const(GREEDY_TEMPERATURE, "float32")
        one_hot = tirx.Select(logits[i, j, t] == mx[i, j], tirx.const(1, "float32"), tirx.const(0, "float32"))
        safe_t = tirx.Select(greedy, tirx.const(1, "float32"), temp)
        return tirx.Select(greedy, one_hot, tirx.exp((logits[i, j, t] - mx[i, j]) / safe_t))

    e = te.compute((b, one, v), expo, name="exp_logit")
    k2 = te.reduce_axis((0, v), name="k2")
    total = te.compute((b, one), lambda i, j: te.sum(e[i, j, k2], axis=k2), name="sum_exp")
    return te.compute((b, one, v), lambda i, j, t: e[i, j, t] / total[i, j], name="probs")


def _apply_penalty_inplace(vocab_size: int, gpu: bool):
    _, blocks_of, threads_of = _loops(gpu)

    @T.prim_func(s_tir=True)
    def apply_penalty_inplace(
        var_logits: T.handle,
        var_seq_ids: T.handle,
        var_pos2seq_id: T.handle,
        var_token_ids: T.handle,
        var_token_cnt: T.handle,
        var_penalties: T.handle,
    ):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        batch = T.int32()
        num_seq = T.int32()
        num_token = T.int32()
        logits = T.match_buffer(var_logits, (batch, vocab_size), "float32")
        seq_ids = T.match_buffer(var_seq_ids, (num_seq,), "int32")
        pos2seq_id = T.match_buffer(var_pos2seq_id, (num_token,), "int32")
        token_ids = T.match_buffer(var_token_ids, (num_token,), "int32")
        token_cnt = T.match_buffer(var_token_cnt, (num_token,), "int32")
        penalties = T.match_buffer(var_penalties, (num_seq, 3), "float32")
        for bx in blocks_of((num_token + THREADS - 1) // THREADS):
            for tx in threads_of(THREADS):
                with T.sblock("penalty"):
                    T.reads()
                    T.writes()
                    p: T.let[T.int32] = bx * THREADS + tx
                    if p < num_token:
                        s: T.let[T.int32] = pos2seq_id[p]
                        row: T.let[T.int32] = seq_ids[s]
                        tok: T.let[T.int32] = token_ids[p]
                        val: T.let[T.float32] = logits[row, tok] - (
                            penalties[s, 0] + T.Cast("float32", token_cnt[p]) * penalties[s, 1]
                        )
                        logits[row, tok] = T.if_then_else(
                            val < T.float32(0), val * penalties[s, 2], val / penalties[s, 2]
                        )

    return apply_penalty_inplace


def _apply_logit_bias_inplace(vocab_size: int, gpu: bool):
    _, blocks_of, threads_of = _loops(gpu)

    @T.prim_func(s_tir=True)
    def apply_logit_bias_inplace(
        var_logits: T.handle, var_pos2seq_id: T.handle, var_token_ids: T.handle, var_logit_bias: T.handle
    ):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        batch = T.int32()
        num_token = T.int32()
        logits = T.match_buffer(var_logits, (batch, vocab_size), "float32")
        pos2seq_id = T.match_buffer(var_pos2seq_id, (num_token,), "int32")
        token_ids = T.match_buffer(var_token_ids, (num_token,), "int32")
        logit_bias = T.match_buffer(var_logit_bias, (num_token,), "float32")
        for bx in blocks_of((num_token + THREADS - 1) // THREADS):
            for tx in threads_of(THREADS):
                with T.sblock("bias"):
                    T.reads()
                    T.writes()
                    p: T.let[T.int32] = bx * THREADS + tx
                    if p < num_token:
                        logits[pos2seq_id[p], token_ids[p]] = logits[pos2seq_id[p], token_ids[p]] + logit_bias[p]

    return apply_logit_bias_inplace


def _apply_bitmask_inplace(vocab_size: int, gpu: bool):
    rows_of, blocks_of, threads_of = _loops(gpu)
    words = (vocab_size + 31) // 32

    @T.prim_func(s_tir=True)
    def apply_bitmask_inplace(var_logits: T.handle, var_seq_ids: T.handle, var_bitmask: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        batch = T.int32()
        num_seq = T.int32()
        logits = T.match_buffer(var_logits, (batch, vocab_size), "float32")
        seq_ids = T.match_buffer(var_seq_ids, (num_seq,), "int32")
        bitmask = T.match_buffer(var_bitmask, (batch, words), "int32")
        for s in rows_of(num_seq):
            for bx in blocks_of((vocab_size + THREADS - 1) // THREADS):
                for tx in threads_of(THREADS):
                    with T.sblock("bitmask"):
                        T.reads()
                        T.writes()
                        v: T.let[T.int32] = bx * THREADS + tx
                        if v < vocab_size:
                            row: T.let[T.int32] = seq_ids[s]
                            if T.bitwise_and(T.shift_right(bitmask[row, v // 32], v % 32), 1) == 0:
                                logits[row, v] = T.min_value("float32")

    return apply_bitmask_inplace


# ---------------------------------------------------------------------------------------------
# argsort_probs as a merge sort: TVM's GPU sort binds blockIdx.z, which the WebGPU codegen rejects.
# Pass 0 sorts runs of RUN elements per thread (a bitonic network on local arrays); every merge
# pass doubles the run length, each thread emitting RUN outputs after a merge-path binary search.
# Order: probability descending, index ascending on ties -- a total order, so the result is exact.

RUN = 64  # elements per thread (a power of two)
LOG_RUN = 6
NEG_INF = -3.4e38


def _loops(gpu: bool):
    """(rows, blocks, threads) loop kinds: GPU thread bindings, or plain loops for the CPU build."""
    if gpu:
        return (
            lambda n: T.thread_binding(n, thread="blockIdx.y"),
            lambda n: T.thread_binding(n, thread="blockIdx.x"),
            lambda n: T.thread_binding(n, thread="threadIdx.x"),
        )
    return (T.serial, T.serial, T.serial)


def _before(ka, ia, kb, ib):
    """Sort order: larger probability first, then smaller token id."""
    return tirx.Or(ka > kb, tirx.And(ka == kb, ia < ib))


def _grid(vocab_size: int) -> tuple[int, int]:
    n_threads = (vocab_size + RUN - 1) // RUN
    return n_threads, (n_threads + THREADS - 1) // THREADS


def _argsort_run_sort(vocab_size: int, gpu: bool):
    rows_of, blocks_of, threads_of = _loops(gpu)
    n_threads, n_blocks = _grid(vocab_size)

    @T.prim_func(s_tir=True)
    def argsort_run_sort(var_probs: T.handle, var_keys: T.handle, var_idx: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        batch = T.int64()
        probs = T.match_buffer(var_probs, (batch, vocab_size), "float32")
        out_keys = T.match_buffer(var_keys, (batch, vocab_size), "float32")
        out_idx = T.match_buffer(var_idx, (batch, vocab_size), "int32")
        for row in rows_of(batch):
            for bx in blocks_of(n_blocks):
                for tx in threads_of(THREADS):
                    with T.sblock("run_sort"):
                        T.reads()
                        T.writes()
                        keys = T.sblock_alloc_buffer((RUN,), "float32", scope="local")
                        idx = T.sblock_alloc_buffer((RUN,), "int32", scope="local")
                        tk = T.sblock_alloc_buffer((1,), "float32", scope="local")
                        ti = T.sblock_alloc_buffer((1,), "int32", scope="local")
                        t: T.let[T.int32] = T.Cast("int32", bx) * THREADS + T.Cast("int32", tx)
                        if t < n_threads:
                            for e in T.serial(RUN):
                                keys[e] = T.if_then_else(
                                    t * RUN + e < vocab_size,
                                    probs[row, T.min(t * RUN + e, vocab_size - 1)],
                                    T.float32(NEG_INF),
                                )
                                idx[e] = t * RUN + e
                            for kl in T.serial(1, LOG_RUN + 1):
                                for jl in T.serial(kl):
                                    for i in T.serial(RUN):
                                        partner: T.let[T.int32] = T.bitwise_xor(i, T.shift_left(1, kl - 1 - jl))
                                        if partner > i:
                                            up: T.let[T.bool] = T.bitwise_and(i, T.shift_left(1, kl)) == 0
                                            a: T.let[T.int32] = T.if_then_else(up, i, partner)
                                            b: T.let[T.int32] = T.if_then_else(up, partner, i)
                                            if not _before(keys[a], idx[a], keys[b], idx[b]):
                                                tk[0] = keys[a]
                                                ti[0] = idx[a]
                                                keys[a] = keys[b]
                                                idx[a] = idx[b]
                                                keys[b] = tk[0]
                                                idx[b] = ti[0]
                            for e in T.serial(RUN):
                                if t * RUN + e < vocab_size:
                                    out_keys[row, t * RUN + e] = keys[e]
                                    out_idx[row, t * RUN + e] = idx[e]

    return argsort_run_sort


def _argsort_merge_pass(vocab_size: int, gpu: bool):
    rows_of, blocks_of, threads_of = _loops(gpu)
    n_threads, n_blocks = _grid(vocab_size)
    last = vocab_size - 1

    @T.prim_func(s_tir=True)
    def argsort_merge_pass(
        var_src_keys: T.handle,
        var_src_idx: T.handle,
        var_width: T.handle,
        var_dst_keys: T.handle,
        var_dst_idx: T.handle,
    ):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        batch = T.int64()
        src_keys = T.match_buffer(var_src_keys, (batch, vocab_size), "float32")
        src_idx = T.match_buffer(var_src_idx, (batch, vocab_size), "int32")
        dst_keys = T.match_buffer(var_dst_keys, (batch, vocab_size), "float32")
        dst_idx = T.match_buffer(var_dst_idx, (batch, vocab_size), "int32")
        width_buf = T.match_buffer(var_width, (1,), "int32")
        for row in rows_of(batch):
            for bx in blocks_of(n_blocks):
                for tx in threads_of(THREADS):
                    with T.sblock("merge"):
                        T.reads()
                        T.writes()
                        lo = T.sblock_alloc_buffer((1,), "int32", scope="local")
                        hi = T.sblock_alloc_buffer((1,), "int32", scope="local")
                        li = T.sblock_alloc_buffer((1,), "int32", scope="local")
                        ri = T.sblock_alloc_buffer((1,), "int32", scope="local")
                        t: T.let[T.int32] = T.Cast("int32", bx) * THREADS + T.Cast("int32", tx)
                        width: T.let[T.int32] = width_buf[0]
                        if t < n_threads:
                            base: T.let[T.int32] = (t * RUN) // (2 * width) * (2 * width)
                            d: T.let[T.int32] = t * RUN - base
                            mid_: T.let[T.int32] = T.min(base + width, vocab_size)
                            end: T.let[T.int32] = T.min(base + 2 * width, vocab_size)
                            len_l: T.let[T.int32] = mid_ - base
                            len_r: T.let[T.int32] = end - mid_
                            # Merge path: how many of the first d merged outputs come from the left run.
                            lo[0] = T.max(0, d - len_r)
                            hi[0] = T.min(d, len_l)
                            while lo[0] < hi[0]:
                                m: T.let[T.int32] = (lo[0] + hi[0]) // 2
                                rpos: T.let[T.int32] = T.min(T.max(mid_ + d - m - 1, 0), last)
                                if _before(
                                    src_keys[row, base + m],
                                    src_idx[row, base + m],
                                    src_keys[row, rpos],
                                    src_idx[row, rpos],
                                ):
                                    lo[0] = m + 1
                                else:
                                    hi[0] = m
                            li[0] = lo[0]
                            ri[0] = d - lo[0]
                            for e in T.serial(RUN):
                                if base + d + e < end:
                                    lpos: T.let[T.int32] = T.min(base + li[0], last)
                                    rpos2: T.let[T.int32] = T.min(mid_ + ri[0], last)
                                    take_left: T.let[T.bool] = T.Or(
                                        ri[0] >= len_r,
                                        T.And(
                                            li[0] < len_l,
                                            _before(
                                                src_keys[row, lpos],
                                                src_idx[row, lpos],
                                                src_keys[row, rpos2],
                                                src_idx[row, rpos2],
                                            ),
                                        ),
                                    )
                                    if take_left:
                                        dst_keys[row, base + d + e] = src_keys[row, lpos]
                                        dst_idx[row, base + d + e] = src_idx[row, lpos]
                                        li[0] = li[0] + 1
                                    else:
                                        dst_keys[row, base + d + e] = src_keys[row, rpos2]
                                        dst_idx[row, base + d + e] = src_idx[row, rpos2]
                                        ri[0] = ri[0] + 1

    return argsort_merge_pass


def merge_widths(vocab_size: int) -> list[int]:
    widths, w = [], RUN
    while w < vocab_size:
        widths.append(w)
        w *= 2
    return widths


def _sample_with_top_p(vocab_size: int, gpu: bool):
    """One thread per sample: walk the sorted probabilities (stops early: the top-p prefix is short)."""
    rows_of, blocks_of, threads_of = _loops(gpu)

    @T.prim_func(s_tir=True)
    def sample_with_top_p_kernel(
        var_sorted_probs: T.handle,
        var_sorted_idx: T.handle,
        var_uniform: T.handle,
        var_sample_indices: T.handle,
        var_top_p: T.handle,
        var_out: T.handle,
    ):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        batch = T.int64()
        n = T.int64()
        sorted_probs = T.match_buffer(var_sorted_probs, (batch, vocab_size), "float32")
        sorted_idx = T.match_buffer(var_sorted_idx, (batch, vocab_size), "int32")
        uniform = T.match_buffer(var_uniform, (n,), "float32")
        sample_indices = T.match_buffer(var_sample_indices, (n,), "int32")
        top_p = T.match_buffer(var_top_p, (batch,), "float32")
        out = T.match_buffer(var_out, (n,), "int32")
        for bx in blocks_of((n + THREADS - 1) // THREADS):
            for tx in threads_of(THREADS):
                with T.sblock("sample"):
                    T.reads()
                    T.writes()
                    acc = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    mass = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    j = T.sblock_alloc_buffer((1,), "int32", scope="local")
                    i: T.let[T.int64] = bx * THREADS + tx
                    if i < n:
                        r: T.let[T.int32] = sample_indices[i]
                        # 1. Mass of the top-p prefix: up to and including the first element whose
                        #    cumulative probability reaches top_p (or everything).
                        acc[0] = T.float32(0)
                        j[0] = 0
                        while j[0] < vocab_size:
                            acc[0] = acc[0] + sorted_probs[r, j[0]]
                            j[0] = T.if_then_else(acc[0] >= top_p[r], vocab_size + 1, j[0] + 1)
                        mass[0] = acc[0]
                        # 2. The first element whose cumulative probability exceeds u * mass.
                        out[i] = sorted_idx[r, vocab_size - 1]
                        acc[0] = T.float32(0)
                        j[0] = 0
                        while j[0] < vocab_size:
                            acc[0] = acc[0] + sorted_probs[r, j[0]]
                            if uniform[i] * mass[0] < acc[0]:
                                out[i] = sorted_idx[r, j[0]]
                                j[0] = vocab_size + 1
                            else:
                                j[0] = j[0] + 1

    return sample_with_top_p_kernel


def attach_logit_functions(mod, vocab_size: int, gpu: bool = True):
    """Add the six sampling/logit functions to `mod` (a relax IRModule); returns the new module."""
    bb = relax.BlockBuilder(mod)
    batch = tirx.Var("batch_size", "int64")
    n = tirx.Var("num_samples", "int64")
    f32, i32 = "float32", "int32"

    logits = relax.Var("logits", relax.TensorType((batch, 1, vocab_size), f32))
    temperature = relax.Var("temperature", relax.TensorType((batch,), f32))
    with bb.function("softmax_with_temperature", [logits, temperature]):
        with bb.dataflow():
            probs = bb.emit_te(
                _softmax_with_temperature_te, logits, temperature, primfunc_name_hint="softmax_with_temperature_kernel"
            )
            out = bb.emit_output(probs)
        bb.emit_func_output(out)

    run_sort = bb.add_func(_argsort_run_sort(vocab_size, gpu), "argsort_run_sort")
    merge = bb.add_func(_argsort_merge_pass(vocab_size, gpu), "argsort_merge_pass")
    probs = relax.Var("probs", relax.TensorType((batch, vocab_size), f32))
    kv_types = [relax.TensorType((batch, vocab_size), f32), relax.TensorType((batch, vocab_size), i32)]
    with bb.function("argsort_probs", [probs]):
        with bb.dataflow():
            pair = bb.emit(relax.call_tir(run_sort, [probs], kv_types))
            for width in merge_widths(vocab_size):
                # The run width travels as a 1-element constant tensor (call_tir has no scalar args here).
                width_t = relax.const(np.array([width], dtype="int32"))
                pair = bb.emit(relax.call_tir(merge, [pair[0], pair[1], width_t], kv_types))
            out = bb.emit_output(relax.Tuple([pair[0], pair[1]]))
        bb.emit_func_output(out)

    sampler = bb.add_func(_sample_with_top_p(vocab_size, gpu), "sample_with_top_p_kernel")
    sorted_probs = relax.Var("sorted_probs", relax.TensorType((batch, vocab_size), f32))
    sorted_indices = relax.Var("sorted_indices", relax.TensorType((batch, vocab_size), i32))
    uniform = relax.Var("uniform_samples", relax.TensorType((n,), f32))
    sample_indices = relax.Var("sample_indices", relax.TensorType((n,), i32))
    top_p = relax.Var("top_p", relax.TensorType((batch,), f32))
    with bb.function("sample_with_top_p", [sorted_probs, sorted_indices, uniform, sample_indices, top_p]):
        with bb.dataflow():
            res = bb.emit(
                relax.call_tir(
                    sampler, [sorted_probs, sorted_indices, uniform, sample_indices, top_p], relax.TensorType((n,), i32)
                )
            )
            out = bb.emit_output(res)
        bb.emit_func_output(out)

    mod = bb.get()
    for name, make in (
        ("apply_penalty_inplace", _apply_penalty_inplace),
        ("apply_logit_bias_inplace", _apply_logit_bias_inplace),
        ("apply_bitmask_inplace", _apply_bitmask_inplace),
    ):
        mod[name] = make(vocab_size, gpu).with_attr("global_symbol", name)
    return mod
