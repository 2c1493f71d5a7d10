"""Filesystem object store: the embedded default backend.

Objects live at ``root/<key>``, one file per key, ``/`` in keys mapping to directories. Writes are
atomic and durable: the bytes go to a temporary file in the target directory, which is fsynced,
renamed over the target with :func:`os.replace`, and then the directory itself is fsynced. A
reader therefore sees either the old object, the whole new one, or nothing — never a torn file.

Keys are checked before they become paths: absolute keys, ``.``/``..`` segments, empty segments,
backslashes, NUL and control characters, and over-long keys are refused with
:class:`~imaging_hub.errors.StorageError`, and every resolved path must stay inside the root even
if someone planted a symbolic link under it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from imaging_hub.errors import ObjectNotFound, StorageError

__all__ = ["FilesystemStore", "validate_key", "validate_prefix"]

logger = logging.getLogger(__name__)

#: Bytes read from a source stream (or a stored file) at a time.
COPY_CHUNK_SIZE = 1 << 20
#: S3's limit on key length (UTF-8 bytes); the same limit keeps both backends interchangeable.
MAX_KEY_BYTES = 1024
#: Most filesystems limit one path component to 255 bytes.
MAX_SEGMENT_BYTES = 255
#: Temporary files start with this; keys may not have segments starting with ``.`` at all.
TEMP_PREFIX = ".tmp-"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_segment(segment: str) -> None:
    if not segment:
        raise StorageError("An object key must not contain empty segments or a leading '/'.")
    if segment in (".", ".."):
        raise StorageError("An object key must not contain '.' or '..' segments.")
    if segment.startswith("."):
        raise StorageError("An object key segment must not start with '.'.")
    if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
        raise StorageError(f"An object key segment must be at most {MAX_SEGMENT_BYTES} bytes.")


def _check_characters(text: str) -> None:
    if "\\" in text:
        raise StorageError("An object key must not contain backslashes.")
    if _CONTROL.search(text) is not None:
        raise StorageError("An object key must not contain NUL or other control characters.")
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise StorageError("An object key must be valid UTF-8 text.") from exc
    if len(encoded) > MAX_KEY_BYTES:
        raise StorageError(f"An object key must be at most {MAX_KEY_BYTES} bytes long.")


def validate_key(key: object) -> str:
    """Return *key* if it is a safe relative object key, else raise ``StorageError``."""
    if not isinstance(key, str) or not key:
        raise StorageError("An object key must be a non-empty string.")
    _check_characters(key)
    for segment in key.split("/"):
        _check_segment(segment)
    return key


def validate_prefix(prefix: object) -> str:
    """A listing prefix: like a key, but may be empty, end with ``/`` or end mid-segment."""
    if not isinstance(prefix, str):
        raise StorageError("A listing prefix must be a string.")
    if not prefix:
        return prefix
    _check_characters(prefix)
    *directories, last = prefix.split("/")
    for segment in directories:
        _check_segment(segment)
    if last in (".", ".."):
        raise StorageError("A listing prefix must not contain '.' or '..' segments.")
    return prefix


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemStore:
    """An :class:`~imaging_hub.storage.base.ObjectStore` keeping each object as a file under *root*.

    *root* is created if missing. Safe for concurrent use by threads and processes: every write is
    a rename of a private temporary file, and the last rename wins.
    """

    def __init__(self, root: Path) -> None:
        try:
            Path(root).mkdir(parents=True, exist_ok=True)
            self._root = Path(root).resolve(strict=True)
        except OSError as exc:
            raise StorageError("The object store root directory cannot be created.") from exc
        if not self._root.is_dir():
            raise StorageError("The object store root is not a directory.")

    @property
    def root(self) -> Path:
        """The resolved root directory."""
        return self._root

    def __repr__(self) -> str:
        return f"FilesystemStore(root={str(self._root)!r})"

    # -- paths -------------------------------------------------------------------------------

    def _inside_root(self, path: Path | str) -> bool:
        resolved = os.path.realpath(path)
        root = str(self._root)
        return resolved == root or resolved.startswith(root.rstrip(os.sep) + os.sep)

    def _file(self, key: str) -> str:
        """The file of *key* (a string path: reads run per request, pathlib costs there), after
        checking the key, that its directory resolves inside the root, and that it is no
        symbolic link."""
        validate_key(key)
        path = os.path.join(self._root, key)  # validated: relative, no '.', '..' or empty segments
        if not self._inside_root(os.path.dirname(path)):
            raise StorageError("The object key resolves outside the object store root.")
        if os.path.islink(path):
            raise StorageError("The object key names a symbolic link, which the store refuses.")
        return path

    def _path(self, key: str) -> Path:
        return Path(self._file(key))

    def _ensure_directory(self, directory: Path) -> None:
        """Create *directory* and missing parents, fsyncing each parent that gained an entry."""
        missing: list[Path] = []
        current = directory
        while current != self._root and not current.is_dir():
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                if not path.is_dir():
                    raise
            else:
                _fsync_directory(path.parent)
        if not self._inside_root(directory):
            raise StorageError("The object key resolves outside the object store root.")

    # -- writes ------------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        """Store *data* under *key*, replacing any object there (idempotent by key)."""
        self._write(key, lambda out: out.write(data))

    def put_stream(self, key: str, stream: BinaryIO, length: int) -> None:
        """Copy exactly *length* bytes from *stream* to *key*, one chunk at a time.

        A stream that ends early is an error and leaves any previous object untouched.
        """
        if length < 0:
            raise StorageError("The object length must not be negative.")

        def copy(out: BinaryIO) -> None:
            remaining = length
            while remaining > 0:
                chunk = stream.read(min(COPY_CHUNK_SIZE, remaining))
                if not chunk:
                    raise StorageError(
                        f"The source stream ended {remaining} bytes before the declared length."
                    )
                out.write(chunk)
                remaining -= len(chunk)

        self._write(key, copy)

    def _write(self, key: str, fill: Callable[[BinaryIO], object]) -> None:
        path = self._path(key)
        directory = path.parent
        temp_name: str | None = None
        try:
            self._ensure_directory(directory)
            fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
            with os.fdopen(fd, "wb") as out:
                fill(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp_name, path)
            temp_name = None
            _fsync_directory(directory)
        except StorageError:
            raise
        except OSError as exc:
            raise StorageError(_write_failure_message(exc)) from exc
        finally:
            if temp_name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp_name)

    def delete(self, key: str) -> None:
        """Delete the object if present (deleting a missing object is not an error)."""
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except IsADirectoryError:
            return
        except PermissionError as exc:
            if path.is_dir():  # some platforms report EPERM for unlink() on a directory
                return
            raise StorageError("The object could not be deleted from the filesystem.") from exc
        except OSError as exc:
            raise StorageError("The object could not be deleted from the filesystem.") from exc
        try:
            _fsync_directory(path.parent)
        except OSError as exc:
            raise StorageError("The deletion could not be made durable.") from exc

    # -- reads -------------------------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        """Return a readable binary stream of the object (caller closes it)."""
        path = self._path(key)
        try:
            return path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFound(f"No object is stored under key {key!r}.") from exc
        except OSError as exc:
            raise StorageError("The object could not be opened for reading.") from exc

    def get(self, key: str) -> bytes:
        """Return the whole object, or raise :class:`~imaging_hub.errors.ObjectNotFound`."""
        with self.open(key) as stream:
            try:
                return stream.read()
            except OSError as exc:
                raise StorageError("The object could not be read.") from exc

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to *length* bytes from *offset* (fewer at the end of the object): one pread.

        On a file descriptor, not a file object (a frame request is little more than this);
        ``O_NOFOLLOW`` refuses a symbolic link put in place after the check, too.
        """
        _check_range(offset, length)
        path = self._file(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ObjectNotFound(f"No object is stored under key {key!r}.") from exc
        except OSError as exc:
            raise StorageError("The object could not be opened for reading.") from exc
        try:
            return os.pread(fd, length, offset)
        except IsADirectoryError as exc:
            raise ObjectNotFound(f"No object is stored under key {key!r}.") from exc
        except OSError as exc:
            raise StorageError("The object could not be read.") from exc
        finally:
            os.close(fd)

    def iter_chunks(self, key: str, chunk_size: int = COPY_CHUNK_SIZE) -> Iterator[bytes]:
        """Yield the object in chunks; a missing object raises here, not on first iteration."""
        if chunk_size <= 0:
            raise StorageError("The chunk size must be positive.")
        stream = self.open(key)
        return _chunks(stream, chunk_size)

    def size(self, key: str) -> int:
        """Size in bytes, or raise :class:`~imaging_hub.errors.ObjectNotFound`."""
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ObjectNotFound(f"No object is stored under key {key!r}.") from exc
        except OSError as exc:
            raise StorageError("The object size could not be read.") from exc
        if not path.is_file():
            raise ObjectNotFound(f"No object is stored under key {key!r}.")
        return st.st_size

    def exists(self, key: str) -> bool:
        """Whether an object is stored under *key*."""
        return self._path(key).is_file()

    def list(self, prefix: str) -> Iterator[str]:
        """Yield every key that starts with *prefix*, in lexical order.

        Only the directory named by the complete segments of *prefix* is walked.
        """
        validate_prefix(prefix)
        base_parts = prefix.split("/")[:-1]
        base = self._root.joinpath(*base_parts)
        if not base.is_dir() or not self._inside_root(base):
            return iter(())
        keys: list[str] = []

        def on_error(exc: OSError) -> None:
            raise StorageError("The object store directory could not be listed.") from exc

        for dirpath, dirnames, filenames in os.walk(base, onerror=on_error, followlinks=False):
            dirnames[:] = [name for name in dirnames if not name.startswith(".")]
            relative = Path(dirpath).relative_to(self._root).parts
            for name in filenames:
                if name.startswith("."):
                    continue  # temporary files of writes in progress
                key = "/".join((*relative, name))
                if key.startswith(prefix) and not os.path.islink(os.path.join(dirpath, name)):
                    keys.append(key)
        keys.sort()
        return iter(keys)


def _check_range(offset: int, length: int) -> None:
    if offset < 0 or length < 0:
        raise StorageError("A byte range must not start or extend below zero.")


def _chunks(stream: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    with stream:
        while chunk := stream.read(chunk_size):
            yield chunk


def _write_failure_message(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "The object could not be written: the filesystem is full."
    if exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return "The object key collides with an existing object or directory."
    return "The object could not be written to the filesystem."
