#!/usr/bin/env python3
"""Provide the pinned, patched llama.cpp source tree for the build.

The pin is llama.cpp b11312 (commit 0c1e570) as vendored in the
llama-cpp-python 0.3.36 sdist.  The sdist is fetched with pip itself (so the
only network access is the package index the user already trusts), verified
by sha256, and unpacked once into a cache outside the build tree:

    <cache>/llama_cpp_python-0.3.36.tar.gz       verified download
    <cache>/llama.cpp-b11312/                    unpacked + patched tree
    <cache>/llama.cpp-b11312/.funasr-stamp.json  what was applied, tree hash

<cache> is $FUNASR_CPP_CACHE, else $XDG_CACHE_HOME/funasr-cpp, else
~/.cache/funasr-cpp.  A tree whose stamp does not match the current patch
set, or whose files no longer match the stamped hash (a corrupted or edited
cache), is replaced by a clean copy.  With --from DIR (or
$FUNASR_LLAMA_CPP_DIR) a user's own checkout is copied into the cache and
patched there; the checkout itself is never modified.

CMake runs `llama_cpp_source.py ensure`; the directory to build is the only
thing printed on stdout, progress goes to stderr.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PATCH_DIR = HERE / "patches"
STAMP_NAME = ".funasr-stamp.json"


@dataclass(frozen=True)
class Pin:
    package: str = "llama-cpp-python"
    version: str = "0.3.36"
    sha256: str = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
    subdir: str = "vendor/llama.cpp"  # inside the sdist's top directory
    build_number: int = 11312
    commit: str = "0c1e570"

    @property
    def archive_name(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}.tar.gz"

    @property
    def tree_name(self) -> str:
        return f"llama.cpp-b{self.build_number}"


PIN = Pin()

# Parts of the tree the build never reads (model vocab files, docs, git
# metadata): left out of the cache to keep it small and quick to verify.
SKIP_TOP_LEVEL = {"docs", "models", "media", ".git", ".github"}
# Directories skipped when copying a user's checkout (build outputs, VCS).
SKIP_IN_CHECKOUT = SKIP_TOP_LEVEL | {"node_modules", "__pycache__"}


class SourceError(RuntimeError):
    """The llama.cpp source could not be provided; the message says what to do."""


def log(msg: str) -> None:
    print(f"[funasr-cpp] {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    if os.environ.get("FUNASR_CPP_CACHE"):
        return Path(os.environ["FUNASR_CPP_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "funasr-cpp"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_build_dir(path: Path) -> bool:
    return path.name.startswith("build") or (path / "CMakeCache.txt").exists()


def _tree_files(root: Path, skip: set[str] = frozenset(), checkout: bool = False):
    """Files below root, sorted; a user's checkout also drops its build dirs."""
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(
            d for d in dirnames
            if not (rel_dir == Path(".") and d in skip)
            and not (checkout and _is_build_dir(Path(dirpath, d)))
        )
        for name in sorted(filenames):
            if rel_dir == Path(".") and name in (STAMP_NAME, ".git"):
                continue
            yield rel_dir / name


def tree_hash(root: Path, skip: set[str] = frozenset(), checkout: bool = False) -> str:
    """Hash of every file's relative path and content (stamp excluded)."""
    h = hashlib.sha256()
    for rel in _tree_files(root, skip, checkout):
        h.update(rel.as_posix().encode() + b"\0")
        h.update(sha256_file(root / rel).encode())
    return h.hexdigest()


def patch_set(patch_dir: Path = PATCH_DIR) -> list[tuple[str, str]]:
    return [(p.name, sha256_file(p)) for p in sorted(patch_dir.glob("*.patch"))]


# --------------------------------------------------------------------------- obtaining the sdist

def _outside_build_isolation() -> dict:
    """The environment minus pip's build isolation, whose overlay hides pip itself."""
    env = dict(os.environ)
    for var in ("PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONHOME"):
        env.pop(var, None)
    return env


def _pip_commands() -> list[list[str]]:
    """This interpreter's pip, then any pip on PATH (an sdist download needs no particular one)."""
    cmds = [[sys.executable, "-m", "pip"]]
    for name in ("pip3", "pip"):
        exe = shutil.which(name)
        if exe:
            cmds.append([exe])
    return cmds


def fetch_archive(pin: Pin, cache: Path) -> Path:
    """Return the verified sdist, downloading it with pip when it is not cached."""
    archive = cache / pin.archive_name
    if archive.exists():
        if sha256_file(archive) == pin.sha256:
            return archive
        log(f"cached {archive.name} has the wrong sha256; downloading it again")
        archive.unlink()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        args = ["download", "--no-deps", "--no-binary", pin.package, "--only-binary", ":none:",
                "--disable-pip-version-check", "-d", tmp, f"{pin.package}=={pin.version}"]
        log(f"downloading {pin.package}=={pin.version} (llama.cpp b{pin.build_number}) with pip")
        got = Path(tmp) / pin.archive_name
        tail = ""
        for pip in _pip_commands():
            proc = subprocess.run(pip + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=_outside_build_isolation())
            if proc.returncode == 0 and got.exists():
                break
            tail = "\n".join(proc.stdout.strip().splitlines()[-8:])
        if not got.exists():
            raise SourceError(
                f"could not download the llama.cpp source ({pin.package}=={pin.version} sdist).\n"
                f"pip said:\n{tail}\n"
                "Fix: make the package index reachable, or place the sdist "
                f"{pin.archive_name} (sha256 {pin.sha256}) in {cache}, "
                "or point FUNASR_LLAMA_CPP_DIR at a llama.cpp checkout of "
                f"commit {pin.commit}.")
        digest = sha256_file(got)
        if digest != pin.sha256:
            raise SourceError(f"downloaded {pin.archive_name} has sha256 {digest}, "
                              f"expected {pin.sha256}; refusing to build from it")
        os.replace(got, archive)
    return archive


def _extract(archive: Path, pin: Pin, dest: Path) -> None:
    prefix = f"{pin.package.replace('-', '_')}-{pin.version}/{pin.subdir}/"
    with tarfile.open(archive, "r:gz") as tar:
        members = []
        for m in tar.getmembers():
            if not m.name.startswith(prefix) or m.name == prefix.rstrip("/"):
                continue
            rel = m.name[len(prefix):]
            if rel.split("/")[0] in SKIP_TOP_LEVEL:
                continue
            if not (m.isfile() or m.isdir()):
                continue  # the pinned sdist holds only files and dirs
            m.name = rel
            members.append(m)
        if not members:
            raise SourceError(f"{archive} holds no {pin.subdir}/ directory")
        tar.extractall(dest, members=members, filter="data")


# --------------------------------------------------------------------------- patches

def _run_quiet(cmd: list[str], cwd: Path) -> bool:
    env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(cwd.parent))  # never act on an enclosing repo
    return subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def apply_patch(tree: Path, patch: Path) -> str:
    """Apply one patch; returns 'applied' or 'already' (a tree that carries it)."""
    p = str(patch)
    if shutil.which("git"):
        if _run_quiet(["git", "apply", "--check", p], tree):
            if _run_quiet(["git", "apply", "--whitespace=nowarn", p], tree):
                return "applied"
        elif _run_quiet(["git", "apply", "--check", "--reverse", p], tree):
            return "already"
    elif shutil.which("patch"):
        if _run_quiet(["patch", "-p1", "--dry-run", "-s", "-i", p], tree):
            if _run_quiet(["patch", "-p1", "-s", "-i", p], tree):
                return "applied"
        elif _run_quiet(["patch", "-p1", "-R", "--dry-run", "-s", "-i", p], tree):
            return "already"
    else:
        raise SourceError("neither git nor patch is installed; one is needed to patch llama.cpp")
    raise SourceError(f"patch {patch.name} does not apply to {tree}; "
                      "is the llama.cpp tree the pinned commit "
                      f"{PIN.commit}?")


# --------------------------------------------------------------------------- the cached tree

def _read_stamp(tree: Path) -> dict | None:
    try:
        return json.loads((tree / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return None


def _install_tree(final: Path, fill, stamp: dict, patch_dir: Path) -> Path:
    """Build a tree in a temp dir next to `final`, patch it, stamp it, swap it in."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=final.parent))
    try:
        fill(tmp)
        for name, _ in stamp["patches"]:
            state = apply_patch(tmp, patch_dir / name)
            log(f"patch {name}: {state}")
        stamp["tree_sha256"] = tree_hash(tmp)
        (tmp / STAMP_NAME).write_text(json.dumps(stamp, indent=1) + "\n")
        if final.exists():
            old = final.with_name(final.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _stale_reason(tree: Path, want: dict) -> str | None:
    stamp = _read_stamp(tree)
    if not tree.exists():
        return "not unpacked yet"
    if stamp is None:
        return "no stamp (interrupted unpack?)"
    for key, value in want.items():
        if stamp.get(key) != value:
            return f"{key} changed"
    if tree_hash(tree) != stamp.get("tree_sha256"):
        return "files differ from the stamp (corrupted or edited cache)"
    return None


def ensure_pinned(cache: Path | None = None, pin: Pin = PIN, patch_dir: Path = PATCH_DIR,
                  archive: Path | None = None) -> Path:
    """The unpacked, patched pinned tree; does nothing when the cache is valid."""
    cache = cache or cache_root()
    tree = cache / pin.tree_name
    want = {"source": f"{pin.package}=={pin.version}", "sdist_sha256": pin.sha256,
            "patches": [list(p) for p in patch_set(patch_dir)]}
    reason = _stale_reason(tree, want)
    if reason is None:
        return tree
    log(f"preparing {tree} ({reason})")
    src = archive or fetch_archive(pin, cache)
    return _install_tree(tree, lambda d: _extract(src, pin, d), want, patch_dir)


def ensure_checkout(checkout: Path, cache: Path | None = None,
                    patch_dir: Path = PATCH_DIR) -> Path:
    """A patched copy of a user's llama.cpp checkout (the checkout is left untouched)."""
    checkout = checkout.expanduser().resolve()
    if not (checkout / "CMakeLists.txt").exists() or not (checkout / "tools" / "mtmd").is_dir():
        raise SourceError(f"FUNASR_LLAMA_CPP_DIR={checkout} is not a llama.cpp source tree "
                          "(no CMakeLists.txt or tools/mtmd)")
    cache = cache or cache_root()
    key = hashlib.sha256(str(checkout).encode()).hexdigest()[:12]
    tree = cache / f"llama.cpp-custom-{key}"
    want = {"source": str(checkout),
            "source_tree_sha256": tree_hash(checkout, SKIP_IN_CHECKOUT, checkout=True),
            "patches": [list(p) for p in patch_set(patch_dir)]}
    reason = _stale_reason(tree, want)
    if reason is None:
        return tree
    log(f"copying {checkout} to {tree} ({reason})")

    def fill(dest: Path) -> None:
        for rel in _tree_files(checkout, SKIP_IN_CHECKOUT, checkout=True):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(checkout / rel, dest / rel)

    return _install_tree(tree, fill, want, patch_dir)


def build_info(checkout: Path | None) -> tuple[int, str]:
    """Build number and short commit: the pin's, or asked of the checkout's git."""
    if checkout is None:
        return PIN.build_number, PIN.commit

    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""

    count = git("rev-list", "--count", "HEAD") if shutil.which("git") else ""
    commit = git("rev-parse", "--short", "HEAD") if count else ""
    return (int(count) if count.isdigit() else 0), (commit or "unknown")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("ensure", help="prepare the tree and print its path")
    b = sub.add_parser("build-info", help="print 'BUILD_NUMBER;COMMIT' of the tree to build")
    for p in (e, b):
        p.add_argument("--from", dest="checkout", default=os.environ.get("FUNASR_LLAMA_CPP_DIR") or None,
                       help="use this llama.cpp checkout instead of the pinned sdist")
    e.add_argument("--cache", type=Path, default=None, help="cache directory")
    args = ap.parse_args(argv)
    if args.cmd == "build-info":
        number, commit = build_info(Path(args.checkout) if args.checkout else None)
        print(f"{number};{commit}")
        return 0
    try:
        if args.checkout:
            tree = ensure_checkout(Path(args.checkout), args.cache)
        else:
            tree = ensure_pinned(args.cache)
    except SourceError as exc:
        log(f"error: {exc}")
        return 1
    print(tree)
    return 0


if __name__ == "__main__":
    sys.exit(main())
