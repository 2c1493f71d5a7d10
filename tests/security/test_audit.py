"""The audit trail: hash chain, tamper detection (edit, delete), serialized appends, batching,
the admin API with filters and CSV export, and ``imaging-hub admin audit verify``."""

import csv
import io
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.migrate import upgrade
from imaging_hub.worklist.db.models import AuditEvent
from imaging_hub.worklist.db.session import make_engine, make_session_factory
from tests.security.conftest import HubApp

OpenSessions = Callable[[str], sessionmaker[Session]]


@pytest.fixture
def open_sessions() -> Iterator[OpenSessions]:
    """Sessions on a migrated database at a URL; every engine is disposed at teardown."""
    engines: list[Engine] = []

    def open_(url: str) -> sessionmaker[Session]:
        engine = make_engine(url)
        engines.append(engine)
        upgrade(engine)
        return make_session_factory(engine)

    try:
        yield open_
    finally:
        for engine in engines:
            engine.dispose()


def _append(sessions: sessionmaker[Session], n: int, prefix: str = "t") -> None:
    with sessions() as session:
        for i in range(n):
            audit.record(
                session,
                actor=None,
                action="study.opened",
                study_uid=f"1.2.3.{i}",
                source_ip="127.0.0.1",
                detail={"n": i, "who": prefix, "name": "张三^三"},
            )
            session.commit()


def _verify_cli(url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, IMAGING_HUB_DATABASE_URL=url, IMAGING_HUB_DATA_DIR=str(tmp_path))
    return subprocess.run(
        [sys.executable, "-m", "imaging_hub", "admin", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_chain_verifies_and_detects_an_edited_row(
    tmp_path: Path, open_sessions: OpenSessions
) -> None:
    url = f"sqlite:///{tmp_path / 'a.sqlite3'}"
    sessions = open_sessions(url)
    _append(sessions, 5)
    with sessions() as session:
        report = audit.verify_chain(session)
        assert (report.events, report.last_id) == (5, 5)
    ok = _verify_cli(url, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK: 5 events" in ok.stdout
    with sessions() as session:
        session.execute(text("UPDATE audit_events SET source_ip = '10.0.0.9' WHERE id = 3"))
        session.commit()
        with pytest.raises(audit.AuditChainBroken) as info:
            audit.verify_chain(session)
        assert info.value.event_id == 3
    bad = _verify_cli(url, tmp_path)
    assert bad.returncode == 1
    assert "event 3" in bad.stdout


@pytest.mark.parametrize(("deleted", "first_bad"), [(2, 2), (5, 5)])
def test_chain_detects_a_deleted_row(
    tmp_path: Path, open_sessions: OpenSessions, deleted: int, first_bad: int
) -> None:
    url = f"sqlite:///{tmp_path / 'a.sqlite3'}"
    sessions = open_sessions(url)
    _append(sessions, 5)
    with sessions() as session:
        session.execute(text(f"DELETE FROM audit_events WHERE id = {deleted}"))
        session.commit()
        with pytest.raises(audit.AuditChainBroken) as info:
            audit.verify_chain(session)
        assert info.value.event_id == first_bad
    result = _verify_cli(url, tmp_path)
    assert result.returncode == 1
    assert f"event {first_bad}" in result.stdout


def test_a_rehashed_edit_is_still_caught_by_the_next_link(
    tmp_path: Path, open_sessions: OpenSessions
) -> None:
    """An attacker who edits a row and recomputes its hash breaks the next row's prev_hash."""
    sessions = open_sessions(f"sqlite:///{tmp_path / 'a.sqlite3'}")
    _append(sessions, 4)
    with sessions() as session:
        row = session.get(AuditEvent, 2)
        assert row is not None
        row.detail = {"n": 99}
        row.hash = audit.event_hash(row)
        session.commit()
        with pytest.raises(audit.AuditChainBroken) as info:
            audit.verify_chain(session)
        assert info.value.event_id == 3


def _concurrent_appends(sessions: sessionmaker[Session]) -> None:
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            _append(sessions, 15, prefix=name)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with sessions() as session:
        report = audit.verify_chain(session)
    assert report.events == 90


def test_concurrent_writers_never_fork_the_chain_sqlite(
    tmp_path: Path, open_sessions: OpenSessions
) -> None:
    _concurrent_appends(open_sessions(f"sqlite:///{tmp_path / 'a.sqlite3'}"))


@pytest.mark.postgres
def test_concurrent_writers_never_fork_the_chain_postgres(
    postgres_url: str, open_sessions: OpenSessions
) -> None:
    _concurrent_appends(open_sessions(postgres_url))


def test_access_batching_one_event_per_study_per_session_per_window() -> None:
    batcher = audit.AccessBatcher(window=300)
    key = ("token:1", audit.FRAMES_FETCHED, "1.2.3")
    assert batcher.should_record(key, now=1000.0)
    assert not any(batcher.should_record(key, now=1000.0 + i) for i in range(1, 300))
    assert batcher.should_record(("token:2", audit.FRAMES_FETCHED, "1.2.3"), now=1001.0)
    assert batcher.should_record(("token:1", audit.FRAMES_FETCHED, "1.2.4"), now=1001.0)
    assert batcher.should_record(key, now=1300.0)


def test_csv_cells_are_formula_safe() -> None:
    for hostile in ('=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)", "\t=1"):
        assert audit.csv_cell(hostile).startswith("'")
    assert audit.csv_cell("张三") == "张三"
    assert audit.csv_cell(7) == "7"


def test_admin_audit_api_filters_and_csv(hub_app: HubApp) -> None:
    client = hub_app.client
    # Failed and successful logins are audited.
    bad = client.post("/api/v1/auth/token", data={"username": "rad1", "password": "wrong-password"})
    assert bad.status_code == 401
    good = client.post(
        "/api/v1/auth/token", data={"username": "rad1", "password": hub_app.passwords["rad1"]}
    )
    assert good.status_code == 200
    with hub_app.sessions() as session:
        audit.record(
            session,
            actor=None,
            action=audit.STUDY_OPENED,
            study_uid="1.2.840.99",
            detail={"note": "=cmd|' /C calc'!A0"},
        )
        session.commit()
    admin = hub_app.headers("admin")
    everything = client.get("/api/v1/admin/audit", headers=admin).json()["items"]
    actions = [e["action"] for e in everything]
    assert audit.LOGIN_FAILED in actions and audit.LOGIN in actions
    assert everything == sorted(everything, key=lambda e: -e["id"])
    by_user = client.get("/api/v1/admin/audit", params={"user": "rad1"}, headers=admin).json()
    assert {e["actor"] for e in by_user["items"]} == {"rad1"}
    by_study = client.get(
        "/api/v1/admin/audit", params={"study": "1.2.840.99"}, headers=admin
    ).json()["items"]
    assert [e["action"] for e in by_study] == [audit.STUDY_OPENED]
    none = client.get(
        "/api/v1/admin/audit", params={"since": "2999-01-01T00:00:00Z"}, headers=admin
    ).json()["items"]
    assert none == []
    exported = client.get("/api/v1/admin/audit.csv", params={"study": "1.2.840.99"}, headers=admin)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert rows[0][:3] == ["id", "at", "actor"]
    assert len(rows) == 2
    detail_cell = rows[1][rows[0].index("detail")]
    assert "cmd" in detail_cell and not detail_cell.startswith("=")
    # The export itself is audited, and the chain still verifies.
    after = client.get(
        "/api/v1/admin/audit", params={"action": audit.AUDIT_EXPORTED}, headers=admin
    ).json()["items"]
    assert len(after) == 1 and after[0]["actor"] == "admin"
    with hub_app.sessions() as session:
        audit.verify_chain(session)


def test_only_the_audit_module_creates_audit_rows() -> None:
    src = Path(__file__).resolve().parents[2] / "src" / "imaging_hub"
    offenders = [
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if re.search(r"(?<!class )\bAuditEvent\(", p.read_text(encoding="utf-8"))
        and p.relative_to(src).as_posix() != "worklist/audit/trail.py"
    ]
    assert offenders == [], f"write audit events with worklist.audit.trail.record: {offenders}"
