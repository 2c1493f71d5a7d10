"""Forwarder building blocks and the spool's recovery verbs, tested directly (no network)."""

import time
from pathlib import Path

import pytest

from imaging_hub.dicom_gateway.forwarder import Throughput, TokenBucket, backoff_delay
from imaging_hub.dicom_gateway.spool import Spool


def _put(spool: Spool, n: int, *, study: str = "1.2.3", priority: int = 2) -> list[str]:
    uids = []
    for i in range(n):
        uid = f"{study}.{priority}.{i + 1}"
        spool.put(
            b"x" * 10,
            sop_instance_uid=uid,
            study_instance_uid=study,
            series_instance_uid=f"{study}.9",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            priority=priority,
        )
        uids.append(uid)
    return uids


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    for attempts in range(12):
        ceiling = min(30.0, 0.5 * 2**attempts)
        values = {backoff_delay(attempts, initial=0.5, maximum=30.0) for _ in range(200)}
        assert all(0.25 <= v <= max(0.25, ceiling) for v in values)
        if ceiling > 1:
            assert len(values) > 100  # jittered, not lockstep
    assert max(backoff_delay(50, initial=1, maximum=5) for _ in range(100)) <= 5


def test_token_bucket_caps_the_rate() -> None:
    bucket = TokenBucket(400_000, burst=65_536)
    started = time.monotonic()
    sent = sum(len(chunk) for chunk in bucket.stream(b"\0" * 600_000))
    elapsed = time.monotonic() - started
    assert sent == 600_000
    # (600 kB - 64 kB burst) at 400 kB/s takes at least ~1.3 s
    assert elapsed >= 1.2


def test_token_bucket_refuses_a_zero_rate() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0)


def test_throughput_over_the_window() -> None:
    meter = Throughput(window=60)
    assert meter.bytes_per_second() == 0.0
    now = time.monotonic()
    meter.record(now - 2.0, now - 1.0, 1_000_000)
    meter.record(now - 1.5, now - 0.0, 1_000_000)
    assert meter.bytes_per_second() == pytest.approx(1_000_000, rel=0.05)


def test_leases_of_a_crashed_run_are_released(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    _put(spool, 3)
    assert len(spool.lease(10)) == 3
    assert spool.lease(10) == []  # leased for 300 s
    spool.close()
    restarted = Spool(tmp_path)
    assert restarted.release_leases() == 3
    assert len(restarted.lease(10)) == 3
    restarted.close()


def test_stat_first_and_requeue_of_missing(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    routine = _put(spool, 2, study="1.2.3", priority=2)
    stat = _put(spool, 1, study="1.2.4", priority=0)
    leased = spool.lease(10)
    assert leased[0].sop_instance_uid == stat[0]
    for item in leased:
        spool.ack(item.sop_instance_uid, sha256=item.sha256, sent_bytes=5)
    assert spool.stats().pending == 0
    assert spool.requeue([routine[1], "9.9.9"], error="The hub misses 1 instances.") == 1
    again = spool.lease(10)
    assert [i.sop_instance_uid for i in again] == [routine[1]]
    assert spool.stats().last_error == "The hub misses 1 instances."
    spool.close()


def test_counters_and_totals(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    _put(spool, 2)
    spool.count("refused")
    spool.count("refused", 2)
    totals = spool.totals()
    assert totals == {
        "received": 2,
        "received_bytes": 20,
        "forwarded": 0,
        "forwarded_bytes": 0,
        "refused": 3,
    }
    spool.close()


def test_transcoding_processes_are_started_and_warm_before_forwarding(tmp_path: Path) -> None:
    """Forwarder.start() returns once every transcoding process has started and transcoded
    the warm-up image, so the first study does not wait for process start and codec loading.
    The hub is an unused closed port: nothing is spooled, nothing is sent."""
    import multiprocessing

    from imaging_hub.dicom.transcode import transcode_for_wan, warm_up_instance
    from imaging_hub.dicom_gateway.forwarder import Forwarder, wan_preparer
    from imaging_hub.dicom_gateway.hub_client import HubClient

    assert transcode_for_wan(warm_up_instance()).transcoded  # the warm-up really encodes
    spool = Spool(tmp_path / "spool")
    client = HubClient("http://127.0.0.1:9", "unused", timeout=1)
    before = set(multiprocessing.active_children())
    forwarder = Forwarder(
        spool=spool, client=client, prepare=wan_preparer("jpeg-ls"), prepare_processes=2
    )
    try:
        forwarder.start()
        started = set(multiprocessing.active_children()) - before
        assert len(started) == 2
        assert all(process.is_alive() for process in started)
    finally:
        forwarder.stop()
        client.close()
        spool.close()


def test_an_upload_holds_back_its_last_piece_until_the_verification() -> None:
    """forwarder._held_back: every piece but the last goes at once; the last only once the
    verification passed; a refused or crashed verification stops the body short."""
    from concurrent.futures import Future

    from imaging_hub.dicom_gateway.forwarder import VerificationFailed, _held_back

    passed: Future[str | None] = Future()
    body = _held_back(iter([b"a", b"b", b"c"]), passed)
    assert [next(body), next(body)] == [b"a", b"b"]
    passed.set_result(None)
    assert list(body) == [b"c"]

    for outcome in ("refused", "crashed"):
        verification: Future[str | None] = Future()
        if outcome == "refused":
            verification.set_result("Verification failed: the decoded pixels differ.")
        else:
            verification.set_exception(RuntimeError("worker died"))
        sent = []
        with pytest.raises(VerificationFailed):
            for piece in _held_back(iter([b"a", b"b", b"c"]), verification):
                sent.append(piece)
        assert sent == [b"a", b"b"]
