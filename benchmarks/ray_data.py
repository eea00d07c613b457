"""A corpus on Ray Data vs one process: audio hours per wall hour on this machine.

    python benchmarks/ray_data.py [--files 16] [--rounds 2] [--quick]

The same files (10 s speech clips of the benchmark track), the same model (real-shape random
weights, q8_0 LLM, f16 mmproj) and fixed work (64 generated tokens per file, end of turn ignored):
  - one process: Model(n_threads=2).transcribe_batch(files) (the batched engine, 8 at a time);
  - Ray Data: funasr_cpp.ray.transcribe_corpus on a local Ray of 2 CPUs with 1 actor x 2 threads,
    and with 2 actors x 1 thread (batches of 8 files), into a fresh Parquet folder.
Each configuration runs in a fresh process, the order alternating between rounds; the wall time
counts from the start of the job (model load included, Ray's own start-up not; given apart).
Results: results/ray_data.json and a Markdown table on stdout (BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import workloads  # noqa: E402
from workloads import log  # noqa: E402

FIXED = {"max_new_tokens": 64, "ignore_eos": True, "repetition_guard": False, "max_tokens_per_second": None,
         "ctc_draft": False}


def texts_digest(texts) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]


def child_single(spec: dict) -> dict:
    from funasr_cpp import Model, TranscribeOptions

    t0 = time.perf_counter()
    with Model(spec["llm"], spec["mmproj"], n_threads=spec["threads"]) as m:
        rs = m.transcribe_batch(spec["files"], TranscribeOptions(**FIXED))
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "audio_s": sum(r.duration for r in rs), "digest": texts_digest(r.text for r in rs)}


def child_ray(spec: dict) -> dict:
    import ray

    from funasr_cpp import TranscribeOptions
    from funasr_cpp.ray import read_output, transcribe_corpus

    t0 = time.perf_counter()
    ray.init(num_cpus=spec["threads"], include_dashboard=False, log_to_driver=False)
    start_s = time.perf_counter() - t0
    out = Path(tempfile.mkdtemp()) / "out.parquet"
    try:
        t0 = time.perf_counter()
        rep = transcribe_corpus(spec["files"], out, llm=spec["llm"], mmproj=spec["mmproj"],
                                options=TranscribeOptions(**FIXED), actors=spec["actors"],
                                cpus_per_actor=spec["cpus"], batch_size=spec["batch"], progress=False)
        wall = time.perf_counter() - t0
        rows = {r["path"]: r for r in read_output(out).to_pylist()}
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
        ray.shutdown()
    assert rep.done == len(spec["files"]) and rep.failed == 0
    return {"wall_s": wall, "ray_start_s": start_s, "audio_s": sum(r["duration"] for r in rows.values()),
            "digest": texts_digest(rows[os.path.abspath(f)]["text"] for f in spec["files"])}


CHILDREN = {"single": child_single, "ray": child_ray}


def run_child(kind: str, spec: dict) -> dict:
    return workloads.run_json([sys.executable, __file__, "--child", kind, json.dumps(spec)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "funasr-cpp-bench")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny model, 6 files, 1 round (smoke test)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child[0]](json.loads(args.child[1]))))
        return 0

    from bench import machine

    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    folder = workloads.release_folder(args.work, full=not args.quick)
    gg = workloads.gguf_files(folder, args.work / "gguf", ["q8_0"], ["f16"])
    n = 6 if args.quick else args.files
    track = workloads.audio_files(args.work, [10 * n])[10 * n]
    import soundfile as sf

    x, sr = sf.read(track, dtype="float32")
    clip_dir = args.work / f"ray-clips-{n}"
    clip_dir.mkdir(exist_ok=True)
    files = []
    for i in range(n):  # consecutive 10 s pieces of the track: different speech per file
        f = clip_dir / f"clip-{i:03d}.wav"
        if not f.is_file():
            workloads.write_wav16k(f, x[i * 10 * sr:(i + 1) * 10 * sr])
        files.append(str(f))
    base = {"llm": str(gg["llm", "q8_0"]), "mmproj": str(gg["mmproj", "f16"]), "files": files, "threads": 2,
            "batch": 8}
    configs = {"one process, transcribe_batch, 2 threads": ("single", base),
               "Ray Data, 1 actor x 2 threads": ("ray", {**base, "actors": 1, "cpus": 2}),
               "Ray Data, 2 actors x 1 thread": ("ray", {**base, "actors": 2, "cpus": 1})}
    results = {name: [] for name in configs}
    names = list(configs)
    for rnd in range(1 if args.quick else args.rounds):
        for name in (names if rnd % 2 == 0 else names[::-1]):
            log(f"round {rnd + 1}: {name}")
            kind, spec = configs[name]
            results[name].append(run_child(kind, spec))
    digests = {r["digest"] for rs in results.values() for r in rs}
    rows = []
    for name in names:
        wall = statistics.median(r["wall_s"] for r in results[name])
        audio = results[name][0]["audio_s"]
        actors = configs[name][1].get("actors", 1)
        rows.append({"config": name, "wall_s": wall, "audio_s": audio, "audio_h_per_h": audio / wall,
                     "per_actor_audio_h_per_h": audio / wall / actors,
                     "ray_start_s": statistics.median(r.get("ray_start_s", 0.0) for r in results[name])})
    for r in rows:
        r["overhead_vs_one_process"] = r["wall_s"] / rows[0]["wall_s"] - 1.0
    res = {"machine": machine(), "setup": f"{'tiny' if args.quick else 'real-shape'} random-weight model, q8_0 LLM, "
           f"f16 mmproj, {n} files of 10 s, 64 tokens each (end of turn ignored), local Ray of 2 CPUs, batches of 8, "
           f"medians of {1 if args.quick else args.rounds} alternating rounds", "rows": rows,
           "same_texts_everywhere": len(digests) == 1}
    (args.out / ("ray_data-quick.json" if args.quick else "ray_data.json")).write_text(json.dumps(res, indent=1) + "\n")
    print("| configuration | wall | audio h / wall h | per actor | vs one process | Ray start-up |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['wall_s']:.1f} s | {r['audio_h_per_h']:.1f} | {r['per_actor_audio_h_per_h']:.1f} | "
              f"{100 * r['overhead_vs_one_process']:+.1f} % | {r['ray_start_s']:.1f} s |")
    print(f"\nsame texts in every configuration: {res['same_texts_everywhere']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
