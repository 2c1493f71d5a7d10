"""Issue 2: `imaging-hub demo`, then rad1's worklist lists the demo studies within 30 s."""

import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from imaging_hub.dicom.samples import sample_studies
from tests.peers.net import free_port, wait_for_port, wait_until


def free_port_pair() -> int:
    """A port P such that P and P + 1 were both free a moment ago (clinic-b listens on P + 1)."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("No two adjacent free ports were found on 127.0.0.1.")


def test_demo_lists_the_sample_studies_within_30_seconds(tmp_path: Path) -> None:
    port, dicom_port = free_port(), free_port_pair()
    log = (tmp_path / "demo.log").open("wb")
    proc = subprocess.Popen(
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
            log.close()
    output = (tmp_path / "demo.log").read_text(encoding="utf-8")
    assert "rad1" in output and "demo-password-1" in output
    assert "CLINIC_A" in output and "CLINIC_B" in output
    assert proc.returncode == 0, output[-3000:]
