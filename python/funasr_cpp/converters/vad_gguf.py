"""FSMN-VAD release folder (model.pt, config.yaml, am.mvn) -> one ``fsmn_vad`` GGUF.

The release is iic/speech_fsmn_vad_zh-cn-16k-common-pytorch (ModelScope) = funasr/fsmn-vad
(Hugging Face). What upstream runs (funasr 1.4.16, funasr/models/fsmn_vad_streaming/):
WavFrontendOnline (Kaldi fbank, LFR, CMVN from am.mvn) -> FSMN encoder (encoder.py) -> frame
posteriors -> FsmnVADStreaming's decision logic, configured by model_conf (VADXOptions).

The GGUF holds all of it: the frontend constants (fsmn_vad.frontend.*; CMVN as two arrays), the
encoder's shapes (fsmn_vad.encoder.*), every VADXOptions value (fsmn_vad.options.*; a key missing
from model_conf takes VADXOptions' default, as upstream does) and the weights, f32 (the network
has 0.4 M parameters). Values our runtime cannot run as upstream does are refused here, with the
config key named.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT

from .. import keys
from .errors import ReleaseError
from .gguf_out import Tensor, check_writable_dir, write_gguf
from .release_files import config_section, load_cmvn, load_yaml, sha256_file, unwrap_state_dict
from .torch_zip import TorchZip

GGUF_NAME = "fsmn-vad-f32.gguf"
VAD_MODELS = ("FsmnVADStreaming",)

# VADXOptions (model.py) fields with upstream's defaults; their type is the default's type
OPTION_DEFAULTS: dict = {
    "sample_rate": 16000, "detect_mode": 1, "snr_mode": 0, "max_end_silence_time": 800,
    "max_start_silence_time": 3000, "do_start_point_detection": True, "do_end_point_detection": True,
    "window_size_ms": 200, "sil_to_speech_time_thres": 150, "speech_to_sil_time_thres": 150,
    "speech_2_noise_ratio": 1.0, "do_extend": 1, "lookback_time_start_point": 200,
    "lookahead_time_end_point": 100, "max_single_segment_time": 60000, "nn_eval_block_size": 8,
    "dcd_block_size": 4, "snr_thres": -100.0, "noise_frame_num_used_for_snr": 100, "decibel_thres": -100.0,
    "speech_noise_thres": 0.6, "fe_prior_thres": 1e-4, "silence_pdf_num": 1, "sil_pdf_ids": [0],
    "speech_noise_thresh_low": -0.1, "speech_noise_thresh_high": 0.3, "output_frame_probs": False,
    "frame_in_ms": 10, "frame_length_ms": 25,
}
# kept as integers in the GGUF (the rest are floats, booleans, or the id list)
_INT_OPTIONS = ("detect_mode", "snr_mode", "noise_frame_num_used_for_snr", "silence_pdf_num", "sample_rate",
                "nn_eval_block_size", "dcd_block_size", "do_extend")
_BOOL_OPTIONS = ("do_start_point_detection", "do_end_point_detection", "output_frame_probs")
# encoder_conf field -> its GGUF key
ENCODER_KEYS = {"input_dim": keys.KEY_VAD_ENC_INPUT_DIM, "input_affine_dim": keys.KEY_VAD_ENC_INPUT_AFFINE_DIM,
                "fsmn_layers": keys.KEY_VAD_ENC_FSMN_LAYERS, "linear_dim": keys.KEY_VAD_ENC_LINEAR_DIM,
                "proj_dim": keys.KEY_VAD_ENC_PROJ_DIM, "lorder": keys.KEY_VAD_ENC_LORDER,
                "rorder": keys.KEY_VAD_ENC_RORDER, "lstride": keys.KEY_VAD_ENC_LSTRIDE,
                "rstride": keys.KEY_VAD_ENC_RSTRIDE, "output_affine_dim": keys.KEY_VAD_ENC_OUTPUT_AFFINE_DIM,
                "output_dim": keys.KEY_VAD_ENC_OUTPUT_DIM}


@dataclass
class VadRelease:
    path: Path
    config: dict
    encoder: dict                 # ENCODER_KEYS -> int, use_softmax -> bool
    frontend: dict                # WavFrontendOnline values
    options: dict                 # every VADXOptions field
    cmvn: tuple | None
    tensors: dict                 # upstream key -> StoredTensor
    sources: list = field(default_factory=list)
    _archive: TorchZip | None = None

    def close(self) -> None:
        if self._archive is not None:
            self._archive.close()
            self._archive = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def is_vad_release(folder: Path) -> bool:
    """A funasr folder (model.pt + config.yaml) whose config's model is FSMN-VAD."""
    folder = Path(folder)
    if not ((folder / "model.pt").is_file() and (folder / "config.yaml").is_file()):
        return False
    try:
        return load_yaml(folder / "config.yaml").get("model") in VAD_MODELS
    except (ReleaseError, OSError):
        return False


def _int(value, key: str, where: Path, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ReleaseError(f"{where}: {key} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ReleaseError(f"{where}: {key} = {value} is not supported (at least {minimum})")
    return int(value)


def _options(mc: dict, where: Path) -> dict:
    opts = {}
    for k, default in OPTION_DEFAULTS.items():
        v = mc.get(k, default)
        if k == "sil_pdf_ids":
            if not isinstance(v, (list, tuple)) or not v:
                raise ReleaseError(f"{where}: model_conf.sil_pdf_ids must be a non-empty list of pdf ids, got {v!r}")
            v = [_int(i, "model_conf.sil_pdf_ids", where, 0) for i in v]
        elif k in _BOOL_OPTIONS:
            v = bool(v)
        elif k in _INT_OPTIONS:
            v = _int(v, f"model_conf.{k}", where)
        else:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ReleaseError(f"{where}: model_conf.{k} must be a number, got {v!r}")
            v = float(v)
        opts[k] = v
    if opts["silence_pdf_num"] != len(opts["sil_pdf_ids"]):  # upstream asserts it per frame
        raise ReleaseError(f"{where}: model_conf.silence_pdf_num = {opts['silence_pdf_num']} but sil_pdf_ids has "
                           f"{len(opts['sil_pdf_ids'])} ids")
    if opts["detect_mode"] not in (0, 1):
        raise ReleaseError(f"{where}: model_conf.detect_mode must be 0 (single utterance) or 1 (multiple), "
                           f"got {opts['detect_mode']}")
    if opts["frame_in_ms"] <= 0 or opts["frame_in_ms"] != int(opts["frame_in_ms"]):
        raise ReleaseError(f"{where}: model_conf.frame_in_ms must be a positive whole number of ms")
    if opts["window_size_ms"] < opts["frame_in_ms"]:
        raise ReleaseError(f"{where}: model_conf.window_size_ms must be at least one frame (frame_in_ms)")
    if opts["noise_frame_num_used_for_snr"] < 1:
        raise ReleaseError(f"{where}: model_conf.noise_frame_num_used_for_snr must be >= 1")
    return opts


def open_vad_release(model_dir) -> VadRelease:
    """Open and check an FSMN-VAD release folder (no tensor data is read)."""
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"VAD model folder not found: {path}")
    for name in ("config.yaml", "model.pt"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} is missing; expected an FSMN-VAD release folder "
                                    "(model.pt, config.yaml, am.mvn: iic/speech_fsmn_vad_zh-cn-16k-common-pytorch)")
    where = path / "config.yaml"
    cfg = load_yaml(where)
    model = cfg.get("model")
    if model == "FunASRNano":
        raise ReleaseError(f"{path} is a Fun-ASR-Nano ASR checkpoint, not a VAD model: pass it as the model "
                           "(--model / Model.from_pretrained), and an FSMN-VAD release as the VAD model")
    if model not in VAD_MODELS:
        raise ReleaseError(f"{where}: model is {model!r}, expected 'FsmnVADStreaming' (an FSMN-VAD release)")
    if cfg.get("encoder") != "FSMN":
        raise ReleaseError(f"{where}: encoder is {cfg.get('encoder')!r}, expected 'FSMN'")
    if cfg.get("frontend") not in ("WavFrontendOnline", "WavFrontend"):
        raise ReleaseError(f"{where}: frontend is {cfg.get('frontend')!r}, expected 'WavFrontendOnline'")
    ec, fc, mc = (config_section(cfg, k, where) for k in ("encoder_conf", "frontend_conf", "model_conf"))
    enc = _encoder(ec, where)
    fe = _frontend(fc, enc, where)
    opts = _options(mc, where)
    if opts["frame_in_ms"] != fe["frame_shift"] or opts["frame_length_ms"] != fe["frame_length"]:
        raise ReleaseError(f"{where}: model_conf.frame_in_ms / frame_length_ms ({opts['frame_in_ms']:g} / "
                           f"{opts['frame_length_ms']:g}) differ from frontend_conf.frame_shift / frame_length "
                           f"({fe['frame_shift']} / {fe['frame_length']}): upstream fails on such a config")
    if opts["sample_rate"] != fe["fs"]:
        raise ReleaseError(f"{where}: model_conf.sample_rate differs from frontend_conf.fs")
    if max(opts["sil_pdf_ids"]) >= enc["output_dim"]:
        raise ReleaseError(f"{where}: model_conf.sil_pdf_ids has an id beyond the {enc['output_dim']} pdfs")
    cmvn = _cmvn(fe, enc, path)
    archive, tensors, sources = _weights(path, enc)
    return VadRelease(path=path, config=cfg, encoder=enc, frontend=fe, options=opts, cmvn=cmvn, tensors=tensors,
                      sources=sources, _archive=archive)


def _encoder(ec: dict, where: Path) -> dict:
    """encoder_conf: every ENCODER_KEYS field, as integers this runtime runs, and use_softmax."""
    enc = {}
    for k in ENCODER_KEYS:
        if k not in ec:
            raise ReleaseError(f"{where}: encoder_conf.{k} is missing")
        enc[k] = _int(ec[k], f"encoder_conf.{k}", where, 0)
    for k in ("input_dim", "input_affine_dim", "fsmn_layers", "linear_dim", "proj_dim", "output_affine_dim",
              "output_dim", "lstride"):
        _int(enc[k], f"encoder_conf.{k}", where, 1)
    # lorder 1: upstream's streaming cache keeps the whole past (a slice by -0) and fails on the next chunk
    _int(enc["lorder"], "encoder_conf.lorder", where, 2)
    if enc["rorder"] > 0:
        _int(enc["rstride"], "encoder_conf.rstride", where, 1)
    enc["use_softmax"] = bool(ec.get("use_softmax", True))
    return enc


def _frontend(fc: dict, enc: dict, where: Path) -> dict:
    """frontend_conf over WavFrontendOnline's defaults; values upstream would run differently are refused."""
    fe = {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25, "frame_shift": 10, "lfr_m": 1,
          "lfr_n": 1, "dither": 1.0, "snip_edges": True, "upsacle_samples": True}
    fe.update(fc)
    if fe["fs"] != 16000:
        raise ReleaseError(f"{where}: frontend_conf.fs = {fe['fs']}: only 16000 Hz models are supported")
    if fe["lfr_n"] != 1:
        raise ReleaseError(f"{where}: frontend_conf.lfr_n = {fe['lfr_n']}: the VAD's frames must be the fbank "
                           "frames (lfr_n 1), as its decision logic counts them")
    if _int(fe["lfr_m"], "frontend_conf.lfr_m", where, 1) % 2 == 0:
        raise ReleaseError(f"{where}: frontend_conf.lfr_m = {fe['lfr_m']}: an even LFR window has no centre frame")
    if not fe.get("snip_edges", True) or not fe.get("upsacle_samples", True):
        raise ReleaseError(f"{where}: frontend_conf snip_edges / upsacle_samples false are not supported")
    if fe.get("dither", 0.0):
        # upstream's own Kaldi fbank adds random noise then: not reproducible, and off in the release
        raise ReleaseError(f"{where}: frontend_conf.dither = {fe['dither']}: only dither 0 (the release's) is supported")
    if enc["input_dim"] != fe["n_mels"] * fe["lfr_m"]:
        raise ReleaseError(f"{where}: encoder_conf.input_dim = {enc['input_dim']} but the frontend gives "
                           f"{fe['n_mels']} x {fe['lfr_m']} features")
    return fe


def _cmvn(fe: dict, enc: dict, path: Path) -> tuple | None:
    """frontend_conf.cmvn_file, else an am.mvn beside the model; None when neither is there."""
    cmvn_path = fe.get("cmvn_file")
    cmvn_path = Path(cmvn_path) if cmvn_path else path / "am.mvn"
    if not cmvn_path.is_absolute():
        cmvn_path = path / cmvn_path
    if cmvn_path.is_file():
        cmvn = load_cmvn(cmvn_path)
        if cmvn[0].shape[0] != enc["input_dim"]:
            raise ReleaseError(f"{cmvn_path}: CMVN has {cmvn[0].shape[0]} dims, the features have {enc['input_dim']}")
        return cmvn
    if fe.get("cmvn_file"):
        raise FileNotFoundError(f"config.yaml frontend_conf.cmvn_file points to a missing file: {cmvn_path}")
    return None


def _weights(path: Path, enc: dict) -> tuple[TorchZip, dict, list]:
    """model.pt opened (the archive stays open for the tensors) and checked against expected_tensors."""
    model_pt = path / "model.pt"
    archive = TorchZip(model_pt)
    try:
        tensors = unwrap_state_dict(archive.load(), model_pt)
        expected = expected_tensors(enc)
        for k, (shape, _) in expected.items():
            t = tensors.get(k)
            if t is None:
                raise ReleaseError(f"{model_pt}: missing tensor {k} (expected by config.yaml)")
            if tuple(t.shape) != shape:
                raise ReleaseError(f"{model_pt}: tensor {k} has shape {list(t.shape)}, config.yaml "
                                   f"implies {list(shape)}")
        unknown = [k for k in tensors if k not in expected]
        if unknown:
            hint = " (is this an ASR checkpoint?)" if any(k.startswith(("audio_encoder.", "llm.")) for k in unknown) else ""
            raise ReleaseError(f"{model_pt}: unexpected tensor {unknown[0]}{hint}")
        sources = [("model.pt", sha256_file(model_pt))]
    except Exception:
        archive.close()
        raise
    return archive, tensors, sources


def expected_tensors(enc: dict) -> dict[str, tuple[tuple, str]]:
    """Upstream key -> (its shape, its GGUF name). The GGUF names drop "encoder." and the wrapper
    modules (`.linear`, `fsmn_block.`)."""
    out: dict[str, tuple[tuple, str]] = {}

    def affine(fmt: str, key: str, n_out: int, n_in: int, *index, bias: bool = True) -> None:
        out[f"encoder.{key}.weight"] = ((n_out, n_in), fmt % (*index, "weight"))
        if bias:
            out[f"encoder.{key}.bias"] = ((n_out,), fmt % (*index, "bias"))

    affine(keys.TN_VAD_IN1, "in_linear1.linear", enc["input_affine_dim"], enc["input_dim"])
    affine(keys.TN_VAD_IN2, "in_linear2.linear", enc["linear_dim"], enc["input_affine_dim"])
    for i in range(enc["fsmn_layers"]):
        p = f"fsmn.{i}"
        affine(keys.TN_VAD_FSMN_LINEAR, f"{p}.linear.linear", enc["proj_dim"], enc["linear_dim"], i, bias=False)
        out[f"encoder.{p}.fsmn_block.conv_left.weight"] = ((enc["proj_dim"], 1, enc["lorder"], 1),
                                                           keys.TN_VAD_FSMN_CONV_LEFT % i)
        if enc["rorder"] > 0:
            out[f"encoder.{p}.fsmn_block.conv_right.weight"] = ((enc["proj_dim"], 1, enc["rorder"], 1),
                                                                keys.TN_VAD_FSMN_CONV_RIGHT % i)
        affine(keys.TN_VAD_FSMN_AFFINE, f"{p}.affine.linear", enc["linear_dim"], enc["proj_dim"], i)
    affine(keys.TN_VAD_OUT1, "out_linear1.linear", enc["output_affine_dim"], enc["linear_dim"])
    affine(keys.TN_VAD_OUT2, "out_linear2.linear", enc["output_dim"], enc["output_affine_dim"])
    return out


def _gguf_tensors(rel: VadRelease) -> list[Tensor]:
    """The memory kernels as [taps, channels] (numpy order; ggml: a row of channels per tap)."""
    names = expected_tensors(rel.encoder)
    out = []
    for key, st in rel.tensors.items():
        name = names[key][1]
        if "conv_" in key:
            shape = (st.shape[2], st.shape[0])
            out.append(Tensor(name, shape, QT.F32, lambda st=st: st.to_numpy()[:, 0, :, 0].T.copy()))
        else:
            out.append(Tensor(name, tuple(st.shape), QT.F32, lambda st=st: st.to_numpy()))
    return out


def write_vad_gguf(model_dir, outdir, *, progress: bool = False) -> Path:
    """Convert an FSMN-VAD release folder to ``outdir/fsmn-vad-f32.gguf`` (written beside and moved into
    place: a failure leaves the output dir as it was). The folder is only read."""
    outdir = Path(outdir).expanduser()
    with open_vad_release(model_dir) as rel:
        check_writable_dir(outdir)
        tensors = _gguf_tensors(rel)

        def metadata(w: gguf.GGUFWriter) -> None:
            w.add_name("FSMN-VAD")
            w.add_string(keys.KEY_VAD_SOURCE_FOLDER, rel.path.name)
            for name, digest in rel.sources:
                w.add_string(keys.KEY_VAD_SOURCE_SHA256 % name, digest)
            fe = rel.frontend
            w.add_uint32(keys.KEY_VAD_FE_SAMPLE_RATE, int(fe["fs"]))
            w.add_string(keys.KEY_VAD_FE_WINDOW, str(fe["window"]))
            w.add_uint32(keys.KEY_VAD_FE_N_MELS, int(fe["n_mels"]))
            w.add_uint32(keys.KEY_VAD_FE_FRAME_LENGTH, int(fe["frame_length"] * fe["fs"] // 1000))
            w.add_uint32(keys.KEY_VAD_FE_FRAME_SHIFT, int(fe["frame_shift"] * fe["fs"] // 1000))
            w.add_uint32(keys.KEY_VAD_FE_LFR_M, int(fe["lfr_m"]))
            w.add_uint32(keys.KEY_VAD_FE_LFR_N, int(fe["lfr_n"]))
            if rel.cmvn is not None:
                w.add_array(keys.KEY_VAD_FE_CMVN_SHIFT, rel.cmvn[0].tolist())
                w.add_array(keys.KEY_VAD_FE_CMVN_SCALE, rel.cmvn[1].tolist())
            for k, key in ENCODER_KEYS.items():
                w.add_uint32(key, rel.encoder[k])
            w.add_bool(keys.KEY_VAD_ENC_USE_SOFTMAX, rel.encoder["use_softmax"])
            for k, v in rel.options.items():
                key = keys.KEY_VAD_OPTION % k
                if k == "sil_pdf_ids":
                    w.add_array(key, [int(i) for i in v])
                elif isinstance(v, bool):
                    w.add_bool(key, v)
                elif isinstance(v, int):
                    w.add_int32(key, v)
                else:
                    w.add_float64(key, float(v))

        path = outdir / GGUF_NAME
        scratch = Path(tempfile.mkdtemp(prefix=".funasr-convert-", dir=outdir))
        try:
            tmp = write_gguf(scratch / path.name, keys.ARCH_VAD, metadata, tensors, label=path.name, progress=progress)
            os.replace(tmp, path)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return path


__all__ = ["ENCODER_KEYS", "GGUF_NAME", "OPTION_DEFAULTS", "VadRelease", "expected_tensors", "is_vad_release",
           "open_vad_release", "write_vad_gguf"]
