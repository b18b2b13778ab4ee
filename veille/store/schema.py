"""The archive's schema as numbered, append-only migrations.

The schema is the analysts' interface (docs/schema.md documents every column): never edit a migration
that has shipped, add a new one. `PRAGMA user_version` holds the number of the last one applied.
Times are TEXT in UTC, ISO 8601 with a `Z` (`2026-11-24T08:30:00Z`), so they sort and compare as text.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = []


def migration(number: int, name: str, sql: str) -> None:
    assert number == len(MIGRATIONS) + 1, "migrations are numbered 1, 2, 3... without gaps"
    MIGRATIONS.append((number, name, sql))


migration(1, "ingestion", """
-- One row per source of sources.yaml (kept when a source leaves the file, so its articles stay readable).
CREATE TABLE sources (
    id TEXT PRIMARY KEY,                 -- slug from sources.yaml
    name TEXT NOT NULL,                  -- display name
    type TEXT NOT NULL CHECK (type IN ('feed', 'html', 'sitemap')),
    url TEXT NOT NULL,                   -- URL as written in sources.yaml
    current_url TEXT NOT NULL,           -- URL actually fetched: follows permanent redirects
    title TEXT,                          -- title the feed gives itself
    enabled INTEGER NOT NULL DEFAULT 1,  -- 0 when sources.yaml disables it or the server said 410 Gone
    disabled_reason TEXT,
    last_attempt_at TEXT,
    last_ok_at TEXT,                     -- last attempt that succeeded (200 or 304)
    last_new_at TEXT,                    -- last time it brought a new article
    failing_since TEXT,                  -- first failure of the current run of failures, NULL when healthy
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,                     -- message of the last failure
    last_reason TEXT,                    -- short reason of the last failure (timeout, not_found, ...)
    next_attempt_at TEXT,                -- backoff: no attempt before this time
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Stories: near-duplicate articles (the same dispatch republished by several titles) share a cluster.
CREATE TABLE clusters (
    id INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL
);

CREATE TABLE articles (
    id INTEGER PRIMARY KEY,
    source_id TEXT NOT NULL REFERENCES sources(id),
    guid TEXT,                           -- feed guid/id when given
    url TEXT NOT NULL,                   -- link as published
    canonical_url TEXT NOT NULL UNIQUE,  -- normalised identity (see veille.dedupe.canonical_url)
    title TEXT NOT NULL,
    author TEXT,
    summary TEXT NOT NULL DEFAULT '',    -- lead / description, plain text
    text TEXT NOT NULL DEFAULT '',       -- full text, plain
    text_source TEXT NOT NULL CHECK (text_source IN ('page', 'feed')),
    lang TEXT,
    published_at TEXT NOT NULL,          -- UTC; the fetch time when the source gave no date
    date_is_fallback INTEGER NOT NULL DEFAULT 0, -- 1 when published_at is the fetch time
    fetched_at TEXT NOT NULL,            -- first seen
    updated_at TEXT NOT NULL,            -- last changed
    cluster_id INTEGER NOT NULL REFERENCES clusters(id),
    simhash INTEGER NOT NULL DEFAULT 0   -- 64-bit SimHash of the text (signed), for near-duplicates
);
CREATE UNIQUE INDEX articles_source_guid ON articles(source_id, guid) WHERE guid IS NOT NULL;
CREATE INDEX articles_published ON articles(published_at);
CREATE INDEX articles_source_published ON articles(source_id, published_at);
CREATE INDEX articles_cluster ON articles(cluster_id);

-- Every URL an article was seen under (entry link, redirect target, canonical).
CREATE TABLE article_urls (
    url TEXT PRIMARY KEY,
    article_id INTEGER NOT NULL REFERENCES articles(id) ON DELETE CASCADE
);
CREATE INDEX article_urls_article ON article_urls(article_id);

-- SimHash split in 4 bands of 16 bits: two hashes within 3 bits share at least one band.
CREATE TABLE simhash_bands (
    band INTEGER NOT NULL,
    value INTEGER NOT NULL,
    article_id INTEGER NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    PRIMARY KEY (band, value, article_id)
) WITHOUT ROWID;
CREATE INDEX simhash_bands_article ON simhash_bands(article_id);

-- Every fetch attempt, for staff troubleshooting and the source health view.
CREATE TABLE fetch_log (
    id INTEGER PRIMARY KEY,
    source_id TEXT NOT NULL,
    url TEXT NOT NULL,
    started_at TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    status INTEGER,                      -- HTTP status, NULL when no response
    bytes INTEGER NOT NULL DEFAULT 0,
    new_count INTEGER NOT NULL DEFAULT 0,
    updated_count INTEGER NOT NULL DEFAULT 0,
    reason TEXT,                         -- short failure reason, NULL on success
    error TEXT                           -- failure message with a hint
);
CREATE INDEX fetch_log_source_started ON fetch_log(source_id, started_at);
CREATE INDEX fetch_log_started ON fetch_log(started_at);

-- Conditional GET validators per URL.
CREATE TABLE http_cache (
    url TEXT PRIMARY KEY,
    etag TEXT,
    last_modified TEXT,
    updated_at TEXT NOT NULL
);
""")

migration(2, "topics", """
-- Topics of topics.yaml, in digest order; the rule is versioned by its hash.
CREATE TABLE topics (
    id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    position INTEGER NOT NULL,           -- order in topics.yaml = order of the digest's sections
    rule_hash TEXT NOT NULL,             -- sha256 of the normalised rule
    rule_json TEXT NOT NULL,             -- the rule as JSON
    active INTEGER NOT NULL DEFAULT 1,   -- 0 once removed from topics.yaml
    updated_at TEXT NOT NULL
);

-- History of every rule a topic has had.
CREATE TABLE topic_versions (
    topic_id TEXT NOT NULL,
    rule_hash TEXT NOT NULL,
    rule_json TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (topic_id, rule_hash)
);

-- Why an article has a topic: score and hits [{keyword, field, text}] as JSON.
CREATE TABLE article_topics (
    article_id INTEGER NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    topic_id TEXT NOT NULL REFERENCES topics(id),
    score INTEGER NOT NULL,
    hits TEXT NOT NULL,
    rule_hash TEXT NOT NULL,             -- the rule version that tagged it
    tagged_at TEXT NOT NULL,
    PRIMARY KEY (article_id, topic_id)
);
CREATE INDEX article_topics_topic ON article_topics(topic_id, article_id);

-- Which articles were tagged with which rule version (also when they got no topic).
CREATE TABLE article_tagging (
    article_id INTEGER NOT NULL REFERENCES articles(id) ON DELETE CASCADE,
    topic_id TEXT NOT NULL,
    rule_hash TEXT NOT NULL,
    PRIMARY KEY (article_id, topic_id)
) WITHOUT ROWID;
""")

migration(3, "members and deliveries", """
CREATE TABLE members (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    name TEXT NOT NULL DEFAULT '',
    organisation TEXT NOT NULL DEFAULT '',
    all_topics INTEGER NOT NULL DEFAULT 1,   -- 1: follows every topic, member_topics ignored
    active INTEGER NOT NULL DEFAULT 1,
    unsubscribe_token TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE member_topics (
    member_id INTEGER NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    topic_id TEXT NOT NULL,
    PRIMARY KEY (member_id, topic_id)
) WITHOUT ROWID;

-- Built digests, one row per ISO week.
CREATE TABLE digests (
    week TEXT PRIMARY KEY,                   -- e.g. 2026-W48
    built_at TEXT NOT NULL,
    articles INTEGER NOT NULL,
    path TEXT NOT NULL                       -- folder of index.html, digest.md, digest.json
);

-- One row per (week, member): the single source of truth that makes sending idempotent.
CREATE TABLE deliveries (
    week TEXT NOT NULL,
    member_id INTEGER NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    status TEXT NOT NULL CHECK (status IN ('pending', 'sending', 'sent', 'written', 'failed', 'bounced', 'empty')),
    message_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    articles INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (week, member_id)
);
""")
