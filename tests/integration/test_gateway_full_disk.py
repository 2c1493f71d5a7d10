"""The clinic gateway on a full disk, on a small file system each test makes (a size-limited
tmpfs mounted over the spool directory; the tests run as root).

- A real gateway (its spool on 24 MiB, floor 8 MiB) and a real hub: a modality sends 1 MiB
  instances on one open association until the floor is reached; the next C-STOREs answer Out of
  Resources (0xA700), the log says why once, the heartbeat (the hub's gateways view), the
  Prometheus metrics and ``gateway status`` show the alarm, MPPS still works, and the spool is
  intact (every index row has its file with its SHA-256, no file without a row, nothing in
  ``tmp/``). Once the association ends, the hub takes the study and the purge (retention 0)
  frees the space: the gateway accepts again without a restart and the alarm clears.
- In process, on the pynetdicom path and the lean path: a write that runs out of space (ENOSPC)
  answers 0xA700 and leaves no partial file, no row; an index that cannot grow (SQLITE_FULL)
  the same; the floor refuses before anything is written; each time the next instance, once
  there is room, is stored.
"""

import contextlib
import errno
import hashlib
import io
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from imaging_hub.dicom.dimse import OUT_OF_RESOURCES, SUCCESS
from imaging_hub.dicom.scu import reactor_parked
from imaging_hub.dicom_gateway import scp
from imaging_hub.dicom_gateway.reports import ReportStore
from imaging_hub.dicom_gateway.spool import SpaceGuard, Spool
from tests.peers.hub import GatewayFactory, HubProcess
from tests.peers.mpps import (
    CT,
    CT_IMAGE,
    Instance,
    create_attributes,
    final_attributes,
    modality,
)
from tests.peers.net import free_port, wait_until

MIB = 1024 * 1024


@contextlib.contextmanager
def small_file_system(path: Path, size_mib: int) -> Iterator[Path]:
    """A tmpfs of *size_mib* MiB mounted on *path* (created), unmounted at the end."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        error = mounted.stderr.strip() if mounted.returncode else ""
    except OSError as exc:  # no mount(8)
        error = str(exc)
    if error:
        pytest.fail(
            "The full-disk tests need a small file system of their own and could not mount one "
            f"(`mount -t tmpfs` on {path}: {error}). Run them as root (or with CAP_SYS_ADMIN)."
        )
    try:
        yield path
    finally:
        for _ in range(50):  # a process that just ended may still hold a file for a moment
            done = subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
            if done.returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def ct(study_uid: str, pixel_bytes: int, series_uid: str | None = None) -> pydicom.Dataset:
    """A CT instance of *study_uid* carrying *pixel_bytes* of pixel data."""
    ds = pydicom.dcmread(CT)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = (
        100,
        pixel_bytes // 200,
        16,
        16,
        15,
    )
    ds.PixelData = os.urandom(100 * (pixel_bytes // 200) * 2)
    return ds


def as_instance(ds: pydicom.Dataset) -> Instance:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return Instance(CT_IMAGE, str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), buf.getvalue())


def spool_contents(spool: Path) -> dict[str, str]:
    """SOP Instance UID -> state of every index row, after checking the spool is intact: each
    row's file exists with its size and SHA-256, no instance file lacks a row, ``tmp/`` holds
    no partial file."""
    db = sqlite3.connect(spool / "index.sqlite3", timeout=30)
    try:
        rows = db.execute(
            "SELECT sop_instance_uid, study_instance_uid, path, size, sha256, state FROM instances"
        ).fetchall()
    finally:
        db.close()
    indexed: dict[str, str] = {}
    paths = set()
    for sop, study, rel, size, sha256, state in rows:
        path = spool / rel
        assert path == spool / "objects" / study / f"{sop}.dcm"
        data = path.read_bytes()  # FileNotFoundError: a row without its file
        assert len(data) == size, f"{sop}: {len(data)} bytes on disk, {size} indexed"
        assert hashlib.sha256(data).hexdigest() == sha256, (
            f"{sop}: the file is not what was indexed"
        )
        assert pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID == sop
        indexed[sop] = state
        paths.add(path)
    on_disk = set((spool / "objects").rglob("*.dcm"))
    assert on_disk == paths, f"files without a row: {sorted(map(str, on_disk - paths))}"
    assert list((spool / "tmp").iterdir()) == [], "a partial file stayed in tmp/"
    return indexed


def metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(f"imaging_hub_gateway_{name} "):
            return float(line.split()[-1])
    raise AssertionError(f"metric {name} not served:\n{text}")


def gateway_heartbeat(hub: HubProcess) -> dict[str, Any]:
    with hub.client("admin") as admin:
        view = admin.get("/api/v1/admin/gateways").json()
    for gateway in view["gateways"]:
        if gateway["clinic"] == "clinic-a" and not gateway["revoked"]:
            return dict(gateway["status"])
    raise AssertionError(f"no clinic-a gateway in {view}")


FLOOR = 8 * MIB


def test_a_full_spool_refuses_with_0xa700_stays_intact_and_accepts_again_once_space_frees(
    hub: HubProcess, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    spool = tmp_path / "gateway-clinic-a-0" / "spool"  # where start_gateway puts the first one
    metrics_port = free_port()
    with small_file_system(spool, 24):
        gateway = start_gateway(
            hub,
            spool_min_free_bytes=FLOOR,
            retention_hours=0,
            metrics_port=metrics_port,
            heartbeat_seconds=0.5,
            scp_workers=1,
            transcode="none",
        )
        assert gateway.spool_dir == spool
        try:
            study = generate_uid()
            series = generate_uid()
            accepted: list[Instance] = []
            refusals: list[int] = []
            with modality(gateway.port, called_ae=gateway.ae_title) as ct_room:
                # Fill: 1 MiB instances until the first refusal (24 MiB hold ~16 above the floor).
                for _ in range(40):
                    instance = as_instance(ct(study, MIB, series))
                    status = ct_room.store(instance)
                    if status != SUCCESS:
                        refusals.append(status)
                        break
                    accepted.append(instance)
                assert refusals == [OUT_OF_RESOURCES], "the floor was never reached"
                assert 8 <= len(accepted) <= 16, len(accepted)
                assert free_bytes(spool) >= FLOOR // 2  # the floor's reserve was kept
                # Two more: refused as well, logged once for the episode.
                for _ in range(2):
                    assert ct_room.store(as_instance(ct(study, MIB, series))) == OUT_OF_RESOURCES
                # Small records still have the floor's room: an MPPS step is recorded.
                status, _ = ct_room.create(generate_uid(), create_attributes(study))
                assert status == SUCCESS

                log = gateway.log_path.read_text()
                assert log.count("SPOOL DISK FULL") == 1, log
                assert "refusing new instances with Out of Resources (0xA700)" in log
                # The spool is intact: exactly the acknowledged instances, each file whole.
                assert set(spool_contents(spool)) == {i.sop_instance_uid for i in accepted}

                # The alarm: metrics, the heartbeat the hub keeps, `gateway status`.
                assert metric(metrics_port, "spool_full") == 1.0
                assert metric(metrics_port, "spool_min_free_bytes") == FLOOR
                assert metric(metrics_port, "refused_no_space_instances_total") == 3.0
                beat = wait_until(
                    lambda: (b := gateway_heartbeat(hub)).get("refused_no_space") == 3 and b,
                    timeout=20,
                )
                assert isinstance(beat, dict)
                assert beat["spool_full"] is True
                assert beat["spool_min_free_bytes"] == FLOOR
                assert beat["spool_free_bytes"] < FLOOR
                status_text = gateway.status()
                assert "SPOOL DISK FULL" in status_text, status_text
                assert "new instances are refused" in status_text
            # The association ended: the study completes, the hub confirms it, the purge
            # (retention 0) frees the space; the gateway accepts again, no restart.
            wait_until(lambda: free_bytes(spool) > FLOOR + 4 * MIB, timeout=60)
            with modality(gateway.port, called_ae=gateway.ae_title) as ct_room:
                late = as_instance(ct(generate_uid(), MIB))
                assert ct_room.store(late) == SUCCESS
            log = gateway.log_path.read_text()
            assert "accepting instances again after 3 refusal(s)" in log, log
            assert log.count("SPOOL DISK FULL") == 1
            with hub.client("rad1") as client:
                detail = client.get(f"/api/v1/studies/{study}").json()
            assert detail["study"]["num_instances"] == len(accepted)
            wait_until(lambda: metric(metrics_port, "spool_full") == 0.0, timeout=10)
            wait_until(lambda: gateway_heartbeat(hub).get("spool_full") is False, timeout=20)
            spool_contents(spool)  # intact after the purge too
        finally:
            gateway.stop()


# --- in process: the write itself runs out of space ------------------------------------------


@contextlib.contextmanager
def scp_on(spool: Spool, *, use_lean: bool) -> Iterator[int]:
    handler = scp.StoreHandler(spool, max_instance_bytes=64 * MIB)
    ae = scp.make_ae("FULLDISK")
    port = free_port()
    server = scp.start_scp(ae, handler, "127.0.0.1", port, use_lean=use_lean)
    try:
        yield port
    finally:
        server.shutdown()


def send(port: int, ds: pydicom.Dataset) -> int:
    ae = AE(ae_title="CT_ROOM1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="FULLDISK")
    assert assoc.is_established
    try:
        with reactor_parked(assoc):
            answer = assoc.send_c_store(ds)
        return int(answer.Status) if answer and "Status" in answer else -1
    finally:
        assoc.release()


@pytest.mark.parametrize("use_lean", [True, False], ids=["lean", "pynetdicom"])
def test_a_write_that_runs_out_of_space_answers_0xa700_and_leaves_no_partial_file(
    tmp_path: Path, use_lean: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with small_file_system(tmp_path / "spool", 6) as root:
        spool = Spool(root)  # no floor: the write itself meets ENOSPC
        try:
            with scp_on(spool, use_lean=use_lean) as port:
                before = free_bytes(root)
                assert send(port, ct(generate_uid(), 8 * MIB)) == OUT_OF_RESOURCES
                assert spool_contents(root) == {}  # no partial file, no row
                assert free_bytes(root) >= before - 64 * 1024  # the partial file's space is back
                assert "ran out of space while storing" in caplog.text
                assert spool.counter("refused_no_space") == 1
                # The spool goes on: an instance that fits is stored, the episode is over.
                fits = ct(generate_uid(), MIB)
                assert send(port, fits) == SUCCESS
                assert spool_contents(root) == {str(fits.SOPInstanceUID): "pending"}
                assert "accepting instances again after 1 refusal(s)" in caplog.text
        finally:
            spool.close()


def test_an_index_that_cannot_grow_answers_0xa700_and_keeps_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_file_system(tmp_path / "spool", 6) as root:
        spool = Spool(root)
        try:
            with scp_on(spool, use_lean=True) as port, modality(port, called_ae="FULLDISK") as room:
                study, series = generate_uid(), generate_uid()
                first = as_instance(ct(study, 256 * 1024, series))
                assert room.store(first) == SUCCESS  # the association's study is recorded
                second = as_instance(ct(study, MIB, series))
                # Fill the file system to the second instance's file (and a little): its write
                # fits, the index's write-ahead log cannot grow to record it.
                filler = root / "filler"
                with filler.open("wb") as out:
                    out.write(
                        bytes(free_bytes(root) - -(-(len(second.data) + 1024) // 4096) * 4096)
                    )
                assert room.store(second) == OUT_OF_RESOURCES
                assert spool_contents(root) == {first.sop_instance_uid: "pending"}
                assert "SPOOL DISK FULL" in caplog.text
                assert "database or disk is full" in caplog.text  # SQLite's SQLITE_FULL
                filler.unlink()
                assert room.store(second) == SUCCESS  # the index is not stuck mid-transaction
                assert set(spool_contents(root)) == {
                    first.sop_instance_uid,
                    second.sop_instance_uid,
                }
        finally:
            spool.close()


def test_the_floor_refuses_before_anything_is_written_on_the_pynetdicom_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_file_system(tmp_path / "spool", 8) as root:
        spool = Spool(root, min_free_bytes=4 * MIB)
        try:
            with scp_on(spool, use_lean=False) as port:
                assert send(port, ct(generate_uid(), MIB)) == SUCCESS
                filler = root / "filler"
                filler.write_bytes(bytes(free_bytes(root) - 4 * MIB + 64 * 1024))
                free = free_bytes(root)
                for _ in range(3):
                    assert send(port, ct(generate_uid(), 64 * 1024)) == OUT_OF_RESOURCES
                # Nothing was written (the refusal counters' few index pages aside).
                assert free_bytes(root) >= free - 64 * 1024
                assert len(spool_contents(root)) == 1
                assert caplog.text.count("SPOOL DISK FULL") == 1
                assert spool.space.status()["spool_full"] is True
                filler.unlink()  # space frees: the next instance is accepted, no restart
                assert send(port, ct(generate_uid(), 64 * 1024)) == SUCCESS
                assert spool.space.status()["spool_full"] is False
                assert len(spool_contents(root)) == 2
        finally:
            spool.close()


def fill(root: Path) -> Path:
    """Write a file on *root*'s file system until it is full (ENOSPC); the file."""
    filler = root / "filler"
    with filler.open("wb", buffering=0) as out:
        chunk = bytes(256 * 1024)
        while True:
            try:
                out.write(chunk)
            except OSError:  # ENOSPC: a smaller piece may still fit
                if len(chunk) <= 512:
                    break
                chunk = chunk[: len(chunk) // 2]
    assert free_bytes(root) < 4096
    return filler


def test_mpps_on_a_full_disk_answers_resource_limitation_and_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_file_system(tmp_path / "spool", 4) as root:
        spool = Spool(root)
        try:
            with scp_on(spool, use_lean=True) as port, modality(port, called_ae="FULLDISK") as room:
                study, step = generate_uid(), generate_uid()
                assert room.create(step, create_attributes(study))[0] == SUCCESS
                filler = fill(root)
                status, answer = room.create(generate_uid(), create_attributes(generate_uid()))
                assert status == scp.STATUS_RESOURCE_LIMITATION  # 0x0213, not a handler crash
                assert answer is not None and answer.ErrorComment == "Gateway disk full"
                final = final_attributes({}, status="DISCONTINUED", reason="Equipment failure")
                assert room.set(step, final)[0] == scp.STATUS_RESOURCE_LIMITATION
                assert "MPPS N-SET from CT_ROOM1 not recorded" in caplog.text
                assert room.echo() == SUCCESS  # the association and the SCP go on
                db = sqlite3.connect(root / "index.sqlite3", timeout=30)
                try:  # nothing changed: one step, still in progress
                    rows = db.execute("SELECT mpps_uid, state FROM mpps_steps").fetchall()
                finally:
                    db.close()
                assert rows == [(step, "IN PROGRESS")]
                filler.unlink()
                assert room.set(step, final)[0] == SUCCESS  # sent again once there is room
        finally:
            spool.close()


def test_a_report_pulled_onto_a_full_disk_leaves_no_partial_pdf(tmp_path: Path) -> None:
    """The report pull's write (ReportStore.write_file) on a full disk: the error reaches the
    puller (which backs off and does not confirm the report to the hub), no partial PDF stays,
    and the same write succeeds once there is room."""
    with small_file_system(tmp_path / "spool", 4) as root:
        store = ReportStore(root)
        try:
            pdf = b"%PDF-1.4\n" + os.urandom(512 * 1024)
            digest = hashlib.sha256(pdf).hexdigest()

            def download(out: BinaryIO) -> tuple[int, str]:
                for start in range(0, len(pdf), 64 * 1024):
                    out.write(pdf[start : start + 64 * 1024])
                return len(pdf), digest

            filler = fill(root)
            target = store.pdf_path(7)
            with pytest.raises(OSError) as raised:
                store.write_file(target, download, digest)
            assert raised.value.errno == errno.ENOSPC
            assert not target.exists()
            assert list(store.tmp.iterdir()) == []
            assert store.counts()["reports_held"] == 0
            filler.unlink()
            assert store.write_file(target, download, digest) == (len(pdf), digest)
            assert target.read_bytes() == pdf
        finally:
            store.close()


def test_instances_still_being_written_count_against_the_floor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Associations of one process admitted at the same moment: what is admitted and not yet
    written counts as written, so together they cannot eat the floor."""
    with small_file_system(tmp_path / "spool", 16) as root:
        guard = SpaceGuard(root, min_free_bytes=4 * MIB)
        free = free_bytes(root)
        assert guard.admit(5 * MIB, calling="CT_ROOM1")
        assert guard.admit(5 * MIB, calling="CT_ROOM2")  # nothing written yet: 6 MiB left
        assert not guard.admit(5 * MIB, calling="DR_ROOM3")  # would leave 1 MiB < floor / 2
        assert caplog.text.count("SPOOL DISK FULL") == 1
        assert free_bytes(root) == free  # a refusal decided on counts, not on a write
        guard.done(5 * MIB)
        guard.done(5 * MIB)  # both dropped (refused later, say): their room is back
        assert guard.admit(5 * MIB, calling="DR_ROOM3")
        assert "accepting instances again after 1 refusal(s)" in caplog.text
        assert guard.status() == {
            "spool_full": False,
            "spool_free_bytes": free,
            "spool_min_free_bytes": 4 * MIB,
        }
        with pytest.raises(ValueError):
            SpaceGuard(root, min_free_bytes=-1)
