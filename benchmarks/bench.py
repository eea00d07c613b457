#!/usr/bin/env python3
"""funasr-cpp vs upstream funasr (PyTorch) vs llama.cpp vs the machine's limits.

    python benchmarks/bench.py                      # real shapes; ~1 hour on 2 cores
    python benchmarks/bench.py --tiny --out /tmp/b  # smoke run on the tiny test weights (~1 min)

Generates (once, into --work) a random-weight release folder with the real Fun-ASR-Nano-2512
shapes, its GGUF conversions and eSpeak NG speech, then measures each configuration in a fresh
process (measure.py; --tiny measures its PyTorch clips in one process) and appends to --out/results.json (a rerun skips what is there; --fresh
starts over). Finally writes --out/report.md and --out/benchmarks.png (report.py).
llama.cpp's own numbers come from llama-bench built in the same build folder:
    cmake --build build/<wheel tag> --target llama-bench
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402
import workloads  # noqa: E402
from workloads import log  # noqa: E402

HEADLINE = ("q8_0", "f16")  # LLM type, mmproj type


def plan(args) -> list[dict]:
    """The measurements, most important first (results.json is written after each one)."""
    top, long = max(args.threads), [s for s in args.seconds if s > 30]
    short = [s for s in args.seconds if s <= 30]
    jobs = [{"kind": "roofline", "threads": t} for t in args.threads]

    def e2e(seconds, threads):
        out = []
        for s in seconds:
            out.append({"kind": "ours", "llm": HEADLINE[0], "mmproj": HEADLINE[1], "seconds": s, "threads": threads})
            if s <= args.torch_max_seconds.get(threads, float("inf")):
                out.append({"kind": "torch", "seconds": s, "threads": threads})
        return out

    jobs += e2e(short, top)
    # GGUF types at the most threads: every pair on the first clip, the mmproj types on the others
    for i, s in enumerate(args.type_seconds):
        for llm in args.llm_types if i == 0 else [HEADLINE[0]]:
            for mm in args.mmproj_types:
                if (llm, mm) != HEADLINE:
                    jobs.append({"kind": "ours", "llm": llm, "mmproj": mm, "seconds": s, "threads": top})
    # llama-bench decodes at the depth of our first type clip's prompt
    jobs += [{"kind": "llama-bench", "llm": llm, "threads": t} for llm in args.llm_types for t in args.threads]
    # decode speed ours vs llama-bench, alternating run by run (this machine drifts by +-10% over minutes)
    jobs += [{"kind": "decode-ab", "llm": llm, "threads": top} for llm in args.llm_types]
    for t in sorted(args.threads, reverse=True)[1:]:
        jobs += e2e(short, t)
    for t in sorted(args.threads, reverse=True):
        jobs += e2e(long, t)
    return jobs


def key(job: dict) -> str:
    return "|".join(f"{k}={job[k]}" for k in sorted(job))


def run_measure(kind: str, spec: dict, threads: int, timeout: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    return workloads.run_json([sys.executable, HERE / "measure.py", kind, json.dumps(spec)], env=env, timeout=timeout)


def engine_bench_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments throughput.py and timestamps.py share (work folder, output, tiny weights,
    threads, runs, tokens, mmproj type)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/funasr-cpp-bench"))
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--mmproj", default=None, help="mmproj type (default: what from_pretrained picks on this CPU)")
    return ap


def find_llama_bench(arg) -> Path | None:
    if arg:
        return Path(arg)
    found = sorted(HERE.parent.glob("build/*/bin/llama-bench"))
    return found[0] if found else None


def llama_bench(exe: Path, llm: Path, threads: int, n_prompt: int, tokens: int, runs: int,
                decode_only: bool = False) -> dict:
    """llama-bench's prompt processing of n_prompt tokens (empty cache) and generation of
    `tokens` tokens after n_prompt tokens of context (our decode's situation)."""
    def one(*args):
        out = subprocess.run([str(exe), "-m", str(llm), "-t", str(threads), "-r", str(runs), "-o", "json", *args],
                             capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise RuntimeError(f"llama-bench failed:\n{out.stderr[-2000:]}")
        (test,) = json.loads(out.stdout)
        return sorted(test["samples_ts"])[len(test["samples_ts"]) // 2]
    return {"pp_tokens_per_s": None if decode_only else one("-p", str(n_prompt), "-n", "0"),
            "tg_tokens_per_s": one("-p", "0", "-n", str(tokens), "-d", str(n_prompt)),
            "n_prompt": n_prompt, "tokens": tokens}


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import funasr_cpp

    info = funasr_cpp.system_info()
    return {"cpu": cpu, "cores": os.cpu_count(), "funasr_cpp": info.funasr_cpp, "llama_cpp": info.llama_cpp,
            "ggml": info.summary,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/funasr-cpp-bench"), help="generated weights and audio")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="results.json, report.md, benchmarks.png")
    ap.add_argument("--tiny", action="store_true", help="smoke run: tiny test weights, short audio, 1 run")
    ap.add_argument("--threads", type=int, nargs="+", default=None)
    ap.add_argument("--seconds", type=float, nargs="+", default=None, help="audio lengths (default 5 10 30 300)")
    ap.add_argument("--runs", type=int, default=None, help="timed runs per configuration (after one warm-up)")
    ap.add_argument("--tokens", type=int, default=None, help="generated tokens per segment (default 64)")
    ap.add_argument("--llama-bench", default=None, help="llama-bench binary (default: build/*/bin/llama-bench)")
    ap.add_argument("--fresh", action="store_true", help="discard earlier results in --out")
    ap.add_argument("--only", choices=["roofline", "llama-bench", "decode-ab", "ours", "torch"], nargs="+", default=None)
    args = ap.parse_args()

    tiny = args.tiny
    args.threads = args.threads or ([1] if tiny else [1, 2])
    args.seconds = [float(x) for x in args.seconds or ([2, 40] if tiny else [5, 10, 30, 300])]
    args.runs = args.runs or (1 if tiny else 5)
    args.tokens = args.tokens or (4 if tiny else 64)
    args.type_seconds = [args.seconds[0]] if tiny else [10.0, 30.0]
    assert all(s in args.seconds for s in args.type_seconds), "--seconds must include 10 and 30"
    args.llm_types = ["q8_0", "q4_k_m"] if tiny else list(workloads.LLM_TYPES)
    args.mmproj_types = ["f16", "q8_0"] if tiny else list(workloads.MMPROJ_TYPES)
    # PyTorch on 5 minutes of audio takes ~2 min a run at 2 threads: only at the most threads
    args.torch_max_seconds = {t: float("inf") if t == max(args.threads) else 30 for t in args.threads}

    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    folder = workloads.release_folder(args.work, full=not tiny)
    ggufs = workloads.gguf_files(folder, args.work / "gguf", args.llm_types, args.mmproj_types)
    audio = workloads.audio_files(args.work, args.seconds)

    from funasr_cpp.audio import load_audio
    from funasr_cpp.vad import split_utterances

    spans = {}
    for s, path in audio.items():
        x = load_audio(path)
        spans[s] = [(0, x.size)] if x.size <= 30 * 16000 else \
            [(int(a), int(b)) for a, b in split_utterances(x, max_seconds=30.0, mode="silence")]

    results_path = args.out / "results.json"
    results = {} if args.fresh or not results_path.is_file() else json.loads(results_path.read_text())
    if results.get("setup", {}).get("tokens", args.tokens) != args.tokens:
        sys.exit(f"{results_path} was measured with --tokens {results['setup']['tokens']}: rerun with that or --fresh")
    results["machine"] = machine()
    results["setup"] = {"runs": results.get("setup", {}).get("runs", args.runs), "tokens": args.tokens, "threads": args.threads, "seconds": args.seconds,
                        "headline": list(HEADLINE), "tiny": tiny,
                        "segments": {f"{s:g}": len(v) for s, v in spans.items()},
                        "llm_bytes": {t: ggufs["llm", t].stat().st_size for t in args.llm_types},
                        "llm_weight_bytes": {t: report.gguf_tensor_bytes(ggufs["llm", t]) for t in args.llm_types},
                        "llm_kv_bytes_per_token": report.kv_bytes_per_token(ggufs["llm", args.llm_types[0]]),
                        "encoder_gflop": {f"{s:g}": workloads.encoder_flops(ggufs["mmproj", args.mmproj_types[0]],
                                                                            workloads.lfr_frames(spans[s][0][1]))
                                          / 1e9 for s in args.seconds if len(spans[s]) == 1}}
    jobs = results.setdefault("jobs", {})
    exe = find_llama_bench(args.llama_bench)
    timeout = 4 * 3600

    for job in plan(args):
        if args.only and job["kind"] not in args.only:
            continue
        k = key(job)
        if k in jobs:
            continue
        t0 = time.perf_counter()
        kind, t = job["kind"], job["threads"]
        if kind == "roofline":
            spec = {"threads": t, "runs": args.runs} | ({"bytes": 1 << 26, "gemm": 256} if tiny else {})
            res = run_measure("roofline", spec, t, timeout)
        elif kind == "llama-bench":
            if exe is None or not exe.is_file():
                log("llama-bench not found (build it: cmake --build build/<tag> --target llama-bench): skipped")
                continue
            ref = jobs.get(key({"kind": "ours", "llm": HEADLINE[0], "mmproj": HEADLINE[1], "threads": max(args.threads),
                                "seconds": args.type_seconds[0]}))
            n_prompt = ref["runs"][0]["n_prompt_tokens"] if ref else 100
            res = llama_bench(exe, ggufs["llm", job["llm"]], t, n_prompt, args.tokens, args.runs)
        elif kind == "decode-ab":
            if exe is None or not exe.is_file():
                continue
            ab = {"ours": [], "llama_bench": []}
            spec = {"llm": str(ggufs["llm", job["llm"]]), "mmproj": str(ggufs["mmproj", HEADLINE[1]]),
                    "audio": str(audio[args.type_seconds[0]]), "threads": t, "tokens": args.tokens, "runs": 1}
            for _ in range(args.runs):
                r = run_measure("ours", spec, t, timeout)["runs"][0]
                ab["ours"].append(r["n_decoded_tokens"] / (r["decode_ms"] / 1000))
                ab["llama_bench"].append(llama_bench(exe, ggufs["llm", job["llm"]], t, r["n_prompt_tokens"],
                                                     args.tokens, 1, decode_only=True)["tg_tokens_per_s"])
            res = ab
        elif kind == "ours":
            spec = {"llm": str(ggufs["llm", job["llm"]]), "mmproj": str(ggufs["mmproj", job["mmproj"]]),
                    "audio": str(audio[job["seconds"]]), "threads": t, "tokens": args.tokens, "runs": args.runs}
            res = run_measure("ours", spec, t, timeout)
        elif tiny:  # smoke run: every torch clip of these threads in one process (one `import funasr`)
            todo = [j for j in plan(args) if j["kind"] == "torch" and j["threads"] == t and key(j) not in jobs]
            spec = {"model_dir": str(folder), "threads": t, "tokens": args.tokens, "runs": args.runs,
                    "clips": [{"audio": str(audio[j["seconds"]]), "spans": spans[j["seconds"]]} for j in todo]}
            assert todo[0] == job
            clips = run_measure("torch", spec, t, timeout)["clips"]
            for j, r in zip(todo[1:], clips[1:]):
                jobs[key(j)] = {**j, **r}
            res = clips[0]
        else:
            spec = {"model_dir": str(folder), "audio": str(audio[job["seconds"]]), "spans": spans[job["seconds"]],
                    "threads": t, "tokens": args.tokens, "runs": args.runs}
            res = run_measure("torch", spec, t, timeout)
        jobs[k] = {**job, **res}
        log(f"{k}: {time.perf_counter() - t0:.0f} s")
        results_path.write_text(json.dumps(results, indent=1))
    results_path.write_text(json.dumps(results, indent=1))
    report.write(results, args.out)
    log(f"wrote {args.out / 'report.md'} and {args.out / 'benchmarks.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
