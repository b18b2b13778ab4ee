"""Storage of the operations domain: the scheduler's jobs, source health, staff report queries, backups.

The daemon writes what it plans and how each job went into `scheduler_jobs`, because `veille status`
runs in another process and must not guess.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from . import Store


@dataclass(frozen=True)
class JobPlan:
    """A job as the daemon scheduled it."""

    id: str
    kind: str
    schedule: str
    next_run_at: datetime | None


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: str
    schedule: str
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_status: str | None
    last_error: str | None
    last_duration_ms: int | None


@dataclass(frozen=True)
class SourceHealth:
    id: str
    name: str
    enabled: bool
    disabled_reason: str | None
    last_attempt_at: datetime | None
    last_ok_at: datetime | None
    last_new_at: datetime | None
    failing_since: datetime | None
    consecutive_failures: int
    last_reason: str | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime | None
    articles: int

    @property
    def state(self) -> str:
        """ok, failing, disabled or new (never attempted)."""
        if not self.enabled:
            return "disabled"
        if self.consecutive_failures:
            return "failing"
        return "ok" if self.last_attempt_at else "new"


@dataclass(frozen=True)
class TopicCount:
    id: str
    label: str
    recent: int
    total: int


@dataclass(frozen=True)
class DigestSummary:
    week: str
    built_at: datetime | None
    articles: int
    path: str | None
    deliveries: dict[str, int]


@dataclass(frozen=True)
class FetchStats:
    attempts: int
    failures: int
    not_modified: int
    new_articles: int


class OpsMixin:
    # -- scheduler jobs -----------------------------------------------------------------------------

    def plan_jobs(self: "Store", jobs: Iterable[JobPlan]) -> None:
        """Replace the set of scheduled jobs, keeping the last result of those that stay."""
        from . import iso, utcnow

        jobs = list(jobs)
        now = iso(utcnow())
        with self.transaction():
            ids = [j.id for j in jobs]
            marks = ",".join("?" * len(ids))
            self.conn.execute(f"DELETE FROM scheduler_jobs WHERE id NOT IN ({marks})", ids)
            self.conn.executemany(
                "INSERT INTO scheduler_jobs (id, kind, schedule, next_run_at, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET kind = excluded.kind, schedule = excluded.schedule, "
                "next_run_at = excluded.next_run_at, updated_at = excluded.updated_at",
                [(j.id, j.kind, j.schedule, iso(j.next_run_at), now) for j in jobs],
            )

    def set_next_runs(self: "Store", next_runs: dict[str, datetime | None]) -> None:
        from . import iso, utcnow

        now = iso(utcnow())
        with self.transaction():
            self.conn.executemany("UPDATE scheduler_jobs SET next_run_at = ?, updated_at = ? WHERE id = ?",
                                  [(iso(at), now, job_id) for job_id, at in next_runs.items()])

    def record_job_run(self: "Store", job_id: str, at: datetime, status: str, error: str | None = None,
                       duration_ms: int | None = None, next_run_at: datetime | None = None) -> None:
        """Keep a job's last result; `next_run_at` None leaves the planned next run as it was."""
        from . import iso, utcnow

        with self.transaction():
            self.conn.execute(
                "UPDATE scheduler_jobs SET last_run_at = ?, last_status = ?, last_error = ?, last_duration_ms = ?, "
                "next_run_at = COALESCE(?, next_run_at), updated_at = ? WHERE id = ?",
                (iso(at), status, error, duration_ms, iso(next_run_at), iso(utcnow()), job_id),
            )

    def scheduler_jobs(self: "Store") -> list[JobRecord]:
        from . import parse_iso

        rows = self.conn.execute(
            "SELECT * FROM scheduler_jobs ORDER BY CASE kind WHEN 'source' THEN 1 ELSE 0 END, next_run_at IS NULL, "
            "next_run_at, id").fetchall()
        return [JobRecord(r["id"], r["kind"], r["schedule"], parse_iso(r["next_run_at"]), parse_iso(r["last_run_at"]),
                          r["last_status"], r["last_error"], r["last_duration_ms"]) for r in rows]

    # -- source health ------------------------------------------------------------------------------

    def source_health(self: "Store", source_ids: Iterable[str] | None = None) -> list[SourceHealth]:
        """Every source with its state and article count, in id order (or only those named)."""
        from . import parse_iso

        rows = self.conn.execute(
            "SELECT s.*, (SELECT count(*) FROM articles a WHERE a.source_id = s.id) AS articles "
            "FROM sources s ORDER BY s.id").fetchall()
        wanted = set(source_ids) if source_ids is not None else None
        return [
            SourceHealth(
                id=r["id"], name=r["name"], enabled=bool(r["enabled"]), disabled_reason=r["disabled_reason"],
                last_attempt_at=parse_iso(r["last_attempt_at"]), last_ok_at=parse_iso(r["last_ok_at"]),
                last_new_at=parse_iso(r["last_new_at"]), failing_since=parse_iso(r["failing_since"]),
                consecutive_failures=r["consecutive_failures"], last_reason=r["last_reason"],
                last_error=r["last_error"], next_attempt_at=parse_iso(r["next_attempt_at"]),
                created_at=parse_iso(r["created_at"]), articles=r["articles"],
            )
            for r in rows if wanted is None or r["id"] in wanted
        ]

    def fetch_stats(self: "Store", since: datetime) -> FetchStats:
        from . import iso

        row = self.conn.execute(
            "SELECT count(*), count(reason), sum(status = 304), coalesce(sum(new_count), 0) "
            "FROM fetch_log WHERE started_at >= ?", (iso(since),)).fetchone()
        return FetchStats(row[0], row[1], row[2] or 0, row[3])

    # -- topics -------------------------------------------------------------------------------------

    def topic_counts(self: "Store", since: datetime) -> list[TopicCount]:
        """Active topics in digest order with their articles published since `since`, and in all."""
        from . import iso

        rows = self.conn.execute(
            "SELECT t.id, t.label, "
            "(SELECT count(*) FROM article_topics at JOIN articles a ON a.id = at.article_id "
            " WHERE at.topic_id = t.id AND a.published_at >= ?) AS recent, "
            "(SELECT count(*) FROM article_topics at WHERE at.topic_id = t.id) AS total "
            "FROM topics t WHERE t.active = 1 ORDER BY t.position, t.id", (iso(since),)).fetchall()
        return [TopicCount(r["id"], r["label"], r["recent"], r["total"]) for r in rows]

    # -- digests ------------------------------------------------------------------------------------

    def delivery_counts(self: "Store", week: str) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT status, count(*) FROM deliveries WHERE week = ? GROUP BY status ORDER BY status", (week,),
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def last_digest(self: "Store") -> DigestSummary | None:
        """The most recent week that was built or delivered, with its delivery counts by status."""
        from . import parse_iso

        row = self.conn.execute(
            "SELECT w.week, d.built_at, d.articles, d.path FROM "
            "(SELECT week FROM digests UNION SELECT week FROM deliveries) w "
            "LEFT JOIN digests d ON d.week = w.week ORDER BY w.week DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return DigestSummary(row["week"], parse_iso(row["built_at"]), row["articles"] or 0, row["path"],
                             self.delivery_counts(row["week"]))

    # -- maintenance --------------------------------------------------------------------------------

    def database_size(self: "Store") -> int:
        """Bytes on disk, the write-ahead log included (it can hold many pages between checkpoints)."""
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += os.path.getsize(self.path + suffix)
            except OSError:
                pass
        return total

    def optimize(self: "Store") -> None:
        with self._lock:
            self.conn.execute("PRAGMA optimize")

    def backup_to(self: "Store", target: Path) -> None:
        """Copy the live database with SQLite's online backup API (a consistent snapshot, writers continue)."""
        from ..errors import StoreError

        try:
            dest = sqlite3.connect(target)
            try:
                with self._lock:
                    self.conn.backup(dest)
                check = dest.execute("PRAGMA quick_check").fetchone()[0]
            finally:
                dest.close()
        except sqlite3.Error as e:
            raise StoreError(f"database {self.path}: backup to {target} failed: {e} "
                             "(check free disk space and permissions of the backups folder)") from e
        if check != "ok":
            raise StoreError(f"database {self.path}: the backup {target} fails its integrity check: {check}")
