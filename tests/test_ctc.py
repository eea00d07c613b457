"""The CTC head end to end: its log-probabilities from the encoder pass, upstream's
ctc_text / ctc_timestamps / timestamps, word times through Model.transcribe and the CLI, the CTC
draft, and checkpoints without the head. Oracle: upstream funasr AutoModel.generate on a tiny
release with the CTC branch (fixtures.upstream.Upstream: fp32, dither 0), its forced_align
running on the reference Viterbi of fixtures/ctc_reference.py (torchaudio is not installable here)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fixtures.engine import AsrModel
from fixtures.speech import wav16k_samples, write_wav16k
from fixtures.upstream import OPTIONS
from funasr_cpp import Model
from funasr_cpp.prompt import build_prompt, postprocess
from funasr_cpp.timestamps import CtcTokenizer, segment_ctc

# short answers: random-weight text must fit the frames for an alignment to exist
N_TOKENS = 6


def rel_err(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def cosine(a, b) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def clips(speech, speech_wavs, tmp_path_factory):
    """{name: (wav path, the samples upstream reads back)}: speech, a tone and noise."""
    tmp = tmp_path_factory.mktemp("ctc-clips")
    rng = np.random.default_rng(7)
    t = np.arange(int(2.5 * 16000)) / 16000
    made = {"tone": (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 1.5 * t)).astype(np.float32),
            "noise": (0.1 * rng.standard_normal(int(3.1 * 16000))).astype(np.float32)}
    out = {"speech-zh": (speech_wavs["speech-zh"], wav16k_samples(speech["zh"]))}
    for name, x in made.items():
        out[name] = (write_wav16k(tmp / f"{name}.wav", x), wav16k_samples(x))
    return out


@pytest.fixture(scope="module")
def asr(ctc_gguf):
    with AsrModel(*ctc_gguf, n_threads=1, kv_type="f32", flash_attn="off") as m:
        yield m


@pytest.fixture(scope="module")
def model(ctc_gguf):
    with Model(*ctc_gguf, n_threads=1, kv_type="f32", flash_attn="off") as m:
        yield m


@pytest.fixture(scope="module")
def tokenizer(ctc_gguf):
    return CtcTokenizer.from_mmproj(ctc_gguf[1])


@pytest.fixture(scope="module")
def quantized_mmproj(ctc_release):
    from funasr_cpp.converters import convert
    return {t: convert(ctc_release, ctc_release.parent / f"gguf-{t}", llm_type="f32", mmproj_type=t,
                       progress=False)[1] for t in ("f16", "q8_0")}


def _near_tie_only(lp_ours, lp_ref, best_ours):
    """Frames whose greedy token differs from upstream's argmax must be measured near-ties there."""
    ref_best = lp_ref.argmax(axis=-1)
    for t in np.flatnonzero(np.asarray(best_ours) != ref_best):
        gap = lp_ref[t, ref_best[t]] - lp_ref[t, best_ours[t]]
        assert gap < 1e-4, f"frame {t}: ours {best_ours[t]} vs upstream {ref_best[t]}, gap {gap:g}"


# ------------------------------------------------------------------------------ the log-probs
@pytest.mark.parametrize("clip", ["speech-zh", "tone", "noise"])
def test_log_probs_equal_upstream_f32(asr, ctc_upstream, clips, clip):
    wav, samples = clips[clip]
    up = ctc_upstream.generate(wav, max_length=N_TOKENS)
    ref = up["ctc_log_probs"]
    gen = asr.generate(samples, build_prompt(), max_new_tokens=N_TOKENS, ctc=True)
    assert asr.has_ctc and asr.ctc_vocab_size == ref.shape[1] and asr.ctc_blank == ref.shape[1] - 1
    assert len(gen.ctc_best) == ref.shape[0]  # one frame per LFR frame (60 ms)
    ours = asr.ctc_log_probs(gen, np.arange(ref.shape[1]))
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert rel_err(ours, ref) <= 1e-4, rel_err(ours, ref)
    _near_tie_only(ours, ref, gen.ctc_best)
    # a subset of columns, in any order, is the same numbers
    ids = [ref.shape[1] - 1, 5, 17, 5]
    np.testing.assert_array_equal(asr.ctc_log_probs(gen, ids), ours[:, ids])


@pytest.mark.parametrize("kind", ["f16", "q8_0"])
def test_log_probs_quantized_cosine(ctc_gguf, quantized_mmproj, ctc_upstream, clips, kind):
    wav, samples = clips["speech-zh"]
    ref = ctc_upstream.generate(wav, max_length=N_TOKENS)["ctc_log_probs"]
    with AsrModel(ctc_gguf[0], quantized_mmproj[kind], n_threads=1) as m:
        gen = m.generate(samples, build_prompt(), max_new_tokens=1, ctc=True)
        ours = m.ctc_log_probs(gen, np.arange(ref.shape[1]))
    print(f"{kind}: cosine {cosine(ours, ref):.6f}, rel.err {rel_err(ours, ref):.2e}")
    assert cosine(ours, ref) >= 0.999
    assert (ours <= 0).all()


# ------------------------------------------------------------------------------ upstream's results
def _upstream_spans(items):
    return [(t["token"], t["start_time"], t["end_time"], t["score"]) for t in items]


def _ours_spans(spans, tokenizer):
    return [(tokenizer.decode([s.token]), s.start * 6 * 10 / 1000, s.end * 6 * 10 / 1000, s.score) for s in spans]


def _assert_same_spans(ours, theirs):
    assert [x[:3] for x in ours] == [x[:3] for x in theirs]
    assert all(abs(a[3] - b[3]) <= 1e-3 for a, b in zip(ours, theirs))


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("clip", ["speech-zh", "tone", "noise"])
def test_ctc_results_equal_upstream(asr, model, tokenizer, ctc_upstream, clips, clip, option):
    wav, samples = clips[clip]
    up = ctc_upstream.generate(wav, max_length=N_TOKENS, **OPTIONS[option])
    assert up["timestamps"], "the fixture should give alignments to compare"
    if clip == "speech-zh":
        assert up["ctc_timestamps"]  # (the tone's and the noise's CTC text may be empty)

    # the engine's outputs through timestamps.segment_ctc: all three of upstream's results
    gen = asr.generate(samples, build_prompt(**OPTIONS[option]), max_new_tokens=N_TOKENS, ctc=True)
    text = postprocess(asr.detokenize(gen.tokens))
    assert text == up["text"]
    res = segment_ctc(text, gen.ctc_best, lambda ids: asr.ctc_log_probs(gen, ids), tokenizer,
                      asr.ctc_blank, asr.ctc_vocab_size)
    assert res.ctc_text == up["ctc_text"]
    _assert_same_spans(_ours_spans(res.ctc_spans, tokenizer), _upstream_spans(up["ctc_timestamps"]))
    _assert_same_spans(_ours_spans(res.spans, tokenizer), _upstream_spans(up["timestamps"]))

    # and Model.transcribe's words and ctc_text
    out = model.transcribe(wav, word_timestamps=True, max_new_tokens=N_TOKENS, **OPTIONS[option])
    assert out.text == up["text"] and out.ctc_text == up["ctc_text"]
    (seg,) = out.segments
    _assert_same_spans([(w.text, w.start, w.end, w.probability) for w in seg.words],
                       _upstream_spans(up["timestamps"]))
    assert out.timings.timestamps_ms > 0


def test_ctc_text_without_word_timestamps(model, ctc_upstream, clips):
    """The CTC draft runs the head anyway: ctc_text comes along, words only when asked for."""
    wav, _ = clips["speech-zh"]
    up = ctc_upstream.generate(wav, max_length=N_TOKENS)
    out = model.transcribe(wav, max_new_tokens=N_TOKENS)
    assert out.ctc_text == up["ctc_text"] and out.segments[0].words == []
    off = model.transcribe(wav, max_new_tokens=N_TOKENS, ctc_draft=False)
    assert off.ctc_text is None and off.text == out.text


# ------------------------------------------------------------------------------ long audio, drafts
@pytest.fixture(scope="module")
def long_wav(speech, tmp_path_factory):
    """70 s: the Chinese clip every 9 s, faint noise between."""
    rng = np.random.default_rng(3)
    x = (0.001 * rng.standard_normal(16000 * 70)).astype(np.float32)
    zh = speech["zh"]
    for s in range(16000, len(x) - len(zh), 16000 * 9):
        x[s:s + len(zh)] += zh
    return write_wav16k(tmp_path_factory.mktemp("ctc-long") / "long.wav", x), wav16k_samples(x)


def test_long_audio_word_times(ctc_gguf, long_wav):
    wav, samples = long_wav
    with Model(*ctc_gguf, n_threads=1, n_parallel=4) as m:
        res = m.transcribe(wav, word_timestamps=True, max_new_tokens=N_TOKENS, max_segment_seconds=20)
        assert len(res.segments) >= 3
        with_words = [s for s in res.segments if s.words]
        assert len(with_words) >= 3
        last_end = 0.0
        for seg in res.segments:
            for w in seg.words:
                # offset by the segment, inside it (the last 60 ms frame may pass its end), in order
                assert seg.start <= w.start < w.end <= seg.end + 0.06 + 1e-9, (seg.start, seg.end, w)
                assert w.start >= last_end - 1e-9
                last_end = w.end
        # each segment's words are the words of that stretch transcribed alone, moved by its start
        seg = with_words[1]
        alone = m.transcribe(samples[int(round(seg.start * 16000)):int(round(seg.end * 16000))], sample_rate=16000,
                             word_timestamps=True, max_new_tokens=N_TOKENS)
        assert [(w.text, w.probability) for w in alone.segments[0].words] == [(w.text, w.probability) for w in seg.words]
        assert [w.start + seg.start for w in alone.segments[0].words] == pytest.approx([w.start for w in seg.words])


def test_ctc_draft_gives_the_same_tokens(ctc_gguf, long_wav):
    wav, _ = long_wav
    with Model(*ctc_gguf, n_threads=1, n_parallel=4) as m:
        plain = m.transcribe(wav, max_new_tokens=24, max_segment_seconds=20, ctc_draft=False)
        drafted = m.transcribe(wav, max_new_tokens=24, max_segment_seconds=20)
        single = m.transcribe(wav, max_new_tokens=24, max_segment_seconds=20, draft_max=0)
    assert plain.timings.n_draft_tokens == 0 and drafted.timings.n_draft_tokens > 0
    assert single.timings.n_draft_tokens == 0
    assert [s.tokens for s in drafted.segments] == [s.tokens for s in plain.segments] == \
        [s.tokens for s in single.segments]
    assert drafted.text == plain.text and drafted.ctc_text


# ------------------------------------------------------------------------------ without the CTC head
def test_checkpoint_without_ctc(soft_gguf, speech_wavs):
    wav = speech_wavs["speech-zh"]
    with Model(*soft_gguf, n_threads=1) as m:
        assert not m.has_ctc
        with pytest.raises(ValueError, match="CTC head.*Hugging Face.*Segment start/end times work"):
            m.transcribe(wav, word_timestamps=True)
        res = m.transcribe(wav, max_new_tokens=4)  # the default ctc_draft is a no-op here
        assert res.ctc_text is None and res.segments[0].end > 0 and res.segments[0].words == []
        assert res.timings.n_draft_tokens == 0
        with pytest.raises(ValueError, match="no CTC branch"):
            m._asr.submit(np.zeros(16000, np.float32), build_prompt(), max_new_tokens=1, draft_max=0, ctc=True)
    with AsrModel(*soft_gguf, n_threads=1) as a:
        assert not a.has_ctc and a.ctc_vocab_size is None
        gen = a.generate(np.zeros(16000, np.float32), build_prompt(), max_new_tokens=1)
        with pytest.raises(ValueError, match="no CTC branch"):
            a.ctc_log_probs(gen, [0])


def test_ctc_log_probs_errors(asr):
    gen = asr.generate(np.zeros(16000, np.float32), build_prompt(), max_new_tokens=1)
    with pytest.raises(ValueError, match="ctc=True"):
        asr.ctc_log_probs(gen, [0])
    gen = asr.generate(np.zeros(16000, np.float32), build_prompt(), max_new_tokens=1, ctc=True)
    with pytest.raises(ValueError, match="outside"):
        asr.ctc_log_probs(gen, [asr.ctc_vocab_size])
    assert asr.ctc_log_probs(gen, []).shape == (len(gen.ctc_best), 0)


# ------------------------------------------------------------------------------ the CLI
def test_cli_word_timestamps(ctc_gguf, soft_gguf, clips, tmp_path, capsys):
    from funasr_cpp.cli import main
    wav, _ = clips["speech-zh"]
    base = ["transcribe", "--llm", str(ctc_gguf[0]), "--mmproj", str(ctc_gguf[1]), "-t", "1",
            "--max-new-tokens", str(N_TOKENS), str(wav)]
    assert main(base + ["--word-timestamps", "-f", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    words = doc["segments"][0]["words"]
    assert words and set(words[0]) == {"start", "end", "text", "probability"} and doc["ctc_text"]
    assert main(base + ["--word-timestamps", "-f", "srt", "--max-cue-chars", "2"]) == 0
    srt = capsys.readouterr().out
    assert srt.count(" --> ") > 1  # cut at word times
    assert main(base + ["-f", "srt"]) == 0
    assert capsys.readouterr().out.count(" --> ") == 1
    no_ctc = ["transcribe", "--llm", str(soft_gguf[0]), "--mmproj", str(soft_gguf[1]), str(wav)]
    assert main(no_ctc + ["--word-timestamps"]) == 1
    assert "CTC head" in capsys.readouterr().err
    assert main(base + ["--max-cue-seconds", "0"]) == 1
    assert "must be positive" in capsys.readouterr().err
