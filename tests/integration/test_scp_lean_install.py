"""When the lean C-STORE path is installed: only by a gateway SCP's serve entry, once, and only
on the pynetdicom series it was written for.

Each case runs in a fresh interpreter (the patches are process-wide). The SCP cases serve real
associations over 127.0.0.1, with dcmtk's storescu as the modality.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from imaging_hub.dicom_gateway import lean
from tests.conftest import SAMPLES
from tests.peers.net import free_port

SAMPLE = SAMPLES / "by-modality" / "CT" / "CT_small.dcm"

PATCHES = textwrap.dedent(
    """
    import copy, json, logging, sys, time
    from pydicom.uid import UID

    def patches():
        from pynetdicom import association, dul
        found = []
        if association.time is not time:
            found.append("association.time")
        if dul.time is not time:
            found.append("dul.time")
        if UID in getattr(copy, "_deepcopy_dispatch", {}):
            found.append("deepcopy table")
        from imaging_hub.dicom_gateway import lean
        if lean.installed():
            found.append("lean.installed")
        return found
    """
)


def run(script: str, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PATCHES + textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    result["stderr"] = done.stderr
    return result


def test_importing_the_hub_app_and_the_gateway_modules_patches_nothing() -> None:
    result = run(
        """
        import imaging_hub.worklist.app
        import imaging_hub.dicom_gateway.scp
        import imaging_hub.dicom_gateway.lean
        import imaging_hub.dicom_gateway.service
        import imaging_hub.demo
        import imaging_hub.modality
        print(json.dumps({"patches": patches()}))
        """
    )
    assert result["patches"] == []


def test_the_hub_process_never_installs_the_lean_path(tmp_path: Path) -> None:
    """create_app (what `hub serve` and the demo's main process run) leaves pynetdicom,
    deepcopy and the allocator as they were, also after answering requests."""
    result = run(
        """
        from pathlib import Path
        from fastapi.testclient import TestClient
        from imaging_hub.config import HubSettings
        from imaging_hub.worklist.app import create_app
        from imaging_hub.worklist.db.migrate import upgrade
        from imaging_hub.worklist.db.session import make_engine
        import imaging_hub.dicom_gateway.scp

        settings = HubSettings(data_dir=Path(sys.argv[1]))
        settings.data_dir.mkdir(parents=True)
        engine = make_engine(settings.resolved_database_url())
        upgrade(engine)
        engine.dispose()
        with TestClient(create_app(settings)) as client:
            assert client.get("/healthz").status_code == 200
        print(json.dumps({"patches": patches()}))
        """,
        str(tmp_path / "hub"),
    )
    assert result["patches"] == []


SERVE = """
    import pynetdicom
    if sys.argv[2] != "installed":
        pynetdicom.__version__ = sys.argv[2]
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # as the gateway's CLI does
    from pathlib import Path
    import subprocess, os
    from imaging_hub.dicom_gateway import lean, scp
    from imaging_hub.dicom_gateway.spool import Spool

    assert patches() == []  # nothing before the serve entry
    spool = Spool(Path(sys.argv[1]) / "spool")
    handler = scp.StoreHandler(spool, max_instance_bytes=10**9)
    lean_stores = []
    store = handler.store
    def recording(dataset, **request):
        import threading
        from pynetdicom.dul import DULServiceProvider
        lean_stores.append(isinstance(threading.current_thread(), DULServiceProvider))
        return store(dataset, **request)
    handler.store = recording
    port = int(sys.argv[3])
    servers = [scp.start_scp(scp.make_ae("LEANCHK"), handler, "127.0.0.1", port)]
    servers.append(scp.start_scp(scp.make_ae("LEANCHK"), handler, "127.0.0.1", port + 1))
    again = lean.install()
    sent = subprocess.run(
        ["storescu", "-aec", "LEANCHK", "127.0.0.1", str(port), sys.argv[4], sys.argv[4]],
        env=dict(os.environ, TCP_NODELAY="1"), capture_output=True, text=True, timeout=60,
    )
    for server in servers:
        server.shutdown()
    spool.close()
    print(json.dumps({
        "patches": patches(), "again": again, "storescu": sent.returncode,
        "received": handler.received, "lean_stores": lean_stores,
    }))
"""


def _two_ports() -> int:
    import socket

    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two adjacent free ports")


def test_the_serve_entry_installs_the_lean_path_once(tmp_path: Path) -> None:
    result = run(SERVE, str(tmp_path), "installed", str(_two_ports()), str(SAMPLE))
    assert result["storescu"] == 0 and result["received"] == 2
    assert result["again"] is True
    assert result["patches"] == ["association.time", "dul.time", "deepcopy table", "lean.installed"]
    # Served on the DUL thread. The association's first C-STORE may reach the DUL thread before
    # the association thread marked the association established (a loaded machine): the lean
    # path then leaves it to pynetdicom, which serves it as always; the second is always lean.
    assert len(result["lean_stores"]) == 2 and result["lean_stores"][1] is True
    assert str(result["stderr"]).count("lean C-STORE path on") == 1


@pytest.mark.parametrize("version", ["3.1.0", "4.0.0", "2.0.2", "3.0.3", "3.0.0.dev0"])
def test_another_pynetdicom_gets_plain_pynetdicom_logged_once(tmp_path: Path, version: str) -> None:
    """Two SCPs started in one process on a pynetdicom outside the pinned series: one clear
    WARNING, nothing patched, and C-STORE still served (by pynetdicom's own DIMSE path)."""
    result = run(SERVE, str(tmp_path), version, str(_two_ports()), str(SAMPLE))
    assert result["storescu"] == 0 and result["received"] == 2
    assert result["again"] is False
    assert result["patches"] == []
    assert result["lean_stores"] == [False, False]
    stderr = str(result["stderr"])
    assert stderr.count("lean C-STORE path OFF") == 1, stderr
    assert f"pynetdicom {version} is not {lean.PYNETDICOM_SPEC}" in stderr


def test_the_supported_series() -> None:
    assert lean.unsupported_reason("3.0.4") is None
    assert lean.unsupported_reason("3.0.9") is None
    for version in ("3.1.0", "4.0.0", "2.0.2", "3.0.3", "garbage"):
        assert lean.unsupported_reason(version) is not None
