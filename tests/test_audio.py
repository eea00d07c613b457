"""funasr_cpp.audio: decoding, downmixing and resampling to 16 kHz mono; utterance splitting."""
from __future__ import annotations

import io
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from funasr_cpp.audio import SAMPLE_RATE, audio_duration, load_audio
from funasr_cpp.vad import split_utterances
from fixtures.speech import wav16k_pcm, write_wav16k


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    m = min(len(a), len(b))
    a, b = a[:m].astype(np.float64), b[:m].astype(np.float64)
    return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


def _resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    g = np.gcd(src, dst)
    return resample_poly(x, dst // g, src // g).astype(np.float32)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, speech):
    """(scratch folder, the English eSpeak NG clip at 16 kHz quantised to int16: what the WAV files hold)."""
    return tmp_path_factory.mktemp("audio"), wav16k_pcm(speech["en"]).astype(np.int16)


# --------------------------------------------------------------------------------------------
# files, same rate, lossless: exact

def test_wav_int16_exact(clip):
    tmp, pcm = clip
    path = write_wav16k(tmp / "int16.wav", pcm / 32767)  # the test helper's own writer
    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    np.testing.assert_array_equal(y, pcm / np.float32(32768))
    np.testing.assert_array_equal(load_audio(str(path)), y)  # str and Path alike


def test_wav_float32_exact(clip):
    tmp, pcm = clip
    x = pcm / np.float32(32768)
    sf.write(tmp / "float.wav", x, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp / "float.wav"), x)


def test_flac_exact(clip):
    tmp, pcm = clip
    sf.write(tmp / "a.flac", pcm, 16000, subtype="PCM_16")
    np.testing.assert_array_equal(load_audio(tmp / "a.flac"), pcm / np.float32(32768))


def test_stereo_is_averaged(clip):
    tmp, pcm = clip
    x = pcm / np.float32(32768)
    sf.write(tmp / "stereo.wav", np.stack([x, 0.5 * x], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp / "stereo.wav"), 0.75 * x, atol=1e-7)
    # int16 stereo: (l + r) / 2 of the int16 values, exactly representable in float32
    sf.write(tmp / "stereo16.wav", np.stack([pcm, -pcm // 3], axis=1), 16000, subtype="PCM_16")
    expect = (pcm.astype(np.float32) + (-pcm // 3).astype(np.float32)) / 2 / 32768
    np.testing.assert_allclose(load_audio(tmp / "stereo16.wav"), expect, atol=1e-7)


def test_bytes_and_file_objects(clip):
    tmp, pcm = clip
    sf.write(tmp / "b.flac", pcm, 16000, subtype="PCM_16")
    expect = pcm / np.float32(32768)
    data = (tmp / "b.flac").read_bytes()
    np.testing.assert_array_equal(load_audio(data), expect)
    np.testing.assert_array_equal(load_audio(bytearray(data)), expect)
    with open(tmp / "b.flac", "rb") as f:
        np.testing.assert_array_equal(load_audio(f), expect)
    np.testing.assert_array_equal(load_audio(io.BytesIO(data)), expect)

    class Pipe(io.RawIOBase):  # not seekable: read in full first
        def __init__(self, b):
            self._b = io.BytesIO(b)

        def readable(self):
            return True

        def readinto(self, buf):
            return self._b.readinto(buf)

    np.testing.assert_array_equal(load_audio(Pipe(data)), expect)


def test_sample_rate_for_files_must_match(clip):
    tmp, pcm = clip
    sf.write(tmp / "m.wav", pcm, 16000, subtype="PCM_16")
    assert len(load_audio(tmp / "m.wav", sample_rate=16000)) == len(pcm)
    with pytest.raises(ValueError, match="16000 Hz but sample_rate=8000"):
        load_audio(tmp / "m.wav", sample_rate=8000)


def test_audio_duration(clip):
    tmp, pcm = clip
    sf.write(tmp / "d.wav", np.stack([pcm, pcm], 1), 16000, subtype="PCM_16")
    assert audio_duration(tmp / "d.wav") == pytest.approx(len(pcm) / 16000)
    with open(tmp / "d.wav", "rb") as f:
        assert audio_duration(f) == pytest.approx(len(pcm) / 16000)
        assert f.tell() == 0  # position restored
        assert len(load_audio(f)) == len(pcm)
    assert audio_duration(np.zeros((2, 8000)), sample_rate=8000) == 1.0
    assert audio_duration(np.zeros((8000, 2)), sample_rate=8000) == 1.0
    with pytest.raises(ValueError, match="sample_rate is required"):
        audio_duration(np.zeros(10))


# --------------------------------------------------------------------------------------------
# other rates and lossy codecs

@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_resampled_wav(clip, rate, subtype):
    tmp, pcm = clip
    x = pcm / np.float32(32768)
    src = _resample(x, 16000, rate)
    path = tmp / f"r{rate}-{subtype}.wav"
    sf.write(path, src, rate, subtype=subtype)
    y = load_audio(path)
    assert y.dtype == np.float32 and abs(len(y) - len(x)) <= 1
    # against the band-limited original (8 kHz keeps only 0-4 kHz) ...
    assert _corr(y, _resample(src, rate, 16000)) > 0.999
    # ... and against the original itself
    assert _corr(y, x) > (0.99 if rate == 8000 else 0.999)


def test_resampled_stereo_flac_44k(clip):
    tmp, pcm = clip
    x = pcm / np.float32(32768)
    src = _resample(x, 16000, 44100)
    sf.write(tmp / "s44.flac", np.stack([src, src], 1), 44100, subtype="PCM_16")
    assert _corr(load_audio(tmp / "s44.flac"), x) > 0.999


def test_scipy_fallback_without_soxr(clip, monkeypatch):
    tmp, pcm = clip
    x = pcm / np.float32(32768)
    sf.write(tmp / "fb.wav", _resample(x, 16000, 22050), 22050, subtype="FLOAT")
    with_soxr = load_audio(tmp / "fb.wav")
    monkeypatch.setitem(sys.modules, "soxr", None)  # import soxr -> ImportError
    without = load_audio(tmp / "fb.wav")
    assert without.dtype == np.float32 and abs(len(without) - len(x)) <= 1
    assert _corr(without, x) > 0.999 and _corr(without, with_soxr) > 0.999


@pytest.mark.parametrize("fmt,subtype,rate,channels", [
    ("OGG", "VORBIS", 16000, 1),
    ("OGG", "VORBIS", 44100, 2),
    ("OGG", "OPUS", 48000, 1),
    ("MP3", "MPEG_LAYER_III", 16000, 1),
    ("MP3", "MPEG_LAYER_III", 44100, 2),
])
def test_lossy(clip, fmt, subtype, rate, channels):
    if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
        pytest.fail(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {fmt}/{subtype}")
    tmp, pcm = clip
    x = pcm / np.float32(32768)
    src = _resample(x, 16000, rate)
    if channels == 2:
        src = np.stack([src, src], axis=1)
    path = tmp / f"lossy-{rate}-{channels}.{subtype.lower()}.{fmt.lower()}"
    sf.write(path, src, rate, format=fmt, subtype=subtype)
    y = load_audio(path)
    assert y.dtype == np.float32 and abs(len(y) - len(x)) <= 1  # encoder delay is trimmed
    assert _corr(y, x) > 0.95


# --------------------------------------------------------------------------------------------
# arrays

def test_arrays():
    rng = np.random.default_rng(0)
    pcm = rng.integers(-32768, 32768, 16000, dtype=np.int16)
    ref = pcm / np.float32(32768)
    np.testing.assert_array_equal(load_audio(pcm, sample_rate=16000), ref)
    np.testing.assert_array_equal(load_audio(ref, sample_rate=16000), ref)
    out = load_audio(ref.astype(np.float64), sample_rate=16000)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(
        load_audio(pcm.astype(np.int32) << 16, sample_rate=16000), ref)  # int32 / 2**31
    u8 = rng.integers(0, 256, 100, dtype=np.uint8)
    np.testing.assert_array_equal(load_audio(u8, sample_rate=16000),
                                  (u8.astype(np.float32) - 128) / 128)
    np.testing.assert_array_equal(load_audio(list(ref[:10]), sample_rate=16000), ref[:10])

    # 2-D: [samples, channels] and [channels, samples]
    st = np.stack([pcm, np.zeros_like(pcm)], axis=1)
    half = ref / 2
    for arr in (st, st.T, st.astype(np.float32) / 32768, (st.astype(np.float64) / 32768).T):
        np.testing.assert_allclose(load_audio(arr, sample_rate=16000), half, atol=1e-8)
    np.testing.assert_array_equal(load_audio(pcm[:, None], sample_rate=16000), ref)
    np.testing.assert_array_equal(load_audio(pcm[None, :], sample_rate=16000), ref)
    six = np.tile(ref[:, None], (1, 6))  # 5.1 audio, both layouts
    np.testing.assert_allclose(load_audio(six, sample_rate=16000), ref, atol=1e-7)
    np.testing.assert_allclose(load_audio(six.T, sample_rate=16000), ref, atol=1e-7)

    # other rates are resampled (a band-limited signal: white noise would lose its top band)
    t = np.arange(16000) / 16000
    tones = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)
    y = load_audio(_resample(tones, 16000, 48000), sample_rate=48000)
    assert abs(len(y) - 16000) <= 1 and _corr(y, tones) > 0.999

    with pytest.raises(ValueError, match="sample_rate is required"):
        load_audio(pcm)
    with pytest.raises(ValueError, match="sample_rate"):
        load_audio(pcm, sample_rate=0)
    with pytest.raises(ValueError, match="ambiguous"):
        load_audio(np.zeros((20, 30)), sample_rate=16000)
    with pytest.raises(ValueError, match="1-D or 2-D"):
        load_audio(np.zeros((2, 3, 4)), sample_rate=16000)
    with pytest.raises(TypeError):
        load_audio(np.zeros(10, dtype=bool), sample_rate=16000)


def test_zero_length():
    for arr in (np.zeros(0, np.float32), np.zeros(0, np.int16), np.zeros((0, 2)), np.zeros((2, 0))):
        out = load_audio(arr, sample_rate=44100)
        assert out.dtype == np.float32 and out.shape == (0,)


def test_file_without_samples(tmp_path):
    # a 44-byte WAV, a header and nothing else, is an error, not empty audio
    sf.write(tmp_path / "z.wav", np.zeros(0, np.float32), 22050, subtype="PCM_16")
    assert (tmp_path / "z.wav").stat().st_size == 44
    with pytest.raises(ValueError, match=r"cannot read audio from .*z\.wav: no audio samples"):
        load_audio(tmp_path / "z.wav")
    with pytest.raises(ValueError, match=r"cannot read audio from <44 bytes>: no audio samples"):
        load_audio((tmp_path / "z.wav").read_bytes())


def _wav_bytes(seconds: float, **kwargs) -> bytes:
    """A 16 kHz 16-bit mono WAV-family file (soundfile's format/endian keywords) of noise."""
    x = (np.random.default_rng(0).standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32)
    out = io.BytesIO()
    sf.write(out, x, 16000, subtype="PCM_16", **{"format": "WAV", **kwargs})
    return out.getvalue()


def test_truncated_wav(tmp_path):
    data = _wav_bytes(6.5)  # 104000 samples after a 44-byte header
    (tmp_path / "cut60.wav").write_bytes(data[:60])
    declared = r"its header declares 104000 samples \(6\.50 s\) of audio"
    with pytest.raises(ValueError, match=r"cannot read audio from .*cut60\.wav: truncated: " + declared +
                       r", the file holds 8 samples \(0\.00 s\)"):
        load_audio(tmp_path / "cut60.wav")
    with pytest.raises(ValueError, match=r"<60 bytes>: truncated: " + declared):
        load_audio(data[:60])
    # cut in the middle of the data (and an odd byte short of a whole sample)
    (tmp_path / "half.wav").write_bytes(data[:44 + 2 * 52000 + 1])
    with pytest.raises(ValueError, match=r"half\.wav: truncated: " + declared + r", the file holds 52000 samples \(3\.25 s\)"):
        load_audio(tmp_path / "half.wav")
    with pytest.raises(ValueError, match=r"half\.wav: truncated"):
        audio_duration(tmp_path / "half.wav")
    with open(tmp_path / "half.wav", "rb") as f, pytest.raises(ValueError, match="truncated"):
        load_audio(f)
    with pytest.raises(ValueError, match="truncated"):  # a pipe: read into memory first
        load_audio(_Unseekable(data[:1000]))
    # one byte short
    with pytest.raises(ValueError, match="the file holds 103999 samples"):
        load_audio(data[:-1])


class _Unseekable(io.RawIOBase):
    def __init__(self, data: bytes):
        self._b = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        return self._b.readinto(buf)


@pytest.mark.parametrize("kwargs", [{"endian": "BIG"}, {"format": "RF64"}, {"format": "W64"}, {"format": "WAVEX"}],
                         ids=["RIFX", "RF64", "W64", "WAVEX"])
def test_truncated_wav_family(kwargs):
    data = _wav_bytes(2.0, **kwargs)
    assert len(load_audio(data)) == 32000
    with pytest.raises(ValueError, match=r"truncated: its header declares 32000 samples \(2\.00 s\) of audio, "
                                         r"the file holds 1\d{4} samples"):
        load_audio(data[:len(data) // 2])


def test_wav_length_placeholders():
    # a writer that cannot seek back (ffmpeg or sox into a pipe) leaves a placeholder length: the
    # samples there are read as they are
    data = bytearray(_wav_bytes(0.5))
    for placeholder in (0xFFFFFFFF, 0x7FFFF000):
        data[40:44] = placeholder.to_bytes(4, "little")
        assert len(load_audio(bytes(data))) == 8000
    # trailing chunks after the data are no truncation
    data = _wav_bytes(0.5) + b"LIST" + (4).to_bytes(4, "little") + b"INFO"
    assert len(load_audio(data)) == 8000


# --------------------------------------------------------------------------------------------
# bad input

def test_bad_input(tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        load_audio(missing)
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        load_audio(tmp_path)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(ValueError, match=r"cannot read audio from .*empty\.wav: empty file"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "notes.txt").write_text("this is not audio\n" * 50)
    with pytest.raises(ValueError, match=r"cannot read audio from .*notes\.txt: "):
        load_audio(tmp_path / "notes.txt")
    # a truncated header
    sf.write(tmp_path / "t.wav", np.zeros(1000, np.int16), 16000)
    (tmp_path / "trunc.wav").write_bytes((tmp_path / "t.wav").read_bytes()[:20])
    with pytest.raises(ValueError, match=r"cannot read audio from .*trunc\.wav"):
        load_audio(tmp_path / "trunc.wav")
    with pytest.raises(ValueError, match="cannot read audio from <17 bytes>"):
        load_audio(b"definitely no wav")
    with pytest.raises(ValueError, match="empty"):
        load_audio(b"")
    with pytest.raises(TypeError, match="binary mode"):
        load_audio(io.StringIO("x"))
    with pytest.raises(TypeError):
        load_audio(12345)


def test_non_finite(tmp_path):
    x = np.zeros(1000, np.float32)
    x[[3, 7]] = np.nan
    x[10] = np.inf
    with pytest.raises(ValueError, match="2 NaN and 1 Inf"):
        load_audio(x, sample_rate=16000)
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(ValueError, match=r"nan\.wav has non-finite samples: 2 NaN and 1 Inf"):
        load_audio(tmp_path / "nan.wav")
    # large but finite float samples are passed through (not clipped)
    big = np.array([0.0, 3.0, -1e30], np.float32)
    np.testing.assert_array_equal(load_audio(big, sample_rate=16000), big)


def test_no_scipy_at_import():
    code = "import sys, funasr_cpp.audio; print('scipy' in sys.modules, 'soxr' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------------------------
# splitting

def _synthetic(seconds: float = 600.0, seed: int = 0):
    """Speech-like bursts (modulated noise + tones, 0.3-6 s) separated by 0.2-1.5 s pauses with
    a faint noise floor. Returns the signal and the pauses as sample ranges."""
    rng = np.random.default_rng(seed)
    sr = SAMPLE_RATE
    parts, pauses, pos = [], [], 0
    while pos < seconds * sr:
        n = int(rng.uniform(0.3, 6.0) * sr)
        t = np.arange(n) / sr
        env = 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * rng.uniform(2, 6) * t))  # syllables
        env *= np.minimum(1, np.minimum(t, t[::-1]) / 0.02)  # 20 ms fades
        tone = np.sin(2 * np.pi * rng.uniform(100, 300) * t)
        burst = rng.uniform(0.05, 0.5) * env * (0.6 * tone + 0.4 * rng.standard_normal(n))
        parts.append(burst)
        pos += n
        m = int(rng.uniform(0.2, 1.5) * sr)
        parts.append(1e-4 * rng.standard_normal(m))
        pauses.append((pos, pos + m))
        pos += m
    x = np.concatenate(parts)[: int(seconds * sr)].astype(np.float32)
    return x, pauses


def _check_cover(ranges, n, max_len):
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    for (s0, e0), (s1, e1) in zip(ranges, ranges[1:]):
        assert e0 == s1
    for s, e in ranges:
        assert 0 < e - s <= max_len


def test_split_silence():
    x, pauses = _synthetic()
    n, max_len = len(x), 30 * SAMPLE_RATE
    split_utterances(x)  # warm-up (imports, caches)
    t0 = time.perf_counter()
    ranges = split_utterances(x, max_seconds=30.0, min_seconds=1.0)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0, elapsed
    _check_cover(ranges, n, max_len)
    assert len(ranges) >= 20
    starts = np.array([p[0] for p in pauses])
    ends = np.array([p[1] for p in pauses])
    loud = np.percentile([np.mean(x[i:i + 400] ** 2) for i in range(0, n - 400, 1600)], 95)
    for s, e in ranges[:-1]:
        assert e - s >= SAMPLE_RATE  # min_seconds
        k = int(np.searchsorted(starts, e, side="right")) - 1
        assert k >= 0 and starts[k] <= e < ends[k], f"cut at {e / SAMPLE_RATE:.3f}s is not in a pause"
        energy = np.mean(x[e - 200:e + 200].astype(np.float64) ** 2)
        assert 10 * np.log10(energy / loud) < -40
    assert split_utterances(x) == ranges  # deterministic


def test_split_without_pauses_cuts_at_quietest():
    rng = np.random.default_rng(1)
    sr = SAMPLE_RATE
    n = 70 * sr
    t = np.arange(n) / sr
    env = 1.0 + 0.2 * np.sin(2 * np.pi * 0.37 * t)
    env[int(20 * sr):int(20.05 * sr)] = 0.3  # a dip, 10 dB down: the only quiet spot early on
    x = (0.1 * env * rng.standard_normal(n)).astype(np.float32)
    ranges = split_utterances(x)
    _check_cover(ranges, n, 30 * sr)
    assert 20 * sr <= ranges[0][1] < 20.05 * sr


def test_split_fixed():
    x = np.zeros(95 * SAMPLE_RATE + 123, np.float32)
    ranges = split_utterances(x, mode="fixed")
    w = 30 * SAMPLE_RATE
    assert ranges == [(0, w), (w, 2 * w), (2 * w, 3 * w), (3 * w, len(x))]


def test_split_edges():
    assert split_utterances(np.zeros(0, np.float32)) == []
    assert split_utterances(np.zeros(8000, np.float32)) == [(0, 8000)]
    n = 30 * SAMPLE_RATE
    assert split_utterances(np.ones(n, np.float32)) == [(0, n)]
    # all silent, longer than max: still contiguous windows within the limits
    z = np.zeros(100 * SAMPLE_RATE, np.float32)
    _check_cover(split_utterances(z), len(z), n)
    # a tail too short to stand alone is merged when that fits
    x, _ = _synthetic(61.0, seed=3)
    for max_s in (30.0, 10.0, 5.0):
        r = split_utterances(x, max_seconds=max_s, min_seconds=0.5)
        _check_cover(r, len(x), int(max_s * SAMPLE_RATE))
        assert all(e - s >= 0.5 * SAMPLE_RATE for s, e in r[:-1])
    with pytest.raises(ValueError, match="mode"):
        split_utterances(z, mode="vad")
    with pytest.raises(ValueError, match="min_seconds"):
        split_utterances(z, max_seconds=5, min_seconds=5)
