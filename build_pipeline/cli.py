"""`python -m build_pipeline` / `lantern-build`: build, list and inspect models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from build_pipeline.build import build
from build_pipeline.errors import BuildError
from build_pipeline.inspect_model import inspect_variant, variant_dirs
from build_pipeline.manifest import read_manifest
from build_pipeline.model_config import find_model_configs, load_model_config, needs_hub, with_source_file
from build_pipeline.paths import model_configs_dir, models_dir


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def cmd_build(args) -> int:
    spec = load_model_config(Path(args.config))
    if args.source_file:
        spec = with_source_file(spec, Path(args.source_file))
    out = Path(args.out) if args.out else models_dir()
    built = build(
        spec,
        out,
        args.quantization or None,
        compile_library=not args.no_compile,
        if_missing=args.if_missing,
        profile=args.profile,
    )
    for path in built:
        print(f"built {path}")
    if args.if_missing and not built:
        print(f"{spec.id}: every requested variant is already built in {out}")
    return 0


def cmd_list(args) -> int:
    out = Path(args.out) if args.out else models_dir()
    for spec in find_model_configs(Path(args.configs) if args.configs else model_configs_dir()):
        src = spec.source
        where = f"{src.repo}@{(src.revision or '')[:10]}" if src.kind == "hub" else (src.package or src.path or "")
        if src.file:
            where += f" {src.file}"
        star = " (default)" if spec.default else ""
        needs = (
            "needs the Hugging Face Hub (or --source-file)"
            if needs_hub(spec) and src.file
            else "needs the Hugging Face Hub"
            if needs_hub(spec)
            else "builds offline"
        )
        print(f"{spec.id}{star}  family={spec.family}  source={src.kind}:{where}  {needs}")
        built = {}
        if (out / spec.id).is_dir():
            try:
                built = {m.quantization: m for m in map(read_manifest, variant_dirs(out / spec.id))}
            except BuildError:
                built = {}
        for q in spec.quantizations:
            m = built.get(q)
            state = (
                f"built, {_size(m.download_bytes)} download, {m.bits_per_param:.2f} bits/param"
                + ("" if m.library else ", no model library")
                if m
                else "not built"
            )
            print(f"    {q:9s} {state}")
    return 0


def cmd_inspect(args) -> int:
    bad = 0
    for d in variant_dirs(Path(args.path)):
        r = inspect_variant(d)
        m = r.manifest
        lib = m.library
        print(f"{m.id}  ({d})")
        print(f"  quantization {m.quantization}, {m.param_count:,} params, {m.bits_per_param:.2f} bits/param")
        print(
            f"  download {_size(m.download_bytes)} in {len(m.files)} files, "
            f"GPU memory ~{_size(m.estimated_gpu_memory_bytes)}, "
            f"features {', '.join(m.required_features) or 'none'}"
        )
        print(f"  library {lib['file'] if lib else 'none'}" + (f" (profile {lib.get('profile')})" if lib else ""))
        if m.software_library:
            soft = m.software_library
            print(f"  software-adapter library {soft['file']} (profile {soft.get('profile')})")
        if r.verify:
            print(f"  verify: {'passed' if r.verify.get('passed') else 'FAILED'} {r.verify.get('summary', '')}")
        q = m.quality or (r.verify or {}).get("quality")
        if q:
            print(
                f"  quality: perplexity {q['perplexity']:.3f} vs {q.get('reference', 'q0f32')} "
                f"{q['reference_perplexity']:.3f} = {q['ratio']:.4f}x over {q['eval_tokens']} tokens"
                + (f" ({q['status']})" if q.get("status") else "")
            )
        formats = m.weight_formats
        if formats:
            print(
                "  weight formats: "
                + ", ".join(
                    f"{name} x{f['weights']}" + (f" (from {'/'.join(f['sources'])})" if f["sources"] else "")
                    for name, f in formats.items()
                )
            )
        if r.ok:
            print(f"  hashes: all {len(m.files)} files valid")
        else:
            bad += 1
            for p in r.problems:
                print(f"  PROBLEM {p}")
    return 1 if bad else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m build_pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build every variant of a model config (or those given with -q)")
    b.add_argument("config", help="model config file, e.g. model_configs/smollm2-135m-instruct.toml")
    b.add_argument("-q", "--quantization", action="append", help="build only this quantization (repeatable)")
    b.add_argument("--out", help="output root (default: dist/models or $LANTERN_MODELS_DIR)")
    b.add_argument("--no-compile", action="store_true", help="shards and configs only, no WebGPU library")
    b.add_argument("--if-missing", action="store_true", help="skip variants that are already built")
    b.add_argument(
        "--source-file",
        metavar="FILE.gguf",
        help="build from this local GGUF instead of the config's [source] (e.g. a Hub GGUF "
        "downloaded elsewhere); it must be the model the config describes",
    )
    b.add_argument(
        "--profile",
        choices=("auto", "gpu", "swiftshader"),
        help="kernel build profile (default auto: a gpu library for every variant plus a "
        "swiftshader one for f32 variants, used on software adapters)",
    )
    b.set_defaults(func=cmd_build)
    ls = sub.add_parser("list", help="model configs and what is built, with sizes")
    ls.add_argument("--out", help="output root to look in")
    ls.add_argument("--configs", help="folder of model configs (default: model_configs/)")
    ls.set_defaults(func=cmd_list)
    i = sub.add_parser("inspect", help="what a built model holds; checks every hash")
    i.add_argument("path", help="dist/models/<model-id> or dist/models/<model-id>/<quantization>")
    i.set_defaults(func=cmd_inspect)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BuildError as exc:
        print(f"error: {exc.problem}\n  fix: {exc.fix}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was left half-written", file=sys.stderr)
        return 130
