"""Parking in the spool and the forwarder: what the hub refuses for good is parked with the hub's
code and detail, tried again on a doubling schedule capped at 30 minutes (or at once on the
operator's retry), and a study is never completed in a loop."""

import time
from pathlib import Path
from typing import Any

from imaging_hub.dicom_gateway.forwarder import Forwarder
from imaging_hub.dicom_gateway.spool import PARK_MAX_SECONDS, Spool, parking_delay
from imaging_hub.errors import ForwardError

STUDY = "1.2.3"


def _put(spool: Spool, n: int, study: str = STUDY) -> list[str]:
    uids = []
    for i in range(n):
        uid = f"{study}.{i + 1}"
        spool.put(
            f"data{i}".encode(),
            sop_instance_uid=uid,
            study_instance_uid=study,
            series_instance_uid=f"{study}.0",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
        )
        uids.append(uid)
    return uids


def test_the_parking_schedule_doubles_up_to_30_minutes() -> None:
    delays = [parking_delay(n, initial=60, maximum=PARK_MAX_SECONDS) for n in range(8)]
    assert delays == [60, 120, 240, 480, 960, 1800, 1800, 1800]


class RefusingHub:
    """A hub that refuses every upload of *refused* for good and counts every call."""

    def __init__(self, refused: str) -> None:
        self.refused = refused
        self.calls: list[tuple[str, str]] = []

    def put_instance(self, sop_uid: str, data: Any, sha256: str) -> dict[str, Any]:
        self.calls.append(("put", sop_uid))
        if sop_uid.startswith(self.refused + "."):
            raise ForwardError(
                "The hub answered 409 uid_conflict: This StudyInstanceUID is already "
                "registered for another clinic.",
                retryable=False,
                code="uid_conflict",
            )
        return {}

    def complete_study(self, study_uid: str, sop_uids: list[str]) -> list[str]:
        self.calls.append(("complete", study_uid))
        if study_uid == self.refused:
            raise ForwardError("The hub answered 404 not_found", retryable=False, code="not_found")
        return []


def test_a_refused_study_is_parked_once_and_retried_on_request(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    hub = RefusingHub(STUDY)
    forwarder = Forwarder(spool=spool, client=hub, stability_seconds=0)  # type: ignore[arg-type]
    try:
        _put(spool, 2)
        _put(spool, 1, study="1.2.4")
        for _ in range(20):  # 20 turns of the loop: 10 s of a running gateway
            forwarder.run_once()
        assert sorted(hub.calls) == [
            ("complete", "1.2.4"),
            ("put", "1.2.3.1"),
            ("put", "1.2.3.2"),
            ("put", "1.2.4.1"),
        ]
        [parked] = spool.parked()
        assert parked.study_instance_uid == STUDY
        assert (parked.code, parked.instances) == ("uid_conflict", 2)
        assert "another clinic" in parked.reason
        assert parked.next_try_at is not None and parked.next_try_at > time.time() + 50
        assert spool.stats().parked_studies == 1 and spool.stats().failed == 2

        assert spool.retry(STUDY) == (1, 2)
        forwarder.run_once()
        assert [c for c in hub.calls if c[0] == "put"].count(("put", "1.2.3.1")) == 2
        [again] = spool.parked()
        assert again.next_try_at is not None and again.next_try_at > time.time() + 110  # doubled
        assert spool.retry("1.2.4") == (0, 0)
    finally:
        spool.close()


def test_a_completion_refused_for_good_parks_the_study(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    hub = RefusingHub(STUDY)
    hub.put_instance = lambda sop_uid, data, sha256: {}  # type: ignore[method-assign]
    forwarder = Forwarder(spool=spool, client=hub, stability_seconds=0)  # type: ignore[arg-type]
    try:
        _put(spool, 1)
        for _ in range(10):
            forwarder.run_once()
        assert hub.calls == [("complete", STUDY)]
        [parked] = spool.parked()
        assert parked.code == "not_found" and parked.instances == 0
        assert spool.retry() == (1, 0)
        forwarder.run_once()
        assert hub.calls == [("complete", STUDY)] * 2
    finally:
        spool.close()


def test_a_retryable_completion_failure_backs_off(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    calls: list[str] = []

    class Down:
        def put_instance(self, *args: Any) -> dict[str, Any]:
            return {}

        def complete_study(self, study_uid: str, sop_uids: list[str]) -> list[str]:
            calls.append(study_uid)
            raise ForwardError("The hub could not be reached (ConnectError).", retryable=True)

    forwarder = Forwarder(
        spool=spool,
        client=Down(),  # type: ignore[arg-type]
        stability_seconds=0,
        retry_initial_seconds=30,
    )
    try:
        _put(spool, 1)
        for _ in range(10):
            forwarder.run_once()
        assert calls == [STUDY]
        assert spool.parked() == []  # retryable: not parked
    finally:
        spool.close()
