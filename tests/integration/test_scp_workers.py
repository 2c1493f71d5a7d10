"""Several SCP worker processes sharing one listening socket and one spool (``scp_workers``).

Real processes throughout: ``imaging-hub gateway serve`` with two workers (forwarding off, so
the spool keeps what arrived), dcmtk ``storescu`` as four concurrent modalities.
"""

import os
import re
import signal
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.conftest import SAMPLES
from tests.peers.dcmtk import echoscu, storescu
from tests.peers.hub import GatewayProcess
from tests.peers.net import free_port, wait_until

SAMPLE = SAMPLES / "by-modality" / "MR" / "MR_small.dcm"
WORKER_LINE = re.compile(r"SCP worker (\d+) \(pid (\d+)\) serving")


def _copies(directory: Path, studies: int, per_study: int) -> list[list[Path]]:
    """*studies* batches of *per_study* instances, every one with fresh UIDs."""
    batches = []
    for s in range(studies):
        study = generate_uid()
        batch = []
        for i in range(per_study):
            ds = pydicom.dcmread(SAMPLE)
            ds.StudyInstanceUID = study
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            path = directory / f"s{s}-{i}.dcm"
            ds.save_as(path, enforce_file_format=True)
            batch.append(path)
        batches.append(batch)
    return batches


def _spooled(spool: Path) -> list[str]:
    db = sqlite3.connect(spool / "index.sqlite3")
    try:
        return [r[0] for r in db.execute("SELECT sop_instance_uid FROM instances")]
    finally:
        db.close()


def _workers(gateway: GatewayProcess) -> dict[int, int]:
    """index -> pid of the workers that logged they are serving (latest per index)."""
    found: dict[int, int] = {}
    for match in WORKER_LINE.finditer(gateway.log_path.read_text()):
        found[int(match.group(1))] = int(match.group(2))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    spool = tmp_path / "gateway" / "spool"
    spool.parent.mkdir(parents=True)
    port = free_port()
    env = dict(
        os.environ,
        IMAGING_HUB_GATEWAY_AE_TITLE="WORKERS",
        IMAGING_HUB_GATEWAY_HOST="127.0.0.1",
        IMAGING_HUB_GATEWAY_DICOM_PORT=str(port),
        IMAGING_HUB_GATEWAY_SPOOL_DIR=str(spool),
        IMAGING_HUB_GATEWAY_HUB_URL=f"http://127.0.0.1:{free_port()}",
        IMAGING_HUB_GATEWAY_HUB_TOKEN="not-used-forwarding-is-off",
        IMAGING_HUB_GATEWAY_FORWARD="false",
        IMAGING_HUB_GATEWAY_SCP_WORKERS="2",
    )
    env.pop("IMAGING_HUB_CONFIG", None)
    process = GatewayProcess(
        clinic="clinic-a",
        ae_title="WORKERS",
        port=port,
        spool_dir=spool,
        log_path=spool.parent / "gateway.log",
        env=env,
    )
    process.start()
    wait_until(lambda: len(_workers(process)) == 2, timeout=60)
    try:
        yield process
    finally:
        process.stop()


def _send_concurrently(port: int, batches: list[list[Path]]) -> None:
    with ThreadPoolExecutor(len(batches)) as pool:
        runs = list(pool.map(lambda b: storescu(port, b, called_ae="WORKERS"), batches))
    for run in runs:
        assert run.returncode == 0, run.stderr


def test_concurrent_associations_spool_every_instance_exactly_once(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    batches = _copies(tmp_path, studies=4, per_study=6)
    _send_concurrently(gateway.port, batches)
    spooled = _spooled(gateway.spool_dir)
    sent = [
        str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
        for batch in batches
        for f in batch
    ]
    assert sorted(spooled) == sorted(sent)
    stored = sorted(p.name for p in (gateway.spool_dir / "objects").rglob("*.dcm"))
    assert stored == sorted(f"{uid}.dcm" for uid in sent)
    assert list((gateway.spool_dir / "tmp").iterdir()) == []
    log = gateway.log_path.read_text()
    assert "Traceback" not in log
    # Which worker accepts is up to the scheduler (the least busy one usually does, but on a
    # loaded machine one worker may take all four), so only "served" is asserted here; that the
    # second worker serves on its own is shown by the killed-worker test below.
    assert "association from STORESCU closed" in log


def test_killed_worker_is_replaced_and_the_other_keeps_serving(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    victim = _workers(gateway)[0]
    os.kill(victim, signal.SIGKILL)
    # straight away: the surviving worker accepts from the shared queue
    assert echoscu(gateway.port, called_ae="WORKERS").returncode == 0
    batches = _copies(tmp_path, studies=2, per_study=3)
    _send_concurrently(gateway.port, batches)
    assert len(_spooled(gateway.spool_dir)) == 6
    # and the supervisor starts a replacement
    wait_until(lambda: _workers(gateway).get(0, victim) != victim, timeout=60)
    assert f"SCP worker 0 (pid {victim}) exited" in gateway.log_path.read_text()
    (tmp_path / "more").mkdir()
    _send_concurrently(gateway.port, _copies(tmp_path / "more", studies=1, per_study=2))
    assert len(_spooled(gateway.spool_dir)) == 8


def test_workers_die_with_the_main_process(gateway: GatewayProcess) -> None:
    pids = list(_workers(gateway).values())
    assert all(_alive(pid) for pid in pids)
    gateway.kill()  # SIGKILL: no clean shutdown
    wait_until(lambda: not any(_alive(pid) for pid in pids), timeout=20)
    # the port is free again: a restarted gateway can bind it
    wait_until(lambda: echoscu(gateway.port, called_ae="WORKERS").returncode != 0, timeout=10)
    gateway.start()
    wait_until(lambda: echoscu(gateway.port, called_ae="WORKERS").returncode == 0, timeout=60)
