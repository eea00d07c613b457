"""The installed package: import from anywhere, versions, backends, shipped tools, RPATHs."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import funasr_cpp
from fixtures.cli import scripts_path_env

REPO = Path(__file__).resolve().parents[1]
PKG = Path(funasr_cpp.__file__).resolve().parent
PIN_BUILD, PIN_COMMIT = 11312, "0c1e570"


def run_py(code: str, cwd: Path) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True)
    return out.stdout


def test_import_from_outside_the_repo(tmp_path):
    out = run_py("import funasr_cpp, os; print(funasr_cpp.__file__); print(funasr_cpp.system_info())", tmp_path)
    path = Path(out.splitlines()[0]).resolve()
    assert "site-packages" in path.parts and (REPO / "python") not in path.parents, \
        "tests must run against the installed package, not the source tree"
    assert f"llama.cpp b{PIN_BUILD} ({PIN_COMMIT})" in out
    assert "backend CPU" in out


def test_versions():
    assert funasr_cpp.LLAMA_CPP_BUILD == PIN_BUILD
    assert funasr_cpp.LLAMA_CPP_COMMIT == PIN_COMMIT
    v = funasr_cpp._core.version_info()
    assert v["funasr_cpp"] == funasr_cpp.__version__ != "0.0.0"
    assert v["ggml_commit"].startswith(PIN_COMMIT)
    assert v["mtmd_patch_level"] == 4  # our csrc compiled into libmtmd saw the patched tree


def test_system_info_lists_the_cpu_backend():
    info = funasr_cpp.system_info()
    assert "CPU" in info.backend_names
    cpu = info.backends[info.backend_names.index("CPU")]
    assert any(d["type"] == "cpu" for d in cpu["devices"])
    assert cpu["features"], "the CPU backend reports its features (SSE3, AVX2, ...)"
    assert "CPU" in info.summary or "AVX" in info.summary or "NEON" in info.summary


@pytest.mark.parametrize("tool", ["llama-mtmd-cli", "llama-server"])
def test_tools_on_path_report_the_pin(tool, tmp_path):
    env = scripts_path_env()
    exe = shutil.which(tool, path=env["PATH"])
    assert exe, f"{tool} is not on PATH after install"
    out = subprocess.run([exe, "--version"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"(build {PIN_BUILD}, commit {PIN_COMMIT})" in out.stdout + out.stderr


def test_funasr_cpp_cli_info(tmp_path):
    env = scripts_path_env()
    exe = shutil.which("funasr-cpp", path=env["PATH"])
    out = subprocess.run([exe, "info"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert "backend CPU" in out.stdout
    out = subprocess.run([exe, "--version"], env=env, capture_output=True, text=True, check=True)
    assert f"b{PIN_BUILD}" in out.stdout


def native_files() -> list[Path]:
    files = sorted((PKG / "lib").iterdir()) + sorted(PKG.glob("_core*.so"))
    return [f for f in files if f.is_file()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF RUNPATH check")
def test_native_files_are_relocatable():
    """Every shipped binary finds its libraries relative to itself (wheel works anywhere)."""
    files = native_files()
    names = {f.name for f in files}
    assert {"libllama.so", "libmtmd.so", "libggml.so", "llama-mtmd-cli", "llama-server"} <= names
    for f in files:
        dyn = subprocess.run(["readelf", "-d", str(f)], capture_output=True, text=True, check=True).stdout
        runpaths = [line.split("[", 1)[1].rstrip("]") for line in dyn.splitlines()
                    if "(RUNPATH)" in line or "(RPATH)" in line]
        assert runpaths, f"{f.name} has no RUNPATH"
        for rp in runpaths:
            assert all(p.startswith("$ORIGIN") for p in rp.split(":")), f"{f.name}: absolute RUNPATH {rp}"
        ldd = subprocess.run(["ldd", str(f)], capture_output=True, text=True).stdout
        assert "not found" not in ldd, f"{f.name}: {ldd}"
        for line in ldd.splitlines():
            if any(n in line for n in ("libllama", "libggml", "libmtmd")):
                assert str(PKG / "lib") in line, f"{f.name} resolves a bundled library elsewhere: {line}"


def test_cpu_variant_is_reported_and_a_bad_pin_is_a_clear_error(tmp_path):
    """A portable build names the CPU variant ggml loaded; a native one has none. A FUNASR_CPU_VARIANT
    pin the build cannot honour fails the import with the reason."""
    info = funasr_cpp.system_info()
    variants = sorted(p.name[len("libggml-cpu-"):-3] for p in (PKG / "lib").glob("libggml-cpu-*.so"))
    assert sorted(v["name"] for v in info.cpu_variants) == variants
    if variants:
        assert info.cpu_variant in variants and f"cpu variant {info.cpu_variant}" in str(info)
        assert sum(v["loaded"] for v in info.cpu_variants) == 1
        want = "FUNASR_CPU_VARIANT=pentium: no such ggml CPU variant; this build has: " + ", ".join(variants)
    else:
        assert info.cpu_variant is None and "cpu variant" not in str(info)
        want = "FUNASR_CPU_VARIANT=pentium: no such ggml CPU variant; this build has no CPU variants"
    # the native library loads on first use (import funasr_cpp alone does not: the converters need no _core)
    out = subprocess.run([sys.executable, "-c", "import funasr_cpp; funasr_cpp.system_info()"], cwd=tmp_path, capture_output=True, text=True,
                         env={**scripts_path_env(), "FUNASR_CPU_VARIANT": "pentium"})
    assert out.returncode != 0 and want in out.stderr, out.stderr
