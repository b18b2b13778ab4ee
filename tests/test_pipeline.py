"""End-to-end ingestion against a real HTTP server on 127.0.0.1: fetch -> parse -> extract -> dedupe -> store."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from veille.cli import main
from veille.core import WRITER_CACHE_KB, Watch
from veille.dedupe import canonical_url

from .corpus import STORIES, SYNDICATED, atom, page, rss

ROOT = Path(__file__).resolve().parents[1]


def write_sources(path: Path, *entries: str) -> Path:
    path.write_text("defaults: {interval: 1h, full_text: true, allow_private: true}\nsources:\n"
                    + "".join(entries), encoding="utf-8")
    return path


def feed_entry(sid: str, url: str, kind: str = "feed", extra: str = "") -> str:
    return f"  - id: {sid}\n    name: Source {sid}\n    type: {kind}\n    url: {url}\n{extra}"


def publish(server, stories=STORIES, prefix="/articles") -> list[tuple]:
    items = []
    for s in stories:
        server.serve(f"{prefix}/{s.slug}", page(s, server.base))
        items.append((s, server.url(f"{prefix}/{s.slug}")))
    return items


@pytest.fixture
def watch_factory(tmp_path, settings):
    opened = []

    def make(sources: Path, db: Path | None = None) -> Watch:
        w = Watch(db=db or tmp_path / "veille.db", sources=sources, topics=tmp_path / "no-topics.yaml",
                  config=None, settings=settings)
        opened.append(w)
        return w

    yield make
    for w in opened:
        w.close()


def rows(watch: Watch, sql: str, params=()) -> list[sqlite3.Row]:
    return watch.store.query(sql, params)


def test_feed_pass_then_conditional_get_stores_nothing_new(http_server, tmp_path, watch_factory):
    items = publish(http_server)
    http_server.serve("/feed.xml", rss(items), content_type="application/rss+xml")
    sources = write_sources(tmp_path / "sources.yaml", feed_entry("hebdo", http_server.url("/feed.xml")))
    watch = watch_factory(sources)

    first = watch.fetch()
    assert [(r.status, r.new) for r in first.sources] == [("ok", 4)]
    stored = rows(watch, "SELECT * FROM articles ORDER BY published_at")
    assert [r["title"] for r in stored] == [s.title for s in STORIES]
    assert all(r["text_source"] == "page" for r in stored)
    assert "62 000 prises" in stored[0]["text"]
    assert "Mentions légales" not in stored[0]["text"]
    assert stored[0]["published_at"] == "2026-11-17T08:30:00Z" and stored[0]["date_is_fallback"] == 0

    second = watch.fetch()
    assert [(r.status, r.new, r.updated) for r in second.sources] == [("not_modified", 0, 0)]
    feed_hits = http_server.hits("/feed.xml")
    assert len(feed_hits) == 2 and feed_hits[1].headers.get("if-none-match")
    assert len(http_server.hits(f"/articles/{STORIES[0].slug}")) == 1
    log = rows(watch, "SELECT status, new_count FROM fetch_log ORDER BY id")
    assert [tuple(r) for r in log] == [(200, 4), (304, 0)]


def test_passes_share_one_writer_connection_and_its_simhash_index(http_server, tmp_path, watch_factory):
    """The scheduler runs a pass per source job: the writer's connection, and the SimHash index it
    loaded, serve them all (the index is kept, and in step with the archive)."""
    feeds = []
    for i in range(2):
        http_server.serve(f"/f{i}.xml", rss(publish(http_server, prefix=f"/s{i}")), content_type="application/rss+xml")
        feeds.append(feed_entry(f"s{i}", http_server.url(f"/f{i}.xml")))
    watch = watch_factory(write_sources(tmp_path / "s.yaml", *feeds))
    watch.fetch(["s0"])  # the pages' full texts: long enough to be hashed
    writer = watch.writer_store()
    index = writer._clusters()
    loaded = index.size
    watch.fetch(["s1"])
    assert watch.writer_store() is writer and writer._clusters() is index
    assert 0 < loaded <= index.size == rows(watch, "SELECT count(*) FROM articles WHERE simhash != 0")[0][0]


def test_new_archives_get_large_pages_and_older_ones_keep_theirs(http_server, tmp_path, watch_factory):
    """SQLite fixes the page size when the file is created: an archive made with 4 KB pages (before
    veille chose 16 KB ones) is stored into as before, and the writer's connection gets a larger cache."""
    from veille.store import PAGE_SIZE

    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("VACUUM")  # an empty database file with 4 KB pages
    http_server.serve("/f.xml", rss(publish(http_server)), content_type="application/rss+xml")
    sources = write_sources(tmp_path / "s.yaml", feed_entry("s", http_server.url("/f.xml")))
    for db, size in ((tmp_path / "new.db", PAGE_SIZE), (old, 4096)):
        watch = watch_factory(sources, db=db)
        watch.fetch(full_text=False)
        assert rows(watch, "PRAGMA page_size")[0][0] == size
        assert rows(watch, "SELECT count(*) FROM articles")[0][0] == len(STORIES)
        assert watch.writer_store().scalar("PRAGMA cache_size") == -WRITER_CACHE_KB
    assert PAGE_SIZE > 4096


def test_the_pool_starts_early_only_when_a_feed_will_be_parsed(http_server, tmp_path, settings):
    """A first pass starts the parse pool with the pass; a pass of conditional GETs answered 304 never
    starts it (the warm pass: no process to fork, no module to load)."""
    http_server.serve("/feed.xml", rss(publish(http_server)), content_type="application/rss+xml")
    sources = write_sources(tmp_path / "s.yaml", feed_entry("hebdo", http_server.url("/feed.xml")))

    def a_pass() -> tuple[bool, str]:
        with Watch(db=tmp_path / "veille.db", sources=sources, topics=tmp_path / "no-topics.yaml", config=None,
                   settings=settings.replace(workers=2)) as watch:
            status = watch.fetch(full_text=False).sources[0].status
            return watch._pool is not None, status

    assert a_pass() == (True, "ok")
    assert a_pass() == (False, "not_modified")


def test_pool_processes_get_the_tagger_as_they_start_and_a_reloaded_one_with_the_tasks(http_server, tmp_path, settings):
    """Tasks carry the rule hash alone while the pool's processes hold that tagger (given at their start);
    after topics.yaml changes, they carry the new tagger, and articles get the new rules' tags."""
    topics = tmp_path / "topics.yaml"
    topics.write_text((ROOT / "topics.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    half = len(STORIES) // 2
    http_server.serve("/feed.xml", rss(publish(http_server, STORIES[:half])), content_type="application/rss+xml")
    sources = write_sources(tmp_path / "s.yaml", feed_entry("hebdo", http_server.url("/feed.xml")))

    def tags(watch: Watch) -> dict[int, list[str]]:
        found: dict[int, list[str]] = {}
        for r in rows(watch, "SELECT article_id, topic_id FROM article_topics ORDER BY article_id, topic_id"):
            found.setdefault(r[0], []).append(r[1])
        return found

    def expected(watch: Watch) -> dict[int, list[str]]:
        texts = rows(watch, "SELECT id, title, summary, text FROM articles ORDER BY id")
        found = {r[0]: sorted(m.topic_id for m in watch.tagger.match(r[1], r[2], r[3])) for r in texts}
        return {k: v for k, v in found.items() if v}

    with Watch(db=tmp_path / "veille.db", sources=sources, topics=topics, config=None,
               settings=settings.replace(workers=2)) as watch:
        assert watch.fetch(full_text=False).sources[0].status == "ok"
        assert watch._task_tagger() == (watch.tagger.rule_hash, None)
        first = tags(watch)
        assert first and first == expected(watch)
        topics.write_text("topics:\n  fibre:\n    label: Fibre\n    keywords: [fibre, raccordement]\n",
                          encoding="utf-8")
        watch.reload()
        rule_hash, blob = watch._task_tagger()
        assert rule_hash == watch.tagger.rule_hash and blob
        http_server.serve("/feed.xml", rss(publish(http_server, STORIES)), content_type="application/rss+xml")
        assert watch.fetch(full_text=False).sources[0].new == len(STORIES) - half
        assert {t for found in tags(watch).values() for t in found} == {"fibre"}
        assert tags(watch) == expected(watch)


def test_feed_jobs_wait_for_the_pool_and_leave_together_each_result_to_its_feed(tmp_path, settings, monkeypatch):
    """`_FeedQueue`: 2 x workers tasks out at most; the jobs that wait leave together (POOL_BATCH at most),
    each gets its own result, and one job's error stays its own. The pool is a thread pool here so that
    what the tasks carried can be counted."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from veille import core

    def parse_and_build(source_id, *_rest):
        time.sleep(0.005)
        if source_id == "s7":
            raise ValueError("feed s7 is broken")
        return f"parsed {source_id}", []

    tasks: list[int] = []
    real_many = core._parse_and_build_many

    def many(jobs):
        tasks.append(len(jobs))
        return real_many(jobs)

    monkeypatch.setattr(core, "_parse_and_build", parse_and_build)
    monkeypatch.setattr(core, "_parse_and_build_many", many)
    watch = Watch(db=tmp_path / "v.db", sources=tmp_path / "s.yaml", topics=tmp_path / "t.yaml", config=None,
                  settings=settings.replace(workers=2))
    threads = ThreadPoolExecutor(2)
    monkeypatch.setattr(watch, "pool", lambda: threads)

    async def thirty():
        feeds = core._FeedQueue(watch)
        return await asyncio.gather(*(feeds.parse(f"s{i}", "feed", b"", "", None, None, None, None)
                                      for i in range(30)), return_exceptions=True)

    try:
        results = asyncio.run(thirty())
    finally:
        threads.shutdown()
    assert isinstance(results[7], ValueError) and "s7 is broken" in str(results[7])
    assert all(results[i] == (f"parsed s{i}", []) for i in range(30) if i != 7)
    assert sum(tasks) == 30 and tasks[:4] == [1, 1, 1, 1], "the first jobs leave at once, alone"
    assert max(tasks) <= core.POOL_BATCH and len(tasks) < 30


def test_a_pool_error_that_cannot_travel_comes_back_as_its_message():
    from veille import core

    class Unpicklable(Exception):
        def __init__(self, handle):
            super().__init__(f"bad handle {handle}")
            self.handle = lambda: handle

    sent = core._sendable(_raised(Unpicklable, 3))
    assert type(sent) is RuntimeError and str(sent) == "Unpicklable: bad handle 3"
    kept = core._sendable(_raised(ValueError, "flux illisible"))
    assert type(kept) is ValueError and "in the pool process" in kept.__notes__[0] and "_raised" in kept.__notes__[0]


def _raised(kind, *args):
    try:
        raise kind(*args)
    except Exception as e:  # noqa: BLE001
        return e


def test_source_states_and_validators_are_read_in_bulk_as_one_by_one(store):
    """A pass reads every source's state and validators before its tasks start: 1,200 sources (more
    than one query's worth) give what 1,200 single reads give."""
    from datetime import datetime, timezone

    from veille.store.articles import FetchLog
    from veille.types import Source

    sources = [Source(id=f"s{i}", name=f"S{i}", type="feed", url=f"http://127.0.0.1/{i}.xml") for i in range(1200)]
    store.sync_sources(sources)
    at = datetime(2026, 11, 26, 9, tzinfo=timezone.utc)
    for i in range(0, 1200, 7):
        store.save_source_batch(f"s{i}", [], FetchLog(f"s{i}", sources[i].url, at, 3, status=200),
                                [(sources[i].url, f'"e{i}"', None)])
    store.record_failure(FetchLog("s5", sources[5].url, at, 3, status=500, reason="server_error", error="HTTP 500"),
                         next_attempt_at=at)
    ids = [s.id for s in sources] + ["unknown"]
    states = store.source_states(ids)
    assert set(states) == set(ids) - {"unknown"}
    assert all(states[i] == store.source_state(i) for i in ids[:-1])
    assert states["s5"].consecutive_failures == 1 and states["s7"].consecutive_failures == 0
    urls = [s.url for s in sources]
    entries = store.cache_entries(urls)
    assert len(entries) == len(range(0, 1200, 7)) and entries[sources[7].url].etag == '"e7"'
    assert all(entries.get(u) == store.cache_get(u) for u in urls)


def test_syncing_sources_writes_only_what_changed(store):
    from dataclasses import replace

    from veille.types import Source

    sources = [Source(id=f"s{i}", name=f"S{i}", type="feed", url=f"http://127.0.0.1/{i}.xml") for i in range(700)]
    store.sync_sources(sources)
    before = store.conn.total_changes
    store.sync_sources(sources)
    assert store.conn.total_changes == before, "an unchanged file writes nothing"
    store.conn.execute("UPDATE sources SET current_url = 'http://127.0.0.1/moved.xml' WHERE id = 's1'")
    changed = [replace(sources[0], name="Renamed"), replace(sources[1], name="Also renamed"),
               replace(sources[2], url="http://127.0.0.1/fixed.xml"), replace(sources[3], enabled=False),
               *sources[4:], Source(id="new", name="New", type="html", url="http://127.0.0.1/new", link_selector="a")]
    store.sync_sources(changed)
    assert store.conn.total_changes == before + 1 + 4 + 1
    states = store.source_states(["s0", "s1", "s2", "s3", "new"])
    assert states["s1"].current_url == "http://127.0.0.1/moved.xml", "a redirect's URL stays while the file's is unchanged"
    assert states["s2"].current_url == "http://127.0.0.1/fixed.xml"
    assert not states["s3"].enabled and states["s3"].disabled_reason == "disabled in sources.yaml"
    assert states["new"].enabled
    assert store.conn.execute("SELECT name FROM sources WHERE id = 's0'").fetchone()[0] == "Renamed"


def test_log_lines_alone_are_written_in_the_loop(http_server, tmp_path, watch_factory):
    """Groups with articles go to the writer thread; a group of 304 log lines is written in the loop
    (handing it over cost a warm pass more than writing it)."""
    import threading

    http_server.serve("/feed.xml", rss(publish(http_server)), content_type="application/rss+xml")
    watch = watch_factory(write_sources(tmp_path / "s.yaml", feed_entry("hebdo", http_server.url("/feed.xml"))))
    threads = []
    watch.writer_store().conn.set_trace_callback(
        lambda sql: threads.append(threading.current_thread().name) if sql.startswith("BEGIN") else None)
    assert watch.fetch(full_text=False).sources[0].status == "ok"
    assert watch.fetch(full_text=False).sources[0].status == "not_modified"
    assert [name.startswith("veille-writer") for name in threads] == [True, False]
    assert threads[1] == threading.current_thread().name



def test_a_pass_relaxes_the_cycle_collector_only_while_it_runs(http_server, tmp_path, watch_factory):
    """`veille fetch` raises the collector's thresholds and freezes what exists for its duration
    (bench/ingest.py); a library user's process gets its own settings back, even after a failed pass."""
    import gc

    from veille.core import GC_THRESHOLDS

    http_server.serve("/feed.xml", rss(publish(http_server)), content_type="application/rss+xml")
    watch = watch_factory(write_sources(tmp_path / "s.yaml", feed_entry("hebdo", http_server.url("/feed.xml"))))
    before = gc.get_threshold()
    seen = []
    watch.fetch(full_text=False, progress=lambda result: seen.append((gc.get_threshold(), gc.get_freeze_count())))
    assert seen[0][0] == GC_THRESHOLDS and seen[0][1] > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0

    def fail(result):
        raise RuntimeError("the caller's progress callback fails")

    with pytest.raises(RuntimeError):
        watch.fetch(full_text=False, progress=fail)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0

def test_changed_feed_stores_only_new_entries(http_server, tmp_path, watch_factory):
    items = publish(http_server)
    http_server.serve("/feed.xml", rss(items[:2]), content_type="application/rss+xml")
    watch = watch_factory(write_sources(tmp_path / "s.yaml", feed_entry("hebdo", http_server.url("/feed.xml"))))
    assert watch.fetch().sources[0].new == 2
    http_server.serve("/feed.xml", rss(items), content_type="application/rss+xml")
    result = watch.fetch().sources[0]
    assert (result.new, result.updated) == (2, 0)
    assert len(http_server.hits(f"/articles/{STORIES[0].slug}")) == 1
    assert watch.store.article_count() == 4


def test_a_feed_only_pass_leaves_known_titles_as_stored_and_updates_changed_ones(http_server, tmp_path,
                                                                                 watch_factory):
    """After a full-text pass, the feed's shorter copy of an article never replaces the page's text; a
    changed title is an update; an entry the feed lists twice is stored once."""
    from dataclasses import replace

    items = publish(http_server)
    http_server.serve("/feed.xml", rss(items), content_type="application/rss+xml")
    watch = watch_factory(write_sources(tmp_path / "s.yaml", feed_entry("hebdo", http_server.url("/feed.xml"))))
    assert watch.fetch().sources[0].new == len(STORIES)
    pages = {r["guid"]: r["text"] for r in rows(watch, "SELECT guid, text FROM articles")}
    retitled = replace(STORIES[0], title="Fibre : la Creuse entièrement raccordée", lead="Un autre chapeau.")
    relead = replace(STORIES[1], lead="Un chapeau réécrit par la rédaction web.")
    changed = [(retitled, items[0][1]), (relead, items[1][1]), *items[2:], items[2]]
    http_server.serve("/feed.xml", rss(changed), content_type="application/rss+xml")
    result = watch.fetch(full_text=False).sources[0]
    assert (result.status, result.entries, result.new, result.updated) == ("ok", len(STORIES) + 1, 0, 1)
    stored = {r["guid"]: r for r in rows(watch, "SELECT guid, title, text, text_source FROM articles")}
    assert len(stored) == len(STORIES)
    assert stored[STORIES[0].slug]["title"] == retitled.title and stored[STORIES[0].slug]["text_source"] == "feed"
    for story in STORIES[1:]:
        assert stored[story.slug]["text"] == pages[story.slug] and stored[story.slug]["text_source"] == "page"


def test_listing_page_and_sitemap_sources(http_server, tmp_path, watch_factory):
    items = publish(http_server)
    links = "".join(f'<h3><a href="/articles/{s.slug}">{s.title}</a></h3>' for s, _ in items[:2])
    http_server.serve("/en-bref", f"<html><body><nav><a href='/'>Accueil</a></nav>{links}</body></html>")
    urls = "".join(f"<url><loc>{u}</loc><lastmod>2026-11-20</lastmod></url>" for _, u in items[2:])
    http_server.serve("/sitemap.xml", f'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/'
                      f'sitemap/0.9">{urls}</urlset>', content_type="application/xml")
    sources = write_sources(
        tmp_path / "s.yaml",
        feed_entry("bref", http_server.url("/en-bref"), "html", '    link_selector: "h3 a"\n'),
        feed_entry("plan", http_server.url("/sitemap.xml"), "sitemap"),
    )
    watch = watch_factory(sources)
    result = watch.fetch()
    assert [(r.source_id, r.status, r.new) for r in result.sources] == [("bref", "ok", 2), ("plan", "ok", 2)]
    by_source = {r["source_id"]: r["n"] for r in rows(
        watch, "SELECT source_id, count(*) n FROM articles GROUP BY source_id")}
    assert by_source == {"bref": 2, "plan": 2}
    titles = {r["title"] for r in rows(watch, "SELECT title FROM articles")}
    assert titles == {s.title for s in STORIES}


def test_same_article_in_two_feeds_and_tracking_parameters(http_server, tmp_path, watch_factory):
    items = publish(http_server)
    tracked = [(s, u + "?utm_source=rss&utm_medium=feed&xtor=RSS-3") for s, u in items]
    http_server.serve("/a.xml", rss(items), content_type="application/rss+xml")
    http_server.serve("/b.xml", atom(tracked[:2]), content_type="application/atom+xml")
    watch = watch_factory(write_sources(tmp_path / "s.yaml", feed_entry("a", http_server.url("/a.xml")),
                                        feed_entry("b", http_server.url("/b.xml"))))
    watch.fetch()
    assert watch.store.article_count() == 4
    assert canonical_url(tracked[0][1]) == items[0][1]
    stored = rows(watch, "SELECT id FROM articles WHERE canonical_url = ?", (items[0][1],))
    assert len(stored) == 1
    urls = {r["url"] for r in rows(watch, "SELECT url FROM article_urls WHERE article_id = ?", (stored[0]["id"],))}
    assert items[0][1] in urls
    assert rows(watch, "SELECT count(*) n FROM articles GROUP BY canonical_url HAVING n > 1") == []


def test_syndicated_near_duplicate_joins_the_story_cluster(http_server, tmp_path, watch_factory):
    items = publish(http_server)
    http_server.serve(f"/autre/{SYNDICATED.slug}", page(SYNDICATED, http_server.base,
                                                         canonical=http_server.url(f"/autre/{SYNDICATED.slug}")))
    http_server.serve("/a.xml", rss(items), content_type="application/rss+xml")
    http_server.serve("/b.xml", rss([(SYNDICATED, http_server.url(f"/autre/{SYNDICATED.slug}"))]),
                      content_type="application/rss+xml")
    watch = watch_factory(write_sources(tmp_path / "s.yaml", feed_entry("a", http_server.url("/a.xml")),
                                        feed_entry("b", http_server.url("/b.xml"))))
    watch.fetch()
    clusters = {r["title"]: r["cluster_id"] for r in rows(watch, "SELECT title, cluster_id FROM articles")}
    assert len(clusters) == 5
    assert clusters[SYNDICATED.title] == clusters[STORIES[1].title]
    others = [clusters[s.title] for s in STORIES if s is not STORIES[1]]
    assert len(set(others)) == 3 and clusters[STORIES[1].title] not in others


def test_hashes_of_another_simhash_version_are_recomputed_before_the_pass(http_server, tmp_path, watch_factory):
    """An archive from before a change of the SimHash function: its hashes cannot be compared with new
    ones, so the next pass recomputes them first, and a syndicated copy still finds its story."""
    from veille import dedupe

    items = publish(http_server)
    http_server.serve(f"/autre/{SYNDICATED.slug}", page(SYNDICATED, http_server.base,
                                                         canonical=http_server.url(f"/autre/{SYNDICATED.slug}")))
    http_server.serve("/a.xml", rss(items), content_type="application/rss+xml")
    sources = [feed_entry("a", http_server.url("/a.xml"))]
    watch = watch_factory(write_sources(tmp_path / "s.yaml", *sources))
    watch.fetch()
    assert watch.store.simhash_version() == dedupe.SIMHASH_VERSION
    with watch.store.transaction():  # what an older veille left: other hashes, no version recorded
        watch.store.conn.execute("UPDATE articles SET simhash = (simhash | 1234567) - (simhash & 1234567) WHERE simhash != 0")
        watch.store.conn.execute("DELETE FROM archive_meta")
    watch.close()

    http_server.serve("/b.xml", rss([(SYNDICATED, http_server.url(f"/autre/{SYNDICATED.slug}"))]),
                      content_type="application/rss+xml")
    watch = watch_factory(write_sources(tmp_path / "s.yaml", *sources, feed_entry("b", http_server.url("/b.xml"))))
    watch.fetch()
    stored = rows(watch, "SELECT title, text, simhash, cluster_id FROM articles")
    assert all(r["simhash"] == dedupe.simhash(r["text"]) for r in stored) and any(r["simhash"] for r in stored)
    clusters = {r["title"]: r["cluster_id"] for r in stored}
    assert clusters[SYNDICATED.title] == clusters[STORIES[1].title], "the copy found its story"
    assert watch.store.simhash_version() == dedupe.SIMHASH_VERSION

    with watch.store.transaction():  # once recorded, a pass does not hash the archive again
        watch.store.conn.execute("UPDATE articles SET simhash = 42 WHERE title = ?", (STORIES[0].title,))
    watch.close()
    watch_factory(write_sources(tmp_path / "s.yaml", *sources)).fetch()
    assert rows(watch_factory(write_sources(tmp_path / "s.yaml", *sources)),
                "SELECT simhash FROM articles WHERE title = ?", (STORIES[0].title,))[0][0] == 42


def test_failing_sources_are_recorded_and_do_not_stop_the_pass(http_server, tmp_path, watch_factory):
    items = publish(http_server)
    http_server.serve("/ok.xml", rss(items), content_type="application/rss+xml")
    http_server.serve("/gone.xml", b"gone", status=410)
    http_server.serve("/missing.xml", b"missing", status=404)
    http_server.serve("/busy.xml", b"slow down", status=429, headers={"Retry-After": "120"})
    http_server.serve("/broken.xml", b"<html><body>Maintenance</body></html>")
    watch = watch_factory(write_sources(
        tmp_path / "s.yaml", *(feed_entry(n, http_server.url(f"/{n}.xml")) for n in
                               ("ok", "gone", "missing", "busy", "broken"))))
    result = watch.fetch()
    status = {r.source_id: (r.status, r.reason) for r in result.sources}
    assert status["ok"] == ("ok", None)
    assert status["gone"] == ("failed", "gone")
    assert status["missing"] == ("failed", "not_found")
    assert status["busy"] == ("failed", "rate_limited")
    assert status["broken"][0] == "failed"
    assert watch.store.article_count() == 4
    gone = watch.store.source_state("gone")
    assert not gone.enabled and "410" in gone.disabled_reason
    busy = watch.store.source_state("busy")
    assert busy.consecutive_failures == 1 and busy.failing_since is not None
    assert (busy.next_attempt_at - busy.failing_since).total_seconds() >= 120
    again = {r.source_id: r.status for r in watch.fetch(respect_backoff=True).sources}
    assert again["gone"] == "disabled" and again["busy"] == "skipped" and again["missing"] == "skipped"
    assert len(http_server.hits("/gone.xml")) == 1
    errors = rows(watch, "SELECT source_id, reason, error FROM fetch_log WHERE reason IS NOT NULL")
    assert {r["source_id"] for r in errors} == {"gone", "missing", "busy", "broken"}
    assert all(http_server.base in r["error"] for r in errors)


def test_permanent_redirect_updates_the_stored_feed_url(http_server, tmp_path, watch_factory):
    items = publish(http_server)
    http_server.serve("/new-feed.xml", rss(items), content_type="application/rss+xml")
    http_server.redirect("/old-feed.xml", "/new-feed.xml", status=301)
    watch = watch_factory(write_sources(tmp_path / "s.yaml", feed_entry("moved", http_server.url("/old-feed.xml"))))
    assert watch.fetch().sources[0].new == 4
    assert watch.store.source_state("moved").current_url == http_server.url("/new-feed.xml")
    watch.fetch()
    assert len(http_server.hits("/old-feed.xml")) == 1
    assert len(http_server.hits("/new-feed.xml")) == 2


def test_paywalled_page_keeps_the_feed_text(http_server, tmp_path, watch_factory):
    story = STORIES[0]
    full = "\n".join(f"<p>{p}</p>" for p in story.paragraphs)
    http_server.serve(f"/articles/{story.slug}", f"""<html lang="fr"><head><title>{story.title}</title></head>
        <body><article><h1>{story.title}</h1><p>Cet article est réservé aux abonnés.</p>
        <a href="/abonnement">Je m'abonne</a></article></body></html>""")
    feed = rss([(story, http_server.url(f"/articles/{story.slug}"))]).replace(
        b"</description>", b"</description><content:encoded><![CDATA[" + full.encode() + b"]]></content:encoded>"
    ).replace(b'<rss version="2.0"', b'<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"')
    http_server.serve("/feed.xml", feed, content_type="application/rss+xml")
    watch = watch_factory(write_sources(tmp_path / "s.yaml", feed_entry("payant", http_server.url("/feed.xml"))))
    watch.fetch()
    article = rows(watch, "SELECT text, text_source FROM articles")[0]
    assert article["text_source"] == "feed"
    assert "62 000 prises" in article["text"]


def test_missing_date_falls_back_to_fetch_time_and_is_flagged(http_server, tmp_path, watch_factory):
    http_server.serve("/feed.xml", b"""<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>
        <title>Sans date</title><item><title>Une commune sans date</title><link>/sans-date</link>
        <description>Un article dont le flux ne donne pas de date.</description></item></channel></rss>""",
                      content_type="application/rss+xml")
    watch = watch_factory(write_sources(tmp_path / "s.yaml", feed_entry("nodate", http_server.url("/feed.xml"),
                                                                         extra="    full_text: false\n")))
    watch.fetch()
    row = rows(watch, "SELECT url, published_at, fetched_at, date_is_fallback FROM articles")[0]
    assert row["date_is_fallback"] == 1 and row["published_at"] == row["fetched_at"]
    assert row["url"] == http_server.url("/sans-date")


def test_cli_fetch_json_and_summary(http_server, tmp_path):
    items = publish(http_server)
    http_server.serve("/feed.xml", rss(items), content_type="application/rss+xml")
    http_server.serve("/missing.xml", b"", status=404)
    sources = write_sources(tmp_path / "s.yaml", feed_entry("hebdo", http_server.url("/feed.xml")),
                            feed_entry("absent", http_server.url("/missing.xml")))
    base = ["--db", str(tmp_path / "v.db"), "--sources", str(sources), "--topics", str(tmp_path / "none.yaml")]
    env = {"VEILLE_ALLOW_PRIVATE": "1", "VEILLE_WORKERS": "1", "VEILLE_POLITENESS_DELAY": "0"}
    result = CliRunner().invoke(main, [*base, "fetch", "--json"], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["new"] == 4
    assert {s["source_id"]: s["status"] for s in data["sources"]} == {"hebdo": "ok", "absent": "failed"}
    result = CliRunner().invoke(main, [*base, "fetch", "--no-full-text", "--source", "absent"], env=env)
    assert result.exit_code == 0
    assert "absent\tfailed" in result.output and "not_found" in result.output
    result = CliRunner().invoke(main, [*base, "fetch", "--source", "nope"], env=env)
    assert result.exit_code == 2 and "unknown source id" in result.output


def test_the_console_script_flushes_all_output_and_keeps_the_exit_codes(tmp_path):
    """`veille` (python -m veille.cli) skips the interpreter's teardown: nothing written may be lost."""
    sources = write_sources(tmp_path / "sources.yaml",
                            *[feed_entry(f"s{i}", f"http://127.0.0.1:9/{i}.xml") for i in range(600)])
    command = [sys.executable, "-m", "veille.cli", "--db", str(tmp_path / "v.db"), "--config",
               str(tmp_path / "none.yaml"), "--topics", str(tmp_path / "none.yaml")]
    listed = subprocess.run([*command, "--sources", str(sources), "sources", "list", "--json"],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [f"s{i}" for i in range(600)]
    broken = write_sources(tmp_path / "broken.yaml", feed_entry("a", "http://127.0.0.1:9/a.xml", extra="    colour: red\n"))
    failed = subprocess.run([*command, "--sources", str(broken), "fetch"], capture_output=True, text=True, timeout=60)
    assert failed.returncode == 2 and "unknown key" in failed.stderr and "broken.yaml" in failed.stderr
    usage = subprocess.run([*command, "fetch", "--no-such-option"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "no-such-option" in usage.stderr


def test_cli_extract_json_uses_the_fetch_path(http_server, tmp_path):
    story = STORIES[2]
    url = http_server.serve(f"/articles/{story.slug}", page(story, http_server.base))
    local = tmp_path / "page.html"
    local.write_text(page(STORIES[3], "http://127.0.0.1"), encoding="utf-8")
    result = CliRunner().invoke(main, ["extract", "--json", url, str(local)], env={"VEILLE_ALLOW_PRIVATE": "1"})
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert [set(line) for line in lines] == [{"input", "title", "author", "date", "lang", "text", "text_source"}] * 2
    assert lines[0]["input"] == url and lines[0]["title"] == story.title
    assert lines[0]["text_source"] == "page" and "Licence Ouverte" in lines[0]["text"]
    assert lines[0]["lang"] == "fr" and lines[0]["date"].startswith("2026-11-19")
    assert lines[1]["title"] == STORIES[3].title


def test_killed_pass_then_rerun_loses_and_duplicates_nothing(http_server, tmp_path):
    """SIGKILL a real `veille fetch` while article pages are slow, rerun, compare with a clean run."""
    items = publish(http_server)

    def slow_page(handler, story=STORIES[3]):
        time.sleep(0.4)
        handler.send_simple(200, page(story, http_server.base).encode(), content_type="text/html; charset=utf-8")

    feeds = []
    for i in range(6):
        path = f"/f{i}.xml"
        http_server.serve(path, rss(items[:3] + [(STORIES[3], http_server.url(f"/lent/{i}"))],
                                    title=f"Flux {i}"), content_type="application/rss+xml")
        http_server.handle(f"/lent/{i}", slow_page)
        feeds.append(feed_entry(f"f{i}", http_server.url(path)))
    sources = write_sources(tmp_path / "s.yaml", *feeds)
    env = {**os.environ, "VEILLE_ALLOW_PRIVATE": "1", "VEILLE_WORKERS": "1", "VEILLE_PER_HOST_CONCURRENCY": "1",
           "VEILLE_POLITENESS_DELAY": "0"}
    cmd = [sys.executable, "-m", "veille.cli", "--sources", str(sources), "--topics", str(tmp_path / "none.yaml")]

    killed_db = tmp_path / "killed.db"
    proc = subprocess.Popen([*cmd, "--db", str(killed_db), "fetch"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(1.8)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run([*cmd, "--db", str(killed_db), "fetch"], env=env, check=True, capture_output=True)
    clean_db = tmp_path / "clean.db"
    subprocess.run([*cmd, "--db", str(clean_db), "fetch"], env=env, check=True, capture_output=True)

    def snapshot(path):
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            dupes = conn.execute("SELECT canonical_url FROM articles GROUP BY canonical_url HAVING count(*) > 1")
            assert dupes.fetchall() == []
            return sorted(conn.execute("SELECT canonical_url, title FROM articles").fetchall())
        finally:
            conn.close()

    assert snapshot(killed_db) == snapshot(clean_db)
    assert len(snapshot(clean_db)) == 4 + 0  # the slow page is the same story under six URLs


def test_run_is_the_main_job_fetch_tag_and_outbox(http_server, tmp_path, monkeypatch):
    """`veille run` on embedded defaults: local SQLite file, digest and outbox written under digests/."""
    from datetime import datetime, timedelta, timezone

    from .corpus import Story

    now = datetime.now(timezone.utc).replace(microsecond=0)
    fresh = [Story(s.slug, s.title, s.lead, s.paragraphs, now - timedelta(minutes=5 + i), s.author)
             for i, s in enumerate(STORIES)]
    items = publish(http_server, fresh)
    http_server.serve("/feed.xml", rss(items), content_type="application/rss+xml")
    write_sources(tmp_path / "sources.yaml", feed_entry("hebdo", http_server.url("/feed.xml")))
    (tmp_path / "topics.yaml").write_text((ROOT / "topics.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    env = {"VEILLE_ALLOW_PRIVATE": "1", "VEILLE_WORKERS": "1", "VEILLE_POLITENESS_DELAY": "0"}
    runner = CliRunner()
    assert runner.invoke(main, ["members", "add", "elue@mairie-exemple.fr", "--name", "Claire Élue"],
                         env=env).exit_code == 0
    result = runner.invoke(main, ["run"], env=env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "veille.db").exists()
    weeks = list((tmp_path / "digests").iterdir())
    assert len(weeks) == 1
    index = (weeks[0] / "index.html").read_text(encoding="utf-8")
    assert fresh[0].title.replace("'", "&#39;") in index or fresh[0].title in index
    assert 'class="trend-chart"' in index and "<svg" in index
    emails = list((weeks[0] / "outbox").glob("*.eml"))
    assert len(emails) == 1
    assert "outbox" in result.output and "index.html" in result.output
    again = runner.invoke(main, ["run"], env=env)
    assert again.exit_code == 0 and "0 new" in again.output


def test_a_large_backlog_is_drained_over_several_passes(http_server, tmp_path, watch_factory, monkeypatch):
    """Pages fetched per pass are capped; validators are not kept until the backlog is done, so no 304 stalls it."""
    import veille.core

    monkeypatch.setattr(veille.core, "MAX_PAGES_PER_SOURCE", 3)
    items = publish(http_server)
    http_server.serve("/feed.xml", rss(items), content_type="application/rss+xml")
    watch = watch_factory(write_sources(tmp_path / "s.yaml", feed_entry("hebdo", http_server.url("/feed.xml"))))
    assert watch.fetch().sources[0].new == 3
    assert watch.store.cache_get(http_server.url("/feed.xml")) is None
    second = watch.fetch().sources[0]
    assert (second.status, second.new) == ("ok", 1)
    assert watch.store.cache_get(http_server.url("/feed.xml")) is not None
    assert watch.fetch().sources[0].status == "not_modified"


def test_sources_check_probes_each_source_and_stores_nothing(http_server, tmp_path):
    items = publish(http_server)
    http_server.serve("/feed.xml", rss(items, title="Territoires Hebdo"), content_type="application/rss+xml")
    http_server.serve("/missing.xml", b"", status=404)
    sources = write_sources(tmp_path / "s.yaml", feed_entry("hebdo", http_server.url("/feed.xml")),
                            feed_entry("absent", http_server.url("/missing.xml")))
    base = ["--db", str(tmp_path / "v.db"), "--sources", str(sources), "--topics", str(tmp_path / "none.yaml")]
    env = {"VEILLE_WORKERS": "1"}
    result = CliRunner().invoke(main, [*base, "sources", "check", "--json"], env=env)
    assert result.exit_code == 1, result.output
    checks = {c["source_id"]: c for c in map(json.loads, result.output.splitlines())}
    assert checks["hebdo"]["ok"] and checks["hebdo"]["title"] == "Territoires Hebdo"
    assert checks["hebdo"]["entries"] == 4 and checks["hebdo"]["last_modified"].startswith("2026-11-20")
    assert not checks["absent"]["ok"] and checks["absent"]["reason"] == "not_found" and checks["absent"]["hint"]
    assert not (tmp_path / "v.db").exists()  # a probe stores nothing, not even an empty archive
    assert len(http_server.hits(f"/articles/{STORIES[0].slug}")) == 0
    table = CliRunner().invoke(main, [*base, "sources", "check", "--source", "hebdo"], env=env)
    assert table.exit_code == 0 and "1/1 sources answered" in table.output and "Territoires Hebdo" in table.output


def test_sources_list_shows_each_source_state(http_server, tmp_path):
    http_server.serve("/gone.xml", b"", status=410)
    sources = write_sources(tmp_path / "s.yaml", feed_entry("parti", http_server.url("/gone.xml")))
    base = ["--db", str(tmp_path / "v.db"), "--sources", str(sources), "--topics", str(tmp_path / "none.yaml")]
    env = {"VEILLE_WORKERS": "1"}
    before = CliRunner().invoke(main, [*base, "sources", "list", "--json"], env=env)
    assert json.loads(before.output)["state"] == "new"
    CliRunner().invoke(main, [*base, "fetch"], env=env)
    after = json.loads(CliRunner().invoke(main, [*base, "sources", "list", "--json"], env=env).output)
    assert after["state"].startswith("disabled: 410 Gone")


# -- group commit -----------------------------------------------------------------------------------


def _batch(source_id: str, n: int, *, fail: bool = False):
    from datetime import datetime, timezone

    from veille.store.articles import FetchLog, SourceBatch
    from veille.types import Article

    now = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)
    owner = "inconnue" if fail else source_id  # an unknown source: the foreign key refuses the article
    articles = [Article(source_id=owner, url=f"http://127.0.0.1:9/{owner}/{i}",
                        canonical_url=f"http://127.0.0.1:9/{owner}/{i}", title=f"Article {i} de {source_id}",
                        text=f"Texte {i} de {source_id} sur la fibre optique.", text_source="feed",
                        published_at=now, fetched_at=now) for i in range(n)]
    return SourceBatch(source_id, articles, FetchLog(source_id, f"http://127.0.0.1:9/{source_id}.xml", now, 1, 200))


def test_sources_finishing_together_are_stored_in_one_transaction(tmp_path, watch_factory):
    """The group writer: batches queued in the same loop turn share one transaction, each lands whole
    with its log line, and a batch failing for its own reason fails alone."""
    import asyncio

    from veille.core import _GroupWriter

    ids = ["a", "b", "c", "d"]
    watch = watch_factory(write_sources(tmp_path / "s.yaml", *(feed_entry(i, f"http://127.0.0.1:9/{i}.xml") for i in ids)))
    watch.store.sync_sources(watch.load_sources())
    transactions = []

    async def run(batches):
        writer = _GroupWriter(watch)
        writer.store.conn.set_trace_callback(lambda sql: transactions.append(sql) if sql.startswith("BEGIN") else None)
        try:
            return await asyncio.gather(*(writer.save(b) for b in batches), return_exceptions=True)
        finally:
            writer.close()

    results = asyncio.run(run([_batch("a", 3), _batch("b", 2), _batch("c", 4)]))
    assert [len(r.new_ids) for r in results] == [3, 2, 4]
    assert len(transactions) == 1, "three sources, one transaction"
    logged = rows(watch, "SELECT source_id, new_count FROM fetch_log ORDER BY source_id")
    assert [tuple(r) for r in logged] == [("a", 3), ("b", 2), ("c", 4)]

    transactions.clear()
    results = asyncio.run(run([_batch("d", 2), _batch("a", 1, fail=True), _batch("b", 3)]))
    assert isinstance(results[1], sqlite3.IntegrityError), "the bad batch gets its own error"
    assert [len(results[0].new_ids), len(results[2].new_ids)] == [2, 1], "b's first two were stored before"
    counts = {r[0]: r[1] for r in rows(watch, "SELECT source_id, count(*) FROM articles GROUP BY source_id")}
    assert counts == {"a": 3, "b": 3, "c": 4, "d": 2}, "nothing of the bad batch, everything of the others"
    assert len(transactions) == 4, "the group, then each batch alone"
    assert rows(watch, "PRAGMA integrity_check")[0][0] == "ok"


def test_a_cancelled_pass_leaves_whole_batches_and_no_error(http_server, tmp_path, watch_factory, monkeypatch, caplog):
    """A pass cancelled (the scheduler's SIGTERM) while a group is written and others wait: the group
    commits whole, the waiting ones are dropped without an error from the writer, a rerun completes."""
    import asyncio

    import veille.core

    monkeypatch.setattr(veille.core, "GROUP_MAX", 1)  # one source a write: always some waiting behind it
    entries = []
    for i in range(30):
        http_server.serve(f"/f{i}.xml", rss(publish(http_server, prefix=f"/s{i}")), content_type="application/rss+xml")
        entries.append(feed_entry(f"s{i}", http_server.url(f"/f{i}.xml")))
    watch = watch_factory(write_sources(tmp_path / "sources.yaml", *entries))
    watch.store.migrate()
    db = sqlite3.connect(tmp_path / "veille.db")  # another reader, as an analyst

    async def cancel_after_first_commit():
        task = asyncio.ensure_future(watch.fetch_async(full_text=False))
        while not task.done() and db.execute("SELECT count(*) FROM articles").fetchone()[0] == 0:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level("ERROR"):
        asyncio.run(cancel_after_first_commit())
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    per_source = dict(db.execute("SELECT source_id, count(*) FROM articles GROUP BY source_id").fetchall())
    logged = {r[0] for r in db.execute("SELECT source_id FROM fetch_log")}
    assert 0 < len(per_source) < 30 and set(per_source.values()) == {len(STORIES)} and logged == set(per_source)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    again = watch.fetch(full_text=False)
    assert {r.source_id: r.status for r in again.sources} == {
        f"s{i}": "not_modified" if f"s{i}" in per_source else "ok" for i in range(30)}, "stored ones answer 304"
    assert db.execute("SELECT count(DISTINCT source_id), count(*) FROM articles").fetchone() == (30, 30 * len(STORIES))


def test_the_loop_keeps_running_while_a_group_is_written(tmp_path, watch_factory):
    """Groups are written in the writer's thread: the event loop (fetching, feeding the parse workers)
    is free meanwhile. The write below waits for the loop to answer; written in the loop, it could not."""
    import asyncio
    import threading

    from veille.core import _GroupWriter

    watch = watch_factory(write_sources(tmp_path / "s.yaml", feed_entry("a", "http://127.0.0.1:9/a.xml")))
    watch.store.sync_sources(watch.load_sources())
    writing, answered, seen = threading.Event(), threading.Event(), []

    def trace(sql: str) -> None:
        if sql.startswith("BEGIN"):
            seen.append(threading.current_thread().name)
            writing.set()
            seen.append(answered.wait(10))

    async def run():
        writer = _GroupWriter(watch)
        writer.store.conn.set_trace_callback(trace)
        try:
            saving = asyncio.ensure_future(writer.save(_batch("a", 2)))
            while not writing.is_set():
                await asyncio.sleep(0.01)
            answered.set()
            return await saving
        finally:
            writer.close()

    result = asyncio.run(run())
    assert seen[0].startswith("veille-writer") and seen[1] is True
    assert len(result.new_ids) == 2
    assert rows(watch, "SELECT count(*) FROM articles")[0][0] == 2


def test_the_last_group_is_written_at_once_when_every_source_waits_for_it(http_server, tmp_path, watch_factory,
                                                                          monkeypatch):
    """At the end of a pass every source still running waits for the writer: nobody is left to share
    the transaction, so it does not wait `GROUP_WAIT` for them (set to a minute here)."""
    import veille.core

    monkeypatch.setattr(veille.core, "GROUP_WAIT", 60.0)
    for i in range(3):
        http_server.serve(f"/f{i}.xml", rss(publish(http_server, prefix=f"/s{i}")), content_type="application/rss+xml")
    watch = watch_factory(write_sources(tmp_path / "s.yaml", *(feed_entry(f"s{i}", http_server.url(f"/f{i}.xml"))
                                                               for i in range(3))))
    started = time.monotonic()
    assert {r.status for r in watch.fetch(full_text=False).sources} == {"ok"}
    assert {r.status for r in watch.fetch(full_text=False).sources} == {"not_modified"}
    assert time.monotonic() - started < 30, "a group waited for sources that had all finished"
    assert rows(watch, "SELECT count(*) FROM fetch_log")[0][0] == 6
