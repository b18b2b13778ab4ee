"""Extract stage: the main text and metadata of an article page (trafilatura), and the merge of a feed
entry with its page into the `Article` the store keeps.

Pages are decoded with parse's encoding policy (`decode_document`), parsed once with lxml, and the tree
is handed to trafilatura; the few things trafilatura does not report (canonical URL, page language,
the time of day of the publication date) are read from the same tree first.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from lxml import etree

from . import dedupe
from .errors import ExtractError
from .parse import PARIS, absolute_url, clean_text, decode_document, language_tag, parse_date
from .types import Article, Entry, Extracted

log = logging.getLogger(__name__)

EXTRACT_OPTIONS = dict(
    include_comments=False,   # reader comments are not the article (aeb F1 0.942 -> 0.952)
    include_tables=True,      # dropping tables gains aeb 0.964, all from one English page laid out in a
                              # table; institutional French pages carry budgets and results in tables
    include_images=False,
    include_links=False,
    deduplicate=False,        # trafilatura's cache lives per process: output would depend on past pages
    favor_precision=False,    # fr 0.951 but aeb 0.929: cuts real paragraphs
    favor_recall=False,       # no change on either set
    with_metadata=True,
)
"""trafilatura's options, chosen with `bench/extract.py --configs` (aeb token F1 / trafilatura-fr segment F1:
defaults 0.942 / 0.943, these 0.952 / 0.943)."""

FUTURE_TOLERANCE = timedelta(days=1)
"""A date further in the future than this is a publisher's error (or an event date), not a publication date."""

MIN_PAGE_WORDS = 25
"""Below this, an extracted page text (cookie wall, teaser) does not replace what the feed gave."""

_BINARY_MAGIC = ((b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP/Office document"),
                 (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"))


def extract_page(content: bytes, url: str, charset: str | None = None) -> Extracted:
    """Main text and metadata of one article page (a top-level function, so picklable for process pools).

    Returns an `Extracted` with empty text when the page has no recognisable main text (paywall
    teaser, cookie wall): its metadata is still useful. Raises `ExtractError` only when the bytes are
    not an HTML page at all.
    """
    import trafilatura  # 0.1 s to import: only the processes that extract pages pay it

    head = content[:16].lstrip()
    for magic, what in _BINARY_MAGIC:
        if head.startswith(magic):
            raise ExtractError(None, url, f"not an HTML page: {what}", "only HTML articles are extracted")
    text = decode_document(content, charset, "html")
    if not text.strip():
        raise ExtractError(None, url, "empty page", "the server sent no content; it will be retried next pass")
    tree = trafilatura.load_html(text)
    if tree is None:
        raise ExtractError(None, url, "not an HTML page", "check the link in a browser")
    page = _page_metadata(tree, url)
    try:
        doc = trafilatura.bare_extraction(tree, url=url, **EXTRACT_OPTIONS)
    except Exception as e:  # trafilatura and its helpers raise assorted errors on hostile markup
        log.warning("trafilatura failed on %s: %s", url, e)
        doc = None
    if doc is None:
        return Extracted(url=url, title=page["title"], description=page["description"], lang=page["lang"],
                         date=page["date"], canonical_url=page["canonical"])
    date = _best_date(getattr(doc, "date", None), page["date"])
    return Extracted(
        url=url,
        title=clean_text(doc.title, multiline=False) or page["title"],
        author=clean_text(doc.author, multiline=False) or None,
        date=date,
        lang=language_tag(getattr(doc, "language", None)) or page["lang"],
        description=clean_text(doc.description) or page["description"],
        text=_paragraphs(doc.text),
        canonical_url=page["canonical"],
        sitename=clean_text(doc.sitename, multiline=False) or None,
    )


def _paragraphs(text: str | None) -> str:
    """trafilatura puts one block per line; veille's plain text separates paragraphs by blank lines."""
    if not text:
        return ""
    return clean_text("\n\n".join(line for line in text.splitlines() if line.strip()))


_DATE_META = (
    "article:published_time", "og:article:published_time", "datepublished", "dc.date.issued", "dc.date",
    "dcterms.created", "date", "pubdate", "publishdate", "sailthru.date", "parsely-pub-date",
)


def _page_metadata(tree: etree._Element, url: str) -> dict:
    """What trafilatura does not report: canonical URL, language, full publication timestamp."""
    base = url
    for href in tree.xpath("//base/@href")[:1]:
        base = absolute_url(href, url) or url
    canonical = None
    for link in tree.xpath("//link[@rel][@href]"):
        if "canonical" in link.get("rel", "").lower().split():
            canonical = absolute_url(link.get("href"), base)
            if canonical:
                break
    meta: dict[str, str] = {}
    for el in tree.xpath("//meta[@content]"):
        key = (el.get("property") or el.get("name") or el.get("itemprop") or el.get("http-equiv") or "").strip().lower()
        if key and key not in meta:
            meta[key] = el.get("content") or ""
    if canonical is None and meta.get("og:url"):
        canonical = absolute_url(meta["og:url"], base)
    html_el = tree if tree.tag == "html" else next(iter(tree.xpath("//html")), None)
    lang = None
    if html_el is not None:
        lang = language_tag(html_el.get("lang") or html_el.get("xml:lang"))  # the HTML parser keeps the prefix
    lang = lang or language_tag(meta.get("og:locale")) or language_tag(meta.get("content-language"))
    date = None
    for key in _DATE_META:
        if meta.get(key):
            date = parse_date(meta[key])
            if date:
                break
    if date is None:
        for value in tree.xpath("//time[@itemprop='datePublished']/@datetime")[:1]:
            date = parse_date(value)
    titles = tree.xpath("//title/text()")
    return {
        "canonical": canonical,
        "lang": lang,
        "date": date,
        "title": clean_text(meta.get("og:title") or (titles[0] if titles else ""), multiline=False) or None,
        "description": clean_text(meta.get("og:description") or meta.get("description")) or None,
    }


def _best_date(trafilatura_date: str | None, meta_date: datetime | None) -> datetime | None:
    """trafilatura's date (htmldate: the original publication day) with the time of day from the
    page's meta tags when both agree on the day; a bare January 1st is not trusted alone."""
    day = parse_date(trafilatura_date) if trafilatura_date else None
    if day is None or (trafilatura_date or "")[5:10] == "01-01" and meta_date is None:
        return meta_date  # htmldate turns a lone year ("© 2025" in a footer) into January 1st
    if meta_date is not None and meta_date.astimezone(PARIS).date() == day.astimezone(PARIS).date():
        return meta_date
    return day


# ==================================================================================================
# Entry + page -> Article


def _as_is(text: str | None, multiline: bool = True) -> str:
    return text or ""


def build_articles(items: Sequence[tuple[Entry, Extracted | None, str | None]], fetched_at: datetime,
                   *, parsed: bool = False) -> list[Article]:
    """`build_article` of every (entry, extracted page, final URL), with the SimHashes of all their
    texts computed together (`dedupe.simhashes`)."""
    articles = [build_article(entry, extracted, fetched_at, final_url, parsed=parsed, hash_text=False)
                for entry, extracted, final_url in items]
    for article, value in zip(articles, dedupe.simhashes([a.text for a in articles])):
        object.__setattr__(article, "simhash", value)  # still being built: frozen for its users
    return articles


def build_article(entry: Entry, extracted: Extracted | None, fetched_at: datetime,
                  final_url: str | None = None, *, parsed: bool = False, hash_text: bool = True) -> Article:
    """Merge what the feed said with what the page says; the feed wins where it is explicit.

    `parsed=True` says the entry comes from `parse`, whose text fields are already `clean_text`'s
    fixed points (a property test holds parse to it): cleaning them again was 40 % of building.
    `hash_text=False` leaves `simhash` at 0 for `build_articles` to fill.
    """
    clean = _as_is if parsed else clean_text
    feed_summary = clean(entry.summary)
    feed_text = max((clean(entry.content), feed_summary), key=len)
    page_text = clean_text(extracted.text) if extracted is not None else ""
    title = clean(entry.title, multiline=False) or (
        clean_text(extracted.title, multiline=False) if extracted is not None else "")
    page_text = _drop_title_line(page_text, title, extracted.title if extracted is not None else None)
    real_page = len(page_text.split()) >= MIN_PAGE_WORDS or (page_text and not feed_text)
    if real_page and len(page_text) >= len(feed_text):
        text, text_source = page_text, "page"
    else:
        text, text_source = feed_text, "feed"
    if not title:
        title = lead(text, 120) or entry.url
    summary = feed_summary
    if not summary and extracted is not None:
        summary = clean_text(extracted.description)
    if not summary:
        summary = lead(text)

    published_at, date_is_fallback = fetched_at, True
    for candidate in (entry.published, extracted.date if extracted is not None else None):
        if candidate is not None and candidate.tzinfo is not None and candidate <= fetched_at + FUTURE_TOLERANCE:
            published_at, date_is_fallback = candidate, False
            break

    page_url = final_url or entry.url
    canonical_source = page_url
    if extracted is not None and extracted.canonical_url and _plausible_canonical(extracted.canonical_url, page_url):
        canonical_source = extracted.canonical_url
    def canon(url: str) -> str:  # the entry's own link was canonicalised in the parse worker
        return entry.canonical_url if url == entry.url else dedupe.canonical_url(url)

    canonical = canon(canonical_source)
    seen: list[str] = []
    for candidate in (canonical, entry.url, final_url, canonical_source):
        if not candidate:
            continue
        for form in (candidate, canon(candidate)):
            if form not in seen:
                seen.append(form)
    author = clean(entry.author, multiline=False) or (
        clean_text(extracted.author, multiline=False) if extracted is not None else None)
    lang = (extracted.lang if extracted is not None else None) or entry.lang
    return Article(
        source_id=entry.source_id,
        url=entry.url,  # the link as published; redirects and canonical forms go to `urls`
        canonical_url=canonical,
        title=title,
        text=text,
        text_source=text_source,  # type: ignore[arg-type]
        published_at=published_at,
        fetched_at=fetched_at,
        guid=entry.guid,
        summary=summary,
        author=author or None,
        lang=lang,
        date_is_fallback=date_is_fallback,
        urls=tuple(seen),
        simhash=dedupe.simhash(text) if hash_text else 0,
    )


def _plausible_canonical(canonical: str, page_url: str) -> bool:
    """Reject a canonical URL that points at the site's home page from an article: a common CMS
    misconfiguration that would merge every article of the site into one."""
    try:
        canon, page = urlsplit(canonical), urlsplit(page_url)
    except ValueError:
        return False
    return bool(canon.path.strip("/") or canon.query) or not (page.path.strip("/") or page.query)


def _norm(text: str | None) -> str:
    return " ".join((text or "").lower().split()).rstrip(" .")


def _drop_title_line(text: str, *titles: str | None) -> str:
    """trafilatura often keeps the page's <h1> as the first paragraph: the title is stored apart."""
    first, _, rest = text.partition("\n\n")
    if rest and any(t and _norm(first) == _norm(t) for t in titles):
        return rest
    return text


_SENTENCE_END = re.compile(r"(?<=[.!?…»])\s+(?=[«\"“A-ZÀ-ÖØ-Þ0-9])")


def lead(text: str, max_chars: int = 300) -> str:
    """The first sentences of a text, up to about `max_chars`; a single long sentence is cut at a word."""
    if not text:
        return ""
    first = text.split("\n\n", 1)[0].replace("\n", " ").strip()
    if len(first) <= max_chars:
        return first
    out = ""
    for sentence in _SENTENCE_END.split(first):
        if out and len(out) + 1 + len(sentence) > max_chars:
            break
        out = f"{out} {sentence}".strip()
    if len(out) > max_chars or not out:
        out = first[:max_chars].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return out


__all__ = ["EXTRACT_OPTIONS", "build_article", "build_articles", "extract_page", "lead"]
