#!/usr/bin/env python3
"""Encoder + adaptor, funasr-cpp vs PyTorch, alternating run by run (this machine drifts by 10-30 %
over minutes, so one PyTorch run against one of ours is not a ratio).

    python benchmarks/encoder_ab.py --rounds 3            # ~8 min on 2 cores -> results/encoder_ab.json

Each round runs PyTorch (upstream funasr, measure.py torch: 10 s and 30 s clips, medians of --runs)
and then ours (measure.py ours, the mmproj type `auto` picks here, or --mmproj) in fresh processes;
the reported ratio is the median over rounds of each round's ratio.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workloads  # noqa: E402
from bench import engine_bench_parser, machine, run_measure  # noqa: E402
from workloads import log  # noqa: E402


def main() -> int:
    ap = engine_bench_parser(__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from funasr_cpp.hub import default_mmproj_type

    mm = args.mmproj or default_mmproj_type()
    folder = workloads.release_folder(args.work, full=not args.tiny)
    ggufs = workloads.gguf_files(folder, args.work / "gguf", ["q8_0"], [mm])
    secs = (10, 30)
    audio = workloads.audio_files(args.work, list(secs))
    t = args.threads
    rounds = []
    for r in range(args.rounds):
        log(f"round {r + 1}: PyTorch")
        clips = [{"audio": str(audio[s]), "spans": [[0, 16000 * s]]} for s in secs]
        torch = run_measure("torch", {"model_dir": str(folder), "clips": clips, "threads": t, "runs": args.runs,
                                      "tokens": args.tokens}, t, 3600)
        row = {}
        for s, c in zip(secs, torch["clips"]):
            row[f"torch/{s}"] = {k: statistics.median(x[k] for x in c["runs"]) for k in ("encode_ms", "total_ms")}
        for s in secs:
            log(f"round {r + 1}: ours {s} s (mmproj {mm})")
            ours = run_measure("ours", {"llm": str(ggufs["llm", "q8_0"]), "mmproj": str(ggufs["mmproj", mm]),
                                        "audio": str(audio[s]), "threads": t, "runs": args.runs,
                                        "tokens": args.tokens}, t, 3600)
            row[f"ours/{s}"] = {k: statistics.median(x[k] for x in ours["runs"]) for k in ("encode_ms", "total_ms")}
        rounds.append(row)
    summary = {}
    for s in secs:
        enc = [r[f"torch/{s}"]["encode_ms"] / r[f"ours/{s}"]["encode_ms"] for r in rounds]
        e2e = [r[f"torch/{s}"]["total_ms"] / r[f"ours/{s}"]["total_ms"] for r in rounds]
        summary[f"{s} s"] = {"encoder_speedup": statistics.median(enc), "encoder_speedups": enc,
                             "e2e_speedup": statistics.median(e2e), "e2e_speedups": e2e,
                             "torch_encode_ms": [r[f"torch/{s}"]["encode_ms"] for r in rounds],
                             "ours_encode_ms": [r[f"ours/{s}"]["encode_ms"] for r in rounds]}
    res = {"machine": machine(), "setup": {"mmproj": mm, "llm": "q8_0", "threads": t, "runs": args.runs,
                                           "rounds": args.rounds, "tokens": args.tokens},
           "rounds": rounds, "summary": summary}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "encoder_ab.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
