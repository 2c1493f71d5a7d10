"""Signed reports back at the clinic, against the real hub process (``tests.peers.hub``).

A study of clinic-a is uploaded with the gateway's token (the ingest API), rad1 signs a report
over HTTP (real PAdES signature), and the gateway's report side — :class:`ReportPuller` over
:class:`ReportStore`, with the real :class:`HubClient` — pulls it; the LAN page runs in uvicorn
on a free port and is driven over HTTP. The C-STORE goes to dcmtk's ``storescp``. The
gateway's ``serve`` process is tested once end to end (pull + LAN page wiring).
"""

import hashlib
import io
import logging
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from imaging_hub.dicom_gateway.hub_client import HubClient
from imaging_hub.dicom_gateway.lan_page import LanPage, LanPageServer
from imaging_hub.dicom_gateway.report_sender import DicomNode
from imaging_hub.dicom_gateway.reports import ReportPuller, ReportStore
from imaging_hub.errors import ForwardError
from imaging_hub.worklist.db.models import AuditEvent, Report, Study, User
from tests.conftest import SAMPLES
from tests.peers.dcmtk import storescp
from tests.peers.hub import GatewayFactory, HubProcess
from tests.peers.net import free_port

SOURCE = SAMPLES / "by-modality/CT/CT_small.dcm"
PATIENT = "王^小明"
CATEGORY = "气胸 pneumothorax"
HOSTILE = "<img src=x onerror=alert(1)>"


# --- the hub side: a signed report of clinic-a -------------------------------------------------


def ingest_study(hub: HubProcess, clinic: str = "clinic-a", *, patient: str = PATIENT) -> str:
    """One CT instance of *clinic* through the gateway ingest API, complete: unread."""
    ds = dcmread(SOURCE)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = patient
    ds.PatientID = f"P-{generate_uid()[-8:]}"
    ds.AccessionNumber = f"A{generate_uid()[-10:]}"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    headers = {"Authorization": f"Bearer {hub.gateway_tokens[clinic]}"}
    with httpx.Client(base_url=hub.url, headers=headers, timeout=30) as client:
        put = client.put(
            f"/api/v1/ingest/instances/{ds.SOPInstanceUID}",
            content=data,
            headers={
                "Content-Type": "application/dicom",
                "X-Content-SHA256": hashlib.sha256(data).hexdigest(),
            },
        )
        assert put.status_code in (200, 201), put.text
        done = client.post(
            f"/api/v1/ingest/studies/{ds.StudyInstanceUID}/complete",
            json={"sop_instance_uids": [ds.SOPInstanceUID]},
        )
        assert done.status_code == 200, done.text
        assert done.json().get("missing", []) == []
    return str(ds.StudyInstanceUID)


def sign_report(hub: HubProcess, study_uid: str, *, critical: bool = True) -> dict[str, Any]:
    """rad1 claims, drafts and signs over HTTP; the signed report."""
    with hub.client("rad1") as rad1:
        assert rad1.post(f"/api/v1/studies/{study_uid}/claim").status_code == 200
        draft = rad1.put(
            f"/api/v1/studies/{study_uid}/report",
            json={
                "findings": "右侧胸腔见无肺纹理透亮区。",
                "impression": "右侧气胸，建议立即处理。",
                "critical": critical,
                "critical_category": CATEGORY if critical else "",
            },
        )
        assert draft.status_code == 200, draft.text
        signed = rad1.post(
            f"/api/v1/reports/{draft.json()['id']}/sign",
            json={"password": hub.passwords["rad1"]},
            timeout=120,
        )
        assert signed.status_code == 200, signed.text
        body: dict[str, Any] = signed.json()
    return body


def hub_pdf(hub: HubProcess, report_id: int) -> bytes:
    with hub.client("staff-a") as staff:
        response = staff.get(f"/api/v1/reports/{report_id}/pdf")
        assert response.status_code == 200
        return response.content


def hub_report(hub: HubProcess, report_id: int) -> Report:
    with hub.sessions() as session:
        report = session.get(Report, report_id)
        assert report is not None
        session.expunge(report)
        return report


def delivered_events(hub: HubProcess, report_id: int) -> int:
    with hub.sessions() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "report.delivered")
            )
            or 0
        )


# --- the gateway side ----------------------------------------------------------------------------


@dataclass
class Gateway:
    spool: Path
    store: ReportStore
    client: HubClient
    puller: ReportPuller

    def close(self) -> None:
        self.client.close()
        self.store.close()


def open_gateway(
    hub: HubProcess, spool: Path, *, client: HubClient | None = None, node: DicomNode | None = None
) -> Gateway:
    store = ReportStore(spool)
    client = client or HubClient(hub.url, hub.gateway_tokens["clinic-a"], timeout=30)
    puller = ReportPuller(
        store,
        client,
        wait_seconds=1,
        retry_initial_seconds=0.2,
        retry_max_seconds=1,
        node=node,
        calling_ae="CLINIC_A",
    )
    return Gateway(spool, store, client, puller)


@pytest.fixture
def gateway(hub: HubProcess, tmp_path: Path) -> Iterator[Gateway]:
    opened = open_gateway(hub, tmp_path / "spool")
    try:
        yield opened
    finally:
        opened.close()


class Crash(BaseException):
    """A process dying between two statements (not an Exception: nothing catches it)."""


class CrashBeforeConfirm(HubClient):
    def confirm_report(self, report_id: int, sha256: str) -> str:
        raise Crash()


class CorruptingClient(HubClient):
    """A link that flips one byte of every download."""

    def download_report(
        self, report_id: int, kind: str, out: BinaryIO, *, max_bytes: int
    ) -> tuple[int, str]:
        buffer = io.BytesIO()
        super().download_report(report_id, kind, buffer, max_bytes=max_bytes)
        data = bytearray(buffer.getvalue())
        data[len(data) // 2] ^= 0xFF
        out.write(data)
        return len(data), hashlib.sha256(data).hexdigest()


def pull_until(puller: ReportPuller, report_id: int, store: ReportStore) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        puller.run_once()
        held = store.held(report_id)
        if held is not None and held.delivered_at:
            return
    raise AssertionError(f"report {report_id} was not pulled within 30 s")


# --- pull, store, confirm --------------------------------------------------------------------


def test_the_gateway_holds_the_pdf_byte_exact_and_delivered_is_set_once_across_a_crash(
    hub: HubProcess, tmp_path: Path
) -> None:
    study = ingest_study(hub)
    signed = sign_report(hub, study)
    report_id = int(signed["id"])
    spool = tmp_path / "spool"

    # First run: the PDF is stored, then the process dies before it tells the hub.
    crashing = open_gateway(
        hub, spool, client=CrashBeforeConfirm(hub.url, hub.gateway_tokens["clinic-a"])
    )
    with pytest.raises(Crash):
        crashing.puller.run_once()
    crashing.close()
    held_pdf = (spool / "reports" / f"{report_id}.pdf").read_bytes()
    assert held_pdf == hub_pdf(hub, report_id)
    assert hashlib.sha256(held_pdf).hexdigest() == signed["sha256"]
    assert hub_report(hub, report_id).delivered_at is None  # the hub was not told yet
    assert delivered_events(hub, report_id) == 0

    # A file damaged meanwhile (a bad disk) is never confirmed: forgotten and pulled again.
    damaged = bytearray(held_pdf)
    damaged[100] ^= 0x01
    (spool / "reports" / f"{report_id}.pdf").write_bytes(bytes(damaged))
    checking = open_gateway(
        hub, spool, client=CrashBeforeConfirm(hub.url, hub.gateway_tokens["clinic-a"])
    )
    assert checking.puller.confirm_held() == 0
    assert checking.store.held(report_id) is None
    with pytest.raises(Crash):  # pulled again, and again the process dies before confirming
        checking.puller.run_once()
    checking.close()
    assert (spool / "reports" / f"{report_id}.pdf").read_bytes() == held_pdf
    assert hub_report(hub, report_id).delivered_at is None

    # Restart: the held report is confirmed at once, nothing is downloaded twice.
    restarted = open_gateway(hub, spool)
    try:
        assert restarted.puller.confirm_held() == 1
        first = hub_report(hub, report_id).delivered_at
        assert first is not None
        assert restarted.puller.run_once() is False  # nothing left to pull
        assert restarted.puller.confirm_held() == 0
        assert hub_report(hub, report_id).delivered_at == first
        assert delivered_events(hub, report_id) == 1
        with hub.sessions() as session:
            status = session.scalar(select(Study.status).where(Study.study_instance_uid == study))
            assert status == "delivered"
        held = restarted.store.held(report_id)
        assert held is not None and held.delivered_at and held.critical
        assert held.patient_name.replace("^", "") == "王小明"
        files = sorted(p.name for p in (spool / "reports").iterdir())
        assert files == [f"{report_id}.pdf", "tmp"]
        assert list((spool / "reports" / "tmp").iterdir()) == []
        # A confirmation with a wrong SHA-256 is refused by the hub and changes nothing.
        with pytest.raises(ForwardError) as refused:
            restarted.client.confirm_report(report_id, "0" * 64)
        assert refused.value.code == "checksum_mismatch"
        assert hub_report(hub, report_id).delivered_at == first
    finally:
        restarted.close()


def test_a_corrupted_download_is_never_kept_nor_confirmed(hub: HubProcess, tmp_path: Path) -> None:
    study = ingest_study(hub)
    report_id = int(sign_report(hub, study, critical=False)["id"])
    spool = tmp_path / "spool"
    bad = open_gateway(hub, spool, client=CorruptingClient(hub.url, hub.gateway_tokens["clinic-a"]))
    try:
        assert bad.puller.run_once() is False
        assert bad.store.held(report_id) is None
        assert not (spool / "reports" / f"{report_id}.pdf").exists()
        assert list((spool / "reports" / "tmp").iterdir()) == []
        assert hub_report(hub, report_id).delivered_at is None
    finally:
        bad.close()
    good = open_gateway(hub, spool)
    try:
        pull_until(good.puller, report_id, good.store)
        assert (spool / "reports" / f"{report_id}.pdf").read_bytes() == hub_pdf(hub, report_id)
    finally:
        good.close()


def test_an_unreachable_hub_raises_a_retryable_error_and_changes_nothing(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    store = ReportStore(tmp_path / "spool")
    client = HubClient(f"http://127.0.0.1:{port}", "no-token", timeout=5)
    puller = ReportPuller(store, client, wait_seconds=1)
    try:
        with pytest.raises(ForwardError) as failed:
            puller.run_once()
        assert failed.value.retryable
        assert store.counts()["reports_held"] == 0
    finally:
        client.close()
        store.close()


# --- the LAN page ------------------------------------------------------------------------------


@dataclass
class Lan:
    server: LanPageServer
    url: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, follow_redirects=False)


@pytest.fixture
def lan(gateway: Gateway) -> Iterator[Lan]:
    port = free_port()
    server = LanPageServer(LanPage(gateway.store, clinic="clinic-a"), host="127.0.0.1", port=port)
    server.start()
    try:
        yield Lan(server, f"http://127.0.0.1:{port}")
    finally:
        server.stop()


def sign_in(client: httpx.Client, username: str, password: str) -> httpx.Response:
    return client.post("/login", data={"username": username, "password": password})


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found[1]


def test_the_lan_page_lists_serves_and_acknowledges_while_the_hub_is_down(
    hub: HubProcess, gateway: Gateway, lan: Lan
) -> None:
    study = ingest_study(hub)
    signed = sign_report(hub, study)
    report_id = int(signed["id"])
    pull_until(gateway.puller, report_id, gateway.store)
    assert gateway.store.counts()["staff_verifiers"] >= 1
    pdf = hub_pdf(hub, report_id)
    hub.stop()  # the WAN is down from here

    with lan.client() as browser:
        assert browser.get("/").status_code == 303  # no session: to the sign-in page
        login = browser.get("/login")
        assert login.status_code == 200
        assert "登录" in login.text and 'lang="zh-CN"' in login.text
        signed_in = sign_in(browser, "staff-a", hub.passwords["staff-a"])
        assert signed_in.status_code == 303, signed_in.text
        cookie = signed_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")

        listing = browser.get("/")
        assert listing.status_code == 200
        assert listing.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in listing.headers["content-security-policy"]
        assert listing.headers["x-frame-options"] == "DENY"
        assert "王 小明" in listing.text
        # The header names the clinic as the hub does (synced with the staff list), not its code;
        # the patient's sex in words (CT_small's is "O").
        assert "<h1>检查报告 · A镇卫生院 Township Health Centre A</h1>" in listing.text
        assert re.search(r'<span class="muted">P-[0-9]+ 其他 ', listing.text)
        row = re.search(
            rf'<tr class="critical-open"[^>]*data-report-id="{report_id}"', listing.text
        )
        assert row is not None, "the critical result stands out until acknowledged"
        assert "未确认" in listing.text
        english = browser.get("/?lang=en")
        assert "not acknowledged" in english.text and 'lang="en"' in english.text
        assert re.search(r'<span class="muted">P-[0-9]+ Other ', english.text)
        browser.get("/?lang=zh-CN")

        found = browser.get("/", params={"q": "王^小"})
        assert f'data-report-id="{report_id}"' in found.text
        assert "lan-empty" in browser.get("/", params={"q": "nobody-like-this"}).text

        inline = browser.get(f"/reports/{report_id}/pdf")
        assert inline.status_code == 200 and inline.content == pdf
        assert inline.headers["content-type"] == "application/pdf"
        assert inline.headers["content-disposition"].startswith("inline;")
        assert inline.headers["cache-control"] == "no-store"
        download = browser.get(f"/reports/{report_id}/pdf", params={"download": "1"})
        assert download.headers["content-disposition"].startswith(
            f'attachment; filename="report-{report_id}.pdf"'
        )
        assert browser.get("/reports/999999/pdf").status_code == 404

        form = browser.get(f"/reports/{report_id}/acknowledge")
        assert form.status_code == 200
        token = csrf_of(form.text)
        missing = browser.post(
            f"/reports/{report_id}/acknowledge",
            data={"csrf": token, "method": "phone", "read_back": "  "},
        )
        assert missing.status_code == 422
        done = browser.post(
            f"/reports/{report_id}/acknowledge",
            data={"csrf": token, "method": "phone", "read_back": "右侧气胸，已通知值班医生"},
        )
        assert done.status_code == 303
        after = browser.get(done.headers["location"])
        assert "已确认" in after.text and "待同步到影像中心" in after.text
        assert 'class="critical-open"' not in after.text
        again = browser.post(
            f"/reports/{report_id}/acknowledge",
            data={"csrf": token, "method": "phone", "read_back": "second"},
        )
        assert again.status_code == 409

    # Offline, the acknowledgement waits; when the hub is back it reaches it.
    assert gateway.store.counts()["acknowledgements_waiting"] == 1
    with pytest.raises(ForwardError):
        gateway.puller.push_acknowledgements()
    hub.start()
    assert gateway.puller.push_acknowledgements() == 1
    report = hub_report(hub, report_id)
    assert report.acknowledged_at is not None
    assert report.acknowledged_via == "gateway"
    assert report.acknowledgement_method == "phone"
    assert gateway.store.counts()["acknowledgements_waiting"] == 0
    assert gateway.puller.push_acknowledgements() == 0


def test_the_lan_page_refuses_wrong_credentials_other_clinics_no_session_and_forged_posts(
    hub: HubProcess, gateway: Gateway, lan: Lan
) -> None:
    study = ingest_study(hub, patient=HOSTILE)
    report_id = int(sign_report(hub, study)["id"])
    pull_until(gateway.puller, report_id, gateway.store)

    with lan.client() as browser:
        assert sign_in(browser, "staff-a", hub.passwords["staff-a"]).status_code == 303
        listing = browser.get("/").text
        # Shown as text ("=" separates PN component groups), never as markup.
        assert "<img" not in listing and "&lt;img src" in listing
        assert browser.get("/", params={"q": "<script>"}).status_code == 200
        assert "<script>" not in browser.get("/", params={"q": "<script>"}).text

    with lan.client() as browser:
        wrong = sign_in(browser, "staff-a", "not-the-password")
        assert wrong.status_code == 401 and "用户名或密码错误" in wrong.text
        assert "lan_session" not in wrong.headers.get("set-cookie", "")
        other_clinic = sign_in(browser, "staff-b", hub.passwords["staff-b"])
        assert other_clinic.status_code == 401
        radiologist = sign_in(browser, "rad1", hub.passwords["rad1"])
        assert radiologist.status_code == 401  # only the clinic's staff are synced
        # Nothing reachable without a session.
        assert browser.get(f"/reports/{report_id}/pdf").status_code == 303
        no_session = browser.post(
            f"/reports/{report_id}/acknowledge",
            data={"csrf": "x", "method": "phone", "read_back": "x"},
        )
        assert no_session.status_code == 303
        assert browser.post("/login", content=b"\xff" * 20000).status_code == 400

    with lan.client() as browser:
        assert sign_in(browser, "staff-a", hub.passwords["staff-a"]).status_code == 303
        forged = browser.post(
            f"/reports/{report_id}/acknowledge",
            data={"csrf": "forged", "method": "phone", "read_back": "x"},
        )
        assert forged.status_code == 403
        token = csrf_of(browser.get(f"/reports/{report_id}/acknowledge").text)
        cross_site = browser.post(
            f"/reports/{report_id}/acknowledge",
            data={"csrf": token, "method": "phone", "read_back": "x"},
            headers={"Origin": "http://evil.example"},
        )
        assert cross_site.status_code == 403
        bad_method = browser.post(
            f"/reports/{report_id}/acknowledge",
            data={"csrf": token, "method": "telepathy", "read_back": "x"},
        )
        assert bad_method.status_code == 422
        held = gateway.store.held(report_id)
        assert held is not None and held.ack_at is None  # nothing recorded

        # staff-a is disabled at the hub: after the next sync, the session ends and sign-in fails.
        with hub.sessions() as session:
            user = session.scalars(select(User).where(User.username == "staff-a")).one()
            user.is_active = False
            session.commit()
        gateway.puller.sync_staff()
        assert browser.get("/").status_code == 303
        assert sign_in(browser, "staff-a", hub.passwords["staff-a"]).status_code == 401

    # Guessing is throttled per user name (429 even with the right password after that).
    with lan.client() as browser:
        for _ in range(5):
            assert sign_in(browser, "staff-x", "guess").status_code == 401
        assert sign_in(browser, "staff-x", "guess").status_code == 429


# --- acknowledgements made at the hub reach the LAN page ---------------------------------------


def display_name(hub: HubProcess, username: str) -> str:
    with hub.sessions() as session:
        return str(session.scalar(select(User.display_name).where(User.username == username)))


def test_an_acknowledgement_in_the_portal_reaches_the_lan_page_within_one_cycle(
    hub: HubProcess, gateway: Gateway, lan: Lan, tmp_path: Path
) -> None:
    study = ingest_study(hub)
    signed = sign_report(hub, study)
    report_id = int(signed["id"])
    pull_until(gateway.puller, report_id, gateway.store)
    held = gateway.store.held(report_id)
    assert held is not None and held.awaiting_acknowledgement
    assert gateway.puller.sync_acknowledgements() == 0  # asked: not acknowledged yet

    # Clinic-b's gateway, even holding a report under this very id and SHA-256, learns nothing.
    other = open_gateway(
        hub,
        tmp_path / "spool-b",
        client=HubClient(hub.url, hub.gateway_tokens["clinic-b"], timeout=30),
    )
    try:
        path = other.store.pdf_path(report_id)
        pdf = hub_pdf(hub, report_id)
        other.store.write_file(path, lambda out: (out.write(pdf), signed["sha256"]), None)
        other.store.record({**signed, "id": report_id, "critical": True}, size=len(pdf), node=False)

        with hub.client("staff-a") as staff:
            portal = staff.post(
                f"/api/v1/reports/{report_id}/acknowledge",
                json={"method": "phone", "read_back": "右侧气胸，已通知值班医生"},
            )
            assert portal.status_code == 200, portal.text

        assert other.puller.sync_acknowledgements() == 0
        still = other.store.held(report_id)
        assert still is not None and still.awaiting_acknowledgement
    finally:
        other.close()

    # One cycle of clinic-a's pull loop: the gateway knows who acknowledged it, when, where.
    gateway.puller.run_once(wait=0)
    held = gateway.store.held(report_id)
    assert held is not None and not held.awaiting_acknowledgement
    row = hub_report(hub, report_id)
    assert row.acknowledged_at is not None and held.hub_acknowledged_at
    assert (
        abs(
            (
                datetime.fromisoformat(held.hub_acknowledged_at)
                - row.acknowledged_at.replace(tzinfo=UTC)
            ).total_seconds()
        )
        < 1
    )
    name = display_name(hub, "staff-a")
    assert held.acknowledged_by == name and held.acknowledged_via == "portal"
    assert gateway.store.counts()["reports_critical_open"] == 0
    assert gateway.store.acknowledgements_to_learn() == []  # nothing asked any more
    assert gateway.puller.sync_acknowledgements() == 0

    with lan.client() as browser:
        assert sign_in(browser, "staff-a", hub.passwords["staff-a"]).status_code == 303
        listing = browser.get("/").text
        row_html = re.search(rf'<tr[^>]*data-report-id="{report_id}".*?</tr>', listing, re.S)
        assert row_html is not None
        assert 'class="critical-open"' not in row_html[0]
        assert 'data-acknowledged="true"' in row_html[0]
        assert 'data-acknowledged-via="portal"' in row_html[0]
        assert name in row_html[0] and "门户" in row_html[0] and "已确认" in row_html[0]
        assert "lan-ack-link" not in row_html[0] and "lan-critical-open" not in listing
        english = browser.get("/?lang=en").text
        assert f"by {name} (portal)" in english
        assert browser.get(f"/reports/{report_id}/acknowledge").status_code == 409


def test_a_report_id_handed_out_again_after_a_hub_restore_never_overwrites_the_held_report(
    hub: HubProcess, gateway: Gateway, lan: Lan, caplog: pytest.LogCaptureFixture
) -> None:
    study = ingest_study(hub)
    signed = sign_report(hub, study)
    report_id = int(signed["id"])
    new_pdf = hub_pdf(hub, report_id)

    # The gateway already holds another report under this id: signed by the hub before it was
    # restored from an older backup, critical, acknowledged on the LAN page, not yet passed on.
    old_pdf = b"%PDF-1.7\n% the report held before the hub was restored\n%%EOF\n"
    old_sha = hashlib.sha256(old_pdf).hexdigest()
    store = gateway.store
    store.write_file(store.pdf_path(report_id), lambda out: (out.write(old_pdf), old_sha), None)
    store.record(
        {
            "id": report_id,
            "study_instance_uid": generate_uid(),
            "accession_number": "OLD-1",
            "patient_id": "P-OLD",
            "patient_name": "李^四",
            "signed_at": "2026-11-30T08:00:00+00:00",
            "sha256": old_sha,
            "critical": True,
            "critical_category": "脑出血",
        },
        size=len(old_pdf),
        node=False,
    )
    store.mark_delivered(report_id, "2026-11-30T08:01:00+00:00")
    assert store.acknowledge(
        report_id, username="staff-a", display_name="A", method="phone", read_back="脑出血"
    )

    with caplog.at_level(logging.INFO, logger="imaging_hub.dicom_gateway.reports"):
        pull_until(gateway.puller, report_id, store)  # confirms by hub id
        new = store.current(report_id)
        assert new is not None and new.sha256 == signed["sha256"]
        assert new.id != report_id and new.id > 2**31 and new.hub_id == report_id
        gateway.puller.run_once(wait=0)

    old = store.held(report_id)
    assert old is not None and old.sha256 == old_sha and old.replaced_at is not None
    assert old.hub_id == report_id and old.patient_id == "P-OLD"
    assert store.pdf_path(report_id).read_bytes() == old_pdf  # never overwritten
    assert store.pdf_path(new.id).read_bytes() == new_pdf
    assert hub_report(hub, report_id).delivered_at is not None
    # The old report's acknowledgement is kept here: never passed to the hub's report of that id.
    assert old.ack_state == "local" and not old.awaiting_acknowledgement
    assert hub_report(hub, report_id).acknowledged_at is None
    assert store.counts()["acknowledgements_waiting"] == 0
    assert store.counts()["reports_held"] == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # Found by the acknowledgement's push (the hub refuses another report's SHA-256), before
    # the pull: logged once, by id.
    assert len(warnings) == 1 and f"report {report_id}:" in warnings[0].getMessage()
    for record in caplog.records:  # no patient data in the log
        text = record.getMessage()
        assert "李" not in text and "王" not in text and "P-OLD" not in text
        assert "OLD-1" not in text and new.accession_number not in text

    # Pulling again changes nothing: still two reports, no new copy.
    assert gateway.puller.pull({**signed, "id": report_id}) is True
    assert store.counts()["reports_held"] == 2

    with lan.client() as browser:
        assert sign_in(browser, "staff-a", hub.passwords["staff-a"]).status_code == 303
        listing = browser.get("/").text
        assert f'data-report-id="{report_id}"' in listing
        assert f'data-report-id="{new.id}"' in listing
        assert listing.count('data-testid="lan-replaced"') == 1
        assert browser.get(f"/reports/{report_id}/pdf").content == old_pdf
        assert browser.get(f"/reports/{new.id}/pdf").content == new_pdf
        # The new one (a critical result) can be acknowledged; it reaches the hub by its id.
        token = csrf_of(browser.get(f"/reports/{new.id}/acknowledge").text)
        done = browser.post(
            f"/reports/{new.id}/acknowledge",
            data={"csrf": token, "method": "in_person", "read_back": "右侧气胸"},
        )
        assert done.status_code == 303
    assert gateway.puller.push_acknowledgements() == 1
    row = hub_report(hub, report_id)
    assert row.acknowledged_via == "gateway" and row.acknowledgement_method == "in_person"
    assert store.held(report_id) is not None and store.pdf_path(report_id).read_bytes() == old_pdf


# --- the clinic DICOM node ---------------------------------------------------------------------


def test_the_encapsulated_pdf_reaches_a_dicom_node_after_it_comes_up(
    hub: HubProcess, tmp_path: Path
) -> None:
    down = free_port()
    spool = tmp_path / "spool"
    gateway = open_gateway(hub, spool, node=DicomNode("CLINIC_PACS", "127.0.0.1", down))
    try:
        study = ingest_study(hub)
        signed = sign_report(hub, study)
        report_id = int(signed["id"])
        pull_until(gateway.puller, report_id, gateway.store)
        assert gateway.puller.deliver_to_node() == 0  # the node is down: retried later
        held = gateway.store.held(report_id)
        assert held is not None and held.node_state == "pending" and held.node_attempts == 1
        assert "could not be reached" in held.node_last_error or "refused" in held.node_last_error
        assert gateway.store.counts()["reports_waiting_for_node"] == 1

        received = tmp_path / "pacs"
        with storescp(received, ae_title="CLINIC_PACS") as port:
            gateway.puller.node = DicomNode("CLINIC_PACS", "127.0.0.1", port)
            with gateway.store._tx() as db:  # due now rather than after the back-off
                db.execute("UPDATE reports SET node_next_try_at = 0")
            assert gateway.puller.deliver_to_node() == 1
        files = list(received.iterdir())
        assert len(files) == 1
        ds = dcmread(files[0])
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"
        assert ds.SOPInstanceUID == signed["pdf_sop_instance_uid"]
        length = int(ds.EncapsulatedDocumentLength)
        assert bytes(ds.EncapsulatedDocument)[:length] == hub_pdf(hub, report_id)
        held = gateway.store.held(report_id)
        assert held is not None and held.node_state == "sent"
        assert gateway.store.counts()["reports_waiting_for_node"] == 0
    finally:
        gateway.close()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "PACS",
        "PACS@host",
        "@host:104",
        "PACS@host:0",
        "PACS@host:70000",
        "A" * 17 + "@h:104",
        "PA\\CS@h:104",
        "PACS@ho st:104",
        "PACS@h:104:1",
    ],
)
def test_a_malformed_report_node_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        DicomNode.parse(text)


def test_report_node_forms() -> None:
    assert DicomNode.parse("PACS@192.168.1.20:104") == DicomNode("PACS", "192.168.1.20", 104)
    assert DicomNode.parse("PACS@[::1]:11112") == DicomNode("PACS", "::1", 11112)
    assert str(DicomNode.parse("VIEW 1@pacs.local:4242")) == "VIEW 1@pacs.local:4242"


# --- the gateway process ----------------------------------------------------------------------


def test_gateway_serve_pulls_reports_and_serves_the_lan_page(
    hub: HubProcess, start_gateway: GatewayFactory
) -> None:
    lan_port = free_port()
    gateway = start_gateway(
        hub, lan_page_port=lan_port, report_poll_wait_seconds=2, forward="false"
    )
    study = ingest_study(hub)
    report_id = int(sign_report(hub, study)["id"])
    deadline = time.monotonic() + 30
    while hub_report(hub, report_id).delivered_at is None:
        assert time.monotonic() < deadline, gateway.log_path.read_text()
        time.sleep(0.2)
    assert (gateway.spool_dir / "reports" / f"{report_id}.pdf").read_bytes() == hub_pdf(
        hub, report_id
    )
    with httpx.Client(base_url=f"http://127.0.0.1:{lan_port}", timeout=10) as browser:
        assert sign_in(browser, "staff-a", hub.passwords["staff-a"]).status_code == 303
        assert f'data-report-id="{report_id}"' in browser.get("/").text
    status = gateway.status()
    assert "reports held: 1" in status, status
    log = gateway.log_path.read_text()
    assert "王" not in log and "小明" not in log  # no patient data in the gateway's log


def test_the_lan_page_over_https_sets_a_secure_cookie(tmp_path: Path) -> None:
    from argon2 import PasswordHasher

    from tests.peers.tls import make_pki

    pki = make_pki(tmp_path / "pki")
    store = ReportStore(tmp_path / "spool")
    store.replace_staff(
        [
            {
                "username": "nurse",
                "display_name": "护士",
                "password_hash": PasswordHasher().hash("pw-1"),
            }
        ]
    )
    port = free_port()
    server = LanPageServer(
        LanPage(store, clinic="clinic-a", secure_cookie=True),
        host="127.0.0.1",
        port=port,
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
    )
    server.start()
    try:
        assert server.url == f"https://127.0.0.1:{port}/"
        with httpx.Client(
            base_url=server.url,
            verify=ssl.create_default_context(cafile=str(pki.ca_cert)),
            timeout=10,
        ) as browser:
            assert sign_in(browser, "nurse", "pw-2").status_code == 401
            signed_in = sign_in(browser, "nurse", "pw-1")
            assert signed_in.status_code == 303
            assert "Secure" in signed_in.headers["set-cookie"]
            assert "lan-empty" in browser.get("/").text
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port
            httpx.get(f"http://127.0.0.1:{port}/login", timeout=5)
    finally:
        server.stop()
        store.close()
    with pytest.raises(ValueError):
        LanPageServer(
            LanPage(store, clinic="x"), host="127.0.0.1", port=1, tls_cert_file=pki.server_cert
        )
