"""Build TVM's WebGPU web runtime with emcc and link model libraries (.wasm) for web-llm.

web-llm loads one .wasm per model that holds the TVM runtime (FFI, relax VM, WebGPU
device API) plus the compiled model. The apache-tvm wheel ships the runtime *sources*
but no prebuilt wasm runtime, so we compile them once (~1.5-2 min) with Debian's
emscripten and cache the objects; each model link then only runs wasm-ld + wasm-opt.

Why wasm objects, not bitcode: wasm-ld 14 cannot read TVM's LLVM-22 bitcode, so the
model is emitted as wasm objects anyway, and runtime objects skip a slow LTO step.
RPC is left out: web-llm never starts tvmjs' RPC server, and its sources need
headers the wheel lacks.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from importlib import metadata, util
from pathlib import Path

from build_pipeline.atomic import staged_dir
from build_pipeline.errors import BuildError

SUPPORT_DIR = Path(__file__).resolve().with_name("runtime_support")
RUNTIME_UNITS = ("wasm_runtime", "webgpu_runtime", "tvmjs_support")
# Bump when the staging/filtering recipe below changes meaning.
_RECIPE_VERSION = 2
# -fwasm-exceptions: a failing TVM check becomes a JS Error with its message and the
# instance stays usable; without it emcc turns every throw into an abort that reaches
# JS as "[object Object]". Costs ~35% wasm size; imports stay the same.
CXXFLAGS = ("-O3", "-std=c++17", "-Wno-ignored-attributes", "-fwasm-exceptions")
# -O2 runs wasm-opt (~25 s on 2 cores, -27% code vs -O1); -O3 saves 3% more for ~3x the time.
# Undefined symbols are allowed because TVMFFIWasmSafeCall/FunctionDeleter come from
# JS; check_interface() then rejects any import web-llm's runtime does not provide.
LDFLAGS = (
    "-O2",
    "-fwasm-exceptions",
    "--no-entry",
    "-sSTANDALONE_WASM=1",
    "-sWASM_BIGINT=1",
    "-sALLOW_MEMORY_GROWTH=1",
    "-sINITIAL_MEMORY=160MB",
    "-sERROR_ON_UNDEFINED_SYMBOLS=0",
)

# Imports that the tvmjs runtime bundled in @mlc-ai/web-llm 0.2.86 supplies: its
# emscripten glue's `wasmImports` (given as both "env" and "wasi_snapshot_preview1"),
# plus what tvmjs' Environment adds to "env". Anything else fails WebAssembly.instantiate.
_GLUE_IMPORTS = frozenset(
    {
        "TVMFFIWasmFunctionDeleter",
        "TVMFFIWasmSafeCall",
        "clock_time_get",
        "emscripten_notify_memory_growth",
        "environ_get",
        "environ_sizes_get",
        "fd_close",
        "fd_read",
        "fd_seek",
        "fd_write",
        "proc_exit",
    }
)
WEBLLM_IMPORTS = {
    "env": _GLUE_IMPORTS | {"__console_log", "__cxa_thread_atexit"},
    "wasi_snapshot_preview1": _GLUE_IMPORTS,
}
# Exports the bundled tvmjs calls (runtime.ts + emscripten glue's `_initialize`).
REQUIRED_EXPORTS = frozenset(
    {
        "memory",
        "_initialize",
        "TVMWasmAllocSpace",
        "TVMWasmFreeSpace",
        "TVMFFIWasmFunctionCreate",
        "TVMFFIWasmGetLastError",
        "TVMFFIAnyViewToOwnedAny",
        "TVMFFIDataTypeToString",
        "TVMFFIErrorSetRaisedFromCStr",
        "TVMFFIFunctionCall",
        "TVMFFIFunctionGetGlobal",
        "TVMFFIFunctionSetGlobal",
        "TVMFFIGetTypeInfo",
        "TVMFFIObjectDecRef",
        "TVMFFIObjectIncRef",
        "TVMFFITypeKeyToIndex",
    }
)

_REINSTALL = "reinstall the pinned wheel: pip install --force-reinstall apache-tvm==0.27.0.post1"


class WasmBuildError(BuildError):
    """Building the web runtime or linking a model library failed."""


def _emcc() -> str:
    path = shutil.which("emcc")
    if path is None:
        raise WasmBuildError(
            "emcc (emscripten) is not on PATH; it links the WebGPU model library",
            "install Debian package emscripten: apt-get install -y emscripten (or make system-deps)",
        )
    return path


def _run(cmd: list[str], problem: str, fix: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # the caller explains a failure
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
        raise WasmBuildError(f"{problem} (emcc exit {proc.returncode}):\n{tail}\ncommand: {' '.join(cmd)}", fix)


def _package_dir(name: str) -> Path:
    spec = util.find_spec(name)
    if spec is None or spec.origin is None:
        raise WasmBuildError(f"Python package {name} is not installed", _REINSTALL)
    return Path(spec.origin).parent


def _cache_key(emcc: str) -> str:
    """Hash of everything that changes the runtime objects."""
    h = hashlib.sha256()
    version = subprocess.run([emcc, "--version"], capture_output=True, text=True, check=True).stdout
    parts = [
        metadata.version("apache-tvm"),
        metadata.version("apache-tvm-ffi"),
        version.splitlines()[0] if version else "",
        " ".join(CXXFLAGS),
        str(_RECIPE_VERSION),
    ]
    h.update("\n".join(parts).encode())
    for f in sorted(p for p in SUPPORT_DIR.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(SUPPORT_DIR)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _stage_sources(stage: Path) -> None:
    """Lay the wheel's sources out like TVM's source tree, plus our support headers.

    Copies, not symlinks: the sources include "../support/x.h" relative to themselves,
    which must resolve inside the staging tree.
    """
    tvm, ffi = _package_dir("tvm"), _package_dir("tvm_ffi")
    dlpack = ffi / "3rdparty" / "dlpack" / "include"
    if not dlpack.is_dir():
        dlpack = ffi / "include"
    copies = [
        (tvm / "include", stage / "include"),
        (SUPPORT_DIR / "include", stage / "include"),
        (tvm / "src" / "runtime", stage / "src" / "runtime"),
        (SUPPORT_DIR / "src" / "support", stage / "src" / "support"),
        (SUPPORT_DIR / "3rdparty" / "compiler-rt", stage / "3rdparty" / "compiler-rt"),
        (ffi / "include", stage / "3rdparty" / "tvm-ffi" / "include"),
        (ffi / "src", stage / "3rdparty" / "tvm-ffi" / "src"),
        (dlpack, stage / "3rdparty" / "tvm-ffi" / "3rdparty" / "dlpack" / "include"),
    ]
    for src, dst in copies:
        if not src.is_dir():
            raise WasmBuildError(f"runtime sources missing: {src}", _REINSTALL)
        shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    emcc_dir = tvm / "web" / "emcc"
    out = stage / "web" / "emcc"
    out.mkdir(parents=True)
    runtime = (emcc_dir / "wasm_runtime.cc").read_text()
    rpc_include = re.compile(r'^#include "src/runtime/rpc/[^"]+"\n', re.M)
    changed = "update build_pipeline/compiler/wasm_runtime.py for this TVM version, or " + _REINSTALL
    if not rpc_include.search(runtime):
        raise WasmBuildError("tvm/web/emcc/wasm_runtime.cc no longer lists RPC sources", changed)
    (out / "wasm_runtime.cc").write_text(rpc_include.sub("", runtime))
    # tvmjs_support.cc = C API for JS callbacks (kept) + RPC LocalSession (dropped).
    support = (emcc_dir / "tvmjs_support.cc").read_text()
    cut = support.find("\nnamespace tvm {")
    rpc_header = '#include "../../src/runtime/rpc/rpc_local_session.h"\n'
    if cut < 0 or rpc_header not in support or "TVMFFIWasmGetLastError" not in support[:cut]:
        raise WasmBuildError("tvm/web/emcc/tvmjs_support.cc changed layout", changed)
    (out / "tvmjs_support.cc").write_text(support[:cut].replace(rpc_header, "") + "\n")
    shutil.copy(emcc_dir / "webgpu_runtime.cc", out / "webgpu_runtime.cc")
    _patch_layer_sliding_window_aux(stage / "src" / "runtime" / "vm")


# TVM 0.27's PlainPagedKVCacheAuxDataManager (attn_utils.h: every device except CUDA and the CPU, so WebGPU)
# keeps one device array per depth for each page-table array. When a model mixes `mha` and `mha_sliding`
# layers, the KV cache copies the sliding-window page table (indptr, indices, length info, rope offsets)
# into the same per-depth arrays as the full one (paged_kv_cache.cc), so once a sequence passes the window
# the global layers attend only to the window. (The CPU build's cached manager gives every copy its own
# space: it is exact.) The fix gives the sliding-window copies their own slots, depth + MaxBlockDepth;
# the cached manager ignores the depth argument.
_SLIDING_SLOT = "d + kPagedKVCacheMaxBlockDepth"
_AUX_PATCHES = {
    "attn_utils.h": [
        (
            "    cur_append_length_indptr_device_ = Tensor::Empty({reserved_num_seqs + 1}, dtype_aux_, device);\n",
            "    // Lantern: slots kPagedKVCacheMaxBlockDepth.. hold the per-layer sliding-window page tables.\n"
            "    for (int d = 0; d < kPagedKVCacheMaxBlockDepth; ++d) {\n"
            "      page_indptr_on_depths_device_.push_back(Tensor::Empty({reserved_num_seqs + 1}, dtype_aux_, device));\n"
            "      page_indices_on_depths_device_.push_back(Tensor::Empty({num_total_pages}, dtype_aux_, device));\n"
            "      length_info_on_depths_device_.push_back(Tensor::Empty({3, reserved_num_seqs}, dtype_aux_, device));\n"
            "      k_rope_pos_offset_on_depths_device_.push_back(Tensor::Empty({reserved_num_seqs}, dtype_aux_, device));\n"
            "    }\n"
            "    cur_append_length_indptr_device_ = Tensor::Empty({reserved_num_seqs + 1}, dtype_aux_, device);\n",
        )
    ],
    "paged_kv_cache.cc": [
        (
            f"&{name}_sliding_window_on_depths_host_[d], d);",
            f"&{name}_sliding_window_on_depths_host_[d], {_SLIDING_SLOT});",
        )
        for name in ("page_indptr", "page_indices", "k_rope_pos_offset")
    ]
    + [
        (
            "layer_sliding_window_length_info_on_depths_view_[d] =\n"
            "            aux_data_manager_->CopyLengthInfoOnDepthAsync(&last_page_len_on_depths_host_[d],\n"
            "                                                          &sliding_window_offset_on_depths_host_[d],\n"
            "                                                          &sink_size_on_depths_host_[d], d);",
            "layer_sliding_window_length_info_on_depths_view_[d] =\n"
            "            aux_data_manager_->CopyLengthInfoOnDepthAsync(&last_page_len_on_depths_host_[d],\n"
            "                                                          &sliding_window_offset_on_depths_host_[d],\n"
            f"                                                          &sink_size_on_depths_host_[d], {_SLIDING_SLOT});",
        )
    ],
}


def _patch_layer_sliding_window_aux(vm_dir: Path) -> None:
    """Apply _AUX_PATCHES to the staged runtime sources; each must match exactly once."""
    for name, patches in _AUX_PATCHES.items():
        path = vm_dir / name
        text = path.read_text()
        for old, new in patches:
            if text.count(old) != 1:
                raise WasmBuildError(
                    f"TVM's {name} changed: the per-layer sliding-window fix (wasm_runtime.py) no longer applies",
                    "update _AUX_PATCHES in build_pipeline/compiler/wasm_runtime.py for this TVM version, or "
                    + _REINSTALL,
                )
            text = text.replace(old, new)
        path.write_text(text)


def ensure_runtime(cache_root: Path) -> list[Path]:
    """Return the cached runtime objects, compiling them (one unit at a time) on first use."""
    emcc = _emcc()
    final = Path(cache_root) / "wasm-runtime" / _cache_key(emcc)
    objects = [final / f"{unit}.o" for unit in RUNTIME_UNITS]
    if all(o.is_file() for o in objects):
        return objects
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent build waits, then reuses this one
        if all(o.is_file() for o in objects):
            return objects
        for stale in final.parent.glob(f".{final.name}.tmp-*"):  # from a killed build
            shutil.rmtree(stale, ignore_errors=True)
        with staged_dir(final) as tmp:  # renamed into place only when complete
            stage = tmp / "stage"
            _stage_sources(stage)
            includes = [
                f"-I{stage / d}"
                for d in (
                    ".",
                    "include",
                    "3rdparty/tvm-ffi/include",
                    "3rdparty/tvm-ffi/3rdparty/dlpack/include",
                    "3rdparty/compiler-rt",
                )
            ]
            seconds = {}
            for unit in RUNTIME_UNITS:
                start = time.monotonic()
                _run(
                    [
                        emcc,
                        *CXXFLAGS,
                        *includes,
                        f"-ffile-prefix-map={stage}=tvm",
                        "-c",
                        "-o",
                        str(tmp / f"{unit}.o"),
                        str(stage / "web" / "emcc" / f"{unit}.cc"),
                    ],
                    f"compiling the TVM web runtime ({unit}.cc) failed",
                    "use Debian's emscripten (apt-get install -y emscripten) and the pinned "
                    "apache-tvm; new TVM sources may need more headers in "
                    "build_pipeline/compiler/runtime_support/",
                )
                seconds[unit] = round(time.monotonic() - start, 1)
            shutil.rmtree(stage)
            (tmp / "build.json").write_text(
                json.dumps(
                    {
                        "apache-tvm": metadata.version("apache-tvm"),
                        "apache-tvm-ffi": metadata.version("apache-tvm-ffi"),
                        "cxxflags": CXXFLAGS,
                        "compile_seconds": seconds,
                    },
                    indent=1,
                )
            )
    return objects


def wasm_interface(path: Path) -> tuple[set[tuple[str, str]], set[str]]:
    """(imports as (module, name), export names) of a wasm binary."""
    data = Path(path).read_bytes()
    if data[:4] != b"\0asm":
        raise WasmBuildError(f"{path} is not a wasm binary", "re-run link_model_library")

    def leb(i: int) -> tuple[int, int]:
        result = shift = 0
        while True:
            byte = data[i]
            i += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return result, i

    def name(i: int) -> tuple[str, int]:
        n, i = leb(i)
        return data[i : i + n].decode(), i + n

    def limits(i: int) -> int:
        flags, i = leb(i)
        _, i = leb(i)
        return leb(i)[1] if flags & 1 else i

    imports, exports, i = set(), set(), 8
    while i < len(data):
        section = data[i]
        size, i = leb(i + 1)
        end = i + size
        if section in (2, 7):
            count, j = leb(i)
            for _ in range(count):
                if section == 2:
                    module, j = name(j)
                    field, j = name(j)
                    kind, j = data[j], j + 1
                    j = {
                        0: lambda k: leb(k)[1],
                        1: lambda k: limits(k + 1),
                        2: limits,
                        3: lambda k: k + 2,
                        4: lambda k: leb(k + 1)[1],
                    }[kind](j)
                    imports.add((module, field))
                else:
                    field, j = name(j)
                    exports.add(field)
                    j = leb(j + 1)[1]
        i = end
    return imports, exports


def check_interface(path: Path) -> None:
    """Fail unless web-llm 0.2.86's tvmjs can instantiate the wasm and find what it calls."""
    imports, exports = wasm_interface(path)
    unresolved = sorted(f"{m}.{n}" for m, n in imports if n not in WEBLLM_IMPORTS.get(m, ()))
    missing = sorted(REQUIRED_EXPORTS - exports)
    if unresolved or missing:
        raise WasmBuildError(
            f"{Path(path).name} would not load in web-llm 0.2.86: imports it cannot provide "
            f"{unresolved}, exports it needs but are missing {missing}",
            "an unresolved import is a symbol neither the model nor the runtime defines: "
            "compile the model with tvm.compile for webgpu + wasm32 host, and delete the "
            "cache dir (wasm-runtime/) if the runtime objects are stale",
        )


def link_model_library(executable, out_path: Path, cache_root: Path) -> Path:
    """Write a relax VMExecutable (webgpu, wasm32 host) as a web-llm model library .wasm."""
    runtime = ensure_runtime(cache_root)
    emcc = _emcc()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp.wasm")  # .wasm: no JS glue

    class Fcompile:
        """TVM's export_library linker hook: emcc with our runtime objects."""

        object_format = "o"  # wasm objects: wasm-ld 14 cannot read LLVM-22 bitcode
        need_system_lib = True  # tvmjs finds the model through ffi.SystemLib

        def __call__(self, output: str, objects: list[str], **_: object) -> None:
            _run(
                [emcc, *LDFLAGS, "-o", output, *map(str, runtime), *objects],
                f"emcc could not link the model library {out_path.name}",
                "the model must be compiled with target host "
                '{"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"}; see the emcc output above',
            )

    fcompile = Fcompile()
    try:
        with tempfile.TemporaryDirectory(prefix="lantern-link-") as work:
            executable.export_library(str(tmp_out), fcompile=fcompile, workspace_dir=work)
        check_interface(tmp_out)
        os.replace(tmp_out, out_path)
    except ValueError as err:
        if "system-lib" not in str(err):
            raise
        raise WasmBuildError(
            "the executable is not a system library, so tvmjs could not find its functions",
            'compile with tvm.compile(mod, target=Target({"kind": "webgpu"}, host={"kind": '
            '"llvm", "mtriple": "wasm32-unknown-unknown-wasm"}))',
        ) from err
    finally:
        tmp_out.unlink(missing_ok=True)
    return out_path
