"""``funasr-cpp info``: versions, ggml backends and devices; or GGUF files' metadata."""
from __future__ import annotations

import argparse

from . import common


def add_parser(sub) -> None:
    info = sub.add_parser("info", help="show versions, ggml backends and devices; or a GGUF model's metadata")
    info.add_argument("model", nargs="*", help="GGUF files to describe (LLM or funasr mmproj)")
    info.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import funasr_cpp

    if not args.model:
        print(funasr_cpp.system_info())
        return 0
    for path in args.model:
        try:
            info = funasr_cpp.model_info(path)
        except (OSError, ValueError) as exc:
            return common.error(exc)
        if info.get("file") == "mmproj":  # provenance and settings, one per line
            print(f"{path}: funasr mmproj")
            for k, v in info.items():
                if k != "file":
                    print(f"  {k}: {v}")
        else:
            print(" ".join(f"{k}={v}" for k, v in info.items()))
    return 0
