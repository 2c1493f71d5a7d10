"""Small real DICOM studies bundled for the demo and for tests.

Every file is MIT or BSD licensed; see ``README.md`` and ``LICENSES/`` next to this module.
The files are located with :mod:`importlib.resources`, so they work from an installed wheel.
"""

from __future__ import annotations

import importlib.resources
import pathlib
from collections import defaultdict

import pydicom

__all__ = ["sample_files", "sample_studies"]


def _samples_dir() -> pathlib.Path:
    """The directory holding the bundled ``.dcm`` files.

    The package is installed as regular files (``package-data``), never zipped, so the
    traversable resource is a real directory on disk.
    """
    resource = importlib.resources.files(__name__)
    return pathlib.Path(str(resource))


def sample_files() -> list[pathlib.Path]:
    """Paths of all bundled sample instances, sorted by file name."""
    return sorted(p for p in _samples_dir().iterdir() if p.suffix == ".dcm" and p.is_file())


def sample_studies() -> dict[str, list[pathlib.Path]]:
    """The bundled sample instances grouped by StudyInstanceUID (PS3.3 C.7.2.1)."""
    studies: dict[str, list[pathlib.Path]] = defaultdict(list)
    for path in sample_files():
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
        studies[str(ds.StudyInstanceUID)].append(path)
    return dict(studies)
