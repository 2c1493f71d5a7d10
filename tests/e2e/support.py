"""Helpers shared by the browser tests: studies sent the way a gateway sends them, logging in."""

import hashlib
import io
import re
from pathlib import Path

import httpx
import pydicom
from playwright.sync_api import expect
from pydicom.uid import generate_uid

from tests.peers.browser import BrowserPage
from tests.peers.hub import HubProcess

BUNDLED = Path(__file__).resolve().parents[2] / "src" / "imaging_hub" / "dicom" / "samples"


def make_instance(
    source: Path, *, study: str | None = None, series: str | None = None, **attrs: object
) -> bytes:
    """A copy of a real sample with fresh (or the given) UIDs and attributes, as Part-10 bytes."""
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for key, value in attrs.items():
        setattr(ds, key, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def ingest(hub: HubProcess, clinic: str, *instances: bytes) -> str:
    """Send instances of one study the way a gateway does, then complete it; its study UID."""
    sops: list[str] = []
    study_uids: set[str] = set()
    headers = {"Authorization": f"Bearer {hub.gateway_tokens[clinic]}"}
    with httpx.Client(base_url=hub.url, headers=headers, timeout=30) as client:
        for data in instances:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            put = client.put(
                f"/api/v1/ingest/instances/{ds.SOPInstanceUID}",
                content=data,
                headers={
                    "Content-Type": "application/dicom",
                    "X-Content-SHA256": hashlib.sha256(data).hexdigest(),
                },
            )
            assert put.status_code == 201, put.text
            sops.append(str(ds.SOPInstanceUID))
            study_uids.add(str(ds.StudyInstanceUID))
        assert len(study_uids) == 1
        (study_uid,) = study_uids
        done = client.post(
            f"/api/v1/ingest/studies/{study_uid}/complete", json={"sop_instance_uids": sops}
        )
        assert done.json() == {"complete": True, "missing": []}, done.text
    return study_uid


def login(bp: BrowserPage, hub: HubProcess, username: str, *, password: str | None = None) -> None:
    page = bp.page
    page.goto("/")
    expect(page).to_have_url(re.compile(r"#/login"))
    page.fill("#login-username", username)
    page.fill("#login-password", password or hub.passwords[username])
    page.click("#login-submit")


def session_cookie_value(bp: BrowserPage) -> str | None:
    for cookie in bp.context.cookies():
        if cookie.get("name") == "ih_session":
            assert cookie.get("httpOnly") is True
            assert cookie.get("sameSite") == "Strict"
            return cookie.get("value")
    return None


def me_status(hub: HubProcess, session_cookie: str) -> int:
    response = httpx.get(
        f"{hub.url}/api/v1/auth/me", cookies={"ih_session": session_cookie}, timeout=10
    )
    return response.status_code


def claim_and_sign(client: httpx.Client, password: str, uid: str, **draft: object) -> dict:
    """Through the API as a radiologist (*client*): claim study *uid*, write the report
    (*draft*: findings, impression, ...) and sign it with *password*; the signed report."""
    assert client.post(f"/api/v1/studies/{uid}/claim").status_code == 200
    drafted = client.put(f"/api/v1/studies/{uid}/report", json=draft)
    assert drafted.status_code == 200, drafted.text
    signed = client.post(
        f"/api/v1/reports/{drafted.json()['id']}/sign", json={"password": password}
    )
    assert signed.status_code == 200, signed.text
    body: dict = signed.json()
    return body
