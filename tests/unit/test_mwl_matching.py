"""Modality Worklist matching at the gateway (PS3.4 K.6.1, C.2.2.2) and its order cache.

Queries go through the DIMSE encoding (pynetdicom's encode/decode, as the SCP receives them),
so decoding with the identifier's own character set is exercised as on the wire.
"""

import io
import logging
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.config import disable_value_validation
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pynetdicom.dsutils import decode, encode

from imaging_hub.dicom_gateway import mwl
from imaging_hub.dicom_gateway.mwl import (
    CachedOrder,
    MalformedQuery,
    OrderCache,
    OrderHint,
    OrderSync,
    Query,
    answer,
    find,
    order_from_feed,
    parse_query,
)
from imaging_hub.errors import ForwardError

NAME = "Zhang^San=张^三"
ZHANG = "张^三"


def local(y: int, mo: int, d: int, h: int, mi: int) -> str:
    """An ISO time with the zone of this machine (what the gateway shows the modality)."""
    return datetime(y, mo, d, h, mi).astimezone().isoformat()


def feed_item(**changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": 1,
        "accession_number": "A1001",
        "study_instance_uid": "1.2.826.0.1.3680043.10.1.1",
        "patient_id": "P001",
        "patient_name": NAME,
        "patient_birth_date": "19600203",
        "patient_sex": "M",
        "modality": "CR",
        "body_part_examined": "CHEST",
        "exam_type": "CR_CHEST_PA",
        "requested_procedure_id": "RP1",
        "requested_procedure_description": "胸部正位",
        "reason_for_procedure": "咳嗽两周",
        "scheduled_station_ae_title": "DR_ROOM1",
        "scheduled_at": local(2026, 12, 6, 9, 30),
        "referring_physician_name": "Li^Si=李^四",
        "priority": "urgent",
        "status": "scheduled",
        "expected_images": 2,
        "done": False,
    }
    item.update(changes)
    return item


ORDERS = [
    order_from_feed(feed_item()),
    order_from_feed(
        feed_item(
            id=2,
            accession_number="A1002",
            study_instance_uid="1.2.826.0.1.3680043.10.1.2",
            patient_id="P002",
            patient_name="Wang^Wu=王^五",
            modality="CT",
            scheduled_station_ae_title="CT_ROOM1",
            scheduled_at=local(2026, 12, 7, 14, 0),
            priority="routine",
            expected_images=0,
        )
    ),
    order_from_feed(
        feed_item(
            id=3,
            accession_number="A1003",
            study_instance_uid="1.2.826.0.1.3680043.10.1.3",
            patient_id="P003",
            patient_name="Zhao^Liu=赵^六",
            modality="US",
            scheduled_station_ae_title="",
            scheduled_at=local(2026, 12, 5, 8, 0),
            status="in_progress",
        )
    ),
    # Not for the worklist any more: completed, or "exam done" clicked.
    order_from_feed(
        feed_item(
            id=4,
            accession_number="A1004",
            study_instance_uid="1.2.826.0.1.3680043.10.1.4",
            status="completed",
        )
    ),
    order_from_feed(
        feed_item(
            id=5,
            accession_number="A1005",
            study_instance_uid="1.2.826.0.1.3680043.10.1.5",
            done=True,
        )
    ),
]


def wire(ds: Dataset, *, implicit: bool = True) -> Dataset:
    """*ds* as the SCP receives it: encoded, then decoded lazily by pynetdicom."""
    data = encode(ds, implicit, True)
    assert data is not None
    return decode(io.BytesIO(data), implicit, True)


def query(sps: dict[str, str] | None = None, **top: str) -> Query:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword in ("PatientName", "PatientID", "AccessionNumber"):
        setattr(ds, keyword, "")
    for keyword, value in top.items():
        setattr(ds, keyword, value)
    item = Dataset()
    item.ScheduledStationAETitle = ""
    item.ScheduledProcedureStepStartDate = ""
    item.Modality = ""
    for keyword, value in (sps or {}).items():
        setattr(item, keyword, value)
    ds.ScheduledProcedureStepSequence = [item]
    return parse_query(wire(ds))


def accessions(q: Query) -> list[str]:
    return [o.accession_number for o in find(q, ORDERS)]


# --- matching ---------------------------------------------------------------------------------


def test_universal_matching_lists_the_open_orders_by_scheduled_time() -> None:
    assert accessions(query()) == ["A1003", "A1001", "A1002"]


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        ("20261206", ["A1001"]),
        ("20261205-20261206", ["A1003", "A1001"]),
        ("-20261205", ["A1003"]),
        ("20261206-", ["A1001", "A1002"]),
        ("20261208", []),
    ],
)
def test_scheduled_date_single_and_ranges(dates: str, expected: list[str]) -> None:
    assert accessions(query({"ScheduledProcedureStepStartDate": dates})) == expected


def test_date_and_time_ranges_combine_into_one_period() -> None:
    """PS3.4 C.2.2.2.5: Dec 5 09:00 to Dec 7 10:00, not 09:00-10:00 on each day."""
    q = query(
        {
            "ScheduledProcedureStepStartDate": "20261205-20261207",
            "ScheduledProcedureStepStartTime": "0900-1000",
        }
    )
    assert accessions(q) == ["A1001"]
    q = query({"ScheduledProcedureStepStartTime": "0800-0930"})
    assert accessions(q) == ["A1003", "A1001"]
    q = query({"ScheduledProcedureStepStartTime": "09"})  # the whole hour 09
    assert accessions(q) == ["A1001"]


def test_modality_and_multiple_values() -> None:
    assert accessions(query({"Modality": "CT"})) == ["A1002"]
    assert accessions(query({"Modality": "CT\\US"})) == ["A1003", "A1002"]
    with disable_value_validation():
        assert accessions(query({"Modality": "ct"})) == []  # CS is case-sensitive


def test_station_ae_title_an_order_for_a_station_is_that_stations_only() -> None:
    assert accessions(query({"ScheduledStationAETitle": "DR_ROOM1"})) == ["A1003", "A1001"]
    assert accessions(query({"ScheduledStationAETitle": "CT_ROOM1"})) == ["A1003", "A1002"]
    assert accessions(query({"ScheduledStationAETitle": "OTHER"})) == ["A1003"]
    assert accessions(query({"ScheduledStationAETitle": "*_ROOM1"})) == ["A1003", "A1001", "A1002"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("张*", ["A1001"]),
        ("*三", ["A1001"]),
        ("张^三", ["A1001"]),
        ("?^?", ["A1003", "A1001", "A1002"]),  # ideographic groups of one character each
        ("ZHANG*", ["A1001"]),  # PN: case-insensitive
        ("Zhang^San", ["A1001"]),
        ("Zhang", []),  # single value matching is the whole value
        ("=张*", ["A1001"]),
        ("W*=王*", ["A1002"]),
        ("W*=张*", []),
        ("*", ["A1003", "A1001", "A1002"]),
    ],
)
def test_patient_name_wildcards_in_either_group(name: str, expected: list[str]) -> None:
    assert accessions(query(PatientName=name)) == expected


def test_patient_id_accession_and_uid_list() -> None:
    assert accessions(query(PatientID="P002")) == ["A1002"]
    assert accessions(query(PatientID="P00?")) == ["A1003", "A1001", "A1002"]
    assert accessions(query(AccessionNumber="A1003")) == ["A1003"]
    assert accessions(query(AccessionNumber="A1004")) == []  # completed: not on the worklist
    uids = "1.2.826.0.1.3680043.10.1.1\\1.2.826.0.1.3680043.10.1.2"
    assert accessions(query(StudyInstanceUID=uids)) == ["A1001", "A1002"]


def test_other_top_level_keys() -> None:
    assert accessions(query(PatientBirthDate="19600101-19601231")) == ["A1003", "A1001", "A1002"]
    assert accessions(query(PatientSex="F")) == []
    assert accessions(query(RequestedProcedurePriority="HIGH")) == ["A1003", "A1001"]
    assert accessions(query(ReferringPhysicianName="李*")) == ["A1003", "A1001", "A1002"]
    assert accessions(query(ReasonForTheRequestedProcedure="咳嗽*")) == ["A1003", "A1001", "A1002"]
    assert accessions(query(RequestedProcedureID="RP2")) == []


def test_the_query_is_decoded_in_its_own_character_set() -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "GB18030"
    ds.PatientName = "张*"
    q = parse_query(wire(ds))
    assert [o.accession_number for o in find(q, ORDERS)] == ["A1001"]
    # No Specific Character Set but GB18030 bytes (common on Chinese machines): guessed.
    raw = Dataset()
    raw[0x00100010] = RawDataElement(
        Tag(0x00100010), "PN", 3, "张*".encode("gb18030"), 0, False, True
    )
    q = parse_query(raw)
    assert [o.accession_number for o in find(q, ORDERS)] == ["A1001"]


@pytest.mark.parametrize(
    "name",
    [
        b"=\x1b$)A\xd5\xc5*",  # ISO 2022: ESC $ ) A, then GB2312 in G1
        b"=\xd5\xc5*",  # GB2312 bytes sent without their escape sequence
    ],
)
def test_iso_2022_chinese_queries(name: bytes) -> None:
    q = parse_query(raw_query((0x00100010, "PN", name), charset=b"ISO 2022 IR 6\\ISO 2022 IR 58"))
    assert q.keys[0].value == "=张*"
    assert [o.accession_number for o in find(q, ORDERS)] == ["A1001"]


def test_latin1_is_not_taken_for_chinese() -> None:
    with pytest.raises(MalformedQuery):
        parse_query(raw_query((0x00100010, "PN", b"\xd5\xc5*"), charset=b"ISO_IR 6"))


# --- answers ----------------------------------------------------------------------------------


def encoded(ds: Dataset) -> Dataset:
    """The answer as the modality reads it (raw bytes kept: get_item gives them)."""
    return decode(io.BytesIO(encode(ds, False, True) or b""), False, True)


def raw(ds: Dataset, tag: int) -> bytes:
    """The element's bytes on the wire, padding removed."""
    elem = ds.get_item(tag)
    if not isinstance(elem, RawDataElement):  # converted already: only an empty one here
        assert elem is not None and elem.value in (None, "")
        return b""
    return bytes(elem.value or b"").rstrip(b" \x00")


@pytest.mark.parametrize(("charset", "codec"), [("ISO_IR 192", "utf-8"), ("GB18030", "gb18030")])
def test_answers_hold_only_the_requested_keys_in_the_modalitys_character_set(
    charset: str, codec: str
) -> None:
    q = query({"ScheduledProcedureStepDescription": ""}, PatientName="张*", PatientWeight="")
    (order,) = find(q, ORDERS)
    got = encoded(answer(q, order, charset))
    assert got.SpecificCharacterSet == charset
    assert raw(got, 0x00100010) == NAME.encode(codec)
    assert raw(got, 0x00100020) == b"P001"
    assert raw(got, 0x00101030) == b""  # requested, not known: zero length
    keywords = {elem.keyword for elem in got}
    assert keywords == {
        "SpecificCharacterSet",
        "PatientName",
        "PatientID",
        "AccessionNumber",
        "PatientWeight",
        "ScheduledProcedureStepSequence",
    }
    item = got.ScheduledProcedureStepSequence[0]
    assert {e.keyword for e in item} == {
        "ScheduledStationAETitle",
        "ScheduledProcedureStepStartDate",
        "Modality",
        "ScheduledProcedureStepDescription",
    }
    assert item.ScheduledProcedureStepStartDate == "20261206"
    assert item.ScheduledProcedureStepDescription == "胸部正位"
    assert "胸部正位".encode(codec) in (encode(answer(q, order, charset), False, True) or b"")


def test_an_empty_sequence_asks_for_every_scheduled_step_attribute() -> None:
    ds = Dataset()
    ds.AccessionNumber = "A1002"
    ds.ScheduledProcedureStepSequence = []
    q = parse_query(wire(ds))
    (order,) = find(q, ORDERS)
    item = answer(q, order, "ISO_IR 192").ScheduledProcedureStepSequence[0]
    assert item.ScheduledProcedureStepStartTime == "140000"
    assert item.ScheduledStationAETitle == "CT_ROOM1"
    assert item.ScheduledProcedureStepID == "A1002"
    assert item.ScheduledProcedureStepStatus == "SCHEDULED"


# --- malformed identifiers --------------------------------------------------------------------


def raw_query(*elements: tuple[int, str, bytes], charset: bytes | None = b"ISO_IR 192") -> Dataset:
    ds = Dataset()
    if charset is not None:
        ds[0x00080005] = RawDataElement(
            Tag(0x00080005), "CS", len(charset), charset, 0, False, True
        )
    for tag, vr, value in elements:
        ds[tag] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)
    return ds


@pytest.mark.parametrize(
    ("identifier", "status"),
    [
        pytest.param(b"not a dataset", 0xA900, id="not-a-dataset"),
        pytest.param(
            decode(io.BytesIO(b"\x10\x00\x10\x00\xff\xff\xff\x7fshort"), True, True),
            0xA900,
            id="element-longer-than-the-identifier",
        ),
        pytest.param(
            decode(io.BytesIO(b"garbage bytes that are not dicom!"), True, True),
            0xA900,
            id="garbage-bytes",
        ),
        pytest.param(raw_query((0x00100010, "PN", b"\xff\xfe*")), 0xA900, id="undecodable-utf8"),
        pytest.param(
            raw_query((0x00100010, "PN", b"\xe5*"), charset=None), 0xA900, id="undecodable-guess"
        ),
        pytest.param(
            raw_query((0x00100010, "PN", b"A*"), charset=b"ISO_IR 999"),
            0xA900,
            id="unknown-charset",
        ),
        pytest.param(raw_query((0x00100010, "US", b"\x01\x00")), 0xA900, id="wrong-vr"),
        pytest.param(raw_query((0x00400100, "LO", b"CT")), 0xA900, id="sequence-not-a-sequence"),
        pytest.param(raw_query((0x00100030, "DA", b"2026-12-06")), 0xC000, id="date-with-dashes"),
        pytest.param(raw_query((0x00100030, "DA", b"20261207-20261201")), 0xC000, id="backwards"),
        pytest.param(raw_query((0x00100030, "DA", b"20261301")), 0xC000, id="no-such-month"),
        pytest.param(raw_query((0x00100030, "DA", b"-")), 0xC000, id="range-without-bounds"),
        pytest.param(raw_query((0x00100030, "DA", b"1-2-3")), 0xC000, id="two-dashes"),
        pytest.param(raw_query((0x0020000D, "UI", b"1.2.x")), 0xA900, id="bad-uid"),
        pytest.param(raw_query((0x00080050, "SH", b"A\xe9")), 0xA900, id="bad-utf8-in-sh"),
    ],
)
def test_malformed_identifiers_raise_with_a_failure_status(identifier: Any, status: int) -> None:
    with pytest.raises(MalformedQuery) as caught:
        parse_query(identifier)
    assert caught.value.status == status
    assert "张" not in str(caught.value)


def test_malformed_sequences() -> None:
    ds = Dataset()
    ds.ScheduledProcedureStepSequence = [Dataset(), Dataset()]
    with pytest.raises(MalformedQuery, match="more than one item"):
        parse_query(wire(ds))
    item = Dataset()
    with disable_value_validation():
        item.ScheduledProcedureStepStartTime = "2500"
    ds.ScheduledProcedureStepSequence = [item]
    with pytest.raises(MalformedQuery) as caught:
        parse_query(wire(ds, implicit=False))
    assert caught.value.status == 0xC000
    # A sequence whose bytes are not items (implicit VR: the dictionary says SQ).
    broken = raw_query((0x00400100, "SQ", b"\x01\x02\x03\x04garbage!"))
    with pytest.raises(MalformedQuery):
        parse_query(broken)


# --- the feed ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"study_instance_uid": "1.2.abc"},
        {"study_instance_uid": None},
        {"accession_number": ""},
        {"accession_number": 12},
        {"patient_name": "A\\B"},
        {"patient_id": "x" * 65},
        {"scheduled_at": "tomorrow"},
        {"expected_images": -1},
        {"expected_images": True},
        {"done": "yes"},
    ],
)
def test_feed_items_that_would_break_an_answer_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        order_from_feed(feed_item(**change))


def test_feed_item_not_an_object() -> None:
    with pytest.raises(ValueError):
        order_from_feed(["A1001"])


# --- the cache and the sync -------------------------------------------------------------------


def test_the_cache_is_replaced_whole_and_read_by_another_process(tmp_path: Path) -> None:
    writer = OrderCache(tmp_path)
    reader = OrderCache(tmp_path)  # as an SCP worker process would open it
    assert reader.orders() == ()
    writer.replace(ORDERS, etag='"v1"')
    assert [o.accession_number for o in reader.orders()] == [
        "A1003",
        "A1001",
        "A1004",
        "A1005",
        "A1002",
    ]
    assert reader.orders()[1] == ORDERS[0]
    assert writer.etag() == '"v1"'
    writer.replace(ORDERS[1:2], etag='"v2"')
    assert [o.accession_number for o in reader.orders()] == ["A1002"]
    writer.close()
    reader.close()
    reopened = OrderCache(tmp_path)
    assert reopened.etag() == '"v2"'
    assert reopened.status()["orders_cached"] == 1
    with sqlite3.connect(tmp_path / mwl.ORDERS_FILE) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reopened.close()


def test_hints_for_the_completion_module(tmp_path: Path) -> None:
    cache = OrderCache(tmp_path)
    cache.replace(ORDERS, etag="")
    hints = {h.accession_number: h for h in cache.hints()}
    assert hints["A1001"] == OrderHint(
        study_instance_uid="1.2.826.0.1.3680043.10.1.1",
        accession_number="A1001",
        expected_images=2,
        done=False,
    )
    assert hints["A1005"].done  # "exam done" clicked
    assert not hints["A1004"].done  # completed by MPPS: that is the MPPS module's to judge
    assert len(hints) == 5
    cache.close()


class FakeFeed:
    def __init__(self) -> None:
        self.items: list[Any] = [feed_item()]
        self.etag = '"1"'
        self.down = False
        self.calls: list[str] = []

    def __call__(self, etag: str) -> tuple[list[Any] | None, str]:
        self.calls.append(etag)
        if self.down:
            raise ForwardError("The hub could not be reached (ConnectError).", retryable=True)
        if etag == self.etag:
            return None, etag
        return list(self.items), self.etag


def test_sync_etag_outage_and_recovery(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = OrderCache(tmp_path)
    feed = FakeFeed()
    sync = OrderSync(cache, feed, interval=60)
    assert sync.sync_once()
    assert [o.accession_number for o in cache.orders()] == ["A1001"]
    assert sync.sync_once()  # 304: kept
    assert feed.calls == ["", '"1"']
    assert len(cache.orders()) == 1
    feed.down = True
    with caplog.at_level(logging.INFO, logger="imaging_hub.dicom_gateway.mwl"):
        for _ in range(5):
            assert not sync.sync_once()
        assert len(cache.orders()) == 1  # still answering from the last snapshot
        assert cache.status()["orders_sync_error"].startswith("The hub could not be reached")
        feed.down = False
        feed.items.append(feed_item(accession_number="A2", study_instance_uid="1.2.3.4"))
        feed.items.append(feed_item(accession_number="bad", study_instance_uid="x"))
        feed.etag = '"2"'
        assert sync.sync_once()
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1  # once per outage, not per turn
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    assert any("1 of 3 orders skipped" in r.getMessage() for r in caplog.records)
    assert [o.accession_number for o in cache.orders()] == ["A1001", "A2"]
    assert cache.status()["orders_sync_error"] == ""
    cache.close()


def test_the_sync_thread_stops_promptly(tmp_path: Path) -> None:
    cache = OrderCache(tmp_path)
    feed = FakeFeed()
    sync = OrderSync(cache, feed, interval=3600)
    sync.start()
    started = datetime.now()
    sync.stop(timeout=5)
    assert sync._thread is not None and not sync._thread.is_alive()
    assert (datetime.now() - started).total_seconds() < 2
    assert feed.calls  # the first sync ran at once
    cache.close()


def test_after_a_failure_the_sync_retries_sooner_than_its_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mwl, "RETRY_INITIAL_SECONDS", 0.1)
    cache = OrderCache(tmp_path)
    feed = FakeFeed()
    feed.down = True
    sync = OrderSync(cache, feed, interval=3600)
    sync.start()
    try:
        wait = time.monotonic() + 5
        while len(feed.calls) < 2 and time.monotonic() < wait:
            time.sleep(0.05)
        assert len(feed.calls) >= 2  # retried after 0.1 s, not after the hour
        feed.down = False
        while not cache.orders() and time.monotonic() < wait + 5:
            time.sleep(0.05)
        assert [o.accession_number for o in cache.orders()] == ["A1001"]
    finally:
        sync.stop(timeout=5)
        cache.close()


def test_a_cached_order_round_trips() -> None:
    order = ORDERS[0]
    assert isinstance(order, CachedOrder)
    assert mwl._order_from_row(order.as_json()) == order


# --- the DIMSE handler (scp.WorklistHandler) with a stand-in event ------------------------------


class FakeEvent:
    def __init__(self, identifier: Any, calling: str = "CT_ROOM1", cancelled: bool = False):
        self._identifier = identifier
        self.assoc = SimpleNamespace(requestor=SimpleNamespace(ae_title=calling))
        self.is_cancelled = cancelled

    @property
    def identifier(self) -> Any:
        if isinstance(self._identifier, Exception):
            raise self._identifier
        return self._identifier


class ListCache:
    def __init__(self, orders: Any) -> None:
        self._orders = orders

    def orders(self) -> Any:
        if isinstance(self._orders, Exception):
            raise self._orders
        return self._orders


def handle(cache: Any, event: FakeEvent) -> list[tuple[int, Dataset | None]]:
    from imaging_hub.dicom_gateway.scp import WorklistHandler

    handler = WorklistHandler(
        cache, character_sets={"CT_ROOM1": "GB18030"}, default_character_set="ISO_IR 192"
    )
    return list(handler.handle_find(event))  # type: ignore[arg-type]


def test_handler_answers_pending_per_order_in_the_callers_character_set() -> None:
    ds = Dataset()
    ds.PatientName = ""
    results = handle(ListCache(ORDERS), FakeEvent(wire(ds)))
    assert [status for status, _ in results] == [0xFF00] * 3
    assert all(a is not None and a.SpecificCharacterSet == "GB18030" for _, a in results)
    results = handle(ListCache(ORDERS), FakeEvent(wire(ds), calling="OTHER"))
    assert all(a is not None and a.SpecificCharacterSet == "ISO_IR 192" for _, a in results)


def test_handler_failures_cancel_and_an_unreadable_cache() -> None:
    ds = Dataset()
    ds.PatientName = ""
    assert handle(ListCache(ORDERS), FakeEvent(wire(ds), cancelled=True)) == [(0xFE00, None)]
    assert handle(ListCache(ORDERS), FakeEvent(ValueError("bad bytes"))) == [(0xA900, None)]
    assert handle(ListCache(ORDERS), FakeEvent(b"x")) == [(0xA900, None)]
    broken = ListCache(sqlite3.DatabaseError("file is not a database"))
    assert handle(broken, FakeEvent(wire(ds))) == [(0xA700, None)]
