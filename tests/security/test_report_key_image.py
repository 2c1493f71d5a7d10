"""The report's key image (issue 13): the draft marks an image of the study, the signed PDF
prints it.

A draft stores a reference (series, instance, frame, the window shown); only an image instance
of the same study is taken (422 ``report_key_image_invalid`` otherwise, and for a frame out of
range or half a window; malformed UIDs fail the one UID rule); at signing the hub renders the
frame to PNG and the signed PDF carries it as an image XObject, and still verifies. An addendum
marks its own.
"""

import subprocess
from pathlib import Path
from typing import Any

from cryptography import x509
from sqlalchemy import select

from imaging_hub.worklist.db.models import Instance, Report, Series
from imaging_hub.worklist.reports.verify import verify_pdf
from tests.security.conftest import HubApp
from tests.security.test_reports_api import Reports, Study, ingest_study

INVALID = "report_key_image_invalid"


def series_of(hub_app: HubApp, sop_instance_uid: str) -> str:
    with hub_app.sessions() as session:
        uid = session.scalar(
            select(Series.series_instance_uid)
            .join(Instance, Instance.series_id == Series.id)
            .where(Instance.sop_instance_uid == sop_instance_uid)
        )
        assert uid is not None
        return uid


def key_image(hub_app: HubApp, study: Study, **fields: Any) -> dict[str, Any]:
    return {
        "series_instance_uid": series_of(hub_app, study.sop_instance_uid),
        "sop_instance_uid": study.sop_instance_uid,
        "frame": 1,
        **fields,
    }


def pdf_images(tmp_path: Path, pdf: bytes) -> list[tuple[int, int]]:
    """(width, height) of every image XObject in *pdf* (poppler's pdfimages)."""
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    listing = subprocess.run(
        ["pdfimages", "-list", str(path)], capture_output=True, check=True, text=True
    ).stdout
    rows = [line.split() for line in listing.splitlines()[2:] if line.strip()]
    return [(int(row[3]), int(row[4])) for row in rows if row[2] == "image"]


def ca_certificate(hub_app: HubApp) -> x509.Certificate:
    return x509.load_pem_x509_certificate(hub_app.client.get("/api/v1/pki/ca.pem").content)


def test_key_image_is_saved_with_the_draft_and_printed_in_the_signed_pdf(
    hub_app: HubApp, tmp_path: Path
) -> None:
    study = ingest_study(hub_app)
    rad1 = Reports(hub_app, "rad1")
    rad1.claim(study.uid)
    marked = key_image(hub_app, study, window_center=40, window_width=80)
    draft = rad1.draft(study.uid, key_image=marked)
    assert draft.status_code == 200, draft.text
    assert draft.json()["key_image"] == {**marked, "window_center": 40.0, "window_width": 80.0}
    assert rad1.chain(study.uid).json()["draft"]["key_image"]["sop_instance_uid"] == (
        study.sop_instance_uid
    )

    # The draft is saved whole: without a key image it has none, and it can be set again
    # (the image's own VOI: no window).
    cleared = rad1.draft(study.uid)
    assert cleared.status_code == 200 and cleared.json()["key_image"] is None
    own_voi = key_image(hub_app, study)
    again = rad1.draft(study.uid, key_image=own_voi)
    assert again.json()["key_image"]["window_center"] is None

    signed = rad1.sign(again.json()["id"])
    assert signed.status_code == 200, signed.text
    assert signed.json()["key_image"]["sop_instance_uid"] == study.sop_instance_uid
    pdf = rad1.pdf(signed.json()["id"]).content
    images = pdf_images(tmp_path, pdf)
    assert images, "the signed PDF holds no image"
    assert all(max(size) <= 1024 for size in images)
    assert (128, 128) in images  # CT_small, rendered at its own size (never enlarged)

    result = verify_pdf(pdf, [ca_certificate(hub_app)])
    assert result.ok and result.intact and not result.modified


def test_a_report_without_key_image_has_no_image(hub_app: HubApp, tmp_path: Path) -> None:
    study = ingest_study(hub_app)
    rad1 = Reports(hub_app, "rad1")
    rad1.claim(study.uid)
    draft = rad1.draft(study.uid)
    assert draft.json()["key_image"] is None
    signed = rad1.sign(draft.json()["id"])
    assert signed.status_code == 200, signed.text
    assert pdf_images(tmp_path, rad1.pdf(signed.json()["id"]).content) == []


def test_an_instance_not_of_this_study_is_refused(hub_app: HubApp) -> None:
    study = ingest_study(hub_app)
    other = ingest_study(hub_app)  # same clinic, another study
    foreign = ingest_study(hub_app, clinic="clinic-b")
    rad1 = Reports(hub_app, "rad1")
    rad1.claim(study.uid)
    first = rad1.draft(study.uid)
    assert first.status_code == 200

    cases = [
        key_image(hub_app, other),  # another study's instance
        key_image(hub_app, foreign),  # another clinic's
        key_image(hub_app, study, sop_instance_uid="1.2.3.4.5"),  # unknown instance
        # the right instance under another study's series
        {
            **key_image(hub_app, study),
            "series_instance_uid": series_of(hub_app, other.sop_instance_uid),
        },
        key_image(hub_app, study, frame=2),  # a one-frame image
        key_image(hub_app, study, window_center=40),  # half a window
        key_image(hub_app, study, window_center=40, window_width=-1),
    ]
    for marked in cases:
        response = rad1.draft(study.uid, key_image=marked)
        assert response.status_code == 422, (marked, response.text)
        assert response.json()["code"] == INVALID, (marked, response.text)
        by_id = rad1.request(
            "PUT", f"/api/v1/reports/{first.json()['id']}", json={"key_image": marked}
        )
        assert by_id.status_code == 422 and by_id.json()["code"] == INVALID

    # The one UID rule: digits and single dots, at most 64 characters.
    for bad in ("1.2.abc", "1..2", "../1.2", "1" * 65, ""):
        response = rad1.draft(study.uid, key_image=key_image(hub_app, study, sop_instance_uid=bad))
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["code"] == "validation_failed"
    with hub_app.sessions() as session:
        report = session.get(Report, first.json()["id"])
        assert report is not None and report.key_image is None  # nothing was stored


def test_an_addendum_marks_its_own_key_image_and_no_document(
    hub_app: HubApp, tmp_path: Path
) -> None:
    study = ingest_study(hub_app)
    rad1 = Reports(hub_app, "rad1")
    rad1.claim(study.uid)
    report = rad1.draft(study.uid).json()
    signed = rad1.sign(report["id"]).json()
    assert signed["key_image"] is None

    addenda = f"/api/v1/studies/{study.uid}/report/addenda"
    body = {"impression": "补充：见关键图像。"}
    # The report's own Encapsulated PDF is in the study, but it is not an image.
    document = {
        "series_instance_uid": series_of(hub_app, signed["pdf_sop_instance_uid"]),
        "sop_instance_uid": signed["pdf_sop_instance_uid"],
    }
    refused = rad1.request("POST", addenda, json={**body, "key_image": document})
    assert refused.status_code == 422 and refused.json()["code"] == INVALID

    marked = key_image(hub_app, study, window_center=0, window_width=400)
    addendum = rad1.request("POST", addenda, json={**body, "key_image": marked})
    assert addendum.status_code == 201, addendum.text
    assert addendum.json()["key_image"]["window_width"] == 400.0
    done = rad1.sign(addendum.json()["id"])
    assert done.status_code == 200, done.text
    pdf = rad1.pdf(done.json()["id"]).content
    assert (128, 128) in pdf_images(tmp_path, pdf)
    assert verify_pdf(pdf, [ca_certificate(hub_app)]).ok
    # The first report's file is untouched and still has no image.
    assert pdf_images(tmp_path, rad1.pdf(signed["id"]).content) == []
