"""The GPU op audit (tools/op_audit.py, docs/GPU_OPS.md): the ggml ops our graphs compute, recorded by
running them (funasr_cpp._testing.record_ops: an eval callback on the encoder/adaptor/CTC graph and
the LLM's, the engine loaded as funasr::Transcriber loads it) on the tiny fixtures, each in the
audited table of what the pinned Metal, CUDA and Vulkan backends accept (tools/op_audit.json): a
graph that gains an op, or a type of one, fails here until that op is audited. Also: the document
is what the tool writes now, its source references still point at what was read, and the hosted-CI
workflows and the GPU script (written for machines this CI lacks) parse and say what they should."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_tool():
    spec = importlib.util.spec_from_file_location("op_audit", REPO / "tools" / "op_audit.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


op_audit = _load_tool()


@pytest.fixture(scope="module")
def table():
    return op_audit.load_table()


@pytest.fixture(scope="module")
def records(ctc_release, tmp_path_factory):
    """The op set of every run of tools/op_audit.py (the "nano" release is the tests' ctc_release)."""
    return op_audit.record_all(tmp_path_factory.mktemp("op-audit"), releases={"nano": ctc_release})


def _name(k) -> str:
    return f"{k[0]} {k[1]} <- {', '.join(k[2])}"


# ------------------------------------------------------------------------------ the recording
def test_the_recording_sees_both_graphs_and_their_paths(records):
    ops = {(g, op) for g, op, _, _ in records}
    # encoder: the FSMN conv, attention both ways, the CTC head (argmax, log-sum-exp, concat), and the
    # variant's padding (adaptor frame stacking, asymmetric FSMN window)
    for op in ("CONV_2D_DW", "FLASH_ATTN_EXT", "SOFT_MAX", "ARGMAX", "SUM_ROWS", "CONCAT", "PAD", "NORM"):
        assert ("encoder", op) in ops, f"the encoder graph's {op} was not recorded"
    # LLM: rope, the KV cache writes, attention both ways
    for op in ("ROPE", "SET_ROWS", "FLASH_ATTN_EXT", "SOFT_MAX", "RMS_NORM", "SWIGLU"):
        assert ("llm", op) in ops, f"the LLM graph's {op} was not recorded"
    # every GGUF type's weights reach a matrix product, every KV type a cache write
    srcs0 = {s[0] for g, op, _, s in records if op == "MUL_MAT"}
    assert set(op_audit.WEIGHT_TYPES) <= srcs0
    assert {t for _, op, t, _ in records if op == "SET_ROWS"} == set(op_audit.KV_TYPES)


def test_record_ops_runs_where_asked_and_checks_its_jobs(ctc_gguf):
    from funasr_cpp import _testing

    import numpy as np

    llm, mmproj = ctc_gguf
    x = np.zeros(16000, np.float32)
    ops = _testing.record_ops(str(llm), str(mmproj), [(x, {"ctc_only": True})], device="cpu")
    assert ops and {o["graph"] for o in ops} == {"encoder"}  # CTC only: no LLM step
    assert all(set(o["backends"]) <= {"CPU", "CPU_REPACK"} or o["op"] in ("VIEW", "RESHAPE", "PERMUTE", "TRANSPOSE")
               for o in ops), ops
    with pytest.raises(RuntimeError, match="media markers"):  # the engine's own error, as a job's failure
        _testing.record_ops(str(llm), str(mmproj), [(x, {"prompt": "no marker"})], device="cpu")
    with pytest.raises(ValueError, match="devices"):  # resolve_device's error, naming the devices there are
        _testing.record_ops(str(llm), str(mmproj), [(x, {"ctc_only": True})], device="nosuch0")


# ------------------------------------------------------------------------------ the audit
def test_every_recorded_op_is_audited(records, table):
    audited = {op_audit.table_key(e) for e in table["entries"]}
    missing = sorted({(op, t, s) for _, op, t, s in records} - audited)
    assert not missing, ("ops our graphs compute that tools/op_audit.json does not audit (read the Metal, CUDA "
                         "and Vulkan supports_op for each, add them, rerun tools/op_audit.py): "
                         + "; ".join(_name(k) for k in missing))


def test_every_audited_op_is_still_used(records, table):
    seen = {(op, t, s) for _, op, t, s in records}
    stale = sorted(op_audit.table_key(e) for e in table["entries"] if op_audit.table_key(e) not in seen)
    assert not stale, "audited ops no graph computes any more (remove them): " + "; ".join(_name(k) for k in stale)
    assert {op for _, op, _, _ in records} <= set(table["rules"]), "an op without its backends' rules"


def test_no_backend_refuses_a_recorded_layout(records, table):
    bad = [p for p in op_audit.check(records, table) if "refuses" in p]
    assert not bad, "\n".join(bad)


def test_the_layout_check_is_not_vacuous(table):
    # Metal's ADD needs both sources' rows contiguous, Vulkan's SCALE a contiguous source
    add = {"layouts": ["dst c src0 c src1 c1+c2", "dst c src0 c src1 c"]}
    entry = next(e for e in table["entries"] if op_audit.table_key(e) == ("ADD", "f32", ("f32", "f32")))
    assert op_audit.layout_violations(add, table["rules"]["ADD"]["metal"], entry, "metal") == \
        ["dst c src0 c src1 c1+c2 (needs src1:r)"]
    assert op_audit.layout_violations(add, table["rules"]["ADD"]["cuda"], entry, "cuda") == []
    scale = {"layouts": ["dst c src0 r+c2"]}
    entry = next(e for e in table["entries"] if e["op"] == "SCALE")
    assert op_audit.layout_violations(scale, table["rules"]["SCALE"]["vulkan"], entry, "vulkan")
    assert not op_audit.layout_violations(scale, table["rules"]["SCALE"]["metal"], entry, "metal")
    # a quantized src0 of a Vulkan matrix product must have dims 0-1 packed (the entry's own condition)
    mm = {"layouts": ["dst c src0 r src1 c"]}
    entry = next(e for e in table["entries"] if op_audit.table_key(e) == ("MUL_MAT", "f32", ("q8_0", "f32")))
    assert op_audit.layout_violations(mm, table["rules"]["MUL_MAT"]["vulkan"], entry, "vulkan")


def test_verdicts_are_well_formed(table):
    for e in table["entries"]:
        for b in op_audit.BACKENDS:
            assert op_audit.verdict(e[b]) in ("yes", "if", "no"), (e, b)
            if op_audit.verdict(e[b]) != "yes":
                assert e[b].split(":", 1)[1].strip(), f"{e} {b}: an 'if' or 'no' says why"


def test_source_references_point_at_what_was_read(table):
    source = op_audit.llama_source()
    if source is None:
        pytest.skip("the pinned llama.cpp tree is not on this machine (third_party/llama_cpp_source.py makes it "
                    "when the project builds)")
    problems = op_audit.check_refs(table, source)
    assert not problems, "\n".join(problems)


def test_the_document_is_what_the_tool_writes(records, table):
    want = op_audit.render(records, table)
    have = op_audit.DOC.read_text()
    assert have == want, "docs/GPU_OPS.md is not what tools/op_audit.py writes now: run python tools/op_audit.py"
    assert "PROBLEM" not in have


# ------------------------------------------------------------------------------ hosted CI, GPU script
def _workflow(name: str) -> dict:
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())
    assert doc.get("on", doc.get(True)), f"{name}: no trigger"  # YAML 1.1 reads the key `on` as True
    (job,) = doc["jobs"].values()
    return job


def _commands(job: dict) -> str:
    return "\n".join(s.get("run", "") for s in job["steps"])


PARITY = ("tests/test_encoder.py", "tests/test_ctc.py", "tests/test_llm_parity.py", "tests/test_asr_parity.py",
          "tests/test_batching.py", "tests/test_device.py")


def test_macos_metal_workflow():
    job = _workflow("macos-metal.yml")
    assert job["runs-on"].startswith("macos-") and job["runs-on"] != "macos-13"  # arm64 runners
    run = _commands(job)
    assert "pip wheel" in run and '[test]"' in run and "CMAKE_ARGS" not in run  # Metal: on by default
    assert 'resolve_device("metal0") == "mtl0"' in run and "auto_device ==" in run
    assert "pytest" in run and all(t in job["env"]["PARITY_TESTS"] for t in PARITY)


def test_linux_cuda_workflow():
    job = _workflow("linux-cuda.yml")
    assert "gpu" in job["runs-on"] and "--gpus all" in job["container"]["options"]
    assert "-DGGML_CUDA=ON" in job["env"]["CMAKE_ARGS"]
    run = _commands(job)
    assert "pip wheel" in run and '[test]"' in run and "nvidia-smi" in run
    assert 'resolve_device("cuda0") == "cuda0"' in run and 'auto_device == "cuda0"' in run
    assert "pytest" in run and all(t in job["env"]["PARITY_TESTS"] for t in PARITY)


def test_gpu_script_parses():
    script = REPO / "benchmarks" / "gpu.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True).returncode == 0
    text = script.read_text()
    assert "-DGGML_CUDA=ON" in text and "benchmarks/bench.py" in text and "cuda0" in text
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (bash -n passed)")
    out = subprocess.run(["shellcheck", "-S", "warning", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
