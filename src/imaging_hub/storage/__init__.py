"""The only place that talks to the object store. Keys are built in :mod:`.base`
(:func:`instance_key`, :func:`report_key`); backends are opened with :func:`open_store`.
"""

from pathlib import Path
from typing import Any

from imaging_hub.errors import StorageError
from imaging_hub.storage.base import ObjectStore, instance_key, report_key, study_prefix
from imaging_hub.storage.filesystem import FilesystemStore
from imaging_hub.storage.s3 import S3Store

__all__ = [
    "FilesystemStore",
    "ObjectStore",
    "S3Store",
    "instance_key",
    "open_store",
    "report_key",
    "study_prefix",
]

STORE_KINDS = ("filesystem", "s3")


def open_store(kind: str, **options: Any) -> ObjectStore:
    """Open the object store backend *kind* (``"filesystem"`` or ``"s3"``).

    ``open_store("filesystem", root=path)`` or ``open_store("s3", endpoint=..., access_key=...,
    secret_key=..., bucket=..., secure=..., region=..., create_bucket=...)``; the options are the
    backend's constructor arguments.
    """
    try:
        if kind == "filesystem":
            return FilesystemStore(Path(options.pop("root")), **options)
        if kind == "s3":
            return S3Store(**options)
    except (KeyError, TypeError) as exc:
        # TypeError/KeyError name only the offending option, never its value.
        raise StorageError(f"The options of the {kind} object store are not valid: {exc}.") from exc
    raise StorageError(f"The object store kind must be one of {', '.join(STORE_KINDS)}.")
