"""The audio side of a release (frontend, SAN-M encoder, adaptor, CTC) as an mtmd mmproj GGUF.

`general.architecture = clip`, projector `funasr`. Tensor names follow mtmd
(`a.blk.N.*`, `mm.a.*`); funasr-specific constants live under `funasr.*` so
the graph and the preprocessor never guess:

  a.position_embd.weight      [560, N_pos] sinusoidal table, row r = position r+1
  a.blk.N.{ln1,attn_qkv,attn_out,ln2,ffn_up,ffn_down}.{weight,bias}
  a.blk.N.conv_dw.weight      FSMN depthwise kernel, ggml [K, C] (numpy (C, K)), F32
                              N = 0 encoders0, 1..49 encoders, 50..69 tp_encoders
  a.post_ln.*                 after_norm (between encoders and tp_encoders)
  mm.a.norm_pre.*             tp_norm (encoder output norm)
  mm.a.mlp.{1,2}.*            adaptor linear1 (ReLU) linear2
  mm.a.local_blk.J.{attn_q,attn_k,attn_v,attn_out,ln1,ln2,ffn_up,ffn_down}.*  adaptor blocks
  ctc.mlp.{1,2}.*, ctc.blk.J.*, ctc.out.*                                      CTC branch (optional)
"""
from __future__ import annotations

import base64
import math
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT

from .. import keys
from .checkpoint import Release, encoder_layer_prefixes
from .errors import ReleaseError
from .gguf_out import FILE_TYPES, Tensor, weight_type, write_gguf
from .release_files import load_cmvn

N_POSITIONS = 3000   # LFR frames (60 ms each at LFR 7/6): 180 s in one chunk

# checkpoint module (under a block's prefix) -> the block part of its GGUF tensors
_SANM = {"norm1": keys.TN_PART_LN1, "self_attn.linear_q_k_v": keys.TN_PART_ATTN_QKV,
         "self_attn.linear_out": keys.TN_PART_ATTN_OUT, "norm2": keys.TN_PART_LN2,
         "feed_forward.w_1": keys.TN_PART_FFN_UP, "feed_forward.w_2": keys.TN_PART_FFN_DOWN}
_BLOCK = {"self_attn.linear_q": keys.TN_PART_ATTN_Q, "self_attn.linear_k": keys.TN_PART_ATTN_K,
          "self_attn.linear_v": keys.TN_PART_ATTN_V, "self_attn.linear_out": keys.TN_PART_ATTN_OUT,
          "norm1": keys.TN_PART_LN1, "norm2": keys.TN_PART_LN2,
          "feed_forward.w_1": keys.TN_PART_FFN_UP, "feed_forward.w_2": keys.TN_PART_FFN_DOWN}


def sinusoidal_positions(n_pos: int, dim: int) -> np.ndarray:
    """funasr SinusoidalPositionEncoder: positions 1..n_pos, [sin | cos] halves (not interleaved).
    Upstream computes in float32 at run time; we round at the same steps (exp/sin/cos evaluated
    in float64, then rounded) so the table agrees with it to an ulp even at large positions."""
    inc = np.float32(np.log(np.float32(10000.0))) / np.float32(dim / 2 - 1)
    inv = np.exp((np.arange(dim // 2, dtype=np.float32) * -inc).astype(np.float64)).astype(np.float32)
    t = (np.arange(1, n_pos + 1, dtype=np.float32)[:, None] * inv[None, :]).astype(np.float64)
    return np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32)


def _ctc_tokens(release: Release) -> list[str] | None:
    """multilingual.tiktoken ranks as base64 strings, in rank order."""
    path = release.path / "multilingual.tiktoken"
    if not path.is_file():
        return None
    ranks: dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="ascii").splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            base64.b64decode(token, validate=True)
            ranks[int(rank)] = token
        except ValueError:
            raise ReleaseError(f"{path}:{n}: expected 'base64token rank'") from None
    if sorted(ranks) != list(range(len(ranks))):
        raise ReleaseError(f"{path}: ranks are not contiguous from 0")
    return [ranks[i] for i in range(len(ranks))]


def n_positions(release: Release) -> int:
    """Rows of the position table: at least 180 s at LFR 7/6, and always a whole mtmd chunk (30 s)."""
    a = release.audio
    frames_per_chunk = 31 * 1000.0 / (a.frame_shift_ms * a.lfr_n)
    return max(N_POSITIONS, int(math.ceil(frames_per_chunk)))


def _tensors(release: Release, type_name: str) -> list[Tensor]:
    d = release.dims
    out: list[Tensor] = []

    def add(name: str, key: str, *, f32: bool = False, reshape=None) -> None:
        shape = tuple(release.tensors[key].shape)
        if reshape is not None:
            shape = reshape
        qt = QT.F32 if f32 else weight_type(type_name, shape)
        out.append(Tensor(name, shape, qt, lambda k=key, s=shape: release.numpy(k).reshape(s)))

    def weight_and_bias(fmt: str, key: str, *index) -> None:
        """GGUF fmt % (*index, "weight" | "bias") <- checkpoint key.weight | key.bias"""
        for part in ("weight", "bias"):
            add(fmt % (*index, part), f"{key}.{part}")

    pos = sinusoidal_positions(n_positions(release), d.feat)
    out.append(Tensor(keys.TN_ENC_POS_EMBD, pos.shape, QT.F32, lambda: pos))
    for i, p in enumerate(encoder_layer_prefixes(d)):
        for src, part in _SANM.items():
            weight_and_bias(keys.TN_ENC_BLK, f"{p}.{src}", i, part)
        add(keys.TN_ENC_CONV_DW % i, f"{p}.self_attn.fsmn_block.weight", f32=True, reshape=(d.enc, d.kernel))
    weight_and_bias(keys.TN_ENC_POST_LN, "audio_encoder.after_norm")
    weight_and_bias(keys.TN_ADP_NORM_PRE, "audio_encoder.tp_norm")

    def transformer(mlp: str, blk: str, key: str, n_layer: int) -> None:
        weight_and_bias(mlp, f"{key}.linear1", 1)
        weight_and_bias(mlp, f"{key}.linear2", 2)
        for j in range(n_layer):
            for src, part in _BLOCK.items():
                weight_and_bias(blk, f"{key}.blocks.{j}.{src}", j, part)

    transformer(keys.TN_ADP_MLP, keys.TN_ADP_BLK, "audio_adaptor", d.adp_layers)
    if release.has_ctc:
        transformer(keys.TN_CTC_MLP, keys.TN_CTC_BLK, "ctc_decoder", d.ctc_layers)
        weight_and_bias(keys.TN_CTC_PROJ, "ctc.ctc_lo")
    return out


def write_mmproj_gguf(release: Release, path: Path, type_name: str = "f16", progress: bool = True) -> Path:
    d, a = release.dims, release.audio
    cmvn = load_cmvn(a.cmvn_file) if a.cmvn_file else None
    if cmvn is not None and cmvn[0].shape[0] != d.feat:
        raise ReleaseError(f"{a.cmvn_file}: CMVN has {cmvn[0].shape[0]} dims, the LFR features have {d.feat}")
    ctc_tokens = _ctc_tokens(release) if release.has_ctc else None
    tensors = _tensors(release, type_name)

    def metadata(w: gguf.GGUFWriter) -> None:
        w.add_type(gguf.GGUFType.MMPROJ)
        w.add_name(release.path.name)
        w.add_file_type(FILE_TYPES[type_name])
        _add_clip_keys(w, release)
        _add_source_keys(w, release)
        _add_frontend_keys(w, release, cmvn)
        _add_encoder_and_adaptor_keys(w, release)
        _add_ctc_keys(w, release, ctc_tokens)

    return write_gguf(path, keys.ARCH_CLIP, metadata, tensors, label="mmproj", progress=progress)


def _add_clip_keys(w: gguf.GGUFWriter, release: Release) -> None:
    """The projector, and the nine keys clip.cpp requires for an audio encoder (values of the SAN-M encoder)."""
    d, a = release.dims, release.audio
    w.add_bool(keys.KEY_CLIP_HAS_VISION, False)
    w.add_bool(keys.KEY_CLIP_HAS_AUDIO, True)
    w.add_string(keys.KEY_CLIP_PROJ_TYPE, keys.PROJECTOR_FUNASR)
    w.add_uint32(keys.KEY_CLIP_A_EMBD, d.enc)
    w.add_uint32(keys.KEY_CLIP_A_HEAD_COUNT, d.enc_heads)
    w.add_uint32(keys.KEY_CLIP_A_FFN, d.enc_ffn)
    w.add_uint32(keys.KEY_CLIP_A_BLOCK_COUNT, d.enc_layers)
    w.add_uint32(keys.KEY_CLIP_A_PROJ_DIM, d.llm)
    w.add_float32(keys.KEY_CLIP_A_LN_EPS, a.encoder_eps)
    w.add_uint32(keys.KEY_CLIP_A_N_MEL_BINS, a.n_mels)
    w.add_uint32(keys.KEY_CLIP_A_CONV_KERNEL, d.kernel)


def _add_source_keys(w: gguf.GGUFWriter, release: Release) -> None:
    """Where the weights came from (`funasr-cpp info` shows it)."""
    w.add_string(keys.KEY_SOURCE_LAYOUT, release.layout)
    w.add_string(keys.KEY_SOURCE_VARIANT, release.variant)
    w.add_string(keys.KEY_SOURCE_RELEASE, release.known_release)
    w.add_string(keys.KEY_SOURCE_FILES, " ".join(f"{name}:{sha}" for name, sha in release.sources))


def _add_frontend_keys(w: gguf.GGUFWriter, release: Release, cmvn) -> None:
    """WavFrontend (Kaldi fbank + LFR); preemphasis and the mel range are Kaldi's defaults, which
    WavFrontend never changes."""
    a = release.audio
    w.add_uint32(keys.KEY_FE_SAMPLE_RATE, a.sample_rate)
    w.add_string(keys.KEY_FE_WINDOW, a.window)
    w.add_float32(keys.KEY_FE_FRAME_LENGTH_MS, a.frame_length_ms)
    w.add_float32(keys.KEY_FE_FRAME_SHIFT_MS, a.frame_shift_ms)
    w.add_uint32(keys.KEY_FE_LFR_M, a.lfr_m)
    w.add_uint32(keys.KEY_FE_LFR_N, a.lfr_n)
    w.add_float32(keys.KEY_FE_PREEMPHASIS, 0.97)
    w.add_float32(keys.KEY_FE_LOW_FREQ, 20.0)
    w.add_float32(keys.KEY_FE_HIGH_FREQ, 0.0)        # 0 = Nyquist
    w.add_bool(keys.KEY_FE_SNIP_EDGES, a.snip_edges)
    w.add_float32(keys.KEY_FE_INPUT_SCALE, a.input_scale)
    if cmvn is not None:
        w.add_array(keys.KEY_FE_CMVN_SHIFT, cmvn[0].tolist())
        w.add_array(keys.KEY_FE_CMVN_SCALE, cmvn[1].tolist())


def _add_encoder_and_adaptor_keys(w: gguf.GGUFWriter, release: Release) -> None:
    d, a = release.dims, release.audio
    w.add_uint32(keys.KEY_ENC_NUM_BLOCKS, d.enc_blocks)
    w.add_uint32(keys.KEY_ENC_TP_BLOCKS, d.enc_tp_blocks)
    w.add_uint32(keys.KEY_ENC_SANM_SHIFT, max(d.sanm_shift, 0))  # upstream ignores a negative shift
    w.add_float32(keys.KEY_ENC_INPUT_SCALE, math.sqrt(d.enc))
    # with use_low_frame_rate only the first fake_token_len(T) adaptor rows are kept:
    # o1 = 1 + (T-1)//2; o2 = 1 + (o1-1)//2; fake_token_len = (o2-1)//2 + 1 (T = LFR frames)
    w.add_uint32(keys.KEY_ADP_BLOCK_COUNT, d.adp_layers)
    w.add_uint32(keys.KEY_ADP_HEAD_COUNT, a.adaptor_heads)
    w.add_float32(keys.KEY_ADP_LN_EPS, a.adaptor_eps)
    w.add_uint32(keys.KEY_ADP_DOWNSAMPLE, d.adp_downsample)
    w.add_bool(keys.KEY_ADP_LOW_FRAME_RATE, a.use_low_frame_rate)


def _add_ctc_keys(w: gguf.GGUFWriter, release: Release, ctc_tokens: list[str] | None) -> None:
    """The CTC branch: "complete" (its sizes and tokens follow), "incomplete" or "absent" (left out:
    no timestamps)."""
    d, a = release.dims, release.audio
    w.add_string(keys.KEY_CTC_STATUS, release.ctc.status)
    w.add_uint32(keys.KEY_CTC_MISSING, release.ctc.n_missing)
    if not release.has_ctc:
        return
    w.add_uint32(keys.KEY_CTC_BLOCK_COUNT, d.ctc_layers)
    w.add_uint32(keys.KEY_CTC_HEAD_COUNT, d.ctc_heads)
    w.add_float32(keys.KEY_CTC_LN_EPS, a.adaptor_eps)
    w.add_uint32(keys.KEY_CTC_DOWNSAMPLE, d.ctc_downsample)
    w.add_uint32(keys.KEY_CTC_VOCAB_SIZE, d.ctc_vocab)
    w.add_uint32(keys.KEY_CTC_BLANK_ID, int((release.config.get("ctc_conf") or {}).get("blank_id", d.ctc_vocab - 1)))
    if ctc_tokens is not None:
        w.add_array(keys.KEY_CTC_TIKTOKEN_RANKS, ctc_tokens)
