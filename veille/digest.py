"""Digest stage: the week's articles, grouped into stories and topic sections, for members and the archive.

store -> `build_digest` (one `Digest` per ISO week, every topic) -> `write_digest` (the archive folder
`digests/YYYY-Www/`: index.html, digest.md, digest.json) and `member_digest` (the part one member
follows; `veille.mail` turns it into an email).

Weeks are ISO weeks in Europe/Paris, Monday 00:00 to the next Monday 00:00, whatever the server's zone.
French dates are written from hand-made tables, so they never depend on the system locale.

Everything that comes from a feed is untrusted: `clean_text` strips markup, control and bidi-override
characters; links pass `safe_url` (http(s) only); templates autoescape. Neighbouring rights: an item
carries a headline, a link and at most `summarize`'s extract, as the source's `excerpt` policy allows.
"""

from __future__ import annotations

import html
import json
import os
import re
import tempfile
import unicodedata
from collections import Counter
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from functools import cache, cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import jinja2
import nh3

from .types import ExcerptPolicy, Source

if TYPE_CHECKING:
    from .config import Settings
    from .store import Store
    from .store.members import Member

PARIS = ZoneInfo("Europe/Paris")
HEADLINES = 5
"""Stories at most in "À la une"."""
HEADLINE_MIN_SOURCES = 2
"""A story makes "À la une" only when at least this many sources covered it."""
SHORT_EXCERPT = 300
"""Longest extract (characters) for `excerpt: short`, the neighbouring-rights default."""
FULL_EXCERPT = 1200
"""Safety cap for `excerpt: full` (the lead of an openly licensed source)."""
MAX_SENTENCES = 3
EMAIL_ITEM_BUDGET = 40
"""Stories in one email at most: a member following many topics gets fewer per section (never under 2),
so the HTML stays under Gmail's 102 KB clipping; the rest is one click away in the archive page."""
MAX_KEYWORDS = 6
MAX_SOURCES_SHOWN = 5
"""Sources listed (with their links) under a story; more are summed up as "+ N autres sources"."""

# --------------------------------------------------------------------------------------------------
# ISO weeks in Europe/Paris

_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")


def parse_week(week: str) -> tuple[int, int]:
    """`2026-W48` -> (2026, 48); ValueError with the expected form otherwise (also for W53 of a 52-week year)."""
    m = _WEEK.match(week.strip()) if isinstance(week, str) else None
    if not m:
        raise ValueError(f"{week!r} is not an ISO week; write it like 2026-W48")
    year, number = int(m.group(1)), int(m.group(2))
    try:
        date.fromisocalendar(year, number, 1)
    except ValueError:
        raise ValueError(f"{week!r}: {year} has no week {number}") from None
    return year, number


def iso_week(moment: datetime | date) -> str:
    """The ISO week (`2026-W48`) of a moment, seen from Paris (Sunday 23:30 UTC is already Monday there)."""
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError("naive datetime: give a timezone")
        moment = moment.astimezone(PARIS).date()
    year, number, _ = moment.isocalendar()
    return f"{year}-W{number:02d}"


def week_days(week: str) -> tuple[date, date]:
    """Monday and Sunday of the week."""
    year, number = parse_week(week)
    monday = date.fromisocalendar(year, number, 1)
    return monday, monday + timedelta(days=6)


def week_bounds(week: str) -> tuple[datetime, datetime]:
    """[start, end) of the week in UTC: Monday 00:00 Paris to the next Monday 00:00 Paris (DST-aware)."""
    monday, _ = week_days(week)
    start = datetime.combine(monday, datetime.min.time(), PARIS)
    end = datetime.combine(monday + timedelta(days=7), datetime.min.time(), PARIS)
    return start.astimezone(timezone.utc), end.astimezone(timezone.utc)


def shift_week(week: str, weeks: int) -> str:
    monday, _ = week_days(week)
    return iso_week(monday + timedelta(weeks=weeks))


def current_week(now: datetime | None = None) -> str:
    return iso_week(now or datetime.now(timezone.utc))


def previous_week(now: datetime | None = None) -> str:
    """The last complete week: what the Monday-morning job sends (the current week has barely begun)."""
    return shift_week(current_week(now), -1)


def resolve_week(value: str | None, now: datetime | None = None) -> str:
    """CLI spelling of a week: `2026-W48`, `current` (default) or `previous`."""
    if value is None or value.strip().lower() in ("", "current"):
        return current_week(now)
    if value.strip().lower() in ("previous", "last"):
        return previous_week(now)
    year, number = parse_week(value)
    return f"{year}-W{number:02d}"


# --------------------------------------------------------------------------------------------------
# French dates, without the system locale

DAYS = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
          "novembre", "décembre")


def _day(d: date) -> str:
    return "1er" if d.day == 1 else str(d.day)


def french_date(moment: date | datetime) -> str:
    """`mardi 24 novembre 2026` (a datetime is read in Paris time)."""
    if isinstance(moment, datetime):
        moment = moment.astimezone(PARIS).date()
    return f"{DAYS[moment.weekday()]} {_day(moment)} {MONTHS[moment.month - 1]} {moment.year}"


def french_datetime(moment: datetime) -> str:
    """`mardi 24 novembre 2026 à 7 h 30` (Paris time)."""
    local = moment.astimezone(PARIS)
    return f"{french_date(local)} à {local.hour} h {local.minute:02d}"


def french_range(start: date, end: date) -> str:
    """`23–29 novembre 2026`, `30 novembre – 6 décembre 2026`, `28 décembre 2026 – 3 janvier 2027`."""
    if start.year != end.year:
        return (f"{_day(start)} {MONTHS[start.month - 1]} {start.year} – "
                f"{_day(end)} {MONTHS[end.month - 1]} {end.year}")
    if start.month != end.month:
        return f"{_day(start)} {MONTHS[start.month - 1]} – {_day(end)} {MONTHS[end.month - 1]} {end.year}"
    return f"{_day(start)}–{_day(end)} {MONTHS[end.month - 1]} {end.year}"


def plural(count: int, word: str, words: str | None = None) -> str:
    """French agreement: 0 and 1 take the singular."""
    return f"{count} {word if count <= 1 else (words or word + 's')}"


def change_text(count: int, previous: int) -> str:
    delta = count - previous
    if delta == 0:
        return "stable par rapport à la semaine précédente"
    sign = "+" if delta > 0 else "−"
    return f"{sign}{abs(delta)} par rapport à la semaine précédente"


# --------------------------------------------------------------------------------------------------
# Untrusted text from feeds

_INVISIBLE = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c\u200b\ufeff\u00ad]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t\r\n\u00a0\u2028\u2029]+")


def clean_text(value: str | None, *, keep_paragraphs: bool = False) -> str:
    """Plain text safe to show anywhere: markup removed (scripts with their content), entities decoded,
    control characters and bidi overrides (RLO spoofing) dropped, whitespace collapsed.

    Runs the sanitiser until stable, so double-escaped markup (`&lt;script&gt;`) cannot come back.
    """
    if not value:
        return ""
    text = value
    for _ in range(3):
        cleaned = html.unescape(nh3.clean(text, tags=set(), clean_content_tags={"script", "style"}))
        if cleaned == text:
            break
        text = cleaned
    text = _INVISIBLE.sub("", _CONTROL.sub(" ", text))  # first: "<\x1bscript>" must not hide a tag from the check
    if "<" in text and re.search(r"<\s*[a-zA-Z/!]", text):  # still tag-like after three rounds: drop brackets
        text = text.replace("<", "‹").replace(">", "›")
    text = unicodedata.normalize("NFC", text)
    text = _INVISIBLE.sub("", text)
    if keep_paragraphs:
        paragraphs = re.split(r"\s*\n\s*\n\s*|\s*\n\s*", text)
        text = "\n".join(p for p in (_SPACES.sub(" ", _CONTROL.sub(" ", p)).strip() for p in paragraphs) if p)
        return text
    return _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()


_URL_FORBIDDEN = re.compile(r"[\s<>\"'`\\\x00-\x1f\x7f]")


def safe_url(url: str | None) -> str | None:
    """The URL if it is an absolute http(s) link without characters that could break out of an attribute."""
    if not url or _URL_FORBIDDEN.search(url) or _INVISIBLE.search(url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


# --------------------------------------------------------------------------------------------------
# Summaries: one to three sentences of the lead, within the source's excerpt policy

_REUSE_LICENCE = re.compile(
    r"licence\s+ouverte|open\s+licen[cs]e|etalab|\bcc[\s-]*(by|0|zero)\b|creative\s+commons|domaine\s+public|"
    r"public\s+domain|\bodbl\b|\blo[\s-]*2\.0\b", re.I)

_BOILERPLATE = re.compile(  # a sentence or paragraph containing these is publisher furniture
    r"lire\s+la\s+suite|continuer\s+la\s+lecture|cet\s+article\s+est\s+r[ée]serv[ée]|"
    r"r[ée]serv[ée]\s+aux\s+abonn[ée]s|article\s+r[ée]serv[ée]|abonnez[-\s]vous|d[ée]j[àa]\s+abonn[ée]|"
    r"partager\s+(?:sur|cet\s+article|l['’]article)|cr[ée]dits?\s+photos?|©|est\s+apparu\s+en\s+premier\s+sur|"
    r"appeared\s+first\s+on|cliquez\s+ici|inscrivez[-\s]vous\s+[àa]\s+(?:notre|la)\s+newsletter|"
    r"temps\s+de\s+lecture\s*:", re.I)
_BOILERPLATE_START = re.compile(  # ... and these only when they open it (a byline, a dateline, a caption)
    r"^(?:publi[ée]\s+le|mis\s+[àa]\s+jour\s+le|photo\s*:|illustration\s*:|lire\s+aussi|[àa]\s+lire\s+aussi|"
    r"voir\s+aussi|en\s+savoir\s+plus|par\s+[A-ZÀ-Ý][\w.-]+(?:\s+[A-ZÀ-Ý][\w.-]+)*\s*[,|–—-]?\s*(?:publi|le\s+\d|$))",
    re.I)
_INLINE_MORE = re.compile(
    r"\s*(?:\[\s*)?(?:lire\s+la\s+suite|continuer\s+la\s+lecture|read\s+more)\b[^.!?]*?(?:\]|»|…|\.\.\.)?\s*$"
    r"|\s*L['’]article\s.{1,300}?\sest\s+apparu\s+en\s+premier\s+sur\s.{1,200}$", re.I)
_MAYBE_INLINE_MORE = re.compile(r"suite|lecture|read\s+more|apparu", re.I)
_SHARE_LINE = re.compile(
    r"^(?:partager|share|facebook|twitter|x|linkedin|whatsapp|e-?mail|imprimer|copier\s+le\s+lien|"
    r"[|·,/•\s])+$", re.I)
_TRAILING_MORE = re.compile(r"\s*(?:\[\s*(?:…|\.\.\.)\s*\]|\(\s*(?:…|\.\.\.)\s*\)|…|\.\.\.)\s*$")
_ABBREVIATIONS = {
    "m", "mm", "mme", "mmes", "mlle", "mlles", "dr", "pr", "me", "st", "ste", "cf", "art", "av", "bd", "no",
    "n°", "p", "pp", "vol", "éd", "env", "hab", "fig", "ex", "janv", "févr", "avr", "juil", "sept", "oct", "nov",
    "déc", "c.-à-d", "apr", "j.-c", "i.e", "e.g", "resp", "dir", "coll", "min", "max", "tél", "etc",
}
_SENTENCE_END = re.compile(r"[.!?…]+[»\"”’)\]]*(?=\s)")


def licence_allows_reuse(licence: str | None) -> bool:
    """True for licences that allow republishing (Licence Ouverte/Etalab, Creative Commons, ODbL, public domain)."""
    return bool(licence and _REUSE_LICENCE.search(licence))


def effective_policy(source: Source | None) -> ExcerptPolicy:
    """The source's excerpt policy; `full` falls back to `short` unless the licence allows reuse."""
    if source is None:
        return "short"
    if source.excerpt == "full" and not licence_allows_reuse(source.licence):
        return "short"
    return source.excerpt


def split_sentences(text: str) -> list[str]:
    """French sentences: a boundary is end punctuation, then a space, then no lower-case letter,
    and the word before the period is not an abbreviation (M., Mme, art., janv.) or an initial."""
    sentences: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
        rest = text[end:].lstrip()
        if rest and rest[0].islower():
            continue
        if m.group().startswith(".") and len(m.group().rstrip("»\"”’)]")) == 1:
            word = re.search(r"([\w°.-]+)$", text[start:m.start()])
            token = word.group(1).lower() if word else ""
            if token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()) or re.fullmatch(r"(\w\.)+\w", token):
                continue
        sentence = text[start:end].strip()
        if sentence:
            sentences.append(sentence)
        start = end
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def cut_on_word(text: str, limit: int) -> str:
    """At most `limit` characters, ending on a whole word followed by `…`."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 3:
        cut = cut[:space]
    return cut.rstrip(" ,;:–—-(«\"'") + "…"


def _is_boilerplate(sentence: str) -> bool:
    return bool(_BOILERPLATE.search(sentence) or _BOILERPLATE_START.match(sentence) or _SHARE_LINE.match(sentence))


def _lead(text: str, title: str, paragraphs: int) -> str:
    """The first paragraphs of `text` that read as prose: no furniture, no repeated title, no captions."""
    kept = []
    for paragraph in clean_text(text, keep_paragraphs=True).split("\n"):
        if _MAYBE_INLINE_MORE.search(paragraph):
            paragraph = _INLINE_MORE.sub("", paragraph).strip()
        if not paragraph or (_is_boilerplate(paragraph) and len(paragraph) < 200):
            continue
        if title and paragraph.casefold().startswith(title.casefold()):
            paragraph = paragraph[len(title):].lstrip(" .:-–—")
        if len(paragraph) < 40 and not paragraph.endswith((".", "!", "?", "…")):
            continue  # a subtitle, a caption, a byline
        kept.append(paragraph)
        if len(kept) == paragraphs:
            break
    return " ".join(kept)


def _first_sentences(lead: str, limit: int) -> str:
    truncated = bool(_TRAILING_MORE.search(lead))
    sentences = [s for s in split_sentences(lead) if not _is_boilerplate(s)]
    if truncated and len(sentences) > 1:
        sentences.pop()  # the description was cut mid-sentence: keep only whole ones
    elif truncated and sentences:
        sentences[0] = _TRAILING_MORE.sub("", sentences[0]).rstrip(" ,;:") + "…"
    if not sentences:
        return ""
    chosen: list[str] = []
    for sentence in sentences[:MAX_SENTENCES]:
        if len(" ".join([*chosen, sentence])) > limit:
            break
        chosen.append(sentence)
    return " ".join(chosen) if chosen else cut_on_word(sentences[0], limit)


def summarize(summary: str, text: str, policy: ExcerptPolicy, title: str = "") -> str:
    """One to three sentences of the article's lead, without boilerplate, within the excerpt policy.

    The feed's description is the lead unless it is empty or visibly truncated (then the start of
    the text, which has whole sentences). `short` keeps whole sentences up to 300 characters, or cuts
    the first one on a word; `none` keeps nothing (headline and link only).
    """
    if policy == "none":
        return ""
    limit = SHORT_EXCERPT if policy == "short" else FULL_EXCERPT
    title = clean_text(title)
    feed = _lead(summary, title, 2)
    body = _lead(text, title, 3)
    leads = [body, feed] if feed and body and _TRAILING_MORE.search(feed) else [feed, body]
    for lead in leads:
        result = _first_sentences(lead, limit) if lead else ""
        if result:
            return result
    return ""


# --------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class Topic:
    id: str
    label: str
    position: int


@dataclass(frozen=True)
class ItemSource:
    id: str
    name: str
    url: str | None


@dataclass(frozen=True)
class Item:
    """A story of the week: one cluster shown once, with the sources that covered it."""

    key: int
    """The cluster id."""
    article_id: int
    title: str
    url: str | None
    published_at: datetime
    date_fr: str
    sources: tuple[ItemSource, ...]
    summary: str
    scores: tuple[tuple[str, int], ...]
    """(topic id, best score among the story's articles), in topic order."""
    keywords: tuple[tuple[str, tuple[str, ...]], ...]
    """(topic id, keywords that matched), in topic order."""
    article_ids: tuple[int, ...]

    @property
    def topic_ids(self) -> tuple[str, ...]:
        return tuple(t for t, _ in self.scores)

    @property
    def shown_sources(self) -> tuple[ItemSource, ...]:
        return self.sources[:MAX_SOURCES_SHOWN]

    @property
    def more_sources(self) -> int:
        return max(0, len(self.sources) - MAX_SOURCES_SHOWN)

    @property
    def source_names(self) -> str:
        names = " · ".join(s.name for s in self.shown_sources)
        return names + (f" + {plural(self.more_sources, 'autre source', 'autres sources')}" if self.more_sources else "")

    def score(self, topic_id: str) -> int:
        return dict(self.scores).get(topic_id, 0)

    @property
    def total_score(self) -> int:
        return sum(s for _, s in self.scores)

    def matched(self, topic_ids: Iterable[str]) -> tuple[str, ...]:
        wanted = set(topic_ids)
        words: dict[str, str] = {}
        for topic_id, keywords in self.keywords:
            if topic_id in wanted:
                for word in keywords:
                    words.setdefault(word.casefold(), word)
        return tuple(words.values())[:MAX_KEYWORDS]


@dataclass(frozen=True)
class Section:
    topic: Topic
    count: int
    """Articles of the week with this topic."""
    previous: int
    """The same count for the week before."""
    items: tuple[Item, ...]
    """Ranked stories, at most `section_cap`."""
    cut: tuple[Item, ...]
    """Stories beyond the cap: listed by title in the archive page only."""

    @property
    def change(self) -> int:
        return self.count - self.previous

    @property
    def change_text(self) -> str:
        return change_text(self.count, self.previous)


@dataclass(frozen=True)
class Digest:
    week: str
    start: date
    end: date
    built_at: datetime
    title: str
    archive_url: str
    topics: tuple[Topic, ...]
    headlines: tuple[Item, ...]
    sections: tuple[Section, ...]
    article_count: int
    """Distinct articles of the week carrying at least one topic."""
    topic_sets: tuple[tuple[frozenset[str], int], ...]
    """How many articles carry each combination of topics: a member's count without a scan per member."""

    @property
    def range_fr(self) -> str:
        return french_range(self.start, self.end)

    @property
    def number(self) -> int:
        return parse_week(self.week)[1]

    def count_for(self, topics: frozenset[str] | None) -> int:
        """Distinct articles with at least one of `topics` (None: all)."""
        if topics is None:
            return self.article_count
        bits, masks = self._topic_masks
        wanted = sum(bits.get(t, 0) for t in topics)
        return sum(n for mask, n in masks if mask & wanted)

    @cached_property
    def _topic_masks(self) -> tuple[dict[str, int], tuple[tuple[int, int], ...]]:
        bits = {t.id: 1 << i for i, t in enumerate(self.topics)}
        return bits, tuple((sum(bits[t] for t in combo), n) for combo, n in self.topic_sets)


@dataclass(frozen=True)
class Entry:
    """An item as one reader sees it: badges and matched words of the topics they follow.

    `compact` when the story was already shown higher up (À la une, an earlier section).
    """

    item: Item
    compact: bool
    topics: tuple[Topic, ...]
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class ViewSection:
    section: Section
    entries: tuple[Entry, ...]
    more: int
    """Stories of the section not shown here (in the archive page)."""

    @property
    def topic(self) -> Topic:
        return self.section.topic


@dataclass(frozen=True)
class MemberDigest:
    """The part of a digest one reader gets; `member` is None for the archive (all topics)."""

    digest: Digest
    member: "Member | None"
    topics: frozenset[str] | None
    headlines: tuple[Entry, ...]
    sections: tuple[ViewSection, ...]
    article_count: int

    @property
    def subject(self) -> str:
        d = self.digest
        return f"{d.title} — semaine {d.number} ({d.range_fr}) : {plural(self.article_count, 'article')}"

    @property
    def preheader(self) -> str:
        parts = [f"{s.topic.label} ({s.section.count})" for s in self.sections[:4]]
        more = "…" if len(self.sections) > 4 else ""
        return f"{plural(self.article_count, 'article')} cette semaine : {', '.join(parts)}{more}"


# --------------------------------------------------------------------------------------------------
# Building


def build_digest(store: "Store", week: str, settings: "Settings", sources: Sequence[Source],
                 *, now: datetime | None = None) -> Digest:
    """Everything the week has for every topic: stories ranked per section, "À la une", counts.

    Summaries are extracted only for the stories that are shown (the capped sections and À la une):
    a story beyond the cap appears by its title only.
    """
    start, end = week_bounds(week)
    prev_start, prev_end = week_bounds(shift_week(week, -1))
    topics = tuple(Topic(r["id"], clean_text(r["label"]) or r["id"], r["position"]) for r in store.digest_topics())
    order = {t.id: i for i, t in enumerate(topics)}
    by_source = {s.id: s for s in sources}

    articles = {r["id"]: r for r in store.week_articles(start, end)}
    scores: dict[int, dict[str, int]] = {}
    keywords: dict[int, dict[str, tuple[str, ...]]] = {}
    for row in store.week_tags(start, end):
        if row["article_id"] not in articles or row["topic_id"] not in order:
            continue
        scores.setdefault(row["article_id"], {})[row["topic_id"]] = row["score"]
        keywords.setdefault(row["article_id"], {})[row["topic_id"]] = _hit_keywords(row["hits"])

    clusters: dict[int, list[int]] = {}
    for article_id, row in articles.items():
        if article_id in scores:
            clusters.setdefault(row["cluster_id"], []).append(article_id)
    items = [_make_item(key, ids, articles, scores, keywords, order, by_source) for key, ids in clusters.items()]

    cap = settings.section_cap
    ranked: dict[str, list[Item]] = {t.id: [] for t in topics}
    for item in items:
        for topic_id in item.topic_ids:
            ranked[topic_id].append(item)
    for topic_id, topic_items in ranked.items():
        topic_items.sort(key=lambda i: (-i.score(topic_id), -len(i.sources), -i.published_at.timestamp(), i.key))
    headlines = sorted(
        (i for i in items if len(i.sources) >= HEADLINE_MIN_SOURCES),
        key=lambda i: (-len(i.sources), -i.total_score, -i.published_at.timestamp(), i.key),
    )[:HEADLINES]
    shown = {i.key: i for i in headlines} | {i.key: i for t in ranked.values() for i in t[:cap]}
    summarized = {key: _with_summary(item, articles[item.article_id], by_source) for key, item in shown.items()}

    def final(item: Item) -> Item:
        return summarized.get(item.key, item)

    counts = Counter(t for per_article in scores.values() for t in per_article)
    previous = store.week_topic_counts(prev_start, prev_end)
    sections = tuple(
        Section(t, counts.get(t.id, 0), previous.get(t.id, 0), tuple(final(i) for i in ranked[t.id][:cap]),
                tuple(ranked[t.id][cap:]))
        for t in topics
    )
    combos = Counter(frozenset(per_article) for per_article in scores.values())
    monday, sunday = week_days(week)
    return Digest(
        week=week, start=monday, end=sunday, built_at=(now or datetime.now(timezone.utc)).replace(microsecond=0),
        title=clean_text(settings.digest_title), archive_url=archive_url(settings, week), topics=topics,
        headlines=tuple(final(i) for i in headlines), sections=sections, article_count=len(scores),
        topic_sets=tuple(sorted(combos.items(), key=lambda kv: sorted(kv[0]))),
    )


def archive_url(settings: "Settings", week: str) -> str:
    """Where the week's index.html is published (`public_url` + `/digests/YYYY-Www/`)."""
    return f"{settings.public_url.rstrip('/')}/digests/{week}/"


@lru_cache(maxsize=4096)
def _hit_keywords(hits_json: str) -> tuple[str, ...]:
    """The distinct keywords of a hits column (many articles share the same few JSON strings)."""
    try:
        hits = json.loads(hits_json or "[]")
    except ValueError:
        return ()
    words: list[str] = []
    for hit in hits if isinstance(hits, list) else []:
        word = clean_text(hit.get("keyword")) if isinstance(hit, dict) and isinstance(hit.get("keyword"), str) else ""
        if word and word not in words:
            words.append(word)
    return tuple(words)


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


_POLICY_RANK = {"full": 0, "short": 0, "none": 1}


def _make_item(key: int, ids: list[int], articles: dict[int, Any], scores: dict[int, dict[str, int]],
               keywords: dict[int, dict[str, tuple[str, ...]]], order: dict[str, int],
               by_source: dict[str, Source]) -> Item:
    """The story of a cluster, led by its best-scored article (preferring one whose source allows an extract)."""

    def rank(article_id: int) -> tuple:
        row = articles[article_id]
        policy = effective_policy(by_source.get(row["source_id"]))
        return (-sum(scores[article_id].values()), _POLICY_RANK[policy], row["published_at"], article_id)

    ids = sorted(ids, key=rank)
    lead = articles[ids[0]]
    item_sources: dict[str, ItemSource] = {}
    for article_id in [ids[0], *sorted(ids[1:], key=lambda a: (articles[a]["published_at"], a))]:
        row = articles[article_id]
        if row["source_id"] not in item_sources:
            configured = by_source.get(row["source_id"])
            name = clean_text(configured.name if configured else row["source_name"]) or row["source_id"]
            item_sources[row["source_id"]] = ItemSource(row["source_id"], name, safe_url(row["url"]))
    best: dict[str, int] = {}
    words: dict[str, list[str]] = {}
    for article_id in ids:
        for topic_id, score in scores[article_id].items():
            best[topic_id] = max(best.get(topic_id, score), score)
            for word in keywords.get(article_id, {}).get(topic_id, ()):
                if word not in words.setdefault(topic_id, []):
                    words[topic_id].append(word)
    topic_order = sorted(best, key=order.__getitem__)
    published = _parse_time(lead["published_at"])
    return Item(
        key=key, article_id=lead["id"], title=cut_on_word(clean_text(lead["title"]), 250) or "(sans titre)",
        url=safe_url(lead["url"]), published_at=published, date_fr=french_date(published),
        sources=tuple(item_sources.values()), summary="",
        scores=tuple((t, best[t]) for t in topic_order),
        keywords=tuple((t, tuple(words.get(t, ()))) for t in topic_order),
        article_ids=tuple(sorted(ids)),
    )


def _with_summary(item: Item, lead: Any, by_source: dict[str, Source]) -> Item:
    policy = effective_policy(by_source.get(lead["source_id"]))
    return replace(item, summary=summarize(lead["summary"], lead["lead"], policy, item.title))


# --------------------------------------------------------------------------------------------------
# What one reader sees


def digest_view(digest: Digest, topics: frozenset[str] | None, member: "Member | None" = None,
                budget: int | None = None) -> MemberDigest:
    """The digest restricted to `topics` (None: all): À la une, then the followed sections in order.

    With a `budget` (emails), sections share at most that many stories, at least 2 each, at most the
    section cap; what is left out is counted in `ViewSection.more`.
    """
    by_id = {t.id: t for t in digest.topics}
    shown: set[int] = set()

    def entry(item: Item) -> Entry:
        ids = [t for t in item.topic_ids if topics is None or t in topics]
        compact = item.key in shown
        shown.add(item.key)
        return Entry(item, compact, tuple(by_id[t] for t in ids), item.matched(ids))

    headlines = tuple(entry(i) for i in digest.headlines
                      if topics is None or any(t in topics for t in i.topic_ids))
    followed = [s for s in digest.sections if (topics is None or s.topic.id in topics) and s.items]
    per_section = max(2, budget // len(followed)) if budget and followed else None
    sections = []
    for s in followed:
        items = s.items[:per_section] if per_section else s.items
        sections.append(ViewSection(s, tuple(entry(i) for i in items), len(s.items) - len(items) + len(s.cut)))
    return MemberDigest(digest, member, topics, headlines, tuple(sections), digest.count_for(topics))


def member_digest(digest: Digest, member: "Member") -> MemberDigest | None:
    """The member's share of the digest, or None when nothing they follow happened (no email then)."""
    topics = None if member.topics is None else frozenset(member.topics)
    view = _views(digest).get(topics)
    if view is None:
        view = _views(digest)[topics] = digest_view(digest, topics, None, budget=EMAIL_ITEM_BUDGET)
    return replace(view, member=member) if view.sections else None


_view_cache: tuple[Digest | None, dict[frozenset[str] | None, MemberDigest]] = (None, {})


def _views(digest: Digest) -> dict[frozenset[str] | None, MemberDigest]:
    """Views by set of topics, for the digest being delivered (members often follow the same topics)."""
    global _view_cache
    if _view_cache[0] is not digest:
        _view_cache = (digest, {})
    return _view_cache[1]


# --------------------------------------------------------------------------------------------------
# Templates and the archive folder


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|!~])")


def _md(value: object) -> str:
    return _MD_SPECIAL.sub(r"\\\1", str(value))


@cache
def templates() -> jinja2.Environment:
    """The Jinja2 environment of veille/templates (HTML autoescaped; .txt and .md are plain)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("veille", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )
    env.filters.update(md=_md, plural=plural, fr_datetime=french_datetime)
    return env


def render(name: str, **context: Any) -> str:
    return templates().get_template(name).render(**context)


def digest_to_json(digest: Digest) -> dict[str, Any]:
    """The data behind the week's digest (digest.json), stable keys for scripts and analysts."""

    def item(i: Item) -> dict[str, Any]:
        return {
            "cluster_id": i.key, "article_id": i.article_id, "title": i.title, "url": i.url,
            "published_at": i.published_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "date": i.date_fr, "summary": i.summary,
            "sources": [{"id": s.id, "name": s.name, "url": s.url} for s in i.sources],
            "topics": [{"id": t, "score": s, "keywords": list(dict(i.keywords).get(t, ()))} for t, s in i.scores],
            "articles": list(i.article_ids),
        }

    return {
        "week": digest.week, "start": digest.start.isoformat(), "end": digest.end.isoformat(),
        "title": digest.title, "range": digest.range_fr, "archive_url": digest.archive_url,
        "built_at": digest.built_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "articles": digest.article_count,
        "headlines": [item(i) for i in digest.headlines],
        "sections": [
            {"topic": s.topic.id, "label": s.topic.label, "count": s.count, "previous": s.previous,
             "change": s.change, "items": [item(i) for i in s.items], "cut": [item(i) for i in s.cut]}
            for s in digest.sections
        ],
    }


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Replace `path` in one step, so a reader (a web server, a mail client) never sees half a file.

    The archive pages are meant to be published (0644); the outbox holds members' addresses and
    unsubscribe tokens, so mail writes it 0600.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_digest(digest: Digest, out_dir: str | Path, *, trends_html: str | None = None) -> Path:
    """Write `out_dir/YYYY-Www/` (index.html, digest.md, digest.json), each file replaced atomically.

    `trends_html` fills the archive page's trends slot (a chart of the last 12 weeks, built elsewhere).
    """
    folder = Path(out_dir) / digest.week
    folder.mkdir(parents=True, exist_ok=True)
    view = digest_view(digest, None)
    context = {"d": digest, "view": view, "trends_html": trends_html, "css": render("email.css")}
    write_atomic(folder / "index.html", render("archive.html", **context))
    write_atomic(folder / "digest.md", render("digest.md", **context))
    write_atomic(folder / "digest.json", json.dumps(digest_to_json(digest), ensure_ascii=False, indent=2) + "\n")
    return folder
