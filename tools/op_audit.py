#!/usr/bin/env python3
"""The GPU op audit: every ggml op (with its types) that our graphs compute, recorded by running
them, against what the pinned llama.cpp's Metal, CUDA and Vulkan backends accept (their
supports_op, read by hand: tools/op_audit.json). Writes docs/GPU_OPS.md.

    python tools/op_audit.py             # record, check, write docs/GPU_OPS.md
    python tools/op_audit.py --check     # record and check only: exit 1 naming what is wrong
    python tools/op_audit.py --json F    # also write the recorded op set to F
    python tools/op_audit.py --relocate  # after a llama.cpp pin or patch change: move each source
                                         # reference of op_audit.json to its anchor's new line
                                         # (then re-read those lines: the audit is by hand)

How the ops are recorded: funasr_cpp._testing.record_ops (csrc/python/testing_ops.cpp) loads the
engine as funasr::Transcriber does, with a ggml_backend_sched eval callback on the mmproj's graph
(encoder, adaptor, CTC head: "encoder") and on the LLM's (llama.cpp's qwen3 graph: "llm"), and runs
transcription jobs through it: plain, batched (2 at once, sharing the prompt prefix), with a draft
verified several tokens at a time, with the CTC outputs, a CTC draft, and CTC only. RUNS below
repeats that over the GGUF types our converter writes, flash attention on and off, the KV cache
types, and a variant mmproj whose graph takes the other code paths (the adaptor's frame stacking,
the FSMN's asymmetric padding). Everything runs on the CPU: the graph is the same on any device
(flash attention is given, never "auto"), so the recorded set does not depend on the build.

The fixtures are the tests' tiny random-weight releases (tests/fixtures/checkpoint.py); shapes
differ from the real model's, which op_audit.json's notes take into account where a backend's
condition is a shape (flash attention's head dims). tests/test_op_audit.py runs the same recording
and fails on an op that is not audited, an audited one no graph uses, a layout a backend refuses,
or a docs/GPU_OPS.md that is not what this writes.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "tools" / "op_audit.json"
DOC = REPO / "docs" / "GPU_OPS.md"
BACKENDS = ("metal", "cuda", "vulkan")
BACKEND_NAMES = {"metal": "Metal", "cuda": "CUDA", "vulkan": "Vulkan"}
GRAPHS = {"encoder": "Encoder, adaptor and CTC head (csrc/model/funasr_graph.cpp, through mtmd)",
          "llm": "LLM (llama.cpp's qwen3 graph, as the engine drives it)"}

# The recorded releases: "nano" is the tests' CTC release (tests/conftest.py: ctc_release), "variant"
# the same with adaptor frame stacking (downsample_rate 2) and an asymmetric FSMN window (sanm_shift 1).
RELEASES = {
    "nano": dict(seed=1, ctc=True),
    "variant": dict(seed=1, ctc=True, config={"audio_adaptor_conf": {"downsample_rate": 2},
                                              "audio_encoder_conf": {"sanm_shfit": 1}}),
}
WEIGHT_TYPES = ("f32", "f16", "bf16", "q8_0")  # the converter's LLM and mmproj types
KV_TYPES = ("f16", "f32", "bf16", "q8_0")       # LoadOptions.kv_type


def runs() -> list[dict]:
    """Each run: one engine load (release, GGUF type of both files, flash attention, KV type)."""
    out = [dict(release="nano", weights=w, fa=fa, kv="f16") for w in WEIGHT_TYPES for fa in ("on", "off")]
    # the KV cache types (llama.cpp: a quantized V cache needs flash attention)
    out += [dict(release="nano", weights="f32", fa=fa, kv=kv) for kv in KV_TYPES[1:] for fa in ("on", "off")
            if not (kv == "q8_0" and fa == "off")]
    out += [dict(release="variant", weights="f32", fa=fa, kv="f16") for fa in ("on", "off")]
    return out


DIMS = ("release", "weights", "fa", "kv")
DIM_LABELS = {"release": "release", "weights": "GGUF type", "fa": "flash attn", "kv": "KV cache"}


def write_releases(workdir: Path) -> dict:
    """{name: release folder} for RELEASES (the checkpoint writer needs torch)."""
    sys.path.insert(0, str(REPO / "tests"))
    from fixtures.checkpoint import write_checkpoint

    out = {}
    for name, kw in RELEASES.items():
        folder = workdir / name / "nano"
        write_checkpoint(folder, **kw)
        out[name] = folder
    return out


def convert_all(releases: dict, workdir: Path) -> dict:
    """{(release, type): (llm, mmproj)} for every run's pair."""
    from funasr_cpp.converters import convert
    from funasr_cpp.converters.release import ReleaseWarning

    out = {}
    for r in runs():
        k = (r["release"], r["weights"])
        if k in out:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ReleaseWarning)
            out[k] = convert(releases[r["release"]], workdir / f"gguf-{k[0]}-{k[1]}", llm_type=k[1],
                             mmproj_type=k[1], progress=False)
    return out


def jobs() -> list:
    """The engine jobs of each run: every path through the graphs the engine takes."""
    import numpy as np

    from funasr_cpp.prompt import build_prompt

    x = (np.random.default_rng(0).standard_normal(3 * 16000) * 0.1).astype(np.float32)
    p = build_prompt()
    return [(x, dict(prompt=p, max_new_tokens=6, ignore_eos=True)),
            (x[:8000], dict(prompt=p, max_new_tokens=6, ignore_eos=True, ctc=True, draft=[5, 6, 7, 8], draft_max=4)),
            (x[:12000], dict(prompt=p, max_new_tokens=6, ignore_eos=True, ctc_draft=True, draft_max=4)),
            (x, dict(ctc_only=True))]


def record(pairs: dict) -> dict:
    """{(graph, op, type, srcs): {"runs": [run index], "details": [...], "layouts": [...]}} over runs()."""
    from funasr_cpp import _testing

    out: dict = {}
    todo = jobs()
    for i, r in enumerate(runs()):
        llm, mmproj = pairs[r["release"], r["weights"]]
        for o in _testing.record_ops(str(llm), str(mmproj), todo, device="cpu", flash_attn=r["fa"], kv_type=r["kv"],
                                     n_parallel=2):
            k = (o["graph"], o["op"], o["type"], tuple(o["srcs"]))
            rec = out.setdefault(k, {"runs": set(), "details": set(), "layouts": set()})
            rec["runs"].add(i)
            rec["details"].update(o["details"])
            rec["layouts"].update(o["layouts"])
    return {k: {"runs": sorted(v["runs"]), "details": sorted(v["details"]), "layouts": sorted(v["layouts"])}
            for k, v in sorted(out.items())}


def record_all(workdir: Path, releases: dict | None = None) -> dict:
    """record() on fresh fixtures in workdir (releases: {name: folder} already written, e.g. the tests')."""
    releases = dict(releases or {})
    missing = {k: v for k, v in RELEASES.items() if k not in releases}
    if missing:
        releases.update({k: v for k, v in write_releases(workdir).items() if k in missing})
    return record(convert_all(releases, workdir))


# ----------------------------------------------------------------------------- the audited table
def load_table(path: Path = TABLE) -> dict:
    return json.loads(path.read_text())


def table_key(e: dict) -> tuple:
    return e["op"], e["type"], tuple(e["srcs"])


def verdict(cell: str) -> str:
    return cell.split(":", 1)[0].strip()


def _flags(layout: str) -> dict:
    """'dst c src0 c2+r' -> {'dst': {'c'}, 'src0': {'c2', 'r'}}"""
    words = layout.split()
    return {words[i]: set(words[i + 1].split("+")) for i in range(0, len(words), 2)}


def layout_violations(rec: dict, rule: dict, entry: dict, backend: str) -> list[str]:
    """The recorded layouts that a backend's layout requirements refuse ('src0:r': src0 rows contiguous)."""
    reqs = list(rule.get("layout", [])) + list(entry.get("layout", {}).get(backend, []))
    bad = []
    for lay in rec["layouts"]:
        f = _flags(lay)
        for req in reqs:
            who, need = req.split(":")
            have = f.get(who)
            if have is not None and "c" not in have and need not in have:
                bad.append(f"{lay} (needs {req})")
    return bad


def check(records: dict, table: dict) -> list[str]:
    """What is wrong: a recorded op not audited, an audited one not recorded, a rule missing, a
    recorded layout that a backend refuses where the table says it accepts."""
    entries = {table_key(e): e for e in table["entries"]}
    seen = {(op, t, srcs) for _, op, t, srcs in records}
    problems = []
    for k in sorted(seen - set(entries)):
        graphs = sorted(g for g, op, t, s in records if (op, t, s) == k)
        problems.append(f"not audited: {k[0]} {k[1]} <- {', '.join(k[2])} (graph {', '.join(graphs)}): read the "
                        f"backends' supports_op for it and add it to {TABLE.relative_to(REPO)}")
    for k in sorted(set(entries) - seen):
        problems.append(f"audited but no graph uses it: {k[0]} {k[1]} <- {', '.join(k[2])}: remove it from "
                        f"{TABLE.relative_to(REPO)}")
    for (g, op, t, srcs), rec in records.items():
        e = entries.get((op, t, srcs))
        if e is None:
            continue
        rules = table["rules"].get(op)
        if rules is None:
            problems.append(f"no backend rules for {op} in {TABLE.relative_to(REPO)}")
            continue
        for b in BACKENDS:
            if verdict(e[b]) == "no":
                continue
            for v in layout_violations(rec, rules[b], e, b):
                problems.append(f"{BACKEND_NAMES[b]} refuses a recorded {op} {t} <- {', '.join(srcs)} ({g}): {v}")
    return problems


def check_refs(table: dict, source: Path) -> list[str]:
    """Each source reference's line holds its anchor (the audit was read at those lines)."""
    problems = []
    for where, ref in _refs(table):
        path = source / ref["file"]
        if not path.is_file():
            problems.append(f"{where}: {ref['file']} is not in {source}")
            continue
        lines = path.read_text(errors="replace").split("\n")
        if not (0 < ref["line"] <= len(lines) and ref["anchor"] in lines[ref["line"] - 1]):
            problems.append(f"{where}: {ref['file']}:{ref['line']} does not hold {ref['anchor']!r} (the source "
                            "changed: run tools/op_audit.py --relocate, then re-read those lines)")
    return problems


def _refs(table: dict):
    for b, ref in table["functions"].items():
        yield f"functions.{b}", ref
    for b, rule in table["prechecks"].items():
        for ref in rule["refs"]:
            yield f"prechecks.{b}", ref
    for op, rules in table["rules"].items():
        for b, rule in rules.items():
            for ref in rule["refs"]:
                yield f"rules.{op}.{b}", ref


def relocate(table: dict, source: Path) -> int:
    """Move each reference to the line of its anchor nearest the old one (inside the backend's
    supports_op where the reference is in that function's file); the number moved."""
    moved = 0
    bodies = {}  # file -> (first, last) line of its supports_op
    for ref in table["functions"].values():
        lines = (source / ref["file"]).read_text(errors="replace").split("\n")
        starts = [i + 1 for i, line in enumerate(lines) if ref["anchor"] in line]
        if len(starts) != 1:
            raise SystemExit(f"{ref['file']}: {ref['anchor']!r} found {len(starts)} times: audit by hand")
        moved += starts[0] != ref["line"]
        ref["line"] = starts[0]
        end = next(i + 1 for i in range(starts[0], len(lines)) if lines[i] == "}")
        bodies[ref["file"]] = (starts[0], end)
    for where, ref in _refs(table):
        if where.startswith("functions."):
            continue
        lines = (source / ref["file"]).read_text(errors="replace").split("\n")
        lo, hi = bodies.get(ref["file"], (1, len(lines)))
        if not lo <= ref["line"] <= hi:  # a helper outside the function (e.g. ggml_vk_concat_supported)
            lo, hi = 1, len(lines)
        hits = [i + 1 for i, line in enumerate(lines) if ref["anchor"] in line and lo <= i + 1 <= hi]
        if not hits:
            raise SystemExit(f"{ref['file']}: {ref['anchor']!r} is gone: audit that op again by hand")
        best = min(hits, key=lambda n: abs(n - ref["line"]))
        if best != ref["line"]:
            ref["line"], moved = best, moved + 1
    return moved


def llama_source() -> Path | None:
    """The pinned, patched tree the build uses, where it is on this machine."""
    sys.path.insert(0, str(REPO / "third_party"))
    try:
        import llama_cpp_source as src

        tree = src.cache_root() / src.PIN.tree_name
    except Exception:  # noqa: BLE001  (an older or changed helper: no tree to check)
        return None
    return tree if (tree / "ggml").is_dir() else None


# ----------------------------------------------------------------------------- the document
def seen_with(run_ids: list[int]) -> str:
    """Which runs computed an op, said by run dimensions: one condition ("flash attn on; KV cache
    f16") or two joined by "or", the fewest dimensions that say it exactly; else the run numbers."""
    all_runs = runs()
    seen = set(run_ids)
    if len(seen) == len(all_runs):
        return "every run"

    def match(cond: dict) -> set:
        return {i for i, r in enumerate(all_runs) if all(r[d] in vs for d, vs in cond.items())}

    # conditions that hold only for runs that computed the op: one dimension with every value that
    # qualifies, or one value of a dimension with every value of another that qualifies with it
    conds = []
    for d in DIMS:
        vs = [v for v in sorted({r[d] for r in all_runs}, key=_order) if match({d: {v}}) <= seen]
        if vs:
            conds.append({d: vs})
    for d1, d2 in itertools.permutations(DIMS, 2):
        for v1 in sorted({r[d1] for r in all_runs}, key=_order):
            vs = [v2 for v2 in sorted({r[d2] for r in all_runs}, key=_order)
                  if match({d1: {v1}, d2: {v2}}) and match({d1: {v1}, d2: {v2}}) <= seen]
            if vs:
                conds.append({d: ([v1] if d == d1 else vs) for d in DIMS if d in (d1, d2)})

    def text(cond: dict) -> str:
        return "; ".join(f"{DIM_LABELS[d]} {', '.join(vs)}" for d, vs in cond.items())

    def size(cs) -> int:
        return sum(len(c) for c in cs)

    found = [[c] for c in conds if match(c) == seen]
    found += [[a, b] for a, b in itertools.combinations(conds, 2) if match(a) | match(b) == seen]
    if found:
        return ", or ".join(text(c) for c in min(found, key=lambda cs: (len(cs), size(cs))))
    return "runs " + ", ".join(map(str, sorted(seen)))


def _order(v: str):
    order = ["nano", "variant", *WEIGHT_TYPES, "on", "off"]
    return order.index(v) if v in order else len(order)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _ref_text(ref: dict) -> str:
    return f"{Path(ref['file']).name}:{ref['line']}"


def render(records: dict, table: dict) -> str:
    entries = {table_key(e): e for e in table["entries"]}
    all_runs = runs()
    out = [
        "# GPU op audit",
        "",
        "<!-- Written by tools/op_audit.py from what the graphs computed and tools/op_audit.json; do not edit."
        " tests/test_op_audit.py fails when this file is not what the tool writes. -->",
        "",
        "Every ggml op our graphs compute, with its types (dst <- sources, by position; `-` an empty "
        "slot), and whether the Metal, CUDA and Vulkan backends of the pinned llama.cpp "
        f"({table['source']}) accept it: their `supports_op`, read by hand. A node a backend refuses "
        "runs on the CPU (a graph split), silently. Metal and CUDA were not run here; this is a reading "
        "of their sources. Vulkan also runs the whole pipeline on lavapipe (tests/test_vulkan.py).",
        "",
        "How the ops were found: by running the graphs, not by reading them. "
        "`funasr_cpp._testing.record_ops` loads the engine as `funasr::Transcriber` does, with a "
        "`ggml_backend_sched` eval callback on the mmproj's graph and on the LLM's, and runs jobs through "
        "it: plain, batched with a shared prompt prefix, a draft verified several tokens at a time, CTC "
        "outputs, a CTC draft, CTC only. Runs (one engine load each, on the tests' tiny random-weight "
        "releases):",
        "",
        "| run | release | GGUF type (LLM and mmproj) | flash attn | KV cache |",
        "| --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(all_runs):
        out.append(f"| {i} | {r['release']} | {r['weights']} | {r['fa']} | {r['kv']} |")
    out += [
        "",
        "(`nano`: the tests' CTC release; `variant`: the same with the adaptor stacking 2 frames "
        "(`downsample_rate` 2) and an asymmetric FSMN window (`sanm_shift` 1), the graph's other paths.)",
        "",
        "Verdicts: **yes** = accepted for these types and for every memory layout the runs recorded "
        "(the layouts are checked against each backend's contiguity conditions by the tool); **if: …** = "
        "accepted when a device feature or shape condition holds (see the notes and the conditions "
        "table); **no** = refused: the node runs on the CPU.",
        "",
    ]
    problems = check(records, table)
    out += ["## Findings", ""]
    nos = [(g, k, b) for (g, *k) in records for b in BACKENDS
           if tuple(k) in entries and verdict(entries[tuple(k)][b]) == "no"]
    if nos:
        for g, k, b in nos:
            out.append(f"- {BACKEND_NAMES[b]} refuses {k[0]} {k[1]} <- {', '.join(k[2])} ({g} graph): "
                       f"{entries[tuple(k)][b].split(':', 1)[-1].strip()}")
    else:
        out.append("- No op of either graph, in any recorded type or layout, is refused outright by Metal, "
                   "CUDA or Vulkan. What remains are the conditions below.")
    for p in problems:
        out.append(f"- PROBLEM: {p}")
    for b in BACKENDS:
        rule = table["prechecks"][b]
        refs = ", ".join(_ref_text(r) for r in rule["refs"])
        out.append(f"- {BACKEND_NAMES[b]}, for every op ({refs}): {rule['requires']}.")
    for n in table["notes"]:
        out.append(f"- {n}")
    for g, title in GRAPHS.items():
        out += ["", f"## {title}", "",
                "| op | dst <- sources | recorded with | recorded parameters | Metal | CUDA | Vulkan |",
                "| --- | --- | --- | --- | --- | --- | --- |"]
        for (gg, op, t, srcs), rec in records.items():
            if gg != g:
                continue
            e = entries.get((op, t, srcs))
            cells = [_cell(e[b]) if e else "NOT AUDITED" for b in BACKENDS]
            params = "; ".join(rec["details"]) if rec["details"] else ""
            out.append(f"| {op} | {t} <- {', '.join(srcs)} | {seen_with(rec['runs'])} | {_cell(params)} | "
                       + " | ".join(cells) + " |")
    notes = [(table_key(e), e["note"]) for e in table["entries"] if e.get("note")]
    if notes:
        out += ["", "Notes on entries:", ""]
        done = set()
        for k, n in notes:
            if n in done:
                out.append(f"- {k[0]} {k[1]} <- {', '.join(k[2])}: as above.")
                continue
            done.add(n)
            out.append(f"- {k[0]} {k[1]} <- {', '.join(k[2])}: {n}")
    out += ["", "## What each backend's supports_op asks, per op", "",
            "Source lines in the pinned tree: " + ", ".join(
                f"{BACKEND_NAMES[b]} `{table['functions'][b]['file']}` (from line {table['functions'][b]['line']})"
                for b in BACKENDS) + ". Layout terms: contiguous (`ggml_is_contiguous`), contiguous_1/_2, "
            "rows contiguous (`ggml_is_contiguous_rows`: elements of a row adjacent).",
            "", "| op | Metal | CUDA | Vulkan |", "| --- | --- | --- | --- |"]
    used = sorted({op for _, op, _, _ in records})
    for op in used:
        rules = table["rules"].get(op)
        if not rules:
            out.append(f"| {op} | NOT AUDITED | NOT AUDITED | NOT AUDITED |")
            continue
        cells = [f"{_cell(rules[b]['requires'])} ({', '.join(_ref_text(r) for r in rules[b]['refs'])})" for b in BACKENDS]
        out.append(f"| {op} | " + " | ".join(cells) + " |")
    out.append("")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="check only; do not write docs/GPU_OPS.md")
    ap.add_argument("--json", type=Path, help="write the recorded op set here too")
    ap.add_argument("--relocate", action="store_true", help="move op_audit.json's source lines to their anchors")
    args = ap.parse_args()
    table = load_table()
    source = llama_source()
    if args.relocate:
        if source is None:
            raise SystemExit("the pinned llama.cpp tree is not on this machine (build the project once)")
        print(f"moved {relocate(table, source)} references")
        TABLE.write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n")
        return 0
    with tempfile.TemporaryDirectory(prefix="op-audit-") as tmp:
        records = record_all(Path(tmp))
    if args.json:
        args.json.write_text(json.dumps([{"graph": g, "op": op, "type": t, "srcs": list(s), **rec}
                                         for (g, op, t, s), rec in records.items()], indent=1))
    problems = check(records, table) + (check_refs(table, source) if source else [])
    for p in problems:
        print(f"op audit: {p}", file=sys.stderr)
    text = render(records, table)
    if args.check:
        if DOC.read_text() != text:
            problems.append(f"{DOC.relative_to(REPO)} is not what tools/op_audit.py writes: rerun it")
            print(f"op audit: {problems[-1]}", file=sys.stderr)
    else:
        DOC.write_text(text)
        print(f"wrote {DOC.relative_to(REPO)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
