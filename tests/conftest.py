"""Real peers for the tests, started on free loopback ports and stopped at teardown.

- ``tests.peers.hub``: the hub (``imaging-hub hub serve``) and clinic gateways as processes;
- ``tests.peers.postgres``: a throwaway PostgreSQL cluster;
- ``tests.peers.s3``: an S3 server (moto) for the S3 object store backend;
- ``tests.peers.dcmtk``: dcmtk's storescu / echoscu as the modality (plain functions).
"""

import csv
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.peers.s3",
    "tests.peers.postgres",
    "tests.peers.hub",
    "tests.peers.browser",
    "tests.worklist_support",
]

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "dicom-samples"


def sample_rows() -> list[dict[str, str]]:
    """Rows of the shared samples' INDEX.csv; a missing corpus is a failure, not a skip."""
    index = SAMPLES / "INDEX.csv"
    if not index.is_file():
        raise RuntimeError(f"The shared DICOM samples are missing: {index} does not exist.")
    with index.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    sample_rows()
    return SAMPLES
