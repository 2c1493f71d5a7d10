"""Shared pieces of the DICOMweb routers: the caller, path parameters, URLs, JSON responses."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session

from imaging_hub.dicom.uids import UID_PATTERN
from imaging_hub.worklist.access.policy import Permission, authorize
from imaging_hub.worklist.db.models import User
from imaging_hub.worklist.dicomweb.search import InstanceRef, find_instances
from imaging_hub.worklist.http.deps import (
    AuditDep,
    Auditor,
    HubState,
    SessionDep,
    authenticated_principal,
)
from imaging_hub.worklist.http.permissions import require

PREFIX = "/dicomweb"
DICOM_JSON = "application/dicom+json"

Uid = Annotated[str, Path(max_length=64, pattern=UID_PATTERN.pattern)]


class NeedsWorker(Exception):
    """An answer being made on the event loop would write or do long work: it is made again
    in a worker thread (see :mod:`imaging_hub.worklist.dicomweb.fast`)."""


@dataclass
class Caller:
    """The authenticated DICOMweb caller with the request's database session and audit trail.

    *inline*: the answer is being made on the event loop, where nothing may write or take
    long; what would raises :class:`NeedsWorker` first, before any effect.
    """

    user: User
    session: Session
    auditor: Auditor
    inline: bool = False

    def audit(self, action: str, *, study_uid: str = "") -> None:
        """Record a read of patient data (once per session, action and study per window)."""
        if self.inline and not self.auditor.access_recorded_recently(action, study_uid=study_uid):
            raise NeedsWorker("The access is to be recorded: a database write.")
        if self.auditor.access(action, study_uid=study_uid, object_type="dicomweb") is not None:
            self.session.commit()

    def instances(
        self,
        action: str,
        *,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> list[InstanceRef]:
        """The instances in scope (NotFound otherwise), with the access audited."""
        refs = find_instances(
            self.session,
            user=self.user,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=sop_uid,
        )
        self.audit(action, study_uid=study_uid)
        return refs


# No I/O in these two: async, so FastAPI does not hop to the thread pool for them.
async def _reader(
    user: Annotated[User, require(Permission.dicomweb_read)], session: SessionDep, auditor: AuditDep
) -> Caller:
    return Caller(user, session, auditor)


async def _storer(
    user: Annotated[User, require(Permission.dicomweb_store)],
    session: SessionDep,
    auditor: AuditDep,
) -> Caller:
    return Caller(user, session, auditor)


Reader = Annotated[Caller, Depends(_reader)]
Storer = Annotated[Caller, Depends(_storer)]


@contextmanager
def open_caller(
    request: Request,
    state: HubState,
    credentials: HTTPAuthorizationCredentials | None,
    permission: Permission,
    *,
    inline: bool = False,
) -> Iterator[Caller]:
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
        auditor = Auditor(session=session, request=request, batcher=state.access_batcher)
        yield Caller(principal, session, auditor, inline=inline)
    finally:
        session.close()


def base_url(request: Request) -> str:
    """The DICOMweb root URL as the client reached it (used in RetrieveURL, BulkDataURI)."""
    return str(request.base_url).rstrip("/") + PREFIX


def dicom_json(content: Any, status_code: int = 200) -> Response:
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, status_code=status_code, media_type=DICOM_JSON)
