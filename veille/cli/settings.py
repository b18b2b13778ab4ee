"""`veille settings`: every setting, its value, where it comes from, and its environment variable."""

from __future__ import annotations

import os
from datetime import timedelta

import click

from ..config import SETTINGS, load_yaml
from . import App, main, pass_app
from .output import table


def _show(value: object, secret: bool) -> str:
    if value is None:
        return "-"
    if secret:
        return "(set)"
    if isinstance(value, timedelta):
        return f"{int(value.total_seconds())}s"
    return str(value)


@main.command("settings")
@click.option("--markdown", is_flag=True, help="Print the defaults as a Markdown table (for the docs).")
@pass_app
def settings_command(app: App, markdown: bool) -> None:
    """Show the effective settings (veille.yaml, then VEILLE_* environment variables, then defaults)."""
    if markdown:
        click.echo("| setting | environment variable | default | meaning |")
        click.echo("|---|---|---|---|")
        for s in SETTINGS:
            default = "-" if s.default is None else f"`{s.default}`"
            click.echo(f"| `{s.name}` | `{s.env}` | {default} | {s.help} |")
        return
    effective = app.settings()
    in_file = set(load_yaml(app.config) or {}) if app.config.exists() else set()
    rows = []
    for s in SETTINGS:
        origin = "environment" if s.env in os.environ else (str(app.config) if s.name in in_file else "default")
        rows.append([s.name, _show(getattr(effective, s.name), s.secret), origin, s.env, s.help])
    table(["setting", "value", "from", "environment variable", "meaning"], rows,
          title=f"settings ({app.config} {'found' if app.config.exists() else 'absent: defaults apply'})")
