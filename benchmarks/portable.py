"""Portable wheel vs native build on this machine: encoder and decode speed.

    python benchmarks/portable.py --wheel dist/funasr_cpp-*.whl [--rounds 5] [--pin haswell ...]

The native build is the funasr_cpp of the interpreter running this script (`pip install .`,
GGML_NATIVE); the wheel (tools/build_wheel.sh) is installed into a venv of its own in the work
folder. Each round runs measure.py's `ours` (a fresh process: load, warm-up, `--runs` timed
transcriptions of one 10 s clip, 64 tokens each, end-of-turn ignored) once per build, the order
alternating from round to round, on the same real-shape random-weight GGUF pair. Reported:
medians over every timed run of the encoder time (encoder + adaptor) and of the decode rate.
`--pin VARIANT` adds the wheel with FUNASR_CPU_VARIANT=VARIANT (a lower CPU variant) to the rounds.
Results: results/portable.json and a Markdown table on stdout (BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import workloads  # noqa: E402
from workloads import log  # noqa: E402


def wheel_python(wheel: Path, work: Path) -> Path:
    """The interpreter of a venv holding `wheel` (made once per wheel file content)."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()[:12]
    venv = work / f"wheel-venv-{digest}"
    python = venv / "bin" / "python"
    if not (venv / ".installed").is_file():
        log(f"installing {wheel.name} into {venv}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--only-binary", ":all:", str(wheel)], check=True)
        (venv / ".installed").write_text(str(wheel) + "\n")
    return python


def variant_of(python: Path, env: dict) -> str:
    code = "import funasr_cpp; i = funasr_cpp.system_info(); print(i.cpu_variant or 'native')"
    return subprocess.run([str(python), "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()


def measure(python: Path, env: dict, spec: dict) -> dict:
    return workloads.run_json([python, HERE / "measure.py", "ours", json.dumps(spec)], env=env, timeout=1800)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "funasr-cpp-bench")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3, help="timed transcriptions per process")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pin", action="append", default=[], help="also run the wheel with this CPU variant pinned")
    ap.add_argument("--quick", action="store_true", help="tiny model, 1 round (smoke test)")
    args = ap.parse_args()

    from bench import machine

    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    folder = workloads.release_folder(args.work, full=not args.quick)
    files = workloads.gguf_files(folder, args.work / "gguf", ["q8_0"], ["f16"])
    clip = workloads.audio_files(args.work, [10])[10]
    spec = {"llm": str(files["llm", "q8_0"]), "mmproj": str(files["mmproj", "f16"]), "audio": str(clip),
            "threads": args.threads, "runs": 1 if args.quick else args.runs, "tokens": 64}
    env = {k: v for k, v in os.environ.items() if k != "FUNASR_CPU_VARIANT"}
    wheel_py = wheel_python(args.wheel.resolve(), args.work)
    builds = {"native": (Path(sys.executable), env), "portable": (wheel_py, env)}
    for v in args.pin:
        builds[f"portable, {v} pinned"] = (wheel_py, {**env, "FUNASR_CPU_VARIANT": v})
    runs = {name: [] for name in builds}
    variants = {name: variant_of(py, e) for name, (py, e) in builds.items()}
    names = list(builds)
    for rnd in range(1 if args.quick else args.rounds):
        order = names if rnd % 2 == 0 else names[::-1]
        for name in order:
            py, e = builds[name]
            log(f"round {rnd + 1}: {name} ({variants[name]})")
            runs[name] += measure(py, e, spec)["runs"]
    rows = []
    for name in names:
        enc = statistics.median(r["encode_ms"] for r in runs[name])
        dec = statistics.median(r["tokens_per_s"] for r in runs[name])
        rows.append({"build": name, "cpu_variant": variants[name], "encode_ms": enc, "decode_tok_s": dec,
                     "n": len(runs[name])})
    base = rows[0]
    for r in rows:
        r["encode_vs_native"] = r["encode_ms"] / base["encode_ms"]
        r["decode_vs_native"] = r["decode_tok_s"] / base["decode_tok_s"]
    res = {"machine": machine(), "setup": f"{'tiny' if args.quick else 'real-shape'} random-weight model, q8_0 LLM, "
           f"f16 mmproj, {args.threads} threads, 10 s clip, 64 tokens, medians of {base['n']} runs in "
           f"{1 if args.quick else args.rounds} alternating rounds", "rows": rows, "wheel": args.wheel.name}
    (args.out / ("portable-quick.json" if args.quick else "portable.json")).write_text(json.dumps(res, indent=1) + "\n")
    print("| build | CPU variant | encoder ms | vs native | decode tok/s | vs native |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['build']} | {r['cpu_variant']} | {r['encode_ms']:.0f} | {r['encode_vs_native']:.3f} | "
              f"{r['decode_tok_s']:.2f} | {r['decode_vs_native']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
