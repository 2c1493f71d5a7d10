"""The lean WADO-RS frames route (worklist/dicomweb/fast.py) answers exactly like the FastAPI
route of the same path, for every caller and every kind of bad input, in one thread hop or,
when cheap, on the event loop; a revoked token, a disabled account or a moved account counts on
the very next request."""

import hashlib
import io
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio.to_thread
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from imaging_hub.worklist.access.accounts import revoke_access_token
from imaging_hub.worklist.audit import trail as audit
from imaging_hub.worklist.db.models import AuditEvent, Institution, User
from imaging_hub.worklist.dicomweb.fast import FastGet
from imaging_hub.worklist.studies.registration import register_instance
from tests.conftest import SAMPLES
from tests.security.conftest import HubApp

OCTETS = "multipart/related; type=application/octet-stream; transfer-syntax=*"
DECODED = "multipart/related; type=application/octet-stream"
# Native multi-frame, and JPEG-LS lossless (decoded on request, or sent as stored).
NATIVE = SAMPLES / "by-modality/MR/emri_small.dcm"  # 10 frames
JLS = SAMPLES / "by-modality/CR/RG2_JLSL.dcm"


def _store(hub_app: HubApp, path: Any, clinic: str = "clinic-a") -> str:
    """Register *path* for *clinic*; the WADO-RS URL of the instance."""
    data = path.read_bytes()
    with hub_app.sessions() as session:
        institution = session.scalars(select(Institution).where(Institution.code == clinic)).one()
        stored = register_instance(
            session,
            store=hub_app.app.state.hub.store,
            clinic=institution,
            body=io.BytesIO(data),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
    return (
        f"/dicomweb/studies/{stored.study_instance_uid}/series/{stored.series_instance_uid}"
        f"/instances/{stored.sop_instance_uid}"
    )


@contextmanager
def fastapi_routes_only(app: FastAPI) -> Iterator[None]:
    """The app without its FastGet routes: every request goes through FastAPI's routing."""
    saved = list(app.router.routes)
    app.router.routes[:] = [r for r in saved if not isinstance(r, FastGet)]
    try:
        yield
    finally:
        app.router.routes[:] = saved


def _normalized(response: httpx.Response) -> tuple[Any, ...]:
    """Status, content type, WWW-Authenticate and body, with the random boundary replaced."""
    content_type = response.headers.get("content-type", "")
    body = response.content
    boundary = re.search(r"boundary=([0-9a-f]+)", content_type)
    if boundary:
        content_type = content_type.replace(boundary.group(1), "B")
        body = body.replace(boundary.group(1).encode(), b"B")
    return (response.status_code, content_type, response.headers.get("www-authenticate"), body)


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls into the thread pool (FastAPI: one per blocking dependency and endpoint)."""
    count = [0]
    run_sync = anyio.to_thread.run_sync

    async def counted(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return await run_sync(*args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    return count


def test_fast_frames_route_answers_exactly_like_the_fastapi_route(
    hub_app: HubApp, hops: list[int]
) -> None:
    _compare_routes(hub_app, hops)


@pytest.mark.postgres
def test_fast_frames_route_on_postgres(pg_hub_app: HubApp, hops: list[int]) -> None:
    _compare_routes(pg_hub_app, hops)
    # PostgreSQL reads are network round trips: never on the event loop.
    assert pg_hub_app.app.state.hub.inline_sessions is None
    native = _store(pg_hub_app, NATIVE)
    token = {"Authorization": f"Bearer {pg_hub_app.mint_token('rad1')}", "Accept": OCTETS}
    for _ in range(2):
        hops[0] = 0
        assert pg_hub_app.client.get(f"{native}/frames/1", headers=token).status_code == 200
        assert hops[0] == 1


def _compare_routes(hub_app: HubApp, hops: list[int]) -> None:
    native, jls = _store(hub_app, NATIVE), _store(hub_app, JLS)
    other_clinic = _store(hub_app, SAMPLES / "by-modality/CT/CT_small.dcm", clinic="clinic-b")
    unknown = native.rsplit("/", 1)[0] + "/1.2.3.4.5"
    tokens = {user: hub_app.mint_token(user) for user in ("rad1", "staff-a", "staff-b", "consult1")}
    bearer = {user: {"Authorization": f"Bearer {token}"} for user, token in tokens.items()}
    gateway = {"Authorization": f"Bearer {hub_app.gateway_tokens['clinic-a']}"}
    cases: list[tuple[str, str, dict[str, str], str, int]] = [
        ("GET", f"{native}/frames/1", bearer["rad1"], OCTETS, 200),
        ("GET", f"{native}/frames/3,1,10", bearer["staff-a"], DECODED, 200),
        ("GET", f"{jls}/frames/1", bearer["rad1"], OCTETS, 200),
        ("GET", f"{jls}/frames/1", bearer["rad1"], DECODED, 200),
        ("GET", f"{jls}/frames/1", bearer["rad1"], "image/jpeg", 406),
        ("GET", f"{native}/frames/11", bearer["rad1"], OCTETS, 404),  # it has 10
        ("GET", f"{native}/frames/0", bearer["rad1"], OCTETS, 400),
        ("GET", f"{native}/frames/1,x", bearer["rad1"], OCTETS, 400),
        ("GET", f"{native}/frames/{'1,' * 1000}1", bearer["rad1"], OCTETS, 422),
        ("GET", f"{unknown}/frames/1", bearer["rad1"], OCTETS, 404),
        ("GET", f"{other_clinic}/frames/1", bearer["staff-a"], OCTETS, 404),
        ("GET", f"{native}/frames/1", bearer["staff-b"], OCTETS, 404),
        ("GET", f"{native}/frames/1", bearer["consult1"], OCTETS, 404),
        ("GET", f"{native}/frames/1", gateway, OCTETS, 403),
        ("GET", f"{native}/frames/1", {}, OCTETS, 401),
        ("GET", f"{native}/frames/1", {"Authorization": "Bearer not-a-token"}, OCTETS, 401),
        ("GET", f"{native}/frames/1", {"Authorization": f"Basic {tokens['rad1']}"}, OCTETS, 401),
        ("GET", native.replace("/series/", "/series/1.2.x") + "/frames/1", bearer["rad1"], "", 422),
        (
            "GET",
            native.replace("/studies/", "/studies/" + "9" * 40) + "/frames/1",
            bearer["rad1"],
            "",
            422,
        ),
        ("HEAD", f"{native}/frames/1", bearer["rad1"], OCTETS, 405),
        ("POST", f"{native}/frames/1", bearer["rad1"], OCTETS, 405),
    ]
    client = hub_app.client
    for method, path, headers, accept, status in cases:
        request_headers = {**headers, "Accept": accept} if accept else headers
        hops[0] = 0
        fast = client.request(method, path, headers=request_headers)
        fast_hops = hops[0]
        with fastapi_routes_only(hub_app.app):
            hops[0] = 0
            slow = client.request(method, path, headers=request_headers)
            slow_hops = hops[0]
        assert fast.status_code == status, (method, path, accept, fast.text[:300])
        assert _normalized(fast) == _normalized(slow), (method, path, accept)
        if status != 200:
            assert fast.headers["content-type"] == "application/problem+json"
        if method == "GET" and status in (200, 400, 404, 406):
            # The lean route makes at most one thread hop (plus, like FastAPI's, the error
            # handler's or the streaming of a large answer), FastAPI one more per blocking
            # dependency.
            assert fast_hops < slow_hops, (path, accept, status, fast_hops, slow_hops)
            if status == 200 and "content-length" in fast.headers:
                assert fast_hops <= 1, (path, accept, status, fast_hops)
    # The browser's session cookie authenticates the lean route as well.
    signed_in = client.post(
        "/api/v1/auth/session",
        data={"username": "staff-a", "password": hub_app.passwords["staff-a"]},
    )
    assert signed_in.status_code == 200
    try:
        fast = client.get(f"{native}/frames/2", headers={"Accept": OCTETS})
        with fastapi_routes_only(hub_app.app):
            slow = client.get(f"{native}/frames/2", headers={"Accept": OCTETS})
        assert fast.status_code == 200
        assert _normalized(fast) == _normalized(slow)
    finally:
        client.cookies.clear()


def test_revocation_disabling_and_moving_count_on_the_next_frame_request(
    hub_app: HubApp,
) -> None:
    native = _store(hub_app, NATIVE)
    client = hub_app.client
    frame = f"{native}/frames/1"

    def fetch(token: str) -> httpx.Response:
        return client.get(frame, headers={"Authorization": f"Bearer {token}", "Accept": OCTETS})

    # The second fetch of each token is answered on the event loop (the access is recorded).
    revoked = hub_app.mint_token("rad1")
    assert fetch(revoked).status_code == 200
    assert fetch(revoked).status_code == 200
    with hub_app.sessions() as session:
        revoke_access_token(session, revoked)
        session.commit()
    refused = fetch(revoked)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"

    token = hub_app.mint_token("rad2")
    assert fetch(token).status_code == 200
    assert fetch(token).status_code == 200
    with hub_app.sessions() as session:
        rad2 = session.scalars(select(User).where(User.username == "rad2")).one()
        clinic_b = session.scalars(select(Institution).where(Institution.code == "clinic-b")).one()
        hub_institution = rad2.institution_id
        rad2.institution_id = clinic_b.id  # clinic-a is no longer below rad2's institution
        session.commit()
    assert fetch(token).status_code == 404
    with hub_app.sessions() as session:
        rad2 = session.scalars(select(User).where(User.username == "rad2")).one()
        rad2.institution_id = hub_institution
        session.commit()
    assert fetch(token).status_code == 200
    with hub_app.sessions() as session:
        rad2 = session.scalars(select(User).where(User.username == "rad2")).one()
        rad2.is_active = False
        session.commit()
    assert fetch(token).status_code == 401


def _audited(hub_app: HubApp, study_uid: str) -> int:
    with hub_app.sessions() as session:
        return len(
            session.scalars(
                select(AuditEvent).where(
                    AuditEvent.action == audit.FRAMES_FETCHED,
                    AuditEvent.study_instance_uid == study_uid,
                )
            ).all()
        )


def test_cheap_frame_reads_are_answered_on_the_event_loop(hub_app: HubApp, hops: list[int]) -> None:
    assert hub_app.app.state.hub.inline_sessions is not None  # SQLite file, local files
    native, jls = _store(hub_app, NATIVE), _store(hub_app, JLS)
    study_uid = native.split("/")[3]
    client = hub_app.client
    token = {"Authorization": f"Bearer {hub_app.mint_token('rad1')}"}

    def fetch(path: str, accept: str, headers: dict[str, str] = token) -> int:
        hops[0] = 0
        response = client.get(path, headers={**headers, "Accept": accept})
        assert response.status_code == 200, response.text
        return hops[0]

    # The first read of the study is recorded (a write): in a worker thread; then no hop.
    assert fetch(f"{native}/frames/1", OCTETS) == 1
    assert _audited(hub_app, study_uid) == 1
    assert fetch(f"{native}/frames/1", OCTETS) == 0
    assert fetch(f"{native}/frames/2,3", DECODED) == 0
    assert _audited(hub_app, study_uid) == 1
    # Decoding, and a 1.6 MB bitstream, go to a worker thread every time (the decoded 7.5 MB
    # stream in a few more hops).
    assert fetch(f"{jls}/frames/1", DECODED) >= 1
    assert fetch(f"{jls}/frames/1", DECODED) >= 1
    assert fetch(f"{jls}/frames/1", OCTETS) == 1
    assert fetch(f"{jls}/frames/1", OCTETS) == 1
    # So does a browser session (it may be extended: a write).
    signed_in = client.post(
        "/api/v1/auth/session",
        data={"username": "rad1", "password": hub_app.passwords["rad1"]},
    )
    assert signed_in.status_code == 200
    try:
        assert fetch(f"{native}/frames/1", OCTETS, {}) == 1
    finally:
        client.cookies.clear()
    # An answer made on the event loop is the one a worker thread makes.
    inline = client.get(f"{native}/frames/4,5", headers={**token, "Accept": OCTETS})
    with fastapi_routes_only(hub_app.app):
        slow = client.get(f"{native}/frames/4,5", headers={**token, "Accept": OCTETS})
    assert _normalized(inline) == _normalized(slow)


def test_event_loop_keeps_answering_while_a_writer_holds_the_database(hub_app: HubApp) -> None:
    """An answer that must write (the first read of a study is audited) waits for the SQLite
    write lock in a worker thread; cheap reads and other requests go on meanwhile."""
    native = _store(hub_app, NATIVE)
    client = hub_app.client
    warm = {"Authorization": f"Bearer {hub_app.mint_token('rad1')}", "Accept": OCTETS}
    cold = {"Authorization": f"Bearer {hub_app.mint_token('rad2')}", "Accept": OCTETS}
    assert client.get(f"{native}/frames/1", headers=warm).status_code == 200  # audited now
    writer = sqlite3.connect(hub_app.data_dir / "hub.sqlite3", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # holds the write lock
    answers: list[tuple[int, float]] = []

    def audited_read() -> None:
        start = time.monotonic()
        response = client.get(f"{native}/frames/1", headers=cold)
        answers.append((response.status_code, time.monotonic() - start))

    waiting = threading.Thread(target=audited_read)
    try:
        waiting.start()
        time.sleep(0.3)
        assert waiting.is_alive() and not answers  # the access record waits for the lock
        for path, headers in ((f"{native}/frames/2", warm), ("/healthz", {})):
            start = time.monotonic()
            assert client.get(path, headers=headers).status_code == 200
            assert time.monotonic() - start < 1.0, path
        time.sleep(0.5)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        waiting.join(timeout=30)
    assert answers and answers[0][0] == 200
    assert answers[0][1] >= 0.8  # it waited for the writer, in its worker thread
