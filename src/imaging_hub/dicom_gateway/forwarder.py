"""The forwarder: leases spooled instances, uploads them to the hub, completes stable studies.

Uploads run on a small thread pool. Retryable failures back off exponentially with full jitter;
permanent ones are parked with their reason. Idempotent by SOP Instance UID: a crash between
upload and ack means a re-upload, which the hub treats as the same instance.
"""

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from imaging_hub.dicom_gateway.hub_client import HubClient
from imaging_hub.dicom_gateway.spool import Spool, SpooledInstance
from imaging_hub.errors import ForwardError

log = logging.getLogger(__name__)


def backoff_delay(attempts: int, *, initial: float, maximum: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, initial * 2**attempts)]."""
    ceiling = min(maximum, initial * (2 ** min(attempts, 30)))
    return random.uniform(initial / 2, max(initial / 2, ceiling))


class Forwarder:
    def __init__(
        self,
        *,
        spool: Spool,
        client: HubClient,
        concurrency: int = 4,
        stability_seconds: float = 10.0,
        retry_initial_seconds: float = 1.0,
        retry_max_seconds: float = 300.0,
        prepare: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.spool = spool
        self.client = client
        self.concurrency = max(1, concurrency)
        self.stability_seconds = stability_seconds
        self.retry_initial = retry_initial_seconds
        self.retry_max = retry_max_seconds
        self.prepare = prepare
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="forward")
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception:  # keep forwarding whatever happens; the error is logged
                log.exception("forwarder loop failed; retrying")
                busy = False
            if not busy:
                self._wake.wait(0.5)
                self._wake.clear()

    def run_once(self) -> bool:
        """Upload one batch and complete stable studies; returns whether there was work."""
        items = self.spool.lease(self.concurrency * 2)
        futures: list[Future[None]] = [self._pool.submit(self._upload, item) for item in items]
        for future in futures:
            future.result()
        completed = self._complete_stable()
        return bool(items) or completed

    def _upload(self, item: SpooledInstance) -> None:
        started = time.monotonic()
        try:
            data = self.spool.read(item)
        except OSError as exc:
            self.spool.park(item.sop_instance_uid, error=f"spool file unreadable: {exc}")
            log.error("instance %s: spool file unreadable", item.sop_instance_uid)
            return
        payload = self.prepare(data) if self.prepare else data
        digest = hashlib.sha256(payload).hexdigest()
        try:
            self.client.put_instance(item.sop_instance_uid, payload, digest)
        except ForwardError as exc:
            if exc.retryable:
                delay = backoff_delay(
                    item.attempts, initial=self.retry_initial, maximum=self.retry_max
                )
                self.spool.nack(item.sop_instance_uid, delay=delay, error=str(exc))
                log.warning(
                    "instance %s: upload failed, retry in %.1fs: %s",
                    item.sop_instance_uid,
                    delay,
                    exc,
                )
            else:
                self.spool.park(item.sop_instance_uid, error=str(exc))
                log.error("instance %s: refused by the hub: %s", item.sop_instance_uid, exc)
            return
        self.spool.ack(item.sop_instance_uid, sha256=item.sha256, sent_bytes=len(payload))
        log.debug(
            "instance %s forwarded: %d bytes in %.3fs",
            item.sop_instance_uid,
            len(payload),
            time.monotonic() - started,
        )

    def _complete_stable(self) -> bool:
        done = False
        for study_uid in self.spool.stable_studies(self.stability_seconds):
            sop_uids = self.spool.study_instances(study_uid)
            try:
                missing = self.client.complete_study(study_uid, sop_uids)
            except ForwardError as exc:
                self.spool.mark_study_error(study_uid, str(exc))
                log.warning("study %s: completion failed: %s", study_uid, exc)
                continue
            if missing:
                self.spool.mark_study_error(study_uid, f"hub misses {len(missing)} instances")
                log.warning("study %s: hub misses %d instances", study_uid, len(missing))
                continue
            self.spool.mark_study_done(study_uid)
            log.info("study %s forwarded: %d instances", study_uid, len(sop_uids))
            done = True
        return done
