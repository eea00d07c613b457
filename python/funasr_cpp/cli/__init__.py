"""The ``funasr-cpp`` command: one module per command (``info``, ``convert`` with ``quantize``,
``transcribe``, ``dataset`` for transcribe-dataset, ``serve``), the flags they share in ``common``."""
from __future__ import annotations

import argparse

from .transcribe import output_paths as _output_paths  # noqa: F401 - its old name, for tests/test_formats.py


def build_parser() -> argparse.ArgumentParser:
    import funasr_cpp

    from . import convert, dataset, info, serve, transcribe

    ap = argparse.ArgumentParser(prog="funasr-cpp", description="Fun-ASR-Nano speech recognition on llama.cpp")
    ap.add_argument("--version", action="version",
                    version=f"funasr-cpp {funasr_cpp.__version__} (llama.cpp b{funasr_cpp.LLAMA_CPP_BUILD}, "
                            f"{funasr_cpp.LLAMA_CPP_COMMIT})")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    info.add_parser(sub)
    convert.add_parsers(sub)
    transcribe.add_parser(sub)
    dataset.add_parser(sub)
    serve.add_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return 2
    return args.func(args)

