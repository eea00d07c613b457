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
            if info.get("file") == "mmproj":  # provenance and settings, one per line
                print(f"{path}: funasr mmproj")
                for k, v in info.items():
                    if k != "file":
                        print(f"  {k}: {v}")
            else:
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
    from ..converters.convert import run

    return run(args)


def _output_paths(files: list[str], outdir, fmt: str) -> list:
    """One output path per input, all distinct: ``DIR/<stem>.<fmt>``; inputs whose names collide
    keep their folders relative to the folder the colliding inputs share
    (``a/x.wav b/x.wav -> DIR/a/x.txt DIR/b/x.txt``), and what still collides (the same file twice,
    ``x.wav`` beside ``x.flac``) gets ``-2``, ``-3``, ... in the order given."""
    from collections import Counter
    from pathlib import Path

    names = [f"{Path(f).stem}.{fmt}" for f in files]
    counts = Counter(names)
    out: list = []
    for f, name in zip(files, names):
        if counts[name] == 1:
            out.append(Path(name))
            continue
        group = [Path(os.path.abspath(g)) for g, n in zip(files, names) if n == name]
        root = Path(os.path.commonpath([str(g.parent) for g in group]))
        out.append(Path(os.path.abspath(f)).parent.relative_to(root) / name)
    seen: Counter = Counter()
    result = []
    for rel in out:
        seen[rel] += 1
        if seen[rel] > 1:
            rel = rel.with_name(f"{rel.stem}-{seen[rel]}{rel.suffix}")
        result.append(Path(outdir) / rel)
    return result


def _load_model(args: argparse.Namespace, load: dict):
    """The Model of --model (or --llm/--mmproj) with --vad-model, for transcribe and serve."""
    from ..hub import DEFAULT_MODEL, resolve_vad_model
    from ..model import Model

    vad_model = resolve_vad_model(args.vad_model, hub=args.hub) if args.vad_model else None
    if args.llm:
        return Model(args.llm, args.mmproj, vad_model=vad_model, **load)
    convert = {k: getattr(args, k) for k in ("llm_type", "mmproj_type") if hasattr(args, k)}
    return Model.from_pretrained(args.model or DEFAULT_MODEL, hub=args.hub, vad_model=vad_model, **convert, **load)


def _options(args: argparse.Namespace):
    """The TranscribeOptions of the decoding flags (transcribe, transcribe-dataset)."""
    from ..options import TranscribeOptions

    hotwords = [w.strip() for w in args.hotwords.split(",") if w.strip()] if args.hotwords else None
    if args.vad == "fsmn" and not args.vad_model:
        raise ValueError("--vad fsmn needs --vad-model (e.g. --vad-model fsmn-vad, or an FSMN-VAD folder)")
    return TranscribeOptions(language=args.language, itn=not args.no_itn, hotwords=hotwords,
                             max_new_tokens=args.max_new_tokens,
                             vad=None if args.vad == "none" else args.vad,
                             max_segment_seconds=args.max_segment_seconds,
                             repetition_guard=not args.no_repetition_guard,
                             max_tokens_per_second=None if args.no_repetition_guard else
                             TranscribeOptions.max_tokens_per_second,
                             word_timestamps=args.word_timestamps, ctc_draft=not args.no_ctc_draft)


def _check_model_flags(args: argparse.Namespace) -> bool:
    """--model or --llm + --mmproj; prints the problem and returns False otherwise."""
    if args.llm or args.mmproj:
        if not (args.llm and args.mmproj):
            print("error: --llm and --mmproj go together", file=sys.stderr)
            return False
        if args.model:
            print("error: use either --model or --llm/--mmproj", file=sys.stderr)
            return False
    return True


def _cmd_transcribe(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .. import formats

    if not _check_model_flags(args):
        return 2
    load = dict(n_threads=args.threads, n_gpu_layers=0 if args.cpu else -1, use_gpu=not args.cpu,
                flash_attn=args.flash_attn, kv_type=args.kv_type, n_parallel=args.parallel)
    try:
        options = _options(args)
        for name in ("max_cue_chars", "max_cue_seconds"):
            value = getattr(args, name)
            if value is not None and not value > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value:g}")
        model = _load_model(args, load)
        if args.word_timestamps:
            try:
                model.check_word_timestamps()  # before any file is read
            except ValueError:
                model.close()
                raise
    except (OSError, ValueError, TypeError, RuntimeError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    outputs = None
    if args.output_dir:
        outputs = _output_paths(args.files, args.output_dir, args.format)
    show = args.progress or sys.stderr.isatty()
    failed = 0
    todo = []
    for i, path in enumerate(args.files):
        dst = outputs[i] if outputs else None
        if dst is not None and dst.exists() and not args.overwrite:
            print(f"kept {dst}: it exists (--overwrite replaces it); {path} not transcribed", file=sys.stderr)
            continue
        todo.append((path, dst))
    with model, tqdm(total=len(todo), desc="transcribed", unit="file", disable=not show or not todo,
                     file=sys.stderr, dynamic_ncols=True) as bar:
        # the files' segments are decoded together (n_parallel at a time); results come in order
        results = model.transcribe_iter([p for p, _ in todo], options, return_exceptions=True)
        for (path, dst), result in zip(todo, results):
            bar.update(1)
            if isinstance(result, Exception):  # one bad file must not stop the others
                print(f"error: {path}: {str(result) or type(result).__name__}", file=sys.stderr)
                failed += 1
                continue
            out = formats.render(result, args.format, source=path, max_chars=args.max_cue_chars,
                                 max_seconds=args.max_cue_seconds)
            if dst is None:
                sys.stdout.write(out)
                sys.stdout.flush()
                continue
            try:
                dst.parent.mkdir(parents=True, exist_ok=True)
                formats.write_text(dst, out, overwrite=args.overwrite)
            except OSError as exc:
                print(f"error: {path}: cannot write {dst}: {exc}", file=sys.stderr)
                failed += 1
                continue
            print(f"wrote {dst}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_transcribe_dataset(args: argparse.Namespace) -> int:
    try:
        import pyarrow  # noqa: F401
        import ray  # noqa: F401
    except ImportError as e:
        print(f"error: transcribe-dataset needs its extra: pip install 'funasr-cpp[ray]' ({e})", file=sys.stderr)
        return 1
    from ..hub import DEFAULT_MODEL, resolve_model, resolve_vad_model
    from ..ray import transcribe_corpus

    if not _check_model_flags(args):
        return 2
    load = dict(n_gpu_layers=0 if args.cpu else -1, use_gpu=not args.cpu, flash_attn=args.flash_attn,
                kv_type=args.kv_type, n_parallel=args.parallel)
    try:
        options = _options(args)
        for name in ("actors", "cpus_per_actor", "batch_size"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        # checked here, before Ray starts: a wrong checkpoint is one clear error, not one per actor
        # (and a hub id or release folder is downloaded/converted into this node's cache once)
        if args.llm:
            for f in (args.llm, args.mmproj):
                if not os.path.isfile(f):
                    raise FileNotFoundError(f"no such file: {f}")
        else:
            resolve_model(args.model or DEFAULT_MODEL, hub=args.hub, llm_type=args.llm_type,
                          mmproj_type=args.mmproj_type)
        if args.vad_model:
            resolve_vad_model(args.vad_model, hub=args.hub)
        if not args.llm:
            load.update(llm_type=args.llm_type, mmproj_type=args.mmproj_type)
        report = transcribe_corpus(args.inputs, args.output, model=args.model, llm=args.llm, mmproj=args.mmproj,
                                   vad_model=args.vad_model, hub=args.hub, options=options,
                                   ray_address=args.ray_address, actors=args.actors,
                                   cpus_per_actor=args.cpus_per_actor, batch_size=args.batch_size,
                                   limit=args.limit, progress=args.progress or sys.stderr.isatty(), **load)
    except KeyboardInterrupt:
        print(f"interrupted: the files finished so far are kept in {args.output}; run the same command again "
              "to do the rest", file=sys.stderr)
        return 130
    except (OSError, ValueError, TypeError, RuntimeError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{report.total} files: {report.done} transcribed now ({report.failed} with an error, in the 'error' "
          f"column), {report.skipped} already in {args.output}", file=sys.stderr)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from ..options import TranscribeOptions

    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
        import python_multipart  # noqa: F401
    except ImportError as e:
        print(f"error: the server needs its extra: pip install 'funasr-cpp[server]' ({e})", file=sys.stderr)
        return 1
    if bool(args.llm) != bool(args.mmproj) or (args.llm and args.model):
        print("error: give --model, or --llm with --mmproj", file=sys.stderr)
        return 2
    load = dict(n_threads=args.threads, n_gpu_layers=0 if args.cpu else -1, use_gpu=not args.cpu,
                n_parallel=args.parallel)
    try:
        options = TranscribeOptions(max_new_tokens=args.max_new_tokens)
        model = _load_model(args, load)
    except (OSError, ValueError, TypeError, RuntimeError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from ..server import serve

    with model:
        serve(model, host=args.host, port=args.port, api_key=args.api_key, model_name=args.model_name,
              max_concurrency=args.max_concurrency, max_queue=args.max_queue, max_upload_mb=args.max_upload_mb,
              request_timeout=args.request_timeout, options=options)
    return 0


def _add_model_args(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("model (one of)")
    src.add_argument("--model", "-m", default=None, metavar="SRC",
                     help="released checkpoint folder (converted once and cached), folder with an LLM GGUF + "
                          "mmproj-*.gguf, or hub id (default: FunAudioLLM/Fun-ASR-Nano-2512)")
    src.add_argument("--llm", metavar="X.gguf", help="LLM GGUF (with --mmproj)")
    src.add_argument("--mmproj", metavar="Y.gguf", help="mmproj GGUF (with --llm)")
    src.add_argument("--hub", choices=["huggingface", "modelscope"], default="huggingface",
                     help="where --model hub ids are downloaded from (default huggingface)")
    src.add_argument("--llm-type", default="q8_0", help="LLM type when converting a release (default q8_0)")
    src.add_argument("--mmproj-type", default="auto",
                     help="mmproj type when converting a release (default auto: bf16 on CPUs with AVX512_BF16, else f16)")


def _add_engine_args(p) -> None:
    """How a Model runs (transcribe, transcribe-dataset): batch width, GPU, attention, KV cache."""
    p.add_argument("--parallel", "-np", type=int, default=8, metavar="N",
                   help="segments decoded together, of one file or several (default 8)")
    p.add_argument("--cpu", action="store_true", help="do not use a GPU even if the build has one")
    p.add_argument("--flash-attn", choices=["auto", "on", "off"], default="auto",
                   help="flash attention in the LLM and the encoder (default auto)")
    p.add_argument("--kv-type", choices=["f16", "f32", "bf16", "q8_0"], default="f16",
                   help="KV cache type (default f16; f32 reproduces upstream's fp32 run most closely)")


def _add_decoding_args(p: argparse.ArgumentParser) -> None:
    from ..options import TranscribeOptions

    dec = p.add_argument_group("decoding")
    dec.add_argument("--language", "-l", default=None,
                     help="force a language: upstream name (中文, 英文, ...) or ISO code (zh, en, ja, ...); "
                          "default: automatic")
    dec.add_argument("--no-itn", action="store_true", help="ask for text without inverse text normalization")
    dec.add_argument("--hotwords", default=None, metavar="A,B", help="comma-separated hotwords")
    dec.add_argument("--max-new-tokens", type=int, default=TranscribeOptions.max_new_tokens, metavar="N",
                     help=f"generated-token limit per segment (default {TranscribeOptions.max_new_tokens}; also "
                          "scaled to segment duration)")
    dec.add_argument("--no-repetition-guard", action="store_true",
                     help="turn off the runaway guard (token budget scaled to segment duration, cutting a "
                          "repeated n-gram loop): only --max-new-tokens limits the output")
    dec.add_argument("--vad", choices=["auto", "fsmn", "energy", "none"], default="auto",
                     help="how to cut audio into segments: fsmn = upstream's FSMN-VAD (speech only, needs "
                          "--vad-model), energy = at quiet points, none = windows of --max-segment-seconds "
                          "(default auto: fsmn with --vad-model, else energy)")
    dec.add_argument("--vad-model", default=None, metavar="SRC",
                     help="FSMN-VAD: fsmn-vad (upstream's, downloaded from --hub and cached), a VAD release "
                          "folder (converted once), or its fsmn-vad-f32.gguf")
    dec.add_argument("--max-segment-seconds", type=float, default=TranscribeOptions.max_segment_seconds,
                     metavar="S", help=f"longest segment in seconds (default {TranscribeOptions.max_segment_seconds:g})")
    dec.add_argument("--no-ctc-draft", action="store_true",
                     help="do not use the CTC head's transcript as the speculative-decoding draft (same output)")


def build_parser() -> argparse.ArgumentParser:
    import funasr_cpp
    from ..options import TranscribeOptions

    ap = argparse.ArgumentParser(prog="funasr-cpp", description="Fun-ASR-Nano speech recognition on llama.cpp")
    ap.add_argument("--version", action="version",
                    version=f"funasr-cpp {funasr_cpp.__version__} (llama.cpp b{funasr_cpp.LLAMA_CPP_BUILD}, "
                            f"{funasr_cpp.LLAMA_CPP_COMMIT})")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="show versions, ggml backends and devices; or a GGUF model's metadata")
    info.add_argument("model", nargs="*", help="GGUF files to describe (LLM or funasr mmproj)")
    info.set_defaults(func=_cmd_info)
    from ..converters.convert import add_arguments as add_convert_arguments

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
    tr = sub.add_parser(
        "transcribe", help="transcribe audio files (WAV/FLAC/OGG/MP3) to text, JSON, SRT or WebVTT",
        description="Transcribe audio files with Fun-ASR-Nano. Long files are split into utterances of at most "
                    "--max-segment-seconds (FSMN-VAD speech segments with --vad-model, else cut at quiet points), each decoded with its own prompt. Results go "
                    "to stdout (txt: one line per file; json: one JSON object per line) or, with --output-dir, to "
                    "DIR/<file stem>.<format> (inputs with the same name keep their relative folders; an existing "
                    "file is kept unless --overwrite). A file that fails prints 'error: FILE: reason' on stderr and "
                    "the others are still processed; the exit code is then 1.")
    tr.add_argument("files", nargs="+", metavar="FILE", help="audio files")
    _add_model_args(tr)
    _add_decoding_args(tr)
    ts = tr.add_argument_group("word timestamps (checkpoints with the CTC head)")
    ts.add_argument("--word-timestamps", action="store_true",
                    help="per-token times from the CTC head (JSON: segments[].words; SRT/VTT: see below)")
    ts.add_argument("--max-cue-chars", type=int, default=None, metavar="N",
                    help="SRT/VTT: cut cues at word times to at most N characters (with --word-timestamps)")
    ts.add_argument("--max-cue-seconds", type=float, default=None, metavar="S",
                    help="SRT/VTT: cut cues at word times to at most S seconds (with --word-timestamps)")
    out = tr.add_argument_group("output and runtime")
    out.add_argument("--format", "-f", choices=["txt", "json", "srt", "vtt"], default="txt",
                     help="output format (default txt)")
    out.add_argument("--output-dir", "-o", default=None, metavar="DIR",
                     help="write DIR/<stem>.<format> per file instead of printing")
    out.add_argument("--overwrite", action="store_true",
                     help="replace existing output files (default: keep them and skip those inputs)")
    out.add_argument("--threads", "-t", type=int, default=None, metavar="N", help="CPU threads (default: all cores)")
    _add_engine_args(out)
    out.add_argument("--progress", action="store_true",
                     help="show the progress bar on stderr even when it is not a terminal")
    tr.set_defaults(func=_cmd_transcribe)

    ds = sub.add_parser(
        "transcribe-dataset", help="transcribe a corpus on Ray Data into a Parquet folder (resumable)",
        description="Transcribe many files on Ray Data: one model per actor, rows of files mapped in batches "
                    "through the batched engine, results written to the Parquet folder --output one part file "
                    "per finished block. Rerun with the same --output to resume: files already there with the "
                    "same path, size and mtime are skipped. A file that fails gets a row with its 'error' and "
                    "the job goes on. Starts a local Ray unless --ray-address is given. Needs the ray extra: "
                    "pip install 'funasr-cpp[ray]'.")
    ds.add_argument("inputs", nargs="+", metavar="INPUT",
                    help="audio files, folders (their audio files, recursively), glob patterns ('calls/**/*.wav', "
                         "quoted), or manifests (.txt/.lst/.list: one path per line)")
    ds.add_argument("--output", "-o", required=True, metavar="OUT.parquet",
                    help="the Parquet folder (created; an existing one from this command is resumed)")
    ray_args = ds.add_argument_group("Ray")
    ray_args.add_argument("--ray-address", default=None, metavar="ADDR",
                          help="a running Ray cluster (e.g. auto, or ray://HEAD:10001); default: start a local one")
    ray_args.add_argument("--actors", type=int, default=None, metavar="N",
                          help="model actors (default: as many as the cluster's CPUs fit)")
    ray_args.add_argument("--cpus-per-actor", type=int, default=None, metavar="C",
                          help="CPUs (= threads) per actor (default: min(4, the cluster's CPUs))")
    ray_args.add_argument("--batch-size", type=int, default=8, metavar="B",
                          help="files per batch handed to an actor (default 8)")
    ray_args.add_argument("--limit", type=int, default=None, metavar="N",
                          help="transcribe at most N of the files not yet in --output (a rerun does the rest)")
    _add_model_args(ds)
    _add_decoding_args(ds)
    ds.add_argument("--word-timestamps", action="store_true", help="segments[].words from the CTC head")
    _add_engine_args(ds)
    ds.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
    ds.set_defaults(func=_cmd_transcribe_dataset)

    sv = sub.add_parser("serve", help="an OpenAI-compatible transcription server (POST /v1/audio/transcriptions)",
                        description="Serve POST /v1/audio/transcriptions (OpenAI's API), GET /v1/models, /health and "
                                    "/metrics with one model; concurrent requests are decoded together. Needs the "
                                    "server extra: pip install 'funasr-cpp[server]'.")
    sv.add_argument("--model", "-m", default=None, metavar="SRC",
                    help="as for transcribe (default: FunAudioLLM/Fun-ASR-Nano-2512)")
    sv.add_argument("--llm", metavar="X.gguf", help="LLM GGUF (with --mmproj)")
    sv.add_argument("--mmproj", metavar="Y.gguf", help="mmproj GGUF (with --llm)")
    sv.add_argument("--vad-model", default=None, metavar="SRC", help="FSMN-VAD, as for transcribe")
    sv.add_argument("--hub", choices=["huggingface", "modelscope"], default="huggingface")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument("--api-key", default=None, help="require Authorization: Bearer KEY")
    sv.add_argument("--model-name", default="fun-asr-nano", help="the id /v1/models reports (default fun-asr-nano)")
    sv.add_argument("--max-concurrency", type=int, default=4, metavar="N",
                    help="requests transcribing at once (default 4; their segments share the batch)")
    sv.add_argument("--max-queue", type=int, default=16, metavar="Q",
                    help="requests waiting beyond those; more get 503 with Retry-After (default 16)")
    sv.add_argument("--max-upload-mb", type=float, default=100.0, metavar="M",
                    help="largest upload, checked as it streams in (default 100)")
    sv.add_argument("--request-timeout", type=float, default=600.0, metavar="S",
                    help="a request running longer is ended with 504 (default 600)")
    sv.add_argument("--max-new-tokens", type=int, default=TranscribeOptions.max_new_tokens, metavar="N",
                    help=f"generated-token limit per segment (default {TranscribeOptions.max_new_tokens})")
    sv.add_argument("--threads", "-t", type=int, default=None, metavar="N", help="CPU threads (default: all cores)")
    sv.add_argument("--parallel", "-np", type=int, default=8, metavar="N", help="segments decoded together (default 8)")
    sv.add_argument("--cpu", action="store_true", help="do not use a GPU even if the build has one")
    sv.set_defaults(func=_cmd_serve)
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
