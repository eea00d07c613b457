"""One measurement in a fresh process (so peak RSS and thread settings belong to it alone).

    python benchmarks/measure.py KIND '{"threads": 2, ...}'   ->  one JSON line on stdout

KIND: roofline (memory bandwidth, f32 GEMM), ours (funasr-cpp transcribe), torch (upstream
funasr AutoModel). Every run generates exactly `tokens` tokens per segment (end-of-turn ignored).
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time

import numpy as np


def peak_rss_mb() -> float:
    """This process's own memory high-water mark (VmHWM). Not ru_maxrss: on Linux that is inherited
    across fork/exec, so a child of a big parent reports the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def best_of(fn, runs: int) -> float:
    """The fastest of `runs` timed calls after a warm-up: a roofline is what the machine can do."""
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


# ---------------------------------------------------------------------------------------------
def roofline(spec: dict) -> dict:
    """Read and copy bandwidth over 1 GiB (numpy kernels release the GIL: one Python thread per
    core), and f32 GEMM GFLOP/s (torch.mm, 2048^3, MKL) at `threads` threads; best of 2 x runs."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    n = spec["threads"]
    torch.set_num_threads(n)
    a = np.ones(spec.get("bytes", 1 << 30) // 4, np.float32)
    b = np.empty_like(a)
    parts = np.array_split(np.arange(a.size), n)
    spans = [(int(p[0]), int(p[-1]) + 1) for p in parts]
    pool = ThreadPoolExecutor(n)

    def read():
        list(pool.map(lambda s: np.add.reduce(a[s[0]:s[1]]), spans))

    def copy():
        list(pool.map(lambda s: np.copyto(b[s[0]:s[1]], a[s[0]:s[1]]), spans))

    runs = 2 * spec.get("runs", 5)
    t_read = best_of(read, runs)
    t_copy = best_of(copy, runs)
    m = spec.get("gemm", 2048)
    x, y = torch.randn(m, m), torch.randn(m, m)
    t_mm = best_of(lambda: torch.mm(x, y), runs)
    return {"threads": n, "read_gbps": a.nbytes / t_read / 1e9, "copy_gbps": 2 * a.nbytes / t_copy / 1e9,
            "gemm_gflops": 2.0 * m ** 3 / t_mm / 1e9}


# ---------------------------------------------------------------------------------------------
def ours(spec: dict) -> dict:
    """funasr-cpp: Model load (median of `runs` warm loads) and Model.transcribe on the wav file."""
    from funasr_cpp import Model

    kwargs = {"n_threads": spec["threads"]}
    loads = []
    for _ in range(spec["runs"] + 1):  # the first load warms the page cache
        m = Model(spec["llm"], spec["mmproj"], **kwargs)
        loads.append(m.load_ms)
        m.close()
    model = Model(spec["llm"], spec["mmproj"], **kwargs)
    opts = dict(_FIXED, max_new_tokens=spec["tokens"])  # like upstream's runs below: no CTC head
    model.transcribe(spec["audio"], **opts)  # warm-up
    runs = []
    for _ in range(spec["runs"]):
        r = model.transcribe(spec["audio"], **opts)
        runs.append({**r.timings.to_dict(), "segments": len(r.segments)})
    return {"load_ms": statistics.median(loads[1:]), "runs": runs, "duration_s": r.duration,
            "peak_rss_mb": peak_rss_mb()}


# ---------------------------------------------------------------------------------------------
class _Timer:
    def __init__(self):
        self.ms = 0.0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.ms += (time.perf_counter() - t0) * 1000.0
        return timed


def torch_(spec: dict) -> dict:
    """Upstream funasr AutoModel (fp32, CPU): model.generate per segment with the same segment
    spans as ours, max_length=min_new_tokens=`tokens`. Stage times from wrapped upstream calls.
    spec["clips"] (bench.py --tiny only): several {"audio", "spans"} measured with one loaded
    model, -> {"clips": [result, ...]}; it saves upstream's 12 s `import funasr` per clip."""
    import soundfile as sf
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    torch.set_num_threads(spec["threads"])
    import funasr.models.fun_asr_nano.model  # noqa: F401  (registers FunASRNano)
    from funasr import AutoModel
    from funasr.frontends.wav_frontend import WavFrontend

    t0 = time.perf_counter()
    # ncpu: AutoModel sets torch's thread count itself (default 4)
    auto = AutoModel(model=spec["model_dir"], device="cpu", hub="ms", disable_update=True, disable_pbar=True,
                     ncpu=spec["threads"])
    assert torch.get_num_threads() == spec["threads"]
    load_ms = (time.perf_counter() - t0) * 1000.0
    net = auto.model
    # the CTC timestamp branch needs torchaudio (not installable here) and is not what we run either
    net.ctc_decoder = None

    frontend, encoder, generate = _Timer(), _Timer(), _Timer()
    WavFrontend.forward = frontend.wrap(WavFrontend.forward)
    net.encode = encoder.wrap(net.encode)
    net.audio_adaptor.forward = encoder.wrap(net.audio_adaptor.forward)
    net.llm.generate = generate.wrap(net.llm.generate)

    class StepTimes(LogitsProcessor):
        """Called once per generated token, right after that step's forward pass."""
        def __init__(self):
            self.times = []

        def __call__(self, input_ids, scores):
            self.times.append(time.perf_counter())
            return scores

    def transcribe(audio, spans):
        for t in (frontend, encoder, generate):
            t.ms = 0.0
        steps = StepTimes()
        decode_ms, n_decoded = 0.0, 0
        t0 = time.perf_counter()
        x, sr = sf.read(audio, dtype="float32")
        x = torch.from_numpy(x)  # FunASRNano takes a path or a tensor
        assert sr == 16000
        for a, b in spans:
            steps.times.clear()
            auto.generate(input=[x[a:b]], cache={}, batch_size=1, max_length=spec["tokens"],
                          llm_kwargs={"min_new_tokens": spec["tokens"], "logits_processor": LogitsProcessorList([steps])})
            decode_ms += (steps.times[-1] - steps.times[0]) * 1000.0
            n_decoded += len(steps.times) - 1
        total_ms = (time.perf_counter() - t0) * 1000.0
        return {"total_ms": total_ms, "frontend_ms": frontend.ms, "encode_ms": encoder.ms,
                "prefill_ms": generate.ms - decode_ms, "decode_ms": decode_ms,
                "n_generated_tokens": n_decoded + len(spans), "n_decoded_tokens": n_decoded,
                "segments": len(spans)}

    def measure(clip):
        transcribe(clip["audio"], clip["spans"])  # warm-up (the first call also runs with a bf16 prompt embedding)
        runs = [transcribe(clip["audio"], clip["spans"]) for _ in range(spec["runs"])]
        return {"load_ms": load_ms, "runs": runs, "peak_rss_mb": peak_rss_mb()}

    if "clips" in spec:
        return {"clips": [measure(c) for c in spec["clips"]]}
    return measure(spec)


# ---------------------------------------------------------------------------------------------
# ctc_draft off: these measure the engine like for like with upstream, whose CTC head the torch
# runs drop (timestamps() measures what the head costs)
_FIXED = {"max_tokens_per_second": None, "repetition_guard": False, "ignore_eos": True, "ctc_draft": False}


def _decode_wall(timings) -> float:
    """Seconds of decode steps: the per-job shares of one batch add up to the steps' wall time."""
    return sum(t.decode_ms for t in timings) / 1000.0


def batch(spec: dict) -> dict:
    """spec["clips"] (equal-length wav files): one transcribe() after another vs transcribe_batch,
    alternating run by run on one loaded model; -> wall times and peak RSS."""
    from funasr_cpp import Model

    model = Model(spec["llm"], spec["mmproj"], n_threads=spec["threads"], n_parallel=spec["n_parallel"])
    opts = dict(_FIXED, max_new_tokens=spec["tokens"])
    clips = spec["clips"]
    seq, bat = [], []
    model.transcribe_batch(clips, **opts)  # warm-up: the KV cache grows to the batch once
    for _ in range(spec["runs"]):
        t0 = time.perf_counter()
        one = [model.transcribe(c, **opts) for c in clips]
        seq.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        many = model.transcribe_batch(clips, **opts)
        bat.append(time.perf_counter() - t0)
        assert [r.text for r in one] == [r.text for r in many]
    return {"sequential_s": seq, "batch_s": bat, "clips": len(clips), "n_ctx": model._asr.n_ctx,
            "seconds": many[0].duration, "peak_rss_mb": peak_rss_mb()}


def decode_batch(spec: dict) -> dict:
    """Aggregate decode tok/s with b sequences decoded together, for b in spec["batch"]."""
    import soundfile as sf

    from funasr_cpp import _core
    from funasr_cpp.options import LoadOptions, TranscribeOptions
    from funasr_cpp.prompt import build_prompt

    x, _ = sf.read(spec["audio"], dtype="float32")
    out = {}
    for b in spec["batch"]:
        load = LoadOptions(n_threads=spec["threads"], n_parallel=b)
        m = _core.AsrModel(spec["llm"], spec["mmproj"], **load.engine_kwargs())
        rates = []
        for run in range(spec["runs"] + 1):
            jobs = [m.submit(x, build_prompt(), max_new_tokens=spec["tokens"], draft_max=TranscribeOptions().draft_max,
                             ignore_eos=True) for _ in range(b)]
            gens = [j.result() for j in jobs]
            assert all(g.max_batch == b for g in gens)
            if run:  # the first run warms up
                rates.append(sum(g.n_decoded_tokens for g in gens) / _decode_wall(gens))
        m.close()
        out[str(b)] = statistics.median(rates)
    return {"tok_s": out, "peak_rss_mb": peak_rss_mb()}


def speculative(spec: dict) -> dict:
    """The clip with no draft, a perfect draft (the model's own greedy output) and a useless one
    (random tokens), alternating run by run; -> per-run timings."""
    from funasr_cpp import Model
    from funasr_cpp.draft import FixedDrafts

    model = Model(spec["llm"], spec["mmproj"], n_threads=spec["threads"])
    opts = dict(_FIXED, max_new_tokens=spec["tokens"], draft_max=spec["draft_max"])
    ref = model.transcribe(spec["audio"], **opts)
    rng = np.random.default_rng(0)
    n_vocab = model._asr.n_vocab
    drafts = {"none": None,
              "perfect": FixedDrafts([s.tokens for s in ref.segments]),
              "useless": FixedDrafts([[int(t) for t in rng.integers(n_vocab // 2, n_vocab, len(s.tokens))]
                                      for s in ref.segments])}
    runs = {k: [] for k in drafts}
    for _ in range(spec["runs"]):
        for k, d in drafts.items():
            r = model.transcribe(spec["audio"], draft=d, **opts)
            assert r.text == ref.text
            runs[k].append(r.timings.to_dict())
    return {"runs": runs, "duration_s": ref.duration}


def long_file(spec: dict) -> dict:
    """A long file with n_parallel sequences (1 = one segment at a time); timings per run."""
    from funasr_cpp import Model

    model = Model(spec["llm"], spec["mmproj"], n_threads=spec["threads"], n_parallel=spec["n_parallel"])
    opts = dict(_FIXED, max_new_tokens=spec["tokens"])
    model.transcribe(spec["warmup"], **opts)
    runs = []
    for _ in range(spec["runs"]):
        r = model.transcribe(spec["audio"], **opts)
        runs.append({**r.timings.to_dict(), "segments": len(r.segments)})
    return {"runs": runs, "duration_s": r.duration, "peak_rss_mb": peak_rss_mb()}


def timestamps(spec: dict) -> dict:
    """The CTC head's cost: the file with the CTC head off (ctc_draft=False), as the default has it
    (the CTC draft: the head runs in the encoder pass, its greedy text is the draft) and with
    word_timestamps=True (+ the alignment), alternating run by run on one loaded model."""
    from funasr_cpp import Model

    model = Model(spec["llm"], spec["mmproj"], n_threads=spec["threads"], n_parallel=spec["n_parallel"])
    assert model.has_ctc, "the benchmark mmproj has no CTC head"
    opts = dict(_FIXED, max_new_tokens=spec["tokens"])
    configs = {"off": {"ctc_draft": False}, "draft": {"ctc_draft": True},
               "words": {"ctc_draft": True, "word_timestamps": True}}
    for c in configs.values():  # warm-up, and the compute buffers grow to the CTC graph once
        model.transcribe(spec["warmup"], **(opts | c))
    runs = {k: [] for k in configs}
    ref = None
    for _ in range(spec["runs"]):
        for k, c in configs.items():
            r = model.transcribe(spec["audio"], **(opts | c))
            ref = ref or [s.tokens for s in r.segments]
            # the same tokens as without drafts, up to float rounding: verifying k drafted rows in
            # one decode sums in another order than one row per step, and real-shape random weights
            # are chaotic (a 1e-6 change of the audio moves their logits by ~4), so on them segments
            # may differ; on the tiny test weights they are identical (tests/test_ctc.py)
            same = sum(s.tokens == t for s, t in zip(r.segments, ref))
            runs[k].append({**r.timings.to_dict(), "words": sum(len(s.words) for s in r.segments),
                            "segments": len(r.segments), "same_segments": same})
    return {"runs": runs, "duration_s": r.duration, "peak_rss_mb": peak_rss_mb()}


KINDS = {"roofline": roofline, "ours": ours, "torch": torch_, "batch": batch, "decode-batch": decode_batch,
         "speculative": speculative, "long": long_file, "timestamps": timestamps}

if __name__ == "__main__":
    kind, spec = sys.argv[1], json.loads(sys.argv[2])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = KINDS[kind](spec)
    print(json.dumps(result))
