"""Storage of the archive domain: the analysts' read-only queries (search, weekly counts, exports, schema).

Analysts' commands open the store read-only, so nothing here writes. Filters are built from fixed SQL
fragments with `?` placeholders only; ids and dates are always parameters.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

from ..errors import StoreError

if TYPE_CHECKING:
    from . import Store


@dataclass(frozen=True)
class ArticleFilter:
    """Which articles an analyst's command looks at; times are the archive's UTC ISO text."""

    topics: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    """Exclusive upper bound."""

    def where(self, article: str = "a") -> tuple[str, list[object]]:
        """SQL conditions on the articles alias `article`, and their parameters."""
        clauses: list[str] = []
        params: list[object] = []
        if self.topics:
            marks = ",".join("?" * len(self.topics))
            clauses.append(f"{article}.id IN (SELECT article_id FROM article_topics WHERE topic_id IN ({marks}))")
            params.extend(self.topics)
        if self.sources:
            marks = ",".join("?" * len(self.sources))
            clauses.append(f"{article}.source_id IN ({marks})")
            params.extend(self.sources)
        if self.since:
            clauses.append(f"{article}.published_at >= ?")
            params.append(self.since)
        if self.until:
            clauses.append(f"{article}.published_at < ?")
            params.append(self.until)
        return (" AND ".join(clauses) or "1"), params

    def id_set(self) -> tuple[str, list[object]]:
        """A SELECT of the ids of matching articles that reads covering indexes only ('' if no filter).

        Topic and date filters read topic_article_weeks, source and date filters the
        (source_id, published_at) index: no article row is touched, which matters when a filter keeps
        thousands of articles.
        """
        dates, date_params = [], []
        if self.since:
            dates.append("published_at >= ?")
            date_params.append(self.since)
        if self.until:
            dates.append("published_at < ?")
            date_params.append(self.until)
        parts: list[str] = []
        params: list[object] = []
        if self.topics:
            marks = ",".join("?" * len(self.topics))
            parts.append(f"SELECT article_id FROM topic_article_weeks WHERE topic_id IN ({marks})"
                         + "".join(f" AND {d}" for d in dates))
            params += [*self.topics, *date_params]
        if self.sources:
            marks = ",".join("?" * len(self.sources))
            parts.append(f"SELECT id FROM articles WHERE source_id IN ({marks})" + "".join(f" AND {d}" for d in dates))
            params += [*self.sources, *date_params]
        if not parts and dates:
            parts.append("SELECT id FROM articles WHERE " + " AND ".join(dates))
            params += date_params
        return " INTERSECT ".join(parts), params


EXPORT_COLUMNS = (
    "article_id", "published_at", "week", "source_id", "source_name", "title", "url", "author", "lang",
    "topics", "topic_labels", "cluster_id", "cluster_size", "summary", "text",
)


class ArchiveMixin:
    @contextmanager
    def read_snapshot(self: "Store") -> Iterator[None]:
        """Several SELECTs that see one state of the archive, though the scheduler commits meanwhile.

        A deferred BEGIN on the read-only connection pins the WAL snapshot until the end of the block;
        it never takes a write lock, so the scheduler is not held up.
        """
        with self._lock:
            if self.conn.in_transaction:
                yield
                return
            self.conn.execute("BEGIN DEFERRED")
            try:
                yield
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("COMMIT")

    # -- lookups ------------------------------------------------------------------------------------

    def topic_labels(self: "Store", topic_ids: Sequence[str] = ()) -> dict[str, str]:
        """Labels of the named topics (any state), or of every active topic; in digest order."""
        if topic_ids:
            marks = ",".join("?" * len(topic_ids))
            rows = self.query(f"SELECT id, label FROM topics WHERE id IN ({marks}) ORDER BY position, id",
                              tuple(topic_ids))
        else:
            rows = self.query("SELECT id, label FROM topics WHERE active = 1 ORDER BY position, id")
        return {r["id"]: r["label"] for r in rows}

    def known_source_ids(self: "Store", source_ids: Sequence[str]) -> set[str]:
        marks = ",".join("?" * len(source_ids))
        return {r[0] for r in self.query(f"SELECT id FROM sources WHERE id IN ({marks})", tuple(source_ids))}

    # -- search -------------------------------------------------------------------------------------

    def search_ranked(self: "Store", match: str, where: ArticleFilter, limit: int, offset: int,
                      weights: tuple[float, float, float]) -> list[tuple[int, float]]:
        """(article id, bm25) of the best full-text matches, best first.

        Only ids and ranks go through the sort (texts of every match would make a common word cost as
        much as reading the archive). Filters are a `+rowid IN (...)` set: the unary plus keeps SQLite
        from handing it to FTS5 as rowid lookups, which would rerun the whole query once per article.
        """
        ids, params = where.id_set()
        restrict = f"AND +f.rowid IN ({ids}) " if ids else ""
        sql = (
            "SELECT f.rowid, bm25(articles_fts, ?, ?, ?) AS rank FROM articles_fts f "
            f"WHERE articles_fts MATCH ? {restrict}ORDER BY rank, f.rowid LIMIT ? OFFSET ?"
        )
        try:
            rows = self.conn.execute(sql, (*weights, match, *params, limit, offset)).fetchall()
        except sqlite3.OperationalError as e:
            raise StoreError(f"database {self.path}: full-text search failed: {e}") from e
        return [(r[0], r[1]) for r in rows]

    def search_count(self: "Store", match: str, where: ArticleFilter) -> int:
        """How many articles the full-text expression selects (a superset of exact matches)."""
        ids, params = where.id_set()
        restrict = f"AND +f.rowid IN ({ids})" if ids else ""
        try:
            return self.conn.execute(
                f"SELECT count(*) FROM articles_fts f WHERE articles_fts MATCH ? {restrict}",
                (match, *params)).fetchone()[0]
        except sqlite3.OperationalError as e:
            raise StoreError(f"database {self.path}: full-text search failed: {e}") from e

    def articles_by_id(self: "Store", ids: Sequence[int]) -> dict[int, sqlite3.Row]:
        """Title, summary, text, source and topics of these articles (for result pages and snippets)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.query(
            "SELECT a.id, a.title, a.summary, a.text, a.url, a.published_at, a.source_id, "
            "s.name AS source_name, a.cluster_id, "
            "(SELECT group_concat(id, ';') FROM (SELECT t.id FROM article_topics x JOIN topics t "
            "  ON t.id = x.topic_id WHERE x.article_id = a.id ORDER BY t.position)) AS topics "
            f"FROM articles a JOIN sources s ON s.id = a.source_id WHERE a.id IN ({marks})", tuple(ids))
        return {r["id"]: r for r in rows}

    # -- trends -------------------------------------------------------------------------------------

    def weekly_topic_counts(self: "Store", topic_ids: Sequence[str], weeks: Sequence[str]) -> list[tuple[str, str, int]]:
        """(topic id, ISO week, articles) for every pair of `topic_ids` x `weeks`, zeros included.

        One count per pair on the (topic_id, week) key of `topic_article_weeks`: a tight index range
        per pair, cheaper than grouping every tag of the period.
        """
        rows = self.query(
            "SELECT t.value, w.value, (SELECT count(*) FROM topic_article_weeks c "
            "WHERE c.topic_id = t.value AND c.week = w.value) FROM json_each(?) t, json_each(?) w",
            (json.dumps(list(topic_ids)), json.dumps(list(weeks))))
        return [(r[0], r[1], r[2]) for r in rows]

    # -- export -------------------------------------------------------------------------------------

    def export_batches(self: "Store", where: ArticleFilter, with_text: bool = True,
                       size: int = 1000) -> Iterator[list[tuple]]:
        """Rows of `EXPORT_COLUMNS` (without summary/text if asked), oldest first, `size` at a time."""
        condition, params = where.where("a")
        columns = "o.*, a.summary, a.text" if with_text else "o.*"
        cursor = self.conn.execute(
            f"SELECT {columns} FROM articles a JOIN articles_overview o ON o.article_id = a.id "
            f"WHERE {condition} ORDER BY a.published_at, a.id", params)
        cursor.row_factory = None
        try:
            while True:
                batch = cursor.fetchmany(size)
                if not batch:
                    return
                yield batch
        finally:
            cursor.close()

    # -- schema -------------------------------------------------------------------------------------

    def schema_objects(self: "Store") -> dict[str, tuple[str, list[str]]]:
        """Every table and view analysts see: name -> (kind, columns), FTS shadow tables left out."""
        rows = self.query(
            "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")
        names = {r["name"] for r in rows}
        shadow = {f"{n}_{suffix}" for n in names for suffix in ("data", "idx", "content", "docsize", "config")}
        objects: dict[str, tuple[str, list[str]]] = {}
        for r in rows:
            if r["name"] in shadow:
                continue
            columns = [c["name"] for c in self.query("SELECT name FROM pragma_table_info(?)", (r["name"],))]
            objects[r["name"]] = (r["type"], columns)
        return objects
