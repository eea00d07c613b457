"""``funasr-cpp convert`` and ``funasr-cpp quantize``: the commands that write GGUF files."""
from __future__ import annotations

import argparse
import os
import time

from . import common


def add_parsers(sub) -> None:
    from ..converters.convert import add_arguments

    conv = sub.add_parser("convert", help="convert a released checkpoint folder to an LLM GGUF + mmproj GGUF",
                          description="Read a Fun-ASR-Nano release folder (model.pt, config.yaml, Qwen3-0.6B/) "
                                      "and write OUT/<name>-<llm-type>.gguf and OUT/mmproj-<name>-<mmproj-type>.gguf.")
    add_arguments(conv)
    conv.set_defaults(func=convert)
    quant = sub.add_parser("quantize", help="quantize a GGUF LLM with llama.cpp (e.g. to q8_0 or q4_k_m)")
    quant.add_argument("src", metavar="IN.gguf", help="source GGUF (f32/f16/bf16)")
    quant.add_argument("dst", metavar="OUT.gguf", help="destination (replaced only on success)")
    # not listed here: the list comes from llama.cpp through the native extension, which building
    # the parser does not load (an unknown type is answered with the list)
    quant.add_argument("type", metavar="TYPE", help="a llama.cpp type such as q8_0, q4_k_m or q4_0 "
                                                    "(funasr_cpp.llm.QUANT_TYPES)")
    quant.add_argument("--threads", type=int, default=None, metavar="N", help="threads (default: all cores)")
    quant.set_defaults(func=quantize)


def convert(args: argparse.Namespace) -> int:
    from ..converters.convert import run

    return run(args)


def _mib(path: str) -> str:
    return f"{os.path.getsize(path) / 2**20:.1f} MiB"


def quantize(args: argparse.Namespace) -> int:
    import funasr_cpp

    t0 = time.perf_counter()
    try:
        funasr_cpp.quantize(args.src, args.dst, args.type, n_threads=args.threads)
    except (OSError, ValueError, RuntimeError) as exc:
        return common.error(exc)
    print(f"quantized {args.src} ({_mib(args.src)}) -> {args.dst} ({_mib(args.dst)}, {args.type.lower()}) "
          f"in {time.perf_counter() - t0:.2f} s")
    return 0
