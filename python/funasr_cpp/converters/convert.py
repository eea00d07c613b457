"""`funasr-cpp convert MODEL_DIR --outdir OUT`: write the LLM and mmproj GGUFs of a release."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

from .errors import ReleaseWarning
from .gguf_out import check_writable_dir
from .llm_gguf import write_llm_gguf
from .mmproj_gguf import write_mmproj_gguf
from .release import open_release
from .torch_zip import CheckpointError
from .vad_gguf import is_vad_release, write_vad_gguf

LLM_TYPES = ("f32", "f16", "bf16", "q8_0")
MMPROJ_TYPES = ("f32", "f16", "bf16", "q8_0")


def output_paths(name: str, outdir: Path, llm_type: str, mmproj_type: str) -> tuple[Path, Path]:
    return outdir / f"{name}-{llm_type}.gguf", outdir / f"mmproj-{name}-{mmproj_type}.gguf"


def convert(model_dir: str | Path, outdir: str | Path, *, llm_type: str = "f16", mmproj_type: str = "f16",
            progress: bool = True, report=None) -> tuple[Path, Path]:
    """Convert a release folder (funasr's layout or the Transformers -hf one); returns
    (llm_gguf, mmproj_gguf). Inputs are only read. An absent or incomplete CTC branch is
    left out with a ReleaseWarning; `report(lines)` receives what was read (Release.describe)."""
    if llm_type not in LLM_TYPES:
        raise ValueError(f"llm type {llm_type!r}: choose one of {', '.join(LLM_TYPES)} "
                         "(k-quants: `funasr-cpp quantize` the f16 file)")
    if mmproj_type not in MMPROJ_TYPES:
        raise ValueError(f"mmproj type {mmproj_type!r}: choose one of {', '.join(MMPROJ_TYPES)}")
    outdir = Path(outdir).expanduser()
    with open_release(model_dir) as release:
        if report is not None:
            report(release.describe())
        check_writable_dir(outdir)
        llm_path, mmproj_path = output_paths(release.name, outdir, llm_type, mmproj_type)
        # both files are written in a scratch dir and moved in together: a failure
        # leaves the output dir as it was
        scratch = Path(tempfile.mkdtemp(prefix=".funasr-convert-", dir=outdir))
        try:
            write_mmproj_gguf(release, scratch / mmproj_path.name, mmproj_type, progress=progress)
            write_llm_gguf(release, scratch / llm_path.name, llm_type, progress=progress)
            os.replace(scratch / mmproj_path.name, mmproj_path)
            os.replace(scratch / llm_path.name, llm_path)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return llm_path, mmproj_path


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("model_dir", help="released checkpoint folder (model.pt, config.yaml, Qwen3-0.6B/), "
                                      "a Transformers -hf folder (config.json, model.safetensors), or an FSMN-VAD "
                                      "release (model.pt, config.yaml, am.mvn: one fsmn-vad-f32.gguf)")
    ap.add_argument("--outdir", "-o", required=True, help="where to write the two GGUF files")
    ap.add_argument("--llm-type", choices=LLM_TYPES, default="f16", help="LLM weight type (default f16)")
    ap.add_argument("--mmproj-type", choices=MMPROJ_TYPES, default="f16",
                    help="encoder/adaptor weight type (default f16)")


def run(args: argparse.Namespace) -> int:
    start = time.time()

    def report(lines: list[str]) -> None:
        for line in lines:
            print(line)

    def show_warning(message, category, *_args, **_kwargs):
        print(f"warning: {message}", file=sys.stderr)

    try:
        if is_vad_release(Path(args.model_dir).expanduser()):  # an FSMN-VAD release: one GGUF
            vad = write_vad_gguf(args.model_dir, args.outdir)
            print(f"wrote {vad} ({vad.stat().st_size / 2**20:.1f} MiB)")
            print(f"done in {time.time() - start:.1f} s", file=sys.stderr)
            return 0
        with warnings.catch_warnings():
            warnings.simplefilter("always", ReleaseWarning)
            warnings.showwarning = show_warning
            llm, mmproj = convert(args.model_dir, args.outdir, llm_type=args.llm_type, mmproj_type=args.mmproj_type,
                                  report=report)
    except (OSError, ValueError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {llm} ({llm.stat().st_size / 2**20:.1f} MiB)")
    print(f"wrote {mmproj} ({mmproj.stat().st_size / 2**20:.1f} MiB)")
    print(f"done in {time.time() - start:.1f} s", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="funasr-cpp convert", description=__doc__.split(":", 1)[1].strip())
    add_arguments(ap)
    return run(ap.parse_args(argv))
