"""Reports over HTTP: the rules and bad input (issue 13), on the in-process hub.

rad1 claims a study, drafts and signs; what must be refused is refused with its code and
changes nothing: a wrong password (401, audited, throttled), signing without the claim (403),
an empty impression (422), signing twice (409), another radiologist's draft (403), another
clinic's PDF (404); HTML in the findings is printed as text; critical results are acknowledged
by the clinic and reminded when they are not.
"""

import hashlib
import io
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from imaging_hub.worklist.db.models import (
    AuditEvent,
    Institution,
    Notification,
    Report,
    SigningCredential,
    StudyEvent,
    User,
)
from imaging_hub.worklist.reports import service
from imaging_hub.worklist.reports.templates import builtin_templates
from imaging_hub.worklist.studies.registration import SlaPolicy, complete_study, register_instance
from tests.conftest import SAMPLES
from tests.security.conftest import HubApp

SOURCE = SAMPLES / "by-modality/CT/CT_small.dcm"
PATIENT = "张^三丰"
FINDINGS = "左侧基底节区见高密度影，周围见低密度水肿带。\n<script>alert('x')</script> & <b>粗体</b>"
IMPRESSION = "左侧基底节区脑出血。"
CATEGORY = "颅内出血 intracranial haemorrhage"


@dataclass
class Study:
    uid: str
    sop_instance_uid: str


def ingest_study(
    hub_app: HubApp, *, clinic: str = "clinic-a", patient_name: str = PATIENT
) -> Study:
    """A CT head study (one instance) of *clinic*, registered and complete (unread)."""
    ds = dcmread(SOURCE)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = patient_name
    ds.PatientID = f"P-{generate_uid()[-8:]}"
    ds.BodyPartExamined = "HEAD"
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
        missing = complete_study(
            session,
            clinic=institution,
            study_instance_uid=stored.study_instance_uid,
            sop_instance_uids=[stored.sop_instance_uid],
            sla=SlaPolicy(),
        )
        assert missing == []
    return Study(stored.study_instance_uid, stored.sop_instance_uid)


class Reports:
    """The report API as one user sees it."""

    def __init__(self, hub_app: HubApp, username: str) -> None:
        self.hub_app = hub_app
        self.username = username
        self.headers = hub_app.headers(username)

    @property
    def password(self) -> str:
        return self.hub_app.passwords[self.username]

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> Any:
        return self.hub_app.client.request(
            method, path, headers={**self.headers, **(headers or {})}, **kwargs
        )

    def claim(self, uid: str) -> Any:
        response = self.request("POST", f"/api/v1/studies/{uid}/claim")
        assert response.status_code == 200, response.text
        return response.json()

    def draft(self, uid: str, **fields: Any) -> Any:
        body = {"findings": FINDINGS, "impression": IMPRESSION, **fields}
        return self.request("PUT", f"/api/v1/studies/{uid}/report", json=body)

    def sign(self, report_id: int, password: str | None = None) -> Any:
        return self.request(
            "POST",
            f"/api/v1/reports/{report_id}/sign",
            json={"password": self.password if password is None else password},
        )

    def chain(self, uid: str) -> Any:
        return self.request("GET", f"/api/v1/studies/{uid}/report")

    def pdf(self, report_id: int) -> Any:
        return self.request("GET", f"/api/v1/reports/{report_id}/pdf")


def signed_report(hub_app: HubApp, study: Study, **fields: Any) -> dict[str, Any]:
    """rad1 claims *study*, drafts and signs; the signed report."""
    rad1 = Reports(hub_app, "rad1")
    rad1.claim(study.uid)
    draft = rad1.draft(study.uid, **fields)
    assert draft.status_code == 200, draft.text
    signed = rad1.sign(draft.json()["id"])
    assert signed.status_code == 200, signed.text
    result: dict[str, Any] = signed.json()
    return result


def count(hub_app: HubApp, model: Any, *where: Any) -> int:
    with hub_app.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def events(hub_app: HubApp, uid: str) -> list[str]:
    detail = hub_app.client.get(f"/api/v1/studies/{uid}", headers=hub_app.headers("admin"))
    assert detail.status_code == 200, detail.text
    return [e["kind"] for e in detail.json()["timeline"]]


# --- the happy path and its record ------------------------------------------------------------


def test_rad1_drafts_and_signs_and_the_study_is_signed(hub_app: HubApp) -> None:
    study = ingest_study(hub_app)
    rad1 = Reports(hub_app, "rad1")
    rad1.claim(study.uid)
    before = rad1.chain(study.uid).json()
    assert before["report"] is None and before["draft"] is None
    assert before["can_write_report"] is True
    assert before["suggested_template"] == "ct-head-noncontrast"
    # No order: no clinical question (the study description is never passed off as one).
    assert before["clinical_question"] == ""

    first = rad1.draft(study.uid, template="ct-head-noncontrast")
    assert first.status_code == 200, first.text
    again = rad1.draft(study.uid, impression="更新：" + IMPRESSION)  # saving as you type
    assert again.json()["id"] == first.json()["id"]
    assert rad1.chain(study.uid).json()["draft"]["impression"] == "更新：" + IMPRESSION

    signed = rad1.sign(first.json()["id"])
    assert signed.status_code == 200, signed.text
    body = signed.json()
    assert body["status"] == "signed" and len(body["sha256"]) == 64 and body["signed_at"]
    assert body["signer_name"] == hub_app_display_name(hub_app, "rad1")
    assert body["pdf_sop_instance_uid"] and body["sr_sop_instance_uid"]

    pdf = rad1.pdf(body["id"])
    assert pdf.status_code == 200
    assert pdf.headers["content-type"] == "application/pdf"
    assert hashlib.sha256(pdf.content).hexdigest() == body["sha256"]

    chain = rad1.chain(study.uid).json()
    assert chain["study_status"] == "signed"
    assert chain["report"]["id"] == body["id"] and chain["draft"] is None
    timeline = events(hub_app, study.uid)
    assert {"claimed", "report_drafted", "signed"} <= set(timeline)
    assert count(hub_app, AuditEvent, AuditEvent.action == "report.signed") == 1
    assert count(hub_app, AuditEvent, AuditEvent.action == "report.downloaded") == 1
    assert count(hub_app, SigningCredential) == 1  # issued at the first signature


def hub_app_display_name(hub_app: HubApp, username: str) -> str:
    with hub_app.sessions() as session:
        user = session.scalars(select(User).where(User.username == username)).one()
        return user.display_name or user.username


def test_html_in_findings_is_printed_as_text(hub_app: HubApp, tmp_path: Path) -> None:
    study = ingest_study(hub_app)
    body = signed_report(hub_app, study)
    path = tmp_path / "report.pdf"
    path.write_bytes(Reports(hub_app, "rad1").pdf(body["id"]).content)
    text = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True, text=True
    ).stdout
    assert "张三丰" in text and IMPRESSION in text
    assert "<script>alert('x')</script>" in text
    assert "<b>粗体</b>" in text


# --- refusals ----------------------------------------------------------------------------------


def test_wrong_password_signs_nothing_is_audited_and_throttled(hub_app: HubApp) -> None:
    study = ingest_study(hub_app)
    rad1 = Reports(hub_app, "rad1")
    rad1.claim(study.uid)
    report_id = rad1.draft(study.uid).json()["id"]
    for _ in range(5):
        wrong = rad1.sign(report_id, password="not-my-password")
        assert wrong.status_code == 401, wrong.text
        assert wrong.json()["code"] == "signing_password_wrong"
    assert count(hub_app, AuditEvent, AuditEvent.action == "report.sign_failed") == 5
    throttled = rad1.sign(report_id)  # even the right password waits now
    assert throttled.status_code == 429 and throttled.json()["code"] == "too_many_attempts"
    assert "Retry-After" in throttled.headers
    with hub_app.sessions() as session:
        report = session.get(Report, report_id)
        assert report is not None and report.status.value == "draft" and not report.object_key
    assert count(hub_app, SigningCredential) == 0
    assert rad1.chain(study.uid).json()["study_status"] == "in_progress"


def test_signing_without_the_claim_is_forbidden(hub_app: HubApp) -> None:
    study = ingest_study(hub_app)
    rad1, rad2 = Reports(hub_app, "rad1"), Reports(hub_app, "rad2")
    # Not claimed at all: no draft can be written.
    refused = rad1.draft(study.uid)
    assert refused.status_code == 403 and refused.json()["code"] == "report_not_holder"
    rad1.claim(study.uid)
    report_id = rad1.draft(study.uid).json()["id"]
    # rad2 neither writes nor signs rad1's study or draft.
    assert rad2.draft(study.uid).json()["code"] == "report_not_holder"
    other = rad2.sign(report_id, password=rad2.password)
    assert other.status_code == 403 and other.json()["code"] == "report_not_author"
    changed = rad2.request("PUT", f"/api/v1/reports/{report_id}", json={"impression": "x"})
    assert changed.status_code == 403
    # rad1 released the claim: the draft stays but cannot be signed.
    assert rad1.request("POST", f"/api/v1/studies/{study.uid}/release").status_code == 200
    released = rad1.sign(report_id)
    assert released.status_code == 403 and released.json()["code"] == "report_not_holder"
    assert count(hub_app, SigningCredential) == 0


def test_empty_impression_and_bad_drafts_are_refused(hub_app: HubApp) -> None:
    study = ingest_study(hub_app)
    rad1 = Reports(hub_app, "rad1")
    rad1.claim(study.uid)
    report_id = rad1.draft(study.uid, impression="  \n ").json()["id"]
    empty = rad1.sign(report_id)
    assert empty.status_code == 422 and empty.json()["code"] == "report_impression_empty"
    bad_template = rad1.draft(study.uid, template="no-such-template")
    assert bad_template.status_code == 422 and bad_template.json()["code"] == "report_invalid"
    bad_category = rad1.draft(study.uid, critical=True, critical_category="nonsense")
    assert bad_category.status_code == 422
    no_category = rad1.draft(study.uid, critical=True)
    assert no_category.status_code == 422
    assert rad1.draft(study.uid, findings="x" * 20_001).status_code == 422
    assert rad1.request("POST", "/api/v1/reports/1/sign", json={}).status_code == 422
    assert rad1.request("POST", "/api/v1/reports/0/sign", json={"password": "x"}).status_code == 422
    assert count(hub_app, SigningCredential) == 0


def test_signing_twice_is_a_conflict_and_the_report_never_changes(hub_app: HubApp) -> None:
    study = ingest_study(hub_app)
    body = signed_report(hub_app, study)
    rad1 = Reports(hub_app, "rad1")
    twice = rad1.sign(body["id"])
    assert twice.status_code == 409 and twice.json()["code"] == "report_already_signed"
    redraft = rad1.draft(study.uid)
    assert redraft.status_code == 409 and redraft.json()["code"] == "report_already_signed"
    edit = rad1.request("PUT", f"/api/v1/reports/{body['id']}", json={"impression": "changed"})
    assert edit.status_code == 409
    assert hashlib.sha256(rad1.pdf(body["id"]).content).hexdigest() == body["sha256"]


def test_clinic_b_cannot_see_clinic_a_reports(hub_app: HubApp) -> None:
    study = ingest_study(hub_app, clinic="clinic-a")
    body = signed_report(hub_app, study)
    staff_a, staff_b = Reports(hub_app, "staff-a"), Reports(hub_app, "staff-b")
    assert staff_a.pdf(body["id"]).status_code == 200
    assert staff_a.chain(study.uid).json()["report"]["sha256"] == body["sha256"]
    assert staff_b.pdf(body["id"]).status_code == 404
    assert staff_b.chain(study.uid).status_code == 404
    assert (
        staff_b.request(
            "POST",
            f"/api/v1/reports/{body['id']}/acknowledge",
            json={"method": "phone", "read_back": "x"},
        ).status_code
        == 404
    )
    # Nor does a draft show to anybody but its author.
    other = ingest_study(hub_app)
    rad1 = Reports(hub_app, "rad1")
    rad1.claim(other.uid)
    draft_id = rad1.draft(other.uid).json()["id"]
    assert staff_a.pdf(draft_id).status_code == 404
    assert Reports(hub_app, "rad2").chain(other.uid).json()["draft"] is None
    assert Reports(hub_app, "admin").pdf(draft_id).status_code == 404


# --- critical results ---------------------------------------------------------------------------


def test_critical_result_notifies_the_clinic_and_is_acknowledged(hub_app: HubApp) -> None:
    study = ingest_study(hub_app)
    body = signed_report(hub_app, study, critical=True, critical_category=CATEGORY)
    assert body["critical"] is True and body["critical_category"] == CATEGORY
    staff_a = Reports(hub_app, "staff-a")
    inbox = staff_a.request("GET", "/api/v1/notifications").json()
    critical = [n for n in inbox if n["kind"] == "critical_result"]
    assert critical and critical[0]["detail"]["report_id"] == body["id"]

    bad = staff_a.request(
        "POST", f"/api/v1/reports/{body['id']}/acknowledge", json={"method": "fax"}
    )
    assert bad.status_code == 422
    rad_ack = Reports(hub_app, "rad1").request(
        "POST",
        f"/api/v1/reports/{body['id']}/acknowledge",
        json={"method": "phone", "read_back": "x"},
    )
    assert rad_ack.status_code == 403
    ack = staff_a.request(
        "POST",
        f"/api/v1/reports/{body['id']}/acknowledge",
        json={"method": "phone", "read_back": "左侧基底节区脑出血，已复述。"},
    )
    assert ack.status_code == 200, ack.text
    acked = ack.json()
    assert acked["acknowledged_by"] == "staff-a" and acked["acknowledgement_method"] == "phone"
    assert acked["acknowledgement_read_back"] == "左侧基底节区脑出血，已复述。"
    assert staff_a.chain(study.uid).json()["study_status"] == "acknowledged"
    again = staff_a.request(
        "POST",
        f"/api/v1/reports/{body['id']}/acknowledge",
        json={"method": "phone", "read_back": "again"},
    )
    assert again.status_code == 409 and again.json()["code"] == "report_already_acknowledged"
    assert {"critical_notified", "critical_acknowledged"} <= set(events(hub_app, study.uid))
    assert count(hub_app, AuditEvent, AuditEvent.action == "report.acknowledged") == 1


def test_a_report_that_is_not_critical_is_not_acknowledged(hub_app: HubApp) -> None:
    study = ingest_study(hub_app)
    body = signed_report(hub_app, study)
    ack = Reports(hub_app, "staff-a").request(
        "POST",
        f"/api/v1/reports/{body['id']}/acknowledge",
        json={"method": "portal", "read_back": "ok"},
    )
    assert ack.status_code == 409 and ack.json()["code"] == "report_not_critical"


def test_unacknowledged_critical_result_reminds_the_signer_and_admins(hub_app: HubApp) -> None:
    study = ingest_study(hub_app)
    body = signed_report(hub_app, study, critical=True, critical_category=CATEGORY)
    with hub_app.sessions() as session:
        early = service.notify_unacknowledged_critical(
            session=session, timeout=timedelta(minutes=30)
        )
        assert early == []
        later = datetime.now(UTC) + timedelta(minutes=31)
        assert service.notify_unacknowledged_critical(
            session=session, timeout=timedelta(minutes=30), now=later
        ) == [body["id"]]
        assert (
            service.notify_unacknowledged_critical(
                session=session, timeout=timedelta(minutes=30), now=later
            )
            == []
        )  # once
    reminded = {
        n["kind"] for n in Reports(hub_app, "rad1").request("GET", "/api/v1/notifications").json()
    }
    assert "critical_unacknowledged" in reminded
    admin = Reports(hub_app, "admin").request("GET", "/api/v1/notifications").json()
    assert any(n["kind"] == "critical_unacknowledged" for n in admin)
    assert count(hub_app, Notification, Notification.kind == "critical_unacknowledged") >= 2
    assert count(hub_app, StudyEvent, StudyEvent.kind == "critical_unacknowledged") == 1


# --- templates and the CA -----------------------------------------------------------------------


def test_templates_in_the_callers_language(hub_app: HubApp) -> None:
    rad1 = Reports(hub_app, "rad1")
    zh = rad1.request("GET", "/api/v1/report-templates").json()
    assert {t["code"] for t in zh} >= {
        "chest-xray-pa-lat",
        "ct-head-noncontrast",
        "us-abdomen",
        "limb-xray",
    }
    assert zh[0]["language"] == "zh-CN"
    en = rad1.request(
        "GET", "/api/v1/report-templates", headers={"Accept-Language": "en-GB"}
    ).json()
    assert en[0]["language"] == "en"
    chest = rad1.request(
        "GET", "/api/v1/report-templates?lang=en&modality=DX&body_part=CHEST"
    ).json()
    assert chest[0]["code"] == "chest-xray-pa-lat" and chest[0]["matches"] is True
    fields = {s["field"] for s in chest[0]["sections"]}
    assert fields == {"findings", "impression"}
    assert all(s["normal"] for s in chest[0]["sections"])


def test_admin_imports_a_template_validated(hub_app: HubApp) -> None:
    admin = Reports(hub_app, "admin")
    data = builtin_templates()["limb-xray"].model_dump(mode="json", by_alias=True)
    data["code"] = "spine-xray"
    data["body_parts"] = ["SPINE"]
    created = admin.request("POST", "/api/v1/report-templates", json=data)
    assert created.status_code == 201, created.text
    assert created.json()["code"] == "spine-xray"
    same = admin.request("POST", "/api/v1/report-templates", json=data)
    assert same.status_code == 409 and same.json()["code"] == "report_template_exists"
    builtin = admin.request(
        "POST", "/api/v1/report-templates", json={**data, "code": "limb-xray", "version": 9}
    )
    assert builtin.status_code == 409
    no_impression = {**data, "code": "bad", "sections": data["sections"][:1]}
    assert admin.request("POST", "/api/v1/report-templates", json=no_impression).status_code == 422
    no_english = {**data, "code": "bad2", "title": {"zh-CN": "脊柱"}}
    assert admin.request("POST", "/api/v1/report-templates", json=no_english).status_code == 422
    rad1 = Reports(hub_app, "rad1")
    assert rad1.request("POST", "/api/v1/report-templates", json=data).status_code == 403
    listed = rad1.request("GET", "/api/v1/report-templates?modality=DX&body_part=SPINE").json()
    assert listed[0]["code"] == "spine-xray" and listed[0]["builtin"] is False


def test_ca_and_crl_are_public(hub_app: HubApp, tmp_path: Path) -> None:
    from cryptography import x509

    pem = hub_app.client.get("/api/v1/pki/ca.pem")
    assert pem.status_code == 200
    cert = x509.load_pem_x509_certificate(pem.content)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    crl = hub_app.client.get("/api/v1/pki/crl.der")
    assert crl.status_code == 200
    assert x509.load_der_x509_crl(crl.content).issuer == cert.subject


@pytest.mark.parametrize("path", ["/api/v1/reports/1/pdf", "/api/v1/studies/1.2.3/report"])
def test_report_reads_need_a_token(hub_app: HubApp, path: str) -> None:
    assert hub_app.client.get(path).status_code == 401


@pytest.mark.postgres
def test_rules_and_critical_flow_on_postgres(pg_hub_app: HubApp) -> None:
    study = ingest_study(pg_hub_app)
    rad1 = Reports(pg_hub_app, "rad1")
    rad1.claim(study.uid)
    report_id = rad1.draft(study.uid, critical=True, critical_category=CATEGORY).json()["id"]
    wrong = rad1.sign(report_id, password="not-my-password")
    assert wrong.status_code == 401 and wrong.json()["code"] == "signing_password_wrong"
    signed = rad1.sign(report_id)
    assert signed.status_code == 200, signed.text
    assert rad1.sign(report_id).status_code == 409
    assert Reports(pg_hub_app, "staff-b").pdf(report_id).status_code == 404
    ack = Reports(pg_hub_app, "staff-a").request(
        "POST",
        f"/api/v1/reports/{report_id}/acknowledge",
        json={"method": "portal", "read_back": "已阅"},
    )
    assert ack.status_code == 200, ack.text
    assert rad1.chain(study.uid).json()["study_status"] == "acknowledged"
