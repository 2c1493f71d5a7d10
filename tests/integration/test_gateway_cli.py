"""``imaging-hub gateway status`` (text and --json) and ``gateway serve``'s terminal progress,
run as real commands on a real spool."""

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from imaging_hub.dicom_gateway.spool import Spool
from tests.peers.net import free_port, wait_for_port

CLI = [sys.executable, "-m", "imaging_hub"]


def _fill(root: Path) -> None:
    spool = Spool(root)
    for n, (study, priority) in enumerate([("1.2.3", 2), ("1.2.3", 2), ("1.2.4", 0)]):
        spool.put(
            b"d" * 100,
            sop_instance_uid=f"{study}.{n}",
            study_instance_uid=study,
            series_instance_uid=f"{study}.9",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            priority=priority,
        )
    (first,) = spool.lease(1)  # the STAT study goes first
    assert first.study_instance_uid == "1.2.4"
    spool.ack(first.sop_instance_uid, sha256=first.sha256, sent_bytes=40)
    spool.nack("1.2.3.0", delay=60, error="The hub could not be reached (ConnectError).")
    spool.count("refused")
    spool.close()


def _status(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, IMAGING_HUB_GATEWAY_SPOOL_DIR=str(root), COLUMNS="200")
    return subprocess.run(
        [*CLI, "gateway", "status", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_status_json_and_text(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    _fill(root)
    (root / "tmp" / "inflight.part").write_bytes(b"being received")
    report = json.loads(_status(root, "--json").stdout)
    assert report["queue_depth"] == 2
    assert report["bytes_pending"] == 200
    assert report["sent"] == 1 and report["received"] == 3 and report["refused"] == 1
    assert report["last_error"] == "The hub could not be reached (ConnectError)."
    assert report["last_success_at"] > 0
    studies = {s["study_instance_uid"]: s for s in report["studies"]}
    assert studies["1.2.3"]["sent"] == 0 and studies["1.2.3"]["total"] == 2
    assert studies["1.2.4"]["sent"] == 1 and studies["1.2.4"]["total"] == 1

    text = _status(root).stdout
    assert "queue depth: 2   bytes pending: 200" in text
    assert "refused: 1" in text
    assert "last error: The hub could not be reached" in text
    assert "last success: never" not in text
    assert "1.2.3" in text and "0/2" in text and "1/1" in text
    # A reader never removes a partial file the running gateway may be writing.
    assert (root / "tmp" / "inflight.part").exists()


def test_serve_shows_progress_on_a_terminal(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    _fill(root)
    port = free_port()
    env = dict(
        os.environ,
        IMAGING_HUB_GATEWAY_SPOOL_DIR=str(root),
        IMAGING_HUB_GATEWAY_HOST="127.0.0.1",
        IMAGING_HUB_GATEWAY_DICOM_PORT=str(port),
        IMAGING_HUB_GATEWAY_HUB_URL=f"http://127.0.0.1:{free_port()}",  # no hub: stays queued
        IMAGING_HUB_GATEWAY_HUB_TOKEN="not-used-here",
        COLUMNS="200",
    )
    main, secondary = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, "gateway", "serve"], env=env, stdout=secondary, stderr=subprocess.DEVNULL
    )
    os.close(secondary)
    output = b""
    try:
        wait_for_port(port, timeout=30)
        deadline = time.monotonic() + 20
        while b"queued 2" not in output and time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    output += os.read(main, 65536)
                except OSError:
                    break
    finally:
        proc.terminate()
        proc.wait(15)
        os.close(main)
    text = output.decode("utf-8", "replace")
    assert "queued 2 (200 B)" in text
    assert "forwarded 1" in text and "received 3" in text and "refused 1" in text
