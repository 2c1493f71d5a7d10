"""An S3 protocol server on loopback for the S3 backend: ``moto_server`` (ARCHITECTURE.md, Testing).

Fixtures:

- ``s3_server`` (session): a running moto server; yields :class:`S3Server` with ``endpoint``
  (``"127.0.0.1:PORT"``), ``access_key``, ``secret_key`` and ``region``.
- ``s3_store`` (function): an :class:`~imaging_hub.storage.s3.S3Store` on a fresh bucket, emptied
  and removed at teardown.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import urllib3
from minio import Minio

from imaging_hub.storage.s3 import S3Store
from tests.peers.net import free_port

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
START_ATTEMPTS = 3


@dataclass(frozen=True)
class S3Server:
    """Where the test S3 server listens, and the (per-run, meaningless to moto) credentials."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def client(self, http_client: urllib3.PoolManager) -> Minio:
        """A raw ``minio`` client for fixtures and assertions that bypass :class:`S3Store`.

        The caller owns *http_client* and clears it when done.
        """
        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region=self.region,
            http_client=http_client,
        )

    def store(self, bucket: str, *, create_bucket: bool = True) -> S3Store:
        """An :class:`S3Store` on *bucket* of this server."""
        return S3Store(
            endpoint=self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            bucket=bucket,
            region=self.region,
            create_bucket=create_bucket,
        )


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            response.read()
            return True
    except urllib.error.HTTPError as exc:
        exc.close()
        return True  # any HTTP answer means the server is up
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_SECONDS)


def _start_moto(port: int, log_path: Path) -> subprocess.Popen[bytes] | None:
    """Start moto on *port*; the process once it answers, or ``None`` if it exited early."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    url = f"http://127.0.0.1:{port}/moto-api/"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None
        if _answers(url):
            return process
        time.sleep(0.1)
    _stop(process)
    pytest.fail(
        f"moto_server did not answer on 127.0.0.1:{port} within {START_TIMEOUT_SECONDS:.0f} s; "
        f"log: {log_path.read_text(errors='replace')[-2000:]}"
    )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server on a free loopback port, stopped at the end of the session."""
    with tempfile.TemporaryDirectory(prefix="imaging-hub-moto-") as tmp:
        log_path = Path(tmp) / "moto.log"
        process: subprocess.Popen[bytes] | None = None
        port = 0
        for _ in range(START_ATTEMPTS):  # another process may grab the port before moto binds
            port = free_port()
            process = _start_moto(port, log_path)
            if process is not None:
                break
        if process is None:
            pytest.fail(
                f"moto_server exited during start-up {START_ATTEMPTS} times; "
                f"log: {log_path.read_text(errors='replace')[-2000:]}"
            )
        try:
            yield S3Server(
                endpoint=f"127.0.0.1:{port}",
                access_key=f"test-{secrets.token_hex(8)}",
                secret_key=secrets.token_urlsafe(24),
            )
        finally:
            _stop(process)


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
