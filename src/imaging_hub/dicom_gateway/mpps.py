"""MPPS at the clinic gateway: the steps modalities report, and their way to the hub.

A modality creates a Modality Performed Procedure Step (N-CREATE, IN PROGRESS) when it starts
an exam and sets it COMPLETED or DISCONTINUED (N-SET) when it ends, listing the images it made.
:class:`MppsSteps` keeps the steps in the spool index (shared by every SCP process), checks
each request (:mod:`imaging_hub.dicom.mpps`: attributes, state machine) and answers the DIMSE
status; a refused request changes nothing. Each accepted change also replaces the step's row in
the outbox, in the same transaction: only the step's last state matters, and it reaches the hub
(``POST /api/v1/gateway/mpps/{uid}``) through :class:`MppsPusher`, a small thread of the main
process that retries with back-off while the WAN or the hub is down.

The steps also feed the completion of studies (:meth:`Studies.ready_studies
<imaging_hub.dicom_gateway.spool.studies.Studies.ready_studies>`): a COMPLETED step whose
referenced instances are all at the hub completes its study at once. Nothing here imports
pynetdicom (the thin DIMSE handlers are in :mod:`imaging_hub.dicom_gateway.scp`).
"""

import json
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydicom import Dataset

from imaging_hub.dicom.mpps import (
    COMPLETED,
    DUPLICATE_SOP_INSTANCE,
    IN_PROGRESS,
    INVALID_ATTRIBUTE_VALUE,
    NO_SUCH_SOP_INSTANCE,
    PROCESSING_FAILURE,
    SUCCESS,
    MppsRefused,
    StepAttributes,
    check_transition,
    parse_create,
    parse_set,
)
from imaging_hub.dicom.uids import is_valid_uid, new_uid
from imaging_hub.dicom_gateway.spool.index import Index
from imaging_hub.dicom_gateway.spool.queue import (
    PARK_INITIAL_SECONDS,
    PARK_MAX_SECONDS,
    parking_delay,
)
from imaging_hub.errors import ForwardError

log = logging.getLogger(__name__)

__all__ = ["MppsOutcome", "MppsPoster", "MppsPusher", "MppsSteps", "OutboxItem"]


@dataclass(frozen=True)
class MppsOutcome:
    """The DIMSE answer to one N-CREATE or N-SET (status, and what the response carries)."""

    status: int
    mpps_uid: str = ""
    state: str = ""
    comment: str = ""
    error_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS


@dataclass(frozen=True)
class OutboxItem:
    """The last state of one step the hub has not confirmed yet."""

    mpps_uid: str
    version: int
    body: dict[str, Any]
    attempts: int


@dataclass
class _Step:
    state: str
    study_instance_uid: str
    accession_number: str
    description: str
    performed_at: str
    ended_at: str
    reason: str
    series: int
    fields: dict[str, Any] = field(default_factory=dict)


def _clean(text: str, limit: int, drop: str = "") -> str:
    """*text* without control characters (and *drop*), at most *limit* characters: what the
    hub accepts of a modality's free text."""
    kept = "".join(ch for ch in text if ord(ch) >= 32 and ord(ch) != 127 and ch not in drop)
    return kept.strip()[:limit]


def _parsed(parse: Callable[[Dataset], StepAttributes], ds: Dataset) -> StepAttributes:
    """*parse* of a data set from the network: whatever pydicom raises on hostile bytes is a
    0x0110 refusal, not an exception in the DIMSE handler."""
    try:
        return parse(ds)
    except MppsRefused:
        raise
    except Exception as exc:
        raise MppsRefused(PROCESSING_FAILURE, "The data set cannot be read") from exc


def _refused(exc: MppsRefused, uid: str = "") -> MppsOutcome:
    return MppsOutcome(exc.status, uid, comment=exc.comment, error_id=exc.error_id)


class MppsSteps:
    """The MPPS steps of one spool (its index), with their outbox."""

    def __init__(self, index: Index) -> None:
        self._index = index

    # --- N-CREATE / N-SET ------------------------------------------------------------------

    def create(
        self, mpps_uid: str | None, attributes: Dataset, *, calling_ae: str = ""
    ) -> MppsOutcome:
        """N-CREATE: a new step, IN PROGRESS. *mpps_uid* None: the SCP assigns one (the
        response carries it). A duplicate UID answers 0x0111; nothing changes on failure."""
        if mpps_uid is not None and not is_valid_uid(mpps_uid):
            return MppsOutcome(INVALID_ATTRIBUTE_VALUE, "", comment="Invalid SOP Instance UID")
        uid = mpps_uid or new_uid()
        try:
            step = _parsed(parse_create, attributes)
        except MppsRefused as exc:
            log.warning("MPPS N-CREATE %s from %s refused: %s", uid, calling_ae, exc.comment)
            return _refused(exc, uid)
        now = time.time()
        try:
            with self._index.tx() as db:
                if db.execute("SELECT 1 FROM mpps_steps WHERE mpps_uid = ?", (uid,)).fetchone():
                    raise MppsRefused(DUPLICATE_SOP_INSTANCE, "The step exists already")
                db.execute(
                    """INSERT INTO mpps_steps (mpps_uid, state, study_instance_uid,
                           accession_number, calling_ae, modality, step_id, description,
                           performed_at, ended_at, reason, series, created_at, updated_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    (
                        uid,
                        IN_PROGRESS,
                        step.study_instance_uid or "",
                        step.accession_number or "",
                        calling_ae[:16],
                        step.modality or "",
                        step.step_id or "",
                        step.description or "",
                        step.performed_at or "",
                        step.ended_at or "",
                        step.reason or "",
                        step.series or 0,
                        now,
                        now,
                    ),
                )
                self._reference(db, uid, step)
                self._queue(db, uid, now)
        except MppsRefused as exc:
            log.warning("MPPS N-CREATE %s from %s refused: %s", uid, calling_ae, exc.comment)
            return _refused(exc, uid)
        log.info(
            "MPPS %s IN PROGRESS (study %s, accession %s) from %s",
            uid,
            step.study_instance_uid,
            step.accession_number or "-",
            calling_ae,
        )
        return MppsOutcome(SUCCESS, uid, IN_PROGRESS)

    def update(self, mpps_uid: str, changes: Dataset, *, calling_ae: str = "") -> MppsOutcome:
        """N-SET: attribute updates while IN PROGRESS, or the final state COMPLETED /
        DISCONTINUED. Unknown step: 0x0112; a finished step: 0x0110 (Error ID 0xA710);
        nothing changes on failure."""
        try:
            with self._index.lock:
                known = self._index.db.execute(
                    "SELECT 1 FROM mpps_steps WHERE mpps_uid = ?", (mpps_uid,)
                ).fetchone()
            if known is None:  # before the data set: an unknown instance is the answer
                raise MppsRefused(NO_SUCH_SOP_INSTANCE, "No such MPPS instance")
            parsed = _parsed(parse_set, changes)
            now = time.time()
            with self._index.tx() as db:
                row = db.execute(
                    "SELECT state, study_instance_uid, accession_number, description, "
                    "performed_at, ended_at, reason, series FROM mpps_steps WHERE mpps_uid = ?",
                    (mpps_uid,),
                ).fetchone()
                if row is None:
                    raise MppsRefused(NO_SUCH_SOP_INSTANCE, "No such MPPS instance")
                step = _Step(*row)
                ended_at = step.ended_at if parsed.ended_at is None else parsed.ended_at
                series = step.series if parsed.series is None else parsed.series
                state = check_transition(step.state, parsed, ended_at=ended_at, series=series)
                db.execute(
                    """UPDATE mpps_steps SET state = ?, description = ?, ended_at = ?,
                           reason = ?, series = ?, updated_at = ?
                       WHERE mpps_uid = ?""",
                    (
                        state,
                        step.description if parsed.description is None else parsed.description,
                        ended_at,
                        step.reason if parsed.reason is None else parsed.reason,
                        series,
                        now,
                        mpps_uid,
                    ),
                )
                if parsed.referenced is not None:
                    db.execute("DELETE FROM mpps_instances WHERE mpps_uid = ?", (mpps_uid,))
                    self._reference(db, mpps_uid, parsed)
                self._queue(db, mpps_uid, now)
        except MppsRefused as exc:
            log.warning("MPPS N-SET %s from %s refused: %s", mpps_uid, calling_ae, exc.comment)
            return _refused(exc, mpps_uid)
        log.info(
            "MPPS %s %s (study %s, %d referenced instances) from %s",
            mpps_uid,
            state,
            step.study_instance_uid,
            len(parsed.referenced) if parsed.referenced is not None else -1,
            calling_ae,
        )
        return MppsOutcome(SUCCESS, mpps_uid, state)

    @staticmethod
    def _reference(db: sqlite3.Connection, uid: str, step: StepAttributes) -> None:
        db.executemany(
            "INSERT OR IGNORE INTO mpps_instances (mpps_uid, sop_instance_uid, sop_class_uid, "
            "series_instance_uid) VALUES (?, ?, ?, ?)",
            [
                (uid, r.sop_instance_uid, r.sop_class_uid, r.series_instance_uid)
                for r in step.referenced or ()
            ],
        )

    @staticmethod
    def _queue(db: sqlite3.Connection, uid: str, now: float) -> None:
        """Replace the step's outbox row by its current state (inside the transaction)."""
        state, study, accession, performed_at, ended_at, reason = db.execute(
            "SELECT state, study_instance_uid, accession_number, performed_at, ended_at, "
            "reason FROM mpps_steps WHERE mpps_uid = ?",
            (uid,),
        ).fetchone()
        images = db.execute(
            "SELECT COUNT(*) FROM mpps_instances WHERE mpps_uid = ?", (uid,)
        ).fetchone()[0]
        body = {
            "status": state,
            "accession_number": _clean(accession, 16, "\\"),
            "study_instance_uid": study,
            "reason": _clean(reason, 200),
            "performed_at": performed_at,
            "ended_at": ended_at,
            "images": int(images),
        }
        db.execute(
            """INSERT INTO mpps_outbox (mpps_uid, version, body, queued_at)
               VALUES (?, 1, ?, ?)
               ON CONFLICT (mpps_uid) DO UPDATE SET version = mpps_outbox.version + 1,
                   body = excluded.body, attempts = 0, not_before = 0, last_error = '',
                   error_code = ''""",
            (uid, json.dumps(body, separators=(",", ":")), now),
        )

    # --- what the status shows ---------------------------------------------------------------

    def in_progress(self, limit: int = 50) -> list[dict[str, Any]]:
        """Steps IN PROGRESS, oldest first."""
        with self._index.lock:
            rows = self._index.db.execute(
                "SELECT mpps_uid, study_instance_uid, accession_number, modality, calling_ae, "
                "performed_at, created_at FROM mpps_steps WHERE state = ? "
                "ORDER BY created_at LIMIT ?",
                (IN_PROGRESS, limit),
            ).fetchall()
        keys = (
            "mpps_uid",
            "study_instance_uid",
            "accession_number",
            "modality",
            "calling_ae",
            "performed_at",
            "created_at",
        )
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def step(self, mpps_uid: str) -> dict[str, Any] | None:
        """One step as stored, with its referenced SOP Instance UIDs (None: unknown)."""
        with self._index.lock:
            cursor = self._index.db.execute(
                "SELECT * FROM mpps_steps WHERE mpps_uid = ?", (mpps_uid,)
            )
            row = cursor.fetchone()
            if row is None:
                return None
            names = [d[0] for d in cursor.description]
            referenced = [
                r[0]
                for r in self._index.db.execute(
                    "SELECT sop_instance_uid FROM mpps_instances WHERE mpps_uid = ? "
                    "ORDER BY sop_instance_uid",
                    (mpps_uid,),
                )
            ]
        return {**dict(zip(names, row, strict=True)), "referenced": referenced}

    def counts(self) -> dict[str, int]:
        """Steps per state, and the outbox's depth."""
        with self._index.lock:
            counts = {
                state: n
                for state, n in self._index.db.execute(
                    "SELECT state, COUNT(*) FROM mpps_steps GROUP BY state"
                )
            }
            counts["outbox"] = self._index.db.execute(
                "SELECT COUNT(*) FROM mpps_outbox"
            ).fetchone()[0]
        return counts

    # --- the outbox ----------------------------------------------------------------------------

    def outbox_due(self, limit: int = 20, now: float | None = None) -> list[OutboxItem]:
        """Outbox rows whose next try is due, the longest waiting first."""
        at = time.time() if now is None else now
        with self._index.lock:
            rows = self._index.db.execute(
                "SELECT mpps_uid, version, body, attempts FROM mpps_outbox "
                "WHERE not_before <= ? ORDER BY queued_at LIMIT ?",
                (at, limit),
            ).fetchall()
        return [
            OutboxItem(uid, version, json.loads(body), attempts)
            for uid, version, body, attempts in rows
        ]

    def outbox_sent(self, item: OutboxItem) -> bool:
        """The hub took *item*: remove it unless a newer state replaced it meanwhile."""
        with self._index.tx() as db:
            return (
                db.execute(
                    "DELETE FROM mpps_outbox WHERE mpps_uid = ? AND version = ?",
                    (item.mpps_uid, item.version),
                ).rowcount
                > 0
            )

    def outbox_failed(self, item: OutboxItem, *, delay: float, error: str, code: str) -> None:
        """Try *item* again in *delay* seconds (a newer state is tried at once anyway)."""
        with self._index.tx() as db:
            db.execute(
                "UPDATE mpps_outbox SET attempts = attempts + 1, not_before = ?, "
                "last_error = ?, error_code = ? WHERE mpps_uid = ? AND version = ?",
                (time.time() + delay, error[:500], code[:64], item.mpps_uid, item.version),
            )


class MppsPoster(Protocol):
    """What the pusher needs of the hub client (``HubClient.post_mpps``)."""

    def post_mpps(self, mpps_uid: str, body: dict[str, Any]) -> dict[str, Any]: ...


def _backoff(attempts: int, initial: float, maximum: float) -> float:
    ceiling = min(maximum, initial * (2 ** min(attempts, 30)))
    return random.uniform(initial / 2, max(initial / 2, ceiling))


class MppsPusher:
    """Pushes the outbox to the hub from a thread of the main process.

    Woken by :meth:`wake` after a change in this process, else it looks every
    *poll_seconds* (changes made by SCP worker processes). A retryable failure (network, 5xx,
    401/429) backs the step off exponentially up to *retry_max_seconds* and ends the round (the
    hub is likely down for every step); a refusal for good (4xx) is kept and tried on the
    parking schedule, never in a loop.
    """

    def __init__(
        self,
        steps: MppsSteps,
        client: MppsPoster,
        *,
        retry_initial_seconds: float = 1.0,
        retry_max_seconds: float = 300.0,
        poll_seconds: float = 0.5,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.steps = steps
        self.client = client
        self.retry_initial = retry_initial_seconds
        self.retry_max = retry_max_seconds
        self.poll_seconds = poll_seconds
        self.on_error = on_error
        self.delivered = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mpps-outbox", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.push_once()
            except Exception:  # keep pushing whatever happens; the error is logged
                log.exception("MPPS outbox round failed")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def push_once(self) -> int:
        """Send what is due; returns how many states the hub took."""
        taken = 0
        for item in self.steps.outbox_due():
            if self._stop.is_set():
                break
            try:
                self.client.post_mpps(item.mpps_uid, item.body)
            except ForwardError as exc:
                self.last_error = str(exc)
                if self.on_error is not None:
                    self.on_error(str(exc))
                if exc.retryable:
                    delay = _backoff(item.attempts, self.retry_initial, self.retry_max)
                    self.steps.outbox_failed(item, delay=delay, error=str(exc), code=exc.code)
                    log.warning(
                        "MPPS %s: not delivered, retry in %.1fs: %s", item.mpps_uid, delay, exc
                    )
                    break
                delay = parking_delay(
                    item.attempts, initial=PARK_INITIAL_SECONDS, maximum=PARK_MAX_SECONDS
                )
                self.steps.outbox_failed(item, delay=delay, error=str(exc), code=exc.code)
                log.error(
                    "MPPS %s: refused by the hub (%s), next try in %.0fs: %s",
                    item.mpps_uid,
                    exc.code,
                    delay,
                    exc,
                )
                continue
            self.steps.outbox_sent(item)
            self.delivered += 1
            taken += 1
            log.debug("MPPS %s %s delivered", item.mpps_uid, item.body.get("status"))
        return taken


def is_completed(outcome: MppsOutcome) -> bool:
    """Whether *outcome* set a step COMPLETED (the forwarder may complete its study now)."""
    return outcome.ok and outcome.state == COMPLETED
