"""The forwarder: leases spooled instances, uploads them to the hub, completes studies.

Uploads run on a small thread pool, STAT studies first (the spool orders by priority).
Retryable failures back off exponentially with jitter. What the hub refuses for good (by its
problem+json ``code``: a UID conflict, a clinic mismatch, invalid DICOM) is parked with the code
and the hub's detail — an instance at upload, a study at completion, or a study none of whose
instances the hub took — and tried again only on the parking schedule (1 min, doubling, at most
30 min) or when the operator runs ``imaging-hub gateway retry``; never in a loop.
Idempotent by SOP Instance UID: a crash between upload and ack means a re-upload, which the hub
treats as the same instance. At start every stale lease of a crashed run is released, so
forwarding resumes at once. When the hub reports instances missing at completion, they are
queued again instead of leaving the study stuck. An optional token bucket caps the uplink.

The completion step (`Forwarder._complete_ready`) tells the hub a study is complete as soon as
one trigger holds (:meth:`Studies.ready_studies
<imaging_hub.dicom_gateway.spool.studies.Studies.ready_studies>`): its MPPS step COMPLETED with
every referenced instance at the hub, its order done or its expected image count reached (from
the order cache, an optional :class:`OrderHints` provider), or the stability window; never
while an association carrying it is open or an instance of it is pending.
"""

import collections
import hashlib
import logging
import multiprocessing
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from imaging_hub.dicom.transcode import (
    JPEG2000_LOSSLESS,
    JPEG_LS_LOSSLESS,
    SHA256_TRAILER,
    StreamHead,
    encode_codestream_for_wan,
    encode_for_wan,
    encode_head_for_wan,
    join_streamed,
    transcode_for_wan,
    verify_for_wan,
    warm_up_instance,
)
from imaging_hub.dicom_gateway.hub_client import HubClient
from imaging_hub.dicom_gateway.spool import (
    MAX_ASSOCIATION_SECONDS,
    PARK_INITIAL_SECONDS,
    PARK_MAX_SECONDS,
    OrderHint,
    Spool,
    SpooledInstance,
)
from imaging_hub.dicom_gateway.wakeup import MPPS, Alarm, WakeListener
from imaging_hub.errors import ForwardError, ImagingHubError

log = logging.getLogger(__name__)


UPLOAD_CHUNK_BYTES = 64 * 1024
THROUGHPUT_WINDOW_SECONDS = 60.0
#: How often the rows of associations whose process is gone are looked for.
STALE_ASSOCIATIONS_EVERY_SECONDS = 5.0
#: The forwarder's poll when idle (and while uploads are in flight, with upload slots free):
#: the fallback of the wake-ups (an instance spooled, an MPPS change, an upload finished).
IDLE_POLL_SECONDS = 0.5


class OrderHints(Protocol):
    """The order cache as the completion step reads it (``mwl.OrderCache``)."""

    def hints(self) -> "Sequence[OrderHint]": ...


def backoff_delay(attempts: int, *, initial: float, maximum: float) -> float:
    """Exponential backoff with jitter: uniform in [initial/2, min(max, initial * 2**attempts)].

    The floor of half the initial delay keeps a flapping hub from being hammered; the random
    spread keeps many gateways from retrying in lockstep after a hub outage.
    """
    ceiling = min(maximum, initial * (2 ** min(attempts, 30)))
    return random.uniform(initial / 2, max(initial / 2, ceiling))


class TokenBucket:
    """A byte-rate cap shared by every upload thread (tokens are bytes)."""

    def __init__(self, rate: float, *, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("The bandwidth limit must be positive.")
        self.rate = float(rate)
        self.capacity = float(burst if burst is not None else max(rate, UPLOAD_CHUNK_BYTES))
        self._tokens = self.capacity
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        """Block until *n* bytes may be sent."""
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= n or self._tokens >= self.capacity:
                    self._tokens -= n
                    return
                wait = (n - self._tokens) / self.rate
            time.sleep(min(wait, 1.0))

    def stream(self, data: bytes) -> Iterator[bytes]:
        view = memoryview(data)
        for start in range(0, len(view), UPLOAD_CHUNK_BYTES):
            chunk = view[start : start + UPLOAD_CHUNK_BYTES]
            self.take(len(chunk))
            yield bytes(chunk)


class Throughput:
    """Uplink throughput measured over the last minute of successful uploads."""

    def __init__(self, window: float = THROUGHPUT_WINDOW_SECONDS) -> None:
        self.window = window
        self._uploads: collections.deque[tuple[float, float, int]] = collections.deque()
        self._lock = threading.Lock()

    def record(self, started: float, ended: float, size: int) -> None:
        with self._lock:
            self._uploads.append((started, ended, size))
            while self._uploads and self._uploads[0][1] < ended - self.window:
                self._uploads.popleft()

    def bytes_per_second(self) -> float:
        """Bytes sent in the window divided by the time the uploads spanned (0 if idle)."""
        now = time.monotonic()
        with self._lock:
            recent = [u for u in self._uploads if u[1] >= now - self.window]
        if not recent:
            return 0.0
        span = max(u[1] for u in recent) - min(u[0] for u in recent)
        return sum(u[2] for u in recent) / max(span, 1e-3)


@dataclass(frozen=True)
class Prepared:
    """The bytes to upload for one instance and whether they were transcoded.

    ``verification`` is set for a transcoded file whose verification is still running (in a
    transcoding process): the upload holds back its last chunk until it passes, so the hub
    never receives a complete, unverified file; it resolves to None (verified) or the reason.
    """

    data: bytes
    transcoded: bool = False
    verification: "Future[str | None] | None" = None


@dataclass(frozen=True)
class WanTranscoder:
    """Lossless transcoding for the WAN (picklable: its methods run in worker processes)."""

    syntax: str

    def __call__(self, data: bytes) -> Prepared:
        """Encode and verify (the whole of transcode_for_wan), in the calling thread."""
        result = transcode_for_wan(data, syntax=self.syntax)
        return Prepared(result.data, result.transcoded)

    def encode(self, data: bytes) -> Prepared:
        """The encoded file, not yet verified (see :meth:`verify`), or the original."""
        result = encode_for_wan(data, syntax=self.syntax)
        return Prepared(result.data, result.transcoded)

    def verify(self, original: bytes, encoded: bytes) -> str | None:
        """None if *encoded* holds exactly *original*'s pixels and elements, else why not."""
        return verify_for_wan(original, encoded, syntax=self.syntax)

    def head(self, source: Path) -> StreamHead | None:
        """The first bytes of the encoded file *source*, from the image's first lines, or None
        when the streamed encoding does not apply (see imaging_hub.dicom.transcode). Given the
        spool file's path, not its bytes: reading it here is faster than passing 15 MB to a
        transcoding process, and the head is what the upload waits for."""
        return encode_head_for_wan(source.read_bytes(), syntax=self.syntax)

    def codestream(self, source: Path) -> bytes | None:
        """The whole image's codestream that :meth:`head` began, or None."""
        return encode_codestream_for_wan(source.read_bytes(), syntax=self.syntax)


#: Native instances at least this large (radiographs, mammograms) are JPEG-LS encoded in two
#: parts, so that their first bytes go out after a fraction of the encoding time (a 15 MB DX:
#: 0.05 s instead of 0.3 s, during which the link would idle): the image's first lines
#: encoded on their own, and the whole image in a second transcoding process (see
#: "Streamed JPEG-LS" in imaging_hub.dicom.transcode). Smaller ones encode in one go.
STREAM_MIN_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Started:
    """An instance's bytes and the encoding started for it in the transcoding processes: the
    whole file (``encoded``), or a streamed head and the whole image's codestream."""

    data: bytes
    encoded: "Future[Prepared] | None" = None
    head: "Future[StreamHead | None] | None" = None
    codestream: "Future[bytes | None] | None" = None


def wan_preparer(transcode: str) -> WanTranscoder | None:
    """The preparation step for ``GatewaySettings.transcode``: lossless, verified, or none.

    ``jpeg-ls`` / ``jpeg2000`` re-encode native pixel data with
    :func:`~imaging_hub.dicom.transcode.transcode_for_wan`, which decodes the result again
    and keeps it only if every pixel is identical; already compressed originals are sent as
    they are.
    """
    if transcode == "none":
        return None
    return WanTranscoder(JPEG_LS_LOSSLESS if transcode == "jpeg-ls" else JPEG2000_LOSSLESS)


class VerificationFailed(Exception):
    """A transcoded upload was stopped before its end: the verification refused the file."""


# Size of the pieces an upload body is sent in when its last piece is held back.
UPLOAD_CHUNK = 256 * 1024


def _held_back(chunks: Iterator[bytes], verification: "Future[str | None]") -> Iterator[bytes]:
    """Yield *chunks*, but the last one only once *verification* passed."""
    previous: bytes | None = None
    for chunk in chunks:
        if previous is not None:
            yield previous
        previous = chunk
    _raise_unless_verified(verification)
    if previous is not None:
        yield previous


def _raise_unless_verified(verification: "Future[str | None]") -> None:
    """Wait for *verification*; VerificationFailed unless it passed."""
    try:
        failure = verification.result()
    except Exception as exc:  # the transcoding process died: unverified, so not sent
        failure = f"The verification could not run ({type(exc).__name__})."
    if failure is not None:
        raise VerificationFailed(failure)


def _pieces(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), UPLOAD_CHUNK):
        yield bytes(view[start : start + UPLOAD_CHUNK])


def _warm_up_worker(prepare: WanTranscoder) -> None:
    """Initializer of a transcoding process: load the codecs by transcoding a small image."""
    try:
        prepare(warm_up_instance())
    except Exception:  # a failed warm-up costs only time; real instances report errors
        log.exception("warming up a transcoding process failed")


def _worker_pid(pause: float) -> int:
    """A probe of Forwarder._wait_for_warm_workers."""
    time.sleep(pause)
    return os.getpid()


class Forwarder:
    """Moves spooled instances to the hub; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        spool: Spool,
        client: HubClient,
        concurrency: int = 4,
        stability_seconds: float = 10.0,
        retry_initial_seconds: float = 1.0,
        retry_max_seconds: float = 300.0,
        prepare: WanTranscoder | None = None,
        bandwidth_limit_bytes_per_second: int | None = None,
        on_study_forwarded: Callable[[str, int, int, int, float], None] | None = None,
        prepare_processes: int = 0,
        retention_seconds: float | None = None,
        park_initial_seconds: float = PARK_INITIAL_SECONDS,
        park_max_seconds: float = PARK_MAX_SECONDS,
        order_hints: OrderHints | None = None,
        max_association_seconds: float = MAX_ASSOCIATION_SECONDS,
        wakeup_dir: Path | None = None,
        idle_poll_seconds: float = IDLE_POLL_SECONDS,
    ) -> None:
        """*prepare_processes* > 0 runs *prepare* (transcoding) in that many processes, started
        as soon as an instance is leased, so it overlaps the uploads in flight. What the hub
        refuses for good is tried again after *park_initial_seconds*, doubling each time up to
        *park_max_seconds*. *order_hints* (the order cache) adds the "exam done" and "expected
        images reached" completion triggers; an association open longer than
        *max_association_seconds* no longer keeps its studies from completing. With
        *wakeup_dir* (the spool directory) the forwarder binds the wake-up socket other processes
        (the SCP workers) send to (:mod:`~imaging_hub.dicom_gateway.wakeup`); it polls every
        *idle_poll_seconds* besides."""
        self.spool = spool
        self.client = client
        self.concurrency = max(1, concurrency)
        self.stability_seconds = stability_seconds
        self.retention_seconds = retention_seconds
        self._next_purge = 0.0
        self.retry_initial = retry_initial_seconds
        self.retry_max = retry_max_seconds
        self.park_initial = park_initial_seconds
        self.park_max = park_max_seconds
        self.prepare = prepare
        self.bucket = (
            TokenBucket(bandwidth_limit_bytes_per_second)
            if bandwidth_limit_bytes_per_second
            else None
        )
        self.on_study_forwarded = on_study_forwarded
        self.order_hints = order_hints
        self.max_association_seconds = max_association_seconds
        self._next_stale_check = 0.0
        self.throughput = Throughput()
        self.upload_failures = 0
        self.forwarded = 0
        self.last_error = ""
        self.last_error_at: float | None = None
        self._stop = threading.Event()
        self.idle_poll_seconds = idle_poll_seconds
        self.wakeups = WakeListener(wakeup_dir) if wakeup_dir is not None else None
        self._alarm = Alarm(self.wakeups)
        self._mpps_changed = threading.Event()
        #: Called (in the forwarder's thread) when another process reports an MPPS change.
        self.on_mpps_wakeup: Callable[[], None] | None = None
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="forward")
        self._prepare_pool: Executor | None = None
        self._prepare_processes = prepare_processes
        if prepare is not None and prepare_processes > 0:
            self._prepare_pool = ProcessPoolExecutor(
                prepare_processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_warm_up_worker,
                initargs=(prepare,),
            )
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)
        self._started_at: dict[str, float] = {}

    def start(self) -> None:
        """Start forwarding; with transcoding processes, returns once every one of them has
        started and transcoded a small image (codecs loaded: about a second each), so the
        first study does not wait for that."""
        if self._prepare_pool is not None:
            self._wait_for_warm_workers(self._prepare_pool)
        released = self.spool.release_leases()
        if released:
            log.info("resuming: %d instances of an interrupted run queued again", released)
        if self.wakeups is not None:
            self.wakeups.open()
        self._thread.start()

    def _wait_for_warm_workers(self, pool: Executor, timeout: float = 120.0) -> None:
        """Probe the pool until every process has answered (each answers only after its
        initializer, the warm-up, ran). A process busy with a probe cannot take the next one
        for a moment, so the probes spread over the processes as they come up."""
        deadline = time.monotonic() + timeout
        seen: set[int] = set()
        while len(seen) < self._prepare_processes and time.monotonic() < deadline:
            probes = [pool.submit(_worker_pid, 0.05) for _ in range(self._prepare_processes)]
            done, _ = wait(probes, timeout=max(0.0, deadline - time.monotonic()))
            seen.update(probe.result() for probe in done)
        if len(seen) < self._prepare_processes:
            log.warning("transcoding processes are slow to start; forwarding anyway")

    def wake(self, *, mpps: bool = False) -> None:
        """Look for work now (any thread of this process; never blocks); *mpps*: an MPPS
        changed (completion is looked at even while other studies upload)."""
        if mpps:
            self._mpps_changed.set()
        self._alarm.set()

    @property
    def socket_wakeups(self) -> int:
        """How many waits a datagram of another process ended."""
        return self._alarm.socket_wakeups

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._alarm.set()
        self._thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._prepare_pool is not None:
            self._prepare_pool.shutdown(wait=True, cancel_futures=True)
        if not self._thread.is_alive():
            self._alarm.close()  # and the wake-up socket, its file removed
        elif self.wakeups is not None:
            self.wakeups.close()

    def _wait(self, timeout: float) -> bytes:
        """Wait for a wake-up (this process, another process, a finished upload) or
        *timeout*; the kinds other processes reported (an MPPS change wakes the outbox)."""
        kinds = self._alarm.wait(timeout)
        if MPPS in kinds and self.on_mpps_wakeup is not None:
            try:
                self.on_mpps_wakeup()
            except Exception:  # only a hint
                log.exception("MPPS wake-up failed")
        if self._mpps_changed.is_set() and MPPS not in kinds:
            kinds += MPPS  # in this process (its outbox was woken directly)
        self._mpps_changed.clear()
        return kinds

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception:  # keep forwarding whatever happens; the error is logged
                log.exception("forwarder loop failed; retrying")
                busy = False
            if not busy and not self._stop.is_set():
                self._wait(self.idle_poll_seconds)
                if self.wakeups is not None:
                    self.wakeups.check()  # its file removed: bound again

    def run_once(self) -> bool:
        """Forward until the queue is empty, then complete stable studies; returns whether
        there was work.

        A pipeline, not batches: up to twice ``concurrency`` instances are in it at any time
        (``concurrency`` uploading, the next ones being prepared), and each finished upload
        makes room for the next lease at once, so the link never idles at a batch boundary.
        While there is room, a wake-up (an instance spooled, by this or another process)
        leases at once too, without waiting for an upload to end. A study whose last upload
        in flight ended, or an MPPS change, runs the completion step without waiting for the
        other studies' uploads.
        """
        in_flight: dict[Future[None], str] = {}
        worked = self.spool.unpark_due() > 0
        completed = False
        while True:
            room = 0 if self._stop.is_set() else self.concurrency * 2 - len(in_flight)
            if room > 0:
                items = self.spool.lease(room)
                worked = worked or bool(items)
                for item in items:
                    prepared = self._start_prepare(item)
                    future = self._pool.submit(self._upload, item, prepared)
                    in_flight[future] = item.study_instance_uid
                    future.add_done_callback(self._upload_ended)
            if not in_flight:
                break
            kinds = b""
            if len(in_flight) < self.concurrency * 2 and not self._stop.is_set():
                # Room for more: a wake-up ends the wait as well as a finished upload.
                kinds = self._wait(self.idle_poll_seconds)
                done = {future for future in in_flight if future.done()}
            else:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            studies = {in_flight.pop(future) for future in done}
            for future in done:
                future.result()
            # A study none of whose instances is in flight any more may be complete now
            # (without waiting for other studies' uploads; with none left, see below).
            if in_flight and (MPPS in kinds or studies - set(in_flight.values())):
                completed = self._complete_ready() or completed
        completed = self._complete_ready() or completed
        self._purge()
        return worked or completed

    def _upload_ended(self, _future: "Future[None]") -> None:
        self._alarm.set()

    def _purge(self) -> None:
        """Delete forwarded copies past their retention, at most once a minute (or at once
        after a study completed when the retention is 0)."""
        if self.retention_seconds is None or time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + (60.0 if self.retention_seconds > 0 else 0.0)
        try:
            self.spool.purge_forwarded(older_than_seconds=self.retention_seconds)
        except (OSError, sqlite3.Error) as exc:
            log.error("spool purge failed: %s", exc)

    def _start_prepare(self, item: SpooledInstance) -> Started | None:
        """The instance's bytes and its encoding, started in the transcoding processes."""
        if self._prepare_pool is None or self.prepare is None:
            return None
        try:
            data = self.spool.read(item)
        except OSError:
            return None  # the upload reads again and parks the instance
        pool = self._prepare_pool
        if len(data) >= STREAM_MIN_BYTES and self.prepare.syntax == JPEG_LS_LOSSLESS:
            # The head first: it is what the upload waits for.
            head = pool.submit(self.prepare.head, item.path)
            codestream = pool.submit(self.prepare.codestream, item.path)
            return Started(data, head=head, codestream=codestream)
        return Started(data, encoded=self._submit_encode(data))

    def _submit_encode(self, data: bytes) -> "Future[Prepared] | None":
        if self._prepare_pool is None or self.prepare is None:
            return None
        return self._prepare_pool.submit(self.prepare.encode, data)

    def _stream_head(self, started: Started | None) -> StreamHead | None:
        """The streamed head, once encoded; None if there is none (then the whole file is
        encoded in one go: its encoding is started here when the head did not apply)."""
        if started is None or started.head is None:
            return None
        try:
            head = started.head.result()
        except Exception as exc:  # a transcoding process died: the one-go path says more
            log.debug("streamed head failed: %s", type(exc).__name__)
            head = None
        if head is None and started.codestream is not None:
            started.codestream.cancel()
        return head

    def _error(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = time.time()

    def _payload(
        self, item: SpooledInstance, data: bytes, prepared: "Future[Prepared] | None"
    ) -> Prepared:
        """What to upload: the original, or the transcoded file (verified, or with its
        verification running in a transcoding process when *prepared* came from one)."""
        if self.prepare is None:
            return Prepared(data)
        try:
            if prepared is None or self._prepare_pool is None:
                return self.prepare(data)
            encoded = prepared.result()
            if not encoded.transcoded:
                return encoded
            verification = self._prepare_pool.submit(self.prepare.verify, data, encoded.data)
            return Prepared(encoded.data, True, verification)
        except Exception as exc:  # never block an instance on the optional transcoding
            log.warning(
                "instance %s: sent as received, transcoding failed: %s",
                item.sop_instance_uid,
                exc if isinstance(exc, ImagingHubError) else type(exc).__name__,
            )
            return Prepared(data)

    def _upload(self, item: SpooledInstance, prepare: Started | None = None) -> None:
        started = time.monotonic()
        self._started_at.setdefault(item.study_instance_uid, time.time())
        prepared = prepare.encoded if prepare is not None else None
        try:
            data = prepare.data if prepare is not None else self.spool.read(item)
        except OSError as exc:
            self.spool.park(
                item.sop_instance_uid,
                error=f"spool file unreadable: {exc}",
                code="spool_file_unreadable",
                initial=self.park_initial,
                maximum=self.park_max,
            )
            log.error("instance %s: spool file unreadable", item.sop_instance_uid)
            self._error("A spool file was unreadable.")
            return
        head = self._stream_head(prepare)
        if head is None and prepare is not None and prepare.head is not None:
            prepared = self._submit_encode(data)
        try:
            try:
                if head is not None and prepare is not None and prepare.codestream is not None:
                    size = self._put_streamed(item, data, head, prepare.codestream)
                else:
                    prepared_payload = self._payload(item, data, prepared)
                    size = len(prepared_payload.data)
                    self._put(item, prepared_payload)
            except VerificationFailed as failure:
                # Stopped before its end, so the hub stored nothing: send the original.
                log.warning(
                    "instance %s: sent as received, transcoding failed: %s",
                    item.sop_instance_uid,
                    failure,
                )
                size = len(data)
                self._put(item, Prepared(data))
        except ForwardError as exc:
            self.upload_failures += 1
            self._error(str(exc))
            if exc.retryable:
                delay = backoff_delay(
                    item.attempts, initial=self.retry_initial, maximum=self.retry_max
                )
                self.spool.nack(item.sop_instance_uid, delay=delay, error=str(exc), code=exc.code)
                log.warning(
                    "instance %s: upload failed, retry in %.1fs: %s",
                    item.sop_instance_uid,
                    delay,
                    exc,
                )
            else:
                delay = self.spool.park(
                    item.sop_instance_uid,
                    error=str(exc),
                    code=exc.code,
                    initial=self.park_initial,
                    maximum=self.park_max,
                )
                log.error(
                    "instance %s: refused by the hub (%s), parked; next try in %.0fs: %s",
                    item.sop_instance_uid,
                    exc.code,
                    delay,
                    exc,
                )
            return
        self.spool.ack(item.sop_instance_uid, sha256=item.sha256, sent_bytes=size)
        ended = time.monotonic()
        self.throughput.record(started, ended, size)
        self.forwarded += 1
        log.debug(
            "instance %s forwarded: %d bytes in %.3fs", item.sop_instance_uid, size, ended - started
        )

    def _put(self, item: SpooledInstance, payload: Prepared) -> None:
        """Upload *payload*; a transcoded one still being verified is sent in pieces with the
        last one held back until the verification passed (VerificationFailed otherwise)."""
        digest = hashlib.sha256(payload.data).hexdigest()
        body: bytes | Iterator[bytes] = payload.data
        if self.bucket is not None:
            body = self.bucket.stream(payload.data)
        if payload.verification is not None:
            chunks = body if not isinstance(body, bytes) else _pieces(body)
            body = _held_back(chunks, payload.verification)
        self.client.put_instance(item.sop_instance_uid, body, digest)

    def _put_streamed(
        self,
        item: SpooledInstance,
        data: bytes,
        head: StreamHead,
        codestream: "Future[bytes | None]",
    ) -> int:
        """Upload the streamed encoding: *head* at once, the rest of the file when the whole
        codestream is encoded, its SHA-256 last, once the file is verified (VerificationFailed
        otherwise: the hub, without the digest, stores nothing). Returns the file's size."""
        size: list[int] = []
        body = self._streamed_body(data, head, codestream, size)
        self.client.put_instance(item.sop_instance_uid, body, SHA256_TRAILER)
        return size[0]

    def _streamed_body(
        self,
        data: bytes,
        head: StreamHead,
        codestream: "Future[bytes | None]",
        size: list[int],
    ) -> Iterator[bytes]:
        digest = hashlib.sha256()

        def out(piece: bytes) -> bytes:
            if self.bucket is not None:
                self.bucket.take(len(piece))
            digest.update(piece)
            return piece

        for piece in _pieces(head.data):
            yield out(piece)
        try:
            whole = codestream.result()
        except Exception as exc:  # the transcoding process died
            raise VerificationFailed(f"The encoder stopped ({type(exc).__name__}).") from exc
        if whole is None:
            raise VerificationFailed("The whole image could not be encoded.")
        try:
            joined = join_streamed(head, whole)
        except ValueError as exc:
            raise VerificationFailed(str(exc)) from exc
        if joined.size >= len(data):
            raise VerificationFailed("The transcoded file would not be smaller than the original.")
        assert self._prepare_pool is not None and self.prepare is not None
        verification = self._prepare_pool.submit(self.prepare.verify, data, joined.data)
        for piece in _pieces(joined.data[len(head.data) :]):
            yield out(piece)
        _raise_unless_verified(verification)
        size.append(joined.size)
        yield digest.hexdigest().encode("ascii")

    def _hints(self) -> "Sequence[OrderHint] | None":
        if self.order_hints is None:
            return None
        try:
            return self.order_hints.hints()
        except Exception as exc:  # the order cache is optional: the stability window remains
            log.warning("order cache unreadable, completion by MPPS and stability only: %s", exc)
            return None

    def _drop_stale_associations(self) -> None:
        if time.monotonic() < self._next_stale_check:
            return
        self._next_stale_check = time.monotonic() + STALE_ASSOCIATIONS_EVERY_SECONDS
        try:
            self.spool.drop_stale_associations(self.max_association_seconds)
        except sqlite3.Error as exc:
            log.error("open associations could not be checked: %s", exc)

    def _complete_ready(self) -> bool:
        self._drop_stale_associations()
        done = False
        ready = self.spool.ready_studies(
            self.stability_seconds,
            hints=self._hints(),
            max_association_seconds=self.max_association_seconds,
        )
        for study in ready:
            study_uid, sop_uids = study.study_instance_uid, study.sop_instance_uids
            if not sop_uids and self.spool.park_if_refused(study_uid):
                log.error("study %s: the hub took none of its instances; parked", study_uid)
                continue
            try:
                missing = self.client.complete_study(study_uid, sop_uids)
            except ForwardError as exc:
                self._error(str(exc))
                if exc.retryable:
                    delay = backoff_delay(
                        self.spool.study_attempts(study_uid),
                        initial=self.retry_initial,
                        maximum=self.retry_max,
                    )
                    self.spool.mark_study_error(study_uid, str(exc), code=exc.code, delay=delay)
                    log.warning(
                        "study %s: completion failed, retry in %.1fs: %s", study_uid, delay, exc
                    )
                else:
                    delay = self.spool.park_study(
                        study_uid,
                        error=str(exc),
                        code=exc.code,
                        initial=self.park_initial,
                        maximum=self.park_max,
                    )
                    log.error(
                        "study %s: refused by the hub (%s), parked; next try in %.0fs: %s",
                        study_uid,
                        exc.code,
                        delay,
                        exc,
                    )
                continue
            if missing:
                error = f"The hub misses {len(missing)} instances; they are sent again."
                requeued = self.spool.requeue(missing, error=error)
                self.spool.mark_study_error(study_uid, error)
                self._error(error)
                log.warning(
                    "study %s: hub misses %d instances, %d queued again",
                    study_uid,
                    len(missing),
                    requeued,
                )
                done = done or requeued > 0
                continue
            self.spool.mark_study_done(study_uid)
            count, size, sent, first_received = self.spool.study_totals(study_uid)
            started = self._started_at.pop(study_uid, first_received)
            seconds = max(0.0, time.time() - started)
            ratio = size / sent if sent else 1.0
            log.info(
                "study %s forwarded (%s): %d instances, %d bytes (%d sent, ratio %.2f) in %.1fs",
                study_uid,
                study.trigger,
                count,
                size,
                sent,
                ratio,
                seconds,
            )
            if self.on_study_forwarded is not None:
                self.on_study_forwarded(study_uid, count, size, sent, seconds)
            done = True
        return done
