"""The C++ funasr frontend (Kaldi fbank + LFR + CMVN, csrc/frontend/frontend.cpp) against funasr's WavFrontend.

Reference: funasr 1.4.16 WavFrontend with Fun-ASR-Nano's frontend_conf and dither 0, fed a 1-D torch
tensor through extract_fbank as FunASRNano.inference does. Both sides get the same 16 kHz float32 array.
"""
from __future__ import annotations

import numpy as np
import pytest

from funasr_cpp import _testing

SR = 16000
LOG_EPS = float(np.log(np.finfo(np.float32).eps))  # log floor of an all-zero frame

# Parity tolerances (natural-log mel energies). TOL holds for every mel band within DEPTH nats
# (~78 dB) of the strongest band of its fbank frame. Deeper bands sit below the float32 noise
# floor of the reference itself: funasr's fbank backend (kaldi-native-fbank here, torchaudio's
# float32 FFT otherwise) has an error of ~1e-7 of the frame's peak amplitude, i.e. log errors of
# a few 1e-3 at 90+ dB below the peak (seen: 3e-3 vs a float64 fbank for a 7.9 kHz tone's lowest
# bands). Ours does the FFT in double, so there both sides differ by the reference's error.
TOL = 1e-3
DEPTH = 18.0
TOL_DEEP = 1e-2


def n_fbank(n: int) -> int:
    return 0 if n < 400 else 1 + (n - 400) // 160


def n_lfr(n: int) -> int:
    return -(-n_fbank(n) // 6)


@pytest.fixture(scope="module")
def funasr_ref():
    torch = pytest.importorskip("torch")
    wav_frontend = pytest.importorskip("funasr.frontends.wav_frontend")
    from funasr.utils.load_utils import extract_fbank

    fe = wav_frontend.WavFrontend(fs=16000, window="hamming", n_mels=80, frame_length=25, frame_shift=10,
                                  lfr_m=7, lfr_n=6, dither=0.0)

    def features(x: np.ndarray) -> np.ndarray:
        feats, lens = extract_fbank(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                                    data_type="sound", frontend=fe, is_final=True)
        assert feats.dtype == torch.float32
        assert int(lens[0]) == feats.shape[1]
        return feats[0].numpy()

    features.apply_cmvn = wav_frontend.apply_cmvn
    features.torch = torch
    return features


def assert_close(ours: np.ndarray, theirs: np.ndarray, tol: float = TOL, tol_deep: float = TOL_DEEP,
                 depth_ref: np.ndarray | None = None) -> float:
    """Max abs difference <= tol on bands within DEPTH nats of their frame's strongest band (judged
    on depth_ref, default theirs), <= tol_deep elsewhere; returns the max abs difference."""
    assert ours.shape == theirs.shape
    if not ours.size:
        return 0.0
    diff = np.abs(ours.astype(np.float64) - theirs).reshape(-1, 7, 80)
    sub = (theirs if depth_ref is None else depth_ref).reshape(-1, 7, 80)
    shallow = sub >= sub.max(axis=-1, keepdims=True) - DEPTH
    assert float(diff[shallow].max()) <= tol, (float(diff[shallow].max()), float(diff.max()))
    assert float(diff.max()) <= tol_deep, float(diff.max())
    return float(diff.max())


def check_parity(ref, x: np.ndarray) -> float:
    """Shapes equal (frame counts exactly) and assert_close against funasr."""
    ours = _testing.frontend_features(x)
    theirs = ref(x)
    assert ours.dtype == np.float32
    assert ours.shape == theirs.shape == (n_lfr(len(x)), 560)
    return assert_close(ours, theirs)


def fbank_lfr_float64(x: np.ndarray) -> np.ndarray:
    """Independent float64 numpy WavFrontend (x32768, Kaldi fbank, LFR 7/6) of float32 samples."""
    x = x.astype(np.float64) * 32768.0
    t = 1 + (len(x) - 400) // 160
    frames = np.lib.stride_tricks.sliding_window_view(x, 400)[::160][:t]
    frames = frames - frames.mean(axis=1, keepdims=True)
    pre = np.concatenate([frames[:, :1] * (1 - 0.97), frames[:, 1:] - 0.97 * frames[:, :-1]], axis=1)
    win = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(400) / 399)
    power = np.abs(np.fft.rfft(pre * win, 512)) ** 2
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    pts = mel(20.0) + np.arange(82) * (mel(8000.0) - mel(20.0)) / 81
    fm = mel(np.arange(256) * 16000.0 / 512)
    bank = np.zeros((80, 257))
    for m in range(80):
        lo, c, hi = pts[m:m + 3]
        bank[m, :256] = np.where((fm > lo) & (fm < hi), np.where(fm <= c, (fm - lo) / (c - lo), (hi - fm) / (hi - c)), 0)
    fb = np.log(np.maximum(power @ bank.T, np.finfo(np.float32).eps))
    t_lfr = -(-t // 6)
    idx = np.clip(6 * np.arange(t_lfr)[:, None] + np.arange(7)[None, :] - 3, 0, t - 1)
    return fb[idx].reshape(t_lfr, 560)


# ----------------------------------------------------------------------------- speech (eSpeak NG)

@pytest.fixture(scope="module")
def long_speech():
    """{'zh': array, 'en': array}: two sentences each spoken by eSpeak NG (22050 Hz int16),
    resampled to 16 kHz float32 (fixtures.speech)."""
    from fixtures.speech import espeak

    texts = {"zh": "今天天气很好，我们一起去公园散步吧。语音识别测试一二三。",
             "en": "The quick brown fox jumps over the lazy dog. Speech recognition test, one two three."}
    out = {}
    for lang, text in texts.items():
        out[lang] = espeak(text, {"zh": "cmn", "en": "en"}[lang])
        assert out[lang].dtype == np.float32 and len(out[lang]) > 2 * SR
    return out


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_speech_parity(funasr_ref, long_speech, lang):
    x = long_speech[lang]
    check_parity(funasr_ref, x)
    # quiet and loud versions of the same speech
    check_parity(funasr_ref, (x * 0.01).astype(np.float32))
    check_parity(funasr_ref, (x / max(1e-9, float(np.abs(x).max())) * 0.99).astype(np.float32))


# ----------------------------------------------------------------------------- synthetic signals

def _tone(freq, amp, seconds=2.0):
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("name,make", [
    ("tone_440", lambda: _tone(440, 0.5)),
    ("tone_3k", lambda: _tone(3000, 0.25)),
    ("tone_7900", lambda: _tone(7900, 0.8)),
    ("tones_mix", lambda: _tone(150, 0.3) + _tone(1234.5, 0.1) + _tone(6000, 0.05)),
    ("chirp", lambda: (0.5 * np.sin(2 * np.pi * (50 + 1950 * np.arange(3 * SR) / (3 * SR)) * np.arange(3 * SR) / SR)
                       ).astype(np.float32)),
    ("noise", lambda: (np.random.default_rng(1).standard_normal(3 * SR) * 0.1).astype(np.float32)),
    ("noise_full_scale", lambda: np.random.default_rng(2).uniform(-1, 1, 2 * SR).astype(np.float32)),
    ("noise_tiny", lambda: (np.random.default_rng(3).standard_normal(2 * SR) * 1e-4).astype(np.float32)),
])
def test_signal_parity(funasr_ref, name, make):
    check_parity(funasr_ref, make())


def test_silence(funasr_ref):
    x = np.zeros(SR, dtype=np.float32)
    ours = _testing.frontend_features(x)
    assert ours.shape == (n_lfr(SR), 560)
    np.testing.assert_array_equal(ours, np.float32(LOG_EPS))
    check_parity(funasr_ref, x)


@pytest.mark.parametrize("name,make", [
    ("tone_7900", lambda: _tone(7900, 0.8)),
    ("noise", lambda: (np.random.default_rng(4).standard_normal(5 * SR) * 0.05).astype(np.float32)),
    ("tones_mix", lambda: _tone(150, 0.3) + _tone(1234.5, 0.1) + _tone(6000, 0.05)),
])
def test_accuracy_vs_float64(name, make):
    # our only float32 steps are the frame preparation (as in Kaldi) and the output: close to an exact
    # fbank also in the bands 80-100 dB below the frame peak, where float32-FFT fbanks are off by ~3e-3
    x = make()
    assert_close(_testing.frontend_features(x), fbank_lfr_float64(x), tol=1e-4, tol_deep=2e-3)


# ----------------------------------------------------------------------------- lengths, frame counts, LFR edges

# every LFR remainder T_fb % 6 (and the +159-sample floor of snip_edges), 0.02 s .. 35 s
_LENGTHS = sorted({400, 401, 559, 560}
                  | {400 + 160 * (t - 1) for t in range(1, 20)}
                  | {400 + 160 * (t - 1) + 159 for t in range(1, 20)}
                  | {SR * 5 + 1, SR * 10 - 1, SR * 30, SR * 30 + 7 * 160, SR * 35, SR * 35 + 5 * 160 + 3})


def test_lengths_cover_lfr_remainders():
    assert {n_fbank(n) % 6 for n in _LENGTHS} == set(range(6))
    assert max(_LENGTHS) >= 35 * SR


@pytest.mark.parametrize("n", _LENGTHS)
def test_length_parity(funasr_ref, n):
    x = (np.random.default_rng(n).standard_normal(n) * 0.05).astype(np.float32)
    check_parity(funasr_ref, x)


@pytest.mark.parametrize("n", [0, 1, 2, 100, 320, 399])
def test_shorter_than_one_frame(n):
    # funasr shrinks the window to the whole input (frame_length = min(25 ms, N / 16)) and returns one
    # LFR row (or raises for tiny N); we follow the official C++ runtime and return no frame at all
    x = np.full(n, 0.1, dtype=np.float32)
    assert _testing.frontend_features(x).shape == (0, 560)
    assert _testing.frontend_mtmd_chunks(x) == []


def test_one_frame(funasr_ref):
    x = (np.random.default_rng(7).standard_normal(400) * 0.3).astype(np.float32)
    assert _testing.frontend_features(x).shape == (1, 560)
    check_parity(funasr_ref, x)
    # one fbank frame: all 7 sub-frames of the single LFR row are that frame
    f = _testing.frontend_features(x).reshape(7, 80)
    np.testing.assert_array_equal(f, np.broadcast_to(f[0], (7, 80)))


def test_lfr_layout():
    # 13 fbank frames -> 3 LFR rows; row i = frames 6i-3 .. 6i+3 clamped to [0, 12]
    n = 400 + 160 * 12
    x = (np.random.default_rng(11).standard_normal(n) * 0.1).astype(np.float32)
    f = _testing.frontend_features(x)
    assert f.shape == (3, 560)
    sub = f.reshape(3, 7, 80)
    # fbank frame k as it appears in the rows: frame 0 at (0, 3), frame 6 at (1, 3), frame 12 at (2, 3)
    frame = {}
    for i in range(3):
        for j in range(7):
            k = min(max(6 * i + j - 3, 0), 12)
            if k in frame:
                np.testing.assert_array_equal(sub[i, j], frame[k])
            frame[k] = sub[i, j]
    assert sorted(frame) == list(range(13))


def test_dtype_and_shape_errors():
    x = np.random.default_rng(5).standard_normal(SR).astype(np.float32) * 0.1
    np.testing.assert_array_equal(_testing.frontend_features(x.astype(np.float64)), _testing.frontend_features(x))
    np.testing.assert_array_equal(_testing.frontend_features(x[::2]), _testing.frontend_features(x[::2].copy()))
    with pytest.raises(ValueError):
        _testing.frontend_features(x.reshape(2, -1))
    with pytest.raises(ValueError):
        _testing.frontend_features(np.float32(0.5))
    with pytest.raises(TypeError):
        _testing.frontend_features((x * 32767).astype(np.int16))
    with pytest.raises(ValueError):
        _testing.frontend_mtmd_chunks(x.reshape(1, -1))


# ----------------------------------------------------------------------------- CMVN

def test_cmvn(funasr_ref):
    rng = np.random.default_rng(42)
    shift = rng.normal(-10, 3, 560).astype(np.float32)
    scale = rng.uniform(0.1, 2.0, 560).astype(np.float32)
    x = (rng.standard_normal(3 * SR + 1234) * 0.1).astype(np.float32)

    torch = funasr_ref.torch
    cmvn = torch.from_numpy(np.stack([shift, scale]))
    theirs = funasr_ref.apply_cmvn(torch.from_numpy(funasr_ref(x).copy()), cmvn).numpy()
    ours = _testing.frontend_features(x, cmvn_shift=shift, cmvn_scale=scale)
    # differences scale with the CMVN scale (<= 2)
    assert_close(ours, theirs, tol=2 * TOL, tol_deep=2 * TOL_DEEP, depth_ref=funasr_ref(x))

    # exactly (x + shift) * scale on our own plain features
    plain = _testing.frontend_features(x)
    np.testing.assert_allclose(ours, (plain + shift) * scale, rtol=1e-6, atol=1e-5)

    with pytest.raises(ValueError):
        _testing.frontend_features(x, cmvn_shift=shift)
    with pytest.raises(ValueError):
        _testing.frontend_features(x, cmvn_shift=shift[:80], cmvn_scale=scale[:80])
    assert _testing.frontend_features(x[:399], cmvn_shift=shift, cmvn_scale=scale).shape == (0, 560)


# ----------------------------------------------------------------------------- mtmd chunk layout

def _as_rows(chunk: np.ndarray) -> np.ndarray:
    """[80, 7 T] sub-frame layout -> [T, 560] LFR rows."""
    n_mel, n_len = chunk.shape
    assert n_mel == 80 and n_len % 7 == 0
    return np.ascontiguousarray(chunk.T).reshape(n_len // 7, 560)


def test_mtmd_chunks_65s(funasr_ref):
    rng = np.random.default_rng(65)
    x = (rng.standard_normal(65 * SR) * 0.1).astype(np.float32)
    x[10 * SR:12 * SR] += _tone(500, 0.3)
    chunks = _testing.frontend_mtmd_chunks(x)
    assert len(chunks) == 3
    pieces = [x[:30 * SR], x[30 * SR:60 * SR], x[60 * SR:]]
    assert [c.shape for c in chunks] == [(80, 7 * n_lfr(len(p))) for p in pieces] == [(80, 3500), (80, 3500),
                                                                                       (80, 581)]
    for c, p in zip(chunks, pieces):
        assert c.dtype == np.float32
        np.testing.assert_array_equal(_as_rows(c), _testing.frontend_features(p))
        # element-wise: bin m of sub-frame j of LFR row i sits at [m, 7 i + j]
        f = _testing.frontend_features(p)
        i, j, m = 17, 5, 33
        assert c[m, 7 * i + j] == f[i, 80 * j + m]
    # the last chunk also matches funasr on its own
    assert_close(_as_rows(chunks[2]), funasr_ref(pieces[2]))


def test_mtmd_chunks_edges():
    x = (np.random.default_rng(9).standard_normal(30 * SR + 399) * 0.1).astype(np.float32)
    # a tail shorter than one frame gives no chunk
    assert [c.shape for c in _testing.frontend_mtmd_chunks(x)] == [(80, 3500)]
    # a 400-sample tail gives a one-row chunk
    y = np.concatenate([x, np.zeros(1, np.float32)])
    assert [c.shape for c in _testing.frontend_mtmd_chunks(y)] == [(80, 3500), (80, 7)]
    # no chunking
    (whole,) = _testing.frontend_mtmd_chunks(y, chunk_seconds=0)
    np.testing.assert_array_equal(_as_rows(whole), _testing.frontend_features(y))
    # other chunk lengths
    chunks = _testing.frontend_mtmd_chunks(y, chunk_seconds=7)
    assert len(chunks) == 5
    np.testing.assert_array_equal(_as_rows(chunks[1]), _testing.frontend_features(y[7 * SR:14 * SR]))
    assert _testing.frontend_mtmd_chunks(np.zeros(0, np.float32)) == []
