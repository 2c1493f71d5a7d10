"""A throwaway PostgreSQL 15 cluster on loopback (ARCHITECTURE.md, Testing).

PostgreSQL refuses to run as root and CI runs as root, so when the tests run as root ``initdb``
and ``pg_ctl`` run as the ``postgres`` OS user (``runuser``) on a temporary directory that user
owns. The cluster listens only on 127.0.0.1 (a free port), keeps its Unix socket in the temporary
directory, and requires a password generated per run (SCRAM) for TCP connections.

Fixtures:

- ``postgres_server`` (session): yields :class:`PostgresServer`; ``create_database(name)``
  returns a SQLAlchemy URL ``postgresql+psycopg://postgres:PASSWORD@127.0.0.1:PORT/NAME``.
- ``postgres_url`` (function): the URL of a fresh database, dropped at teardown.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.peers.net import free_port

PG_BIN = Path(os.environ.get("IMAGING_HUB_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_OS_USER = "postgres"
DB_USER = "postgres"
COMMAND_TIMEOUT_SECONDS = 90
START_ATTEMPTS = 3
DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class PostgresServer:
    """A running test cluster: where it listens and how to reach it."""

    host: str
    port: int
    user: str
    password: str

    def _connect_admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        )

    def url(self, name: str) -> str:
        """The SQLAlchemy URL (psycopg 3 driver) of database *name*."""
        return f"postgresql+psycopg://{self.user}:{self.password}@{self.host}:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        """Create database *name* and return its SQLAlchemy URL."""
        if DATABASE_NAME.fullmatch(name) is None:
            raise ValueError("A test database name must be a lower-case SQL identifier.")
        with self._connect_admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database *name*, disconnecting whoever is still connected."""
        with self._connect_admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _as_cluster_owner() -> list[str]:
    """The command prefix that runs a PostgreSQL binary as a user it accepts."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    if Path(runuser).exists():
        return [runuser, "-u", PG_OS_USER, "--"]
    su = shutil.which("su")
    if su is None:
        pytest.fail("Running PostgreSQL as root needs 'runuser' or 'su'; neither was found.")
    return [su, PG_OS_USER, "-s", "/bin/sh", "-c", '"$0" "$@"']


def _run(argv: list[str], *, cwd: Path, what: str) -> None:
    result = subprocess.run(
        [*_as_cluster_owner(), *argv],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{what} failed with exit status {result.returncode}: "
            f"{(result.stdout + result.stderr)[-3000:]}"
        )


def _check_prerequisites() -> None:
    missing = [name for name in ("initdb", "pg_ctl") if not (PG_BIN / name).is_file()]
    if missing:
        pytest.fail(
            f"PostgreSQL 15 binaries {', '.join(missing)} are missing from {PG_BIN}; "
            "install the Debian 'postgresql' package (CI does) to run the PostgreSQL tests."
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_OS_USER)
        except KeyError:
            pytest.fail(f"The '{PG_OS_USER}' OS user is missing; PostgreSQL cannot run as root.")


def _chown_to_cluster_owner(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(PG_OS_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL cluster on 127.0.0.1, stopped and deleted at the end of the session."""
    _check_prerequisites()
    tmp = Path(tempfile.mkdtemp(prefix="imaging-hub-pg-"))
    data = tmp / "data"
    log = tmp / "postgres.log"
    started = False
    try:
        _chown_to_cluster_owner(tmp)
        password = secrets.token_urlsafe(24)
        pwfile = tmp / "pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        _chown_to_cluster_owner(pwfile)
        _run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                DB_USER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=peer",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            cwd=tmp,
            what="initdb",
        )
        pwfile.unlink()
        server: PostgresServer | None = None
        for attempt in range(1, START_ATTEMPTS + 1):
            port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={tmp} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=100"
            )
            try:
                _run(
                    [
                        str(PG_BIN / "pg_ctl"),
                        "-D",
                        str(data),
                        "-l",
                        str(log),
                        "-o",
                        options,
                        "-w",
                        "-t",
                        "60",
                        "start",
                    ],
                    cwd=tmp,
                    what="pg_ctl start",
                )
            except pytest.fail.Exception:
                if attempt == START_ATTEMPTS:
                    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                    pytest.fail(f"PostgreSQL did not start; server log: {tail}")
                continue  # most likely the port was taken meanwhile
            started = True
            server = PostgresServer(host="127.0.0.1", port=port, user=DB_USER, password=password)
            break
        assert server is not None
        yield server
    finally:
        if started:
            subprocess.run(
                [
                    *_as_cluster_owner(),
                    *(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate"),
                    *("-w", "-t", "30", "stop"),
                ],
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=COMMAND_TIMEOUT_SECONDS,
                check=False,
            )
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The SQLAlchemy URL of a fresh database, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.drop_database(name)
