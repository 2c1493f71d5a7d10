"""Schema migrations with Alembic, driven from code (``imaging-hub db upgrade``)."""

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from imaging_hub.config import HubSettings

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database schema up to *revision* (idempotent)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def upgrade_database(settings: HubSettings) -> None:
    """Create the hub's data directory and bring its database to the current schema."""
    from imaging_hub.worklist.db.session import make_engine

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    try:
        upgrade(engine)
    finally:
        engine.dispose()
