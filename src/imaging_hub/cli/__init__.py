"""The ``imaging-hub`` command: the root app.

One module per command group: :mod:`.demo_cmd` (``demo``), :mod:`.hub` (``hub serve``),
:mod:`.gateway` (``gateway serve|status``), :mod:`.db` (``db upgrade``) and
:mod:`.admin` (``admin``; its sub-groups in ``admin_*.py``); the helpers they share are in
:mod:`.common`. Commands only translate: they parse the terminal's input, call one domain
function and print its result or error. No SQL and no audit writing here.
"""

from typing import Annotated

import typer

from imaging_hub import __version__
from imaging_hub.cli import admin, db, demo_cmd, gateway, hub, report
from imaging_hub.cli.common import console

app = typer.Typer(
    help="imaging-hub: check at the clinic, diagnose at the hub.", no_args_is_help=True
)
app.command("demo")(demo_cmd.demo)
app.add_typer(hub.hub_app, name="hub")
app.add_typer(gateway.gateway_app, name="gateway")
app.add_typer(db.db_app, name="db")
app.add_typer(admin.admin_app, name="admin")
app.add_typer(report.report_app, name="report")


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", help="Show the version.")] = False,
) -> None:
    if version:
        console.print(__version__)
        raise typer.Exit()


def main() -> None:
    app()
