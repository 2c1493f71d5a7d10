"""Accounts and sessions over HTTP: disabling, password change, logout, browser session with
CSRF, login throttling and lockout, admin user management, gateway credentials."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from imaging_hub.worklist.access.accounts import LoginThrottle, TooManyAttempts
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import AccessToken, AuditEvent, Gateway, User
from tests.security.conftest import HubApp

ME = "/api/v1/auth/me"


def _login(hub_app: HubApp, username: str, password: str | None = None) -> str:
    response = hub_app.client.post(
        "/api/v1/auth/token",
        data={"username": username, "password": password or hub_app.passwords[username]},
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_disabled_user_is_refused_on_the_next_request(hub_app: HubApp) -> None:
    client = hub_app.client
    token = _login(hub_app, "rad1")
    assert client.get(ME, headers=_bearer(token)).status_code == 200
    disabled = client.post("/api/v1/admin/users/rad1/disable", headers=hub_app.headers("admin"))
    assert disabled.status_code == 200 and disabled.json()["is_active"] is False
    refused = client.get(ME, headers=_bearer(token))
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/v1/worklist", headers=_bearer(token)).status_code == 401
    # A disabled user cannot sign in again either; enabling restores sign-in (not old tokens).
    again = client.post(
        "/api/v1/auth/token", data={"username": "rad1", "password": hub_app.passwords["rad1"]}
    )
    assert again.status_code == 401
    client.post("/api/v1/admin/users/rad1/enable", headers=hub_app.headers("admin"))
    assert client.get(ME, headers=_bearer(token)).status_code == 401
    assert client.get(ME, headers=_bearer(_login(hub_app, "rad1"))).status_code == 200


def test_disabling_directly_in_the_database_also_takes_effect_at_once(hub_app: HubApp) -> None:
    token = _login(hub_app, "staff-a")
    assert hub_app.client.get(ME, headers=_bearer(token)).status_code == 200
    with hub_app.sessions() as session:
        user = session.scalars(select(User).where(User.username == "staff-a")).one()
        user.is_active = False
        session.commit()
    assert hub_app.client.get(ME, headers=_bearer(token)).status_code == 401


def test_password_change_revokes_other_tokens_and_keeps_this_one(hub_app: HubApp) -> None:
    client = hub_app.client
    first, second = _login(hub_app, "rad2"), _login(hub_app, "rad2")
    wrong = client.post(
        "/api/v1/auth/password",
        json={"current_password": "not-it", "new_password": "a-new-password-1"},
        headers=_bearer(first),
    )
    assert wrong.status_code == 403
    weak = client.post(
        "/api/v1/auth/password",
        json={"current_password": hub_app.passwords["rad2"], "new_password": "rad2"},
        headers=_bearer(first),
    )
    assert weak.status_code == 422
    changed = client.post(
        "/api/v1/auth/password",
        json={"current_password": hub_app.passwords["rad2"], "new_password": "a-new-password-1"},
        headers=_bearer(first),
    )
    assert changed.status_code == 204
    assert client.get(ME, headers=_bearer(first)).status_code == 200
    assert client.get(ME, headers=_bearer(second)).status_code == 401
    old = client.post(
        "/api/v1/auth/token", data={"username": "rad2", "password": hub_app.passwords["rad2"]}
    )
    assert old.status_code == 401
    _login(hub_app, "rad2", "a-new-password-1")


def test_logout_revokes_the_token(hub_app: HubApp) -> None:
    token = _login(hub_app, "consult1")
    assert hub_app.client.post("/api/v1/auth/logout", headers=_bearer(token)).status_code == 204
    assert hub_app.client.get(ME, headers=_bearer(token)).status_code == 401


def test_browser_session_cookie_and_csrf(hub_app: HubApp) -> None:
    client = hub_app.client
    assert client.get("/api/v1/auth/session").json() == {
        "authenticated": False,
        "username": None,
        "csrf_token": None,
        "expires_in": None,
    }
    signed_in = client.post(
        "/api/v1/auth/session",
        data={"username": "rad1", "password": hub_app.passwords["rad1"]},
    )
    assert signed_in.status_code == 200
    body = signed_in.json()
    cookies = signed_in.headers.get_list("set-cookie")
    session_cookie = next(c for c in cookies if c.startswith("ih_session="))
    csrf_cookie = next(c for c in cookies if c.startswith("ih_csrf="))
    for attribute in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert attribute.lower() in session_cookie.lower(), attribute
    assert "httponly" not in csrf_cookie.lower()
    csrf = body["csrf_token"]
    assert f"ih_csrf={csrf}" in csrf_cookie
    # The cookie authenticates reads...
    assert client.get(ME).json()["username"] == "rad1"
    assert client.get("/api/v1/auth/session").json()["csrf_token"] == csrf
    # ...but a state-changing request needs the CSRF header (a forged form cannot send it).
    forged = client.post(
        "/api/v1/auth/password",
        json={"current_password": hub_app.passwords["rad1"], "new_password": "hijacked-pw-1"},
    )
    assert forged.status_code == 403
    assert "CSRF" in forged.json()["detail"]
    wrong = client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": "0" * 64})
    assert wrong.status_code == 403
    session_token = client.cookies.get("ih_session")
    assert session_token
    with hub_app.sessions() as session:
        row = session.scalars(select(AccessToken).where(AccessToken.kind == "session")).one()
        assert row.revoked_at is None
    out = client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf})
    assert out.status_code == 204
    client.cookies.clear()
    stolen = client.get(ME, headers={"Cookie": f"ih_session={session_token}"})
    assert stolen.status_code == 401


def test_bearer_refuses_a_session_token(hub_app: HubApp) -> None:
    signed_in = hub_app.client.post(
        "/api/v1/auth/session",
        data={"username": "rad1", "password": hub_app.passwords["rad1"]},
    )
    token = hub_app.client.cookies.get("ih_session")
    hub_app.client.cookies.clear()
    assert signed_in.status_code == 200 and token
    assert hub_app.client.get(ME, headers=_bearer(token)).status_code == 401


def test_session_signout_and_idle_expiry(hub_app: HubApp) -> None:
    client = hub_app.client
    client.post(
        "/api/v1/auth/session",
        data={"username": "staff-b", "password": hub_app.passwords["staff-b"]},
    )
    assert client.get(ME).status_code == 200
    with hub_app.sessions() as session:
        row = session.scalars(select(AccessToken).where(AccessToken.kind == "session")).one()
        row.expires_at = row.expires_at - timedelta(hours=1)
        session.commit()
    assert client.get(ME).status_code == 401
    assert client.delete("/api/v1/auth/session").json()["authenticated"] is False
    assert "ih_session" not in client.cookies


def test_account_lockout_and_per_address_throttle(hub_app: HubApp) -> None:
    client = hub_app.client
    for _ in range(5):
        bad = client.post("/api/v1/auth/token", data={"username": "rad1", "password": "nope"})
        assert bad.status_code == 401
    locked = client.post(
        "/api/v1/auth/token", data={"username": "rad1", "password": hub_app.passwords["rad1"]}
    )
    assert locked.status_code == 401
    assert "locked" in locked.json()["detail"]
    # Spraying other usernames from one address hits the per-address throttle (8 here, to
    # keep the test short; 20 by default).
    hub_app.app.state.hub.login_throttle = LoginThrottle(max_failures=8, window=300)
    statuses = [
        client.post(
            "/api/v1/auth/token", data={"username": f"user{i}", "password": "x"}
        ).status_code
        for i in range(9)
    ]
    assert statuses[-1] == 429
    assert 401 in statuses
    throttled = client.post(
        "/api/v1/auth/token", data={"username": "rad2", "password": hub_app.passwords["rad2"]}
    )
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 0
    with hub_app.sessions() as session:
        failures = audit.list_events(session, audit.AuditFilter(action=audit.LOGIN_FAILED))
    assert len(failures) >= 13


def test_login_throttle_window() -> None:
    throttle = LoginThrottle(max_failures=3, window=60)
    for t in (0.0, 1.0, 2.0):
        throttle.check("10.0.0.1", now=t)
        throttle.failed("10.0.0.1", now=t)
    try:
        throttle.check("10.0.0.1", now=3.0)
    except TooManyAttempts as exc:
        assert exc.retry_after >= 57
    else:
        raise AssertionError("the fourth attempt should be throttled")
    throttle.check("10.0.0.2", now=3.0)  # another address is not affected
    throttle.check("10.0.0.1", now=61.0)  # the window moved on


def test_admin_user_management(hub_app: HubApp) -> None:
    client = hub_app.client
    admin = hub_app.headers("admin")
    created = client.post(
        "/api/v1/admin/users",
        json={
            "username": "rad3",
            "password": "initial-password-3",
            "role": "radiologist",
            "institution": "hub",
            "display_name": "陈医生",
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    assert created.json()["display_name"] == "陈医生"
    dup = client.post(
        "/api/v1/admin/users",
        json={
            "username": "rad3",
            "password": "initial-password-3",
            "role": "radiologist",
            "institution": "hub",
        },
        headers=admin,
    )
    assert dup.status_code == 409
    staff_at_hub = client.post(
        "/api/v1/admin/users",
        json={
            "username": "staffx",
            "password": "initial-password-3",
            "role": "clinic_staff",
            "institution": "hub",
        },
        headers=admin,
    )
    assert staff_at_hub.status_code == 409
    token = _login(hub_app, "rad3", "initial-password-3")
    moved = client.patch(
        "/api/v1/admin/users/rad3",
        json={"role": "consultant", "institution": "city"},
        headers=admin,
    )
    assert moved.status_code == 200 and moved.json()["role"] == "consultant"
    assert client.get(ME, headers=_bearer(token)).status_code == 401  # rights changed
    reset = client.post(
        "/api/v1/admin/users/rad3/password", json={"password": "second-password-3"}, headers=admin
    )
    assert reset.status_code == 204
    me = client.get(ME, headers=_bearer(_login(hub_app, "rad3", "second-password-3"))).json()
    assert me["role"] == "consultant" and me["institution"] == "city"
    assert "study.opinion" in me["permissions"]
    assert client.post("/api/v1/admin/users/nobody/disable", headers=admin).status_code == 404
    listed = client.get("/api/v1/admin/users", headers=admin).json()
    assert "rad3" in [u["username"] for u in listed]
    assert all("password" not in str(u) for u in listed)
    with hub_app.sessions() as session:
        ops = [
            e.detail.get("op")
            for e in audit.list_events(session, audit.AuditFilter(action=audit.ADMIN_USER))
        ]
    assert {"created", "updated", "password_reset"} <= set(ops)


def test_a_rotated_gateway_token_stops_when_its_grace_ends(hub_app: HubApp) -> None:
    client = hub_app.client
    admin = hub_app.headers("admin")
    created = client.post(
        "/api/v1/admin/gateways",
        json={"name": "gateway-clinic-b-2", "clinic": "clinic-b"},
        headers=admin,
    )
    first = created.json()["token"]
    second = client.post("/api/v1/admin/gateways/gateway-clinic-b-2/rotate", headers=admin).json()[
        "token"
    ]
    beat = "/api/v1/gateways/heartbeat"
    payload = {"version": "test", "queue_depth": 0, "bytes_pending": 0}
    assert client.post(beat, json=payload, headers=_bearer(first)).status_code == 204
    with hub_app.sessions() as session:  # 72 hours later
        gateway = session.scalars(select(Gateway).where(Gateway.name == "gateway-clinic-b-2")).one()
        gateway.previous_token_expires_at = datetime.now(UTC) - timedelta(seconds=1)
        session.commit()
    assert client.post(beat, json=payload, headers=_bearer(first)).status_code == 401
    assert client.post(beat, json=payload, headers=_bearer(second)).status_code == 204


def test_gateway_tokens_create_rotate_revoke(hub_app: HubApp) -> None:
    client = hub_app.client
    admin = hub_app.headers("admin")
    created = client.post(
        "/api/v1/admin/gateways",
        json={"name": "gateway-clinic-a-2", "clinic": "clinic-a", "ae_title": "CLINIC_A2"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    first = created.json()["token"]
    assert first.startswith("ihg_")
    complete = "/api/v1/gateways/heartbeat"
    payload = {"version": "test", "queue_depth": 0, "bytes_pending": 0}
    assert client.post(complete, json=payload, headers=_bearer(first)).status_code == 204
    rotated = client.post("/api/v1/admin/gateways/gateway-clinic-a-2/rotate", headers=admin)
    second = rotated.json()["token"]
    assert second != first
    # No downtime: both work, the previous one for 72 hours (said in the answer).
    until = datetime.fromisoformat(rotated.json()["previous_token_valid_until"])
    assert timedelta(hours=71) < until - datetime.now(UTC) <= timedelta(hours=72)
    for token in (first, second):
        assert client.post(complete, json=payload, headers=_bearer(token)).status_code == 204
    third = client.post("/api/v1/admin/gateways/gateway-clinic-a-2/rotate", headers=admin)
    assert client.post(complete, json=payload, headers=_bearer(first)).status_code == 401
    revoked = client.post("/api/v1/admin/gateways/gateway-clinic-a-2/revoke", headers=admin)
    assert revoked.json()["revoked"] is True
    for token in (second, third.json()["token"]):
        assert client.post(complete, json=payload, headers=_bearer(token)).status_code == 401
    # A gateway token is not a user token, and is never stored in clear.
    live = hub_app.gateway_tokens["clinic-a"]
    assert client.get(ME, headers=_bearer(live)).status_code == 403
    with hub_app.sessions() as session:
        dump = str(
            [
                (g.token_hash, g.previous_token_hash)
                for g in session.scalars(
                    select(
                        __import__("imaging_hub.worklist.db.models", fromlist=["Gateway"]).Gateway
                    )
                )
            ]
        )
    assert second not in dump and third.json()["token"] not in dump


def test_cli_and_http_write_one_audit_shape_for_user_create(hub_app: HubApp) -> None:
    """The domain writes the record, so both edges produce the same shape; the console adds
    only who ran it (via=cli, os_user) and where (source_ip=console)."""
    made = hub_app.client.post(
        "/api/v1/admin/users",
        json={
            "username": "shape-http",
            "password": "a-long-password-1",
            "role": "radiologist",
            "institution": "hub",
        },
        headers=hub_app.headers("admin"),
    )
    assert made.status_code == 201, made.text
    cli = hub_app.admin_cli(
        "user", "create", "shape-cli", "--role", "radiologist", "--institution", "hub"
    )
    assert cli.returncode == 0, cli.stderr
    with hub_app.sessions() as session:
        rows = {
            e.object_id: e
            for e in session.scalars(
                select(AuditEvent).where(
                    AuditEvent.action == audit.ADMIN_USER,
                    AuditEvent.object_id.in_(["shape-http", "shape-cli"]),
                )
            )
        }
        via_http, via_cli = rows["shape-http"], rows["shape-cli"]
        assert via_http.object_type == via_cli.object_type == "user"
        assert via_http.detail == {"op": "created", "role": "radiologist", "institution": "hub"}
        cli_detail = dict(via_cli.detail)
        assert cli_detail.pop("via") == "cli" and cli_detail.pop("os_user")
        assert cli_detail == via_http.detail
        assert via_cli.source_ip == "console" and via_cli.user_id is None
        admin_id = session.scalars(select(User.id).where(User.username == "admin")).one()
        assert via_http.user_id == admin_id


def test_an_admin_cannot_disable_or_demote_themselves(hub_app: HubApp) -> None:
    client = hub_app.client
    for method, path, body in (
        ("POST", "/api/v1/admin/users/admin/disable", None),
        ("PATCH", "/api/v1/admin/users/admin", {"is_active": False}),
        ("PATCH", "/api/v1/admin/users/admin", {"role": "radiologist", "institution": "hub"}),
    ):
        refused = client.request(method, path, json=body, headers=hub_app.headers("admin"))
        assert refused.status_code == 409, (path, refused.text)
        assert refused.json()["code"] == "last_admin"
    with hub_app.sessions() as session:
        admin = session.scalars(select(User).where(User.username == "admin")).one()
        assert admin.is_active and admin.role.value == "admin"
    # The admin's own token still works: nothing changed.
    assert client.get(ME, headers=hub_app.headers("admin")).status_code == 200


def test_the_last_active_admin_cannot_be_disabled_by_another_admin(hub_app: HubApp) -> None:
    client = hub_app.client
    created = client.post(
        "/api/v1/admin/users",
        json={
            "username": "admin2",
            "password": "Second-admin-passw0rd!",
            "role": "admin",
            "institution": "hub",
        },
        headers=hub_app.headers("admin"),
    )
    assert created.status_code == 201, created.text
    admin2 = {"Authorization": f"Bearer {_login(hub_app, 'admin2', 'Second-admin-passw0rd!')}"}
    # Two active admins: admin2 may disable admin ...
    assert client.post("/api/v1/admin/users/admin/disable", headers=admin2).status_code == 200
    # ... but then admin2 is the last one and cannot lose the role or be disabled by anyone.
    refused = client.post("/api/v1/admin/users/admin2/disable", headers=admin2)
    assert refused.status_code == 409 and refused.json()["code"] == "last_admin"
    with hub_app.sessions() as session:
        assert session.scalars(select(User).where(User.username == "admin2")).one().is_active
