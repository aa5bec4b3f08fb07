"""Model definition -> the full relax IRModule web-llm expects (minus `_metadata`, added in the pipeline).

The functions, their arguments and param modes are listed in docs/webllm_contract.md §4."""

from __future__ import annotations

from dataclasses import dataclass

from build_pipeline.compiler.attention_merge import use_race_free_merge
from build_pipeline.compiler.attention_softcap import cap_attention_scores
from build_pipeline.errors import BuildError
from build_pipeline.families import Family, ModelConfig


@dataclass(frozen=True)
class LibrarySettings:
    """Everything besides the model config that changes the compiled library."""

    context_window: int
    prefill_chunk_size: int
    profile: str

    def to_dict(self) -> dict:
        return {
            "context_window": self.context_window,
            "prefill_chunk_size": self.prefill_chunk_size,
            "profile": self.profile,
        }


# Arguments of `vm.builtin.paged_attention_kv_cache_create` (0-based, after the builtin's name) the
# models never use: the MLA append, sliding-window prefill/decode and tree-attention kernels. The
# runtime treats an empty tuple / a non-function there as "absent" (attn_backend.cc, paged_kv_cache.cc
# of apache-tvm 0.27); web-llm never enables sliding windows (sliding_window_size = -1) nor tree
# decoding. Dropping them removes 5 large attention kernels that every page load would compile. A model
# with TVM `mha_sliding` layers (CausalLM.layer_sliding_window set) keeps the sliding-window pair.
KV_CREATE = "vm.builtin.paged_attention_kv_cache_create"
KV_CREATE_NARGS = 28
UNUSED_KV_ARGS = {
    14: "mla-append",
    18: "sliding-window-prefill",
    19: "sliding-window-decode",
    20: "tree-mask-prefill-paged",
    21: "tree-mask-prefill-ragged",
}
# The constructor's attention kernels: ("tirx", PrimFunc) pairs, or () where absent (trimmed, or MLA).
ATTENTION_KV_ARGS = {
    15: "prefill-ragged",
    16: "prefill-paged",
    17: "decode-paged",
    18: "sliding-window-prefill",
    19: "sliding-window-decode",
    20: "tree-mask-prefill-paged",
    21: "tree-mask-prefill-ragged",
    22: "mla-prefill",
}


def _check_kv_create(call) -> None:
    if len(call.args) - 1 != KV_CREATE_NARGS:
        raise BuildError(
            f"unexpected paged KV cache constructor ({len(call.args) - 1} args)",
            "install apache-tvm==0.27.0.post1, the version Lantern targets",
        )


def trim_kv_cache_kernels(mod, func_name: str = "create_tir_paged_kv_cache", keep_sliding_window: bool = False):
    """Replace the never-used kernels in the KV cache constructor call by 'absent' markers.

    `keep_sliding_window`: the model has TVM `mha_sliding` layers, which run the sliding-window kernels."""
    unused = {
        pos: kind
        for pos, kind in UNUSED_KV_ARGS.items()
        if not (keep_sliding_window and kind.startswith("sliding-window"))
    }
    from tvm import relax  # heavy (TVM): only when compiling; LibrarySettings keeps this module light

    found = []

    @relax.expr_functor.mutator
    class _Trim(relax.PyExprMutator):  # pylint: disable=abstract-method
        def visit_call_(self, call):  # pylint: disable=arguments-renamed
            call = super().visit_call_(call)
            args = list(call.args)
            if args and isinstance(args[0], relax.ExternFunc) and args[0].global_symbol == KV_CREATE:
                _check_kv_create(call)
                for pos in unused:
                    args[pos + 1] = relax.prim_value(0) if pos == 14 else relax.Tuple([])
                found.append(True)
                return relax.Call(call.op, args, call.attrs, call.ty_args)
            return call

    gv = mod.get_global_var(func_name)
    mod = mod.clone()
    mod[gv] = _Trim().visit_expr(mod[gv])
    if not found:
        raise BuildError("the model's KV cache constructor was not found", "this is a compiler bug")
    return mod


def kv_cache_attention_kernels(mod, func_name: str = "create_tir_paged_kv_cache") -> dict:
    """{role: GlobalVar} of the attention kernels the KV cache constructor passes (those it will run)."""
    from tvm import relax  # heavy (TVM): only when compiling

    kernels: dict = {}

    def visit(expr):
        if not (isinstance(expr, relax.Call) and expr.args and isinstance(expr.args[0], relax.ExternFunc)):
            return
        if expr.args[0].global_symbol != KV_CREATE:
            return
        _check_kv_create(expr)
        for pos, role in ATTENTION_KV_ARGS.items():
            arg = expr.args[pos + 1]
            if isinstance(arg, relax.Tuple) and len(arg.fields) == 2:
                kernels[role] = arg.fields[1]

    relax.analysis.post_order_visit(mod[func_name], visit)
    return kernels


def prune_unreferenced_kernels(mod):
    """Drop PrimFuncs no relax function references (e.g. KV-cache kernels the model trimmed away)."""
    import tvm  # heavy (TVM): only when compiling
    from tvm import relax

    used = set()

    def visit(expr):
        if isinstance(expr, tvm.ir.GlobalVar):
            used.add(expr.name_hint)

    for _, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    out = tvm.IRModule(
        {gv: f for gv, f in mod.functions.items() if isinstance(f, relax.Function) or gv.name_hint in used},
        attrs=mod.attrs,
    )
    return out


def export_ir(family: Family, config: ModelConfig, scheme, target, settings: LibrarySettings):
    """(IRModule with embed/prefill/decode/create_tir_paged_kv_cache + logit functions, param list).

    The param list is [(name, shape, dtype)] in the order the packed `params` argument expects.
    """
    from tvm import relax  # heavy (TVM), like logits.py: only when compiling

    from build_pipeline.compiler.logits import attach_logit_functions

    model = family.create_model(config, scheme, target, settings.context_window, settings.prefill_chunk_size)
    mod, named_params = model.export_tvm(spec=model.get_default_spec())
    params = [(name, [int(d) for d in p.shape], str(p.dtype)) for name, p in named_params]
    sliding = model.layer_sliding_window is not None
    mod = prune_unreferenced_kernels(trim_kv_cache_kernels(mod, keep_sliding_window=sliding))
    # TVM's GPU merge kernel races on the log-sum-exp (wrong chunked prefill on SwiftShader): attention_merge.py
    mod = use_race_free_merge(mod, target, config.num_attention_heads, scheme.dtype)
    if model.attention_logit_softcap is not None:
        mod = cap_attention_scores(mod, kv_cache_attention_kernels(mod), model.attention_logit_softcap)
    mod = attach_logit_functions(mod, config.vocab_size, gpu="gpu" in target.keys)
    # Symbolic sizes the memory planner may assume (web-llm never exceeds them).
    bounds = {
        "seq_len": settings.prefill_chunk_size,
        "total_seq_len": settings.context_window,
        "batch_size": 1,
        "num_samples": 1,
    }
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function) and gv.name_hint != "create_tir_paged_kv_cache":
            mod[gv] = func.with_attr("tir_var_upper_bound", bounds)
    return mod, params
