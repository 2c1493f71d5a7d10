"""The gateway's report store on its own: retention, acknowledgements, staff verifiers, hostile
metadata, and the pull loop's back-off logging (no hub: what is tested needs none)."""

import hashlib
import io
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from imaging_hub.dicom_gateway.hub_client import HubClient
from imaging_hub.dicom_gateway.reports import ReportPuller, ReportStore, StaffVerifier
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
    )
    assert kept == 1 and store.meta("staff_etag") == '"v1"'
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


def test_write_file_streams_through_a_file_object(store: ReportStore) -> None:
    source = io.BytesIO(PDF * 1000)

    def fill(out: Any) -> tuple[int, str]:
        data = source.getvalue()
        out.write(data)
        return len(data), hashlib.sha256(data).hexdigest()

    size, sha256 = store.write_file(store.pdf_path(9), fill, hashlib.sha256(PDF * 1000).hexdigest())
    assert size == len(PDF) * 1000 and store.pdf_path(9).read_bytes() == PDF * 1000
    assert sha256 == hashlib.sha256(PDF * 1000).hexdigest()
