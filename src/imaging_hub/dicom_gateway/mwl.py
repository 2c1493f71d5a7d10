"""Modality Worklist at the clinic gateway: the order cache and C-FIND matching (PS3.4 Annex K).

The gateway keeps its clinic's open orders in ``<spool_dir>/orders.sqlite`` (SQLite, WAL, shared
by the gateway's processes) and answers Modality Worklist C-FIND from there, also while the WAN
is down:

- :class:`OrderSync` (main process) fetches the hub's snapshot (``GET /api/v1/gateway/orders``,
  ETag) every ``order_sync_seconds`` and replaces the cache with it in one transaction; a 304
  keeps it; an unreachable hub keeps the last snapshot (logged once per outage).
- :class:`OrderCache` (any process) reads the cache; ``hints()`` gives the completion module the
  expected image count and "exam done" of each order.
- :func:`parse_query`, :func:`find` and :func:`answer` decode a C-FIND identifier with its own
  Specific Character Set, match it (PS3.4 C.2.2.2: universal, single value, wildcard, list of
  UID, range, sequence matching) and build the answers with only the requested keys, in the
  character set the calling modality takes (``ISO_IR 192`` or ``GB18030``).

A malformed identifier raises :class:`MalformedQuery` carrying the DIMSE failure status to answer
(0xA900 for an identifier that does not fit the SOP class, 0xC000 for values that cannot be
processed); its message names attributes, never their values (no patient data in logs).

This module uses pydicom only: the DIMSE wiring is in ``scp.py``.
"""

import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pydicom import charset as pydicom_charset
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.valuerep import PersonName

from imaging_hub.dicom.dimse import CANNOT_UNDERSTAND, DATASET_DOES_NOT_MATCH_SOP_CLASS
from imaging_hub.dicom.uids import is_valid_uid
from imaging_hub.errors import ForwardError

log = logging.getLogger(__name__)

__all__ = [
    "CHARACTER_SETS",
    "ORDERS_FILE",
    "CachedOrder",
    "MalformedQuery",
    "OrderCache",
    "OrderHint",
    "OrderSync",
    "Query",
    "answer",
    "answers",
    "cache_status",
    "find",
    "order_from_feed",
    "parse_query",
]

ORDERS_FILE = "orders.sqlite"
#: Character sets the gateway answers in (``mwl_character_sets``), with their Python codecs.
CHARACTER_SETS = {"ISO_IR 192": "utf-8", "GB18030": "gb18030"}
#: Tried, in order, on non-ASCII text of an identifier that declares no character set.
_FALLBACK_CODECS = ("utf-8", "gb18030")
_ESCAPE_SEQUENCE = re.compile(r"\x1b[\x20-\x2f]+[\x30-\x7e]")  # ISO 2022 designations
_DEFAULT_CODEC = "iso8859"  # pydicom's codec of ISO_IR 6 / ISO 2022 IR 6 (ASCII)

STATUS_IDENTIFIER_DOES_NOT_MATCH = DATASET_DOES_NOT_MATCH_SOP_CLASS  # 0xA900
STATUS_UNABLE_TO_PROCESS = CANNOT_UNDERSTAND  # 0xC000

_OPEN_STATUSES = frozenset({"scheduled", "in_progress"})
_PRIORITY_VALUES = {"stat": "STAT", "urgent": "HIGH", "routine": "ROUTINE"}
_SPS_STATUS = {"scheduled": "SCHEDULED", "in_progress": "STARTED"}


class MalformedQuery(Exception):
    """A C-FIND identifier the gateway cannot match; ``status`` is the DIMSE failure to answer."""

    def __init__(self, reason: str, status: int = STATUS_IDENTIFIER_DOES_NOT_MATCH) -> None:
        super().__init__(reason)
        self.status = status


# --- Orders ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderHint:
    """What the completion module needs of an order (``OrderCache.hints()``)."""

    study_instance_uid: str
    accession_number: str
    expected_images: int
    done: bool


@dataclass(frozen=True)
class CachedOrder:
    """One order of the hub's feed, checked and normalised (``docs/clinic-return.md``)."""

    id: int
    accession_number: str
    study_instance_uid: str
    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    modality: str
    body_part_examined: str
    exam_type: str
    requested_procedure_id: str
    requested_procedure_description: str
    reason_for_procedure: str
    scheduled_station_ae_title: str
    scheduled_at: datetime  # aware
    referring_physician_name: str
    priority: str
    status: str
    expected_images: int
    done: bool

    @property
    def open(self) -> bool:
        """Whether a modality may still need it on its worklist."""
        return self.status in _OPEN_STATUSES and not self.done

    @property
    def local_start(self) -> datetime:
        """The scheduled start in the gateway's local time (what the modality shows)."""
        return self.scheduled_at.astimezone()

    def as_json(self) -> str:
        data = asdict(self)
        data["scheduled_at"] = self.scheduled_at.isoformat()
        return json.dumps(data, ensure_ascii=False, sort_keys=True)


_TEXT_LIMITS = {
    "accession_number": 16,
    "patient_id": 64,
    "patient_name": 324,
    "patient_birth_date": 8,
    "patient_sex": 16,
    "modality": 16,
    "body_part_examined": 16,
    "exam_type": 64,
    "requested_procedure_id": 16,
    "requested_procedure_description": 64,
    "reason_for_procedure": 64,
    "scheduled_station_ae_title": 16,
    "referring_physician_name": 324,
    "priority": 16,
    "status": 32,
}
_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f]")


def order_from_feed(item: Any) -> CachedOrder:
    """A feed item as a :class:`CachedOrder`; ValueError (naming the field) if it is not one."""
    if not isinstance(item, dict):
        raise ValueError("an order is not an object")
    text: dict[str, str] = {}
    for name, limit in _TEXT_LIMITS.items():
        value = item.get(name)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ValueError(f"{name} is not a string")
        value = value.strip()
        if len(value) > limit or _UNSAFE.search(value):
            raise ValueError(f"{name} is too long or holds a backslash or control character")
        text[name] = value
    if not text["accession_number"]:
        raise ValueError("accession_number is empty")
    uid = item.get("study_instance_uid")
    if not isinstance(uid, str) or not is_valid_uid(uid):
        raise ValueError("study_instance_uid is not a valid UID")
    raw_when = item.get("scheduled_at")
    if not isinstance(raw_when, str):
        raise ValueError("scheduled_at is not a string")
    try:
        when = datetime.fromisoformat(raw_when)
    except ValueError:
        raise ValueError("scheduled_at is not an ISO date-time") from None
    if when.tzinfo is None:
        when = when.astimezone()  # no zone: the gateway's local time
    expected = item.get("expected_images", 0)
    if expected is None:
        expected = 0
    if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
        raise ValueError("expected_images is not a count")
    done = item.get("done", False)
    if not isinstance(done, bool):
        raise ValueError("done is not a boolean")
    order_id = item.get("id", 0)
    if isinstance(order_id, bool) or not isinstance(order_id, int):
        raise ValueError("id is not an integer")
    return CachedOrder(
        id=order_id,
        study_instance_uid=uid,
        scheduled_at=when,
        expected_images=expected,
        done=done,
        **text,
    )


def _order_from_row(data: str) -> CachedOrder:
    values = json.loads(data)
    values["scheduled_at"] = datetime.fromisoformat(values["scheduled_at"])
    names = {f.name for f in fields(CachedOrder)}
    return CachedOrder(**{k: v for k, v in values.items() if k in names})


# --- The cache ---------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    position INTEGER PRIMARY KEY,
    accession_number TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class OrderCache:
    """The gateway's order cache in ``<spool_dir>/orders.sqlite``; usable from any process.

    Readers keep the decoded snapshot in memory and reload it only when the cache's
    ``generation`` changed (one small query per C-FIND).
    """

    def __init__(self, spool_dir: Path) -> None:
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.path = spool_dir / ORDERS_FILE
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA busy_timeout = 30000")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.executescript(_SCHEMA)
        self._generation: str | None = None
        self._orders: tuple[CachedOrder, ...] = ()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, values: dict[str, str]) -> None:
        self._conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            list(values.items()),
        )

    def replace(self, orders: Sequence[CachedOrder], *, etag: str) -> None:
        """Replace the cache with *orders* (one transaction: readers see the old or the new)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                generation = int(self._meta("generation") or 0) + 1
                self._conn.execute("DELETE FROM orders")
                self._conn.executemany(
                    "INSERT INTO orders (accession_number, study_instance_uid, data) "
                    "VALUES (?, ?, ?)",
                    [(o.accession_number, o.study_instance_uid, o.as_json()) for o in orders],
                )
                self._set_meta(
                    {
                        "generation": str(generation),
                        "etag": etag,
                        "synced_at": repr(time.time()),
                        "error": "",
                    }
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def confirm(self) -> None:
        """The hub answered "unchanged" (304): the cache is current as of now."""
        with self._lock:
            self._set_meta({"synced_at": repr(time.time()), "error": ""})

    def record_error(self, error: str) -> None:
        with self._lock:
            self._set_meta({"error": error[:300]})

    def etag(self) -> str:
        with self._lock:
            return self._meta("etag") or ""

    def orders(self) -> tuple[CachedOrder, ...]:
        """Every order of the last snapshot (open or not), by scheduled time."""
        with self._lock:
            generation = self._meta("generation")
            if generation != self._generation:
                rows = self._conn.execute("SELECT data FROM orders ORDER BY position").fetchall()
                loaded = [_order_from_row(row[0]) for row in rows]
                loaded.sort(key=lambda o: (o.scheduled_at, o.accession_number))
                self._orders = tuple(loaded)
                self._generation = generation
            return self._orders

    def hints(self) -> list[OrderHint]:
        """Per order in the cache: StudyInstanceUID, accession number, expected images, done."""
        return [
            OrderHint(
                study_instance_uid=o.study_instance_uid,
                accession_number=o.accession_number,
                expected_images=o.expected_images,
                done=o.done,  # "exam done" clicked (MPPS COMPLETED is the MPPS module's)
            )
            for o in self.orders()
        ]

    def status(self) -> dict[str, Any]:
        with self._lock:
            count = self._conn.execute("SELECT count(*) FROM orders").fetchone()[0]
            synced = self._meta("synced_at")
            error = self._meta("error") or ""
        return {
            "orders_cached": int(count),
            "orders_synced_at": float(synced) if synced else None,
            "orders_sync_error": error,
        }


def cache_status(spool_dir: Path) -> dict[str, Any]:
    """The cache's figures for the gateway status, without creating the cache if it is absent."""
    if not (spool_dir / ORDERS_FILE).exists():
        return {"orders_cached": 0, "orders_synced_at": None, "orders_sync_error": ""}
    cache = OrderCache(spool_dir)
    try:
        return cache.status()
    finally:
        cache.close()


# --- Sync from the hub -------------------------------------------------------------------------

#: The first retry after a failed sync (then doubling, up to ``order_sync_seconds``).
RETRY_INITIAL_SECONDS = 1.0
#: ``HubClient.orders``: (items, etag), items None when the hub answered 304.
FetchOrders = Callable[[str], tuple[list[Any] | None, str]]


class OrderSync:
    """Keeps the cache current: a snapshot every *interval* seconds until :meth:`stop`."""

    def __init__(self, cache: OrderCache, fetch: FetchOrders, *, interval: float) -> None:
        self.cache = cache
        self.fetch = fetch
        self.interval = interval
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = ""  # the error of the outage under way ("" while the hub answers)

    def sync_once(self) -> bool:
        """One fetch; True if the cache is current afterwards. Never raises."""
        try:
            items, etag = self.fetch(self.cache.etag())
            if items is None:
                self.cache.confirm()
            else:
                orders: list[CachedOrder] = []
                skipped: list[str] = []
                for item in items:
                    try:
                        orders.append(order_from_feed(item))
                    except ValueError as exc:
                        skipped.append(str(exc))
                if skipped:
                    log.warning(
                        "order feed: %d of %d orders skipped (first: %s)",
                        len(skipped),
                        len(items),
                        skipped[0],
                    )
                self.cache.replace(orders, etag=etag)
                log.debug("order cache replaced: %d orders", len(orders))
        except ForwardError as exc:
            self._failed(str(exc))
            return False
        except Exception as exc:  # the sync must never stop the gateway
            self._failed(f"{type(exc).__name__}: {exc}")
            log.debug("order sync failed", exc_info=True)
            return False
        if self._failing:
            log.info("order feed reachable again: the worklist cache is current")
            self._failing = ""
        return True

    def _failed(self, error: str) -> None:
        if not self._failing:
            log.warning("order feed unavailable, answering from the cached orders: %s", error)
        self._failing = error
        try:
            self.cache.record_error(error)
        except sqlite3.Error:
            log.debug("order sync error not recorded", exc_info=True)

    def _run(self) -> None:
        """Sync every *interval* seconds; after a failure sooner (1 s, doubling up to the
        interval), so a hub that is just starting or back from an outage is caught early."""
        retry = RETRY_INITIAL_SECONDS
        while not self._stopped.is_set():
            if self.sync_once():
                retry = RETRY_INITIAL_SECONDS
                self._stopped.wait(self.interval)
            else:
                self._stopped.wait(min(retry, self.interval))
                retry *= 2

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="order-sync", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout)


# --- The query ---------------------------------------------------------------------------------

SPS_SEQUENCE = "ScheduledProcedureStepSequence"
_SPS_TAG = int(tag_for_keyword(SPS_SEQUENCE) or 0)
_CHARSET_TAG = 0x00080005
_UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM_TAGS = (b"\xfe\xff\x00\xe0", b"\xff\xfe\xe0\x00")  # (FFFE,E000) little, big endian

_TEXT_VRS = frozenset({"PN", "LO", "SH", "LT", "ST", "UT", "UC", "UR"})
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"})
_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})


def _priority(o: CachedOrder) -> str:
    return _PRIORITY_VALUES.get(o.priority.lower(), o.priority.upper())


#: Values of the top-level keys, by keyword.
_TOP: dict[str, Callable[[CachedOrder], str]] = {
    "PatientName": lambda o: o.patient_name,
    "PatientID": lambda o: o.patient_id,
    "PatientBirthDate": lambda o: o.patient_birth_date,
    "PatientSex": lambda o: o.patient_sex,
    "AccessionNumber": lambda o: o.accession_number,
    "StudyInstanceUID": lambda o: o.study_instance_uid,
    "RequestedProcedureID": lambda o: o.requested_procedure_id,
    "RequestedProcedureDescription": lambda o: o.requested_procedure_description,
    "ReasonForTheRequestedProcedure": lambda o: o.reason_for_procedure,
    "RequestedProcedurePriority": _priority,
    "ReferringPhysicianName": lambda o: o.referring_physician_name,
    "BodyPartExamined": lambda o: o.body_part_examined,
    "Modality": lambda o: o.modality,
}
#: Values of the Scheduled Procedure Step item's keys, by keyword.
_SPS: dict[str, Callable[[CachedOrder], str]] = {
    "ScheduledStationAETitle": lambda o: o.scheduled_station_ae_title,
    "ScheduledProcedureStepStartDate": lambda o: o.local_start.strftime("%Y%m%d"),
    "ScheduledProcedureStepStartTime": lambda o: o.local_start.strftime("%H%M%S"),
    "Modality": lambda o: o.modality,
    "ScheduledPerformingPhysicianName": lambda o: "",
    "ScheduledProcedureStepDescription": lambda o: o.requested_procedure_description,
    "ScheduledProcedureStepID": lambda o: o.accession_number,
    "ScheduledProcedureStepStatus": lambda o: _SPS_STATUS.get(o.status, ""),
}


@dataclass(frozen=True)
class Key:
    """One key of the identifier: its tag, VR and decoded value ("" for universal matching)."""

    tag: int
    vr: str
    value: str

    @property
    def keyword(self) -> str:
        return keyword_for_tag(self.tag)


@dataclass(frozen=True)
class Query:
    """A decoded Modality Worklist identifier."""

    keys: tuple[Key, ...]  # top level, in tag order (Specific Character Set left out)
    sps: tuple[Key, ...] | None  # the SPS item's keys; None: no SPS sequence requested
    sps_expand: bool  # the SPS sequence came empty: answer every supported SPS attribute
    empty_sequences: tuple[int, ...]  # other sequences requested: answered empty


def _encodings(ds: Dataset) -> list[str] | None:
    """Python codecs of the identifier's Specific Character Set; None when none is declared."""
    elem = ds.get_item(_CHARSET_TAG)
    if elem is None:
        return None
    raw = elem.value
    if isinstance(raw, bytes):
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise MalformedQuery("Specific Character Set is not ASCII") from None
    elif isinstance(raw, str):
        text = raw
    elif isinstance(raw, MultiValue | list):
        text = "\\".join(str(v) for v in raw)
    elif raw is None:
        text = ""
    else:
        raise MalformedQuery("Specific Character Set has the wrong type")
    terms = [t.strip() for t in text.strip(" \x00").split("\\")]
    if terms == [""]:
        return None
    for term in terms:
        if term not in pydicom_charset.python_encoding:
            raise MalformedQuery("Specific Character Set names an unknown character set")
    return list(pydicom_charset.convert_encodings(terms))


def _decode(raw: bytes, vr: str, encodings: list[str] | None, keyword: str) -> str:
    """Strict decoding of one value: undecodable bytes raise MalformedQuery."""
    if vr not in _TEXT_VRS or raw.isascii():
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise MalformedQuery(f"{keyword} is not ASCII") from None
    if encodings is None:
        for codec in _FALLBACK_CODECS:
            try:
                return raw.decode(codec)
            except UnicodeDecodeError:
                continue
        raise MalformedQuery(f"{keyword} cannot be decoded (no Specific Character Set)")
    if b"\x1b" not in raw:
        # No escape sequence: the first character set. When that is the default repertoire
        # (ASCII, pydicom's "iso8859"), non-ASCII bytes are taken in the next declared set
        # (machines declaring "ISO 2022 IR 6\ISO 2022 IR 58" send GB2312 bytes unescaped).
        candidates = encodings[1:] if encodings[0] == _DEFAULT_CODEC else encodings[:1]
        for codec in candidates:
            try:
                return raw.decode(codec)
            except (UnicodeDecodeError, LookupError):
                continue
        raise MalformedQuery(f"{keyword} cannot be decoded in its character set")
    delimiters = {0x5E, 0x3D} if vr == "PN" else {0x0D, 0x0A, 0x09, 0x0C}
    text = pydicom_charset.decode_bytes(raw, encodings, delimiters)
    # pydicom leaves some designations in the text (ESC $ ) A of GB2312): they are no text.
    text = _ESCAPE_SEQUENCE.sub("", text)
    if "\ufffd" in text or "\x1b" in text:
        raise MalformedQuery(f"{keyword} cannot be decoded in its character set")
    return text


def _element(ds: Dataset, tag: int) -> tuple[str, Any]:
    """(wire VR or None, value) of *ds*'s element *tag*, raw bytes when not yet converted."""
    try:
        elem = ds.get_item(tag)
    except Exception:
        raise MalformedQuery("the identifier cannot be parsed") from None
    if isinstance(elem, RawDataElement):
        if (
            isinstance(elem.value, bytes)
            and elem.length != _UNDEFINED_LENGTH
            and len(elem.value) != elem.length
        ):
            raise MalformedQuery("the identifier ends inside an element (not a data set)")
        return (str(elem.VR) if elem.VR else ""), elem.value
    if isinstance(elem, DataElement):
        return str(elem.VR), elem.value
    raise MalformedQuery("the identifier cannot be parsed")


def _value_text(value: Any, vr: str, encodings: list[str] | None, keyword: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return _decode(value, vr, encodings, keyword).rstrip(" \x00")
    if isinstance(value, str | PersonName):
        return str(value).rstrip(" \x00")
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)
    raise MalformedQuery(f"{keyword} has the wrong type")


def _tags(ds: Dataset) -> list[int]:
    try:
        return sorted(int(t) for t in ds.keys())  # noqa: SIM118 - a Dataset, not a dict
    except Exception:
        raise MalformedQuery("the identifier cannot be parsed") from None


def _keys(ds: Dataset, encodings: list[str] | None, *, top: bool) -> tuple[list[Key], list[int]]:
    """The item's keys (text decoded) and the sequences it requests."""
    keys: list[Key] = []
    sequences: list[int] = []
    for tag in _tags(ds):
        group, element = tag >> 16, tag & 0xFFFF
        wire, value = _element(ds, tag)  # every element: a truncated one is refused
        if element == 0 or group % 2 == 1 or tag == _CHARSET_TAG:
            continue  # group lengths, private elements, the character set: not keys
        if group in (0x0000, 0x0002, 0xFFFE):
            raise MalformedQuery("the identifier holds command, meta or item elements")
        try:
            expected = dictionary_VR(tag)
        except KeyError:
            continue  # an attribute pydicom does not know: neither matched nor returned
        keyword = keyword_for_tag(tag) or f"({group:04X},{element:04X})"
        if expected == "SQ":
            if wire not in ("", "SQ", "UN"):
                raise MalformedQuery(f"{keyword} is not a sequence")
            sequences.append(tag)
            continue
        vr = expected if " or " not in expected else (wire or expected.split(" or ")[0])
        if wire and wire not in (vr, "UN"):
            raise MalformedQuery(f"{keyword} has VR {wire}, not {vr}")
        keys.append(Key(tag, vr, _value_text(value, vr, encodings, keyword)))
    return keys, sequences


def parse_query(ds: Any) -> Query:
    """Decode a Modality Worklist identifier; MalformedQuery if it cannot be matched."""
    if not isinstance(ds, Dataset):
        raise MalformedQuery("the identifier is not a data set")
    encodings = _encodings(ds)
    keys, sequences = _keys(ds, encodings, top=True)
    sps: tuple[Key, ...] | None = None
    expand = False
    if _SPS_TAG in sequences:
        sequences.remove(_SPS_TAG)
        _, raw_items = _element(ds, _SPS_TAG)
        if isinstance(raw_items, bytes) and raw_items[:4] not in (b"", *_ITEM_TAGS):
            raise MalformedQuery(f"{SPS_SEQUENCE} holds bytes that are not items")
        try:
            items = ds[_SPS_TAG].value
        except Exception:
            raise MalformedQuery(f"{SPS_SEQUENCE} cannot be parsed") from None
        if not isinstance(items, DicomSequence | list):
            raise MalformedQuery(f"{SPS_SEQUENCE} is not a sequence")
        if len(items) > 1:
            raise MalformedQuery(f"{SPS_SEQUENCE} has more than one item")
        if not items:
            sps, expand = (), True
        else:
            item = items[0]
            if not isinstance(item, Dataset):
                raise MalformedQuery(f"{SPS_SEQUENCE} holds an item that is not a data set")
            item_keys, _ = _keys(item, _encodings(item) or encodings, top=False)
            sps = tuple(item_keys)
            expand = not item_keys
    query = Query(keys=tuple(keys), sps=sps, sps_expand=expand, empty_sequences=tuple(sequences))
    _check_values(query)
    return query


# --- Matching ----------------------------------------------------------------------------------

_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?$")


def _parse_date(text: str, keyword: str) -> date:
    if not _DATE.fullmatch(text):
        raise MalformedQuery(f"{keyword} is not a date (YYYYMMDD)", STATUS_UNABLE_TO_PROCESS)
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise MalformedQuery(f"{keyword} is not a date", STATUS_UNABLE_TO_PROCESS) from None


def _parse_time(text: str, keyword: str, *, upper: bool) -> str:
    """A TM bound as HHMMSS.ffffff; an upper bound covers the whole of its precision."""
    match = _TIME.fullmatch(text)
    if match is None:
        raise MalformedQuery(f"{keyword} is not a time (HHMMSS)", STATUS_UNABLE_TO_PROCESS)
    hh, mm, ss, frac = match.groups()
    if int(hh) > 23 or (mm and int(mm) > 59) or (ss and int(ss) > 60):
        raise MalformedQuery(f"{keyword} is not a time", STATUS_UNABLE_TO_PROCESS)
    if upper:
        return f"{hh}{mm or '59'}{ss or '59'}.{(frac or '.')[1:].ljust(6, '9')}"
    return f"{hh}{mm or '00'}{ss or '00'}.{(frac or '.')[1:].ljust(6, '0')}"


def _range(text: str, keyword: str) -> tuple[str, str]:
    """(lower, upper) of a single value or range; either may be "" (open)."""
    if "\\" in text:
        raise MalformedQuery(f"{keyword} has more than one value", STATUS_UNABLE_TO_PROCESS)
    if text.count("-") > 1:
        raise MalformedQuery(f"{keyword} is not a valid range", STATUS_UNABLE_TO_PROCESS)
    if "-" not in text:
        return text, text
    lower, upper = (part.strip() for part in text.split("-"))
    if not lower and not upper:
        raise MalformedQuery(f"{keyword} is a range without bounds", STATUS_UNABLE_TO_PROCESS)
    return lower, upper


def _date_bounds(text: str, keyword: str) -> tuple[date | None, date | None]:
    lower, upper = _range(text, keyword)
    lo = _parse_date(lower, keyword) if lower else None
    hi = _parse_date(upper, keyword) if upper else None
    if lo is not None and hi is not None and lo > hi:
        raise MalformedQuery(f"{keyword} range ends before it starts", STATUS_UNABLE_TO_PROCESS)
    return lo, hi


def _time_bounds(text: str, keyword: str) -> tuple[str | None, str | None]:
    lower, upper = _range(text, keyword)
    lo = _parse_time(lower, keyword, upper=False) if lower else None
    hi = _parse_time(upper, keyword, upper=True) if upper else None
    return lo, hi


def _check_values(query: Query) -> None:
    """Values the matching would trip over raise MalformedQuery now (before any answer)."""
    for key in [*query.keys, *(query.sps or ())]:
        if not key.value or (key.value == "*" and key.vr in ("DA", "TM", "UI")):
            continue
        if key.vr == "DA":
            _date_bounds(key.value, key.keyword)
        elif key.vr == "TM":
            _time_bounds(key.value, key.keyword)
        elif key.vr == "UI":
            for uid in key.value.split("\\"):
                if not is_valid_uid(uid.strip()):
                    raise MalformedQuery(f"{key.keyword} is not a list of UIDs")


def _pattern(text: str, *, fold: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)
    return re.compile(body, re.DOTALL | (re.IGNORECASE if fold else 0))


def _match_one(query: str, value: str, *, wildcard: bool, fold: bool) -> bool:
    if wildcard and ("*" in query or "?" in query):
        return _pattern(query, fold=fold).fullmatch(value) is not None
    return query.casefold() == value.casefold() if fold else query == value


def _pn_groups(value: str) -> list[str]:
    return [group.rstrip("^ ") for group in value.split("=")]


def _match_pn(query: str, value: str) -> bool:
    """PN: wildcards, case-insensitive; a query without '=' may match any component group."""
    groups = _pn_groups(value)
    if "=" not in query:
        q = query.rstrip("^ ")
        return any(
            _match_one(q, g, wildcard=True, fold=True) for g in [*groups, value.rstrip("^ ")] if g
        )
    for q, g in zip(_pn_groups(query), [*groups, "", ""], strict=False):
        if q and q != "*" and not _match_one(q, g, wildcard=True, fold=True):
            return False
    return True


def _match_key(key: Key, value: str) -> bool:
    query = key.value
    if not query or query == "*":
        return True
    if key.vr == "UI":
        return value in {uid.strip() for uid in query.split("\\")}
    if key.vr == "DA":
        lo, hi = _date_bounds(query, key.keyword)
        if not value:
            return False
        actual = _parse_date(value, key.keyword)
        return (lo is None or lo <= actual) and (hi is None or actual <= hi)
    if key.vr == "TM":
        tlo, thi = _time_bounds(query, key.keyword)
        if not value:
            return False
        at = _parse_time(value, key.keyword, upper=False)
        return (tlo is None or tlo <= at) and (thi is None or at <= thi)
    alternatives = query.split("\\")  # several values: any of them (PS3.4 C.2.2.2.1)
    if key.vr == "PN":
        return any(_match_pn(q, value) for q in alternatives)
    wildcard = key.vr in _WILDCARD_VRS
    return any(_match_one(q.strip(), value, wildcard=wildcard, fold=False) for q in alternatives)


def _match_start(date_key: Key | None, time_key: Key | None, order: CachedOrder) -> bool:
    """Scheduled start date and time: a date and a time together are one combined range
    (PS3.4 C.2.2.2.5: 20261205-20261206 with 1000-1800 is Dec 5 10:00 to Dec 6 18:00)."""
    start = order.local_start
    if date_key is None or not date_key.value or date_key.value == "*":
        return time_key is None or _match_key(time_key, start.strftime("%H%M%S"))
    if time_key is None or not time_key.value or time_key.value == "*":
        return _match_key(date_key, start.strftime("%Y%m%d"))
    dlo, dhi = _date_bounds(date_key.value, date_key.keyword)
    tlo, thi = _time_bounds(time_key.value, time_key.keyword)
    actual = start.strftime("%Y%m%d") + _parse_time(
        start.strftime("%H%M%S"), time_key.keyword, upper=False
    )
    lower = f"{dlo:%Y%m%d}{tlo or '000000.000000'}" if dlo else ""
    upper = f"{dhi:%Y%m%d}{thi or '235960.999999'}" if dhi else ""
    return (not lower or lower <= actual) and (not upper or actual <= upper)


def _matches(query: Query, order: CachedOrder) -> bool:
    for key in query.keys:
        getter = _TOP.get(key.keyword)
        if getter is not None and not _match_key(key, getter(order)):
            return False
    if not query.sps:
        return True
    by_keyword = {key.keyword: key for key in query.sps}
    station = by_keyword.pop("ScheduledStationAETitle", None)
    # An order for a station is that station's only; an order without one is anyone's.
    if (
        station is not None
        and order.scheduled_station_ae_title
        and not _match_key(station, order.scheduled_station_ae_title)
    ):
        return False
    date_key = by_keyword.pop("ScheduledProcedureStepStartDate", None)
    time_key = by_keyword.pop("ScheduledProcedureStepStartTime", None)
    if not _match_start(date_key, time_key, order):
        return False
    for keyword, key in by_keyword.items():
        getter = _SPS.get(keyword)
        if getter is not None and not _match_key(key, getter(order)):
            return False
    return True


def find(query: Query, orders: Sequence[CachedOrder]) -> list[CachedOrder]:
    """The open orders matching *query*, by scheduled time."""
    matching = [order for order in orders if order.open and _matches(query, order)]
    return sorted(matching, key=lambda o: (o.scheduled_at, o.accession_number))


# --- Answers -----------------------------------------------------------------------------------


def _put(ds: Dataset, key: Key, value: str) -> None:
    if not value:
        ds.add_new(key.tag, key.vr, None)
    elif key.vr in _TEXT_VRS or key.vr in _ASCII_VRS:
        ds.add_new(key.tag, key.vr, value)
    else:
        ds.add_new(key.tag, key.vr, None)


def answer(query: Query, order: CachedOrder, character_set: str) -> Dataset:
    """The C-FIND answer for *order*: the requested keys only, in *character_set*."""
    if character_set not in CHARACTER_SETS:
        raise ValueError(f"unsupported answer character set {character_set!r}")
    ds = Dataset()
    ds.SpecificCharacterSet = character_set
    for key in query.keys:
        getter = _TOP.get(key.keyword)
        _put(ds, key, getter(order) if getter is not None else "")
    for tag in query.empty_sequences:
        ds.add_new(tag, "SQ", DicomSequence([]))
    if query.sps is not None:
        item = Dataset()
        sps_keys = (
            [Key(int(tag_for_keyword(k) or 0), dictionary_VR(k), "") for k in _SPS]
            if query.sps_expand
            else list(query.sps)
        )
        for key in sps_keys:
            getter = _SPS.get(key.keyword)
            _put(item, key, getter(order) if getter is not None else "")
        ds.add_new(_SPS_TAG, "SQ", DicomSequence([item]))
    return ds


def answers(query: Query, orders: Sequence[CachedOrder], character_set: str) -> Iterator[Dataset]:
    """:func:`answer` for each order :func:`find` matches."""
    for order in find(query, orders):
        yield answer(query, order, character_set)
