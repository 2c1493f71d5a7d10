"""Domain modules decide, routers translate (ARCHITECTURE.md "Layout"), checked on the source.

Under ``worklist/`` only ``http/``, the app factory and the feature routers (``*routes.py``, and
the DICOMweb routers named after their service) import the web framework; the domain modules
of ``studies/`` and ``reading/`` do not reach it at all, not even through what they import.
Imports are read with ``ast``, so a docstring naming a library does not count.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "imaging_hub"
WORKLIST = PACKAGE / "worklist"
WEB = ("fastapi", "starlette")

#: The DICOMweb routers and their HTTP helpers (PS3.18 service names rather than *routes.py).
DICOMWEB_HTTP = {"__init__.py", "common.py", "fast.py", "qido.py", "wado.py", "stow.py"}


def imports(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def is_web(module: str) -> bool:
    return any(module == w or module.startswith(w + ".") for w in WEB)


#: Not routing: the thread pool an async generator hands blocking reads to (DICOMweb's
#: streamed multipart bodies).
NOT_ROUTING = ("starlette.concurrency",)


def is_routing(module: str) -> bool:
    return is_web(module) and not any(
        module == m or module.startswith(m + ".") for m in NOT_ROUTING
    )


def module_path(dotted: str) -> Path | None:
    base = SRC.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def is_http_edge(path: Path) -> bool:
    rel = path.relative_to(WORKLIST)
    return (
        rel.parts[0] == "http"
        or path.name.endswith("routes.py")
        or rel == Path("app.py")
        or (rel.parts[0] == "dicomweb" and path.name in DICOMWEB_HTTP)
    )


def test_only_http_and_the_routers_import_the_web_framework() -> None:
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in sorted(WORKLIST.rglob("*.py"))
        if not is_http_edge(p) and any(is_routing(m) for m in imports(p))
    ]
    assert offenders == []


def reachable_web_imports(start: Path) -> list[str]:
    """``module -> web import`` for every module *start* imports, directly or not, that
    imports the web framework."""
    seen: set[Path] = set()
    todo = [start]
    found: list[str] = []
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imports(path):
            if is_web(module):
                found.append(f"{path.relative_to(PACKAGE)} -> {module}")
            elif module.startswith("imaging_hub."):
                target = module_path(module)
                if target is not None:
                    todo.append(target)
    return sorted(set(found))


DOMAIN = sorted(
    p
    for folder in ("studies", "reading")
    for p in (WORKLIST / folder).glob("*.py")
    if not p.name.endswith("routes.py")
)


@pytest.mark.parametrize("path", DOMAIN, ids=lambda p: str(p.relative_to(WORKLIST)))
def test_studies_and_reading_domain_modules_import_no_fastapi(path: Path) -> None:
    assert reachable_web_imports(path) == []


def test_the_check_sees_a_router() -> None:
    """The checks above are not vacuous: a router does reach FastAPI."""
    assert reachable_web_imports(WORKLIST / "reading" / "routes.py")
    assert DOMAIN and all(not is_http_edge(p) for p in DOMAIN)
