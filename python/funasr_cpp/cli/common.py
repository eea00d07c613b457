"""What the commands share: the model and engine flags (declared once), the decoding flags, and
how they become the API's arguments.

A flag left out is not passed on, so the API's own default applies; the help texts read those
defaults from the API (``default_of``, :class:`~funasr_cpp.options.LoadOptions`,
:class:`~funasr_cpp.options.TranscribeOptions`) rather than retyping them."""
from __future__ import annotations

import argparse
import inspect
import sys
from typing import Any, Callable

from ..options import VAD_NAMES, LoadOptions, TranscribeOptions, vad_mode

#: the exceptions a command reports as ``error: ...`` (exit 1) instead of a traceback
USER_ERRORS = (OSError, ValueError, TypeError, RuntimeError, ImportError)
HUBS = ("huggingface", "modelscope")


def default_of(func: Callable, name: str) -> Any:
    """The default of ``func``'s parameter ``name`` (the one place it is written)."""
    return inspect.signature(func).parameters[name].default


def error(message: Any) -> int:
    """Print ``error: message`` on stderr; 1, the exit code of a failed command."""
    print(f"error: {message}", file=sys.stderr)
    return 1


def given(args: argparse.Namespace, **names: str) -> dict:
    """``{keyword: args.<flag>}`` for the flags the user gave (not None); ``names``: keyword -> flag dest."""
    return {k: getattr(args, dest) for k, dest in names.items() if getattr(args, dest, None) is not None}


# ------------------------------------------------------------------------------ the model
def add_model_args(p: argparse.ArgumentParser) -> None:
    from ..hub import DEFAULT_MODEL, resolve_model

    src = p.add_argument_group("model (--model, or --llm with --mmproj)")
    src.add_argument("--model", "-m", default=None, metavar="SRC",
                     help="released checkpoint folder (converted once and cached), folder with an LLM GGUF + "
                          f"mmproj-*.gguf, or hub id (default: {DEFAULT_MODEL})")
    src.add_argument("--llm", metavar="X.gguf", help="LLM GGUF (with --mmproj)")
    src.add_argument("--mmproj", metavar="Y.gguf", help="mmproj GGUF (with --llm)")
    src.add_argument("--hub", choices=HUBS, default=None,
                     help=f"where --model hub ids are downloaded from (default {default_of(resolve_model, 'hub')})")
    src.add_argument("--llm-type", default=None,
                     help=f"LLM type when converting a release (default {default_of(resolve_model, 'llm_type')})")
    src.add_argument("--mmproj-type", default=None,
                     help=f"mmproj type when converting a release (default {default_of(resolve_model, 'mmproj_type')}: "
                          "q8_0 on CPUs with AMX, f32 on other CPUs, f16 with a GPU)")
    src.add_argument("--vad-model", default=None, metavar="SRC",
                     help="FSMN-VAD: fsmn-vad (upstream's, downloaded from --hub and cached), a VAD release "
                          "folder (converted once), or its fsmn-vad-f32.gguf")


def check_model_flags(args: argparse.Namespace) -> bool:
    """--model, or --llm with --mmproj; prints the problem and returns False otherwise."""
    if args.llm or args.mmproj:
        if not (args.llm and args.mmproj):
            print("error: --llm and --mmproj go together (give --model, or --llm with --mmproj)", file=sys.stderr)
            return False
        if args.model:
            print("error: use either --model or --llm/--mmproj", file=sys.stderr)
            return False
    return True


def source_options(args: argparse.Namespace) -> dict:
    """Where a --model comes from and how a release is converted: the keywords the user gave."""
    return given(args, hub="hub", llm_type="llm_type", mmproj_type="mmproj_type")


def load_model(args: argparse.Namespace, load: dict):
    """The Model of --model (or --llm/--mmproj) with --vad-model, loaded with ``load``."""
    from ..hub import DEFAULT_MODEL, resolve_vad_model
    from ..model import Model

    source = source_options(args)
    hub = {"hub": source["hub"]} if "hub" in source else {}
    vad_model = resolve_vad_model(args.vad_model, **hub) if args.vad_model else None
    if args.llm:
        return Model(args.llm, args.mmproj, vad_model=vad_model, **load)
    return Model.from_pretrained(args.model or DEFAULT_MODEL, vad_model=vad_model, **source, **load)


# ------------------------------------------------------------------------------ the engine
def add_engine_args(p, *, threads: bool = True) -> None:
    """How a Model runs: threads, batch width, device, attention, KV cache."""
    d = LoadOptions
    if threads:
        p.add_argument("--threads", "-t", type=int, default=None, metavar="N", help="CPU threads (default: all cores)")
    p.add_argument("--parallel", "-np", type=int, default=None, metavar="N",
                   help=f"segments decoded together, of one file or several (default {d.n_parallel})")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--device", default=None, metavar="NAME",
                       help="where the LLM and the encoder run: auto (the first GPU, else the CPU), cpu, or a device "
                            "of this build such as vulkan0, cuda0, metal0 (`funasr-cpp info` lists them; "
                            f"default {d.device}); the FSMN-VAD runs on the CPU")
    where.add_argument("--cpu", dest="device", action="store_const", const="cpu",
                       help="the same as --device cpu")
    p.add_argument("--flash-attn", choices=["auto", "on", "off"], default=None,
                   help=f"flash attention in the LLM and the encoder (default {d.flash_attn})")
    p.add_argument("--kv-type", choices=["f16", "f32", "bf16", "q8_0"], default=None,
                   help=f"KV cache type (default {d.kv_type}; f32 reproduces upstream's fp32 run most closely)")


def load_options(args: argparse.Namespace) -> dict:
    """The LoadOptions keywords of the engine flags the user gave."""
    return given(args, n_threads="threads", device="device", n_parallel="parallel", flash_attn="flash_attn",
                 kv_type="kv_type")


# ------------------------------------------------------------------------------ decoding
def add_max_new_tokens(p) -> None:
    p.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                   help=f"generated-token limit per segment (default {TranscribeOptions.max_new_tokens}; also "
                        "scaled to segment duration)")


def add_partial_args(p, *, note: str = "") -> None:
    """--partials and --partial-interval (Model.stream's partials and partial_interval)."""
    p.add_argument("--partial-interval", type=float, default=None, metavar="S",
                   help="seconds of audio between partial results of the open sentence (default: Model.stream's)")
    p.add_argument("--partials", choices=["auto", "ctc", "llm", "none"], default=None,
                   help="partial text of the open sentence: ctc = the CTC head's greedy text (one encoder pass, "
                        "rough), llm = a decode of the open audio (the real text, costs a decode), none; "
                        "default auto: ctc on checkpoints with the CTC head, else llm" + note)


def partial_overrides(args: argparse.Namespace) -> dict:
    """Model.stream's partials / partial_interval keywords of the flags given."""
    overrides = given(args, partial_interval="partial_interval")
    if args.partials is not None:
        overrides["partials"] = None if args.partials == "none" else args.partials
    return overrides


def check_partial_interval(args: argparse.Namespace) -> Optional[str]:
    if args.partial_interval is not None and not args.partial_interval > 0:
        return f"--partial-interval must be positive, got {args.partial_interval:g}"
    return None


def add_decoding_args(p: argparse.ArgumentParser) -> None:
    d = TranscribeOptions
    dec = p.add_argument_group("decoding")
    dec.add_argument("--language", "-l", default=None,
                     help="force a language: upstream name (中文, 英文, ...) or ISO code (zh, en, ja, ...); "
                          "default: automatic")
    dec.add_argument("--no-itn", action="store_true", help="ask for text without inverse text normalization")
    dec.add_argument("--hotwords", default=None, metavar="A,B", help="comma-separated hotwords")
    add_max_new_tokens(dec)
    dec.add_argument("--no-repetition-guard", action="store_true",
                     help="turn off the runaway guard (token budget scaled to segment duration, cutting a "
                          "repeated n-gram loop): only --max-new-tokens limits the output")
    dec.add_argument("--vad", choices=VAD_NAMES, default=None,
                     help="how to cut audio into segments: fsmn = upstream's FSMN-VAD (speech only, needs "
                          "--vad-model), energy = at quiet points, none = windows of --max-segment-seconds "
                          f"(default {d.vad}: fsmn with --vad-model, else energy)")
    dec.add_argument("--max-segment-seconds", type=float, default=None, metavar="S",
                     help=f"longest segment in seconds (default {d.max_segment_seconds:g})")
    dec.add_argument("--no-ctc-draft", action="store_true",
                     help="do not use the CTC head's transcript as the speculative-decoding draft (same output)")


def transcribe_options(args: argparse.Namespace) -> TranscribeOptions:
    """The TranscribeOptions of the decoding flags the user gave (ValueError for a bad value)."""
    if args.vad == "fsmn" and not args.vad_model:
        raise ValueError("--vad fsmn needs --vad-model (e.g. --vad-model fsmn-vad, or an FSMN-VAD folder)")
    kw = given(args, language="language", max_new_tokens="max_new_tokens", max_segment_seconds="max_segment_seconds")
    if args.hotwords:
        kw["hotwords"] = [w.strip() for w in args.hotwords.split(",") if w.strip()]
    if args.vad is not None:
        kw["vad"] = vad_mode(args.vad)
    if args.no_itn:
        kw["itn"] = False
    if args.no_repetition_guard:
        kw.update(repetition_guard=False, max_tokens_per_second=None)
    if args.no_ctc_draft:
        kw["ctc_draft"] = False
    if getattr(args, "word_timestamps", False):
        kw["word_timestamps"] = True
    return TranscribeOptions(**kw)
