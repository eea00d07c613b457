"""Transcribing a corpus on Ray Data (extra ``funasr-cpp[ray]``): one :class:`Model` per actor,
``Dataset.map_batches`` over rows of audio, on a laptop or a cluster alike.

    import ray
    from funasr_cpp.ray import Transcriber

    ds = ray.data.from_items([{"path": p} for p in paths])   # or read_binary_files(paths, include_paths=True)
    out = ds.map_batches(Transcriber, fn_constructor_kwargs={"model": "FunAudioLLM/Fun-ASR-Nano-2512"},
                         concurrency=2, num_cpus=2, batch_size=8)
    out.write_parquet("transcripts/")

Input rows hold a ``path`` (a file every node can read) or ``bytes`` (an audio file's contents,
as ``read_binary_files`` gives them; ``path`` is then only carried along). Output rows: ``path``,
``size``, ``mtime`` (carried when the input has them), ``text``, ``language``, ``duration``,
``segments`` (start, end, text, words), ``error`` (None, or why this row failed: one unreadable
file never fails the job) and ``timings`` (:class:`funasr_cpp.options.Timings`).

:func:`transcribe_corpus` (the ``funasr-cpp transcribe-dataset`` command) runs such a job over
files, folders, globs and manifests into a Parquet folder, block by block, and resumes it.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from .options import TranscribeOptions
from .types import Timings

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3"}
MANIFEST_EXTENSIONS = {".txt", ".lst", ".list"}
MARKER = "_funasr-cpp-dataset.json"   # marks a folder as this command's output (resumable)


def _schema():
    import pyarrow as pa

    word = pa.struct([("start", pa.float64()), ("end", pa.float64()), ("text", pa.string()),
                      ("probability", pa.float64())])
    segment = pa.struct([("start", pa.float64()), ("end", pa.float64()), ("text", pa.string()),
                         ("repetition_cut", pa.bool_()), ("words", pa.list_(word))])
    timings = pa.struct([(f.name, pa.int64() if f.type in (int, "int") else pa.float64())
                         for f in dataclasses.fields(Timings)])
    return pa.schema([("path", pa.string()), ("size", pa.int64()), ("mtime", pa.float64()),
                      ("text", pa.string()), ("language", pa.string()), ("duration", pa.float64()),
                      ("segments", pa.list_(segment)), ("error", pa.string()), ("timings", timings)])


def _columns(batch: Any) -> dict:
    """A Ray Data batch (dict of numpy arrays, pandas DataFrame or pyarrow Table) as lists."""
    if hasattr(batch, "to_pydict"):
        return batch.to_pydict()
    if hasattr(batch, "columns") and hasattr(batch, "to_dict"):
        return {c: batch[c].tolist() for c in batch.columns}
    return {k: list(v) for k, v in batch.items()}


def _assigned_cpus() -> Optional[int]:
    """The CPUs Ray gave this actor (its num_cpus), None outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
            if cpus:
                return max(1, int(cpus))
    except Exception:  # noqa: BLE001 - outside an actor there is nothing to ask
        pass
    return None


class Transcriber:
    """A callable class for ``Dataset.map_batches``: loads one Model when the actor starts and
    transcribes each batch's rows together through the batched engine.

    ``model``: what :meth:`Model.from_pretrained` takes (a release folder, a GGUF folder, a hub id;
    a hub id is downloaded and converted once per node into the cache, under its file lock), or
    ``llm`` + ``mmproj`` GGUF paths. ``options``: a :class:`TranscribeOptions` or a dict of its
    fields. ``n_threads`` defaults to the actor's ``num_cpus``. Other keywords go to the Model."""

    def __init__(self, model: Union[str, os.PathLike, None] = None, *, llm: Union[str, os.PathLike, None] = None,
                 mmproj: Union[str, os.PathLike, None] = None, vad_model: Union[str, os.PathLike, None] = None,
                 hub: Optional[str] = None, options: Union[TranscribeOptions, dict, None] = None,
                 n_threads: Optional[int] = None, **load: Any):
        from .model import Model

        if isinstance(options, dict):
            options = TranscribeOptions(**options)
        self.options = TranscribeOptions.build(options)
        if n_threads is None:
            n_threads = _assigned_cpus()
        if (llm is None) != (mmproj is None) or (llm is not None and model is not None):
            raise ValueError("give model=, or llm= with mmproj=")
        if llm is not None:
            from .hub import resolve_vad_model

            vad = resolve_vad_model(vad_model, **({"hub": hub} if hub else {})) if vad_model is not None else None
            self.model = Model(llm, mmproj, n_threads=n_threads, vad_model=vad, **load)
        else:
            from .hub import DEFAULT_MODEL

            self.model = Model.from_pretrained(model or DEFAULT_MODEL, hub=hub, vad_model=vad_model,
                                               n_threads=n_threads, **load)
        if self.options.word_timestamps:
            self.model.check_word_timestamps()

    def __call__(self, batch: Any):
        import pyarrow as pa

        cols = _columns(batch)
        n = len(next(iter(cols.values()))) if cols else 0
        paths, datas, sizes, mtimes = (cols.get(k, [None] * n) for k in ("path", "bytes", "size", "mtime"))
        # a row's audio: its bytes, else the file at its path
        items = {i: d if d is not None else p for i, (d, p) in enumerate(zip(datas, paths))
                 if d is not None or p is not None}
        results = dict(zip(items, self.model.transcribe_batch(list(items.values()), self.options,
                                                              return_exceptions=True)))
        rows = []
        for i in range(n):
            r = results.get(i)
            row = {"path": None if paths[i] is None else str(paths[i]), "size": sizes[i], "mtime": mtimes[i],
                   "text": None, "language": None, "duration": None, "segments": [], "error": None, "timings": None}
            if i not in items:
                row["error"] = "the row has neither a 'path' nor a 'bytes' value"
            elif isinstance(r, BaseException):
                row["error"] = str(r) or type(r).__name__
            else:
                row.update(text=r.text, language=r.language, duration=r.duration, timings=r.timings.to_dict(),
                           segments=[{"start": s.start, "end": s.end, "text": s.text,
                                      "repetition_cut": s.repetition_cut,
                                      "words": [dataclasses.asdict(w) for w in s.words]} for s in r.segments])
            rows.append(row)
        return pa.Table.from_pylist(rows, schema=_schema())

    def __del__(self):
        model = getattr(self, "model", None)
        if model is not None:
            model.close()


# --------------------------------------------------------------------------------------------- corpus
def expand_inputs(inputs: Sequence[Union[str, os.PathLike]]) -> list:
    """Files, folders (their audio files, recursively), glob patterns and manifests (.txt/.lst/.list:
    one path per line, relative to the manifest; '#' starts a comment) → absolute paths, in the
    order given, each once. A name that is none of these is a ValueError naming it."""
    out: list = []
    for raw in inputs:
        p = Path(raw).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)
        elif p.is_file() and p.suffix.lower() in MANIFEST_EXTENSIONS:
            found = []
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    f = Path(line).expanduser()
                    found.append(f if f.is_absolute() else p.parent / f)
        elif p.is_file():
            found = [p]
        else:
            found = sorted(Path(f) for f in glob.glob(os.fspath(raw), recursive=True) if os.path.isfile(f))
            if not found:
                raise ValueError(f"{raw}: no such file or folder, and no file matches it as a pattern")
        out += [Path(os.path.abspath(f)) for f in found]
    seen: set = set()
    return [f for f in out if not (f in seen or seen.add(f))]


def file_rows(paths: Iterable[Path]) -> list:
    """{path, size, mtime} per file (None for a file that cannot be stat'ed: its row will fail)."""
    rows = []
    for p in paths:
        try:
            st = p.stat()
            rows.append({"path": str(p), "size": st.st_size, "mtime": st.st_mtime})
        except OSError:
            rows.append({"path": str(p), "size": None, "mtime": None})
    return rows


def _open_output(out: Path) -> set:
    """Check (or create) the output folder; the (path, size, mtime) of the rows it already holds."""
    import pyarrow.parquet as pq

    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder: give a new output path (nothing was changed)")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ValueError(f"{out} is a folder with other files: it is not a transcribe-dataset output "
                         f"(no {MARKER}); give a new output path (nothing was changed)")
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MARKER).is_file():
        (out / MARKER).write_text(json.dumps({"format": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    done: set = set()
    for part in sorted(out.glob("part-*.parquet")):
        t = pq.read_table(part, columns=["path", "size", "mtime"])
        done.update(zip(*(t.column(c).to_pylist() for c in ("path", "size", "mtime"))))
    return done


def read_output(out: Union[str, os.PathLike]):
    """Every row of a transcribe-dataset output folder as one pyarrow Table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(Path(out).glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts]) if parts else _schema().empty_table()


@dataclasses.dataclass
class CorpusReport:
    total: int        # input files
    skipped: int      # already in the output (same path, size and mtime)
    done: int         # transcribed now
    failed: int       # of those, rows with an error
    parts: list       # part files written


def _actor_layout(cluster_cpus: int, cpus_per_actor: Optional[int], actors: Optional[int], n_files: int) -> tuple:
    """(CPUs per actor, actors): by default as many actors of min(4, the cluster's CPUs) as fit."""
    cpus = int(cpus_per_actor or min(4, cluster_cpus))
    if cpus < 1 or cpus > cluster_cpus:
        raise ValueError(f"cpus_per_actor must be between 1 and the cluster's {cluster_cpus} CPUs, got {cpus}")
    return cpus, min(int(actors or max(1, cluster_cpus // cpus)), n_files)


def _write_parts(ds: Any, out: Path, report: CorpusReport, n_files: int, progress: bool) -> None:
    """Each finished block of ``ds`` as one part file, written to a temporary name and renamed."""
    import pyarrow.parquet as pq
    from tqdm import tqdm

    run = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    with tqdm(total=n_files, desc="transcribed", unit="file", disable=not progress, dynamic_ncols=True) as bar:
        for k, block in enumerate(ds.iter_batches(batch_size=None, batch_format="pyarrow")):
            part = out / f"part-{run}-{k:05d}.parquet"
            tmp = out / f".{part.name}.tmp"
            try:
                pq.write_table(block, tmp)
                os.replace(tmp, part)
            finally:
                tmp.unlink(missing_ok=True)
            report.parts.append(part)
            report.done += block.num_rows
            report.failed += sum(e is not None for e in block.column("error").to_pylist())
            bar.update(block.num_rows)


def transcribe_corpus(inputs: Sequence[Union[str, os.PathLike]], output: Union[str, os.PathLike], *,
                      model: Union[str, os.PathLike, None] = None, llm: Union[str, os.PathLike, None] = None,
                      mmproj: Union[str, os.PathLike, None] = None, vad_model: Union[str, os.PathLike, None] = None,
                      hub: Optional[str] = None, options: Optional[TranscribeOptions] = None,
                      ray_address: Optional[str] = None, actors: Optional[int] = None,
                      cpus_per_actor: Optional[int] = None, batch_size: int = 8, limit: Optional[int] = None,
                      progress: bool = True, **load: Any) -> CorpusReport:
    """Transcribe every file of ``inputs`` (see :func:`expand_inputs`) on Ray Data into the Parquet
    folder ``output``: one part file per finished block, written to a temporary name and renamed,
    so the folder only ever holds whole parts. A rerun skips files already there with the same
    path, size and mtime (a changed file is transcribed again and gets a second row). ``limit``:
    at most this many of the remaining files. Starts a local Ray unless one is running or
    ``ray_address`` is given; ``actors`` x ``cpus_per_actor`` (default: as many actors of
    min(4, the cluster's CPUs) CPUs as fit)."""
    import ray

    options = TranscribeOptions.build(options)
    out = Path(output)
    files = expand_inputs(inputs)
    done = _open_output(out)
    rows = file_rows(files)
    todo = [r for r in rows if (r["path"], r["size"], r["mtime"]) not in done]
    skipped = len(rows) - len(todo)
    if limit is not None:
        todo = todo[:max(0, int(limit))]
    report = CorpusReport(total=len(rows), skipped=skipped, done=0, failed=0, parts=[])
    if not todo:
        return report
    # actors may start elsewhere than this process's working directory: absolute paths
    absolute = {k: (os.path.abspath(v) if v is not None and os.path.exists(v) else v)
                for k, v in dict(model=model, llm=llm, mmproj=mmproj, vad_model=vad_model).items()}
    started = False
    if not ray.is_initialized():
        ray.init(address=ray_address, include_dashboard=False)
        started = True
    try:
        cpus, n_actors = _actor_layout(int(ray.cluster_resources().get("CPU", 1)), cpus_per_actor, actors, len(todo))
        ctor = dict(absolute, hub=hub, options=options, **load)
        # a block per batch, and at least one per actor; each finished block becomes one part file
        blocks = min(len(todo), max(-(-len(todo) // batch_size), n_actors))
        ds = ray.data.from_items(todo, override_num_blocks=blocks)
        ds = ds.map_batches(Transcriber, fn_constructor_kwargs=ctor, concurrency=n_actors, num_cpus=cpus,
                            batch_size=batch_size, batch_format="pyarrow")
        _write_parts(ds, out, report, len(todo), progress)
    finally:
        if started:
            ray.shutdown()
    return report


__all__ = ["AUDIO_EXTENSIONS", "CorpusReport", "Transcriber", "expand_inputs", "file_rows", "read_output",
           "transcribe_corpus"]
