"""``imaging-hub demo``: the demo network in one command."""

from pathlib import Path
from typing import Annotated

import typer

from imaging_hub.cli.common import setup


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
    setup(None)
    from imaging_hub.demo import run_demo

    run_demo(data=data, port=port, dicom_port=dicom_port, password=password, host=host)
