#!/usr/bin/env python3
"""What the CTC head costs: the 10 s clip and the 5-minute file with the head off, with the
default CTC draft, and with word timestamps; 2 threads, q8_0 LLM, the default mmproj type.

    python benchmarks/timestamps.py               # real shapes; ~15 min on 2 cores
    python benchmarks/timestamps.py --tiny --out /tmp/t   # smoke run on the tiny test weights

Uses bench.py's work folder (random-weight real-shape release with the CTC branch, GGUFs, eSpeak
NG audio; generated once). One fresh process per file (measure.py "timestamps"); the three
configurations alternate run by run inside it. Writes --out/timestamps.json, .md and .png.
Random weights: the CTC draft's acceptance cannot be measured here (its text is noise).
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

LLM = "q8_0"
CONFIGS = {"off": "CTC head off", "draft": "CTC draft (default)", "words": "+ word timestamps"}


def med(runs: list, key: str) -> float:
    return statistics.median(r[key] for r in runs)


def render(res: dict) -> str:
    m, s = res["machine"], res["setup"]
    lines = [f"CPU: {m['cpu']}, {m['cores']} cores; ggml: {m['ggml']}",
             f"LLM {s['llm']}, mmproj {s['mmproj']}, {s['threads']} threads, {s['tokens']} tokens per segment "
             f"(end of turn ignored), n_parallel {s['n_parallel']}, medians of {s['runs']} alternating runs", "",
             "| audio | configuration | total ms | encode ms | host CTC ms | decode ms | draft accepted | "
             "segments as off | cost vs off |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in res["files"].items():
        off = med(r["runs"]["off"], "total_ms")
        for k, label in CONFIGS.items():
            runs = r["runs"][k]
            total = med(runs, "total_ms")
            acc = f"{sum(x['n_accepted_tokens'] for x in runs)}/{sum(x['n_draft_tokens'] for x in runs)}"
            cost = "" if k == "off" else f"{total - off:+.0f} ms ({(total - off) / total * 100:+.1f} % of end to end)"
            same = f"{sum(x['same_segments'] for x in runs)}/{sum(x['segments'] for x in runs)}"
            lines.append(f"| {name} | {label} | {total:.0f} | {med(runs, 'encode_ms'):.0f} | "
                         f"{med(runs, 'timestamps_ms'):.1f} | {med(runs, 'decode_ms'):.0f} | {acc} | {same} | {cost} |")
    return "\n".join(lines) + "\n"


def chart(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = list(res["files"])
    fig, axes = plt.subplots(1, len(files), figsize=(5 * len(files), 3.6), squeeze=False)
    for ax, name in zip(axes[0], files):
        runs = res["files"][name]["runs"]
        stages = ("frontend_ms", "encode_ms", "prefill_ms", "decode_ms", "timestamps_ms")
        bottom = [0.0] * len(CONFIGS)
        for st in stages:
            vals = [med(runs[k], st) / 1000 for k in CONFIGS]
            ax.bar(list(CONFIGS.values()), vals, bottom=bottom, label=st.replace("_ms", ""))
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_title(f"{name}: stage seconds (medians)")
        ax.tick_params(axis="x", labelsize=8)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = engine_bench_parser(__doc__)
    args = ap.parse_args()

    from funasr_cpp.hub import default_mmproj_type

    mm_type = args.mmproj or default_mmproj_type()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    folder = workloads.release_folder(args.work, full=not args.tiny)
    ggufs = workloads.gguf_files(folder, args.work / "gguf", [LLM], [mm_type])
    long_s = 30 if args.tiny else 300
    audio = workloads.audio_files(args.work, [10, long_s])
    res = {"machine": machine(), "setup": {"llm": LLM, "mmproj": mm_type, "threads": args.threads, "runs": args.runs,
                                           "tokens": args.tokens, "n_parallel": 8, "tiny": args.tiny}, "files": {}}
    spec = {"llm": str(ggufs["llm", LLM]), "mmproj": str(ggufs["mmproj", mm_type]), "threads": args.threads,
            "runs": args.runs, "tokens": args.tokens, "n_parallel": 8, "warmup": str(audio[10])}
    for s in (10, long_s):
        log(f"{s} s: CTC off / draft / word timestamps")
        res["files"][f"{s} s"] = run_measure("timestamps", spec | {"audio": str(audio[s])}, args.threads, 3 * 3600)
        (args.out / "timestamps.json").write_text(json.dumps(res, indent=1))
    (args.out / "timestamps.md").write_text(render(res))
    chart(res, args.out / "timestamps.png")
    log(f"wrote {args.out / 'timestamps.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
