"""The ``funasr-cpp`` command: one module per command (``info``, ``convert`` with ``quantize``,
``transcribe``, ``dataset`` for transcribe-dataset, ``serve``, ``stream``), the flags they share in ``common``.

Building the parser does not load the native extension (``--version`` loads it when asked), so
``funasr-cpp convert`` and every ``--help`` work where it is missing."""
from __future__ import annotations

import argparse


class _Version(argparse.Action):
    """``--version``: the versions come from the native extension, loaded only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="show the program's version and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        import funasr_cpp

        print(f"funasr-cpp {funasr_cpp.__version__} (llama.cpp b{funasr_cpp.LLAMA_CPP_BUILD}, "
              f"{funasr_cpp.LLAMA_CPP_COMMIT})")  # on stdout, as argparse's own version action
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    from . import convert, dataset, info, serve, stream, transcribe

    ap = argparse.ArgumentParser(prog="funasr-cpp", description="Fun-ASR-Nano speech recognition on llama.cpp")
    ap.add_argument("--version", action=_Version)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    info.add_parser(sub)
    convert.add_parsers(sub)
    transcribe.add_parser(sub)
    dataset.add_parser(sub)
    serve.add_parser(sub)
    stream.add_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return 2
    return args.func(args)

