"""``funasr-cpp transcribe``: audio files to text, JSON, SRT or WebVTT."""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

from . import common

FORMATS = ("txt", "json", "srt", "vtt")


def add_parser(sub) -> None:
    tr = sub.add_parser(
        "transcribe", help="transcribe audio files (WAV/FLAC/OGG/MP3) to text, JSON, SRT or WebVTT",
        description="Transcribe audio files with Fun-ASR-Nano. Long files are split into utterances of at most "
                    "--max-segment-seconds (FSMN-VAD speech segments with --vad-model, else cut at quiet points), "
                    "each decoded with its own prompt. Results go "
                    "to stdout (txt: one line per file; json: one JSON object per line) or, with --output-dir, to "
                    "DIR/<file stem>.<format> (inputs with the same name keep their relative folders; an existing "
                    "file is kept unless --overwrite). A file that fails (unreadable, cut short of its header's "
                    "length, no samples) prints 'error: FILE: reason' on stderr and the others are still processed; "
                    "the exit code is then 1.")
    tr.add_argument("files", nargs="+", metavar="FILE", help="audio files")
    common.add_model_args(tr)
    common.add_decoding_args(tr)
    ts = tr.add_argument_group("word timestamps (checkpoints with the CTC head)")
    ts.add_argument("--word-timestamps", action="store_true",
                    help="per-token times from the CTC head (JSON: segments[].words; SRT/VTT: see below)")
    ts.add_argument("--max-cue-chars", type=int, default=None, metavar="N",
                    help="SRT/VTT: cut cues at word times to at most N characters (with --word-timestamps)")
    ts.add_argument("--max-cue-seconds", type=float, default=None, metavar="S",
                    help="SRT/VTT: cut cues at word times to at most S seconds (with --word-timestamps)")
    out = tr.add_argument_group("output and runtime")
    out.add_argument("--format", "-f", choices=FORMATS, default="txt", help="output format (default txt)")
    out.add_argument("--output-dir", "-o", default=None, metavar="DIR",
                     help="write DIR/<stem>.<format> per file instead of printing")
    out.add_argument("--overwrite", action="store_true",
                     help="replace existing output files (default: keep them and skip those inputs)")
    common.add_engine_args(out)
    out.add_argument("--progress", action="store_true",
                     help="show the progress bar on stderr even when it is not a terminal")
    tr.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if not common.check_model_flags(args):
        return 2
    try:
        options = common.transcribe_options(args)
        for name in ("max_cue_chars", "max_cue_seconds"):
            value = getattr(args, name)
            if value is not None and not value > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value:g}")
        model = _load(args)
    except common.USER_ERRORS as exc:
        return common.error(exc)
    todo = _todo(args)
    failed = 0
    show = args.progress or sys.stderr.isatty()
    with model, tqdm(total=len(todo), desc="transcribed", unit="file", disable=not show or not todo,
                     file=sys.stderr, dynamic_ncols=True) as bar:
        # the files' segments are decoded together (n_parallel at a time); results come in order
        results = model.transcribe_iter([p for p, _ in todo], options, return_exceptions=True)
        for (path, dst), result in zip(todo, results):
            bar.update(1)
            if isinstance(result, Exception):  # one bad file must not stop the others
                common.error(f"{path}: {str(result) or type(result).__name__}")
                failed += 1
            elif not _emit(args, path, dst, result):
                failed += 1
    return 1 if failed else 0


def _load(args: argparse.Namespace):
    """The model, checked for word timestamps before any file is read."""
    model = common.load_model(args, common.load_options(args))
    if args.word_timestamps:
        try:
            model.check_word_timestamps()
        except ValueError:
            model.close()
            raise
    return model


def _todo(args: argparse.Namespace) -> list:
    """(input, output path or None) of the files to transcribe: an existing output is kept, and said so."""
    outputs = output_paths(args.files, args.output_dir, args.format) if args.output_dir else [None] * len(args.files)
    todo = []
    for path, dst in zip(args.files, outputs):
        if dst is not None and dst.exists() and not args.overwrite:
            print(f"kept {dst}: it exists (--overwrite replaces it); {path} not transcribed", file=sys.stderr)
            continue
        todo.append((path, dst))
    return todo


def _emit(args: argparse.Namespace, path: str, dst: Optional[Path], result) -> bool:
    """Print the rendered result, or write it to ``dst``; False (said on stderr) when it cannot be written."""
    from .. import formats

    out = formats.render(result, args.format, source=path, max_chars=args.max_cue_chars,
                         max_seconds=args.max_cue_seconds)
    if dst is None:
        sys.stdout.write(out)
        sys.stdout.flush()
        return True
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        formats.write_text(dst, out, overwrite=args.overwrite)
    except OSError as exc:
        common.error(f"{path}: cannot write {dst}: {exc}")
        return False
    print(f"wrote {dst}", file=sys.stderr)
    return True


def output_paths(files: list[str], outdir, fmt: str) -> list:
    """One output path per input, all distinct: ``DIR/<stem>.<fmt>``; inputs whose names collide
    keep their folders relative to the folder the colliding inputs share
    (``a/x.wav b/x.wav -> DIR/a/x.txt DIR/b/x.txt``), and what still collides (the same file twice,
    ``x.wav`` beside ``x.flac``) gets ``-2``, ``-3``, ... in the order given."""
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
