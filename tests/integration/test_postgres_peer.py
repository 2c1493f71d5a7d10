"""The PostgreSQL peer works: a fresh database per test, reached through SQLAlchemy + psycopg."""

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.peers.postgres import PostgresServer

pytestmark = pytest.mark.postgres


def test_select_one_on_a_fresh_database(postgres_url: str) -> None:
    url = make_url(postgres_url)
    assert url.drivername == "postgresql+psycopg"
    assert url.host == "127.0.0.1"
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("select 1")).scalar_one() == 1
            assert conn.execute(text("select current_database()")).scalar_one() == url.database
            version = conn.execute(text("show server_version_num")).scalar_one()
            assert int(version) // 10000 == 15
            assert conn.execute(text("show fsync")).scalar_one() == "off"
    finally:
        engine.dispose()


def test_each_test_gets_its_own_database(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database("isolation_probe")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("create table t (x int)"))
            conn.execute(text("insert into t values (42)"))
        with engine.connect() as conn:
            assert conn.execute(text("select x from t")).scalar_one() == 42
    finally:
        engine.dispose()
        postgres_server.drop_database("isolation_probe")
    with pytest.raises(ValueError, match="identifier"):
        postgres_server.create_database("Robert'); drop table students;--")
