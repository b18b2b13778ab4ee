"""Analysts' commands: `search`, `export`, `trends`, `archive serve|schema`.

They all open the archive read-only: they run while the scheduler writes, and cannot change anything.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import click

from ..errors import QueryError
from . import App, main, pass_app
from .output import table


class When(click.ParamType):
    """A --since/--until value, checked early so a typo is a usage error (exit 2)."""

    name = "DATE"

    def convert(self, value, param, ctx):
        from ..search import parse_when

        try:
            parse_when(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)
        return value


WHEN = When()
_DATE_HELP = "a day (2026-11-24, Paris time), an ISO week (2026-W48), a month (2026-11) or an ISO datetime"


def _open(app: App):
    from ..store import Store

    return Store.open(app.db, readonly=True)


@main.command("search")
@click.argument("query", nargs=-1, required=True)
@click.option("--topic", "topics", multiple=True, metavar="ID", help="Only articles with this topic (repeatable: any).")
@click.option("--source", "sources", multiple=True, metavar="ID", help="Only this source (repeatable: any).")
@click.option("--since", type=WHEN, help=f"Published on or after: {_DATE_HELP}.")
@click.option("--until", type=WHEN, help="Published on or before (the whole day, week or month).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="Results shown.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@pass_app
def search_command(app: App, query: tuple[str, ...], topics: tuple[str, ...], sources: tuple[str, ...],
                   since: str | None, until: str | None, limit: int, fmt: str) -> None:
    """Full-text search of the archive, best matches first, with the matched words highlighted.

    QUERY uses the syntax of topic rules: words (all required), "a phrase", OR, NOT, parentheses,
    prefix*, title:word, a NEAR/5 b. Accents, case and regular plurals are folded: `donnée publique`
    finds "données publiques"; a word in capitals (RIP) matches only in capitals. Quote the query for
    your shell: veille search '"smart city" NOT "smart city mag"'.

    JSON and CSV mark highlighted words with **double asterisks**.
    """
    from ..search import search

    text = " ".join(query)
    with _open(app) as store:
        try:
            result = search(store, text, topics=topics, sources=sources, since=since, until=until, limit=limit,
                            count=fmt != "csv")
        except QueryError as e:
            click.secho(f"error: invalid query: {e}", fg="red", err=True)
            sys.exit(2)
    if fmt == "json":
        click.echo(json.dumps({
            "query": result.query, "total": result.total,
            "results": [_hit_record(h) for h in result.hits],
        }, ensure_ascii=False, indent=2))
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout)
        columns = ["id", "published_at", "source_id", "source", "title", "url", "topics", "score", "snippet"]
        writer.writerow(columns)
        for hit in result.hits:
            record = _hit_record(hit)
            record["topics"] = ";".join(record["topics"])
            writer.writerow([record[c] for c in columns])
        return
    title = f"{result.total} article{'s' if result.total != 1 else ''} for {result.query}"
    if len(result.hits) < result.total:
        title += f" (best {len(result.hits)})"
    if not sys.stdout.isatty():
        table(["date", "source", "title", "snippet", "url"],
              [[_paris_day(h.published_at), h.source_name, h.title.marked(), h.snippet.marked(), h.url]
               for h in result.hits], title=title)
        return
    from rich.table import Table
    from rich.text import Text

    from .output import console

    grid = Table(title=title, title_justify="left", show_lines=True)
    for name, ratio in (("date", None), ("source", None), ("article", 1)):
        grid.add_column(name, ratio=ratio, overflow="fold")
    for hit in result.hits:
        cell = Text()
        for piece, on in hit.title.segments():
            cell.append(piece, style="bold yellow" if on else "bold")
        cell.append("\n")
        for piece, on in hit.snippet.segments():
            cell.append(piece, style="bold yellow" if on else "")
        cell.append(f"\n{hit.url}", style="dim")
        grid.add_row(_paris_day(hit.published_at), hit.source_name, cell)
    console().print(grid)


def _hit_record(hit) -> dict:
    return {
        "id": hit.id, "published_at": hit.published_at.strftime("%Y-%m-%dT%H:%M:%SZ"), "source_id": hit.source_id,
        "source": hit.source_name, "title": hit.title.text, "url": hit.url, "topics": list(hit.topics),
        "score": hit.score, "title_highlighted": hit.title.marked(), "snippet": hit.snippet.marked(),
        "cluster_id": hit.cluster_id,
    }


def _paris_day(moment) -> str:
    from ..digest import PARIS

    return moment.astimezone(PARIS).strftime("%d/%m/%Y")


@main.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "jsonl", "parquet"]), default="csv",
              show_default=True, help="json: one array; jsonl: one object per line; parquet needs pyarrow.")
@click.option("--topic", "topics", multiple=True, metavar="ID", help="Only articles with this topic (repeatable: any).")
@click.option("--source", "sources", multiple=True, metavar="ID", help="Only this source (repeatable: any).")
@click.option("--since", type=WHEN, help=f"Published on or after: {_DATE_HELP}.")
@click.option("--until", type=WHEN, help="Published on or before (the whole day, week or month).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="File to write.")
@click.option("--excel", is_flag=True, help="CSV for a French Excel: UTF-8 with BOM, ';' separator.")
@click.option("--no-text", is_flag=True, help="Leave out the summary and full text columns.")
@pass_app
def export_command(app: App, fmt: str, topics: tuple[str, ...], sources: tuple[str, ...], since: str | None,
                   until: str | None, out: Path, excel: bool, no_text: bool) -> None:
    """Export articles (one row each, oldest first) with their source, week, topics and story.

    Columns: article_id, published_at (UTC), week (ISO, Paris), source_id, source_name, title, url,
    author, lang, topics, topic_labels, cluster_id, cluster_size, summary, text. In CSV, topics are
    separated by '; '; in JSON and parquet they are lists.
    """
    from ..search import export

    with _open(app) as store:
        count = export(store, out, fmt, topics=topics, sources=sources, since=since, until=until,
                       with_text=not no_text, excel=excel)
    click.echo(f"{count} articles written to {out}", err=True)


@main.command("trends")
@click.option("--topic", "topics", multiple=True, metavar="ID",
              help="Topic to draw (repeatable; default: the 8 most frequent topics).")
@click.option("--weeks", type=click.IntRange(1, 520), default=26, show_default=True, help="Weeks shown.")
@click.option("--end-week", metavar="YYYY-Www", help="Last week shown (default: the current week).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Chart file: .png or .svg.")
@pass_app
def trends_command(app: App, topics: tuple[str, ...], weeks: int, end_week: str | None, out: Path) -> None:
    """Chart of articles per week and topic (ISO weeks, Europe/Paris), with French labels for reports."""
    from ..digest import parse_week
    from ..search import write_trends

    if out.suffix.lower() not in (".png", ".svg"):
        raise click.BadParameter("the chart format comes from the file name: end it with .png or .svg",
                                 param_hint="--out")
    if end_week:
        try:
            year, number = parse_week(end_week)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--end-week") from None
        end_week = f"{year}-W{number:02d}"
    with _open(app) as store:
        write_trends(store, out, topics, weeks, end_week)
    click.echo(f"chart written to {out}", err=True)


@main.group("archive")
def archive_group() -> None:
    """The archive for analysts: Datasette, schema reference."""


@archive_group.command("serve")
@click.option("--port", type=click.IntRange(1, 65535), default=8001, show_default=True)
@pass_app
def serve_command(app: App, port: int) -> None:
    """Browse and query the archive in Datasette on 127.0.0.1, read-only (needs `veille[analyst]`).

    Tables and columns are described, ready queries are listed (search in veille syntax, articles per
    topic per week, top sources, co-occurring topics...), and the search box of `articles` uses the
    veille query syntax. Members' emails, names and unsubscribe tokens read as empty.
    """
    from ..search import serve

    click.echo(f"Datasette on http://127.0.0.1:{port}/ (Ctrl+C to stop)", err=True)
    serve(app.db, port=port)


@archive_group.command("schema")
@click.option("--update", "doc", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Rewrite the generated blocks of this file (docs/schema.md) from the code instead.")
@pass_app
def schema_command(app: App, doc: Path | None) -> None:
    """Print the reference of every table, view and column (Markdown, as in docs/schema.md)."""
    from ..search import schema_markdown, update_schema_doc

    if doc is not None:
        click.echo(f"{doc}: {'updated' if update_schema_doc(doc) else 'already up to date'}", err=True)
        return
    with _open(app) as store:
        click.echo(schema_markdown(store), nl=False)
