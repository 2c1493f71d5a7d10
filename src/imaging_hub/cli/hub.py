"""``imaging-hub hub``: the district hub service."""

from typing import Any

import typer

from imaging_hub.cli.common import ConfigOpt, console, setup
from imaging_hub.config import HubSettings

hub_app = typer.Typer(help="The district hub service.", no_args_is_help=True)


@hub_app.command("serve")
def hub_serve(config: ConfigOpt = None) -> None:
    """Serve the hub's HTTP API, DICOMweb and browser app (migrates the database first)."""
    setup(config)
    import uvicorn

    from imaging_hub.worklist.app import create_app
    from imaging_hub.worklist.db.migrate import upgrade_database
    from imaging_hub.worklist.http.server import server_options

    settings = HubSettings()
    upgrade_database(settings)
    if (settings.tls_cert_file is None) != (settings.tls_key_file is None):
        console.print("[red]Set both tls_cert_file and tls_key_file to serve HTTPS.[/red]")
        raise typer.Exit(2)
    options: dict[str, Any] = {**server_options(settings), "log_level": "info"}
    if settings.workers > 1:
        uvicorn.run(
            "imaging_hub.worklist.app:app_from_environment",
            factory=True,
            workers=settings.workers,
            **options,
        )
    else:
        uvicorn.run(create_app(settings), **options)
