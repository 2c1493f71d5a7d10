"""Signed reports back at the clinic: pulled from the hub, kept durably, confirmed once.

- :class:`ReportStore`: ``<spool_dir>/reports/`` (the PDFs, ``<id>.pdf``, and the Encapsulated
  PDF instances for the clinic DICOM node, ``<id>.dcm``) and ``<spool_dir>/reports.sqlite``
  (SQLite WAL, ``synchronous=FULL``: a row committed before the hub is told survives a power
  cut): the pulled reports, their delivery to the DICOM node, acknowledgements made on the LAN
  page waiting for the hub, and the staff's sign-in verifiers. A row's ``id`` is local (the
  file names, the LAN page's links) and equals the hub's report id (``hub_id``) — except when
  the hub hands out an id again (restored from an older backup) for a report with another
  SHA-256: the held report is never overwritten; it is marked ``replaced_at`` (it no longer
  talks to the hub) and the new one is kept beside it under a local id above any hub id
  (:data:`LOCAL_ID_BASE`).
- :class:`ReportPuller`: threads of the gateway's main process. The pull loop long-polls
  ``GET /api/v1/gateway/reports``; for each report it streams the PDF into ``reports/tmp/``,
  checks its SHA-256 against the hub's, fsyncs, renames it into place, fsyncs the directory,
  commits the row and only THEN confirms (``POST …/received``). A crash between store and
  confirm is confirmed again at the next start (the hub answers the same ``delivered_at``): the
  study is never ``delivered`` without the file, and the file is never kept twice. The same
  loop pushes acknowledgements made offline, learns the acknowledgements made at the hub for
  the critical results it shows open (``GET …/reports/acknowledgements?ids=``) and syncs the
  staff list (at start and every ``staff_sync_seconds``). A second thread C-STOREs the
  Encapsulated PDF to ``report_node`` with back-off.

While the hub is unreachable the loop backs off (``retry_initial_seconds`` doubling up to
``retry_max_seconds``) and logs the outage once, and its end once. No patient data is logged:
reports are named by their hub id.
"""

import hashlib
import logging
import os
import random
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydicom import dcmread

from imaging_hub.dicom_gateway.hub_client import HubClient
from imaging_hub.dicom_gateway.spool.space import is_no_space
from imaging_hub.errors import ForwardError

log = logging.getLogger(__name__)

REPORTS_DB = "reports.sqlite"
REPORTS_DIR = "reports"
MAX_REPORT_BYTES = 64 * 1024**2  # a signed report PDF is well under 1 MiB
ACK_METHODS = ("phone", "portal", "in_person", "message")
NODE_POLL_SECONDS = 5.0
ENCAPSULATED_PDF_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: Local ids of reports kept beside a held one with the same hub id start above this (hub
#: report ids are 32-bit: no hub id ever reaches it).
LOCAL_ID_BASE = 2**31
#: At most this many report ids per acknowledgement sync (the hub's limit).
ACK_SYNC_BATCH = 100
ACK_VIA = ("portal", "gateway")
#: After the hub refused the acknowledgement sync for good, ask again after this long.
ACK_SYNC_PAUSE_SECONDS = 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    predecessor_id INTEGER,
    study_instance_uid TEXT NOT NULL,
    accession_number TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    patient_name TEXT NOT NULL,
    patient_sex TEXT NOT NULL,
    patient_birth_date TEXT NOT NULL,
    study_date TEXT NOT NULL,
    study_description TEXT NOT NULL,
    modalities TEXT NOT NULL,
    signed_at TEXT NOT NULL,
    signer_name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    critical INTEGER NOT NULL,
    critical_category TEXT NOT NULL,
    hub_acknowledged_at TEXT,
    pdf_sop_instance_uid TEXT NOT NULL,
    stored_at REAL NOT NULL,
    delivered_at TEXT,
    node_state TEXT NOT NULL DEFAULT 'none',
    node_attempts INTEGER NOT NULL DEFAULT 0,
    node_next_try_at REAL NOT NULL DEFAULT 0,
    node_last_error TEXT NOT NULL DEFAULT '',
    node_sent_at REAL,
    hub_id INTEGER,
    replaced_at REAL,
    hub_acknowledged_by TEXT,
    hub_acknowledged_via TEXT
);
CREATE INDEX IF NOT EXISTS reports_signed ON reports (signed_at);
CREATE TABLE IF NOT EXISTS acknowledgements (
    report_id INTEGER PRIMARY KEY REFERENCES reports (id),
    username TEXT NOT NULL,
    display_name TEXT NOT NULL,
    method TEXT NOT NULL,
    read_back TEXT NOT NULL,
    acknowledged_at TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS staff (
    username TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _text(item: Mapping[str, Any], key: str, limit: int = 256) -> str:
    value = item.get(key)
    if value is None:
        return ""
    if isinstance(value, list):
        value = "\\".join(str(v) for v in value)
    return str(value)[:limit]


def _printable(text: str, limit: int) -> str:
    """*text* without control characters, at most *limit* characters (a name for a header)."""
    return "".join(c for c in text if c.isprintable())[:limit].strip()


def _report_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**62:
        raise ValueError("a report id must be a positive integer")
    return value


@dataclass(frozen=True)
class HeldReport:
    """A report the gateway holds, with where it stands (LAN page, status, node delivery)."""

    id: int
    kind: str
    predecessor_id: int | None
    study_instance_uid: str
    accession_number: str
    patient_id: str
    patient_name: str
    patient_sex: str
    patient_birth_date: str
    study_date: str
    study_description: str
    modalities: str
    signed_at: str
    signer_name: str
    sha256: str
    size: int
    critical: bool
    critical_category: str
    hub_acknowledged_at: str | None
    pdf_sop_instance_uid: str
    stored_at: float
    delivered_at: str | None
    node_state: str
    node_attempts: int
    node_next_try_at: float
    node_last_error: str
    node_sent_at: float | None
    #: The hub's report id (``id`` is local: the same, unless the hub reused the id).
    hub_id: int = 0
    #: When the hub was found to list another report under ``hub_id`` (then this one no longer
    #: talks to the hub: it is kept here, printable, its acknowledgement stays local).
    replaced_at: float | None = None
    #: Who acknowledged it at the hub (display name) and where (``portal`` | ``gateway``).
    hub_acknowledged_by: str | None = None
    hub_acknowledged_via: str | None = None
    # From the acknowledgements table (a LAN page acknowledgement), if any:
    ack_username: str | None = None
    ack_display_name: str | None = None
    ack_method: str | None = None
    ack_at: str | None = None
    ack_state: str | None = None

    @property
    def acknowledged_at(self) -> str | None:
        """When the critical result was acknowledged (at the hub, or here on the LAN page)."""
        if self.hub_acknowledged_at:
            return self.hub_acknowledged_at
        return self.ack_at if self.ack_state != "refused" else None

    @property
    def acknowledged_by(self) -> str:
        """The display name of the clinic user who acknowledged it ("" when unknown)."""
        if self.hub_acknowledged_at:
            if self.hub_acknowledged_by:
                return self.hub_acknowledged_by
            return self.ack_display_name or "" if self.ack_state == "sent" else ""
        return self.ack_display_name or "" if self.ack_state != "refused" else ""

    @property
    def acknowledged_via(self) -> str:
        """Where: ``portal`` or ``gateway`` (a LAN page), "" when unknown."""
        if self.hub_acknowledged_at:
            if self.hub_acknowledged_via:
                return self.hub_acknowledged_via
            return "gateway" if self.ack_state == "sent" else ""
        return "gateway" if self.ack_at and self.ack_state != "refused" else ""

    @property
    def awaiting_acknowledgement(self) -> bool:
        return self.critical and self.acknowledged_at is None


def _held(row: sqlite3.Row) -> HeldReport:
    values = dict(row)
    values["critical"] = bool(values["critical"])
    return HeldReport(**values)


@dataclass(frozen=True)
class StaffMember:
    username: str
    display_name: str
    password_hash: str


@dataclass(frozen=True)
class PendingAck:
    report_id: int
    hub_id: int
    sha256: str
    username: str
    method: str
    read_back: str
    acknowledged_at: str
    attempts: int


_HELD_COLUMNS = (
    "r.*, a.username AS ack_username, a.display_name AS ack_display_name, "
    "a.method AS ack_method, a.acknowledged_at AS ack_at, a.state AS ack_state"
)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(1024 * 1024):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _holds_pdf(path: Path, sha256: str) -> bool:
    """Whether the Part 10 file *path* is an Encapsulated PDF holding the PDF of *sha256*."""
    try:
        ds = dcmread(path)
        document = bytes(ds.EncapsulatedDocument)
        length = int(ds.get("EncapsulatedDocumentLength") or len(document))
    except Exception:
        return False
    return (
        str(ds.SOPClassUID) == ENCAPSULATED_PDF_SOP_CLASS
        and hashlib.sha256(document[:length]).hexdigest() == sha256
    )


class ReportStore:
    """``reports.sqlite`` + ``reports/`` in the spool directory (thread-safe: one lock)."""

    def __init__(self, spool_dir: Path, *, clean_tmp: bool = True) -> None:
        self.root = Path(spool_dir)
        self.dir = self.root / REPORTS_DIR
        self.tmp = self.dir / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        if clean_tmp:  # partial downloads of a crashed gateway: never confirmed
            for leftover in self.tmp.iterdir():
                leftover.unlink(missing_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.root / REPORTS_DB, isolation_level=None, check_same_thread=False, timeout=30
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._migrate()

    def _migrate(self) -> None:
        """Bring a ``reports.sqlite`` of an earlier gateway version up to date (idempotent)."""
        have = {str(row["name"]) for row in self._db.execute("PRAGMA table_info(reports)")}
        for column, kind in (
            ("hub_id", "INTEGER"),
            ("replaced_at", "REAL"),
            ("hub_acknowledged_by", "TEXT"),
            ("hub_acknowledged_via", "TEXT"),
        ):
            if column not in have:
                self._db.execute(f"ALTER TABLE reports ADD COLUMN {column} {kind}")
        self._db.execute("UPDATE reports SET hub_id = id WHERE hub_id IS NULL")
        self._db.execute(
            "CREATE UNIQUE INDEX IF NOT EXISTS reports_hub_current ON reports (hub_id) "
            "WHERE replaced_at IS NULL"
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._db.execute(sql, args).fetchall())

    # --- files ---

    def pdf_path(self, report_id: int) -> Path:
        return self.dir / f"{int(report_id)}.pdf"

    def dicom_path(self, report_id: int) -> Path:
        return self.dir / f"{int(report_id)}.dcm"

    def write_file(
        self, target: Path, fill: Callable[[BinaryIO], tuple[int, str]], expect_sha256: str | None
    ) -> tuple[int, str]:
        """Write *target* durably: *fill* streams into a temp file (returning size and
        SHA-256), checked against *expect_sha256*, fsync'd, renamed, directory fsync'd."""
        part = self.tmp / f"{target.name}.{uuid.uuid4().hex}.part"
        try:
            with part.open("wb") as out:
                size, sha256 = fill(out)
                out.flush()
                os.fsync(out.fileno())
            if expect_sha256 is not None and sha256 != expect_sha256:
                raise ForwardError(
                    f"{target.name}: the downloaded bytes do not match the hub's SHA-256.",
                    retryable=True,
                    code="checksum_mismatch",
                )
            os.replace(part, target)
            _fsync_dir(self.dir)
        finally:
            part.unlink(missing_ok=True)
        return size, sha256

    # --- reports ---

    def held(self, report_id: int) -> HeldReport | None:
        rows = self._rows(
            f"SELECT {_HELD_COLUMNS} FROM reports r "
            "LEFT JOIN acknowledgements a ON a.report_id = r.id WHERE r.id = ?",
            int(report_id),
        )
        return _held(rows[0]) if rows else None

    def current(self, hub_id: int) -> HeldReport | None:
        """The held report the hub's id *hub_id* names now (not one it replaced)."""
        rows = self._rows(
            f"SELECT {_HELD_COLUMNS} FROM reports r LEFT JOIN acknowledgements a "
            "ON a.report_id = r.id WHERE r.hub_id = ? AND r.replaced_at IS NULL",
            int(hub_id),
        )
        return _held(rows[0]) if rows else None

    def local_id_for(self, hub_id: int) -> int:
        """The local id for a new report with the hub's id *hub_id*: the same, unless a held
        report has it already; then the next one above :data:`LOCAL_ID_BASE` (deterministic:
        a download interrupted before its row was committed lands on the same file again)."""
        with self._lock:
            taken = self._db.execute("SELECT 1 FROM reports WHERE id = ?", (hub_id,)).fetchone()
            if taken is None:
                return int(hub_id)
            top = self._db.execute("SELECT max(id) FROM reports").fetchone()[0]
        return max(int(top or 0), LOCAL_ID_BASE) + 1

    def record(
        self,
        item: Mapping[str, Any],
        *,
        size: int,
        node: bool,
        local_id: int | None = None,
        replaces: int | None = None,
    ) -> int:
        """The row of a report whose PDF is in place (after :meth:`write_file`), under
        *local_id* (default: the hub's id); its local id. *replaces*: the local id of the held
        report the hub listed under the same id with another SHA-256 — kept, marked
        ``replaced_at`` in the same transaction (its acknowledgement waiting for the hub stays
        local, its DICOM node delivery goes on only from a file it holds)."""
        hub_id = _report_id(item.get("id"))
        row_id = hub_id if local_id is None else int(local_id)
        values = {
            "id": row_id,
            "hub_id": hub_id,
            "kind": "addendum" if item.get("kind") == "addendum" else "report",
            "predecessor_id": item.get("predecessor_id")
            if isinstance(item.get("predecessor_id"), int)
            else None,
            "study_instance_uid": _text(item, "study_instance_uid", 64),
            "accession_number": _text(item, "accession_number", 64),
            "patient_id": _text(item, "patient_id", 64),
            "patient_name": _text(item, "patient_name", 324),
            "patient_sex": _text(item, "patient_sex", 16),
            "patient_birth_date": _text(item, "patient_birth_date", 16),
            "study_date": _text(item, "study_date", 16),
            "study_description": _text(item, "study_description", 128),
            "modalities": _text(item, "modalities", 128),
            "signed_at": _text(item, "signed_at", 64),
            "signer_name": _text(item, "signer_name", 128),
            "sha256": _text(item, "sha256", 64).lower(),
            "size": size,
            "critical": 1 if item.get("critical") is True else 0,
            "critical_category": _text(item, "critical_category", 128),
            "hub_acknowledged_at": _text(item, "acknowledged_at", 64) or None,
            "pdf_sop_instance_uid": _text(item, "pdf_sop_instance_uid", 64),
            "stored_at": time.time(),
            "node_state": "pending" if node else "none",
        }
        columns = ", ".join(values)
        marks = ", ".join(f":{k}" for k in values)
        updates = ", ".join(f"{k} = excluded.{k}" for k in values if k not in ("id", "stored_at"))
        with self._tx() as db:
            if replaces is not None:
                self._set_aside(db, replaces)
            db.execute(
                f"INSERT INTO reports ({columns}) VALUES ({marks}) "
                f"ON CONFLICT (id) DO UPDATE SET {updates}",
                values,
            )
        return row_id

    def mark_replaced(self, report_id: int) -> None:
        """The hub's id of held report *report_id* (local) names another report now (the hub
        answered ``checksum_mismatch``): keep it, but it no longer talks to the hub."""
        with self._tx() as db:
            self._set_aside(db, report_id)

    def _set_aside(self, db: sqlite3.Connection, report_id: int) -> None:
        keep_node = self.dicom_path(report_id).is_file()
        db.execute(
            "UPDATE reports SET replaced_at = ?, node_state = CASE WHEN "
            "node_state = 'pending' AND NOT ? THEN 'none' ELSE node_state END "
            "WHERE id = ? AND replaced_at IS NULL",
            (time.time(), keep_node, report_id),
        )
        db.execute(
            "UPDATE acknowledgements SET state = 'local' WHERE report_id = ? AND state = 'pending'",
            (report_id,),
        )

    def forget(self, report_id: int) -> None:
        """Drop an unconfirmed report whose file is missing or damaged (pulled again)."""
        with self._tx() as db:
            db.execute("DELETE FROM acknowledgements WHERE report_id = ?", (report_id,))
            db.execute("DELETE FROM reports WHERE id = ? AND delivered_at IS NULL", (report_id,))
        self.pdf_path(report_id).unlink(missing_ok=True)

    def mark_delivered(self, report_id: int, delivered_at: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE reports SET delivered_at = ? WHERE id = ?",
                (delivered_at or datetime.now(UTC).isoformat(), report_id),
            )

    def unconfirmed(self) -> list[HeldReport]:
        """Held but the hub not told yet (a crash between store and confirm)."""
        rows = self._rows(
            f"SELECT {_HELD_COLUMNS} FROM reports r LEFT JOIN acknowledgements a "
            "ON a.report_id = r.id WHERE r.delivered_at IS NULL AND r.replaced_at IS NULL "
            "ORDER BY r.id"
        )
        return [_held(row) for row in rows]

    def recent(self, *, search: str = "", limit: int = 200) -> list[HeldReport]:
        """The reports held, critical results awaiting acknowledgement first, then newest."""
        where, args = "", []
        term = search.strip()[:64]
        if term:
            like = "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where = (
                "WHERE r.patient_name LIKE ? ESCAPE '\\' OR r.patient_id LIKE ? ESCAPE '\\' "
                "OR r.accession_number LIKE ? ESCAPE '\\'"
            )
            args = [like, like, like]
        rows = self._rows(
            f"SELECT {_HELD_COLUMNS} FROM reports r LEFT JOIN acknowledgements a "
            f"ON a.report_id = r.id {where} ORDER BY "
            "(r.critical = 1 AND r.hub_acknowledged_at IS NULL "
            "AND (a.report_id IS NULL OR a.state = 'refused')) DESC, "
            "r.signed_at DESC, r.id DESC LIMIT ?",
            *args,
            limit,
        )
        return [_held(row) for row in rows]

    # --- acknowledgements made on the LAN page ---

    def acknowledge(
        self,
        report_id: int,
        *,
        username: str,
        display_name: str,
        method: str,
        read_back: str,
        now: datetime | None = None,
    ) -> bool:
        """Record a clinic user's acknowledgement here at once (pushed to the hub later);
        False if the report is not a critical result held here, or already acknowledged."""
        if method not in ACK_METHODS or not read_back.strip():
            raise ValueError("method and read-back are required")
        at = (now or datetime.now(UTC)).isoformat()
        with self._tx() as db:
            row = db.execute(
                "SELECT critical, hub_acknowledged_at, replaced_at FROM reports WHERE id = ?",
                (report_id,),
            ).fetchone()
            if row is None or not row["critical"] or row["hub_acknowledged_at"]:
                return False
            # A report the hub no longer knows (its id names another one): kept here only.
            state = "local" if row["replaced_at"] is not None else "pending"
            cursor = db.execute(  # a new one replaces only one the hub refused
                "INSERT INTO acknowledgements "
                "(report_id, username, display_name, method, read_back, acknowledged_at, state) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (report_id) DO UPDATE SET "
                "username = excluded.username, display_name = excluded.display_name, "
                "method = excluded.method, read_back = excluded.read_back, "
                "acknowledged_at = excluded.acknowledged_at, state = excluded.state, "
                "attempts = 0, last_error = '' WHERE acknowledgements.state = 'refused'",
                (report_id, username, display_name, method, read_back.strip()[:4000], at, state),
            )
            return cursor.rowcount == 1

    def pending_acknowledgements(self) -> list[PendingAck]:
        rows = self._rows(
            "SELECT a.report_id, r.hub_id, r.sha256, a.username, a.method, a.read_back, "
            "a.acknowledged_at, a.attempts FROM acknowledgements a "
            "JOIN reports r ON r.id = a.report_id "
            "WHERE a.state = 'pending' AND r.replaced_at IS NULL ORDER BY a.acknowledged_at"
        )
        return [PendingAck(**dict(row)) for row in rows]

    def mark_acknowledgement(
        self, report_id: int, state: str, error: str = "", *, hub_acknowledged_at: str = ""
    ) -> None:
        """The hub's answer: ``sent`` (with the acknowledgement the hub keeps, maybe an earlier
        one made in the portal) or ``refused`` (with its code)."""
        with self._tx() as db:
            db.execute(
                "UPDATE acknowledgements SET state = ?, attempts = attempts + 1, last_error = ? "
                "WHERE report_id = ?",
                (state, error[:500], report_id),
            )
            if hub_acknowledged_at:
                db.execute(
                    "UPDATE reports SET hub_acknowledged_at = ? WHERE id = ?",
                    (hub_acknowledged_at[:64], report_id),
                )

    # --- acknowledgements made at the hub ---

    def acknowledgements_to_learn(self, limit: int = ACK_SYNC_BATCH) -> list[HeldReport]:
        """The critical results whose acknowledgement at the hub this gateway does not know
        yet (open here, or acknowledged without who and where), newest first, at most *limit*."""
        rows = self._rows(
            f"SELECT {_HELD_COLUMNS} FROM reports r LEFT JOIN acknowledgements a "
            "ON a.report_id = r.id WHERE r.critical = 1 AND r.replaced_at IS NULL "
            "AND r.hub_acknowledged_via IS NULL ORDER BY r.signed_at DESC, r.id DESC LIMIT ?",
            limit,
        )
        return [_held(row) for row in rows]

    def learn_acknowledgement(
        self, report_id: int, *, sha256: str, acknowledged_at: str, by: str, via: str
    ) -> bool:
        """The hub's acknowledgement of the held report *report_id* (local id), applied only
        when *sha256* is the held PDF's and the report is not replaced; whether it changed."""
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE reports SET hub_acknowledged_at = ?, hub_acknowledged_by = ?, "
                "hub_acknowledged_via = ? WHERE id = ? AND sha256 = ? AND replaced_at IS NULL "
                "AND hub_acknowledged_via IS NULL",
                (acknowledged_at[:64], by[:128], via, report_id, sha256),
            )
            return cursor.rowcount == 1

    # --- delivery to the clinic DICOM node ---

    def node_due(self, now: float) -> list[HeldReport]:
        rows = self._rows(
            f"SELECT {_HELD_COLUMNS} FROM reports r LEFT JOIN acknowledgements a "
            "ON a.report_id = r.id WHERE r.node_state = 'pending' AND r.node_next_try_at <= ? "
            "ORDER BY r.node_next_try_at, r.id LIMIT 20",
            now,
        )
        return [_held(row) for row in rows]

    def mark_node(
        self, report_id: int, *, sent: bool, error: str = "", next_try_at: float = 0.0
    ) -> None:
        with self._tx() as db:
            if sent:
                db.execute(
                    "UPDATE reports SET node_state = 'sent', node_sent_at = ?, "
                    "node_attempts = node_attempts + 1, node_last_error = '' WHERE id = ?",
                    (time.time(), report_id),
                )
            else:
                db.execute(
                    "UPDATE reports SET node_attempts = node_attempts + 1, node_last_error = ?, "
                    "node_next_try_at = ? WHERE id = ?",
                    (error[:500], next_try_at, report_id),
                )

    # --- staff verifiers ---

    def meta(self, key: str) -> str:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", key)
        return str(rows[0]["value"]) if rows else ""

    def replace_staff(
        self, staff: Sequence[Mapping[str, Any]], *, etag: str = "", clinic_name: str = ""
    ) -> int:
        """Replace the verifiers with the hub's list (one transaction); how many are kept. The
        clinic's name comes with it (``meta("clinic_name")``, the LAN page's header)."""
        rows: dict[str, tuple[str, str, str]] = {}
        for item in staff:
            username = _text(item, "username", 64)
            password_hash = _text(item, "password_hash", 512)
            if username and password_hash.startswith("$argon2"):
                rows[username] = (username, _text(item, "display_name", 128), password_hash)
        with self._tx() as db:
            db.execute("DELETE FROM staff")
            db.executemany(
                "INSERT INTO staff (username, display_name, password_hash) VALUES (?, ?, ?)",
                list(rows.values()),
            )
            db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [
                    ("staff_synced_at", str(time.time())),
                    ("staff_etag", etag),
                    ("clinic_name", _printable(clinic_name, 200)),
                ],
            )
        return len(rows)

    def staff_member(self, username: str) -> StaffMember | None:
        rows = self._rows(
            "SELECT username, display_name, password_hash FROM staff WHERE username = ?",
            username,
        )
        return StaffMember(**dict(rows[0])) if rows else None

    # --- status and retention ---

    def counts(self) -> dict[str, int]:
        with self._lock:
            one = self._db.execute(
                "SELECT count(*) AS held, "
                "coalesce(sum(delivered_at IS NULL AND replaced_at IS NULL), 0) AS unconfirmed, "
                "coalesce(sum(node_state = 'pending'), 0) AS node_waiting, "
                "coalesce(sum(critical = 1 AND hub_acknowledged_at IS NULL AND id NOT IN "
                "(SELECT report_id FROM acknowledgements WHERE state != 'refused')), 0) "
                "AS critical_open FROM reports"
            ).fetchone()
            acks = self._db.execute(
                "SELECT count(*) FROM acknowledgements WHERE state = 'pending'"
            ).fetchone()[0]
            staff = self._db.execute("SELECT count(*) FROM staff").fetchone()[0]
        return {
            "reports_held": int(one["held"]),
            "reports_unconfirmed": int(one["unconfirmed"]),
            "reports_waiting_for_node": int(one["node_waiting"]),
            "reports_critical_open": int(one["critical_open"]),
            "acknowledgements_waiting": int(acks),
            "staff_verifiers": int(staff),
        }

    def prune(self, *, keep_days: int, now: float | None = None) -> int:
        """Delete reports pulled more than *keep_days* ago, unless something still waits."""
        cutoff = (now or time.time()) - keep_days * 86400
        rows = self._rows(
            "SELECT r.id FROM reports r LEFT JOIN acknowledgements a ON a.report_id = r.id "
            "WHERE r.stored_at < ? AND (r.delivered_at IS NOT NULL OR r.replaced_at IS NOT NULL) "
            "AND r.node_state != 'pending' "
            "AND (a.report_id IS NULL OR a.state != 'pending') "
            "AND NOT (r.critical = 1 AND r.hub_acknowledged_at IS NULL "
            "AND (a.report_id IS NULL OR a.state = 'refused'))",
            cutoff,
        )
        for row in rows:
            report_id = int(row["id"])
            with self._tx() as db:
                db.execute("DELETE FROM acknowledgements WHERE report_id = ?", (report_id,))
                db.execute("DELETE FROM reports WHERE id = ?", (report_id,))
            self.pdf_path(report_id).unlink(missing_ok=True)
            self.dicom_path(report_id).unlink(missing_ok=True)
        return len(rows)


class StaffVerifier:
    """Offline sign-in of clinic staff against the argon2id hashes synced from the hub."""

    _hasher = PasswordHasher()
    # A hash to verify against when the user is unknown, so the answer takes as long.
    _dummy = _hasher.hash("not a password of anyone")

    def __init__(self, store: ReportStore) -> None:
        self.store = store
        self._gate = threading.BoundedSemaphore(2)  # argon2 is memory-hard: two at a time

    def verify(self, username: str, password: str) -> StaffMember | None:
        member = self.store.staff_member(username[:64]) if username else None
        with self._gate:
            try:
                self._hasher.verify(member.password_hash if member else self._dummy, password)
            except (VerificationError, InvalidHashError):
                return None
        return member

    def still_valid(self, username: str, password_hash: str) -> bool:
        """Whether a signed-in user is still in the synced list with the same password."""
        member = self.store.staff_member(username)
        return member is not None and member.password_hash == password_hash


class _Outage:
    """Logs the start of a hub outage once and its end once."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.down_since: float | None = None
        self.failures = 0

    def failed(self, exc: Exception) -> None:
        self.failures += 1
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("%s: the hub is unreachable, retrying with back-off: %s", self.what, exc)

    def ok(self) -> None:
        if self.down_since is not None:
            log.info(
                "%s: the hub is reachable again (after %.0f s)",
                self.what,
                time.monotonic() - self.down_since,
            )
        self.down_since = None
        self.failures = 0


class ReportPuller:
    """The pull loop and the DICOM node delivery loop (threads of the gateway main process)."""

    def __init__(
        self,
        store: ReportStore,
        client: HubClient,
        *,
        wait_seconds: float = 25.0,
        staff_sync_seconds: float = 300.0,
        retry_initial_seconds: float = 1.0,
        retry_max_seconds: float = 300.0,
        keep_days: int = 90,
        node: Any = None,
        calling_ae: str = "IMAGING_HUB",
    ) -> None:
        self.store = store
        self.client = client
        self.wait_seconds = wait_seconds
        self.staff_sync_seconds = staff_sync_seconds
        self.retry_initial = retry_initial_seconds
        self.retry_max = retry_max_seconds
        self.keep_days = keep_days
        self.node = node  # report_sender.DicomNode | None
        self.calling_ae = calling_ae
        self._stopped = threading.Event()
        self._node_wake = threading.Event()
        self._outage = _Outage("report pull")
        self._local_failures = 0  # failures of this box (e.g. a full disk), not of the hub
        self._staff_synced_at = 0.0
        self._ack_sync_paused_until = 0.0
        self._pruned_at = 0.0
        self._threads: list[threading.Thread] = []
        self.last_error = ""

    # --- lifecycle ---

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._run, name="report-pull", daemon=True)]
        if self.node is not None:
            self._threads.append(
                threading.Thread(target=self._run_node, name="report-node", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the loops; False if a thread is still inside a request (it is a daemon)."""
        self._stopped.set()
        self._node_wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _delay(self, failures: int) -> float:
        base = min(self.retry_max, self.retry_initial * 2 ** min(30, max(0, failures - 1)))
        return float(base * (0.75 + random.random() * 0.5))

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                progressed = self.run_once()
                self._outage.ok()
                if not progressed and self.wait_seconds == 0:
                    self._stopped.wait(1.0)
            except ForwardError as exc:
                self.last_error = str(exc)
                if exc.retryable:
                    self._outage.failed(exc)
                    self._stopped.wait(self._delay(self._outage.failures))
                else:
                    log.warning("report pull refused by the hub: %s", exc)
                    self._stopped.wait(self.retry_max)
            except Exception as exc:  # the loop must never die
                self._local_failures += 1
                if is_no_space(exc):  # a full disk: one line per episode, a growing wait
                    if self._local_failures == 1:
                        log.warning(
                            "report pull paused: no space left on the spool's file system "
                            "(%s); retrying with back-off",
                            type(exc).__name__,
                        )
                else:
                    log.exception("report pull failed")
                self._stopped.wait(self._delay(self._local_failures + 1))
                continue
            if self._local_failures:
                log.info("report pull running again after %d failure(s)", self._local_failures)
                self._local_failures = 0

    # --- one cycle (tests call it directly) ---

    def run_once(self, wait: float | None = None) -> bool:
        """Confirm what is held, push acknowledgements, learn those made at the hub, sync
        staff when due, prune, then one long-poll and pull what it lists. Raises ForwardError
        when the hub is unreachable."""
        self.confirm_held()
        self.push_acknowledgements()
        now = time.monotonic()
        if now >= self._ack_sync_paused_until:
            try:
                self.sync_acknowledgements()
            except ForwardError as exc:
                if exc.retryable:
                    raise
                # E.g. a hub older than this gateway (404): pulling goes on; asked again later.
                self._ack_sync_paused_until = now + ACK_SYNC_PAUSE_SECONDS
                log.warning("acknowledgement sync refused by the hub: %s", exc)
        if not self._staff_synced_at or now - self._staff_synced_at >= self.staff_sync_seconds:
            try:
                self.sync_staff()
            except ForwardError as exc:
                if exc.retryable:
                    raise
                self._staff_synced_at = now  # tried again at the next interval
                log.warning("staff sync refused by the hub: %s", exc)
        if now - self._pruned_at >= 3600 or not self._pruned_at:
            self._pruned_at = now
            removed = self.store.prune(keep_days=self.keep_days)
            if removed:
                log.info("removed %d reports older than %d days", removed, self.keep_days)
        items = self.client.poll_reports(self.wait_seconds if wait is None else wait)
        pulled = 0
        for item in items:
            if self._stopped.is_set():
                break
            try:
                if self.pull(item):
                    pulled += 1
            except ForwardError as exc:
                if exc.retryable and exc.code == "forward_failed":
                    raise  # the hub went away: back off
                self.last_error = str(exc)
                log.warning("report %s not pulled: %s", item.get("id"), exc)
        if items and not pulled:
            # Every listed report failed (e.g. a checksum mismatch): do not spin on the poll.
            self._stopped.wait(self._delay(3))
        return pulled > 0

    def pull(self, item: Mapping[str, Any]) -> bool:
        """Download, check, keep and confirm one listed report; True when confirmed."""
        try:
            report_id = _report_id(item.get("id"))
        except ValueError:
            log.warning("the hub listed a report without a valid id; ignored")
            return False
        sha256 = str(item.get("sha256") or "").lower()
        if not _SHA256.match(sha256):
            log.warning("report %d: the hub listed no valid SHA-256; ignored", report_id)
            return False
        held = self.store.current(report_id)
        replaces: int | None = None
        if held is not None and held.sha256 == sha256:
            local_id = held.id
        else:
            # Never overwrite a held report with other content: the hub handed its id out
            # again (restored from an older backup). Both are kept; the held one is marked.
            if held is not None:
                replaces = held.id
            local_id = self.store.local_id_for(report_id)
        path = self.store.pdf_path(local_id)
        if held is None or replaces is not None or not path.is_file():
            size, _ = self.store.write_file(path, self._downloader(report_id, "pdf"), sha256)
            self.store.record(
                item, size=size, node=self.node is not None, local_id=local_id, replaces=replaces
            )
            if replaces is not None:
                log.warning(
                    "report %d: the hub lists a different report (another SHA-256) under this "
                    "id (a hub restored from an older backup?); the report held under it is "
                    "kept as local report %d, the new one is local report %d",
                    report_id,
                    replaces,
                    local_id,
                )
            log.info("report %d stored as local report %d (%d bytes)", report_id, local_id, size)
        self._confirm(report_id, sha256, local_id)
        self._node_wake.set()
        return True

    def _downloader(self, report_id: int, kind: str) -> Callable[[BinaryIO], tuple[int, str]]:
        def fill(out: BinaryIO) -> tuple[int, str]:
            return self.client.download_report(report_id, kind, out, max_bytes=MAX_REPORT_BYTES)

        return fill

    def _confirm(self, hub_id: int, sha256: str, local_id: int) -> None:
        delivered_at = self.client.confirm_report(hub_id, sha256)
        self.store.mark_delivered(local_id, delivered_at)
        log.info("report %d confirmed to the hub", hub_id)

    def confirm_held(self) -> int:
        """Confirm reports stored but not yet confirmed (a crash in between); idempotent."""
        done = 0
        for held in self.store.unconfirmed():
            if _file_sha256(self.store.pdf_path(held.id)) != held.sha256:
                # Never confirm without the very file; the next poll downloads it again.
                self.store.forget(held.id)
                continue
            try:
                self._confirm(held.hub_id, held.sha256, held.id)
                done += 1
            except ForwardError as exc:
                if exc.retryable and exc.code == "forward_failed":
                    raise
                if exc.code == "checksum_mismatch":
                    self._replaced(held.id, held.hub_id)
                    continue
                log.warning("report %d: confirmation refused: %s", held.id, exc)
        return done

    def _replaced(self, local_id: int, hub_id: int) -> None:
        """The hub answered ``checksum_mismatch`` for a held report: its id names another
        report there now (a hub restored from an older backup). Kept, set aside."""
        self.store.mark_replaced(local_id)
        log.warning(
            "report %d: the hub holds a different report (another SHA-256) under this id (a hub "
            "restored from an older backup?); the held one is kept as local report %d and no "
            "longer passed to the hub",
            hub_id,
            local_id,
        )

    def push_acknowledgements(self) -> int:
        """Pass acknowledgements made on the LAN page to the hub."""
        pushed = 0
        for ack in self.store.pending_acknowledgements():
            body = {
                "username": ack.username,
                "method": ack.method,
                "read_back": ack.read_back,
                "acknowledged_at": ack.acknowledged_at,
                "sha256": ack.sha256,
            }
            try:
                answer = self.client.acknowledge_report(ack.hub_id, body)
            except ForwardError as exc:
                if exc.code == "checksum_mismatch":  # the id names another report there now
                    self._replaced(ack.report_id, ack.hub_id)
                    continue
                if exc.retryable:
                    raise
                self.store.mark_acknowledgement(ack.report_id, "refused", f"{exc.code}: {exc}")
                log.warning(
                    "acknowledgement of report %d refused by the hub: %s", ack.report_id, exc
                )
                continue
            self.store.mark_acknowledgement(
                ack.report_id, "sent", hub_acknowledged_at=str(answer.get("acknowledged_at") or "")
            )
            log.info("acknowledgement of report %d passed to the hub", ack.report_id)
            pushed += 1
        return pushed

    def sync_acknowledgements(self) -> int:
        """Learn the acknowledgements made at the hub (portal, or another way) for the
        critical results held here without one: one request of at most 100 ids, none when
        there is no such report. Applied only to the very report held (same SHA-256); how many
        were learnt."""
        wanted = {held.hub_id: held for held in self.store.acknowledgements_to_learn()}
        if not wanted:
            return 0
        learnt = 0
        answers: list[Any] = self.client.report_acknowledgements(sorted(wanted))
        for item in answers:
            if not isinstance(item, dict):
                continue
            item_id = item.get("id")
            held = wanted.get(item_id) if isinstance(item_id, int) else None
            at = _text(item, "acknowledged_at", 64)
            if held is None or not at or str(item.get("sha256") or "").lower() != held.sha256:
                continue  # not asked, or the hub's id names another report now
            via = item.get("via")
            if self.store.learn_acknowledgement(
                held.id,
                sha256=held.sha256,
                acknowledged_at=at,
                by=_text(item, "acknowledged_by", 128),
                via=via if via in ACK_VIA else "portal",
            ):
                log.info("report %d: acknowledged at the hub (%s)", held.hub_id, via)
                learnt += 1
        return learnt

    def sync_staff(self) -> int | None:
        """Replace the staff verifiers with the hub's list; None if it is unchanged (ETag)."""
        found, etag = self.client.staff(self.store.meta("staff_etag"))
        self._staff_synced_at = time.monotonic()
        if found is None:
            return None
        kept = self.store.replace_staff(found["staff"], etag=etag, clinic_name=found["clinic_name"])
        log.debug("staff verifiers synced: %d", kept)
        return kept

    # --- the clinic DICOM node ---

    def _run_node(self) -> None:
        while not self._stopped.is_set():
            try:
                self.deliver_to_node()
            except Exception:
                log.exception("report delivery to the DICOM node failed")
            self._node_wake.wait(NODE_POLL_SECONDS)
            self._node_wake.clear()

    def deliver_to_node(self) -> int:
        """C-STORE due reports' Encapsulated PDF instances to the node; how many were sent."""
        from imaging_hub.dicom_gateway.report_sender import send_instance

        if self.node is None:
            return 0
        sent = 0
        for held in self.store.node_due(time.time()):
            if self._stopped.is_set():
                break
            try:
                path = self.store.dicom_path(held.id)
                if not path.is_file():
                    self.store.write_file(path, self._downloader(held.hub_id, "dicom"), None)
                    if not _holds_pdf(path, held.sha256):
                        path.unlink(missing_ok=True)
                        raise ForwardError(
                            "the hub's Encapsulated PDF instance does not hold the signed PDF",
                            code="checksum_mismatch",
                        )
                send_instance(path, self.node, calling_ae=self.calling_ae)
            except Exception as exc:  # ForwardError, or an unreadable instance
                delay = self._delay(held.node_attempts + 1)
                self.store.mark_node(
                    held.id, sent=False, error=str(exc), next_try_at=time.time() + delay
                )
                log.warning(
                    "report %d not delivered to %s (try %d, next in %.0f s): %s",
                    held.id,
                    self.node,
                    held.node_attempts + 1,
                    delay,
                    exc,
                )
                continue
            self.store.mark_node(held.id, sent=True)
            log.info("report %d delivered to %s", held.id, self.node)
            sent += 1
        return sent
