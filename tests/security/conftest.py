"""An in-process hub app (ASGI, no server) on a migrated SQLite database with the demo network."""

import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imaging_hub.config import HubSettings

with warnings.catch_warnings():
    # starlette warns that it would prefer httpx2 as TestClient transport; httpx works.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient
from imaging_hub.worklist.access.accounts import issue_access_token
from imaging_hub.worklist.admin.seed import DemoNetwork, create_demo_network
from imaging_hub.worklist.app import create_app
from imaging_hub.worklist.db.migrate import upgrade
from imaging_hub.worklist.db.models import User
from imaging_hub.worklist.db.session import make_engine, make_session_factory

ROLE_USERS = {
    "admin": "admin",
    "radiologist": "rad1",
    "consultant": "consult1",
    "clinic_staff": "staff-a",
}


@dataclass
class HubApp:
    app: FastAPI
    client: TestClient
    sessions: sessionmaker[Session]
    passwords: dict[str, str]
    gateway_tokens: dict[str, str]
    database_url: str
    data_dir: Path

    def mint_token(self, username: str) -> str:
        """A fresh bearer token straight from the database (no argon2 login round)."""
        with self.sessions() as session:
            user = session.scalars(select(User).where(User.username == username)).one()
            token = issue_access_token(session, user=user, lifetime=timedelta(minutes=10))
            session.commit()
        return token

    def headers(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.mint_token(username)}"}

    def admin_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``imaging-hub admin ARGS`` on this hub's database (a real process)."""
        env = dict(
            os.environ,
            IMAGING_HUB_DATABASE_URL=self.database_url,
            IMAGING_HUB_DATA_DIR=str(self.data_dir),
        )
        return subprocess.run(
            [sys.executable, "-m", "imaging_hub", "admin", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture(scope="session")
def _template_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoNetwork]:
    """A migrated database with the demo network, made once (argon2 hashing is slow) and
    copied for every test, so no test sees another's changes."""
    path = tmp_path_factory.mktemp("template") / "hub.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with make_session_factory(engine)() as session:
        network = create_demo_network(session, password="demo-password-1")
    engine.dispose()
    return path, network


def _hub_app(url: str, data_dir: Path, network: DemoNetwork) -> Iterator[HubApp]:
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    settings = HubSettings(data_dir=data_dir, database_url=url)
    app = create_app(settings)
    with TestClient(app, base_url="https://testserver") as client:
        yield HubApp(
            app=app,
            client=client,
            sessions=sessions,
            passwords=dict(network.passwords),
            gateway_tokens=dict(network.gateway_tokens),
            database_url=url,
            data_dir=data_dir,
        )
    engine.dispose()


@pytest.fixture
def hub_app(tmp_path: Path, _template_db: tuple[Path, DemoNetwork]) -> Iterator[HubApp]:
    template, network = _template_db
    data_dir = tmp_path / "hub"
    data_dir.mkdir()
    shutil.copyfile(template, data_dir / "hub.sqlite3")
    yield from _hub_app(f"sqlite:///{data_dir / 'hub.sqlite3'}", data_dir, network)


@pytest.fixture
def pg_hub_app(tmp_path: Path, postgres_url: str) -> Iterator[HubApp]:
    """The same app on a fresh PostgreSQL database."""
    engine = make_engine(postgres_url)
    upgrade(engine)
    with make_session_factory(engine)() as session:
        network = create_demo_network(session, password="demo-password-1")
    engine.dispose()
    data_dir = tmp_path / "hub"
    data_dir.mkdir()
    yield from _hub_app(postgres_url, data_dir, network)
