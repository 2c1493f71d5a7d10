"""A consultant forwards a consultation further up the chain (city -> province), on SQLite and
PostgreSQL; the answer from above returns the study to the asking radiologist."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging_hub.errors import Conflict, Forbidden, NotFound
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.db.models import ConsultationStatus, Notification, StudyEvent, StudyStatus
from imaging_hub.worklist.reading import assignment as a
from imaging_hub.worklist.reading import consultations as c
from imaging_hub.worklist.reading.queries import WorklistFilter, list_worklist
from tests.worklist_support import add_study, snapshot, user

LEASE = a.LeasePolicy(lease=timedelta(minutes=10))
T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def test_city_forwards_to_province_and_the_answer_returns_to_the_asker(db: Session) -> None:
    study = add_study(db, completed_at=T0)
    uid = study.study_instance_uid
    rad1, city, province = user(db, "rad1"), user(db, "consult-city"), user(db, "consult1")
    a.claim(session=db, caller=Caller(rad1), study_instance_uid=uid, lease=LEASE, now=T0)
    asked = c.escalate(
        session=db,
        caller=Caller(rad1),
        study_instance_uid=uid,
        institution_code="city",
        question="纵隔增宽？ Widened mediastinum?",
        now=T0 + timedelta(minutes=1),
    )
    t2 = T0 + timedelta(minutes=5)
    # Bad forwards change nothing.
    before = snapshot(db)
    bad = [
        (city, "city", "x", Conflict, "own chain"),
        (city, "hub", "x", Conflict, "city or provincial"),
        (province, "province", "x", NotFound, "your institution"),
        (rad1, "province", "x", Forbidden, "Only consultants"),
        (city, "province", "   ", Conflict, "note"),
        (city, "nowhere", "x", NotFound, "institution"),
    ]
    for who, target, note, error, match in bad:
        with pytest.raises(error, match=match):
            c.forward(
                session=db,
                caller=Caller(who),
                consultation_id=asked.id,
                institution_code=target,
                note=note,
                now=t2,
            )
    assert snapshot(db) == before
    onward = c.forward(
        session=db,
        caller=Caller(city),
        consultation_id=asked.id,
        institution_code="province",
        note="需要省级胸外科意见 Needs the provincial thoracic team.",
        now=t2,
    )
    db.refresh(asked)
    assert asked.status == ConsultationStatus.forwarded
    assert asked.consultant_id == city.id and "thoracic" in asked.opinion
    assert onward.status == ConsultationStatus.open
    assert (onward.requested_by_id, onward.question) == (rad1.id, asked.question)
    db.refresh(study)
    assert study.status == StudyStatus.escalated
    # The province now has it in its worklist; the city no longer (its part is done).
    seen = list_worklist(db, WorklistFilter(), user=province, now=t2)
    assert [i.study_instance_uid for i in seen] == [uid]
    assert list_worklist(db, WorklistFilter(), user=city, now=t2) == []
    with pytest.raises(Conflict, match="forwarded"):
        c.forward(
            session=db,
            caller=Caller(city),
            consultation_id=asked.id,
            institution_code="province",
            note="again",
            now=t2,
        )
    notified = db.scalars(
        select(Notification.user_id).where(Notification.kind == "consultation_forwarded")
    ).all()
    assert list(notified) == [rad1.id]
    t3 = t2 + timedelta(minutes=20)
    c.give_opinion(
        session=db,
        caller=Caller(province),
        consultation_id=onward.id,
        opinion="考虑胸腺瘤 Thymoma likely.",
        lease=LEASE,
        now=t3,
    )
    db.refresh(study)
    assert (study.status, study.assigned_to_id) == (StudyStatus.in_progress, rad1.id)
    kinds = db.scalars(
        select(StudyEvent.kind).where(StudyEvent.study_id == study.id).order_by(StudyEvent.id)
    ).all()
    assert list(kinds) == ["complete", "claimed", "escalated", "consultation_forwarded", "opinion"]
