#!/usr/bin/env python3
"""Encoder + adaptor speed: funasr-cpp's ggml graph vs upstream funasr's PyTorch modules.

Same real-size weights (a random-weight Fun-ASR-Nano-2512 release from the test fixture
factory), same LFR features, same thread count, one process, medians of --runs after a
warm-up. Prints a markdown table for BENCHMARKS.md.

    python benchmarks/bench_encoder.py --model-dir /tmp/fullck --threads 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def median_ms(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def torch_modules(model_dir: Path):
    """funasr's own SenseVoiceEncoderSmall + adaptor Transformer, built from config.yaml."""
    import torch
    import yaml
    from funasr.models.llm_asr.adaptor import Transformer
    from funasr.models.sense_voice.model import SenseVoiceEncoderSmall

    cfg = yaml.safe_load((model_dir / "config.yaml").read_text())
    enc_conf = dict(cfg["audio_encoder_conf"])
    encoder = SenseVoiceEncoderSmall(input_size=560, **enc_conf)
    adp_conf = dict(cfg["audio_adaptor_conf"])
    adp_conf["encoder_dim"] = enc_conf["output_size"]
    adaptor = Transformer(**adp_conf)
    sd = torch.load(model_dir / "model.pt", map_location="cpu", mmap=True, weights_only=True)
    sd = sd.get("state_dict", sd)
    for prefix, module in (("audio_encoder.", encoder), ("audio_adaptor.", adaptor)):
        part = {k[len(prefix):]: v.float() for k, v in sd.items() if k.startswith(prefix)}
        module.load_state_dict(part, strict=True)
        module.eval()
    return encoder, adaptor


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, required=True, help="release folder (generate one with "
                    "`python tests/fixtures/checkpoint.py DIR --full`)")
    ap.add_argument("--gguf-dir", type=Path, default=None, help="where the mmproj GGUFs are (converted if missing)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, nargs="+", default=[10, 30])
    ap.add_argument("--types", nargs="+", default=["f16", "q8_0"])
    args = ap.parse_args()

    import torch

    from funasr_cpp import _core
    from funasr_cpp.converters.convert import convert

    torch.set_num_threads(args.threads)
    gguf_dir = args.gguf_dir or args.model_dir.parent / (args.model_dir.name + "-gguf")
    mmprojs = {}
    for t in args.types:
        path = gguf_dir / f"mmproj-{args.model_dir.name.lower()}-{t}.gguf"
        if not path.exists():
            convert(args.model_dir, gguf_dir, llm_type="q8_0", mmproj_type=t)
        mmprojs[t] = path
    encoder, adaptor = torch_modules(args.model_dir)

    rng = np.random.default_rng(0)
    rows = []
    for sec in args.seconds:
        audio = (0.1 * rng.standard_normal(int(16000 * sec))).astype(np.float32)
        fe_ms = median_ms(lambda: _core.funasr_features(audio), args.runs)
        feats = _core.funasr_features(audio)

        def run_torch():
            with torch.no_grad():
                x = torch.tensor(feats)[None]
                enc, lens = encoder(x, torch.tensor([x.shape[1]]))
                adaptor(enc, lens)

        torch_ms = median_ms(run_torch, args.runs)
        row = {"seconds": sec, "frames": feats.shape[0], "frontend": fe_ms, "torch": torch_ms}
        for t, path in mmprojs.items():
            enc = _core.AudioEncoder(str(path), n_threads=args.threads)
            row[t] = median_ms(lambda: enc.encode(feats), args.runs)
            del enc
        rows.append(row)
        print(row, file=sys.stderr, flush=True)

    cpu = next((b for b in _core.system_info()["backends"] if b["name"] == "CPU"), {})
    print(f"\nEncoder + adaptor, {args.threads} threads, median of {args.runs} runs "
          f"({cpu.get('devices', [{}])[0].get('description', 'CPU')}):\n")
    head = "| audio | LFR frames | frontend (ours) | PyTorch fp32 | " + " | ".join(
        f"funasr-cpp {t} | speed-up {t}" for t in args.types) + " |"
    print(head)
    print("|" + "---|" * (4 + 2 * len(args.types)))
    for r in rows:
        cells = [f"{r['seconds']:g} s", str(r["frames"]), f"{r['frontend']:.1f} ms", f"{r['torch']:.0f} ms"]
        for t in args.types:
            cells += [f"{r[t]:.0f} ms", f"{r['torch'] / r[t]:.2f}x"]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
