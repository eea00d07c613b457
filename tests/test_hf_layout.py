"""The Transformers -hf folder (FunAudioLLM/Fun-ASR-Nano-2512-hf): converted with the safetensors
package and checked against transformers' own FunAsrNanoForConditionalGeneration."""
from __future__ import annotations

import json
import shutil
import types

import numpy as np
import pytest
import torch

from fixtures.checkpoint import write_hf_checkpoint
from fixtures.encoder import features
from fixtures.prompts import PROMPT
from funasr_cpp import _testing
from funasr_cpp.converters import ReleaseError, convert, open_release
from funasr_cpp.llm import LlamaModel


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hf")
    info = write_hf_checkpoint(tmp / "Fun-ASR-Nano-2512-hf", seed=5)
    llm, mmproj = convert(info["out_dir"], tmp / "gguf", llm_type="f32", mmproj_type="f32", progress=False)
    return {**info, "tmp": tmp, "llm": llm, "mmproj": mmproj}


def hf_rows(model, feats: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        x = torch.tensor(feats)[None]
        out = model.get_audio_features(x, torch.ones(1, feats.shape[0], dtype=torch.long))
    return out.pooler_output.numpy()


def test_layout_is_recognised(hf):
    with open_release(hf["out_dir"]) as r:
        assert r.layout == "transformers" and r.audio.use_low_frame_rate is False
        assert r.audio.input_scale == 1.0 and r.audio.adaptor_eps == 1e-5 and r.ctc.status == "absent"
        assert [n for n, _ in r.sources] == ["model.safetensors"]
    import funasr_cpp

    info = funasr_cpp.model_info(hf["mmproj"])
    assert info["source.layout"] == "transformers" and info["adaptor.use_low_frame_rate"] is False


def test_rows_match_transformers(hf):
    """get_audio_features' rows (every position, transformers' LayerNorm eps) from the same features."""
    enc = _testing.AudioEncoder(str(hf["mmproj"]), n_threads=1, flash_attn="off")
    worst = 0.0
    for t in (1, 2, 7, 9, 38, 217, 500):
        feats = features(t, seed=t)
        ref = hf_rows(hf["model"], feats)
        got = enc.encode(feats)
        assert got.shape == ref.shape == (t, hf["dims"]["llm_hidden"])
        worst = max(worst, float(np.abs(got - ref).max() / np.abs(ref).max()))
    assert worst <= 1e-4, worst


def test_features_are_the_extractors(hf, speech):
    """transformers' extractor = Kaldi fbank (torchaudio) of the unscaled samples + its own LFR.
    torchaudio is not installable here: funasr's torch port of the same Kaldi fbank stands in for
    it, and the extractor's _apply_lfr runs as written. Our frontend from the -hf mmproj (input
    scale 1) gives those features; funasr's WavFrontend features (x 32768) differ from them by the
    constant 2 ln 32768 where not floored, which the first LayerNorm removes: same rows."""
    from funasr.frontends.wav_frontend import WavFrontend
    from funasr.utils import fbank as kaldi
    from transformers.models.fun_asr_nano.feature_extraction_fun_asr_nano import FunAsrNanoFeatureExtractor

    x = speech["en"][: 16000 * 2]
    cfg = json.loads((hf["tmp"] / "Fun-ASR-Nano-2512-hf" / "preprocessor_config.json").read_text())
    ext = types.SimpleNamespace(num_frames_lfr=cfg["num_frames_lfr"], stride_lfr=cfg["stride_lfr"])
    fb = kaldi.fbank(torch.tensor(x)[None], num_mel_bins=cfg["feature_size"], frame_length=cfg["frame_length"],
                     frame_shift=cfg["frame_shift"], sample_frequency=cfg["sampling_rate"], window_type=cfg["window"],
                     dither=0.0)
    want = FunAsrNanoFeatureExtractor._apply_lfr(ext, fb).numpy()
    enc = _testing.AudioEncoder(str(hf["mmproj"]), n_threads=1, flash_attn="off")
    ours = enc.features(x)
    assert ours.shape == want.shape
    strong = want > want.max(axis=1, keepdims=True) - 18
    assert np.abs(ours - want)[strong].max() <= 1e-3
    # funasr's features (x 32768): a constant offset where nothing is floored
    fe = WavFrontend(fs=16000, n_mels=80, frame_length=25, frame_shift=10, lfr_m=7, lfr_n=6, dither=0.0)

    def funasr_features(samples):
        f, _ = fe(torch.tensor(samples)[None], torch.tensor([len(samples)]))
        return f[0].numpy()

    offset = funasr_features(x) - want
    unfloored = strong & (want > np.log(np.finfo(np.float32).eps) + 1)  # digital silence sits on the floor
    assert unfloored.mean() > 0.5
    assert np.abs(offset[unfloored] - 2 * np.log(32768)).max() <= 1e-3
    # with no bin on the floor (a -40 dB noise floor instead of digital silence) the first
    # LayerNorm removes the offset: both scalings give transformers the same rows
    noisy = (x + 1e-2 * np.random.default_rng(0).standard_normal(len(x))).astype(np.float32)
    fb = kaldi.fbank(torch.tensor(noisy)[None], num_mel_bins=80, frame_length=25, frame_shift=10,
                     sample_frequency=16000, window_type="hamming", dither=0.0)
    a = hf_rows(hf["model"], FunAsrNanoFeatureExtractor._apply_lfr(ext, fb).numpy())
    b = hf_rows(hf["model"], funasr_features(noisy))
    assert np.abs(a - b).max() / np.abs(a).max() <= 1e-4


def test_llm_logits_match_transformers(hf):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf["out_dir"])
    ids = tok.encode(PROMPT, add_special_tokens=False)
    with torch.no_grad():
        ref = hf["model"](input_ids=torch.tensor([ids])).logits[0].numpy()
    with LlamaModel(hf["llm"], n_ctx=1024, n_threads=1, kv_type="f32", flash_attn="off") as llm:
        assert llm.tokenize(PROMPT) == ids
        got = llm.eval_logits(ids)
    assert np.abs(got - ref).max() <= 1e-3


def test_sharded_folder_converts_to_the_same_files(hf, tmp_path):
    info = write_hf_checkpoint(tmp_path / "sharded-hf", seed=5, max_shard_size="300KB")
    index = json.loads((tmp_path / "sharded-hf" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2
    llm, mmproj = convert(info["out_dir"], tmp_path / "gguf", llm_type="f32", mmproj_type="f32", progress=False)
    import gguf

    for a, b in ((llm, hf["llm"]), (mmproj, hf["mmproj"])):
        ta = {t.name: np.array(t.data) for t in gguf.GGUFReader(a).tensors}
        tb = {t.name: np.array(t.data) for t in gguf.GGUFReader(b).tensors}
        assert ta.keys() == tb.keys()
        for k in ta:
            np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)


def _copy(hf, tmp_path, name="bad-hf"):
    dst = tmp_path / name
    shutil.copytree(hf["out_dir"], dst)
    return dst


def _rewrite_safetensors(folder, edit):
    import ml_dtypes  # noqa: F401
    from safetensors.numpy import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


@pytest.mark.parametrize("case,exc,match", [
    ("missing shard", FileNotFoundError, r"model-00002-of-.*\.safetensors is missing"),
    ("wrong shape", ReleaseError, r"model\.multi_modal_projector\.linear_2\.weight has shape"),
    ("other model type", ReleaseError, "model_type 'whisper', expected 'fun_asr_nano'"),
    ("missing encoder tensor", ReleaseError, r"missing tensor model\.audio_tower\.layers\.3\.mlp\.fc1\.bias"),
    ("missing LLM tensor", ReleaseError, r"missing tensor model\.language_model\.layers\.1\.mlp\.up_proj\.weight"),
    ("truncated file", ReleaseError, "not a readable safetensors file"),
])
def test_bad_hf_folders(hf, tmp_path, case, exc, match):
    if case == "missing shard":
        write_hf_checkpoint(tmp_path / "bad-hf", seed=5, max_shard_size="300KB")
        folder = tmp_path / "bad-hf"
        next(folder.glob("model-00002-of-*.safetensors")).unlink()
    else:
        folder = _copy(hf, tmp_path)
    if case == "wrong shape":
        _rewrite_safetensors(folder, lambda t: t.__setitem__(
            "model.multi_modal_projector.linear_2.weight", t["model.multi_modal_projector.linear_2.weight"][:-1]))
    elif case == "other model type":
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "whisper"}))
    elif case == "missing encoder tensor":
        _rewrite_safetensors(folder, lambda t: t.pop("model.audio_tower.layers.3.mlp.fc1.bias"))
    elif case == "missing LLM tensor":
        _rewrite_safetensors(folder, lambda t: t.pop("model.language_model.layers.1.mlp.up_proj.weight"))
    elif case == "truncated file":
        p = folder / "model.safetensors"
        p.write_bytes(p.read_bytes()[:5000])
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(exc, match=match):
        convert(folder, tmp_path / "out", llm_type="f32", mmproj_type="f32", progress=False)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_from_pretrained_accepts_the_hf_folder(hf, tmp_path, speech):
    import funasr_cpp

    with funasr_cpp.Model.from_pretrained(hf["out_dir"], cache_dir=tmp_path / "cache", llm_type="f32",
                                          mmproj_type="f32", n_threads=1) as m:
        x = speech["zh"]
        r = m.transcribe(x, sample_rate=16000, max_new_tokens=8)
        assert r.segments and len(r.segments[0].tokens) <= 8
    assert any((tmp_path / "cache").rglob("mmproj-*-f32.gguf"))
