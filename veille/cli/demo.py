"""`veille demo`: a whole press watch, offline, in under a minute (see veille/demo.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click
from click.core import ParameterSource

from . import App, main, pass_app
from .output import table


@main.command("demo")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default="demo",
              show_default=True, help="Folder for the demo's files (created; a rerun resets it).")
@click.option("--keep-serving", is_flag=True,
              help="Keep the demo sources online afterwards, until Ctrl-C, to try other commands on them.")
@pass_app
@click.pass_context
def demo_command(ctx: click.Context, app: App, directory: Path, keep_serving: bool) -> None:
    """Run an offline demo: invented French sources served on 127.0.0.1, fetched, tagged and digested.

    Writes into DIR its own sources.yaml, topics.yaml (the default topics, or --topics if given),
    veille.yaml and demo.db, adds three demo members, builds the current week's digest
    (DIR/digests/WEEK/index.html) and writes one email per member in its outbox/. One of the sources is
    broken on purpose, to show how a failing source is reported. Nothing is sent and nothing keeps
    running unless --keep-serving.
    """
    from ..demo import run_demo

    given = ctx.parent.get_parameter_source("topics") if ctx.parent else None
    topics = app.topics if given in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT) else None

    def say(message: str) -> None:
        click.secho(message, dim=True, err=True)

    def wait(result) -> None:
        _report(result)
        click.echo("")
        click.secho(f"Demo sources online at {result.base_url}/ -- press Ctrl-C to stop.", bold=True)
        click.echo(f"  try: veille {_globals(result)} fetch")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            click.echo("stopped.")

    result = run_demo(directory, topics=topics, serve=wait if keep_serving else None, progress=say)
    if not keep_serving:
        _report(result)


def _globals(result) -> str:
    def rel(path: Path) -> str:
        try:
            return os.path.relpath(path)
        except ValueError:
            return str(path)

    return (f"--db {rel(result.db)} --sources {rel(result.sources)} --topics {rel(result.topics)} "
            f"--config {rel(result.config)}")


def _report(result) -> None:
    rows = [[s.source_id, s.status, s.new, _why(s)] for s in result.pass_result.sources]
    table(["source", "status", "articles", "note"], rows,
          title=f"Fetch: {result.pass_result.new} articles from {len(rows)} sources, "
                f"{len(result.failed)} failed (on purpose)")
    click.echo("")
    table(["topic", "label", "articles"], [list(t) for t in result.topic_counts],
          title=f"Week {result.week}: articles per topic")
    delivery = result.delivery
    click.echo("")
    click.echo(f"{result.articles} articles stored, {result.clusters} stories covered by several sources this week, "
               f"{len(delivery.written)} digest emails written, {len(delivery.empty)} members with nothing to read; "
               f"done in {result.elapsed:.1f} s.")
    click.echo("")
    click.secho("Open:", bold=True)
    click.echo(f"  the week's page   {result.index_html}")
    if result.emails:
        click.echo(f"  an email          {result.emails[0]}   ({len(result.emails)} in {result.emails[0].parent})")
    click.echo(f"  the database      {result.db}   (e.g. datasette {os.path.relpath(result.db)})")
    click.echo(f"  the config files  {result.sources.parent}/ (sources.yaml, topics.yaml, veille.yaml)")
    click.echo(f"Then: veille {_globals(result)} topics list")


def _why(source) -> str:
    if source.status != "failed":
        return ""
    text = f"{source.reason}: {source.error}" if source.reason else (source.error or "")
    return f"{text} -> {source.hint}" if source.hint else text
