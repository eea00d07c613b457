"""The portable release wheel (tools/build_wheel.sh), installed as a user installs it: into a fresh
venv, binaries only, with no compiler on PATH; then the install and parity tests run against it,
with ggml's best CPU variant for this machine and with lower ones pinned.

These tests need a built wheel: FUNASR_WHEEL=path/to/funasr_cpp-*.whl (.ci/run builds one with
tools/build_wheel.sh and sets it). Without it they are skipped, saying so; marker `wheel`.
The test dependencies (torch, funasr, ...) come from this test environment through a .pth file
appended after the wheel venv's own site-packages, so funasr_cpp and its runtime dependencies are
the wheel's."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from fixtures.llama_source import src

REPO = Path(__file__).resolve().parents[1]
PIN_BUILD, PIN_COMMIT = 11312, "0c1e570"
WHEEL = os.environ.get("FUNASR_WHEEL", "")

pytestmark = [
    pytest.mark.wheel,
    pytest.mark.skipif(not WHEEL, reason="FUNASR_WHEEL is not set: build the wheel with tools/build_wheel.sh"),
    pytest.mark.skipif(not sys.platform.startswith("linux") or os.uname().machine != "x86_64",
                       reason="the portable wheel is built for linux x86-64"),
]

# The parity tests a wheel must pass: import, tools and RPATHs, frontend, encoder, LLM, end to end,
# and the shipped llama-mtmd-cli / llama-server (ours and LFM2-Audio).
PARITY = ["tests/test_install.py", "tests/test_frontend.py", "tests/test_encoder.py",
          "tests/test_llm_parity.py", "tests/test_asr_parity.py", "tests/test_mtmd_cli.py", "tests/test_lfm2a.py"]
PARITY_PINNED = ["tests/test_encoder.py", "tests/test_llm_parity.py", "tests/test_asr_parity.py"]
COMPILERS = ("cc", "gcc", "g++", "c++", "clang", "clang++", "cmake", "ninja", "make")

# ggml's x86 CPU variants (ggml/src/CMakeLists.txt, GGML_CPU_ALL_VARIANTS) with the instruction
# sets each is compiled for, and the score ggml's loader gives a set (cpu-feats.cpp): the
# variant with the highest score whose sets the CPU has all of is the one loaded.
VARIANTS = {
    "x64": [], "sse42": ["SSE42"], "sandybridge": ["SSE42", "AVX"],
    "ivybridge": ["SSE42", "AVX", "F16C"], "piledriver": ["SSE42", "AVX", "F16C", "FMA"],
    "haswell": ["SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2"],
    "skylakex": ["SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512"],
    "cannonlake": ["SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VBMI"],
    "cascadelake": ["SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VNNI"],
    "icelake": ["SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VBMI", "AVX512_VNNI"],
    "cooperlake": ["SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VNNI", "AVX512_BF16"],
    "zen4": ["SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VBMI", "AVX512_VNNI",
             "AVX512_BF16"],
    "alderlake": ["SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX_VNNI"],
    "sapphirerapids": ["SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2", "AVX512", "AVX512_VBMI",
                       "AVX512_VNNI", "AVX512_BF16", "AMX_INT8"],
}
WEIGHT = {"FMA": 1, "F16C": 2, "SSE42": 4, "BMI2": 8, "AVX": 16, "AVX2": 32, "AVX_VNNI": 64, "AVX512": 128,
          "AVX512_VBMI": 256, "AVX512_BF16": 512, "AVX512_VNNI": 1024, "AMX_INT8": 2048}
CPUINFO_FLAGS = {"SSE42": ["sse4_2"], "AVX": ["avx"], "F16C": ["f16c"], "FMA": ["fma"], "AVX2": ["avx2"],
                 "BMI2": ["bmi2"], "AVX_VNNI": ["avx_vnni"],
                 "AVX512": ["avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"],
                 "AVX512_VBMI": ["avx512vbmi"], "AVX512_VNNI": ["avx512_vnni"], "AVX512_BF16": ["avx512_bf16"],
                 "AMX_INT8": ["amx_int8"]}


def cpu_flags() -> set:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def expected_scores() -> dict:
    flags = cpu_flags()
    scores = {}
    for name, sets in VARIANTS.items():
        ok = all(f in flags for s in sets for f in CPUINFO_FLAGS[s])
        scores[name] = 1 + sum(WEIGHT[s] for s in sets) if ok else 0
    return scores


def no_compiler_path(tmp: Path, venv: Path) -> str:
    """PATH with the wheel venv's scripts and a folder of the basic tools the tests call (readelf,
    ldd), and no compiler or build tool."""
    tools = tmp / "tools-bin"
    tools.mkdir(exist_ok=True)
    for name in ("readelf", "ldd", "sh", "bash", "env", "uname"):
        src = shutil.which(name)
        if src and not (tools / name).exists():
            (tools / name).symlink_to(src)
    path = f"{venv / 'bin'}{os.pathsep}{tools}"
    found = {c: shutil.which(c, path=path) for c in COMPILERS}
    assert not any(found.values()), f"a compiler is on the test PATH: {found}"
    return path


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """(venv python, env) with the wheel installed from binaries only and no compiler on PATH."""
    wheel = Path(WHEEL).resolve()
    assert wheel.is_file(), f"FUNASR_WHEEL={WHEEL}: no such file"
    tmp = tmp_path_factory.mktemp("wheel")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "FUNASR_CPU"))}
    env["PATH"] = no_compiler_path(tmp, venv)
    # --only-binary: pip may not build anything, the wheel's dependencies included
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--only-binary", ":all:",
                          "--disable-pip-version-check", str(wheel)],
                         env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               env=env, capture_output=True, text=True, check=True).stdout.strip())
    # test-only dependencies from this environment, after the wheel venv's own packages
    (site / "zzz_funasr_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv / "bin" / "python", env


def run_in(wheel_env, *args, cwd, extra_env=None, timeout=600):
    python, env = wheel_env
    env = {**env, **(extra_env or {})}
    return subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_wheel_is_manylinux_and_carries_every_variant():
    name = Path(WHEEL).name
    assert re.search(r"-manylinux_2_\d+_x86_64(\.manylinux[^.]*)*\.whl$", name), name
    with zipfile.ZipFile(WHEEL) as z:
        names = z.namelist()
    libs = {Path(n).name for n in names if n.startswith("funasr_cpp/lib/")}
    assert {f"libggml-cpu-{v}.so" for v in VARIANTS} <= libs, sorted(libs)
    assert "libggml-cpu.so" not in libs  # every CPU backend is a variant module
    assert {"llama-mtmd-cli", "llama-server", "libllama.so", "libmtmd.so", "libggml-base.so"} <= libs
    # auditwheel grafts what is outside the policy (OpenMP's runtime) into funasr_cpp.libs/
    assert any(n.startswith("funasr_cpp.libs/libgomp") for n in names), [n for n in names if ".libs/" in n]


def test_installed_from_binaries_outside_the_repo(wheel_env, tmp_path):
    out = run_in(wheel_env, "-c", "import funasr_cpp, sys; print(funasr_cpp.__file__); print(sys.prefix)",
                 cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    path, prefix = out.stdout.split()
    assert Path(path).is_relative_to(Path(prefix)), f"funasr_cpp imported from {path}, not the wheel venv"


def test_info_loads_the_best_variant_and_says_why(wheel_env, tmp_path):
    out = run_in(wheel_env, "-m", "funasr_cpp.cli", "info", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    want = expected_scores()
    best = max(want, key=want.get)
    assert f"cpu variant {best} (libggml-cpu-{best}.so, score {want[best]})" in out.stdout, out.stdout
    assert "the highest score among" in out.stdout
    got = run_in(wheel_env, "-c", "import funasr_cpp, json; print(json.dumps({v['name']: v['score'] for v in "
                 "funasr_cpp.system_info().cpu_variants}))", cwd=tmp_path)
    assert json.loads(got.stdout) == want  # every variant's score is the one ggml's rule gives this CPU


@pytest.mark.parametrize("tool", ["llama-mtmd-cli", "llama-server"])
def test_wheel_tools_report_the_pin_and_load_the_same_variant(wheel_env, tool, tmp_path):
    python, env = wheel_env
    exe = shutil.which(tool, path=env["PATH"])
    assert exe and Path(exe).parent == python.parent, f"{tool} is not the wheel venv's ({exe})"
    out = subprocess.run([exe, "--version"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    assert f"(build {PIN_BUILD}, commit {PIN_COMMIT})" in text
    want = expected_scores()
    best = max(want, key=want.get)
    opened = cpu_backends_opened(exe, env, tmp_path)
    assert opened and Path(opened[-1]).name == f"libggml-cpu-{best}.so", opened  # the last one opened is kept
    assert all(Path(p).parent.name == "lib" and "funasr_cpp" in Path(p).parts for p in opened), opened


def cpu_backends_opened(exe, env, cwd) -> list:
    """The ggml CPU backend libraries the tool opens, in order, as the dynamic linker reports them
    (LD_DEBUG=files). ggml's loader opens each variant to score it, then opens the best one again and
    keeps it: the last one opened is the one in use. (Not the loader's own "loaded CPU backend" log
    line: llama.cpp prints it from a logging thread that --list-devices' exit can beat.)"""
    out = subprocess.run([exe, "--list-devices"], cwd=cwd, env={**env, "LD_DEBUG": "files"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    return re.findall(r"calling init: (\S*libggml-cpu-[^/\s]+\.so)", out.stderr)


def pytest_in_wheel(wheel_env, files, extra_env=None):
    out = run_in(wheel_env, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *files, cwd=REPO,
                 extra_env=extra_env, timeout=1800)
    tail = "\n".join((out.stdout + out.stderr).splitlines()[-30:])
    assert out.returncode == 0, tail
    assert re.search(r"\d+ passed", out.stdout) and " failed" not in out.stdout, tail
    return out.stdout


def test_parity_tests_pass_against_the_wheel(wheel_env):
    pytest_in_wheel(wheel_env, PARITY)


def pinned_variants() -> list:
    """Lower variants to pin: the baseline (x64), and haswell (AVX2) where it is not the best."""
    want = expected_scores()
    best = max(want, key=want.get)
    return ["x64"] + (["haswell"] if want["haswell"] and best != "haswell" else [])


@pytest.mark.parametrize("variant", pinned_variants())
def test_parity_tests_pass_with_a_lower_variant_pinned(wheel_env, variant, tmp_path):
    pin = {"FUNASR_CPU_VARIANT": variant}
    out = run_in(wheel_env, "-c", "import funasr_cpp; i = funasr_cpp.system_info(); print(i.cpu_variant); print(i)",
                 cwd=tmp_path, extra_env=pin)
    assert out.returncode == 0 and out.stdout.splitlines()[0] == variant, out.stdout + out.stderr
    assert f"pinned by FUNASR_CPU_VARIANT={variant}" in out.stdout
    for name in ("llama-mtmd-cli", "llama-server"):
        exe = shutil.which(name, path=wheel_env[1]["PATH"])
        opened = {Path(p).name for p in cpu_backends_opened(exe, {**wheel_env[1], **pin}, tmp_path)}
        assert opened == {f"libggml-cpu-{variant}.so"}, (name, opened)  # the pin: no other variant is even opened
    pytest_in_wheel(wheel_env, PARITY_PINNED, extra_env=pin)


def test_a_pin_this_build_cannot_honour_is_a_clear_error(wheel_env, tmp_path):
    out = run_in(wheel_env, "-c", "import funasr_cpp; funasr_cpp.system_info()", cwd=tmp_path, extra_env={"FUNASR_CPU_VARIANT": "pentium"})
    assert out.returncode != 0
    assert "FUNASR_CPU_VARIANT=pentium: no such ggml CPU variant; this build has: " in out.stderr
    assert "haswell" in out.stderr
    unsupported = [v for v, s in expected_scores().items() if s == 0]
    if unsupported:  # a variant this CPU cannot run
        out = run_in(wheel_env, "-c", "import funasr_cpp; funasr_cpp.system_info()", cwd=tmp_path,
                     extra_env={"FUNASR_CPU_VARIANT": unsupported[0]})
        assert out.returncode != 0
        assert f"FUNASR_CPU_VARIANT={unsupported[0]}: this CPU lacks an instruction set" in out.stderr


def test_portable_benchmark_smoke(tmp_path):
    """benchmarks/portable.py --quick (tiny model, one round) runs both builds and reports them."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "portable.py"), "--quick", "--wheel", WHEEL,
                           "--pin", "x64", "--work", str(tmp_path), "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "portable-quick.json").read_text())
    rows = {r["build"]: r for r in res["rows"]}
    assert set(rows) == {"native", "portable", "portable, x64 pinned"}
    want = expected_scores()
    assert rows["portable"]["cpu_variant"] == max(want, key=want.get)
    assert rows["portable, x64 pinned"]["cpu_variant"] == "x64"
    for r in rows.values():
        assert r["encode_ms"] > 0 and r["decode_tok_s"] > 0 and r["n"] == 1
    assert "| portable, x64 pinned | x64 |" in proc.stdout


def test_auditwheel_finds_nothing_outside_the_policy():
    """auditwheel's own check of the repaired wheel (the tool venv tools/build_wheel.sh made): the
    symbols allow the wheel's tag, OpenMP's runtime is the grafted copy, and the one library left
    outside is the system's Vulkan loader (libggml-vulkan.so needs the system's, which finds its
    drivers; where it is missing ggml skips that backend)."""
    auditwheel = src.cache_root() / "wheel-tools" / "bin" / "auditwheel"
    assert auditwheel.is_file(), f"{auditwheel} missing: tools/build_wheel.sh installs it"
    out = subprocess.run([str(auditwheel), "show", "--json", WHEEL], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PATH": f"{auditwheel.parent}{os.pathsep}{os.environ['PATH']}"})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    tag = re.search(r"-(manylinux_2_\d+_x86_64)\.whl$", WHEEL).group(1)
    assert report["sym_tag"] == tag, report["sym_tag"]
    assert set(report["external_libs"]) <= {"libvulkan.so.1"}, report["external_libs"]
    assert any(lib.startswith("libgomp-") for lib in report["versioned_symbols"]), report["versioned_symbols"]


def _has_vulkan_module() -> bool:
    with zipfile.ZipFile(WHEEL) as z:
        return "funasr_cpp/lib/libggml-vulkan.so" in z.namelist()


def _lavapipe() -> bool:
    return any(any(Path(d).glob("lvp_icd*.json")) for d in ("/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"))


DEVICES = "import funasr_cpp, json; i = funasr_cpp.system_info(); print(json.dumps([i.device_names, i.auto_device]))"


@pytest.mark.skipif(not WHEEL or not _has_vulkan_module(),
                    reason="the wheel has no Vulkan module (built without the Vulkan headers and glslc)")
def test_vulkan_module_is_used_only_where_a_device_is(wheel_env, tmp_path):
    """The wheel's libggml-vulkan.so: where no Vulkan device is offered (here: lavapipe hidden, as
    ggml hides CPU-type devices by default) the CPU is used, silently; where one is (lavapipe made
    visible, as a GPU would be), the wheel lists it."""
    out = run_in(wheel_env, "-c", DEVICES, cwd=tmp_path, extra_env={"GGML_VK_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr
    names, auto = json.loads(out.stdout)
    assert auto == "cpu" and not [n for n in names if n.startswith("vulkan")], (names, auto)
    if not _lavapipe():
        pytest.skip("no Vulkan driver here (Debian: mesa-vulkan-drivers) to show the module loading")
    out = run_in(wheel_env, "-c", DEVICES, cwd=tmp_path, extra_env={"GGML_VK_VISIBLE_DEVICES": "0"})
    assert out.returncode == 0, out.stderr
    names, auto = json.loads(out.stdout)
    assert "vulkan0" in names, names
    info = run_in(wheel_env, "-m", "funasr_cpp.cli", "info", cwd=tmp_path, extra_env={"GGML_VK_VISIBLE_DEVICES": "0"})
    assert info.returncode == 0 and "Vulkan0" in info.stdout, info.stdout + info.stderr
