"""A Fun-ASR-Nano checkpoint as the GGUF writers see it, whichever layout it came from.

`Release` holds the tensors under funasr's key names (model.pt's), the dimensions read from the
configs (`Dims`), what the mmproj records besides the shapes (`AudioParams`) and the state of the
CTC branch (`CtcInfo`). The expected_*_keys functions give every tensor a config implies, with its
shape: the layout readers (release.py, hf_release.py) check a checkpoint against them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ADAPTOR_HEADS = 8             # funasr Transformer adaptor: kwargs.get("attention_heads", 8)
ADAPTOR_EPS = 1e-12           # funasr transformer LayerNorm
ENCODER_EPS = 1e-5            # torch LayerNorm default (SAN-M layers, after_norm, tp_norm)

# model.pt sha256 of the published releases
KNOWN_RELEASES = {
    "81fec8616083c69377f3ceef36aba3655660ee0ca69a5d4a1e9810cd340ca499":
        "Fun-ASR-Nano-2512 (ModelScope, complete CTC branch)",
    "55ae0d2fee369f0f11cce0795f6927934ad17cf11b278a7e56a51272074160bb":
        "Fun-ASR-Nano-2512 (Hugging Face, CTC branch absent or incomplete)",
    "f7ddbef5ff8c57254e6a045f0b316501b704fe2b774f962efc6e402364e8fe37":
        "Fun-ASR-MLT-Nano-2512 (ModelScope, no CTC branch)",
}
CTC_HINT = ("timestamps need the CTC branch: the ModelScope copy of Fun-ASR-Nano-2512 "
            "(iic/Fun-ASR-Nano-2512, model.pt sha256 81fec861...) has all of it")


@dataclass
class Dims:
    feat: int                 # LFR feature width = n_mels * lfr_m
    enc: int
    enc_heads: int
    enc_ffn: int
    enc_blocks: int           # encoders0 + encoders
    enc_tp_blocks: int
    kernel: int
    sanm_shift: int
    adp_ffn: int
    adp_layers: int
    adp_downsample: int
    llm: int
    ctc_dim: int
    ctc_ffn: int
    ctc_layers: int
    ctc_vocab: int
    ctc_downsample: int = 1
    ctc_heads: int = ADAPTOR_HEADS

    @property
    def enc_layers(self) -> int:
        return self.enc_blocks + self.enc_tp_blocks


def _linear(out: dict, p: str, n_out: int, n_in: int) -> None:
    out[p + ".weight"] = (n_out, n_in)
    out[p + ".bias"] = (n_out,)


def _norm(out: dict, p: str, n: int) -> None:
    out[p + ".weight"] = (n,)
    out[p + ".bias"] = (n,)


def encoder_layer_prefixes(d: Dims) -> list[str]:
    """Checkpoint prefix of each SAN-M layer, in execution order."""
    return (["audio_encoder.encoders0.0"]
            + [f"audio_encoder.encoders.{i}" for i in range(d.enc_blocks - 1)]
            + [f"audio_encoder.tp_encoders.{i}" for i in range(d.enc_tp_blocks)])


def expected_audio_keys(d: Dims) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for i, p in enumerate(encoder_layer_prefixes(d)):
        n_in = d.feat if i == 0 else d.enc
        _linear(out, p + ".self_attn.linear_out", d.enc, d.enc)
        _linear(out, p + ".self_attn.linear_q_k_v", 3 * d.enc, n_in)
        out[p + ".self_attn.fsmn_block.weight"] = (d.enc, 1, d.kernel)
        _linear(out, p + ".feed_forward.w_1", d.enc_ffn, d.enc)
        _linear(out, p + ".feed_forward.w_2", d.enc, d.enc_ffn)
        _norm(out, p + ".norm1", n_in)
        _norm(out, p + ".norm2", d.enc)
    _norm(out, "audio_encoder.after_norm", d.enc)
    _norm(out, "audio_encoder.tp_norm", d.enc)
    _transformer(out, "audio_adaptor", d.enc * d.adp_downsample, d.llm, d.adp_ffn, d.adp_layers)
    return out


def expected_ctc_keys(d: Dims) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    _transformer(out, "ctc_decoder", d.enc * d.ctc_downsample, d.ctc_dim, d.ctc_ffn, d.ctc_layers)
    _linear(out, "ctc.ctc_lo", d.ctc_vocab, d.ctc_dim)
    return out


def _transformer(out: dict, p: str, n_in: int, width: int, ffn: int, n_layer: int) -> None:
    """funasr llm_asr adaptor 'Transformer': linear1, ReLU, linear2, pre-LN MHA blocks."""
    _linear(out, p + ".linear1", ffn, n_in)
    _linear(out, p + ".linear2", width, ffn)
    for i in range(n_layer):
        b = f"{p}.blocks.{i}"
        for name in ("linear_q", "linear_k", "linear_v", "linear_out"):
            _linear(out, f"{b}.self_attn.{name}", width, width)
        _linear(out, b + ".feed_forward.w_1", width // 4, width)
        _linear(out, b + ".feed_forward.w_2", width, width // 4)
        _norm(out, b + ".norm1", width)
        _norm(out, b + ".norm2", width)


def expected_llm_keys(cfg: dict) -> dict[str, tuple]:
    h, hd = cfg["hidden_size"], cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    nq, nkv, ff, v = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["intermediate_size"], cfg["vocab_size"]
    out: dict[str, tuple] = {"llm.model.embed_tokens.weight": (v, h)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"llm.model.layers.{i}"
        out[p + ".self_attn.q_proj.weight"] = (nq * hd, h)
        out[p + ".self_attn.k_proj.weight"] = (nkv * hd, h)
        out[p + ".self_attn.v_proj.weight"] = (nkv * hd, h)
        out[p + ".self_attn.o_proj.weight"] = (h, nq * hd)
        out[p + ".self_attn.q_norm.weight"] = (hd,)
        out[p + ".self_attn.k_norm.weight"] = (hd,)
        out[p + ".mlp.gate_proj.weight"] = (ff, h)
        out[p + ".mlp.up_proj.weight"] = (ff, h)
        out[p + ".mlp.down_proj.weight"] = (h, ff)
        out[p + ".input_layernorm.weight"] = (h,)
        out[p + ".post_attention_layernorm.weight"] = (h,)
    out["llm.model.norm.weight"] = (h,)
    out["llm.lm_head.weight"] = (v, h)
    return out


@dataclass
class AudioParams:
    """What the mmproj records besides the tensor shapes: frontend, encoder and adaptor
    settings (defaults: upstream's code defaults, used when a config is silent)."""
    sample_rate: int = 16000
    window: str = "hamming"
    n_mels: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    lfr_m: int = 1
    lfr_n: int = 1
    snip_edges: bool = True
    input_scale: float = 32768.0      # WavFrontend upsacle_samples; the -hf extractor: 1
    cmvn_file: Path | None = None
    encoder_eps: float = ENCODER_EPS
    adaptor_heads: int = ADAPTOR_HEADS
    adaptor_eps: float = ADAPTOR_EPS
    use_low_frame_rate: bool = False  # FunASRNano: audio_adaptor_conf.get("use_low_frame_rate", False)


@dataclass
class CtcInfo:
    status: str = "absent"            # complete | incomplete | absent
    n_missing: int = 0
    n_expected: int = 0
    missing: list = field(default_factory=list)


@dataclass
class Release:
    """An opened release folder; tensors are memory-mapped, read on demand."""
    path: Path
    layout: str                        # "funasr" (model.pt + config.yaml) or "transformers" (-hf)
    config: dict                       # config.yaml, or the -hf config.json
    llm_config: dict                   # the Qwen3 config (Qwen3-0.6B/config.json or text_config)
    tokenizer_dir: Path                # tokenizer.json + tokenizer_config.json
    dims: Dims
    audio: AudioParams
    tensors: dict                      # funasr key -> tensor (to_numpy, shape, dtype)
    ctc: CtcInfo
    sources: list                      # [(file name, sha256)] of the weight files
    _closers: list = field(repr=False, default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name.lower().replace(" ", "-") or "fun-asr-nano"

    @property
    def has_ctc(self) -> bool:
        return self.ctc.status == "complete"

    @property
    def known_release(self) -> str:
        return next((KNOWN_RELEASES[h] for _, h in self.sources if h in KNOWN_RELEASES), "")

    @property
    def variant(self) -> str:
        """Which checkpoint family the configs describe (the hash may name the exact release)."""
        if self.layout == "transformers":
            return "Fun-ASR-Nano (Transformers -hf layout)"
        return "Fun-ASR-Nano" if self.audio.use_low_frame_rate else "Fun-ASR-MLT-Nano"

    def describe(self) -> list[str]:
        """What was read, one line each (printed by `funasr-cpp convert`, recorded in the mmproj)."""
        lines = [f"layout: {self.layout} ({', '.join(name for name, _ in self.sources)})",
                 f"variant: {self.variant}" + (f"; recognised as {self.known_release}" if self.known_release else ""),
                 "audio rows: " + ("first ~T/8 adaptor rows (use_low_frame_rate true)" if self.audio.use_low_frame_rate
                                   else "every adaptor row (use_low_frame_rate false)")]
        if self.ctc.status == "complete":
            lines.append(f"CTC branch: complete ({self.ctc.n_expected} tensors)")
        elif self.ctc.status == "incomplete":
            lines.append(f"CTC branch: incomplete ({self.ctc.n_missing} of {self.ctc.n_expected} tensors missing), "
                         f"left out: no timestamps; {CTC_HINT}")
        else:
            lines.append(f"CTC branch: absent: no timestamps; {CTC_HINT}")
        return lines

    def numpy(self, key: str, dtype=np.float32) -> np.ndarray:
        return self.tensors[key].to_numpy(dtype)

    def close(self) -> None:
        for close in self._closers:
            close()
        self._closers.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["ADAPTOR_EPS", "ADAPTOR_HEADS", "AudioParams", "CTC_HINT", "CtcInfo", "Dims", "ENCODER_EPS",
           "KNOWN_RELEASES", "Release", "encoder_layer_prefixes", "expected_audio_keys", "expected_ctc_keys",
           "expected_llm_keys"]
