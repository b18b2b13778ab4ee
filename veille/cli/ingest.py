"""Commands of the ingestion stage: `fetch`, `sources list|check`, `extract`."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import click

from . import App, main, pass_app
from .digest import show_report
from .output import console, json_default, print_json_lines, table


@main.command()
@pass_app
def run(app: App) -> None:
    """The main job: one fetch pass, tagging, then this week's digest for every member.

    With no SMTP server configured (VEILLE_SMTP_HOST), the digest and one .eml per member are written
    to digests/YYYY-Www/. Safe to rerun: nothing is stored or sent twice.
    """
    with app.watch() as watch:
        result = _fetch_with_progress(watch, (), None, show_progress=sys.stderr.isatty())
        _fetch_table(result)
        report = watch.send_digest(send=True)
    click.echo("")
    show_report(report)
    click.echo(f"archive page: {report.folder}/index.html    database: {app.db}")
    if report.mode == "outbox":
        click.echo("no SMTP server configured: set VEILLE_SMTP_HOST (see `veille settings`) to send the emails")


def _fetch_with_progress(watch, source_ids, full_text, show_progress: bool):
    if not show_progress:
        return watch.fetch(source_ids or None, full_text=full_text)
    from rich.progress import Progress

    total = len(watch.select_sources(source_ids))
    with Progress(console=console(stderr=True), transient=True) as bar:
        task = bar.add_task("fetching", total=total)
        return watch.fetch(source_ids or None, full_text=full_text,
                           progress=lambda r: bar.update(task, advance=1, description=r.source_id))


def _fetch_table(result) -> None:
    rows = [
        [r.source_id, r.status, r.new, r.updated, _error_cell(r.error, r.reason, r.hint)]
        for r in result.sources
    ]
    table(["source", "status", "new", "updated", "error"], rows,
          title=f"{result.new} new, {result.updated} updated, {len(result.failed)} failed "
                f"in {(result.finished_at - result.started_at).total_seconds():.0f} s")


@main.command()
@click.option("--source", "source_ids", multiple=True, metavar="ID", help="Only this source (repeatable).")
@click.option("--no-full-text", is_flag=True, help="Do not fetch article pages; keep the feeds' text.")
@click.option("--json", "as_json", is_flag=True, help="Print the pass result as JSON.")
@pass_app
def fetch(app: App, source_ids: tuple[str, ...], no_full_text: bool, as_json: bool) -> None:
    """Fetch every source once: new articles are extracted, deduplicated, stored and tagged.

    Exits 0 when the pass completed, even if some sources failed (they are listed with the reason and
    what to do); 2 on a configuration error.
    """
    with app.watch() as watch:
        result = _fetch_with_progress(watch, source_ids, False if no_full_text else None,
                                      show_progress=not as_json and sys.stderr.isatty())
    if as_json:
        # Shallow dicts: `dataclasses.asdict` deep-copies every value, 20 ms for 1,000 sources.
        record = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
        record["sources"] = [dict(vars(s)) for s in result.sources]
        click.echo(json.dumps(record | {"new": result.new, "updated": result.updated},
                              default=json_default, ensure_ascii=False, indent=2))
        return
    _fetch_table(result)


def _error_cell(error: str | None, reason: str | None, hint: str | None) -> str:
    if not error:
        return ""
    text = f"{reason}: {error}" if reason else error
    return f"{text} -> {hint}" if hint else text


@main.group()
def sources() -> None:
    """Inspect and probe the sources of sources.yaml."""


@sources.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@pass_app
def sources_list(app: App, as_json: bool) -> None:
    """List the configured sources with their state in the archive."""
    with app.watch() as watch:
        configured = watch.load_sources()
        states = {}
        if app.db.exists():
            for s in configured:
                states[s.id] = watch.store.source_state(s.id)
    records = []
    for s in configured:
        st = states.get(s.id)
        state = "new"
        if st is not None:
            if not st.enabled:
                state = f"disabled: {st.disabled_reason}"
            elif st.failing_since:
                state = f"failing since {st.failing_since:%Y-%m-%d %H:%M} ({st.last_reason})"
            elif st.last_ok_at:
                state = f"ok {st.last_ok_at:%Y-%m-%d %H:%M}"
        records.append({"id": s.id, "name": s.name, "type": s.type, "url": st.current_url if st else s.url,
                        "interval": _duration(s.interval.total_seconds()), "state": state})
    if as_json:
        print_json_lines(records)
    else:
        table(["id", "name", "type", "interval", "state", "url"],
              [[r["id"], r["name"], r["type"], r["interval"], r["state"], r["url"]] for r in records],
              title=f"{len(records)} sources in {app.sources}")


@sources.command("check")
@click.option("--source", "source_ids", multiple=True, metavar="ID", help="Only this source (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@pass_app
def sources_check(app: App, source_ids: tuple[str, ...], as_json: bool) -> None:
    """Validate sources.yaml and probe each source (title, entries, last modified), storing nothing.

    Exit 0 when every source answered, 1 when some failed (listed with a hint), 2 when the file is invalid.
    """
    with app.watch() as watch:
        checks = watch.check_sources(source_ids or None)
    if as_json:
        print_json_lines(dataclasses.asdict(c) for c in checks)
    else:
        table(["source", "ok", "title", "entries", "last modified", "error"],
              [[c.source_id, "yes" if c.ok else "NO", c.title or "", c.entries,
                f"{c.last_modified:%Y-%m-%d %H:%M}" if c.last_modified else "",
                _error_cell(c.error, c.reason, c.hint)] for c in checks],
              title=f"{sum(c.ok for c in checks)}/{len(checks)} sources answered")
    if not all(c.ok for c in checks):
        sys.exit(1)


@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="FILE_OR_URL...")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_app
def extract(app: App, inputs: tuple[str, ...], as_json: bool) -> None:
    """Show what the extractor keeps from pages (text and metadata), to debug a source.

    Uses exactly the extraction path of `veille fetch`. With --json, one object per line:
    {"input", "title", "author", "date", "lang", "text", "text_source"}.
    """
    with app.watch() as watch:
        results = watch.extract(list(inputs))
    failed = False
    for r in results:
        a = r.article
        record: dict[str, Any] = {
            "input": r.input, "title": a.title if a else None, "author": a.author if a else None,
            "date": a.published_at.isoformat() if a and not a.date_is_fallback else None,
            "lang": a.lang if a else None, "text": a.text if a else None,
            "text_source": a.text_source if a else None,
        }
        if r.error:
            record["error"] = r.error
            failed = True
        if as_json:
            click.echo(json.dumps(record, ensure_ascii=False))
            continue
        if r.error:
            click.secho(f"{r.input}: {r.error}", fg="red", err=True)
            continue
        click.secho(f"== {r.input}", bold=True)
        for key in ("title", "author", "date", "lang", "text_source"):
            click.echo(f"{key}: {record[key] or '-'}")
        click.echo("")
        click.echo(record["text"] or "")
    if failed:
        sys.exit(1)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"

