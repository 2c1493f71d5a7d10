"""A signed report end to end over HTTP (issue 13 "Must show"), on SQLite and PostgreSQL.

rad1 claims, drafts and signs; the PDF verifies with pyHanko against the CA the hub serves
(``GET /api/v1/pki/ca.pem``), signed by rad1 with an embedded timestamp, and a copy with one
changed byte does not; the Encapsulated PDF retrieved through WADO-RS holds exactly the signed
PDF; the SR parses with highdicom as TID 2000 with the same (Chinese) findings; an addendum
leaves the first PDF unchanged and references it. Password changes keep signing working.
"""

import hashlib
import io
import re
from typing import Any

import highdicom as hd
import httpx
import pytest
from cryptography import x509
from pydicom import dcmread
from sqlalchemy import select

from imaging_hub.dicom.report_objects import encapsulated_pdf_bytes, sr_section_texts
from imaging_hub.worklist.db.models import SigningCredential, User
from imaging_hub.worklist.reports.verify import verify_pdf
from tests.security.conftest import HubApp, _template_db, hub_app, pg_hub_app  # noqa: F401
from tests.security.test_reports_api import (
    FINDINGS,
    IMPRESSION,
    Reports,
    ingest_study,
    signed_report,
)

DICOM = 'multipart/related; type="application/dicom"'


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def app(request: pytest.FixtureRequest) -> HubApp:
    name = "hub_app" if request.param == "sqlite" else "pg_hub_app"
    found: HubApp = request.getfixturevalue(name)
    return found


def parts(response: httpx.Response) -> list[bytes]:
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    out = []
    for chunk in response.content.split(f"--{boundary}".encode())[1:]:
        if chunk.startswith(b"--"):
            break
        _, _, body = chunk.partition(b"\r\n\r\n")
        out.append(body[:-2])
    return out


def wado_instance(app: HubApp, username: str, study: str, sop: str) -> Any:
    """The one instance *sop* of *study*, found through QIDO-RS and retrieved by WADO-RS."""
    headers = app.headers(username)
    found = app.client.get(
        f"/dicomweb/studies/{study}/instances",
        params={"SOPInstanceUID": sop},
        headers={**headers, "Accept": "application/dicom+json"},
    )
    assert found.status_code == 200, found.text
    series = found.json()[0]["0020000E"]["Value"][0]
    response = app.client.get(
        f"/dicomweb/studies/{study}/series/{series}/instances/{sop}",
        headers={**headers, "Accept": DICOM},
    )
    assert response.status_code == 200, response.text
    (body,) = parts(response)
    return dcmread(io.BytesIO(body))


def ca_certificate(app: HubApp) -> x509.Certificate:
    pem = app.client.get("/api/v1/pki/ca.pem")  # no token: public
    assert pem.status_code == 200
    return x509.load_pem_x509_certificate(pem.content)


def test_signed_report_verifies_and_lands_in_the_study(app: HubApp) -> None:
    study = ingest_study(app)
    body = signed_report(app, study)
    staff = Reports(app, "staff-a")  # the clinic downloads it
    pdf = staff.pdf(body["id"]).content
    assert hashlib.sha256(pdf).hexdigest() == body["sha256"]

    ca = ca_certificate(app)
    result = verify_pdf(pdf, [ca])
    assert result.ok and result.intact and result.trusted and not result.modified
    assert result.signer_username == "rad1"
    assert result.timestamp_time is not None and result.timestamp_trusted
    assert result.ltv_embedded
    found = re.search(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)", pdf)
    assert found is not None
    changed = bytearray(pdf)
    changed[int(found[2]) // 2] ^= 0x01
    assert not verify_pdf(bytes(changed), [ca]).ok

    # The Encapsulated PDF, through QIDO/WADO, as the clinic sees it: the signed bytes exactly.
    encapsulated = wado_instance(app, "staff-a", study.uid, body["pdf_sop_instance_uid"])
    assert encapsulated.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"
    assert encapsulated_pdf_bytes(encapsulated) == pdf
    assert str(encapsulated.PatientName) == "张^三丰"

    # The SR: TID 2000, verified and final, with the same Chinese text.
    sr = wado_instance(app, "rad1", study.uid, body["sr_sop_instance_uid"])
    parsed = hd.sr.EnhancedSR.from_dataset(sr)
    assert parsed.ContentTemplateSequence[0].TemplateIdentifier == "2000"
    assert sr.VerificationFlag == "VERIFIED" and sr.PreliminaryFlag == "FINAL"
    texts = sr_section_texts(sr)
    assert texts["121070"] == [FINDINGS] and texts["121072"] == [IMPRESSION]
    assert "PredecessorDocumentsSequence" not in sr

    # Both objects are series of the study (QIDO), beside the image.
    series = app.client.get(
        f"/dicomweb/studies/{study.uid}/series",
        headers={**app.headers("rad1"), "Accept": "application/dicom+json"},
    ).json()
    assert sorted(s["00080060"]["Value"][0] for s in series) == ["CT", "DOC", "SR"]


def test_addendum_leaves_the_first_pdf_unchanged_and_references_it(app: HubApp) -> None:
    study = ingest_study(app)
    first = signed_report(app, study)
    rad1, rad2 = Reports(app, "rad1"), Reports(app, "rad2")
    draft = rad2.request(
        "POST",
        f"/api/v1/studies/{study.uid}/report/addenda",
        json={
            "findings": "补充：右侧额叶小片状低密度影。",
            "impression": "补充诊断：陈旧性腔隙灶。",
        },
    )
    assert draft.status_code == 201, draft.text
    addendum = draft.json()
    assert addendum["kind"] == "addendum" and addendum["predecessor_id"] == first["id"]
    assert rad1.sign(addendum["id"]).status_code == 403  # rad2's draft
    signed = rad2.sign(addendum["id"])
    assert signed.status_code == 200, signed.text
    second = signed.json()
    assert second["sha256"] != first["sha256"]

    again = rad1.pdf(first["id"]).content
    assert hashlib.sha256(again).hexdigest() == first["sha256"]
    ca = ca_certificate(app)
    assert verify_pdf(again, [ca]).ok
    addendum_pdf = rad1.pdf(second["id"]).content
    result = verify_pdf(addendum_pdf, [ca])
    assert result.ok and result.signer_username == "rad2"

    sr = wado_instance(app, "rad1", study.uid, second["sr_sop_instance_uid"])
    predecessors = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    referenced = predecessors.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    assert referenced == first["sr_sop_instance_uid"]
    chain = Reports(app, "staff-a").chain(study.uid).json()
    assert chain["report"]["id"] == first["id"]
    assert [a["id"] for a in chain["addenda"]] == [second["id"]]
    assert chain["study_status"] == "signed"
    timeline = [
        e["kind"]
        for e in app.client.get(
            f"/api/v1/studies/{study.uid}", headers=app.headers("admin")
        ).json()["timeline"]
    ]
    assert "addendum_drafted" in timeline and "addendum_signed" in timeline


def test_password_change_keeps_the_key_and_an_admin_reset_reissues(
    hub_app: HubApp,  # noqa: F811
) -> None:
    first = signed_report(hub_app, ingest_study(hub_app))
    rad1 = Reports(hub_app, "rad1")
    changed = rad1.request(
        "POST",
        "/api/v1/auth/password",
        json={"current_password": rad1.password, "new_password": "a-new-password-2027"},
    )
    assert changed.status_code in (200, 204), changed.text
    hub_app.passwords["rad1"] = "a-new-password-2027"
    rad1 = Reports(hub_app, "rad1")
    second = signed_report(hub_app, ingest_study(hub_app))
    assert second["signer_certificate_serial"] == first["signer_certificate_serial"]

    # An administrator's reset: the old key cannot be opened, a new certificate is issued.
    with hub_app.sessions() as session:
        from imaging_hub.worklist.access.accounts import set_password

        user = session.scalars(select(User).where(User.username == "rad1")).one()
        set_password(session, user=user, new_password="reset-by-admin-2027")
        session.commit()
    hub_app.passwords["rad1"] = "reset-by-admin-2027"
    third = signed_report(hub_app, ingest_study(hub_app))
    assert third["signer_certificate_serial"] != first["signer_certificate_serial"]
    with hub_app.sessions() as session:
        rows = session.scalars(select(SigningCredential).order_by(SigningCredential.id)).all()
        assert [r.revoked_at is not None for r in rows] == [True, False]
    ca = ca_certificate(hub_app)
    crl = x509.load_der_x509_crl(hub_app.client.get("/api/v1/pki/crl.der").content)
    assert crl.get_revoked_certificate_by_serial_number(int(first["signer_certificate_serial"]))
    # Reports signed before the reset still verify (timestamped before the revocation).
    assert verify_pdf(Reports(hub_app, "rad1").pdf(first["id"]).content, [ca]).ok
