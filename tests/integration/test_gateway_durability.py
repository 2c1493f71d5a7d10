"""Issue 3, durability: kill -9 of the gateway while it receives and while it forwards, the hub
down for 20 s, and the S3 server unreachable. Afterwards every instance the modality got
Success for is at the hub exactly once: one row per SOP Instance UID, its object present with
the SHA-256 the row records, and no stray object under the study.

Real peers: the hub and gateway processes (tests.peers.hub), a pynetdicom modality that records
each C-STORE status (tests.peers.scu), dcmtk's storescu, and a SeaweedFS S3 server behind a proxy
that the test cuts.
"""

import hashlib
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
import urllib3
from pydicom.uid import generate_uid
from sqlalchemy import select

from imaging_hub.dicom.samples import __file__ as samples_init
from imaging_hub.worklist.db.models import Instance, Series, Study
from tests.peers.dcmtk import storescu
from tests.peers.hub import GatewayFactory, HubProcess, start_hub_process
from tests.peers.net import free_port, wait_until
from tests.peers.proxy import TcpProxy
from tests.peers.s3 import S3Server, remove_bucket
from tests.peers.scu import send_files

CT = Path(samples_init).parent / "CT_small.dcm"
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def make_study(directory: Path, count: int) -> tuple[str, list[Path]]:
    """*count* CT slices of one new study (a real 128x128 CT with fresh UIDs)."""
    directory.mkdir(parents=True, exist_ok=True)
    template = pydicom.dcmread(CT)
    study, series = generate_uid(), generate_uid()
    files = []
    for n in range(count):
        ds = template.copy()
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = n + 1
        path = directory / f"{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return study, files


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def hub_rows(hub: HubProcess, study_uid: str) -> list[tuple[str, str, str]]:
    """(SOP Instance UID, object key, sha256) of every instance the hub holds for the study."""
    with hub.sessions() as session:
        rows = session.execute(
            select(Instance.sop_instance_uid, Instance.object_key, Instance.sha256)
            .join(Series, Instance.series_id == Series.id)
            .join(Study, Series.study_id == Study.id)
            .where(Study.study_instance_uid == study_uid)
        ).all()
    return [(r[0], r[1], r[2]) for r in rows]


def study_status(hub: HubProcess, study_uid: str) -> tuple[str, int] | None:
    with hub.sessions() as session:
        study = session.scalar(select(Study).where(Study.study_instance_uid == study_uid))
        return (study.status.value, study.num_instances) if study else None


def wait_for_instances(
    hub: HubProcess, study_uid: str, wanted: set[str], timeout: float = 60
) -> list[tuple[str, str, str]]:
    def arrived() -> list[tuple[str, str, str]] | None:
        rows = hub_rows(hub, study_uid)
        return rows if wanted <= {r[0] for r in rows} else None

    rows = wait_until(arrived, timeout=timeout, interval=0.3)
    assert isinstance(rows, list)
    return rows


def assert_exactly_once(
    rows: list[tuple[str, str, str]], acknowledged: set[str], objects: dict[str, bytes]
) -> None:
    """One row per acknowledged UID, each object present with the recorded SHA-256, and no
    object under the study that no row points at."""
    uids = [r[0] for r in rows]
    assert len(uids) == len(set(uids))
    assert acknowledged <= set(uids)
    for _uid, key, sha in rows:
        assert hashlib.sha256(objects[key]).hexdigest() == sha
    assert set(objects) == {r[1] for r in rows}


def filesystem_objects(hub: HubProcess, study_uid: str) -> dict[str, bytes]:
    root = hub.data_dir / "objects"
    return {
        str(p.relative_to(root)): p.read_bytes() for p in root.glob(f"clinic-a/{study_uid}/*/*")
    }


def test_kill_9_while_receiving(
    hub: HubProcess, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    study_uid, files = make_study(tmp_path / "study", 100)
    gateway = start_gateway(hub, transcode="none")
    acknowledged: list[Path] = []
    killer: list[threading.Thread] = []

    def on_status(path: Path, status: int | None) -> None:
        if status == 0:
            acknowledged.append(path)
        if len(acknowledged) == 30 and not killer:  # kill while the modality keeps sending
            killer.append(threading.Thread(target=gateway.kill))
            killer[0].start()

    statuses = send_files(
        gateway.port, files, contexts=[(CT_CLASS, EXPLICIT_LE)], on_status=on_status, timeout=5
    )
    killer[0].join()
    assert None in statuses, "the kill should have cut the association"
    assert 30 <= len(acknowledged) < len(files)
    assert statuses[: len(acknowledged)] == [0] * len(acknowledged)

    gateway.start()  # same spool, same port
    acked = {sop_uid(p) for p in acknowledged}
    rows = wait_for_instances(hub, study_uid, acked)
    assert_exactly_once(rows, acked, filesystem_objects(hub, study_uid))
    # The modality re-sends what it got no Success for; the study completes once, whole.
    rest = [p for p in files if p not in acknowledged]
    assert set(send_files(gateway.port, rest, contexts=[(CT_CLASS, EXPLICIT_LE)])) == {0}
    wait_until(lambda: study_status(hub, study_uid) == ("unread", 100), timeout=60)
    assert_exactly_once(
        hub_rows(hub, study_uid), {sop_uid(p) for p in files}, filesystem_objects(hub, study_uid)
    )


def test_kill_9_while_forwarding(
    hub: HubProcess, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    study_uid, files = make_study(tmp_path / "study", 60)
    # A slow uplink (token bucket, 200 kB/s for ~2.4 MB) keeps forwarding busy when we kill.
    gateway = start_gateway(hub, bandwidth_limit_bytes_per_second=200_000, transcode="none")
    assert set(send_files(gateway.port, files, contexts=[(CT_CLASS, EXPLICIT_LE)])) == {0}
    wait_until(lambda: len(hub_rows(hub, study_uid)) >= 10, timeout=30, interval=0.05)
    gateway.kill()
    held = len(hub_rows(hub, study_uid))
    assert 10 <= held < len(files), "the kill should land in the middle of forwarding"

    del gateway.env["IMAGING_HUB_GATEWAY_BANDWIDTH_LIMIT_BYTES_PER_SECOND"]
    gateway.start()
    acked = {sop_uid(p) for p in files}
    wait_until(lambda: study_status(hub, study_uid) == ("unread", 60), timeout=60)
    rows = wait_for_instances(hub, study_uid, acked)
    assert_exactly_once(rows, acked, filesystem_objects(hub, study_uid))
    # Untranscoded: the hub holds exactly the bytes that were sent.
    by_uid = {r[0]: r for r in rows}
    sample = files[len(files) // 2]
    key = by_uid[sop_uid(sample)][1]
    stored = (hub.data_dir / "objects" / key).read_bytes()
    assert pydicom.dcmread(io.BytesIO(stored)).PixelData == pydicom.dcmread(sample).PixelData


def test_hub_down_for_20_seconds(
    hub: HubProcess, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    metrics_port = free_port()
    gateway = start_gateway(hub, metrics_port=metrics_port)
    hub.stop()
    down_at = time.monotonic()
    studies = [make_study(tmp_path / f"s{i}", 10) for i in range(2)]
    for _uid, files in studies:
        run = storescu(gateway.port, files, called_ae=gateway.ae_title)
        assert run.returncode == 0, run.stderr
        assert run.stderr.count("Received Store Response (Success)") == len(files)

    # While the hub is away the queue holds everything, visible in status and metrics.
    def queued() -> str | None:
        text = gateway.status()
        return text if "queue depth: 20" in text and "could not be reached" in text else None

    status = wait_until(queued, timeout=15, interval=0.5)
    assert "bytes pending:" in str(status)
    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert "imaging_hub_gateway_queue_depth 20.0" in metrics
    assert "imaging_hub_gateway_received_instances_total 20.0" in metrics
    assert "imaging_hub_gateway_upload_failures_total 0.0" not in metrics

    time.sleep(max(0.0, 20 - (time.monotonic() - down_at)))
    hub.start()  # same data directory and port
    for study_uid, files in studies:
        wait_until(lambda uid=study_uid: study_status(hub, uid) == ("unread", 10), timeout=60)
        assert_exactly_once(
            hub_rows(hub, study_uid),
            {sop_uid(p) for p in files},
            filesystem_objects(hub, study_uid),
        )
    wait_until(lambda: "queue depth: 0" in gateway.status(), timeout=15)
    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert "imaging_hub_gateway_forwarded_instances_total 20.0" in metrics


@pytest.fixture
def s3_hub(s3_server: S3Server, tmp_path: Path) -> Iterator[tuple[HubProcess, TcpProxy, str]]:
    """A hub on the S3 backend, reaching SeaweedFS through a proxy the test can cut."""
    bucket = f"hub-{generate_uid()[-12:].replace('.', '')}"
    proxy = TcpProxy(int(s3_server.endpoint.rsplit(":", 1)[1]))
    proxy.start()
    hub = start_hub_process(
        tmp_path / "hub",
        extra_env={
            "IMAGING_HUB_OBJECT_STORE": "s3",
            "IMAGING_HUB_S3_ENDPOINT": f"127.0.0.1:{proxy.port}",
            "IMAGING_HUB_S3_ACCESS_KEY": s3_server.access_key,
            "IMAGING_HUB_S3_SECRET_KEY": s3_server.secret_key,
            "IMAGING_HUB_S3_BUCKET": bucket,
        },
    )
    try:
        yield hub, proxy, bucket
    finally:
        hub.stop()
        proxy.cut()
        remove_bucket(s3_server, bucket)


def test_s3_unreachable_loses_nothing(
    s3_hub: tuple[HubProcess, TcpProxy, str],
    s3_server: S3Server,
    start_gateway: GatewayFactory,
    tmp_path: Path,
) -> None:
    hub, proxy, bucket = s3_hub
    gateway = start_gateway(hub)
    study_uid, files = make_study(tmp_path / "study", 12)
    proxy.cut()  # S3 is gone; the hub answers 503 and the gateway retries
    assert set(send_files(gateway.port, files, contexts=[(CT_CLASS, EXPLICIT_LE)])) == {0}
    wait_until(lambda: "503" in gateway.status() or None, timeout=30, interval=0.5)
    time.sleep(5)
    assert hub_rows(hub, study_uid) == []
    proxy.start()
    wait_until(lambda: study_status(hub, study_uid) == ("unread", 12), timeout=60)

    http = urllib3.PoolManager()
    try:
        client = s3_server.client(http)
        objects = {}
        for obj in client.list_objects(bucket, prefix=f"clinic-a/{study_uid}/", recursive=True):
            assert obj.object_name is not None
            response = client.get_object(bucket, obj.object_name)
            try:
                objects[obj.object_name] = response.read()
            finally:
                response.close()
                response.release_conn()
    finally:
        http.clear()
    assert_exactly_once(hub_rows(hub, study_uid), {sop_uid(p) for p in files}, objects)


def test_instances_the_hub_misses_at_completion_are_sent_again(
    hub: HubProcess, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """The hub lost instances it had acknowledged (say, its database came back from a backup):
    at completion it names them, and the gateway sends them again instead of getting stuck."""
    study_uid, files = make_study(tmp_path / "study", 6)
    gateway = start_gateway(hub, stability_seconds=4, transcode="none")
    assert set(send_files(gateway.port, files, contexts=[(CT_CLASS, EXPLICIT_LE)])) == {0}
    acked = {sop_uid(p) for p in files}
    wait_for_instances(hub, study_uid, acked, timeout=30)
    lost = sorted(acked)[:2]
    with hub.sessions() as session:  # before the study is stable, two rows disappear
        for row in session.scalars(select(Instance).where(Instance.sop_instance_uid.in_(lost))):
            session.delete(row)
        session.commit()
    wait_until(lambda: study_status(hub, study_uid) == ("unread", 6), timeout=60)
    assert_exactly_once(hub_rows(hub, study_uid), acked, filesystem_objects(hub, study_uid))
    log = gateway.log_path.read_text()
    assert "hub misses 2 instances, 2 queued again" in log
