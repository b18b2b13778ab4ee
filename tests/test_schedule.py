"""The scheduler: crontab parsing, lock, logging, maintenance, staff report, and the daemon as a real process."""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from veille.config import load_settings
from veille.errors import ConfigError, LockError
from veille.schedule import (
    PARIS, Daemon, DaemonOptions, SchedulerLock, backup_database, build_staff_report, cron_trigger,
    deliver_staff_report, lock_holder, lock_path, previous_fire_time, render_staff_report, run_maintenance,
    setup_logging,
)
from veille.store import Store, iso
from veille.store.articles import FetchLog
from veille.types import Source

# --------------------------------------------------------------------------------------------------
# crontab


def test_crontab_weekday_numbers_follow_crontab_not_apscheduler():
    monday_0730 = cron_trigger("30 7 * * 1")
    after = datetime(2026, 11, 25, 12, 0, tzinfo=PARIS)  # a Wednesday
    assert monday_0730.get_next_fire_time(None, after) == datetime(2026, 11, 30, 7, 30, tzinfo=PARIS)
    sunday = datetime(2026, 11, 29, 9, 0, tzinfo=PARIS)
    for expr in ("0 9 * * 0", "0 9 * * 7", "0 9 * * sun", "0 9 * * 5-7"):
        assert cron_trigger(expr).get_next_fire_time(None, datetime(2026, 11, 29, 8, 0, tzinfo=PARIS)) == sunday
    weekdays = cron_trigger("0 9 * * 1-5")
    assert weekdays.get_next_fire_time(None, datetime(2026, 11, 28, 10, 0, tzinfo=PARIS)) == \
        datetime(2026, 11, 30, 9, 0, tzinfo=PARIS)  # Saturday -> Monday


def test_six_field_cron_has_seconds_first_and_default_is_monday_morning():
    every_5s = cron_trigger("*/5 * * * * *")
    start = datetime(2026, 11, 25, 10, 0, 1, tzinfo=PARIS)
    assert every_5s.get_next_fire_time(None, start) == datetime(2026, 11, 25, 10, 0, 5, tzinfo=PARIS)
    default = cron_trigger(load_settings(None, env={}).digest_cron)
    assert default.get_next_fire_time(None, start) == datetime(2026, 11, 30, 7, 30, tzinfo=PARIS)


@pytest.mark.parametrize("expr", ["* * *", "61 * * * *", "* * * * 8", "* * * * funday", "* * * * 5-2"])
def test_bad_crontab_is_a_config_error_naming_the_setting(tmp_path, expr):
    with pytest.raises(ValueError):
        cron_trigger(expr)
    config = tmp_path / "veille.yaml"
    config.write_text(f"silent_days: 10\ndigest_cron: \"{expr}\"\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_settings(config, env={})
    assert err.value.line == 2 and err.value.key == "digest_cron"
    with pytest.raises(ConfigError) as err:
        load_settings(None, env={"VEILLE_MAINTENANCE_CRON": expr})
    assert "VEILLE_MAINTENANCE_CRON" in str(err.value)


def test_previous_fire_time_finds_last_monday_within_grace_only():
    weekly = cron_trigger("30 7 * * mon")
    tuesday = datetime(2026, 12, 1, 9, 0, tzinfo=PARIS)
    assert previous_fire_time(weekly, tuesday, timedelta(days=2)) == datetime(2026, 11, 30, 7, 30, tzinfo=PARIS)
    assert previous_fire_time(weekly, tuesday, timedelta(hours=12)) is None
    exactly = datetime(2026, 11, 30, 7, 30, tzinfo=PARIS)
    assert previous_fire_time(weekly, exactly, timedelta(days=2)) == exactly
    seconds = cron_trigger("*/10 * * * * *")
    assert previous_fire_time(seconds, datetime(2026, 12, 1, 9, 0, 37, tzinfo=PARIS), timedelta(days=2)) == \
        datetime(2026, 12, 1, 9, 0, 30, tzinfo=PARIS)


# --------------------------------------------------------------------------------------------------
# lock


def test_second_lock_says_who_holds_it_and_is_free_after_release(tmp_path):
    db = tmp_path / "veille.db"
    first = SchedulerLock(db).acquire()
    try:
        holder = lock_holder(db)
        assert holder is not None and holder.pid == os.getpid() and holder.host == socket.gethostname()
        with pytest.raises(LockError) as err:
            SchedulerLock(db).acquire()
        message = str(err.value)
        assert message.startswith(f"already running: pid {os.getpid()} on {socket.gethostname()} since ")
        assert str(lock_path(db)) in message
    finally:
        first.release()
    assert lock_holder(db) is None
    with SchedulerLock(db):
        assert lock_holder(db).pid == os.getpid()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    db = tmp_path / "veille.db"
    lock_path(db).write_text(json.dumps({"pid": 999999, "host": "ancien-serveur", "since": "2026-11-01T03:00:00"}))
    assert lock_holder(db) is None  # content alone does not make a holder
    with caplog.at_level(logging.WARNING, logger="veille.schedule"):
        with SchedulerLock(db):
            assert json.loads(lock_path(db).read_text())["pid"] == os.getpid()
    assert "stale lock left by pid 999999 on ancien-serveur" in caplog.text
    assert lock_path(db).read_text() == ""


# --------------------------------------------------------------------------------------------------
# logging


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    names = ("apscheduler", "apscheduler.scheduler", "httpx", "httpcore", "trafilatura", "charset_normalizer")
    saved = (list(root.handlers), root.level, {name: logging.getLogger(name).level for name in names})
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if handler not in saved[0]:
            handler.close()
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


def test_json_log_lines_carry_extras_and_traceback(tmp_path, restore_logging):
    log_file = tmp_path / "logs" / "veille.log"
    setup_logging("json", log_file, "info")
    logger = logging.getLogger("veille.schedule")
    logger.info("source %s: %d new", "gazette", 3, extra={"job": "source:gazette"})
    try:
        raise RuntimeError("panne du serveur SMTP")
    except RuntimeError:
        logger.exception("digest failed", extra={"job": "digest"})
    logger.debug("not shown at info")
    lines = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
    assert [(r["level"], r["message"], r["job"]) for r in lines] == [
        ("info", "source gazette: 3 new", "source:gazette"), ("error", "digest failed", "digest")]
    assert "RuntimeError: panne du serveur SMTP" in lines[1]["traceback"]
    assert datetime.fromisoformat(lines[0]["time"]).utcoffset() is not None


def test_text_log_is_one_readable_line(tmp_path, restore_logging):
    log_file = tmp_path / "veille.log"
    setup_logging("text", log_file, "warning")
    logging.getLogger("veille.schedule").warning("source %s: failed", "gazette")
    logging.getLogger("veille.schedule").info("hidden")
    (line,) = log_file.read_text(encoding="utf-8").splitlines()
    assert line.endswith("WARNING veille.schedule: source gazette: failed")


# --------------------------------------------------------------------------------------------------
# maintenance

NOW = datetime(2026, 11, 24, 8, 0, tzinfo=timezone.utc)


def _sources(*ids: str, enabled: bool = True) -> list[Source]:
    return [Source(id=i, name=f"Journal {i}", type="feed", url=f"http://127.0.0.1:9/{i}.xml", enabled=enabled)
            for i in ids]


def _fail(store: Store, source_id: str, times: int, at: datetime, reason: str = "timeout") -> None:
    for n in range(times):
        store.record_failure(FetchLog(source_id, f"http://127.0.0.1:9/{source_id}.xml", at + timedelta(minutes=n),
                                      1500, reason=reason, error=f"délai dépassé ({reason})"),
                             next_attempt_at=at + timedelta(hours=n + 1))


def test_backup_is_a_consistent_snapshot_and_rotation_keeps_the_newest(store, tmp_path):
    store.sync_sources(_sources("gazette", "acteurs"))
    writer = sqlite3.connect(store.path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE sources SET name = 'pas encore validé' WHERE id = 'gazette'")  # uncommitted
    backups = tmp_path / "backups"
    made = []
    for day in range(4):
        path, removed = backup_database(store, backups, keep=2, now=NOW + timedelta(days=day))
        made.append(path)
    writer.execute("ROLLBACK")
    writer.close()
    assert sorted(p.name for p in backups.iterdir()) == ["veille-20261126-090000.db", "veille-20261127-090000.db"]
    assert removed == (made[1],)
    copy = sqlite3.connect(made[-1])
    assert copy.execute("SELECT name FROM sources ORDER BY id").fetchall() == [("Journal acteurs",),
                                                                               ("Journal gazette",)]
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    copy.close()
    again, _ = backup_database(store, backups, keep=5, now=NOW + timedelta(days=3))  # same second: no clobber
    assert again.name == "veille-20261127-090000-2.db"


def test_maintenance_prunes_old_fetch_log_and_backs_up(store, tmp_path, settings, monkeypatch):
    store.sync_sources(_sources("gazette"))
    old = datetime.now(timezone.utc) - timedelta(days=120)
    _fail(store, "gazette", 3, old)
    store.record_not_modified(FetchLog("gazette", "http://127.0.0.1:9/gazette.xml", datetime.now(timezone.utc), 20,
                                       status=304))
    settings = settings.replace(backups_dir=str(tmp_path / "sauvegardes"), backup_keep=3)
    optimized = []
    real_optimize = store.optimize

    def optimize() -> None:
        optimized.append(True)
        real_optimize()  # the real PRAGMA still runs: an error in it would fail the test

    monkeypatch.setattr(store, "optimize", optimize)
    result = run_maintenance(store, settings)
    assert optimized == [True]
    assert result.pruned_log_rows == 3
    assert store.scalar("SELECT count(*) FROM fetch_log") == 1
    assert result.backup.parent == tmp_path / "sauvegardes" and result.backup.exists()


# --------------------------------------------------------------------------------------------------
# staff report


def test_staff_report_lists_failing_silent_and_disabled_sources(store, tmp_path, settings):
    store.sync_sources(_sources("gazette", "acteurs", "banque-territoires", "courrier"))
    store.sync_sources(_sources("ancien-flux", enabled=False))
    now = datetime.now(timezone.utc).replace(microsecond=0)
    _fail(store, "gazette", 6, now - timedelta(days=2), reason="not_found")
    _fail(store, "courrier", 5, now - timedelta(hours=3))  # 5 failures, threshold 5: not "more than 5" yet
    store.execute("UPDATE sources SET created_at = ?, last_new_at = ? WHERE id = 'acteurs'",
                  (iso(now - timedelta(days=90)), iso(now - timedelta(days=30))))
    settings = settings.replace(failing_threshold=5, silent_days=14, digests_dir=str(tmp_path / "digests"))
    report = build_staff_report(store, settings, now)
    assert [s.id for s in report.failing] == ["gazette"]
    assert report.failing[0].consecutive_failures == 6 and report.failing[0].last_reason == "not_found"
    assert [s.id for s in report.silent] == ["acteurs"]  # the others are new: not silent yet
    assert [s.id for s in report.disabled] == ["ancien-flux"]
    text = render_staff_report(report)
    assert "## Sources en échec (plus de 5 tentatives de suite)" in text
    assert "| Journal gazette (`gazette`) |" in text and "not_found" in text
    assert "## Sources silencieuses (aucun nouvel article depuis 14 jours)" in text
    assert "Journal courrier" not in text
    path, recipient = deliver_staff_report(report, settings)
    assert recipient is None
    assert path == tmp_path / "digests" / f"staff-report-{report.week}.md"
    assert path.read_text(encoding="utf-8") == text


def test_staff_report_lists_topics_with_no_article_this_week(store, settings):
    """A topic that caught nothing in 7 days is listed, even one that caught articles before (its rule may
    have gone stale); a topic that caught something this week is not."""
    from veille.tag import Tagger, Topic, sync_topics, tag_articles
    from veille.types import Article

    now = datetime.now(timezone.utc).replace(microsecond=0)
    store.sync_sources(_sources("gazette"))
    articles = [
        ("La fibre optique arrive dans les bourgs", "Le réseau de fibre optique couvre la commune.", 2),
        ("Un rançongiciel frappe une mairie", "Un rançongiciel a chiffré les postes des agents.", 20),
    ]
    batch = [Article(source_id="gazette", url=f"http://127.0.0.1:9/articles/{n}",
                     canonical_url=f"http://127.0.0.1:9/articles/{n}", title=title, text=text, text_source="feed",
                     published_at=now - timedelta(days=days_ago), fetched_at=now - timedelta(days=days_ago))
             for n, (title, text, days_ago) in enumerate(articles)]
    ids = store.save_source_batch("gazette", batch, FetchLog("gazette", "http://127.0.0.1:9/gazette.xml", now, 20),
                                  []).new_ids
    topics = [Topic("fibre", "Très haut débit", ("fibre optique",)),
              Topic("cyber", "Cybersécurité", ("rançongiciel",)),
              Topic("inclusion", "Inclusion numérique", ("conseiller numérique",))]
    sync_topics(store, topics)
    assert tag_articles(store, Tagger(topics), ids) == 2

    report = build_staff_report(store, settings, now)
    assert report.topics == 3
    assert [(t.id, t.recent, t.total) for t in report.empty_topics] == [("cyber", 0, 1), ("inclusion", 0, 0)]
    text = render_staff_report(report)
    assert "- 2 thèmes sur 3 sans article cette semaine." in text
    section = text.split("\n## Thèmes sans article cette semaine\n", 1)[1]  # the report's last section
    assert "| Cybersécurité (`cyber`) | 1 |" in section and "| Inclusion numérique (`inclusion`) | 0 |" in section
    assert "`fibre`" not in section and "Aucun." not in section


def test_job_that_raises_is_logged_with_traceback_and_recorded(tmp_path, settings, caplog):
    from veille.core import Watch

    sources = tmp_path / "sources.yaml"
    sources.write_text("sources:\n  - {id: gazette, name: Gazette, type: feed, url: 'http://127.0.0.1:9/f.xml'}\n",
                       encoding="utf-8")
    watch = Watch(db=tmp_path / "veille.db", sources=sources, topics=tmp_path / "topics.yaml", config=None,
                  settings=settings)
    daemon = Daemon(watch, DaemonOptions(catch_up=False))
    try:
        daemon._sync_jobs()
        assert {j.id for j in daemon.state.scheduler_jobs()} == {"source:gazette", "digest", "maintenance",
                                                                 "staff-report"}

        def broken() -> None:
            raise ZeroDivisionError("division par zéro dans un job")

        with caplog.at_level(logging.ERROR, logger="veille.schedule"):
            daemon._job("maintenance", broken)
        record = next(r for r in caplog.records if r.name == "veille.schedule")
        assert record.exc_info and record.exc_info[0] is ZeroDivisionError
        job = next(j for j in daemon.state.scheduler_jobs() if j.id == "maintenance")
        assert job.last_status == "error" and "division par zéro" in job.last_error
        daemon._job("maintenance", lambda: None)  # the next run goes on as usual
        job = next(j for j in daemon.state.scheduler_jobs() if j.id == "maintenance")
        assert job.last_status == "ok" and job.last_error is None
    finally:
        daemon.shutdown()


def test_missed_digest_is_the_last_fire_within_grace_not_yet_delivered(store, settings):
    from veille.schedule import missed_digest_week

    tuesday = datetime(2026, 12, 1, 9, 0, tzinfo=PARIS)  # the day after the Monday 07:30 digest
    settings = settings.replace(digest_cron="30 7 * * mon", digest_grace=timedelta(days=2))
    assert missed_digest_week(store, settings, tuesday) is None  # nobody to send it to
    claire, _ = store.upsert_member("claire@mairie-exemple.fr", "Claire")
    marc, _ = store.upsert_member("marc@agglo-exemple.fr", "Marc")
    monday_0730 = datetime(2026, 11, 30, 7, 30, tzinfo=PARIS)
    assert missed_digest_week(store, settings, tuesday) == ("2026-W48", monday_0730)
    assert missed_digest_week(store, settings.replace(digest_grace=timedelta(hours=12)), tuesday) is None
    store.set_delivery("2026-W48", claire.id, "sent", message_id="<1@veille>")
    store.set_delivery("2026-W48", marc.id, "failed", error="451 greylisted")
    assert missed_digest_week(store, settings, tuesday) == ("2026-W48", monday_0730)  # resumed: only Marc left
    store.set_delivery("2026-W48", marc.id, "sent", message_id="<2@veille>")
    assert missed_digest_week(store, settings, tuesday) is None


def test_staff_report_is_mailed_to_staff_when_configured(store, tmp_path, settings):
    from .smtpserver import SmtpServer

    store.sync_sources(_sources("gazette", "acteurs"))
    yesterday = datetime.now(timezone.utc) - timedelta(days=1)
    _fail(store, "gazette", 5, yesterday, reason="forbidden")  # exactly the threshold: not "more than" it
    _fail(store, "acteurs", 6, yesterday, reason="forbidden")  # one more: reported
    with SmtpServer() as smtp:
        settings = settings.replace(smtp_host=smtp.host, smtp_port=smtp.port, staff_email="equipe@asso-exemple.fr",
                                    digests_dir=str(tmp_path / "digests"), failing_threshold=5)
        report = build_staff_report(store, settings)
        path, recipient = deliver_staff_report(report, settings)
    assert [s.id for s in report.failing] == ["acteurs"]
    assert recipient == "equipe@asso-exemple.fr" and path.exists()
    (received,) = smtp.messages
    assert received.rcpt_tos == ["equipe@asso-exemple.fr"]
    message = received.message
    assert message["Subject"].startswith("Veille — rapport d'exploitation, semaine ")
    body = message.get_content()
    assert "## Sources en échec (plus de 5 tentatives de suite)" in body
    assert "| Journal acteurs (`acteurs`) |" in body and "| Journal gazette (`gazette`) |" not in body


# --------------------------------------------------------------------------------------------------
# The daemon as a real process: scheduler.py against the loopback HTTP server (and SMTP server)

import dataclasses  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Callable  # noqa: E402

from .corpus import STORIES, page, rss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUIET_CRON = "0 3 1 1 *"  # 1 January 03:00: never during a test


def wait_for(check: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def db_rows(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return []
        raise
    finally:
        conn.close()


class SchedulerProcess:
    """`python scheduler.py ...` in a temporary folder, logging JSON lines to a file the test reads."""

    def __init__(self, folder: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.folder = folder
        self.db = folder / "veille.db"
        self.env = {
            "PATH": os.environ.get("PATH", ""), "VEILLE_ALLOW_PRIVATE": "1", "VEILLE_POLITENESS_DELAY": "0",
            "VEILLE_WORKERS": "1", "VEILLE_CONNECT_TIMEOUT": "2", "VEILLE_READ_TIMEOUT": "3",
            "VEILLE_REQUEST_DEADLINE": "6", "VEILLE_DIGEST_CRON": QUIET_CRON, "VEILLE_DIGEST_GRACE": "1s",
            "VEILLE_MAINTENANCE_CRON": QUIET_CRON, "VEILLE_STAFF_REPORT_CRON": QUIET_CRON, **(env or {}),
        }
        self.args = args
        self.proc: subprocess.Popen | None = None
        self.log = folder / "scheduler-0.log"

    def start(self) -> "SchedulerProcess":
        self.log = self.folder / f"scheduler-{len(list(self.folder.glob('scheduler-*.log'))) + 1}.log"
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scheduler.py"), "--db", str(self.db), "--sources",
             str(self.folder / "sources.yaml"), "--topics", str(self.folder / "topics.yaml"), "--config",
             str(self.folder / "veille.yaml"), "--log-format", "json", "--watch-interval", "0.5", *self.args],
            cwd=self.folder, env=self.env, stdout=subprocess.DEVNULL, stderr=self.log.open("wb"),
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def records(self) -> list[dict]:
        out = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # not a log record (a crash would print a bare traceback): the assertions show it
        return out

    def wait_log(self, needle: str, timeout: float = 15.0, after: int = 0) -> dict:
        def find() -> dict | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"scheduler exited ({self.proc.returncode}):\n{self.log.read_text()}")
            return next((r for r in self.records()[after:] if needle in r["message"]), None)

        return wait_for(find, timeout, f"log line {needle!r}")  # type: ignore[return-value]

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit code (the contract: exit 0 within 30 s)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def daemons(tmp_path):
    started: list[SchedulerProcess] = []

    def make(**kwargs: object) -> SchedulerProcess:
        d = SchedulerProcess(tmp_path, **kwargs)  # type: ignore[arg-type]
        started.append(d)
        return d

    yield make
    for d in started:
        d.kill()


def write_sources(folder: Path, *sources: tuple[str, str], interval: str = "1s") -> None:
    lines = [f"defaults: {{interval: {interval}, allow_private: true}}", "sources:"]
    lines += [f"  - {{id: {sid}, name: Journal {sid}, type: feed, url: '{url}'}}" for sid, url in sources]
    (folder / "sources.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def publish(server, stories, feed: str = "/feed.xml", delay: float = 0.0) -> str:
    """Serve the stories' pages (each answering after `delay` seconds) and a feed listing them."""
    items = []
    for story in stories:
        path = f"/articles/{story.slug}"
        body = page(story, server.base).encode()
        if delay:
            def slow(handler, body=body) -> None:
                time.sleep(delay)
                try:
                    handler.send_simple(200, body, content_type="text/html; charset=utf-8")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the scheduler was stopped or killed meanwhile: that is the point

            server.handle(path, slow)
        else:
            server.serve(path, body)
        items.append((story, server.url(path)))
    return server.serve(feed, rss(items), content_type="application/rss+xml")


def source_log(db: Path, source_id: str) -> list[tuple]:
    return db_rows(db, "SELECT status, new_count, reason FROM fetch_log WHERE source_id = ? ORDER BY id", (source_id,))


@pytest.mark.slow
def test_sources_are_polled_at_their_interval_with_conditional_gets(tmp_path, http_server, daemons):
    from click.testing import CliRunner

    from veille.cli import main

    feed = publish(http_server, STORIES[:2])
    write_sources(tmp_path, ("hebdo", feed))
    every_2s = "*/2 * * * * *"
    first = daemons(env={"VEILLE_MAINTENANCE_CRON": every_2s, "VEILLE_STAFF_REPORT_CRON": every_2s,
                         "VEILLE_BACKUP_KEEP": "2"}).start()
    first.wait_log("scheduler started")
    wait_for(lambda: [r for r in source_log(first.db, "hebdo") if r[0] == 304][2:], what="three 304 passes")
    log = source_log(first.db, "hebdo")
    assert log[0] == (200, 2, None) and all(r == (304, 0, None) for r in log[1:])
    assert db_rows(first.db, "SELECT count(*) FROM articles") == [(2,)]
    assert all(h.headers.get("if-none-match") for h in http_server.hits("/feed.xml")[1:])
    first.wait_log("maintenance: backup ")
    wait_for(lambda: len(list((tmp_path / "backups").glob("veille-*.db"))) == 2, what="two backups kept")
    first.wait_log("staff report ")
    (report,) = (tmp_path / "digests").glob("staff-report-*.md")
    assert "| Journal hebdo (`hebdo`) |" not in report.read_text(encoding="utf-8")  # healthy: not listed
    assert "- 1 source suivie : 0 en échec" in report.read_text(encoding="utf-8")

    status = CliRunner().invoke(main, ["--db", str(first.db), "--config", str(tmp_path / "veille.yaml"), "status",
                                       "--json"])
    data = json.loads(status.output)
    assert data["scheduler"]["running"] and data["scheduler"]["pid"] == first.pid
    job = next(j for j in data["jobs"] if j["id"] == "source:hebdo")
    assert job["schedule"] == "every 1s" and job["last_status"] == "ok" and job["next_run_at"]
    assert {j["id"] for j in data["jobs"]} == {"source:hebdo", "digest", "maintenance", "staff-report"}

    second = daemons().start()
    assert second.proc.wait(20) == 1
    refusal = second.log.read_text(encoding="utf-8")
    assert f"already running: pid {first.pid} on {socket.gethostname()} since " in refusal
    assert f"(lock file {first.db}.lock)" in refusal

    assert first.stop() == 0
    assert first.records()[-1]["message"] == "scheduler stopped"
    assert db_rows(first.db, "SELECT count(*) FROM scheduler_jobs WHERE next_run_at IS NOT NULL") == [(0,)]


@pytest.mark.slow
def test_sigterm_during_a_pass_exits_0_and_leaves_a_consistent_database(tmp_path, http_server, daemons):
    feed = publish(http_server, STORIES, delay=1.5)
    write_sources(tmp_path, ("hebdo", feed), interval="1h")
    daemon = daemons().start()
    wait_for(lambda: http_server.hits(f"/articles/{STORIES[0].slug}"), what="the first article page request")
    assert daemon.stop() == 0
    messages = [r["message"] for r in daemon.records()]
    assert any("interrupted by the stop" in m for m in messages), messages
    assert db_rows(daemon.db, "PRAGMA integrity_check") == [("ok",)]
    # the pass was cut before its transaction: nothing of it, not even the feed's ETag, was kept
    assert db_rows(daemon.db, "SELECT count(*) FROM articles") == [(0,)]
    assert db_rows(daemon.db, "SELECT count(*) FROM http_cache") == [(0,)]

    publish(http_server, STORIES)  # the site is fast again
    restarted = daemons().start()
    wait_for(lambda: db_rows(restarted.db, "SELECT count(*) FROM articles") == [(len(STORIES),)], what="articles")
    assert restarted.stop() == 0
    titles = sorted(r[0] for r in db_rows(restarted.db, "SELECT title FROM articles"))
    assert titles == sorted(s.title for s in STORIES)


@pytest.mark.slow
def test_sigint_stops_like_sigterm_and_exits_0(tmp_path, http_server, daemons):
    """Ctrl-C on a scheduler run in a terminal: the same clean stop as SIGTERM, not a KeyboardInterrupt."""
    write_sources(tmp_path, ("hebdo", publish(http_server, STORIES[:2])))
    daemon = daemons().start()
    daemon.wait_log("scheduler started")
    wait_for(lambda: source_log(daemon.db, "hebdo"), what="a first pass")
    daemon.signal(signal.SIGINT)
    assert daemon.proc.wait(30) == 0
    messages = [r["message"] for r in daemon.records()]
    assert "received SIGINT: stopping" in messages and messages[-1] == "scheduler stopped"
    assert "KeyboardInterrupt" not in daemon.log.read_text(encoding="utf-8")
    assert lock_holder(daemon.db) is None
    assert db_rows(daemon.db, "PRAGMA integrity_check") == [("ok",)]


@pytest.mark.slow
def test_sigkill_then_restart_loses_nothing_and_duplicates_nothing(tmp_path, http_server, daemons):
    later = [dataclasses.replace(s, slug=f"{s.slug}-suite", title=f"{s.title} (suite)") for s in STORIES]
    feed_a = publish(http_server, STORIES[:2], "/a.xml")
    feed_b = publish(http_server, later, "/b.xml", delay=1.0)
    write_sources(tmp_path, ("alpha", feed_a), ("beta", feed_b))
    daemon = daemons().start()
    wait_for(lambda: source_log(daemon.db, "alpha") and http_server.hits(f"/articles/{later[0].slug}"),
             what="alpha stored and beta's pass under way")
    daemon.proc.kill()  # SIGKILL: no cleanup at all
    daemon.proc.wait(10)
    assert db_rows(daemon.db, "PRAGMA integrity_check") == [("ok",)]
    before = db_rows(daemon.db, "SELECT count(*) FROM articles WHERE source_id = 'beta'")[0][0]
    assert before in (0, len(later))  # a source's batch is all or nothing

    publish(http_server, later, "/b.xml")
    restarted = daemons().start()
    restarted.wait_log(f"taking over a stale lock left by pid {daemon.pid}")
    wait_for(lambda: [r for r in source_log(restarted.db, "beta") if r[0] == 304][1:], what="beta up to date")
    assert restarted.stop() == 0
    rows = db_rows(restarted.db, "SELECT title, count(*) FROM articles GROUP BY canonical_url")
    assert sorted(title for title, _ in rows) == sorted(s.title for s in [*STORIES[:2], *later])
    assert all(n == 1 for _, n in rows)


@pytest.mark.slow
def test_sighup_reloads_sources_and_a_broken_file_keeps_the_old_ones(tmp_path, http_server, daemons):
    feed_a = publish(http_server, STORIES[:1], "/a.xml")
    feed_b = publish(http_server, STORIES[1:2], "/b.xml")
    write_sources(tmp_path, ("alpha", feed_a))
    daemon = daemons(args=("--watch-interval", "3600")).start()  # only SIGHUP triggers a reload
    wait_for(lambda: source_log(daemon.db, "alpha"), what="alpha polled")

    (tmp_path / "sources.yaml").write_text(  # a typo on line 4
        f"sources:\n  - id: alpha\n    name: Alpha\n    intervall: 2s\n    type: feed\n    url: '{feed_a}'\n",
        encoding="utf-8")
    mark = len(daemon.records())
    daemon.signal(signal.SIGHUP)
    error = daemon.wait_log("configuration NOT reloaded (SIGHUP)", after=mark)
    assert error["level"] == "error" and error["file"] == str(tmp_path / "sources.yaml") and error["line"] == 4
    assert "intervall" in error["message"] and "did you mean 'interval'?" in error["message"]
    polled = len(source_log(daemon.db, "alpha"))
    wait_for(lambda: len(source_log(daemon.db, "alpha")) > polled + 1, what="alpha still polled")

    write_sources(tmp_path, ("alpha", feed_a), ("beta", feed_b))
    daemon.signal(signal.SIGHUP)
    daemon.wait_log("configuration reloaded (SIGHUP): 2 sources", after=mark)
    wait_for(lambda: source_log(daemon.db, "beta"), what="beta polled after the reload")
    assert daemon.stop() == 0


RANSOMWARE = dataclasses.replace(
    STORIES[1],
    slug="rancongiciel-agglo-vierzon",
    title="Un rançongiciel paralyse l'agglomération de Vierzon",
    lead="Les services de l'agglomération fonctionnent au ralenti depuis l'attaque de vendredi.",
    paragraphs=(
        "Les agents de l'agglomération ont découvert vendredi matin que leurs postes de travail étaient chiffrés. "
        "La collectivité a coupé ses connexions et prévenu l'ANSSI.",
        "Le président de l'agglomération assure qu'aucune donnée des habitants n'a été publiée à ce stade, et "
        "promet un retour progressif des services en ligne d'ici la fin du mois.",
    ),
)
TOPICS = """topics:
  cybersecurite:
    label: Cybersécurité
    keywords: [cyberattaque, rançongiciel]
"""


def article_topics(db: Path) -> dict[str, set[str]]:
    rows = db_rows(db, "SELECT a.title, t.topic_id FROM articles a LEFT JOIN article_topics t ON t.article_id = a.id")
    out: dict[str, set[str]] = {}
    for title, topic in rows:
        out.setdefault(title, set()).update([topic] if topic else [])
    return out


@pytest.mark.slow
def test_broken_topics_file_is_rejected_and_the_old_rules_keep_working(tmp_path, http_server, daemons):
    topics = tmp_path / "topics.yaml"
    topics.write_text(TOPICS, encoding="utf-8")
    feed = publish(http_server, STORIES)
    write_sources(tmp_path, ("hebdo", feed))
    daemon = daemons().start()
    # tags land just after the articles' own transaction: wait for them, not only for the articles
    wait_for(lambda: article_topics(daemon.db).get(STORIES[1].title) == {"cybersecurite"}, what="the first pass")
    assert len(article_topics(daemon.db)) == len(STORIES)

    mark = len(daemon.records())
    topics.write_text(TOPICS + "    keyword: [fuite de données]\n", encoding="utf-8")  # typo on line 5
    error = daemon.wait_log("configuration NOT reloaded (a configuration file changed)", after=mark)
    assert error["file"] == str(topics) and error["line"] == 5 and "keyword" in error["message"]

    publish(http_server, [*STORIES, RANSOMWARE])  # the site publishes a new article
    # tagged by the old rules
    wait_for(lambda: article_topics(daemon.db).get(RANSOMWARE.title) == {"cybersecurite"}, what="the new article")

    topics.write_text(TOPICS + "  inclusion:\n    label: Inclusion numérique\n    keywords: [conseiller numérique]\n",
                      encoding="utf-8")
    daemon.wait_log("configuration reloaded (a configuration file changed): 1 sources, 2 topics", after=mark)
    wait_for(lambda: article_topics(daemon.db)[STORIES[3].title] == {"inclusion"}, what="the archive re-tagged")
    assert daemon.stop() == 0


MEMBERS = ("claire.martin@mairie-exemple.fr", "marc.dupont@agglo-exemple.fr", "sophie.bernard@cc-exemple.fr")


def last_week_stories() -> list:
    """The corpus, re-dated into last week (Paris), so that Monday's digest has something to send."""
    from veille.digest import previous_week, week_bounds

    start, _ = week_bounds(previous_week(datetime.now(timezone.utc)))
    return [dataclasses.replace(s, published=start + timedelta(days=1, hours=8 + i)) for i, s in enumerate(STORIES)]


def prepare_digest(tmp_path: Path, http_server) -> None:
    (tmp_path / "topics.yaml").write_text(
        TOPICS + "  inclusion:\n    label: Inclusion numérique\n    keywords: [conseiller numérique]\n",
        encoding="utf-8")
    write_sources(tmp_path, ("hebdo", publish(http_server, last_week_stories())))
    with Store.open(tmp_path / "veille.db") as store:
        for email in MEMBERS:
            store.upsert_member(email, email.split(".")[0].capitalize(), "Collectivité adhérente")


def daily_cron(at: datetime) -> str:
    at = at.astimezone(PARIS)
    return f"{at.second} {at.minute} {at.hour} * * *"


@pytest.mark.slow
def test_digest_is_sent_at_its_cron_time(tmp_path, http_server, daemons):
    from .smtpserver import SmtpServer

    prepare_digest(tmp_path, http_server)
    fire = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=8)
    with SmtpServer() as smtp:
        daemon = daemons(env={**smtp.env(), "VEILLE_DIGEST_CRON": daily_cron(fire)}).start()
        daemon.wait_log("source hebdo: 4 new")
        assert not smtp.messages
        sent = daemon.wait_log("digest 20", timeout=20)
        wait_for(lambda: len(smtp.messages) == len(MEMBERS), what="one message per member")
        assert daemon.stop() == 0
    assert datetime.fromisoformat(sent["time"]) >= fire
    assert sorted(smtp.by_recipient()) == sorted(MEMBERS)
    assert all(len(messages) == 1 for messages in smtp.by_recipient().values())
    assert "Cybersécurité" in smtp.messages[0].message.get_body(("plain",)).get_content()
    assert db_rows(daemon.db, "SELECT status, count(*) FROM deliveries GROUP BY status") == [("sent", 3)]


@pytest.mark.slow
def test_missed_digest_is_sent_once_after_restart_never_twice(tmp_path, http_server, daemons):
    from .smtpserver import SmtpServer

    prepare_digest(tmp_path, http_server)
    with SmtpServer() as smtp:
        first = daemons(env=smtp.env()).start()  # the digest's time is far away: nothing sent
        first.wait_log("source hebdo: 4 new")
        assert first.stop() == 0 and not smtp.messages

        # Downtime over the digest's time (30 s ago), still within the grace period: sent at start.
        missed = {**smtp.env(), "VEILLE_DIGEST_CRON": daily_cron(datetime.now(timezone.utc) - timedelta(seconds=30)),
                  "VEILLE_DIGEST_GRACE": "1h"}
        second = daemons(env=missed).start()
        second.wait_log("was not sent (downtime?): sending it now")
        wait_for(lambda: len(smtp.messages) == len(MEMBERS), what="the missed digest")
        second.wait_log("digest 20")
        second.proc.kill()  # and then a crash
        second.proc.wait(10)

        third = daemons(env=missed).start()
        third.wait_log("scheduler started")
        polled = len(source_log(third.db, "hebdo"))
        wait_for(lambda: len(source_log(third.db, "hebdo")) >= polled + 2, what="two more passes")
        assert third.stop() == 0
    assert not [r for r in third.records() if "was not sent" in r["message"]]
    assert sorted(smtp.by_recipient()) == sorted(MEMBERS)
    assert all(len(messages) == 1 for messages in smtp.by_recipient().values())


def test_refused_digest_is_retried_within_grace(tmp_path, http_server, caplog):
    from veille.core import Watch
    from veille.digest import previous_week

    from .smtpserver import SmtpServer

    prepare_digest(tmp_path, http_server)
    with socket.socket() as s:  # a port where no SMTP server listens
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    config = tmp_path / "veille.yaml"
    base = "allow_private: true\npoliteness_delay: 0\nworkers: 1\nsmtp_host: 127.0.0.1\ndigest_grace: 1h\n"
    config.write_text(base + f"smtp_port: {closed_port}\n", encoding="utf-8")
    watch = Watch(db=tmp_path / "veille.db", sources=tmp_path / "sources.yaml", topics=tmp_path / "topics.yaml",
                  config=config)
    daemon = Daemon(watch, DaemonOptions(catch_up=False, digest_retry=120))
    try:
        daemon._sync_jobs()
        assert watch.fetch().new == len(STORIES)
        with caplog.at_level(logging.WARNING, logger="veille.schedule"):
            daemon._job("digest", daemon._send_digest)
        assert "retrying at" in caplog.text
        assert next(j for j in daemon.state.scheduler_jobs() if j.id == "digest").last_status == "error"
        retry = daemon.scheduler.get_job("digest-retry")
        fire_at = retry.trigger.run_date
        assert timedelta(seconds=110) < fire_at - datetime.now(timezone.utc) <= timedelta(seconds=120)

        with SmtpServer() as smtp:  # the mail server is back, at its usual address
            config.write_text(base + f"smtp_port: {smtp.port}\n", encoding="utf-8")
            watch.reload()
            retry.func(*retry.args)
        assert sorted(smtp.by_recipient()) == sorted(MEMBERS)
        assert next(j for j in daemon.state.scheduler_jobs() if j.id == "digest").last_status == "ok"

        caplog.clear()
        config.write_text(base + f"smtp_port: {closed_port}\n", encoding="utf-8")
        watch.reload()
        daemon.scheduler.remove_job("digest-retry")
        watch.store.upsert_member("paul.durand@ville-exemple.fr", "Paul")  # joined late: still to be served
        two_hours_ago = datetime.now(timezone.utc) - timedelta(hours=2)
        with caplog.at_level(logging.WARNING, logger="veille.schedule"):
            daemon._job("digest", daemon._send_digest, previous_week(datetime.now(timezone.utc)), two_hours_ago)
        assert "not retried (past digest_grace)" in caplog.text
        assert daemon.scheduler.get_job("digest-retry") is None
    finally:
        daemon.shutdown()


def test_reload_reschedules_changed_sources_and_drops_removed_ones(tmp_path, settings):
    from veille.core import Watch

    def sources(*items: tuple[str, str]) -> None:
        (tmp_path / "sources.yaml").write_text("sources:\n" + "".join(
            f"  - {{id: {sid}, name: Journal {sid}, type: feed, url: 'http://127.0.0.1:9/{sid}.xml', "
            f"interval: {interval}}}\n" for sid, interval in items), encoding="utf-8")

    sources(("alpha", "1h"), ("beta", "1h"))
    watch = Watch(db=tmp_path / "veille.db", sources=tmp_path / "sources.yaml", topics=tmp_path / "topics.yaml",
                  config=None, settings=settings)
    daemon = Daemon(watch, DaemonOptions(catch_up=False))
    try:
        daemon._sync_jobs()
        daemon.scheduler.start(paused=True)  # jobs planned, none run
        sources(("alpha", "30m"), ("gamma", "2h"), ("beta-off", "1h"))
        daemon._reload("test")
        jobs = {j.id: j for j in daemon.scheduler.get_jobs() if j.id.startswith("source:")}
        assert set(jobs) == {"source:alpha", "source:gamma", "source:beta-off"}
        assert jobs["source:alpha"].trigger.interval == timedelta(minutes=30)
        # jitter is a tenth of the interval, at most 5 minutes; a late pass is coalesced, never doubled
        assert {job_id: job.trigger.jitter for job_id, job in jobs.items()} == {
            "source:alpha": 180, "source:gamma": 300, "source:beta-off": 300}
        for job in jobs.values():
            assert (job.coalesce, job.max_instances, job.executor) == (True, 1, "fetch"), job.id
        assert {j.id: j.schedule for j in daemon.state.scheduler_jobs() if j.kind == "source"} == {
            "source:alpha": "every 30m", "source:gamma": "every 2h", "source:beta-off": "every 1h"}
    finally:
        daemon.shutdown()


def test_a_source_in_backoff_is_first_run_when_its_backoff_ends(tmp_path, settings):
    """The backoff is kept in the database, so a restart must not hammer a failing source again at once."""
    from veille.core import Watch

    (tmp_path / "sources.yaml").write_text("sources:\n" + "".join(
        f"  - {{id: {sid}, name: Journal {sid}, type: feed, url: 'http://127.0.0.1:9/{sid}.xml', interval: 1h}}\n"
        for sid in ("alpha", "beta")), encoding="utf-8")
    watch = Watch(db=tmp_path / "veille.db", sources=tmp_path / "sources.yaml", topics=tmp_path / "topics.yaml",
                  config=None, settings=settings)
    watch.store.sync_sources(watch.load_sources())
    now = datetime.now(timezone.utc).replace(microsecond=0)
    retry_at = now + timedelta(hours=3)  # later than last attempt + interval: the backoff decides
    watch.store.record_failure(FetchLog("alpha", "http://127.0.0.1:9/alpha.xml", now - timedelta(minutes=1), 1500,
                                        reason="timeout", error="délai dépassé"), next_attempt_at=retry_at)
    daemon = Daemon(watch, DaemonOptions(catch_up=False))
    try:
        before = datetime.now(timezone.utc)
        daemon._sync_jobs()
        after = datetime.now(timezone.utc)
        daemon.scheduler.start(paused=True)  # jobs planned, none run
        alpha = daemon.scheduler.get_job("source:alpha").next_run_time
        assert retry_at <= alpha <= retry_at + timedelta(minutes=5)  # plus at most the jitter of a 1h interval
        beta = daemon.scheduler.get_job("source:beta").next_run_time
        # a new source starts at once (the planning clock counts whole seconds)
        assert before.replace(microsecond=0) <= beta <= after + timedelta(seconds=1)
    finally:
        daemon.shutdown()


def test_schedule_command_is_wired_into_the_cli():
    """`veille schedule` is the documented way to run the daemon, with its logging options."""
    from click.testing import CliRunner

    from veille.cli import main

    result = CliRunner().invoke(main, ["schedule", "--help"])
    assert result.exit_code == 0, result.output
    assert "--log-format" in result.output and "--log-file" in result.output


def test_invalid_configuration_at_start_exits_2_naming_file_and_line(tmp_path, daemons):
    (tmp_path / "sources.yaml").write_text("sources:\n  - id: gazette\n    nom: La Gazette\n", encoding="utf-8")
    daemon = daemons().start()
    assert daemon.proc.wait(20) == 2
    output = daemon.log.read_text(encoding="utf-8")
    assert f"error: {tmp_path / 'sources.yaml'}:3: [sources[0].nom] unknown key" in output
    assert lock_holder(daemon.db) is None
