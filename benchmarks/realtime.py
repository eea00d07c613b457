#!/usr/bin/env python3
"""Live transcription over the Realtime WebSocket (`/v1/realtime`): N sessions at once, each
streaming a recording at real time over loopback to a `funasr-cpp serve` process with server_vad.

    python benchmarks/realtime.py                          # N = 1, 2, 4, 8, 12, 16 up to the first that falls behind
    python benchmarks/realtime.py --sessions 1,2,4 --sweep-all --compare   # + Model.stream in process, same N
    python benchmarks/realtime.py --tiny --seconds 8 --speed 4 --out /tmp/rt   # smoke run: tiny weights, random VAD

The server runs in its own process, one per N: `funasr_cpp.server.serve` (what `funasr-cpp serve`
runs) with the benchmark's fixed-work options, which the CLI has no flags for; the real-shape random
model (q8_0 LLM + f16 mmproj, CTC head) with the trained FSMN-VAD release, as
benchmarks/streaming.py; the server's defaults but --parallel max(8, 2N), --max-sessions max(8, N)
and an idle timeout longer than the drain wait. The clients are asyncio `websockets` connections in
this process: each sends `session.update` (PCM16 at --rate; turn detection left at the server's
default server_vad, the VAD checkpoint's own settings), then streaming.py's live track plus 2 s of
silence in 100 ms `input_audio_buffer.append`s (base64), each sent when its last sample has
"arrived" on the audio clock (all sessions start together: their segments close at the same moment,
the worst case), then waits for every item's `.completed`. An item the VAD left open at the end is
committed (`input_audio_buffer.commit`); under server_vad the server then opens the next item at
once, with no audio after it, which is not waited for.

Measured per final (item):
- final latency: the wall time `.completed` arrived minus the wall time the item's end of speech
  arrived: the session's start + `speech_stopped.audio_end_ms` / speed (audio is sent at real time,
  so audio time maps to wall time; streaming.py's "final - segment end");
- after speech_stopped: `.completed` minus the arrival of its `speech_stopped` event (streaming.py's
  "after VAD close"); speech_stopped's own lag after the end of speech (the VAD's end-silence wait);
- deltas (partials): the wall interval between consecutive deltas of an item, deltas per item, how
  many replaced the text (`"replace": true`). The server sends a delta only when the text changed;
- per N: p50/p95, the latency's growth over the run (per session, the median of the last third of
  its finals minus that of the first third; the largest), the drain after the last append, error
  events by code, the CPU of the server process and of everything else on the machine meanwhile
  (others' load), the largest `funasr_realtime_lag_seconds` on /metrics, the client's own lateness.
N *keeps up* when every final arrived, no error event came (e.g. `input_audio_buffer_full`: the
server's cap on audio not final yet refused appends, dropping them) and the latency grew by at most
--max-growth s; it is *under the limit* when it keeps up and its p95 final latency is at most
--limit s. --compare: after each N, benchmarks/streaming.py's in-process run of the same WAV and N.

Random weights never stop early, so the work is fixed as in streaming.py: every final generates
exactly --tokens tokens (ignore_eos, max_tokens_per_second=None, repetition guard off, no CTC draft).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import streaming  # noqa: E402  (its track, VAD model and in-process measurement)
import workloads  # noqa: E402
from server import free_port  # noqa: E402
from workloads import SAMPLE_RATE, log  # noqa: E402

CHUNK_MS = 100
TAIL_S = 2.0  # silence after the track, so the VAD closes its last segment as any other
EV = "conversation.item.input_audio_transcription."


# -- the server (its own process) ---------------------------------------------------------------
def serve(spec: dict) -> None:
    """The child: load the model, warm it up, serve until terminated (what `funasr-cpp serve` does)."""
    import soundfile as sf

    from funasr_cpp import Model
    from funasr_cpp.options import TranscribeOptions
    from funasr_cpp.server import serve as run_server

    model = Model(spec["llm"], spec["mmproj"], vad_model=spec["vad"], n_threads=spec["threads"],
                  n_parallel=spec["parallel"])
    x, _ = sf.read(spec["audio"], dtype="float32")
    # warm-up, as streaming.py: the compute buffers grow once
    model.transcribe(x[: 10 * SAMPLE_RATE], sample_rate=SAMPLE_RATE, vad=None, **spec["options"])
    run_server(model, host="127.0.0.1", port=spec["port"], options=TranscribeOptions.build(None, **spec["options"]),
               **spec["server"])


def start_server(spec: dict, work: Path, threads: int, timeout: float = 600) -> subprocess.Popen:
    import httpx

    log_path = work / "realtime-server.log"  # a file, not a pipe nobody reads (the latest server's)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with open(log_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, __file__, "--serve", json.dumps(spec)], stdout=subprocess.DEVNULL,
                                stderr=err, env=env)
    url = f"http://127.0.0.1:{spec['port']}/health"
    deadline = time.time() + timeout
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"the server did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.3)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat's first line, all but idle and iowait)."""
    v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- one session (a client) ---------------------------------------------------------------------
class Session:
    def __init__(self, index: int):
        self.index = index
        self.t0 = 0.0                   # wall time of the audio's sample 0 (perf_counter)
        self.items: dict = {}           # item_id -> what arrived for it, stamped
        self.errors: list = []
        self.late_max = 0.0             # how far behind its audio clock a send went (s)
        self.sent_end = 0.0             # wall time the last append went out
        self.commit_wall = None         # when we committed an item the VAD left open after the tail
        self.timed_out = False

    def item(self, item_id: str) -> dict:
        return self.items.setdefault(item_id, {"deltas": []})

    def by_commit(self, it: dict, event: str) -> bool:
        """Whether the item's `event` ("started", "stopped") came after our commit (and so of it)."""
        return self.commit_wall is not None and event in it and it[event][0] >= self.commit_wall

    def real_items(self) -> list:
        """The items in the order they started, less any the server opened at our commit: under
        server_vad a commit inside speech starts the next item at once, at the commit point (the
        latest end), with no audio after it."""
        items = sorted(self.items.values(), key=lambda it: it.get("started", (0, 0))[1])
        last_end = max((it["stopped"][1] for it in items if "stopped" in it), default=0)
        return [it for it in items if not (self.by_commit(it, "started") and it["started"][1] >= last_end)]


async def next_event(ws, want: str, timeout: float) -> dict:
    """The next event of type `want` (an error event or anything else first: RuntimeError)."""
    ev = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    if ev.get("type") != want:
        raise RuntimeError(f"expected {want}, got {json.dumps(ev)[:500]}")
    return ev


async def open_session(url: str, rate: int) -> tuple:
    import websockets

    ws = await websockets.connect(url, max_size=None, open_timeout=60, ping_interval=None)
    created = await next_event(ws, "session.created", 60)
    cfg = created["session"]["audio"]["input"]
    if not cfg.get("turn_detection") or cfg["turn_detection"].get("type") != "server_vad":
        raise RuntimeError(f"the server offers no server_vad: {json.dumps(created)[:500]}")
    # only the format changes: the server's default server_vad is the FSMN-VAD's own default
    await ws.send(json.dumps({"type": "session.update", "session": {
        "type": "transcription", "audio": {"input": {"format": {"type": "audio/pcm", "rate": rate}}}}}))
    updated = await next_event(ws, "session.updated", 60)
    return ws, updated["session"]


async def receive(ws, s: Session) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
        async for msg in ws:
            now = time.perf_counter()
            ev = json.loads(msg)
            kind = ev.get("type", "")
            if kind == "error":
                s.errors.append(ev.get("error", {}))
            elif kind == "input_audio_buffer.speech_started":
                s.item(ev["item_id"])["started"] = (now, ev["audio_start_ms"])
            elif kind == "input_audio_buffer.speech_stopped":
                s.item(ev["item_id"])["stopped"] = (now, ev["audio_end_ms"])
            elif kind == "input_audio_buffer.committed":
                s.item(ev["item_id"])["committed"] = now
            elif kind == EV + "delta":
                s.item(ev["item_id"])["deltas"].append((now, bool(ev.get("replace")), len(ev.get("delta", ""))))
            elif kind == EV + "completed":
                s.item(ev["item_id"])["completed"] = (now, ev["transcript"])
    except ConnectionClosed:
        pass


async def run_session(ws, s: Session, pcm: bytes, rate: int, speed: float, drain_timeout: float) -> None:
    """Send pcm (16-bit at `rate`) in CHUNK_MS appends on the audio clock from s.t0; then wait until
    every item that started has its `.completed` (committing one the VAD left open)."""
    receiver = asyncio.create_task(receive(ws, s))
    step = 2 * rate * CHUNK_MS // 1000
    for k in range(0, len(pcm), step):
        due = s.t0 + (min(k + step, len(pcm)) // 2 / rate) / speed
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            s.late_max = max(s.late_max, -delay)
        await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                  "audio": base64.b64encode(pcm[k:k + step]).decode("ascii")}))
    s.sent_end = time.perf_counter()
    deadline = s.sent_end + drain_timeout
    while True:
        await asyncio.sleep(0.05)
        now = time.perf_counter()
        waiting = [it for it in s.real_items() if "completed" not in it]
        if now - s.sent_end < 1.0:  # events of the last appends may still be on their way
            continue
        if not waiting:
            break
        if s.commit_wall is None and any("stopped" not in it and "committed" not in it for it in waiting):
            s.commit_wall = time.perf_counter()
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        if now > deadline or receiver.done():
            s.timed_out = True
            break
    await ws.close()
    await asyncio.wait_for(receiver, 30)


async def metrics_sampler(url: str, out: list, stop: asyncio.Event) -> None:
    """funasr_realtime_lag_seconds and funasr_realtime_sessions from /metrics, once a second."""
    import httpx

    async with httpx.AsyncClient(timeout=10) as client:
        while not stop.is_set():
            try:
                text = (await client.get(url + "/metrics")).text
                row = {"t": time.perf_counter()}
                for line in text.splitlines():
                    for name in ("funasr_realtime_lag_seconds", "funasr_realtime_sessions"):
                        if line.startswith(name + " ") or line.startswith(name + "{"):
                            row[name] = float(line.rsplit(" ", 1)[1])
                out.append(row)
            except Exception:  # a sample lost under load is no result
                pass
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass


async def drive(port: int, n: int, pcm: bytes, rate: int, speed: float, drain_timeout: float) -> tuple:
    url = f"ws://127.0.0.1:{port}/v1/realtime?intent=transcription"
    opened = await asyncio.gather(*(open_session(url, rate) for _ in range(n)))
    sessions = [Session(i) for i in range(n)]
    t0 = time.perf_counter() + 0.5
    for s in sessions:
        s.t0 = t0
    samples, stop = [], asyncio.Event()
    sampler = asyncio.create_task(metrics_sampler(f"http://127.0.0.1:{port}", samples, stop))
    await asyncio.gather(*(run_session(ws, s, pcm, rate, speed, drain_timeout)
                           for (ws, _), s in zip(opened, sessions)))
    stop.set()
    await sampler
    return sessions, opened[0][1], samples


# -- the numbers --------------------------------------------------------------------------------
def pct(values: list, q: float):
    return float(np.percentile(values, q)) if values else None


def stats(values: list) -> dict:
    return {"p50": pct(values, 50), "p95": pct(values, 95), "max": max(values, default=None)}


def summarize(sessions: list, speed: float, samples: list) -> dict:
    lat, after_stop, stop_lag, iv, per_item, growth = [], [], [], [], [], []
    finals = by_commit = replaces = missing = 0
    for s in sessions:
        mine = []
        for it in s.real_items():
            if "completed" not in it:
                missing += 1
                continue
            finals += 1
            done = it["completed"][0]
            if "stopped" in it and not s.by_commit(it, "stopped"):  # the VAD closed it
                end_wall = s.t0 + it["stopped"][1] / 1000.0 / speed
                mine.append((it["stopped"][1], done - end_wall))
                after_stop.append(done - it["stopped"][0])
                stop_lag.append(it["stopped"][0] - end_wall)
            else:  # our commit at the end closed it: no end of speech to measure from
                by_commit += 1
            per_item.append(len(it["deltas"]))
            replaces += sum(1 for d in it["deltas"] if d[1])
            iv += [b[0] - a[0] for a, b in zip(it["deltas"], it["deltas"][1:])]
        lat += [v for _, v in mine]  # in audio order
        third = len(mine) // 3
        if third:
            growth.append(float(np.median([v for _, v in mine[-third:]]) - np.median([v for _, v in mine[:third]])))
    # the same audio in every session: the same items and transcripts
    texts = [[it["completed"][1] for it in s.real_items() if "completed" in it] for s in sessions]
    last_done = max((it["completed"][0] for s in sessions for it in s.real_items() if "completed" in it),
                    default=None)
    lag = [r["funasr_realtime_lag_seconds"] for r in samples if "funasr_realtime_lag_seconds" in r]
    codes: dict = {}
    for s in sessions:
        for e in s.errors:
            codes[e.get("code")] = codes.get(e.get("code"), 0) + 1
    return {"finals": finals, "finals_per_session": sorted({len(t) for t in texts}),
            "finals_closed_by_client_commit": by_commit, "missing_finals": missing,
            "items_opened_by_client_commit": sum(len(s.items) - len(s.real_items()) for s in sessions),
            "transcripts_agree": all(t == texts[0] for t in texts),
            # finals whose text differs from session 0's same item: batches of other sizes round
            # differently, and real-shape random weights turn a rounding difference into other tokens
            "transcripts_differing_from_session_0": sum(a != b for t in texts[1:] for a, b in zip(t, texts[0])),
            "empty_transcripts": sum(1 for t in texts for x in t if not x.strip()),
            "timed_out_sessions": sum(s.timed_out for s in sessions),
            "errors": [e for s in sessions for e in s.errors][:10],
            "error_count": sum(len(s.errors) for s in sessions), "error_codes": codes,
            "final_latency_s": stats(lat), "after_speech_stopped_s": stats(after_stop),
            "speech_stopped_lag_s": stats(stop_lag),
            "latency_growth_s": max(growth, default=None),
            "drain_s": None if last_done is None else last_done - max(s.sent_end for s in sessions),
            "delta_interval_wall_s": {"p50": pct(iv, 50), "p95": pct(iv, 95)},
            "deltas": sum(per_item), "deltas_per_item_p50": pct(per_item, 50), "deltas_replacing": replaces,
            "items_without_delta": sum(1 for k in per_item if k == 0),
            "client_late_max_s": max(s.late_max for s in sessions),
            "server_lag_metric_s": {"max": max(lag, default=None), "samples": len(lag)},
            "items_of_session_0": items_of(sessions[0], speed)}


def items_of(s: Session, speed: float) -> list:
    """One session's items in order: their audio span (ms), final latency and deltas."""
    rows = []
    for it in s.real_items():
        end = it.get("stopped", (None, None))[1]
        done = it.get("completed", (None, ""))[0]
        rows.append({"audio_start_ms": it.get("started", (None, None))[1], "audio_end_ms": end,
                     "final_latency_s": None if end is None or done is None else done - (s.t0 + end / 1000.0 / speed),
                     "closed_by_client_commit": s.by_commit(it, "stopped"),
                     "deltas": len(it["deltas"]), "transcript_chars": len(it.get("completed", (None, ""))[1])})
    return rows


def keeps_up(r: dict, max_growth: float) -> bool:
    return (r["missing_finals"] == 0 and r["timed_out_sessions"] == 0 and r["error_count"] == 0 and r["finals"] > 0
            and len(r["finals_per_session"]) == 1 and (r["latency_growth_s"] or 0.0) <= max_growth)


def under(r: dict, limit: float) -> bool:
    return r["final_latency_s"]["p95"] is not None and r["final_latency_s"]["p95"] <= limit


def measure(n: int, base: dict, pcm: bytes, args) -> dict:
    """N sessions against a fresh server process."""
    # the server's defaults but for the session limit, and an idle timeout beyond the drain wait
    spec = dict(base, port=free_port(), parallel=max(8, 2 * n),
                server={**base["server"], "max_sessions": max(8, n), "session_idle_timeout": args.drain_timeout + 60,
                        "max_buffer_seconds": args.max_buffer_seconds})
    proc = start_server(spec, args.work, args.threads)
    try:
        load = os.getloadavg()[0]
        cpu0, client0, busy0 = cpu_seconds(proc.pid), time.process_time(), machine_busy_seconds()
        wall0 = time.perf_counter()
        sessions, session_cfg, samples = asyncio.run(
            drive(spec["port"], n, pcm, args.rate, args.speed, args.drain_timeout))
        wall, cpu = time.perf_counter() - wall0, cpu_seconds(proc.pid) - cpu0
        client, busy = time.process_time() - client0, machine_busy_seconds() - busy0
    finally:
        stop_server(proc)
    # others' share of the cores in the meantime: what the machine did beyond the server and us
    return {"sessions": n, "audio_s": len(pcm) / 2 / args.rate, "wall_s": wall, "server_cpu_cores": cpu / wall,
            "client_cpu_cores": client / wall, "others_cpu_cores": max(0.0, busy - cpu - client) / wall,
            "loadavg_before": load, "loadavg_after": os.getloadavg()[0],
            "turn_detection": session_cfg["audio"]["input"]["turn_detection"],
            **summarize(sessions, args.speed, samples)}


def in_process(n: int, base: dict, args) -> dict:
    """The same audio and N through Model.stream in one process (benchmarks/streaming.py's run)."""
    spec = {k: base[k] for k in ("llm", "mmproj", "vad", "audio", "threads", "options")}
    spec.update(mode=args.partials, streams=n, interval=args.interval, speed=args.speed)
    return streaming.measure(spec, args.threads)


# -- the driver -----------------------------------------------------------------------------------
def fmt(v, digits=2, unit="") -> str:
    return "–" if v is None else f"{v:.{digits}f}{unit}"


def table(res: dict) -> str:
    lines = ["| sessions | finals | final − end of speech p50 / p95 | after speech_stopped p50 / p95 | "
             "growth | delta interval p50 | deltas/item | server CPU (others') | keeps up | in process p50 / p95 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    inproc = {r["streams"]: r for r in res.get("in_process", [])}
    for r in res["sessions"]:
        ip = inproc.get(r["sessions"])
        ipt = f"{fmt(ip['final_latency_s']['p50'])} / {fmt(ip['final_latency_s']['p95'])} s" if ip else "–"
        lat, after = r["final_latency_s"], r["after_speech_stopped_s"]
        lines.append(
            f"| {r['sessions']} | {r['finals']} | {fmt(lat['p50'])} / {fmt(lat['p95'])} s"
            f" | {fmt(after['p50'])} / {fmt(after['p95'])} s"
            f" | {fmt(r['latency_growth_s'], unit=' s')} | {fmt(r['delta_interval_wall_s']['p50'], unit=' s')}"
            f" | {fmt(r['deltas_per_item_p50'], 1)} | {r['server_cpu_cores']:.2f} ({r['others_cpu_cores']:.2f}) cores"
            f" | {'yes' if r['keeps_up'] else 'no'} | {ipt} |")
    return "\n".join(lines)


def chart(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    rows = res["sessions"]
    ns = [r["sessions"] for r in rows]
    ax.plot(ns, [r["final_latency_s"]["p50"] for r in rows], "o-", label="WebSocket p50")
    ax.plot(ns, [r["final_latency_s"]["p95"] for r in rows], "o-", label="WebSocket p95")
    if res.get("in_process"):
        ip = res["in_process"]
        ax.plot([r["streams"] for r in ip], [r["final_latency_s"]["p50"] for r in ip], "s--", label="Model.stream p50")
        ax.plot([r["streams"] for r in ip], [r["final_latency_s"]["p95"] for r in ip], "s--", label="Model.stream p95")
    ax.axhline(res["setup"]["limit_s"], color="grey", ls=":", label="limit")
    ax.set_yscale("log")  # from under a second (tiny, one session) to minutes (overloaded)
    ax.set_xticks(ns)
    ax.set_xlabel("sessions at once")
    ax.set_ylabel("final − end of speech (s)")
    ax.set_title("Realtime WebSocket, server_vad, loopback")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def save(res: dict, out: Path, name: str) -> None:
    rows = res["sessions"]
    res["max_sessions_keeping_up"] = max([r["sessions"] for r in rows if r["keeps_up"]], default=0)
    res["max_sessions_under_limit"] = max([r["sessions"] for r in rows if r["keeps_up"] and r["under_limit"]],
                                          default=0)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")


def track(work: Path, seconds: float, rate: int) -> tuple:
    """(the 16 kHz WAV: streaming.py's live track + TAIL_S of silence, its PCM16 bytes at `rate`)."""
    import soundfile as sf
    import soxr

    from fixtures.speech import write_wav16k

    path = work / f"live-speech-{seconds:g}s-tail.wav"
    if not path.is_file():
        x, _ = sf.read(str(streaming.live_track(work, seconds)), dtype="float32")
        write_wav16k(path, np.concatenate([x, np.zeros(int(TAIL_S * SAMPLE_RATE), np.float32)]))
    x, sr = sf.read(str(path), dtype="float32")
    assert sr == SAMPLE_RATE
    if rate != SAMPLE_RATE:
        x = soxr.resample(x, SAMPLE_RATE, rate)
    pcm = (np.clip(x, -1.0, 32767 / 32768) * 32768).round().astype("<i2").tobytes()
    return path, pcm


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/funasr-cpp-bench"), help="generated weights and audio")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "realtime")
    ap.add_argument("--tag", default="", help="OUT/realtime{-TAG}.json/.png")
    ap.add_argument("--sessions", default="1,2,4,8,12,16", help="comma-separated N (sessions at once)")
    ap.add_argument("--sweep-all", action="store_true", help="measure every N (no stop at the first that falls behind)")
    ap.add_argument("--seconds", type=float, default=180, help="recording length (+ %g s of silence)" % TAIL_S)
    ap.add_argument("--speed", type=float, default=1.0, help="send speed (x real time; 1 = live)")
    ap.add_argument("--rate", type=int, default=24000, choices=[24000, 16000], help="PCM16 sample rate sent")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32, help="generated tokens per final")
    ap.add_argument("--partials", default="ctc", choices=list(streaming.MODES),
                    help="the server's partials (ctc = what 'auto' picks on this checkpoint)")
    ap.add_argument("--interval", type=float, default=0.5, help="the server's partial interval (s)")
    ap.add_argument("--limit", type=float, default=3.0, help="p95 final latency limit (s)")
    ap.add_argument("--max-growth", type=float, default=1.5,
                    help="the most the final latency may grow from the run's first third to its last (s)")
    ap.add_argument("--max-buffer-seconds", type=float, default=60.0,
                    help="the server's per-session cap on audio not final yet (its default 60; appends beyond are "
                         "refused with input_audio_buffer_full errors)")
    ap.add_argument("--drain-timeout", type=float, default=300, help="wait for finals after the last append (s)")
    ap.add_argument("--compare", action="store_true", help="also Model.stream in process (streaming.py), same N")
    ap.add_argument("--tiny", action="store_true", help="smoke run on the tiny test weights and random VAD")
    ap.add_argument("--serve", help=argparse.SUPPRESS)  # child process: the server
    args = ap.parse_args()
    if args.serve:
        serve(json.loads(args.serve))
        return 0
    from bench import machine

    ns = sorted({int(v) for v in args.sessions.split(",") if v.strip()})
    if not ns or ns[0] < 1:
        ap.error("--sessions: comma-separated positive numbers, e.g. 1,2,4")
    args.work.mkdir(parents=True, exist_ok=True)
    folder = workloads.release_folder(args.work, full=not args.tiny)
    files = workloads.gguf_files(folder, args.work / "gguf", llm_types=("q8_0",), mmproj_types=("f16",))
    vad, vad_name = streaming.vad_gguf(args.work, args.tiny)
    wav, pcm = track(args.work, args.seconds, args.rate)
    options = {"max_new_tokens": args.tokens, "ignore_eos": True, "max_tokens_per_second": None,
               "repetition_guard": False, "ctc_draft": False}
    partials = None if args.partials == "none" else args.partials
    base = {"llm": str(files["llm", "q8_0"]), "mmproj": str(files["mmproj", "f16"]), "vad": str(vad),
            "audio": str(wav), "threads": args.threads, "options": options,
            "server": {"partials": partials, "partial_interval": args.interval}}
    res = {"machine": machine(),
           "setup": {"threads": args.threads, "tokens": args.tokens, "partials": args.partials,
                     "interval_s": args.interval, "chunk_ms": CHUNK_MS, "rate": args.rate, "audio_s": args.seconds,
                     "tail_s": TAIL_S, "speed": args.speed, "vad": vad_name, "limit_s": args.limit,
                     "max_growth_s": args.max_growth, "max_buffer_seconds": args.max_buffer_seconds,
                     "llm": "q8_0", "mmproj": "f16", "tiny": args.tiny,
                     "options": options, "nproc": os.cpu_count()},
           "sessions": []}
    name = "realtime" + (f"-{args.tag}" if args.tag else "")
    if args.compare:
        res["in_process"] = []
    for n in ns:
        r = measure(n, base, pcm, args)
        r["keeps_up"], r["under_limit"] = keeps_up(r, args.max_growth), under(r, args.limit)
        log(f"{n} sessions: {json.dumps(r)}")
        res["sessions"].append(r)
        if args.compare:  # right after, so that both see the machine alike
            ip = in_process(n, base, args)
            log(f"in process, {n} streams: {json.dumps(ip)}")
            res["in_process"].append(ip)
        save(res, args.out, name)  # what is measured so far survives a later failure
        if not args.sweep_all and n >= 2 and not r["keeps_up"]:
            break  # 1 and 2 always measured
    chart(res, args.out / f"{name}.png")
    print(table(res))
    print(f"largest N keeping up: {res['max_sessions_keeping_up']}; "
          f"with p95 final latency <= {args.limit:g} s: {res['max_sessions_under_limit']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
