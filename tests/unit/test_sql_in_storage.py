"""Nothing outside storage/ builds SQL: the stages call repository functions instead.

Import-linter's layers say who may import storage; this says what stays inside it (a
statement builder imported anywhere else is a query that escaped its repository).
"""

from __future__ import annotations

import ast
from pathlib import Path

import mentorpulse

PACKAGE = Path(mentorpulse.__file__).parent
BUILDERS = {
    "sqlalchemy": {"Select", "Table", "and_", "bindparam", "delete", "func", "insert"}
    | {"or_", "select", "text", "update"},
    "sqlalchemy.orm": {"aliased"},
    "sqlalchemy.sql": {"*"},
    "sqlalchemy.dialects": {"*"},
}
# Modules whose SQL other parts of issue 14 move into storage/ (findings, explain, the
# demo's counts); the integrator empties this list once they are merged.
PENDING = {"stages/evaluate.py", "cli/rules.py", "cli/demo.py"}


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
        if relative.startswith("storage/") or relative in PENDING:
            continue
        found = _builders(ast.parse(path.read_text(encoding="utf-8")))
        if found:
            offenders[relative] = found
    assert offenders == {}


def test_the_check_sees_a_builder() -> None:
    tree = ast.parse("from sqlalchemy import select, Engine\nfrom sqlalchemy.orm import aliased")
    assert _builders(tree) == ["sqlalchemy.select", "sqlalchemy.orm.aliased"]
