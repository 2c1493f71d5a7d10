"""``imaging-hub gateway``: the clinic DICOM gateway (serve, status, retry)."""

import json
import signal
import sys
import threading
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from imaging_hub.cli.common import ConfigOpt, console, setup
from imaging_hub.config import GatewaySettings

gateway_app = typer.Typer(help="The clinic DICOM gateway.", no_args_is_help=True)


@gateway_app.command("serve")
def gateway_serve(config: ConfigOpt = None) -> None:
    """Run the clinic gateway: DICOM SCP, spool and forwarder.

    Logs one line per study forwarded (size, time, ratio); on a terminal it also shows a live
    progress line (queue, bytes pending, forwarded, uplink throughput, last error).
    """
    setup(config)
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
        if sys.stdout.isatty():
            _serve_with_progress(service, stop)
        else:
            while not stop.wait(1.0):
                pass
    finally:
        service.stop()


def _progress_line(status: dict[str, Any]) -> str:
    error = str(status.get("last_error") or "")
    return (
        f"queued {status['queue_depth']} ({_size(int(status['bytes_pending']))})  "
        f"forwarded {status['sent']}  received {status['received']}  "
        f"refused {status['refused']}  failed {status['failed']}  "
        f"uplink {_size(int(status['uplink_bytes_per_second']))}/s"
        + (f"  last error: {error[:80]}" if error else "")
    )


def _serve_with_progress(service: Any, stop: threading.Event) -> None:
    from rich.live import Live
    from rich.text import Text

    with Live(Text("starting"), console=console, refresh_per_second=2, transient=True) as live:
        while not stop.wait(1.0):
            live.update(Text(_progress_line(service.status())))


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


@gateway_app.command("status")
def gateway_status(
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show the spool: queue depth, bytes pending, per-study progress, last success and error.

    Reads the spool of ``spool_dir`` and works while the gateway runs (or when it is down).
    """
    setup(config)
    from imaging_hub.dicom_gateway.metrics import gateway_status as spool_status
    from imaging_hub.dicom_gateway.service import open_spool

    settings = GatewaySettings()
    spool = open_spool(settings, clean_tmp=False)  # the running gateway's tmp/
    try:
        status = spool_status(spool, None)
        studies = spool.study_progress()
    finally:
        spool.close()
    status.update(_report_counts(settings))
    if as_json:
        print(json.dumps({"clinic": settings.clinic, **status, "studies": studies}))
        return
    console.print(f"gateway [bold]{settings.clinic}[/bold] ({settings.ae_title})")
    console.print(
        f"queue depth: {status['queue_depth']}   bytes pending: {status['bytes_pending']}   "
        f"sent: {status['sent']}   failed: {status['failed']}   "
        f"open studies: {status['open_studies']}   received: {status['received']}   "
        f"refused: {status['refused']}"
    )
    if status["spool_full"]:
        console.print(
            f"[red]SPOOL DISK FULL[/red]: {_size(status['spool_free_bytes'])} free, below the "
            f"floor of {_size(status['spool_min_free_bytes'])}: new instances are refused "
            f"(0xA700); {status['refused_no_space']} refused for want of space so far"
        )
    console.print(
        f"last success: {_when(status['last_success_at'])}   "
        f"last error: {status['last_error'] or '-'}"
    )
    if "reports_held" in status:
        console.print(
            f"reports held: {status['reports_held']}   "
            f"not yet confirmed to the hub: {status['reports_unconfirmed']}   "
            f"waiting for the DICOM node: {status['reports_waiting_for_node']}   "
            f"acknowledgements waiting for the hub: {status['acknowledgements_waiting']}   "
            f"critical results not acknowledged: {status['reports_critical_open']}"
        )
    table = Table("study", "state", "sent/total", "pending bytes", "failed", "last error")
    for row in studies:
        table.add_row(
            str(row["study_instance_uid"]),
            str(row["state"]),
            f"{row['sent']}/{row['total']}",
            str(row["pending_bytes"]),
            str(row["failed"]),
            str(row["last_error"] or ""),
        )
    console.print(table)
    if status["parked"]:
        parked = Table("parked study", "code", "reason", "instances", "next try")
        for item in status["parked"]:
            parked.add_row(
                str(item["study_instance_uid"]),
                str(item["code"] or "-"),
                str(item["reason"] or ""),
                str(item["instances"]),
                _when(item["next_try_at"]),
            )
        console.print(parked)
        console.print("retry now with: imaging-hub gateway retry STUDY_UID | --all")
    if status.get("mpps_in_progress"):
        steps = Table("MPPS in progress", "study", "accession", "modality", "from", "started")
        for step in status["mpps_in_progress"]:
            steps.add_row(
                str(step["mpps_uid"]),
                str(step["study_instance_uid"]),
                str(step["accession_number"] or "-"),
                str(step["modality"] or "-"),
                str(step["calling_ae"] or "-"),
                str(step["performed_at"] or "-"),
            )
        console.print(steps)
    if status.get("mpps_outbox"):
        console.print(f"MPPS states not yet at the hub: {status['mpps_outbox']}")
    if status.get("open_associations"):
        held = Table("study held by an open association", "from", "since")
        for row in status["open_associations"]:
            held.add_row(
                str(row["study_instance_uid"]),
                str(row["calling_ae"] or "-"),
                _when(row["opened_at"]),
            )
        console.print(held)


def _report_counts(settings: GatewaySettings) -> dict[str, int]:
    """What the report side holds (``reports.sqlite``), if the gateway ever pulled reports."""
    from imaging_hub.dicom_gateway.reports import REPORTS_DB, ReportStore

    if not (settings.spool_dir / REPORTS_DB).is_file():
        return {}
    store = ReportStore(settings.spool_dir, clean_tmp=False)  # the running gateway's tmp/
    try:
        return store.counts()
    finally:
        store.close()


@gateway_app.command("retry")
def gateway_retry(
    study_uid: Annotated[
        str | None, typer.Argument(help="StudyInstanceUID of a parked study.")
    ] = None,
    retry_all: Annotated[bool, typer.Option("--all", help="Retry every parked study.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Try a parked study (or all of them) again at the forwarder's next turn, without waiting
    for the parking schedule. Works while the gateway runs (or when it is down)."""
    setup(config)
    from imaging_hub.dicom_gateway.spool import Spool
    from imaging_hub.errors import InvalidDicomError

    if (study_uid is None) == (not retry_all):
        console.print("[red]Name one STUDY_UID, or --all.[/red]")
        raise typer.Exit(2)
    settings = GatewaySettings()
    spool = Spool(settings.spool_dir, clean_tmp=False)  # the running gateway's tmp/
    try:
        studies, instances = spool.retry(study_uid)
    except InvalidDicomError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    finally:
        spool.close()
    if not studies and not instances:
        console.print("nothing parked" + (f" for study {study_uid}" if study_uid else ""))
        raise typer.Exit(1 if study_uid else 0)
    console.print(f"{studies} studies and {instances} instances will be tried again now")
