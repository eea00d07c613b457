"""``funasr-cpp transcribe-dataset``: a corpus on Ray Data into a Parquet folder (resumable)."""
from __future__ import annotations

import argparse
import os
import sys

from . import common


def add_parser(sub) -> None:
    from ..ray import transcribe_corpus

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
    ray_args.add_argument("--batch-size", type=int, default=None, metavar="B",
                          help=f"files per batch handed to an actor (default {common.default_of(transcribe_corpus, 'batch_size')})")
    ray_args.add_argument("--limit", type=int, default=None, metavar="N",
                          help="transcribe at most N of the files not yet in --output (a rerun does the rest)")
    common.add_model_args(ds)
    common.add_decoding_args(ds)
    ds.add_argument("--word-timestamps", action="store_true", help="segments[].words from the CTC head")
    common.add_engine_args(ds, threads=False)  # an actor's threads are its CPUs
    ds.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
    ds.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import pyarrow  # noqa: F401
        import ray  # noqa: F401
    except ImportError as e:
        return common.error(f"transcribe-dataset needs its extra: pip install 'funasr-cpp[ray]' ({e})")
    from ..ray import transcribe_corpus

    if not common.check_model_flags(args):
        return 2
    try:
        options = common.transcribe_options(args)
        for name in ("actors", "cpus_per_actor", "batch_size"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        load = {**common.load_options(args), **_check_model(args)}
        ray_kw = common.given(args, hub="hub", ray_address="ray_address", actors="actors",
                              cpus_per_actor="cpus_per_actor", batch_size="batch_size", limit="limit")
        report = transcribe_corpus(args.inputs, args.output, model=args.model, llm=args.llm, mmproj=args.mmproj,
                                   vad_model=args.vad_model, options=options,
                                   progress=args.progress or sys.stderr.isatty(), **ray_kw, **load)
    except KeyboardInterrupt:
        print(f"interrupted: the files finished so far are kept in {args.output}; run the same command again "
              "to do the rest", file=sys.stderr)
        return 130
    except common.USER_ERRORS as exc:
        return common.error(exc)
    print(f"{report.total} files: {report.done} transcribed now ({report.failed} with an error, in the 'error' "
          f"column), {report.skipped} already in {args.output}", file=sys.stderr)
    return 0


def _check_model(args: argparse.Namespace) -> dict:
    """Checked here, before Ray starts: a wrong checkpoint is one clear error, not one per actor (and
    a hub id or release folder is downloaded/converted into this node's cache once). Returns the
    conversion keywords the actors load the model with."""
    from ..hub import DEFAULT_MODEL, resolve_model, resolve_vad_model

    source = common.source_options(args)
    hub = {"hub": source["hub"]} if "hub" in source else {}
    if args.llm:
        for f in (args.llm, args.mmproj):
            if not os.path.isfile(f):
                raise FileNotFoundError(f"no such file: {f}")
    else:
        resolve_model(args.model or DEFAULT_MODEL, **source)
    if args.vad_model:
        resolve_vad_model(args.vad_model, **hub)
    return {} if args.llm else {k: v for k, v in source.items() if k != "hub"}
