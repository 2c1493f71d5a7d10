"""``imaging-hub admin audit``: the audit trail (over :mod:`imaging_hub.worklist.audit.review`)."""

import typer

from imaging_hub.cli.common import ConfigOpt, admin_session, console, fail

audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)


@audit_app.command("verify")
def audit_verify(config: ConfigOpt = None) -> None:
    """Recompute the audit hash chain; exit 1 naming the first bad event if it was tampered."""
    from imaging_hub.worklist.audit import review
    from imaging_hub.worklist.audit.trail import AuditChainBroken

    with admin_session(config) as (session, caller):
        try:
            report = review.verify(session, caller)
        except AuditChainBroken as exc:
            fail(f"audit trail BROKEN at event {exc.event_id}: {exc}")
    console.print(
        f"audit trail OK: {report.events} events, last id {report.last_id}, "
        f"head hash {report.last_hash}"
    )
