"""The CLI only translates (ARCHITECTURE.md "Layout"): no SQLAlchemy query and no audit writing
under ``cli/``; those are the domain functions' job. Read with ``ast``, so comments don't count."""

import ast
from pathlib import Path

CLI = Path(__file__).resolve().parents[2] / "src" / "imaging_hub" / "cli"
#: What the CLI may take from the database side: the session's type (for annotations) and the
#: enums it parses options into.
ALLOWED = {"sqlalchemy.orm.Session", "Role", "Priority", "OrderStatus"}
QUERY_CALLS = {"select", "scalars", "scalar", "execute", "query", "get", "get_one", "add", "delete"}


def _offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "sqlalchemy":
                    found.append(f"{path.name}:{node.lineno} imports {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            for alias in node.names:
                full = f"{module}.{alias.name}"
                if full in ALLOWED or (module.endswith("db.models") and alias.name in ALLOWED):
                    continue
                if module.split(".")[0] == "sqlalchemy" or module.endswith("db.models"):
                    found.append(f"{path.name}:{node.lineno} imports {full}")
                if module.endswith("audit.trail") and alias.name != "AuditChainBroken":
                    found.append(f"{path.name}:{node.lineno} imports {full}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if (
                isinstance(owner, ast.Name)
                and owner.id == "session"
                and node.func.attr in QUERY_CALLS | {"commit", "flush"}
            ):
                found.append(f"{path.name}:{node.lineno} session.{node.func.attr}()")
            if node.func.attr in {"record", "record_for", "record_access"}:
                found.append(f"{path.name}:{node.lineno} writes an audit record")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "select"
        ):
            found.append(f"{path.name}:{node.lineno} select()")
    return found


def test_the_cli_holds_no_sqlalchemy_query_and_writes_no_audit_record() -> None:
    modules = sorted(CLI.rglob("*.py"))
    assert modules, "src/imaging_hub/cli/ is missing"
    assert [o for m in modules for o in _offences(m)] == []


def test_the_checker_sees_a_query(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from sqlalchemy import select\n"
        "from imaging_hub.worklist.db.models import User\n"
        "def f(session):\n"
        "    session.scalars(select(User))\n"
        "    audit.record(session, actor=None, action='a.b')\n",
        encoding="utf-8",
    )
    assert len(_offences(sample)) == 5
