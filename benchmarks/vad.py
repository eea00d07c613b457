#!/usr/bin/env python3
"""FSMN-VAD: what it costs, and what it changes end to end.

    python benchmarks/vad.py                        # ~15 min on 2 cores
    python benchmarks/vad.py --quick --out /tmp/v   # smoke run (tiny ASR model, short audio)

1. VAD cost: our FSMN-VAD (real FSMN-VAD shapes, random weights: fixtures/vad_checkpoint.py) on
   10 minutes and on 1 hour of speech with pauses, 1 and 2 threads; upstream's FsmnVADStreaming
   (torch, same weights) on the same 10 minutes, side by side. Wall and CPU time, peak RSS.
2. The 5-minute file end to end (real-shape random Fun-ASR-Nano, q8_0 LLM, the default mmproj type,
   64 tokens per segment, end of turn ignored) with vad="fsmn" vs vad="energy", alternating.
3. One hour end to end (VAD + ASR) with the tiny test ASR model: peak RSS against the audio's size
   (the pipeline's memory, not the model's).

Every measurement runs in a fresh child process (its own peak RSS). Writes --out/vad.json, .md, .png.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workloads  # noqa: E402
from workloads import SAMPLE_RATE, SENTENCES, log  # noqa: E402

PAUSES = [0.4, 2.5, 0.8, 3.0, 0.3, 1.5]  # seconds after each sentence, cycling


def peak_rss_mb() -> float:
    """VmHWM: this process's own peak (ru_maxrss carries the parent's peak over fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def conversation(work: Path, seconds: float) -> Path:
    """Sentences with pauses of 0.3 to 3 s over faint noise (16-bit WAV), a prefix of one track."""
    return workloads.speech_with_pauses(work / f"conversation-{seconds:g}s.wav", seconds, PAUSES, noise=1e-4)


def vad_model(work: Path) -> tuple[Path, Path]:
    from fixtures.vad_checkpoint import write_vad_checkpoint
    from funasr_cpp.converters import write_vad_gguf

    folder = work / "fsmn-vad-random"
    if not (folder / "model.pt").is_file():
        write_vad_checkpoint(folder, seed=0)
    gguf = folder.parent / "gguf" / "fsmn-vad-f32.gguf"
    if not gguf.is_file():
        write_vad_gguf(folder, gguf.parent)
    return folder, gguf


# --------------------------------------------------------------------------------------- children
def child_ours(spec: dict) -> dict:
    from funasr_cpp.audio import load_audio
    from funasr_cpp.vad import FsmnVad

    x = load_audio(spec["audio"])
    vad = FsmnVad(spec["gguf"], n_threads=spec["threads"])
    vad.segments(x[: 16000 * 5])  # warm-up
    base = peak_rss_mb()
    runs = []
    for _ in range(spec["runs"]):
        c0, t0 = cpu_s(), time.perf_counter()
        segs = vad.segments(x)
        runs.append({"wall_ms": (time.perf_counter() - t0) * 1000, "cpu_ms": (cpu_s() - c0) * 1000})
    return {"runs": runs, "segments": len(segs), "audio_s": len(x) / SAMPLE_RATE, "rss_before_mb": base,
            "peak_rss_mb": peak_rss_mb()}


def child_upstream(spec: dict) -> dict:
    import soundfile as sf
    import torch

    torch.set_num_threads(spec["threads"])
    from funasr import AutoModel

    x = sf.read(spec["audio"], dtype="float32")[0]
    m = AutoModel(model=spec["folder"], device="cpu", disable_update=True, disable_pbar=True, ncpu=spec["threads"])
    m.generate(input=x[: 16000 * 5], cache={})
    base = peak_rss_mb()
    runs = []
    for _ in range(spec["runs"]):
        c0, t0 = cpu_s(), time.perf_counter()
        segs = m.generate(input=x, cache={})[0]["value"]
        runs.append({"wall_ms": (time.perf_counter() - t0) * 1000, "cpu_ms": (cpu_s() - c0) * 1000})
    return {"runs": runs, "segments": len(segs), "audio_s": len(x) / SAMPLE_RATE, "rss_before_mb": base,
            "peak_rss_mb": peak_rss_mb()}


def child_e2e(spec: dict) -> dict:
    from funasr_cpp import Model

    model = Model(spec["llm"], spec["mmproj"], n_threads=spec["threads"], vad_model=spec["gguf"])
    # end of turn ignored; the budget follows the segment's length (20 + tokens_per_second x seconds),
    # as real answers do, so that cutting into more or fewer segments is compared on equal text
    opts = dict(max_new_tokens=512, max_tokens_per_second=spec["tokens_per_second"], ignore_eos=True,
                ctc_draft=False, repetition_guard=False)
    base = peak_rss_mb()
    runs = []
    for mode in spec["modes"] * spec["runs"]:  # alternating
        r = model.transcribe(spec["audio"], vad=mode, **opts)
        runs.append({"mode": mode, **r.timings.to_dict(), "segments": len(r.segments),
                     "speech_s": sum(s.end - s.start for s in r.segments)})
    return {"runs": runs, "audio_s": r.duration, "rss_after_load_mb": base, "peak_rss_mb": peak_rss_mb()}


CHILDREN = {"ours": child_ours, "upstream": child_upstream, "e2e": child_e2e}


def run_child(kind: str, spec: dict, timeout: float = 3600) -> dict:
    return workloads.run_json([sys.executable, __file__, "--child", kind, json.dumps(spec)], timeout=timeout)


# --------------------------------------------------------------------------------------- report
def med(runs, key, mode=None):
    return statistics.median(r[key] for r in runs if mode is None or r.get("mode") == mode)


def render(res: dict) -> str:
    m = res["machine"]
    lines = [f"CPU: {m['cpu']}, {m['cores']} cores; ggml: {m['ggml']}", "",
             "VAD alone (medians of %d runs; CPU = user + system time of the process):" % res["runs"], "",
             "| VAD | audio | threads | wall ms | CPU ms | wall ms per audio hour | segments | peak RSS MB "
             "(before the VAD) |", "|---|---|---|---|---|---|---|---|"]
    for r in res["vad"]:
        wall = med(r["runs"], "wall_ms")
        lines.append(f"| {r['who']} | {r['audio_s'] / 60:.0f} min | {r['threads']} | {wall:.0f} | "
                     f"{med(r['runs'], 'cpu_ms'):.0f} | {wall * 3600 / r['audio_s']:.0f} | {r['segments']} | "
                     f"{r['peak_rss_mb']:.0f} ({r['rss_before_mb']:.0f}) |")
    ratio = res.get("ratio_10min")
    if ratio:
        lines += ["", f"Upstream / ours on the same 10 minutes, {ratio['threads']} threads: "
                      f"{ratio['wall']:.1f}x wall, {ratio['cpu']:.1f}x CPU."]
    e = res.get("e2e_5min")
    if e:
        lines += ["", f"The 5-minute file end to end ({e['setup']}):", "",
                  "| segmentation | segments | speech s | generated tokens | VAD ms | total ms | encode ms | decode ms |",
                  "|---|---|---|---|---|---|---|---|"]
        for mode in ("fsmn", "energy"):
            runs = [r for r in e["runs"] if r["mode"] == mode]
            lines.append(f"| {mode} | {runs[0]['segments']} | {runs[0]['speech_s']:.1f} | {runs[0]['n_generated_tokens']} | "
                         f"{med(runs, 'vad_ms'):.0f} | "
                         f"{med(runs, 'total_ms'):.0f} | {med(runs, 'encode_ms'):.0f} | {med(runs, 'decode_ms'):.0f} |")
    h = res.get("e2e_hour")
    if h:
        r = h["runs"][0]
        lines += ["", f"One hour end to end with vad=\"fsmn\" ({h['setup']}): {r['segments']} segments, "
                      f"total {r['total_ms'] / 1000:.1f} s (VAD {r['vad_ms'] / 1000:.1f} s), peak RSS "
                      f"{h['peak_rss_mb']:.0f} MB ({h['rss_after_load_mb']:.0f} MB after loading the models; the "
                      f"hour's samples alone are {h['audio_s'] * SAMPLE_RATE * 4 / 2**20:.0f} MB as float32)."]
    return "\n".join(lines) + "\n"


def chart(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in res["vad"] if r["audio_s"] < 1200]
    labels = [f"{r['who']}\n{r['threads']} thr" for r in rows]
    per_hour = [med(r["runs"], "wall_ms") * 3600 / r["audio_s"] / 1000 for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(labels, per_hour, color=["#4c72b0" if r["who"] == "funasr-cpp" else "#dd8452" for r in rows])
    ax.set_ylabel("s per audio hour (wall)")
    ax.set_title("FSMN-VAD on 10 minutes, scaled per hour (lower is better)")
    for i, v in enumerate(per_hour):
        ax.text(i, v, f"{v:.1f}", ha="center", va="bottom")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "funasr-cpp-bench")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny ASR model, 2 minutes instead of the hour")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child[0]](json.loads(args.child[1]))))
        return 0

    from bench import machine

    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    folder, gguf = vad_model(args.work)
    short = conversation(args.work, 120 if args.quick else 600)
    hour = conversation(args.work, 120 if args.quick else 3600)
    res = {"machine": machine(), "runs": args.runs, "vad": []}
    for threads in (1, 2):
        for who, kind, audio in (("funasr-cpp", "ours", short), ("upstream (torch)", "upstream", short)):
            log(f"VAD {who}, {threads} threads, {audio.name}")
            r = run_child(kind, {"audio": str(audio), "gguf": str(gguf), "folder": str(folder), "threads": threads,
                                 "runs": args.runs})
            res["vad"].append({"who": who, "threads": threads, **r})
    if not args.quick:
        log("VAD funasr-cpp, 1 hour")
        r = run_child("ours", {"audio": str(hour), "gguf": str(gguf), "threads": 2, "runs": args.runs})
        res["vad"].append({"who": "funasr-cpp", "threads": 2, **r})
    o = next(r for r in res["vad"] if r["who"] == "funasr-cpp" and r["threads"] == 2)
    u = next(r for r in res["vad"] if r["who"] != "funasr-cpp" and r["threads"] == 2)
    res["ratio_10min"] = {"threads": 2, "wall": med(u["runs"], "wall_ms") / med(o["runs"], "wall_ms"),
                          "cpu": med(u["runs"], "cpu_ms") / med(o["runs"], "cpu_ms")}

    asr = workloads.release_folder(args.work, full=not args.quick)
    from funasr_cpp.hub import default_mmproj_type

    mm_type = default_mmproj_type()
    files = workloads.gguf_files(asr, args.work / "gguf", ["q8_0"], [mm_type])
    five = conversation(args.work, 120 if args.quick else 300)
    spec = {"llm": str(files["llm", "q8_0"]), "mmproj": str(files["mmproj", mm_type]), "gguf": str(gguf),
            "threads": 2, "tokens_per_second": 4.0, "audio": str(five), "modes": ["fsmn", "energy"], "runs": 2}
    log(f"end to end, {five.name}, fsmn vs energy")
    res["e2e_5min"] = {"setup": f"{'tiny' if args.quick else 'real-shape'} model, q8_0 LLM, {mm_type} mmproj, "
                                f"2 threads, 20 + 4 tokens per second of segment (end of turn ignored), medians of 2 alternating runs",
                       **run_child("e2e", spec)}
    tiny = workloads.release_folder(args.work, full=False)
    tfiles = workloads.gguf_files(tiny, args.work / "gguf", ["q8_0"], ["f16"])
    log(f"end to end, {hour.name}, tiny model")
    res["e2e_hour"] = {"setup": "tiny test model, 2 threads, 20 + 1 tokens per second of segment",
                       **run_child("e2e", dict(spec, llm=str(tfiles["llm", "q8_0"]), mmproj=str(tfiles["mmproj", "f16"]),
                                               audio=str(hour), modes=["fsmn"], runs=1, tokens_per_second=1.0))}
    (args.out / "vad.json").write_text(json.dumps(res, indent=1))
    (args.out / "vad.md").write_text(render(res))
    chart(res, args.out / "vad.png")
    print(render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
