"""`veille status`: what the scheduler plans, how each source is doing, the last digest, the database."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from veille.cli import main
from veille.schedule import PARIS, SchedulerLock, backup_database
from veille.store import Store
from veille.store.articles import FetchLog
from veille.store.ops import JobPlan
from veille.types import Source

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def _source(sid: str, enabled: bool = True) -> Source:
    return Source(id=sid, name=f"Journal {sid}", type="feed", url=f"http://127.0.0.1:9/{sid}.xml", enabled=enabled)


@pytest.fixture
def archive(tmp_path):
    """An archive as a running scheduler leaves it: sources in every state, jobs, a digest half delivered."""
    db = tmp_path / "veille.db"
    store = Store.open(db)
    store.sync_sources([_source("acteurs-publics"), _source("gazette"), _source("vieux-flux", enabled=False)])
    store.record_not_modified(FetchLog("acteurs-publics", "http://127.0.0.1:9/acteurs-publics.xml", NOW, 40,
                                       status=304))
    failing_since = NOW - timedelta(hours=5)
    for n in range(3):
        store.record_failure(FetchLog("gazette", "http://127.0.0.1:9/gazette.xml", failing_since + timedelta(hours=n),
                                      2000, status=503, reason="server_error", error="HTTP 503 Service Unavailable"),
                             next_attempt_at=NOW + timedelta(minutes=40))
    store.plan_jobs([
        JobPlan("source:acteurs-publics", "source", "every 30m", NOW + timedelta(minutes=30)),
        JobPlan("source:gazette", "source", "every 1h", NOW + timedelta(minutes=41)),
        JobPlan("digest", "digest", "cron 30 7 * * mon", datetime(2026, 11, 30, 7, 30, tzinfo=PARIS)),
    ])
    store.record_job_run("source:acteurs-publics", NOW, "ok", duration_ms=40)
    store.record_job_run("digest", NOW - timedelta(days=2), "error", "MailError: mail to <x>: 451 try later")
    members = [store.upsert_member(f"{name}@mairie-exemple.fr", name.capitalize())[0]
               for name in ("claire", "marc", "sophie")]
    store.record_digest("2026-W47", NOW - timedelta(days=2), 37, str(tmp_path / "digests" / "2026-W47"))
    store.set_delivery("2026-W47", members[0].id, "sent", message_id="<a@veille>")
    store.set_delivery("2026-W47", members[1].id, "sent", message_id="<b@veille>")
    store.set_delivery("2026-W47", members[2].id, "failed", error="451 try later")
    config = tmp_path / "veille.yaml"
    config.write_text(f"backups_dir: {tmp_path / 'backups'}\n", encoding="utf-8")
    backup, _ = backup_database(store, tmp_path / "backups", keep=3)
    store.close()
    return db, config, backup


def _status(db, config, *args: str):
    return CliRunner().invoke(main, ["--db", str(db), "--config", str(config), "status", *args])


def test_status_json_has_jobs_sources_digest_and_database(archive):
    db, config, backup = archive
    result = _status(db, config, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["scheduler"]["running"] is False
    assert data["database"]["articles"] == 0 and data["database"]["bytes"] > 0
    assert data["last_backup"]["path"] == str(backup)
    jobs = {j["id"]: j for j in data["jobs"]}
    assert list(jobs) == ["digest", "source:acteurs-publics", "source:gazette"]
    assert jobs["digest"]["last_status"] == "error" and "451" in jobs["digest"]["last_error"]
    assert datetime.fromisoformat(jobs["digest"]["next_run_at"]) == datetime(2026, 11, 30, 6, 30, tzinfo=timezone.utc)
    assert jobs["source:acteurs-publics"]["last_status"] == "ok"
    sources = {s["id"]: s for s in data["sources"]}
    assert sources["acteurs-publics"]["state"] == "ok"
    gazette = sources["gazette"]
    assert gazette["state"] == "failing" and gazette["consecutive_failures"] == 3
    assert datetime.fromisoformat(gazette["failing_since"]) == NOW - timedelta(hours=5)
    assert datetime.fromisoformat(gazette["next_attempt_at"]) == NOW + timedelta(minutes=40)
    assert sources["vieux-flux"]["state"] == "disabled"
    assert data["digest"]["week"] == "2026-W47" and data["digest"]["articles"] == 37
    assert data["digest"]["deliveries"] == {"failed": 1, "sent": 2}


def test_status_text_names_the_running_scheduler_and_failing_sources(archive):
    db, config, _ = archive
    with SchedulerLock(db):
        result = _status(db, config)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"scheduler: running, pid {os.getpid()} on ")
    assert "last digest: 2026-W47 (built " in result.output and "deliveries: failed 1, sent 2" in result.output
    gazette = next(line for line in lines if line.startswith("gazette\t"))
    since = (NOW - timedelta(hours=5)).astimezone(PARIS).strftime("%Y-%m-%d %H:%M:%S")
    assert f"failing since {since} (3 attempts)" in gazette
    assert "server_error: HTTP 503 Service Unavailable" in gazette
    assert (NOW + timedelta(minutes=40)).astimezone(PARIS).strftime("%Y-%m-%d %H:%M:%S") in gazette
    digest = next(line for line in lines if line.startswith("digest\t"))
    assert "2026-11-30 07:30:00" in digest and "error" in digest
    after = _status(db, config)
    assert after.output.startswith("scheduler: not running")


def test_status_of_a_missing_database_says_what_to_do(tmp_path):
    result = _status(tmp_path / "absent.db", tmp_path / "veille.yaml")
    assert result.exit_code == 1
    assert "not found" in result.output and not (tmp_path / "absent.db").exists()
