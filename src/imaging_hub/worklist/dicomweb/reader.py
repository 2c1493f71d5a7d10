"""A DICOMweb read by one caller (domain, no HTTP): scope through the policy (in
:mod:`~imaging_hub.worklist.dicomweb.search`), and the access record each kind of read writes.

The routers (QIDO-RS, WADO-RS and the lean routes of :mod:`~imaging_hub.worklist.dicomweb.fast`)
build one :class:`DicomwebReader` per request and call one of its reads; they choose nothing
about scope or audit themselves.
"""

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from imaging_hub.dicom.qido import QidoQuery
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import User
from imaging_hub.worklist.dicomweb.search import (
    InstanceRef,
    find_instances,
    search_instances,
    search_series,
    search_studies,
)


class NeedsWorker(Exception):
    """An answer being made on the event loop would write or do long work: it is made again
    in a worker thread (see :mod:`imaging_hub.worklist.dicomweb.fast`)."""


@dataclass
class DicomwebReader:
    """The authenticated DICOMweb caller (its permission already checked) with the request's
    database session and the process's access batcher.

    *inline*: the answer is being made on the event loop, where nothing may write or take
    long; what would raises :class:`NeedsWorker` first, before any effect.
    """

    user: User
    caller: Caller
    session: Session
    batcher: audit.AccessBatcher
    inline: bool = False

    def audit(self, action: str, *, study_uid: str = "") -> None:
        """Record a read of patient data (once per session, action and study per window)."""
        key = (self.caller.session_key, action, study_uid)
        if self.inline and not self.batcher.recorded_recently(key):
            raise NeedsWorker("The access is to be recorded: a database write.")
        event = audit.record_access(
            self.session,
            batcher=self.batcher,
            session_key=self.caller.session_key,
            actor=self.caller.actor,
            action=action,
            study_uid=study_uid,
            source_ip=self.caller.source_ip,
            object_type="dicomweb",
        )
        if event is not None:
            self.session.commit()

    def instances(
        self,
        action: str,
        *,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
    ) -> list[InstanceRef]:
        """The instances in scope (NotFound otherwise), with the access audited as *action*."""
        refs = find_instances(
            self.session,
            user=self.user,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=sop_uid,
        )
        self.audit(action, study_uid=study_uid)
        return refs

    def retrieve(
        self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> list[InstanceRef]:
        """Instances to send whole (WADO-RS retrieve, metadata)."""
        return self.instances(
            audit.STUDY_RETRIEVED, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid
        )

    def pixels(
        self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> list[InstanceRef]:
        """Instances whose frames, bulk data or renderings are sent."""
        return self.instances(
            audit.FRAMES_FETCHED, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid
        )

    def _listed(self, rows: list[Any], study_uid: str | None) -> None:
        if rows:
            self.audit(audit.STUDY_LISTED, study_uid=study_uid or "")

    def search_studies(self, query: QidoQuery) -> list[dict[str, Any]]:
        """QIDO-RS studies in scope; a non-empty answer is a listing of patient data."""
        rows = search_studies(self.session, user=self.user, query=query)
        self._listed(rows, None)
        return rows

    def search_series(self, query: QidoQuery, study_uid: str | None) -> list[dict[str, Any]]:
        """QIDO-RS series in scope (of one study, or of all)."""
        rows = search_series(self.session, user=self.user, query=query, study_uid=study_uid)
        self._listed(rows, study_uid)
        return rows

    def search_instances(
        self, query: QidoQuery, study_uid: str | None, series_uid: str | None
    ) -> list[tuple[dict[str, Any], InstanceRef]]:
        """QIDO-RS instances in scope, with where each is stored."""
        rows = search_instances(
            self.session,
            user=self.user,
            query=query,
            study_uid=study_uid,
            series_uid=series_uid,
        )
        self._listed(rows, study_uid)
        return rows
