"""The house rules of the layout (ARCHITECTURE.md "Layout"), checked on the source tree.

Folders follow features, so "where is a claim decided, where is a report signed" is answered by
a folder name; a few boundaries keep the parts apart. Each check reads the imports with ``ast``
(not text), so a comment or a docstring naming a library does not count.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from imaging_hub.dicom import dimse
from imaging_hub.dicom.uids import is_valid_uid

SRC = Path(__file__).resolve().parents[2] / "src" / "imaging_hub"
WORKLIST = SRC / "worklist"

FEATURES = (
    "http",
    "db",
    "access",
    "audit",
    "studies",
    "reading",
    "reports",
    "orders",
    "dicomweb",
    "admin",
    "stats",
    "gateways",
    "notifications",
)


def imported_modules(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def modules_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def importers_of(prefixes: tuple[str, ...], folder: Path) -> list[str]:
    return [
        str(p.relative_to(SRC))
        for p in modules_under(folder)
        if any(m == x or m.startswith(x + ".") for m in imported_modules(p) for x in prefixes)
    ]


@pytest.mark.parametrize("feature", FEATURES)
def test_the_hub_is_organised_by_feature(feature: str) -> None:
    folder = WORKLIST / feature
    assert (folder / "__init__.py").is_file(), f"worklist/{feature}/ is missing"
    if feature == "reports":
        return  # the next wave fills it
    code = [p for p in modules_under(folder) if p.name != "__init__.py"]
    assert code, f"worklist/{feature}/ holds no module"
    # Used: some module outside the folder imports it (the app wires every feature).
    dotted = f"imaging_hub.worklist.{feature}"
    users = [
        p
        for p in modules_under(SRC)
        if folder not in p.parents
        and any(m == dotted or m.startswith(dotted + ".") for m in imported_modules(p))
    ]
    assert users, f"nothing imports worklist/{feature}/"


def test_the_hub_has_no_layer_folders_left() -> None:
    flat = sorted(p.name for p in WORKLIST.glob("*.py") if p.name != "__init__.py")
    assert flat == ["app.py"], f"modules outside the feature folders: {flat}"
    assert not (WORKLIST / "api").exists()


def test_the_gateway_has_its_spool_and_lean_folders() -> None:
    gateway = SRC / "dicom_gateway"
    for folder in ("spool", "lean"):
        assert (gateway / folder / "__init__.py").is_file(), f"dicom_gateway/{folder}/ is missing"


@pytest.mark.parametrize("folder", ["dicom", "storage", "worklist/access", "worklist/db"])
def test_domain_folders_import_no_web_framework(folder: str) -> None:
    assert importers_of(("fastapi", "starlette"), SRC / folder) == []


def test_only_the_gateway_scp_its_lean_path_and_the_demo_sender_import_pynetdicom() -> None:
    allowed = {"dicom_gateway/scp.py", "dicom_gateway/report_sender.py", "modality.py"}
    offenders = [
        p
        for p in importers_of(("pynetdicom",), SRC)
        if p not in allowed and not p.startswith("dicom_gateway/lean/")
    ]
    assert offenders == []


def test_the_cli_is_one_module_per_command_group() -> None:
    cli = SRC / "cli"
    assert (cli / "__init__.py").is_file()
    assert not (SRC / "cli.py").exists()
    groups = {p.stem for p in cli.glob("*.py")} - {"__init__"}
    assert {"hub", "gateway", "db", "admin"} <= groups


# --- One UID rule ------------------------------------------------------------------------------

UIDS = [
    "1.2.840.10008.5.1.4.1.1.2",
    "1.2.03.4",  # a leading zero: outside PS3.5, sent by real devices; accepted everywhere alike
    "0",
    "0.0",
    "1." + "2" * 62,  # 64 characters
    "1." + "2" * 63,  # 65
    "",
    "1..2",
    ".1.2",
    "1.2.",
    "1.2a",
    "１.２",  # full-width digits
    "../1",
]


@pytest.mark.parametrize("uid", UIDS)
def test_the_dimse_codec_and_the_hub_agree_on_every_uid(uid: str) -> None:
    """The lean C-STORE decoder and the keys/paths rule give the same verdict."""
    raw = uid.encode("utf-8")
    decoded = dimse._parse_uid(raw)
    assert (decoded is not None) == is_valid_uid(uid)
    if decoded is not None:
        assert decoded == uid


@pytest.mark.parametrize("padding", [b"\x00", b" "])
def test_a_uid_padded_to_even_length_on_the_wire_is_the_uid_itself(padding: bytes) -> None:
    assert dimse._parse_uid(b"1.2.3" + padding) == "1.2.3"
