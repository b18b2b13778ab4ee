"""The small typed records the pipeline stages hand to each other.

fetch -> `Response`; parse -> `Entry`; extract -> `Extracted`; the pipeline merges them into an
`Article` for store; tag -> `TopicMatch` with its `Hit`s. Records are frozen: a stage makes a new one
rather than changing what it was given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from .dedupe import canonical_url

SourceType = Literal["feed", "html", "sitemap"]
ExcerptPolicy = Literal["none", "short", "full"]
TextSource = Literal["page", "feed"]
Field = Literal["title", "summary", "body"]


@dataclass(frozen=True)
class Source:
    """One entry of sources.yaml, validated."""

    id: str
    name: str
    type: SourceType
    url: str
    interval: timedelta = timedelta(hours=1)
    full_text: bool = True
    link_selector: str | None = None
    excerpt: ExcerptPolicy = "short"
    licence: str | None = None
    allow_private: bool = False
    enabled: bool = True
    tags: tuple[str, ...] = ()
    line: int | None = None


@dataclass(frozen=True)
class Response:
    """What fetch hands on: the body of one URL, or the news that it has not changed (304)."""

    url: str
    """The final URL after redirects."""
    requested_url: str
    status: int
    content: bytes = b""
    content_type: str = ""
    charset: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    not_modified: bool = False
    permanent_redirect: str | None = None
    """Set when a 301/308 chain moved the resource: the new URL to store on the source."""
    elapsed: float = 0.0


@dataclass(frozen=True)
class Entry:
    """One item found by parse in a feed, a listing page or a sitemap."""

    source_id: str
    url: str
    guid: str | None = None
    title: str = ""
    summary: str = ""
    """Plain text of the feed's description, HTML stripped."""
    content: str = ""
    """Plain text of the feed's full content (content:encoded, atom:content), if any."""
    author: str | None = None
    published: datetime | None = None
    """Timezone-aware UTC, or None when the feed gave no readable date."""
    lang: str | None = None
    canonical_url: str = field(init=False, compare=False, repr=False)
    """`dedupe.canonical_url(url)`, worked out where the entry is made (a parse worker), not again in
    the main process, which looks every entry up by it (a cold pass's main process is its bottleneck)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "canonical_url", canonical_url(self.url))


@dataclass(frozen=True)
class Extracted:
    """What extract keeps from a page: main text and metadata."""

    url: str
    title: str | None = None
    author: str | None = None
    date: datetime | None = None
    lang: str | None = None
    description: str | None = None
    text: str = ""
    canonical_url: str | None = None
    sitename: str | None = None


@dataclass(frozen=True)
class Article:
    """An article ready to be stored: the feed entry merged with the extracted page."""

    source_id: str
    url: str
    canonical_url: str
    title: str
    text: str
    text_source: TextSource
    published_at: datetime
    fetched_at: datetime
    guid: str | None = None
    summary: str = ""
    author: str | None = None
    lang: str | None = None
    date_is_fallback: bool = False
    urls: tuple[str, ...] = ()
    """Every URL under which this article was seen (entry link, final URL, canonical...)."""
    simhash: int = 0


@dataclass(frozen=True)
class Hit:
    """One reason why an article got a topic: which keyword matched where, with a little context."""

    keyword: str
    field: Field
    text: str


@dataclass(frozen=True)
class TopicMatch:
    topic_id: str
    score: int
    hits: tuple[Hit, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class SourceResult:
    """The outcome of one source in a fetch pass, for the summary table and `--json`."""

    source_id: str
    url: str
    status: Literal["ok", "not_modified", "failed", "skipped", "disabled"]
    new: int = 0
    updated: int = 0
    entries: int = 0
    error: str | None = None
    reason: str | None = None
    hint: str | None = None
    duration: float = 0.0


@dataclass(frozen=True)
class PassResult:
    started_at: datetime
    finished_at: datetime
    sources: tuple[SourceResult, ...]

    @property
    def new(self) -> int:
        return sum(s.new for s in self.sources)

    @property
    def updated(self) -> int:
        return sum(s.updated for s in self.sources)

    @property
    def failed(self) -> tuple[SourceResult, ...]:
        return tuple(s for s in self.sources if s.status == "failed")
