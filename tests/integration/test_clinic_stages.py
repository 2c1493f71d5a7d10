"""The clinic page's rows (``GET /api/v1/clinic/studies``): one ``stage`` per exam, from the
order to the acknowledged report, with the order's facts; orders without images are rows of
their own; a clinic never sees another clinic's orders; two queries a page, whatever its size."""

import hashlib
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import event, select, update

from imaging_hub.worklist.db.models import Institution, Study, StudyStatus
from imaging_hub.worklist.studies.registration import SlaPolicy, complete_study, register_instance
from tests.security.conftest import HubApp, _template_db, hub_app, pg_hub_app  # noqa: F401
from tests.security.test_reports_api import SOURCE


@pytest.fixture(params=["sqlite", "postgresql"])
def hub(request: pytest.FixtureRequest) -> HubApp:
    """The in-process hub with the demo network, on SQLite and on PostgreSQL."""
    found: HubApp = request.getfixturevalue(
        "hub_app" if request.param == "sqlite" else "pg_hub_app"
    )
    return found


def place(hub: HubApp, patient_id: str, user: str = "staff-a", **changes: Any) -> dict[str, Any]:
    body = {
        "patient_name": "李^华",
        "patient_id": patient_id,
        "patient_sex": "F",
        "patient_birth_date": "19700101",
        "exam_type": "CT_HEAD",
        "reason_for_procedure": f"头痛 {patient_id}",
        **changes,
    }
    answer = hub.client.post("/api/v1/orders", json=body, headers=hub.headers(user))
    assert answer.status_code == 201, answer.text
    placed: dict[str, Any] = answer.json()
    return placed


def receive(
    hub: HubApp,
    *,
    study_uid: str,
    accession: str,
    complete: bool,
    patient_id: str,
    clinic: str = "clinic-a",
) -> None:
    """One CT image of a study at the hub (as a gateway registers it), complete or not."""
    ds = dcmread(SOURCE)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "李^华"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.AccessionNumber = accession
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    with hub.sessions() as session:
        institution = session.scalars(select(Institution).where(Institution.code == clinic)).one()
        stored = register_instance(
            session,
            store=hub.app.state.hub.store,
            clinic=institution,
            body=io.BytesIO(data),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        if complete:
            missing = complete_study(
                session,
                clinic=institution,
                study_instance_uid=stored.study_instance_uid,
                sop_instance_uids=[stored.sop_instance_uid],
                sla=SlaPolicy(),
            )
            assert missing == []


def set_status(hub: HubApp, study_uid: str, status: StudyStatus) -> None:
    values: dict[str, Any] = {"status": status}
    if status == StudyStatus.in_progress:
        values["lease_expires_at"] = datetime.now(UTC) + timedelta(minutes=10)
    with hub.sessions() as s:
        s.execute(update(Study).where(Study.study_instance_uid == study_uid).values(**values))
        s.commit()


def mpps(hub: HubApp, uid: str, **body: Any) -> None:
    answer = hub.client.post(
        f"/api/v1/gateway/mpps/{uid}",
        json=body,
        headers={"Authorization": f"Bearer {hub.gateway_tokens['clinic-a']}"},
    )
    assert answer.status_code == 200, answer.text


def rows(hub: HubApp, user: str = "staff-a", **params: Any) -> list[dict[str, Any]]:
    answer = hub.client.get("/api/v1/clinic/studies", headers=hub.headers(user), params=params)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def test_every_stage_of_a_clinics_exam(hub: HubApp) -> None:
    o: dict[str, dict[str, Any]] = {}
    for name in ("ordered", "scanning", "discontinued", "cancelled", "receiving", "waiting"):
        o[name] = place(hub, name.upper())
    for name in ("reading", "signed", "delivered", "acknowledged"):
        o[name] = place(hub, name.upper())
    mpps(
        hub,
        "1.2.3.100.1",
        status="IN PROGRESS",
        study_instance_uid=o["scanning"]["study_instance_uid"],
    )
    mpps(
        hub,
        "1.2.3.100.2",
        status="IN PROGRESS",
        accession_number=o["discontinued"]["accession_number"],
    )
    mpps(
        hub,
        "1.2.3.100.2",
        status="DISCONTINUED",
        accession_number=o["discontinued"]["accession_number"],
        reason="设备故障",
    )
    cancelled = hub.client.post(
        f"/api/v1/orders/{o['cancelled']['id']}/cancel",
        headers=hub.headers("staff-a"),
        json={"reason": "患者未到"},
    )
    assert cancelled.status_code == 200
    # Images arrive: under the order's own StudyInstanceUID (from the worklist) ...
    receive(
        hub,
        study_uid=o["receiving"]["study_instance_uid"],
        accession="",
        complete=False,
        patient_id="RECEIVING",
    )
    # ... or under the modality's own UID, matched by accession number.
    waiting_uid = generate_uid()
    receive(
        hub,
        study_uid=waiting_uid,
        accession=o["waiting"]["accession_number"],
        complete=True,
        patient_id="WAITING",
    )
    later: dict[str, str] = {}
    for name, status in (
        ("reading", StudyStatus.in_progress),
        ("signed", StudyStatus.signed),
        ("delivered", StudyStatus.delivered),
        ("acknowledged", StudyStatus.acknowledged),
    ):
        receive(
            hub,
            study_uid=o[name]["study_instance_uid"],
            accession="",
            complete=True,
            patient_id=name.upper(),
        )
        set_status(hub, o[name]["study_instance_uid"], status)
        later[name] = o[name]["study_instance_uid"]
    # Images of a discontinued step still arriving: the row says discontinued, with the reason.
    partly = place(hub, "PARTLY")
    mpps(
        hub,
        "1.2.3.100.3",
        status="DISCONTINUED",
        accession_number=partly["accession_number"],
        reason="患者不适",
    )
    receive(
        hub,
        study_uid=partly["study_instance_uid"],
        accession="",
        complete=False,
        patient_id="PARTLY",
    )
    # A study without an order, and another clinic's order: neither is an order row of ours.
    receive(hub, study_uid=generate_uid(), accession="NO-ORDER", complete=True, patient_id="NONE")
    at_b = place(hub, "AT-B", user="staff-b")

    items = rows(hub, limit=50)
    by_patient = {i["patient_id"]: i for i in items if i["order_id"] is not None}
    assert {p: i["stage"] for p, i in by_patient.items()} == {
        **{name.upper(): name for name in o},
        "PARTLY": "discontinued",
    }
    assert by_patient["PARTLY"]["status_reason"] == "患者不适"
    assert by_patient["PARTLY"]["status"] == "receiving"
    assert len(items) == len(o) + 2  # each order once (with or without its study), + the orderless
    orderless = [i for i in items if i["order_id"] is None]
    assert [i["stage"] for i in orderless] == ["waiting"]
    assert orderless[0]["reason_for_procedure"] == "" and orderless[0]["exam_type"] == ""
    # Order facts on every row of an order; the order's UID on rows without images.
    for name, placed in o.items():
        row = by_patient[name.upper()]
        assert row["order_id"] == placed["id"], name
        assert row["accession_number"] == placed["accession_number"], name
        assert (
            row["exam_type"] == "CT_HEAD" and row["reason_for_procedure"] == f"头痛 {name.upper()}"
        )
    assert by_patient["WAITING"]["study_instance_uid"] == waiting_uid
    assert by_patient["ORDERED"]["study_instance_uid"] == o["ordered"]["study_instance_uid"]
    assert (
        by_patient["ORDERED"]["received_at"] is None and by_patient["ORDERED"]["num_instances"] == 0
    )
    assert by_patient["DISCONTINUED"]["status_reason"] == "设备故障"
    assert by_patient["CANCELLED"]["status_reason"] == "患者未到"
    assert (
        by_patient["RECEIVING"]["status"] == "receiving"
        and by_patient["RECEIVING"]["num_instances"] == 1
    )
    assert by_patient["READING"]["status"] == "in_progress"
    assert by_patient["SCANNING"]["order_status"] == "in_progress"
    assert by_patient["WAITING"]["order_status"] == "scheduled"
    assert orderless[0]["order_status"] is None and orderless[0]["done_at"] is None
    # "Exam done" shows on the row (no second click offered).
    done = hub.client.post(
        f"/api/v1/orders/{o['ordered']['id']}/done", headers=hub.headers("staff-a")
    )
    assert done.status_code == 200
    now_done = next(i for i in rows(hub, limit=50) if i["order_id"] == o["ordered"]["id"])
    assert now_done["done_at"] and now_done["order_status"] == "completed"
    assert now_done["stage"] == "scanning"
    # Existing fields stay.
    assert {"critical", "report_id", "radiologist", "priority", "due_at", "addenda"} <= set(
        items[0]
    )

    # Clinic B's staff sees only its own order; naming clinic-a widens nothing.
    b_items = rows(hub, "staff-b")
    assert [(i["order_id"], i["stage"]) for i in b_items] == [(at_b["id"], "ordered")]
    other = hub.client.get(
        "/api/v1/clinic/studies", headers=hub.headers("staff-b"), params={"clinic": "clinic-a"}
    )
    assert other.status_code == 404 and "ORDERED" not in other.text
    # An administrator may pick the clinic.
    admin = rows(hub, "admin", clinic="clinic-b")
    assert [i["order_id"] for i in admin] == [at_b["id"]]
    # Searching by patient finds an order without images too (name in reading order).
    found = rows(hub, patient="ORDERED")
    assert [i["order_id"] for i in found] == [o["ordered"]["id"]]
    assert len(rows(hub, patient="李华")) == len(items)

    # Pages cut across studies and orders: every row once, newest first.
    paged: list[dict[str, Any]] = []
    for offset in range(0, len(items), 4):
        paged += rows(hub, limit=4, offset=offset)
    assert [i["study_instance_uid"] for i in paged] == [i["study_instance_uid"] for i in items]
    stamps = [i["received_at"] or i["scheduled_at"] for i in items]
    assert stamps == sorted(stamps, reverse=True)


def test_a_page_is_two_queries_whatever_its_size(hub: HubApp) -> None:
    for n in range(3):
        placed = place(hub, f"Q{n}")
        receive(
            hub,
            study_uid=placed["study_instance_uid"],
            accession="",
            complete=True,
            patient_id=f"Q{n}",
        )
        place(hub, f"R{n}")

    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM orders" in statement or "FROM studies" in statement:
            statements.append(statement)

    engine = hub.app.state.hub.sessions.kw["bind"]
    headers = hub.headers("staff-a")
    event.listen(engine, "before_cursor_execute", count)
    try:
        small = hub.client.get("/api/v1/clinic/studies", headers=headers, params={"limit": 2})
        small_count = len(statements)
        statements.clear()
        large = hub.client.get("/api/v1/clinic/studies", headers=headers, params={"limit": 50})
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(small.json()["items"]) == 2 and len(large.json()["items"]) == 6
    assert small_count == len(statements) == 2, statements


def test_the_orders_priority_and_question_reach_the_reader(hub: HubApp) -> None:
    stat = place(hub, "STAT-1", priority="stat", reason_for_procedure="突发胸痛 1 小时")
    plain = place(hub, "PLAIN-1", reason_for_procedure="体检")
    # One study under the order's UID, one matched by accession number only, one without order.
    receive(
        hub,
        study_uid=stat["study_instance_uid"],
        accession="",
        complete=True,
        patient_id="STAT-1",
    )
    by_accession = generate_uid()
    receive(
        hub,
        study_uid=by_accession,
        accession=plain["accession_number"],
        complete=True,
        patient_id="PLAIN-1",
    )
    orderless = generate_uid()
    receive(hub, study_uid=orderless, accession="X-1", complete=True, patient_id="NONE-1")
    worklist = hub.client.get("/api/v1/worklist", headers=hub.headers("rad1"))
    assert worklist.status_code == 200, worklist.text
    items = {i["study_instance_uid"]: i for i in worklist.json()["items"]}
    assert items[stat["study_instance_uid"]]["clinical_question"] == "突发胸痛 1 小时"
    assert items[stat["study_instance_uid"]]["priority"] == "stat"
    assert items[by_accession]["clinical_question"] == "体检"
    assert items[by_accession]["priority"] == "routine"
    assert items[orderless]["clinical_question"] == ""
    # The stat study is handed out first; the report shows the order's question.
    first = next(iter(worklist.json()["items"]))
    assert first["study_instance_uid"] == stat["study_instance_uid"]
    chain = hub.client.get(f"/api/v1/studies/{by_accession}/report", headers=hub.headers("rad1"))
    assert chain.status_code == 200, chain.text
    assert chain.json()["clinical_question"] == "体检"
