"""The library facade: `Watch` ties the stages together (fetch -> parse -> extract -> dedupe -> store -> tag).

The CLI, the scheduler, the demo and the tests all drive veille through this object, so a behaviour
tested here is the behaviour users get. One source's failure is recorded on its row and in the fetch log;
it never stops the pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import pickle
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

from .config import Settings, load_settings, load_sources
from .errors import ConfigError, ExtractError, FetchError, ParseError, SourceError, StoreError, VeilleError
from .store import Store, utcnow
from .store.articles import CacheEntry, FetchLog, SaveResult, SourceBatch, SourceState
from .types import Article, Entry, Extracted, PassResult, Response, Source, SourceResult, TopicMatch

if TYPE_CHECKING:
    from .tag import Topic

log = logging.getLogger("veille")
_T = TypeVar("_T")

MAX_SITEMAP_CHILDREN = 20
MAX_PAGES_PER_SOURCE = 100
"""New article pages fetched per source and pass: a new 5,000-URL sitemap is drained over several passes."""


class _InlineExecutor(Executor):
    """Runs work in the calling process: for `workers: 1`, tests and debugging."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any):  # type: ignore[override]
        from concurrent.futures import Future

        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting caller
            future.set_exception(e)
        return future


GROUP_WAIT = 0.1
"""Seconds a finished source's batch waits for others to share its transaction (see `_GroupWriter`)."""
GROUP_MAX = 64
"""Sources per group at most: the write lock is held for a bounded time (0.2-0.35 s on a cold pass), and
the last group, written when nothing else is left to do, stays short."""


WRITER_CACHE_KB = 16384
"""Page cache of the writer's connection (SQLite's default is 2 MB): the indexes a cold pass inserts into
(URLs, guids, tags, full-text segments) stay in memory between groups; 3 % less storing time."""


class _GroupWriter:
    """Stores the batches of the sources that finish together in one transaction (group commit), in a
    thread of its own with its own connection.

    One transaction per source cost a commit each, and FTS5 writes an index segment per INSERT
    statement that it must merge later: a cold pass spent a third of its main process there. A batch
    waits `GROUP_WAIT` for others, and batches keep queueing while a group is written, so groups grow
    with the load. Each source still lands whole or not at all. A batch that fails for its own reason
    (not a database error, which stops the pass) is retried alone, so it fails alone.

    Writing in the event loop stopped fetching for the length of every group (a quarter of a second
    on a cold pass), and the parse workers then ran dry. In a thread, the loop keeps fetching; SQLite
    releases the GIL while it works. The thread's connection only writes these batches, so the loop's
    own reads (what a source already has) see committed rows only.

    When every source still running is waiting for it (the end of a pass), there is nobody left to
    wait for: the group is written at once instead of after `GROUP_WAIT`.
    """

    def __init__(self, watch: "Watch") -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.watch = watch
        self.queue: list[tuple[SourceBatch, list[Any] | None, asyncio.Future[SaveResult]]] = []
        self.store = watch.writer_store()
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="veille-writer")
        self.writing = False
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None
        self.running = 0
        """Sources of the pass not finished yet (`track`); 0 when nobody tracks them (batches then
        always wait `GROUP_WAIT`)."""

    def track(self, task: asyncio.Future) -> None:
        """Count `task`, one source of the pass, among those that may still bring a batch."""
        self.running += 1
        task.add_done_callback(self._source_done)

    async def save(self, batch: SourceBatch, rows: list[Any] | None = None) -> SaveResult:
        """Store `batch` (with the tag rows of its articles, if any); returns when it is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[SaveResult] = loop.create_future()
        self.queue.append((batch, rows, future))
        if not self.writing:
            if self._all_waiting():
                self._flush()
            elif self.timer is None:
                self.timer = loop.call_later(GROUP_WAIT, self._flush)
        return await future

    def _source_done(self, _task: asyncio.Future) -> None:
        self.running -= 1
        if not self.writing and self._all_waiting():
            self._flush()

    def _all_waiting(self) -> bool:
        """Every source still running has queued its batch. False when none is running: nobody tracks
        them, or the pass was cancelled and its queued batches are dropped with their tasks."""
        return 0 < self.running <= len(self.queue)

    def close(self) -> None:
        """Wait for the group being written (it commits); batches still queued are dropped with their
        sources' tasks (a cancelled pass)."""
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        self.thread.shutdown(wait=True)

    def _flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.writing or not self.queue or self.closed:
            return
        queue, self.queue = self.queue[:GROUP_MAX], self.queue[GROUP_MAX:]
        if not any(batch.articles for batch, _, _ in queue):
            # Fetch log lines only (a warm pass's 304s): quicker written here than handed to the thread,
            # whose switches cost a warm pass 0.2 s.
            self._written(queue, self._write(queue))
            return
        self.writing = True
        loop = asyncio.get_running_loop()

        def written(done: Any) -> None:  # in the writer thread
            error = done.exception()
            with contextlib.suppress(RuntimeError):  # the loop is gone: a stopped pass, nobody waits
                loop.call_soon_threadsafe(self._written, queue, [error] * len(queue) if error else done.result())

        self.thread.submit(self._write, queue).add_done_callback(written)

    def _written(self, queue: list, outcomes: list[SaveResult | BaseException]) -> None:
        self.writing = False
        for (_, _, future), outcome in zip(queue, outcomes):
            if not future.done():
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
        if self.queue:  # they waited while the group was written: no need to wait more
            self._flush()

    def _write(self, queue: list) -> list[SaveResult | BaseException]:
        """The group in one transaction, or each batch alone if one failed (in the writer thread, or in
        the loop for a group of log lines only)."""
        store = self.store

        def tags(results: list[SaveResult]) -> None:
            outcomes = [o for result in results for o in result.outcomes]
            per_article = [r for batch, rows, _ in queue for r in (rows or [None] * len(batch.articles))]
            self.watch._store_tags(store, outcomes, per_article)

        try:
            return list(store.save_source_batches([batch for batch, _, _ in queue], then=tags))
        except StoreError as e:
            return [e] * len(queue)
        except Exception as e:  # noqa: BLE001 - a batch's own problem: handed to its source
            if len(queue) > 1:
                return [self._write([item])[0] for item in queue]
            return [e]


POOL_BATCH = 8
"""Feeds sent to a pool process in one task at most (`_FeedQueue`): 8 took a cold pass 1-2 % less time
than 4 and about as much as 16 (bench/ingest.py), and a task stays under ~50 ms of work, so the last ones
of a pass end together."""


class _FeedQueue:
    """Feed-only parse jobs on their way to the pool, several to a task.

    Each task costs the main process ~0.35 ms besides its result (the executor's threads wake up, move
    it along and hand the result over; bench: a pool of two and 1,000 tasks), which was as much again as
    unpickling the result. Fetching runs ahead of parsing, so jobs wait here while `2 x workers` tasks are
    out, and leave together, up to `POOL_BATCH` a task, as soon as one comes back: a worker always has a
    task queued and no feed waits longer than it would have in the executor's own queue. A job's failure
    is its own (`_parse_and_build_many`).
    """

    def __init__(self, watch: "Watch") -> None:
        self.watch = watch
        self.waiting: list[tuple[tuple, asyncio.Future]] = []
        self.out = 0
        self.limit = 2 * watch.workers

    async def parse(self, *job: Any) -> Any:
        """`_parse_and_build(*job)` in a pool process."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((job, future))
        self._send()
        return await future

    def _send(self) -> None:
        while self.waiting and self.out < self.limit:
            batch = [item for item in self.waiting[:POOL_BATCH] if not item[1].done()]  # done: cancelled
            del self.waiting[:POOL_BATCH]
            if not batch:
                continue
            self.out += 1
            task = asyncio.get_running_loop().run_in_executor(
                self.watch.pool(), _parse_and_build_many, [job for job, _ in batch])
            task.add_done_callback(lambda done, batch=batch: self._back(done, batch))

    def _back(self, done: asyncio.Future, batch: list[tuple[tuple, asyncio.Future]]) -> None:
        self.out -= 1
        error = None if done.cancelled() else done.exception()
        for i, (_, future) in enumerate(batch):
            if future.done():
                continue
            if done.cancelled():
                future.cancel()
            elif error is not None:  # the task itself failed (a pool process died): every job with it
                future.set_exception(error)
            else:
                ok, value = done.result()[i]
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        self._send()


@dataclass(frozen=True)
class ExtractResult:
    """`veille extract` output for one input: the article exactly as `veille fetch` would store it."""

    input: str
    article: Article | None
    error: str | None = None


@dataclass(frozen=True)
class SourceCheck:
    """`veille sources check` output for one source."""

    source_id: str
    url: str
    ok: bool
    title: str | None = None
    entries: int = 0
    last_modified: datetime | None = None
    final_url: str | None = None
    warnings: tuple[str, ...] = ()
    error: str | None = None
    hint: str | None = None
    reason: str | None = None


class Watch:
    """A press watch over one database and its configuration files."""

    def __init__(
        self,
        db: str | Path = "veille.db",
        sources: str | Path = "sources.yaml",
        topics: str | Path = "topics.yaml",
        config: str | Path | None = "veille.yaml",
        readonly: bool = False,
        settings: Settings | None = None,
    ) -> None:
        self.db_path = Path(db)
        self.sources_path = Path(sources)
        self.topics_path = Path(topics)
        self.config_path = Path(config) if config else None
        self.readonly = readonly
        self._settings = settings
        self._store: Store | None = None
        self._sources: list[Source] | None = None
        self._topics: list[Topic] | None = None
        self._tagger: Any = None
        self._pool: Executor | None = None
        self._writer: Store | None = None
        self._writer_lock = threading.Lock()
        self._page_slots: asyncio.Semaphore | None = None
        self._tagger_pickle: tuple[str, bytes] | None = None
        self._pool_tagger: str | None = None
        """Rule hash of the tagger the pool's processes were given when they started."""
        self._synced = False
        """Sources and topics are written to the archive once per configuration, not on every pass."""

    # -- configuration ------------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    @property
    def workers(self) -> int:
        """Processes of the pool: `workers` in the settings, 0 meaning one per core."""
        return self.settings.workers or os.cpu_count() or 1

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store.open(self.db_path, readonly=self.readonly)
        return self._store

    def load_sources(self) -> list[Source]:
        if self._sources is None:
            self._sources = load_sources(self.sources_path)
        return self._sources

    def load_topics(self) -> list["Topic"]:
        if self._topics is None:
            if not self.topics_path.exists():
                self._topics = []
            else:
                from .tag import load_topics

                self._topics = load_topics(self.topics_path)
        return self._topics

    def reload(self) -> None:
        """Re-read every configuration file; on an invalid one keep the previous configuration and raise."""
        settings = load_settings(self.config_path)
        sources = load_sources(self.sources_path)
        from .tag import load_topics

        topics = load_topics(self.topics_path) if self.topics_path.exists() else []
        self._settings, self._sources, self._topics, self._tagger = settings, sources, topics, None
        self._synced = False
        self._tagger_pickle = None

    @property
    def tagger(self) -> Any:
        if self._tagger is None:
            from .tag import Tagger

            self._tagger = Tagger(self.load_topics())
        return self._tagger

    def writer_store(self) -> Store:
        """The connection passes write their groups through (`_GroupWriter`, in its thread), kept from
        pass to pass: its SimHash index is loaded once, then only the rows added since (a new connection
        per pass reloaded 100,000 hashes for a pass that might store one article)."""
        with self._writer_lock:
            if self._writer is None:
                self._writer = Store.open(self.store.path, migrate=False)
                self._writer.conn.execute(f"PRAGMA cache_size = -{int(WRITER_CACHE_KB)}")
            return self._writer

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._pool_tagger = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pool(self) -> Executor:
        """Processes for CPU-bound parsing and extraction, so they never stall the fetching loop."""
        if self._pool is None:
            workers = self.workers
            if workers == 1:
                self._pool = _InlineExecutor()
            else:
                try:
                    tagger = self._tagger_blob()
                except VeilleError:  # an invalid topics.yaml: reported by whatever needs the topics
                    tagger = None
                self._pool_tagger = tagger[0] if tagger else None
                self._pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(tagger,))
        return self._pool

    # -- topics -------------------------------------------------------------------------------------

    def sync_topics(self) -> list[str]:
        """Store the current topics and re-tag the archive for those whose rule changed."""
        from . import tag

        topics = self.load_topics()
        changed = tag.sync_topics(self.store, topics)
        if changed:
            tag.retag(self.store, topics, changed)
        return changed

    def retag(self, topic_ids: Sequence[str] | None = None) -> Any:
        from . import tag

        topics = self.load_topics()
        known = {t.id for t in topics}
        for topic_id in topic_ids or ():
            if topic_id not in known:
                raise ConfigError(str(self.topics_path), None, topic_id, "unknown topic id",
                                  "see `veille topics list`")
        tag.sync_topics(self.store, topics)
        return tag.retag(self.store, topics, list(topic_ids) if topic_ids else None)

    def _tagger_blob(self) -> tuple[str, bytes] | None:
        """The tagger pickled once per configuration, for the workers (None without topics)."""
        if not self.load_topics():
            return None
        if self._tagger_pickle is None:
            self._tagger_pickle = (self.tagger.rule_hash, pickle.dumps(self.tagger))
        return self._tagger_pickle

    def _task_tagger(self) -> tuple[str, bytes | None] | None:
        """What a task tells its worker of the tagger: the rule hash alone when the pool's processes got
        that tagger as they started, else the hash and the pickle (67 KB with the default topics, sent
        with each of a cold pass's thousand tasks: 0.13 s of CPU)."""
        blob = self._tagger_blob()
        if blob is not None and blob[0] == self._pool_tagger:
            return blob[0], None
        return blob

    def _store_tags(self, store: Store, outcomes: Sequence[tuple[int, str]], rows: Sequence[Any]) -> None:
        """Tags of the articles a batch created or changed (rows made by `tag.tag_rows` in the workers),
        stored in the batch's transaction. Articles stored without tags (topics added since, a batch
        from an older version) are caught up by `tag_pending` at the next start."""
        if not self.load_topics():
            return
        from . import tag

        tagged = [(article_id, found) for (article_id, status), found in zip(outcomes, rows)
                  if status in ("new", "updated") and found is not None]
        tag.store_tag_rows(store, self.tagger, tagged)

    # -- fetching -----------------------------------------------------------------------------------

    def select_sources(self, source_ids: Sequence[str] | None) -> list[Source]:
        sources = self.load_sources()
        if not source_ids:
            return sources
        by_id = {s.id: s for s in sources}
        unknown = [i for i in source_ids if i not in by_id]
        if unknown:
            raise ConfigError(str(self.sources_path), None, unknown[0], "unknown source id",
                              "see `veille sources list`")
        return [by_id[i] for i in dict.fromkeys(source_ids)]

    def fetch(
        self,
        source_ids: Sequence[str] | None = None,
        *,
        full_text: bool | None = None,
        progress: Callable[[SourceResult], None] | None = None,
        respect_backoff: bool = False,
    ) -> PassResult:
        """One pass over the sources (all, or those named). See `fetch_async`."""
        return asyncio.run(self.fetch_async(source_ids, full_text=full_text, progress=progress,
                                            respect_backoff=respect_backoff))

    async def fetch_async(
        self,
        source_ids: Sequence[str] | None = None,
        *,
        full_text: bool | None = None,
        progress: Callable[[SourceResult], None] | None = None,
        respect_backoff: bool = False,
    ) -> PassResult:
        """Fetch, parse, extract, store and tag; each source's batch lands in one transaction.

        `full_text=False` overrides every source's `full_text` (the `--no-full-text` flag);
        `respect_backoff` skips sources whose next attempt is not due yet (the scheduler sets it;
        a manual `veille fetch` tries every source).
        """
        from .fetch import Fetcher

        started = utcnow()
        sources = self.select_sources(source_ids)
        _ = self.settings  # every configuration file is validated before the archive is touched
        topics = self.load_topics()
        if sources and not self.store.has_validators([s.url for s in sources]):
            # Some feed will surely be parsed: the pool's processes get ready while the archive is
            # prepared. A pass of conditional GETs (mostly 304s) starts them only if a feed changed.
            self.pool().submit(_ready)
        if not self._synced:
            self.store.sync_sources(self.load_sources())
            from . import dedupe

            if self.store.simhash_version() != dedupe.SIMHASH_VERSION:  # a new archive, or an upgrade
                changed = self.store.rehash_articles(dedupe.SIMHASH_VERSION, dedupe.simhash)
                if changed:
                    log.info("recomputed %d SimHashes (version %d)", changed, dedupe.SIMHASH_VERSION)
            if topics:
                from .tag import tag_pending

                self.sync_topics()
                tag_pending(self.store, self.tagger)
            self._synced = True
        # Pages in hand (being fetched, or waiting for the pool) are bounded: fetching is faster than
        # extracting, and unbounded it queued every page of the pass in memory (bench/ingest.py: 185 MB
        # for 2,000 pages, growing with the pass). The bound never throttles more than `concurrency` does.
        self._page_slots = asyncio.Semaphore(self.settings.concurrency + 2 * self.workers)
        with _relaxed_gc():
            async with Fetcher(self.settings) as fetcher, contextlib.AsyncExitStack() as cleanup:
                writer = _GroupWriter(self)
                cleanup.callback(writer.close)
                # Read in bulk before the tasks start: each task runs up to its first wait as it is
                # created, and two queries apiece held the first requests back (~0.1 s for 1,000 sources).
                states = self.store.source_states([s.id for s in sources])
                caches = self.store.cache_entries([state.current_url for state in states.values()])
                feeds = _FeedQueue(self)
                tasks = [asyncio.ensure_future(self._fetch_source(
                    fetcher, writer, feeds, s, states[s.id], caches.get(states[s.id].current_url), full_text,
                    respect_backoff)) for s in sources]
                for task in tasks:
                    writer.track(task)
                results = []
                try:
                    for coro in asyncio.as_completed(tasks):
                        result = await coro
                        results.append(result)
                        if progress:
                            progress(result)
                except BaseException:  # a database error (or the caller's): the other sources stop here
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise
        order = {s.id: i for i, s in enumerate(sources)}
        results.sort(key=lambda r: order[r.source_id])
        return PassResult(started_at=started, finished_at=utcnow(), sources=tuple(results))

    async def _fetch_source(self, fetcher: Any, writer: "_GroupWriter", feeds: _FeedQueue, source: Source,
                            state: SourceState, cache: CacheEntry | None, full_text: bool | None,
                            respect_backoff: bool) -> SourceResult:
        t0 = time.monotonic()
        started = utcnow()
        url = state.current_url
        if not state.enabled:
            return SourceResult(source.id, url, "disabled", error=state.disabled_reason)
        if respect_backoff and state.next_attempt_at and state.next_attempt_at > started:
            return SourceResult(source.id, url, "skipped", error=state.last_error, reason="backoff")
        response: Response | None = None
        try:
            response = await fetcher.fetch(
                url, source_id=source.id, etag=cache.etag if cache else None,
                last_modified=cache.last_modified if cache else None, allow_private=source.allow_private,
            )
            if response.not_modified:
                await writer.save(SourceBatch(source.id, (), FetchLog(source.id, url, started, _ms(t0), status=304)))
                return SourceResult(source.id, url, "not_modified", duration=time.monotonic() - t0)
            want_pages = source.full_text if full_text is None else (full_text and source.full_text)
            if want_pages or source.type == "sitemap":
                parsed = await self._parse(source, response)
                entries = list(parsed.entries)
                for child in parsed.children[:MAX_SITEMAP_CHILDREN]:
                    child_response = await fetcher.fetch(child, source_id=source.id,
                                                         allow_private=source.allow_private)
                    entries.extend((await self._parse(source, child_response)).entries)
                count = len(entries)
                built, complete = await self._articles(fetcher, source, entries, want_pages, started)
            else:  # one trip to a worker, which parses, builds and matches every entry
                parsed, built = await feeds.parse(source.id, source.type, response.content, response.url,
                                                  response.charset, source.link_selector, started,
                                                  self._task_tagger())
                count, complete = len(built), True
                # Known articles are sorted out by the writer, which looks every article up anyway: the
                # loop's own lookup cost a cold pass 0.15 s of the main process for nothing.
                built = _unique(built, lambda item: item[0])
            for warning in parsed.warnings:
                log.warning("source %s <%s>: %s", source.id, url, warning)
            validators = (response.etag, response.last_modified) if complete else (None, None)
            saved = await writer.save(SourceBatch(
                source.id, [article for article, _ in built],
                FetchLog(source.id, url, started, _ms(t0), status=response.status, bytes=len(response.content)),
                cache=[(url, *validators)] + ([(response.permanent_redirect, *validators)]
                                              if response.permanent_redirect else []),
                title=parsed.title, moved_to=response.permanent_redirect, keep_same_title=True,
            ), [rows for _, rows in built])
            return SourceResult(source.id, url, "ok", new=len(saved.new_ids), updated=len(saved.updated_ids),
                                entries=count, duration=time.monotonic() - t0)
        except SourceError as e:
            return self._failed(source, url, e, started, t0, response)
        except StoreError:
            raise
        except Exception as e:  # a bug or an unexpected library error must not stop the other sources
            log.exception("source %s <%s>: unexpected error", source.id, url)
            wrapped = SourceError(source.id, url, f"unexpected error: {type(e).__name__}: {e}",
                                  "this is a bug in veille: please report it with the fetch log")
            return self._failed(source, url, wrapped, started, t0, response)

    def _failed(self, source: Source, url: str, error: SourceError, started: datetime, t0: float,
                response: Response | None) -> SourceResult:
        from .fetch import next_attempt

        state = self.store.source_state(source.id)
        failures = (state.consecutive_failures if state else 0) + 1
        reason = getattr(error, "reason", None) or _reason_of(error)
        retry_after = getattr(error, "retry_after", None)
        disable = None
        if reason == "gone":
            disable = f"410 Gone at {url}: the publisher removed this feed; find its new URL and update sources.yaml"
        self.store.record_failure(
            FetchLog(source.id, url, started, _ms(t0), status=getattr(error, "status", None) or
                     (response.status if response else None), bytes=len(response.content) if response else 0,
                     reason=reason, error=str(error)),
            next_attempt_at=None if disable else next_attempt(failures, started, self.settings, retry_after),
            disable=disable,
        )
        log.warning("%s", error)
        return SourceResult(source.id, url, "failed", error=error.message, reason=reason,
                            hint=error.hint or None, duration=time.monotonic() - t0)

    async def _parse(self, source: Source, response: Response) -> Any:
        from .parse import parse_document

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.pool(), parse_document, source.id, source.type, response.content, response.url,
            response.charset, source.link_selector,
        )

    async def _articles(self, fetcher: Any, source: Source, entries: list[Entry], want_pages: bool,
                        fetched_at: datetime) -> tuple[list[tuple[Article, list[TopicMatch] | None]], bool]:
        """Turn the entries that are new (or changed) into articles with their topics, fetching and
        extracting their pages.

        Returns the articles and whether every fresh entry was handled: at most `MAX_PAGES_PER_SOURCE`
        pages are fetched per pass, and the caller then keeps no validators so the next pass goes on.

        The articles are built and matched in the pool: SimHash and matching are CPU-bound and the main
        process is the pass's bottleneck (bench/ingest.py).
        """
        fresh = self._fresh(source, entries)
        if not fresh:
            return [], True
        loop = asyncio.get_running_loop()
        tagger = self._task_tagger()
        if not want_pages:
            return await loop.run_in_executor(self.pool(), _build_articles, [(e, None, None) for e in fresh],
                                              fetched_at, tagger), True
        complete = len(fresh) <= MAX_PAGES_PER_SOURCE
        fresh = fresh[:MAX_PAGES_PER_SOURCE]
        pages = await asyncio.gather(*(self._page(fetcher, source, e) for e in fresh))
        built = await loop.run_in_executor(
            self.pool(), _build_articles,
            [(e, extracted, final_url) for e, (extracted, final_url) in zip(fresh, pages)], fetched_at, tagger)
        return built, complete

    def _fresh(self, source: Source, entries: list[Entry]) -> list[Entry]:
        """Entries not stored yet or whose title changed: the pages of unchanged ones are not fetched."""
        unique = _unique(entries, lambda entry: entry)
        known = self.store.known_entries(source.id, unique)
        return [entry for entry in unique if known.get(entry.guid or entry.url) != entry.title]

    async def _page(self, fetcher: Any, source: Source, entry: Entry) -> tuple[Extracted | None, str | None]:
        from .extract import extract_page

        try:
            async with self._page_slots or contextlib.nullcontext():
                response = await fetcher.fetch(entry.url, source_id=source.id, robots=True,
                                               allow_private=source.allow_private)
                loop = asyncio.get_running_loop()
                extracted = await loop.run_in_executor(self.pool(), extract_page, response.content, response.url,
                                                       response.charset)
            return extracted, response.url
        except (FetchError, ExtractError, ParseError) as e:
            log.info("source %s: keeping the feed's text for <%s>: %s", source.id, entry.url, e)
            return None, None

    # -- digests -------------------------------------------------------------------------------------

    def send_digest(self, week: str | None = None, *, send: bool = True, member_email: str | None = None,
                    retry_uncertain: bool = False) -> Any:
        """Build the week's digest (default: the current ISO week, Paris time) and serve every member once.

        Sends over SMTP when `send` and an SMTP host is configured, else writes the outbox. Idempotent:
        the deliveries table skips members already served.
        """
        from .digest import resolve_week
        from .mail import deliver_week

        return deliver_week(self.store, resolve_week(week), self.settings, self.load_sources(), send=send,
                            member_email=member_email, retry_uncertain=retry_uncertain)

    # -- probing sources -----------------------------------------------------------------------------

    def check_sources(self, source_ids: Sequence[str] | None = None) -> list[SourceCheck]:
        """Fetch and parse each source without storing anything: what `veille sources check` shows."""
        return asyncio.run(self._check_async(self.select_sources(source_ids)))

    async def _check_async(self, sources: list[Source]) -> list[SourceCheck]:
        from .fetch import Fetcher

        async def probe(fetcher: Any, source: Source) -> SourceCheck:
            try:
                response = await fetcher.fetch(source.url, source_id=source.id, allow_private=source.allow_private)
                parsed = await self._parse(source, response)
                return SourceCheck(source.id, source.url, True, parsed.title, len(parsed.entries),
                                   parsed.last_modified, final_url=response.url,
                                   warnings=tuple(parsed.warnings))
            except SourceError as e:
                return SourceCheck(source.id, source.url, False, error=e.message, hint=e.hint or None,
                                   reason=getattr(e, "reason", None) or _reason_of(e))

        async with Fetcher(self.settings) as fetcher:
            return list(await asyncio.gather(*(probe(fetcher, s) for s in sources)))

    # -- extraction for debugging -------------------------------------------------------------------

    def extract(self, inputs: Sequence[str]) -> list[ExtractResult]:
        """What the extractor keeps from pages (files or URLs), through the very path `fetch` uses."""
        return asyncio.run(self._extract_async(inputs))

    async def _extract_async(self, inputs: Sequence[str]) -> list[ExtractResult]:
        from .extract import build_article, extract_page
        from .fetch import Fetcher

        results: list[ExtractResult] = []
        now = utcnow()
        async with Fetcher(self.settings) as fetcher:
            for item in inputs:
                try:
                    if item.startswith(("http://", "https://")):
                        response = await fetcher.fetch(item, robots=True)
                        content, url, charset = response.content, response.url, response.charset
                    else:
                        path = Path(item)
                        try:
                            content = path.read_bytes()
                        except OSError as e:
                            raise ExtractError(None, item, f"cannot read the file: {e.strerror}") from e
                        url, charset = path.resolve().as_uri(), None
                    loop = asyncio.get_running_loop()
                    extracted = await loop.run_in_executor(self.pool(), extract_page, content, url, charset)
                    entry = Entry(source_id="extract", url=url)
                    results.append(ExtractResult(item, build_article(entry, extracted, now, url)))
                except SourceError as e:
                    results.append(ExtractResult(item, None, str(e)))
        return results


def _build_articles(items: list[tuple[Entry, Extracted | None, str | None]], fetched_at: datetime,
                    tagger: tuple[str, bytes] | None = None) -> list[tuple[Article, tuple | None]]:
    """`build_article` over one source's batch, with each article's tag rows (`Tagger.rows`), in a
    worker process (top-level so it pickles).

    Matching is CPU-bound and the main process is a cold pass's bottleneck, so it runs here. The tagger
    comes pickled once per pass with its rule hash and is unpickled once per worker.
    """
    from .extract import build_articles

    matcher = _worker_tagger(*tagger) if tagger else None
    return [(article, matcher.rows(article.title, article.summary, article.text) if matcher else None)
            for article in build_articles(items, fetched_at, parsed=True)]


def _parse_and_build(source_id: str, source_type: str, content: bytes, url: str, charset: str | None,
                     link_selector: str | None, fetched_at: datetime, tagger: tuple[str, bytes] | None,
                     ) -> tuple[Any, list[tuple[Article, tuple | None]]]:
    """Parse a document and build every entry into an article, in one trip to a worker: the entries
    do not travel to the main process and back. Building the entries the archive already has costs
    the worker ~0.2 ms each, less than the round trip it saves (bench/ingest.py)."""
    from dataclasses import replace

    from .parse import parse_document

    parsed = parse_document(source_id, source_type, content, url, charset, link_selector)
    built = _build_articles([(entry, None, None) for entry in parsed.entries], fetched_at, tagger)
    return replace(parsed, entries=()), built


def _parse_and_build_many(jobs: list[tuple]) -> list[tuple[bool, Any]]:
    """`_parse_and_build` of several feeds (`_FeedQueue`): (True, result) or (False, exception) each, so
    that one feed's failure stays its own."""
    out: list[tuple[bool, Any]] = []
    for job in jobs:
        try:
            out.append((True, _parse_and_build(*job)))
        except Exception as e:  # noqa: BLE001 - handed to the job's source
            out.append((False, _sendable(e)))
    return out


def _sendable(error: Exception) -> Exception:
    """The error as it can travel back from a pool process: with the worker's traceback as a note (as
    the executor attaches it), or reduced to its message if it cannot be pickled."""
    import traceback

    error.add_note("in the pool process:\n" + "".join(traceback.format_tb(error.__traceback__)).rstrip())
    try:
        pickle.dumps(error)
    except Exception:  # noqa: BLE001 - whatever pickling raises, the message still gets through
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def _unique(items: list[_T], record: Callable[[_T], Entry | Article]) -> list[_T]:
    """The first of the items sharing a guid (or, without one, a link): a feed listing an entry twice."""
    unique: dict[str, _T] = {}
    for item in items:
        unique.setdefault(record(item).guid or record(item).url, item)
    return list(unique.values())


GC_THRESHOLDS = (50_000, 20, 20)
"""Cycle-collector thresholds during a pass, in the main process and the workers. A pass allocates
millions of small acyclic objects (entries, articles, rows, pickles): at Python's default (700, 10, 10)
the collector ran thousands of times and cost about a tenth of a cold pass (bench/ingest.py)."""


def _relax_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


_IN_POOL = False
"""True in a pool process (set by `_init_worker`)."""


def _init_worker(tagger: tuple[str, bytes] | None = None) -> None:
    """A pool process starts by loading what every pass needs (lxml, numpy, the matcher: ~0.1 s) and the
    pass's tagger, while the main process is still reading the configuration and the archive
    (`fetch_async` starts the pool first when a feed will surely be parsed); the first feeds no longer
    wait for it. So does what would otherwise be built at first use: the SimHash character table and
    the matcher's patterns made the first feed take 50 ms instead of 6. What it loaded is frozen out of
    the cycle collector's scans (as `_relaxed_gc` does in the main process): the first collection
    walked it all (~70 ms)."""
    global _IN_POOL, _POOL_TAGGER
    _IN_POOL = True
    _relax_gc()
    from . import _simhash, extract, parse, tag  # noqa: F401

    _simhash.prepare()
    if tagger is not None:
        _POOL_TAGGER = tagger[0], pickle.loads(tagger[1])
        _POOL_TAGGER[1].prepare()
    gc.freeze()


def _ready() -> None:
    """Nothing: submitted once to start the pool's processes."""


_gc_lock = threading.Lock()
_gc_passes: list[tuple[int, int, int]] = []
"""The thresholds found by each pass running in this process (passes may overlap in threads)."""


@contextlib.contextmanager
def _relaxed_gc() -> Any:
    """`GC_THRESHOLDS` for the duration of a pass; what was allocated before (modules, configuration,
    the tagger) is frozen out of the collector's scans. The first pass in sets them, the last out
    restores what it found."""
    with _gc_lock:
        _gc_passes.append(gc.get_threshold())
        gc.freeze()
        _relax_gc()
    try:
        yield
    finally:
        with _gc_lock:
            previous = _gc_passes.pop()
            if not _gc_passes:
                gc.set_threshold(*previous)
                gc.unfreeze()


_POOL_TAGGER: tuple[str, Any] | None = None
"""(rule hash, tagger) given to this pool process as it started (`Watch.pool`)."""
_TAGGERS: dict[str, Any] = {}
"""The last other tagger a task brought (topics reloaded since the pool started)."""


def _worker_tagger(rule_hash: str, blob: bytes | None) -> Any:
    """The tagger of `rule_hash`: the process's own, or unpickled from `blob` once (`Watch._task_tagger`)."""
    if _POOL_TAGGER is not None and _POOL_TAGGER[0] == rule_hash:
        return _POOL_TAGGER[1]
    if rule_hash not in _TAGGERS:
        if blob is None:
            raise RuntimeError(f"this worker was not given the tagger {rule_hash[:12]}")
        _TAGGERS.clear()
        _TAGGERS[rule_hash] = pickle.loads(blob)
        if _IN_POOL:  # kept for the process's life: out of the collector's scans (never a library user's)
            gc.freeze()
    return _TAGGERS[rule_hash]


def _ms(t0: float) -> int:
    return int((time.monotonic() - t0) * 1000)


def _reason_of(error: SourceError) -> str:
    if isinstance(error, ParseError):
        return "bad_content"
    if isinstance(error, ExtractError):
        return "extraction"
    return "error"
