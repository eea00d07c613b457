"""A released Fun-ASR-Nano checkpoint folder, opened and checked.

Two layouts are read (`open_release` tells them apart):
- funasr's (Fun-ASR-Nano-2512, Fun-ASR-MLT-Nano-2512): model.pt (every weight,
  under audio_encoder.*, llm.*, audio_adaptor.* and optionally ctc_decoder.* +
  ctc.*), config.yaml (module hyper-parameters), Qwen3-0.6B/config.json +
  tokenizer files, multilingual.tiktoken (CTC vocabulary);
- Transformers' (Fun-ASR-Nano-2512-hf): config.json (model_type fun_asr_nano),
  model.safetensors or shards with their index, tokenizer files at the root;
  see hf_release.py, which maps its tensors onto funasr's key names.

Every dimension is read from the configs, and a key missing from config.yaml
takes upstream's code default (funasr 1.4.16's constructor signatures); every
checkpoint key must be expected and every expected key present with the
expected shape, so a converter never guesses. The one exception is upstream's
own: an absent or incomplete CTC branch is left out with a warning
(funasr/models/fun_asr_nano/checkpoint_utils.py: disable_incomplete_ctc).
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .torch_zip import CheckpointError, StoredTensor, TorchZip

REQUIRED_FILES = {
    "model.pt": "the weights",
    "config.yaml": "the model configuration",
    "Qwen3-0.6B/config.json": "the Qwen3 LLM configuration",
    "Qwen3-0.6B/tokenizer.json": "the Qwen3 tokenizer",
    "Qwen3-0.6B/tokenizer_config.json": "the Qwen3 tokenizer configuration",
}
DEFAULT_CTC_VOCAB = 60515     # funasr's default when config.yaml has no ctc_vocab_size
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


class ReleaseError(ValueError):
    """The folder is not a valid Fun-ASR-Nano release; the message names the problem."""


class ReleaseWarning(UserWarning):
    """Something upstream accepts with a warning too (an absent or incomplete CTC branch)."""


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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _load_yaml(path: Path) -> dict:
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ReleaseError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(cfg, dict):
        raise ReleaseError(f"{path}: expected a mapping at the top level")
    return cfg


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ReleaseError(f"{path}: not valid JSON ({exc})") from None


def _section(cfg: dict, name: str, where: Path) -> dict:
    value = cfg.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ReleaseError(f"{where}: {name} must be a mapping")
    return value


def _dims(cfg: dict, llm_cfg: dict, path: Path) -> tuple[Dims, AudioParams]:
    """Dimensions and audio settings; a missing key takes the default of upstream's code
    (SenseVoiceEncoderSmall, the llm_asr Transformer adaptor, WavFrontend, FunASRNano)."""
    where = path / "config.yaml"
    if cfg.get("model") == "FsmnVADStreaming":
        raise ReleaseError(f"{path} is an FSMN-VAD model, not a Fun-ASR-Nano ASR checkpoint: pass it as the VAD "
                           "model (vad_model= / --vad-model)")
    if cfg.get("model") != "FunASRNano":
        raise ReleaseError(f"{where}: model is {cfg.get('model')!r}, expected 'FunASRNano' "
                           "(is this a Fun-ASR-Nano checkpoint?)")
    if cfg.get("audio_encoder") != "SenseVoiceEncoderSmall" or cfg.get("audio_adaptor") != "Transformer":
        raise ReleaseError(f"{where}: unsupported audio_encoder/audio_adaptor "
                           f"{cfg.get('audio_encoder')!r}/{cfg.get('audio_adaptor')!r}")
    if cfg.get("frontend", "WavFrontend") != "WavFrontend":
        raise ReleaseError(f"{where}: unsupported frontend {cfg.get('frontend')!r} (expected WavFrontend)")
    enc, adp = _section(cfg, "audio_encoder_conf", where), _section(cfg, "audio_adaptor_conf", where)
    fe, ctc = _section(cfg, "frontend_conf", where), _section(cfg, "ctc_decoder_conf", where)
    if enc.get("selfattention_layer_type", "sanm") != "sanm":
        raise ReleaseError(f"{where}: audio_encoder_conf.selfattention_layer_type "
                           f"{enc.get('selfattention_layer_type')!r} is not supported (expected 'sanm')")
    try:
        n_mels, lfr_m = int(fe.get("n_mels", 80)), int(fe.get("lfr_m", 1))
        dims = Dims(
            feat=n_mels * lfr_m,
            enc=int(enc.get("output_size", 256)), enc_heads=int(enc.get("attention_heads", 4)),
            enc_ffn=int(enc.get("linear_units", 2048)), enc_blocks=int(enc.get("num_blocks", 6)),
            enc_tp_blocks=int(enc.get("tp_blocks", 0)), kernel=int(enc.get("kernel_size", 11)),
            sanm_shift=int(enc.get("sanm_shfit", 0)),   # sic: upstream's spelling
            adp_ffn=int(adp.get("ffn_dim", 2048)), adp_layers=int(adp.get("n_layer", 2)),
            adp_downsample=int(adp.get("downsample_rate", 2)),
            llm=int(llm_cfg["hidden_size"]),
            ctc_dim=int(ctc.get("llm_dim", 4096)), ctc_ffn=int(ctc.get("ffn_dim", 2048)),
            ctc_layers=int(ctc.get("n_layer", 2)), ctc_downsample=int(ctc.get("downsample_rate", 2)),
            ctc_heads=int(ctc.get("attention_heads", ADAPTOR_HEADS)),
            ctc_vocab=int(cfg.get("ctc_vocab_size", DEFAULT_CTC_VOCAB)),
        )
        audio = AudioParams(
            sample_rate=int(fe.get("fs", 16000)), window=str(fe.get("window", "hamming")), n_mels=n_mels,
            frame_length_ms=float(fe.get("frame_length", 25)), frame_shift_ms=float(fe.get("frame_shift", 10)),
            lfr_m=lfr_m, lfr_n=int(fe.get("lfr_n", 1)), snip_edges=bool(fe.get("snip_edges", True)),
            input_scale=32768.0 if fe.get("upsacle_samples", True) else 1.0,   # sic
            cmvn_file=_cmvn_path(fe, path),
            adaptor_heads=int(adp.get("attention_heads", ADAPTOR_HEADS)),
            use_low_frame_rate=bool(adp.get("use_low_frame_rate", False)),
        )
    except KeyError as exc:
        raise ReleaseError(f"{where}: missing key {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ReleaseError(f"{where}: bad value ({exc})") from None
    if dims.enc_blocks < 1:
        raise ReleaseError(f"{where}: audio_encoder_conf.num_blocks must be >= 1")
    return dims, audio


def _cmvn_path(fe: dict, path: Path) -> Path | None:
    """frontend_conf.cmvn_file, else an am.mvn beside the model (funasr's AutoModel finds it there)."""
    name = fe.get("cmvn_file")
    if name:
        p = Path(name) if Path(name).is_absolute() else path / name
        if not p.is_file():
            raise FileNotFoundError(f"config.yaml frontend_conf.cmvn_file points to a missing file: {p}")
        return p
    default = path / "am.mvn"
    return default if default.is_file() else None


def _unwrap(sd, path: Path) -> dict:
    """funasr's loader accepts {'state_dict'|'model_state_dict'|'model': ...} and 'module.' prefixes."""
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, StoredTensor) for v in sd.values()):
        raise ReleaseError(f"{path}: expected a state_dict of tensors")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def _check(tensors: dict, expected: dict, where: Path, config_hint: str) -> None:
    for key, shape in expected.items():
        t = tensors.get(key)
        if t is None:
            raise ReleaseError(f"{where}: missing tensor {key} (expected by {config_hint})")
        if tuple(t.shape) != tuple(shape):
            raise ReleaseError(f"{where}: tensor {key} has shape {list(t.shape)}, "
                               f"{config_hint} implies {list(shape)}")
        if t.dtype not in ("f32", "f16", "bf16", "f64"):
            raise ReleaseError(f"{where}: tensor {key} has non-float dtype {t.dtype}")


def check_ctc(tensors: dict, expected: dict, declared: bool, where: Path) -> CtcInfo:
    """Upstream keeps transcribing when the CTC branch is absent or incomplete and only drops
    timestamps (disable_incomplete_ctc); the left-out tensors are removed from `tensors`."""
    present = [k for k in expected if k in tensors]
    missing = [k for k in expected if k not in tensors]
    if declared and present and not missing:
        _check(tensors, expected, where, "config.yaml (CTC branch)")
        return CtcInfo("complete", 0, len(expected))
    for k in present:
        del tensors[k]
    if not declared:
        if present:
            warnings.warn(f"{where}: config.yaml declares no CTC branch; its {len(present)} CTC tensors are "
                          "ignored (as upstream ignores them)", ReleaseWarning, stacklevel=3)
        return CtcInfo("absent", 0, 0)
    if present:
        warnings.warn(f"{where}: {len(missing)} of {len(expected)} CTC tensors are missing ({', '.join(missing[:3])}"
                      f"{', ...' if len(missing) > 3 else ''}): the CTC branch is left out and timestamps are "
                      f"unavailable; transcription works. {CTC_HINT}", ReleaseWarning, stacklevel=3)
        return CtcInfo("incomplete", len(missing), len(expected), missing)
    warnings.warn(f"{where}: no CTC tensors: timestamps are unavailable; transcription works. {CTC_HINT}",
                  ReleaseWarning, stacklevel=3)
    return CtcInfo("absent", len(missing), len(expected), missing)


def open_release(model_dir: str | Path) -> Release:
    """Open and fully check a release folder of either layout (no tensor data is read)."""
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"model folder not found: {path}")
    if (path / "config.json").is_file() and not (path / "config.yaml").is_file():
        from .hf_release import open_hf_release

        return open_hf_release(path)
    for rel, what in REQUIRED_FILES.items():
        if not (path / rel).is_file():
            raise FileNotFoundError(f"{path / rel} is missing ({what}); expected a Fun-ASR-Nano "
                                    "release folder (model.pt, config.yaml, Qwen3-0.6B/...) or a Transformers "
                                    "-hf folder (config.json, model.safetensors, tokenizer files)")
    cfg = _load_yaml(path / "config.yaml")
    llm_cfg = _load_json(path / "Qwen3-0.6B" / "config.json")
    if llm_cfg.get("model_type") != "qwen3":
        raise ReleaseError(f"{path / 'Qwen3-0.6B/config.json'}: model_type {llm_cfg.get('model_type')!r}, expected 'qwen3'")
    dims, audio = _dims(cfg, llm_cfg, path)

    model_pt = path / "model.pt"
    archive = TorchZip(model_pt)
    try:
        tensors = _unwrap(archive.load(), model_pt)
        audio_keys, llm, ctc = expected_audio_keys(dims), expected_llm_keys(llm_cfg), expected_ctc_keys(dims)
        _check(tensors, audio_keys, model_pt, "config.yaml")
        _check(tensors, llm, model_pt, "Qwen3-0.6B/config.json")
        known = set(audio_keys) | set(llm) | set(ctc)
        unknown = [k for k in tensors if k not in known]
        if unknown:
            raise ReleaseError(f"{model_pt}: unexpected tensor {unknown[0]}"
                               + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
        ctc_info = check_ctc(tensors, ctc, bool(cfg.get("ctc_decoder")), model_pt)
        sources = [("model.pt", sha256_file(model_pt))]
    except Exception:
        archive.close()
        raise
    return Release(path=path, layout="funasr", config=cfg, llm_config=llm_cfg, tokenizer_dir=path / "Qwen3-0.6B",
                   dims=dims, audio=audio, tensors=tensors, ctc=ctc_info, sources=sources,
                   _closers=[archive.close])


__all__ = ["ADAPTOR_EPS", "ADAPTOR_HEADS", "AudioParams", "CheckpointError", "CtcInfo", "Dims", "ENCODER_EPS",
           "KNOWN_RELEASES", "Release", "ReleaseError", "ReleaseWarning", "encoder_layer_prefixes", "open_release"]
