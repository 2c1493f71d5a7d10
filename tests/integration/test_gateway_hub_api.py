"""Issue 3 at the hub: a gateway writes only under its own clinic's prefix, and reports its
state in heartbeats that the admin view lists with backlog per clinic and a silence alarm.

One real hub process for the module (SQLite + filesystem store); gateways speak plain HTTP here
with their clinic tokens, except the last test, which runs a real gateway process.
"""

import hashlib
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from imaging_hub.dicom.samples import __file__ as samples_init
from imaging_hub.worklist.db.models import Instance
from tests.peers.hub import GatewayFactory, HubProcess, start_hub_process
from tests.peers.net import wait_until

CT = Path(samples_init).parent / "CT_small.dcm"
SILENCE_SECONDS = 3


@pytest.fixture(scope="module")
def hub_m(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    process = start_hub_process(
        tmp_path_factory.mktemp("hub-api") / "hub",
        extra_env={"IMAGING_HUB_GATEWAY_SILENCE_ALARM_SECONDS": str(SILENCE_SECONDS)},
    )
    try:
        yield process
    finally:
        process.stop()


def instance(study: str | None = None, **changes: object) -> tuple[str, str, bytes]:
    ds = pydicom.dcmread(CT)
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return str(ds.StudyInstanceUID), str(ds.SOPInstanceUID), out.getvalue()


def put(hub: HubProcess, clinic: str, sop_uid: str, data: bytes) -> httpx.Response:
    return httpx.put(
        f"{hub.url}/api/v1/ingest/instances/{sop_uid}",
        content=data,
        headers={
            "Authorization": f"Bearer {hub.gateway_tokens[clinic]}",
            "Content-Type": "application/dicom",
            "X-Content-SHA256": hashlib.sha256(data).hexdigest(),
        },
        timeout=30,
    )


def row(hub: HubProcess, sop_uid: str) -> tuple[str, str] | None:
    with hub.sessions() as session:
        found = session.scalar(select(Instance).where(Instance.sop_instance_uid == sop_uid))
        return (found.object_key, found.sha256) if found else None


def objects(hub: HubProcess) -> dict[str, bytes]:
    root = hub.data_dir / "objects"
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.dcm")}


def test_clinic_b_can_never_write_clinic_a(hub_m: HubProcess) -> None:
    study, sop, data = instance()
    created = put(hub_m, "clinic-a", sop, data)
    assert created.status_code == 201, created.text
    before_row, before_objects = row(hub_m, sop), objects(hub_m)
    assert before_row is not None and before_row[0].startswith("clinic-a/")

    # The same instance, a changed copy of it, and a new instance in clinic-a's study.
    _, _, changed = instance(study, SOPInstanceUID=sop, PatientName="Changed^By^B")
    _, other_sop, other = instance(study)
    for sop_uid, body in ((sop, data), (sop, changed), (other_sop, other)):
        refused = put(hub_m, "clinic-b", sop_uid, body)
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
    assert row(hub_m, sop) == before_row
    assert row(hub_m, other_sop) is None
    assert objects(hub_m) == before_objects  # nothing written, nothing overwritten
    assert not any(key.startswith("clinic-b/") for key in objects(hub_m))

    # clinic-b cannot complete clinic-a's study either.
    complete = httpx.post(
        f"{hub_m.url}/api/v1/ingest/studies/{study}/complete",
        json={"sop_instance_uids": [sop]},
        headers={"Authorization": f"Bearer {hub_m.gateway_tokens['clinic-b']}"},
        timeout=30,
    )
    assert complete.status_code == 404


def test_writes_land_under_the_token_clinic_prefix(hub_m: HubProcess) -> None:
    study, sop, data = instance(InstitutionName="clinic-a")  # the data's claim is ignored
    assert put(hub_m, "clinic-b", sop, data).status_code == 201
    stored = row(hub_m, sop)
    assert stored is not None and stored[0].startswith(f"clinic-b/{study}/")
    assert not any(key.startswith(f"clinic-a/{study}") for key in objects(hub_m))


def test_ingest_needs_a_gateway_token(hub_m: HubProcess) -> None:
    _, sop, data = instance()
    digest = hashlib.sha256(data).hexdigest()
    url = f"{hub_m.url}/api/v1/ingest/instances/{sop}"
    anonymous = httpx.put(url, content=data, headers={"X-Content-SHA256": digest}, timeout=30)
    assert anonymous.status_code == 401
    user = httpx.put(
        url,
        content=data,
        headers={"X-Content-SHA256": digest, "Authorization": f"Bearer {hub_m.token('rad1')}"},
        timeout=30,
    )
    assert user.status_code in (401, 403)
    assert row(hub_m, sop) is None


def put_trailed(
    hub: HubProcess, sop_uid: str, body: bytes, *, header: str = "trailer", pieces: int = 7
) -> httpx.Response:
    """PUT with the digest at the end of the body (the gateway's streamed JPEG-LS), sent in
    uneven chunks, so that the trailer is split across them."""
    step = max(1, len(body) // pieces)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), step):
            yield body[start : start + step]

    return httpx.put(
        f"{hub.url}/api/v1/ingest/instances/{sop_uid}",
        content=chunks(),
        headers={
            "Authorization": f"Bearer {hub.gateway_tokens['clinic-a']}",
            "Content-Type": "application/dicom",
            "X-Content-SHA256": header,
        },
        timeout=30,
    )


def test_a_trailing_digest_is_checked_and_kept_out_of_the_stored_file(hub_m: HubProcess) -> None:
    _, sop, data = instance()
    digest = hashlib.sha256(data).hexdigest()
    for pieces in (1, 7, len(data) // 50):  # the 64 digits in one chunk, or over two or more
        stored = put_trailed(hub_m, sop, data + digest.encode(), pieces=pieces)
        assert stored.status_code in (200, 201), stored.text
        found = row(hub_m, sop)
        assert found is not None and found[1] == digest
        assert objects(hub_m)[found[0]] == data  # the file, without its trailer


@pytest.mark.parametrize(
    ("trailer", "status", "code"),
    [
        (hashlib.sha256(b"another file").hexdigest().encode(), 422, "checksum_mismatch"),
        (b"", 422, "invalid_dicom"),  # no trailer: the file's own last bytes are not hex
        (b"z" * 64, 422, "invalid_dicom"),
        (b"0" * 63, 422, "invalid_dicom"),  # one digit short: a file byte is taken for one
    ],
    ids=["wrong-digest", "missing", "not-hex", "short"],
)
def test_a_bad_trailing_digest_stores_nothing(
    hub_m: HubProcess, trailer: bytes, status: int, code: str
) -> None:
    _, sop, data = instance()
    before = objects(hub_m)
    refused = put_trailed(hub_m, sop, data + trailer)
    assert refused.status_code == status, refused.text
    assert refused.json()["code"] == code
    assert row(hub_m, sop) is None
    assert objects(hub_m) == before


@pytest.mark.parametrize("header", ["Trailer", "TRAILER", "sha256", "0" * 63, ""])
def test_an_unknown_digest_header_is_refused(hub_m: HubProcess, header: str) -> None:
    _, sop, data = instance()
    refused = put_trailed(
        hub_m, sop, data + hashlib.sha256(data).hexdigest().encode(), header=header
    )
    assert refused.status_code == 422, refused.text
    assert row(hub_m, sop) is None


def beat(hub: HubProcess, clinic: str, **status: object) -> httpx.Response:
    return httpx.post(
        f"{hub.url}/api/v1/gateways/heartbeat",
        json=status,
        headers={"Authorization": f"Bearer {hub.gateway_tokens[clinic]}"},
        timeout=30,
    )


def admin_view(hub: HubProcess) -> dict[str, object]:
    with hub.client("admin") as client:
        response = client.get("/api/v1/admin/gateways")
        assert response.status_code == 200, response.text
        view: dict[str, object] = response.json()
        return view


def test_admin_view_is_for_admins_only(hub_m: HubProcess) -> None:
    assert httpx.get(f"{hub_m.url}/api/v1/admin/gateways", timeout=30).status_code == 401
    for user in ("rad1", "staff-a"):
        with hub_m.client(user) as client:
            assert client.get("/api/v1/admin/gateways").status_code == 403
    gateway_token = {"Authorization": f"Bearer {hub_m.gateway_tokens['clinic-a']}"}
    answer = httpx.get(f"{hub_m.url}/api/v1/admin/gateways", headers=gateway_token, timeout=30)
    assert answer.status_code in (401, 403)


def test_heartbeat_validation(hub_m: HubProcess) -> None:
    anonymous = httpx.post(
        f"{hub_m.url}/api/v1/gateways/heartbeat", json={"version": "1"}, timeout=30
    )
    assert anonymous.status_code == 401
    bad = beat(hub_m, "clinic-b", version="1", queue_depth=-5, bytes_pending="lots")
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")


def test_heartbeats_backlog_and_silence_alarm(hub_m: HubProcess) -> None:
    answer = beat(
        hub_m,
        "clinic-b",
        version="9.9",
        queue_depth=7,
        bytes_pending=7000,
        failed=1,
        last_error="The hub answered 503: storage down.",
        uplink_bytes_per_second=125000.5,
        extra_field="ignored",
    )
    assert answer.status_code == 204, answer.text
    view = admin_view(hub_m)
    assert view["silence_alarm_seconds"] == SILENCE_SECONDS
    gateways = {g["clinic"]: g for g in view["gateways"]}  # type: ignore[attr-defined]
    b = gateways["clinic-b"]
    assert b["silent"] is False
    assert b["status"]["queue_depth"] == 7
    assert b["status"]["uplink_bytes_per_second"] == 125000.5
    assert b["status"]["last_error"].startswith("The hub answered 503")
    assert "extra_field" not in b["status"]
    clinics = {c["clinic"]: c for c in view["clinics"]}  # type: ignore[attr-defined]
    assert clinics["clinic-b"]["queue_depth"] == 7
    assert clinics["clinic-b"]["bytes_pending"] == 7000
    time.sleep(SILENCE_SECONDS + 0.5)
    later = admin_view(hub_m)
    b = {g["clinic"]: g for g in later["gateways"]}["clinic-b"]  # type: ignore[attr-defined]
    assert b["silent"] is True and b["seconds_since_seen"] > SILENCE_SECONDS
    assert later["alarm"] is True


def test_a_running_gateway_reports_itself(hub_m: HubProcess, start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(hub_m, heartbeat_seconds=0.5)

    def reported() -> dict[str, object] | None:
        view = admin_view(hub_m)
        a = {g["clinic"]: g for g in view["gateways"]}["clinic-a"]  # type: ignore[attr-defined]
        return a if not a["silent"] and a["status"].get("version") else None

    a = wait_until(reported, timeout=30, interval=0.5)
    assert isinstance(a, dict)
    status = a["status"]
    assert status["queue_depth"] == 0 and status["bytes_pending"] == 0
    assert status["ae_title"] == gateway.ae_title
    assert "uplink_bytes_per_second" in status


def test_heartbeat_keeps_the_clinic_return_and_full_disk_facts(hub_m: HubProcess) -> None:
    answer = beat(
        hub_m,
        "clinic-b",
        version="9.9",
        queue_depth=0,
        bytes_pending=0,
        spool_full=True,
        spool_free_bytes=1024,
        spool_min_free_bytes=1 << 30,
        refused_no_space=3,
        orders_cached=12,
        orders_synced_at=1_800_000_000.5,
        mpps_outbox=1,
        reports_held=4,
        reports_unconfirmed=0,
        reports_waiting_for_node=2,
        reports_critical_open=1,
        acknowledgements_waiting=1,
        staff_verifiers=3,
    )
    assert answer.status_code == 204, answer.text
    status = {g["clinic"]: g for g in admin_view(hub_m)["gateways"]}["clinic-b"]["status"]  # type: ignore[attr-defined]
    assert status["spool_full"] is True and status["refused_no_space"] == 3
    assert status["orders_cached"] == 12 and status["orders_synced_at"] == 1_800_000_000.5
    assert status["reports_held"] == 4 and status["reports_waiting_for_node"] == 2
    assert status["reports_critical_open"] == 1 and status["acknowledgements_waiting"] == 1
    # A count that is not one is refused whole; nothing of it is kept.
    for bad in ({"reports_held": {"nested": [1] * 1000}}, {"spool_full": "yes please"}):
        refused = beat(hub_m, "clinic-b", version="9.9", queue_depth=0, bytes_pending=0, **bad)
        assert refused.status_code == 422, refused.text
    status = {g["clinic"]: g for g in admin_view(hub_m)["gateways"]}["clinic-b"]["status"]  # type: ignore[attr-defined]
    assert status["reports_held"] == 4
