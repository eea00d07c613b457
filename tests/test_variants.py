"""Every checkpoint variant and config value, against upstream funasr configured the same way:
Fun-ASR-MLT-Nano (every adaptor row), changed frontend/encoder/adaptor keys, keys missing from
config.yaml (upstream's code defaults), values the graph refuses, incomplete or absent CTC."""
from __future__ import annotations

import inspect
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from fixtures.checkpoint import soften_attention, write_checkpoint
from fixtures.cli import mtmd_cli, run_cli, special_tokens
from fixtures.cli import postprocess as cli_postprocess
from fixtures.encoder import features, reference, upstream_fake_token_len
from fixtures.engine import AsrModel
from fixtures.gguf_edit import edit_gguf
from fixtures.speech import wav16k_samples, write_wav16k
from fixtures.upstream import MAX_TOKENS, Upstream, load_automodel, no_dither
from funasr_cpp import _testing
from funasr_cpp.converters import convert
from funasr_cpp.converters.release import ReleaseWarning, open_release
from funasr_cpp.prompt import build_prompt, postprocess


def convert_quiet(folder, out, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReleaseWarning)
        return convert(folder, out, llm_type=kw.pop("llm_type", "f32"), mmproj_type=kw.pop("mmproj_type", "f32"),
                       progress=False, **kw)


def upstream_net(folder):
    import funasr.models.fun_asr_nano.model  # noqa: F401  (registers FunASRNano)
    from funasr import AutoModel

    m = AutoModel(model=str(folder), device="cpu", hub="ms", disable_update=True, disable_pbar=True)
    m.model.eval()
    return m


def upstream_features(model, samples: np.ndarray) -> np.ndarray:
    fe = model.kwargs["frontend"]
    with no_dither(), torch.no_grad():
        feats, _ = fe(torch.tensor(samples)[None], torch.tensor([len(samples)]))
    return feats[0].numpy()


def upstream_rows(model, feats: np.ndarray) -> np.ndarray:
    """The rows upstream writes into the prompt: the first fake_token_len adaptor rows."""
    out = reference(model.model, feats)
    t = feats.shape[0]
    n = upstream_fake_token_len(t) if model.model.use_low_frame_rate else t
    return out[:n]


def rel_err(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# ----------------------------------------------------------------------------- Fun-ASR-MLT-Nano

@pytest.fixture(scope="module")
def mlt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlt")
    folder = tmp / "Fun-ASR-MLT-Nano-2512"
    write_checkpoint(folder, seed=0, variant="mlt")
    soften_attention(folder)
    with pytest.warns(ReleaseWarning, match="no CTC tensors"):
        llm, mmproj = convert(folder, tmp / "gguf", llm_type="f32", mmproj_type="f32", progress=False)
    return {"tmp": tmp, "folder": folder, "llm": llm, "mmproj": mmproj}


def test_mlt_config_has_no_low_frame_rate_key(mlt):
    text = (mlt["folder"] / "config.yaml").read_text()
    assert "use_low_frame_rate" not in text and "ctc_decoder_conf" in text
    with open_release(mlt["folder"]) as r:
        assert r.audio.use_low_frame_rate is False and r.variant == "Fun-ASR-MLT-Nano"
        assert r.ctc.status == "absent" and not r.has_ctc


def test_mlt_token_count_is_every_row(mlt):
    enc = _testing.AudioEncoder(str(mlt["mmproj"]), n_threads=1)
    assert enc.hparams["use_low_frame_rate"] is False
    for t in list(range(1, 80)) + [500, 1000, 2999]:
        assert enc.n_tokens(t) == t, t


def test_mlt_rows_match_funasr(mlt):
    model = upstream_net(mlt["folder"])
    assert model.model.use_low_frame_rate is False  # upstream's default for the missing key
    enc = _testing.AudioEncoder(str(mlt["mmproj"]), n_threads=1, flash_attn="off")
    worst = 0.0
    for t in (1, 2, 7, 8, 9, 38, 217, 500):
        feats = features(t, seed=t)
        ref = upstream_rows(model, feats)
        got = enc.encode(feats)
        assert got.shape == ref.shape == (t, ref.shape[1])
        worst = max(worst, rel_err(got, ref))
    assert worst <= 1e-4, worst


@pytest.fixture(scope="module")
def mlt_upstream(mlt, speech_wavs):
    """Upstream's greedy ids and text for both clips (fp32, dither 0, exact RoPE, warmed up)."""
    wavs = {k: speech_wavs[f"speech-{k}"] for k in ("zh", "en")}
    model = Upstream(mlt["folder"], warmup_wav=wavs["en"])
    res = {}
    for k, w in wavs.items():
        up = model.generate(w, max_length=MAX_TOKENS)
        res[k] = {"ids": up["ids"], "text": up["text"], "wav": w}
    return res


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_mlt_tokens_equal_funasr(mlt, mlt_upstream, speech, lang):
    up = mlt_upstream[lang]
    samples = wav16k_samples(speech[lang])
    with AsrModel(mlt["llm"], mlt["mmproj"], n_threads=1, kv_type="f32", flash_attn="off") as m:
        res = m.generate(samples, build_prompt(), max_new_tokens=MAX_TOKENS)
        up_ids = list(up["ids"])
        while up_ids and m.is_eog(up_ids[-1]):
            up_ids.pop()
        assert res.tokens == up_ids
        assert postprocess(m.detokenize(res.tokens)) == up["text"]
    # every LFR frame became an audio row (the Nano rule would give ~T/8)
    t = len(upstream_features(upstream_net(mlt["folder"]), samples))
    assert res.n_audio_tokens == t > 8 * upstream_fake_token_len(t) - 8


def test_mlt_through_transcribe_cli_and_mtmd_cli(mlt, mlt_upstream, tmp_path):
    """transcribe() and the CLI from the release folder (converted into a cache), and llama-mtmd-cli."""
    import funasr_cpp

    wav, want = mlt_upstream["en"]["wav"], mlt_upstream["en"]["text"]
    load = {"n_threads": 1, "kv_type": "f32", "flash_attn": "off", "llm_type": "f32", "mmproj_type": "f32"}
    exact = {"max_new_tokens": MAX_TOKENS, "max_tokens_per_second": None, "repetition_guard": False}
    with funasr_cpp.Model.from_pretrained(mlt["folder"], cache_dir=tmp_path / "cache", **load) as model:
        assert model.transcribe(str(wav), **exact).text == want.strip()
    out = run_cli("transcribe", "--model", mlt["folder"], "--llm-type", "f32", "--mmproj-type", "f32",
                  "--threads", 1, "--kv-type", "f32", "--flash-attn", "off", "--max-new-tokens", MAX_TOKENS,
                  "--no-repetition-guard", wav, env={"FUNASR_CPP_CACHE": str(tmp_path / "cli-cache")})
    assert out.returncode == 0, out.stderr
    assert out.stdout == want.strip() + "\n"
    cli = cli_postprocess(mtmd_cli(mlt["llm"], mlt["mmproj"], wav), special_tokens(mlt["folder"]))
    assert cli.rstrip() == want.rstrip()


# ----------------------------------------------------------------------------- changed config values

# name -> (config.yaml overrides, fixture dims): each is converted and compared with upstream built
# from the same folder
KEY_CASES = {
    "downsample_rate_2": ({"audio_adaptor_conf": {"downsample_rate": 2}}, {}),
    "downsample_rate_3": ({"audio_adaptor_conf": {"downsample_rate": 3}}, {}),
    "sanm_shift_1": ({"audio_encoder_conf": {"sanm_shfit": 1}}, {}),
    "sanm_shift_5": ({"audio_encoder_conf": {"sanm_shfit": 5}}, {}),
    "lfr_5_3": ({"frontend_conf": {"lfr_m": 5, "lfr_n": 3}}, {}),
    "n_mels_64": ({"frontend_conf": {"n_mels": 64}}, {}),
    "window_hanning": ({"frontend_conf": {"window": "hanning"}}, {}),
    "window_povey": ({"frontend_conf": {"window": "povey"}}, {}),
    "frame_20_8ms": ({"frontend_conf": {"frame_length": 20, "frame_shift": 8}}, {}),
    "kernel_9_heads_4": ({"audio_encoder_conf": {"kernel_size": 9}, "audio_adaptor_conf": {"attention_heads": 4}},
                         {"enc_kernel": 9}),
    "no_upscale": ({"frontend_conf": {"upsacle_samples": False}}, {}),
}


@pytest.mark.parametrize("case", list(KEY_CASES))
def test_changed_key_matches_funasr(case, tmp_path, speech):
    overrides, dims = KEY_CASES[case]
    folder = tmp_path / "nano"
    write_checkpoint(folder, seed=2, ctc=False, config=overrides, dims=dims)
    _, mmproj = convert_quiet(folder, tmp_path / "gguf")
    model = upstream_net(folder)
    enc = _testing.AudioEncoder(str(mmproj), n_threads=1, flash_attn="off")
    # frontend: the mmproj's keys give upstream's features
    x = speech["zh"][: 16000 * 2]
    ours, ref = enc.features(x), upstream_features(model, x)
    assert ours.shape == ref.shape
    strong = ref > ref.max(axis=1, keepdims=True) - 18  # bands within 78 dB of the frame peak (test_frontend)
    assert np.abs(ours - ref)[strong].max() <= 1e-3
    # encoder + adaptor rows, and the row count rule
    for t in (1, 5, 9, 38, 101):
        f = features_wide(t, ours.shape[1])
        want = upstream_rows(model, f)
        got = enc.encode(f)
        assert got.shape == want.shape, (t, got.shape, want.shape)
        assert rel_err(got, want) <= 1e-4, (t, rel_err(got, want))


def features_wide(t: int, width: int) -> np.ndarray:
    """test_encoder.features for any feature width"""
    rng = np.random.default_rng(t)
    return (rng.normal(-6, 3, size=(1, width)) + rng.normal(0, 2, size=(t, width))).astype(np.float32)


@pytest.mark.parametrize("low_frame_rate", ["missing", True])
def test_missing_keys_take_upstreams_code_defaults(tmp_path, speech, low_frame_rate):
    """config.yaml without every optional key: the values of upstream's constructors (read off the
    model upstream builds from that folder), and the same features and rows."""
    from funasr.frontends.wav_frontend import WavFrontend
    from funasr.models.llm_asr.adaptor import Transformer
    from funasr.models.sense_voice.model import SenseVoiceEncoderSmall

    fe_keys = ["fs", "window", "n_mels", "frame_length", "frame_shift", "lfr_m", "lfr_n", "snip_edges"]
    overrides = {"frontend_conf": {k: None for k in fe_keys},
                 "audio_encoder_conf": {"kernel_size": None, "sanm_shfit": None, "tp_blocks": None},
                 "audio_adaptor_conf": {"downsample_rate": None, "ffn_dim": None, "n_layer": None,
                                        "use_low_frame_rate": None if low_frame_rate == "missing" else True}}
    sig_fe = inspect.signature(WavFrontend.__init__).parameters
    sig_enc = inspect.signature(SenseVoiceEncoderSmall.__init__).parameters
    sig_adp = inspect.signature(Transformer.__init__).parameters
    n_feat = sig_fe["n_mels"].default * sig_fe["lfr_m"].default
    folder = tmp_path / "nano"
    write_checkpoint(folder, seed=4, ctc=False, config=overrides,
                     dims={"feat_dim": n_feat, "enc_tp_blocks": sig_enc["tp_blocks"].default,
                           "enc_kernel": sig_enc["kernel_size"].default,
                           "adp_downsample": sig_adp["downsample_rate"].default,
                           "adp_ffn": sig_adp["ffn_dim"].default})
    _, mmproj = convert_quiet(folder, tmp_path / "gguf")
    model = upstream_net(folder)
    net, fe = model.model, model.kwargs["frontend"]
    with open_release(folder) as r:
        a, d = r.audio, r.dims
    assert (a.sample_rate, a.window, a.n_mels, a.lfr_m, a.lfr_n, a.snip_edges) == \
        (fe.fs, fe.window, fe.n_mels, fe.lfr_m, fe.lfr_n, fe.snip_edges) == (16000, "hamming", 80, 1, 1, True)
    assert (a.frame_length_ms, a.frame_shift_ms) == (fe.frame_length, fe.frame_shift)
    assert d.adp_downsample == net.audio_adaptor.k == 2
    assert d.adp_layers == len(net.audio_adaptor.blocks) == 2
    assert a.use_low_frame_rate is net.use_low_frame_rate is (low_frame_rate is True)
    assert d.sanm_shift == 0 and d.enc_tp_blocks == len(net.audio_encoder.tp_encoders) == 0
    assert d.kernel == net.audio_encoder.encoders[0].self_attn.fsmn_block.kernel_size[0]
    if low_frame_rate == "missing":
        # k = 2 with every row is the one combination upstream cannot run itself (it logs a shape
        # error and leaves half the audio placeholders as token 0): refused, naming the key
        with pytest.raises(ValueError, match="downsample_rate = 2"):
            _testing.AudioEncoder(str(mmproj), n_threads=1)
        return
    enc = _testing.AudioEncoder(str(mmproj), n_threads=1, flash_attn="off")
    hp = enc.hparams
    assert (hp["lfr_m"], hp["lfr_n"], hp["downsample_rate"], hp["frame_length"]) == (1, 1, 2, 400)
    x = speech["en"][: 16000 * 2]
    ours, ref = enc.features(x), upstream_features(model, x)
    assert ours.shape == ref.shape == (198, 80)
    strong = ref > ref.max(axis=1, keepdims=True) - 18
    assert np.abs(ours - ref)[strong].max() <= 1e-3
    for t in (1, 2, 17, 99, 300):
        f = features_wide(t, 80)
        want, got = upstream_rows(model, f), enc.encode(f)
        assert got.shape == want.shape and rel_err(got, want) <= 1e-4


# mmproj key changes the graph cannot run -> a load error naming the key
REFUSED = {
    "funasr.adaptor.downsample_rate": (9, "downsample_rate = 9"),
    "funasr.encoder.sanm_shift": (6, "sanm_shift = 6"),
    "funasr.frontend.window": ("kaiser", "window = kaiser"),
    "funasr.frontend.snip_edges": (False, "snip_edges = false"),
    "funasr.frontend.lfr_m": (0, "lfr_m"),
    "funasr.adaptor.head_count": (5, "head_count = 5"),
    "funasr.frontend.high_freq": (9000.0, "high_freq"),
    "funasr.encoder.tp_blocks": (7, "tp_blocks = 7"),
}


@pytest.fixture(scope="module")
def nano_f32(plain_gguf):
    return plain_gguf


@pytest.mark.parametrize("key", list(REFUSED))
def test_refused_values(nano_f32, tmp_path, key):
    value, match = REFUSED[key]
    bad = edit_gguf(nano_f32[1], tmp_path / "mmproj-bad.gguf", {key: value})
    with pytest.raises(ValueError, match=match):
        _testing.AudioEncoder(str(bad), n_threads=1)
    with pytest.raises(ValueError, match=match):
        AsrModel(nano_f32[0], bad, n_threads=1)


def test_use_low_frame_rate_key_drives_the_graph(nano_f32, tmp_path):
    """Flipping the key in the mmproj alone switches between the two row rules (same weights)."""
    every = edit_gguf(nano_f32[1], tmp_path / "mmproj-all-rows.gguf", {"funasr.adaptor.use_low_frame_rate": False})
    a = _testing.AudioEncoder(str(nano_f32[1]), n_threads=1, flash_attn="off")
    b = _testing.AudioEncoder(str(every), n_threads=1, flash_attn="off")
    f = features(101, seed=3)
    ra, rb = a.encode(f), b.encode(f)
    assert ra.shape[0] == upstream_fake_token_len(101) and rb.shape[0] == 101
    np.testing.assert_array_equal(ra, rb[: ra.shape[0]])
    # a missing key means upstream's default: every row
    gone = edit_gguf(nano_f32[1], tmp_path / "mmproj-no-key.gguf", {"funasr.adaptor.use_low_frame_rate": None})
    assert _testing.AudioEncoder(str(gone), n_threads=1).n_tokens(101) == 101


# ----------------------------------------------------------------------------- CTC branch

@pytest.mark.parametrize("missing", [3, 43, 85, 86])
def test_incomplete_ctc_converts_and_transcribes_like_funasr(tmp_path, missing, speech):
    folder = tmp_path / "nano"
    write_checkpoint(folder, seed=0, ctc=True, ctc_missing=missing, dims={"ctc_layers": 5})
    soften_attention(folder)
    n_ctc = 86
    match = f"{missing} of {n_ctc} CTC tensors are missing" if missing < n_ctc else "no CTC tensors"
    with pytest.warns(ReleaseWarning, match=match):
        llm, mmproj = convert(folder, tmp_path / "gguf", llm_type="f32", mmproj_type="f32", progress=False)
    import funasr_cpp

    info = funasr_cpp.model_info(mmproj)
    assert info["ctc.status"] == ("incomplete" if missing < n_ctc else "absent")
    assert info["ctc.missing_tensors"] == missing and "unavailable" in info["timestamps"]
    wav = write_wav16k(tmp_path / "zh.wav", speech["zh"])
    with no_dither():
        model = load_automodel(folder)
        assert model.model.ctc_decoder is None  # upstream dropped the branch too
        model.generate(input=[str(wav)], cache={}, batch_size=1, max_length=4)
        want = model.generate(input=[str(wav)], cache={}, batch_size=1, max_length=MAX_TOKENS)[0]["text"]
    with funasr_cpp.Model(llm, mmproj, n_threads=1, kv_type="f32", flash_attn="off") as m:
        exact = {"max_new_tokens": MAX_TOKENS, "max_tokens_per_second": None, "repetition_guard": False}
        assert m.transcribe(str(wav), **exact).text == want.strip()


def test_complete_ctc_is_kept(tmp_path):
    write_checkpoint(tmp_path / "nano", seed=0, ctc=True, dims={"ctc_layers": 5})
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReleaseWarning)  # nothing to warn about
        _, mmproj = convert(tmp_path / "nano", tmp_path / "gguf", llm_type="f32", mmproj_type="f32", progress=False)
    import funasr_cpp

    info = funasr_cpp.model_info(mmproj)
    assert info["ctc.status"] == "complete" and info["ctc.missing_tensors"] == 0 and "timestamps" not in info


def test_convert_cli_reports_provenance(tmp_path):
    folder = tmp_path / "Fun-ASR-Nano-2512"
    write_checkpoint(folder, seed=0, ctc=True, ctc_missing=10)
    out = subprocess.run([sys.executable, "-m", "funasr_cpp.cli", "convert", str(folder), "-o", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "layout: funasr (model.pt)" in out.stdout and "variant: Fun-ASR-Nano" in out.stdout
    assert "CTC branch: incomplete (10 of" in out.stdout and "ModelScope" in out.stdout
    assert "warning:" in out.stderr and "10 of" in out.stderr
    info = subprocess.run([sys.executable, "-m", "funasr_cpp.cli", "info",
                           str(tmp_path / "o" / "mmproj-fun-asr-nano-2512-f16.gguf")],
                          capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, info.stderr
    assert "funasr mmproj" in info.stdout and "ctc.status: incomplete" in info.stdout
    assert "source.layout: funasr" in info.stdout and "source.files: model.pt:" in info.stdout
