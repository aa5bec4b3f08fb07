"""The compiler: one model family's nn.Module -> a WebGPU model library (.wasm) for web-llm 0.2.86, or
the CPU (llvm) build of the same definition that verification and the quality gate run.

library.py compiles (or reuses from cache.py) one library: module.py exports the nn.Module with the
logit functions (logits.py) and the paged KV cache, pipeline.py is the relax pipeline with the
profile's schedules (profiles.py, schedules.py, cpu_schedule.py), limits.py checks every kernel
against the device limits, wasm_runtime.py links TVM's web runtime. verify.py drives a compiled CPU
library like web-llm drives the WebGPU one. The stages that use them are in build_pipeline/stages/.
Nothing here imports TVM until something is compiled or run.
"""
