"""Eligibility and shifts set through the domain functions take effect on claims; exam orders
(SQLite and PostgreSQL)."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from imaging_hub.errors import Conflict, Forbidden, InvalidRequest, NotFound
from imaging_hub.worklist.db.models import OrderStatus, Priority
from imaging_hub.worklist.orders import orders
from imaging_hub.worklist.reading import assignment as a
from imaging_hub.worklist.reading import duty
from tests.worklist_support import add_study, add_user, institution, user

LEASE = a.LeasePolicy(lease=timedelta(minutes=10))
T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def test_eligibility_set_by_an_admin_decides_what_next_hands_out(db: Session) -> None:
    rad = user(db, "rad1")
    ct = add_study(db, modalities=("CT",), clinic="clinic-a", completed_at=T0)
    cr_b = add_study(db, modalities=("CR",), clinic="clinic-b", completed_at=T0)
    view = duty.set_eligibility(
        db, user=rad, modalities=["cr"], body_parts=[], clinics=["clinic-b", "clinic-b"]
    )
    db.commit()
    assert view == duty.EligibilityView("rad1", ["CR"], [], ["clinic-b"])
    got = a.claim_next(session=db, radiologist=rad, lease=LEASE, now=T0)
    assert got is not None and got.study_instance_uid == cr_b.study_instance_uid
    assert a.claim_next(session=db, radiologist=rad, lease=LEASE, now=T0) is None
    duty.set_eligibility(db, user=rad, modalities=[], body_parts=[], clinics=[])
    db.commit()
    got = a.claim_next(session=db, radiologist=rad, lease=LEASE, now=T0)
    assert got is not None and got.study_instance_uid == ct.study_instance_uid


def test_shifts_put_a_radiologist_on_duty_and_never_overlap(db: Session) -> None:
    off = add_user(db, "rad-shift", a.Role.radiologist, institution(db, "hub"))
    db.commit()
    add_study(db, completed_at=T0)
    with pytest.raises(Forbidden, match="not on duty"):
        a.claim_next(session=db, radiologist=off, lease=LEASE, now=T0)
    shift = duty.add_shift(
        db, user=off, starts_at=T0 - timedelta(hours=1), ends_at=T0 + timedelta(hours=7)
    )
    db.commit()
    assert a.claim_next(session=db, radiologist=off, lease=LEASE, now=T0) is not None
    with pytest.raises(Conflict, match="overlaps"):
        duty.add_shift(
            db, user=off, starts_at=T0 + timedelta(hours=6), ends_at=T0 + timedelta(hours=9)
        )
    with pytest.raises(InvalidRequest, match="24 hours"):
        duty.add_shift(db, user=off, starts_at=T0, ends_at=T0 + timedelta(hours=25))
    # Back to back is not an overlap.
    duty.add_shift(
        db, user=off, starts_at=T0 + timedelta(hours=7), ends_at=T0 + timedelta(hours=15)
    )
    db.commit()
    listed = duty.list_shifts(db, user=off, ending_after=T0 + timedelta(hours=8))
    assert [s.starts_at for s in listed] == [T0 + timedelta(hours=7)]
    assert duty.delete_shift(db, shift_id=shift.id).username == "rad-shift"
    db.commit()
    assert [s.id for s in duty.list_shifts(db, user=off)] != [shift.id]
    assert len(duty.list_shifts(db, user=off)) == 1


def test_orders_on_both_backends(db: Session) -> None:
    clinic_a = institution(db, "clinic-a")
    new = orders.NewOrder(
        accession_number="ACC1",
        patient_id="P1",
        modality="ct",
        scheduled_at=T0 + timedelta(hours=1),
        patient_name="李^华",
        priority=Priority.stat,
    )
    order = orders.create_order(db, clinic=clinic_a, new=new, by=None)
    db.commit()
    assert (order.modality, order.status) == ("CT", OrderStatus.scheduled)
    with pytest.raises(Conflict, match="accession"):
        orders.create_order(db, clinic=clinic_a, new=new, by=None)
    db.rollback()
    with pytest.raises(Conflict, match="clinics"):
        orders.create_order(db, clinic=institution(db, "hub"), new=new, by=None)
    listed = orders.list_orders(
        db, clinic=clinic_a, scheduled_from=T0, scheduled_until=T0 + timedelta(hours=2)
    )
    assert [(o.accession_number, code) for o, code in listed] == [("ACC1", "clinic-a")]
    assert orders.list_orders(db, scheduled_from=T0 + timedelta(hours=2)) == []
    with pytest.raises(NotFound):
        orders.cancel_order(db, order_id=order.id, clinic=institution(db, "clinic-b"))
    assert (
        orders.cancel_order(db, order_id=order.id, clinic=clinic_a).status == OrderStatus.cancelled
    )
    db.commit()
    with pytest.raises(Conflict, match="cancelled"):
        orders.cancel_order(db, order_id=order.id, clinic=None)
