#!/usr/bin/env python3
"""Which mmproj type runs the encoder fastest, per CPU class, and what each type costs in fidelity:
the table behind ``mmproj_type="auto"`` (funasr_cpp.hub.default_mmproj_type).

    python benchmarks/mmproj_types.py                                   # ~10 min on 2 cores
    python benchmarks/mmproj_types.py --portable /tmp/wheel              # + the AVX2 class (an unpacked portable wheel)
    python benchmarks/mmproj_types.py --tiny --out /tmp/m               # smoke run

CPU classes measured on one machine: "native" (this build as it runs here: AMX where the CPU and
the build have it), "no-extra" (the same build with FUNASR_NO_EXTRA_BUFTS=1: every weight in the
plain CPU buffer, i.e. the AVX-512 kernels of a CPU without AMX), and with --portable, "avx2" (a
portable wheel pinned to its haswell variant: FUNASR_CPU_VARIANT=haswell). Each (class, type)
runs in a fresh process: encoder + adaptor time (Model.transcribe's encode_ms, one warm-up, the
median of --runs) on the 10 s and 30 s clips. Fidelity (native class): the audio rows of each type
against f32's (per-row cosine, largest error). Writes --out/mmproj_types.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import workloads  # noqa: E402
from bench import machine  # noqa: E402
from workloads import log  # noqa: E402

TYPES = ("f32", "f16", "bf16", "q8_0")

# one (class, type) measurement, in its own process: argv[1] = JSON spec, last stdout line = JSON
_TIMING = r"""
import json, statistics, sys
from funasr_cpp import Model, _core
spec = json.loads(sys.argv[1])
opts = dict(max_new_tokens=1, ignore_eos=True, vad=None, ctc_draft=False, repetition_guard=False,
            max_tokens_per_second=None)
out = {"cpu": [b["features"] for b in _core.system_info()["backends"] if b["name"] == "CPU"]}
with Model(spec["llm"], spec["mmproj"], n_threads=spec["threads"], device="cpu") as m:
    for name, audio in spec["audio"].items():
        m.transcribe(audio, **opts)
        out[name] = statistics.median(m.transcribe(audio, **opts).timings.encode_ms for _ in range(spec["runs"]))
print(json.dumps(out))
"""


def timing(cls_env: dict, pythonpath: str | None, spec: dict) -> dict:
    env = dict(os.environ, **cls_env)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, "-c", _TIMING, json.dumps(spec)], capture_output=True, text=True, env=env,
                         timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def fidelity(ggufs: dict, audio: Path, threads: int) -> dict:
    """The audio rows of each type against f32's (this process: the native class). Greedy tokens
    are no measure here: a random-weight LLM's logits are near-tied (the parity tests compare
    tokens on the sharpened test fixture instead)."""
    import numpy as np

    from funasr_cpp import _testing
    from funasr_cpp.audio import load_audio

    ref_enc = _testing.AudioEncoder(str(ggufs["mmproj", "f32"]), n_threads=threads, device="cpu")
    feats = ref_enc.features(load_audio(audio))
    ref = ref_enc.encode(feats)
    res = {}
    for t in TYPES:
        rows = _testing.AudioEncoder(str(ggufs["mmproj", t]), n_threads=threads, device="cpu").encode(feats)
        cos = (rows * ref).sum(-1) / np.linalg.norm(rows, axis=-1) / np.linalg.norm(ref, axis=-1)
        res[t] = {"rows_cos_min": float(cos.min()), "rows_cos_mean": float(cos.mean()),
                  "rows_max_rel": float(np.abs(rows - ref).max() / np.abs(ref).max())}
    return res


def render(res: dict) -> str:
    m = res["machine"]
    lines = [f"Machine: {m['cpu']}, {res['setup']['threads']} threads; {m['date']}; encoder + adaptor ms, "
             f"medians of {res['setup']['runs']} runs after a warm-up; each (class, type) in a fresh process.", "",
             "| CPU class | clip | " + " | ".join(TYPES) + " | fastest |", "|---|---|" + "---|" * len(TYPES) + "---|"]
    for cls, by_type in res["timing"].items():
        for clip in res["setup"]["clips"]:
            ms = {t: by_type[t][clip] for t in TYPES if t in by_type}
            best = min(ms, key=ms.get)
            lines.append(f"| {cls} | {clip} | " + " | ".join(f"{ms[t]:.0f}" if t in ms else "–" for t in TYPES) +
                         f" | **{best}** |")
    if res.get("fidelity"):
        lines += ["", "| type | audio rows (10 s) vs f32: cosine min / mean | max abs error / max abs |",
                  "|---|---|---|"]
        for t, f in res["fidelity"].items():
            lines.append(f"| {t} | {f['rows_cos_min']:.6f} / {f['rows_cos_mean']:.6f} | {f['rows_max_rel']:.2e} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/funasr-cpp-bench"))
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--fidelity-only", action="store_true", help="recompute the fidelity table only")
    ap.add_argument("--portable", type=Path, default=None,
                    help="an unpacked portable wheel (its funasr_cpp/ folder's parent) for the AVX2 class")
    args = ap.parse_args()
    if args.tiny:
        args.runs = 1
    args.out.mkdir(parents=True, exist_ok=True)
    folder = workloads.release_folder(args.work, full=not args.tiny)
    ggufs = workloads.gguf_files(folder, args.work / "gguf", ["q8_0"], list(TYPES))
    audio = workloads.audio_files(args.work, [10, 30])
    clips = {"10 s": str(audio[10]), "30 s": str(audio[30])}
    classes = {"native": ({}, None), "no-extra": ({"FUNASR_NO_EXTRA_BUFTS": "1"}, None)}
    if args.portable:
        classes["avx2"] = ({"FUNASR_CPU_VARIANT": "haswell"}, str(args.portable))
    out = args.out / "mmproj_types.json"
    if args.fidelity_only:
        res = json.loads(out.read_text())
        res["fidelity"] = fidelity(ggufs, audio[10], args.threads)
        out.write_text(json.dumps(res, indent=1))
        (args.out / "mmproj_types.md").write_text(render(res))
        print(render(res))
        return 0
    res = {"machine": machine(), "setup": {"threads": args.threads, "runs": args.runs, "clips": list(clips),
                                           "portable": str(args.portable or "")},
           "timing": {}}
    for t in TYPES:  # types alternate inside each class round, classes alternate inside each type
        for cls, (env, pp) in classes.items():
            log(f"{cls} {t}")
            spec = {"llm": str(ggufs["llm", "q8_0"]), "mmproj": str(ggufs["mmproj", t]), "threads": args.threads,
                    "runs": args.runs, "audio": clips}
            res["timing"].setdefault(cls, {})[t] = timing(env, pp, spec)
    log("fidelity")
    res["fidelity"] = fidelity(ggufs, audio[10], args.threads)
    out.write_text(json.dumps(res, indent=1))
    (args.out / "mmproj_types.md").write_text(render(res))
    print(render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
