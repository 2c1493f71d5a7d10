"""A fresh clone runs the suite on its own: no test reads the reference corpus beside the checkout.

``../shared`` (the DICOM corpus, benchmark generator) is not a test dependency; the samples are
``tests/data/dicom`` and the files pydicom / pydicom-data install (see tests/conftest.py).
"""

import csv
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
DATA = TESTS / "data" / "dicom"
# "../shared", "/work/shared", `parent / "shared"`, "shared/dicom-samples", "shared" / "bench"
SHARED = re.compile(
    r"""\.\./shared|/work/shared|shared/(dicom-samples|bench|design)|["']shared["']\s*/"""
    r"""|/\s*["']shared["']|["']dicom-samples["']"""
)


def test_no_test_path_refers_to_the_shared_folder() -> None:
    offenders = []
    for path in sorted(TESTS.rglob("*")):
        if path.suffix not in {".py", ".cfg", ".ini", ".toml", ".json", ".txt", ".sh", ".js"}:
            continue
        if path == Path(__file__).resolve() or "data" in path.relative_to(TESTS).parts[:1]:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if SHARED.search(line):
                offenders.append(f"{path.relative_to(TESTS)}:{n}: {line.strip()}")
    assert not offenders, "tests must not read ../shared:\n" + "\n".join(offenders)


def test_every_committed_sample_is_listed_with_a_licence_file() -> None:
    with (DATA / "INDEX.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    listed = {r["path"] for r in rows if r["provided_by"] == "tests/data"}
    committed = {
        p.relative_to(DATA).as_posix() for p in DATA.rglob("*.dcm") if "LICENSES" not in p.parts
    }
    assert committed == listed
    assert {r["provided_by"] for r in rows} <= {"tests/data", "pydicom", "pydicom-data"}
    licences = {p.name for p in (DATA / "LICENSES").iterdir()}
    for row in rows:
        if row["provided_by"] == "tests/data":
            assert not row["license"].startswith(("GPL", "MPL")), row["path"]
            assert any(
                key in row["license"] for key in _LICENCE_KEYS if _LICENCE_KEYS[key] in licences
            ), row
    assert sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file()) < 5_000_000


_LICENCE_KEYS = {
    "pylibjpeg-data": "pylibjpeg-data.txt",
    "fo-dicom": "fo-dicom_MS-PL.txt",
    "dicomParser": "dicomParser.txt",
    "highdicom": "highdicom.txt",
    "pynetdicom": "pynetdicom.txt",
    "pydicom-data": "pydicom-data.txt",
    "pydicom LICENSE": "pydicom.txt",
}
