"""funasr_cpp.formats (the writers the CLI uses), the CLI's output names and TranscribeOptions."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from funasr_cpp import TranscribeOptions, formats
from funasr_cpp.cli.transcribe import output_paths
from funasr_cpp.types import Segment, Timings, Transcription, Word
from funasr_cpp.options import token_budget


def _result() -> Transcription:
    return Transcription("a b", [Segment(0.0, 29.9995, "a ", []), Segment(29.9995, 61.25, " b", []),
                                 Segment(61.25, 62.0, " ", [])], None, 62.0)


def test_timestamps_srt_vtt():
    assert formats.timestamp(3723.4567, ",") == "01:02:03,457"
    assert formats.timestamp(0.0, ".") == "00:00:00.000"
    r = _result()
    assert formats.to_srt(r) == "1\n00:00:00,000 --> 00:00:30,000\na\n\n2\n00:00:30,000 --> 00:01:01,250\nb\n"
    assert formats.to_vtt(r) == "WEBVTT\n\n00:00:00.000 --> 00:00:30.000\na\n\n00:00:30.000 --> 00:01:01.250\nb\n"
    assert formats.render(r, "srt") == formats.to_srt(r)
    assert formats.render(r, "txt") == "a b\n"
    obj = json.loads(formats.render(r, "json", source="x.wav"))
    assert obj["file"] == "x.wav" and obj["text"] == "a b" and obj["duration"] == 62.0
    assert set(obj["timings"]) == set(Timings().to_dict())
    with pytest.raises(ValueError, match="unknown output format 'doc'"):
        formats.render(r, "doc")


def test_cues_cut_at_word_times():
    words = [Word(0.0, 0.5, " The", 0.9), Word(0.5, 1.0, " quick", 0.9), Word(1.0, 1.4, " brown", 0.9),
             Word(1.4, 3.9, " fox", 0.9), Word(4.0, 4.2, "今", 0.9), Word(4.2, 4.4, "天", 0.9)]
    r = Transcription("x", [Segment(0.0, 4.5, " The quick brown fox今天", [], words=words), Segment(5.0, 6.0, " b", [])],
                      None, 6.0)
    assert formats.cues(r) == [(0.0, 4.5, "The quick brown fox今天"), (5.0, 6.0, "b")]  # no limit: one per segment
    assert formats.cues(r, max_chars=9) == [(0.0, 1.0, "The quick"), (1.0, 3.9, "brown fox"), (4.0, 4.4, "今天"),
                                             (5.0, 6.0, "b")]
    assert formats.cues(r, max_seconds=2.0) == [(0.0, 1.4, "The quick brown"), (1.4, 3.9, "fox"),
                                                (4.0, 4.4, "今天"), (5.0, 6.0, "b")]
    srt = formats.render(r, "srt", max_chars=9)
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,000\nThe quick\n\n2\n00:00:01,000 --> 00:00:03,900\n")
    assert formats.render(r, "vtt", max_seconds=2.0).count("-->") == 4
    # JSON carries the words
    assert json.loads(formats.render(r, "json"))["segments"][0]["words"][1] == \
        {"start": 0.5, "end": 1.0, "text": " quick", "probability": 0.9}


def test_write_never_replaces_and_leaves_no_partial_file(tmp_path, monkeypatch):
    r = _result()
    dst = formats.write(r, tmp_path / "x.srt")
    assert dst.read_text(encoding="utf-8") == formats.to_srt(r)
    dst.write_text("the user's own file")
    with pytest.raises(FileExistsError, match="x.srt exists"):
        formats.write(r, dst)
    assert dst.read_text() == "the user's own file"
    formats.write(r, dst, overwrite=True)
    assert dst.read_text(encoding="utf-8") == formats.to_srt(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.srt"]  # no temporary file left

    def interrupted(*a, **k):  # the write dies half way (disk full, Ctrl-C, ...)
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "link", interrupted)
    with pytest.raises(KeyboardInterrupt):
        formats.write_text(tmp_path / "y.txt", "text")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.srt"]


def test_output_names_never_collide(tmp_path):
    out = tmp_path / "out"
    assert output_paths(["a/x.wav", "b/y.wav"], out, "txt") == [out / "x.txt", out / "y.txt"]
    assert output_paths(["a/x.wav", "b/x.wav", "c.wav"], out, "txt") == [out / "a/x.txt", out / "b/x.txt",
                                                                         out / "c.txt"]
    assert output_paths(["d/a/x.wav", "d/b/c/x.flac"], out, "srt") == [out / "a/x.srt", out / "b/c/x.srt"]
    names = output_paths(["x.wav", "x.flac", "x.wav"], out, "txt")
    assert names == [out / "x.txt", out / "x-2.txt", out / "x-3.txt"]
    assert len(set(names)) == 3


def test_transcribe_options_check_and_normalize():
    o = TranscribeOptions(language="zh", hotwords=["a", "b"], max_new_tokens=np.int64(7), max_segment_seconds=20)
    assert o.language == "中文" and o.hotwords == ("a", "b") and o.max_new_tokens == 7 and type(o.max_new_tokens) is int
    assert o.replace(language="en").language == "英文" and o.language == "中文"
    assert TranscribeOptions.build(o) is o
    assert TranscribeOptions.build(None, itn=False) == TranscribeOptions(itn=False)
    for bad, exc, match in [({"language": "klingon"}, ValueError, "unknown language 'klingon'"),
                            ({"hotwords": "通义"}, TypeError, "hotwords.*list"),
                            ({"hotwords": ["a", 1]}, TypeError, r"hotwords\[1\]"),
                            ({"max_new_tokens": 0}, ValueError, "max_new_tokens"),
                            ({"max_new_tokens": True}, ValueError, "max_new_tokens"),
                            ({"vad": "silero"}, ValueError, "vad must be"),
                            ({"vad_options": {"max_end_silence_time": 300}}, TypeError, "VadOptions"),
                            ({"max_segment_seconds": 0.5}, ValueError, "max_segment_seconds"),
                            ({"max_tokens_per_second": -1}, ValueError, "max_tokens_per_second")]:
        with pytest.raises(exc, match=match):
            TranscribeOptions(**bad)
    with pytest.raises(TypeError, match="unknown transcription option.*'langauge'"):
        o.replace(langauge="en")
    with pytest.raises(TypeError, match="TranscribeOptions"):
        TranscribeOptions.build({"language": "en"})
    assert o.token_budget(2.0) == min(7, token_budget(2.0, 7))
    assert TranscribeOptions().token_budget(2.0) == 50 and TranscribeOptions(max_tokens_per_second=None).token_budget(2.0) == 512


def test_timings_add_up():
    class Gen:  # the fields of a _core.Generation
        tokens = [1, 2, 3]
        n_prompt_tokens, n_cached_tokens, n_decoded_tokens = 40, 10, 2
        n_draft_tokens, n_accepted_tokens = 3, 1
        frontend_ms, encode_ms, prefill_ms, decode_ms = 1.0, 2.0, 3.0, 4.0
    t = Timings(load_ms=5.0)
    t.add(Gen())
    t.add(Gen())
    t.finish(total_ms=2000.0, duration=4.0)
    assert (t.encode_ms, t.n_prompt_tokens, t.n_cached_tokens, t.n_generated_tokens) == (4.0, 80, 20, 6)
    assert (t.n_draft_tokens, t.n_accepted_tokens) == (6, 2)
    assert t.tokens_per_s == pytest.approx((4 + 2) / 0.008) and t.prefill_tokens_per_s == pytest.approx(60 / 0.006)
    assert t.real_time_factor == pytest.approx(0.5) and t.load_ms == 5.0
