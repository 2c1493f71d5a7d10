"""``imaging-hub demo``: the whole path on embedded defaults, as deployed.

The hub runs in this process (uvicorn in a thread, SQLite + filesystem store under DIR/hub);
each demo clinic's gateway runs in its own process, ``python -m imaging_hub gateway serve`` with
a generated configuration (DIR/gateway-<clinic>/gateway.toml; the hub token goes in the
environment, not the file), so a gateway receives as fast as a standalone one and none of them
shares an interpreter with the hub. The banner is printed once the hub answers /healthz and
every gateway answers C-ECHO; then the bundled sample studies are pushed with real C-STORE
associations, as the clinics' X-ray machines would. Ctrl-C or SIGTERM stops the gateways with
the demo, and a gateway whose demo dies stops too (``PR_SET_PDEATHSIG``).
"""

import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import httpx
import uvicorn
from rich.console import Console

from imaging_hub.config import HubSettings
from imaging_hub.dicom.samples import sample_studies
from imaging_hub.modality import echo, send_files
from imaging_hub.worklist.admin.seed import DEMO_GATEWAYS, create_demo_network
from imaging_hub.worklist.app import create_app
from imaging_hub.worklist.db.migrate import upgrade
from imaging_hub.worklist.db.session import make_engine, make_session_factory, session_scope
from imaging_hub.worklist.http.server import server_options
from imaging_hub.worklist.orders.demo import register_demo_orders

log = logging.getLogger(__name__)
console = Console(soft_wrap=True)

START_TIMEOUT = 60.0  # s: for the hub and for each gateway
STOP_TIMEOUT = 20.0  # s: a gateway's orderly stop before it is killed
_PR_SET_PDEATHSIG = 1


def _toml(values: dict[str, str | int | float | bool]) -> str:
    lines = ["[gateway]"]
    for key, value in values.items():
        rendered = json.dumps(value) if not isinstance(value, bool) else str(value).lower()
        lines.append(f"{key} = {rendered}")
    return "\n".join(lines) + "\n"


def _die_with_demo() -> None:
    """In the gateway process before exec: SIGTERM when the demo's process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class GatewayProcess:
    """One demo clinic's gateway: ``imaging-hub gateway serve`` in a child process."""

    def __init__(
        self,
        *,
        data: Path,
        clinic: str,
        ae_title: str,
        host: str,
        port: int,
        hub_url: str,
        lan_page_port: int = 0,
    ) -> None:
        self.clinic, self.ae_title, self.host, self.port = clinic, ae_title, host, port
        self.lan_page_port = lan_page_port
        self.directory = data / f"gateway-{clinic}"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config = self.directory / "gateway.toml"
        self.log = self.directory / "gateway.log"
        self.hub_url = hub_url
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, token: str) -> None:
        self.config.write_text(
            _toml(
                {
                    "clinic": self.clinic,
                    "ae_title": self.ae_title,
                    "host": self.host,
                    "dicom_port": self.port,
                    "spool_dir": str((self.directory / "spool").resolve()),
                    "hub_url": self.hub_url,
                    "stability_seconds": 3.0,
                    "scp_workers": 1,  # a demo clinic has one machine sending at a time
                    "transcode_processes": 1,
                    "heartbeat_seconds": 10.0,
                    "lan_page_port": self.lan_page_port,
                }
            ),
            encoding="utf-8",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGING_HUB_")}
        env["IMAGING_HUB_GATEWAY_HUB_TOKEN"] = token
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "imaging_hub",
                    "gateway",
                    "serve",
                    "--config",
                    str(self.config),
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_demo,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def answers(self) -> bool:
        return echo(host=self.host, port=self.port, called_ae=self.ae_title, calling_ae="DEMO")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("gateway %s did not stop in %.0f s: killed", self.clinic, STOP_TIMEOUT)
            proc.kill()
            proc.wait(10)

    def tail(self) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-2000:]
        except OSError:
            return ""


def _wait(what: str, ready: Callable[[], bool], alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if not alive():
            raise RuntimeError(f"{what} stopped while starting.")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {START_TIMEOUT:.0f} seconds.")
        time.sleep(0.1)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def run_demo(
    *,
    data: Path,
    port: int,
    dicom_port: int,
    password: str | None,
    host: str = "127.0.0.1",
    stop: threading.Event | None = None,
) -> None:
    stop = stop or threading.Event()
    hub_dir = data / "hub"
    hub_dir.mkdir(parents=True, exist_ok=True)
    hub_settings = HubSettings(data_dir=hub_dir, host=host, port=port)
    engine = make_engine(hub_settings.resolved_database_url())
    upgrade(engine)
    with session_scope(make_session_factory(engine)) as session:
        network = create_demo_network(session, password=password)
        # A few of today's exam orders at each clinic, for the modalities' worklist.
        register_demo_orders(session, timezone=hub_settings.timezone)
    engine.dispose()

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(hub_settings), **server_options(hub_settings), log_level="warning"
        )
    )
    hub_thread = threading.Thread(target=server.run, name="hub", daemon=True)
    hub_url = f"http://{host}:{port}"
    gateways = [
        GatewayProcess(
            data=data,
            clinic=clinic,
            ae_title=ae_title,
            host=host,
            port=dicom_port + i,
            hub_url=hub_url,
            lan_page_port=_port_near(host, port + 1 + i),
        )
        for i, (_name, clinic, ae_title) in enumerate(DEMO_GATEWAYS)
    ]

    def terminate(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, terminate)
    try:
        hub_thread.start()
        for gateway in gateways:  # they start while the hub does
            gateway.start(network.gateway_tokens[gateway.clinic])
        _wait("The hub", lambda: _healthy(hub_url), hub_thread.is_alive)
        for gateway in gateways:
            try:
                _wait(f"The gateway of {gateway.clinic}", gateway.answers, gateway.alive)
            except RuntimeError:
                console.print(f"[red]gateway {gateway.clinic} log:[/red]\n{gateway.tail()}")
                raise
        _banner(data, hub_url, gateways, network.passwords)
        _push_samples(gateways)
        console.print("Studies appear in the worklist within seconds. Press Ctrl-C to stop.")
        while not stop.wait(0.5):
            if not hub_thread.is_alive():
                break
            for gateway in gateways:
                if not gateway.alive():
                    console.print(f"[red]gateway {gateway.clinic} stopped:[/red]\n{gateway.tail()}")
                    stop.set()
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping…")
        for gateway in gateways:
            gateway.stop()
        server.should_exit = True
        if hub_thread.is_alive():
            hub_thread.join(10)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _port_near(host: str, port: int) -> int:
    """*port* if it is free on *host*, else any free port (a gateway's LAN page)."""
    for candidate in (port, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, candidate))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    return 0


def _banner(
    data: Path, hub_url: str, gateways: list[GatewayProcess], passwords: dict[str, str]
) -> None:
    console.print(f"[bold green]imaging-hub demo[/bold green] — data in {data.resolve()}")
    console.print(f"  hub (browser app, API):  {hub_url}/   API docs: {hub_url}/docs")
    for gateway in gateways:
        console.print(
            f"  gateway {gateway.clinic}: DICOM {gateway.ae_title}@{gateway.host}:{gateway.port}"
            f"  (pid {gateway.proc.pid if gateway.proc else '-'}, log {gateway.log})"
        )
        if gateway.lan_page_port:
            console.print(
                f"    LAN page (reports for {gateway.clinic} staff, also offline): "
                f"http://{gateway.host}:{gateway.lan_page_port}/"
            )
    console.print("  logins (user / password):")
    for user, pw in passwords.items():
        console.print(f"    {user:<9} {pw}")


def _push_samples(gateways: list[GatewayProcess]) -> None:
    studies = sorted(sample_studies().items())
    for i, (study_uid, files) in enumerate(studies):
        gateway = gateways[i % len(gateways)]
        result = send_files(
            files,
            host=gateway.host,
            port=gateway.port,
            called_ae=gateway.ae_title,
            calling_ae="DEMO_XRAY",
        )
        console.print(
            f"  pushed study {study_uid} ({result.sent} images) to {gateway.clinic}"
            + (f", {result.failed} FAILED" if result.failed else "")
        )
