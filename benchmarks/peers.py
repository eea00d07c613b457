#!/usr/bin/env python3
"""funasr-cpp side by side with two peer runtimes of Fun-ASR-Nano, same weights, same audio.

    bash benchmarks/peers_build.sh PEERS_DIR FUNASR_GIT_DIR TRANSCRIBE_GIT_DIR   # once (~25 min on 2 cores)
    python benchmarks/peers.py --peers PEERS_DIR                                 # on a quiet machine
    python benchmarks/peers.py --peers PEERS_DIR --runs 1 --warmup 0 --clips 10   # smoke

Every configuration runs in fresh processes; each timed quantity is the median of --runs runs
after --warmup (1) untimed ones. The funasr peer's token counts are cached in
PEERS_DIR/token-counts.json (delete it after changing weights or audio). Results: one JSON
object per configuration in --out (JSON list) and a table on stdout.

Peers (what was found, issue 29 part 5)
---------------------------------------
1. "funasr": the official llama.cpp runtime, modelscope/FunASR `runtime/llama.cpp`, snapshot
   3c58cb56a56598232c3efffa15d313d7e82a4307 (2026-08-21). Binaries `llama-funasr-cli` (end to
   end) and `llama-funasr-encoder` (encoder + adaptor only, from an LFR fbank file).
   - Build: its standalone CMakeLists fetches llama.cpp 803b7fcae893e9caaee3921779628fef83ac0965;
     that snapshot could not be brought here (the llama.cpp snapshot is 1.4 GB), so
     peers_build.sh points FETCHCONTENT_SOURCE_DIR_LLAMA at a clean (unpatched) llama.cpp b11312
     unpacked from the same verified llama-cpp-python 0.3.36 sdist our own build uses: the peer
     and we run the same llama.cpp (we add our patches, it runs it clean). Release,
     GGML_NATIVE=ON, GCC 12, plus -mno-amx-tile/-int8/-bf16 where -march=native targets AMX
     (both peers; PEERS_AMX=1 to keep it): their unpatched ggml AMX kernels, as GCC builds
     them, crash here (llama-funasr-cli: SIGSEGV in ggml_backend_amx_mul_mat on the q8_0 LLM).
     If our build uses AMX (patch 0008), the peers run AVX-512 kernels where we run AMX.
   - Exporter: `fun-asr-nano/export_encoder_gguf.py --model_pt model.pt --out enc.gguf
     --wtype f16` (f32 | f16 | q8_0) for the encoder + adaptor. The LLM half is documented as
     "a standard Qwen3 GGUF" (llama.cpp's convert_hf_to_gguf.py on an HF Qwen3 folder; the
     release keeps the LLM weights inside model.pt, so there is no HF folder to convert):
     we hand it OUR LLM GGUF (same file as ours, q8_0 by default), which it loads unchanged.
   - Cannot set threads: the encoder graph runs on 8 threads (hard-coded), the LLM on
     llama.cpp's default (4); with 2 cores that is oversubscribed (OpenMP build). Capping with
     OMP_THREAD_LIMIT=2 is NOT a fix: ggml then keeps the 8-thread plan and the encoder takes
     18 s instead of 1.3 s (10 s clip, measured once while a build ran). So it runs as shipped;
     --peer-omp-limit N sets OMP_THREAD_LIMIT anyway.
   - Cannot fix the token count: `-n N` caps it but end-of-turn stops earlier, and it reports
     nothing but `[done] X s` (wall time from after the audio load: model load + fbank +
     encoder + prefill + decode). Measured here: the encoder from llama-funasr-encoder
     ("in X s", 10 ms resolution, encoder + adaptor compute only); decode as
     (done(-n T) - done(-n 0)) over the tokens actually generated, which are found once per
     clip by bisection on -n (untimed: the printed text grows with every token).
2. "transcribe": handy-computer/transcribe.cpp, snapshot ea077b87590bcfb090d7c38c03ab36cd1c7005d3
   (2026-08-20), family funasr_nano. ggml vendored (ggml-org/ggml 8c63e709 + its threadpool
   patch); built with -DGGML_NATIVE=ON (its default), its defaults otherwise (no OpenMP: ggml
   threadpool; GGML_LLAMAFILE forced ON by its CMakeLists; configure says "no BLAS found -
   decoder uses scalar fallback": a host decoder of other families, not on this path), same
   AMX flags as above. Targets transcribe-cli, transcribe-quantize.
   - Exporter: `scripts/convert-funasr_nano.py RELEASE_DIR OUT-BF16.gguf --variant
     fun-asr-nano-2512` (reads model.pt + Qwen3-0.6B/ tokenizer; one GGUF: encoder, adaptor and
     LLM, BF16 matrices, F32 norms), then `transcribe-quantize IN OUT --quant Q8_0`.
     Needs torch, gguf, numpy, pyyaml (our venv has them); funasr optional. Its Q8_0 preset
     quantizes the encoder and adaptor matrices too (490 tensors q8_0, 844 MB), where ours
     keeps the mmproj in f16 (--mmproj-type) and the funasr peer's encoder is f16: the
     transcribe.cpp encoder numbers are for a q8_0 encoder (--transcribe-type BF16 for the
     unquantized file; TRANSCRIBE_QUANTS="Q8_0 F16" in peers_build.sh for an all-F16 one).
   - `--threads N` works. Token count cannot be fixed: 256 (compile-time k_max_new) or
     end-of-turn. Reports `timings: load= mel= encode= decode=` (ms): encode = encoder only
     (the adaptor is in neither encode nor decode), decode = prefill + all decode steps.
     Tokens generated: exact when it hits the 256 budget ("output truncated at N tokens",
     exit 1, text kept); otherwise estimated by re-tokenizing its text with the release's
     tokenizer.json (`tokens_estimated: true`). transcribe-bench would give in-process
     medians but gives up on a truncated run, and its token ids are empty for this family
     (funasr_nano never fills the session's token list).
Ours: in process, Model.transcribe(ignore_eos=True, max_new_tokens=--tokens, vad=None,
ctc_draft=False, repetition_guard=False, max_tokens_per_second=None): encode (encoder+adaptor),
prefill and decode tok/s at exactly --tokens tokens; whole process: funasr-transcribe (the C++
example) with -t --threads -n --tokens --tokens (prints the token ids: exact count; it stops at
end-of-turn like the peers).

Random weights stop at end-of-turn after a data-dependent number of tokens (ours: 37 on the
10 s clip with -n 64), so whole-process numbers of the three are at different token counts:
compare the per-token rates and the reported token counts, not the walls alone.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def run_timed(argv, env=None) -> dict:
    """One process: wall seconds, exit code, stdout/stderr text and the child's own peak RSS (MB,
    from wait4: RUSAGE_CHILDREN would be a high-water mark over all children)."""
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        t0 = time.perf_counter()
        p = subprocess.Popen([str(a) for a in argv], stdout=fo, stderr=fe, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read(), fe.read()
    return {"wall_s": wall, "rc": p.returncode, "out": out.decode("utf-8", "replace"),
            "err": err.decode("utf-8", "replace"), "raw_out": out, "rss_mb": ru.ru_maxrss / 1024.0}


WARMUP = 1


def repeat(fn, runs: int) -> list:
    for _ in range(WARMUP):  # warm-up (page cache, CPU frequency)
        fn()
    return [fn() for _ in range(runs)]


# ---------------------------------------------------------------------------------------------- ours
def ours_inprocess(spec: dict) -> dict:
    """Fresh process: Model load once, one warm-up, `runs` transcriptions of exactly `tokens` tokens."""
    from funasr_cpp import Model

    m = Model(spec["llm"], spec["mmproj"], n_threads=spec["threads"])
    o = dict(max_tokens_per_second=None, repetition_guard=False, ignore_eos=True, ctc_draft=False,
             max_new_tokens=spec["tokens"], vad=None)
    for _ in range(spec.get("warmup", 1)):
        m.transcribe(spec["audio"], **o)
    rows = []
    for _ in range(spec["runs"]):
        t = m.transcribe(spec["audio"], **o).timings
        rows.append({"frontend_ms": t.frontend_ms, "encode_ms": t.encode_ms, "prefill_ms": t.prefill_ms,
                     "decode_ms": t.decode_ms, "tok_s": t.tokens_per_s, "tokens": t.n_generated_tokens,
                     "prompt_tokens": t.n_prompt_tokens, "total_ms": t.total_ms})
    return {k: median([r[k] for r in rows]) for k in rows[0]}


def measure_ours(a, clip: Path, llm: Path, mmproj: Path) -> dict:
    spec = {"llm": str(llm), "mmproj": str(mmproj), "audio": str(clip), "threads": a.threads,
            "tokens": a.tokens, "runs": a.runs, "warmup": WARMUP}
    out = subprocess.run([sys.executable, __file__, "_ours", json.dumps(spec)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"ours in-process failed:\n{out.stderr[-3000:]}")
    inproc = json.loads(out.stdout.strip().splitlines()[-1])

    exe = REPO / "python" / "funasr_cpp" / "lib" / "funasr-transcribe"
    argv = [exe, "-m", llm, "--mmproj", mmproj, "-t", a.threads, "-n", a.tokens, "--tokens", clip]

    def one():
        r = run_timed(argv)
        if r["rc"] != 0:
            raise RuntimeError(f"funasr-transcribe failed (exit {r['rc']}):\n{r['err'][-3000:]}")
        lines = [ln for ln in r["out"].splitlines() if ln.strip()]
        ids = lines[-1].split() if lines and re.fullmatch(r"[\d ]+", lines[-1].strip()) else []
        return r["wall_s"], len(ids), r["rss_mb"]

    rs = repeat(one, a.runs)
    return {"runtime": "ours", "clip": clip.name,
            "encode_ms": inproc["encode_ms"], "encode_includes": "encoder+adaptor",
            "prefill_ms": inproc["prefill_ms"], "decode_tok_s": inproc["tok_s"],
            "decode_tokens": inproc["tokens"], "tokens_fixed": True,
            "frontend_ms": inproc["frontend_ms"], "prompt_tokens": inproc["prompt_tokens"],
            "process_wall_s": median([w for w, _, _ in rs]), "process_tokens": rs[0][1],
            "process_rss_mb": max(m for _, _, m in rs),
            "process_tokens_exact": True, "process_cmd": " ".join(map(str, argv))}


# ------------------------------------------------------------------------------ peer: FunASR llama.cpp
def lfr_fbank_file(clip: Path, path: Path) -> int:
    """The input llama-funasr-encoder reads: int32 T, int32 560, float32 [T x 560] LFR (7/6) of an
    80-bin log-mel fbank (25 ms hamming / 10 ms, as the peer computes it; only the shape matters for
    timing). Returns T."""
    import wave

    import numpy as np

    with wave.open(str(clip)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32)
    n = 1 + (len(x) - 400) // 160
    idx = np.arange(400)[None, :] + 160 * np.arange(n)[:, None]
    fr = x[idx]
    fr = fr - fr.mean(1, keepdims=True)
    fr[:, 1:] -= 0.97 * fr[:, :-1]
    fr[:, 0] -= 0.97 * fr[:, 0]
    fr *= np.hamming(400)[None, :].astype(np.float32)
    pw = np.abs(np.fft.rfft(fr, 512)) ** 2
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    edges = np.linspace(mel(20.0), mel(8000.0), 82)
    mf = mel(np.arange(257) * 16000 / 512)
    fb = np.zeros((80, 257), np.float32)
    for m in range(80):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        fb[m] = np.clip(np.minimum((mf - lo) / (c - lo), (hi - mf) / (hi - c)), 0, None)
    feat = np.log(np.maximum(pw @ fb.T, 1.1920929e-07)).astype(np.float32)
    t_lfr = -(-n // 6)
    pad = np.concatenate([np.repeat(feat[:1], 3, 0), feat,
                          np.repeat(feat[-1:], max(0, (t_lfr - 1) * 6 + 7 - n - 3), 0)])
    lfr = np.stack([pad[i * 6:i * 6 + 7].reshape(-1) for i in range(t_lfr)]).astype(np.float32)
    with open(path, "wb") as f:
        np.array([t_lfr, lfr.shape[1]], np.int32).tofile(f)
        lfr.tofile(f)
    return t_lfr


def measure_funasr(a, clip: Path, llm: Path, peers: Path, cache: dict) -> dict:
    bindir = peers / "build-funasr" / "bin"
    enc = peers / "models" / f"funasr-encoder-random-{a.funasr_enc_type}.gguf"
    env = dict(os.environ)
    if a.peer_omp_limit:
        env["OMP_THREAD_LIMIT"] = str(a.peer_omp_limit)
    tmp = Path(tempfile.mkdtemp(prefix="peers-"))
    fbank = tmp / "fbank.bin"
    t_lfr = lfr_fbank_file(clip, fbank)

    def enc_once():
        r = run_timed([bindir / "llama-funasr-encoder", "-m", enc, "-f", fbank, "-o", tmp / "out.bin"], env=env)
        m = re.search(r"in ([\d.]+) s \(layers run=(\d+), adaptor=(\d)\)", r["err"])
        if r["rc"] != 0 or not m:
            raise RuntimeError(f"llama-funasr-encoder failed (exit {r['rc']}):\n{r['err'][-3000:]}")
        return float(m.group(1)) * 1000.0

    def cli(n):
        argv = [bindir / "llama-funasr-cli", "--enc", enc, "-m", llm, "-a", clip, "-n", n]
        r = run_timed(argv, env=env)
        m = re.search(r"\[done\] ([\d.]+)s", r["err"])
        if r["rc"] != 0 or not m:
            raise RuntimeError(f"llama-funasr-cli failed (exit {r['rc']}):\n{r['err'][-3000:]}")
        return {"wall_s": r["wall_s"], "done_s": float(m.group(1)), "text": r["raw_out"].rstrip(b"\n"),
                "rss_mb": r["rss_mb"],
                "cmd": " ".join(map(str, argv))}

    # tokens actually generated with -n tokens: smallest n whose text is as long as -n tokens' text
    key = f"funasr:{clip.name}:{a.tokens}"
    if key not in cache:
        full = len(cli(a.tokens)["text"])
        lo, hi = 0, a.tokens
        while lo < hi:
            mid = (lo + hi) // 2
            if len(cli(mid)["text"]) >= full:
                hi = mid
            else:
                lo = mid + 1
        cache[key] = lo
    n_tok = cache[key]

    enc_ms = median(repeat(enc_once, a.runs))
    r_n = repeat(lambda: cli(a.tokens), a.runs)
    r_0 = repeat(lambda: cli(0), a.runs)
    d_n, d_0 = median([r["done_s"] for r in r_n]), median([r["done_s"] for r in r_0])
    dec_s = d_n - d_0
    return {"runtime": "funasr-llama.cpp", "clip": clip.name, "lfr_frames": t_lfr,
            "encode_ms": enc_ms, "encode_includes": "encoder+adaptor (llama-funasr-encoder compute)",
            "prefill_ms": None, "decode_tok_s": (n_tok / dec_s) if n_tok and dec_s > 0 else None,
            "decode_tokens": n_tok, "tokens_fixed": n_tok == a.tokens,
            "decode_method": "(done(-n T) - done(-n 0)) / tokens generated",
            "done_s_n": d_n, "done_s_0": d_0,
            "process_wall_s": median([r["wall_s"] for r in r_n]), "process_tokens": n_tok,
            "process_tokens_exact": True, "process_rss_mb": max(r["rss_mb"] for r in r_n),
            "process_wall_s_n0": median([r["wall_s"] for r in r_0]),
            "threads": "as shipped (enc 8 / llm 4)" + (f", OMP_THREAD_LIMIT={a.peer_omp_limit}"
                                                        if a.peer_omp_limit else ""),
            "process_cmd": r_n[0]["cmd"]}


# --------------------------------------------------------------------------- peer: transcribe.cpp
def estimate_tokens(text: str, release: Path):
    """Tokens in `text` by the release's tokenizer.json. The text is decoded with errors="replace":
    each U+FFFD stands for invalid bytes (pieces of a multi-byte character), counted as one token."""
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(release / "Qwen3-0.6B" / "tokenizer.json"))
        return len(tok.encode(text.replace("\ufffd", ""), add_special_tokens=False).ids) + text.count("\ufffd")
    except Exception:  # noqa: BLE001
        return None


def measure_transcribe(a, clip: Path, peers: Path, release: Path) -> dict:
    exe = peers / "build-transcribe" / "bin" / "transcribe-cli"
    model = peers / "models" / f"transcribe-fun-asr-nano-random-{a.transcribe_type}.gguf"
    argv = [exe, "-m", model, "--threads", a.threads, clip]

    def one():
        r = run_timed(argv)
        m = re.search(r"timings: load=([\d.]+) ms\s+mel=([\d.]+) ms\s+encode=([\d.]+) ms\s+decode=([\d.]+) ms",
                      r["out"] + r["err"])
        if not m or "run: " not in r["out"]:
            raise RuntimeError(f"transcribe-cli failed (exit {r['rc']}):\n{r['err'][-3000:]}{r['out'][-2000:]}")
        trunc = re.search(r"output truncated at (\d+) tokens", r["out"] + r["err"])
        text = re.search(r"^text: (.*)$", r["out"], re.M)
        return {"wall_s": r["wall_s"], "rss_mb": r["rss_mb"], "load_ms": float(m.group(1)), "mel_ms": float(m.group(2)),
                "encode_ms": float(m.group(3)), "decode_ms": float(m.group(4)),
                "tokens": int(trunc.group(1)) if trunc else None, "text": text.group(1) if text else ""}

    rs = repeat(one, a.runs)
    n_tok, exact = rs[0]["tokens"], True
    if n_tok is None:
        n_tok, exact = estimate_tokens(rs[0]["text"], release), False
    dec_ms = median([r["decode_ms"] for r in rs])
    return {"runtime": "transcribe.cpp", "clip": clip.name,
            "encode_ms": median([r["encode_ms"] for r in rs]), "encode_includes": "encoder only (no adaptor)",
            "mel_ms": median([r["mel_ms"] for r in rs]), "load_ms": median([r["load_ms"] for r in rs]),
            "prefill_ms": None, "decode_ms_incl_prefill": dec_ms,
            "decode_tok_s": (n_tok / (dec_ms / 1000.0)) if n_tok and dec_ms else None,
            "decode_method": "tokens / decode_ms (its decode_ms includes the prefill)",
            "decode_tokens": n_tok, "tokens_fixed": False, "tokens_estimated": not exact,
            "process_wall_s": median([r["wall_s"] for r in rs]), "process_tokens": n_tok,
            "process_tokens_exact": exact, "process_rss_mb": max(r["rss_mb"] for r in rs),
            "threads": a.threads,
            "process_cmd": " ".join(map(str, argv))}


# ------------------------------------------------------------------------------------------- main
def chart(rows, path: Path) -> None:
    """Encoder time and decode speed per runtime and clip, side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if not r.get("error")]
    clips = sorted({r["clip"] for r in ok})
    names = list(dict.fromkeys(r["runtime"] for r in ok))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], "encode_ms", "encoder (+ adaptor where timed) ms, lower is better"),
                           (axes[1], "decode_tok_s", "decode tokens/s, higher is better")):
        width = 0.8 / max(len(names), 1)
        for i, n in enumerate(names):
            vals = [next((r.get(key) or 0 for r in ok if r["runtime"] == n and r["clip"] == c), 0) for c in clips]
            ax.bar([j + i * width for j in range(len(clips))], vals, width, label=n)
        ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(clips))], clips)
        ax.set_title(label, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(rows) -> str:
    f = lambda v, p=1: "-" if v is None else (f"{v:.{p}f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = [f"{'runtime':18} {'clip':16} {'encode ms':>10} {'prefill ms':>10} {'tok/s':>7} {'tokens':>7} "
             f"{'wall s':>7} {'wall tok':>8}"]
    for r in rows:
        lines.append(f"{r['runtime']:18} {r['clip']:16} {f(r['encode_ms']):>10} {f(r.get('prefill_ms')):>10} "
                     f"{f(r.get('decode_tok_s'), 2):>7} {f(r.get('decode_tokens')):>7} "
                     f"{f(r['process_wall_s'], 2):>7} {f(r.get('process_tokens')):>8}")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_ours":
        print(json.dumps(ours_inprocess(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers", type=Path, required=True, help="folder peers_build.sh built into")
    ap.add_argument("--work", type=Path, default=Path("/tmp/funasr-cpp-bench"),
                    help="fun-asr-nano-random/, gguf/, speech-*s.wav (benchmarks/workloads.py)")
    ap.add_argument("--clips", default="10,30", help="seconds, comma-separated (speech-<s>s.wav)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed ones")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--llm-type", default="q8_0", help="our LLM GGUF (also the funasr peer's LLM)")
    ap.add_argument("--mmproj-type", default="f16", help="our mmproj GGUF")
    ap.add_argument("--funasr-enc-type", default="f16", help="the funasr peer's encoder GGUF (f32|f16|q8_0)")
    ap.add_argument("--transcribe-type", default="Q8_0", help="transcribe.cpp GGUF (BF16|Q8_0|...)")
    ap.add_argument("--peer-omp-limit", type=int, default=0,
                    help="OMP_THREAD_LIMIT for the funasr peer (default: unset; it asks for 8 encoder / 4 LLM "
                         "threads, and a limit below that makes ggml far slower, see above)")
    ap.add_argument("--only", default="ours,funasr,transcribe")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "peers.json")
    a = ap.parse_args()
    global WARMUP
    WARMUP = a.warmup

    gg = a.work / "gguf"
    llm = gg / f"fun-asr-nano-random-{a.llm_type}.gguf"
    mmproj = gg / f"mmproj-fun-asr-nano-random-{a.mmproj_type}.gguf"
    release = a.work / "fun-asr-nano-random"
    which = set(a.only.split(","))
    cache_path = a.peers / "token-counts.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    rows = []
    for s in [float(x) for x in a.clips.split(",")]:
        clip = a.work / f"speech-{s:g}s.wav"
        for name, fn in (("ours", lambda: measure_ours(a, clip, llm, mmproj)),
                         ("funasr", lambda: measure_funasr(a, clip, llm, a.peers, cache)),
                         ("transcribe", lambda: measure_transcribe(a, clip, a.peers, release))):
            if name not in which:
                continue
            log(f"[peers] {name} {clip.name}")
            try:
                row = fn()
            except Exception as e:  # noqa: BLE001 - a failing peer is reported, the others still run
                row = {"runtime": name, "clip": clip.name, "error": str(e)[-2000:], "encode_ms": None,
                       "process_wall_s": None}
            row.update(threads_requested=a.threads, runs=a.runs, tokens_requested=a.tokens)
            rows.append(row)
            cache_path.write_text(json.dumps(cache, indent=1))
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(json.dumps(rows, indent=1, ensure_ascii=False))
            log(json.dumps(row, ensure_ascii=False))
    print(table(rows))
    chart(rows, a.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
