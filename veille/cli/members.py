"""`veille members add|list|remove|set-topics|import`: who receives the weekly digest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import App, main, pass_app
from .output import json_default, table


def _store(app: App):
    from ..store import Store

    return Store.open(app.db)


def _known_topics(app: App, store) -> set[str]:
    """Topic ids of the archive, plus those of topics.yaml when it is there (not synced yet)."""
    from ..members import known_topics

    known = known_topics(store)
    if app.topics.exists():
        try:
            known |= {t.id for t in app.watch().load_topics()}
        except ImportError:  # the topic engine is not installed in this build: the table is enough
            pass
    return known


def _email(value: str) -> str:
    from ..members import normalise_email

    try:
        return normalise_email(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="EMAIL") from None


def _topics(app: App, store, values: tuple[str, ...] | str | None) -> tuple[str, ...] | None:
    from ..members import check_topics, parse_topics

    topics = parse_topics(values) if values else None
    try:
        check_topics(topics, _known_topics(app, store) if topics else set())
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="topics") from None
    return topics


def _record(m) -> dict:
    return {"email": m.email, "name": m.name, "organisation": m.organisation,
            "topics": list(m.topics) if m.topics is not None else "all", "active": m.active,
            "created_at": m.created_at, "updated_at": m.updated_at}


@main.group()
def members() -> None:
    """Members of the association who receive the weekly digest."""


@members.command("add")
@click.argument("email")
@click.option("--name", default="", help="Full name (used in the greeting).")
@click.option("--organisation", default="", help="Local authority or body.")
@click.option("--topics", default="", metavar="IDS", help="Topic ids separated by ';' (default: all topics).")
@pass_app
def members_add(app: App, email: str, name: str, organisation: str, topics: str) -> None:
    """Add a member (follows every topic unless --topics is given)."""
    email = _email(email)
    with _store(app) as store:
        wanted = _topics(app, store, topics)
        if store.get_member(email) is not None:
            raise click.ClickException(f"{email} is already a member; use `veille members set-topics` to change "
                                       "their topics, or `veille members import` to update from a list")
        member, _ = store.upsert_member(email, name.strip(), organisation.strip(), wanted)
    click.echo(f"added {member.email} ({'all topics' if member.topics is None else ', '.join(member.topics)})")


@members.command("list")
@click.option("--active-only", is_flag=True, help="Leave out members who unsubscribed.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@pass_app
def members_list(app: App, active_only: bool, as_json: bool) -> None:
    """List members, their topics and whether they are subscribed."""
    with _store(app) as store:
        rows = store.list_members(active_only=active_only)
    if as_json:
        for m in rows:
            click.echo(json.dumps(_record(m), default=json_default, ensure_ascii=False))
        return
    table(["email", "name", "organisation", "topics", "active"],
          [(m.email, m.name, m.organisation, "all" if m.topics is None else ";".join(m.topics),
            "yes" if m.active else "no") for m in rows],
          title=f"{len(rows)} members")


@members.command("remove")
@click.argument("email")
@pass_app
def members_remove(app: App, email: str) -> None:
    """Delete a member and their delivery history."""
    email = _email(email)
    with _store(app) as store:
        if not store.remove_member(email):
            raise click.ClickException(f"{email} is not a member (see `veille members list`)")
    click.echo(f"removed {email}")


@members.command("set-topics")
@click.argument("email")
@click.argument("topics", nargs=-1)
@click.option("--all", "all_topics", is_flag=True, help="Follow every topic, including future ones.")
@pass_app
def members_set_topics(app: App, email: str, topics: tuple[str, ...], all_topics: bool) -> None:
    """Replace the topics a member follows: `set-topics EMAIL cyber data` or `set-topics EMAIL --all`."""
    email = _email(email)
    if all_topics == bool(topics):
        raise click.UsageError("give topic ids, or --all (not both)")
    with _store(app) as store:
        wanted = None if all_topics else _topics(app, store, topics)
        member = store.set_member_topics(email, wanted)
        if member is None:
            raise click.ClickException(f"{email} is not a member (see `veille members list`)")
    click.echo(f"{member.email}: {'all topics' if member.topics is None else ', '.join(member.topics)}")


@members.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the counts and skipped lines as JSON.")
@pass_app
def members_import(app: App, file: Path, as_json: bool) -> None:
    """Import or update members from a UTF-8 CSV file with the header `email,name,organisation,topics`.

    Topics are ids separated by ';' (empty: all topics). Members are matched by email, so importing
    the same file twice changes nothing; someone who unsubscribed stays unsubscribed. Invalid emails
    and unknown topics are reported with their line and skipped; the other lines are imported.
    """
    from ..members import import_csv

    with _store(app) as store:
        report = import_csv(store, file, known=_known_topics(app, store))
    if as_json:
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        click.echo(f"{report.created} created, {report.updated} updated, {report.unchanged} unchanged, "
                   f"{len(report.errors)} skipped")
    for error in report.errors:
        click.secho(f"skipped {error}", fg="yellow", err=True)
    if report.errors and not (report.created or report.updated or report.unchanged):
        sys.exit(1)
