"""A Transformers Fun-ASR-Nano folder (FunAudioLLM/Fun-ASR-Nano-2512-hf), opened and checked.

The folder holds config.json (model_type `fun_asr_nano`, with audio_config, adaptor_config and
text_config), model.safetensors or shards listed in model.safetensors.index.json, optionally
preprocessor_config.json (FunAsrNanoFeatureExtractor), and the Qwen tokenizer files at the root.
Tensors are read with the `safetensors` package (bf16 through ml_dtypes), no torch.

Its tensors are mapped onto funasr's key names so the GGUF writers serve both layouts; where
Transformers' model differs from funasr's (transformers/models/fun_asr_nano/modeling_fun_asr_nano.py),
its semantics win for this layout:
- every adaptor row reaches the LLM (use_low_frame_rate false), no frame stacking (k = 1);
- LayerNorm eps from config.json (adaptor too: default 1e-5, funasr's is 1e-12);
- the feature extractor does not scale samples to the int16 range (input_scale 1; the first
  LayerNorm removes that constant log offset anyway, up to the log floor) and applies no CMVN;
- separate q/k/v projections (fused here into funasr's linear_q_k_v); no CTC branch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .checkpoint import (AudioParams, CtcInfo, Dims, Release, encoder_layer_prefixes, expected_audio_keys,
                         expected_llm_keys)
from .errors import ReleaseError
from .release_files import check_tensors, load_json, sha256_file

# transformers' Qwen3Config defaults, for fields a saved text_config may leave out
QWEN3_DEFAULTS = {"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016, "num_hidden_layers": 32,
                  "num_attention_heads": 32, "num_key_value_heads": 32, "head_dim": 128, "rms_norm_eps": 1e-6,
                  "rope_theta": 10000.0, "max_position_embeddings": 32768, "tie_word_embeddings": False}
# FunAsrNanoEncoderConfig / FunAsrNanoAdaptorConfig defaults
ENCODER_DEFAULTS = {"num_mel_bins": 80, "hidden_size": 512, "num_attention_heads": 4, "intermediate_size": 2048,
                    "num_hidden_layers": 70, "layer_norm_eps": 1e-5, "hidden_act": "relu", "num_stacked_frames": 7,
                    "num_timestamp_prediction_layers": 20, "fsmn_kernel_size": 11}
ADAPTOR_DEFAULTS = {"hidden_size": 1024, "num_attention_heads": 8, "intermediate_size": 256, "num_hidden_layers": 2,
                    "layer_norm_eps": 1e-5, "hidden_act": "relu", "projector_hidden_act": "relu",
                    "projector_hidden_size": 2048}
EXTRACTOR_DEFAULTS = {"feature_size": 80, "sampling_rate": 16000, "frame_length": 25, "frame_shift": 10,
                      "num_frames_lfr": 7, "stride_lfr": 6, "window": "hamming"}


class SafeTensor:
    """One tensor of a safetensors file: shape and dtype known, data read on demand."""

    def __init__(self, handle, key: str, file: Path):
        self._handle, self.key, self.file = handle, key, file
        sl = handle.get_slice(key)
        self.shape = tuple(sl.get_shape())
        self.dtype = {"F32": "f32", "F16": "f16", "BF16": "bf16", "F64": "f64"}.get(sl.get_dtype(),
                                                                                   sl.get_dtype().lower())

    def to_numpy(self, dtype=np.float32, rows: slice | None = None) -> np.ndarray:
        if rows is not None:  # safetensors does not clip a slice to the shape, as numpy does
            data = self._handle.get_slice(self.key)[slice(*rows.indices(self.shape[0]))]
        else:
            data = self._handle.get_tensor(self.key)
        return np.asarray(data).astype(dtype)


class Stacked:
    """Tensors concatenated along the first axis (Transformers' q, k, v -> funasr's linear_q_k_v)."""

    def __init__(self, parts: list):
        self.parts = parts
        self.shape = (sum(p.shape[0] for p in parts),) + tuple(parts[0].shape[1:])
        self.dtype = parts[0].dtype

    def to_numpy(self, dtype=np.float32, rows: slice | None = None) -> np.ndarray:
        data = np.concatenate([p.to_numpy(dtype) for p in self.parts], axis=0)
        return data if rows is None else data[rows]


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = load_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ReleaseError(f"{index}: no weight_map")
        files = sorted(set(weight_map.values()))
        for name in files:
            if not (path / name).is_file():
                raise FileNotFoundError(f"{path / name} is missing (a shard listed in {index.name})")
        return [path / name for name in files]
    single = path / "model.safetensors"
    if not single.is_file():
        raise FileNotFoundError(f"{single} is missing (the weights; or a sharded model.safetensors.index.json)")
    return [single]


def _open_tensors(files: list[Path], closers: list) -> dict[str, SafeTensor]:
    import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy, which safetensors' numpy backend needs)
    from safetensors import SafetensorError, safe_open

    out: dict[str, SafeTensor] = {}
    for f in files:
        try:
            ctx = safe_open(str(f), framework="numpy")
            handle = ctx.__enter__()
        except (SafetensorError, OSError) as exc:
            raise ReleaseError(f"{f}: not a readable safetensors file ({exc})") from None
        closers.append(lambda c=ctx: c.__exit__(None, None, None))
        for key in handle.keys():
            if key in out:
                raise ReleaseError(f"{f}: tensor {key} is also in {out[key].file.name}")
            out[key] = SafeTensor(handle, key, f)
    return out


def _sub(cfg: dict, name: str, defaults: dict, where: Path) -> dict:
    value = cfg.get(name) or {}
    if not isinstance(value, dict):
        raise ReleaseError(f"{where}: {name} must be an object")
    return {**defaults, **value}


def _text_config(cfg: dict, where: Path) -> dict:
    text = _sub(cfg, "text_config", QWEN3_DEFAULTS, where)
    if text.get("model_type", "qwen3") != "qwen3":
        raise ReleaseError(f"{where}: text_config.model_type {text.get('model_type')!r}, expected 'qwen3'")
    rope = text.get("rope_parameters") or {}
    if "rope_theta" in rope:                      # transformers >= 5 nests it
        text["rope_theta"] = rope["rope_theta"]
    if rope.get("rope_type", "default") != "default":
        raise ReleaseError(f"{where}: text_config rope_type {rope.get('rope_type')!r} is not supported (default only)")
    text["model_type"] = "qwen3"
    return text


def _key_map(d: Dims, tensors: dict, tied: bool) -> dict:
    """funasr key -> the Transformers tensor(s) it is made of."""
    out: dict = {}
    enc, proj, lm = "model.audio_tower.layers", "model.multi_modal_projector", "model.language_model"

    def get(name: str):
        t = tensors.get(name)
        if t is None:
            raise ReleaseError(f"missing tensor {name} (expected by config.json)")
        return t

    def linear(dst: str, src: str) -> None:
        out[dst + ".weight"], out[dst + ".bias"] = get(src + ".weight"), get(src + ".bias")

    prefixes = encoder_layer_prefixes(d)
    for i, p in enumerate(prefixes):
        s = f"{enc}.{i}"
        for part in ("weight", "bias"):
            out[f"{p}.self_attn.linear_q_k_v.{part}"] = Stacked([get(f"{s}.self_attn.{x}_proj.{part}")
                                                                 for x in "qkv"])
        linear(p + ".self_attn.linear_out", s + ".self_attn.o_proj")
        out[p + ".self_attn.fsmn_block.weight"] = get(s + ".self_attn.fsmn.conv.weight")
        linear(p + ".feed_forward.w_1", s + ".mlp.fc1")
        linear(p + ".feed_forward.w_2", s + ".mlp.fc2")
        linear(p + ".norm1", s + ".input_layernorm")
        linear(p + ".norm2", s + ".post_attention_layernorm")
    linear("audio_encoder.after_norm", f"{enc}.{d.enc_blocks - 1}.final_layernorm")
    linear("audio_encoder.tp_norm", f"{enc}.{len(prefixes) - 1}.final_layernorm")
    linear("audio_adaptor.linear1", proj + ".linear_1")
    linear("audio_adaptor.linear2", proj + ".linear_2")
    for j in range(d.adp_layers):
        s, p = f"{proj}.layers.{j}", f"audio_adaptor.blocks.{j}"
        for x, y in (("q", "linear_q"), ("k", "linear_k"), ("v", "linear_v"), ("o", "linear_out")):
            linear(f"{p}.self_attn.{y}", f"{s}.self_attn.{x}_proj")
        linear(p + ".feed_forward.w_1", s + ".mlp.fc1")
        linear(p + ".feed_forward.w_2", s + ".mlp.fc2")
        linear(p + ".norm1", s + ".input_layernorm")
        linear(p + ".norm2", s + ".post_attention_layernorm")
    for key in tensors:
        if key.startswith(lm + "."):
            out["llm.model." + key[len(lm) + 1:]] = tensors[key]
    if "lm_head.weight" in tensors:
        out["llm.lm_head.weight"] = tensors["lm_head.weight"]
    elif tied:
        out["llm.lm_head.weight"] = get(lm + ".embed_tokens.weight")
    else:
        raise ReleaseError("missing tensor lm_head.weight (config.json ties no word embeddings)")
    used = {id(t) for t in out.values()} | {id(p) for t in out.values() if isinstance(t, Stacked) for p in t.parts}
    unknown = [k for k, t in tensors.items() if id(t) not in used]
    if unknown:
        raise ReleaseError(f"unexpected tensor {unknown[0]}" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
    return out


def _read_configs(cfg: dict, path: Path, where: Path) -> tuple[Dims, AudioParams, dict]:
    """Dimensions, audio settings and the Qwen3 text_config from config.json and (when present)
    preprocessor_config.json, over transformers' defaults; what this runtime cannot run is refused."""
    audio_cfg = _sub(cfg, "audio_config", ENCODER_DEFAULTS, where)
    text = _text_config(cfg, where)
    adp_cfg = _sub(cfg, "adaptor_config", {**ADAPTOR_DEFAULTS, "hidden_size": text["hidden_size"],
                                           "intermediate_size": text["hidden_size"] // 4}, where)
    pre = path / "preprocessor_config.json"
    fe = {**EXTRACTOR_DEFAULTS, **(load_json(pre) if pre.is_file() else {})}
    for what, c, key in (("audio_config", audio_cfg, "hidden_act"), ("adaptor_config", adp_cfg, "hidden_act"),
                         ("adaptor_config", adp_cfg, "projector_hidden_act")):
        if c[key] != "relu":
            raise ReleaseError(f"{where}: {what}.{key} {c[key]!r} is not supported (relu only)")
    n_layers, n_tp = int(audio_cfg["num_hidden_layers"]), int(audio_cfg["num_timestamp_prediction_layers"])
    if not 0 < n_tp < n_layers:
        raise ReleaseError(f"{where}: audio_config.num_timestamp_prediction_layers {n_tp} is not supported "
                           f"(1 .. num_hidden_layers - 1 = {n_layers - 1})")
    if adp_cfg["hidden_size"] != text["hidden_size"]:
        raise ReleaseError(f"{where}: adaptor_config.hidden_size {adp_cfg['hidden_size']} must equal "
                           f"text_config.hidden_size {text['hidden_size']}")
    n_mels, lfr_m = int(audio_cfg["num_mel_bins"]), int(audio_cfg["num_stacked_frames"])
    if (int(fe["feature_size"]), int(fe["num_frames_lfr"])) != (n_mels, lfr_m):
        raise ReleaseError(f"{pre}: feature_size/num_frames_lfr {fe['feature_size']}/{fe['num_frames_lfr']} "
                           f"disagree with config.json's num_mel_bins/num_stacked_frames {n_mels}/{lfr_m}")
    dims = Dims(feat=n_mels * lfr_m, enc=int(audio_cfg["hidden_size"]), enc_heads=int(audio_cfg["num_attention_heads"]),
                enc_ffn=int(audio_cfg["intermediate_size"]), enc_blocks=n_layers - n_tp, enc_tp_blocks=n_tp,
                kernel=int(audio_cfg["fsmn_kernel_size"]), sanm_shift=0,
                adp_ffn=int(adp_cfg["projector_hidden_size"]), adp_layers=int(adp_cfg["num_hidden_layers"]),
                adp_downsample=1, llm=int(text["hidden_size"]),
                ctc_dim=0, ctc_ffn=0, ctc_layers=0, ctc_vocab=0)
    audio = AudioParams(sample_rate=int(fe["sampling_rate"]), window=str(fe["window"]), n_mels=n_mels,
                        frame_length_ms=float(fe["frame_length"]), frame_shift_ms=float(fe["frame_shift"]),
                        lfr_m=lfr_m, lfr_n=int(fe["stride_lfr"]), snip_edges=True, input_scale=1.0, cmvn_file=None,
                        encoder_eps=float(audio_cfg["layer_norm_eps"]),
                        adaptor_heads=int(adp_cfg["num_attention_heads"]), adaptor_eps=float(adp_cfg["layer_norm_eps"]),
                        use_low_frame_rate=False)
    return dims, audio, text


def open_hf_release(path: Path) -> Release:
    """Open and fully check a Transformers -hf folder (no tensor data is read)."""
    where = path / "config.json"
    cfg = load_json(where)
    if cfg.get("model_type") != "fun_asr_nano":
        raise ReleaseError(f"{where}: model_type {cfg.get('model_type')!r}, expected 'fun_asr_nano' "
                           "(a Transformers Fun-ASR-Nano folder such as FunAudioLLM/Fun-ASR-Nano-2512-hf)")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} is missing (the Qwen tokenizer of the -hf folder)")
    dims, audio, text = _read_configs(cfg, path, where)

    closers: list = []
    try:
        files = _weight_files(path)
        raw = _open_tensors(files, closers)
        try:
            tensors = _key_map(dims, raw, bool(cfg.get("tie_word_embeddings", True)))
        except ReleaseError as exc:
            raise ReleaseError(f"{files[0] if len(files) == 1 else path}: {exc}") from None
        try:
            check_tensors(tensors, expected_audio_keys(dims), path, "config.json")
            check_tensors(tensors, expected_llm_keys(text), path, "config.json (text_config)")
        except ReleaseError as exc:  # name the tensor as this folder does
            msg = str(exc)
            for key, t in tensors.items():
                if f" {key} " in msg and not isinstance(t, Stacked):
                    msg = msg.replace(f" {key} ", f" {t.key} ")
            raise ReleaseError(msg.replace(" llm.model.", " model.language_model.")) from None
        sources = [(f.name, sha256_file(f)) for f in files]
    except BaseException:
        for close in closers:
            close()
        raise
    return Release(path=path, layout="transformers", config=cfg, llm_config=text, tokenizer_dir=path, dims=dims,
                   audio=audio, tensors=tensors, ctc=CtcInfo("absent"), sources=sources, _closers=closers)


__all__ = ["open_hf_release"]
