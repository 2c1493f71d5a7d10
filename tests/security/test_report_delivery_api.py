"""Signed reports back to the clinic's gateway (docs/clinic-return.md, "Hub API for gateways"),
on the in-process hub with the real signing path, on SQLite and PostgreSQL.

The gateway of clinic-a pulls its clinic's signed reports (long-poll), downloads the PDF and the
Encapsulated PDF instance, confirms receipt exactly once (also under concurrent confirmations),
syncs acknowledgements made on its LAN page and its clinic's staff credentials. Clinic-b's
gateway sees none of it; users' tokens, even the administrator's, are refused; bad input is a
4xx problem, never a 500, and changes nothing.
"""

import hashlib
import io
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from imaging_hub.dicom.report_objects import encapsulated_pdf_bytes
from imaging_hub.worklist.access.accounts import hash_password
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import (
    AuditEvent,
    Gateway,
    Institution,
    Report,
    Role,
    StudyEvent,
    User,
)
from imaging_hub.worklist.db.models import Study as StudyRow
from imaging_hub.worklist.reports import delivery
from tests.security.conftest import HubApp
from tests.security.test_reports_api import (
    CATEGORY,
    IMPRESSION,
    Reports,
    ingest_study,
    signed_report,
)

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
PROBLEM = "application/problem+json"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def app(request: pytest.FixtureRequest) -> HubApp:
    name = "hub_app" if request.param == "sqlite" else "pg_hub_app"
    found: HubApp = request.getfixturevalue(name)
    return found


class GatewayClient:
    """The hub's gateway API as one clinic's gateway calls it."""

    def __init__(self, hub_app: HubApp, clinic: str) -> None:
        self.hub_app = hub_app
        self.headers = {"Authorization": f"Bearer {hub_app.gateway_tokens[clinic]}"}

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        extra = kwargs.pop("headers", {})
        return self.hub_app.client.request(
            method, path, headers={**self.headers, **extra}, **kwargs
        )

    def feed(self, wait: float | str = 0) -> Any:
        return self.request("GET", "/api/v1/gateway/reports", params={"wait": wait})

    def pdf(self, report_id: int | str) -> Any:
        return self.request("GET", f"/api/v1/gateway/reports/{report_id}/pdf")

    def dicom(self, report_id: int | str) -> Any:
        return self.request("GET", f"/api/v1/gateway/reports/{report_id}/dicom")

    def received(self, report_id: int | str, sha256: str) -> Any:
        return self.request(
            "POST", f"/api/v1/gateway/reports/{report_id}/received", json={"sha256": sha256}
        )

    def acknowledge(self, report_id: int | str, **fields: Any) -> Any:
        body = {
            "username": "staff-a",
            "method": "in_person",
            "read_back": "脑出血，已复述。",
            "acknowledged_at": datetime.now(UTC).isoformat(),
            **fields,
        }
        return self.request("POST", f"/api/v1/gateway/reports/{report_id}/acknowledge", json=body)

    def staff(self, **headers: str) -> Any:
        return self.request("GET", "/api/v1/gateway/staff", headers=headers)


def count(hub_app: HubApp, model: Any, *where: Any) -> int:
    with hub_app.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def report_row(hub_app: HubApp, report_id: int) -> Report:
    with hub_app.sessions() as session:
        found = session.get(Report, report_id)
        assert found is not None
        session.expunge(found)
        return found


def study_status(hub_app: HubApp, uid: str) -> str:
    with hub_app.sessions() as session:
        return str(
            session.scalar(select(StudyRow.status).where(StudyRow.study_instance_uid == uid))
        )


def audits(hub_app: HubApp, action: str) -> int:
    return count(hub_app, AuditEvent, AuditEvent.action == action)


def assert_problem(response: Any, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    if code is not None:
        assert response.json()["code"] == code, response.text


# --- the way back: feed, PDF, DICOM, receipt -----------------------------------------------


def test_gateway_pulls_confirms_once_and_the_study_is_delivered(app: HubApp) -> None:
    study = ingest_study(app)
    body = signed_report(app, study)
    gateway_a, gateway_b = GatewayClient(app, "clinic-a"), GatewayClient(app, "clinic-b")

    feed = gateway_a.feed()
    assert feed.status_code == 200, feed.text
    (item,) = feed.json()["reports"]
    assert item["id"] == body["id"] and item["kind"] == "report"
    assert item["predecessor_id"] is None
    assert item["study_instance_uid"] == study.uid and item["patient_name"] == "张^三丰"
    assert item["sha256"] == body["sha256"] and item["signer_name"] == body["signer_name"]
    assert item["pdf_sop_instance_uid"] == body["pdf_sop_instance_uid"]
    assert item["modalities"] == "CT" and item["critical"] is False
    assert item["acknowledged_at"] is None and item["signed_at"]
    assert set(item) == {
        "id", "kind", "predecessor_id", "study_instance_uid", "accession_number",
        "patient_id", "patient_name", "patient_sex", "patient_birth_date", "study_date",
        "study_description", "modalities", "signed_at", "signer_name", "sha256", "critical",
        "critical_category", "acknowledged_at", "pdf_sop_instance_uid",
    }  # fmt: skip
    assert gateway_b.feed().json() == {"reports": []}  # another clinic's gateway: nothing

    pdf = gateway_a.pdf(body["id"])
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert hashlib.sha256(pdf.content).hexdigest() == body["sha256"]
    assert pdf.content == Reports(app, "staff-a").pdf(body["id"]).content  # byte for byte

    # A wrong checksum: 409, nothing changed.
    audited = count(app, AuditEvent)
    wrong = gateway_a.received(body["id"], hashlib.sha256(b"not the pdf").hexdigest())
    assert_problem(wrong, 409, "checksum_mismatch")
    assert report_row(app, body["id"]).delivered_at is None
    assert study_status(app, study.uid) == "signed"
    assert count(app, AuditEvent) == audited

    first = gateway_a.received(body["id"], body["sha256"].upper())  # hex case does not matter
    assert first.status_code == 200, first.text
    delivered_at = first.json()["delivered_at"]
    row = report_row(app, body["id"])
    assert row.delivered_at is not None and row.delivered_gateway_id is not None
    with app.sessions() as session:
        gateway = session.get(Gateway, row.delivered_gateway_id)
        assert gateway is not None and gateway.name == "gateway-clinic-a"
    assert study_status(app, study.uid) == "delivered"
    assert audits(app, "report.delivered") == 1
    assert count(app, StudyEvent, StudyEvent.kind == "delivered") == 1

    again = gateway_a.received(body["id"], body["sha256"])
    assert again.status_code == 200 and again.json()["delivered_at"] == delivered_at
    assert audits(app, "report.delivered") == 1
    assert count(app, StudyEvent, StudyEvent.kind == "delivered") == 1
    assert gateway_a.feed().json() == {"reports": []}  # confirmed: no longer pending


def test_concurrent_confirmations_deliver_exactly_once(app: HubApp) -> None:
    study = ingest_study(app)
    body = signed_report(app, study)
    gateway = GatewayClient(app, "clinic-a")
    callers = 6
    barrier = threading.Barrier(callers)
    answers: list[Any] = []
    lock = threading.Lock()

    def confirm() -> None:
        barrier.wait(timeout=10)
        response = gateway.received(body["id"], body["sha256"])
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=confirm) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == callers
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert len({a.json()["delivered_at"] for a in answers}) == 1
    assert audits(app, "report.delivered") == 1
    assert count(app, StudyEvent, StudyEvent.kind == "delivered") == 1
    assert study_status(app, study.uid) == "delivered"


def test_dicom_is_the_encapsulated_pdf_of_the_signed_report(hub_app: HubApp) -> None:
    study = ingest_study(hub_app)
    body = signed_report(hub_app, study)
    gateway = GatewayClient(hub_app, "clinic-a")
    pdf = gateway.pdf(body["id"]).content
    response = gateway.dicom(body["id"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom"
    assert response.content[128:132] == b"DICM"  # Part 10: preamble, prefix, file meta
    ds = dcmread(io.BytesIO(response.content))
    assert ds.file_meta.MediaStorageSOPClassUID == ENCAPSULATED_PDF
    assert ds.SOPClassUID == ENCAPSULATED_PDF
    assert ds.SOPInstanceUID == body["pdf_sop_instance_uid"]
    assert ds.StudyInstanceUID == study.uid
    assert encapsulated_pdf_bytes(ds) == pdf
    assert audits(hub_app, "report.downloaded") == 2  # the PDF and the DICOM, each audited


def test_an_addendum_is_delivered_without_moving_the_study(hub_app: HubApp) -> None:
    study = ingest_study(hub_app)
    body = signed_report(hub_app, study)
    gateway = GatewayClient(hub_app, "clinic-a")
    assert gateway.received(body["id"], body["sha256"]).status_code == 200
    rad1 = Reports(hub_app, "rad1")
    draft = rad1.request(
        "POST",
        f"/api/v1/studies/{study.uid}/report/addenda",
        json={"findings": "补充", "impression": "补充：" + IMPRESSION},
    )
    assert draft.status_code == 201, draft.text
    addendum = rad1.sign(draft.json()["id"])
    assert addendum.status_code == 200, addendum.text
    added = addendum.json()

    (item,) = gateway.feed().json()["reports"]
    assert item["id"] == added["id"] and item["kind"] == "addendum"
    assert item["predecessor_id"] == body["id"] and item["sha256"] == added["sha256"]
    assert hashlib.sha256(gateway.pdf(added["id"]).content).hexdigest() == added["sha256"]
    assert gateway.received(added["id"], added["sha256"]).status_code == 200
    assert study_status(hub_app, study.uid) == "delivered"
    assert report_row(hub_app, added["id"]).delivered_at is not None
    assert audits(hub_app, "report.delivered") == 2
    assert gateway.feed().json() == {"reports": []}


def test_feed_is_oldest_first_and_at_most_fifty(hub_app: HubApp) -> None:
    """Signing is slow: the reports are made signed in the database (the feed reads rows)."""
    study = ingest_study(hub_app)
    body = signed_report(hub_app, study)
    base = datetime.now(UTC) - timedelta(days=1)
    with hub_app.sessions() as session:
        signed = session.get(Report, body["id"])
        assert signed is not None
        for n in range(55):
            session.add(
                Report(
                    study_id=signed.study_id,
                    kind="addendum",
                    status="signed",
                    predecessor_id=signed.id,
                    author_id=signed.author_id,
                    impression="x",
                    signed_at=base + timedelta(minutes=55 - n),  # newest first in id order
                    sha256="0" * 64,
                )
            )
        session.commit()
    reports = GatewayClient(hub_app, "clinic-a").feed().json()["reports"]
    assert len(reports) == delivery.BATCH == 50
    times = [r["signed_at"] for r in reports]
    assert times == sorted(times)
    assert body["id"] not in [r["id"] for r in reports]  # signed now: the newest of all


# --- the long-poll ----------------------------------------------------------------------------


def test_long_poll_answers_empty_after_the_wait(hub_app: HubApp) -> None:
    gateway = GatewayClient(hub_app, "clinic-a")
    started = time.monotonic()
    response = gateway.feed(wait=1.5)
    took = time.monotonic() - started
    assert response.status_code == 200 and response.json() == {"reports": []}
    assert 1.4 <= took < 3.0, took


def test_long_poll_answers_soon_after_a_signature(
    hub_app: HubApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = ingest_study(hub_app)
    rad1 = Reports(hub_app, "rad1")
    rad1.claim(study.uid)
    report_id = rad1.draft(study.uid).json()["id"]
    gateway = GatewayClient(hub_app, "clinic-a")
    engine = hub_app.app.state.hub.sessions.kw["bind"]
    result: dict[str, Any] = {}

    def poll() -> None:
        result["response"] = gateway.feed(wait=20)
        result["at"] = time.monotonic()

    checked = threading.Event()
    check = delivery._check

    def observed(*args: Any) -> Any:
        found = check(*args)
        checked.set()
        return found

    monkeypatch.setattr(delivery, "_check", observed)
    poller = threading.Thread(target=poll)
    poller.start()
    first_check_done = checked.wait(10)
    # While it waits, the poll holds no database connection (sampled between its checks).
    idle = 0
    for _ in range(10):
        time.sleep(0.07)
        idle += engine.pool.checkedout() == 0
    waiting = "response" not in result
    signed = rad1.sign(report_id)
    signed_at = time.monotonic()
    poller.join(timeout=25)  # assertions after the poll ended: no request left in flight
    assert not poller.is_alive()
    assert signed.status_code == 200, signed.text
    assert first_check_done and waiting and idle >= 8, (first_check_done, waiting, idle)
    assert result["at"] - signed_at < 1.2, result["at"] - signed_at
    (item,) = result["response"].json()["reports"]
    assert item["id"] == report_id


def test_long_poll_stops_when_the_client_is_gone(hub_app: HubApp) -> None:
    sessions = hub_app.app.state.hub.sessions
    with sessions() as session:
        gateway = session.scalars(select(Gateway).where(Gateway.name == "gateway-clinic-a")).one()
        session.expunge(gateway)
    caller = Caller(principal=gateway, source_ip="127.0.0.1", session_key="test")
    checks = 0

    async def gone() -> bool:
        nonlocal checks
        checks += 1
        return True

    async def run() -> list[delivery.DeliveryItem]:
        return await delivery.wait_for_reports(
            sessions, caller, wait=30, batcher=audit.AccessBatcher(), gone=gone
        )

    started = time.monotonic()
    # A thread of its own: an event loop another test left running in this thread (Playwright's
    # sync API keeps one) must not matter.
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(anyio.run, run).result(timeout=20) == []
    assert time.monotonic() - started < 1.0 and checks == 1


def _unaudited_signed_report(hub_app: HubApp, study_uid: str) -> int:
    """A signed report row put straight into the database: no ``report.signed`` event."""
    with hub_app.sessions() as session:
        report = Report(
            study_id=session.scalar(
                select(StudyRow.id).where(StudyRow.study_instance_uid == study_uid)
            ),
            status="signed",
            author_id=session.scalar(select(User.id).where(User.username == "rad1")),
            impression="x",
            signed_at=datetime.now(UTC),
            sha256="a" * 64,
        )
        session.add(report)
        session.commit()
        return report.id


def _poll_in_thread(
    gateway: "GatewayClient", wait: float
) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def poll() -> None:
        started = time.monotonic()
        result["response"] = gateway.feed(wait=wait)
        result["took"] = time.monotonic() - started

    thread = threading.Thread(target=poll)
    thread.start()
    return thread, result


def test_a_waiting_poll_queries_again_on_a_signature_or_the_safety_interval(
    hub_app: HubApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between its full looks a waiting poll reads only the audit trail's head: a report that
    appears without a signature event is found by the next full look, not the next probe."""
    study, other = ingest_study(hub_app), ingest_study(hub_app)
    gateway = GatewayClient(hub_app, "clinic-a")
    checked = threading.Event()
    check = delivery._check

    def observed(*args: Any) -> Any:
        found = check(*args)
        checked.set()
        return found

    monkeypatch.setattr(delivery, "_check", observed)
    monkeypatch.setattr(delivery, "FULL_CHECK_SECONDS", 100.0)
    thread, result = _poll_in_thread(gateway, 1.5)
    assert checked.wait(10)  # the first (full) look is done: the poll is waiting
    report_id = _unaudited_signed_report(hub_app, study.uid)
    thread.join(timeout=10)
    assert result["response"].json() == {"reports": []}  # no signature event: not looked for
    assert [r["id"] for r in gateway.feed().json()["reports"]] == [report_id]  # a full look
    assert gateway.received(report_id, "a" * 64).status_code == 200

    monkeypatch.setattr(delivery, "FULL_CHECK_SECONDS", 0.8)
    checked.clear()
    thread, result = _poll_in_thread(gateway, 8)
    assert checked.wait(10)
    second = _unaudited_signed_report(hub_app, other.uid)
    thread.join(timeout=15)
    assert [r["id"] for r in result["response"].json()["reports"]] == [second]
    assert result["took"] < 4, result["took"]  # the safety interval, not the 8 s deadline


# --- acknowledgements from the LAN page ------------------------------------------------------


def test_gateway_acknowledgement_rules(app: HubApp) -> None:
    study = ingest_study(app)
    body = signed_report(app, study, critical=True, critical_category=CATEGORY)
    gateway_a, gateway_b = GatewayClient(app, "clinic-a"), GatewayClient(app, "clinic-b")
    assert gateway_a.received(body["id"], body["sha256"]).status_code == 200
    with app.sessions() as session:
        clinic_a = session.scalars(select(Institution).where(Institution.code == "clinic-a")).one()
        session.add(
            User(
                username="staff-a-left",
                display_name="离职技师",
                role=Role.clinic_staff,
                institution_id=clinic_a.id,
                password_hash=hash_password("irrelevant-1"),
                is_active=False,
            )
        )
        session.commit()

    def unchanged() -> None:
        row = report_row(app, body["id"])
        assert row.acknowledged_at is None and row.acknowledged_via == ""
        assert study_status(app, study.uid) == "delivered"
        assert audits(app, "report.acknowledged") == 0

    for username in ("nobody", "staff-b", "rad1", "admin", "staff-a-left"):
        refused = gateway_a.acknowledge(body["id"], username=username)
        assert_problem(refused, 422, "report_ack_user_invalid")
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert_problem(gateway_a.acknowledge(body["id"], acknowledged_at=future), 422)
    assert gateway_a.acknowledge(body["id"], acknowledged_at=future).json()["code"] == (
        "report_ack_time_invalid"
    )
    long_before = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    assert_problem(gateway_a.acknowledge(body["id"], acknowledged_at=long_before), 422)
    assert_problem(gateway_b.acknowledge(body["id"], username="staff-b"), 404, "not_found")
    unchanged()

    when = datetime.now(UTC) - timedelta(seconds=3)
    ack = gateway_a.acknowledge(body["id"], acknowledged_at=when.isoformat())
    assert ack.status_code == 200, ack.text
    got = ack.json()
    assert got["recorded"] is True and got["acknowledged_by"] == "staff-a"
    assert got["acknowledged_via"] == "gateway" and got["acknowledgement_method"] == "in_person"
    at = datetime.fromisoformat(got["acknowledged_at"])
    assert abs((at - max(when, datetime.fromisoformat(body["signed_at"]))).total_seconds()) < 1
    row = report_row(app, body["id"])
    assert row.acknowledged_via == "gateway" and row.acknowledgement_read_back == "脑出血，已复述。"
    assert study_status(app, study.uid) == "acknowledged"
    assert audits(app, "report.acknowledged") == 1
    with app.sessions() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "report.acknowledged")
        ).one()
        assert event.gateway_id is not None and event.user_id is None
        assert event.detail["acknowledged_by"] == "staff-a" and event.detail["via"] == "gateway"

    # The first acknowledgement wins: a repeat (even another user's) answers it, changes nothing.
    repeat = gateway_a.acknowledge(body["id"], username="nobody", method="phone")
    assert repeat.status_code == 200 and repeat.json()["recorded"] is False
    assert repeat.json()["acknowledged_at"] == got["acknowledged_at"]
    assert repeat.json()["acknowledged_by"] == "staff-a"
    portal = Reports(app, "staff-a").request(
        "POST",
        f"/api/v1/reports/{body['id']}/acknowledge",
        json={"method": "phone", "read_back": "x"},
    )
    assert_problem(portal, 409, "report_already_acknowledged")
    assert audits(app, "report.acknowledged") == 1
    assert gateway_a.feed().json() == {"reports": []}  # delivered: not in the feed any more


def test_not_critical_is_refused_like_the_portal(hub_app: HubApp) -> None:
    study = ingest_study(hub_app)
    body = signed_report(hub_app, study)
    refused = GatewayClient(hub_app, "clinic-a").acknowledge(body["id"])
    assert_problem(refused, 409, "report_not_critical")
    assert report_row(hub_app, body["id"]).acknowledged_at is None


def test_acknowledged_before_delivery_stays_acknowledged(hub_app: HubApp) -> None:
    study = ingest_study(hub_app)
    body = signed_report(hub_app, study, critical=True, critical_category=CATEGORY)
    ack = Reports(hub_app, "staff-a").request(
        "POST",
        f"/api/v1/reports/{body['id']}/acknowledge",
        json={"method": "phone", "read_back": "已复述"},
    )
    assert ack.status_code == 200, ack.text
    assert report_row(hub_app, body["id"]).acknowledged_via == "portal"
    assert study_status(hub_app, study.uid) == "acknowledged"
    gateway = GatewayClient(hub_app, "clinic-a")
    (item,) = gateway.feed().json()["reports"]
    assert item["acknowledged_at"] is not None and item["critical"] is True
    assert gateway.received(body["id"], body["sha256"]).status_code == 200
    assert study_status(hub_app, study.uid) == "acknowledged"  # never backwards
    assert report_row(hub_app, body["id"]).delivered_at is not None
    again = gateway.acknowledge(body["id"])
    assert again.status_code == 200 and again.json()["recorded"] is False
    assert again.json()["acknowledged_via"] == "portal"


# --- staff credentials ----------------------------------------------------------------------


def test_staff_are_the_active_clinic_users_of_the_gateways_clinic(hub_app: HubApp) -> None:
    with hub_app.sessions() as session:
        clinic_a = session.scalars(select(Institution).where(Institution.code == "clinic-a")).one()
        session.add(
            User(
                username="staff-a-off",
                role=Role.clinic_staff,
                institution_id=clinic_a.id,
                password_hash=hash_password("irrelevant-2"),
                is_active=False,
            )
        )
        session.commit()
        stored = session.scalars(select(User).where(User.username == "staff-a")).one()
        hash_a = stored.password_hash
    gateway_a, gateway_b = GatewayClient(hub_app, "clinic-a"), GatewayClient(hub_app, "clinic-b")
    first = gateway_a.staff()
    assert first.status_code == 200, first.text
    assert first.json() == {
        "clinic_name": "A镇卫生院 Township Health Centre A",  # the LAN page's header
        "staff": [
            {
                "username": "staff-a",
                "display_name": "A镇技师 Technician A",
                "password_hash": hash_a,
            }
        ],
    }
    assert hash_a.startswith("$argon2")
    assert [s["username"] for s in gateway_b.staff().json()["staff"]] == ["staff-b"]
    assert audits(hub_app, "gateway.staff_fetched") == 2
    etag = first.headers["etag"]
    same = gateway_a.staff(**{"If-None-Match": etag})
    assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == etag
    assert audits(hub_app, "gateway.staff_fetched") == 2  # nothing sent, nothing audited
    with hub_app.sessions() as session:
        user = session.scalars(select(User).where(User.username == "staff-a")).one()
        user.is_active = False
        session.commit()
    gone = gateway_a.staff(**{"If-None-Match": etag})
    assert gone.status_code == 200
    assert gone.json() == {"clinic_name": "A镇卫生院 Township Health Centre A", "staff": []}
    # A renamed clinic is a new list: the gateway's header follows.
    with hub_app.sessions() as session:
        clinic = session.scalars(select(Institution).where(Institution.code == "clinic-a")).one()
        clinic.name = "A镇中心卫生院"
        session.commit()
    renamed = gateway_a.staff(**{"If-None-Match": gone.headers["etag"]})
    assert renamed.status_code == 200 and renamed.json()["clinic_name"] == "A镇中心卫生院"


# --- isolation and refusals -----------------------------------------------------------------

ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/v1/gateway/reports", None),
    ("GET", "/api/v1/gateway/reports/{id}/pdf", None),
    ("GET", "/api/v1/gateway/reports/{id}/dicom", None),
    ("POST", "/api/v1/gateway/reports/{id}/received", {"sha256": "0" * 64}),
    (
        "POST",
        "/api/v1/gateway/reports/{id}/acknowledge",
        {
            "username": "staff-a",
            "method": "phone",
            "read_back": "x",
            "acknowledged_at": "2026-01-01T00:00:00Z",
        },
    ),
    ("GET", "/api/v1/gateway/staff", None),
]


def test_another_clinics_gateway_gets_404_and_changes_nothing(app: HubApp) -> None:
    study = ingest_study(app)
    body = signed_report(app, study, critical=True, critical_category=CATEGORY)
    gateway_b = GatewayClient(app, "clinic-b")
    audited = count(app, AuditEvent)
    assert gateway_b.feed().json() == {"reports": []}
    assert_problem(gateway_b.pdf(body["id"]), 404, "not_found")
    assert_problem(gateway_b.dicom(body["id"]), 404, "not_found")
    assert_problem(gateway_b.received(body["id"], body["sha256"]), 404, "not_found")
    assert_problem(gateway_b.acknowledge(body["id"], username="staff-b"), 404, "not_found")
    assert "staff-a" not in gateway_b.staff().text
    assert count(app, AuditEvent) == audited + 1  # only the staff list (clinic-b's own)
    row = report_row(app, body["id"])
    assert row.delivered_at is None and row.acknowledged_at is None
    assert study_status(app, study.uid) == "signed"
    # Unknown ids and drafts answer the same 404.
    assert_problem(GatewayClient(app, "clinic-a").pdf(2**31 - 1), 404, "not_found")


def test_users_tokens_are_refused_even_the_admins(hub_app: HubApp) -> None:
    study = ingest_study(hub_app)
    body = signed_report(hub_app, study, critical=True, critical_category=CATEGORY)
    for username in ("admin", "staff-a", "rad1"):
        headers = hub_app.headers(username)
        for method, path, payload in ENDPOINTS:
            response = hub_app.client.request(
                method, path.format(id=body["id"]), headers=headers, json=payload
            )
            assert_problem(response, 403, "forbidden")
            assert "(gateway.reports)" in response.json()["detail"]
        anonymous = hub_app.client.request(
            "GET", f"/api/v1/gateway/reports/{body['id']}/pdf", headers={}
        )
        assert_problem(anonymous, 401)
    row = report_row(hub_app, body["id"])
    assert row.delivered_at is None and row.acknowledged_at is None


def _bad_inputs() -> list[tuple[str, str, Callable[[GatewayClient], Any]]]:
    cases: list[tuple[str, str, Callable[[GatewayClient], Any]]] = []
    for wait in ("-1", "31", "nan", "inf", "abc", "1e9", ""):
        cases.append(("wait", wait, lambda g, w=wait: g.feed(wait=w)))
    for bad_id in ("0", "-5", str(2**31), "abc", "1.5", "9" * 40):
        cases.append(("pdf", bad_id, lambda g, i=bad_id: g.pdf(i)))
        cases.append(("dicom", bad_id, lambda g, i=bad_id: g.dicom(i)))
        cases.append(("received", bad_id, lambda g, i=bad_id: g.received(i, "0" * 64)))
        cases.append(("acknowledge", bad_id, lambda g, i=bad_id: g.acknowledge(i)))
    return cases


@pytest.mark.parametrize("body", [None, [], {}, {"sha256": "xyz"}, {"sha256": "g" * 64},
                                  {"sha256": 5}, {"sha256": "0" * 65}, "not json"])  # fmt: skip
def test_malformed_received_bodies_are_refused(hub_app: HubApp, body: Any) -> None:
    study = ingest_study(hub_app)
    with hub_app.sessions() as session:
        report = Report(
            study_id=session.scalar(
                select(StudyRow.id).where(StudyRow.study_instance_uid == study.uid)
            ),
            status="signed",
            author_id=session.scalar(select(User.id).where(User.username == "rad1")),
            impression="x",
            signed_at=datetime.now(UTC),
            sha256="a" * 64,
        )
        session.add(report)
        session.commit()
        report_id = report.id
    gateway = GatewayClient(hub_app, "clinic-a")
    path = f"/api/v1/gateway/reports/{report_id}/received"
    if body == "not json":
        response = gateway.request(
            "POST", path, content=b"{nope", headers={"Content-Type": "application/json"}
        )
    else:
        response = gateway.request("POST", path, json=body)
    assert_problem(response, 422, "validation_failed")
    assert report_row(hub_app, report_id).delivered_at is None


def test_bad_query_and_path_values_are_4xx_problems(hub_app: HubApp) -> None:
    gateway = GatewayClient(hub_app, "clinic-a")
    for what, value, call in _bad_inputs():
        response = call(gateway)
        assert 400 <= response.status_code < 500, (what, value, response.text)
        assert response.headers["content-type"].startswith(PROBLEM), (what, value)
        assert response.json()["code"] == "validation_failed", (what, value, response.text)


@pytest.mark.parametrize(
    "change",
    [
        {"username": ""},
        {"username": "x" * 65},
        {"username": "staff-a\u0000"},
        {"username": "../staff-a"},
        {"method": "fax"},
        {"read_back": ""},
        {"read_back": "x" * 4001},
        {"acknowledged_at": "2026-03-01T10:00:00"},  # no zone
        {"acknowledged_at": "yesterday"},
        {"acknowledged_at": None},
        {"username": None},
    ],
)
def test_malformed_acknowledgements_are_refused(hub_app: HubApp, change: dict[str, Any]) -> None:
    gateway = GatewayClient(hub_app, "clinic-a")
    response = gateway.acknowledge(1, **change)
    assert_problem(response, 422, "validation_failed")
    assert audits(hub_app, "report.acknowledged") == 0


# --- acknowledgements made at the hub, learnt by the gateway -----------------------------------


def test_gateway_learns_acknowledgements_made_at_the_hub_only_for_its_clinic(app: HubApp) -> None:
    critical = signed_report(app, ingest_study(app), critical=True, critical_category=CATEGORY)
    plain = signed_report(app, ingest_study(app))
    gateway_a, gateway_b = GatewayClient(app, "clinic-a"), GatewayClient(app, "clinic-b")

    def learn(client: GatewayClient, ids: str) -> Any:
        return client.request(
            "GET", "/api/v1/gateway/reports/acknowledgements", params={"ids": ids}
        )

    ids = f"{critical['id']},{plain['id']},999999,9999999999"
    before = learn(gateway_a, ids)
    assert before.status_code == 200, before.text
    assert before.json() == {"acknowledgements": []}  # nothing acknowledged yet

    portal = Reports(app, "staff-a").request(
        "POST",
        f"/api/v1/reports/{critical['id']}/acknowledge",
        json={"method": "phone", "read_back": "右侧气胸，已复述。"},
    )
    assert portal.status_code == 200, portal.text
    with app.sessions() as session:
        staff_a = session.scalars(select(User).where(User.username == "staff-a")).one()
        display_name = staff_a.display_name
    events = count(app, AuditEvent)

    (got,) = learn(gateway_a, ids).json()["acknowledgements"]
    assert got["id"] == critical["id"] and got["sha256"] == critical["sha256"]
    assert got["acknowledged_by"] == display_name and got["via"] == "portal"
    assert got["method"] == "phone"
    row = report_row(app, critical["id"])
    assert row.acknowledged_at is not None
    assert datetime.fromisoformat(got["acknowledged_at"]).replace(tzinfo=None) == (
        row.acknowledged_at.replace(tzinfo=None)
    )
    assert set(got) == {"id", "sha256", "acknowledged_at", "acknowledged_by", "via", "method"}
    assert (
        "read_back" not in learn(gateway_a, ids).text
        and "右侧气胸" not in learn(gateway_a, ids).text
    )  # the read-back stays at the hub

    # Another clinic's gateway learns nothing of it, even naming the id.
    assert learn(gateway_b, str(critical["id"])).json() == {"acknowledgements": []}
    # No ids: an empty answer, no query.
    empty = gateway_a.request("GET", "/api/v1/gateway/reports/acknowledgements")
    assert empty.status_code == 200 and empty.json() == {"acknowledgements": []}
    # Users' tokens, even the administrator's, are refused; no token is 401.
    for username in ("staff-a", "admin", "rad1"):
        refused = app.client.get(
            "/api/v1/gateway/reports/acknowledgements",
            params={"ids": str(critical["id"])},
            headers=app.headers(username),
        )
        assert_problem(refused, 403)
    assert_problem(
        app.client.get("/api/v1/gateway/reports/acknowledgements", params={"ids": "1"}), 401
    )
    # Malformed or too many ids: a 4xx problem, never a 500.
    for bad in ("abc", "1,,2", "-1", "1;2", ",", "1 2", "1" * 11, "1," * 600 + "1"):
        answer = learn(gateway_a, bad)
        assert 400 <= answer.status_code < 500, (bad, answer.text)
        assert answer.headers["content-type"].startswith(PROBLEM)
    assert_problem(
        learn(gateway_a, ",".join(str(i) for i in range(1, 102))), 400, "invalid_request"
    )
    assert learn(gateway_a, ",".join(str(i) for i in range(1, 101))).status_code == 200
    assert count(app, AuditEvent) == events  # reading acknowledgement facts writes nothing


def test_a_gateway_acknowledgement_for_another_reports_sha256_is_refused(app: HubApp) -> None:
    body = signed_report(app, ingest_study(app), critical=True, critical_category=CATEGORY)
    gateway_a = GatewayClient(app, "clinic-a")
    # After a hub restore the id may name another report: its SHA-256 tells them apart.
    other = gateway_a.acknowledge(body["id"], sha256="ab" * 32)
    assert_problem(other, 409, "checksum_mismatch")
    for bad in ("xyz", "ab" * 33, ""):
        assert_problem(gateway_a.acknowledge(body["id"], sha256=bad), 422)
    row = report_row(app, body["id"])
    assert row.acknowledged_at is None and audits(app, "report.acknowledged") == 0
    ok = gateway_a.acknowledge(body["id"], sha256=body["sha256"].upper())
    assert ok.status_code == 200 and ok.json()["recorded"] is True, ok.text
    # Once acknowledged, another report's SHA-256 is still refused (never "already done").
    assert_problem(gateway_a.acknowledge(body["id"], sha256="ab" * 32), 409, "checksum_mismatch")
