"""The funasr mmproj graph (SAN-M encoder + adaptor in ggml) vs funasr's audio_encoder + audio_adaptor."""
from __future__ import annotations

import numpy as np
import pytest

from fixtures.checkpoint import write_checkpoint
from fixtures.encoder import features, reference, upstream_fake_token_len
from funasr_cpp import _testing
from funasr_cpp.converters import convert

# (seed, dims override): the default tiny dims, and a second shape (wider encoder, 2 heads of 128,
# more encoder blocks, 3 adaptor blocks) so nothing in the graph is tied to one configuration
CASES = {
    "tiny": (0, None),
    "wide": (7, {"enc_dim": 256, "enc_heads": 2, "enc_ffn": 512, "enc_blocks": 4, "enc_tp_blocks": 3,
                 "adp_layers": 3, "adp_ffn": 384}),
}
FRAME_COUNTS = [1, 2, 3, 7, 8, 9, 17, 38, 101, 500, 1000]  # 1000 LFR frames = 60 s in one chunk


@pytest.fixture(scope="module", params=list(CASES))
def model(request, tmp_path_factory):
    import funasr.models.fun_asr_nano.model  # noqa: F401  (registers FunASRNano)
    from funasr import AutoModel

    seed, dims = CASES[request.param]
    mmproj = {}
    if request.param == "tiny":  # the session's plain_release (seed 0, default dims, no CTC tensors)
        folder = request.getfixturevalue("plain_release")
        mmproj["f32"] = request.getfixturevalue("plain_gguf")[1]
    else:
        folder = tmp_path_factory.mktemp(request.param) / "nano"
        write_checkpoint(folder, seed=seed, dims=dims, ctc=False)
    net = AutoModel(model=str(folder), device="cpu", hub="ms", disable_update=True, disable_pbar=True).model
    net.eval()
    for kind in ("f32", "f16", "bf16", "q8_0"):
        if kind not in mmproj:
            mmproj[kind] = convert(folder, tmp_path_factory.mktemp(f"{request.param}-{kind}"),
                                   llm_type="f32", mmproj_type=kind, progress=False)[1]
    return net, mmproj


def test_token_count_matches_upstream_rule(model):
    _, mmproj = model
    enc = _testing.AudioEncoder(str(mmproj["f32"]), n_threads=2)
    for t in list(range(1, 80)) + [500, 1000, 2999]:
        assert enc.n_tokens(t) == upstream_fake_token_len(t), t


@pytest.mark.parametrize("flash_attn", ["off", "on"])
def test_f32_encoder_matches_funasr(model, flash_attn):
    net, mmproj = model
    enc = _testing.AudioEncoder(str(mmproj["f32"]), n_threads=2, flash_attn=flash_attn)
    worst = 0.0
    for t in FRAME_COUNTS:
        feats = features(t, seed=t)
        ref = reference(net, feats)
        got = enc.encode(feats)
        n = upstream_fake_token_len(t)
        assert got.shape == (n, ref.shape[1])
        rel = np.abs(got - ref[:n]).max() / np.abs(ref[:n]).max()
        worst = max(worst, rel)
    # flash attention rounds K and V to f16 inside the kernel
    assert worst <= (1e-4 if flash_attn == "off" else 2e-3), worst


@pytest.mark.parametrize("kind,min_cos", [("f16", 0.9999), ("bf16", 0.999), ("q8_0", 0.999)])
@pytest.mark.parametrize("flash_attn", ["off", "on"])
def test_quantized_encoder_cosine(model, kind, min_cos, flash_attn):
    net, mmproj = model
    enc = _testing.AudioEncoder(str(mmproj[kind]), n_threads=2, flash_attn=flash_attn)
    for t in (9, 101, 500):
        feats = features(t, seed=100 + t)
        ref = reference(net, feats)[: upstream_fake_token_len(t)]
        got = enc.encode(feats)
        cos = (got * ref).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(ref, axis=-1)
        assert cos.min() >= min_cos, (kind, t, cos.min())


def test_bad_inputs(model, tmp_path):
    _, mmproj = model
    enc = _testing.AudioEncoder(str(mmproj["f32"]), n_threads=1)
    with pytest.raises(ValueError, match="features must be"):
        enc.encode(np.zeros((5, 80), np.float32))
    with pytest.raises(ValueError, match="no frames"):
        enc.encode(np.zeros((0, 560), np.float32))
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        _testing.AudioEncoder(str(tmp_path / "missing.gguf"))
    (tmp_path / "junk.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ValueError, match="cannot load the audio encoder"):
        _testing.AudioEncoder(str(tmp_path / "junk.gguf"))
