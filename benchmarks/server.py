#!/usr/bin/env python3
"""Transcription servers under load: `funasr-cpp serve` vs the stock llama-server on the
same GGUF pair, the 10 s clips at concurrency 1, 4 and 8 (a bounded loop of requests on loopback).

    python benchmarks/server.py                      # real shapes; ~15 min on 2 cores
    python benchmarks/server.py --tiny --out /tmp/s  # smoke run on the tiny test weights

Both servers: 2 threads, 8 parallel sequences, 64 generated tokens per request at most (ours:
--max-new-tokens 64; llama-server: max_tokens=64), greedy. Requests/s and p50/p95 latency from
the client's side. Writes --out/server.json and .md.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workloads  # noqa: E402
from workloads import log  # noqa: E402

TOKENS = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list, url: str, timeout: float = 300) -> subprocess.Popen:
    import httpx

    env = dict(os.environ, PATH=sysconfig.get_path("scripts") + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + timeout
    while True:
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"{cmd[0]} did not start: {proc.stderr.read()[-2000:]!r}")
        time.sleep(0.3)


def distinct_clips(work: Path, n: int) -> list:
    """n different 10 s files (the 10 s speech clip, each with its own faint noise): llama-server
    caches the encoder output and KV of a media chunk it has seen, so no request may repeat one."""
    import numpy as np
    import soundfile as sf

    from fixtures.speech import write_wav16k

    base = sf.read(str(workloads.audio_files(work, [10])[10]), dtype="float32")[0]
    out = []
    for i in range(n):
        path = work / f"server-clip-{i}.wav"
        if not path.is_file():
            noise = 1e-3 * np.random.default_rng(i).standard_normal(len(base)).astype(np.float32)
            write_wav16k(path, base + noise)
        out.append(path)
    return out


def load(url: str, clips: list, first: int, concurrency: int, n: int, extra: dict) -> dict:
    import httpx

    def one(i: int) -> float:
        path = clips[first + i] if i >= 0 else clips[-1]
        t0 = time.perf_counter()
        with open(path, "rb") as f:
            r = httpx.post(url + "/v1/audio/transcriptions", files={"file": (path.name, f, "audio/wav")},
                           data={"model": "fun-asr-nano", **extra}, timeout=600)
        r.raise_for_status()
        return time.perf_counter() - t0

    one(-1)  # warm-up, on a clip no measured request sends
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        lat = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    lat.sort()
    return {"concurrency": concurrency, "requests": n, "wall_s": wall, "req_per_s": n / wall,
            "p50_s": statistics.median(lat), "p95_s": lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "funasr-cpp-bench")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--requests", type=int, default=16, help="requests per concurrency level (default 16)")
    args = ap.parse_args()
    from bench import machine

    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    folder = workloads.release_folder(args.work, full=not args.tiny)
    files = workloads.gguf_files(folder, args.work / "gguf", ["q8_0"], ["f16"])
    llm, mmproj = files["llm", "q8_0"], files["mmproj", "f16"]
    n_low = max(4, args.requests // 4)
    levels = [(1, n_low), (4, args.requests), (8, args.requests)]
    clips = distinct_clips(args.work, sum(n for _, n in levels) + 1)
    res = {"machine": machine(), "setup": f"{'tiny' if args.tiny else 'real-shape'} model, q8_0 LLM, f16 mmproj, "
                                          f"2 threads, 8 parallel sequences, at most {TOKENS} tokens per request",
           "servers": {}}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    servers = {
        "funasr-cpp serve": ([sys.executable, "-m", "funasr_cpp.cli", "serve", "--llm", str(llm), "--mmproj", str(mmproj),
                              "--port", str(port), "--threads", "2", "--parallel", "8", "--max-concurrency", "8",
                              "--max-new-tokens", str(TOKENS)], {"response_format": "json"}),
        "llama-server (stock, patched prompt)": ([shutil.which("llama-server", path=sysconfig.get_path("scripts")) or
                                                  "llama-server", "-m", str(llm), "--mmproj", str(mmproj),
                                                  "--host", "127.0.0.1", "--port", str(port), "-t", "2", "-np", "8",
                                                  "-c", str(8 * 1024), "--jinja", "--no-warmup"],
                                                 {"max_tokens": str(TOKENS), "temperature": "0"}),
    }
    for name, (cmd, extra) in servers.items():
        log(f"{name}: starting")
        proc = start(cmd, url)
        try:
            res["servers"][name], first = [], 0
            for c, n in levels:  # each level on clips no request sent before
                res["servers"][name].append(load(url, clips, first, c, n, extra))
                first += n
            for r in res["servers"][name]:
                log(f"  c={r['concurrency']}: {r['req_per_s']:.2f} req/s, p50 {r['p50_s']:.2f} s, p95 {r['p95_s']:.2f} s")
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    (args.out / "server.json").write_text(json.dumps(res, indent=1))
    m = res["machine"]
    lines = [f"CPU: {m['cpu']}, {m['cores']} cores; ggml: {m['ggml']}", f"{res['setup']}", "",
             "| server | concurrency | requests | req/s | p50 s | p95 s |", "|---|---|---|---|---|---|"]
    for name, rows in res["servers"].items():
        for r in rows:
            lines.append(f"| {name} | {r['concurrency']} | {r['requests']} | {r['req_per_s']:.2f} | {r['p50_s']:.2f} | "
                         f"{r['p95_s']:.2f} |")
    (args.out / "server.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
