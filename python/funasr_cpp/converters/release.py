"""A released Fun-ASR-Nano checkpoint folder, opened and checked.

Two layouts are read (`open_release` tells them apart):
- funasr's (Fun-ASR-Nano-2512, Fun-ASR-MLT-Nano-2512): model.pt (every weight,
  under audio_encoder.*, llm.*, audio_adaptor.* and optionally ctc_decoder.* +
  ctc.*), config.yaml (module hyper-parameters), Qwen3-0.6B/config.json +
  tokenizer files, multilingual.tiktoken (CTC vocabulary);
- Transformers' (Fun-ASR-Nano-2512-hf): config.json (model_type fun_asr_nano),
  model.safetensors or shards with their index, tokenizer files at the root;
  see hf_release.py, which maps its tensors onto funasr's key names.

Both give a checkpoint.Release.

Every dimension is read from the configs, and a key missing from config.yaml
takes upstream's code default (funasr 1.4.16's constructor signatures); every
checkpoint key must be expected and every expected key present with the
expected shape, so a converter never guesses. The one exception is upstream's
own: an absent or incomplete CTC branch is left out with a warning
(funasr/models/fun_asr_nano/checkpoint_utils.py: disable_incomplete_ctc).
"""
from __future__ import annotations

import warnings
from pathlib import Path

from .checkpoint import (ADAPTOR_HEADS, CTC_HINT, AudioParams, CtcInfo, Dims, Release, expected_audio_keys,
                         expected_ctc_keys, expected_llm_keys)
from .errors import ReleaseError, ReleaseWarning
from .hf_release import open_hf_release
from .release_files import check_tensors, config_section, load_json, load_yaml, sha256_file, unwrap_state_dict
from .torch_zip import TorchZip

REQUIRED_FILES = {
    "model.pt": "the weights",
    "config.yaml": "the model configuration",
    "Qwen3-0.6B/config.json": "the Qwen3 LLM configuration",
    "Qwen3-0.6B/tokenizer.json": "the Qwen3 tokenizer",
    "Qwen3-0.6B/tokenizer_config.json": "the Qwen3 tokenizer configuration",
}
DEFAULT_CTC_VOCAB = 60515     # funasr's default when config.yaml has no ctc_vocab_size


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
    enc, adp = config_section(cfg, "audio_encoder_conf", where), config_section(cfg, "audio_adaptor_conf", where)
    fe, ctc = config_section(cfg, "frontend_conf", where), config_section(cfg, "ctc_decoder_conf", where)
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


def check_ctc(tensors: dict, expected: dict, declared: bool, where: Path) -> CtcInfo:
    """Upstream keeps transcribing when the CTC branch is absent or incomplete and only drops
    timestamps (disable_incomplete_ctc); the left-out tensors are removed from `tensors`."""
    present = [k for k in expected if k in tensors]
    missing = [k for k in expected if k not in tensors]
    if declared and present and not missing:
        check_tensors(tensors, expected, where, "config.yaml (CTC branch)")
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
        return open_hf_release(path)
    return open_funasr_release(path)


def open_funasr_release(path: Path) -> Release:
    """funasr's layout: model.pt + config.yaml + Qwen3-0.6B/."""
    for rel, what in REQUIRED_FILES.items():
        if not (path / rel).is_file():
            raise FileNotFoundError(f"{path / rel} is missing ({what}); expected a Fun-ASR-Nano "
                                    "release folder (model.pt, config.yaml, Qwen3-0.6B/...) or a Transformers "
                                    "-hf folder (config.json, model.safetensors, tokenizer files)")
    cfg = load_yaml(path / "config.yaml")
    llm_cfg = load_json(path / "Qwen3-0.6B" / "config.json")
    if llm_cfg.get("model_type") != "qwen3":
        raise ReleaseError(f"{path / 'Qwen3-0.6B/config.json'}: model_type {llm_cfg.get('model_type')!r}, expected 'qwen3'")
    dims, audio = _dims(cfg, llm_cfg, path)

    model_pt = path / "model.pt"
    archive = TorchZip(model_pt)
    try:
        tensors = unwrap_state_dict(archive.load(), model_pt)
        audio_keys, llm, ctc = expected_audio_keys(dims), expected_llm_keys(llm_cfg), expected_ctc_keys(dims)
        check_tensors(tensors, audio_keys, model_pt, "config.yaml")
        check_tensors(tensors, llm, model_pt, "Qwen3-0.6B/config.json")
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


__all__ = ["Release", "ReleaseError", "ReleaseWarning", "check_ctc", "open_funasr_release", "open_release"]
