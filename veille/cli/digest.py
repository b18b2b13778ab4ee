"""`veille digest`: build a week's digest, write its archive folder, and email or write it for members."""

from __future__ import annotations

import json
import sys

import click

from . import App, main, pass_app


class Week(click.ParamType):
    """`2026-W48`, `current` or `previous`, checked early so a typo is a usage error (exit 2)."""

    name = "WEEK"

    def convert(self, value, param, ctx):
        from ..digest import resolve_week

        try:
            return resolve_week(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


@main.command("digest")
@click.option("--week", type=Week(), default="current", show_default=True,
              help="ISO week (2026-W48), `current` or `previous` (the last complete week, Paris time).")
@click.option("--member", "member_email", metavar="EMAIL", help="Only this member.")
@click.option("--send", is_flag=True,
              help="Send over SMTP (VEILLE_SMTP_HOST...). Without it, or without an SMTP host, one .eml per "
                   "member is written to digests/WEEK/outbox/.")
@click.option("--retry-uncertain", is_flag=True,
              help="Also send to members whose previous sending was interrupted mid-transaction (they may "
                   "have received it: check the mail server's log first).")
@click.option("--json", "as_json", is_flag=True, help="Print the delivery report as JSON.")
@pass_app
def digest_command(app: App, week: str, member_email: str | None, send: bool, retry_uncertain: bool,
                   as_json: bool) -> None:
    """Build the digest of a week and deliver it to members, each exactly once.

    Writes digests/WEEK/index.html (the archive page, all topics), digest.md and digest.json, then
    serves every active member who follows a topic with news that week: by SMTP with --send, or as
    .eml files in digests/WEEK/outbox/. The default week is the current one (useful to preview);
    the scheduler sends `previous` on Monday morning.

    Rerunning is safe: members already served are skipped. A member whose sending was interrupted
    mid-transaction (crash, connection lost during DATA) is reported as uncertain and not resent
    unless --retry-uncertain. Exit code 1 when some deliveries failed and should be retried.
    """
    from ..config import load_sources
    from ..errors import MailError
    from ..mail import deliver_week
    from ..store import Store

    settings = app.settings()
    if app.sources.exists():
        sources = load_sources(app.sources)
    else:
        click.secho(f"note: {app.sources} not found: every source gets the default excerpt policy (short)",
                    fg="yellow", err=True)
        sources = []
    if send and not settings.smtp_host:
        click.secho("note: no SMTP server configured (VEILLE_SMTP_HOST): writing the outbox instead",
                    fg="yellow", err=True)
    with Store.open(app.db) as store:
        try:
            report = deliver_week(store, week, settings, sources, send=send, member_email=member_email,
                                  retry_uncertain=retry_uncertain)
        except MailError as e:
            if getattr(e, "report", None) is not None:
                show_report(e.report, as_json)
            raise
    show_report(report, as_json)
    if report.failed:
        sys.exit(1)


def show_report(report, as_json: bool = False) -> None:
    if as_json:
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
        return
    click.echo(f"digest {report.week}: {report.articles} articles, {report.members} active members -> {report.folder}")
    if report.mode == "outbox":
        click.echo(f"outbox: {len(report.written)} written, {len(report.empty)} without news, "
                   f"{len(report.already)} already sent -> {report.outbox}")
    else:
        click.echo(f"smtp: {len(report.sent)} sent, {len(report.already)} already served, "
                   f"{len(report.empty)} without news, {len(report.bounced)} bounced, {len(report.failed)} failed")
    if report.uncertain:
        click.secho(f"uncertain ({len(report.uncertain)}): interrupted during sending, maybe delivered; check the "
                    "mail server's log, then rerun with --retry-uncertain for those not received:", fg="yellow")
        for email in report.uncertain:
            click.echo(f"  {email}")
    for email, error in report.bounced:
        click.secho(f"bounced {email}: {error}", fg="red")
    for email, error in report.failed:
        click.secho(f"failed {email}: {error}", fg="red")
