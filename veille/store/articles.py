"""Storage of sources, articles, clusters, the fetch log and the HTTP cache (the ingestion domain)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from ..types import Article, Entry, Source

if TYPE_CHECKING:
    from . import Store
    from .clusters import ClusterIndex


@dataclass(frozen=True)
class SourceState:
    """What the store remembers of a source between passes."""

    id: str
    current_url: str
    enabled: bool
    disabled_reason: str | None
    consecutive_failures: int
    failing_since: datetime | None
    next_attempt_at: datetime | None
    last_ok_at: datetime | None
    last_error: str | None
    last_reason: str | None


@dataclass(frozen=True)
class CacheEntry:
    etag: str | None
    last_modified: str | None


@dataclass(frozen=True)
class FetchLog:
    source_id: str
    url: str
    started_at: datetime
    duration_ms: int
    status: int | None = None
    bytes: int = 0
    new_count: int = 0
    updated_count: int = 0
    reason: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class SourceBatch:
    """What one source's pass stores: its articles (new, changed or seen again), the fetch log line,
    the HTTP validators to keep (url, etag, last_modified), and what the feed says of itself."""

    source_id: str
    articles: Sequence[Article]
    log: FetchLog
    cache: Sequence[tuple[str, str | None, str | None]] = ()
    title: str | None = None
    moved_to: str | None = None
    keep_same_title: bool = False
    """Leave an article the source already stored under the same title as it is: a feed-only pass
    must not replace the page's full text with the feed's copy, nor re-tag what did not change."""


@dataclass(frozen=True)
class SaveResult:
    new_ids: tuple[int, ...]
    updated_ids: tuple[int, ...]
    outcomes: tuple[tuple[int, str], ...] = ()
    """(article id, "new" | "updated" | "same") for each article given, in order."""


class ArticlesMixin:
    # -- sources ------------------------------------------------------------------------------------

    def sync_sources(self: "Store", sources: Iterable[Source]) -> None:
        """Insert new sources and refresh name/type/url of known ones; their state is kept.

        A source whose configured URL changed is fetched from the new URL (staff fixed it); one whose
        URL is unchanged keeps the URL a permanent redirect gave it.
        """
        from . import iso, utcnow

        now = iso(utcnow())
        wanted = list({s.id: s for s in sources}.values())
        with self.transaction():
            known: dict[str, sqlite3.Row] = {}
            for chunk in _chunks([s.id for s in wanted]):
                for row in self.conn.execute("SELECT id, name, type, url, enabled, disabled_reason FROM sources "
                                             f"WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                    known[row["id"]] = row
            inserts, updates = [], []
            for s in wanted:
                row = known.get(s.id)
                if row is None:
                    inserts.append((s.id, s.name, s.type, s.url, s.url, int(s.enabled),
                                    None if s.enabled else "disabled in sources.yaml", now, now))
                    continue
                gone = (row["disabled_reason"] or "").startswith("410")
                url_changed = row["url"] != s.url
                enabled = s.enabled and (not gone or url_changed)
                reason = None if enabled else ("disabled in sources.yaml" if not s.enabled else row["disabled_reason"])
                if (row["name"], row["type"], row["url"], bool(row["enabled"]), row["disabled_reason"]) != (
                        s.name, s.type, s.url, enabled, reason):  # a pass over an unchanged file writes nothing
                    updates.append((s.name, s.type, s.url, int(enabled), reason, int(url_changed), s.url, now, s.id))
            self.conn.executemany(
                "INSERT INTO sources (id, name, type, url, current_url, enabled, disabled_reason, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", inserts)
            self.conn.executemany(
                "UPDATE sources SET name = ?, type = ?, url = ?, enabled = ?, disabled_reason = ?, "
                "current_url = CASE WHEN ? THEN ? ELSE current_url END, updated_at = ? WHERE id = ?", updates)

    def source_state(self: "Store", source_id: str) -> SourceState | None:
        return self.source_states([source_id]).get(source_id)

    def source_states(self: "Store", source_ids: Sequence[str]) -> dict[str, SourceState]:
        """`source_state` of many sources in a few queries (a pass reads them all as it starts)."""
        from . import parse_iso

        states = {}
        for chunk in _chunks(list(dict.fromkeys(source_ids))):
            for row in self.conn.execute(f"SELECT * FROM sources WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                states[row["id"]] = SourceState(
                    id=row["id"], current_url=row["current_url"], enabled=bool(row["enabled"]),
                    disabled_reason=row["disabled_reason"], consecutive_failures=row["consecutive_failures"],
                    failing_since=parse_iso(row["failing_since"]), next_attempt_at=parse_iso(row["next_attempt_at"]),
                    last_ok_at=parse_iso(row["last_ok_at"]), last_error=row["last_error"],
                    last_reason=row["last_reason"],
                )
        return states

    def _mark_source_ok(self: "Store", source_id: str, at: datetime, new: int, title: str | None,
                        moved_to: str | None) -> None:
        from . import iso

        self.conn.execute(
            "UPDATE sources SET last_attempt_at = ?, last_ok_at = ?, failing_since = NULL, "
            "consecutive_failures = 0, last_error = NULL, last_reason = NULL, next_attempt_at = NULL, "
            "last_new_at = CASE WHEN ? > 0 THEN ? ELSE last_new_at END, "
            "title = COALESCE(?, title), current_url = COALESCE(?, current_url), updated_at = ? WHERE id = ?",
            (iso(at), iso(at), new, iso(at), title, moved_to, iso(at), source_id),
        )

    def record_failure(self: "Store", log: FetchLog, next_attempt_at: datetime | None,
                       disable: str | None = None) -> None:
        """Keep the failure on the source row (reason, since when, next attempt) and in the fetch log."""
        from . import iso

        with self.transaction():
            self._insert_log(log)
            self.conn.execute(
                "UPDATE sources SET last_attempt_at = ?, failing_since = COALESCE(failing_since, ?), "
                "consecutive_failures = consecutive_failures + 1, last_error = ?, last_reason = ?, "
                "next_attempt_at = ?, enabled = CASE WHEN ? IS NULL THEN enabled ELSE 0 END, "
                "disabled_reason = COALESCE(?, disabled_reason), updated_at = ? WHERE id = ?",
                (iso(log.started_at), iso(log.started_at), log.error, log.reason, iso(next_attempt_at),
                 disable, disable, iso(log.started_at), log.source_id),
            )

    def record_not_modified(self: "Store", log: FetchLog) -> None:
        """A 304: the source is healthy and nothing changed (`save_source_batches` with no article
        records the same, in a group)."""
        self.save_source_batches([SourceBatch(log.source_id, (), log)])

    def _insert_log(self: "Store", log: FetchLog) -> None:
        from . import iso

        self.conn.execute(
            "INSERT INTO fetch_log (source_id, url, started_at, duration_ms, status, bytes, new_count, "
            "updated_count, reason, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (log.source_id, log.url, iso(log.started_at), log.duration_ms, log.status, log.bytes,
             log.new_count, log.updated_count, log.reason, log.error),
        )

    # -- HTTP cache ---------------------------------------------------------------------------------

    def cache_get(self: "Store", url: str) -> CacheEntry | None:
        return self.cache_entries([url]).get(url)

    def cache_entries(self: "Store", urls: Sequence[str]) -> dict[str, CacheEntry]:
        """The validators kept for these URLs (those without any are left out)."""
        entries = {}
        for chunk in _chunks(list(dict.fromkeys(urls))):
            for row in self.conn.execute("SELECT url, etag, last_modified FROM http_cache "
                                         f"WHERE url IN ({','.join('?' * len(chunk))})", chunk):
                entries[row[0]] = CacheEntry(row[1], row[2])
        return entries

    def has_validators(self: "Store", urls: Sequence[str]) -> bool:
        """Whether every one of these URLs has an ETag or Last-Modified kept (a conditional GET to send)."""
        wanted = set(urls)
        for chunk in _chunks(list(wanted)):
            wanted.difference_update(r[0] for r in self.conn.execute(
                f"SELECT url FROM http_cache WHERE url IN ({','.join('?' * len(chunk))})", chunk))
        return not wanted

    def _cache_put(self: "Store", url: str, etag: str | None, last_modified: str | None, at: datetime) -> None:
        from . import iso

        if etag is None and last_modified is None:
            self.conn.execute("DELETE FROM http_cache WHERE url = ?", (url,))
            return
        self.conn.execute(
            "INSERT INTO http_cache (url, etag, last_modified, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(url) DO UPDATE SET etag = excluded.etag, last_modified = excluded.last_modified, "
            "updated_at = excluded.updated_at",
            (url, etag, last_modified, iso(at)),
        )

    # -- articles -----------------------------------------------------------------------------------

    def known_entries(self: "Store", source_id: str, entries: Iterable[Entry]) -> dict[str, str]:
        """Stored title of each entry already in the archive, keyed by `entry.guid or entry.url`.

        An entry is known by its guid within the source, or by its link (raw or canonical) anywhere, so
        the same article in two feeds is stored once.
        """
        entries = list(entries)
        by_guid: dict[str, str] = {}
        guids = [e.guid for e in entries if e.guid]
        for chunk in _chunks(guids):
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(
                f"SELECT guid, title FROM articles WHERE source_id = ? AND guid IN ({marks})", [source_id, *chunk]
            ):
                by_guid[row[0]] = row[1]
        urls = [u for e in entries for u in (e.url, e.canonical_url)]
        by_url: dict[str, str] = {}
        for chunk in _chunks(urls):
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(
                f"SELECT u.url, a.title FROM article_urls u JOIN articles a ON a.id = u.article_id "
                f"WHERE u.url IN ({marks})", chunk
            ):
                by_url[row[0]] = row[1]
        known: dict[str, str] = {}
        for e in entries:
            title = (by_guid.get(e.guid) if e.guid else None) or by_url.get(e.url) or by_url.get(e.canonical_url)
            if title is not None:
                known[e.guid or e.url] = title
        return known

    def save_source_batch(
        self: "Store",
        source_id: str,
        articles: list[Article],
        log: FetchLog,
        cache: list[tuple[str, str | None, str | None]],
        title: str | None = None,
        moved_to: str | None = None,
        then: Callable[[SaveResult], None] | None = None,
    ) -> SaveResult:
        """Store one source's pass in a single transaction: articles, URLs, clusters, log, cache, state.

        A process killed before COMMIT leaves nothing of this batch, and the cache is written in the
        same transaction, so the next pass refetches instead of taking a 304 for lost work. `then`
        runs inside that transaction with the result (the pipeline stores the batch's tags there), so
        what it writes lands with the batch or not at all, for the price of one commit.
        """
        batch = SourceBatch(source_id, articles, log, cache, title, moved_to)
        return self.save_source_batches([batch], None if then is None else lambda results: then(results[0]))[0]

    def save_source_batches(self: "Store", batches: Sequence[SourceBatch],
                            then: Callable[[list[SaveResult]], None] | None = None) -> list[SaveResult]:
        """`save_source_batch` for several sources in one transaction (the pipeline's group commit):
        each batch lands whole with the others, or none does."""
        try:
            with self.transaction():
                articles = [a for batch in batches for a in batch.articles]
                if articles:  # a pass of 304s never loads the SimHash index (nor numpy)
                    self._clusters().refresh(self.conn)  # rows other processes committed since the last batch
                outcomes = self._upsert_articles(articles, [b.keep_same_title for b in batches for _ in b.articles])
                results = []
                for batch in batches:
                    mine, outcomes = outcomes[:len(batch.articles)], outcomes[len(batch.articles):]
                    new = tuple(i for i, status in mine if status == "new")
                    updated = tuple(i for i, status in mine if status == "updated")
                    for url, etag, last_modified in batch.cache:
                        self._cache_put(url, etag, last_modified, batch.log.started_at)
                    self._insert_log(replace(batch.log, new_count=len(new), updated_count=len(updated)))
                    self._mark_source_ok(batch.source_id, batch.log.started_at, len(new), batch.title, batch.moved_to)
                    results.append(SaveResult(new, updated, tuple(mine)))
                if then is not None:
                    then(results)
            return results
        except BaseException:
            self._cluster_index = None  # it may hold rows of the rolled-back batches
            raise

    def _upsert_articles(self: "Store", articles: Sequence[Article],
                         keep_same_title: Sequence[bool] | None = None) -> list[tuple[int, str]]:
        """Insert or update a batch of articles: bulk lookups, then one multi-row statement per table.

        Each INSERT statement makes FTS5 flush its pending terms into a new index segment (the full-text
        trigger runs inside the statement's savepoint): row by row, that was one segment per article
        and half of a cold pass's storing time; one multi-row INSERT per batch writes one. Ids are
        assigned here (the transaction holds the write lock), and entries that meet again within the
        batch (same guid, URL or canonical URL) are resolved in memory exactly as one by one.
        """
        from . import iso, iso_and_week

        if not articles:
            return []
        conn = self.conn
        columns = "a.id, a.source_id, a.title, a.summary, a.text, a.cluster_id, a.published_at"  # _Stored's
        insert = ("INSERT INTO articles (id, source_id, guid, url, canonical_url, title, author, summary, text, "
                  "text_source, lang, published_at, date_is_fallback, fetched_at, updated_at, cluster_id, "
                  "simhash, week) VALUES ")
        known: dict[int, _Stored] = {}  # one object per article, whichever lookup found it: updates show in all

        def stored_of(row: sqlite3.Row) -> _Stored:
            return known.setdefault(row[1], _Stored(*row[1:]))

        guids_of: dict[str, dict[str, None]] = {}
        for a in articles:
            if a.guid:
                guids_of.setdefault(a.source_id, {})[a.guid] = None
        by_guid: dict[tuple[str, str], _Stored] = {}
        for source_id, guids in guids_of.items():
            for chunk in _chunks(list(guids)):
                for row in conn.execute(f"SELECT a.guid, {columns} FROM articles a WHERE a.source_id = ? "
                                        f"AND a.guid IN ({','.join('?' * len(chunk))})", [source_id, *chunk]):
                    by_guid[(source_id, row[0])] = stored_of(row)
        by_url: dict[str, _Stored] = {}
        for chunk in _chunks(list({u for a in articles for u in (a.canonical_url, *a.urls) if u})):
            for row in conn.execute(f"SELECT u.url, {columns} FROM article_urls u JOIN articles a ON a.id = "
                                    f"u.article_id WHERE u.url IN ({','.join('?' * len(chunk))})", chunk):
                by_url[row[0]] = stored_of(row)
        by_canonical: dict[str, _Stored] = {}
        for chunk in _chunks(list({a.canonical_url for a in articles})):
            for row in conn.execute(f"SELECT a.canonical_url, {columns} FROM articles a "
                                    f"WHERE a.canonical_url IN ({','.join('?' * len(chunk))})", chunk):
                by_canonical[row[0]] = stored_of(row)

        index = self._clusters()
        next_id = (conn.execute("SELECT max(id) FROM articles").fetchone()[0] or 0) + 1
        next_cluster = (conn.execute("SELECT max(id) FROM clusters").fetchone()[0] or 0) + 1
        pending: dict[int, list] = {}
        """Rows of the articles this batch creates, by id, written after the loop."""
        new_clusters: list[tuple[int, str | None]] = []
        url_rows: list[tuple[str, int]] = []
        outcomes: list[tuple[int, str]] = []
        fetched_isos: dict[datetime, str] = {}  # a source's articles share their fetch time

        def fetched_iso(article: Article) -> str:
            stamp = fetched_isos.get(article.fetched_at)
            if stamp is None:
                stamp = fetched_isos[article.fetched_at] = iso(article.fetched_at)
            return stamp

        for article, keep in zip(articles, keep_same_title or [False] * len(articles)):
            urls = [u for u in dict.fromkeys((article.canonical_url, article.url, *article.urls)) if u]
            stored = by_guid.get((article.source_id, article.guid)) if article.guid else None
            if stored is None:
                stored = next((by_url[u] for u in (article.canonical_url, *article.urls) if u in by_url), None)
            status = "same"
            if stored is None and article.canonical_url in by_canonical:
                stored = by_canonical[article.canonical_url]  # same canonical URL under another guid
            elif stored is not None:
                if stored.source_id == article.source_id and (
                        stored.title != article.title or not keep and (
                            stored.text != article.text or stored.summary != article.summary)):
                    status = "updated"
                    row = pending.get(stored.id)
                    if row is None:
                        conn.execute(
                            "UPDATE articles SET title = ?, text = ?, summary = ?, author = COALESCE(?, author), "
                            "lang = COALESCE(?, lang), text_source = ?, simhash = ?, updated_at = ? WHERE id = ?",
                            (article.title, article.text, article.summary, article.author, article.lang,
                             article.text_source, article.simhash, fetched_iso(article), stored.id),
                        )
                    else:  # stored earlier in this batch: not written yet, the same change on its row
                        row[5], row[7], row[8], row[9], row[16] = (article.title, article.summary, article.text,
                                                                   article.text_source, article.simhash)
                        row[6], row[10] = article.author or row[6], article.lang or row[10]
                        row[14] = fetched_iso(article)
                    stored.title, stored.text, stored.summary = article.title, article.text, article.summary
                    index.add(stored.id, article.simhash, stored.cluster_id,
                              datetime.fromisoformat(stored.published_at.replace("Z", "+00:00")))
            else:
                status = "new"
                cluster_id = index.find(article.simhash, article.published_at)
                if cluster_id is None:
                    cluster_id, next_cluster = next_cluster, next_cluster + 1
                    new_clusters.append((cluster_id, fetched_iso(article)))
                published, week = iso_and_week(article.published_at)
                fetched = fetched_iso(article)
                stored = _Stored(next_id, article.source_id, article.title, article.summary, article.text,
                                 cluster_id, published)
                next_id += 1
                pending[stored.id] = [
                    stored.id, article.source_id, article.guid, article.url, article.canonical_url, article.title,
                    article.author, article.summary, article.text, article.text_source, article.lang, published,
                    int(article.date_is_fallback), fetched, fetched, cluster_id, article.simhash, week]
                index.add(stored.id, article.simhash, cluster_id, article.published_at)
                if article.guid:
                    by_guid[(article.source_id, article.guid)] = stored
                by_canonical[article.canonical_url] = stored
            for url in urls:
                by_url.setdefault(url, stored)
            url_rows.extend((url, stored.id) for url in urls)
            outcomes.append((stored.id, status))
        conn.executemany("INSERT INTO clusters (id, created_at) VALUES (?, ?)", new_clusters)
        for chunk in _chunks(list(pending.values()), 400):
            conn.execute(insert + ",".join(["(" + ",".join("?" * 18) + ")"] * len(chunk)),
                         [value for row in chunk for value in row])
        conn.executemany("INSERT OR IGNORE INTO article_urls (url, article_id) VALUES (?, ?)", url_rows)
        return outcomes

    def simhash_version(self: "Store") -> int | None:
        """The SimHash version behind `articles.simhash` (None: unknown, e.g. an archive from before it
        was recorded)."""
        row = self.conn.execute("SELECT value FROM archive_meta WHERE key = 'simhash_version'").fetchone()
        return int(row[0]) if row else None

    def rehash_articles(self: "Store", version: int, simhash: Callable[[str], int], chunk: int = 2000) -> int:
        """Recompute every article's SimHash with `simhash` (version `version`) and record the version,
        in one transaction; returns how many hashes changed. Cluster assignments stay as they were: only
        the lookups of articles to come need hashes of one version."""
        changed = 0
        try:
            with self.transaction():
                last = 0
                while True:
                    rows = self.conn.execute("SELECT id, text, simhash FROM articles WHERE id > ? ORDER BY id LIMIT ?",
                                             (last, chunk)).fetchall()
                    if not rows:
                        break
                    last = rows[-1][0]
                    updates = [(new, article_id) for article_id, text, old in rows if (new := simhash(text)) != old]
                    self.conn.executemany("UPDATE articles SET simhash = ? WHERE id = ?", updates)
                    changed += len(updates)
                self.conn.execute("INSERT INTO archive_meta (key, value) VALUES ('simhash_version', ?) "
                                  "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (str(version),))
        finally:
            self._cluster_index = None
        return changed

    def _clusters(self: "Store") -> "ClusterIndex":
        """The SimHash index (`save_source_batches` refreshes it once per transaction)."""
        index = getattr(self, "_cluster_index", None)
        if index is None:
            from .clusters import ClusterIndex  # numpy: imported only by passes that store articles

            index = self._cluster_index = ClusterIndex()
            index.refresh(self.conn)
        return index

    def article_count(self: "Store") -> int:
        return self.conn.execute("SELECT count(*) FROM articles").fetchone()[0]

    def has_articles(self: "Store") -> bool:
        return self.conn.execute("SELECT 1 FROM articles LIMIT 1").fetchone() is not None

    def prune_fetch_log(self: "Store", older_than: timedelta) -> int:
        from . import iso, utcnow

        with self.transaction():
            return self.conn.execute("DELETE FROM fetch_log WHERE started_at < ?",
                                     (iso(utcnow() - older_than),)).rowcount


class _Stored:
    """What `_upsert_articles` needs of a stored article (or of one the batch stores)."""

    __slots__ = ("id", "source_id", "title", "summary", "text", "cluster_id", "published_at")

    def __init__(self, id: int, source_id: str, title: str, summary: str, text: str, cluster_id: int,
                 published_at: str) -> None:
        self.id, self.source_id, self.cluster_id, self.published_at = id, source_id, cluster_id, published_at
        self.title, self.summary, self.text = title, summary, text


def _chunks(items: list, size: int = 500) -> Iterable[list]:
    """SQLite caps bound parameters per statement; IN (...) lists are sent in slices."""
    for i in range(0, len(items), size):
        yield items[i:i + size]
