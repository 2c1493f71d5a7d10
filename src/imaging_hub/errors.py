"""The small error hierarchy of imaging-hub.

Each edge (DIMSE handlers, HTTP routers, the CLI) translates these into its own answer in one place.
Messages are whole sentences and never contain patient data.
"""


class ImagingHubError(Exception):
    """Base class of every error imaging-hub raises on purpose."""


class InvalidDicomError(ImagingHubError):
    """The bytes are not a DICOM dataset we can accept (unreadable, bad UIDs, ...)."""


class InvalidUidError(InvalidDicomError):
    """A UID does not follow PS3.5 9.1 (digits and dots, at most 64 characters)."""


class StorageError(ImagingHubError):
    """The object store failed to read or write an object."""


class ObjectNotFound(StorageError):
    """The object store holds no object under the requested key."""


class SpoolError(ImagingHubError):
    """The gateway's spool could not durably store or find an instance."""


class ForwardError(ImagingHubError):
    """Forwarding an instance to the hub failed."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class NotFound(ImagingHubError):
    """The requested record does not exist (or is outside the caller's scope)."""


class Conflict(ImagingHubError):
    """The request conflicts with the current state (invalid transition, UID clash, ...)."""


class Forbidden(ImagingHubError):
    """The caller is authenticated but not allowed to do this."""


class ClaimConflict(Conflict):
    """The study is already held by another radiologist, or not claimable in its state."""


class InvalidRequest(ImagingHubError):
    """The request is malformed: bad query parameters, bad multipart body, bad header values."""


class NotAcceptable(ImagingHubError):
    """None of the representations the client accepts can be produced (HTTP 406)."""


class UnsupportedMediaType(ImagingHubError):
    """The request body has a media type this endpoint does not take (HTTP 415)."""


class PayloadTooLarge(ImagingHubError):
    """The request body is larger than the configured limit (HTTP 413)."""
