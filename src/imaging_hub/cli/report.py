"""``imaging-hub report``: signed reports (verify a PDF offline)."""

import logging
from pathlib import Path
from typing import Annotated

import typer

from imaging_hub.cli.common import console, fail

report_app = typer.Typer(help="Signed reports.", no_args_is_help=True)


def _default_trust() -> Path | None:
    from imaging_hub.config import HubSettings
    from imaging_hub.worklist.reports.pki import CA_CERT, ca_directory

    path = ca_directory(HubSettings().data_dir) / CA_CERT
    return path if path.is_file() else None


@report_app.command("verify")
def report_verify(
    file: Annotated[Path, typer.Argument(help="The signed report PDF.", dir_okay=False)],
    trust: Annotated[
        Path | None,
        typer.Option(
            "--trust",
            help="CA certificate(s) to trust, PEM or DER (the hub's: GET /api/v1/pki/ca.pem). "
            "Default: this hub's own CA, if it runs here.",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Verify a signed report offline: signer, signing time, timestamp, intact or modified,
    trusted. Exit status 0 only when the file is intact and trusted."""
    from imaging_hub.worklist.reports.pki import load_certificates
    from imaging_hub.worklist.reports.verify import verify_pdf

    # pyHanko logs each failed path build with a traceback; the verdict below says it all.
    for name in ("pyhanko", "pyhanko_certvalidator"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        data = file.read_bytes()
    except OSError as exc:
        fail(f"Cannot read {file}: {exc.strerror}.", 2)
    trust_path = trust or _default_trust()
    if trust_path is None:
        fail("No trust root: pass --trust CA.pem (the hub's CA certificate).", 2)
    try:
        roots = load_certificates(trust_path.read_bytes())
    except (OSError, ValueError):
        fail(f"{trust_path} holds no readable certificate.", 2)

    result = verify_pdf(data, roots)

    def when(value: object) -> str:
        return value.isoformat() if hasattr(value, "isoformat") else "—"

    signer = result.signer_name or "—"
    if result.signer_username:
        signer += f" ({result.signer_username})"
    console.print(f"file:           {file}")
    console.print(f"sha256:         {result.sha256}")
    console.print(f"signer:         {signer}")
    console.print(f"signing time:   {when(result.signing_time)}")
    console.print(f"timestamp:      {when(result.timestamp_time)}")
    state = "intact" if result.intact and not result.modified else "MODIFIED"
    console.print(
        f"integrity:      {state} (coverage {result.coverage}, "
        f"changes after signing: {result.modification_level})"
    )
    console.print(f"trusted:        {'yes' if result.trusted else 'NO'} ({trust_path})")
    console.print(f"validation data embedded: {'yes' if result.ltv_embedded else 'no'}")
    if result.ok:
        console.print(f"[green]OK: {result.summary}[/green]")
        return
    fail(f"NOT VALID: {result.summary}", 1)
