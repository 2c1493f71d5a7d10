"""``imaging-hub db``: the hub database's schema."""

import typer

from imaging_hub.cli.common import ConfigOpt, console, setup
from imaging_hub.config import HubSettings

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Create or migrate the hub database to the current schema."""
    setup(config)
    from imaging_hub.worklist.db.migrate import upgrade_database

    settings = HubSettings()
    upgrade_database(settings)
    console.print("database is at the current schema")
