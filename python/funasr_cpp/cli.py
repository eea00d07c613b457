"""The `funasr-cpp` command."""
from __future__ import annotations

import argparse
import os
import sys
import time


def _cmd_info(args: argparse.Namespace) -> int:
    import funasr_cpp

    if args.model:
        for path in args.model:
            try:
                info = funasr_cpp.model_info(path)
            except (OSError, ValueError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(" ".join(f"{k}={v}" for k, v in info.items()))
        return 0
    print(funasr_cpp.system_info())
    return 0


def _mib(path: str) -> str:
    return f"{os.path.getsize(path) / 2**20:.1f} MiB"


def _cmd_quantize(args: argparse.Namespace) -> int:
    import funasr_cpp

    t0 = time.perf_counter()
    try:
        funasr_cpp.quantize(args.src, args.dst, args.type, n_threads=args.threads)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"quantized {args.src} ({_mib(args.src)}) -> {args.dst} ({_mib(args.dst)}, {args.type.lower()}) "
          f"in {time.perf_counter() - t0:.2f} s")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .converters.convert import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    import funasr_cpp

    ap = argparse.ArgumentParser(prog="funasr-cpp", description="Fun-ASR-Nano speech recognition on llama.cpp")
    ap.add_argument("--version", action="version",
                    version=f"funasr-cpp {funasr_cpp.__version__} (llama.cpp b{funasr_cpp.LLAMA_CPP_BUILD}, "
                            f"{funasr_cpp.LLAMA_CPP_COMMIT})")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="show versions, ggml backends and devices; or a GGUF model's metadata")
    info.add_argument("model", nargs="*", help="GGUF LLM files to describe")
    info.set_defaults(func=_cmd_info)
    from .converters.convert import add_arguments as add_convert_arguments

    conv = sub.add_parser("convert", help="convert a released checkpoint folder to an LLM GGUF + mmproj GGUF",
                          description="Read a Fun-ASR-Nano release folder (model.pt, config.yaml, Qwen3-0.6B/) "
                                      "and write OUT/<name>-<llm-type>.gguf and OUT/mmproj-<name>-<mmproj-type>.gguf.")
    add_convert_arguments(conv)
    conv.set_defaults(func=_cmd_convert)
    quant = sub.add_parser("quantize", help="quantize a GGUF LLM with llama.cpp (e.g. to q8_0 or q4_k_m)")
    quant.add_argument("src", metavar="IN.gguf", help="source GGUF (f32/f16/bf16)")
    quant.add_argument("dst", metavar="OUT.gguf", help="destination (replaced only on success)")
    quant.add_argument("type", metavar="TYPE", help="one of: " + ", ".join(funasr_cpp.llm.QUANT_TYPES))
    quant.add_argument("--threads", type=int, default=None, metavar="N", help="threads (default: all cores)")
    quant.set_defaults(func=_cmd_quantize)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
