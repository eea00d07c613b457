"""One schema: csrc/model/funasr_keys.h and funasr_cpp.keys hold the same GGUF key and tensor names, in the
same order, and no Python module spells a funasr./fsmn_vad. key outside funasr_cpp.keys."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from funasr_cpp import keys

ROOT = Path(__file__).resolve().parents[1]
HEADER = ROOT / "csrc" / "model" / "funasr_keys.h"
PACKAGE = ROOT / "python" / "funasr_cpp"

_DEFINE = re.compile(r'^#define\s+([A-Z][A-Z0-9_]*)\s+"([^"\\]*)"\s*(//.*)?$')


def header_table() -> list[tuple[str, str]]:
    rows = []
    for n, line in enumerate(HEADER.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("#define"):
            m = _DEFINE.match(line)
            assert m, f"{HEADER.name}:{n}: not a `#define NAME \"value\" // comment` line: {line}"
            rows.append((m.group(1), m.group(2)))
    return rows


def python_table() -> list[tuple[str, str]]:
    tree = ast.parse(Path(keys.__file__).read_text(encoding="utf-8"))
    rows = []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            (target,) = node.targets
            assert isinstance(node.value, ast.Constant) and isinstance(node.value.value, str), target.id
            rows.append((target.id, node.value.value))
    return rows


def test_header_and_module_agree():
    h, p = header_table(), python_table()
    assert len(h) > 50
    assert p == h
    assert len({name for name, _ in h}) == len(h), "a name is defined twice"


def test_every_entry_has_a_comment():
    for line in HEADER.read_text(encoding="utf-8").splitlines():
        if line.startswith("#define"):
            assert "//" in line, line
    for line in Path(keys.__file__).read_text(encoding="utf-8").splitlines():
        if re.match(r"^[A-Z][A-Z0-9_]* *=", line):
            assert "#" in line, line


def test_formats_fill():
    assert keys.TN_CTC_BLK % (3, keys.TN_PART_ATTN_Q, "weight") == "ctc.blk.3.attn_q.weight"
    assert keys.TN_ENC_CONV_DW % 7 == "a.blk.7.conv_dw.weight"
    assert keys.KEY_VAD_OPTION % "detect_mode" == "fsmn_vad.options.detect_mode"


_KEY_LITERAL = re.compile(r"(?<![\w./-])(?:funasr|fsmn_vad)\.[a-z_]")


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def test_no_key_literal_outside_the_table():
    """Python code names funasr./fsmn_vad. keys only through funasr_cpp.keys (docstrings may mention them)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "keys.py" and path.parent == PACKAGE:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                if _KEY_LITERAL.search(node.value):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert not found, "key literals outside funasr_cpp.keys:\n" + "\n".join(found)
