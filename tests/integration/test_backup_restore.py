"""``imaging-hub admin backup DIR`` / ``restore DIR`` (issue 15), on SQLite and PostgreSQL.

A hub with ingested studies, a signed report and audit rows is backed up by the real command
(a process of its own) while a thread keeps using the hub (opening studies writes audit rows,
new studies are ingested); the backup is restored into an empty hub: every study, object,
report PDF (same SHA-256) and audit row is there and ``admin audit verify`` passes. What must be
refused is refused with its exit code and changes nothing: a non-empty target, an interrupted
backup, a tampered file, a hostile listing, a newer format.
"""

import ast
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from alembic.script import ScriptDirectory
from pydantic import SecretStr
from sqlalchemy import select

from imaging_hub.config import HubSettings
from imaging_hub.errors import Forbidden
from imaging_hub.worklist.access.caller import Caller
from imaging_hub.worklist.admin import backup as domain
from imaging_hub.worklist.admin.seed import DemoNetwork
from imaging_hub.worklist.db import dump
from imaging_hub.worklist.db.migrate import alembic_config, upgrade
from imaging_hub.worklist.db.models import AuditEvent, Instance, Report, Study, User
from imaging_hub.worklist.db.session import make_engine, make_session_factory
from tests.peers.postgres import PostgresServer
from tests.peers.s3 import S3Server, remove_bucket
from tests.security.conftest import HubApp, _hub_app, _template_db, hub_app, pg_hub_app  # noqa: F401
from tests.security.test_reports_api import ingest_study, signed_report

CLI_TIMEOUT = 120


@pytest.fixture
def hub(request: pytest.FixtureRequest) -> HubApp:
    """The in-process hub on SQLite with the demo network (tests/security/conftest.py)."""
    return cast(HubApp, request.getfixturevalue("hub_app"))


@pytest.fixture
def pg_hub(request: pytest.FixtureRequest) -> HubApp:
    """The same on a fresh PostgreSQL database."""
    return cast(HubApp, request.getfixturevalue("pg_hub_app"))


@dataclass
class Target:
    """A hub's configuration without a server: its database URL and data directory."""

    database_url: str
    data_dir: Path
    extra_env: dict[str, str] | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGING_HUB_")}
        env.update(
            IMAGING_HUB_DATABASE_URL=self.database_url,
            IMAGING_HUB_DATA_DIR=str(self.data_dir),
            **(self.extra_env or {}),
        )
        return env

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "imaging_hub", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )

    def settings(self) -> HubSettings:
        return HubSettings(data_dir=self.data_dir, database_url=self.database_url)

    def settings_with(self, s3: S3Server, bucket: str) -> HubSettings:
        """These settings with the S3 object store *bucket* of *s3*."""
        return HubSettings(
            data_dir=self.data_dir,
            database_url=self.database_url,
            object_store="s3",
            s3_endpoint=s3.endpoint,
            s3_access_key=SecretStr(s3.access_key),
            s3_secret_key=SecretStr(s3.secret_key),
            s3_bucket=bucket,
        )


def target_of(hub: HubApp) -> Target:
    return Target(hub.database_url, hub.data_dir)


def objects_of(data_dir: Path) -> dict[str, str]:
    """key -> SHA-256 of every object of a filesystem store."""
    root = data_dir / "objects"
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def audit_rows(url: str) -> list[tuple[int, str, str]]:
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            return [
                (e.id, e.action, e.hash)
                for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))
            ]
    finally:
        engine.dispose()


def _events(url: str) -> list[AuditEvent]:
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            rows = list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
            session.expunge_all()
            return rows
    finally:
        engine.dispose()


def snapshot_of(url: str) -> dict[str, Any]:
    """Studies, instances (key, sha256) and signed reports (id, key, sha256) of a database."""
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            return {
                "studies": set(session.scalars(select(Study.study_instance_uid))),
                "instances": {(i.object_key, i.sha256) for i in session.scalars(select(Instance))},
                "reports": {
                    (r.id, r.object_key, r.sha256)
                    for r in session.scalars(select(Report).where(Report.object_key != ""))
                },
                "users": set(session.scalars(select(User.username))),
            }
    finally:
        engine.dispose()


class Traffic(threading.Thread):
    """Keeps the hub busy: opens studies (an audit row each, fresh tokens) and ingests new ones."""

    def __init__(self, hub: HubApp, study_uid: str) -> None:
        super().__init__(name="hub-traffic", daemon=True)
        self.hub = hub
        self.study_uid = study_uid
        self.stop = threading.Event()
        self.requests = 0
        self.ingested: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                response = self.hub.client.get(
                    f"/api/v1/studies/{self.study_uid}", headers=self.hub.headers("admin")
                )
                assert response.status_code == 200, response.text
                self.requests += 1
                if self.requests % 3 == 0:
                    self.ingested.append(ingest_study(self.hub).uid)
        except BaseException as exc:
            self.error = exc


def populate(hub: HubApp) -> dict[str, Any]:
    """Two studies of two clinics, one with a signed report; the report's PDF."""
    first = ingest_study(hub)
    second = ingest_study(hub, clinic="clinic-b", patient_name="李^四")
    report = signed_report(hub, first)
    pdf = hub.client.get(f"/api/v1/reports/{report['id']}/pdf", headers=hub.headers("admin"))
    assert pdf.status_code == 200
    assert hashlib.sha256(pdf.content).hexdigest() == report["sha256"]
    return {"studies": [first.uid, second.uid], "report": report}


def backup_while_serving(hub: HubApp, directory: Path, study_uid: str) -> dict[str, Any]:
    traffic = Traffic(hub, study_uid)
    traffic.start()
    try:
        result = target_of(hub).cli("admin", "backup", str(directory))
    finally:
        traffic.stop.set()
        traffic.join(timeout=30)
    assert traffic.error is None, traffic.error
    assert result.returncode == 0, result.stdout + result.stderr
    assert "backup complete" in result.stdout
    # Not a terminal: progress as counted lines.
    assert "database: 1/1" in result.stdout and "objects: " in result.stdout
    manifest: dict[str, Any] = json.loads((directory / "manifest.json").read_text())
    # The hub kept serving: audit rows were written after the snapshot too (the thread ran
    # before, during and after it).
    assert traffic.requests >= 3
    live = audit_rows(hub.database_url)
    assert live[-1][0] > manifest["audit"]["last_id"]
    actions = [a for _, a, _ in live]
    assert actions.count("admin.backup") == 2  # started (in the snapshot), completed
    return manifest


def check_restored(
    hub: HubApp, target: Target, manifest: dict[str, Any], before: dict[str, Any]
) -> None:
    source = snapshot_of(hub.database_url)
    restored = snapshot_of(target.database_url)
    # Everything that existed before the backup began is there, and nothing the source lacks.
    assert set(before["studies"]) <= restored["studies"] <= source["studies"]
    assert len(restored["studies"]) == manifest["counts"]["studies"]
    assert restored["instances"] <= source["instances"]
    assert restored["users"] == source["users"]
    assert {r[0] for r in restored["reports"]} == {before["report"]["id"]}
    # Every object its database references is in the restored store, byte for byte.
    objects = objects_of(target.data_dir)
    for key, sha256 in restored["instances"]:
        assert objects[key] == sha256
    for _, key, sha256 in restored["reports"]:
        assert objects[key] == sha256 == before["report"]["sha256"]
    # Every audit row of the snapshot, unchanged, then the restore's own.
    live = audit_rows(hub.database_url)
    rows = audit_rows(target.database_url)
    last = manifest["audit"]["last_id"]
    assert rows[:-1] == [r for r in live if r[0] <= last]
    assert rows[-1][1] == "admin.restore" and rows[-1][0] == last + 1
    assert "admin.backup" in [a for _, a, _ in rows[:-1]]  # the "started" record
    verify = target.cli("admin", "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"audit trail OK: {last + 1} events" in verify.stdout
    # The restored hub serves the signed PDF, same bytes, and can sign with the same CA.
    network = DemoNetwork(passwords=dict(hub.passwords))
    app = _hub_app(target.database_url, target.data_dir, network)
    restored_app = next(app)
    try:
        pdf = restored_app.client.get(
            f"/api/v1/reports/{before['report']['id']}/pdf",
            headers=restored_app.headers("staff-a"),
        )
        assert pdf.status_code == 200
        assert hashlib.sha256(pdf.content).hexdigest() == before["report"]["sha256"]
        study = restored_app.client.get(
            f"/api/v1/studies/{before['studies'][1]}", headers=restored_app.headers("admin")
        )
        assert study.status_code == 200
        assert study.json()["study"]["patient_name"].startswith("李")
        ca = restored_app.client.get("/api/v1/pki/ca.pem")
        assert ca.status_code == 200
        assert ca.content == (hub.data_dir / "pki" / "ca.crt.pem").read_bytes()
    finally:
        next(app, None)  # runs the generator's teardown to its end (the engine disposed)


def test_backup_of_a_running_sqlite_hub_restores_into_an_empty_one(
    hub: HubApp, tmp_path: Path
) -> None:
    before = populate(hub)
    directory = tmp_path / "backup"
    manifest = backup_while_serving(hub, directory, before["studies"][0])
    assert manifest["database"]["kind"] == "sqlite"
    assert manifest["counts"]["reports_max_id"] == before["report"]["id"]
    assert manifest["format_version"] == 1 and manifest["hub_version"]
    assert manifest["objects"]["count"] >= 5  # 2 studies + the report's PDF, SR and Encapsulated
    assert (directory / "SHA256SUMS").is_file()
    assert not list(directory.glob(".*"))  # no temporary file left
    check = subprocess.run(
        ["sha256sum", "--quiet", "-c", "SHA256SUMS"],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    for path in (directory, *directory.rglob("*")):  # PHI and the CA key: the owner's only
        assert path.stat().st_mode & 0o077 == 0, path

    target = Target(f"sqlite:///{tmp_path / 'new-hub' / 'hub.sqlite3'}", tmp_path / "new-hub")
    result = target.cli("admin", "restore", str(directory))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "restore complete" in result.stdout
    check_restored(hub, target, manifest, before)


def test_backup_of_a_running_postgres_hub_restores_into_an_empty_one(
    pg_hub: HubApp, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    before = populate(pg_hub)
    directory = tmp_path / "backup"
    manifest = backup_while_serving(pg_hub, directory, before["studies"][0])
    assert manifest["database"]["kind"] == "postgresql"
    assert manifest["database"]["pg_server_major"] == 15
    name = f"restored_{uuid.uuid4().hex[:12]}"
    target = Target(postgres_server.create_database(name), tmp_path / "new-hub")
    try:
        # A hub that was installed and migrated (`hub serve` ran once) but holds nothing yet.
        engine = make_engine(target.database_url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        result = target.cli("admin", "restore", str(directory))
        assert result.returncode == 0, result.stdout + result.stderr
        check_restored(pg_hub, target, manifest, before)
        # Now it holds a hub: a second restore is refused and changes nothing.
        rows = audit_rows(target.database_url)
        again = target.cli("admin", "restore", str(directory))
        assert again.returncode == 3 and "audit_events" in again.stdout, again.stdout
        assert audit_rows(target.database_url) == rows
    finally:
        postgres_server.drop_database(name)


# --- refusals ----------------------------------------------------------------------------------


@pytest.fixture
def backed_up(hub: HubApp, tmp_path: Path) -> Iterator[tuple[HubApp, Path]]:
    """A hub with two studies and a signed report, and its backup (made in-process)."""
    populate(hub)
    directory = tmp_path / "backup"
    domain.backup(target_of(hub).settings(), directory, Caller.console())
    yield hub, directory


def state_of(target: Target) -> tuple[list[tuple[int, str, str]], dict[str, str], list[str]]:
    db = Path(target.database_url.removeprefix("sqlite:///"))
    rows = audit_rows(target.database_url) if db.is_file() else []
    pki = sorted(p.name for p in (target.data_dir / "pki").rglob("*"))
    return rows, objects_of(target.data_dir), pki


def test_restore_into_a_non_empty_hub_is_refused_and_changes_nothing(
    backed_up: tuple[HubApp, Path], tmp_path: Path
) -> None:
    hub, directory = backed_up
    live = target_of(hub)
    before = state_of(live)
    result = live.cli("admin", "restore", str(directory))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "not empty" in result.stdout and "nothing was changed" in result.stdout
    assert state_of(live) == before

    # Objects alone (an empty database) make a hub non-empty, and so does a CA alone.
    other = Target(f"sqlite:///{tmp_path / 'other' / 'hub.sqlite3'}", tmp_path / "other")
    stray = other.data_dir / "objects" / "clinic-a" / "stray.dcm"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"not mine")
    result = other.cli("admin", "restore", str(directory))
    assert result.returncode == 3 and "object store holds objects" in result.stdout
    assert objects_of(other.data_dir) == {
        "clinic-a/stray.dcm": hashlib.sha256(b"not mine").hexdigest()
    }
    assert not (other.data_dir / "hub.sqlite3").exists()
    stray.unlink()
    (other.data_dir / "pki").mkdir()
    (other.data_dir / "pki" / "ca.crt.pem").write_text("another CA")
    result = other.cli("admin", "restore", str(directory))
    assert result.returncode == 3 and "hub CA exists" in result.stdout
    assert (other.data_dir / "pki" / "ca.crt.pem").read_text() == "another CA"


def test_an_interrupted_backup_is_never_taken_for_a_complete_one(
    hub: HubApp, tmp_path: Path
) -> None:
    populate(hub)
    directory = tmp_path / "backup"

    def interrupt(stage: str, done: int, total: int) -> None:
        if stage == "objects" and done == total:  # every object copied, the manifest not yet
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        domain.backup(target_of(hub).settings(), directory, Caller.console(), progress=interrupt)
    assert (directory / "database.sqlite3").is_file() and (directory / "objects").is_dir()
    assert not (directory / "manifest.json").exists()
    failed = [a for _, a, _ in audit_rows(hub.database_url) if a == "admin.backup"]
    assert len(failed) == 2  # started, failed
    target = Target(f"sqlite:///{tmp_path / 'new' / 'hub.sqlite3'}", tmp_path / "new")
    result = target.cli("admin", "restore", str(directory))
    assert result.returncode == 4, result.stdout + result.stderr
    assert "incomplete" in result.stdout and "make a new backup" in result.stdout
    assert not target.data_dir.exists()  # nothing was created, let alone restored

    # A backup process stopped half-way, by Ctrl-C or killed: the object store stalls (an S3
    # endpoint that accepts connections and never answers) after the database snapshot.
    with socket.socket() as stall:
        stall.bind(("127.0.0.1", 0))
        stall.listen(16)
        stalled = Target(
            hub.database_url,
            hub.data_dir,
            {
                "IMAGING_HUB_OBJECT_STORE": "s3",
                "IMAGING_HUB_S3_ENDPOINT": f"127.0.0.1:{stall.getsockname()[1]}",
                "IMAGING_HUB_S3_ACCESS_KEY": "stalled",
                "IMAGING_HUB_S3_SECRET_KEY": "stalled-secret",
            },
        )
        for how in (signal.SIGINT, signal.SIGKILL):
            half = tmp_path / f"half-{how.name}"
            process = subprocess.Popen(
                [sys.executable, "-m", "imaging_hub", "admin", "backup", str(half)],
                env=stalled.env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                deadline = time.monotonic() + 60
                while not (half / ".keys.tmp").is_file() and process.poll() is None:
                    assert time.monotonic() < deadline, "the backup never took its snapshot"
                    time.sleep(0.02)
                time.sleep(0.3)  # now waiting for the stalled store
                assert process.poll() is None
                process.send_signal(how)
                output, _ = process.communicate(timeout=30)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=30)
            assert (half / "database.sqlite3").is_file()
            assert not (half / "manifest.json").exists()
            if how == signal.SIGINT:
                assert process.returncode == 130 and "interrupted" in output
            with pytest.raises(domain.BackupIncomplete, match="make a new backup"):
                domain.restore(target.settings(), half, Caller.console())
            assert not target.data_dir.exists()
    details = [
        e.detail
        for e in _events(hub.database_url)
        if e.action == "admin.backup" and e.detail.get("op") == "failed"
    ]
    assert [d["error"] for d in details] == ["KeyboardInterrupt", "KeyboardInterrupt"]
    # A directory that is no backup at all.
    with pytest.raises(domain.BackupIncomplete, match="not a directory"):
        domain.verify_backup(tmp_path / "nowhere")


def test_a_tampered_backup_is_detected_and_nothing_is_restored(
    backed_up: tuple[HubApp, Path], tmp_path: Path
) -> None:
    _, directory = backed_up
    target = Target(f"sqlite:///{tmp_path / 'new' / 'hub.sqlite3'}", tmp_path / "new")
    pdf = next((directory / "objects").rglob("*.pdf"))
    original = pdf.read_bytes()
    pdf.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    result = target.cli("admin", "restore", str(directory))
    assert result.returncode == 4, result.stdout + result.stderr
    assert "differs from its SHA-256" in result.stdout and pdf.name in result.stdout
    assert not target.data_dir.exists()
    checked = target.cli("admin", "verify-backup", str(directory))
    assert checked.returncode == 4 and pdf.name in checked.stdout
    pdf.write_bytes(original)

    # A missing object.
    dcm = next((directory / "objects").rglob("*.dcm"))
    data = dcm.read_bytes()
    dcm.unlink()
    with pytest.raises(domain.BackupCorrupt, match="is missing"):
        domain.restore(target.settings(), directory, Caller.console())
    dcm.write_bytes(data)

    # The listing itself edited (to match a tampered object) no longer matches the manifest.
    sums = directory / "SHA256SUMS"
    listing = sums.read_text()
    sums.write_text(listing.replace(listing[:64], "0" * 64, 1))
    with pytest.raises(domain.BackupCorrupt, match="SHA256SUMS"):
        domain.restore(target.settings(), directory, Caller.console())
    sums.write_text(listing)
    assert not target.data_dir.exists()

    # A newer format than this hub reads.
    manifest_path = directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(domain.BackupIncompatible, match="newer"):
        domain.restore(target.settings(), directory, Caller.console())
    manifest_path.write_text("{not json")
    with pytest.raises(domain.BackupCorrupt, match="not a readable manifest"):
        domain.restore(target.settings(), directory, Caller.console())
    manifest_path.write_text(json.dumps(manifest))
    assert not target.data_dir.exists()

    # Untouched again, it restores.
    restored = domain.restore(target.settings(), directory, Caller.console())
    assert restored.objects == manifest["objects"]["count"]


@pytest.mark.parametrize(
    "path",
    [
        "objects/../../../escaped.txt",
        "/tmp/escaped.txt",
        "pki/../../escaped.txt",
        "objects/clinic-a/.hidden",
        "database.sqlite3/../../escaped.txt",
        "manifest.json",
    ],
)
def test_a_hostile_listing_cannot_write_outside_the_target(
    backed_up: tuple[HubApp, Path], tmp_path: Path, path: str
) -> None:
    """A listing edited with its hash put in the manifest (no signature protects a backup:
    keep it where only the hub's operators can write) still names only files inside it."""
    _, directory = backed_up
    sums = directory / "SHA256SUMS"
    evil = sums.read_text() + f"{'a' * 64}  {path}\n"
    sums.write_text(evil)
    manifest_path = directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256sums"] = hashlib.sha256(evil.encode()).hexdigest()
    manifest["files"] += 1
    manifest_path.write_text(json.dumps(manifest))
    target = Target(f"sqlite:///{tmp_path / 'new' / 'hub.sqlite3'}", tmp_path / "new")
    with pytest.raises(domain.BackupCorrupt, match="malformed"):
        domain.restore(target.settings(), directory, Caller.console())
    assert not (tmp_path / "escaped.txt").exists() and not target.data_dir.exists()


def test_an_object_replaced_by_a_symbolic_link_is_refused(
    backed_up: tuple[HubApp, Path], tmp_path: Path
) -> None:
    _, directory = backed_up
    dcm = next((directory / "objects").rglob("*.dcm"))
    outside = tmp_path / "outside.dcm"
    outside.write_bytes(dcm.read_bytes())  # the same bytes, so the same SHA-256
    dcm.unlink()
    dcm.symlink_to(outside)
    target = Target(f"sqlite:///{tmp_path / 'new' / 'hub.sqlite3'}", tmp_path / "new")
    result = target.cli("admin", "restore", str(directory))
    assert result.returncode == 4, result.stdout + result.stderr
    assert "not a regular file" in result.stdout and not target.data_dir.exists()


def test_a_backup_never_overwrites_and_is_console_only(hub: HubApp, tmp_path: Path) -> None:
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "old-backup.txt").write_text("keep me")
    result = target_of(hub).cli("admin", "backup", str(occupied))
    assert result.returncode == 1 and "not empty" in result.stdout
    assert [p.name for p in occupied.iterdir()] == ["old-backup.txt"]
    # Not inside what it protects.
    inside = hub.data_dir / "objects" / "backup"
    with pytest.raises(domain.BackupError, match="inside the hub's data directory"):
        domain.backup(target_of(hub).settings(), inside, Caller.console())
    assert not inside.exists()

    with hub.sessions() as session:
        admin = session.scalars(select(User).where(User.username == "admin")).one()
        session.expunge(admin)
    caller = Caller(principal=admin, source_ip="127.0.0.1")
    with pytest.raises(Forbidden):
        domain.backup(target_of(hub).settings(), tmp_path / "by-http", caller)
    with pytest.raises(Forbidden):
        domain.restore(target_of(hub).settings(), tmp_path / "by-http", caller)
    assert not (tmp_path / "by-http").exists()


def test_a_nightly_backup_hard_links_what_the_last_one_holds(
    backed_up: tuple[HubApp, Path], tmp_path: Path
) -> None:
    hub, first = backed_up
    first_manifest = json.loads((first / "manifest.json").read_text())
    count = first_manifest["objects"]["count"]
    ingest_study(hub)  # one new study since
    # One object of the earlier backup went bad: it is copied afresh, never linked.
    damaged = next((first / "objects").rglob("*.pdf"))
    damaged.write_bytes(b"bit rot")
    second = tmp_path / "second"
    result = target_of(hub).cli("admin", "backup", str(second), "--link-dest", str(first))
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = json.loads((second / "manifest.json").read_text())
    assert manifest["objects"]["count"] == count + 1
    assert manifest["objects"]["linked"] == count - 1
    key = damaged.relative_to(first).as_posix()
    assert (second / key).stat().st_ino != damaged.stat().st_ino
    linked = next(p for p in (first / "objects").rglob("*.dcm"))
    assert (second / linked.relative_to(first)).stat().st_ino == linked.stat().st_ino
    checked = target_of(hub).cli("admin", "verify-backup", str(second))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"backup OK: {manifest['files']} files intact" in checked.stdout
    target = Target(f"sqlite:///{tmp_path / 'new' / 'hub.sqlite3'}", tmp_path / "new")
    result = target.cli("admin", "restore", str(second))
    assert result.returncode == 0, result.stdout + result.stderr
    assert objects_of(target.data_dir) == objects_of(hub.data_dir)

    # An incomplete earlier backup is no base to link from: refused before anything is made.
    (first / "manifest.json").unlink()
    third = tmp_path / "third"
    result = target_of(hub).cli("admin", "backup", str(third), "--link-dest", str(first))
    assert result.returncode == 1 and "not a complete backup" in result.stdout
    assert not third.exists()


def test_a_damaged_live_store_is_reported_by_the_backup(hub: HubApp, tmp_path: Path) -> None:
    populate(hub)
    objects = hub.data_dir / "objects"
    changed = next(objects.rglob("*.pdf"))
    changed.write_bytes(b"not the signed PDF")
    result = target_of(hub).cli("admin", "backup", str(tmp_path / "one"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning: 1 object(s) differ" in result.stdout and changed.name in result.stdout
    manifest = json.loads((tmp_path / "one" / "manifest.json").read_text())
    key = changed.relative_to(objects).as_posix()
    assert manifest["changed_objects"] == [key] and manifest["changed_objects_count"] == 1

    gone = next(objects.rglob("*.dcm"))
    gone.unlink()
    with pytest.raises(domain.BackupError, match="1 object\\(s\\) the database references"):
        domain.backup(target_of(hub).settings(), tmp_path / "two", Caller.console())
    assert not (tmp_path / "two" / "manifest.json").exists()
    last = _events(hub.database_url)[-1]
    assert last.action == "admin.backup"
    assert last.detail["op"] == "failed" and last.detail["error"] == "backup_failed"


def test_a_restore_stopped_part_way_says_so_and_is_not_mistaken_for_a_hub(
    backed_up: tuple[HubApp, Path], tmp_path: Path
) -> None:
    _, directory = backed_up
    target = Target(f"sqlite:///{tmp_path / 'new' / 'hub.sqlite3'}", tmp_path / "new")

    def interrupt(stage: str, done: int, total: int) -> None:
        if stage == "objects":
            raise KeyboardInterrupt

    with pytest.raises(domain.BackupError, match="stopped part-way: it was interrupted"):
        domain.restore(target.settings(), directory, Caller.console(), progress=interrupt)
    # The objects went first, the database not at all: no half-restored hub can start.
    assert objects_of(target.data_dir)
    assert not (target.data_dir / "hub.sqlite3").exists()
    with pytest.raises(domain.RestoreTargetNotEmpty):
        domain.restore(target.settings(), directory, Caller.console())
    shutil.rmtree(target.data_dir)  # emptied, as the message says
    restored = domain.restore(target.settings(), directory, Caller.console())
    assert restored.audit_events == restored.manifest["audit"]["last_id"] + 1


# --- the S3 store, and a backup older than the hub ---------------------------------------------


def test_a_backup_restores_into_an_s3_hub_and_an_s3_hub_backs_up(
    backed_up: tuple[HubApp, Path], s3_server: S3Server, tmp_path: Path
) -> None:
    """Filesystem backup -> S3 hub -> its backup -> filesystem hub: the same objects all along."""
    hub, directory = backed_up
    expected = objects_of(hub.data_dir)
    manifest = json.loads((directory / "manifest.json").read_text())
    bucket = f"restore-{uuid.uuid4().hex[:20]}"
    s3_env = {
        "IMAGING_HUB_OBJECT_STORE": "s3",
        "IMAGING_HUB_S3_ENDPOINT": s3_server.endpoint,
        "IMAGING_HUB_S3_ACCESS_KEY": s3_server.access_key,
        "IMAGING_HUB_S3_SECRET_KEY": s3_server.secret_key,
        "IMAGING_HUB_S3_BUCKET": bucket,
    }
    on_s3 = Target(f"sqlite:///{tmp_path / 's3-hub' / 'hub.sqlite3'}", tmp_path / "s3-hub", s3_env)
    try:
        result = on_s3.cli("admin", "restore", str(directory))
        assert result.returncode == 0, result.stdout + result.stderr
        store = s3_server.store(bucket, create_bucket=False)
        try:
            referenced = {k for k, _ in snapshot_of(on_s3.database_url)["instances"]}
            stored = set(store.list(""))
            assert referenced <= stored and len(stored) == manifest["objects"]["count"]
            for key in stored:
                assert hashlib.sha256(store.get(key)).hexdigest() == expected[key]
        finally:
            store.close()
        # Non-empty now: a second restore into the same bucket is refused.
        with pytest.raises(domain.RestoreTargetNotEmpty, match="object store holds objects"):
            domain.restore(on_s3.settings_with(s3_server, bucket), directory, Caller.console())

        second = tmp_path / "backup-of-s3"
        result = on_s3.cli("admin", "backup", str(second))
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads((second / "manifest.json").read_text())["object_store"]["kind"] == "s3"
        back = Target(f"sqlite:///{tmp_path / 'fs-hub' / 'hub.sqlite3'}", tmp_path / "fs-hub")
        result = back.cli("admin", "restore", str(second))
        assert result.returncode == 0, result.stdout + result.stderr
        assert (
            objects_of(back.data_dir).items()
            >= {k: v for k, v in expected.items() if k in stored}.items()
        )
        verify = back.cli("admin", "audit", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        remove_bucket(s3_server, bucket)


def test_a_backup_of_an_older_schema_is_upgraded_on_restore(tmp_path: Path) -> None:
    older = "0007_report_key_image"
    source = Target(f"sqlite:///{tmp_path / 'old' / 'hub.sqlite3'}", tmp_path / "old")
    source.data_dir.mkdir()
    engine = make_engine(source.database_url)
    try:
        upgrade(engine, older)
    finally:
        engine.dispose()
    directory = tmp_path / "backup"
    result = source.cli("admin", "backup", str(directory))
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((directory / "manifest.json").read_text())["alembic_revision"] == older

    target = Target(f"sqlite:///{tmp_path / 'new' / 'hub.sqlite3'}", tmp_path / "new")
    result = target.cli("admin", "restore", str(directory))
    assert result.returncode == 0, result.stdout + result.stderr
    head = ScriptDirectory.from_config(alembic_config(target.database_url)).get_current_head()
    assert f"{older} -> {head}" in result.stdout
    verify = target.cli("admin", "audit", "verify")
    assert verify.returncode == 0 and "audit trail OK: 2 events" in verify.stdout

    # A backup at a revision this hub does not know (made by a newer hub) is refused.
    copy = tmp_path / "from-the-future"
    shutil.copytree(directory, copy)
    database = copy / "database.sqlite3"
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0999_future'")
    conn.close()
    sums = (copy / "SHA256SUMS").read_text().splitlines()
    sums[0] = f"{hashlib.sha256(database.read_bytes()).hexdigest()}  database.sqlite3"
    (copy / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["alembic_revision"] = "0999_future"
    manifest["sha256sums"] = hashlib.sha256((copy / "SHA256SUMS").read_bytes()).hexdigest()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    other = Target(f"sqlite:///{tmp_path / 'other' / 'hub.sqlite3'}", tmp_path / "other")
    with pytest.raises(domain.BackupIncompatible, match="does not know"):
        domain.restore(other.settings(), copy, Caller.console())
    assert not other.data_dir.exists()


def test_every_kind_of_object_the_hub_writes_is_one_a_backup_copies() -> None:
    """The backup copies the objects the snapshot's rows reference (instances, signed report
    PDFs). A new place writing objects must be taught to admin/backup.py (which rows point at
    them) and added here: otherwise backups would silently miss them."""
    src = Path(domain.__file__).resolve().parents[2]
    writers: set[str] = set()
    for path in src.rglob("*.py"):
        if path.is_relative_to(src / "storage"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("put", "put_stream")
                and "store" in ast.unparse(node.func.value).lower()
            ):
                writers.add(path.relative_to(src).as_posix())
    covered = {  # -> Instance.object_key, Report.object_key
        "worklist/studies/registration.py",
        "worklist/reports/objects.py",
        "worklist/reports/service.py",
    }
    assert writers == covered


def test_pg_dump_of_the_servers_version_is_found_or_refused_clearly(
    postgres_url: str, tmp_path: Path
) -> None:
    old = tmp_path / "old-bin"
    old.mkdir()
    for name in ("pg_dump", "pg_restore"):
        program = old / name
        program.write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) 13.16'\n")
        program.chmod(0o755)
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            found = dump.pg_tools(conn)
            assert found.server_major == 15 and found.bin_dir == Path("/usr/lib/postgresql/15/bin")
            with pytest.raises(dump.DatabaseDumpError, match=r"PostgreSQL 15 or newer.*13"):
                dump.pg_tools(conn, old)
            with pytest.raises(dump.DatabaseDumpError, match="no pg_dump and pg_restore there"):
                dump.pg_tools(conn, tmp_path / "nowhere")
    finally:
        engine.dispose()
