"""Real peers for the tests, started on free loopback ports and stopped at teardown.

- ``tests.peers.hub``: the hub (``imaging-hub hub serve``) and clinic gateways as processes;
- ``tests.peers.postgres``: a throwaway PostgreSQL cluster;
- ``tests.peers.s3``: a real S3 server (SeaweedFS, signatures checked) for the S3 backend;
- ``tests.peers.dcmtk``: dcmtk's storescu / echoscu as the modality (plain functions).

DICOM samples (``SAMPLES``): the rows of ``tests/data/dicom/INDEX.csv``, a subset of the reference
corpus kept beside the checkout (not a test dependency). Each row says where its file
comes from (``provided_by``): ``tests/data`` (committed, licence texts in
``tests/data/dicom/LICENSES``), ``pydicom`` (the test files pydicom installs) or ``pydicom-data``
(the PyPI package, installed as ``data_store``; read from its installed folder, never downloaded).
They are laid out under the corpus' relative paths in a per-session folder of symbolic links,
each checked against the row's SHA-256.
"""

import atexit
import csv
import gc
import hashlib
import importlib.resources
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

pytest_plugins = [
    "tests.peers.s3",
    "tests.peers.postgres",
    "tests.peers.hub",
    "tests.peers.browser",
    "tests.worklist_support",
]

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "dicom"


def _package_dirs() -> dict[str, Path]:
    """Where pydicom and pydicom-data install their DICOM files (``package_file`` is relative)."""
    return {
        "tests/data": DATA,
        "pydicom": Path(pydicom.__file__).resolve().parent / "data",
        "pydicom-data": Path(str(importlib.resources.files("data_store") / "data")),
    }


def _assemble_samples() -> Path:
    """A per-session folder with the corpus layout: one symbolic link per INDEX.csv row."""
    with (DATA / "INDEX.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    dirs = _package_dirs()
    root = Path(tempfile.mkdtemp(prefix="imaging-hub-samples-"))
    atexit.register(shutil.rmtree, root, True)
    shutil.copyfile(DATA / "INDEX.csv", root / "INDEX.csv")
    for row in rows:
        where = row["provided_by"]
        source = dirs[where] / (row["package_file"] or row["path"])
        if not source.is_file():
            raise RuntimeError(f"Sample {row['path']} ({where}) is not installed: run `make`.")
        if hashlib.sha256(source.read_bytes()).hexdigest() != row["sha256"]:
            raise RuntimeError(f"Sample {row['path']} from {where} differs from INDEX.csv.")
        link = root / row["path"]
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source)
    return root


SAMPLES = _assemble_samples()


def sample_rows() -> list[dict[str, str]]:
    """Rows of the samples' INDEX.csv."""
    with (SAMPLES / "INDEX.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES


# A leaked file, socket or connection warns (ResourceWarning) in its __del__; pytest turns that into
# a PytestUnraisableExceptionWarning, an error under filterwarnings = ["error"], reported in the
# phase during which the object was freed. Objects in reference cycles are freed by the cyclic
# collector, whenever it happens to run: so it runs after every test, and a leak fails the test
# that made it. A full collection walks the ~330k objects that imports and collection made
# (~0.15 s each time); frozen (gc.freeze) after collection and again after each test, they are
# skipped and a collection takes milliseconds. Module- and session-scoped fixtures outlive the
# test that froze them: their garbage is collected, unfrozen, at the end of each module and at
# the end of the session (pytest's last collection).


def pytest_collection_finish(session: pytest.Session) -> None:
    gc.collect()
    gc.freeze()


def pytest_sessionfinish(session: pytest.Session) -> None:
    gc.unfreeze()


@pytest.fixture(scope="module", autouse=True)
def _collect_module_garbage() -> Iterator[None]:
    yield
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _collect_test_garbage() -> Iterator[None]:
    yield
    gc.collect()
    gc.freeze()
