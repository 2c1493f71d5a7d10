"""Administration of eligibility and shifts over the API: it works, it is audited, and bad input
is refused with a problem document and changes nothing."""

import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from imaging_hub.worklist.db.models import AuditEvent, Eligibility, Shift, User
from tests.security.conftest import HubApp

T0 = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)


def _state(hub_app: HubApp) -> tuple[object, ...]:
    with hub_app.sessions() as s:
        elig = s.execute(
            select(Eligibility.modalities, Eligibility.body_parts, Eligibility.clinic_ids)
            .join(User, User.id == Eligibility.user_id)
            .where(User.username == "rad1")
        ).one_or_none()
        shifts = s.execute(select(Shift.user_id, Shift.starts_at, Shift.ends_at)).all()
        audits = s.scalar(select(func.count(AuditEvent.id)))
        return (tuple(elig) if elig else None, sorted(shifts), audits)


def test_eligibility_round_trip_is_audited(hub_app: HubApp) -> None:
    admin = hub_app.headers("admin")
    url = "/api/v1/admin/users/rad1/eligibility"
    body = {"modalities": ["ct", "DX", "CT"], "body_parts": ["chest"], "clinics": ["clinic-b"]}
    response = hub_app.client.put(url, json=body, headers=admin)
    assert response.status_code == 200, response.text
    expected = {
        "username": "rad1",
        "modalities": ["CT", "DX"],
        "body_parts": ["CHEST"],
        "clinics": ["clinic-b"],
    }
    assert response.json() == expected
    assert hub_app.client.get(url, headers=admin).json() == expected
    with hub_app.sessions() as s:
        ops = [
            e.detail.get("op")
            for e in s.scalars(select(AuditEvent).where(AuditEvent.object_id == "rad1"))
        ]
    assert "eligibility_set" in ops
    # Back to "everything".
    cleared = hub_app.client.put(url, json={}, headers=admin).json()
    assert cleared == {"username": "rad1", "modalities": [], "body_parts": [], "clinics": []}


def test_shifts_add_list_delete_and_on_duty(hub_app: HubApp) -> None:
    admin = hub_app.headers("admin")
    start = datetime.now(UTC) - timedelta(hours=1)
    body = {
        "username": "rad2",
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(hours=8)).isoformat(),
    }
    created = hub_app.client.post("/api/v1/admin/shifts", json=body, headers=admin)
    assert created.status_code == 201, created.text
    shift = created.json()
    assert shift["username"] == "rad2"
    listed = hub_app.client.get(
        "/api/v1/admin/shifts", params={"username": "rad2"}, headers=admin
    ).json()
    assert [s["id"] for s in listed] == [shift["id"]]
    # An overlapping shift of the same radiologist is refused.
    again = hub_app.client.post("/api/v1/admin/shifts", json=body, headers=admin)
    assert again.status_code == 409
    assert "overlaps" in again.json()["detail"]
    # The shift puts rad2 on duty even without the manual flag: it can claim (204: no studies).
    with hub_app.sessions() as s:
        rad2 = s.scalars(select(User).where(User.username == "rad2")).one()
        rad2.on_duty = False
        s.commit()
    rad2_headers = hub_app.headers("rad2")
    assert hub_app.client.post("/api/v1/worklist/next", headers=rad2_headers).status_code == 204
    deleted = hub_app.client.delete(f"/api/v1/admin/shifts/{shift['id']}", headers=admin)
    assert deleted.status_code == 204
    off = hub_app.client.post("/api/v1/worklist/next", headers=rad2_headers)
    assert off.status_code == 403 and "not on duty" in off.json()["detail"]
    gone = hub_app.client.delete(f"/api/v1/admin/shifts/{shift['id']}", headers=admin)
    assert gone.status_code == 404


BAD_ELIGIBILITY = [
    ("rad1", {"modalities": ["C T"]}, 400),
    ("rad1", {"modalities": ["CT;DROP"]}, 400),
    ("rad1", {"modalities": ["CTCTCTCTCTCTCTCTC"]}, 422),  # longer than 16 characters
    ("rad1", {"body_parts": ["<script>"]}, 400),
    ("rad1", {"clinics": ["no-such-clinic"]}, 404),
    ("rad1", {"clinics": ["hub"]}, 409),  # not a clinic
    ("rad1", {"clinics": ["Clinic_A"]}, 422),
    ("rad1", {"modalities": ["CT"] * 65}, 422),
    ("rad1", {"modalities": "CT"}, 422),
    ("staff-a", {"modalities": ["CT"]}, 409),  # not a radiologist
    ("nobody", {"modalities": ["CT"]}, 404),
]


@pytest.mark.parametrize(("username", "body", "status"), BAD_ELIGIBILITY)
def test_bad_eligibility_is_refused_and_changes_nothing(
    hub_app: HubApp, username: str, body: dict[str, object], status: int
) -> None:
    admin = hub_app.headers("admin")
    before = _state(hub_app)
    response = hub_app.client.put(
        f"/api/v1/admin/users/{username}/eligibility", json=body, headers=admin
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert _state(hub_app) == before


def _shift(username: str, start: str, end: str) -> dict[str, str]:
    return {"username": username, "starts_at": start, "ends_at": end}


BAD_SHIFTS = [
    (_shift("rad1", "2026-11-23T08:00:00+08:00", "2026-11-23T08:00:00+08:00"), 400),
    (_shift("rad1", "2026-11-23T20:00:00+08:00", "2026-11-23T08:00:00+08:00"), 400),
    (_shift("rad1", "2026-11-23T08:00:00+08:00", "2026-11-24T08:00:01+08:00"), 400),
    (_shift("rad1", "2026-11-23T08:00:00", "2026-11-23T16:00:00"), 422),  # no time zone
    (_shift("rad1", "yesterday", "2026-11-23T16:00:00+08:00"), 422),
    (_shift("staff-a", "2026-11-23T08:00:00+08:00", "2026-11-23T16:00:00+08:00"), 409),
    (_shift("nobody", "2026-11-23T08:00:00+08:00", "2026-11-23T16:00:00+08:00"), 404),
    ({"username": "rad1"}, 422),
]


@pytest.mark.parametrize(("body", "status"), BAD_SHIFTS)
def test_bad_shift_is_refused_and_changes_nothing(
    hub_app: HubApp, body: dict[str, str], status: int
) -> None:
    admin = hub_app.headers("admin")
    before = _state(hub_app)
    response = hub_app.client.post("/api/v1/admin/shifts", json=body, headers=admin)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert _state(hub_app) == before


def test_only_admins_manage_duty(hub_app: HubApp) -> None:
    rad = hub_app.headers("rad1")
    body = _shift("rad1", T0.isoformat(), (T0 + timedelta(hours=1)).isoformat())
    assert hub_app.client.post("/api/v1/admin/shifts", json=body, headers=rad).status_code == 403
    put = hub_app.client.put(
        "/api/v1/admin/users/rad1/eligibility", json={"modalities": []}, headers=rad
    )
    assert put.status_code == 403
    assert hub_app.client.get("/api/v1/admin/shifts").status_code == 401


def _cli(hub_app: HubApp, *args: str) -> subprocess.CompletedProcess[str]:
    return hub_app.admin_cli("duty", *args)


def test_duty_cli(hub_app: HubApp) -> None:
    ok = _cli(hub_app, "eligibility", "rad1", "--modality", "ct", "--clinic", "clinic-a")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "modalities CT" in ok.stdout and "clinics clinic-a" in ok.stdout
    added = _cli(
        hub_app,
        "shift-add",
        "rad1",
        "--start",
        "2026-11-23T08:00+08:00",
        "--end",
        "2026-11-23T16:00+08:00",
    )
    assert added.returncode == 0, added.stdout + added.stderr
    listed = _cli(hub_app, "shift-list", "--user", "rad1")
    assert "rad1" in listed.stdout
    before = _state(hub_app)
    # Bad input: a clear message, exit code != 0, nothing changed.
    for args, message in [
        (("eligibility", "rad1", "--clinic", "hub"), "not a township or village clinic"),
        (("eligibility", "staff-a", "--modality", "CT"), "radiologists only"),
        (
            ("shift-add", "rad1", "--start", "tomorrow", "--end", "2026-11-23T16:00+08:00"),
            "ISO 8601",
        ),
        (
            (
                "shift-add",
                "rad1",
                "--start",
                "2026-11-23T09:00+08:00",
                "--end",
                "2026-11-23T10:00+08:00",
            ),
            "overlaps",
        ),
        (("shift-delete", "999"), "No shift"),
    ]:
        bad = _cli(hub_app, *args)
        assert bad.returncode != 0, args
        assert message in bad.stdout, (args, bad.stdout)
    assert _state(hub_app) == before
    with hub_app.sessions() as s:
        shift_id = s.scalars(select(Shift.id)).one()
    assert _cli(hub_app, "shift-delete", str(shift_id)).returncode == 0
    assert _state(hub_app)[1] == []
