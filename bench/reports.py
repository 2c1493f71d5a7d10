"""Report signing: ``POST /api/v1/reports/{id}/sign`` end to end, on SQLite and PostgreSQL.

One signature = unlock the radiologist's key with the password, render the PDF (reportlab,
embedded CJK font), PAdES B-LT sign with an RFC 3161 timestamp from the hub TSA, store the PDF,
build, store and register the Encapsulated PDF and the TID 2000 SR into the study, mark the
study signed, audit, commit. Measured through the hub's HTTP stack in-process (FastAPI,
TestClient, thread pool), as the browser calls it; 50 reports per backend after one warm-up
signature (the first one issues the radiologist's certificate and opens the CA and TSA).

Usage: ``python -m bench.reports [--reports 50] [--no-write]``; writes its section of
docs/benchmarks.md between the ``bench:reports`` markers.
"""

import argparse
import hashlib
import io
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import select
from tests.peers import postgres

from bench.common import machine, machine_lines, median, p95, package_version, write_section
from imaging_hub.config import HubSettings
from imaging_hub.worklist.access.accounts import issue_access_token
from imaging_hub.worklist.admin.seed import create_demo_network
from imaging_hub.worklist.app import create_app
from imaging_hub.worklist.db.migrate import upgrade
from imaging_hub.worklist.db.models import Institution, User
from imaging_hub.worklist.db.session import make_engine, make_session_factory
from imaging_hub.worklist.studies.registration import SlaPolicy, complete_study, register_instance

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

PASSWORD = "bench-password-1"
FINDINGS = "左侧基底节区见高密度影，周围见低密度水肿带，中线结构居中。\n脑室系统大小形态正常。"
IMPRESSION = "左侧基底节区脑出血，建议神经外科会诊。"


@contextmanager
def postgres_cluster() -> Iterator[postgres.PostgresServer]:
    fixture = postgres.postgres_server.__wrapped__()  # type: ignore[attr-defined]
    server = next(fixture)
    try:
        yield server
    finally:
        next(fixture, None)


def study_bytes() -> bytes:
    ds = dcmread(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "张^三丰"
    ds.BodyPartExamined = "HEAD"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def run(url: str, data_dir: Path, reports: int) -> list[float]:
    """Seconds per signature (warm-up excluded)."""
    engine = make_engine(url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    with sessions() as session:
        create_demo_network(session, password=PASSWORD)
    app = create_app(HubSettings(data_dir=data_dir, database_url=url))
    timings: list[float] = []
    with TestClient(app, base_url="https://testserver") as client:
        store = app.state.hub.store
        with sessions() as session:
            clinic = session.scalars(
                select(Institution).where(Institution.code == "clinic-a")
            ).one()
            user = session.scalars(select(User).where(User.username == "rad1")).one()
            token = issue_access_token(session, user=user, lifetime=timedelta(hours=2))
            session.commit()
            uids = []
            for _ in range(reports + 1):
                data = study_bytes()
                stored = register_instance(
                    session,
                    store=store,
                    clinic=clinic,
                    body=io.BytesIO(data),
                    size=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                )
                complete_study(
                    session,
                    clinic=clinic,
                    study_instance_uid=stored.study_instance_uid,
                    sop_instance_uids=[stored.sop_instance_uid],
                    sla=SlaPolicy(),
                )
                uids.append(stored.study_instance_uid)
        headers = {"Authorization": f"Bearer {token}"}
        for i, uid in enumerate(uids):
            assert client.post(f"/api/v1/studies/{uid}/claim", headers=headers).status_code == 200
            draft = client.put(
                f"/api/v1/studies/{uid}/report",
                headers=headers,
                json={"findings": FINDINGS, "impression": IMPRESSION},
            )
            assert draft.status_code == 200, draft.text
            t0 = time.perf_counter()
            signed = client.post(
                f"/api/v1/reports/{draft.json()['id']}/sign",
                headers=headers,
                json={"password": PASSWORD},
            )
            elapsed = time.perf_counter() - t0
            assert signed.status_code == 200, signed.text
            if i > 0:  # the first one issues the certificate and opens the CA/TSA
                timings.append(elapsed)
    engine.dispose()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=50)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    info = machine()
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="rp-bench-") as tmp:
        sqlite_dir = Path(tmp) / "sqlite"
        sqlite_dir.mkdir()
        results["SQLite"] = run(f"sqlite:///{sqlite_dir / 'hub.sqlite3'}", sqlite_dir, args.reports)
        with postgres_cluster() as server:
            pg_dir = Path(tmp) / "pg"
            pg_dir.mkdir()
            results["PostgreSQL 15"] = run(
                server.create_database("bench_reports"), pg_dir, args.reports
            )
    lines = [
        f"Sign → PDF + timestamp + both DICOM objects stored and registered, "
        f"{args.reports} reports per backend (`python -m bench.reports`): "
        "`POST /api/v1/reports/{id}/sign` through the hub's HTTP stack in-process, filesystem "
        "object store, one warm-up signature first (it issues rad1's certificate). "
        "Target p95 < 1 s.",
        "",
        "| database | p50 | p95 | max |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, values in results.items():
        lines.append(
            f"| {name} | {median(values) * 1000:.0f} ms | {p95(values) * 1000:.0f} ms | "
            f"{max(values) * 1000:.0f} ms |"
        )
    lines += ["", *machine_lines(info, {"PostgreSQL": package_version("postgresql-15")})]
    print("\n".join(lines))
    if not args.no_write:
        write_section("reports", lines, title="Report signing")


if __name__ == "__main__":
    main()
