"""The ``imaging-hub`` command."""

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from imaging_hub import __version__
from imaging_hub.config import CONFIG_ENV, GatewaySettings, HubSettings

app = typer.Typer(
    help="imaging-hub: check at the clinic, diagnose at the hub.", no_args_is_help=True
)
hub_app = typer.Typer(help="The district hub service.", no_args_is_help=True)
gateway_app = typer.Typer(help="The clinic DICOM gateway.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
admin_app = typer.Typer(help="Administration of the hub's database.", no_args_is_help=True)
app.add_typer(hub_app, name="hub")
app.add_typer(gateway_app, name="gateway")
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")

console = Console(soft_wrap=True)
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help=f"TOML settings file (or set {CONFIG_ENV}).", exists=True),
]


def _setup(config: Path | None, verbose: bool = False) -> None:
    if config is not None:
        os.environ[CONFIG_ENV] = str(config)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("pynetdicom", "httpx", "multipart", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", help="Show the version.")] = False,
) -> None:
    if version:
        console.print(__version__)
        raise typer.Exit()


@app.command()
def demo(
    data: Annotated[Path, typer.Option("--data", help="Data directory.")] = Path("var/demo"),
    port: Annotated[int, typer.Option("--port", help="Hub HTTP port.")] = 8000,
    dicom_port: Annotated[
        int, typer.Option("--dicom-port", help="DICOM port of clinic-a (clinic-b: +1).")
    ] = 11112,
    password: Annotated[
        str | None, typer.Option("--password", help="Use this password for every demo user.")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Run the demo network: hub, two clinic gateways, sample studies pushed by C-STORE."""
    _setup(None)
    from imaging_hub.demo import run_demo

    run_demo(data=data, port=port, dicom_port=dicom_port, password=password, host=host)


@hub_app.command("serve")
def hub_serve(config: ConfigOpt = None) -> None:
    """Serve the hub's HTTP API, DICOMweb and browser app (migrates the database first)."""
    _setup(config)
    import uvicorn

    from imaging_hub.worklist.app import create_app
    from imaging_hub.worklist.db import make_engine
    from imaging_hub.worklist.migrate import upgrade

    settings = HubSettings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    engine.dispose()
    if settings.workers > 1:
        uvicorn.run(
            "imaging_hub.worklist.app:app_from_environment",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level="info",
        )
    else:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


@gateway_app.command("serve")
def gateway_serve(config: ConfigOpt = None) -> None:
    """Run the clinic gateway: DICOM SCP, spool and forwarder."""
    _setup(config)
    from imaging_hub.dicom_gateway.service import GatewayService

    settings = GatewaySettings()
    if not settings.hub_token.get_secret_value():
        console.print("[red]No hub token: set IMAGING_HUB_GATEWAY_HUB_TOKEN or hub_token.[/red]")
        raise typer.Exit(2)
    service = GatewayService(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    service.start()
    try:
        while not stop.wait(1.0):
            pass
    finally:
        service.stop()


@gateway_app.command("status")
def gateway_status(config: ConfigOpt = None) -> None:
    """Show the spool: queue depth, bytes pending, per-study progress, last success and error."""
    _setup(config)
    from imaging_hub.dicom_gateway.spool import Spool

    settings = GatewaySettings()
    spool = Spool(settings.spool_dir)
    try:
        stats = spool.stats()
        last = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stats.last_sent_at))
            if stats.last_sent_at
            else "never"
        )
        console.print(f"gateway [bold]{settings.clinic}[/bold] ({settings.ae_title})")
        console.print(
            f"queue depth: {stats.pending}   bytes pending: {stats.pending_bytes}   "
            f"sent: {stats.sent}   failed: {stats.failed}   open studies: {stats.open_studies}"
        )
        console.print(f"last success: {last}   last error: {stats.last_error or '-'}")
        table = Table("study", "state", "sent/total", "pending bytes", "failed", "last error")
        for row in spool.study_progress():
            table.add_row(
                str(row["study_instance_uid"]),
                str(row["state"]),
                f"{row['sent']}/{row['total']}",
                str(row["pending_bytes"]),
                str(row["failed"]),
                str(row["last_error"] or ""),
            )
        console.print(table)
    finally:
        spool.close()


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Create or migrate the hub database to the current schema."""
    _setup(config)
    from imaging_hub.worklist.db import make_engine
    from imaging_hub.worklist.migrate import upgrade

    settings = HubSettings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    engine.dispose()
    console.print("database is at the current schema")


def main() -> None:
    app()
