"""What the report pane and the clinic page need from the API (in-process hub):

- ``GET /api/v1/consultations/targets``: the city and provincial institutions above the caller;
- ``prior_report`` in ``GET /api/v1/studies/{uid}/report``: the patient's previous signed report
  within the caller's scope, its read audited;
- ``GET /api/v1/clinic/studies``: the clinic's studies with report status in one request.

Each with the caller who must not get it (another clinic, another role).
"""

import hashlib
import io
from typing import Any

from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import event, func, select

from imaging_hub.worklist.db.models import (
    AuditEvent,
    Institution,
    InstitutionLevel,
    Role,
    User,
)
from imaging_hub.worklist.studies.registration import SlaPolicy, complete_study, register_instance
from tests.security.conftest import HubApp
from tests.security.test_reports_api import SOURCE, Reports, signed_report
from tests.security.test_reports_api import Study as StudyRef


def ingest(
    hub_app: HubApp,
    *,
    clinic: str = "clinic-a",
    patient_id: str = "",
    patient_name: str = "王^小东",
    study_date: str = "20240101",
) -> StudyRef:
    ds = dcmread(SOURCE)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = patient_name
    ds.PatientID = patient_id or f"P-{generate_uid()[-8:]}"
    ds.BodyPartExamined = "HEAD"
    ds.StudyDate = study_date
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    with hub_app.sessions() as session:
        institution = session.scalars(select(Institution).where(Institution.code == clinic)).one()
        stored = register_instance(
            session,
            store=hub_app.app.state.hub.store,
            clinic=institution,
            body=io.BytesIO(data),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        assert (
            complete_study(
                session,
                clinic=institution,
                study_instance_uid=stored.study_instance_uid,
                sop_instance_uids=[stored.sop_instance_uid],
                sla=SlaPolicy(),
            )
            == []
        )
    return StudyRef(stored.study_instance_uid, stored.sop_instance_uid)


def get(hub_app: HubApp, username: str, path: str, **params: Any) -> Any:
    return hub_app.client.get(path, headers=hub_app.headers(username), params=params)


def audits(hub_app: HubApp, action: str, study_uid: str | None = None) -> int:
    with hub_app.sessions() as session:
        stmt = select(func.count()).select_from(AuditEvent).where(AuditEvent.action == action)
        if study_uid is not None:
            stmt = stmt.where(AuditEvent.study_instance_uid == study_uid)
        return int(session.scalar(stmt) or 0)


# --- 1. escalation targets -------------------------------------------------------------------


def test_targets_are_the_city_and_province_above_the_radiologist(hub_app: HubApp) -> None:
    answer = get(hub_app, "rad1", "/api/v1/consultations/targets")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [(t["code"], t["level"]) for t in body] == [("city", "city"), ("province", "province")]
    assert all(t["name"] for t in body)


def test_targets_follow_the_callers_own_chain(hub_app: HubApp) -> None:
    with hub_app.sessions() as session:
        province = session.scalars(select(Institution).where(Institution.code == "province")).one()
        other_city = Institution(
            code="city-2", name="Other city", level=InstitutionLevel.city, parent_id=province.id
        )
        session.add(other_city)
        session.flush()
        other_hub = Institution(
            code="hub-2", name="Other hub", level=InstitutionLevel.district, parent_id=other_city.id
        )
        session.add(other_hub)
        session.flush()
        rad1 = session.scalars(select(User).where(User.username == "rad1")).one()
        session.add(
            User(
                username="rad-other",
                password_hash=rad1.password_hash,
                role=Role.radiologist,
                institution_id=other_hub.id,
            )
        )
        session.commit()
    codes = [t["code"] for t in get(hub_app, "rad-other", "/api/v1/consultations/targets").json()]
    assert codes == ["city-2", "province"]
    # rad1 (under "city") is not offered the other city.
    assert "city-2" not in [
        t["code"] for t in get(hub_app, "rad1", "/api/v1/consultations/targets").json()
    ]


def test_targets_are_refused_to_other_roles(hub_app: HubApp) -> None:
    for username in ("staff-a", "consult1", "admin"):
        answer = get(hub_app, username, "/api/v1/consultations/targets")
        assert answer.status_code == 403, (username, answer.text)
    assert hub_app.client.get("/api/v1/consultations/targets").status_code == 401


# --- 2. the prior report ---------------------------------------------------------------------


def test_prior_report_is_the_latest_signed_one_of_the_same_patient(hub_app: HubApp) -> None:
    older = ingest(hub_app, patient_id="PR-1", study_date="20230101")
    newer = ingest(hub_app, patient_id="PR-1", study_date="20230601")
    current = ingest(hub_app, patient_id="PR-1", study_date="20240101")
    other_patient = ingest(hub_app, patient_id="PR-2")
    signed_report(hub_app, older, impression="旧的印象。")
    second = signed_report(hub_app, newer, impression="较新的印象。")
    signed_report(hub_app, other_patient, impression="别人的报告。")

    before = audits(hub_app, "report.read", newer.uid)
    chain = get(hub_app, "rad2", f"/api/v1/studies/{current.uid}/report")
    assert chain.status_code == 200, chain.text
    prior = chain.json()["prior_report"]
    assert prior["id"] == second["id"]
    assert prior["study_instance_uid"] == newer.uid
    assert prior["study_date"] == "20230601" and prior["modality"] == "CT"
    assert prior["impression"] == "较新的印象。" and prior["findings"]
    assert prior["signed_at"] and prior["radiologist"]
    assert audits(hub_app, "report.read", newer.uid) == before + 1  # audited like a read

    # The older study's prior is the latest signed report of another study (not itself).
    assert (
        get(hub_app, "rad2", f"/api/v1/studies/{older.uid}/report").json()["prior_report"]["id"]
        == second["id"]
    )
    # A patient without another signed report: null.
    lone = get(hub_app, "rad2", f"/api/v1/studies/{other_patient.uid}/report").json()
    assert lone["prior_report"] is None


def test_prior_report_stays_in_the_callers_scope(hub_app: HubApp) -> None:
    # Same patient id at the other clinic is another patient: never a prior of clinic-a's study.
    at_b = ingest(hub_app, clinic="clinic-b", patient_id="PR-9")
    signed_report(hub_app, at_b)
    at_a_earlier = ingest(hub_app, patient_id="PR-9", study_date="20230101")
    signed_report(hub_app, at_a_earlier)
    at_a = ingest(hub_app, patient_id="PR-9")

    staff_a = get(hub_app, "staff-a", f"/api/v1/studies/{at_a.uid}/report").json()
    assert staff_a["prior_report"]["study_instance_uid"] == at_a_earlier.uid
    # clinic-b's staff sees neither the study nor, through it, the prior report.
    refused = get(hub_app, "staff-b", f"/api/v1/studies/{at_a.uid}/report")
    assert refused.status_code == 404
    assert "prior_report" not in refused.text
    b_chain = get(hub_app, "staff-b", f"/api/v1/studies/{at_b.uid}/report").json()
    assert b_chain["prior_report"] is None
    # A consultant sees only studies asked of its institution: no prior from outside it.
    rad1 = Reports(hub_app, "rad1")
    rad1.claim(at_a.uid)
    asked = rad1.request(
        "POST",
        f"/api/v1/studies/{at_a.uid}/escalate",
        json={"institution": "province", "question": "出血？"},
    )
    assert asked.status_code == 201, asked.text
    consultant = get(hub_app, "consult1", f"/api/v1/studies/{at_a.uid}/report")
    assert consultant.status_code == 200, consultant.text
    assert consultant.json()["prior_report"] is None


# --- 3. the clinic's study list --------------------------------------------------------------


def test_clinic_list_has_report_status_in_one_query(hub_app: HubApp) -> None:
    unread = ingest(hub_app, patient_name="李^四", patient_id="CL-1")
    reported = ingest(hub_app, patient_name="王^小东", patient_id="CL-2")
    critical = ingest(hub_app, patient_name="赵^六", patient_id="CL-3")
    at_b = ingest(hub_app, clinic="clinic-b", patient_name="钱^七")
    main = signed_report(hub_app, reported)
    rad1 = Reports(hub_app, "rad1")
    addendum = rad1.request(
        "POST", f"/api/v1/studies/{reported.uid}/report/addenda", json={"impression": "补充。"}
    )
    assert addendum.status_code == 201, addendum.text
    assert rad1.sign(addendum.json()["id"]).status_code == 200
    flagged = signed_report(
        hub_app, critical, critical=True, critical_category="颅内出血 intracranial haemorrhage"
    )

    statements: list[str] = []

    def count_selects(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    engine = hub_app.app.state.hub.sessions.kw["bind"]
    headers = hub_app.headers("staff-a")
    event.listen(engine, "before_cursor_execute", count_selects)
    try:
        answer = hub_app.client.get("/api/v1/clinic/studies", headers=headers, params={"limit": 10})
    finally:
        event.remove(engine, "before_cursor_execute", count_selects)
    assert answer.status_code == 200, answer.text
    items = {i["study_instance_uid"]: i for i in answer.json()["items"]}
    assert set(items) == {unread.uid, reported.uid, critical.uid}  # not clinic-b's
    assert at_b.uid not in items
    assert items[unread.uid]["status"] == "unread" and items[unread.uid]["report_id"] is None
    assert items[unread.uid]["radiologist"] is None
    r = items[reported.uid]
    assert r["status"] == "signed" and r["report_id"] == main["id"]
    assert r["addenda"] == [addendum.json()["id"]] and r["radiologist"]
    assert r["patient_name"] == "王^小东" and r["patient_id"] == "CL-2" and r["modalities"] == "CT"
    c = items[critical.uid]
    assert c["critical"] is True and c["acknowledged"] is False
    assert c["critical_report_id"] == flagged["id"]
    # Newest first.
    assert answer.json()["items"][0]["study_instance_uid"] == critical.uid
    # The page's rows come from one query (besides the token and audit look-ups).
    assert sum("FROM studies" in q and "reports" in q for q in statements) == 1, statements

    ack = hub_app.client.post(
        f"/api/v1/reports/{flagged['id']}/acknowledge",
        headers=hub_app.headers("staff-a"),
        json={"method": "phone", "read_back": "颅内出血"},
    )
    assert ack.status_code == 200, ack.text
    after = get(hub_app, "staff-a", "/api/v1/clinic/studies").json()["items"]
    c = next(i for i in after if i["study_instance_uid"] == critical.uid)
    assert c["status"] == "acknowledged" and c["acknowledged"] is True
    # Search by name in reading order, paging.
    found = get(hub_app, "staff-a", "/api/v1/clinic/studies", patient="王小东").json()["items"]
    assert [i["study_instance_uid"] for i in found] == [reported.uid]
    paged = get(hub_app, "staff-a", "/api/v1/clinic/studies", limit=1, offset=1).json()
    assert len(paged["items"]) == 1 and paged["offset"] == 1
    assert audits(hub_app, "study.listed") >= 1


def test_clinic_list_is_own_clinic_only(hub_app: HubApp) -> None:
    at_a = ingest(hub_app)
    at_b = ingest(hub_app, clinic="clinic-b")
    b_items = get(hub_app, "staff-b", "/api/v1/clinic/studies").json()["items"]
    assert [i["study_instance_uid"] for i in b_items] == [at_b.uid]
    # Naming another clinic does not widen clinic staff's view.
    other = get(hub_app, "staff-b", "/api/v1/clinic/studies", clinic="clinic-a")
    assert other.status_code == 404 and at_a.uid not in other.text
    # Admins may pick the clinic.
    admin = get(hub_app, "admin", "/api/v1/clinic/studies", clinic="clinic-a").json()["items"]
    assert [i["study_instance_uid"] for i in admin] == [at_a.uid]
    # Radiologists and consultants use the worklist, not this page.
    for username in ("rad1", "consult1"):
        assert get(hub_app, username, "/api/v1/clinic/studies").status_code == 403
    assert hub_app.client.get("/api/v1/clinic/studies").status_code == 401
