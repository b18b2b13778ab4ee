"""Storage of the topics domain: topics and their rule versions, article tags, the full-text index.

`articles_fts` (migration 6) is an external-content FTS5 table over `articles`: the topic engine uses it
to find candidate articles for a rule (retag, preview) and the analysts' search ranks with it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

from ..errors import StoreError

if TYPE_CHECKING:
    from . import Store

ALL_TOPICS = "*"
"""`article_tagging.topic_id` of the one row per article that says which topic set tagged it."""


@dataclass(frozen=True)
class TopicState:
    """A topic as the archive knows it: current rule and the rule the archive was last tagged with."""

    id: str
    label: str
    position: int
    rule_hash: str
    tagged_hash: str | None
    active: bool
    rule_json: str
    updated_at: str


def _chunks(items: Sequence, size: int = 500) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class TopicsMixin:
    # -- topics and versions ------------------------------------------------------------------------

    def topic_states(self: "Store") -> dict[str, TopicState]:
        rows = self.conn.execute(
            "SELECT id, label, position, rule_hash, tagged_hash, active, rule_json, updated_at FROM topics "
            "ORDER BY position, id").fetchall()
        return {r["id"]: TopicState(r["id"], r["label"], r["position"], r["rule_hash"], r["tagged_hash"],
                                    bool(r["active"]), r["rule_json"], r["updated_at"]) for r in rows}

    def save_topics(self: "Store", topics: Sequence[tuple[str, str, str, str]], now: str) -> list[str]:
        """Upsert (id, label, rule_hash, rule_json) in digest order; retire the topics not listed.

        A retired topic loses its tags (digests must not show a section that no longer exists) and its
        `tagged_hash`, so adding it back re-tags the archive. Returns the retired ids.
        """
        with self.transaction():
            for position, (topic_id, label, rule_hash, rule_json) in enumerate(topics):
                self.conn.execute(
                    "INSERT INTO topics (id, label, position, rule_hash, rule_json, active, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, 1, ?) ON CONFLICT(id) DO UPDATE SET label = excluded.label, "
                    "position = excluded.position, active = 1, "
                    "updated_at = CASE WHEN topics.rule_hash = excluded.rule_hash AND topics.active = 1 "
                    "  THEN topics.updated_at ELSE excluded.updated_at END, "
                    "rule_hash = excluded.rule_hash, rule_json = excluded.rule_json",
                    (topic_id, label, position, rule_hash, rule_json, now),
                )
                self.conn.execute(
                    "INSERT OR IGNORE INTO topic_versions (topic_id, rule_hash, rule_json, created_at) "
                    "VALUES (?, ?, ?, ?)", (topic_id, rule_hash, rule_json, now))
            keep = [t[0] for t in topics]
            marks = ",".join("?" * len(keep))
            retired = [r[0] for r in self.conn.execute(
                f"SELECT id FROM topics WHERE active = 1 AND id NOT IN ({marks})", keep)]
            for topic_id in retired:
                self.conn.execute("UPDATE topics SET active = 0, tagged_hash = NULL, updated_at = ? WHERE id = ?",
                                  (now, topic_id))
                self.conn.execute("DELETE FROM article_topics WHERE topic_id = ?", (topic_id,))
        return retired

    def topic_versions(self: "Store", topic_id: str) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT rule_hash, rule_json, created_at FROM topic_versions WHERE topic_id = ? "
            "ORDER BY created_at, rule_hash", (topic_id,)).fetchall()

    def mark_topic_tagged(self: "Store", topic_id: str, rule_hash: str) -> None:
        self.conn.execute("UPDATE topics SET tagged_hash = ? WHERE id = ?", (rule_hash, topic_id))

    # -- article texts --------------------------------------------------------------------------------

    def article_texts(self: "Store", ids: Sequence[int]) -> list[sqlite3.Row]:
        """(id, title, summary, text, published_at) of these articles, in id order."""
        out: list[sqlite3.Row] = []
        for chunk in _chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            out.extend(self.conn.execute(
                f"SELECT id, title, summary, text, published_at FROM articles WHERE id IN ({marks}) ORDER BY id",
                list(chunk)))
        return out

    def untagged_article_ids(self: "Store") -> list[int]:
        """Articles the tagger never saw (stored, then the process stopped before tagging)."""
        return [r[0] for r in self.conn.execute(
            "SELECT a.id FROM articles a WHERE NOT EXISTS (SELECT 1 FROM article_tagging t "
            "WHERE t.article_id = a.id AND t.topic_id = ?) ORDER BY a.id", (ALL_TOPICS,))]

    def mark_all_tagged(self: "Store", tagger_hash: str) -> None:
        """Record that every article went through the topic set `tagger_hash` (after a full re-tag)."""
        self.conn.execute(
            "INSERT OR REPLACE INTO article_tagging (article_id, topic_id, rule_hash) "
            "SELECT id, ?, ? FROM articles", (ALL_TOPICS, tagger_hash))

    # -- tags ---------------------------------------------------------------------------------------

    def store_article_tags(self: "Store", article_ids: Sequence[int],
                           tags: Sequence[tuple[int, str, int, str, str]], tagger_hash: str, now: str) -> None:
        """Make these articles' tags exactly `tags` (article_id, topic_id, score, hits JSON, rule_hash).

        Tags that stay are updated in place, so the per-week table kept by triggers is not churned.
        """
        wanted = {(t[0], t[1]) for t in tags}
        with self.transaction():
            stale = []
            for chunk in _chunks(list(article_ids)):
                marks = ",".join("?" * len(chunk))
                stale.extend((r[0], r[1]) for r in self.conn.execute(
                    f"SELECT article_id, topic_id FROM article_topics WHERE article_id IN ({marks})", list(chunk))
                    if (r[0], r[1]) not in wanted)
            self.conn.executemany("DELETE FROM article_topics WHERE article_id = ? AND topic_id = ?", stale)
            self._upsert_tags([(*t, now) for t in tags])
            for chunk in _chunks([(i, ALL_TOPICS, tagger_hash) for i in article_ids], 300):
                self.conn.execute("INSERT OR REPLACE INTO article_tagging (article_id, topic_id, rule_hash) VALUES "
                                  + ",".join(["(?, ?, ?)"] * len(chunk)), [v for row in chunk for v in row])

    def _upsert_tags(self: "Store", rows: Sequence[tuple[int, str, int, str, str, str]]) -> None:
        """Insert or update article_topics rows (article_id, topic_id, score, hits, rule_hash, tagged_at),
        150 to a statement: the same rows as one statement each, 8 % less storing time on a cold pass
        (the per-week trigger still runs once per row)."""
        for chunk in _chunks(rows, 150):
            self.conn.execute(
                "INSERT INTO article_topics (article_id, topic_id, score, hits, rule_hash, tagged_at) VALUES "
                + ",".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
                + " ON CONFLICT(article_id, topic_id) DO UPDATE SET score = excluded.score, hits = excluded.hits, "
                "rule_hash = excluded.rule_hash, tagged_at = excluded.tagged_at", [v for row in chunk for v in row])

    def replace_topic_tags(self: "Store", topic_id: str, tags: Sequence[tuple[int, int, str, str]],
                           lost: Iterable[int], now: str) -> None:
        """One topic's tags after a re-tag: upsert (article_id, score, hits JSON, rule_hash), drop `lost`."""
        with self.transaction():
            self.conn.executemany("DELETE FROM article_topics WHERE article_id = ? AND topic_id = ?",
                                  [(i, topic_id) for i in lost])
            self._upsert_tags([(a, topic_id, s, h, r, now) for a, s, h, r in tags])

    def topic_article_ids(self: "Store", topic_id: str, since: datetime | None = None) -> set[int]:
        from . import iso

        if since is None:
            rows = self.conn.execute("SELECT article_id FROM article_topics WHERE topic_id = ?", (topic_id,))
        else:
            rows = self.conn.execute(
                "SELECT t.article_id FROM article_topics t JOIN articles a ON a.id = t.article_id "
                "WHERE t.topic_id = ? AND a.published_at >= ?", (topic_id, iso(since)))
        return {r[0] for r in rows}

    def article_tags(self: "Store", article_id: int) -> list[sqlite3.Row]:
        """(topic_id, score, hits, rule_hash, tagged_at) of one article, in digest order."""
        return self.conn.execute(
            "SELECT t.topic_id, t.score, t.hits, t.rule_hash, t.tagged_at FROM article_topics t "
            "LEFT JOIN topics p ON p.id = t.topic_id WHERE t.article_id = ? ORDER BY p.position, t.topic_id",
            (article_id,)).fetchall()

    def tagged_briefs(self: "Store", topic_id: str, ids: Sequence[int]) -> list[sqlite3.Row]:
        """(id, title, published_at, score, hits) of these articles as the stored rule tagged them."""
        out: list[sqlite3.Row] = []
        for chunk in _chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            out.extend(self.conn.execute(
                f"SELECT a.id, a.title, a.published_at, t.score, t.hits FROM articles a "
                f"JOIN article_topics t ON t.article_id = a.id AND t.topic_id = ? WHERE a.id IN ({marks})",
                [topic_id, *chunk]))
        return out

    def topic_recent_counts(self: "Store", since: datetime) -> dict[str, int]:
        """Articles per topic published since `since` (every topic with at least one)."""
        from . import iso

        rows = self.conn.execute(
            "SELECT t.topic_id, count(*) FROM article_topics t JOIN articles a ON a.id = t.article_id "
            "WHERE a.published_at >= ? GROUP BY t.topic_id", (iso(since),))
        return {r[0]: r[1] for r in rows}

    # -- samples for suggestions ---------------------------------------------------------------------

    def topic_sample(self: "Store", topic_id: str, limit: int, text_chars: int) -> list[sqlite3.Row]:
        """The topic's most recent articles: (title, summary, beginning of the text)."""
        return self.conn.execute(
            "SELECT a.title, a.summary, substr(a.text, 1, ?) AS text FROM article_topics t "
            "JOIN articles a ON a.id = t.article_id WHERE t.topic_id = ? ORDER BY a.published_at DESC LIMIT ?",
            (text_chars, topic_id, limit)).fetchall()

    def background_sample(self: "Store", topic_id: str, limit: int, text_chars: int) -> list[sqlite3.Row]:
        """Articles without the topic, spread over the archive by a fixed hash of their id (repeatable)."""
        return self.conn.execute(
            "SELECT a.title, a.summary, substr(a.text, 1, ?) AS text FROM articles a "
            "WHERE NOT EXISTS (SELECT 1 FROM article_topics t WHERE t.article_id = a.id AND t.topic_id = ?) "
            "ORDER BY (a.id * 2654435761) % 4294967296 LIMIT ?",
            (text_chars, topic_id, limit)).fetchall()

    # -- full-text index ------------------------------------------------------------------------------

    def fts_articles(self: "Store", match: str, since: datetime | None = None) -> list[sqlite3.Row]:
        """Articles matching an FTS5 expression (see `veille.query.to_fts`), oldest first, with their text."""
        from . import iso

        sql = ("SELECT a.id, a.title, a.summary, a.text, a.published_at FROM articles_fts f "
               "JOIN articles a ON a.id = f.rowid WHERE articles_fts MATCH ?")
        params: list = [match]
        if since is not None:
            sql += " AND a.published_at >= ?"
            params.append(iso(since))
        try:
            return self.conn.execute(sql + " ORDER BY a.id", params).fetchall()
        except sqlite3.OperationalError as e:
            raise StoreError(f"database {self.path}: full-text query {match!r} failed: {e}") from e

    def fts_ids(self: "Store", match: str) -> set[int]:
        """Ids of the articles matching an FTS5 expression (index only, no text read)."""
        try:
            return {r[0] for r in self.conn.execute("SELECT rowid FROM articles_fts WHERE articles_fts MATCH ?",
                                                    (match,))}
        except sqlite3.OperationalError as e:
            raise StoreError(f"database {self.path}: full-text query {match!r} failed: {e}") from e

    def published_since(self: "Store", since: datetime) -> dict[int, str]:
        """article id -> published_at of the articles published since `since`."""
        from . import iso

        return {r[0]: r[1] for r in self.conn.execute(
            "SELECT id, published_at FROM articles WHERE published_at >= ?", (iso(since),))}

    def fts_count(self: "Store", match: str) -> int:
        try:
            return self.conn.execute("SELECT count(*) FROM articles_fts WHERE articles_fts MATCH ?",
                                     (match,)).fetchone()[0]
        except sqlite3.OperationalError as e:
            raise StoreError(f"database {self.path}: full-text query {match!r} failed: {e}") from e

    def fts_check(self: "Store") -> None:
        """Raise StoreError if the full-text index disagrees with the articles (FTS5 integrity-check)."""
        try:
            self.conn.execute("INSERT INTO articles_fts (articles_fts, rank) VALUES ('integrity-check', 1)")
        except sqlite3.DatabaseError as e:
            raise StoreError(f"database {self.path}: the full-text index is out of step ({e}); "
                             "rebuild it (Store.fts_rebuild)") from e

    def fts_rebuild(self: "Store") -> None:
        """Rebuild the full-text index from the articles (after a restore or a write that bypassed triggers)."""
        with self.transaction():
            self.conn.execute("INSERT INTO articles_fts (articles_fts) VALUES ('rebuild')")
