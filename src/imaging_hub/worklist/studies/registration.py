"""Registration of instances arriving from gateways (and later STOW-RS).

Idempotent by SOP Instance UID: a re-sent instance overwrites the same object key and updates the
same row. A StudyInstanceUID already known from another clinic is a conflict: it is recorded and
refused, never merged.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imaging_hub.dicom.attributes import InstanceInfo, parse_instance
from imaging_hub.dicom.vocabulary import join_values
from imaging_hub.errors import Conflict, Forbidden, InvalidDicomError, NotFound, RetryLater
from imaging_hub.storage import ObjectStore, instance_key
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.access.policy import Permission
from imaging_hub.worklist.db.models import (
    Gateway,
    Instance,
    Institution,
    Order,
    Patient,
    Priority,
    Series,
    Study,
    StudyEvent,
    StudyStatus,
    UidConflict,
)

log = logging.getLogger(__name__)

PRIORITY_RANK = {Priority.stat: 0, Priority.urgent: 1, Priority.routine: 2}
# The ranks of dicom.attributes.requested_priority (the modality's header) are the same.
PRIORITY_OF_RANK = {rank: priority for priority, rank in PRIORITY_RANK.items()}
# Only the DICOM header is parsed at registration; this many leading bytes always hold it for the
# images we accept (pixel data comes last). Larger headers are read whole.
HEADER_PROBE_BYTES = 1 << 20


@dataclass(frozen=True)
class SlaPolicy:
    """Reading deadlines by priority (defaults: 30 min / 2 h / 24 h)."""

    stat: timedelta = timedelta(minutes=30)
    urgent: timedelta = timedelta(hours=2)
    routine: timedelta = timedelta(hours=24)

    def due(self, priority: Priority, start: datetime) -> datetime:
        delay: timedelta = getattr(self, priority.value)
        return start + delay


@dataclass(frozen=True)
class LeasePolicy:
    """How long a claim lives without a heartbeat (``claim_lease_seconds``)."""

    lease: timedelta = timedelta(minutes=10)


@dataclass(frozen=True)
class StoredInstance:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    object_key: str
    size: int
    sha256: str
    created: bool  # False when the same instance was already registered (idempotent re-send)


class ChecksumMismatch(InvalidDicomError):
    """The bytes received do not have the SHA-256 the sender declared."""

    code = "checksum_mismatch"


class StudyMismatch(InvalidDicomError):
    """The instance belongs to another study than the one the request names (STOW-RS)."""

    code = "study_mismatch"


def _read_info(body: BinaryIO, size: int) -> InstanceInfo:
    body.seek(0)
    head = body.read(min(size, HEADER_PROBE_BYTES))
    try:
        info = parse_instance(head)
    except InvalidDicomError:
        if size <= HEADER_PROBE_BYTES:
            raise
        body.seek(0)
        info = parse_instance(body.read())
    body.seek(0)
    return info


def _get_or_create_patient(session: Session, clinic: Institution, info: InstanceInfo) -> Patient:
    pid = info.patient_id or f"UNKNOWN-{info.study_instance_uid}"[:64]
    patient = session.scalar(
        select(Patient).where(Patient.clinic_id == clinic.id, Patient.patient_id == pid)
    )
    if patient is None:
        patient = Patient(
            clinic_id=clinic.id,
            patient_id=pid,
            patient_name=info.patient_name,
            patient_birth_date=info.patient_birth_date,
            patient_sex=info.patient_sex,
        )
        session.add(patient)
        session.flush()
    elif info.patient_name and not patient.patient_name:
        patient.patient_name = info.patient_name
    return patient


def _record_conflict(
    session: Session, *, study_uid: str, sop_uid: str, existing: int, incoming: Institution
) -> None:
    session.add(
        UidConflict(
            study_instance_uid=study_uid,
            sop_instance_uid=sop_uid,
            existing_clinic_id=existing,
            incoming_clinic_id=incoming.id,
        )
    )
    session.commit()
    log.warning(
        "UID conflict: study %s arrived from clinic %s but belongs to another clinic",
        study_uid,
        incoming.code,
    )


class _RegisteredConcurrently(Exception):
    """Another request created the same study, series, patient or instance row meanwhile."""


# Attempts of a registration that lost a race to a concurrent one (see register_instance).
REGISTRATION_ATTEMPTS = 3


def register_instance(
    session: Session,
    *,
    store: ObjectStore,
    clinic: Institution,
    body: BinaryIO,
    size: int,
    sha256: str,
    expected_sha256: str | None = None,
    expected_sop_instance_uid: str | None = None,
    expected_study_instance_uid: str | None = None,
    gateway_id: int | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> StoredInstance:
    """Validate, store and register one Part-10 instance for *clinic*; commit the session.

    A gateway uploads the instances of a new study in parallel, so two registrations often
    race to create its study (or patient, or series) row: the loser rolls back and runs again,
    and then finds the row the winner made. Only if that keeps happening does it raise Conflict.
    """
    for attempt in range(REGISTRATION_ATTEMPTS):
        try:
            return _register_once(
                session,
                store=store,
                clinic=clinic,
                body=body,
                size=size,
                sha256=sha256,
                expected_sha256=expected_sha256,
                expected_sop_instance_uid=expected_sop_instance_uid,
                expected_study_instance_uid=expected_study_instance_uid,
                gateway_id=gateway_id,
                now=now,
                # A race is lost after the object was stored; a retry does not store it again.
                object_stored=attempt > 0,
            )
        except _RegisteredConcurrently:
            continue
    raise RetryLater("The instance was registered concurrently; send it again.")


def _register_once(
    session: Session,
    *,
    store: ObjectStore,
    clinic: Institution,
    body: BinaryIO,
    size: int,
    sha256: str,
    expected_sha256: str | None,
    expected_sop_instance_uid: str | None,
    expected_study_instance_uid: str | None,
    gateway_id: int | None,
    now: Callable[[], datetime],
    object_stored: bool,
) -> StoredInstance:
    """One attempt of :func:`register_instance` (*object_stored*: an earlier one stored it).

    Raises InvalidDicomError (unreadable, bad UIDs, checksum mismatch) or Conflict (UID known
    from another clinic). Nothing is stored or changed when it raises.
    """
    if expected_sha256 is not None and expected_sha256.lower() != sha256:
        raise ChecksumMismatch("The SHA-256 of the received bytes does not match the sender's.")
    info = _read_info(body, size)
    if expected_sop_instance_uid is not None and info.sop_instance_uid != expected_sop_instance_uid:
        raise InvalidDicomError("The SOP Instance UID in the data does not match the URL.")
    if (
        expected_study_instance_uid is not None
        and info.study_instance_uid != expected_study_instance_uid
    ):
        raise StudyMismatch("The StudyInstanceUID in the data does not match the URL.")

    study = session.scalar(select(Study).where(Study.study_instance_uid == info.study_instance_uid))
    if study is not None and study.clinic_id != clinic.id:
        _record_conflict(
            session,
            study_uid=info.study_instance_uid,
            sop_uid=info.sop_instance_uid,
            existing=study.clinic_id,
            incoming=clinic,
        )
        raise Conflict(
            "This StudyInstanceUID is already registered for another clinic.", code="uid_conflict"
        )
    existing = session.scalar(
        select(Instance).where(Instance.sop_instance_uid == info.sop_instance_uid)
    )
    if existing is not None:
        existing_study = existing.series.study
        if existing_study.clinic_id != clinic.id:
            _record_conflict(
                session,
                study_uid=info.study_instance_uid,
                sop_uid=info.sop_instance_uid,
                existing=existing_study.clinic_id,
                incoming=clinic,
            )
            raise Conflict(
                "This SOPInstanceUID is already registered for another clinic.", code="uid_conflict"
            )
        if existing_study.study_instance_uid != info.study_instance_uid or (
            existing.series.series_instance_uid != info.series_instance_uid
        ):
            raise Conflict(
                "This SOPInstanceUID is already registered in another study.", code="uid_conflict"
            )

    key = instance_key(
        clinic.code, info.study_instance_uid, info.series_instance_uid, info.sop_instance_uid
    )
    if existing is not None and existing.sha256 == sha256 and store.exists(key):
        return StoredInstance(
            info.study_instance_uid,
            info.series_instance_uid,
            info.sop_instance_uid,
            key,
            size,
            sha256,
            created=False,
        )
    # Object first, then the row: a crash in between leaves an object the next re-send
    # overwrites, never a row that points at nothing.
    if not object_stored:
        body.seek(0)
        store.put_stream(key, body, size)

    at = now()
    try:
        if study is None:
            patient = _get_or_create_patient(session, clinic, info)
            study = Study(
                study_instance_uid=info.study_instance_uid,
                clinic_id=clinic.id,
                patient_pk=patient.id,
                accession_number=info.accession_number,
                study_date=info.study_date,
                study_time=info.study_time,
                study_description=info.study_description,
                study_id=info.study_id,
                referring_physician_name=info.referring_physician_name,
                status=StudyStatus.receiving,
                # The header's priority (Requested Procedure Priority), until an order's applies
                # at completion.
                priority=PRIORITY_OF_RANK[info.priority_rank],
                priority_rank=info.priority_rank,
                received_at=at,
            )
            session.add(study)
            session.flush()
            session.add(
                StudyEvent(study_id=study.id, kind="received", gateway_id=gateway_id, at=at)
            )
        elif study.status == StudyStatus.receiving and info.priority_rank < study.priority_rank:
            study.priority = PRIORITY_OF_RANK[info.priority_rank]
            study.priority_rank = info.priority_rank
        series = session.scalar(
            select(Series).where(Series.series_instance_uid == info.series_instance_uid)
        )
        if series is None:
            series = Series(
                study_id=study.id,
                series_instance_uid=info.series_instance_uid,
                modality=info.modality,
                body_part_examined=info.body_part_examined,
                series_number=info.series_number,
                series_description=info.series_description,
            )
            session.add(series)
            session.flush()
        elif series.study_id != study.id:
            raise Conflict(
                "This SeriesInstanceUID is already registered in another study.",
                code="uid_conflict",
            )
        if existing is None:
            session.add(
                Instance(
                    series_id=series.id,
                    sop_instance_uid=info.sop_instance_uid,
                    sop_class_uid=info.sop_class_uid,
                    transfer_syntax_uid=info.transfer_syntax_uid,
                    instance_number=info.instance_number,
                    rows=info.rows,
                    columns=info.columns,
                    number_of_frames=info.number_of_frames,
                    bits_allocated=info.bits_allocated,
                    object_key=key,
                    size=size,
                    sha256=sha256,
                    received_at=at,
                )
            )
        else:
            existing.transfer_syntax_uid = info.transfer_syntax_uid
            existing.size = size
            existing.sha256 = sha256
            existing.object_key = key
        session.flush()
        _refresh_study_counts(session, study)
        if study.status not in (StudyStatus.receiving, StudyStatus.unread) and existing is None:
            session.add(
                StudyEvent(
                    study_id=study.id,
                    kind="late_instance",
                    gateway_id=gateway_id,
                    at=at,
                    detail={"sop_instance_uid": info.sop_instance_uid},
                )
            )
        session.commit()
    except IntegrityError as exc:
        # A concurrent registration created a row this one also meant to create.
        session.rollback()
        raise _RegisteredConcurrently from exc
    return StoredInstance(
        info.study_instance_uid,
        info.series_instance_uid,
        info.sop_instance_uid,
        key,
        size,
        sha256,
        created=existing is None,
    )


def _refresh_study_counts(session: Session, study: Study) -> None:
    rows = session.execute(
        select(
            Series.id,
            Series.modality,
            Series.body_part_examined,
            func.count(Instance.id),
            func.coalesce(func.sum(Instance.size), 0),
        )
        .outerjoin(Instance, Instance.series_id == Series.id)
        .where(Series.study_id == study.id)
        .group_by(Series.id, Series.modality, Series.body_part_examined)
        .order_by(Series.id)
    ).all()
    modalities: list[str] = []
    body_parts: list[str] = []
    total = 0
    count = 0
    for series_id, modality, body_part, n, size in rows:
        series = session.get(Series, series_id)
        if series is not None:
            series.num_instances = int(n)
        count += int(n)
        total += int(size)
        if modality and modality not in modalities:
            modalities.append(modality)
        if body_part and body_part not in body_parts:
            body_parts.append(body_part)
    study.num_series = len(rows)
    study.num_instances = count
    study.total_bytes = total
    study.modalities = join_values(modalities)
    study.body_part_examined = join_values(body_parts)


def _matching_order(session: Session, study: Study) -> Order | None:
    """The clinic's order for this study: by the pre-assigned StudyInstanceUID (Modality
    Worklist), else by accession number (the one rule of ``orders.matching_order``)."""
    from imaging_hub.worklist.orders.orders import matching_order

    return matching_order(
        session,
        clinic_id=study.clinic_id,
        study_instance_uid=study.study_instance_uid,
        accession_number=study.accession_number,
    )


def complete_study(
    session: Session,
    *,
    clinic: Institution,
    study_instance_uid: str,
    sop_instance_uids: list[str],
    sla: SlaPolicy,
    gateway_id: int | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[str]:
    """Mark a study complete for reading once the hub holds every listed instance.

    Returns the SOP Instance UIDs the hub does not hold (then nothing changes); an empty list
    means the study is complete. Completing an already-complete study is a no-op.
    """
    study = session.scalar(select(Study).where(Study.study_instance_uid == study_instance_uid))
    if study is None or study.clinic_id != clinic.id:
        raise NotFound("No such study for this clinic.")
    held = set(
        session.scalars(
            select(Instance.sop_instance_uid)
            .join(Series, Instance.series_id == Series.id)
            .where(Series.study_id == study.id)
        )
    )
    missing = [uid for uid in sop_instance_uids if uid not in held]
    if missing:
        return missing
    # Counts kept by concurrent registrations of one study can be stale; recount once whole.
    _refresh_study_counts(session, study)
    if study.status == StudyStatus.receiving:
        at = now()
        order = _matching_order(session, study)
        if order is not None and order.priority != study.priority:
            study.priority = order.priority
            study.priority_rank = PRIORITY_RANK[order.priority]
        study.status = StudyStatus.unread
        study.completed_at = at
        study.due_at = sla.due(study.priority, at)
        session.add(
            StudyEvent(
                study_id=study.id,
                kind="complete",
                gateway_id=gateway_id,
                at=at,
                detail={"instances": study.num_instances},
            )
        )
    session.commit()
    return []


# --- what a clinic gateway asks (the ingest API) ---------------------------------------------


def _ingesting_gateway(caller: Caller) -> Gateway:
    caller.require(Permission.gateway_ingest)
    gateway = caller.principal
    if not isinstance(gateway, Gateway):
        raise Forbidden("Only a clinic gateway sends instances this way.")
    return gateway


def ingest_instance(
    session: Session,
    caller: Caller,
    *,
    store: ObjectStore,
    body: BinaryIO,
    size: int,
    sha256: str,
    expected_sha256: str,
    expected_sop_instance_uid: str,
) -> StoredInstance:
    """A gateway's upload of one instance, registered under the gateway's own clinic whatever
    the data claims (:func:`register_instance`); commits."""
    gateway = _ingesting_gateway(caller)
    return register_instance(
        session,
        store=store,
        clinic=gateway.institution,
        body=body,
        size=size,
        sha256=sha256,
        expected_sha256=expected_sha256,
        expected_sop_instance_uid=expected_sop_instance_uid,
        gateway_id=gateway.id,
    )


@dataclass(frozen=True)
class Completion:
    complete: bool
    missing: list[str]


def complete_from_gateway(
    session: Session,
    caller: Caller,
    study_instance_uid: str,
    *,
    sop_instance_uids: list[str],
    sla: SlaPolicy,
) -> Completion:
    """A gateway says a study of its clinic is whole (:func:`complete_study`); commits."""
    gateway = _ingesting_gateway(caller)
    missing = complete_study(
        session,
        clinic=gateway.institution,
        study_instance_uid=study_instance_uid,
        sop_instance_uids=sop_instance_uids,
        sla=sla,
        gateway_id=gateway.id,
    )
    return Completion(complete=not missing, missing=missing)
