"""An in-process hub app (ASGI, no server) on a migrated SQLite database with the demo network."""

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
from imaging_hub.worklist.accounts import issue_access_token
from imaging_hub.worklist.app import create_app
from imaging_hub.worklist.db import make_engine, make_session_factory
from imaging_hub.worklist.migrate import upgrade
from imaging_hub.worklist.models import User
from imaging_hub.worklist.seed import create_demo_network

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


@pytest.fixture
def hub_app(tmp_path: Path) -> Iterator[HubApp]:
    data_dir = tmp_path / "hub"
    data_dir.mkdir()
    url = f"sqlite:///{data_dir / 'hub.sqlite3'}"
    engine = make_engine(url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    with sessions() as session:
        network = create_demo_network(session, password="demo-password-1")
    settings = HubSettings(data_dir=data_dir, database_url=url)
    app = create_app(settings)
    with TestClient(app, base_url="https://testserver") as client:
        yield HubApp(
            app=app,
            client=client,
            sessions=sessions,
            passwords=network.passwords,
            gateway_tokens=network.gateway_tokens,
            database_url=url,
            data_dir=data_dir,
        )
    engine.dispose()
