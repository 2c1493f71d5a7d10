"""The hub and clinic gateways as real processes on loopback.

- ``hub`` (function scope): a migrated SQLite database with the demo network, then
  ``imaging-hub hub serve`` on a free port. Yields :class:`HubProcess` (URL, passwords, gateway
  tokens, a ``token(user)`` helper and direct database access for assertions).
- ``start_gateway`` (function scope): a factory that runs ``imaging-hub gateway serve`` for a
  clinic against a hub and yields :class:`GatewayProcess`; every gateway stops at teardown.
"""

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from imaging_hub.dicom.scu import association
from imaging_hub.worklist.admin.seed import create_demo_network
from imaging_hub.worklist.db.migrate import upgrade
from imaging_hub.worklist.db.session import make_engine, make_session_factory, session_scope
from tests.peers.net import free_port, stop_process, wait_for_port, wait_for_port_closed

CLI = [sys.executable, "-m", "imaging_hub"]
# Generous: several uvicorn workers importing the app on a loaded 2-core machine take a while.
START_TIMEOUT_SECONDS = 90


_stop = stop_process


def _launch(
    service: str, *, env: dict[str, str], log_path: Path, port: int
) -> "subprocess.Popen[bytes]":
    """Run ``imaging-hub <service> serve`` logging to *log_path*; wait until *port* listens."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [*CLI, service, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port, timeout=START_TIMEOUT_SECONDS)
    except TimeoutError:
        _stop(proc)
        raise RuntimeError(f"The {service} did not start:\n" + log_path.read_text()) from None
    return proc


@dataclass
class HubProcess:
    url: str
    port: int
    data_dir: Path
    database_url: str
    passwords: dict[str, str]
    gateway_tokens: dict[str, str]
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    sessions: sessionmaker[Session] = field(init=False)
    _engine: Engine = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._engine = make_engine(self.database_url)
        self.sessions = make_session_factory(self._engine)

    def token(self, username: str) -> str:
        response = httpx.post(
            f"{self.url}/api/v1/auth/token",
            data={"username": username, "password": self.passwords[username]},
            timeout=10,
        )
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token

    def client(self, username: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token(username)}"},
            timeout=30,
        )

    def start(self) -> None:
        self.proc = _launch("hub", env=self.env, log_path=self.log_path, port=self.port)

    def stop(self) -> None:
        """Stop the hub and close this side's database connections (``sessions`` reconnects)."""
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None
        self._engine.dispose()

    def kill(self) -> None:
        """kill -9, as a crash or a power cut would."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


def start_hub_process(
    data_dir: Path, *, database_url: str | None = None, extra_env: dict[str, str] | None = None
) -> HubProcess:
    data_dir.mkdir(parents=True, exist_ok=True)
    url = database_url or f"sqlite:///{data_dir / 'hub.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine)
    password = secrets.token_urlsafe(12)
    with session_scope(make_session_factory(engine)) as session:
        network = create_demo_network(session, password=password)
    engine.dispose()
    port = free_port()
    env = dict(
        os.environ,
        IMAGING_HUB_DATA_DIR=str(data_dir),
        IMAGING_HUB_DATABASE_URL=url,
        IMAGING_HUB_HOST="127.0.0.1",
        IMAGING_HUB_PORT=str(port),
        **(extra_env or {}),
    )
    hub = HubProcess(
        url=f"http://127.0.0.1:{port}",
        port=port,
        data_dir=data_dir,
        database_url=url,
        passwords=network.passwords,
        gateway_tokens=network.gateway_tokens,
        log_path=data_dir / "hub.log",
        env=env,
    )
    hub.start()
    return hub


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProcess]:
    process = start_hub_process(tmp_path / "hub")
    try:
        yield process
    finally:
        process.stop()


def _association_answered(port: int, called_ae: str) -> bool:
    """Whether an SCP on *port* answers an association request (accepts or rejects it)."""
    ae = AE(ae_title="READYCHECK")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    ae.add_requested_context(Verification)
    try:
        with association(ae, "127.0.0.1", port, called_ae=called_ae, timeout=5, probe=True) as a:
            return bool(a.is_established or a.is_rejected)
    except OSError:
        return False


@dataclass
class GatewayProcess:
    clinic: str
    ae_title: str
    port: int
    spool_dir: Path
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = _launch("gateway", env=self.env, log_path=self.log_path, port=self.port)
        if "IMAGING_HUB_GATEWAY_TLS_CERT_FILE" not in self.env:  # TLS: the tests check it
            self._wait_until_serving()

    def _wait_until_serving(self) -> None:
        """The port listens before the SCP (an SCP worker process, on a loaded machine)
        answers: wait until an association is accepted or rejected, not merely queued."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if _association_answered(self.port, self.ae_title):
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("The gateway's SCP did not answer:\n" + self.log_path.read_text())

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None

    def kill(self) -> None:
        """kill -9, as a crash or a power cut would; returns once its SCP workers (which die
        with it) no longer hold the port, so a restart's readiness check meets the new one."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
            wait_for_port_closed(self.port)

    def status(self) -> str:
        out = subprocess.run(
            [*CLI, "gateway", "status"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return out.stdout + out.stderr


GatewayFactory = Callable[..., GatewayProcess]


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[GatewayFactory]:
    started: list[GatewayProcess] = []

    def factory(
        hub: HubProcess, clinic: str = "clinic-a", ae_title: str = "CLINIC_A", **settings: Any
    ) -> GatewayProcess:
        port = free_port()
        spool = tmp_path / f"gateway-{clinic}-{len(started)}" / "spool"
        env = dict(
            os.environ,
            IMAGING_HUB_GATEWAY_CLINIC=clinic,
            IMAGING_HUB_GATEWAY_AE_TITLE=ae_title,
            IMAGING_HUB_GATEWAY_HOST="127.0.0.1",
            IMAGING_HUB_GATEWAY_DICOM_PORT=str(port),
            IMAGING_HUB_GATEWAY_SPOOL_DIR=str(spool),
            IMAGING_HUB_GATEWAY_HUB_URL=hub.url,
            IMAGING_HUB_GATEWAY_HUB_TOKEN=hub.gateway_tokens[clinic],
            IMAGING_HUB_GATEWAY_STABILITY_SECONDS="1",
            IMAGING_HUB_GATEWAY_RETRY_INITIAL_SECONDS="0.2",
            IMAGING_HUB_GATEWAY_RETRY_MAX_SECONDS="2",
        )
        for key, value in settings.items():
            env[f"IMAGING_HUB_GATEWAY_{key.upper()}"] = str(value)
        gateway = GatewayProcess(
            clinic=clinic,
            ae_title=ae_title,
            port=port,
            spool_dir=spool,
            log_path=spool.parent / "gateway.log",
            env=env,
        )
        spool.parent.mkdir(parents=True, exist_ok=True)
        gateway.start()
        started.append(gateway)
        return gateway

    try:
        yield factory
    finally:
        for gateway in started:
            gateway.stop()
