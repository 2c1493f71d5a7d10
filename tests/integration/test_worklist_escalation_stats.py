"""Escalation round trip, registration conflicts and statistics, on SQLite and PostgreSQL."""

import hashlib
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from imaging_hub.errors import ClaimConflict, Conflict, Forbidden, NotFound
from imaging_hub.storage.filesystem import FilesystemStore
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.audit.trail import AccessBatcher
from imaging_hub.worklist.db.models import (
    ConsultationStatus,
    Instance,
    Order,
    Priority,
    Study,
    StudyStatus,
    UidConflict,
)
from imaging_hub.worklist.reading import assignment as a
from imaging_hub.worklist.reading import consultations as c
from imaging_hub.worklist.reading.queries import WorklistFilter, list_worklist
from imaging_hub.worklist.stats import stats
from imaging_hub.worklist.studies.queries import list_conflicts, open_study
from imaging_hub.worklist.studies.registration import complete_study, register_instance
from tests.conftest import SAMPLES
from tests.worklist_support import SLA, add_study, institution, snapshot, user

LEASE = a.LeasePolicy(lease=timedelta(minutes=10))
T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
CR = SAMPLES / "by-modality" / "CR" / "RG1_J2KI.dcm"


def test_escalation_round_trip(db: Session) -> None:
    study = add_study(db, completed_at=T0)
    uid = study.study_instance_uid
    rad1, consult1, city = user(db, "rad1"), user(db, "consult1"), user(db, "consult-city")
    a.claim(session=db, caller=Caller(rad1), study_instance_uid=uid, lease=LEASE, now=T0)
    t1 = T0 + timedelta(minutes=2)
    consultation = c.escalate(
        session=db,
        caller=Caller(rad1),
        study_instance_uid=uid,
        institution_code="province",
        question="右下肺结节？ Nodule in the right lower lobe?",
        now=t1,
    )
    db.refresh(study)
    assert (study.status, study.assigned_to_id, study.lease_expires_at) == (
        StudyStatus.escalated,
        rad1.id,
        None,
    )
    # The provincial consultant sees it in the worklist; the city consultant does not.
    seen = list_worklist(db, WorklistFilter(), user=consult1, now=t1)
    assert [i.study_instance_uid for i in seen] == [uid]
    assert list_worklist(db, WorklistFilter(), user=city, now=t1) == []
    # No lease runs while escalated: the sweep long after leaves it alone.
    assert a.expire_leases(session=db, now=t1 + timedelta(hours=3)) == []
    # Wrong consultant (other institution) sees nothing; empty opinion is refused.
    before = snapshot(db)
    with pytest.raises(NotFound):
        c.give_opinion(
            session=db,
            caller=Caller(city),
            consultation_id=consultation.id,
            opinion="x",
            lease=LEASE,
        )
    with pytest.raises(Conflict):
        c.give_opinion(
            session=db,
            caller=Caller(consult1),
            consultation_id=consultation.id,
            opinion="  ",
            lease=LEASE,
        )
    with pytest.raises(Forbidden):
        c.give_opinion(
            session=db,
            caller=Caller(rad1),
            consultation_id=consultation.id,
            opinion="x",
            lease=LEASE,
        )
    assert snapshot(db) == before
    t2 = T0 + timedelta(minutes=20)
    answered = c.give_opinion(
        session=db,
        caller=Caller(consult1),
        consultation_id=consultation.id,
        opinion="良性钙化结节。 Benign calcified granuloma.",
        lease=LEASE,
        now=t2,
    )
    assert answered.status == ConsultationStatus.answered
    assert answered.consultant_id == consult1.id
    with pytest.raises(Conflict, match="answered"):
        c.give_opinion(
            session=db,
            caller=Caller(consult1),
            consultation_id=consultation.id,
            opinion="again",
            lease=LEASE,
        )
    db.refresh(study)
    assert (study.status, study.assigned_to_id) == (StudyStatus.in_progress, rad1.id)
    assert study.lease_expires_at == t2 + LEASE.lease
    assert list_worklist(db, WorklistFilter(), user=consult1, now=t2) == []
    # The hub radiologist finalises.
    a.record_signed(
        session=db, radiologist=rad1, study_instance_uid=uid, now=t2 + timedelta(minutes=5)
    )
    detail = open_study(db, Caller(consult1), uid, batcher=AccessBatcher(), now=t2)
    assert [e.kind for e in detail.timeline] == [
        "complete",
        "claimed",
        "escalated",
        "opinion",
        "signed",
    ]
    escalated = detail.timeline[2]
    assert escalated.actor == "rad1"
    assert escalated.detail["to_institution"] == "province"
    assert escalated.detail["question"].startswith("右下肺结节")
    assert detail.timeline[3].actor == "consult1"
    assert detail.timeline[3].detail["opinion"].startswith("良性")
    assert [x.status for x in detail.consultations] == [ConsultationStatus.closed]
    # The city consultant was never asked: the study is not theirs to see.
    with pytest.raises(NotFound):
        open_study(db, Caller(city), uid, batcher=AccessBatcher())


def test_escalation_rules(db: Session) -> None:
    study = add_study(db)
    uid = study.study_instance_uid
    rad1, rad2 = user(db, "rad1"), user(db, "rad2")
    before = snapshot(db)
    with pytest.raises(ClaimConflict):  # not claimed
        c.escalate(
            session=db,
            caller=Caller(rad1),
            study_instance_uid=uid,
            institution_code="city",
            question="q",
        )
    a.claim(session=db, caller=Caller(rad1), study_instance_uid=uid, lease=LEASE)
    before = snapshot(db)
    for code, error in (
        ("clinic-b", Conflict),  # not a city or province
        ("nowhere", NotFound),
    ):
        with pytest.raises(error):
            c.escalate(
                session=db,
                caller=Caller(rad1),
                study_instance_uid=uid,
                institution_code=code,
                question="q",
            )
    with pytest.raises(ClaimConflict):  # held by someone else
        c.escalate(
            session=db,
            caller=Caller(rad2),
            study_instance_uid=uid,
            institution_code="city",
            question="q",
        )
    with pytest.raises(Conflict):
        c.escalate(
            session=db,
            caller=Caller(rad1),
            study_instance_uid=uid,
            institution_code="city",
            question=" ",
        )
    assert snapshot(db) == before
    consultation = c.escalate(
        session=db,
        caller=Caller(rad1),
        study_instance_uid=uid,
        institution_code="city",
        question="q",
    )
    with pytest.raises(ClaimConflict):  # escalated: cannot be claimed or escalated again
        a.claim(session=db, caller=Caller(rad2), study_instance_uid=uid, lease=LEASE)
    withdrawn = c.withdraw(
        session=db, caller=Caller(rad1), consultation_id=consultation.id, lease=LEASE
    )
    assert withdrawn.status == ConsultationStatus.withdrawn
    db.refresh(study)
    assert (study.status, study.assigned_to_id) == (StudyStatus.in_progress, rad1.id)
    with pytest.raises(Conflict, match="withdrawn"):
        c.withdraw(session=db, caller=Caller(rad1), consultation_id=consultation.id, lease=LEASE)


def _instance(uid: str, sop: str, series: str, accession: str = "") -> bytes:
    ds = pydicom.dcmread(CR)
    ds.StudyInstanceUID = uid
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = sop
    ds.AccessionNumber = accession
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _register(db: Session, store: FilesystemStore, clinic: str, data: bytes) -> bool:
    stored = register_instance(
        db,
        store=store,
        clinic=institution(db, clinic),
        body=io.BytesIO(data),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    return stored.created


def test_registration_idempotent_late_instances_and_conflicts(db: Session, tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "objects")
    study_uid, series_uid = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(3)]
    db.add(
        Order(
            clinic_id=institution(db, "clinic-a").id,
            accession_number="ACC-7",
            patient_id="P-7",
            modality="CR",
            scheduled_at=T0,
            study_instance_uid=generate_uid(),
            priority=Priority.stat,
        )
    )
    db.commit()
    first = _instance(study_uid, sops[0], series_uid, "ACC-7")
    assert _register(db, store, "clinic-a", first) is True
    assert _register(db, store, "clinic-a", first) is False  # idempotent re-send
    assert _register(db, store, "clinic-a", _instance(study_uid, sops[1], series_uid, "ACC-7"))
    assert (
        complete_study(
            db,
            clinic=institution(db, "clinic-a"),
            study_instance_uid=study_uid,
            sop_instance_uids=sops[:2],
            sla=SLA,
        )
        == []
    )
    study = db.scalar(select(Study).where(Study.study_instance_uid == study_uid))
    assert study is not None
    # The order's priority applies: STAT, due 30 minutes after completion.
    assert study.priority == Priority.stat
    assert study.completed_at is not None
    assert study.due_at == study.completed_at + timedelta(minutes=30)
    # A late instance after completion merges into the same study, with a timeline note.
    rad1 = user(db, "rad1")
    a.claim(session=db, caller=Caller(rad1), study_instance_uid=study_uid, lease=LEASE)
    assert _register(db, store, "clinic-a", _instance(study_uid, sops[2], series_uid, "ACC-7"))
    db.refresh(study)
    assert (study.num_series, study.num_instances, study.status) == (
        1,
        3,
        StudyStatus.in_progress,
    )
    # The same StudyInstanceUID from another clinic: recorded, refused, never merged.
    before = snapshot(db)
    with pytest.raises(Conflict, match="another clinic"):
        _register(db, store, "clinic-b", _instance(study_uid, generate_uid(), generate_uid()))
    assert snapshot(db) == before
    count = db.scalar(select(func.count(Instance.id)))
    assert count == 3
    conflicts = list_conflicts(db, Caller(user(db, "admin")))
    assert [(x.study_instance_uid, x.existing_clinic, x.incoming_clinic) for x in conflicts] == [
        (study_uid, "clinic-a", "clinic-b")
    ]
    assert db.scalar(select(func.count(UidConflict.id))) == 1
    detail = open_study(db, Caller(rad1), study_uid, batcher=AccessBatcher())
    assert [e.kind for e in detail.timeline] == ["received", "complete", "claimed", "late_instance"]
    assert [(s.series_instance_uid, s.num_instances) for s in detail.series] == [(series_uid, 3)]


def test_statistics(db: Session) -> None:
    tz = ZoneInfo("Asia/Shanghai")
    rad1, rad2 = user(db, "rad1"), user(db, "rad2")
    # 23:30 local on Nov 21 is 15:30 UTC: it counts for the local day.
    day1 = datetime(2026, 11, 21, 15, 30, tzinfo=UTC)
    day2 = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    plan = [
        # (clinic, priority, completed, minutes to sign or None, radiologist)
        ("clinic-a", Priority.stat, day1, 10, rad1),
        ("clinic-a", Priority.stat, day2, 20, rad2),
        ("clinic-a", Priority.stat, day2, 40, rad1),  # late: STAT SLA is 30 minutes
        ("clinic-b", Priority.routine, day2, 60, rad2),
        ("clinic-b", Priority.routine, day2, None, None),  # still unread, not yet due
        ("clinic-b", Priority.urgent, day2 - timedelta(hours=5), None, None),  # open, overdue
    ]
    for clinic, priority, completed, minutes, rad in plan:
        study = add_study(db, clinic=clinic, priority=priority, completed_at=completed)
        if minutes is not None and rad is not None:
            a.claim(
                session=db,
                caller=Caller(rad),
                study_instance_uid=study.study_instance_uid,
                lease=a.LeasePolicy(lease=timedelta(hours=2)),
                now=completed + timedelta(minutes=1),
            )
            a.record_signed(
                session=db,
                radiologist=rad,
                study_instance_uid=study.study_instance_uid,
                now=completed + timedelta(minutes=minutes),
            )
    window = stats.Window.of(start=date(2026, 11, 21), end=date(2026, 11, 22), tz=tz)
    now = day2 + timedelta(hours=1)
    vol = [(r.day.isoformat(), r.clinic, r.studies) for r in stats.volume(db, window=window)]
    assert vol == [
        ("2026-11-21", "clinic-a", 1),  # 23:29 local (received a minute before completion)
        ("2026-11-22", "clinic-a", 2),
        ("2026-11-22", "clinic-b", 3),
    ]
    tat = {r.priority: r for r in stats.turnaround(db, window=window)}
    assert (tat[Priority.stat].count, tat[Priority.stat].p50_minutes) == (3, 20.0)
    assert tat[Priority.stat].p90_minutes == pytest.approx(36.0)
    assert (tat[Priority.routine].count, tat[Priority.routine].p50_minutes) == (1, 60.0)
    assert (tat[Priority.urgent].count, tat[Priority.urgent].p50_minutes) == (0, None)
    sla = {r.priority: r for r in stats.sla_compliance(db, window=window, now=now)}
    assert (sla[Priority.stat].met, sla[Priority.stat].missed) == (2, 1)
    assert sla[Priority.stat].compliance == pytest.approx(0.6667)
    assert (sla[Priority.routine].met, sla[Priority.routine].pending) == (1, 1)
    assert (sla[Priority.urgent].missed, sla[Priority.urgent].compliance) == (1, 0.0)
    work = {r.username: r for r in stats.workload(db, window=window, now=now)}
    assert (work["rad1"].claimed, work["rad1"].signed) == (2, 2)
    assert (work["rad2"].claimed, work["rad2"].signed) == (2, 2)
    with pytest.raises(stats.InvalidWindow):
        stats.Window.of(start=date(2026, 11, 22), end=date(2026, 11, 21), tz=tz)
    with pytest.raises(stats.InvalidWindow):
        stats.Window.of(start=date(2024, 1, 1), end=date(2026, 1, 1), tz=tz)


def test_the_modalitys_priority_applies_without_an_order(db: Session, tmp_path: Path) -> None:
    """Requested Procedure Priority in the header (what the gateway forwards STAT-first by)
    sets the hub study's priority and so its due time; a more urgent later instance raises it
    while the study is still arriving."""
    store = FilesystemStore(tmp_path / "objects")
    stat_uid, urgent_uid, series = generate_uid(), generate_uid(), generate_uid()

    def with_priority(study: str, value: str) -> bytes:
        ds = pydicom.dcmread(io.BytesIO(_instance(study, generate_uid(), series)))
        ds.RequestedProcedurePriority = value
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()

    stat_data = with_priority(stat_uid, "STAT")
    assert _register(db, store, "clinic-a", stat_data)
    sop = str(pydicom.dcmread(io.BytesIO(stat_data)).SOPInstanceUID)
    clinic = institution(db, "clinic-a")
    assert (
        complete_study(
            db, clinic=clinic, study_instance_uid=stat_uid, sop_instance_uids=[sop], sla=SLA
        )
        == []
    )
    study = db.scalar(select(Study).where(Study.study_instance_uid == stat_uid))
    assert study is not None and study.priority == Priority.stat
    assert study.completed_at is not None
    assert study.due_at == study.completed_at + timedelta(minutes=30)

    routine = _instance(urgent_uid, generate_uid(), generate_uid())
    assert _register(db, store, "clinic-a", routine)
    other = db.scalar(select(Study).where(Study.study_instance_uid == urgent_uid))
    assert other is not None and other.priority == Priority.routine
    high = pydicom.dcmread(io.BytesIO(_instance(urgent_uid, generate_uid(), generate_uid())))
    high.RequestedProcedurePriority = "HIGH"
    out = io.BytesIO()
    high.save_as(out, enforce_file_format=True)
    assert _register(db, store, "clinic-a", out.getvalue())
    db.refresh(other)
    assert (other.priority, other.priority_rank) == (Priority.urgent, 1)


def test_parallel_first_instances_of_a_new_study_both_register(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """A gateway uploads a new study's instances in parallel: both registrations find no
    study and both create one; the loser of that race runs again and joins the winner's study
    (it used to answer 409 and make the gateway wait for a retry)."""
    puts: list[str] = []

    class CountingStore(FilesystemStore):
        def put_stream(self, key: str, stream: BinaryIO, size: int) -> None:
            puts.append(key)
            super().put_stream(key, stream, size)

    store = CountingStore(tmp_path / "objects")
    study_uid = generate_uid()
    datas = [_instance(study_uid, generate_uid(), generate_uid()) for _ in range(2)]
    barrier = threading.Barrier(2)
    waited: set[int] = set()

    def together() -> datetime:
        # Called right before the study row is created: both threads get there, then go on.
        if threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            barrier.wait(timeout=20)
        return datetime.now(UTC)

    def register(data: bytes) -> bool:
        with sessions() as session:
            return register_instance(
                session,
                store=store,
                clinic=institution(session, "clinic-a"),
                body=io.BytesIO(data),
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                now=together,
            ).created

    with ThreadPoolExecutor(2) as pool:
        created = list(pool.map(register, datas))
    assert created == [True, True]
    # The loser ran again without storing its object a second time.
    assert len(puts) == 2 and len(set(puts)) == 2
    with sessions() as session:
        study = session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
        assert study is not None
        assert (study.num_series, study.num_instances) == (2, 2)
        assert (
            session.scalar(
                select(func.count()).select_from(Study).where(Study.study_instance_uid == study_uid)
            )
            == 1
        )
