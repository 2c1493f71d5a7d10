"""What one worklist or DICOMweb request costs the hub: SQL statements and CPU time (issues 4, 5).

    .venv/bin/python -m bench.request_cost [--sqlite] [--studies 20000] [--requests 200]
                                           [--profile N] [--dicomweb]

Wall-clock latency on a shared 2-core machine mostly measures the neighbours; these two numbers
do not depend on machine load:

- SQL statements per request, counted with SQLAlchemy's ``before_cursor_execute`` event (every
  statement is one database round trip; ``COMMIT`` and ``ROLLBACK`` are counted as well through
  the ``commit``/``rollback`` events);
- CPU seconds per request (``time.process_time`` of this process, which runs the app: the ASGI
  app is called directly, with no HTTP client or server in between, so only the hub's own request
  path is measured: routing, dependencies, authentication, ORM, serialisation).

The database is a throwaway PostgreSQL 15 cluster (the test peer) filled like bench/worklist.py,
or a SQLite file with ``--sqlite``. With ``--dicomweb`` the requests are WADO-RS instead (the
CT frame of bench/dicomweb.py: one 512x512 16-bit slice, ~512 KB, as application/octet-stream;
and its metadata), on the demo network with that one instance registered. Prints a table;
writes nothing.
"""

import argparse
import asyncio
import hashlib
import io
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
import psycopg
import pydicom
from sqlalchemy import Engine, event
from tests.worklist_support import issue_token

from bench.worklist import fill, postgres_cluster
from imaging_hub.config import HubSettings
from imaging_hub.dicom.samples import sample_files
from imaging_hub.dicom.uids import new_uid
from imaging_hub.storage.filesystem import FilesystemStore
from imaging_hub.worklist.admin.seed import create_demo_network
from imaging_hub.worklist.app import create_app
from imaging_hub.worklist.db.migrate import upgrade
from imaging_hub.worklist.db.models import Institution
from imaging_hub.worklist.db.session import make_engine, make_session_factory, session_scope
from imaging_hub.worklist.studies.registration import register_instance


@dataclass
class Counter:
    statements: int = 0
    transactions: int = 0
    round_trips: int = 0
    thread_hops: int = 0

    def reset(self) -> None:
        self.statements = self.transactions = self.round_trips = self.thread_hops = 0

    def count_thread_hops(self) -> None:
        """Count calls into the thread pool (FastAPI runs every plain ``def`` dependency and
        endpoint there, through ``anyio.to_thread.run_sync``)."""
        run_sync = anyio.to_thread.run_sync

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.thread_hops += 1
            return await run_sync(*args, **kwargs)

        anyio.to_thread.run_sync = counted  # type: ignore[assignment]

    def attach(self, engine: Engine) -> None:
        def on_statement(*_args: Any) -> None:
            self.statements += 1

        def on_end(*_args: Any) -> None:
            self.transactions += 1

        event.listen(engine, "before_cursor_execute", on_statement)
        event.listen(engine, "commit", on_end)
        event.listen(engine, "rollback", on_end)
        if engine.dialect.name == "postgresql":
            self._count_psycopg()

    def _count_psycopg(self) -> None:
        """Count psycopg's own round trips: every execute (plus the implicit ``BEGIN`` psycopg
        sends first when no transaction is open), commit and rollback, including the ones
        SQLAlchemy's events do not see (``pool_pre_ping``'s ping)."""
        idle = psycopg.pq.TransactionStatus.IDLE
        execute, commit, rollback = (
            psycopg.Cursor.execute,
            psycopg.Connection.commit,
            (psycopg.Connection.rollback),
        )

        def counted_execute(cur: Any, *args: Any, **kwargs: Any) -> Any:
            conn = cur.connection
            if not conn.autocommit and conn.info.transaction_status == idle:
                self.round_trips += 1  # BEGIN
            self.round_trips += 1
            return execute(cur, *args, **kwargs)

        def counted_commit(conn: Any) -> None:
            if conn.info.transaction_status != idle:
                self.round_trips += 1
            commit(conn)

        def counted_rollback(conn: Any) -> None:
            if conn.info.transaction_status != idle:
                self.round_trips += 1
            rollback(conn)

        psycopg.Cursor.execute = counted_execute  # type: ignore[method-assign]
        psycopg.Connection.commit = counted_commit  # type: ignore[method-assign]
        psycopg.Connection.rollback = counted_rollback  # type: ignore[method-assign]


async def call(
    app: Any, method: str, path: str, query: str, token: str, accept: str = "application/json"
) -> tuple[int, bytes]:
    """One request straight into the ASGI app; (status, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"accept", accept.encode()),
            (b"content-length", b"0"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent = False
    status = 0
    body = bytearray()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, send)
    return status, bytes(body)


#: (label, method, path, query, Accept)
Request = tuple[str, str, str, str, str]
REQUESTS: list[Request] = [
    ("POST /api/v1/worklist/next (radiologist)", "POST", "/api/v1/worklist/next", "", ""),
    (
        "GET /api/v1/worklist (open studies)",
        "GET",
        "/api/v1/worklist",
        "status=unread&limit=100",
        "",
    ),
    ("GET /api/v1/worklist (no filter)", "GET", "/api/v1/worklist", "limit=100", ""),
]
#: bench/dicomweb.py's Accept for frames.
OCTETS = "multipart/related; type=application/octet-stream; transfer-syntax=*"


def ct_slice() -> bytes:
    """A 512x512 16-bit CT slice in Explicit VR Little Endian (~512 KB): the bundled CT's
    header with fresh UIDs and Pixel Data of the benchmark corpus's size."""
    (path,) = (p for p in sample_files() if p.name == "CT_small.dcm")
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = new_uid(), new_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
    ds.Rows = ds.Columns = 512
    pixels = np.random.default_rng(5).integers(-1000, 2000, (512, 512), dtype=np.int16)
    ds.PixelData = pixels.tobytes()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def dicomweb_requests(sessions: Any, data_dir: Path) -> list[Request]:
    """Register one CT slice for clinic-a; the WADO-RS requests of it."""
    data = ct_slice()
    with sessions() as session:
        clinic = session.query(Institution).filter_by(code="clinic-a").one()
        stored = register_instance(
            session,
            store=FilesystemStore(data_dir / "objects"),
            clinic=clinic,
            body=io.BytesIO(data),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    path = (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )
    assert stored is not None
    return [
        ("GET WADO-RS CT frame (512 KB)", "GET", f"{path}/frames/1", "", OCTETS),
        ("GET WADO-RS instance metadata", "GET", f"{path}/metadata", "", "application/dicom+json"),
    ]


@contextmanager
def database(sqlite: bool, tmp: Path) -> Iterator[str]:
    if sqlite:
        yield f"sqlite:///{tmp / 'hub.sqlite3'}"
        return
    with postgres_cluster() as server:
        yield server.create_database("bench_request_cost")


def measure(args: argparse.Namespace) -> None:
    yappi: Any = None
    if args.profile:
        import yappi  # a developer's tool, not a dependency: pip install yappi
    with (
        tempfile.TemporaryDirectory(prefix="wl-cost-") as tmp,
        database(args.sqlite, Path(tmp)) as url,
    ):
        engine = make_engine(url)
        upgrade(engine)
        with session_scope(make_session_factory(engine)) as s:
            create_demo_network(s, password="bench-password-not-secret")
        sessions = make_session_factory(engine)
        data_dir = Path(tmp) / "data"
        if args.dicomweb:
            requests = dicomweb_requests(sessions, data_dir)
            rad = admin = issue_token(sessions, "rad1")
        else:
            t0 = time.perf_counter()
            fill(sessions, studies=args.studies, unread=args.studies // 2, radiologists=4)
            print(f"filled {args.studies} studies in {time.perf_counter() - t0:.1f} s")
            requests = REQUESTS
            rad = issue_token(sessions, "bench00")
            admin = issue_token(sessions, "admin")
        engine.dispose()

        app = create_app(HubSettings(data_dir=data_dir, database_url=url))
        counter = Counter()
        hub_engine: Engine = app.state.hub.sessions.kw["bind"]
        counter.attach(hub_engine)
        inline = app.state.hub.inline_sessions  # reads answered on the event loop (SQLite)
        inline_engine: Engine | None = inline.kw["bind"] if inline is not None else None
        if inline_engine is not None:
            counter.attach(inline_engine)
        counter.count_thread_hops()
        rows = []

        async def run() -> None:
            for label, method, path, query, accept in requests:
                token = rad if method == "POST" else admin
                accept = accept or "application/json"
                for _ in range(5):  # warm-up: imports, pool connections, caches
                    status, body = await call(app, method, path, query, token, accept)
                    assert status == 200, (status, body[:300])
                counter.reset()
                if args.profile:
                    yappi.clear_stats()
                    yappi.set_clock_type("cpu")
                    yappi.start()
                cpu0, wall0 = time.process_time(), time.perf_counter()
                for _ in range(args.requests):
                    status, body = await call(app, method, path, query, token, accept)
                    assert status == 200, (status, body[:300])
                if args.profile:
                    yappi.stop()
                cpu = (time.process_time() - cpu0) / args.requests * 1000
                wall = (time.perf_counter() - wall0) / args.requests * 1000
                rows.append(
                    (
                        label,
                        counter.statements / args.requests,
                        counter.round_trips / args.requests,
                        counter.thread_hops / args.requests,
                        counter.transactions / args.requests,
                        cpu,
                        wall,
                    )
                )
                if args.profile:
                    print(f"--- profile (CPU, every thread): {label}")
                    stats = yappi.get_func_stats()
                    stats.sort(args.sort, "desc")
                    stats.print_all(
                        columns={0: ("name", 90), 1: ("ncall", 8), 2: ("tsub", 8), 3: ("ttot", 8)},
                        limit=args.profile,
                    )

        asyncio.run(run())
        hub_engine.dispose()
        if inline_engine is not None:
            inline_engine.dispose()
    backend = "SQLite" if args.sqlite else "PostgreSQL"
    what = "one CT slice" if args.dicomweb else f"{args.studies} studies"
    print(f"\n{backend}, {what}, {args.requests} requests each")
    print("| request | SQL statements | round trips | thread hops | commits | CPU ms | wall ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, stmts, trips, hops, tx, cpu, wall in rows:
        print(
            f"| {label} | {stmts:.1f} | {trips:.1f} | {hops:.1f} | {tx:.1f} | {cpu:.2f} "
            f"| {wall:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument("--studies", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="print the N costliest functions (CPU, all threads; needs `pip install yappi`)",
    )
    parser.add_argument(
        "--sort", default="ttot", choices=["ttot", "tsub"], help="profile order: total or own"
    )
    parser.add_argument(
        "--dicomweb",
        action="store_true",
        help="WADO-RS requests of one CT slice (the CT frame of bench/dicomweb.py) instead",
    )
    measure(parser.parse_args())


if __name__ == "__main__":
    main()
