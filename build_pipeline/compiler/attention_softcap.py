"""Attention-logit soft-capping (Gemma 2) inside TVM's paged-KV-cache attention kernels.

TVM 0.27's KV cache attention kernels (tvm/relax/frontend/nn/llm/_prefill_kernels.py, _decode_kernels.py,
_kernel_common.py) have no soft-cap step, and mlc-llm builds Gemma 2 without its cap: a different model.
This rewrite adds it to every attention kernel the cache uses. Each kernel computes the scaled score
s = q.k * sm_scale * log2(e) (log2 space, for the online softmax's exp2), stores it once into the buffer
its softmax reads, and masks with a separate store (-5e4, scaled in one kernel). That one store becomes C * tanh(s / C) with
C = cap * log2(e), which is cap * tanh(x / cap) of the natural-space score x = s / log2(e), exactly;
masked scores stay -5e4. The tanh argument is clamped to +-15, where float32 tanh is already +-1: the
same value, and no overflow in a backend that computes tanh from exponentials.

Every kernel must hold exactly one store of a known shape; anything else is a BuildError naming the
TVM version, so a TVM upgrade cannot silently drop the cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from build_pipeline.errors import BuildError

LOG2E = math.log2(math.e)
TANH_CLAMP = 15.0  # float32 tanh(15) == 1.0: clamping there changes no value


@dataclass(frozen=True)
class ScoreStore:
    """How one kind of TVM kernel stores its finished scores: into `buffer`, from a value reading `source`
    (a buffer or a scalar parameter)."""

    kernels: str
    buffer: str
    source: str


# The score stores of TVM 0.27's kernels (names as in their TVMScript source).
SCORE_STORES = (
    ScoreStore("CPU paged prefill / decode", "S_val", "sm_scale"),  # S_val[0] *= sm_scale * log2e
    ScoreStore("CPU ragged prefill", "attention_score", "result"),  # attention_score[0] = result[0] * ...
    ScoreStore("GPU prefill (paged, ragged)", "S_smem", "S_local"),  # compute_s_gemm: S_smem = S_local
    ScoreStore("GPU decode", "S_local", "t0"),  # S_local[j] = t0[0] (the cross-thread q.k sum)
)


def _names_read(expr) -> set[str]:
    """Names of the variables `expr` reads: scalar parameters and the data of the buffers it loads."""
    import tvm  # heavy (TVM): only when compiling
    import tvm_ffi

    names: set[str] = set()
    tvm_ffi.structural_walk(expr, (tvm.ir.expr.Var, lambda var: names.add(var.name)))
    return names


def _pattern_of(store) -> ScoreStore | None:
    for pattern in SCORE_STORES:
        if store.buffer.name == pattern.buffer and pattern.source in _names_read(store.value):
            return pattern
    return None


def _capped(value, cap: float):
    from tvm import tirx  # heavy (TVM): only when compiling

    c = tirx.const(cap * LOG2E, "float32")
    lo, hi = tirx.const(-TANH_CLAMP, "float32"), tirx.const(TANH_CLAMP, "float32")
    return c * tirx.tanh(tirx.max(tirx.min(value / c, hi), lo))


def _unsupported(kernel: str, problem: str) -> BuildError:
    return BuildError(
        f"cannot add the attention-logit soft-cap to TVM kernel {kernel}: {problem} "
        f"(apache-tvm {metadata.version('apache-tvm')}; Lantern's rewrite knows the kernels of 0.27)",
        "install apache-tvm==0.27.0.post1, or update build_pipeline/compiler/attention_softcap.py "
        "(SCORE_STORES) for the new kernels",
    )


def cap_attention_scores(mod, kernels: dict[str, Any], cap: float):
    """`mod` with scores soft-capped at `cap` in each of `kernels` ({role: GlobalVar} of the KV cache's
    attention PrimFuncs); no other function changes."""
    import tvm_ffi  # heavy (TVM): only when compiling
    from tvm import tirx

    if not kernels:
        raise _unsupported("(none)", "the KV cache constructor lists no attention kernel")
    mod = mod.clone()
    for role, gv in kernels.items():
        name = f"{gv.name_hint} ({role})"
        func = mod[gv]
        if not isinstance(func, tirx.PrimFunc):
            raise _unsupported(name, "it is not a TIR PrimFunc")
        stores: list = []
        tvm_ffi.structural_walk(func, (tirx.BufferStore, stores.append))
        found = [p for s in stores if (p := _pattern_of(s)) is not None]
        if len(found) != 1:
            what = "; ".join(f"{p.kernels}: {p.buffer} <- {p.source}" for p in found) or "none"
            raise _unsupported(name, f"expected one score store, found {len(found)} ({what})")

        def rewrite(store):
            if _pattern_of(store) is None:  # exactly one store matches (checked above)
                return store
            return tirx.BufferStore(store.buffer, _capped(store.value, cap), store.indices)

        mod[gv] = tvm_ffi.structural_map(func, (tirx.BufferStore, rewrite))
    return mod


def count_capped_stores(func) -> int:
    """Score stores of a kernel that carry the soft-cap (a tanh call): what tests check in a built module."""
    import tvm  # heavy (TVM): only when compiling
    import tvm_ffi
    from tvm import tirx

    tanh = tvm.ir.Op.get("tirx.tanh")
    count = 0

    def visit(store) -> None:
        nonlocal count
        calls: list = []
        tvm_ffi.structural_walk(store.value, (tvm.ir.expr.Call, lambda call: calls.append(call.op.same_as(tanh))))
        count += _pattern_of(store) is not None and any(calls)

    tvm_ffi.structural_walk(func, (tirx.BufferStore, visit))
    return count
