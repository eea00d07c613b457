#!/usr/bin/env python3
"""Two builds of funasr-cpp side by side: `measure.py ours` (Model.transcribe, 64 tokens per
segment, end of turn ignored) on the same real-shape random model and audio, alternating the
builds run by run (this machine drifts by several percent over minutes). A refactor must stay
within noise of the build before it.

    python benchmarks/builds_ab.py --a /tmp/old --b ""      # "" = the funasr_cpp this Python imports

--a / --b: a folder that holds an installed `funasr_cpp` package (put first on PYTHONPATH), e.g.
a copy of site-packages/funasr_cpp taken before a change; "" for the current environment.
FUNASR_CPU_VARIANT in the environment pins both builds' CPU variant (portable builds), e.g. the
AVX2 check: FUNASR_CPU_VARIANT=haswell python benchmarks/builds_ab.py --a OLD --b NEW --out DIR.
Writes --out/builds_ab.json (medians per build and clip length)."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workloads  # noqa: E402
from workloads import log  # noqa: E402

STAGES = ("total_ms", "encode_ms", "prefill_ms", "decode_ms", "tokens_per_s")


def measure(pythonpath: str, spec: dict, threads: int) -> list:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return workloads.run_json([sys.executable, HERE / "measure.py", "ours", json.dumps(spec)], env=env)["runs"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, help="folder holding build A's funasr_cpp ('' = this environment)")
    ap.add_argument("--b", required=True, help="folder holding build B's funasr_cpp ('' = this environment)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/funasr-cpp-bench"), help="generated weights and audio")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--seconds", type=float, nargs="+", default=[10, 30])
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (each: every clip, both builds)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per process (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--mmproj", default="f16", help="mmproj type (the same for both builds)")
    ap.add_argument("--tiny", action="store_true", help="smoke run on the tiny test weights")
    args = ap.parse_args()

    folder = workloads.release_folder(args.work, full=not args.tiny)
    files = workloads.gguf_files(folder, args.work / "gguf", llm_types=("q8_0",), mmproj_types=(args.mmproj,))
    audio = workloads.audio_files(args.work, args.seconds)
    runs: dict = {}
    for r in range(args.rounds):
        order = (("a", args.a), ("b", args.b)) if r % 2 == 0 else (("b", args.b), ("a", args.a))
        for s in args.seconds:
            for name, path in order:
                spec = {"llm": str(files["llm", "q8_0"]), "mmproj": str(files["mmproj", args.mmproj]), "audio": str(audio[s]),
                        "threads": args.threads, "runs": args.runs, "tokens": args.tokens}
                got = measure(path, spec, args.threads)
                runs.setdefault(f"{name} {s:g}s", []).extend(got)
                log(f"round {r + 1}: {name} {s:g}s total_ms {[round(x['total_ms']) for x in got]}")
    result = {"a": args.a, "b": args.b, "threads": args.threads, "tokens": args.tokens, "mmproj": args.mmproj,
              "cpu_variant": os.environ.get("FUNASR_CPU_VARIANT", ""),
              "medians": {k: {"n": len(v), **{st: statistics.median(x[st] for x in v) for st in STAGES}}
                          for k, v in sorted(runs.items())}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "builds_ab.json").write_text(json.dumps(result, indent=1) + "\n")
    for s in args.seconds:
        a, b = result["medians"][f"a {s:g}s"], result["medians"][f"b {s:g}s"]
        print(f"{s:g} s: total {a['total_ms']:.0f} -> {b['total_ms']:.0f} ms ({b['total_ms'] / a['total_ms']:.3f}x), "
              f"encode {a['encode_ms']:.0f} -> {b['encode_ms']:.0f} ms, decode {a['tokens_per_s']:.2f} -> "
              f"{b['tokens_per_s']:.2f} tok/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
