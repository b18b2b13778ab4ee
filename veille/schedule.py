"""The scheduler daemon: polls each source at its pace, sends the weekly digest, keeps the archive healthy.

Design (one process per database, guarded by a lock file):

- APScheduler 3 `BackgroundScheduler` in Europe/Paris; the main thread only waits for signals, watches
  the configuration files and stops cleanly.
- One interval job per enabled source (jitter, coalescing, one instance at a time) in a one-thread
  executor: source passes run one after another over the single `Watch` (one SQLite connection, one
  process pool). A pass is short, and the pages of one source are already fetched concurrently.
- Digest, maintenance, staff report and reload jobs run in a second small executor; those that use the
  `Watch` take the same lock, so no two jobs ever share the connection at once.
- The daemon keeps its bookkeeping (next runs, last results: `scheduler_jobs`) on its own connection,
  which `veille status` reads from another process.
- Stopping (SIGTERM/SIGINT): no new job starts, a running source pass is cancelled at its next `await`
  (a batch is written in one synchronous transaction, so it is either committed or absent), then exit 0.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import logging.handlers
import os
import random
import re
import signal
import socket
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Coroutine
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from .errors import ConfigError, LockError, VeilleError

if TYPE_CHECKING:
    from .config import Settings
    from .core import Watch
    from .store import Store
    from .store.ops import FetchStats, SourceHealth, TopicCount

PARIS = ZoneInfo("Europe/Paris")
log = logging.getLogger("veille.schedule")

# --------------------------------------------------------------------------------------------------
# Crontab expressions

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def cron_trigger(expr: str, timezone: tzinfo = PARIS) -> CronTrigger:
    """A CronTrigger from crontab syntax: `minute hour day month weekday`, or 6 fields with seconds first.

    Weekdays follow crontab (0 and 7 are Sunday, 1 is Monday), not APScheduler 3's own numbering
    (0 is Monday): staff copy crontab lines, and `30 7 * * 1` must mean Monday. The 6-field form lets
    tests fire a job within seconds.
    """
    fields = str(expr).split()
    if len(fields) not in (5, 6):
        raise ValueError(f"{expr!r} is not a crontab expression: expected 5 fields (minute hour day month "
                         f"weekday) or 6 (second first), found {len(fields)}")
    second = fields.pop(0) if len(fields) == 6 else "0"
    minute, hour, day, month, weekday = fields
    try:
        return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                           day_of_week=_crontab_weekdays(weekday), timezone=timezone)
    except ValueError as e:
        raise ValueError(f"{expr!r} is not a valid crontab expression: {e}") from None


def _crontab_weekdays(text: str) -> str:
    """Translate a crontab weekday field into explicit day names APScheduler cannot misread."""
    if text == "*":
        return "*"
    days: set[int] = set()
    for part in text.lower().split(","):
        base, _, step_text = part.partition("/")
        if step_text and not (step_text.isdigit() and int(step_text) > 0):
            raise ValueError(f"weekday step {step_text!r} must be a positive number")
        step = int(step_text) if step_text else 1
        if base == "*":
            first, last = 0, 6
        else:
            low, _, high = base.partition("-")
            first = _weekday_number(low)
            last = _weekday_number(high) if high else (6 if step_text else first)
            if high and last == 0:
                last = 7  # `5-7`, `5-0` and `fri-sun` all run to Sunday
        if last < first:
            raise ValueError(f"weekday range {base!r} goes backwards")
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(_DAY_NAMES[d] for d in sorted(days))


def _weekday_number(text: str) -> int:
    text = text.strip()
    if re.fullmatch(r"[0-7]", text):
        return int(text)
    if text in _DAY_NAMES:
        return _DAY_NAMES.index(text)
    raise ValueError(f"{text!r} is not a weekday (0-7, 0 and 7 being Sunday, or sun, mon ... sat)")


def previous_fire_time(trigger: CronTrigger, now: datetime, horizon: timedelta) -> datetime | None:
    """The last time `trigger` fired at or before `now`, if within `horizon`; None otherwise.

    APScheduler 3 only looks forward, so search forward from windows of growing size: the first
    window that holds a fire time holds few of them, whatever the cron's frequency.
    """
    windows = sorted({min(w, horizon) for w in (timedelta(minutes=1), timedelta(hours=1), timedelta(days=1),
                                                 timedelta(days=8), timedelta(days=32), horizon)})
    for window in windows:
        fire = trigger.get_next_fire_time(None, now - window)
        if fire is None or fire > now:
            continue
        while True:
            following = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
            if following is None or following > now:
                return fire
            fire = following
    return None


def describe_interval(interval: timedelta) -> str:
    seconds = int(interval.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"every {seconds // size}{unit}"
    return f"every {seconds}s"


# --------------------------------------------------------------------------------------------------
# Single instance per database


@dataclass(frozen=True)
class LockHolder:
    pid: int | None
    host: str
    since: str
    path: Path

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.since} (lock file {self.path})"


def lock_path(db: str | Path) -> Path:
    return Path(str(db) + ".lock")


class SchedulerLock:
    """An exclusive `flock` on `<db>.lock`; the file's content (pid, host, start) only informs.

    The kernel drops a flock when its process dies, so a lock left by a crash is never an obstacle: the
    next start takes it and logs whose it was. The file is emptied, not removed, on a clean exit
    (removing a locked file lets a third process lock a fresh inode while the second still waits).
    """

    def __init__(self, db: str | Path) -> None:
        self.path = lock_path(db)
        self._fd: int | None = None

    def acquire(self) -> "SchedulerLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd, self.path)
            os.close(fd)
            raise LockError(f"already running: {holder} -- stop that scheduler first "
                            "(kill -TERM its pid), or use another --db") from None
        stale = _read_holder(fd, self.path)
        if stale.pid is not None:
            log.warning("taking over a stale lock left by %s: that process is gone", stale)
        started = datetime.now(timezone.utc).astimezone(PARIS).isoformat(timespec="seconds")
        content = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": started}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, content + b"\n", 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "SchedulerLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int, path: Path) -> LockHolder:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
    except ValueError:
        data = {}
    pid = data.get("pid")
    return LockHolder(pid if isinstance(pid, int) else None, str(data.get("host", "?")), str(data.get("since", "?")),
                      path)


def lock_holder(db: str | Path) -> LockHolder | None:
    """Who runs the scheduler on this database right now, or None (for `veille status`)."""
    path = lock_path(db)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd, path)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# Logging

_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extras (job, source...), traceback."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).astimezone(PARIS).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                data[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        elif record.stack_info:
            data["traceback"] = record.stack_info
        return json.dumps(data, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(fmt: str = "text", file: str | Path | None = None, level: str = "INFO") -> None:
    """Logs to stderr and optionally to a file (reopened when logrotate moves it), text or JSON lines."""
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file:
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.WatchedFileHandler(file, encoding="utf-8"))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric)
    # APScheduler says "Running job..." at every run, and warns when a pass outlasts its interval (coalescing
    # is the intended answer); keep its errors and its missed-run warnings.
    logging.getLogger("apscheduler").setLevel(max(numeric, logging.WARNING) if numeric > logging.DEBUG
                                              else logging.DEBUG)
    logging.getLogger("apscheduler.scheduler").setLevel(max(numeric, logging.ERROR) if numeric > logging.DEBUG
                                                        else logging.DEBUG)
    for noisy in ("httpx", "httpcore", "trafilatura", "charset_normalizer"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))


# --------------------------------------------------------------------------------------------------
# Maintenance


@dataclass(frozen=True)
class MaintenanceResult:
    backup: Path
    removed_backups: tuple[Path, ...]
    pruned_log_rows: int


def backup_database(store: "Store", backups_dir: str | Path, keep: int, now: datetime | None = None
                    ) -> tuple[Path, tuple[Path, ...]]:
    """Write `backups_dir/veille-YYYYmmdd-HHMMSS.db` and keep only the `keep` newest backups.

    The copy is made under a temporary name and renamed once it passed `PRAGMA quick_check`, so a
    backup that is listed is a backup that restores.
    """
    from .store import utcnow

    folder = Path(backups_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = (now or utcnow()).astimezone(PARIS).strftime("%Y%m%d-%H%M%S")
    target = folder / f"veille-{stamp}.db"
    n = 1
    while target.exists():
        n += 1
        target = folder / f"veille-{stamp}-{n}.db"
    partial = target.with_suffix(".db.partial")
    partial.unlink(missing_ok=True)
    try:
        store.backup_to(partial)
        partial.rename(target)
    finally:
        partial.unlink(missing_ok=True)
    backups = sorted(folder.glob("veille-*.db"), key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
    removed = tuple(backups[keep:])
    for old in removed:
        old.unlink(missing_ok=True)
    return target, removed


def run_maintenance(store: "Store", settings: "Settings", now: datetime | None = None) -> MaintenanceResult:
    """The daily job: online backup with rotation, old fetch log rows pruned, `PRAGMA optimize`."""
    backup, removed = backup_database(store, settings.backups_dir, settings.backup_keep, now)
    pruned = store.prune_fetch_log(settings.fetch_log_retention)
    store.optimize()
    return MaintenanceResult(backup, removed, pruned)


# --------------------------------------------------------------------------------------------------
# Staff report (French: staff read it)


@dataclass(frozen=True)
class StaffReport:
    week: str
    generated_at: datetime
    failing_threshold: int
    silent_days: int
    sources: int
    failing: tuple["SourceHealth", ...]
    silent: tuple["SourceHealth", ...]
    disabled: tuple["SourceHealth", ...]
    empty_topics: tuple["TopicCount", ...]
    topics: int
    stats: "FetchStats"


def build_staff_report(store: "Store", settings: "Settings", now: datetime | None = None) -> StaffReport:
    """What staff must look at this week: failing sources, silent sources, topics that caught nothing."""
    from .digest import iso_week
    from .store import utcnow

    now = now or utcnow()
    health = store.source_health()
    silent_before = now - timedelta(days=settings.silent_days)
    topics = store.topic_counts(now - timedelta(days=7))
    return StaffReport(
        week=iso_week(now),
        generated_at=now,
        failing_threshold=settings.failing_threshold,
        silent_days=settings.silent_days,
        sources=len(health),
        # more than N failed attempts in a row: the N-th failure alone is not reported
        failing=tuple(s for s in health if s.enabled and s.consecutive_failures > settings.failing_threshold),
        silent=tuple(s for s in health if s.enabled and (s.last_new_at or s.created_at or now) < silent_before),
        disabled=tuple(s for s in health if not s.enabled),
        empty_topics=tuple(t for t in topics if t.recent == 0),
        topics=len(topics),
        stats=store.fetch_stats(now - timedelta(days=7)),
    )


def _fr_time(moment: datetime | None) -> str:
    return moment.astimezone(PARIS).strftime("%d/%m/%Y %H:%M") if moment else "jamais"


def _cell(text: object) -> str:
    return " ".join(str(text if text is not None else "").split()).replace("|", "\\|")


def render_staff_report(report: StaffReport) -> str:
    """Markdown in French, readable as plain text in an email and in `digests/`."""
    from .digest import french_date, french_range, plural, week_days

    number = int(report.week.split("-W")[1])
    out = [
        f"# Rapport d'exploitation de la veille — semaine {number} ({french_range(*week_days(report.week))})",
        "",
        f"Produit le {french_date(report.generated_at)} à {report.generated_at.astimezone(PARIS):%H:%M} "
        "(heure de Paris).",
        "",
        "## En bref",
        "",
        f"- {plural(report.sources, 'source suivie', 'sources suivies')} : {len(report.failing)} en échec, "
        f"{plural(len(report.silent), 'silencieuse')}, {plural(len(report.disabled), 'désactivée')}.",
        f"- 7 derniers jours : {plural(report.stats.attempts, 'interrogation')} des sources, "
        f"{plural(report.stats.failures, 'échec')}, "
        f"{plural(report.stats.new_articles, 'nouvel article', 'nouveaux articles')}.",
        f"- {plural(len(report.empty_topics), 'thème')} sur {report.topics} sans article cette semaine.",
        "",
        f"## Sources en échec (plus de {report.failing_threshold} tentatives de suite)",
        "",
    ]
    if report.failing:
        out += ["| Source | En échec depuis | Tentatives | Cause | Dernière erreur | Prochain essai |",
                "|---|---|---|---|---|---|"]
        out += [f"| {_cell(s.name)} (`{s.id}`) | {_fr_time(s.failing_since)} | {s.consecutive_failures} | "
                f"{_cell(s.last_reason)} | {_cell(s.last_error)} | {_fr_time(s.next_attempt_at)} |"
                for s in report.failing]
        out += ["", "Que faire : tester la source avec `veille sources check ID` ; si l'adresse a changé, "
                "corriger `url` dans sources.yaml ; si le site bloque les robots, contacter l'éditeur."]
    else:
        out.append("Aucune.")
    out += ["", f"## Sources silencieuses (aucun nouvel article depuis {report.silent_days} jours)", ""]
    if report.silent:
        out += ["| Source | Dernier nouvel article | Dernier passage réussi | Articles au total |",
                "|---|---|---|---|"]
        out += [f"| {_cell(s.name)} (`{s.id}`) | {_fr_time(s.last_new_at)} | {_fr_time(s.last_ok_at)} | "
                f"{s.articles} |" for s in report.silent]
        out += ["", "Que faire : vérifier sur le site que la rubrique publie encore ; un flux vide depuis "
                "longtemps a souvent été déplacé."]
    else:
        out.append("Aucune.")
    out += ["", "## Sources désactivées", ""]
    if report.disabled:
        out += ["| Source | Raison |", "|---|---|"]
        out += [f"| {_cell(s.name)} (`{s.id}`) | {_cell(s.disabled_reason)} |" for s in report.disabled]
    else:
        out.append("Aucune.")
    out += ["", "## Thèmes sans article cette semaine", ""]
    if report.empty_topics:
        out += ["| Thème | Articles au total |", "|---|---|"]
        out += [f"| {_cell(t.label)} (`{t.id}`) | {t.total} |" for t in report.empty_topics]
        out += ["", "Que faire : relire les mots-clés du thème dans topics.yaml (`veille topics preview`) ; "
                "un thème vide depuis plusieurs semaines est peut-être trop étroit."]
    else:
        out.append("Aucun.")
    return "\n".join(out) + "\n"


def deliver_staff_report(report: StaffReport, settings: "Settings") -> tuple[Path, str | None]:
    """Write `digests/staff-report-YYYY-Www.md`; also mail it to `staff_email` when one is set."""
    text = render_staff_report(report)
    folder = Path(settings.digests_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"staff-report-{report.week}.md"
    partial = path.with_suffix(".md.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
    if not settings.staff_email:
        return path, None
    from .mail import send_text

    year, week = report.week.split("-W")
    subject = f"Veille — rapport d'exploitation, semaine {int(week)} de {year}"
    send_text(settings, settings.staff_email, subject, text)
    return path, settings.staff_email


# --------------------------------------------------------------------------------------------------
# Missed digest


def missed_digest_week(store: "Store", settings: "Settings", now: datetime | None = None
                       ) -> tuple[str, datetime] | None:
    """The week whose digest should have gone out within `digest_grace` and did not, with that time; or None.

    "Did not" is read from the deliveries table only: no delivery row at all for that week (while
    members exist), or rows still pending/failed (a send interrupted or refused, which `send_digest`
    resumes without serving anyone twice).
    """
    from .digest import previous_week
    from .store import utcnow

    now = now or utcnow()
    fire = previous_fire_time(cron_trigger(settings.digest_cron), now.astimezone(PARIS), settings.digest_grace)
    if fire is None:
        return None
    week = previous_week(fire)
    counts = store.delivery_counts(week)
    if not counts:
        return (week, fire) if store.list_members(active_only=True) else None
    return (week, fire) if counts.get("pending") or counts.get("failed") else None


# --------------------------------------------------------------------------------------------------
# The daemon


class Interrupted(Exception):
    """A job stopped because the daemon is stopping."""


@dataclass
class DaemonOptions:
    watch_interval: float = 5.0
    """Seconds between two checks of the configuration files' modification times."""
    stop_timeout: float = 25.0
    """Seconds a stop waits for running jobs before exiting anyway (SQLite rolls back what was not committed)."""
    catch_up: bool = True
    """Send a digest missed during downtime (within digest_grace) at start."""
    digest_retry: float = 600.0
    """Seconds before a refused or interrupted digest batch is tried again (while within digest_grace)."""


@dataclass
class _Running:
    jobs: dict[int, str] = field(default_factory=dict)
    """Thread id -> job id of the jobs running now."""
    tasks: set[tuple[asyncio.AbstractEventLoop, asyncio.Task]] = field(default_factory=set)


class Daemon:
    """The long-running scheduler over one `Watch`. `run()` blocks until SIGTERM/SIGINT (or `stop()`)."""

    def __init__(self, watch: "Watch", options: DaemonOptions | None = None) -> None:
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        from .store import Store

        self.watch = watch
        self.options = options or DaemonOptions()
        self.scheduler = BackgroundScheduler(
            timezone=PARIS,
            executors={"default": ThreadPoolExecutor(2), "fetch": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        self.scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
        self.state = Store.open(watch.db_path)
        self.state.execute("PRAGMA busy_timeout = 5000")  # bookkeeping must never hold up a stop for long
        self._watch_lock = threading.Lock()
        self._state_lock = threading.RLock()
        self._state_closed = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._stop_requested = False
        self._reload_requested = False
        self._running = _Running()
        self._cond = threading.Condition()
        self._intervals: dict[str, timedelta] = {}
        self._crons: dict[str, str] = {}
        self._config_stamp = self._stamp()

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Load the configuration (raising ConfigError if invalid), plan every job and start."""
        watch = self.watch
        settings, sources, topics = watch.settings, watch.load_sources(), watch.load_topics()
        watch.store.sync_sources(sources)
        if topics:
            watch.sync_topics()
        # Start the parsing processes now, while this is the only thread: forking a threaded process
        # can hand the children a lock some other thread was holding.
        watch.pool().submit(int).result()
        self._sync_jobs()
        self.scheduler.start()
        log.info("scheduler started: %d sources, %d topics, digest %r, database %s", len(sources), len(topics),
                 settings.digest_cron, watch.db_path)
        missed = missed_digest_week(self.state, settings) if self.options.catch_up else None
        if missed:
            week, fire = missed
            log.warning("the digest of %s due %s was not sent (downtime?): sending it now", week,
                        fire.isoformat(timespec="seconds"))
            self._add_once("digest-catchup", "digest", self._send_digest, week, fire)

    def run(self) -> int:
        """Block until stopped; returns the exit code (0)."""
        self._install_signals()
        try:
            self.start()
            next_check = time.monotonic() + self.options.watch_interval
            while not self._stop_requested:
                self._wake.wait(0.5)  # signal handlers only set flags: poll them often
                self._wake.clear()
                if self._stop_requested:
                    break
                if self._reload_requested or time.monotonic() >= next_check:
                    next_check = time.monotonic() + self.options.watch_interval
                    self._check_config()
        finally:
            self.shutdown()
        return 0

    def stop(self) -> None:
        """Ask `run()` to return (what SIGTERM and SIGINT do)."""
        self._stop_requested = True
        self._wake.set()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        # Handlers only set flags (the main loop polls them): an Event or Condition taken inside a signal
        # handler can deadlock the main thread. Logging is safe: its handler locks are re-entrant.
        def on_stop(signum: int, _frame: object) -> None:
            if not self._stop_requested:
                log.info("received %s: stopping", signal.Signals(signum).name)
            self._stop_requested = True

        def on_hup(_signum: int, _frame: object) -> None:
            self._reload_requested = True

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def shutdown(self) -> None:
        """Stop taking jobs, cancel a running source pass at its next await, wait for the rest, close."""
        self._stop.set()
        with self._cond:
            for loop, task in list(self._running.tasks):
                loop.call_soon_threadsafe(task.cancel)
            running = list(self._running.jobs.values())
        if running:
            log.info("stopping: waiting for %s", ", ".join(running))
        started = self.scheduler.running
        if started:
            self.scheduler.shutdown(wait=False)
        with self._cond:
            self._cond.wait_for(lambda: not self._running.jobs, timeout=self.options.stop_timeout)
            stuck = list(self._running.jobs.values())
        self._save(lambda: self.state.set_next_runs({job_id: None for job_id in self._planned_ids()}))
        if stuck:
            log.warning("still running after %.0f s: %s; exiting anyway, SQLite rolls back what was not committed",
                        self.options.stop_timeout, ", ".join(stuck))
            logging.shutdown()
            os._exit(0)  # the job's thread cannot be interrupted; the kernel releases the lock file
        with self._state_lock:
            self._state_closed = True
            self.state.close()
        self.watch.close()
        if started:
            log.info("scheduler stopped")

    # -- configuration ------------------------------------------------------------------------------

    def _config_files(self) -> list[Path]:
        files = [self.watch.sources_path, self.watch.topics_path]
        return files + ([self.watch.config_path] if self.watch.config_path else [])

    def _stamp(self) -> tuple:
        stamps = []
        for path in self._config_files():
            try:
                st = path.stat()
                stamps.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def _check_config(self) -> None:
        stamp = self._stamp()
        if self._reload_requested or stamp != self._config_stamp:
            why = "SIGHUP" if self._reload_requested else "a configuration file changed"
            self._reload_requested = False
            self._config_stamp = stamp  # a broken file is reported once, not at every check
            self._add_once("reload", "reload", self._reload, why)

    def _reload(self, why: str) -> None:
        if self._stop.is_set():
            return
        with self._watch_lock:
            try:
                self.watch.reload()
                if self.watch.load_topics():
                    self.watch.sync_topics()
            except ConfigError as e:
                log.error("configuration NOT reloaded (%s), the previous one stays in use: %s", why, e,
                          extra={"file": e.path, "line": e.line})
                return
        self._sync_jobs()
        log.info("configuration reloaded (%s): %d sources, %d topics", why, len(self.watch.load_sources()),
                 len(self.watch.load_topics()))

    # -- jobs ---------------------------------------------------------------------------------------

    def _sync_jobs(self) -> None:
        """Make the scheduled jobs match the configuration: add, reschedule or remove per-source jobs."""
        from apscheduler.triggers.interval import IntervalTrigger

        from .store import utcnow

        settings = self.watch.settings
        sources = {s.id: s for s in self.watch.load_sources() if s.enabled}
        for source_id in set(self._intervals) - set(sources):
            self._remove(f"source:{source_id}")
            del self._intervals[source_id]
        health = {h.id: h for h in self.state.source_health(sources)}
        now = utcnow()
        for source in sources.values():
            if self._intervals.get(source.id) == source.interval:
                continue
            seconds = max(1.0, source.interval.total_seconds())
            jitter = min(seconds * 0.1, 300.0)
            state = health.get(source.id)
            candidates = [now]
            if state and state.last_attempt_at:
                candidates.append(state.last_attempt_at + source.interval)
            if state and state.next_attempt_at:
                candidates.append(state.next_attempt_at)
            due = max(candidates)
            # New and overdue sources start within seconds (the one fetch thread queues them anyway);
            # the others keep their rhythm, shifted by jitter so restarts do not synchronise them.
            first = due + timedelta(seconds=random.uniform(0, min(jitter, 1.0) if due == now else jitter))
            self.scheduler.add_job(
                self._job, IntervalTrigger(seconds=seconds, start_date=first, jitter=jitter, timezone=PARIS),
                args=(f"source:{source.id}", self._fetch_source, source.id), id=f"source:{source.id}",
                name=describe_interval(source.interval), executor="fetch", misfire_grace_time=int(seconds),
                next_run_time=first, replace_existing=True,  # the trigger alone would add its jitter again
            )
            self._intervals[source.id] = source.interval
        for job_id, expr, func, grace in (
            ("digest", settings.digest_cron, self._send_digest, settings.digest_grace),
            ("maintenance", settings.maintenance_cron, self._maintenance, timedelta(hours=12)),
            ("staff-report", settings.staff_report_cron, self._staff_report, timedelta(days=1)),
        ):
            if self._crons.get(job_id) != expr:
                self.scheduler.add_job(self._job, cron_trigger(expr), args=(job_id, func), id=job_id,
                                       name=f"cron {expr}", misfire_grace_time=int(grace.total_seconds()),
                                       replace_existing=True)
                self._crons[job_id] = expr
        self._save_plan()

    def _planned_ids(self) -> list[str]:
        return [f"source:{s}" for s in self._intervals] + list(self._crons)

    def _save_plan(self) -> None:
        from .store.ops import JobPlan

        def plan() -> None:
            plans = []
            for job_id in self._planned_ids():
                job = self.scheduler.get_job(job_id)
                if job is not None:
                    plans.append(JobPlan(job_id, job_id.split(":")[0], job.name, _next_run(job)))
            self.state.plan_jobs(plans)

        self._save(plan)

    def _remove(self, job_id: str) -> None:
        from apscheduler.jobstores.base import JobLookupError

        try:
            self.scheduler.remove_job(job_id)
        except JobLookupError:
            pass

    def _add_once(self, job_id: str, record_as: str, func: Callable[..., Any], *args: Any) -> None:
        """Run `func(*args)` once, as soon as possible, in the default executor (replacing a pending one)."""
        self.scheduler.add_job(self._job, args=(record_as, func, *args), id=job_id, name=job_id,
                               replace_existing=True, misfire_grace_time=None)

    def _job(self, job_id: str, func: Callable[..., Any], *args: Any) -> None:
        """Run one job: never while stopping; errors logged with their traceback; result recorded.

        `job_id` names the planned job whose row in `scheduler_jobs` gets the result (a catch-up digest
        counts as the digest job's run).
        """
        from .store import utcnow

        started, t0 = utcnow(), time.monotonic()
        with self._cond:  # checked and registered at once: `shutdown` closes nothing under a running job
            if self._stop.is_set():
                return
            self._running.jobs[threading.get_ident()] = job_id
        status, error = "ok", None
        try:
            try:
                func(*args)
            except Interrupted:
                status = "interrupted"
                log.info("%s: interrupted by the stop; its last batch was committed or discarded whole", job_id,
                         extra={"job": job_id})
            except Exception as e:  # noqa: BLE001 - one job's failure must not stop the daemon
                status, error = "error", f"{type(e).__name__}: {e}"
                log.exception("%s failed: %s", job_id, e, extra={"job": job_id})
            job = self.scheduler.get_job(job_id)
            self._save(lambda: self.state.record_job_run(job_id, started, status, error,
                                                         int((time.monotonic() - t0) * 1000),
                                                         next_run_at=_next_run(job)))
        finally:
            with self._cond:
                self._running.jobs.pop(threading.get_ident(), None)
                self._cond.notify_all()

    def _on_missed(self, event: Any) -> None:
        from apscheduler.events import EVENT_JOB_MISSED

        if event.code == EVENT_JOB_MISSED:
            self._save(lambda: self.state.record_job_run(event.job_id, event.scheduled_run_time, "missed"))
        else:
            log.debug("%s: previous run still going, this one skipped", event.job_id)

    def _save(self, write: Callable[[], None]) -> None:
        """Bookkeeping is best effort: a busy database must not turn into a failed job.

        Listeners run in executor threads, even during a stop: the lock keeps them off a closed connection
        (closing a SQLite connection while another thread uses it can crash the process).
        """
        with self._state_lock:
            if self._state_closed:
                return
            try:
                write()
            except (VeilleError, sqlite3.Error) as e:
                log.warning("could not record the scheduler's state: %s", e)

    def _run_async(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Run a coroutine on a private loop whose task `shutdown()` can cancel from the main thread."""
        runner = asyncio.Runner()
        loop = runner.get_loop()
        task = loop.create_task(make())
        entry = (loop, task)
        with self._cond:
            self._running.tasks.add(entry)
        if self._stop.is_set():
            task.cancel()
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            raise Interrupted() from None
        finally:
            with self._cond:
                self._running.tasks.discard(entry)
            runner.close()

    def _fetch_source(self, source_id: str) -> None:
        with self._watch_lock:
            if self._stop.is_set():
                raise Interrupted()
            result = self._run_async(lambda: self.watch.fetch_async([source_id], respect_backoff=True))
        for r in result.sources:
            extra = {"job": f"source:{source_id}", "source": r.source_id, "status": r.status}
            if r.status == "ok":
                log.info("source %s: %d new, %d updated, %d entries (%.1f s)", r.source_id, r.new, r.updated,
                         r.entries, r.duration, extra=extra)
            elif r.status == "failed":
                log.info("source %s: failed (%s), will retry after its backoff", r.source_id, r.reason,
                         extra=extra)
            else:
                log.debug("source %s: %s", r.source_id, r.status, extra=extra)

    def _send_digest(self, week: str | None = None, fire: datetime | None = None) -> None:
        """Send the week's digest; a refused or interrupted batch is retried while within digest_grace."""
        from .digest import previous_week
        from .store import utcnow

        fire = fire or utcnow()
        week = week or previous_week(fire)
        with self._watch_lock:
            if self._stop.is_set():
                raise Interrupted()
            try:
                report = self.watch.send_digest(week, send=True)
            except VeilleError as e:
                self._retry_digest(week, fire, str(e))
                raise
        log.info("digest %s: %d sent, %d written, %d already served, %d without news, %d uncertain, %d failed, "
                 "%d bounced", week, len(report.sent), len(report.written), len(report.already), len(report.empty),
                 len(report.uncertain), len(report.failed), len(report.bounced),
                 extra={"job": "digest", "week": week, "mode": report.mode})
        if report.failed:
            self._retry_digest(week, fire, f"{len(report.failed)} deliveries deferred by the SMTP server")

    def _retry_digest(self, week: str, fire: datetime, why: str) -> None:
        from apscheduler.triggers.date import DateTrigger

        from .store import utcnow

        at = utcnow() + timedelta(seconds=self.options.digest_retry)
        if at - fire > self.watch.settings.digest_grace:
            log.error("digest %s: %s; not retried (past digest_grace): run `veille digest --week %s --send` "
                      "once the problem is fixed", week, why, week, extra={"job": "digest", "week": week})
            return
        log.warning("digest %s: %s; retrying at %s", week, why, at.astimezone(PARIS).strftime("%H:%M:%S"),
                    extra={"job": "digest", "week": week})
        self.scheduler.add_job(self._job, DateTrigger(at), args=("digest", self._send_digest, week, fire),
                               id="digest-retry", name="digest-retry", replace_existing=True,
                               misfire_grace_time=None)

    def _maintenance(self) -> None:
        from .store import Store

        settings = self.watch.settings
        with Store.open(self.watch.db_path) as store:  # its own connection: fetches carry on meanwhile
            result = run_maintenance(store, settings)
        log.info("maintenance: backup %s (%d old removed), %d fetch log rows pruned, optimized", result.backup,
                 len(result.removed_backups), result.pruned_log_rows, extra={"job": "maintenance"})

    def _staff_report(self) -> None:
        from .store import Store

        settings = self.watch.settings
        with Store.open(self.watch.db_path) as store:
            report = build_staff_report(store, settings)
        path, recipient = deliver_staff_report(report, settings)
        log.info("staff report %s written to %s%s", report.week, path, f" and sent to {recipient}" if recipient
                 else "", extra={"job": "staff-report"})


def _next_run(job: Any) -> datetime | None:
    return getattr(job, "next_run_time", None) if job is not None else None


# --------------------------------------------------------------------------------------------------
# Entry point


def run_daemon(db: str | Path, sources: str | Path, topics: str | Path, config: str | Path | None,
               options: DaemonOptions | None = None) -> int:
    """Take the database's lock, then run the daemon until a signal stops it."""
    from .core import Watch

    with SchedulerLock(db):
        watch = Watch(db=db, sources=sources, topics=topics, config=config)
        try:
            daemon = Daemon(watch, options)
        except BaseException:
            watch.close()
            raise
        return daemon.run()


def main(argv: list[str] | None = None) -> int:
    """`python scheduler.py [options]`: the same as `veille [global options] schedule [options]`."""
    from .cli.schedule import scheduler_command

    return scheduler_command.main(args=argv, prog_name="scheduler.py", standalone_mode=True) or 0


__all__ = [
    "PARIS", "cron_trigger", "previous_fire_time", "SchedulerLock", "LockHolder", "lock_holder", "lock_path",
    "setup_logging", "JsonFormatter", "backup_database", "run_maintenance", "MaintenanceResult",
    "StaffReport", "build_staff_report", "render_staff_report", "deliver_staff_report", "missed_digest_week",
    "Daemon", "DaemonOptions", "run_daemon", "main",
]
