"""The house rules of DESIGN.md that import-linter cannot see.

Import-linter's layers say who may import storage; these say what stays inside it (a
statement builder imported anywhere else is a query that escaped its repository), and
that no function is too long to read on one screen.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mentorpulse

PACKAGE = Path(mentorpulse.__file__).parent
MAX_FUNCTION_LINES = 60  # issue 14: outside the migrations, nothing longer
BUILDERS = {
    "sqlalchemy": {"Select", "Table", "and_", "bindparam", "delete", "func", "insert"}
    | {"or_", "select", "text", "update"},
    "sqlalchemy.orm": {"aliased"},
    "sqlalchemy.sql": {"*"},
    "sqlalchemy.dialects": {"*"},
}


def _builders(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for module, names in BUILDERS.items():
                if node.module == module or node.module.startswith(f"{module}."):
                    found += [
                        f"{node.module}.{a.name}"
                        for a in node.names
                        if "*" in names or a.name in names
                    ]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("sqlalchemy.dialects")]
    return found


def test_no_module_outside_storage_builds_sql() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("storage/"):
            continue
        found = _builders(ast.parse(path.read_text(encoding="utf-8")))
        if found:
            offenders[relative] = found
    assert offenders == {}


def test_the_check_sees_a_builder() -> None:
    tree = ast.parse("from sqlalchemy import select, Engine\nfrom sqlalchemy.orm import aliased")
    assert _builders(tree) == ["sqlalchemy.select", "sqlalchemy.orm.aliased"]


def _modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if "migrations" not in p.parts]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_functions_fit_on_a_screen(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    long = [
        f"{node.name} (line {node.lineno}: {node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []
