"""`veille schedule` (the daemon, also `python scheduler.py`) and `veille status` (what it is doing)."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import click

from ..errors import ConfigError, VeilleError
from . import App, main, pass_app
from .output import json_default, table

_DAEMON_OPTIONS = [
    click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
                 envvar="VEILLE_LOG_FORMAT", show_envvar=True, help="Human-readable lines or JSON lines."),
    click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), envvar="VEILLE_LOG_FILE",
                 show_envvar=True, help="Also append the log to this file (reopened after logrotate)."),
    click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
                 default="info", show_default=True, envvar="VEILLE_LOG_LEVEL", show_envvar=True),
    click.option("--watch-interval", type=click.FloatRange(0.1, 3600), default=5.0, show_default=True,
                 help="Seconds between two checks of sources.yaml, topics.yaml and veille.yaml for changes."),
    click.option("--stop-timeout", type=click.FloatRange(0, 600), default=25.0, show_default=True,
                 help="Seconds a stop waits for a running job (a digest being sent) before exiting anyway."),
    click.option("--no-catch-up", is_flag=True,
                 help="Do not send, at start, a digest missed during downtime (within digest_grace)."),
    click.option("--digest-retry", type=click.FloatRange(1, 86400), default=600.0, show_default=True,
                 help="Seconds before a digest batch the SMTP server refused is tried again (within digest_grace)."),
]


def _daemon_options(func: Callable) -> Callable:
    for option in reversed(_DAEMON_OPTIONS):
        func = option(func)
    return func


def _run(db: Path, sources: Path, topics: Path, config: Path, log_format: str, log_file: Path | None,
         log_level: str, watch_interval: float, stop_timeout: float, no_catch_up: bool,
         digest_retry: float) -> None:
    from ..schedule import DaemonOptions, run_daemon, setup_logging

    setup_logging(log_format, log_file, log_level)
    options = DaemonOptions(watch_interval=watch_interval, stop_timeout=stop_timeout, catch_up=not no_catch_up,
                            digest_retry=digest_retry)
    raise SystemExit(run_daemon(db, sources, topics, config, options))


_SCHEDULE_HELP = """Run the scheduler daemon until SIGTERM or SIGINT.

\b
- each enabled source is polled at its `interval` (with jitter; a failing source waits for its backoff);
- the weekly digest is built and sent at `digest_cron` (default Monday 07:30, Europe/Paris), and a
  digest missed during downtime is sent once at start if still within `digest_grace`;
- maintenance (`maintenance_cron`, daily): online backup into `backups_dir` keeping `backup_keep`,
  fetch log pruned after `fetch_log_retention`, PRAGMA optimize;
- staff report (`staff_report_cron`, weekly): failing, silent and disabled sources, topics without
  articles, written to digests/staff-report-YYYY-Www.md and mailed to `staff_email` if set.

SIGHUP, or saving sources.yaml, topics.yaml or veille.yaml, reloads the configuration; an invalid file
is reported (file:line) and the previous configuration stays in use. One scheduler per database:
a second one exits with status 1 and says who holds the lock. See `veille status`.
"""


@main.command("schedule", help=_SCHEDULE_HELP)
@_daemon_options
@pass_app
def schedule_command(app: App, **options: Any) -> None:
    _run(app.db, app.sources, app.topics, app.config, **options)


class _Standalone(click.Command):
    """`scheduler.py`: the `schedule` command with the global options, and the group's error handling."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            ctx.exit(2)
        except VeilleError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            ctx.exit(1)


scheduler_command = _Standalone(
    "scheduler", help=_SCHEDULE_HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    params=[p for p in main.params if p.name in ("db", "sources", "topics", "config")]
    + list(schedule_command.params),
    callback=lambda **kw: _run(**kw),
)


# --------------------------------------------------------------------------------------------------
# status


def _when(moment: datetime | None) -> str:
    from ..schedule import PARIS

    return moment.astimezone(PARIS).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def collect_status(app: App) -> dict[str, Any]:
    """Everything `veille status` shows, as plain data (also its `--json` output)."""
    from ..config import load_settings
    from ..schedule import lock_holder
    from ..store import Store

    holder = lock_holder(app.db)
    with Store.open(app.db, readonly=True) as store:
        digest = store.last_digest()
        data: dict[str, Any] = {
            "scheduler": {"running": holder is not None, "pid": holder.pid if holder else None,
                          "host": holder.host if holder else None, "since": holder.since if holder else None},
            "database": {"path": str(app.db), "bytes": store.database_size(), "articles": store.article_count(),
                         "schema_version": store.schema_version},
            "jobs": [asdict(j) for j in store.scheduler_jobs()],
            "sources": [asdict(s) | {"state": s.state} for s in store.source_health()],
            "digest": asdict(digest) if digest else None,
        }
    try:
        backups_dir = Path(load_settings(app.config).backups_dir)
    except ConfigError:
        backups_dir = Path("backups")
    backups = sorted(backups_dir.glob("veille-*.db"), key=lambda p: p.stat().st_mtime) if backups_dir.is_dir() else []
    data["last_backup"] = ({"path": str(backups[-1]), "at": datetime.fromtimestamp(backups[-1].stat().st_mtime)
                            .astimezone()} if backups else None)
    return data


@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print everything as one JSON object.")
@pass_app
def status_command(app: App, as_json: bool) -> None:
    """Show the scheduler's jobs and next runs, each source's health, the last digest, the database.

    Reads the database only (safe while the scheduler runs). Times are Europe/Paris.
    """
    data = collect_status(app)
    if as_json:
        click.echo(json.dumps(data, default=json_default, ensure_ascii=False, indent=2))
        return
    sched = data["scheduler"]
    if sched["running"]:
        click.echo(f"scheduler: running, pid {sched['pid']} on {sched['host']} since {sched['since']}")
    else:
        click.echo("scheduler: not running (start it with `veille schedule`; results below are from its last run)")
    db = data["database"]
    click.echo(f"database: {db['path']}, {_size(db['bytes'])}, {db['articles']} articles, "
               f"schema version {db['schema_version']}")
    backup = data["last_backup"]
    click.echo(f"last backup: {backup['path']} ({_when(backup['at'])})" if backup else "last backup: none")
    digest = data["digest"]
    if digest:
        counts = ", ".join(f"{status} {n}" for status, n in digest["deliveries"].items()) or "no delivery yet"
        built = f"built {_when(digest['built_at'])}, {digest['articles']} articles" if digest["built_at"] \
            else "not built"
        click.echo(f"last digest: {digest['week']} ({built}); deliveries: {counts}")
    else:
        click.echo("last digest: none yet")
    click.echo()
    table(["job", "schedule", "next run", "last run", "result", "error"],
          [[j["id"], j["schedule"], _when(j["next_run_at"]), _when(j["last_run_at"]), j["last_status"] or "-",
            j["last_error"] or ""] for j in data["jobs"]],
          title="jobs" if data["jobs"] else "jobs: none recorded (the scheduler has never run on this database)")
    click.echo()
    rows = []
    for s in data["sources"]:
        if s["state"] == "failing":
            state = f"failing since {_when(s['failing_since'])} ({s['consecutive_failures']} attempts)"
        elif s["state"] == "disabled":
            state = f"disabled: {s['disabled_reason'] or ''}"
        else:
            state = s["state"]
        error = f"{s['last_reason']}: {s['last_error']}" if s["last_error"] else ""
        rows.append([s["id"], state, _when(s["last_ok_at"]), _when(s["next_attempt_at"]), s["articles"], error])
    table(["source", "state", "last ok", "backoff until", "articles", "last error"], rows, title="sources")
