#!/usr/bin/env python3
"""Throughput of the batched engine: batching, speculative decoding, the long file, the
encoder at the default mmproj type against PyTorch, peak RSS at batch 8.

    python benchmarks/throughput.py               # real shapes; ~40 min on 2 cores
    python benchmarks/throughput.py --tiny --out /tmp/t   # smoke run on the tiny test weights

Uses bench.py's work folder (random-weight real-shape release, GGUFs, eSpeak NG audio; generated
once). Every measurement runs in a fresh process (measure.py); A/B comparisons alternate run by
run inside it. Writes --out/throughput.json, throughput.md and throughput.png.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402
import workloads  # noqa: E402
from bench import engine_bench_parser, machine, run_measure  # noqa: E402
from workloads import log  # noqa: E402

LLM = "q8_0"
BATCHES = (1, 2, 4, 8, 16)


def cut_clips(work: Path, source: Path, n: int, seconds: float) -> list[str]:
    """n different `seconds`-long cuts of the long track (the same length, other speech)."""
    import soundfile as sf

    from fixtures.speech import write_wav16k

    x, _ = sf.read(source, dtype="float32")
    step = (x.size - int(seconds * 16000)) // max(n - 1, 1)
    out = []
    for k in range(n):
        p = work / f"clip-{seconds:g}s-{k}.wav"
        if not p.is_file():
            write_wav16k(p, x[k * step: k * step + int(seconds * 16000)])
        out.append(str(p))
    return out


def main() -> int:
    ap = engine_bench_parser(__doc__)
    ap.add_argument("--only", nargs="+", default=None,
                    choices=["roofline", "batch", "decode-batch", "speculative", "long", "encoder"])
    args = ap.parse_args()

    from funasr_cpp.hub import default_mmproj_type

    mm_type = args.mmproj or default_mmproj_type()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    folder = workloads.release_folder(args.work, full=not args.tiny)
    ggufs = workloads.gguf_files(folder, args.work / "gguf", [LLM], sorted({mm_type, "f16"}))
    long_s = 30 if args.tiny else 300
    audio = workloads.audio_files(args.work, [10, 30, long_s])
    clips = cut_clips(args.work, audio[long_s], 8, 10)
    t = args.threads
    base = {"llm": str(ggufs["llm", LLM]), "threads": t, "runs": args.runs, "tokens": args.tokens}
    path = args.out / "throughput.json"
    res = json.loads(path.read_text()) if path.is_file() else {}
    res["machine"] = machine()
    res["setup"] = {"llm": LLM, "mmproj": mm_type, "threads": t, "runs": args.runs, "tokens": args.tokens,
                    "tiny": args.tiny, "llm_weight_bytes": report.gguf_tensor_bytes(ggufs["llm", LLM]),
                    "llm_params": report.gguf_tensor_params(ggufs["llm", LLM])}

    def todo(name):
        return args.only is None or name in args.only

    def save():
        path.write_text(json.dumps(res, indent=1))

    timeout = 3 * 3600
    if todo("roofline"):
        log("roofline")
        res["roofline"] = run_measure("roofline", {"threads": t, "runs": args.runs} |
                                      ({"bytes": 1 << 26, "gemm": 256} if args.tiny else {}), t, timeout)
        save()
    for mm in sorted({mm_type, "f16"}):
        spec = base | {"mmproj": str(ggufs["mmproj", mm])}
        if todo("batch"):
            log(f"8 x 10 s: one after another vs transcribe_batch (mmproj {mm})")
            res.setdefault("batch", {})[mm] = run_measure("batch", spec | {"clips": clips, "n_parallel": 8}, t, timeout)
            save()
        if todo("long"):
            for n in (1, 8):
                log(f"{long_s} s file, n_parallel={n} (mmproj {mm})")
                res.setdefault("long", {})[f"{mm}/{n}"] = run_measure(
                    "long", spec | {"audio": str(audio[long_s]), "warmup": clips[0], "n_parallel": n,
                                    "runs": max(1, args.runs - 1)}, t, timeout)
                save()
        if todo("speculative"):
            log(f"speculative decoding, 10 s (mmproj {mm})")
            res.setdefault("speculative", {})[mm] = run_measure(
                "speculative", spec | {"audio": str(audio[10]), "draft_max": 8}, t, timeout)
            save()
        if todo("encoder"):
            for s in (10, 30):
                log(f"ours {s} s (mmproj {mm})")
                res.setdefault("encoder", {})[f"ours/{mm}/{s}"] = run_measure(
                    "ours", spec | {"audio": str(audio[s])}, t, timeout)
                save()
    if todo("decode-batch"):
        log("decode tok/s by batch size")
        res["decode_batch"] = run_measure("decode-batch", base | {"mmproj": str(ggufs["mmproj", mm_type]),
                                                                   "audio": str(audio[10]), "batch": list(BATCHES)},
                                          t, timeout)
        save()
    if todo("encoder"):
        log("PyTorch 10 s and 30 s")
        clips_t = [{"audio": str(audio[s]), "spans": [[0, 16000 * s]]} for s in (10, 30)]
        out = run_measure("torch", base | {"model_dir": str(folder), "clips": clips_t}, t, timeout)
        for s, r in zip((10, 30), out["clips"]):
            res.setdefault("encoder", {})[f"torch/{s}"] = r
        save()
    (args.out / "throughput.md").write_text(render(res))
    chart(res, args.out / "throughput.png")
    log(f"wrote {args.out / 'throughput.md'}")
    return 0


def med(xs):
    return statistics.median(xs)


def render(res: dict) -> str:
    s = res["setup"]
    m = res["machine"]
    lines = [f"Machine: {m.get('cpu', '?')}, {s['threads']} threads; ggml {m.get('ggml', '?')}; "
             f"{m.get('date', '')}; LLM {s['llm']}, {s['tokens']} tokens per segment (end of turn ignored), medians of {s['runs']} runs.", ""]
    if "batch" in res:
        lines += ["| mmproj | 8 x 10 s one after another | transcribe_batch | ratio | goal |", "|---|---|---|---|---|"]
        for mm, r in res["batch"].items():
            a, b = med(r["sequential_s"]), med(r["batch_s"])
            lines.append(f"| {mm} | {a:.2f} s | {b:.2f} s | **{b / a:.2f}x** | <= 0.35x |")
        lines.append("")
    if "long" in res:
        lines += ["| long file | mmproj | n_parallel | segments | encoder s | prefill s | decode s | tok/s | "
                  "wall s | RTF | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for k, r in res["long"].items():
            mm, n = k.split("/")
            runs = r["runs"]
            g = {f: med([x[f] for x in runs]) for f in ("encode_ms", "prefill_ms", "decode_ms", "total_ms",
                                                        "tokens_per_s", "real_time_factor")}
            lines.append(f"| {r['duration_s']:.0f} s | {mm} | {n} | {runs[0]['segments']} | {g['encode_ms'] / 1000:.1f} | "
                         f"{g['prefill_ms'] / 1000:.1f} | {g['decode_ms'] / 1000:.1f} | {g['tokens_per_s']:.1f} | "
                         f"{g['total_ms'] / 1000:.1f} | **{g['real_time_factor']:.3f}** | {r['peak_rss_mb']:.0f} |")
        lines.append("")
    if "speculative" in res:
        lines += ["| speculative, 10 s | mmproj | draft | decode steps | accepted / drafted | decode tok/s | RTF |",
                  "|---|---|---|---|---|---|---|"]
        for mm, r in res["speculative"].items():
            for k, runs in r["runs"].items():
                lines.append(f"| | {mm} | {k} | {runs[0]['n_decoded_tokens']} | {runs[0]['n_accepted_tokens']} / "
                             f"{runs[0]['n_draft_tokens']} | {med([x['tokens_per_s'] for x in runs]):.1f} | "
                             f"**{med([x['real_time_factor'] for x in runs]):.3f}** |")
        lines.append("")
    if "decode_batch" in res and "roofline" in res:
        rf = res["roofline"]
        wb, params = s["llm_weight_bytes"], s["llm_params"]
        lines += ["| sequences | aggregate decode tok/s | per sequence | bandwidth bound | compute bound |",
                  "|---|---|---|---|---|"]
        for b, v in res["decode_batch"]["tok_s"].items():
            bw, cb = bounds(rf, wb, params, int(b))
            lines.append(f"| {b} | {v:.1f} | {v / int(b):.1f} | {bw:.0f} | {cb:.0f} |")
        lines += ["", "Bandwidth bound: b x read GB/s / weight bytes (one read of every weight per step); "
                  "compute bound: f32 GEMM GFLOP/s / (2 x LLM parameters) per token (int8 dot products can pass it).",
                  ""]
    if "encoder" in res:
        lines += ["| encoder + adaptor | PyTorch fp32 | funasr-cpp | mmproj | speed-up | goal |", "|---|---|---|---|---|---|"]
        for s_ in (10, 30):
            tr = res["encoder"].get(f"torch/{s_}")
            for k, r in res["encoder"].items():
                if k.startswith("ours/") and k.endswith(f"/{s_}") and tr:
                    mm = k.split("/")[1]
                    a = med([x["encode_ms"] for x in tr["runs"]])
                    b = med([x["encode_ms"] for x in r["runs"]])
                    lines.append(f"| {s_} s | {a:.0f} ms | {b:.0f} ms | {mm} | **{a / b:.2f}x** | >= 1.3x |")
        lines.append("")
    rss = res.get("batch", {}).get(s["mmproj"], {}).get("peak_rss_mb")
    if rss:
        lines += [f"Peak RSS of the 8 x 10 s batch process (VmHWM, mmproj {s['mmproj']}): **{rss:.0f} MB** "
                  "(goal <= 1800 MB).", ""]
    return "\n".join(lines)


def bounds(rf: dict, weight_bytes: int, params: int, b: int) -> tuple[float, float]:
    return b * rf["read_gbps"] * 1e9 / weight_bytes, rf["gemm_gflops"] * 1e9 / (2.0 * params)


def chart(res: dict, path: Path) -> None:
    if "decode_batch" not in res or "roofline" not in res:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = res["setup"]
    bs = [int(b) for b in res["decode_batch"]["tok_s"]]
    v = list(res["decode_batch"]["tok_s"].values())
    bw = [bounds(res["roofline"], s["llm_weight_bytes"], s["llm_params"], b)[0] for b in bs]
    cb = bounds(res["roofline"], s["llm_weight_bytes"], s["llm_params"], 1)[1]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(bs, v, "o-", label="funasr-cpp (aggregate)")
    ax.plot(bs, bw, "--", label="bandwidth bound")
    ax.axhline(cb, ls=":", color="gray", label="f32 GEMM compute bound")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(bs, [str(b) for b in bs])
    ax.set_xlabel("sequences decoded together")
    ax.set_ylabel("decode tokens / s")
    ax.set_title(f"Batched decode, LLM {s['llm']}, {s['threads']} threads")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
