"""Modality Worklist C-FIND at the clinic gateway, against real peers.

The hub (``imaging-hub hub serve``) holds the clinic's orders, registered through its API by
clinic staff; the gateway (``imaging-hub gateway serve``) syncs them from the hub's order feed
into ``orders.sqlite`` and answers C-FIND from there. The modalities are dcmtk's ``findscu -W``
and pynetdicom; dcmtk's ``wlmscpfs``, answering the same item from a worklist file the test
writes with pydicom, is the oracle for the answers' bytes.
"""

import json
import os
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, dsutils
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from imaging_hub.dicom.scu import association
from imaging_hub.dicom_gateway.hub_client import HubClient
from imaging_hub.dicom_gateway.mwl import OrderCache
from imaging_hub.errors import ForwardError
from tests.peers.dcmtk import findscu, wlmscpfs
from tests.peers.hub import CLI, GatewayProcess, HubProcess, start_hub_process
from tests.peers.net import free_port, wait_until

ZONE = "Asia/Shanghai"  # the clinic's (and the gateway's) time zone
CALLED = "CLINIC_A"
GB_AE = "GBMOD"  # configured for GB18030 answers; every other calling AE gets UTF-8
CODECS = {"ISO_IR 192": "utf-8", "GB18030": "gb18030"}
PENDING, SUCCESS = 0xFF00, 0x0000


@dataclass(frozen=True)
class Scheduled:
    patient_id: str
    name: str  # as the clinic typed it
    pinyin: str
    station: str
    when: datetime  # local (ZONE)
    extra: dict[str, Any]


def _today() -> datetime:
    now = datetime.now(ZoneInfo(ZONE))
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


DAY = _today()
ORDERS = [
    Scheduled(
        "MWL-1",
        "张^三",
        "Zhang^San",
        "DR_ROOM1",
        DAY + timedelta(hours=9, minutes=30),
        {
            "exam_type": "DX_CHEST_PA",
            "patient_sex": "M",
            "patient_birth_date": "19600203",
            "reason_for_procedure": "咳嗽两周",
            "priority": "urgent",
            "referring_physician_name": "Li^Si=李^四",
            "requested_procedure_id": "RP1",
        },
    ),
    Scheduled(
        "MWL-2",
        "王^五",
        "Wang^Wu",
        "CT_ROOM1",
        DAY + timedelta(days=1, hours=14),
        {"modality": "CT", "requested_procedure_description": "头颅平扫"},
    ),
    Scheduled(
        "MWL-3",
        "赵^六",
        "Zhao^Liu",
        "",
        DAY - timedelta(days=1) + timedelta(hours=8),
        {"modality": "US", "patient_sex": "F"},
    ),
]


@dataclass
class Site:
    hub: HubProcess
    gateway: GatewayProcess
    accession: dict[str, str]  # patient ID -> accession number
    feed: list[dict[str, Any]]  # the hub's feed items of the test's orders


def _gateway_env(hub: HubProcess, spool: Path, port: int, **settings: str) -> dict[str, str]:
    env = dict(
        os.environ,
        TZ=ZONE,
        IMAGING_HUB_GATEWAY_CLINIC="clinic-a",
        IMAGING_HUB_GATEWAY_AE_TITLE=CALLED,
        IMAGING_HUB_GATEWAY_HOST="127.0.0.1",
        IMAGING_HUB_GATEWAY_DICOM_PORT=str(port),
        IMAGING_HUB_GATEWAY_SPOOL_DIR=str(spool),
        IMAGING_HUB_GATEWAY_HUB_URL=hub.url,
        IMAGING_HUB_GATEWAY_HUB_TOKEN=hub.gateway_tokens["clinic-a"],
        IMAGING_HUB_GATEWAY_FORWARD="false",
        IMAGING_HUB_GATEWAY_TRANSCODE_PROCESSES="0",
        IMAGING_HUB_GATEWAY_SCP_WORKERS="1",
        IMAGING_HUB_GATEWAY_ORDER_SYNC_SECONDS="0.3",
        IMAGING_HUB_GATEWAY_MWL_CHARACTER_SETS=f'{{"{GB_AE}": "GB18030"}}',
    )
    env.update({f"IMAGING_HUB_GATEWAY_{k.upper()}": v for k, v in settings.items()})
    return env


def start_gateway(hub: HubProcess, root: Path, **settings: str) -> GatewayProcess:
    port = free_port()
    spool = root / "spool"
    root.mkdir(parents=True, exist_ok=True)
    gateway = GatewayProcess(
        clinic="clinic-a",
        ae_title=CALLED,
        port=port,
        spool_dir=spool,
        log_path=root / "gateway.log",
        env=_gateway_env(hub, spool, port, **settings),
    )
    gateway.start()
    return gateway


def cached(gateway: GatewayProcess) -> set[str]:
    """Accession numbers in the gateway's order cache (read from the file, as a worker does)."""
    cache = OrderCache(gateway.spool_dir)
    try:
        return {o.accession_number for o in cache.orders()}
    finally:
        cache.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("mwl")
    hub = start_hub_process(root / "hub")
    gateway: GatewayProcess | None = None
    try:
        accession: dict[str, str] = {}
        with hub.client("staff-a") as staff:
            for order in ORDERS:
                body = {
                    "patient_id": order.patient_id,
                    "patient_name": order.name,
                    "patient_name_pinyin": order.pinyin,
                    "scheduled_station_ae_title": order.station,
                    "scheduled_at": order.when.isoformat(),
                    "patient_sex": "M",
                    "patient_birth_date": "19700101",
                    "reason_for_procedure": "复查",
                    **order.extra,
                }
                response = staff.post("/api/v1/orders", json=body)
                assert response.status_code == 201, response.text
                accession[order.patient_id] = response.json()["accession_number"]
        with httpx.Client(
            base_url=hub.url,
            headers={"Authorization": f"Bearer {hub.gateway_tokens['clinic-a']}"},
            timeout=30,
        ) as as_gateway:
            feed = as_gateway.get("/api/v1/gateway/orders").json()["orders"]
        mine = [item for item in feed if item["patient_id"].startswith("MWL-")]
        assert len(mine) == len(ORDERS)
        gateway = start_gateway(hub, root / "gateway")
        wait_until(lambda: set(accession.values()) <= cached(gateway), timeout=30)
        yield Site(hub=hub, gateway=gateway, accession=accession, feed=mine)
    finally:
        if gateway is not None:
            gateway.stop()
        hub.stop()
    log = gateway.log_path.read_text() if gateway is not None else ""
    for order in ORDERS:  # never a patient name in the gateway's log
        assert order.name not in log and order.pinyin not in log


# --- the modality: pynetdicom -------------------------------------------------------------------


def c_find(
    port: int, *queries: Dataset, calling: str = "PYMOD"
) -> list[list[tuple[int, Dataset | None]]]:
    """Each query's answers (status, identifier) on one association."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    ae.add_requested_context(ModalityWorklistInformationFind, ImplicitVRLittleEndian)
    results: list[list[tuple[int, Dataset | None]]] = []
    with association(ae, "127.0.0.1", port, called_ae=CALLED, timeout=15) as assoc:
        assert assoc.is_established
        for query in queries:
            answers = []
            for status, identifier in assoc.send_c_find(query, ModalityWorklistInformationFind):
                assert status is not None and "Status" in status, "no answer from the gateway"
                answers.append((int(status.Status), identifier))
            results.append(answers)
    return results


def mwl_query(sps: dict[str, str] | None = None, **top: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = ""
    ds.PatientID = "MWL-*"
    ds.AccessionNumber = ""
    for keyword, value in top.items():
        setattr(ds, keyword, value)
    item = Dataset()
    item.ScheduledStationAETitle = ""
    item.ScheduledProcedureStepStartDate = ""
    item.ScheduledProcedureStepStartTime = ""
    item.Modality = ""
    for keyword, value in (sps or {}).items():
        setattr(item, keyword, value)
    ds.ScheduledProcedureStepSequence = [item]
    return ds


def patients(answers: list[tuple[int, Dataset | None]]) -> list[str]:
    """Patient IDs of the pending answers; the last answer is Success."""
    assert answers and answers[-1] == (SUCCESS, None), [hex(s) for s, _ in answers]
    assert all(status == PENDING for status, _ in answers[:-1])
    return [str(ds.PatientID) for _, ds in answers[:-1] if ds is not None]


def day(offset: int) -> str:
    return (DAY + timedelta(days=offset)).strftime("%Y%m%d")


# --- findscu against the gateway and against wlmscpfs -------------------------------------------


def worklist_item(item: dict[str, Any], charset: str) -> Dataset:
    """The order as a worklist file item, from the hub's feed (the oracle's own mapping)."""
    start = datetime.fromisoformat(item["scheduled_at"]).astimezone(ZoneInfo(ZONE))
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.PatientName = item["patient_name"]
    ds.PatientID = item["patient_id"]
    ds.PatientBirthDate = item["patient_birth_date"]
    ds.PatientSex = item["patient_sex"]
    ds.AccessionNumber = item["accession_number"]
    ds.StudyInstanceUID = item["study_instance_uid"]
    ds.RequestedProcedureID = item["requested_procedure_id"]
    ds.RequestedProcedureDescription = item["requested_procedure_description"]
    ds.ReasonForTheRequestedProcedure = item["reason_for_procedure"]
    ds.RequestedProcedurePriority = {"stat": "STAT", "urgent": "HIGH"}.get(
        item["priority"], "ROUTINE"
    )
    ds.ReferringPhysicianName = item["referring_physician_name"]
    sps = Dataset()
    sps.ScheduledStationAETitle = item["scheduled_station_ae_title"]
    sps.ScheduledProcedureStepStartDate = start.strftime("%Y%m%d")
    sps.ScheduledProcedureStepStartTime = start.strftime("%H%M%S")
    sps.Modality = item["modality"]
    sps.ScheduledPerformingPhysicianName = ""
    sps.ScheduledProcedureStepDescription = item["requested_procedure_description"]
    sps.ScheduledProcedureStepID = item["accession_number"]
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def write_part10(ds: Dataset, path: Path) -> Path:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ModalityWorklistInformationFind
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


QUERY_KEYS = [
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyInstanceUID",
    "RequestedProcedureID",
    "RequestedProcedureDescription",
    "ReasonForTheRequestedProcedure",
    "RequestedProcedurePriority",
    "ReferringPhysicianName",
]
SPS_KEYS = [
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "Modality",
    "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepID",
]


def findscu_query(charset: str, name: str, path: Path) -> Path:
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    for keyword in QUERY_KEYS:
        setattr(ds, keyword, "")
    ds.PatientName = name
    ds.PatientID = "MWL-1"
    sps = Dataset()
    for keyword in SPS_KEYS:
        setattr(sps, keyword, "")
    sps.ScheduledProcedureStepStartDate = f"{day(-1)}-{day(1)}"
    sps.Modality = "DX"
    ds.ScheduledProcedureStepSequence = [sps]
    return write_part10(ds, path)


def wire_elements(ds: Dataset) -> dict[str, Any]:
    """Each element's bytes as received (items: their values), by keyword."""
    out: dict[str, Any] = {}
    for tag in ds.keys():  # noqa: SIM118
        elem = ds.get_item(tag)
        keyword = pydicom.datadict.keyword_for_tag(tag)
        if isinstance(elem, RawDataElement) and elem.VR != "SQ":
            out[keyword] = bytes(elem.value or b"")
        elif ds[tag].VR == "SQ":
            out[keyword] = [
                {e.keyword: str(e.value if e.value is not None else "") for e in item}
                for item in ds[tag].value
            ]
        else:
            out[keyword] = ds[tag].value
    return out


def answers_of(run_dir: Path) -> list[Dataset]:
    files = sorted(run_dir.glob("rsp*.dcm"))
    return [pydicom.dcmread(f) for f in files]


@pytest.mark.parametrize(
    ("calling", "charset"), [("UTF8MOD", "ISO_IR 192"), (GB_AE, "GB18030")], ids=["utf8", "gb"]
)
def test_findscu_gets_the_order_byte_for_byte_as_wlmscpfs_answers_it(
    site: Site, tmp_path: Path, calling: str, charset: str
) -> None:
    codec = CODECS[charset]
    (item,) = [i for i in site.feed if i["patient_id"] == "MWL-1"]
    assert item["patient_name"] == "Zhang^San=张^三"
    query = findscu_query(charset, "张*", tmp_path / "query.dcm")

    gateway_dir = tmp_path / "from-gateway"
    run = findscu(site.gateway.port, query, called_ae=CALLED, calling_ae=calling, out=gateway_dir)
    assert run.returncode == 0, run.stderr
    (from_gateway,) = answers_of(gateway_dir)

    # dcmtk's wlmscpfs answers the same order from a worklist file in the same character set.
    # Its PN matching is on the whole value, so it gets "Zhang*" (the gateway matches either
    # component group, and got "张*").
    worklists = tmp_path / "worklists"
    write_part10(worklist_item(item, charset), worklists / "WLM" / "order.wl")
    (worklists / "WLM" / "lockfile").touch()
    oracle_query = findscu_query(charset, "Zhang*", tmp_path / "oracle-query.dcm")
    oracle_dir = tmp_path / "from-wlmscpfs"
    with wlmscpfs(worklists) as port:
        run = findscu(port, oracle_query, called_ae="WLM", calling_ae=calling, out=oracle_dir)
    assert run.returncode == 0, run.stderr
    (from_oracle,) = answers_of(oracle_dir)

    got, expected = wire_elements(from_gateway), wire_elements(from_oracle)
    assert got.keys() == expected.keys() == {"SpecificCharacterSet", *QUERY_KEYS, SPS}
    for keyword in expected:
        assert got[keyword] == expected[keyword], keyword
    assert from_gateway.SpecificCharacterSet == charset
    name = "Zhang^San=张^三".encode(codec)
    assert got["PatientName"] in (name, name + b" ")  # the bytes on the wire, padded to even
    assert got["ReasonForTheRequestedProcedure"].rstrip() == "咳嗽两周".encode(codec)
    assert got["ReferringPhysicianName"].rstrip() == "Li^Si=李^四".encode(codec)
    (sps,) = got[SPS]
    assert sps["ScheduledStationAETitle"] == "DR_ROOM1"
    assert sps["ScheduledProcedureStepStartDate"] == day(0)
    assert sps["ScheduledProcedureStepStartTime"] == "093000"
    assert sps["Modality"] == "DX"


SPS = "ScheduledProcedureStepSequence"


# --- matching over the wire ---------------------------------------------------------------------


def test_matching_keys_over_one_association(site: Site) -> None:
    acc = site.accession
    queries = {
        "all": mwl_query(),
        "today": mwl_query({"ScheduledProcedureStepStartDate": day(0)}),
        "range": mwl_query({"ScheduledProcedureStepStartDate": f"{day(-1)}-{day(0)}"}),
        "until": mwl_query({"ScheduledProcedureStepStartDate": f"-{day(0)}"}),
        "from": mwl_query({"ScheduledProcedureStepStartDate": f"{day(0)}-"}),
        "morning": mwl_query(
            {
                "ScheduledProcedureStepStartDate": day(0),
                "ScheduledProcedureStepStartTime": "0900-1000",
            }
        ),
        "ct": mwl_query({"Modality": "CT"}),
        "dr-room": mwl_query({"ScheduledStationAETitle": "DR_ROOM1"}),
        "ct-room": mwl_query({"ScheduledStationAETitle": "CT_ROOM1"}),
        "hanzi": mwl_query(PatientName="王*"),
        "pinyin": mwl_query(PatientName="zhao*"),
        "one-char": mwl_query(PatientName="?^三"),
        "patient": mwl_query(PatientID="MWL-2"),
        "accession": mwl_query(AccessionNumber=acc["MWL-3"]),
        "nobody": mwl_query(PatientID="MWL-9"),
    }
    results = dict(zip(queries, c_find(site.gateway.port, *queries.values()), strict=True))
    found = {name: patients(answers) for name, answers in results.items()}
    assert found == {
        "all": ["MWL-3", "MWL-1", "MWL-2"],
        "today": ["MWL-1"],
        "range": ["MWL-3", "MWL-1"],
        "until": ["MWL-3", "MWL-1"],
        "from": ["MWL-1", "MWL-2"],
        "morning": ["MWL-1"],
        "ct": ["MWL-2"],
        "dr-room": ["MWL-3", "MWL-1"],  # MWL-3 has no station: anyone's
        "ct-room": ["MWL-3", "MWL-2"],
        "hanzi": ["MWL-2"],
        "pinyin": ["MWL-3"],
        "one-char": ["MWL-1"],
        "patient": ["MWL-2"],
        "accession": ["MWL-3"],
        "nobody": [],
    }
    # Only the requested keys come back (and the character set).
    (_, answer), _ = results["patient"]
    assert answer is not None
    assert {e.keyword for e in answer} == {
        "SpecificCharacterSet",
        "PatientName",
        "PatientID",
        "AccessionNumber",
        SPS,
    }
    assert answer.PatientName == "Wang^Wu=王^五"
    assert answer.AccessionNumber == acc["MWL-2"]
    sps = answer[SPS][0]
    assert sps.ScheduledStationAETitle == "CT_ROOM1"
    assert sps.ScheduledProcedureStepStartDate == day(1)
    assert sps.ScheduledProcedureStepStartTime == "140000"


# --- malformed identifiers ----------------------------------------------------------------------


def element(tag: int, value: bytes) -> bytes:
    """One element in Implicit VR Little Endian, padded to even length."""
    if len(value) % 2:
        value += b" "
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


UTF8 = element(0x00080005, b"ISO_IR 192")
MALFORMED = {
    # Not DICOM: an element longer than the message.
    "not-a-dataset": (b"\x10\x00\x10\x00\xff\xff\xff\x7fnot a dataset at all", 0xA900),
    "undecodable-name": (UTF8 + element(0x00100010, b"\xff\xfe*"), 0xA900),
    "unknown-character-set": (element(0x00080005, b"ISO_IR 999"), 0xA900),
    "sequence-of-garbage": (element(0x00400100, b"\x01\x02\x03\x04garbage!"), 0xA900),
    "not-a-date": (element(0x00100030, b"2026-12-06"), 0xC000),
    "backwards-range": (element(0x00100030, b"20261207-20261201"), 0xC000),
    "range-without-bounds": (element(0x00100030, b"-"), 0xC000),
    "bad-time": (element(0x00400100, b""), 0),  # replaced below: a time in the item
}
ITEM = element(0x00400003, b"2599")  # Scheduled Procedure Step Start Time 25:99
MALFORMED["bad-time"] = (
    element(0x00400100, struct.pack("<HHI", 0xFFFE, 0xE000, len(ITEM)) + ITEM),
    0xC000,
)


def raw_identifiers(monkeypatch: pytest.MonkeyPatch, identifiers: list[bytes]) -> None:
    """The next C-FIND requests carry *identifiers* as they are (then encoding resumes)."""
    pending = list(identifiers)

    def encode(ds: Dataset, *args: Any, **kwargs: Any) -> bytes | None:
        return pending.pop(0) if pending else dsutils.encode(ds, *args, **kwargs)

    monkeypatch.setattr("pynetdicom.association.encode", encode)


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_query_fails_and_the_next_query_answers(
    site: Site, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    identifier, status = MALFORMED[case]
    raw_identifiers(monkeypatch, [identifier])
    bad, good = c_find(site.gateway.port, Dataset(), mwl_query(PatientID="MWL-1"))
    assert [s for s, _ in bad] == [status]
    assert patients(good) == ["MWL-1"]  # the same association goes on
    (again,) = c_find(site.gateway.port, mwl_query(PatientID="MWL-2"))  # and a new one
    assert patients(again) == ["MWL-2"]
    assert "MWL C-FIND from PYMOD refused" in site.gateway.log_path.read_text()


# --- the hub unreachable; several SCP processes ---------------------------------------------


def test_the_gateway_answers_from_its_cache_while_the_hub_is_down(site: Site) -> None:
    log = site.gateway.log_path
    before = log.read_text().count("order feed unavailable")
    site.hub.kill()  # as a cut WAN link or a crashed hub: no goodbye
    try:
        # Several sync turns (0.3 s each) fail; one log line for the outage.
        wait_until(lambda: log.read_text().count("order feed unavailable") > before, timeout=15)
        time.sleep(1.0)
        (answers,) = c_find(site.gateway.port, mwl_query(), calling=GB_AE)
        assert patients(answers) == ["MWL-3", "MWL-1", "MWL-2"]
        first = answers[1][1]
        assert first is not None and first.SpecificCharacterSet == "GB18030"
        assert first.PatientName == "Zhang^San=张^三"
        assert log.read_text().count("order feed unavailable") == before + 1
    finally:
        site.hub.start()
    wait_until(lambda: "order feed reachable again" in log.read_text(), timeout=15)


def test_two_scp_processes_answer_from_the_same_cache(site: Site, tmp_path: Path) -> None:
    gateway = start_gateway(site.hub, tmp_path / "two-workers", SCP_WORKERS="2")
    try:
        wait_until(lambda: set(site.accession.values()) <= cached(gateway), timeout=30)
        # Two associations at once: each worker may take one.
        results = [c_find(gateway.port, mwl_query(PatientID="MWL-1")) for _ in range(4)]
        for (answers,) in results:
            assert patients(answers) == ["MWL-1"]
        run_dir = tmp_path / "findscu"
        query = findscu_query("ISO_IR 192", "张*", tmp_path / "q.dcm")
        run = findscu(gateway.port, query, called_ae=CALLED, calling_ae="UTF8MOD", out=run_dir)
        assert run.returncode == 0, run.stderr
        (answer,) = answers_of(run_dir)
        assert answer.PatientName == "Zhang^San=张^三"
    finally:
        gateway.stop()


def test_gateway_status_reports_the_order_cache(site: Site) -> None:
    out = subprocess.run(
        [*CLI, "gateway", "status", "--json"],
        env=site.gateway.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["orders_cached"] >= len(ORDERS)
    assert status["orders_synced_at"] > time.time() - 60


def test_the_hub_client_fetches_the_feed_with_its_etag(site: Site) -> None:
    client = HubClient(site.hub.url, site.hub.gateway_tokens["clinic-a"])
    try:
        items, etag = client.orders("")
        assert items is not None and etag
        assert {i["accession_number"] for i in items} >= set(site.accession.values())
        assert client.orders(etag) == (None, etag)  # 304: unchanged
    finally:
        client.close()
    wrong = HubClient(site.hub.url, "not-a-token")
    try:
        with pytest.raises(ForwardError) as caught:
            wrong.orders("")
        assert "answered 401" in str(caught.value)
        assert caught.value.retryable  # a token being rotated: the next turn tries again
    finally:
        wrong.close()
