"""Issue 2: `imaging-hub demo`, then rad1's worklist lists the demo studies within 30 s.

Issue 12: each gateway runs in its own process, and none outlives the demo (Ctrl-C, SIGTERM,
or the demo killed outright).
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from imaging_hub.dicom.samples import sample_studies
from tests.peers.net import free_port_block, wait_for_port, wait_until


def start_demo(tmp_path: Path, port: int, dicom_port: int) -> subprocess.Popen[bytes]:
    with (tmp_path / "demo.log").open("wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "imaging_hub",
                "demo",
                "--data",
                str(tmp_path / "demo"),
                "--port",
                str(port),
                "--dicom-port",
                str(dicom_port),
                "--password",
                "demo-password-1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def gateway_pids(tmp_path: Path) -> list[int]:
    """The gateways' process IDs, from the banner (printed once every gateway answers C-ECHO)."""
    text = (tmp_path / "demo.log").read_text(encoding="utf-8", errors="replace")
    return [int(pid) for pid in re.findall(r"DICOM CLINIC_[AB]@\S+\s+\(pid (\d+)", text)]


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_demo_lists_the_sample_studies_within_30_seconds(tmp_path: Path) -> None:
    port, dicom_port = free_port_block(3), free_port_block(2)
    proc = start_demo(tmp_path, port, dicom_port)
    try:
        wait_for_port(port, timeout=30)
        url = f"http://127.0.0.1:{port}"
        token = httpx.post(
            f"{url}/api/v1/auth/token",
            data={"username": "rad1", "password": "demo-password-1"},
            timeout=10,
        ).json()["access_token"]
        expected = set(sample_studies())

        def listed() -> bool:
            response = httpx.get(
                f"{url}/api/v1/worklist",
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            items = response.json()["items"]
            return {i["study_instance_uid"] for i in items if i["status"] == "unread"} == expected

        wait_until(listed, timeout=30, interval=0.5)
        # The browser app is served at / and clinic-b's gateway listens on the next port.
        assert httpx.get(f"{url}/", timeout=10).status_code == 200
        wait_for_port(dicom_port + 1, timeout=5)
        # Wrong password: refused.
        bad = httpx.post(
            f"{url}/api/v1/auth/token",
            data={"username": "rad1", "password": "wrong"},
            timeout=10,
        )
        assert bad.status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    output = (tmp_path / "demo.log").read_text(encoding="utf-8")
    pids = gateway_pids(tmp_path)
    assert len(pids) == 2 and proc.pid not in pids, output[-3000:]
    assert not [pid for pid in pids if running(pid)], "a gateway outlived the demo"
    assert "rad1" in output and "demo-password-1" in output
    assert "CLINIC_A" in output and "CLINIC_B" in output
    assert proc.returncode == 0, output[-3000:]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_the_gateways_run_in_their_own_processes_and_stop_with_the_demo(
    tmp_path: Path, stop: signal.Signals
) -> None:
    port, dicom_port = free_port_block(3), free_port_block(2)
    proc = start_demo(tmp_path, port, dicom_port)
    try:
        pids = wait_until(lambda: gateway_pids(tmp_path) or None, timeout=60, interval=0.2)
        # The banner comes after /healthz and both C-ECHOs answered: all three serve now.
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert len(pids) == 2 and proc.pid not in pids
        assert all(running(pid) for pid in pids)
        for pid in pids:  # each gateway is a child of the demo, not the demo itself
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            assert parent == proc.pid
        os.kill(proc.pid, stop)
        proc.wait(30)
        deadline = time.monotonic() + 30
        while any(running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in pids if running(pid)], "a gateway outlived the demo"
        if stop == signal.SIGTERM:
            assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
