"""Claims, leases, priorities and eligibility: the domain functions, on SQLite and PostgreSQL."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging_hub.errors import ClaimConflict, Conflict, Forbidden, NotFound
from imaging_hub.worklist.access import policy
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.access.policy import study_scope
from imaging_hub.worklist.db.models import (
    Institution,
    InstitutionLevel,
    Notification,
    Priority,
    Role,
    Shift,
    Study,
    StudyEvent,
    StudyStatus,
)
from imaging_hub.worklist.reading import assignment as a
from imaging_hub.worklist.reading.queries import (
    WorklistFilter,
    claimed_item,
    list_worklist,
    worklist_item,
)
from tests.worklist_support import (
    SLA,
    add_study,
    add_user,
    institution,
    snapshot,
    user,
)

LEASE = a.LeasePolicy(lease=timedelta(minutes=10))
T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def kinds(db: Session, study: Study) -> list[str]:
    return list(
        db.scalars(
            select(StudyEvent.kind).where(StudyEvent.study_id == study.id).order_by(StudyEvent.id)
        )
    )


def test_stat_beats_routine_and_earliest_due_first(db: Session) -> None:
    routine = add_study(db, priority=Priority.routine, completed_at=T0 - timedelta(hours=5))
    urgent_late = add_study(db, priority=Priority.urgent, completed_at=T0)
    urgent_early = add_study(db, priority=Priority.urgent, completed_at=T0 - timedelta(minutes=9))
    stat = add_study(db, priority=Priority.stat, completed_at=T0)
    rad = user(db, "rad1")
    order = [a.claim_next(session=db, radiologist=rad, lease=LEASE, now=T0) for _ in range(4)]
    assert [s.study_instance_uid for s in order if s] == [
        stat.study_instance_uid,
        urgent_early.study_instance_uid,
        urgent_late.study_instance_uid,
        routine.study_instance_uid,
    ]
    assert a.claim_next(session=db, radiologist=rad, lease=LEASE, now=T0) is None
    claimed = order[0]
    assert claimed is not None
    assert claimed.status == StudyStatus.in_progress
    assert claimed.assigned_to_id == rad.id
    assert claimed.lease_expires_at == T0 + LEASE.lease
    assert kinds(db, claimed) == ["complete", "claimed"]


def test_ineligible_radiologists_never_receive_a_study(db: Session) -> None:
    hub = institution(db, "hub")
    clinic_b = institution(db, "clinic-b")
    ct_only = add_user(db, "ct-only", Role.radiologist, hub, on_duty=True, modalities=["CT"])
    chest_only = add_user(
        db, "chest-only", Role.radiologist, hub, on_duty=True, body_parts=["chest"]
    )
    b_only = add_user(db, "b-only", Role.radiologist, hub, on_duty=True, clinic_ids=[clinic_b.id])
    db.commit()
    cr_chest = add_study(db, modalities=("CR",), body_part="CHEST")
    ct_head = add_study(db, modalities=("CT",), body_part="HEAD", priority=Priority.stat)
    mixed = add_study(db, modalities=("CT", "MR"), body_part="HEAD", priority=Priority.stat)
    ct_b = add_study(db, clinic="clinic-b", modalities=("CT", "SR"), body_part="CHEST")

    got = a.claim_next(session=db, radiologist=ct_only, lease=LEASE, now=T0)
    assert got is not None and got.study_instance_uid == ct_head.study_instance_uid
    # CT+MR needs MR eligibility too; the SR series carries no images and does not count.
    got = a.claim_next(session=db, radiologist=ct_only, lease=LEASE, now=T0)
    assert got is not None and got.study_instance_uid == ct_b.study_instance_uid
    assert a.claim_next(session=db, radiologist=ct_only, lease=LEASE, now=T0) is None

    got = a.claim_next(session=db, radiologist=chest_only, lease=LEASE, now=T0)
    assert got is not None and got.study_instance_uid == cr_chest.study_instance_uid
    assert a.claim_next(session=db, radiologist=chest_only, lease=LEASE, now=T0) is None
    assert a.claim_next(session=db, radiologist=b_only, lease=LEASE, now=T0) is None

    before = snapshot(db)
    with pytest.raises(Forbidden, match="not eligible"):
        a.claim(
            session=db,
            caller=Caller(chest_only),
            study_instance_uid=mixed.study_instance_uid,
            lease=LEASE,
            now=T0,
        )
    assert snapshot(db) == before


def test_off_duty_radiologists_and_other_roles_cannot_claim(db: Session) -> None:
    hub = institution(db, "hub")
    off = add_user(db, "off", Role.radiologist, hub, on_duty=False)
    db.commit()
    study = add_study(db)
    before = snapshot(db)
    for caller in (off, user(db, "admin"), user(db, "consult1"), user(db, "staff-a")):
        with pytest.raises(Forbidden):
            a.claim_next(session=db, radiologist=caller, lease=LEASE, now=T0)
        with pytest.raises(Forbidden):
            a.claim(
                session=db,
                caller=Caller(caller),
                study_instance_uid=study.study_instance_uid,
                lease=LEASE,
                now=T0,
            )
    assert snapshot(db) == before
    # A shift covering now puts the radiologist on duty; outside it, not.
    db.add(
        Shift(user_id=off.id, starts_at=T0 - timedelta(hours=1), ends_at=T0 + timedelta(hours=7))
    )
    db.commit()
    assert a.is_on_duty(db, user=off, now=T0)
    assert not a.is_on_duty(db, user=off, now=T0 + timedelta(hours=8))
    got = a.claim_next(session=db, radiologist=off, lease=LEASE, now=T0)
    assert got is not None and got.assigned_to_id == off.id


def test_lease_expiry_returns_an_abandoned_study_and_heartbeat_keeps_it(db: Session) -> None:
    kept = add_study(db, priority=Priority.stat)
    abandoned = add_study(db, priority=Priority.urgent)
    rad1, rad2 = user(db, "rad1"), user(db, "rad2")
    assert a.claim_next(session=db, radiologist=rad1, lease=LEASE, now=T0) is not None
    assert a.claim_next(session=db, radiologist=rad1, lease=LEASE, now=T0) is not None
    # rad1 keeps reading the STAT one (heartbeats) and walks away from the urgent one.
    for minute in (5, 10, 15):
        a.heartbeat(
            session=db,
            caller=Caller(rad1),
            study_instance_uid=kept.study_instance_uid,
            lease=LEASE,
            now=T0 + timedelta(minutes=minute),
        )
    later = T0 + timedelta(minutes=16)
    # Lazily: before any sweep, the worklist already shows the abandoned study as unread ...
    items = {
        i.study_instance_uid: i
        for i in list_worklist(
            db, WorklistFilter(status=[StudyStatus.unread]), user=rad2, now=later
        )
    }
    assert set(items) == {abandoned.study_instance_uid}
    assert items[abandoned.study_instance_uid].assigned_to is None
    # ... and rad2's next claim takes it (not the kept one), recording the expiry.
    got = a.claim_next(session=db, radiologist=rad2, lease=LEASE, now=later)
    assert got is not None and got.study_instance_uid == abandoned.study_instance_uid
    assert kinds(db, got) == ["complete", "claimed", "lease_expired", "claimed"]
    # The abandoning radiologist's heartbeat is now refused and changes nothing.
    before = snapshot(db)
    with pytest.raises(ClaimConflict, match="another radiologist"):
        a.heartbeat(
            session=db,
            caller=Caller(rad1),
            study_instance_uid=abandoned.study_instance_uid,
            lease=LEASE,
            now=later,
        )
    assert snapshot(db) == before
    db.refresh(kept)
    assert kept.assigned_to_id == rad1.id
    assert kept.lease_expires_at == T0 + timedelta(minutes=25)


def test_sweep_expires_leases_once_with_a_timeline_event(db: Session) -> None:
    study = add_study(db)
    rad1 = user(db, "rad1")
    a.claim_next(session=db, radiologist=rad1, lease=LEASE, now=T0)
    assert a.expire_leases(session=db, now=T0 + timedelta(minutes=9)) == []
    later = T0 + timedelta(minutes=11)
    assert a.expire_leases(session=db, now=later) == [study.study_instance_uid]
    assert a.expire_leases(session=db, now=later) == []
    db.refresh(study)
    assert (study.status, study.assigned_to_id, study.lease_expires_at) == (
        StudyStatus.unread,
        None,
        None,
    )
    assert kinds(db, study) == ["complete", "claimed", "lease_expired"]
    with pytest.raises(ClaimConflict, match="unread, not claimed"):
        a.heartbeat(
            session=db,
            caller=Caller(rad1),
            study_instance_uid=study.study_instance_uid,
            lease=LEASE,
            now=later,
        )


def test_claim_release_and_invalid_transitions(db: Session) -> None:
    study = add_study(db)
    uid = study.study_instance_uid
    rad1, rad2 = user(db, "rad1"), user(db, "rad2")
    got = a.claim(session=db, caller=Caller(rad1), study_instance_uid=uid, lease=LEASE, now=T0)
    assert got.assigned_to_id == rad1.id
    # Claiming again renews the lease (idempotent for the holder).
    renewed = a.claim(
        session=db,
        caller=Caller(rad1),
        study_instance_uid=uid,
        lease=LEASE,
        now=T0 + timedelta(minutes=1),
    )
    assert renewed.lease_expires_at == T0 + timedelta(minutes=11)
    before = snapshot(db)
    with pytest.raises(ClaimConflict, match="already claimed"):
        a.claim(session=db, caller=Caller(rad2), study_instance_uid=uid, lease=LEASE, now=T0)
    with pytest.raises(ClaimConflict):
        a.release(session=db, caller=Caller(rad2), study_instance_uid=uid, now=T0)
    with pytest.raises(ClaimConflict):
        a.heartbeat(session=db, caller=Caller(rad2), study_instance_uid=uid, lease=LEASE, now=T0)
    with pytest.raises(NotFound):
        a.claim(session=db, caller=Caller(rad2), study_instance_uid="1.2.3", lease=LEASE, now=T0)
    assert snapshot(db) == before
    released = a.release(session=db, caller=Caller(rad1), study_instance_uid=uid, now=T0)
    assert (released.status, released.assigned_to_id) == (StudyStatus.unread, None)
    with pytest.raises(ClaimConflict, match="unread, not claimed"):
        a.release(session=db, caller=Caller(rad1), study_instance_uid=uid, now=T0)
    assert kinds(db, study) == ["complete", "claimed", "released"]
    # A study still receiving, or signed, cannot be claimed.
    receiving = add_study(db, status=StudyStatus.receiving)
    with pytest.raises(ClaimConflict, match="receiving"):
        a.claim(
            session=db,
            caller=Caller(rad1),
            study_instance_uid=receiving.study_instance_uid,
            lease=LEASE,
            now=T0,
        )


def test_signed_study_is_final(db: Session) -> None:
    study = add_study(db)
    uid = study.study_instance_uid
    rad1 = user(db, "rad1")
    a.claim(session=db, caller=Caller(rad1), study_instance_uid=uid, lease=LEASE, now=T0)
    signed = a.record_signed(
        session=db, radiologist=rad1, study_instance_uid=uid, now=T0 + timedelta(minutes=3)
    )
    assert (signed.status, signed.signed_at) == (StudyStatus.signed, T0 + timedelta(minutes=3))
    before = snapshot(db)
    with pytest.raises(ClaimConflict):
        a.claim(session=db, caller=Caller(rad1), study_instance_uid=uid, lease=LEASE, now=T0)
    with pytest.raises(ClaimConflict):
        a.release(session=db, caller=Caller(rad1), study_instance_uid=uid, now=T0)
    with pytest.raises(Conflict, match="signed study cannot change"):
        a.set_priority(
            session=db,
            caller=Caller(rad1),
            study_instance_uid=uid,
            priority=Priority.stat,
            sla=SLA,
            now=T0,
        )
    assert snapshot(db) == before


def test_priority_change_recomputes_due_time(db: Session) -> None:
    study = add_study(db, priority=Priority.routine, completed_at=T0)
    assert study.due_at == T0 + timedelta(hours=24)
    rad1 = user(db, "rad1")
    changed = a.set_priority(
        session=db,
        caller=Caller(rad1),
        study_instance_uid=study.study_instance_uid,
        priority=Priority.stat,
        sla=SLA,
        now=T0 + timedelta(minutes=1),
    )
    assert (changed.priority, changed.priority_rank, changed.due_at) == (
        Priority.stat,
        0,
        T0 + timedelta(minutes=30),
    )
    event = db.scalar(select(StudyEvent).where(StudyEvent.kind == "priority_changed"))
    assert event is not None and event.detail == {"old": "routine", "new": "stat"}
    assert event.actor_id == rad1.id
    with pytest.raises(Forbidden):
        a.set_priority(
            session=db,
            caller=Caller(user(db, "staff-a")),
            study_instance_uid=study.study_instance_uid,
            priority=Priority.routine,
            sla=SLA,
        )


def test_overdue_stat_is_pushed_to_every_on_duty_radiologist_once(db: Session) -> None:
    stat = add_study(db, priority=Priority.stat, completed_at=T0)
    add_study(db, priority=Priority.urgent, completed_at=T0)
    hub = institution(db, "hub")
    add_user(db, "rad-off", Role.radiologist, hub, on_duty=False)
    db.commit()
    assert a.notify_overdue_stat(session=db, now=T0 + timedelta(minutes=29)) == []
    late = T0 + timedelta(minutes=31)
    assert a.notify_overdue_stat(session=db, now=late) == [stat.study_instance_uid]
    assert a.notify_overdue_stat(session=db, now=late + timedelta(minutes=5)) == []
    recipients = sorted(
        user_id
        for user_id in db.scalars(
            select(Notification.user_id).where(Notification.kind == "overdue_stat")
        )
    )
    assert recipients == sorted([user(db, "rad1").id, user(db, "rad2").id])
    assert "overdue" in kinds(db, stat)
    items = list_worklist(db, WorklistFilter(overdue=True), user=user(db, "rad1"), now=late)
    assert [i.study_instance_uid for i in items] == [stat.study_instance_uid]
    assert items[0].overdue


def test_admin_reassignment(db: Session) -> None:
    study = add_study(db)
    uid = study.study_instance_uid
    admin, rad1, rad2 = user(db, "admin"), user(db, "rad1"), user(db, "rad2")
    a.claim(session=db, caller=Caller(rad1), study_instance_uid=uid, lease=LEASE, now=T0)
    moved = a.reassign(
        session=db,
        caller=Caller(admin),
        study_instance_uid=uid,
        to_username="rad2",
        lease=LEASE,
        now=T0,
    )
    assert moved.assigned_to_id == rad2.id
    event = db.scalar(select(StudyEvent).where(StudyEvent.kind == "assigned"))
    assert event is not None
    assert event.detail == {"to_user_id": rad2.id, "previous_holder_id": rad1.id}
    assert db.scalar(select(Notification).where(Notification.user_id == rad2.id)) is not None
    hub = institution(db, "hub")
    add_user(db, "mr-only", Role.radiologist, hub, on_duty=True, modalities=["MR"])
    db.commit()
    before = snapshot(db)
    with pytest.raises(Conflict, match="not eligible"):
        a.reassign(
            session=db,
            caller=Caller(admin),
            study_instance_uid=uid,
            to_username="mr-only",
            lease=LEASE,
            now=T0,
        )
    with pytest.raises(Conflict, match="radiologists only"):
        a.reassign(
            session=db,
            caller=Caller(admin),
            study_instance_uid=uid,
            to_username="consult1",
            lease=LEASE,
            now=T0,
        )
    with pytest.raises(NotFound):
        a.reassign(
            session=db,
            caller=Caller(admin),
            study_instance_uid=uid,
            to_username="nobody",
            lease=LEASE,
        )
    with pytest.raises(Forbidden):
        a.reassign(
            session=db, caller=Caller(rad1), study_instance_uid=uid, to_username="rad1", lease=LEASE
        )
    assert snapshot(db) == before


def test_auto_assign_least_outstanding_work(db: Session) -> None:
    rad1, rad2 = user(db, "rad1"), user(db, "rad2")
    held = add_study(db, priority=Priority.stat)
    a.claim(
        session=db,
        caller=Caller(rad1),
        study_instance_uid=held.study_instance_uid,
        lease=LEASE,
        now=T0,
    )
    s1 = add_study(db, priority=Priority.urgent)
    s2 = add_study(db, priority=Priority.routine, completed_at=T0)
    s3 = add_study(db, priority=Priority.routine, completed_at=T0 + timedelta(minutes=1))
    assigned = a.auto_assign(session=db, lease=LEASE, now=T0)
    # rad2 holds nothing, so it gets the first; then they are level and the lower id wins.
    assert assigned == [
        (s1.study_instance_uid, "rad2"),
        (s2.study_instance_uid, "rad1"),
        (s3.study_instance_uid, "rad2"),
    ]
    assert a.outstanding_work(db, user_ids=[rad1.id, rad2.id]) == {rad1.id: 2, rad2.id: 2}
    assert a.auto_assign(session=db, lease=LEASE, now=T0) == []


def test_claim_next_item_carries_the_worklist_columns_and_the_lease_expiry(db: Session) -> None:
    """The API's claim (one statement on PostgreSQL) answers what the worklist would show."""
    rad1, rad2 = user(db, "rad1"), user(db, "rad2")
    first = add_study(db, priority=Priority.stat, completed_at=T0, patient_name="李^华")
    second = add_study(db, priority=Priority.routine, completed_at=T0)
    got = a.claim_next_item(session=db, radiologist=rad1, lease=LEASE, now=T0)
    assert got is not None and got["study_instance_uid"] == first.study_instance_uid
    db.expire_all()
    stored = db.get(Study, first.id)
    assert stored is not None
    expected = worklist_item(stored, T0)
    assert claimed_item(got, holder=rad1, now=T0) == expected
    assert expected.status == StudyStatus.in_progress and expected.assigned_to == "rad1"
    assert expected.patient_name == "李^华" and expected.clinic == "clinic-a"
    assert expected.lease_expires_at == T0 + LEASE.lease
    assert kinds(db, stored) == ["complete", "claimed"]
    # rad1 abandons the STAT study: once its lease ran out, rad2's next claim takes it before
    # the routine one (queue order across both candidates) and records the expiry.
    later = T0 + LEASE.lease + timedelta(minutes=1)
    again = a.claim_next_item(session=db, radiologist=rad2, lease=LEASE, now=later)
    assert again is not None and again["study_instance_uid"] == first.study_instance_uid
    assert kinds(db, stored) == ["complete", "claimed", "lease_expired", "claimed"]
    last = a.claim_next_item(session=db, radiologist=rad2, lease=LEASE, now=later)
    assert last is not None and last["study_instance_uid"] == second.study_instance_uid
    assert a.claim_next_item(session=db, radiologist=rad2, lease=LEASE, now=later) is None


def test_a_new_clinic_is_in_scope_at_once(db: Session) -> None:
    """The scope is computed by the database on every query: no stale institution tree."""
    rad = user(db, "rad1")
    assert a.claim_next(session=db, radiologist=rad, lease=LEASE, now=T0) is None
    assert list_worklist(db, WorklistFilter(), user=rad, scope=study_scope(db, rad)) == []
    village = Institution(
        code="village-new",
        name="新村卫生室",
        level=InstitutionLevel.village,
        parent_id=institution(db, "clinic-b").id,
    )
    db.add(village)
    db.commit()
    study = add_study(db, clinic="village-new", completed_at=T0)
    listed = list_worklist(db, WorklistFilter(), user=rad, scope=study_scope(db, rad))
    assert [i.study_instance_uid for i in listed] == [study.study_instance_uid]
    assert policy.institution_subtree(db, institution(db, "clinic-b").id) == {
        institution(db, "clinic-b").id,
        village.id,
    }
    got = a.claim_next(session=db, radiologist=rad, lease=LEASE, now=T0)
    assert got is not None and got.study_instance_uid == study.study_instance_uid
    # A study of a clinic outside the hub's subtree stays invisible.
    outside = Institution(
        code="clinic-elsewhere",
        name="别处卫生院",
        level=InstitutionLevel.township,
        parent_id=institution(db, "city").id,
    )
    db.add(outside)
    db.commit()
    add_study(db, clinic="clinic-elsewhere", completed_at=T0)
    assert a.claim_next(session=db, radiologist=rad, lease=LEASE, now=T0) is None
    listed = list_worklist(db, WorklistFilter(), user=rad, scope=study_scope(db, rad))
    assert [i.study_instance_uid for i in listed] == [study.study_instance_uid]
