"""S3 object store (MinIO in production, any S3 protocol server) through the ``minio`` client.

Every error from the client is translated here, once: a missing object becomes
:class:`~imaging_hub.errors.ObjectNotFound`, anything else :class:`~imaging_hub.errors.StorageError`
with a whole-sentence message that names the operation and the S3 error code but never the
credentials. Keys follow the same rules as the filesystem store, so the backends are
interchangeable.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import BinaryIO, NoReturn, TypeVar

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import check_bucket_name

from imaging_hub.errors import ObjectNotFound, StorageError
from imaging_hub.storage.filesystem import validate_key, validate_prefix

__all__ = ["S3Store"]

logger = logging.getLogger(__name__)

#: S3 error codes that mean "this object is not there".
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NoSuchVersion", "ResourceNotFound"})
#: S3 limits presigned URLs to seven days.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
DEFAULT_CHUNK_SIZE = 1 << 20

_T = TypeVar("_T")

# What a call to the client may raise besides S3Error: transport failures, odd responses, and
# the ValueError/IOError the client uses for invalid arguments and short upload streams.
_CLIENT_ERRORS: tuple[type[BaseException], ...] = (
    MinioException,
    urllib3.exceptions.HTTPError,
    OSError,
    ValueError,
)


class _ResponseReader(io.RawIOBase):
    """A raw binary stream over a minio (urllib3) response that releases the connection on close."""

    def __init__(self, response: urllib3.BaseHTTPResponse, key: str) -> None:
        super().__init__()
        self._response = response
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        try:
            data = self._response.read(len(buffer))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageError(f"Reading object {self._key!r} from S3 failed.") from exc
        size = len(data)
        buffer[:size] = data
        return size

    def close(self) -> None:
        if not self.closed:
            try:
                self._response.close()
                self._response.release_conn()
            finally:
                super().close()


class S3Store:
    """An :class:`~imaging_hub.storage.base.ObjectStore` in one bucket of an S3 server.

    *endpoint* is ``host:port`` without a scheme; *secure* selects HTTPS. With *create_bucket*
    the bucket is created when missing (for demos and tests; production buckets are provisioned).
    """

    def __init__(
        self,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        region: str | None = None,
        create_bucket: bool = False,
    ) -> None:
        if not endpoint or "://" in endpoint or "/" in endpoint:
            raise StorageError("The S3 endpoint must be 'host:port' without a scheme or a path.")
        if not access_key or not secret_key:
            raise StorageError("The S3 access key and secret key must both be set.")
        self._endpoint = endpoint
        self._bucket = bucket
        self._secure = secure
        self._http = http_client = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=10.0, read=120.0),
            maxsize=16,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            retries=urllib3.Retry(
                total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
            ),
        )
        try:
            self._client = Minio(
                endpoint,
                access_key=access_key,
                secret_key=secret_key,
                secure=secure,
                region=region,
                http_client=http_client,
            )
        except ValueError:
            # The client's message may quote its arguments; keep it out of ours and the chain.
            raise StorageError("The S3 endpoint or region is not valid.") from None
        try:
            check_bucket_name(bucket)
        except ValueError:
            raise StorageError("The S3 bucket name is not valid.") from None
        if create_bucket:
            self._ensure_bucket(region)

    def __repr__(self) -> str:
        scheme = "https" if self._secure else "http"
        return f"S3Store(endpoint={scheme}://{self._endpoint}, bucket={self._bucket!r})"

    def close(self) -> None:
        """Close the pooled HTTP connections (the store can still be used; it reconnects)."""
        self._http.clear()

    @property
    def endpoint(self) -> str:
        """The S3 server's ``host:port``."""
        return self._endpoint

    @property
    def bucket(self) -> str:
        """The bucket holding every object of this store."""
        return self._bucket

    # -- error translation -------------------------------------------------------------------

    def _fail(self, action: str, key: str | None, exc: BaseException) -> NoReturn:
        what = f"object {key!r}" if key is not None else f"bucket {self._bucket!r}"
        if isinstance(exc, S3Error):
            if key is not None and exc.code in NOT_FOUND_CODES:
                raise ObjectNotFound(f"No object is stored under key {key!r}.") from exc
            if exc.code == "NoSuchBucket":
                raise StorageError(f"The S3 bucket {self._bucket!r} does not exist.") from exc
            raise StorageError(
                f"The S3 server refused to {action} {what} (error code {exc.code})."
            ) from exc
        if isinstance(exc, ServerError):
            raise StorageError(
                f"The S3 server failed to {action} {what} (HTTP status {exc.status_code})."
            ) from exc
        if isinstance(exc, InvalidResponseError):
            raise StorageError(
                f"The S3 server sent an invalid response while trying to {action} {what}."
            ) from exc
        raise StorageError(
            f"Could not {action} {what} on the S3 server ({type(exc).__name__})."
        ) from exc

    def _call(self, action: str, key: str | None, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except _CLIENT_ERRORS as exc:
            self._fail(action, key, exc)

    def _ensure_bucket(self, region: str | None) -> None:
        if self._call("look up", None, lambda: self._client.bucket_exists(self._bucket)):
            return
        try:
            self._client.make_bucket(self._bucket, location=region)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                self._fail("create", None, exc)
        except _CLIENT_ERRORS as exc:
            self._fail("create", None, exc)

    # -- writes ------------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        """Store *data* under *key*, replacing any object there (idempotent by key)."""
        self.put_stream(key, io.BytesIO(data), len(data))

    def put_stream(self, key: str, stream: BinaryIO, length: int) -> None:
        """Upload *length* bytes from *stream*; large objects go up as a multipart upload.

        At most one part (5 MiB or more for very large objects) is held in memory at a time.
        An S3 PUT is atomic: the object is either the whole new one or the previous one.
        """
        validate_key(key)
        if length < 0:
            raise StorageError("The object length must not be negative.")
        self._call(
            "store",
            key,
            lambda: self._client.put_object(
                self._bucket,
                key,
                stream,
                length,
                content_type="application/octet-stream",
                num_parallel_uploads=1,
            ),
        )

    def delete(self, key: str) -> None:
        """Delete the object if present (deleting a missing object is not an error)."""
        validate_key(key)
        try:
            self._client.remove_object(self._bucket, key)
        except S3Error as exc:
            if exc.code in NOT_FOUND_CODES:
                return
            self._fail("delete", key, exc)
        except _CLIENT_ERRORS as exc:
            self._fail("delete", key, exc)

    # -- reads -------------------------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        """Return a buffered stream of the object; closing it releases the HTTP connection."""
        validate_key(key)
        response = self._call("read", key, lambda: self._client.get_object(self._bucket, key))
        return io.BufferedReader(_ResponseReader(response, key), buffer_size=DEFAULT_CHUNK_SIZE)

    def get(self, key: str) -> bytes:
        """Return the whole object, or raise :class:`~imaging_hub.errors.ObjectNotFound`."""
        with self.open(key) as stream:
            return stream.read()

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to *length* bytes from *offset* (fewer at the end of the object): one ranged GET."""
        validate_key(key)
        if offset < 0 or length < 0:
            raise StorageError("A byte range must not start or extend below zero.")
        if length == 0:
            return b""
        try:
            response = self._client.get_object(self._bucket, key, offset=offset, length=length)
        except S3Error as exc:
            if exc.code == "InvalidRange":  # the range starts at or after the end
                return b""
            self._fail("read", key, exc)
        except _CLIENT_ERRORS as exc:
            self._fail("read", key, exc)
        with io.BufferedReader(_ResponseReader(response, key)) as stream:
            return stream.read()

    def iter_chunks(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """Yield the object in chunks; a missing object raises here, not on first iteration."""
        if chunk_size <= 0:
            raise StorageError("The chunk size must be positive.")
        stream = self.open(key)
        return _chunks(stream, chunk_size)

    def size(self, key: str) -> int:
        """Size in bytes, or raise :class:`~imaging_hub.errors.ObjectNotFound`."""
        validate_key(key)
        stat = self._call("inspect", key, lambda: self._client.stat_object(self._bucket, key))
        if stat.size is None:
            raise StorageError(f"The S3 server did not report the size of object {key!r}.")
        return int(stat.size)

    def exists(self, key: str) -> bool:
        """Whether an object is stored under *key*."""
        try:
            self.size(key)
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str) -> Iterator[str]:
        """Yield every key that starts with *prefix*, in lexical order."""
        validate_prefix(prefix)

        def collect() -> list[str]:
            objects = self._client.list_objects(self._bucket, prefix=prefix, recursive=True)
            return sorted(str(obj.object_name) for obj in objects if obj.object_name is not None)

        return iter(self._call("list", None, collect))

    # -- presigned URLs ----------------------------------------------------------------------

    def presigned_put_url(self, key: str, expires_seconds: int) -> str:
        """A URL that lets its holder PUT the object *key* for *expires_seconds* seconds."""
        validate_key(key)
        expires = _presign_expiry(expires_seconds)
        return self._call(
            "presign an upload of",
            key,
            lambda: self._client.presigned_put_object(self._bucket, key, expires=expires),
        )

    def presigned_get_url(self, key: str, expires_seconds: int) -> str:
        """A URL that lets its holder GET the object *key* for *expires_seconds* seconds."""
        validate_key(key)
        expires = _presign_expiry(expires_seconds)
        return self._call(
            "presign a download of",
            key,
            lambda: self._client.presigned_get_object(self._bucket, key, expires=expires),
        )


def _presign_expiry(expires_seconds: int) -> timedelta:
    if not 1 <= expires_seconds <= MAX_PRESIGN_SECONDS:
        raise StorageError(
            f"A presigned URL must expire within 1 to {MAX_PRESIGN_SECONDS} seconds."
        )
    return timedelta(seconds=expires_seconds)


def _chunks(stream: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    with stream:
        while chunk := stream.read(chunk_size):
            yield chunk
