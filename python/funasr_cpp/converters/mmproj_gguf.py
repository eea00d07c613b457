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

from .gguf_out import FILE_TYPES, Tensor, weight_type, write_gguf
from .release import Release, ReleaseError, encoder_layer_prefixes

PROJECTOR = "funasr"
N_POSITIONS = 3000   # LFR frames (60 ms each at LFR 7/6): 180 s in one chunk

_SANM = {"norm1": "ln1", "self_attn.linear_q_k_v": "attn_qkv", "self_attn.linear_out": "attn_out",
         "norm2": "ln2", "feed_forward.w_1": "ffn_up", "feed_forward.w_2": "ffn_down"}
_BLOCK = {"self_attn.linear_q": "attn_q", "self_attn.linear_k": "attn_k", "self_attn.linear_v": "attn_v",
          "self_attn.linear_out": "attn_out", "norm1": "ln1", "norm2": "ln2",
          "feed_forward.w_1": "ffn_up", "feed_forward.w_2": "ffn_down"}


def sinusoidal_positions(n_pos: int, dim: int) -> np.ndarray:
    """funasr SinusoidalPositionEncoder: positions 1..n_pos, [sin | cos] halves (not interleaved).
    Upstream computes in float32 at run time; we round at the same steps (exp/sin/cos evaluated
    in float64, then rounded) so the table agrees with it to an ulp even at large positions."""
    inc = np.float32(np.log(np.float32(10000.0))) / np.float32(dim / 2 - 1)
    inv = np.exp((np.arange(dim // 2, dtype=np.float32) * -inc).astype(np.float64)).astype(np.float32)
    t = (np.arange(1, n_pos + 1, dtype=np.float32)[:, None] * inv[None, :]).astype(np.float64)
    return np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32)


def load_cmvn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Kaldi nnet-style am.mvn: <AddShift> then <Rescale>, each followed by
    `<LearnRateCoef> 0 [ v1 ... vn ]`. Returns (shift, scale); applied as (x + shift) * scale."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: dict[str, np.ndarray] = {}
    for i, line in enumerate(lines[:-1]):
        head = line.split()[:1]
        nxt = lines[i + 1].split()
        if head and head[0] in ("<AddShift>", "<Rescale>") and nxt[:1] == ["<LearnRateCoef>"]:
            found[head[0]] = np.array(nxt[3:-1], dtype=np.float32)
    if set(found) != {"<AddShift>", "<Rescale>"} or found["<AddShift>"].shape != found["<Rescale>"].shape:
        raise ReleaseError(f"{path}: not a CMVN file with matching <AddShift> and <Rescale> vectors")
    return found["<AddShift>"], found["<Rescale>"]


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

    def linear_or_norm(name: str, key: str) -> None:
        add(name + ".weight", key + ".weight")
        add(name + ".bias", key + ".bias")

    pos = sinusoidal_positions(n_positions(release), d.feat)
    out.append(Tensor("a.position_embd.weight", pos.shape, QT.F32, lambda: pos))
    for i, p in enumerate(encoder_layer_prefixes(d)):
        for src, dst in _SANM.items():
            linear_or_norm(f"a.blk.{i}.{dst}", f"{p}.{src}")
        add(f"a.blk.{i}.conv_dw.weight", f"{p}.self_attn.fsmn_block.weight", f32=True, reshape=(d.enc, d.kernel))
    linear_or_norm("a.post_ln", "audio_encoder.after_norm")
    linear_or_norm("mm.a.norm_pre", "audio_encoder.tp_norm")

    def transformer(prefix: str, key: str, n_layer: int, blk: str) -> None:
        linear_or_norm(f"{prefix}.mlp.1", f"{key}.linear1")
        linear_or_norm(f"{prefix}.mlp.2", f"{key}.linear2")
        for j in range(n_layer):
            for src, dst in _BLOCK.items():
                linear_or_norm(f"{prefix}.{blk}.{j}.{dst}", f"{key}.blocks.{j}.{src}")

    transformer("mm.a", "audio_adaptor", d.adp_layers, "local_blk")
    if release.has_ctc:
        transformer("ctc", "ctc_decoder", d.ctc_layers, "blk")
        linear_or_norm("ctc.out", "ctc.ctc_lo")
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
        w.add_bool("clip.has_vision_encoder", False)
        w.add_bool("clip.has_audio_encoder", True)
        w.add_string("clip.projector_type", PROJECTOR)
        # the nine keys clip.cpp requires for an audio encoder (values of the SAN-M encoder)
        w.add_uint32("clip.audio.embedding_length", d.enc)
        w.add_uint32("clip.audio.attention.head_count", d.enc_heads)
        w.add_uint32("clip.audio.feed_forward_length", d.enc_ffn)
        w.add_uint32("clip.audio.block_count", d.enc_layers)
        w.add_uint32("clip.audio.projection_dim", d.llm)
        w.add_float32("clip.audio.attention.layer_norm_epsilon", a.encoder_eps)
        w.add_uint32("clip.audio.num_mel_bins", a.n_mels)
        w.add_uint32("clip.audio.conv_kernel_size", d.kernel)
        # where the weights came from (`funasr-cpp info` shows it)
        w.add_string("funasr.source.layout", release.layout)
        w.add_string("funasr.source.variant", release.variant)
        w.add_string("funasr.source.release", release.known_release)
        w.add_string("funasr.source.files", " ".join(f"{name}:{sha}" for name, sha in release.sources))
        # frontend (WavFrontend: Kaldi fbank + LFR); preemphasis and the mel range are Kaldi's
        # defaults, which WavFrontend never changes
        w.add_uint32("funasr.frontend.sample_rate", a.sample_rate)
        w.add_string("funasr.frontend.window", a.window)
        w.add_float32("funasr.frontend.frame_length_ms", a.frame_length_ms)
        w.add_float32("funasr.frontend.frame_shift_ms", a.frame_shift_ms)
        w.add_uint32("funasr.frontend.lfr_m", a.lfr_m)
        w.add_uint32("funasr.frontend.lfr_n", a.lfr_n)
        w.add_float32("funasr.frontend.preemphasis", 0.97)
        w.add_float32("funasr.frontend.low_freq", 20.0)
        w.add_float32("funasr.frontend.high_freq", 0.0)        # 0 = Nyquist
        w.add_bool("funasr.frontend.snip_edges", a.snip_edges)
        w.add_float32("funasr.frontend.input_scale", a.input_scale)
        if cmvn is not None:
            w.add_array("funasr.frontend.cmvn_shift", cmvn[0].tolist())
            w.add_array("funasr.frontend.cmvn_scale", cmvn[1].tolist())
        # encoder
        w.add_uint32("funasr.encoder.num_blocks", d.enc_blocks)
        w.add_uint32("funasr.encoder.tp_blocks", d.enc_tp_blocks)
        w.add_uint32("funasr.encoder.sanm_shift", max(d.sanm_shift, 0))  # upstream ignores a negative shift
        w.add_float32("funasr.encoder.input_scale", math.sqrt(d.enc))
        # adaptor; with use_low_frame_rate only the first fake_token_len(T) output rows are kept:
        # o1 = 1 + (T-1)//2; o2 = 1 + (o1-1)//2; fake_token_len = (o2-1)//2 + 1 (T = LFR frames)
        w.add_uint32("funasr.adaptor.block_count", d.adp_layers)
        w.add_uint32("funasr.adaptor.head_count", a.adaptor_heads)
        w.add_float32("funasr.adaptor.layer_norm_epsilon", a.adaptor_eps)
        w.add_uint32("funasr.adaptor.downsample_rate", d.adp_downsample)
        w.add_bool("funasr.adaptor.use_low_frame_rate", a.use_low_frame_rate)
        # CTC branch: "complete" (tensors below), "incomplete" or "absent" (left out, no timestamps)
        w.add_string("funasr.ctc.status", release.ctc.status)
        w.add_uint32("funasr.ctc.missing_tensors", release.ctc.n_missing)
        if release.has_ctc:
            w.add_uint32("funasr.ctc.block_count", d.ctc_layers)
            w.add_uint32("funasr.ctc.head_count", d.ctc_heads)
            w.add_float32("funasr.ctc.layer_norm_epsilon", a.adaptor_eps)
            w.add_uint32("funasr.ctc.downsample_rate", d.ctc_downsample)
            w.add_uint32("funasr.ctc.vocab_size", d.ctc_vocab)
            w.add_uint32("funasr.ctc.blank_id", int((release.config.get("ctc_conf") or {}).get("blank_id",
                                                                                          d.ctc_vocab - 1)))
            if ctc_tokens is not None:
                w.add_array("funasr.ctc.tiktoken_ranks", ctc_tokens)

    return write_gguf(path, "clip", metadata, tensors, label="mmproj", progress=progress)
