"""Build-time parity check: the compiled model (CPU build of the same definition) vs the numpy reference.

The CPU library is compiled from the same nn.Module, relax pipeline and logit functions as the
WebGPU one (only the target differs), loads the variant's own shards by the names in `_metadata`,
and runs exactly what web-llm runs: a fixed chat prompt rendered from the variant's conv_template
(each piece tokenized separately), chunked prefill (chunks of 1 token go through `decode`), then
greedy decode steps through the paged KV cache until a stop token or `max_new_tokens`.

The numpy reference (reference.py) runs teacher-forced on the same tokens with the same dequantized
weights. Per step we compare the logits (max abs diff against a tolerance scaled by the logit range)
and the argmax; an argmax flip only passes when the reference itself has a near tie there. The result
goes to verify.json beside the variant; the verify stage (stages/verify.py) raises BuildError on failure.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from tokenizers import Tokenizer

from build_pipeline import chat_template
from build_pipeline.compiler.cache import libs_root
from build_pipeline.contract import CHAT_CONFIG_FILE, TOKENIZER_FILE, VERIFY_FILE
from build_pipeline.convert import LazyDenseParams
from build_pipeline.errors import BuildError
from build_pipeline.memory import release_freed_memory
from build_pipeline.paths import cache_dir
from build_pipeline.tensor_cache import iter_tensors, read_index

PROMPT = "What is the capital of France?"
MAX_NEW_TOKENS = 16
PAGE_SIZE = 16
# Tolerances (absolute, after scaling by max(1, max|reference logit|)). The compiled model computes
# in float32 (f32 variants) or float16 activations with float32 accumulation (f16 variants).
TOLERANCE = {"float32": 2e-3, "float16": 4e-2}
NEAR_TIE = {"float32": 1e-3, "float16": 5e-2}  # relative top-2 margin under which a flip is tolerated


def prompt_token_ids(variant_dir: Path, user_message: str = PROMPT) -> tuple[list[int], dict, Tokenizer]:
    """(token ids exactly as web-llm builds them, the chat config, the tokenizer)."""
    chat = json.loads((variant_dir / CHAT_CONFIG_FILE).read_text())
    tok = Tokenizer.from_file(str(variant_dir / TOKENIZER_FILE))
    return chat_template.prompt_token_ids(chat["conv_template"], tok, [("user", user_message)]), chat, tok


class CompiledModel:
    """The CPU library driven like web-llm drives the WebGPU one."""

    def __init__(self, lib_path: Path, variant_dir: Path):
        import tvm  # heavy (TVM): only when a compiled model is run
        from tvm import relax

        self.tvm = tvm
        self.dev = tvm.cpu()
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(lib_path)), self.dev)
        self.metadata = json.loads(str(self.vm["_metadata"]()))
        wanted = {p["name"]: p for p in self.metadata["params"]}
        order = [r["name"] for shard in read_index(variant_dir)["records"] for r in shard["records"]]
        missing = [n for n in wanted if n not in order]
        if missing:
            raise BuildError(
                f"the library needs parameters missing from tensor-cache.json: {missing[:5]}",
                "rebuild the variant (compiler/converter mismatch)",
            )
        if [n for n in order if n in wanted] != list(wanted):
            raise BuildError(
                "the library's _metadata params are not in tensor-cache.json order",
                "keep the nn.Module's attribute order equal to the family's weight_map (a bug)",
            )
        # Each tensor goes to the device as it is read: the shards' bytes are never held twice (peak memory).
        self.params = []
        for name, arr in iter_tensors(variant_dir):
            if name not in wanted:
                continue
            spec = wanted[name]
            if list(arr.shape) != spec["shape"] or str(arr.dtype) != spec["dtype"]:
                raise BuildError(
                    f"tensor {name} is {arr.dtype}{list(arr.shape)} in the shards but the library "
                    f"expects {spec['dtype']}{spec['shape']}",
                    "rebuild the variant; the compiler and the converter disagree (a bug)",
                )
            self.params.append(tvm.runtime.tensor(arr, self.dev))
        get = tvm.get_global_func
        self._add_seq = get("vm.builtin.kv_state_add_sequence")
        self._begin = get("vm.builtin.kv_state_begin_forward")
        self._end = get("vm.builtin.kv_state_end_forward")
        self.kv = None

    def close(self) -> None:
        """Free the weights, KV cache and VM now and return their memory to the OS, so the next step (the
        numpy reference) does not stack its peak on top of them."""
        self.params, self.kv = [], None
        del self.vm
        release_freed_memory()

    def reset(self, context_window: int) -> None:
        import tvm_ffi  # comes with TVM (heavy): only when a compiled model is run

        chunk = self.metadata["prefill_chunk_size"]
        self.kv = self.vm["create_tir_paged_kv_cache"](
            *[tvm_ffi.Shape((v,)) for v in (1, context_window, chunk, PAGE_SIZE, 0)]
        )
        self._add_seq(self.kv, 0)

    def forward(self, ids: list[int]) -> np.ndarray:
        """One web-llm forward of <= prefill_chunk_size tokens; float32 logits of the last token."""
        logits = self._step(self.vm["prefill" if len(ids) > 1 else "decode"], ids)
        if logits.dtype != np.float32 or logits.shape[:2] != (1, 1):
            raise BuildError(
                f"the library returned logits {logits.dtype}{list(logits.shape)}, web-llm needs float32 [1, 1, vocab]",
                "this is a compiler bug",
            )
        return logits[0, 0]

    def _step(self, fn, ids: list[int]) -> np.ndarray:
        """Embed `ids`, run `fn` on them through the KV cache as one forward, return its logits output."""
        import tvm_ffi  # comes with TVM (heavy): only when a compiled model is run

        tvm = self.tvm
        embed = self.vm["embed"](tvm.runtime.tensor(np.asarray(ids, dtype=np.int32), self.dev), self.params)
        embed = embed.numpy().reshape(1, len(ids), -1)
        self._begin(self.kv, tvm_ffi.Shape((0,)), tvm_ffi.Shape((len(ids),)))
        out = fn(tvm.runtime.tensor(embed, self.dev), self.kv, self.params)
        self._end(self.kv)
        return out[0].numpy()

    def all_logits(self, ids: list[int], context_window: int) -> np.ndarray:
        """Fresh sequence, teacher-forced: float32 logits of every position [len(ids), vocab], through
        the CPU build's `prefill_all_logits` one prefill chunk at a time (the llama.cpp parity tests' path)."""
        return np.concatenate(list(self.iter_logits(ids, context_window)))

    def iter_logits(self, ids: list[int], context_window: int, chunk: int | None = None) -> Iterator[np.ndarray]:
        """all_logits one chunk at a time (at most `chunk` tokens, default the prefill chunk): the quality gate
        scores each block as it comes, since a whole window's logits over a 151,936-token vocabulary are
        311 MB (peak build memory)."""
        chunk = min(chunk or self.metadata["prefill_chunk_size"], self.metadata["prefill_chunk_size"])
        try:
            fn = self.vm["prefill_all_logits"]
        except Exception:  # noqa: BLE001  (tvm raises its own error types for a missing function)
            raise BuildError("the CPU library has no prefill_all_logits", "rebuild it (stale compiler cache)") from None
        self.reset(context_window)
        for start in range(0, len(ids), chunk):
            yield self._step(fn, ids[start : start + chunk])[0]

    def greedy(
        self, ids: list[int], steps: int, context_window: int, stop_ids: frozenset[int] = frozenset()
    ) -> tuple[list[int], list[np.ndarray]]:
        """Fresh sequence: prefill `ids`, then up to `steps` greedy tokens, ending early after a token in
        `stop_ids` (none by default: verification compares a fixed number of steps).

        Returns (tokens, logits that produced each token)."""
        self.reset(context_window)
        logits = [self.prefill(ids)]
        tokens = [int(np.argmax(logits[0]))]
        while len(tokens) < steps and len(ids) + len(tokens) < context_window and tokens[-1] not in stop_ids:
            logits.append(self.forward([tokens[-1]]))
            tokens.append(int(np.argmax(logits[-1])))
        return tokens, logits

    def prefill(self, ids: list[int]) -> np.ndarray:
        chunk = self.metadata["prefill_chunk_size"]
        if not ids:
            raise ValueError("prefill needs at least one token")
        for start in range(0, len(ids), chunk):
            logits = self.forward(ids[start : start + chunk])
        return logits


def cut_at_stop(raw: list[int], stop_ids, max_new_tokens: int) -> tuple[list[int], str]:
    """web-llm's chat output for a raw greedy sequence: (tokens before the first stop id, finish reason)."""
    for i, t in enumerate(raw):
        if t in stop_ids:
            return raw[:i], "stop"
    return raw[:max_new_tokens], "length"


def _compare(ref: np.ndarray, got: np.ndarray) -> dict:
    diff = float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64))))
    top2 = np.sort(ref)[-2:]
    return {
        "max_abs_diff": diff,
        "scale": float(np.max(np.abs(ref))),
        "argmax_ref": int(np.argmax(ref)),
        "argmax_got": int(np.argmax(got)),
        "ref_margin": float(top2[1] - top2[0]),
    }


def run_parity(
    model,
    scheme,
    variant_dir: Path,
    lib_path: Path,
    context_window: int,
    prompt: str = PROMPT,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> dict:
    """Compiled greedy decode + teacher-forced reference; returns the verify report (not yet judged)."""
    timings = {}
    t0 = time.monotonic()
    ids, chat, tok = prompt_token_ids(variant_dir, prompt)
    stop_ids = set(chat["conv_template"].get("stop_token_ids") or [])
    if len(ids) >= context_window:
        raise BuildError("the verification prompt does not fit the context window", "raise context_window")
    compiled = CompiledModel(lib_path, variant_dir)
    timings["load"] = time.monotonic() - t0

    t0 = time.monotonic()
    raw, steps_logits = compiled.greedy(ids, max_new_tokens, context_window)
    compiled.close()  # its weights are not held while the reference runs (peak build memory)
    generated, finish = cut_at_stop(raw, stop_ids, max_new_tokens)
    timings["compiled_run"] = time.monotonic() - t0

    t0 = time.monotonic()
    # Teacher-forced in one pass over prompt + generated tokens, with weights dequantized as they are
    # used: the reference never holds the whole model in float32 (peak build memory, issue 12).
    ref = model.family.reference(model.config, LazyDenseParams(variant_dir))
    with threadpool_limits(limits=1, user_api="blas"):
        ref.reset()
        ref_logits = list(ref.forward(ids + list(raw[: len(steps_logits) - 1]))[len(ids) - 1 :])
    timings["reference_run"] = time.monotonic() - t0

    steps = [_compare(r, g) for r, g in zip(ref_logits, steps_logits, strict=True)]
    return {
        "prompt": prompt,
        "prompt_token_ids": ids,
        # What web-llm's chat API yields (stops at a stop token, which is not part of the output) ...
        "greedy_token_ids": generated,
        "greedy_text": tok.decode(generated, skip_special_tokens=False),
        "finish_reason": finish,
        # ... and the raw greedy continuation, stop tokens included (forwardTokensAndSample).
        "raw_greedy_token_ids": raw,
        "steps": steps,
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "dtype": scheme.dtype,
    }


def judge(report: dict) -> dict:
    """Add passed/summary/max_abs_diff/argmax_agreement to a run_parity report."""
    dtype = report["dtype"]
    worst = max(s["max_abs_diff"] / max(1.0, s["scale"]) for s in report["steps"])
    agree = sum(s["argmax_ref"] == s["argmax_got"] for s in report["steps"])
    flips = [i for i, s in enumerate(report["steps"]) if s["argmax_ref"] != s["argmax_got"]]
    bad_flips = [
        i for i in flips if report["steps"][i]["ref_margin"] > NEAR_TIE[dtype] * max(1.0, report["steps"][i]["scale"])
    ]
    tol = TOLERANCE[dtype]
    passed = worst <= tol and not bad_flips
    n = len(report["steps"])
    report.update(
        passed=passed,
        max_abs_diff=max(s["max_abs_diff"] for s in report["steps"]),
        max_rel_diff=worst,
        tolerance=tol,
        argmax_agreement=f"{agree}/{n}",
        near_tie_flips=[i for i in flips if i not in bad_flips],
        summary=(
            f"{'PASS' if passed else 'FAIL'}: {n} steps (prefill {len(report['prompt_token_ids'])} tokens "
            f"+ {n - 1} decode), max |dlogit| {max(s['max_abs_diff'] for s in report['steps']):.2e} "
            f"({worst:.2e} of the logit range, tolerance {tol:.0e}), argmax agrees {agree}/{n}; "
            f"greedy {report['greedy_text']!r}"
        ),
    )
    return report


def cached_report_path(key: str) -> Path:
    """Where a passing verification report is kept, by its verification key (stages/verify.py)."""
    return cache_dir() / "verify" / f"{key}.json"


def cpu_library_for(variant_dir: Path) -> Path:
    """The cached CPU library a built variant was verified with (from its verify.json)."""
    report = json.loads((Path(variant_dir) / VERIFY_FILE).read_text())
    path = libs_root() / report["cpu_library"]["cache_key"] / "model.so"
    if not path.is_file():
        raise BuildError(
            f"the CPU library of {variant_dir} is not in the cache ({path})",
            "rebuild the variant (the cache was cleared)",
        )
    return path


def cpu_chat(variant_dir: Path, prompt: str, max_new_tokens: int = MAX_NEW_TOKENS) -> dict:
    """Greedy chat answer of the verified CPU build (what web-llm at temperature 0 must reproduce)."""
    ids, chat, tok = prompt_token_ids(Path(variant_dir), prompt)
    model = CompiledModel(cpu_library_for(variant_dir), Path(variant_dir))
    stops = frozenset(chat["conv_template"].get("stop_token_ids") or [])
    raw, _ = model.greedy(ids, max_new_tokens, chat["context_window_size"], stops)  # no step after a stop
    out, finish = cut_at_stop(raw, stops, max_new_tokens)
    return {
        "prompt": prompt,
        "prompt_token_ids": ids,
        "token_ids": out,
        "raw_token_ids": raw,
        "text": tok.decode(out, skip_special_tokens=False),
        "finish_reason": finish,
    }
