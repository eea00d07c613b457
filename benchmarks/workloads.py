"""What the benchmarks run on: the random-weight release folder, its GGUF conversions and the
speech-like test audio. Everything is generated once into a work folder and reused."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from fixtures.speech import espeak, write_wav16k  # noqa: E402
SAMPLE_RATE = 16000

LLM_TYPES = ("f16", "q8_0", "q4_k_m")
MMPROJ_TYPES = ("f32", "f16", "bf16", "q8_0")

# alternating Mandarin / English sentences; a pause after each so long audio has natural cut points
SENTENCES = [
    ("cmn", "今天天气很好，我们去公园散步吧。"),
    ("en", "The quick brown fox jumps over the lazy dog."),
    ("cmn", "语音识别模型把声音转换成文字，速度和准确率都很重要。"),
    ("en", "Speech recognition on a laptop should be fast, private and easy to install."),
    ("cmn", "这个模型使用一个音频编码器和一个小型语言模型。"),
    ("en", "Please call me back tomorrow morning at nine thirty."),
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_json(argv: list, *, env: dict | None = None, timeout: float = 3600) -> dict:
    """Run a measurement process; the JSON object on its last stdout line (RuntimeError with the
    end of its stderr when it fails)."""
    import json
    import subprocess

    out = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=env, timeout=timeout)
    if out.returncode != 0:
        what = " ".join([Path(argv[1]).name, *map(str, argv[2:-1])])  # e.g. "measure.py ours"
        raise RuntimeError(f"{what} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def release_folder(work: Path, full: bool) -> Path:
    """A random-weight release folder: real Fun-ASR-Nano-2512 shapes (full) or the tiny test ones."""
    from fixtures.checkpoint import write_checkpoint

    folder = work / ("fun-asr-nano-random" if full else "fun-asr-nano-tiny")
    if not (folder / "model.pt").is_file():
        log(f"writing the random-weight checkpoint {folder} ({'real' if full else 'tiny'} shapes)")
        write_checkpoint(folder, size="full" if full else "tiny", seed=0)
    return folder


def gguf_files(folder: Path, out: Path, llm_types=LLM_TYPES, mmproj_types=MMPROJ_TYPES) -> dict:
    """{("llm", type) | ("mmproj", type): path}, converting (and quantizing q4_k_m from f16) as needed."""
    from funasr_cpp import quantize
    from funasr_cpp.converters import convert

    name = folder.name.lower()
    files = {}
    for t in mmproj_types:
        path = out / f"mmproj-{name}-{t}.gguf"
        if not path.is_file():
            log(f"converting mmproj {t}")
            convert(folder, out, llm_type="f16", mmproj_type=t, progress=False)
        files["mmproj", t] = path
    for t in llm_types:
        path = out / f"{name}-{t}.gguf"
        if not path.is_file():
            if t in ("f32", "f16", "bf16", "q8_0"):
                log(f"converting LLM {t}")
                convert(folder, out, llm_type=t, mmproj_type=mmproj_types[0], progress=False)
            else:
                log(f"quantizing LLM {t}")
                quantize(gguf_files(folder, out, ["f16"], mmproj_types[:1])["llm", "f16"], path, t)
        files["llm", t] = path
    return files


def audio_files(work: Path, seconds) -> dict:
    """{seconds: wav path}: prefixes of one eSpeak NG speech track (sentences + 0.4 s pauses)."""
    paths = {s: work / f"speech-{s:g}s.wav" for s in seconds}
    if all(p.is_file() for p in paths.values()):
        return paths
    pause = np.zeros(int(0.4 * SAMPLE_RATE), np.float32)
    voices = [np.concatenate([espeak(t, v), pause]) for v, t in SENTENCES]
    track = np.concatenate(voices)
    need = int(max(seconds) * SAMPLE_RATE)
    track = np.tile(track, need // track.size + 1)
    for s, p in paths.items():
        write_wav16k(p, 0.8 * track[: int(s * SAMPLE_RATE)])
    return paths


def speech_with_pauses(path: Path, seconds: float, pauses, noise: float = 0.0) -> Path:
    """A 16-bit WAV of `seconds` at `path` (kept once written): the SENTENCES (eSpeak NG) in turn, each
    followed by the next of `pauses` (seconds, cycling), x 0.8; with `noise`, that much Gaussian noise
    (seed 0) under it all."""
    if path.is_file():
        return path
    voices = [espeak(t, v) for v, t in SENTENCES]
    need = int(seconds * SAMPLE_RATE)
    parts, n, k = [], 0, 0
    while n < need:
        x = voices[k % len(voices)]
        pause = np.zeros(int(pauses[k % len(pauses)] * SAMPLE_RATE), np.float32)
        parts += [x, pause]
        n += len(x) + len(pause)
        k += 1
    x = 0.8 * np.concatenate(parts)[:need]
    if noise:
        x = x + (noise * np.random.default_rng(0).standard_normal(need)).astype(np.float32)
    write_wav16k(path, x)
    return path

def lfr_frames(n_samples: int) -> int:
    """LFR frames of n_samples (25 ms / 10 ms fbank frames, 6 per LFR frame, the last one padded)."""
    n_fbank = 1 + (n_samples - 400) // 160 if n_samples >= 400 else 0
    return -(-n_fbank // 6)


def encoder_flops(mmproj: Path, n_frames: int) -> float:
    """Multiply-adds x 2 of the encoder + adaptor for n_frames LFR frames: every 2-D weight of
    the encoder (a.blk.*) and adaptor (mm.a.*) times n_frames rows, plus the attention products."""
    from gguf import GGUFReader

    flops = 0.0
    for t in GGUFReader(str(mmproj)).tensors:
        if not (t.name.startswith(("a.blk.", "mm.a.")) and t.name.endswith(".weight")) or len(t.shape) != 2:
            continue
        if "conv_dw" in t.name:
            continue
        flops += 2.0 * n_frames * int(t.shape[0]) * int(t.shape[1])
        if t.name.endswith(("attn_qkv.weight", "attn_q.weight")):
            d = int(t.shape[0]) if t.name.endswith("attn_q.weight") else int(t.shape[1]) // 3
            flops += 4.0 * n_frames * n_frames * d  # Q K^T and A V
    return flops
