"""The llama.cpp source provider (third_party/llama_cpp_source.py): pin, cache, patches."""
from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from fixtures.llama_source import src

REPO = Path(__file__).resolve().parents[1]

ORIGINAL = "int answer(void);\n// line two\n// line three\n"
PATCH_1 = """--- a/tools/mtmd/x.h
+++ b/tools/mtmd/x.h
@@ -1,3 +1,4 @@
+#define PATCHED 1
 int answer(void);
 // line two
 // line three
"""
PATCH_1_V2 = PATCH_1.replace("#define PATCHED 1", "#define PATCHED 2")


def make_sdist(path: Path) -> src.Pin:
    """A stand-in for the llama-cpp-python sdist with the same directory structure."""
    files = {
        "fake_pkg-1.0/pyproject.toml": "[project]\n",
        "fake_pkg-1.0/vendor/llama.cpp/CMakeLists.txt": "project(llama)\n",
        "fake_pkg-1.0/vendor/llama.cpp/tools/mtmd/x.h": ORIGINAL,
        "fake_pkg-1.0/vendor/llama.cpp/docs/big.md": "not needed by the build\n",
        "fake_pkg-1.0/vendor/llama.cpp/models/vocab.gguf": "not needed by the build\n",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_600_000_000
            tar.addfile(info, io.BytesIO(data))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return src.Pin(package="fake-pkg", version="1.0", sha256=digest, subdir="vendor/llama.cpp",
                   build_number=1, commit="abc1234")


@pytest.fixture()
def env(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "0001-test.patch").write_text(PATCH_1)
    pin = make_sdist(cache / "fake_pkg-1.0.tar.gz")
    return cache, patches, pin


def test_unpacks_patches_and_stamps(env):
    cache, patches, pin = env
    tree = src.ensure_pinned(cache, pin, patches)
    assert tree == cache / "llama.cpp-b1"
    assert (tree / "tools/mtmd/x.h").read_text() == "#define PATCHED 1\n" + ORIGINAL
    assert not (tree / "docs").exists() and not (tree / "models").exists()
    stamp = (tree / src.STAMP_NAME).read_text()
    assert "0001-test.patch" in stamp and pin.sha256 in stamp


def test_second_ensure_is_a_no_op(env, capfd):
    cache, patches, pin = env
    tree = src.ensure_pinned(cache, pin, patches)
    before = {p: p.stat().st_mtime_ns for p in tree.rglob("*")}
    capfd.readouterr()
    assert src.ensure_pinned(cache, pin, patches) == tree
    assert capfd.readouterr().err == ""  # nothing re-extracted or re-applied
    assert {p: p.stat().st_mtime_ns for p in tree.rglob("*")} == before
    assert (tree / "tools/mtmd/x.h").read_text().count("#define PATCHED") == 1


@pytest.mark.parametrize("damage", ["edit", "delete", "stamp"])
def test_corrupted_cache_is_reextracted(env, damage, capfd):
    cache, patches, pin = env
    tree = src.ensure_pinned(cache, pin, patches)
    if damage == "edit":
        (tree / "CMakeLists.txt").write_text("garbage\n")
    elif damage == "delete":
        (tree / "tools/mtmd/x.h").unlink()
    else:
        (tree / src.STAMP_NAME).write_text("{not json")
    capfd.readouterr()
    src.ensure_pinned(cache, pin, patches)
    assert "preparing" in capfd.readouterr().err
    assert (tree / "CMakeLists.txt").read_text() == "project(llama)\n"
    assert (tree / "tools/mtmd/x.h").read_text() == "#define PATCHED 1\n" + ORIGINAL


def test_changed_patch_gives_a_clean_copy(env):
    cache, patches, pin = env
    tree = src.ensure_pinned(cache, pin, patches)
    (patches / "0001-test.patch").write_text(PATCH_1_V2)
    src.ensure_pinned(cache, pin, patches)
    assert (tree / "tools/mtmd/x.h").read_text() == "#define PATCHED 2\n" + ORIGINAL


def test_archive_with_wrong_hash_is_refetched(env, monkeypatch):
    cache, patches, pin = env
    (cache / pin.archive_name).write_bytes(b"truncated download")
    calls = []

    def offline(cmd, **kw):
        calls.append(cmd)
        return src.subprocess.CompletedProcess(cmd, 1, stdout="ERROR: No matching distribution found\n")

    monkeypatch.setattr(src.subprocess, "run", offline)
    with pytest.raises(src.SourceError) as exc:
        src.ensure_pinned(cache, pin, patches)
    msg = str(exc.value)
    assert "could not download" in msg and "FUNASR_LLAMA_CPP_DIR" in msg and pin.sha256 in msg
    assert calls and calls[0][1:4] == ["-m", "pip", "download"]
    assert not (cache / pin.archive_name).exists()  # the bad file is not kept


def test_patch_that_does_not_apply_is_an_error(env):
    cache, patches, pin = env
    (patches / "0002-bad.patch").write_text(PATCH_1.replace("int answer", "int question"))
    with pytest.raises(src.SourceError, match="0002-bad.patch does not apply"):
        src.ensure_pinned(cache, pin, patches)
    assert not (cache / "llama.cpp-b1").exists()  # no half-patched tree left


def test_own_checkout_is_copied_not_modified(env, tmp_path):
    cache, patches, _ = env
    checkout = tmp_path / "my-llama.cpp"
    (checkout / "tools/mtmd").mkdir(parents=True)
    (checkout / "CMakeLists.txt").write_text("project(llama)\n")
    (checkout / "tools/mtmd/x.h").write_text(ORIGINAL)
    (checkout / "build/bin").mkdir(parents=True)
    (checkout / "build/bin/huge.so").write_text("build output")
    tree = src.ensure_checkout(checkout, cache, patches)
    assert (checkout / "tools/mtmd/x.h").read_text() == ORIGINAL
    assert (tree / "tools/mtmd/x.h").read_text() == "#define PATCHED 1\n" + ORIGINAL
    assert not (tree / "build").exists()
    # an edit in the checkout is picked up on the next build
    (checkout / "CMakeLists.txt").write_text("project(llama) # edited\n")
    assert (src.ensure_checkout(checkout, cache, patches) / "CMakeLists.txt").read_text().endswith("# edited\n")


def test_checkout_that_already_carries_the_patch(env, tmp_path):
    cache, patches, _ = env
    checkout = tmp_path / "patched"
    (checkout / "tools/mtmd").mkdir(parents=True)
    (checkout / "CMakeLists.txt").write_text("project(llama)\n")
    (checkout / "tools/mtmd/x.h").write_text("#define PATCHED 1\n" + ORIGINAL)
    tree = src.ensure_checkout(checkout, cache, patches)
    assert (tree / "tools/mtmd/x.h").read_text().count("#define PATCHED 1") == 1


def test_not_a_llama_cpp_checkout(tmp_path):
    with pytest.raises(src.SourceError, match="not a llama.cpp source tree"):
        src.ensure_checkout(tmp_path, tmp_path / "cache")


def test_project_patches_apply_to_the_pinned_sdist(tmp_path):
    """Our real patches apply cleanly to the real pinned sdist (taken from the build's cache)."""
    archive = src.cache_root() / src.PIN.archive_name
    if not archive.exists():
        pytest.skip(f"{archive} not cached (built from FUNASR_LLAMA_CPP_DIR?)")
    tree = src.ensure_pinned(tmp_path, src.PIN, src.PATCH_DIR, archive=archive)
    assert "FUNASR_CPP_MTMD_PATCH" in (tree / "tools/mtmd/clip-impl.h").read_text()
    assert (tree / "tools/mtmd/mtmd.cpp").exists() and (tree / "ggml/CMakeLists.txt").exists()
