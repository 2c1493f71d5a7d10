"""Engine and session factory, built once from :class:`~imaging_hub.config.HubSettings`."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, *, busy_timeout: float = 30, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL mode, foreign keys and a busy timeout (seconds)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": busy_timeout}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    # No pool_pre_ping: it costs a round trip on every checkout, i.e. every request. After a
    # database restart the requests in flight on old connections fail once; SQLAlchemy then
    # discards the whole pool (disconnect detection), and pool_recycle bounds a connection's age.
    options: dict[str, Any] = {"pool_size": 10, "max_overflow": 20, "pool_recycle": 1800}
    return create_engine(url, **{**options, **kwargs})


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def make_inline_engine(url: str) -> Engine | None:
    """An engine for short reads on the event loop, or None unless *url* is a SQLite file.

    One connection (reads on the event loop run one after the other), never waited for, and a
    busy timeout of 20 ms: in WAL mode readers do not wait for writers, so a read that would
    wait is unusual, and it is answered in a worker thread instead (see
    imaging_hub.worklist.dicomweb.fast). PostgreSQL reads are network round trips: never there.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return make_engine(url, busy_timeout=0.02, pool_size=1, max_overflow=0, pool_timeout=0)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
