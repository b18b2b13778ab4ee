"""Storage of the digest domain: the week's tagged articles, built digests, and deliveries.

The deliveries table is the single source of truth of who has been served for a week: a row is
committed as 'sending' before the SMTP DATA command and as 'sent' after the server's 250, so a rerun
after a crash knows exactly who to skip (see `veille.mail`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import Store

DeliveryStatus = str  # 'pending', 'sending', 'sent', 'written', 'failed', 'bounced', 'empty'


@dataclass(frozen=True)
class DeliveryState:
    week: str
    member_id: int
    status: DeliveryStatus
    message_id: str | None
    attempts: int
    error: str | None
    articles: int
    updated_at: datetime


class DigestsMixin:
    # -- the week's content -------------------------------------------------------------------------

    def digest_topics(self: "Store") -> list[sqlite3.Row]:
        """Active topics in topics.yaml order (id, label, position)."""
        return self.conn.execute(
            "SELECT id, label, position FROM topics WHERE active = 1 ORDER BY position, id").fetchall()

    def week_articles(self: "Store", start: datetime, end: datetime, lead_chars: int = 2000) -> list[sqlite3.Row]:
        """Articles published in [start, end) that carry at least one active topic.

        Only the first `lead_chars` of the text come back: the digest needs the lead, not the body.
        """
        from . import iso

        return self.conn.execute(
            "SELECT a.id, a.source_id, s.name AS source_name, a.url, a.title, a.summary, "
            "substr(a.text, 1, ?) AS lead, a.published_at, a.cluster_id FROM articles a "
            "JOIN sources s ON s.id = a.source_id "
            "WHERE a.published_at >= ? AND a.published_at < ? AND EXISTS ("
            "  SELECT 1 FROM article_topics t JOIN topics p ON p.id = t.topic_id "
            "  WHERE t.article_id = a.id AND p.active = 1) "
            "ORDER BY a.published_at, a.id",
            (lead_chars, iso(start), iso(end)),
        ).fetchall()

    def week_tags(self: "Store", start: datetime, end: datetime) -> list[sqlite3.Row]:
        """(article_id, topic_id, score, hits JSON) of the articles published in [start, end)."""
        from . import iso

        return self.conn.execute(
            "SELECT t.article_id, t.topic_id, t.score, t.hits FROM article_topics t "
            "JOIN articles a ON a.id = t.article_id JOIN topics p ON p.id = t.topic_id "
            "WHERE a.published_at >= ? AND a.published_at < ? AND p.active = 1",
            (iso(start), iso(end)),
        ).fetchall()

    def week_topic_counts(self: "Store", start: datetime, end: datetime) -> dict[str, int]:
        """Articles per topic published in [start, end) (the week-on-week change of each section)."""
        from . import iso

        rows = self.conn.execute(
            "SELECT t.topic_id, count(*) FROM article_topics t JOIN articles a ON a.id = t.article_id "
            "WHERE a.published_at >= ? AND a.published_at < ? GROUP BY t.topic_id",
            (iso(start), iso(end)),
        )
        return {r[0]: r[1] for r in rows}

    def record_digest(self: "Store", week: str, built_at: datetime, articles: int, path: str) -> None:
        from . import iso

        with self.transaction():
            self.conn.execute(
                "INSERT INTO digests (week, built_at, articles, path) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(week) DO UPDATE SET built_at = excluded.built_at, articles = excluded.articles, "
                "path = excluded.path",
                (week, iso(built_at), articles, path),
            )

    # -- deliveries ---------------------------------------------------------------------------------

    def delivery_states(self: "Store", week: str) -> dict[int, DeliveryState]:
        from . import parse_iso

        rows = self.conn.execute("SELECT * FROM deliveries WHERE week = ?", (week,)).fetchall()
        return {
            r["member_id"]: DeliveryState(
                week=r["week"], member_id=r["member_id"], status=r["status"], message_id=r["message_id"],
                attempts=r["attempts"], error=r["error"], articles=r["articles"],
                updated_at=parse_iso(r["updated_at"]),
            )
            for r in rows
        }

    def set_delivery(
        self: "Store", week: str, member_id: int, status: DeliveryStatus, *, message_id: str | None = None,
        articles: int | None = None, error: str | None = None, attempt: bool = False,
    ) -> None:
        """Upsert one (week, member) row and commit at once: each step of a delivery must survive a crash.

        `attempt` counts one more SMTP transaction; `message_id` and `articles` are kept when None.
        """
        from . import iso, utcnow

        with self.transaction():
            self.conn.execute(
                "INSERT INTO deliveries (week, member_id, status, message_id, attempts, error, articles, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(week, member_id) DO UPDATE SET status = excluded.status, "
                "message_id = COALESCE(excluded.message_id, message_id), "
                "attempts = attempts + excluded.attempts, error = excluded.error, "
                "articles = CASE WHEN ? THEN excluded.articles ELSE articles END, "
                "updated_at = excluded.updated_at",
                (week, member_id, status, message_id, int(attempt), error, articles or 0, iso(utcnow()),
                 int(articles is not None)),
            )

    def set_deliveries(self: "Store", week: str, rows: list[tuple[int, DeliveryStatus, str | None, int]]) -> None:
        """Record many (member_id, status, message_id, articles) in one transaction (outbox runs)."""
        from . import iso, utcnow

        now = iso(utcnow())
        with self.transaction():
            self.conn.executemany(
                "INSERT INTO deliveries (week, member_id, status, message_id, attempts, error, articles, "
                "updated_at) VALUES (?, ?, ?, ?, 0, NULL, ?, ?) "
                "ON CONFLICT(week, member_id) DO UPDATE SET status = excluded.status, "
                "message_id = COALESCE(excluded.message_id, message_id), error = NULL, "
                "articles = excluded.articles, updated_at = excluded.updated_at",
                [(week, member_id, status, message_id, articles, now) for member_id, status, message_id, articles in rows],
            )

    def claim_delivery(self: "Store", week: str, member_id: int, message_id: str, articles: int,
                       *, retry_uncertain: bool = False) -> bool:
        """Mark the delivery 'sending' unless it is already done or in flight; commit before any DATA.

        A compare-and-set in one write transaction, so two senders running at once never both claim a
        member. 'sending' found here means a crash (or another sender) left it ambiguous: claimed again
        only with `retry_uncertain`.
        """
        from . import iso, utcnow

        with self.transaction():
            row = self.conn.execute("SELECT status FROM deliveries WHERE week = ? AND member_id = ?",
                                    (week, member_id)).fetchone()
            if row is not None and (row["status"] in ("sent", "bounced")
                                    or (row["status"] == "sending" and not retry_uncertain)):
                return False
            self.conn.execute(
                "INSERT INTO deliveries (week, member_id, status, message_id, attempts, error, articles, "
                "updated_at) VALUES (?, ?, 'sending', ?, 1, NULL, ?, ?) "
                "ON CONFLICT(week, member_id) DO UPDATE SET status = 'sending', message_id = excluded.message_id, "
                "attempts = attempts + 1, error = NULL, articles = excluded.articles, updated_at = excluded.updated_at",
                (week, member_id, message_id, articles, iso(utcnow())),
            )
            return True

    def delivery_rows(self: "Store", week: str) -> list[sqlite3.Row]:
        """Deliveries of a week with the member's email, for reports."""
        return self.conn.execute(
            "SELECT d.*, m.email FROM deliveries d JOIN members m ON m.id = d.member_id WHERE d.week = ? "
            "ORDER BY m.email", (week,)).fetchall()
