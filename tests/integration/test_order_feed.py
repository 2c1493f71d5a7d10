"""The gateways' order API over HTTP (in-process hub, real SQLite database): the order feed
(what is in it, what is not, ETag / 304, one clinic only) and the MPPS intake (transitions,
idempotence, orders of another clinic, bad input changes nothing)."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from imaging_hub.worklist.db.models import AuditEvent, Order
from tests.security.conftest import HubApp, _template_db, hub_app, pg_hub_app  # noqa: F401


@pytest.fixture(params=["sqlite", "postgresql"])
def hub(request: pytest.FixtureRequest) -> HubApp:
    """The in-process hub with the demo network, on SQLite and on PostgreSQL."""
    found: HubApp = request.getfixturevalue(
        "hub_app" if request.param == "sqlite" else "pg_hub_app"
    )
    return found


FEED_FIELDS = {
    "id",
    "accession_number",
    "study_instance_uid",
    "patient_id",
    "patient_name",
    "patient_birth_date",
    "patient_sex",
    "modality",
    "body_part_examined",
    "exam_type",
    "requested_procedure_id",
    "requested_procedure_description",
    "reason_for_procedure",
    "scheduled_station_ae_title",
    "scheduled_at",
    "referring_physician_name",
    "priority",
    "status",
    "expected_images",
    "done",
}

PORTAL: dict[str, Any] = {
    "patient_name": "王^小东",
    "patient_name_pinyin": "Wang^XiaoDong",
    "patient_id": "P-1",
    "patient_sex": "M",
    "patient_birth_date": "19580412",
    "exam_type": "DX_CHEST_PA",
    "reason_for_procedure": "咳嗽两周",
    "scheduled_station_ae_title": "DR_ROOM_1",
}


def gateway(hub: HubApp, clinic: str = "clinic-a") -> dict[str, str]:
    return {"Authorization": f"Bearer {hub.gateway_tokens[clinic]}"}


def place(hub: HubApp, user: str = "staff-a", **changes: Any) -> dict[str, Any]:
    answer = hub.client.post(
        "/api/v1/orders", json={**PORTAL, **changes}, headers=hub.headers(user)
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def audits(hub: HubApp, action: str) -> int:
    with hub.sessions() as s:
        return int(
            s.scalar(select(func.count(AuditEvent.id)).where(AuditEvent.action == action)) or 0
        )


def order_row(hub: HubApp, order_id: int) -> Order:
    with hub.sessions() as s:
        return s.get_one(Order, order_id)


def test_feed_is_the_clinics_open_orders_with_etag(hub: HubApp) -> None:
    now = datetime.now(UTC)
    open_one = place(hub, patient_id="OPEN")
    done = place(hub, patient_id="DONE")
    cancelled = place(hub, patient_id="CANCELLED")
    later = place(hub, patient_id="LATER", scheduled_at=(now + timedelta(days=8)).isoformat())
    old_done = place(hub, patient_id="OLD-DONE")
    at_b = place(hub, "staff-b", patient_id="AT-B")
    staff_a = hub.headers("staff-a")
    assert hub.client.post(f"/api/v1/orders/{done['id']}/done", headers=staff_a).is_success
    assert hub.client.post(f"/api/v1/orders/{cancelled['id']}/cancel", headers=staff_a).is_success
    assert hub.client.post(f"/api/v1/orders/{old_done['id']}/done", headers=staff_a).is_success
    with hub.sessions() as s:  # completed more than a day ago
        s.execute(
            update(Order)
            .where(Order.id == old_done["id"])
            .values(updated_at=now - timedelta(hours=25))
        )
        s.commit()

    first = hub.client.get("/api/v1/gateway/orders", headers=gateway(hub))
    assert first.status_code == 200, first.text
    body = first.json()
    assert datetime.fromisoformat(body["as_of"]) - now < timedelta(minutes=1)
    items = {o["patient_id"]: o for o in body["orders"]}
    assert set(items) == {"OPEN", "DONE"}  # not cancelled, too late, long done, other clinic
    assert all(set(o) == FEED_FIELDS for o in body["orders"])
    o = items["OPEN"]
    assert o["id"] == open_one["id"] and o["status"] == "scheduled" and o["done"] is False
    assert o["patient_name"] == "Wang^XiaoDong=王^小东"
    assert (o["modality"], o["body_part_examined"], o["expected_images"]) == ("DX", "CHEST", 1)
    assert o["requested_procedure_description"] == "胸部正位"
    assert o["reason_for_procedure"] == "咳嗽两周" and o["exam_type"] == "DX_CHEST_PA"
    assert o["scheduled_station_ae_title"] == "DR_ROOM_1"
    assert datetime.fromisoformat(o["scheduled_at"]).tzinfo is not None
    assert items["DONE"]["status"] == "completed" and items["DONE"]["done"] is True
    etag = first.headers["etag"]
    assert etag.startswith('"') and len(etag) > 10

    # Unchanged: 304 without a body, the same ETag.
    again = hub.client.get(
        "/api/v1/gateway/orders", headers={**gateway(hub), "If-None-Match": etag}
    )
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    # A change (cancelling) gives a new snapshot and a new ETag.
    assert hub.client.post(f"/api/v1/orders/{open_one['id']}/cancel", headers=staff_a).is_success
    changed = hub.client.get(
        "/api/v1/gateway/orders", headers={**gateway(hub), "If-None-Match": etag}
    )
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert [o["patient_id"] for o in changed.json()["orders"]] == ["DONE"]

    # The other clinic's gateway sees only its own order.
    at_b_feed = hub.client.get("/api/v1/gateway/orders", headers=gateway(hub, "clinic-b"))
    assert [o["id"] for o in at_b_feed.json()["orders"]] == [at_b["id"]]
    assert later["id"] not in [o["id"] for o in at_b_feed.json()["orders"]]
    # Users do not read the feed; nobody without a token does.
    for user in ("staff-a", "admin"):
        refused = hub.client.get("/api/v1/gateway/orders", headers=hub.headers(user))
        assert refused.status_code == 403
    assert hub.client.get("/api/v1/gateway/orders").status_code == 401
    # The read of patient data is recorded, once per gateway and window.
    assert audits(hub, "order.listed") == 2


def mpps(hub: HubApp, uid: str, clinic: str = "clinic-a", **body: Any) -> Any:
    return hub.client.post(f"/api/v1/gateway/mpps/{uid}", json=body, headers=gateway(hub, clinic))


def test_mpps_moves_the_order_once(hub: HubApp) -> None:
    a = place(hub, patient_id="A")
    uid = "1.2.826.0.1.3680043.10.99.1"
    written = audits(hub, "order.written")
    started = mpps(hub, uid, status="IN PROGRESS", study_instance_uid=a["study_instance_uid"])
    assert started.status_code == 200, started.text
    assert started.json() == {
        "order_id": a["id"],
        "status": "in_progress",
        "mpps_status": "IN PROGRESS",
    }
    row = order_row(hub, a["id"])
    assert (row.mpps_uid, row.mpps_status) == (uid, "IN PROGRESS")
    assert row.updated_at > datetime.fromisoformat(a["updated_at"])
    assert audits(hub, "order.written") == written + 1
    # A repeat changes nothing and is not audited again.
    repeat = mpps(hub, uid, status="IN PROGRESS", study_instance_uid=a["study_instance_uid"])
    assert repeat.json()["status"] == "in_progress"
    assert audits(hub, "order.written") == written + 1
    # COMPLETED (found by accession number this time), with the images it made.
    images = ["1.2.3.4.1", "1.2.3.4.2"]
    completed = mpps(
        hub, uid, status="COMPLETED", accession_number=a["accession_number"], images=images
    )
    assert completed.json() == {
        "order_id": a["id"],
        "status": "completed",
        "mpps_status": "COMPLETED",
    }
    # Late or contradicting messages of the ended step change nothing.
    for status in ("IN PROGRESS", "DISCONTINUED", "COMPLETED"):
        late = mpps(hub, uid, status=status, study_instance_uid=a["study_instance_uid"])
        assert late.json()["status"] == "completed", status
    assert order_row(hub, a["id"]).status.value == "completed"
    assert audits(hub, "order.written") == written + 2
    with hub.sessions() as s:
        detail = s.scalars(
            select(AuditEvent.detail)
            .where(AuditEvent.action == "order.written")
            .order_by(AuditEvent.id.desc())
        ).first()
    assert detail is not None and detail["op"] == "mpps" and detail["images"] == 2
    # The feed now says completed (the gateway learns the exam is over).
    feed = hub.client.get("/api/v1/gateway/orders", headers=gateway(hub)).json()
    assert [(o["id"], o["status"]) for o in feed["orders"]] == [(a["id"], "completed")]


def test_mpps_discontinued_retake_and_cancelled(hub: HubApp) -> None:
    b = place(hub, patient_id="B")
    first, retake = "1.2.826.0.1.3680043.10.99.2", "1.2.826.0.1.3680043.10.99.3"
    mpps(hub, first, status="IN PROGRESS", accession_number=b["accession_number"])
    stopped = mpps(
        hub,
        first,
        status="DISCONTINUED",
        accession_number=b["accession_number"],
        reason="患者移动 patient moved",
        performed_at="2026-12-06T09:00:00+08:00",
        images=0,
    )
    assert stopped.json()["status"] == "discontinued"
    row = order_row(hub, b["id"])
    assert row.status_reason == "患者移动 patient moved" and row.mpps_status == "DISCONTINUED"
    # A new step (the retake) moves it on again.
    again = mpps(hub, retake, status="in progress", study_instance_uid=b["study_instance_uid"])
    assert again.json() == {
        "order_id": b["id"],
        "status": "in_progress",
        "mpps_status": "IN PROGRESS",
    }
    # A cancelled order never moves.
    c = place(hub, patient_id="C")
    staff_a = hub.headers("staff-a")
    assert hub.client.post(f"/api/v1/orders/{c['id']}/cancel", headers=staff_a).is_success
    late = mpps(
        hub,
        "1.2.826.0.1.3680043.10.99.4",
        status="COMPLETED",
        study_instance_uid=c["study_instance_uid"],
    )
    assert late.json()["status"] == "cancelled"
    # An exam without an order is accepted: nothing to move.
    none = mpps(
        hub,
        "1.2.826.0.1.3680043.10.99.5",
        status="COMPLETED",
        study_instance_uid="1.2.3.999",
        accession_number="NOPE",
    )
    assert none.status_code == 200 and none.json()["order_id"] is None


def test_mpps_of_another_clinic_and_bad_input_change_nothing(hub: HubApp) -> None:
    a = place(hub, patient_id="A")
    written = audits(hub, "order.written")
    # clinic-b's gateway names clinic-a's order: it is not there for it.
    other = mpps(
        hub,
        "1.2.826.0.1.3680043.10.99.6",
        "clinic-b",
        status="DISCONTINUED",
        study_instance_uid=a["study_instance_uid"],
        accession_number=a["accession_number"],
        reason="x",
    )
    assert other.status_code == 200 and other.json()["order_id"] is None
    bad: list[tuple[str, dict[str, Any], str]] = [
        ("1.2.x", {"status": "COMPLETED"}, "mpps_sop_instance_uid"),
        ("1." + "2" * 80, {"status": "COMPLETED"}, "mpps_sop_instance_uid"),
        ("1.2.3", {"status": "DONE"}, "status"),
        ("1.2.3", {"status": "COMPLETED", "study_instance_uid": "abc"}, "study_instance_uid"),
        ("1.2.3", {"status": "COMPLETED", "accession_number": "A\\B"}, "accession_number"),
        ("1.2.3", {"status": "COMPLETED", "images": ["1.2", "x"]}, "images"),
        ("1.2.3", {"status": "COMPLETED", "images": -1}, "images"),
        ("1.2.3", {"status": "COMPLETED", "performed_at": "yesterday"}, "performed_at"),
        ("1.2.3", {"status": "DISCONTINUED", "reason": "a\x00b"}, "reason"),
    ]
    for uid, body, field in bad:
        answer = mpps(hub, uid, **{"study_instance_uid": a["study_instance_uid"], **body})
        assert answer.status_code == 422, (uid, body, answer.text)
        assert answer.json()["code"] == "mpps_invalid"
        assert field in [e["field"] for e in answer.json()["errors"]], answer.json()
    missing = mpps(hub, "1.2.3")
    assert missing.status_code == 422 and missing.json()["code"] == "validation_failed"
    assert order_row(hub, a["id"]).status.value == "scheduled"
    assert audits(hub, "order.written") == written
    # Users may not report MPPS.
    refused = hub.client.post(
        "/api/v1/gateway/mpps/1.2.3",
        json={"status": "COMPLETED"},
        headers=hub.headers("staff-a"),
    )
    assert refused.status_code == 403
