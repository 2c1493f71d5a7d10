"""Shared pieces of the DICOMweb routers: the reader (:class:`DicomwebReader`, built per
request), path parameters, URLs, JSON responses."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials

from imaging_hub.dicom.uids import UID_PATTERN
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.access.policy import Permission, authorize
from imaging_hub.worklist.db.models import User
from imaging_hub.worklist.dicomweb.reader import DicomwebReader, NeedsWorker
from imaging_hub.worklist.http.deps import (
    CallerDep,
    HubState,
    SessionDep,
    StateDep,
    authenticated_principal,
    client_ip,
)
from imaging_hub.worklist.http.permissions import require

__all__ = ["NeedsWorker", "Reader", "base_url", "dicom_json", "open_caller"]

PREFIX = "/dicomweb"
DICOM_JSON = "application/dicom+json"

Uid = Annotated[str, Path(max_length=64, pattern=UID_PATTERN.pattern)]

# What each kind of DICOMweb resource answers on success, for the OpenAPI document (errors are
# problem+json, declared for every route by the app). Clients generate code from these.
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_DICOM_JSON_ARRAY = {"schema": {"type": "array", "items": {"type": "object"}}}
METADATA_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The instances' attributes as DICOM JSON (PS3.18 F.2); bulk data by URI.",
        "content": {DICOM_JSON: _DICOM_JSON_ARRAY},
    }
}
INSTANCES_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": 'The instances, one part each: multipart/related; type="application/dicom"'
        " (PS3.18 8.7.3.5), in the transfer syntax the Accept header asks for.",
        "content": {"multipart/related": _BINARY},
    }
}
FRAMES_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The frames, one part each: multipart/related with the frames' media type "
        "(application/octet-stream native, or as stored: image/jls, image/jp2, image/jpeg, ...).",
        "content": {"multipart/related": _BINARY},
    }
}
RENDERED_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The rendered image (PS3.18 8.3.5): image/jpeg (default) or image/png; a "
        "multipart/related Accept gets every image as one part.",
        "content": {"image/jpeg": _BINARY, "image/png": _BINARY, "multipart/related": _BINARY},
    }
}
STOW_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Every instance stored: the Store Instances Response Module (PS3.18 "
        "10.5.3) as DICOM JSON.",
        "content": {DICOM_JSON: {"schema": {"type": "object"}}},
    },
    202: {
        "description": "Some instances stored, some refused (FailedSOPSequence with reasons).",
        "content": {DICOM_JSON: {"schema": {"type": "object"}}},
    },
    409: {
        "description": "No instance stored: the response lists each refused instance with its "
        "reason (FailedSOPSequence), as PS3.18 10.5.3 requires; other refusals are "
        "problem+json.",
        "content": {
            DICOM_JSON: {"schema": {"type": "object"}},
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}},
        },
    },
}


# No I/O here: async, so FastAPI does not hop to the thread pool for it.
async def _reader(
    user: Annotated[User, require(Permission.dicomweb_read)],
    caller: CallerDep,
    session: SessionDep,
    state: StateDep,
) -> DicomwebReader:
    return DicomwebReader(user, caller, session, state.access_batcher)


Reader = Annotated[DicomwebReader, Depends(_reader)]


@contextmanager
def open_caller(
    request: Request,
    state: HubState,
    credentials: HTTPAuthorizationCredentials | None,
    permission: Permission,
    *,
    inline: bool = False,
) -> Iterator[DicomwebReader]:
    """The caller as :data:`Reader` builds it, without FastAPI's dependency solving (for the
    lean routes of :mod:`imaging_hub.worklist.dicomweb.fast`): a database session (closed at
    the end), the credentials checked by :func:`authenticated_principal` on every request,
    then *permission* (401 / 403 exactly as ``require``). Blocking: run it in a worker thread,
    or with *inline* (bearer credentials only: a browser session may be extended, a write)
    on the event loop, on ``state.inline_sessions``.
    """
    if inline and (state.inline_sessions is None or credentials is None):
        raise NeedsWorker("Only bearer requests on a local database are answered inline.")
    session = state.inline_sessions() if inline and state.inline_sessions else state.sessions()
    try:
        principal = authorize(
            authenticated_principal(request, session, state, credentials), permission
        )
        assert isinstance(principal, User), "no gateway permission is a DICOMweb permission"
        caller = Caller(
            principal,
            source_ip=client_ip(request),
            session_key=str(getattr(request.state, "session_key", client_ip(request))),
        )
        yield DicomwebReader(principal, caller, session, state.access_batcher, inline=inline)
    finally:
        session.close()


def base_url(request: Request) -> str:
    """The DICOMweb root URL as the client reached it (used in RetrieveURL, BulkDataURI)."""
    return str(request.base_url).rstrip("/") + PREFIX


def dicom_json(content: Any, status_code: int = 200) -> Response:
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, status_code=status_code, media_type=DICOM_JSON)
