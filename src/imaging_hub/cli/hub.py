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

    settings = HubSettings()
    upgrade_database(settings)
    # Our AccessLogMiddleware logs requests without query strings (they may carry names).
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "info",
        "access_log": False,
        "server_header": False,
    }
    if (settings.tls_cert_file is None) != (settings.tls_key_file is None):
        console.print("[red]Set both tls_cert_file and tls_key_file to serve HTTPS.[/red]")
        raise typer.Exit(2)
    if settings.tls_cert_file is not None:
        options["ssl_certfile"] = str(settings.tls_cert_file)
        options["ssl_keyfile"] = str(settings.tls_key_file)
    if settings.workers > 1:
        uvicorn.run(
            "imaging_hub.worklist.app:app_from_environment",
            factory=True,
            workers=settings.workers,
            **options,
        )
    else:
        uvicorn.run(create_app(settings), **options)
