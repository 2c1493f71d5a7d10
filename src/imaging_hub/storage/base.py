"""ObjectStore protocol and the one function family that builds object keys.

Keys (ARCHITECTURE.md, external contract):
``{clinic}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm`` and reports under
``{clinic}/{StudyInstanceUID}/reports/``. Every UID and the clinic code are validated here, before
they go near a key or a path.
"""

import re
from collections.abc import Iterator
from typing import BinaryIO, Protocol, runtime_checkable

from imaging_hub.dicom.uids import validate_uid
from imaging_hub.errors import StorageError

CLINIC_CODE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
REPORT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def validate_clinic_code(clinic: str) -> str:
    """Clinic codes are lower-case slugs such as ``clinic-a``; anything else is refused."""
    if not isinstance(clinic, str) or CLINIC_CODE_PATTERN.fullmatch(clinic) is None:
        raise StorageError("The clinic code must be a lower-case slug (letters, digits, '-').")
    return clinic


def study_prefix(clinic: str, study_instance_uid: str) -> str:
    """``{clinic}/{StudyInstanceUID}/`` — everything stored for one study."""
    validate_clinic_code(clinic)
    validate_uid(study_instance_uid, name="StudyInstanceUID")
    return f"{clinic}/{study_instance_uid}/"


def instance_key(
    clinic: str, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
) -> str:
    """The object key of one DICOM instance."""
    prefix = study_prefix(clinic, study_instance_uid)
    validate_uid(series_instance_uid, name="SeriesInstanceUID")
    validate_uid(sop_instance_uid, name="SOPInstanceUID")
    return f"{prefix}{series_instance_uid}/{sop_instance_uid}.dcm"


def report_key(clinic: str, study_instance_uid: str, name: str) -> str:
    """The object key of a report document (e.g. ``report-1.pdf``) of a study."""
    if REPORT_NAME_PATTERN.fullmatch(name) is None or ".." in name:
        raise StorageError("A report object name must be a plain file name.")
    return f"{study_prefix(clinic, study_instance_uid)}reports/{name}"


@runtime_checkable
class ObjectStore(Protocol):
    """A bytes-only object store. Writes are atomic: an object is either whole or absent.

    Implementations: :class:`imaging_hub.storage.filesystem.FilesystemStore` (embedded default)
    and :class:`imaging_hub.storage.s3.S3Store` (MinIO / any S3 server).
    """

    def put(self, key: str, data: bytes) -> None:
        """Store *data* under *key*, replacing any object there (idempotent by key)."""

    def put_stream(self, key: str, stream: BinaryIO, length: int) -> None:
        """Store *length* bytes read from *stream* under *key* without holding them in memory."""

    def get(self, key: str) -> bytes:
        """Return the whole object, or raise :class:`~imaging_hub.errors.ObjectNotFound`."""

    def open(self, key: str) -> BinaryIO:
        """Return a readable binary stream of the object (caller closes it)."""

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to *length* bytes from *offset* (fewer at the end of the object): one ranged read."""

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the object in chunks, for streaming HTTP responses."""

    def size(self, key: str) -> int:
        """Size in bytes, or raise :class:`~imaging_hub.errors.ObjectNotFound`."""

    def exists(self, key: str) -> bool:
        """Whether an object is stored under *key*."""

    def delete(self, key: str) -> None:
        """Delete the object if present (deleting a missing object is not an error)."""

    def list(self, prefix: str) -> Iterator[str]:
        """Yield every key that starts with *prefix*, in lexical order."""
