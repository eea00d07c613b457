"""Smoke run of the benchmark harness (benchmarks/bench.py --tiny) on the tiny weights: it runs
end to end and compares like with like (same segments, same number of generated tokens)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_script(name: str, tmp_path: Path, *args: str, timeout: float = 900) -> Path:
    """benchmarks/NAME with --work tmp_path --out tmp_path/out and args; its output folder."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), "--work", str(tmp_path), "--out", str(out),
                           *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_bench_tiny_smoke(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench.py"), "--tiny", "--work", str(tmp_path),
                           "--out", str(out), "--threads", "1", "--llama-bench", str(tmp_path / "no-llama-bench")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "llama-bench not found" in proc.stderr

    results = json.loads((out / "results.json").read_text())
    tokens = results["setup"]["tokens"]
    jobs = list(results["jobs"].values())
    kinds = {j["kind"] for j in jobs}
    assert kinds == {"roofline", "ours", "torch"}
    (roof,) = [j for j in jobs if j["kind"] == "roofline"]
    assert roof["read_gbps"] > 0.1 and roof["gemm_gflops"] > 0.1

    for seconds, n_segments in results["setup"]["segments"].items():
        pair = [j for j in jobs if j.get("seconds") == float(seconds) and j["kind"] in ("ours", "torch")
                and j.get("llm", "q8_0") == "q8_0" and j.get("mmproj", "f16") == "f16"]
        assert {j["kind"] for j in pair} == {"ours", "torch"}
        for j in pair:
            assert j["peak_rss_mb"] > 10 and j["load_ms"] > 0
            for r in j["runs"]:
                # same segmentation and exactly `tokens` generated per segment on both sides
                assert r["segments"] == n_segments
                assert r["n_generated_tokens"] == tokens * n_segments
                assert r["n_decoded_tokens"] == (tokens - 1) * n_segments
                assert r["total_ms"] >= r["encode_ms"] > 0 and r["decode_ms"] > 0
    assert results["setup"]["segments"]["40"] >= 2  # the long clip is split

    report = (out / "report.md").read_text()
    for title in ("Roofline", "Headline", "End to end", "GGUF types", "Encoder + adaptor vs the f32 GEMM bound"):
        assert title in report
    assert (out / "benchmarks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_throughput_tiny_smoke(tmp_path):
    """benchmarks/throughput.py --tiny (batching, speculative decoding, batch sizes) runs end to end."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--tiny", "--work", str(tmp_path),
                           "--out", str(out), "--runs", "1", "--threads", "1",
                           "--only", "roofline", "batch", "speculative", "decode-batch"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "throughput.json").read_text())
    for r in res["batch"].values():  # measure.py asserts the batch's texts equal the sequential ones
        assert r["sequential_s"][0] > 0 and r["batch_s"][0] > 0 and r["peak_rss_mb"] > 10
    for r in res["speculative"].values():
        perfect, none = r["runs"]["perfect"][0], r["runs"]["none"][0]
        assert perfect["n_accepted_tokens"] == perfect["n_draft_tokens"] > 0
        assert perfect["n_decoded_tokens"] < none["n_decoded_tokens"]
    assert set(res["decode_batch"]["tok_s"]) == {"1", "2", "4", "8", "16"}
    md = (out / "throughput.md").read_text()
    assert "transcribe_batch" in md and "aggregate decode tok/s" in md
    assert (out / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_timestamps_tiny_smoke(tmp_path):
    """benchmarks/timestamps.py --tiny (the CTC head off / as draft / with word timestamps) runs end to end."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "timestamps.py"), "--tiny", "--work", str(tmp_path),
                           "--out", str(out), "--runs", "1", "--threads", "1"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "timestamps.json").read_text())
    for r in res["files"].values():
        off, words = r["runs"]["off"][0], r["runs"]["words"][0]
        assert off["timestamps_ms"] == 0 and off["n_draft_tokens"] == 0
        assert words["words"] > 0 and words["timestamps_ms"] > 0
        assert words["same_segments"] == words["segments"]  # tiny weights: drafts change nothing
    md = (out / "timestamps.md").read_text()
    assert "word timestamps" in md
    assert (out / "timestamps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_vad_quick_smoke(tmp_path):
    """benchmarks/vad.py --quick (FSMN-VAD ours vs upstream, fsmn vs energy, the long-file run) runs end to end."""
    out = run_script("vad.py", tmp_path, "--quick", "--runs", "1")
    res = json.loads((out / "vad.json").read_text())
    ours = [r for r in res["vad"] if r["who"] == "funasr-cpp"]
    theirs = [r for r in res["vad"] if r["who"] != "funasr-cpp"]
    assert ours and theirs and all(a["segments"] == b["segments"] for a, b in zip(ours, theirs))  # same segments
    modes = {r["mode"] for r in res["e2e_5min"]["runs"]}
    assert modes == {"fsmn", "energy"} and res["e2e_hour"]["peak_rss_mb"] > 0
    assert "VAD alone" in (out / "vad.md").read_text()
    assert (out / "vad.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_server_tiny_smoke(tmp_path):
    """benchmarks/server.py --tiny (funasr-cpp serve vs stock llama-server under load) runs end to end."""
    out = run_script("server.py", tmp_path, "--tiny", "--requests", "4")
    res = json.loads((out / "server.json").read_text())
    assert len(res["servers"]) == 2
    for rows in res["servers"].values():
        assert [r["concurrency"] for r in rows] == [1, 4, 8] and all(r["req_per_s"] > 0 for r in rows)
    assert "req/s" in (out / "server.md").read_text()


def test_ray_data_quick_smoke(tmp_path):
    """benchmarks/ray_data.py --quick: one process and Ray Data (1x2, 2x1) on the same files, same texts."""
    out = run_script("ray_data.py", tmp_path, "--quick")
    res = json.loads((out / "ray_data-quick.json").read_text())
    assert [r["config"] for r in res["rows"]] == ["one process, transcribe_batch, 2 threads",
                                                  "Ray Data, 1 actor x 2 threads", "Ray Data, 2 actors x 1 thread"]
    assert res["same_texts_everywhere"]
    for r in res["rows"]:
        assert r["wall_s"] > 0 and r["audio_s"] == 60.0 and r["audio_h_per_h"] > 0


def test_builds_ab_tiny_smoke(tmp_path):
    """benchmarks/builds_ab.py --tiny: the same build as A and B, alternated; both sides measured alike."""
    out = run_script("builds_ab.py", tmp_path, "--tiny", "--a", "", "--b", "", "--seconds", "3", "--rounds", "2",
                     "--runs", "1", "--threads", "1", "--tokens", "8")
    res = json.loads((out / "builds_ab.json").read_text())
    assert set(res["medians"]) == {"a 3s", "b 3s"}
    for m in res["medians"].values():
        assert m["n"] == 2 and m["total_ms"] >= m["encode_ms"] > 0 and m["tokens_per_s"] > 0


def test_streaming_tiny_smoke(tmp_path):
    """benchmarks/streaming.py --tiny (partial modes, N streams at once) runs end to end: every final
    has the fixed token count, finals come after their VAD close, partials only where asked."""
    out = run_script("streaming.py", tmp_path, "--tiny", "--seconds", "8", "--speed", "4", "--threads", "1",
                     "--streams", "1", "2", timeout=300)
    res = json.loads((out / "streaming.json").read_text())
    assert [r["mode"] for r in res["modes"]] == ["ctc", "llm", "none"]
    assert [r["streams"] for r in res["streams"]] == [1, 2]
    for r in res["modes"] + res["streams"]:
        assert r["finals"] >= r["streams"] and r["tokens_per_final"] == [res["setup"]["tokens"]]
        assert r["after_vad_close_s"]["p50"] >= 0 and r["cpu_cores"] > 0
        assert (r["partials"] > 0) == (r["mode"] != "none")
    assert res["streams"][1]["finals"] == 2 * res["streams"][0]["finals"]  # each stream gets every final
    assert set(res["max_streams_under_limit"]) == {"final_latency_s", "after_vad_close_s"}
    assert (out / "streaming.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_realtime_tiny_smoke(tmp_path):
    """benchmarks/realtime.py --tiny (N Realtime WebSocket sessions against a server process, server_vad)
    runs end to end: every item that started gets its final, every session the same number of them and
    the same transcripts, each final after its speech_stopped, deltas for the partials."""
    out = run_script("realtime.py", tmp_path, "--tiny", "--seconds", "8", "--speed", "4", "--threads", "1",
                     "--sessions", "1,2", "--sweep-all", timeout=300)
    res = json.loads((out / "realtime.json").read_text())
    rows = res["sessions"]
    assert [r["sessions"] for r in rows] == [1, 2]
    for r in rows:
        assert r["error_count"] == 0 and r["missing_finals"] == 0 and r["timed_out_sessions"] == 0
        assert r["finals"] >= r["sessions"] and r["finals_per_session"] == [r["finals"] // r["sessions"]]
        assert r["transcripts_agree"] and r["after_speech_stopped_s"]["p50"] >= 0
        assert r["final_latency_s"]["p50"] >= r["after_speech_stopped_s"]["p50"]
        assert r["deltas"] > 0 and r["server_cpu_cores"] > 0
        assert r["turn_detection"]["type"] == "server_vad"
    assert rows[1]["finals"] == 2 * rows[0]["finals"]  # each session gets every final
    assert res["max_sessions_keeping_up"] in (0, 1, 2)
    assert (out / "realtime.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mmproj_types_tiny_smoke(tmp_path):
    """benchmarks/mmproj_types.py --tiny (encoder time per mmproj type and CPU class, fidelity vs f32)
    runs end to end; the plain-buffer class is a different build configuration of the same kernels."""
    out = run_script("mmproj_types.py", tmp_path, "--tiny")
    res = json.loads((out / "mmproj_types.json").read_text())
    assert set(res["timing"]) == {"native", "no-extra"}
    for by_type in res["timing"].values():
        assert set(by_type) == {"f32", "f16", "bf16", "q8_0"}
        assert all(by_type[t][clip] > 0 for t in by_type for clip in ("10 s", "30 s"))
    assert res["fidelity"]["f32"]["rows_max_rel"] == 0 and res["fidelity"]["q8_0"]["rows_cos_min"] > 0.99
    assert "fastest" in (out / "mmproj_types.md").read_text()
