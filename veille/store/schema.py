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

migration(4, "scheduler", """
-- The scheduler daemon's jobs as it last saw them, so `veille status` (another process) can show
-- what runs next and how the last run went. Rewritten by the daemon; rows of removed jobs are deleted.
CREATE TABLE scheduler_jobs (
    id TEXT PRIMARY KEY,                 -- source:<source id>, digest, maintenance, staff-report
    kind TEXT NOT NULL,                  -- source, digest, maintenance, staff-report
    schedule TEXT NOT NULL,              -- human description of the trigger ("every 30m", "cron 30 7 * * mon")
    next_run_at TEXT,                    -- UTC; NULL while the daemon is stopped
    last_run_at TEXT,
    last_status TEXT CHECK (last_status IN ('ok', 'error', 'missed', 'interrupted')),
    last_error TEXT,
    last_duration_ms INTEGER,
    updated_at TEXT NOT NULL
);
""")

migration(5, "archive views", """
-- Publication time of every article in Europe/Paris and its ISO week: the calendar of digests and
-- trend charts. Daylight saving follows the EU rule (from the last Sunday of March to the last Sunday
-- of October, 01:00 UTC), so no time zone database is needed inside SQLite.
CREATE VIEW article_weeks AS
SELECT
    article_id,                          -- articles.id
    published_at,                        -- articles.published_at (UTC)
    published_local,                     -- publication time in Europe/Paris, 'YYYY-MM-DD HH:MM:SS'
    date(published_local, '-6 days', 'weekday 1') AS week_start, -- Monday of the ISO week (Europe/Paris)
    strftime('%Y', date(published_local, '-6 days', 'weekday 1', '+3 days')) || '-W' || printf('%02d',
        (strftime('%j', date(published_local, '-6 days', 'weekday 1', '+3 days')) + 6) / 7) AS week -- ISO week, e.g. 2026-W48
FROM (
    SELECT id AS article_id, published_at,
           datetime(published_at, CASE
               WHEN substr(published_at, 6, 2) BETWEEN '04' AND '09' THEN '+2 hours'
               WHEN substr(published_at, 6, 2) NOT IN ('03', '10') THEN '+1 hours'
               WHEN published_at >= date(substr(published_at, 1, 4) || '-03-31', '-6 days', 'weekday 0') || 'T01:00:00Z'
                AND published_at < date(substr(published_at, 1, 4) || '-10-31', '-6 days', 'weekday 0') || 'T01:00:00Z'
               THEN '+2 hours' ELSE '+1 hours' END) AS published_local
    FROM articles
);

-- article_topics with each article's ISO week, kept in sync by triggers: its primary key makes weekly
-- counts per topic over years a range scan instead of a sort of every tag.
CREATE TABLE topic_article_weeks (
    topic_id TEXT NOT NULL,              -- topics.id
    week TEXT NOT NULL,                  -- ISO week of publication in Europe/Paris, e.g. 2026-W48
    published_at TEXT NOT NULL,          -- articles.published_at (UTC)
    article_id INTEGER NOT NULL,         -- articles.id
    PRIMARY KEY (topic_id, week, published_at, article_id)
) WITHOUT ROWID;
CREATE INDEX topic_article_weeks_article ON topic_article_weeks(article_id, topic_id);

INSERT INTO topic_article_weeks (topic_id, week, published_at, article_id)
SELECT at.topic_id, w.week, w.published_at, w.article_id
FROM article_topics at JOIN article_weeks w ON w.article_id = at.article_id;

CREATE TRIGGER topic_article_weeks_tag AFTER INSERT ON article_topics BEGIN
    INSERT OR IGNORE INTO topic_article_weeks (topic_id, week, published_at, article_id)
    SELECT NEW.topic_id, week, published_at, article_id FROM article_weeks WHERE article_id = NEW.article_id;
END;

CREATE TRIGGER topic_article_weeks_untag AFTER DELETE ON article_topics BEGIN
    DELETE FROM topic_article_weeks WHERE article_id = OLD.article_id AND topic_id = OLD.topic_id;
END;

CREATE TRIGGER topic_article_weeks_retag AFTER UPDATE OF article_id, topic_id ON article_topics BEGIN
    DELETE FROM topic_article_weeks WHERE article_id = OLD.article_id AND topic_id = OLD.topic_id;
    INSERT OR IGNORE INTO topic_article_weeks (topic_id, week, published_at, article_id)
    SELECT NEW.topic_id, week, published_at, article_id FROM article_weeks WHERE article_id = NEW.article_id;
END;

CREATE TRIGGER topic_article_weeks_redate AFTER UPDATE OF published_at ON articles BEGIN
    UPDATE topic_article_weeks
    SET published_at = NEW.published_at,
        week = (SELECT week FROM article_weeks WHERE article_id = NEW.id)
    WHERE article_id = NEW.id;
END;

CREATE TRIGGER topic_article_weeks_forget AFTER DELETE ON articles BEGIN
    DELETE FROM topic_article_weeks WHERE article_id = OLD.id;
END;

-- One row per article: its source's name, its ISO week and its topics (ids and labels, digest order).
CREATE VIEW articles_overview AS
SELECT
    a.id AS article_id,                  -- articles.id
    a.published_at,                      -- UTC
    w.week,                              -- ISO week of publication (Europe/Paris)
    a.source_id,                         -- sources.id
    s.name AS source_name,               -- display name of the source
    a.title,                             -- title of the article
    a.url,                               -- link as published
    a.author,                            -- author when the page or feed names one
    a.lang,                              -- language code when known
    (SELECT group_concat(at2.topic_id, '; ') FROM article_topics at2
      WHERE at2.article_id = a.id) AS topics, -- topic ids separated by '; ', in id order
    (SELECT group_concat(label, '; ') FROM (SELECT t.label FROM article_topics at2 JOIN topics t
      ON t.id = at2.topic_id WHERE at2.article_id = a.id ORDER BY at2.topic_id)) AS topic_labels, -- their labels, in the same order
    a.cluster_id,                        -- story: near-duplicates share it
    (SELECT count(*) FROM articles c WHERE c.cluster_id = a.cluster_id) AS cluster_size -- articles in the story
FROM articles a
JOIN sources s ON s.id = a.source_id
JOIN article_weeks w ON w.article_id = a.id;

-- One row per article and topic (an article without topic appears once, with topic_id NULL): facet on
-- source_name and topic_id, count, filter.
CREATE VIEW articles_with_topics AS
SELECT
    a.id AS article_id,                  -- articles.id
    a.published_at,                      -- UTC
    w.week,                              -- ISO week of publication (Europe/Paris)
    a.source_id,                         -- sources.id
    s.name AS source_name,               -- display name of the source
    a.title,                             -- title of the article
    a.url,                               -- link as published
    at.topic_id,                         -- topics.id, NULL when the article has no topic
    t.label AS topic_label,              -- label of the topic
    at.score,                            -- tagging score (title 3, summary 2, body 1 per keyword)
    a.cluster_id                         -- story: near-duplicates share it
FROM articles a
JOIN sources s ON s.id = a.source_id
JOIN article_weeks w ON w.article_id = a.id
LEFT JOIN article_topics at ON at.article_id = a.id
LEFT JOIN topics t ON t.id = at.topic_id;

-- Articles per topic and ISO week (Europe/Paris); weeks without any article are absent.
CREATE VIEW topic_weekly_counts AS
SELECT
    c.topic_id,                          -- topics.id
    t.label AS topic_label,              -- label of the topic
    c.week,                              -- ISO week, e.g. 2026-W48
    date(substr(c.week, 1, 4) || '-01-04', '-6 days', 'weekday 1',
         '+' || ((CAST(substr(c.week, 7, 2) AS INTEGER) - 1) * 7) || ' days') AS week_start, -- Monday of the week
    c.articles                           -- articles of the topic published that week
FROM (SELECT topic_id, week, count(*) AS articles FROM topic_article_weeks GROUP BY topic_id, week) c
JOIN topics t ON t.id = c.topic_id;

-- Stories: near-duplicate articles grouped by cluster, with how many sources carried them.
CREATE VIEW stories AS
SELECT
    a.cluster_id,                        -- clusters.id
    min(a.published_at) AS first_published_at, -- earliest publication in the story (UTC)
    max(a.published_at) AS last_published_at,  -- latest publication in the story (UTC)
    count(*) AS articles,                -- articles in the story
    count(DISTINCT a.source_id) AS sources, -- distinct sources that carried it
    (SELECT title FROM articles f WHERE f.cluster_id = a.cluster_id ORDER BY f.published_at, f.id LIMIT 1) AS title -- title of its first article
FROM articles a
GROUP BY a.cluster_id;

-- Health of every source: state as `veille status` shows it, failures and activity.
CREATE VIEW source_health AS
SELECT
    s.id AS source_id,                   -- sources.id
    s.name,                              -- display name
    s.type,                              -- feed, html or sitemap
    s.current_url,                       -- URL actually fetched
    CASE WHEN s.enabled = 0 THEN 'disabled' WHEN s.consecutive_failures > 0 THEN 'failing'
         WHEN s.last_attempt_at IS NULL THEN 'new' ELSE 'ok' END AS state, -- ok, failing, disabled or new (never attempted)
    s.disabled_reason,                   -- why it is disabled (sources.yaml, 410 Gone...)
    s.consecutive_failures,              -- failed attempts in a row
    s.failing_since,                     -- first failure of the current run of failures (UTC)
    s.last_reason,                       -- short reason of the last failure (timeout, not_found...)
    s.last_error,                        -- message of the last failure
    s.last_attempt_at,                   -- last fetch attempt (UTC)
    s.last_ok_at,                        -- last successful attempt (UTC)
    s.last_new_at,                       -- last time it brought a new article (UTC)
    CAST(julianday('now') - julianday(s.last_new_at) AS INTEGER) AS days_since_new, -- whole days since its last new article
    (SELECT count(*) FROM articles a WHERE a.source_id = s.id) AS articles, -- articles stored from it
    (SELECT count(*) FROM articles a WHERE a.source_id = s.id
      AND a.published_at >= strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-30 days')) AS articles_30d, -- published in the last 30 days
    (SELECT count(*) FROM fetch_log f WHERE f.source_id = s.id
      AND f.started_at >= strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-7 days')) AS fetches_7d, -- fetch attempts in the last 7 days
    (SELECT count(*) FROM fetch_log f WHERE f.source_id = s.id AND f.reason IS NOT NULL
      AND f.started_at >= strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-7 days')) AS failures_7d, -- failed attempts in the last 7 days
    (SELECT CAST(avg(f.duration_ms) AS INTEGER) FROM fetch_log f WHERE f.source_id = s.id
      AND f.started_at >= strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-7 days')) AS avg_duration_ms_7d -- mean fetch duration over 7 days
FROM sources s;
""")

migration(6, "full-text index and topic tagging state", """
-- Full-text index over articles' title, summary and text, for topic re-tagging, topic previews and
-- `veille search`. External content: the index stores no copy of the text, snippet() and highlight()
-- read it from articles. Tokens are words of letters and digits, lower case, accents removed
-- (unicode61, remove_diacritics 2); plurals and the ligatures oe/ae are handled by the query compiler
-- (veille.query.to_fts), so plain SQLite clients can read and write the archive.
CREATE VIRTUAL TABLE articles_fts USING fts5(
    title, summary, text,
    content = 'articles', content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER articles_fts_insert AFTER INSERT ON articles BEGIN
    INSERT INTO articles_fts (rowid, title, summary, text) VALUES (NEW.id, NEW.title, NEW.summary, NEW.text);
END;

CREATE TRIGGER articles_fts_delete AFTER DELETE ON articles BEGIN
    INSERT INTO articles_fts (articles_fts, rowid, title, summary, text)
    VALUES ('delete', OLD.id, OLD.title, OLD.summary, OLD.text);
END;

CREATE TRIGGER articles_fts_update AFTER UPDATE OF title, summary, text ON articles BEGIN
    INSERT INTO articles_fts (articles_fts, rowid, title, summary, text)
    VALUES ('delete', OLD.id, OLD.title, OLD.summary, OLD.text);
    INSERT INTO articles_fts (rowid, title, summary, text) VALUES (NEW.id, NEW.title, NEW.summary, NEW.text);
END;

INSERT INTO articles_fts (articles_fts) VALUES ('rebuild');

-- The rule version the whole archive was last tagged with, per topic: a topic whose rule_hash differs
-- (changed rule, new topic, interrupted re-tag) is re-tagged at the next run or by `veille retag`.
ALTER TABLE topics ADD COLUMN tagged_hash TEXT;

-- article_tagging holds one row per article with topic_id '*': rule_hash is then the hash of the whole
-- topic set that tagged the article (veille.tag.Tagger.rule_hash). An article without such a row was
-- stored but never tagged; per-topic rule versions are in article_topics.rule_hash and topics.tagged_hash.
""")

migration(7, "article week column", """
-- The ISO week (Europe/Paris) of every article, written with the article (veille computes it with
-- the view's rule; a row inserted without it gets it from article_weeks). The per-week triggers copy
-- it instead of working out the calendar for every tag, which cost more than the rest of storing a
-- tag (bench/topics.py). It always equals article_weeks.week of the article.
ALTER TABLE articles ADD COLUMN week TEXT;  -- ISO week of published_at in Europe/Paris, e.g. 2026-W48

UPDATE articles SET week = (SELECT w.week FROM article_weeks w WHERE w.article_id = articles.id);

CREATE TRIGGER articles_week_insert AFTER INSERT ON articles WHEN NEW.week IS NULL BEGIN
    UPDATE articles SET week = (SELECT week FROM article_weeks WHERE article_id = NEW.id) WHERE id = NEW.id;
END;

DROP TRIGGER topic_article_weeks_redate;
CREATE TRIGGER articles_week_redate AFTER UPDATE OF published_at ON articles BEGIN
    UPDATE articles SET week = (SELECT week FROM article_weeks WHERE article_id = NEW.id) WHERE id = NEW.id;
    UPDATE topic_article_weeks
    SET published_at = NEW.published_at, week = (SELECT week FROM articles WHERE id = NEW.id)
    WHERE article_id = NEW.id;
END;

DROP TRIGGER topic_article_weeks_tag;
CREATE TRIGGER topic_article_weeks_tag AFTER INSERT ON article_topics BEGIN
    INSERT OR IGNORE INTO topic_article_weeks (topic_id, week, published_at, article_id)
    SELECT NEW.topic_id, week, published_at, id FROM articles WHERE id = NEW.article_id;
END;

DROP TRIGGER topic_article_weeks_retag;
CREATE TRIGGER topic_article_weeks_retag AFTER UPDATE OF article_id, topic_id ON article_topics BEGIN
    DELETE FROM topic_article_weeks WHERE article_id = OLD.article_id AND topic_id = OLD.topic_id;
    INSERT OR IGNORE INTO topic_article_weeks (topic_id, week, published_at, article_id)
    SELECT NEW.topic_id, week, published_at, id FROM articles WHERE id = NEW.article_id;
END;
""")

migration(8, "archive facts", """
-- Facts about how derived columns were computed, for veille to keep them comparable across upgrades.
-- simhash_version: the version of veille.dedupe.simhash behind articles.simhash (missing: unknown, the
-- hashes are recomputed at the next pass).
CREATE TABLE archive_meta (
    key TEXT PRIMARY KEY,                -- e.g. simhash_version
    value TEXT NOT NULL                  -- e.g. 2 (veille.dedupe.SIMHASH_VERSION)
) WITHOUT ROWID;
""")
