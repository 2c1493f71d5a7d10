"""The ``imaging-hub`` command."""

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

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
    from imaging_hub.worklist.db.migrate import upgrade
    from imaging_hub.worklist.db.session import make_engine

    settings = HubSettings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    engine.dispose()
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


@gateway_app.command("serve")
def gateway_serve(config: ConfigOpt = None) -> None:
    """Run the clinic gateway: DICOM SCP, spool and forwarder.

    Logs one line per study forwarded (size, time, ratio); on a terminal it also shows a live
    progress line (queue, bytes pending, forwarded, uplink throughput, last error).
    """
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
    _setup(config)
    from imaging_hub.dicom_gateway.metrics import gateway_status as spool_status
    from imaging_hub.dicom_gateway.spool import Spool

    settings = GatewaySettings()
    spool = Spool(settings.spool_dir, clean_tmp=False)  # the running gateway's tmp/
    try:
        status = spool_status(spool, None)
        studies = spool.study_progress()
    finally:
        spool.close()
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
    console.print(
        f"last success: {_when(status['last_success_at'])}   "
        f"last error: {status['last_error'] or '-'}"
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


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Create or migrate the hub database to the current schema."""
    _setup(config)
    from imaging_hub.worklist.db.migrate import upgrade
    from imaging_hub.worklist.db.session import make_engine

    settings = HubSettings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    engine.dispose()
    console.print("database is at the current schema")


audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
user_app = typer.Typer(help="User accounts.", no_args_is_help=True)
gw_admin_app = typer.Typer(help="Clinic gateway credentials.", no_args_is_help=True)
admin_app.add_typer(audit_app, name="audit")
admin_app.add_typer(user_app, name="user")
admin_app.add_typer(gw_admin_app, name="gateway")
duty_app = typer.Typer(help="Radiologists' eligibility and on-duty shifts.", no_args_is_help=True)
admin_app.add_typer(duty_app, name="duty")
order_app = typer.Typer(help="Clinics' exam orders (the Modality Worklist).", no_args_is_help=True)
admin_app.add_typer(order_app, name="order")


@contextmanager
def _admin_session(config: Path | None) -> Iterator[Any]:
    """A session on the configured hub database, committed on success (CLI admin commands)."""
    _setup(config)
    from imaging_hub.worklist.db.session import make_engine, make_session_factory, session_scope

    settings = HubSettings()
    engine = make_engine(settings.resolved_database_url())
    try:
        with session_scope(make_session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()


def _fail(message: str, code: int = 1) -> NoReturn:
    console.print(f"[red]{message}[/red]")
    raise typer.Exit(code)


def _cli_actor() -> dict[str, str]:
    return {"via": "cli", "os_user": os.environ.get("USER", "")}


@audit_app.command("verify")
def audit_verify(config: ConfigOpt = None) -> None:
    """Recompute the audit hash chain; exit 1 naming the first bad event if it was tampered."""
    from imaging_hub.worklist.audit.trail import AuditChainBroken, verify_chain

    with _admin_session(config) as session:
        try:
            report = verify_chain(session)
        except AuditChainBroken as exc:
            _fail(f"audit trail BROKEN at event {exc.event_id}: {exc}")
    console.print(
        f"audit trail OK: {report.events} events, last id {report.last_id}, "
        f"head hash {report.last_hash}"
    )


UsernameArg = Annotated[str, typer.Argument(help="Username.")]


@user_app.command("create")
def user_create(
    username: UsernameArg,
    role: Annotated[str, typer.Option("--role", help="admin|radiologist|consultant|clinic_staff")],
    institution: Annotated[str, typer.Option("--institution", help="Institution code.")],
    display_name: Annotated[str, typer.Option("--display-name")] = "",
    password: Annotated[
        str | None,
        typer.Option("--password", help="Initial password; default: a random one, printed once."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Create a user account."""
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.access.accounts import create_user, get_institution
    from imaging_hub.worklist.admin.seed import random_password
    from imaging_hub.worklist.audit import trail as audit
    from imaging_hub.worklist.db.models import Role

    if role not in {r.value for r in Role}:
        _fail(f"Unknown role {role!r}.", 2)
    plain = password or random_password()
    with _admin_session(config) as session:
        try:
            user = create_user(
                session,
                username=username,
                password=plain,
                role=Role(role),
                institution=get_institution(session, institution),
                display_name=display_name,
            )
        except ImagingHubError as exc:
            _fail(str(exc))
        audit.record(
            session,
            actor=None,
            action=audit.ADMIN_USER,
            object_type="user",
            object_id=username,
            detail={"op": "created", "role": role, **_cli_actor()},
        )
        console.print(f"created user {user.username} ({role}, {institution})")
    if password is None:
        console.print(f"password (shown once): {plain}")


def _user_op(username: str, op: str, config: Path | None, **kwargs: Any) -> None:
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.access.accounts import get_user, set_active, set_password
    from imaging_hub.worklist.audit import trail as audit

    with _admin_session(config) as session:
        try:
            user = get_user(session, username)
            if op == "disabled":
                set_active(session, user=user, active=False)
            elif op == "enabled":
                set_active(session, user=user, active=True)
            else:
                set_password(session, user=user, new_password=kwargs["password"])
        except ImagingHubError as exc:
            _fail(str(exc))
        audit.record(
            session,
            actor=None,
            action=audit.ADMIN_USER,
            object_type="user",
            object_id=username,
            detail={"op": op, **_cli_actor()},
        )
    console.print(f"user {username}: {op.replace('_', ' ')}")


@user_app.command("disable")
def user_disable(username: UsernameArg, config: ConfigOpt = None) -> None:
    """Disable an account: its tokens and sessions stop working at once."""
    _user_op(username, "disabled", config)


@user_app.command("enable")
def user_enable(username: UsernameArg, config: ConfigOpt = None) -> None:
    """Enable a disabled account (and clear a login lockout)."""
    _user_op(username, "enabled", config)


@user_app.command("reset-password")
def user_reset_password(
    username: UsernameArg,
    password: Annotated[
        str | None, typer.Option("--password", help="New password; default: random, printed.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Set a new password; every session of the account ends."""
    from imaging_hub.worklist.admin.seed import random_password

    plain = password or random_password()
    _user_op(username, "password_reset", config, password=plain)
    if password is None:
        console.print(f"new password (shown once): {plain}")


@user_app.command("list")
def user_list(config: ConfigOpt = None) -> None:
    """List user accounts."""
    from sqlalchemy import select

    from imaging_hub.worklist.db.models import User

    table = Table("username", "role", "institution", "active", "locked until")
    with _admin_session(config) as session:
        for user in session.scalars(select(User).order_by(User.username)):
            table.add_row(
                user.username,
                user.role.value,
                user.institution.code,
                "yes" if user.is_active else "no",
                str(user.locked_until or ""),
            )
    console.print(table)


GatewayArg = Annotated[str, typer.Argument(help="Gateway name, e.g. gateway-clinic-a.")]


def _cli_audit(
    session: Any, action: str, object_type: str, name: str, op: str, **detail: Any
) -> None:
    """An administration change made from the command line, in the audit trail."""
    from imaging_hub.worklist.audit import trail as audit

    audit.record(
        session,
        actor=None,
        action=action,
        object_type=object_type,
        object_id=name,
        detail={"op": op, **detail, **_cli_actor()},
    )


def _gateway_audit(session: Any, name: str, op: str, **detail: str) -> None:
    from imaging_hub.worklist.audit import trail as audit

    _cli_audit(session, audit.ADMIN_GATEWAY, "gateway", name, op, **detail)


@gw_admin_app.command("create")
def gateway_create(
    name: GatewayArg,
    clinic: Annotated[str, typer.Option("--clinic", help="Code of the gateway's clinic.")],
    ae_title: Annotated[str, typer.Option("--ae-title")] = "",
    config: ConfigOpt = None,
) -> None:
    """Register a clinic gateway and print its token (shown once, stored hashed)."""
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.access.accounts import create_gateway, get_institution

    with _admin_session(config) as session:
        try:
            issued = create_gateway(
                session, clinic=get_institution(session, clinic), name=name, ae_title=ae_title
            )
        except ImagingHubError as exc:
            _fail(str(exc))
        _gateway_audit(session, name, "created", clinic=clinic)
    console.print(f"gateway {name} for {clinic} created")
    console.print(f"token (shown once): {issued.token}")


@gw_admin_app.command("rotate")
def gateway_rotate(name: GatewayArg, config: ConfigOpt = None) -> None:
    """Issue a new token; the previous one keeps working until the next rotation."""
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.access.accounts import get_gateway, rotate_gateway_token

    with _admin_session(config) as session:
        try:
            token = rotate_gateway_token(session, gateway=get_gateway(session, name))
        except ImagingHubError as exc:
            _fail(str(exc))
        _gateway_audit(session, name, "rotated")
    console.print(f"new token for {name} (shown once): {token}")
    console.print("the previous token works until the next rotation; update the gateway now")


@gw_admin_app.command("revoke")
def gateway_revoke(name: GatewayArg, config: ConfigOpt = None) -> None:
    """Revoke a gateway: both its tokens stop working at once."""
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.access.accounts import get_gateway, revoke_gateway

    with _admin_session(config) as session:
        try:
            revoke_gateway(session, gateway=get_gateway(session, name))
        except ImagingHubError as exc:
            _fail(str(exc))
        _gateway_audit(session, name, "revoked")
    console.print(f"gateway {name} revoked")


@gw_admin_app.command("list")
def gateway_list(config: ConfigOpt = None) -> None:
    """List clinic gateways (never their tokens)."""
    from sqlalchemy import select

    from imaging_hub.worklist.db.models import Gateway

    table = Table("name", "clinic", "AE title", "state", "last seen")
    with _admin_session(config) as session:
        for gw in session.scalars(select(Gateway).order_by(Gateway.name)):
            table.add_row(
                gw.name,
                gw.institution.code,
                gw.ae_title,
                "revoked" if gw.revoked_at else "active",
                str(gw.last_seen_at or "never"),
            )
    console.print(table)


def _duty_audit(session: Any, username: str, op: str, **detail: Any) -> None:
    from imaging_hub.worklist.audit import trail as audit

    _cli_audit(session, audit.ADMIN_USER, "user", username, op, **detail)


@duty_app.command("eligibility")
def duty_eligibility(
    username: UsernameArg,
    modality: Annotated[
        list[str] | None, typer.Option("--modality", help="Allowed modality (repeat); none: all.")
    ] = None,
    body_part: Annotated[
        list[str] | None, typer.Option("--body-part", help="Allowed body part (repeat); none: all.")
    ] = None,
    clinic: Annotated[
        list[str] | None, typer.Option("--clinic", help="Covered clinic code (repeat); none: all.")
    ] = None,
    show: Annotated[
        bool, typer.Option("--show", help="Only print the current eligibility.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Set (replace) or show what a radiologist may read."""
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.access.accounts import get_user
    from imaging_hub.worklist.reading import duty

    with _admin_session(config) as session:
        try:
            user = get_user(session, username)
            if show:
                view = duty.get_eligibility(session, user=user)
            else:
                view = duty.set_eligibility(
                    session,
                    user=user,
                    modalities=modality or [],
                    body_parts=body_part or [],
                    clinics=clinic or [],
                )
                _duty_audit(
                    session,
                    username,
                    "eligibility_set",
                    modalities=view.modalities,
                    body_parts=view.body_parts,
                    clinics=view.clinics,
                )
        except ImagingHubError as exc:
            _fail(str(exc))
    console.print(
        f"{view.username}: modalities {', '.join(view.modalities) or 'all'}; "
        f"body parts {', '.join(view.body_parts) or 'all'}; "
        f"clinics {', '.join(view.clinics) or 'all'}"
    )


def _aware_time(value: str, name: str) -> Any:
    from datetime import datetime

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"{name} {value!r} is not an ISO 8601 time (e.g. 2026-11-23T08:00+08:00).", 2)
    return parsed


@duty_app.command("shift-add")
def duty_shift_add(
    username: UsernameArg,
    start: Annotated[str, typer.Option("--start", help="ISO 8601 with a time zone.")],
    end: Annotated[str, typer.Option("--end", help="ISO 8601 with a time zone.")],
    config: ConfigOpt = None,
) -> None:
    """Add an on-duty shift (at most 24 hours, not overlapping the radiologist's others)."""
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.access.accounts import get_user
    from imaging_hub.worklist.reading import duty

    starts_at, ends_at = _aware_time(start, "--start"), _aware_time(end, "--end")
    with _admin_session(config) as session:
        try:
            view = duty.add_shift(
                session, user=get_user(session, username), starts_at=starts_at, ends_at=ends_at
            )
        except ImagingHubError as exc:
            _fail(str(exc))
        _duty_audit(
            session,
            username,
            "shift_added",
            shift=view.id,
            starts_at=view.starts_at.isoformat(),
            ends_at=view.ends_at.isoformat(),
        )
    console.print(f"shift {view.id}: {view.username} {view.starts_at} – {view.ends_at}")


@duty_app.command("shift-delete")
def duty_shift_delete(
    shift_id: Annotated[int, typer.Argument(help="Shift id (see shift-list).", min=1)],
    config: ConfigOpt = None,
) -> None:
    """Remove a shift."""
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.reading import duty

    with _admin_session(config) as session:
        try:
            view = duty.delete_shift(session, shift_id=shift_id)
        except ImagingHubError as exc:
            _fail(str(exc))
        _duty_audit(session, view.username, "shift_deleted", shift=view.id)
    console.print(f"shift {view.id} of {view.username} removed")


@duty_app.command("shift-list")
def duty_shift_list(
    username: Annotated[str | None, typer.Option("--user", help="Only this radiologist.")] = None,
    config: ConfigOpt = None,
) -> None:
    """List shifts in start order."""
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.access.accounts import get_user
    from imaging_hub.worklist.reading import duty

    table = Table("id", "user", "starts", "ends")
    with _admin_session(config) as session:
        try:
            user = get_user(session, username) if username else None
        except ImagingHubError as exc:
            _fail(str(exc))
        for view in duty.list_shifts(session, user=user):
            table.add_row(str(view.id), view.username, str(view.starts_at), str(view.ends_at))
    console.print(table)


@order_app.command("create")
def order_create(
    clinic: Annotated[str, typer.Argument(help="Clinic code, e.g. clinic-a.")],
    accession: Annotated[str, typer.Option("--accession", help="Accession number.")],
    patient_id: Annotated[str, typer.Option("--patient-id")],
    modality: Annotated[str, typer.Option("--modality", help="CR, DX, CT, US, MR...")],
    scheduled_at: Annotated[str, typer.Option("--scheduled-at", help="ISO 8601 with a time zone.")],
    patient_name: Annotated[
        str, typer.Option("--patient-name", help="DICOM PN, e.g. 王^小东")
    ] = "",
    body_part: Annotated[str, typer.Option("--body-part")] = "",
    station_ae: Annotated[str, typer.Option("--station-ae", help="Scheduled station AE.")] = "",
    priority: Annotated[str, typer.Option("--priority", help="stat|urgent|routine")] = "routine",
    config: ConfigOpt = None,
) -> None:
    """Register an exam order at a clinic; prints its pre-assigned StudyInstanceUID."""
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.access.accounts import get_institution
    from imaging_hub.worklist.audit import trail as audit
    from imaging_hub.worklist.db.models import Priority
    from imaging_hub.worklist.orders import orders

    if priority not in {p.value for p in Priority}:
        _fail(f"Unknown priority {priority!r}.", 2)
    when = _aware_time(scheduled_at, "--scheduled-at")
    with _admin_session(config) as session:
        try:
            order = orders.create_order(
                session,
                clinic=get_institution(session, clinic),
                new=orders.NewOrder(
                    accession_number=accession,
                    patient_id=patient_id,
                    modality=modality,
                    scheduled_at=when,
                    patient_name=patient_name,
                    body_part_examined=body_part,
                    scheduled_station_ae_title=station_ae,
                    priority=Priority(priority),
                ),
                by=None,
            )
        except ImagingHubError as exc:
            _fail(str(exc))
        _cli_audit(session, audit.ORDER_WRITTEN, "order", str(order.id), "created")
    console.print(f"order {order.id} at {clinic}: StudyInstanceUID {order.study_instance_uid}")


@order_app.command("cancel")
def order_cancel(
    order_id: Annotated[int, typer.Argument(help="Order id (see order list).", min=1)],
    config: ConfigOpt = None,
) -> None:
    """Cancel a scheduled order."""
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.audit import trail as audit
    from imaging_hub.worklist.orders import orders

    with _admin_session(config) as session:
        try:
            orders.cancel_order(session, order_id=order_id, clinic=None)
        except ImagingHubError as exc:
            _fail(str(exc))
        _cli_audit(session, audit.ORDER_WRITTEN, "order", str(order_id), "cancelled")
    console.print(f"order {order_id} cancelled")


@order_app.command("list")
def order_list(
    clinic: Annotated[str | None, typer.Option("--clinic", help="Only this clinic.")] = None,
    config: ConfigOpt = None,
) -> None:
    """List orders in scheduled order (IDs and UIDs, no patient names)."""
    from imaging_hub.errors import ImagingHubError
    from imaging_hub.worklist.access.accounts import get_institution
    from imaging_hub.worklist.orders import orders

    table = Table(
        "id", "clinic", "accession", "modality", "scheduled", "status", "StudyInstanceUID"
    )
    with _admin_session(config) as session:
        try:
            where = get_institution(session, clinic) if clinic else None
        except ImagingHubError as exc:
            _fail(str(exc))
        for order, code in orders.list_orders(session, clinic=where):
            table.add_row(
                str(order.id),
                code,
                order.accession_number,
                order.modality,
                str(order.scheduled_at),
                order.status.value,
                order.study_instance_uid,
            )
    console.print(table)


def main() -> None:
    app()
