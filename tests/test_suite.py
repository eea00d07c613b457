"""The suite's own layout: shared helpers live in fixtures/ and conftest.py, no test module
imports another (each runs alone, in any order)."""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_test_module_imports_another():
    test_modules = {p.stem for p in TESTS.glob("test_*.py")}
    files = [*TESTS.glob("test_*.py"), TESTS / "conftest.py", *(TESTS / "fixtures").glob("*.py")]
    bad = {p.name: sorted(_imported_modules(p) & test_modules) for p in files}
    assert {k: v for k, v in bad.items() if v} == {}
    # helpers are in fixtures/: the only other module at the top is conftest.py
    assert [p.name for p in TESTS.glob("*.py") if not p.name.startswith("test_")] == ["conftest.py"]
