"""The gateway's report store on its own: retention, acknowledgements, staff verifiers, hostile
metadata, and the pull loop's back-off logging (no hub: what is tested needs none)."""

import errno
import hashlib
import io
import itertools
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from argon2 import PasswordHasher

from imaging_hub.dicom_gateway.hub_client import HubClient
from imaging_hub.dicom_gateway.reports import (
    LOCAL_ID_BASE,
    ReportPuller,
    ReportStore,
    StaffVerifier,
)
from imaging_hub.errors import ForwardError
from tests.peers.net import free_port

PDF = b"%PDF-1.7\n% a stand-in for a signed report\n%%EOF\n"


def item(report_id: int, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": report_id,
        "kind": "report",
        "study_instance_uid": f"1.2.3.{report_id}",
        "accession_number": f"A{report_id}",
        "patient_id": f"P{report_id}",
        "patient_name": "张^三",
        "signed_at": "2026-12-01T08:00:00+00:00",
        "sha256": hashlib.sha256(PDF).hexdigest(),
        "critical": False,
    }
    values.update(changes)
    return values


def hold(store: ReportStore, report_id: int, *, confirmed: bool = True, **changes: Any) -> None:
    store.write_file(
        store.pdf_path(report_id),
        lambda out: (out.write(PDF), hashlib.sha256(PDF).hexdigest()),
        None,
    )
    store.record(item(report_id, **changes), size=len(PDF), node=False)
    if confirmed:
        store.mark_delivered(report_id, "2026-12-01T08:01:00+00:00")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ReportStore]:
    opened = ReportStore(tmp_path / "spool")
    yield opened
    opened.close()


def test_retention_keeps_what_still_waits(store: ReportStore) -> None:
    hold(store, 1)  # old, confirmed, nothing waiting: deleted
    hold(store, 2, critical=True)  # old critical, not acknowledged: kept
    hold(store, 3, critical=True)  # old critical acknowledged here, not yet at the hub: kept
    assert store.acknowledge(3, username="u", display_name="", method="phone", read_back="x")
    hold(store, 4, confirmed=False)  # old, not confirmed to the hub: kept
    hold(store, 5)  # recent: kept
    with store._tx() as db:
        db.execute("UPDATE reports SET stored_at = ? WHERE id != 5", (time.time() - 91 * 86400,))
    assert store.prune(keep_days=90) == 1
    assert store.held(1) is None and not store.pdf_path(1).exists()
    assert all(store.held(i) is not None for i in (2, 3, 4, 5))
    store.mark_acknowledgement(3, "sent", hub_acknowledged_at="2026-12-01T09:00:00+00:00")
    assert store.prune(keep_days=90) == 1  # report 3 now
    assert store.held(3) is None


def test_acknowledgements_only_for_open_critical_results(store: ReportStore) -> None:
    hold(store, 1)
    hold(store, 2, critical=True, critical_category="气胸")
    ack = {"username": "staff-a", "display_name": "A", "method": "phone", "read_back": "ok"}
    assert not store.acknowledge(1, **ack)  # not critical
    assert not store.acknowledge(99, **ack)  # not held
    with pytest.raises(ValueError):
        store.acknowledge(2, **{**ack, "method": "telepathy"})
    with pytest.raises(ValueError):
        store.acknowledge(2, **{**ack, "read_back": "   "})
    assert store.acknowledge(2, **ack)
    assert not store.acknowledge(2, **ack)  # the first one stands
    held = store.held(2)
    assert held is not None and held.acknowledged_at and not held.awaiting_acknowledgement
    # The hub refuses it for good (the user was disabled): open again, may be redone.
    store.mark_acknowledgement(2, "refused", "invalid_acknowledgement: user")
    held = store.held(2)
    assert held is not None and held.awaiting_acknowledgement
    assert store.counts()["reports_critical_open"] == 1
    assert store.acknowledge(2, **{**ack, "username": "staff-c"})
    assert [a.username for a in store.pending_acknowledgements()] == ["staff-c"]


def test_hostile_metadata_is_cut_to_size_and_a_bad_id_refused(store: ReportStore) -> None:
    hold(store, 7, patient_name="x" * 10_000, modalities=["CT", "SR"], critical="yes")
    held = store.held(7)
    assert held is not None
    assert len(held.patient_name) == 324 and held.modalities == "CT\\SR"
    assert held.critical is False  # only JSON true is critical
    for bad in (0, -1, "7", True, None, 2**63):
        with pytest.raises(ValueError):
            store.record(item(1, id=bad), size=1, node=False)


def test_staff_verifiers_replace_the_list_and_verify_offline(store: ReportStore) -> None:
    hasher = PasswordHasher()
    kept = store.replace_staff(
        [
            {"username": "a", "display_name": "A", "password_hash": hasher.hash("pw-a")},
            {"username": "b", "display_name": "B", "password_hash": "plaintext"},  # not argon2
            {"username": "", "password_hash": hasher.hash("x")},
            {"display_name": "no name"},
        ],
        etag='"v1"',
        clinic_name="A镇卫生院\x1b[2J Township\u202e Health Centre A\n",
    )
    assert kept == 1 and store.meta("staff_etag") == '"v1"'
    # The clinic's name for the LAN page's header, without control or bidi-override characters.
    assert store.meta("clinic_name") == "A镇卫生院[2J Township Health Centre A"
    verifier = StaffVerifier(store)
    assert verifier.verify("a", "pw-a") is not None
    assert verifier.verify("a", "wrong") is None
    assert verifier.verify("b", "plaintext") is None
    assert verifier.verify("nobody", "pw-a") is None
    member = store.staff_member("a")
    assert member is not None and verifier.still_valid("a", member.password_hash)
    store.replace_staff([])  # removed from the hub's list
    assert verifier.verify("a", "pw-a") is None
    assert not verifier.still_valid("a", member.password_hash)


def test_a_partial_download_is_removed_at_start_and_a_mismatch_never_lands(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    store = ReportStore(spool)
    (spool / "reports" / "tmp" / "1.pdf.abc.part").write_bytes(b"half")
    with pytest.raises(Exception, match="SHA-256"):
        store.write_file(
            store.pdf_path(1),
            lambda out: (out.write(b"other"), hashlib.sha256(b"other").hexdigest()),
            hashlib.sha256(PDF).hexdigest(),
        )
    assert not store.pdf_path(1).exists()
    store.close()
    reopened = ReportStore(spool)
    assert list((spool / "reports" / "tmp").iterdir()) == []
    reopened.close()


def test_an_outage_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = ReportStore(tmp_path / "spool")
    client = HubClient(f"http://127.0.0.1:{free_port()}", "token", timeout=2)
    puller = ReportPuller(
        store, client, wait_seconds=1, retry_initial_seconds=0.02, retry_max_seconds=0.05
    )
    caplog.set_level(logging.INFO, logger="imaging_hub.dicom_gateway.reports")
    puller.start()
    try:
        deadline = time.monotonic() + 10
        while puller._outage.failures < 5:
            assert time.monotonic() < deadline, "the pull loop did not retry"
            time.sleep(0.02)
    finally:
        assert puller.stop(timeout=5)
        client.close()
        store.close()
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    assert "could not be reached" in puller.last_error


def test_a_full_disk_pauses_the_pull_with_one_line_and_a_growing_wait(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ReportStore(tmp_path / "spool")
    client = HubClient(f"http://127.0.0.1:{free_port()}", "token", timeout=2)
    puller = ReportPuller(
        store, client, wait_seconds=1, retry_initial_seconds=0.01, retry_max_seconds=0.08
    )
    calls: list[float] = []

    def full_disk(wait: float | None = None) -> bool:
        calls.append(time.monotonic())
        if len(calls) <= 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return False

    monkeypatch.setattr(puller, "run_once", full_disk)
    caplog.set_level(logging.INFO, logger="imaging_hub.dicom_gateway.reports")
    puller.start()
    try:
        deadline = time.monotonic() + 10
        while len(calls) < 7:
            assert time.monotonic() < deadline, "the pull loop did not go on"
            time.sleep(0.01)
    finally:
        assert puller.stop(timeout=5)
        client.close()
        store.close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("no space left" in m for m in messages) == 1  # one line per episode
    assert not any(r.exc_info for r in caplog.records)  # no traceback per turn
    assert any("running again after 5 failure(s)" in m for m in messages)
    gaps = [b - a for a, b in itertools.pairwise(calls[:6])]
    assert gaps[-1] > gaps[0]  # the wait grows


def test_write_file_streams_through_a_file_object(store: ReportStore) -> None:
    source = io.BytesIO(PDF * 1000)

    def fill(out: Any) -> tuple[int, str]:
        data = source.getvalue()
        out.write(data)
        return len(data), hashlib.sha256(data).hexdigest()

    size, sha256 = store.write_file(store.pdf_path(9), fill, hashlib.sha256(PDF * 1000).hexdigest())
    assert size == len(PDF) * 1000 and store.pdf_path(9).read_bytes() == PDF * 1000
    assert sha256 == hashlib.sha256(PDF * 1000).hexdigest()


# --- a hub id handed out again, acknowledgements learnt from the hub (a scripted hub) ---------


class ScriptedHub(HubClient):
    """The hub's gateway API as a script: what it lists, holds and answers (no network)."""

    def __init__(self) -> None:
        self.listed: list[dict[str, Any]] = []
        self.pdfs: dict[int, bytes] = {}
        self.confirmed: list[tuple[int, str]] = []
        self.acknowledged: list[tuple[int, dict[str, Any]]] = []
        self.ack_answers: list[dict[str, Any]] = []
        self.asked: list[list[int]] = []
        self.confirm_error: ForwardError | None = None

    def close(self) -> None:
        pass

    def poll_reports(self, wait: float) -> list[dict[str, Any]]:
        return list(self.listed)

    def download_report(
        self, report_id: int, kind: str, out: BinaryIO, *, max_bytes: int
    ) -> tuple[int, str]:
        data = self.pdfs[report_id]
        out.write(data)
        return len(data), hashlib.sha256(data).hexdigest()

    def confirm_report(self, report_id: int, sha256: str) -> str:
        if self.confirm_error is not None:
            raise self.confirm_error
        self.confirmed.append((report_id, sha256))
        self.listed = [i for i in self.listed if i["id"] != report_id]
        return "2026-12-02T08:00:00+00:00"

    def acknowledge_report(self, report_id: int, acknowledgement: dict[str, Any]) -> dict[str, Any]:
        self.acknowledged.append((report_id, acknowledgement))
        return {"acknowledged_at": acknowledgement["acknowledged_at"]}

    def report_acknowledgements(self, report_ids: list[int]) -> list[dict[str, Any]]:
        self.asked.append(list(report_ids))
        return list(self.ack_answers)

    def staff(self, etag: str = "") -> tuple[dict[str, Any] | None, str]:
        return None, etag


def scripted(store: ReportStore) -> tuple[ScriptedHub, ReportPuller]:
    hub = ScriptedHub()
    return hub, ReportPuller(store, hub, wait_seconds=0)


def listed(hub: ScriptedHub, report_id: int, pdf: bytes, **changes: Any) -> None:
    hub.pdfs[report_id] = pdf
    hub.listed.append(item(report_id, sha256=hashlib.sha256(pdf).hexdigest(), **changes))


def test_a_reused_hub_id_with_another_sha256_is_kept_as_a_new_report(
    store: ReportStore, caplog: pytest.LogCaptureFixture
) -> None:
    hold(store, 5, critical=True, patient_name="李^四")  # pulled before the hub was restored
    hub, puller = scripted(store)
    second = PDF.replace(b"stand-in", b"second one")
    third = PDF.replace(b"stand-in", b"third one!")
    listed(hub, 5, second, patient_name="王^五")
    caplog.set_level(logging.INFO, logger="imaging_hub.dicom_gateway.reports")
    puller.run_once(wait=0)

    old, new = store.held(5), store.current(5)
    assert old is not None and new is not None and new.id == LOCAL_ID_BASE + 1
    assert old.replaced_at is not None and old.patient_name == "李^四"
    assert store.pdf_path(5).read_bytes() == PDF  # never overwritten
    assert store.pdf_path(new.id).read_bytes() == second and new.hub_id == 5
    assert new.patient_name == "王^五" and new.delivered_at
    assert hub.confirmed == [(5, hashlib.sha256(second).hexdigest())]  # by the hub's id
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "report 5:" in warnings[0] and str(new.id) in warnings[0]
    assert not any("李" in r.getMessage() or "王" in r.getMessage() for r in caplog.records)

    puller.run_once(wait=0)  # nothing listed any more: nothing changes
    assert store.counts()["reports_held"] == 2
    listed(hub, 5, second)  # listed again (the same report): no second copy
    puller.run_once(wait=0)
    assert store.counts()["reports_held"] == 2

    listed(hub, 5, third)  # the id handed out once more (a second restore)
    puller.run_once(wait=0)
    newest = store.current(5)
    assert newest is not None and newest.id == LOCAL_ID_BASE + 2
    assert store.pdf_path(newest.id).read_bytes() == third
    previous = store.held(LOCAL_ID_BASE + 1)
    assert previous is not None and previous.replaced_at is not None
    assert store.pdf_path(LOCAL_ID_BASE + 1).read_bytes() == second
    assert {r.id for r in store.recent()} == {5, LOCAL_ID_BASE + 1, LOCAL_ID_BASE + 2}

    # A replaced report's acknowledgement stays here; it is never sent under the hub's id.
    assert store.acknowledge(5, username="u", display_name="U", method="phone", read_back="x")
    held = store.held(5)
    assert held is not None and held.ack_state == "local" and not held.awaiting_acknowledgement
    assert puller.push_acknowledgements() == 0 and hub.acknowledged == []
    assert store.counts()["acknowledgements_waiting"] == 0


def test_a_receipt_the_hub_refuses_for_another_sha256_sets_the_held_report_aside(
    store: ReportStore,
) -> None:
    hold(store, 3, confirmed=False, critical=True)
    assert store.acknowledge(3, username="u", display_name="U", method="phone", read_back="x")
    hub, puller = scripted(store)
    hub.confirm_error = ForwardError("409", retryable=True, code="checksum_mismatch")
    assert puller.confirm_held() == 0
    held = store.held(3)
    assert held is not None and held.replaced_at is not None and held.ack_state == "local"
    assert store.current(3) is None and store.unconfirmed() == []
    assert store.counts()["reports_unconfirmed"] == 0
    assert puller.push_acknowledgements() == 0 and hub.acknowledged == []
    assert store.pdf_path(3).read_bytes() == PDF


def test_an_older_reports_database_is_brought_up_to_date(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    (spool / "reports").mkdir(parents=True)
    old = sqlite3.connect(spool / "reports.sqlite")
    old.executescript(
        "CREATE TABLE reports (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, predecessor_id "
        "INTEGER, study_instance_uid TEXT NOT NULL, accession_number TEXT NOT NULL, patient_id "
        "TEXT NOT NULL, patient_name TEXT NOT NULL, patient_sex TEXT NOT NULL, "
        "patient_birth_date TEXT NOT NULL, study_date TEXT NOT NULL, study_description TEXT NOT "
        "NULL, modalities TEXT NOT NULL, signed_at TEXT NOT NULL, signer_name TEXT NOT NULL, "
        "sha256 TEXT NOT NULL, size INTEGER NOT NULL, critical INTEGER NOT NULL, "
        "critical_category TEXT NOT NULL, hub_acknowledged_at TEXT, pdf_sop_instance_uid TEXT "
        "NOT NULL, stored_at REAL NOT NULL, delivered_at TEXT, node_state TEXT NOT NULL DEFAULT "
        "'none', node_attempts INTEGER NOT NULL DEFAULT 0, node_next_try_at REAL NOT NULL "
        "DEFAULT 0, node_last_error TEXT NOT NULL DEFAULT '', node_sent_at REAL);"
        "INSERT INTO reports VALUES (42, 'report', NULL, '1.2', 'A', 'P', 'N', '', '', '', '', "
        "'CT', '2026-12-01T08:00:00+00:00', 'R', 'ab', 1, 1, 'c', NULL, '', 0, 'x', 'none', 0, "
        "0, '', NULL);"
    )
    old.commit()
    old.close()
    for _ in range(2):  # idempotent
        store = ReportStore(spool)
        held = store.current(42)
        assert held is not None and held.id == 42 and held.hub_id == 42
        assert held.replaced_at is None and held.awaiting_acknowledgement
        assert [r.id for r in store.acknowledgements_to_learn()] == [42]
        assert store.local_id_for(42) == LOCAL_ID_BASE + 1 and store.local_id_for(43) == 43
        store.close()


def test_acknowledgements_are_learnt_only_for_the_very_report_held(store: ReportStore) -> None:
    hub, puller = scripted(store)
    assert puller.sync_acknowledgements() == 0 and hub.asked == []  # nothing open: no request
    hold(store, 1, critical=True)
    hold(store, 2, critical=True)
    hold(store, 3)  # not critical: never asked
    sha = hashlib.sha256(PDF).hexdigest()
    at = "2026-12-02T09:00:00+00:00"
    hub.ack_answers = [
        {"id": 1, "sha256": "0" * 64, "acknowledged_at": at, "acknowledged_by": "X"},  # other
        {"id": 3, "sha256": sha, "acknowledged_at": at, "acknowledged_by": "X"},  # not asked
        {"id": "2", "sha256": sha, "acknowledged_at": at},  # not an id
        {"id": 2, "sha256": sha, "acknowledged_at": ""},  # no time
        "garbage",
    ]
    assert puller.sync_acknowledgements() == 0 and hub.asked == [[1, 2]]
    assert all(store.held(i).awaiting_acknowledgement for i in (1, 2))  # type: ignore[union-attr]
    hub.ack_answers = [
        {
            "id": 2,
            "sha256": sha.upper(),
            "acknowledged_at": at,
            "acknowledged_by": "张医生" + "x" * 500,
            "via": "<script>",
            "method": "phone",
        }
    ]
    assert puller.sync_acknowledgements() == 1
    held = store.held(2)
    assert held is not None and not held.awaiting_acknowledgement
    assert held.acknowledged_at == at and held.acknowledged_via == "portal"
    assert held.acknowledged_by.startswith("张医生") and len(held.acknowledged_by) == 128
    assert [r.id for r in store.acknowledgements_to_learn()] == [1]
    for i in range(10, 160):
        hold(store, i, critical=True)
    puller.sync_acknowledgements()
    assert len(hub.asked[-1]) == 100  # bounded


def test_a_hub_without_the_acknowledgement_sync_does_not_stop_the_pull(
    store: ReportStore, caplog: pytest.LogCaptureFixture
) -> None:
    class OlderHub(ScriptedHub):
        def report_acknowledgements(self, report_ids: list[int]) -> list[dict[str, Any]]:
            self.asked.append(list(report_ids))
            raise ForwardError("404", retryable=False, code="not_found")

    hold(store, 1, critical=True)
    hub = OlderHub()
    puller = ReportPuller(store, hub, wait_seconds=0)
    listed(hub, 2, PDF.replace(b"stand-in", b"a new one"))
    caplog.set_level(logging.WARNING, logger="imaging_hub.dicom_gateway.reports")
    assert puller.run_once(wait=0) is True  # pulled all the same
    assert store.current(2) is not None and hub.confirmed
    puller.run_once(wait=0)
    assert len(hub.asked) == 1  # not asked again at every cycle
    assert len([r for r in caplog.records if "acknowledgement sync" in r.getMessage()]) == 1
