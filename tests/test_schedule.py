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
    saved = (list(root.handlers), root.level, logging.getLogger("apscheduler").level)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if handler not in saved[0]:
            handler.close()
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    logging.getLogger("apscheduler").setLevel(saved[2])


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


def test_maintenance_prunes_old_fetch_log_and_backs_up(store, tmp_path, settings):
    store.sync_sources(_sources("gazette"))
    old = datetime.now(timezone.utc) - timedelta(days=120)
    _fail(store, "gazette", 3, old)
    store.record_not_modified(FetchLog("gazette", "http://127.0.0.1:9/gazette.xml", datetime.now(timezone.utc), 20,
                                       status=304))
    settings = settings.replace(backups_dir=str(tmp_path / "sauvegardes"), backup_keep=3)
    result = run_maintenance(store, settings)
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
    _fail(store, "courrier", 2, now - timedelta(hours=3))  # below the threshold: not reported yet
    store.execute("UPDATE sources SET created_at = ?, last_new_at = ? WHERE id = 'acteurs'",
                  (iso(now - timedelta(days=90)), iso(now - timedelta(days=30))))
    settings = settings.replace(failing_threshold=5, silent_days=14, digests_dir=str(tmp_path / "digests"))
    report = build_staff_report(store, settings, now)
    assert [s.id for s in report.failing] == ["gazette"]
    assert report.failing[0].consecutive_failures == 6 and report.failing[0].last_reason == "not_found"
    assert [s.id for s in report.silent] == ["acteurs"]  # the others are new: not silent yet
    assert [s.id for s in report.disabled] == ["ancien-flux"]
    text = render_staff_report(report)
    assert "## Sources en échec (au moins 5 tentatives de suite)" in text
    assert "| Journal gazette (`gazette`) |" in text and "not_found" in text
    assert "## Sources silencieuses (aucun nouvel article depuis 14 jours)" in text
    assert "Journal courrier" not in text
    path, recipient = deliver_staff_report(report, settings)
    assert recipient is None
    assert path == tmp_path / "digests" / f"staff-report-{report.week}.md"
    assert path.read_text(encoding="utf-8") == text


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
