"""The sdist (tools/build_wheel.sh writes it beside the wheel) builds offline: with its build
requirements installed, `pip wheel --no-index --no-build-isolation funasr_cpp-*.tar.gz` compiles
from the sdist plus the llama.cpp source already in the cache, and the result imports.

Needs FUNASR_SDIST=path/to/funasr_cpp-*.tar.gz (.ci/run sets it); skipped without, saying so;
marker `wheel`. The build keeps its objects in ~/.cache/funasr-cpp/build-sdist between runs."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from fixtures.llama_source import src

SDIST = os.environ.get("FUNASR_SDIST", "")
PIN_BUILD, PIN_COMMIT = 11312, "0c1e570"

pytestmark = [
    pytest.mark.wheel,
    pytest.mark.skipif(not SDIST, reason="FUNASR_SDIST is not set: tools/build_wheel.sh writes the sdist"),
]


def test_sdist_holds_the_sources_not_llama_cpp():
    with tarfile.open(SDIST) as t:
        names = [n.split("/", 1)[1] for n in t.getnames() if "/" in n]
    for need in ("CMakeLists.txt", "pyproject.toml", "csrc/model/funasr_graph.cpp", "csrc/python/module.cpp",
                 "third_party/llama_cpp_source.py", "third_party/patches/0001-funasr-projector.patch",
                 "python/funasr_cpp/__init__.py", "python/funasr_cpp/converters/convert.py", "cmake/amx_probe.c"):
        assert need in names, f"{need} is not in the sdist"
    assert not any(n.startswith(("build/", ".venv")) or "/ggml/src/" in n for n in names)


def test_sdist_builds_offline_from_the_cached_llama_cpp_source(tmp_path):
    cache = src.cache_root()
    assert (cache / f"llama.cpp-b{PIN_BUILD}" / "CMakeLists.txt").is_file(), \
        "the llama.cpp source is not cached (any earlier build puts it there)"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    # the build requirements, from the index; everything after this is offline
    subprocess.run([py, "-m", "pip", "install", "-q", "--only-binary", ":all:", "--disable-pip-version-check",
                    "scikit-build-core>=0.10", "pybind11>=2.12", "cmake>=3.21", "ninja"], check=True, timeout=900)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_", "CMAKE_ARGS"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    env["PIP_NO_INDEX"] = "1"  # also for the source fetcher's `pip download`, were the cache missing
    out = subprocess.run([py, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-build-isolation",
                          "--disable-pip-version-check", "-w", str(tmp_path / "out"),
                          f"-Cbuild-dir={cache / 'build-sdist'}", SDIST],
                         env=env, capture_output=True, text=True, timeout=3600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "downloading llama-cpp-python" not in log, "the build fetched the llama.cpp source instead of using the cache"
    wheels = list((tmp_path / "out").glob("funasr_cpp-*.whl"))
    assert len(wheels) == 1, log[-2000:]
    with zipfile.ZipFile(wheels[0]) as z:
        names = {Path(n).name for n in z.namelist()}
    assert {"libllama.so", "libmtmd.so", "llama-mtmd-cli", "llama-server"} <= names
    assert any(n.startswith("_core.") and n.endswith(".so") for n in names)
    # the wheel it built imports and reports the pin (dependencies from this test environment)
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheels[0])], env=env, check=True)
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "zzz_funasr_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    got = subprocess.run([py, "-c", "import funasr_cpp; print(funasr_cpp.__file__); print(funasr_cpp.system_info())"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    assert Path(got.stdout.splitlines()[0]).is_relative_to(venv)
    assert f"llama.cpp b{PIN_BUILD} ({PIN_COMMIT})" in got.stdout and "backend CPU" in got.stdout
