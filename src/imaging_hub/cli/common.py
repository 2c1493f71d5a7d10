"""Helpers the command groups share: the console, options, settings, errors, the admin session."""

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

from imaging_hub.config import CONFIG_ENV, HubSettings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from imaging_hub.worklist.access.caller import Caller

console = Console(soft_wrap=True)
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help=f"TOML settings file (or set {CONFIG_ENV}).", exists=True),
]


def setup(config: Path | None, verbose: bool = False) -> None:
    """Point the settings at *config* (if given) and configure logging."""
    if config is not None:
        os.environ[CONFIG_ENV] = str(config)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("pynetdicom", "httpx", "multipart", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print *message* in red and exit with *code*."""
    console.print(f"[red]{message}[/red]")
    raise typer.Exit(code)


def aware_time(value: str, name: str) -> datetime:
    """Parse the ISO 8601 time of option *name* (exit 2 if it is not one)."""
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        fail(f"{name} {value!r} is not an ISO 8601 time (e.g. 2026-11-23T08:00+08:00).", 2)


@contextmanager
def admin_session(config: Path | None) -> Iterator[tuple["Session", "Caller"]]:
    """A session on the configured hub database and the console operator as the caller.

    Domain errors (ImagingHubError) are printed and exit 1; the domain functions commit.
    """
    setup(config)
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.access.caller import Caller
    from imaging_hub.worklist.db.session import make_engine, make_session_factory, session_scope

    settings = HubSettings()
    engine = make_engine(settings.resolved_database_url())
    try:
        with session_scope(make_session_factory(engine)) as session:
            try:
                yield session, Caller.console()
            except ImagingHubError as exc:
                fail(str(exc))
    finally:
        engine.dispose()


UsernameArg = Annotated[str, typer.Argument(help="Username.")]
