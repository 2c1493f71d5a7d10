"""``imaging-hub demo``: the whole path on embedded defaults, in one process.

Hub (uvicorn in a thread, SQLite + filesystem store under DIR/hub), one gateway per demo clinic
(DIR/gateway-<clinic>/spool), and the bundled sample studies pushed with real C-STORE
associations, as the clinics' X-ray machines would.
"""

import logging
import threading
import time
from pathlib import Path

import uvicorn
from pydantic import SecretStr
from rich.console import Console

from imaging_hub.config import GatewaySettings, HubSettings
from imaging_hub.dicom.samples import sample_studies
from imaging_hub.dicom_gateway.service import GatewayService
from imaging_hub.modality import send_files
from imaging_hub.worklist.admin.seed import DEMO_GATEWAYS, create_demo_network
from imaging_hub.worklist.app import create_app
from imaging_hub.worklist.db.migrate import upgrade
from imaging_hub.worklist.db.session import make_engine, make_session_factory, session_scope

log = logging.getLogger(__name__)
console = Console(soft_wrap=True)


def _wait_for_http(server: uvicorn.Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("The hub did not start within 30 seconds.")
        time.sleep(0.05)


def run_demo(
    *,
    data: Path,
    port: int,
    dicom_port: int,
    password: str | None,
    host: str = "127.0.0.1",
    stop: threading.Event | None = None,
) -> None:
    hub_dir = data / "hub"
    hub_dir.mkdir(parents=True, exist_ok=True)
    hub_settings = HubSettings(data_dir=hub_dir, host=host, port=port)
    engine = make_engine(hub_settings.resolved_database_url())
    upgrade(engine)
    with session_scope(make_session_factory(engine)) as session:
        network = create_demo_network(session, password=password)
    engine.dispose()

    server = uvicorn.Server(
        uvicorn.Config(create_app(hub_settings), host=host, port=port, log_level="warning")
    )
    hub_thread = threading.Thread(target=server.run, name="hub", daemon=True)
    hub_thread.start()
    _wait_for_http(server)
    hub_url = f"http://{host}:{port}"

    gateways: list[GatewayService] = []
    ports: dict[str, int] = {}
    for i, (_name, clinic, ae_title) in enumerate(DEMO_GATEWAYS):
        settings = GatewaySettings(
            clinic=clinic,
            ae_title=ae_title,
            host=host,
            dicom_port=dicom_port + i,
            spool_dir=data / f"gateway-{clinic}" / "spool",
            hub_url=hub_url,
            hub_token=SecretStr(network.gateway_tokens[clinic]),
            stability_seconds=3.0,
            scp_workers=1,  # the demo is one process; a handful of samples needs no workers
        )
        service = GatewayService(settings)
        service.start()
        gateways.append(service)
        ports[clinic] = settings.dicom_port

    console.print(f"[bold green]imaging-hub demo[/bold green] — data in {data.resolve()}")
    console.print(f"  hub (browser app, API):  {hub_url}/   API docs: {hub_url}/docs")
    for (_name, clinic, ae_title), _gw in zip(DEMO_GATEWAYS, gateways, strict=True):
        console.print(f"  gateway {clinic}: DICOM {ae_title}@{host}:{ports[clinic]}")
    console.print("  logins (user / password):")
    for user, pw in network.passwords.items():
        console.print(f"    {user:<9} {pw}")

    studies = sorted(sample_studies().items())
    clinics = [clinic for _n, clinic, _ae in DEMO_GATEWAYS]
    for i, (study_uid, files) in enumerate(studies):
        clinic = clinics[i % len(clinics)]
        ae_title = DEMO_GATEWAYS[i % len(clinics)][2]
        result = send_files(
            files, host=host, port=ports[clinic], called_ae=ae_title, calling_ae="DEMO_XRAY"
        )
        console.print(
            f"  pushed study {study_uid} ({result.sent} images) to {clinic}"
            + (f", {result.failed} FAILED" if result.failed else "")
        )
    console.print("Studies appear in the worklist within seconds. Press Ctrl-C to stop.")

    stop = stop or threading.Event()
    try:
        while not stop.wait(0.5):
            if not hub_thread.is_alive():
                break
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping…")
        for gw in gateways:
            gw.stop()
        server.should_exit = True
        hub_thread.join(10)
