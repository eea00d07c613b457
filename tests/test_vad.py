"""FSMN-VAD (funasr_cpp.vad, csrc/vad/fsmn_vad.cpp) against upstream funasr's FsmnVADStreaming on
random-weight releases of the real layout (fixtures/vad_checkpoint.py: a loudness path through the
network makes quiet frames silence and loud ones speech, so the state machine is exercised).

Oracle: upstream ``AutoModel(model=VAD_DIR, **vad_kwargs).generate(input=samples)``, its frame
posteriors and decibels captured from ComputeScores / ComputeDecibel. Checked: the posteriors of
every forward call (f32, max abs <= 1e-4), the decision logic alone on upstream's own posteriors
(identical segments), and the whole path (identical segments) on speech with pauses, noise,
silence, a tone, 0.3 s, 1 s and 3-minute inputs, with the checkpoint's values and changed ones;
then ``transcribe(vad="fsmn")`` against upstream's ``AutoModel(model=ASR, vad_model=VAD)``."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from fixtures.speech import write_wav16k
from fixtures.vad_checkpoint import MODEL_CONF, write_vad_checkpoint
from fixtures.vad_clips import VARIANT_CONFIG, vad_clips
from funasr_cpp.converters import ReleaseError
from funasr_cpp.converters.vad_gguf import OPTION_DEFAULTS, write_vad_gguf
from funasr_cpp.vad import FsmnVad, VadOptions

SR = 16000

# non-default values: (upstream's AutoModel kwargs = vad_kwargs) -> VadOptions fields are the same names
OPTION_SETS = {
    "default": {},
    "end-silence-500": {"max_end_silence_time": 500},
    "end-silence-300-thres-0.8": {"max_end_silence_time": 300, "speech_noise_thres": 0.8},
    "max-segment-3s": {"max_single_segment_time": 3000},
    "lookback-lookahead": {"lookback_time_start_point": 500, "lookahead_time_end_point": 300,
                           "max_end_silence_time": 600},
    "thres-0.9-dynamic": {"speech_noise_thres": 0.9},  # the dynamic schedule sets 0.5 anyway (upstream)
    "single-utterance": {"detect_mode": 0, "max_end_silence_time": 400},
}


@pytest.fixture(scope="module")
def clips(speech):
    return vad_clips(speech)


@pytest.fixture(scope="module")
def vad_release(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vad") / "fsmn-vad"
    write_vad_checkpoint(folder, seed=0)
    return folder


@pytest.fixture(scope="module")
def variant_release(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vad") / "fsmn-vad-variant"
    write_vad_checkpoint(folder, seed=3, config=VARIANT_CONFIG)
    return folder


@pytest.fixture(scope="module")
def vad(vad_release):
    return FsmnVad(write_vad_gguf(vad_release, vad_release.parent / "gguf"), n_threads=1)


@pytest.fixture(scope="module")
def variant_vad(variant_release):
    return FsmnVad(write_vad_gguf(variant_release, variant_release.parent / "gguf"), n_threads=1)


class UpstreamVad:
    """upstream AutoModel(model=VAD_DIR, **kwargs) per option set; generate() records every forward
    call's posteriors and decibels."""

    def __init__(self, folder):
        self.folder = folder
        self.models: dict = {}

    def run(self, x, kwargs):
        from funasr import AutoModel
        from funasr.models.fsmn_vad_streaming.model import FsmnVADStreaming

        key = repr(sorted(kwargs.items()))
        if key not in self.models:
            self.models[key] = AutoModel(model=str(self.folder), device="cpu", disable_update=True,
                                         disable_pbar=True, **kwargs)
        chunks = []
        scores, decibel = FsmnVADStreaming.ComputeScores, FsmnVADStreaming.ComputeDecibel

        def compute_decibel(self, cache=None, frame_count=None):
            n = len(cache["stats"].decibel)
            decibel(self, cache=cache, frame_count=frame_count)
            chunks.append([None, np.asarray(cache["stats"].decibel[n:], dtype=np.float32)])

        def compute_scores(self, feats, cache=None):
            scores(self, feats, cache=cache)
            chunks[-1][0] = cache["stats"].scores[0, -feats.shape[1]:].numpy().copy()

        FsmnVADStreaming.ComputeScores, FsmnVADStreaming.ComputeDecibel = compute_scores, compute_decibel
        try:
            res = self.models[key].generate(input=x, cache={})
        finally:
            FsmnVADStreaming.ComputeScores, FsmnVADStreaming.ComputeDecibel = scores, decibel
        return [tuple(s) for s in res[0]["value"]], [tuple(c) for c in chunks]


@pytest.fixture(scope="module")
def upstream(vad_release):
    return UpstreamVad(vad_release)


@pytest.fixture(scope="module")
def variant_upstream(variant_release):
    return UpstreamVad(variant_release)


# ------------------------------------------------------------------------------------------ converter
def test_gguf_holds_every_option(vad, variant_vad):
    got = vad.info["options"]
    for k, v in MODEL_CONF.items():
        if k in got:
            assert got[k] == pytest.approx(v) if not isinstance(v, list) else got[k] == v, k
    var = variant_vad.info["options"]
    for k, v in VARIANT_CONFIG["model_conf"].items():
        if k in var:
            assert var[k] == (v if isinstance(v, list) else pytest.approx(v)), k
    assert variant_vad.info["lorder"] == 10 and variant_vad.info["rorder"] == 3
    assert set(OPTION_DEFAULTS) >= set(MODEL_CONF)


def test_missing_model_conf_keys_take_upstreams_defaults(tmp_path):
    folder = tmp_path / "sparse"
    write_vad_checkpoint(folder, config={"model_conf": {"lookahead_time_end_point": None, "snr_thres": None}})
    v = FsmnVad(write_vad_gguf(folder, tmp_path / "out"))
    assert v.info["options"]["lookahead_time_end_point"] == OPTION_DEFAULTS["lookahead_time_end_point"]
    assert v.info["options"]["snr_thres"] == OPTION_DEFAULTS["snr_thres"]


@pytest.mark.parametrize("bad, message", [
    ({"frontend_conf": {"lfr_n": 2}}, "lfr_n"),
    ({"frontend_conf": {"dither": 1.0}}, "dither"),
    ({"encoder_conf": {"lorder": 1}}, "lorder"),
    ({"model_conf": {"frame_in_ms": 20}}, "frame_in_ms"),
    ({"model_conf": {"silence_pdf_num": 2}}, "silence_pdf_num"),
    ({"model_conf": {"sil_pdf_ids": [300]}}, "sil_pdf_ids"),
    ({"model_conf": {"window_size_ms": 5}}, "window_size_ms"),
])
def test_config_values_we_cannot_run_are_refused(tmp_path, bad, message):
    folder = tmp_path / "bad"
    write_vad_checkpoint(folder, config=bad)
    out = tmp_path / "out"
    with pytest.raises(ReleaseError, match=message):
        write_vad_gguf(folder, out)
    assert not out.exists() or not any(out.iterdir())  # nothing written


# ------------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize("name", ["pauses", "noise", "tone", "3min"])
def test_posteriors_equal_upstream(vad, upstream, clips, name):
    _, up = upstream.run(clips[name], {})
    ours = vad._vad.chunks(clips[name])
    assert [len(c[1]) for c in ours] == [len(p) for p, _ in up]  # the same frames in the same calls
    for (first, post, db), (up_post, up_db) in zip(ours, up):
        assert np.abs(post - up_post).max() <= 1e-4
        assert np.abs(db - up_db).max() <= 1e-3


def test_variant_posteriors_equal_upstream(variant_vad, variant_upstream, clips):
    """right memory (rorder 3), dilated left memory (lstride 2), two silence pdfs"""
    for name in ("pauses", "3min"):
        _, up = variant_upstream.run(clips[name], {})
        ours = variant_vad._vad.chunks(clips[name])
        assert [len(c[1]) for c in ours] == [len(p) for p, _ in up]
        for (_, post, _), (up_post, _) in zip(ours, up):
            assert np.abs(post - up_post).max() <= 1e-4


def test_the_fixture_exercises_the_state_machine(upstream, clips):
    segs, _ = upstream.run(clips["pauses"], {})
    assert len(segs) >= 3  # speech and silence decisions both occur
    segs, _ = upstream.run(clips["3min"], {})
    assert len(segs) >= 8 and any(b - a > 30000 for a, b in segs)


@pytest.mark.parametrize("option", list(OPTION_SETS))
@pytest.mark.parametrize("name", ["pauses", "noise", "silence", "tone", "0.3s", "1s", "3min"])
def test_segments_equal_upstream(vad, upstream, clips, name, option):
    kwargs = OPTION_SETS[option]
    expected, up_chunks = upstream.run(clips[name], kwargs)
    opts = VadOptions(**kwargs)
    # the decision logic alone, on upstream's own posteriors and decibels
    assert [tuple(s) for s in vad._vad.decide(up_chunks, opts.native())] == expected
    # the whole path
    assert vad.segments(clips[name], opts) == expected


@pytest.mark.parametrize("option", ["default", "end-silence-500", "max-segment-3s"])
def test_variant_segments_equal_upstream(variant_vad, variant_upstream, clips, option):
    kwargs = OPTION_SETS[option]
    for name in ("pauses", "3min"):
        expected, _ = variant_upstream.run(clips[name], kwargs)
        assert variant_vad.segments(clips[name], VadOptions(**kwargs)) == expected


def test_input_forms(vad, clips, tmp_path):
    x = clips["pauses"]
    wav = write_wav16k(tmp_path / "p.wav", x)
    import soundfile as sf

    stored = sf.read(str(wav), dtype="float32")[0]  # the WAV holds int16: its own decisions
    assert vad.segments(str(wav)) == vad.segments(wav.read_bytes()) == vad.segments(stored)
    ref = vad.segments(x)
    assert vad.segments(x.astype(np.float64)) == ref
    assert vad.segments(x, sample_rate=SR) == ref
    assert vad.segments(np.zeros(0, np.float32)) == [] and vad.segments(np.zeros(100, np.float32)) == []


def test_bad_vad_options(vad):
    with pytest.raises(ValueError, match="chunk_size_ms"):
        VadOptions(chunk_size_ms=1000)
    with pytest.raises(ValueError, match="max_single_segment_time"):
        VadOptions(max_single_segment_time=0)
    with pytest.raises(TypeError, match="speech_noise_thres"):
        VadOptions(speech_noise_thres="high")
    with pytest.raises(ValueError, match="detect_mode"):
        VadOptions(detect_mode=3)
    with pytest.raises(ValueError, match="sil_pdf_ids"):
        vad.segments(np.zeros(16000, np.float32), sil_pdf_ids=[999])
    with pytest.raises(TypeError):
        vad.segments(np.zeros(16000, np.float32), no_such_option=1)


# ------------------------------------------------------------------------------------------ wrong models
def test_wrong_checkpoints_are_named(vad_release, soft_release, soft_gguf, tmp_path):
    from funasr_cpp import Model
    from funasr_cpp.hub import resolve_model, resolve_vad_model

    with pytest.raises(ValueError, match="ASR checkpoint, not a VAD model"):
        resolve_vad_model(soft_release, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="ASR checkpoint, not a VAD model"):
        FsmnVad.from_pretrained(soft_release, cache_dir=tmp_path)
    with pytest.raises(ReleaseError, match="ASR checkpoint, not a VAD model"):
        write_vad_gguf(soft_release, tmp_path / "x")
    with pytest.raises(ValueError, match="FSMN-VAD model, not an ASR checkpoint"):
        resolve_model(vad_release, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="FSMN-VAD model, not an ASR checkpoint"):
        Model.from_pretrained(vad_release, cache_dir=tmp_path)
    llm, mmproj = soft_gguf
    with pytest.raises(ValueError, match="not an FSMN-VAD GGUF: it is an mmproj"):
        FsmnVad(mmproj)
    with pytest.raises(ValueError, match="not an FSMN-VAD GGUF: it is an LLM GGUF"):
        FsmnVad(llm)
    with pytest.raises(FileNotFoundError):
        FsmnVad(tmp_path / "missing.gguf")
    assert not list(tmp_path.glob("**/*.gguf"))


def test_vad_model_is_converted_once_and_cached(vad_release, tmp_path, monkeypatch):
    from funasr_cpp.hub import resolve_vad_model

    first = resolve_vad_model(vad_release, cache_dir=tmp_path)
    mtime = first.stat().st_mtime_ns
    import funasr_cpp.converters as conv

    monkeypatch.setattr(conv, "write_vad_gguf", lambda *a, **k: pytest.fail("converted twice"))
    assert resolve_vad_model(vad_release, cache_dir=tmp_path) == first
    assert first.stat().st_mtime_ns == mtime
    assert resolve_vad_model(first) == first and resolve_vad_model(first.parent) == first


def test_hub_alias_offline_fails_fast(tmp_path, monkeypatch):
    from funasr_cpp.hub import resolve_vad_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ConnectionError, match="funasr/fsmn-vad"):
        resolve_vad_model("fsmn-vad", cache_dir=tmp_path)
    with pytest.raises(ConnectionError, match="iic/speech_fsmn_vad"):
        resolve_vad_model("fsmn-vad", cache_dir=tmp_path, hub="modelscope")


# ------------------------------------------------------------------------------------------ end to end
LOAD = {"n_threads": 1, "kv_type": "f32", "flash_attn": "off"}


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, clips, soft_release, vad_release, speech_wavs):
    """2.5 minutes through upstream's AutoModel(model=ASR, vad_model=VAD, vad_kwargs=30 s)"""
    from fixtures.upstream import MAX_TOKENS, load_automodel, no_dither

    tmp = tmp_path_factory.mktemp("vad-e2e")
    wav = write_wav16k(tmp / "long.wav", clips["3min"][: 150 * SR])
    with no_dither():
        model = load_automodel(soft_release, vad_model=str(vad_release),
                               vad_kwargs={"max_single_segment_time": 30000})
        model.generate(input=str(speech_wavs["speech-en"]), max_length=4)  # warm-up (see fixtures.upstream)
        res = model.generate(input=str(wav), max_length=MAX_TOKENS)
        from funasr import AutoModel

        vad_only = AutoModel(model=str(vad_release), device="cpu", disable_update=True, disable_pbar=True,
                             max_single_segment_time=30000).generate(input=str(wav))
    return {"wav": wav, "text": res[0]["text"], "segments": [tuple(s) for s in vad_only[0]["value"]]}


def test_transcribe_with_fsmn_vad_equals_upstream(e2e, soft_gguf, vad):
    from fixtures.upstream import MAX_TOKENS
    from funasr_cpp import Model

    llm, mmproj = soft_gguf
    with Model(llm, mmproj, vad_model=vad, **LOAD) as m:
        res = m.transcribe(e2e["wav"], max_new_tokens=MAX_TOKENS, max_tokens_per_second=None,
                           repetition_guard=False)
        assert res.timings.vad_ms > 0
        # vad="auto" is "fsmn" with a VAD model
        assert [(round(s.start * 1000), round(s.end * 1000)) for s in res.segments] == e2e["segments"]
        assert len(res.segments) >= 4 and max(s.end - s.start for s in res.segments) <= 30.01 + 1e-9
        assert res.text == e2e["text"]
        energy = m.transcribe(e2e["wav"], vad="energy", max_new_tokens=8)
        assert energy.segments[0].start == 0 and energy.segments[-1].end == pytest.approx(150.0)


def test_cli_vad(e2e, soft_gguf, soft_release, vad, vad_release, tmp_path):
    from fixtures.cli import run_cli

    llm, mmproj = soft_gguf
    out = run_cli("transcribe", "--llm", llm, "--mmproj", mmproj, "--threads", "1", "--vad-model", str(vad.path),
                  "--max-new-tokens", "4", "--format", "json", str(e2e["wav"]))
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert [(round(s["start"] * 1000), round(s["end"] * 1000)) for s in got["segments"]] == e2e["segments"]
    out = run_cli("transcribe", "--llm", llm, "--mmproj", mmproj, "--vad", "fsmn", str(e2e["wav"]))
    assert out.returncode == 1 and "--vad fsmn needs --vad-model" in out.stderr
    out = run_cli("transcribe", "--llm", llm, "--mmproj", mmproj, "--vad-model", str(soft_release),
                  str(e2e["wav"]))
    assert out.returncode == 1 and "not a VAD model" in out.stderr, out.stderr
    assert os.path.isdir(vad_release)


def test_info_shows_the_vad_gguf(vad):
    from funasr_cpp import model_info

    info = model_info(vad.path)
    assert info["file"] == "fsmn-vad" and info["encoder.lorder"] == 20
    assert info["options.max_end_silence_time"] == MODEL_CONF["max_end_silence_time"]
