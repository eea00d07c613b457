"""funasr_cpp.Model / transcribe() / `funasr-cpp transcribe`: same text as upstream funasr
AutoModel.generate and llama-mtmd-cli on the tiny checkpoint; from_pretrained (conversion cache,
GGUF folders, offline hub ids); long-audio segmentation; the repetition guard; bad input."""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

import funasr_cpp
import funasr_cpp.converters  # noqa: F401  (monkeypatched below)
from fixtures.cli import mtmd_cli, postprocess, run_cli, special_tokens
from fixtures.speech import write_wav16k
from fixtures.upstream import MAX_TOKENS, OPTIONS
from funasr_cpp.guard import find_loop
from funasr_cpp.model import Model
from funasr_cpp.options import token_budget

# one thread: torch shares the process (ggml spin barriers crawl when oversubscribed); f32 KV and
# no flash attention: upstream runs the LLM in fp32
LOAD = {"n_threads": 1, "kv_type": "f32", "flash_attn": "off"}
# upstream's plain greedy run: no duration-scaled budget, no loop cut (the random model loops)
EXACT = {"max_new_tokens": MAX_TOKENS, "max_tokens_per_second": None, "repetition_guard": False}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, soft_release, soft_gguf, speech, speech_wavs):
    llm, mmproj = soft_gguf
    return {"tmp": tmp_path_factory.mktemp("transcribe"), "folder": soft_release, "llm": llm, "mmproj": mmproj,
            "wav": speech_wavs["speech-zh"], "zh": speech["zh"]}


@pytest.fixture(scope="module")
def model(setup):
    with Model(setup["llm"], setup["mmproj"], **LOAD) as m:
        yield m


@pytest.fixture(scope="module")
def upstream(setup, soft_upstream):
    return {option: soft_upstream.generate(setup["wav"], max_length=MAX_TOKENS, **kwargs)["text"]
            for option, kwargs in OPTIONS.items()}


# ------------------------------------------------------------------------------------------ (a)
@pytest.mark.parametrize("option", list(OPTIONS))
def test_transcribe_equals_upstream(setup, model, upstream, option):
    res = model.transcribe(setup["wav"], **EXACT, **OPTIONS[option])
    assert res.text == upstream[option]
    assert len(res.text) > 0
    assert len(res.segments) == 1
    seg = res.segments[0]
    assert seg.start == 0 and seg.end == pytest.approx(res.duration) and seg.text == res.text
    assert len(seg.tokens) == MAX_TOKENS and not seg.repetition_cut
    assert res.duration == pytest.approx(len(setup["zh"]) / 16000)
    assert res.language == OPTIONS[option].get("language")
    t = res.timings
    assert t.n_generated_tokens == MAX_TOKENS and t.tokens_per_s > 0 and t.real_time_factor > 0
    assert all(getattr(t, k) >= 0 for k in ("load_ms", "frontend_ms", "encode_ms", "prefill_ms", "decode_ms"))
    assert t.n_decoded_tokens == MAX_TOKENS - 1 and t.n_prompt_tokens > 0 and t.prefill_tokens_per_s > 0


def test_array_and_bytes_inputs(setup, model, upstream):
    x = np.clip(np.round(setup["zh"] * 32767), -32768, 32767).astype(np.int16)
    opts = EXACT
    assert model.transcribe(x.astype(np.float32) / 32768, sample_rate=16000, **opts).text == upstream["default"]
    assert model.transcribe(setup["wav"].read_bytes(), **opts).text == upstream["default"]
    # ISO code = upstream name
    assert model.transcribe(setup["wav"], language="zh", **opts).text == upstream["language"]
    # stereo at 48 kHz: runs (resampled and downmixed)
    stereo = np.repeat(np.repeat(x[:, None], 3, axis=0), 2, axis=1)
    assert model.transcribe(stereo, sample_rate=48000, max_new_tokens=4).text


# ------------------------------------------------------------------------------------------ (b)
def test_api_cli_and_mtmd_cli_agree(setup, model, upstream):
    ref = upstream["default"]
    assert funasr_cpp.transcribe(setup["wav"], model=model, max_new_tokens=MAX_TOKENS,
                                 max_tokens_per_second=None, repetition_guard=False).text == ref
    # a from_pretrained source string (a GGUF folder), loaded once and cached in the module
    src = str(setup["llm"].parent)
    r1 = funasr_cpp.transcribe(setup["wav"], model=src, **EXACT, **LOAD)
    assert r1.text == ref
    m1 = funasr_cpp.model.get_model(src, **LOAD)
    assert funasr_cpp.model.get_model(src, **LOAD) is m1
    m1.close()
    out = run_cli("transcribe", "--llm", setup["llm"], "--mmproj", setup["mmproj"], "--threads", 1,
                  "--kv-type", "f32", "--flash-attn", "off", "--max-new-tokens", MAX_TOKENS, "--no-repetition-guard", setup["wav"])
    assert out.returncode == 0, out.stderr
    assert out.stdout == ref.strip() + "\n"
    assert "\r" not in out.stderr  # no progress bar without a tty
    cli = postprocess(mtmd_cli(setup["llm"], setup["mmproj"], setup["wav"]), special_tokens(setup["folder"]))
    assert cli.rstrip() == ref.rstrip()


# ------------------------------------------------------------------------------------------ (c)
def test_from_pretrained_release_folder_is_cached(setup, monkeypatch, tmp_path, upstream):
    cache = tmp_path / "cache"
    t0 = time.perf_counter()
    with Model.from_pretrained(setup["folder"], cache_dir=cache, llm_type="f32", mmproj_type="f32", **LOAD) as m:
        first = time.perf_counter() - t0
        llm1, mm1 = m.llm_path, m.mmproj_path
        assert m.transcribe(setup["wav"], **EXACT).text == upstream["default"]
    (entry,) = cache.iterdir()
    assert entry.name.startswith("nano-") and llm1.parent == entry == mm1.parent
    mtimes = (llm1.stat().st_mtime_ns, mm1.stat().st_mtime_ns)

    def no_convert(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(funasr_cpp.converters, "convert", no_convert)
    t0 = time.perf_counter()
    with Model.from_pretrained(setup["folder"], cache_dir=cache, llm_type="f32", mmproj_type="f32", **LOAD) as m:
        assert (m.llm_path, m.mmproj_path) == (llm1, mm1)
    assert (llm1.stat().st_mtime_ns, mm1.stat().st_mtime_ns) == mtimes
    assert list(cache.iterdir()) == [entry]
    print(f"first {first:.2f} s, cached {time.perf_counter() - t0:.2f} s")
    # another type pair is converted next to the first in the same cache entry
    monkeypatch.undo()
    with Model.from_pretrained(setup["folder"], cache_dir=cache, llm_type="f16", mmproj_type="f16", **LOAD) as m:
        assert m.llm_path.parent == entry and m.llm_path.name.endswith("-f16.gguf")


def test_from_pretrained_gguf_folder(setup, tmp_path):
    with Model.from_pretrained(setup["llm"].parent, **LOAD) as m:
        assert (m.llm_path, m.mmproj_path) == (setup["llm"], setup["mmproj"])
    # ambiguous / empty folders and files are clear errors
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.gguf", "b.gguf", "mmproj-a.gguf"):
        shutil.copy(setup["llm"] if not name.startswith("mmproj") else setup["mmproj"], two / name)
    with pytest.raises(ValueError, match="expected one LLM GGUF.*2 LLM"):
        Model.from_pretrained(two)
    with pytest.raises(ValueError, match="expected one LLM GGUF.*0 LLM"):
        Model.from_pretrained(_empty(tmp_path))
    with pytest.raises(ValueError, match="not a file"):
        Model.from_pretrained(setup["llm"])
    with pytest.raises(FileNotFoundError, match="no such folder"):
        Model.from_pretrained(tmp_path / "nowhere")


def _empty(tmp_path: Path) -> Path:
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_offline_hub_id_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for hub in ("huggingface", "modelscope"):
        t0 = time.perf_counter()
        with pytest.raises((ConnectionError, ImportError), match=r"funasr-cpp convert DIR -o OUT"):
            Model.from_pretrained("funasr-cpp-test/no-such-model", hub=hub)
        assert time.perf_counter() - t0 < 5
    # no network (the reachability probe fails): the hub is not asked, only its local cache
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(funasr_cpp.hub, "_reachable", lambda *a, **k: False)
    for hub in ("huggingface", "modelscope"):
        t0 = time.perf_counter()
        with pytest.raises((ConnectionError, ImportError), match=r"no network.*funasr-cpp convert DIR -o OUT"):
            Model.from_pretrained("funasr-cpp-test/no-such-model", hub=hub)
        assert time.perf_counter() - t0 < 5
    with pytest.raises(ValueError, match="hub must be"):
        Model.from_pretrained("funasr-cpp-test/no-such-model", hub="github")


# ------------------------------------------------------------------------------------------ (d)
@pytest.fixture(scope="module")
def long_wav(setup):
    """3 minutes: the speech clip every 9 s with ~3 s of silence in between, plus faint noise."""
    rng = np.random.default_rng(0)
    x = (0.001 * rng.standard_normal(16000 * 180)).astype(np.float32)
    zh = setup["zh"]
    loud = np.flatnonzero(np.abs(zh) > 0.01)
    first, last = int(loud[0]), int(loud[-1])  # the clip without its own leading/trailing silence
    starts = list(range(16000, len(x) - len(zh), 16000 * 9))
    for s in starts:
        x[s:s + len(zh)] += zh
    return write_wav16k(setup["tmp"] / "long.wav", x), [(s + first, s + last) for s in starts]


@pytest.mark.parametrize("mode", ["energy", None])
def test_long_audio_is_segmented(model, long_wav, mode):
    wav, speech = long_wav
    calls = []
    t0 = time.perf_counter()
    res = model.transcribe(wav, max_new_tokens=8, vad=mode, progress=lambda d, t: calls.append((d, t)))
    print(f"{mode}: {len(res.segments)} segments in {time.perf_counter() - t0:.1f} s")
    assert res.duration == pytest.approx(180.0)
    segs = res.segments
    assert len(segs) >= 6
    assert segs[0].start == 0 and segs[-1].end == pytest.approx(180.0)
    for a, b in zip(segs, segs[1:]):
        assert a.end == b.start
    assert all(0 < s.end - s.start <= 30.0 + 1e-9 for s in segs)
    if mode is None:  # no VAD: windows of max_segment_seconds
        assert [s.start for s in segs] == [30.0 * i for i in range(6)]
    assert all(len(s.tokens) <= 8 and s.text for s in segs)
    assert res.text == " ".join(s.text for s in segs)  # as upstream's inference_with_vad joins them
    # the random model loops: some segments are cut by the repetition guard
    assert res.timings.n_generated_tokens >= sum(len(s.tokens) for s in segs)
    assert all(s.repetition_cut or len(s.tokens) == 8 for s in segs)
    done = [d for d, _ in calls]
    assert all(t == pytest.approx(180.0) for _, t in calls)
    assert done == sorted(done) and len(set(done)) == len(done) and done[-1] == pytest.approx(180.0)
    assert len(calls) == len(segs)
    if mode == "energy":  # silence-aware: no cut inside a speech burst
        for s in segs[:-1]:
            cut = round(s.end * 16000)
            assert not any(a < cut < b for a, b in speech), s


def test_token_budget():
    assert token_budget(0.0, 512) == 20
    assert token_budget(2.0, 512) == 50
    assert token_budget(30.0, 512) == 470
    assert token_budget(60.0, 512) == 512
    assert token_budget(2.0, 10) == 10
    assert token_budget(2.0, 512, None) == 512


def test_find_loop():
    assert find_loop([1, 2, 3]) is None
    assert find_loop([5] * 7) is None
    assert find_loop([9, 5, 5, 5, 5, 5, 5, 5, 5]) == 2
    loop = [7, 8, 9]
    assert find_loop([1, 2] + loop * 8) == 5
    assert find_loop([1, 2] + loop * 9 + [7]) == 5  # a trailing partial repetition
    assert find_loop([1, 2] + loop * 7) is None
    assert find_loop(list(range(9)) * 8) is None    # 9-grams are not looked for
    assert find_loop([4] + [1, 2] * 20) == 3


class _Generation:
    """A _core.Generation with other tokens (and their text)."""

    def __init__(self, generation, tokens, text):
        self._generation, self.tokens, self.text = generation, tokens, text

    def __getattr__(self, name):
        return getattr(self._generation, name)


class _LoopingJob:
    def __init__(self, job, tokens, text):
        self.job, self.tokens, self.text = job, tokens, text

    def result(self):
        return _Generation(self.job.result(), self.tokens, self.text)

    def cancel(self):
        self.job.cancel()


class _LoopingAsr:
    """The native model, but its jobs answer with a runaway loop."""

    def __init__(self, asr, prefix, loop, eog=False):
        self.asr, self.prefix, self.loop, self.eog = asr, prefix, loop, eog
        self.closed = False
        self.n_parallel, self.has_ctc = asr.n_parallel, asr.has_ctc

    def submit(self, samples, prompt, *, max_new_tokens, **kwargs):
        toks = (self.prefix + self.loop * 1000)[:max_new_tokens]
        if self.eog:
            toks = toks[:-1]  # stopped by itself before the budget
        return _LoopingJob(self.asr.submit(samples, prompt, max_new_tokens=1, **kwargs), toks, self.asr.detokenize(toks))

    def detokenize(self, ids, skip_special=True):
        return self.asr.detokenize(ids, skip_special=skip_special)


def test_repetition_guard(setup, model, monkeypatch):
    real = model._asr
    a, b = real.tokenize("ab")[0], real.tokenize("c")[0]
    monkeypatch.setattr(model, "_asr", _LoopingAsr(real, [a], [b, a, b]))
    res = model.transcribe(setup["wav"], max_new_tokens=100)
    (seg,) = res.segments
    assert seg.repetition_cut and seg.tokens == [a, b, a, b] and res.text == real.detokenize([a, b, a, b])
    # a budget scaled to the duration: ~3.3 s -> 20 + 15/s tokens generated at most
    assert res.timings.n_generated_tokens == token_budget(res.duration, 100)
    monkeypatch.setattr(model, "_asr", _LoopingAsr(real, [a], [b, a, b], eog=True))
    (seg,) = model.transcribe(setup["wav"], max_new_tokens=100).segments
    assert not seg.repetition_cut and len(seg.tokens) == token_budget(res.duration, 100) - 1


# ------------------------------------------------------------------------------------------ (e)
def test_bad_inputs(setup, model, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        model.transcribe(tmp_path / "nope.wav")
    with pytest.raises((IsADirectoryError, ValueError), match="directory"):
        model.transcribe(tmp_path)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        model.transcribe(empty)
    txt = tmp_path / "notes.wav"
    txt.write_text("this is not audio\n")
    with pytest.raises(ValueError, match="notes.wav"):
        model.transcribe(txt)
    x = np.zeros(16000, np.float32)
    x[100] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.transcribe(x, sample_rate=16000)
    # options are checked before the audio is read
    with pytest.raises(ValueError, match="unknown language 'klingon'"):
        model.transcribe(tmp_path / "nope.wav", language="klingon")
    with pytest.raises(TypeError, match="hotwords.*list"):
        model.transcribe(tmp_path / "nope.wav", hotwords="abc")
    with pytest.raises(ValueError, match="vad must be"):
        model.transcribe(tmp_path / "nope.wav", vad="silero")
    with pytest.raises(ValueError, match="vad='fsmn' needs a VAD model"):
        model.transcribe(tmp_path / "nope.wav", vad="fsmn")
    with pytest.raises(TypeError, match="hotwords"):
        funasr_cpp.transcribe(tmp_path / "nope.wav", model=str(tmp_path / "nowhere"), hotwords="abc")


def test_truncated_and_empty_wav(model, tmp_path):
    """A WAV cut short is an error naming the file and both lengths, not the text of what is left
    (the first 60 bytes of a 6.5 s file hold 8 samples); a WAV with no samples is an error, not
    empty text."""
    full = write_wav16k(tmp_path / "full.wav", np.random.default_rng(0).standard_normal(104000) * 0.1).read_bytes()
    declared = r"its header declares 104000 samples \(6\.50 s\) of audio"
    (tmp_path / "cut60.wav").write_bytes(full[:60])
    (tmp_path / "half.wav").write_bytes(full[:44 + 2 * 52000])
    (tmp_path / "header.wav").write_bytes(full[:40] + bytes(4))  # data chunk of 0 bytes: 44 bytes in all
    cases = [(tmp_path / "cut60.wav", r"cut60\.wav: truncated: " + declared + r", the file holds 8 samples"),
             (tmp_path / "half.wav", r"half\.wav: truncated: " + declared + r", the file holds 52000 samples \(3\.25 s\)"),
             (full[:60], r"<60 bytes>: truncated: " + declared),
             (tmp_path / "header.wav", r"header\.wav: no audio samples")]
    for audio, message in cases:
        with pytest.raises(ValueError, match=message):
            model.transcribe(audio)
        with pytest.raises(ValueError, match=message):
            funasr_cpp.transcribe(audio, model=model)
    res = model.transcribe_batch([tmp_path / "cut60.wav", full], return_exceptions=True)
    assert isinstance(res[0], ValueError) and "truncated" in str(res[0]) and res[1].duration == 6.5


@pytest.mark.parametrize("n", [1, 399])
def test_audio_shorter_than_25ms_is_empty(model, n):
    res = model.transcribe(np.zeros(n, np.float32), sample_rate=16000)
    assert res.text == "" and res.segments == [] and res.duration == n / 16000


def test_audio_without_samples_is_an_error(model):
    with pytest.raises(ValueError, match="no audio samples"):
        model.transcribe(np.zeros(0, np.float32), sample_rate=16000)


def test_mismatched_llm_and_mmproj(setup, mmproj_192):
    with pytest.raises(ValueError, match="embedding width does not match"):
        Model(setup["llm"], mmproj_192, n_threads=1)


def test_batch(setup, model, upstream):
    res = model.transcribe_batch([setup["wav"], np.zeros(100, np.float32)], sample_rate=16000, **EXACT)
    assert [r.text for r in res] == [upstream["default"], ""]


def test_closed_model(setup):
    m = Model(setup["llm"], setup["mmproj"], n_threads=1)
    m.close()
    m.close()
    with pytest.raises(RuntimeError, match="closed"):
        m.transcribe(setup["wav"])


# ------------------------------------------------------------------------------------------ CLI
def test_cli_formats_and_errors(setup, upstream, tmp_path):
    outdir = tmp_path / "out"
    common = ["--llm", setup["llm"], "--mmproj", setup["mmproj"], "--threads", 1, "--kv-type", "f32",
              "--flash-attn", "off", "--max-new-tokens", 16]
    missing = tmp_path / "missing.wav"
    out = run_cli("transcribe", *common, missing, setup["wav"], "--format", "json")
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {missing}: audio file not found: {missing}"], out.stderr
    (line,) = out.stdout.splitlines()
    obj = json.loads(line)
    assert obj["file"] == str(setup["wav"]) and obj["text"] and obj["segments"][0]["tokens"]
    assert set(obj["timings"]) >= {"load_ms", "encode_ms", "prefill_ms", "decode_ms", "tokens_per_s",
                                   "real_time_factor", "n_generated_tokens"}
    for fmt in ("txt", "json", "srt", "vtt"):
        out = run_cli("transcribe", *common, setup["wav"], "--format", fmt, "--output-dir", outdir, "--progress")
        assert out.returncode == 0, out.stderr
        assert out.stdout == ""
        assert "\r" in out.stderr and "100%" in out.stderr
        text = (outdir / f"speech-zh.{fmt}").read_text(encoding="utf-8")
        if fmt == "txt":
            assert text == obj["text"].strip() + "\n"
        elif fmt == "json":
            assert json.loads(text)["text"] == obj["text"]
        elif fmt == "srt":
            m = re.fullmatch(r"1\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n(.+)\n", text)
            assert m, text
            assert m.group(1, 2, 3, 4) == ("00", "00", "00", "000")
            end = int(m[5]) * 3600 + int(m[6]) * 60 + int(m[7]) + int(m[8]) / 1000
            assert end == pytest.approx(obj["duration"], abs=1e-3) and m[9] == obj["text"].strip()
        else:
            assert re.fullmatch(r"WEBVTT\n\n00:00:00\.000 --> 00:00:0\d\.\d{3}\n.+\n", text), text


def test_cli_never_overwrites(setup, tmp_path):
    # two inputs with one name, in two folders, and the same file twice
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = tmp_path / "a" / "x.wav", tmp_path / "b" / "x.wav"
    shutil.copy(setup["wav"], a)
    shutil.copy(setup["wav"], b)
    outdir = tmp_path / "out"
    common = ["--llm", setup["llm"], "--mmproj", setup["mmproj"], "--threads", 1, "--max-new-tokens", 4,
              "--output-dir", outdir]
    out = run_cli("transcribe", *common, a, b, a)
    assert out.returncode == 0, out.stderr
    written = [outdir / "a" / "x.txt", outdir / "b" / "x.txt", outdir / "a" / "x-2.txt"]
    assert [line for line in out.stderr.splitlines() if line.startswith("wrote")] == [f"wrote {p}" for p in written]
    texts = [p.read_text(encoding="utf-8") for p in written]
    assert texts[0] == texts[1] == texts[2] and texts[0].strip()
    assert sorted(p.relative_to(outdir).as_posix() for p in outdir.rglob("*") if p.is_file()) == \
        ["a/x-2.txt", "a/x.txt", "b/x.txt"]  # no temporary files left

    # an existing file is the user's: kept, and said so, unless --overwrite
    written[1].write_text("mine\n")
    out = run_cli("transcribe", *common, a, b)
    assert out.returncode == 0, out.stderr
    assert written[1].read_text() == "mine\n" and written[0].read_text(encoding="utf-8") == texts[0]
    kept = [line for line in out.stderr.splitlines() if line.startswith("kept")]
    assert len(kept) == 2 and str(written[1]) in kept[1] and "--overwrite" in kept[1]
    out = run_cli("transcribe", *common, a, b, "--overwrite")
    assert out.returncode == 0, out.stderr
    assert written[1].read_text(encoding="utf-8") == texts[1]


def test_cli_help_and_usage_errors(setup):
    out = run_cli("transcribe", "--help")
    assert out.returncode == 0
    for opt in ("--model", "--llm", "--mmproj", "--language", "--no-itn", "--hotwords", "--format",
                "--output-dir", "--threads", "--max-new-tokens", "--vad", "--vad-model", "--progress"):
        assert opt in out.stdout
    out = run_cli("transcribe", "--llm", setup["llm"], setup["wav"])
    assert out.returncode == 2 and "--llm and --mmproj go together" in out.stderr
    out = run_cli("transcribe", "--llm", setup["llm"], "--mmproj", setup["mmproj"], "--language", "klingon",
                  setup["wav"])
    assert out.returncode == 1 and out.stderr.startswith("error: unknown language")


def test_auto_mmproj_type_follows_the_cpu(setup, tmp_path):
    from funasr_cpp.hub import default_mmproj_type
    info = funasr_cpp.system_info()
    gpu = any(d["type"] in ("gpu", "igpu") for b in info.backends for d in b["devices"])
    # llama.cpp's own summary line, e.g. "CPU : SSE3 = 1 | ... | AMX_INT8 = 1 | ..."
    want = "f16" if gpu else "q8_0" if "AMX_INT8 = 1" in info.summary else "f32"
    assert default_mmproj_type() == want
    with Model.from_pretrained(setup["folder"], cache_dir=tmp_path, llm_type="f32", **LOAD) as m:
        assert m.mmproj_path.name.endswith(f"-{want}.gguf")


@pytest.mark.parametrize("mode", ["energy", None])
def test_the_shortest_segment_limit(model, long_wav, mode):
    """max_segment_seconds=1 (the smallest allowed) cuts into pieces of at most 1 s in both modes."""
    wav, _ = long_wav
    res = model.transcribe(wav, max_new_tokens=2, vad=mode, max_segment_seconds=1.0)
    assert len(res.segments) >= 170 and all(s.end - s.start <= 1.0 + 1e-9 for s in res.segments)
