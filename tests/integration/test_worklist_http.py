"""The worklist over real HTTP: a hub process, its API's rules, and 50 concurrent claimers.

The concurrency test runs ``imaging-hub hub serve`` with three uvicorn worker processes against
PostgreSQL: each ``next`` runs in whichever worker the kernel hands the connection to, so only
the database's row locks keep two radiologists from the same study.
"""

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from imaging_hub.worklist.db.models import (
    Institution,
    Priority,
    Role,
    Study,
    StudyEvent,
    StudyStatus,
)
from tests.peers.hub import HubProcess, start_hub_process
from tests.peers.net import wait_until
from tests.worklist_support import add_study, add_user, issue_token, snapshot

API = "/api/v1"


def test_worklist_api_rules(hub: HubProcess) -> None:
    with hub.sessions() as db:
        stat = add_study(db, priority=Priority.stat, modalities=("CT",), body_part="HEAD")
        routine = add_study(db, priority=Priority.routine, clinic="clinic-b")
        stat_uid, routine_uid = stat.study_instance_uid, routine.study_instance_uid
    rad1, rad2, admin = hub.client("rad1"), hub.client("rad2"), hub.client("admin")
    staff, consult = hub.client("staff-a"), hub.client("consult1")
    try:
        with hub.sessions() as db:
            before = snapshot(db)
        # Clinic accounts cannot use the worklist; malformed filters are 422; unknown ids 404.
        assert staff.get(f"{API}/worklist").status_code == 403
        assert staff.post(f"{API}/worklist/next").status_code == 403
        assert staff.post(f"{API}/studies/{stat_uid}/claim").status_code == 403
        for bad in (
            {"status": "nonsense"},
            {"priority": "asap"},
            {"sort": "x"},
            {"limit": "0"},
            {"due_before": "yesterday"},
            {"due_before": "2026-11-22T08:00:00"},  # naive: no time zone
            {"clinic": "../etc"},
        ):
            r = rad1.get(f"{API}/worklist", params=bad)
            assert r.status_code == 422, bad
            assert r.headers["content-type"].startswith("application/problem+json")
        assert rad1.post(f"{API}/studies/1.2.3.4/claim").status_code == 404
        assert rad1.post(f"{API}/studies/not-a-uid/claim").status_code == 422
        assert rad1.get(f"{API}/studies/1.2.3.4").status_code == 404
        assert consult.post(f"{API}/worklist/next").status_code == 403
        assert admin.post(f"{API}/worklist/next").status_code == 403
        assert rad1.post(f"{API}/studies/{stat_uid}/release").status_code == 409
        assert rad1.post(f"{API}/studies/{stat_uid}/heartbeat").status_code == 409
        assert (
            rad1.post(f"{API}/studies/{stat_uid}/priority", json={"priority": "asap"}).status_code
            == 422
        )
        assert (
            rad1.post(f"{API}/studies/{stat_uid}/assign", json={"username": "rad2"}).status_code
            == 403
        )
        assert staff.get(f"{API}/stats/volume").status_code == 403
        assert admin.get(f"{API}/stats/volume", params={"start": "2026-02-30"}).status_code == 422
        r = admin.get(f"{API}/stats/volume", params={"start": "2026-11-22", "end": "2026-11-01"})
        assert r.status_code == 409 and "ends before it starts" in r.json()["detail"]
        with hub.sessions() as db:
            assert snapshot(db) == before

        # STAT first, then the routine one, then nothing (204).
        r = rad1.post(f"{API}/worklist/next")
        assert r.status_code == 200, r.text
        assert (r.json()["study_instance_uid"], r.json()["status"]) == (stat_uid, "in_progress")
        assert r.json()["assigned_to"] == "rad1"
        r = rad2.post(f"{API}/studies/{stat_uid}/claim")
        assert r.status_code == 409 and "another radiologist" in r.json()["detail"]
        assert rad1.post(f"{API}/studies/{stat_uid}/heartbeat").status_code == 200
        mine = rad1.get(f"{API}/worklist", params={"assigned_to_me": "true"}).json()["items"]
        assert [i["study_instance_uid"] for i in mine] == [stat_uid]
        assert rad2.get(f"{API}/worklist", params={"assigned_to_me": "true"}).json()["items"] == []
        r = rad2.post(f"{API}/worklist/next")
        assert r.json()["study_instance_uid"] == routine_uid
        assert rad2.post(f"{API}/worklist/next").status_code == 204

        # Admin reassignment, then the escalation round trip over HTTP.
        r = admin.post(f"{API}/studies/{routine_uid}/assign", json={"username": "rad1"})
        assert r.status_code == 200 and r.json()["assigned_to"] == "rad1"
        r = rad1.post(
            f"{API}/studies/{stat_uid}/escalate",
            json={"institution": "province", "question": "脑出血？ Haemorrhage?"},
        )
        assert r.status_code == 201, r.text
        consultation = r.json()
        assert consultation["status"] == "open"
        seen = consult.get(f"{API}/worklist").json()["items"]
        assert [i["study_instance_uid"] for i in seen] == [stat_uid]
        assert [n["kind"] for n in consult.get(f"{API}/notifications").json()] == ["consultation"]
        assert consult.get(f"{API}/consultations").json()[0]["question"].startswith("脑出血")
        r = consult.post(
            f"{API}/consultations/{consultation['id']}/opinion", json={"opinion": "未见出血。"}
        )
        assert r.status_code == 200 and r.json()["status"] == "answered"
        r = consult.post(f"{API}/consultations/{consultation['id']}/opinion", json={"opinion": "x"})
        assert r.status_code == 409
        detail = rad1.get(f"{API}/studies/{stat_uid}").json()
        assert detail["study"]["status"] == "in_progress"
        assert detail["study"]["assigned_to"] == "rad1"
        assert [e["kind"] for e in detail["timeline"]] == [
            "complete",
            "claimed",
            "escalated",
            "opinion",
        ]
        assert detail["timeline"][3]["actor"] == "consult1"
        assert detail["consultations"][0]["opinion"] == "未见出血。"
        assert detail["series"][0]["modality"] == "CT"
        # Clinic staff see their own clinic's study, not the other clinic's.
        assert staff.get(f"{API}/studies/{stat_uid}").status_code == 200
        assert staff.get(f"{API}/studies/{routine_uid}").status_code == 404
        for path in ("volume", "turnaround", "sla", "workload"):
            r = admin.get(f"{API}/stats/{path}")
            assert r.status_code == 200, (path, r.text)
            assert r.json()["window"]["timezone"] == "Asia/Shanghai"
        assert admin.get(f"{API}/admin/conflicts").json() == []
        assert rad1.get(f"{API}/admin/conflicts").status_code == 403
    finally:
        for client in (rad1, rad2, admin, staff, consult):
            client.close()


def test_lease_expiry_and_overdue_stat_over_http(tmp_path: Path) -> None:
    """The sweep in the hub process returns abandoned studies and pushes overdue STAT."""
    hub = start_hub_process(
        tmp_path / "hub",
        extra_env={"IMAGING_HUB_CLAIM_LEASE_SECONDS": "2", "IMAGING_HUB_SWEEP_SECONDS": "0.3"},
    )
    try:
        with hub.sessions() as db:
            overdue = add_study(
                db, priority=Priority.stat, completed_at=datetime.now(UTC) - timedelta(hours=1)
            )
            abandoned = add_study(db, priority=Priority.urgent)
            kept = add_study(db, priority=Priority.routine)
        with hub.client("rad1") as rad1, hub.client("rad2") as rad2:
            for uid in (abandoned.study_instance_uid, kept.study_instance_uid):
                assert rad1.post(f"{API}/studies/{uid}/claim").status_code == 200

            def expired() -> bool | None:
                rad1.post(f"{API}/studies/{kept.study_instance_uid}/heartbeat").raise_for_status()
                with hub.sessions() as db:
                    n = db.scalar(
                        select(func.count(StudyEvent.id)).where(StudyEvent.kind == "lease_expired")
                    )
                return True if n else None

            wait_until(expired, timeout=15, interval=0.5)
            with hub.sessions() as db:
                study = db.scalar(
                    select(Study).where(Study.study_instance_uid == abandoned.study_instance_uid)
                )
                assert study is not None
                assert (study.status, study.assigned_to_id) == (StudyStatus.unread, None)
                held = db.scalar(
                    select(Study).where(Study.study_instance_uid == kept.study_instance_uid)
                )
                assert held is not None and held.status == StudyStatus.in_progress
            notes = rad2.get(f"{API}/notifications").json()
            assert [(n["kind"], n["study_instance_uid"]) for n in notes] == [
                ("overdue_stat", overdue.study_instance_uid)
            ]
            r = rad2.post(f"{API}/notifications/{notes[0]['id']}/read")
            assert r.status_code == 204
            assert rad2.get(f"{API}/notifications", params={"unread": "true"}).json() == []
            assert rad1.post(f"{API}/notifications/{notes[0]['id']}/read").status_code == 404
    finally:
        hub.stop()


RADIOLOGISTS = 50
STUDIES = 150


@pytest.mark.postgres
def test_fifty_concurrent_next_callers_on_postgres_with_three_workers(
    tmp_path: Path, postgres_url: str
) -> None:
    hub = start_hub_process(
        tmp_path / "hub", database_url=postgres_url, extra_env={"IMAGING_HUB_WORKERS": "3"}
    )
    try:
        with hub.sessions() as db:
            hub_inst = db.scalar(select(Institution).where(Institution.code == "hub"))
            assert hub_inst is not None
            clinic_b = db.scalar(select(Institution).where(Institution.code == "clinic-b"))
            assert clinic_b is not None
            for i in range(RADIOLOGISTS):
                # A few radiologists cover clinic-b only: they must never get a clinic-a study.
                clinics = [clinic_b.id] if i % 10 == 0 else []
                add_user(
                    db, f"r{i:02d}", Role.radiologist, hub_inst, on_duty=True, clinic_ids=clinics
                )
            db.commit()
            for i in range(STUDIES):
                add_study(
                    db,
                    clinic="clinic-b" if i % 5 == 0 else "clinic-a",
                    priority=[Priority.stat, Priority.urgent, Priority.routine][i % 3],
                )
            restricted = {f"r{i:02d}" for i in range(0, RADIOLOGISTS, 10)}
            clinic_of = {s.study_instance_uid: s.clinic_id for s in db.scalars(select(Study))}
        tokens = {f"r{i:02d}": issue_token(hub.sessions, f"r{i:02d}") for i in range(RADIOLOGISTS)}
        got: dict[str, list[str]] = {name: [] for name in tokens}
        errors: list[str] = []
        start = threading.Barrier(RADIOLOGISTS)

        def radiologist(name: str) -> None:
            with httpx.Client(
                base_url=hub.url, headers={"Authorization": f"Bearer {tokens[name]}"}, timeout=60
            ) as client:
                start.wait(timeout=60)
                for _ in range(STUDIES):
                    r = client.post(f"{API}/worklist/next")
                    if r.status_code == 204:
                        return
                    if r.status_code != 200:
                        errors.append(f"{name}: {r.status_code} {r.text}")
                        return
                    got[name].append(r.json()["study_instance_uid"])

        threads = [threading.Thread(target=radiologist, args=(n,)) for n in tokens]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=100)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        handed = Counter(uid for uids in got.values() for uid in uids)
        assert set(handed) == set(clinic_of), "every study is handed out"
        assert max(handed.values()) == 1, "no study is handed out twice"
        assert sum(1 for uids in got.values() if uids) > 10, "the work was spread"
        for name in restricted:
            assert all(clinic_of[uid] == clinic_b.id for uid in got[name]), name
        with hub.sessions() as db:
            rows = db.execute(
                select(Study.study_instance_uid, Study.assigned_to_id, Study.status)
            ).all()
            assert {r.status for r in rows} == {StudyStatus.in_progress}
            claims = db.scalar(
                select(func.count(StudyEvent.id)).where(StudyEvent.kind == "claimed")
            )
            assert claims == STUDIES
        log = hub.log_path.read_text()
        assert log.count("Started server process") == 3, "three uvicorn workers served"
    finally:
        hub.stop()
