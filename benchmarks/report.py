"""results.json -> report.md (the tables of BENCHMARKS.md) and benchmarks.png.

    python benchmarks/report.py benchmarks/results   # rewrite the report of an earlier run
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

STAGES = ("frontend_ms", "encode_ms", "prefill_ms", "decode_ms")


# --------------------------------------------------------------------------------------------- GGUF facts
def gguf_tensor_bytes(path: Path) -> int:
    """Bytes of all tensors: what one decode step reads (Qwen3-0.6B's output matrix is the
    tied token embedding, so it is read whole)."""
    from gguf import GGUFReader

    return int(sum(int(t.n_bytes) for t in GGUFReader(str(path)).tensors))


def gguf_tensor_params(path: Path) -> int:
    """Parameters of all tensors (multiply-adds per token of a decode step, to first order)."""
    from gguf import GGUFReader

    return int(sum(int(t.n_elements) for t in GGUFReader(str(path)).tensors))


def kv_bytes_per_token(path: Path) -> int:
    """f16 K + V bytes one cached position holds across all layers."""
    from gguf import GGUFReader

    r = GGUFReader(str(path))

    def u32(k):
        return int(r.fields[k].parts[-1][0])

    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    kv_heads = u32(f"{arch}.attention.head_count_kv")
    return u32(f"{arch}.block_count") * kv_heads * (u32(f"{arch}.attention.key_length") +
                                                    u32(f"{arch}.attention.value_length")) * 2


# --------------------------------------------------------------------------------------------- lookups
class Results:
    def __init__(self, data: dict):
        self.data = data
        self.setup = data["setup"]
        self.jobs = list(data.get("jobs", {}).values())
        self.threads = max(self.setup["threads"])
        self.headline = tuple(self.setup["headline"])

    def find(self, **kw):
        for j in self.jobs:
            if all(j.get(k) == v for k, v in kw.items()):
                return j
        return None

    def ours(self, seconds, threads, llm=None, mmproj=None):
        llm, mmproj = llm or self.headline[0], mmproj or self.headline[1]
        return self.find(kind="ours", llm=llm, mmproj=mmproj, seconds=seconds, threads=threads)

    def torch(self, seconds, threads):
        return self.find(kind="torch", seconds=seconds, threads=threads)

    def roofline(self, threads):
        return self.find(kind="roofline", threads=threads)


def med(job, field):
    return statistics.median(r[field] for r in job["runs"])


def other_ms(job):
    return statistics.median(r["total_ms"] - sum(r[s] for s in STAGES) for r in job["runs"])


def decode_tps(job):
    return statistics.median(r["n_decoded_tokens"] / (r["decode_ms"] / 1000) for r in job["runs"] if r["decode_ms"] > 0)


def prefilled(run):
    return run["n_prompt_tokens"] - run.get("n_cached_tokens", 0)


def prefill_tps(job):
    return statistics.median(prefilled(r) / (r["prefill_ms"] / 1000) for r in job["runs"] if r["prefill_ms"] > 0)


def rtf(job):
    return statistics.median(r["total_ms"] / 1000 / job["seconds"] for r in job["runs"])


def secs(s) -> str:
    return f"{s / 60:g} min" if s >= 60 else f"{s:g} s"


def table(header, rows) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def bound_tps(res: Results, llm: str, threads: int, depth: float):
    roof = res.roofline(threads)
    if not roof:
        return None
    per_token = res.setup["llm_weight_bytes"][llm] + res.setup["llm_kv_bytes_per_token"] * depth
    return roof["read_gbps"] * 1e9 / per_token


# --------------------------------------------------------------------------------------------- markdown
def markdown(res: Results) -> str:
    s = res.setup
    m = res.data["machine"]
    t = res.threads
    ref_s = 10.0 if 10.0 in s["seconds"] else s["seconds"][0]
    fewer = sorted({f"{j['kind']} {secs(j['seconds'])} {j['threads']} thr: {len(j['runs'])}" for j in res.jobs
                    if "runs" in j and len(j["runs"]) != s["runs"]})
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores; funasr-cpp {m['funasr_cpp']}, llama.cpp {m['llama_cpp']}; "
             f"{m['date']}. {s['runs']} timed runs per configuration after a warm-up (medians"
             + (f"; fewer runs: {', '.join(fewer)}" if fewer else "") + "), "
             f"{s['tokens']} generated tokens per segment (end of turn ignored), each configuration in a fresh process.",
             ""]

    lines += ["### Roofline of this machine", ""]
    lines += table(["threads", "read GB/s", "copy GB/s", "f32 GEMM GFLOP/s"],
                   [[r["threads"], f"{r['read_gbps']:.1f}", f"{r['copy_gbps']:.1f}", f"{r['gemm_gflops']:.0f}"]
                    for r in sorted((j for j in res.jobs if j["kind"] == "roofline"), key=lambda j: j["threads"])])
    lines += ["", "read: a threaded numpy sum over 1 GiB; copy: a threaded copy of 1 GiB (bytes read + written); best of 10 runs; "
              "GEMM: torch.mm of 2048x2048 f32 matrices (MKL).", ""]

    # headline
    o, p = res.ours(ref_s, t), res.torch(ref_s, t)
    lb = res.find(kind="llama-bench", llm=res.headline[0], threads=t)
    if o and p:
        lines += [f"### Headline: {secs(ref_s)} clip, LLM {res.headline[0]} + mmproj {res.headline[1]}, {t} threads", ""]
        depth = med(o, "n_prompt_tokens") + s["tokens"] / 2
        bound = bound_tps(res, res.headline[0], t, depth)
        enc_ratio = med(p, "encode_ms") / med(o, "encode_ms")
        rows = [["end-to-end wall time", f"{med(p, 'total_ms'):.0f} ms", f"{med(o, 'total_ms'):.0f} ms",
                 f"**{med(p, 'total_ms') / med(o, 'total_ms'):.2f}x** faster", "≥ 4x"],
                ["real-time factor", f"{rtf(p):.3f}", f"**{rtf(o):.3f}**", "", "≤ 0.25"],
                ["encoder + adaptor", f"{med(p, 'encode_ms'):.0f} ms", f"{med(o, 'encode_ms'):.0f} ms",
                 f"{enc_ratio:.2f}x", "≥ 1.0x (f16)"],
                ["decode", f"{decode_tps(p):.1f} tok/s", f"{decode_tps(o):.1f} tok/s",
                 f"{decode_tps(o) / decode_tps(p):.2f}x", ""]]
        oq = res.ours(ref_s, t, mmproj="q8_0")
        if oq:
            rows.append(["encoder + adaptor, q8_0 mmproj", f"{med(p, 'encode_ms'):.0f} ms", f"{med(oq, 'encode_ms'):.0f} ms",
                         f"{med(p, 'encode_ms') / med(oq, 'encode_ms'):.2f}x", "≥ 1.5x"])
        ab = res.find(kind="decode-ab", llm=res.headline[0], threads=t)
        if ab:
            a, b = statistics.median(ab["ours"]), statistics.median(ab["llama_bench"])
            rows.append(["decode vs llama-bench (same GGUF, alternating runs)", "", f"{a:.1f} / {b:.1f} tok/s",
                         f"{a / b * 100:.0f}%", "≥ 95%"])
        elif lb:
            rows.append(["decode vs llama-bench (same GGUF)", "", f"{decode_tps(o):.1f} / {lb['tg_tokens_per_s']:.1f} tok/s",
                         f"{decode_tps(o) / lb['tg_tokens_per_s'] * 100:.0f}%", "≥ 95%"])
        if bound:
            rows.append(["decode vs bandwidth bound", "", f"{decode_tps(o):.1f} / {bound:.1f} tok/s",
                         f"{decode_tps(o) / bound * 100:.0f}%", "≥ 70%"])
        rows += [["model load (warm)", f"{p['load_ms']:.0f} ms", f"{o['load_ms']:.0f} ms",
                  f"{p['load_ms'] / o['load_ms']:.1f}x", "≤ 2 s"],
                 ["peak RSS", f"{p['peak_rss_mb']:.0f} MB", f"{o['peak_rss_mb']:.0f} MB",
                  f"{p['peak_rss_mb'] / o['peak_rss_mb']:.1f}x less", "≤ 1.6 GB"]]
        lines += table(["", "PyTorch funasr (fp32)", "funasr-cpp", "ratio", "goal"], rows) + [""]

    # end to end
    lines += [f"### End to end: LLM {res.headline[0]} + mmproj {res.headline[1]}", ""]
    rows = []
    for threads in s["threads"]:
        for sec in s["seconds"]:
            o, p = res.ours(sec, threads), res.torch(sec, threads)
            for name, j in (("PyTorch", p), ("funasr-cpp", o)):
                if not j:
                    continue
                speed = f"**{med(p, 'total_ms') / med(o, 'total_ms'):.2f}x**" if (j is o and p) else ""
                prefill = (f"{med(o, 'prefill_ms'):.0f} ms: {med(o, 'n_prompt_tokens'):.0f} tok "
                           f"({statistics.median(r.get('n_cached_tokens', 0) for r in o['runs']):.0f} cached), "
                           f"{prefill_tps(j):.0f} tok/s" if j is o else f"{med(j, 'prefill_ms'):.0f} ms")
                rows.append([secs(sec), threads, j["runs"][0]["segments"], name, f"{med(j, 'frontend_ms'):.1f}",
                             f"{med(j, 'encode_ms'):.0f}", prefill, f"{decode_tps(j):.1f}",
                             f"{med(j, 'total_ms'):.0f}", f"{rtf(j):.3f}", speed, f"{j['load_ms']:.0f}",
                             f"{j['peak_rss_mb']:.0f}"])
    lines += table(["audio", "threads", "segments", "system", "frontend ms", "encoder+adaptor ms", "prefill",
                    "decode tok/s", "end-to-end ms", "RTF", "speed-up", "load ms", "peak RSS MB"], rows)
    lines += ["", "Stage times are sums over segments; end-to-end includes reading the WAV file, segmentation "
              "and detokenization. PyTorch prefill = its generate() time before the first token; ours "
              "keeps the prompt text before the audio in the KV cache between calls (\"cached\"; the warm-up "
              "run fills it), so only the audio rows and the text after them are prefilled.", ""]

    # types
    type_rows = []
    for sec in dict.fromkeys((10.0, 30.0, s["seconds"][0])):  # the type clips, then the first clip
        p = res.torch(sec, t)
        for j in sorted((j for j in res.jobs if j["kind"] == "ours" and j["seconds"] == sec and j["threads"] == t),
                        key=lambda j: (j["llm"], j["mmproj"])):
            type_rows.append([j["llm"], j["mmproj"], secs(sec), f"{med(j, 'encode_ms'):.0f}",
                              f"{med(p, 'encode_ms') / med(j, 'encode_ms'):.2f}x" if p else "",
                              f"{decode_tps(j):.1f}", f"{med(j, 'total_ms'):.0f}", f"{rtf(j):.3f}",
                              f"{med(p, 'total_ms') / med(j, 'total_ms'):.2f}x" if p else "",
                              f"{j['load_ms']:.0f}", f"{j['peak_rss_mb']:.0f}"])
    if type_rows:
        lines += [f"### GGUF types ({t} threads)", ""]
        lines += table(["LLM", "mmproj", "audio", "encoder+adaptor ms", "vs PyTorch", "decode tok/s",
                        "end-to-end ms", "RTF", "vs PyTorch", "load ms", "peak RSS MB"], type_rows) + [""]

    # encoder vs GEMM bound
    rows = []
    for sec, gflop in s.get("encoder_gflop", {}).items():
        sec = float(sec)
        roof = res.roofline(t)
        p = res.torch(sec, t)
        for mm in ("f32", "f16", "q8_0", "bf16"):
            o = res.ours(sec, t, mmproj=mm)
            if not (o and p and roof):
                continue
            peak = roof["gemm_gflops"]
            rate = lambda ms: gflop / (ms / 1000)  # noqa: E731
            rows.append([secs(sec), mm, f"{gflop:.0f}", f"{med(p, 'encode_ms'):.0f} ({rate(med(p, 'encode_ms')) / peak * 100:.0f}%)",
                         f"{med(o, 'encode_ms'):.0f} ({rate(med(o, 'encode_ms')) / peak * 100:.0f}%)",
                         f"{med(p, 'encode_ms') / med(o, 'encode_ms'):.2f}x"])
    if rows:
        lines += [f"### Encoder + adaptor vs the f32 GEMM bound ({t} threads)", ""]
        lines += table(["audio", "mmproj", "GFLOP", "PyTorch fp32 ms (% of GEMM bound)", "funasr-cpp ms (% of GEMM bound)",
                        "speed-up"], rows)
        lines += ["", "GFLOP: 2 x multiply-adds of every encoder/adaptor matrix product plus attention; "
                  "% of GEMM bound = achieved GFLOP/s over torch.mm's f32 GFLOP/s at the same thread count "
                  "(q8_0 and bf16 run int8 / bf16 dot-product instructions whose peak is above f32's, so they can pass 100%).", ""]

    # decode
    rows = []
    for j in sorted((j for j in res.jobs if j["kind"] == "llama-bench"), key=lambda j: (j["llm"], j["threads"])):
        o = res.ours(10.0 if res.ours(10.0, j["threads"], llm=j["llm"]) else s["seconds"][0], j["threads"], llm=j["llm"])
        depth = j["n_prompt"] + s["tokens"] / 2
        bound = bound_tps(res, j["llm"], j["threads"], depth)
        ours_tps = decode_tps(o) if o else None
        ab = res.find(kind="decode-ab", llm=j["llm"], threads=j["threads"])
        ab_cell = ""
        if ab:
            a, b = statistics.median(ab["ours"]), statistics.median(ab["llama_bench"])
            ab_cell = f"{a:.1f} / {b:.1f} = {a / b * 100:.0f}%"
        rows.append([j["llm"], j["threads"], f"{s['llm_weight_bytes'][j['llm']] / 2**20:.0f}",
                     f"{ours_tps:.1f}" if ours_tps else "", f"{j['tg_tokens_per_s']:.1f}",
                     f"{ours_tps / j['tg_tokens_per_s'] * 100:.0f}%" if ours_tps else "", ab_cell,
                     f"{bound:.1f}" if bound else "",
                     f"{ours_tps / bound * 100:.0f}%" if (ours_tps and bound) else "",
                     f"{j['tg_tokens_per_s'] / bound * 100:.0f}%" if bound else "",
                     f"{prefill_tps(o):.0f}" if o else "", f"{j['pp_tokens_per_s']:.0f}"])
    if rows:
        lines += ["### Decode vs llama.cpp and the memory-bandwidth bound", ""]
        lines += table(["LLM", "threads", "weights MiB", "ours tok/s", "llama-bench tok/s", "ours / llama.cpp",
                        "alternating: ours / llama-bench tok/s",
                        "bound tok/s", "ours % of bound", "llama.cpp % of bound", "ours prefill tok/s",
                        "llama-bench pp tok/s"], rows)
        lines += ["", "llama-bench: `-p 0 -n N -d D` (generation after D tokens of context, D = our 10 s prompt) "
                  "and `-p D -n 0` (prompt processing, text tokens); same GGUF, same build, same threads. "
                  "Alternating: one transcription of the clip (fresh process) then one llama-bench run, repeated; medians. "
                  "Bound = read GB/s / (all weight bytes + f16 KV cache at mean depth) per token.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- chart
def chart(res: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = res.threads
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = {"frontend_ms": "#8dd3c7", "encode_ms": "#80b1d3", "prefill_ms": "#fdb462", "decode_ms": "#fb8072",
              "other": "#d9d9d9"}
    labels, x = [], 0
    for sec in res.setup["seconds"]:
        for name, j in (("PyTorch", res.torch(sec, t)), ("ours", res.ours(sec, t))):
            if not j:
                continue
            bottom = 0.0
            for stage in (*STAGES, "other"):
                v = (other_ms(j) if stage == "other" else med(j, stage)) / 1000 / sec
                ax1.bar(x, v, bottom=bottom, color=colors[stage], label=stage.replace("_ms", "") if x == 0 else None)
                bottom += v
            ax1.text(x, bottom, f"{bottom:.2f}", ha="center", va="bottom", fontsize=8)
            labels.append((x, f"{name}\n{secs(sec)}"))
            x += 1
        x += 0.5
    ax1.set_xticks([p for p, _ in labels], [lbl for _, lbl in labels], fontsize=8)
    ax1.set_ylabel("real-time factor (lower is better)")
    ax1.set_title(f"End to end, {t} threads, {res.setup['tokens']} tokens/segment\n"
                  f"LLM {res.headline[0]} + mmproj {res.headline[1]} vs PyTorch fp32")
    ax1.legend(fontsize=8)

    llms = [j["llm"] for j in sorted((j for j in res.jobs if j["kind"] == "llama-bench" and j["threads"] == t),
                                     key=lambda j: j["llm"])]
    width = 0.27
    for i, llm in enumerate(llms):
        lb = res.find(kind="llama-bench", llm=llm, threads=t)
        o = res.ours(10.0, t, llm=llm) or res.ours(res.setup["seconds"][0], t, llm=llm)
        bound = bound_tps(res, llm, t, lb["n_prompt"] + res.setup["tokens"] / 2)
        vals = [(decode_tps(o) if o else 0, "funasr-cpp", "#fb8072"), (lb["tg_tokens_per_s"], "llama-bench", "#80b1d3"),
                (bound or 0, "bandwidth bound", "#d9d9d9")]
        for k, (v, name, c) in enumerate(vals):
            ax2.bar(i + (k - 1) * width, v, width, color=c, label=name if i == 0 else None)
            ax2.text(i + (k - 1) * width, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    p = res.torch(10.0, t)
    if p:
        ax2.axhline(decode_tps(p), color="k", ls="--", lw=1, label="PyTorch fp32")
    ax2.set_xticks(range(len(llms)), llms)
    ax2.set_ylabel("decode tokens/s (higher is better)")
    ax2.set_title(f"LLM decode, {t} threads")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(data: dict, out: Path) -> None:
    res = Results(data)
    (out / "report.md").write_text(markdown(res) + "\n")
    chart(res, out / "benchmarks.png")


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    write(json.loads((folder / "results.json").read_text()), folder)
