"""The test speech (fixtures.speech): libespeak-ng from the espeakng-loader wheel, no system
package; deterministic, whatever was spoken before in the session."""
from __future__ import annotations

import numpy as np

from fixtures.speech import SPEECH, VOICES, espeak, espeak_raw, wav16k_samples, write_wav16k


def test_same_text_and_voice_give_the_same_samples(monkeypatch, tmp_path):
    # no espeak-ng program is needed: nothing on PATH (the child is sys.executable)
    monkeypatch.setenv("PATH", str(tmp_path))
    en, rate = espeak_raw(SPEECH["en"], "en")
    zh, _ = espeak_raw(SPEECH["zh"], "cmn")
    again, _ = espeak_raw(SPEECH["en"], "en")  # after another voice and text
    assert rate == 22050 and en.dtype == np.int16 and zh.dtype == np.int16
    np.testing.assert_array_equal(again, en)
    assert len(zh) > rate and len(en) > rate and np.abs(en).max() > 1000 and np.abs(zh).max() > 1000
    assert not np.array_equal(en[: len(zh)], zh[: len(en)])


def test_clips_at_16k(speech):
    for lang, x in speech.items():
        pcm, rate = espeak_raw(SPEECH[lang], VOICES[lang])
        assert x.dtype == np.float32 and not x.flags.writeable
        assert abs(len(x) - len(pcm) * 16000 / rate) <= 1
        np.testing.assert_array_equal(espeak(SPEECH[lang], VOICES[lang]), x)
        assert 1.5 < len(x) / 16000 < 10 and 0.3 < np.abs(x).max() <= 1


def test_wav_round_trip(speech, speech_wavs):
    import soundfile as sf

    for lang, x in speech.items():
        y, rate = sf.read(speech_wavs[f"speech-{lang}"], dtype="float32")
        assert rate == 16000
        np.testing.assert_array_equal(y, wav16k_samples(x))


def test_write_wav16k_clips(tmp_path):
    import soundfile as sf

    path = write_wav16k(tmp_path / "loud.wav", np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 2.0], np.float32))
    pcm, _ = sf.read(path, dtype="int16")
    assert pcm.tolist() == [-32768, -32767, 0, 16384, 32767, 32767]
