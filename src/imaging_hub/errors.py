"""The small error hierarchy of imaging-hub.

Each edge (DIMSE handlers, HTTP routers, the CLI) translates these into its own answer in one place.
Messages are whole sentences and never contain patient data.

Every error carries a stable machine-readable ``code`` (lower snake case). The hub puts it in the
``code`` member of its problem+json answers; the browser app translates by code and the gateways
decide "retry" or "park" by code, never by message text. A class gives the default code; a raise
site may name a more precise one (``Conflict("...", code="uid_conflict")``). Codes are part of the
external contract: add new ones, never rename one (docs/errors.md lists them).
"""


class ImagingHubError(Exception):
    """Base class of every error imaging-hub raises on purpose."""

    code: str = "error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidDicomError(ImagingHubError):
    """The bytes are not a DICOM dataset we can accept (unreadable, bad UIDs, ...)."""

    code = "invalid_dicom"


class InvalidUidError(InvalidDicomError):
    """A UID does not follow PS3.5 9.1 (digits and dots, at most 64 characters)."""

    code = "invalid_uid"


class StorageError(ImagingHubError):
    """The object store failed to read or write an object."""

    code = "storage_unavailable"


class ObjectNotFound(StorageError):
    """The object store holds no object under the requested key."""

    code = "object_not_found"


class SpoolError(ImagingHubError):
    """The gateway's spool could not durably store or find an instance."""

    code = "spool_error"


class ForwardError(ImagingHubError):
    """Forwarding an instance to the hub failed."""

    code = "forward_failed"

    def __init__(self, message: str, *, retryable: bool = True, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retryable = retryable


class NotFound(ImagingHubError):
    """The requested record does not exist (or is outside the caller's scope)."""

    code = "not_found"


class Conflict(ImagingHubError):
    """The request conflicts with the current state (invalid transition, UID clash, ...)."""

    code = "conflict"


class Forbidden(ImagingHubError):
    """The caller is authenticated but not allowed to do this."""

    code = "forbidden"


class ClaimConflict(Conflict):
    """The study is already held by another radiologist, or not claimable in its state."""

    code = "claim_conflict"


class InvalidRequest(ImagingHubError):
    """The request is malformed: bad query parameters, bad multipart body, bad header values."""

    code = "invalid_request"


class NotAcceptable(ImagingHubError):
    """None of the representations the client accepts can be produced (HTTP 406)."""

    code = "not_acceptable"


class UnsupportedMediaType(ImagingHubError):
    """The request body has a media type this endpoint does not take (HTTP 415)."""

    code = "unsupported_media_type"


class PayloadTooLarge(ImagingHubError):
    """The request body is larger than the configured limit (HTTP 413)."""

    code = "payload_too_large"


class RetryLater(Conflict):
    """A transient conflict (e.g. a concurrent registration of the same instance): try again."""

    code = "retry_later"


#: Codes after which a gateway tries again later; every other 4xx code is final (parked).
RETRYABLE_CODES = frozenset(
    {"retry_later", "storage_unavailable", "too_many_attempts", "checksum_mismatch"}
)
