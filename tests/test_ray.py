"""funasr_cpp.ray: a corpus on Ray Data (a local Ray of 2 CPUs, started and shut down here) over 12 files
of the tiny fixture model, two of them unreadable. The oracle is Model.transcribe on the same files
(itself held to upstream by the parity tests)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import ray

from fixtures.cli import scripts_path_env
from fixtures.speech import write_wav16k
from funasr_cpp import Model, TranscribeOptions
from funasr_cpp.ray import Transcriber, expand_inputs, read_output, transcribe_corpus

OPTIONS = TranscribeOptions(max_new_tokens=12)
N_GOOD, N_BAD = 10, 2


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, speech):
    """12 files in two folders (speech, tones, noise, a clip with silence; a text file and a truncated
    WAV that cannot be read)."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "a").mkdir()
    (root / "b").mkdir()
    rng = np.random.default_rng(5)
    clips = [speech["zh"], speech["en"], speech["zh"][: 16000 * 2], speech["en"][16000:]]
    for f in (220, 440, 880):
        t = np.arange(16000 * 2) / 16000
        clips.append((0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32))
    clips += [(0.05 * rng.standard_normal(16000 * n)).astype(np.float32) for n in (1, 3)]
    clips.append(np.concatenate([np.zeros(8000, np.float32), speech["en"][: 16000 * 2]]))
    assert len(clips) == N_GOOD
    good = [write_wav16k(root / ("a" if i % 2 else "b") / f"clip{i:02d}.wav", x) for i, x in enumerate(clips)]
    (root / "b" / "notes.wav").write_text("this is not audio\n")
    data = good[0].read_bytes()
    (root / "a" / "truncated.wav").write_bytes(data[:30])
    bad = [root / "b" / "notes.wav", root / "a" / "truncated.wav"]
    return root, good, bad


@pytest.fixture(scope="module")
def expected(soft_gguf, corpus):
    _, good, _ = corpus
    with Model(*soft_gguf, n_threads=1) as m:
        return {str(p): m.transcribe(p, OPTIONS) for p in good}


def segs(rows_segments):
    return [(s["start"], s["end"], s["text"]) for s in rows_segments]


def check_rows(rows, expected, bad):
    by_path = {r["path"]: r for r in rows}
    assert len(rows) == len(by_path) == N_GOOD + N_BAD
    for path, want in expected.items():
        r = by_path[path]
        assert r["error"] is None, r["error"]
        assert r["text"] == want.text
        assert segs(r["segments"]) == [(s.start, s.end, s.text) for s in want.segments]
        assert r["duration"] == pytest.approx(want.duration)
        assert r["timings"]["n_generated_tokens"] == want.timings.n_generated_tokens
    for p in bad:
        r = by_path[str(p)]
        assert r["text"] is None and r["segments"] == []
        assert "cannot read audio" in r["error"] and str(p) in r["error"], r["error"]


def test_map_batches_with_paths_equals_model_transcribe(local_ray, soft_gguf, corpus, expected):
    _, good, bad = corpus
    llm, mmproj = soft_gguf
    ds = ray.data.from_items([{"path": str(p)} for p in good + bad], override_num_blocks=3)
    out = ds.map_batches(Transcriber, fn_constructor_kwargs={"llm": str(llm), "mmproj": str(mmproj), "options": OPTIONS},
                         concurrency=2, num_cpus=1, batch_size=4, batch_format="pyarrow")
    check_rows(out.take_all(), expected, bad)


def test_map_batches_with_bytes_from_read_binary_files(local_ray, soft_gguf, corpus, expected):
    _, good, bad = corpus
    llm, mmproj = soft_gguf
    ds = ray.data.read_binary_files([str(p) for p in good + bad], include_paths=True)
    out = ds.map_batches(Transcriber, fn_constructor_kwargs={"llm": str(llm), "mmproj": str(mmproj),
                                                             "options": {"max_new_tokens": 12}},
                         concurrency=1, num_cpus=1, batch_size=6)  # a CPU left for the read tasks
    rows = out.take_all()
    for r in rows:  # read_binary_files gives the path without a leading slash on some filesystems
        r["path"] = r["path"] if r["path"].startswith("/") else "/" + r["path"]
    by_path = {r["path"]: r for r in rows}
    for path, want in expected.items():
        assert by_path[path]["text"] == want.text and by_path[path]["error"] is None
    for p in bad:  # bytes that are not audio: the decoder's reason
        assert by_path[str(p)]["text"] is None and by_path[str(p)]["error"]


def test_resume_processes_only_the_missing_rows(local_ray, soft_gguf, corpus, expected, tmp_path):
    root, good, bad = corpus
    llm, mmproj = soft_gguf
    kw = dict(llm=llm, mmproj=mmproj, options=OPTIONS, actors=2, cpus_per_actor=1, batch_size=3, progress=False)
    first = transcribe_corpus([root], tmp_path / "out.parquet", limit=5, **kw)
    assert (first.total, first.skipped, first.done) == (12, 0, 5)
    assert len(read_output(tmp_path / "out.parquet")) == 5
    second = transcribe_corpus([root], tmp_path / "out.parquet", **kw)
    assert (second.total, second.skipped, second.done) == (12, 5, 7)
    assert first.failed + second.failed == N_BAD
    rows = read_output(tmp_path / "out.parquet").to_pylist()
    check_rows(rows, expected, bad)
    third = transcribe_corpus([root], tmp_path / "out.parquet", **kw)  # nothing left to do
    assert (third.skipped, third.done, third.parts) == (12, 0, [])
    # the same as one uninterrupted run
    whole = transcribe_corpus([root], tmp_path / "whole.parquet", **kw)
    assert (whole.done, whole.failed) == (12, N_BAD)
    key = lambda r: r["path"]  # noqa: E731
    strip = lambda r: {k: v for k, v in r.items() if k != "timings"}  # noqa: E731
    assert sorted(map(strip, rows), key=key) == sorted(map(strip, read_output(tmp_path / "whole.parquet").to_pylist()),
                                                       key=key)
    # a changed file is transcribed again
    touched = good[3]
    st = touched.stat()
    os.utime(touched, (st.st_atime, st.st_mtime + 10))
    again = transcribe_corpus([root], tmp_path / "out.parquet", **kw)
    assert (again.skipped, again.done) == (11, 1)


def test_outputs_that_are_not_ours_are_refused(tmp_path, corpus):
    root, _, _ = corpus
    (tmp_path / "file.parquet").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        transcribe_corpus([root], tmp_path / "file.parquet")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a transcribe-dataset output"):
        transcribe_corpus([root], tmp_path / "dir")
    assert (tmp_path / "file.parquet").read_text() == "mine" and sorted(p.name for p in (tmp_path / "dir").iterdir()) == ["keep.txt"]
    with pytest.raises(ValueError, match="no-such-thing"):
        expand_inputs([tmp_path / "no-such-thing"])


def test_expand_inputs_folders_globs_manifests(corpus, tmp_path):
    root, good, bad = corpus
    manifest = tmp_path / "list.txt"
    rel = [p.relative_to(root) for p in good[:3]]
    manifest.write_text("# three files\n" + "\n".join(str(root / r) for r in rel[:1]) + "\n\n" +
                        "\n".join(str(r) for r in rel[1:]) + "\n")
    for r in rel[1:]:  # relative lines are relative to the manifest's folder
        (tmp_path / r).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / r).write_bytes((root / r).read_bytes())
    got = expand_inputs([manifest])
    assert got == [root / rel[0], tmp_path / rel[1], tmp_path / rel[2]]
    assert expand_inputs([root / "a"]) == sorted(p for p in good + bad if p.parent.name == "a")
    assert expand_inputs([str(root / "*" / "clip0*.wav")]) == sorted(p for p in good if p.name.startswith("clip0"))
    assert len(expand_inputs([root, root / "a", str(root / "**" / "*.wav")])) == 12  # each file once


def test_cli_with_a_folder_a_glob_and_a_manifest(soft_gguf, corpus, expected, tmp_path):
    root, good, bad = corpus
    llm, mmproj = soft_gguf
    manifest = tmp_path / "m.lst"
    manifest.write_text("\n".join(str(p) for p in [*good[:2], bad[0]]) + "\n")
    env = scripts_path_env()
    out = tmp_path / "cli.parquet"
    args = ["transcribe-dataset", str(root / "a"), str(root / "b" / "clip*.wav"), str(manifest), "-o", str(out),
            "--llm", str(llm), "--mmproj", str(mmproj), "--max-new-tokens", "12", "--cpus-per-actor", "1",
            "--batch-size", "4"]
    proc = subprocess.run([sys.executable, "-m", "funasr_cpp.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "12 files: 12 transcribed now (2 with an error" in proc.stderr
    check_rows(read_output(out).to_pylist(), expected, bad)
    proc = subprocess.run([sys.executable, "-m", "funasr_cpp.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and "12 files: 0 transcribed now (0 with an error" in proc.stderr, proc.stderr[-2000:]
    assert "12 already in" in proc.stderr
    # a wrong checkpoint is one clear error before Ray starts
    bad_args = [a if a != str(mmproj) else str(tmp_path / "missing.gguf") for a in args]
    proc = subprocess.run([sys.executable, "-m", "funasr_cpp.cli", *bad_args], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 1 and "no such file" in proc.stderr and "missing.gguf" in proc.stderr


def test_cli_interrupted_then_resumed(soft_gguf, tmp_path):
    """Ctrl-C in the middle of a job: exit code 130, only whole part files are left, and a rerun does
    exactly the files that are missing."""
    import signal
    import time

    import soundfile as sf

    llm, mmproj = soft_gguf
    rng = np.random.default_rng(9)
    files = []
    for i in range(60):
        f = tmp_path / "in" / f"n{i:03d}.wav"
        f.parent.mkdir(exist_ok=True)
        sf.write(f, (0.1 * rng.standard_normal(16000 * 2)).astype(np.float32), 16000)
        files.append(f)
    out = tmp_path / "out.parquet"
    args = [sys.executable, "-m", "funasr_cpp.cli", "transcribe-dataset", str(tmp_path / "in"), "-o", str(out),
            "--llm", str(llm), "--mmproj", str(mmproj), "--max-new-tokens", "12", "--batch-size", "1",
            "--actors", "1", "--cpus-per-actor", "1"]
    proc = subprocess.Popen(args, env=scripts_path_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(list(out.glob("part-*.parquet"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted: the files finished so far are kept" in err, err[-2000:]
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "a temporary part survived"
    first = read_output(out).to_pylist()
    assert 3 <= len(first) < 60 and len({r["path"] for r in first}) == len(first)
    proc = subprocess.run(args, env=scripts_path_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"60 files: {60 - len(first)} transcribed now (0 with an error" in proc.stderr
    rows = {r["path"]: r for r in read_output(out).to_pylist()}
    assert len(rows) == 60
    with Model(llm, mmproj, n_threads=1) as m:
        for f, want in zip(files, m.transcribe_batch(files, OPTIONS)):
            assert rows[str(f)]["text"] == want.text and rows[str(f)]["error"] is None
