"""The `funasr-cpp` command."""
from __future__ import annotations

import argparse
import sys


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
