"""A family's model compiled for the CPU (llvm) and driven like web-llm drives it, without shards.

The same nn.Module, relax pipeline and KV cache as the WebGPU library; parameters come straight from the
converter (q0f32: float32, nothing rounded), so its logits can be compared with llama.cpp's.
"""

from __future__ import annotations

import os

import numpy as np

from build_pipeline.compiler import compile_executable, cpu_target
from build_pipeline.compiler.module import LibrarySettings
from build_pipeline.compiler.profiles import PROFILES
from build_pipeline.convert import convert
from build_pipeline.quantization import SCHEMES

PAGE_SIZE = 16


class CompiledFamilyModel:
    def __init__(self, source, family, config, context_window: int, prefill_chunk_size: int,
                 scheme_name: str = "q0f32"):
        import tvm  # heavy: only compiled tests load TVM
        from tvm import relax

        scheme = SCHEMES[scheme_name]
        target = cpu_target()
        settings = LibrarySettings(context_window, prefill_chunk_size, PROFILES["swiftshader"].name)
        ex, meta = compile_executable(family, config, scheme, settings, PROFILES["swiftshader"], target)
        self.tvm, self.dev = tvm, tvm.cpu()
        self.vm = relax.VirtualMachine(ex, self.dev)
        tensors = {name: arr for name, arr, _ in convert(source, config, family, scheme)}
        self.params = [tvm.runtime.tensor(np.ascontiguousarray(tensors[p["name"]]), self.dev)
                       for p in meta["params"]]
        self.context_window, self.chunk = context_window, prefill_chunk_size
        get = tvm.get_global_func
        self._add_seq = get("vm.builtin.kv_state_add_sequence")
        self._begin = get("vm.builtin.kv_state_begin_forward")
        self._end = get("vm.builtin.kv_state_end_forward")

    def logits(self, ids: list[int]) -> np.ndarray:
        """Fresh sequence: prefill in web-llm's chunks through `prefill_all_logits`, then decode the rest
        one token at a time from position `len(ids) // 2`: float32 logits of every position."""
        import tvm_ffi

        tvm = self.tvm
        kv = self.vm["create_tir_paged_kv_cache"](
            *[tvm_ffi.Shape([v]) for v in (1, self.context_window, self.chunk, PAGE_SIZE, 0)])
        self._add_seq(kv, 0)
        half, out = int(os.environ.get("LANTERN_HALF", len(ids) // 2)), []
        pieces = [ids[s:min(s + self.chunk, half)] for s in range(0, half, self.chunk)]
        pieces += [[t] for t in ids[half:]]
        for piece in pieces:
            embed = self.vm["embed"](tvm.runtime.tensor(np.asarray(piece, dtype=np.int32), self.dev), self.params)
            embed = embed.numpy().reshape(1, len(piece), -1)
            self._begin(kv, tvm_ffi.Shape([0]), tvm_ffi.Shape([len(piece)]))
            fn = self.vm["prefill_all_logits" if len(piece) > 1 else "decode"]
            logits = fn(tvm.runtime.tensor(embed, self.dev), kv, self.params)[0].numpy()
            self._end(kv)
            out.append(logits.reshape(len(piece), -1))
        return np.concatenate(out)
