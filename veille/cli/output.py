"""Terminal output shared by the commands: rich tables on a terminal, plain TSV-like text otherwise."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, is_dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Iterable

import click


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def table(headers: list[str], rows: Iterable[Iterable[Any]], title: str | None = None) -> None:
    """A table a person reads: boxed on a terminal, one tab-separated line per row when piped."""
    rows = [["" if v is None else str(v) for v in row] for row in rows]
    if sys.stdout.isatty():
        from rich.table import Table

        t = Table(title=title, title_justify="left")
        for h in headers:
            t.add_column(h, overflow="fold")
        for row in rows:
            t.add_row(*row)
        console().print(t)
        return
    if title:
        click.echo(title)
    click.echo("\t".join(headers))
    for row in rows:
        click.echo("\t".join(v.replace("\t", " ").replace("\n", " ") for v in row))


def json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Path):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def print_json_lines(records: Iterable[Any]) -> None:
    for record in records:
        click.echo(json.dumps(record, default=json_default, ensure_ascii=False))
