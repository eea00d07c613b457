"""A released Fun-ASR-Nano checkpoint folder, opened and checked.

The folder holds model.pt (every weight, under audio_encoder.*, llm.*,
audio_adaptor.* and optionally ctc_decoder.* + ctc.*), config.yaml (module
hyper-parameters), Qwen3-0.6B/config.json + tokenizer files, and
multilingual.tiktoken (CTC vocabulary). Every dimension is read from the
configs; every checkpoint key must be expected and every expected key present
with the expected shape, so a converter never guesses.
"""
from __future__ import annotations

import json
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
ADAPTOR_HEADS = 8             # funasr Transformer adaptor: attention_heads is not in the config
ADAPTOR_EPS = 1e-12           # funasr transformer LayerNorm
ENCODER_EPS = 1e-5            # torch LayerNorm default (SAN-M layers, after_norm, tp_norm)


class ReleaseError(ValueError):
    """The folder is not a valid Fun-ASR-Nano release; the message names the problem."""


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
    _transformer(out, "ctc_decoder", d.enc, d.ctc_dim, d.ctc_ffn, d.ctc_layers)
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
class Release:
    """An opened release folder; tensors are memory-mapped, read on demand."""
    path: Path
    config: dict                       # config.yaml
    llm_config: dict                   # Qwen3-0.6B/config.json
    dims: Dims
    tensors: dict[str, StoredTensor]   # checkpoint key -> tensor (prefixes removed)
    has_ctc: bool
    _archive: TorchZip = field(repr=False, default=None)

    @property
    def name(self) -> str:
        return self.path.name.lower().replace(" ", "-") or "fun-asr-nano"

    def numpy(self, key: str, dtype=np.float32) -> np.ndarray:
        return self.tensors[key].to_numpy(dtype)

    def close(self) -> None:
        if self._archive is not None:
            self._archive.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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


def _dims(cfg: dict, llm_cfg: dict, path: Path) -> Dims:
    def section(name: str) -> dict:
        value = cfg.get(name)
        if not isinstance(value, dict):
            raise ReleaseError(f"{path / 'config.yaml'}: missing section '{name}'")
        return value

    if cfg.get("model") != "FunASRNano":
        raise ReleaseError(f"{path / 'config.yaml'}: model is {cfg.get('model')!r}, expected 'FunASRNano' "
                           "(is this a Fun-ASR-Nano checkpoint?)")
    enc, adp, fe = section("audio_encoder_conf"), section("audio_adaptor_conf"), section("frontend_conf")
    ctc = cfg.get("ctc_decoder_conf") or {}
    if cfg.get("audio_encoder") != "SenseVoiceEncoderSmall" or cfg.get("audio_adaptor") != "Transformer":
        raise ReleaseError(f"{path / 'config.yaml'}: unsupported audio_encoder/audio_adaptor "
                           f"{cfg.get('audio_encoder')!r}/{cfg.get('audio_adaptor')!r}")
    try:
        return Dims(
            feat=int(fe.get("n_mels", 80)) * int(fe.get("lfr_m", 7)),
            enc=int(enc["output_size"]), enc_heads=int(enc["attention_heads"]),
            enc_ffn=int(enc["linear_units"]), enc_blocks=int(enc["num_blocks"]),
            enc_tp_blocks=int(enc.get("tp_blocks", 0)), kernel=int(enc.get("kernel_size", 11)),
            sanm_shift=int(enc.get("sanm_shfit", 0)),
            adp_ffn=int(adp.get("ffn_dim", 2048)), adp_layers=int(adp.get("n_layer", 2)),
            adp_downsample=int(adp.get("downsample_rate", 1)),
            llm=int(llm_cfg["hidden_size"]),
            ctc_dim=int(ctc.get("llm_dim", 512)), ctc_ffn=int(ctc.get("ffn_dim", 2048)),
            ctc_layers=int(ctc.get("n_layer", 5)),
            ctc_vocab=int(cfg.get("ctc_vocab_size", DEFAULT_CTC_VOCAB)),
        )
    except KeyError as exc:
        raise ReleaseError(f"{path / 'config.yaml'}: missing key {exc.args[0]!r}") from None


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


def open_release(model_dir: str | Path) -> Release:
    """Open and fully check a release folder (no tensor data is read)."""
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"model folder not found: {path}")
    for rel, what in REQUIRED_FILES.items():
        if not (path / rel).is_file():
            raise FileNotFoundError(f"{path / rel} is missing ({what}); expected a Fun-ASR-Nano "
                                    "release folder (model.pt, config.yaml, Qwen3-0.6B/...)")
    cfg = _load_yaml(path / "config.yaml")
    llm_cfg = _load_json(path / "Qwen3-0.6B" / "config.json")
    if llm_cfg.get("model_type") != "qwen3":
        raise ReleaseError(f"{path / 'Qwen3-0.6B/config.json'}: model_type {llm_cfg.get('model_type')!r}, expected 'qwen3'")
    dims = _dims(cfg, llm_cfg, path)

    archive = TorchZip(path / "model.pt")
    try:
        tensors = _unwrap(archive.load(), path / "model.pt")
        audio, llm, ctc = expected_audio_keys(dims), expected_llm_keys(llm_cfg), expected_ctc_keys(dims)
        _check(tensors, audio, path / "model.pt", "config.yaml")
        _check(tensors, llm, path / "model.pt", "Qwen3-0.6B/config.json")
        present_ctc = [k for k in ctc if k in tensors]
        has_ctc = bool(present_ctc)
        if has_ctc:
            _check(tensors, ctc, path / "model.pt", "config.yaml (CTC branch)")
        known = set(audio) | set(llm) | set(ctc)
        unknown = [k for k in tensors if k not in known]
        if unknown:
            raise ReleaseError(f"{path / 'model.pt'}: unexpected tensor {unknown[0]}"
                               + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
    except Exception:
        archive.close()
        raise
    return Release(path=path, config=cfg, llm_config=llm_cfg, dims=dims, tensors=tensors,
                   has_ctc=has_ctc, _archive=archive)


__all__ = ["ADAPTOR_EPS", "ADAPTOR_HEADS", "CheckpointError", "Dims", "ENCODER_EPS", "Release",
           "ReleaseError", "encoder_layer_prefixes", "open_release"]
