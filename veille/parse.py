"""Parse stage: turn a fetched document (feed, listing page, sitemap) into `Entry` records.

Feeds go through a fast lxml path that reads the fields feedparser would read, with feedparser as the
fallback for anything the fast path does not handle cleanly (malformed XML, unknown formats, DTD tricks):
on 20-entry 40 KB feeds the lxml path parses ~210 feeds/s/core and feedparser ~65 (bench/parse.py),
for an ingestion target of 150 feeds/s on two cores. Both paths hand their raw strings to the same text
helpers, so they produce the same entries (tests/test_parse.py checks it on every fixture).

The text helpers (`decode_document`, `html_to_text`, `clean_text`) live here and are reused by extract:
one encoding policy and one notion of "plain text" for the whole pipeline.
"""

from __future__ import annotations

import codecs
import heapq
import html
import io
import re
import unicodedata
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_tz
from html.entities import name2codepoint
from typing import Iterable, Iterator, Literal, NamedTuple
from urllib.parse import urljoin, urlsplit
from zoneinfo import ZoneInfo

from lxml import etree

from .config import SETTINGS_BY_NAME
from .errors import ParseError
from .types import Entry

MAX_ENTRIES = 1000
"""Entries kept per document: a runaway 100,000-item feed must not cost minutes or gigabytes."""
MAX_SITEMAP_BYTES: int = SETTINGS_BY_NAME["max_body_bytes"].default
"""Largest gzipped sitemap once inflated: what the fetch layer accepts for any body by default (parse has
no settings), so a `.xml.gz` bomb costs no more than a plain document."""
MAX_CHILDREN = 1000

PARIS = ZoneInfo("Europe/Paris")


@dataclass(frozen=True)
class Parsed:
    """What parse hands on for one document."""

    title: str | None
    """The feed's (or page's) own title, shown by `sources check`."""
    entries: tuple[Entry, ...]
    children: tuple[str, ...] = ()
    """Sitemap index: child sitemap URLs to fetch next."""
    warnings: tuple[str, ...] = ()
    """Problems worth telling staff about that did not stop parsing (malformed XML recovered...)."""
    last_modified: datetime | None = None
    """Newest entry date, for `sources check`."""


# ==================================================================================================
# Encodings

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_XML_DECL_ENCODING = re.compile(rb"""^\s*<\?xml[^>]{0,200}?encoding\s*=\s*["']([A-Za-z0-9._:-]{1,40})["']""")
_META_CHARSET = re.compile(rb"""<meta[^>]{0,300}?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]{1,40})""", re.I)
# Single-byte encodings that servers and CMSs declare by default; a body in one of them that is valid
# UTF-8 with non-ASCII bytes is in fact UTF-8 (Latin-1 text is practically never valid UTF-8).
_WESTERN = {"latin-1", "iso8859-1", "iso8859-15", "cp1252", "ascii"}


def _cp1252_fallback(error: UnicodeError) -> tuple[str, int]:
    """Decode an invalid UTF-8 byte as Windows-1252, the usual culprit in French documents."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    byte = error.object[error.start:error.start + 1]
    return byte.decode("cp1252", errors="veille.latin1"), error.start + 1


def _latin1(error: UnicodeError) -> tuple[str, int]:
    """The five bytes Windows-1252 leaves undefined become their Latin-1 code points (later stripped)."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return error.object[error.start:error.end].decode("latin-1"), error.end


codecs.register_error("veille.cp1252", _cp1252_fallback)
codecs.register_error("veille.latin1", _latin1)


def _codec(name: str | bytes | None) -> str | None:
    if not name:
        return None
    if isinstance(name, bytes):
        name = name.decode("ascii", "ignore")
    try:
        return codecs.lookup(name.strip().strip("\"'")).name
    except LookupError:
        return None


def declared_encoding(content: bytes, kind: Literal["xml", "html"] = "xml") -> str | None:
    """The encoding a document declares about itself (XML declaration, then `<meta charset>` for HTML)."""
    head = content[:4096]
    m = _XML_DECL_ENCODING.match(head)
    if kind == "html" and not m:
        m = _META_CHARSET.search(head)
    found = _codec(m.group(1)) if m else None
    if found and found.startswith(("utf-16", "utf-32")):
        return "utf-8"  # the declaration was just read as ASCII bytes, so it cannot be true
    return found


def decode_document(content: bytes, charset: str | None = None, kind: Literal["xml", "html"] = "xml") -> str:
    """Decode a document the way browsers do, then repair the usual French misdeclarations.

    Order: BOM, then the HTTP charset, then the document's own declaration, then UTF-8. A body declared
    Latin-1/Windows-1252 that is valid UTF-8 is read as UTF-8; a body declared (or assumed) UTF-8 that is
    not valid UTF-8 has its invalid bytes read as Windows-1252, so "é", "’" and "œ" come out right either way.
    """
    for bom, name in _BOMS:
        if content.startswith(bom):
            return content[len(bom):].decode(name, errors="replace")
    encoding = _codec(charset) or declared_encoding(content, kind) or "utf-8"
    if encoding in _WESTERN:
        if not content.isascii():
            try:
                return content.decode("utf-8")
            except UnicodeDecodeError:
                pass
        if encoding == "iso8859-15":
            return _c1_to_cp1252(content.decode("iso8859-15"))
        return content.decode("cp1252", errors="veille.latin1")
    if encoding == "utf-8":
        return content.decode("utf-8", errors="veille.cp1252")
    return content.decode(encoding, errors="replace")


_C1 = re.compile("[\x80-\x9f]")


def _c1_to_cp1252(text: str) -> str:
    """C1 control characters in text are Windows-1252 punctuation that went through a Latin-1 decoder."""
    if not _C1.search(text):
        return text
    return _C1.sub(lambda m: bytes([ord(m.group())]).decode("cp1252", errors="veille.latin1"), text)


# ==================================================================================================
# Plain text

# UTF-8 read as Windows-1252 ("Ã©", "â€™", "Å“"): the lead bytes that never start a real French
# word followed by characters that stand for UTF-8 continuation bytes.
_CONTINUATION = "".join(sorted({bytes([b]).decode("cp1252", errors="veille.latin1") for b in range(0x80, 0xC0)}))
_UNDEFINED_1252 = frozenset("\x81\x8d\x8f\x90\x9d")
_MOJIBAKE = re.compile("[\u00c2\u00c3\u00c5][" + re.escape(_CONTINUATION) + "]|\u00e2[\u20ac\u201a]["
                       + re.escape(_CONTINUATION) + "]")  # â€™ â€œ â€“ â€¦ â‚¬: U+2000-U+20FF punctuation, €


def _fix_mojibake(text: str) -> str:
    """Mojibake repaired until none is left: text encoded twice ("Ãƒâ‚¬") needs a second pass, and
    cleaning must be idempotent (build_article trusts parsed text to be clean already)."""
    for _ in range(3):
        if not _MOJIBAKE.search(text):
            return text
        fixed = _MOJIBAKE.sub(_repair_mojibake, text)
        if fixed == text:
            return text
        text = fixed
    return text


def _repair_mojibake(m: re.Match[str]) -> str:
    chunk = m.group()
    try:
        raw = b"".join(c.encode("cp1252") if c not in _UNDEFINED_1252 else c.encode("latin-1") for c in chunk)
        fixed = raw.decode("utf-8")
    except UnicodeError:
        return chunk
    category = unicodedata.category(fixed)
    return chunk if category[0] == "C" or category == "So" else fixed


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u200b\u2060\ufeff\ufffe\uffff]")
_BLANK_LINES = re.compile(r"\n\s*\n")


def clean_text(text: str | None, multiline: bool = True) -> str:
    """NFC, no control or invisible characters, Windows-1252 and mojibake repaired, whitespace folded.

    Multiline text keeps single newlines (line breaks) and blank lines (paragraphs); otherwise one line.
    """
    if not text:
        return ""
    text = _normalise(text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " "))
    if not multiline:
        return " ".join(text.split())
    paragraphs = []
    for block in _BLANK_LINES.split(text):
        # str.split, not re's [^\S\n]+: 20 us a text against 48 (bench/ingest.py's corpus)
        lines = [" ".join(line.split()) for line in block.split("\n")]
        block = "\n".join(line for line in lines if line)
        if block:
            paragraphs.append(block)
    return "\n\n".join(paragraphs)


_SUSPECT = re.compile("[\x80-\x9f\u00c2\u00c3\u00c5]|\u00e2[\u20ac\u201a]")
"""What `_c1_to_cp1252` or `_fix_mojibake` could change (C1 characters, the leads of `_MOJIBAKE`): a
lone "â" (âge, château) is no reason to run both over a French text."""


_REPAIRABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u00c2\u00c3\u00c5\u200b\u2060\ufeff\ufffe\uffff]")
"""Every character `_CONTROL` or `_SUSPECT` can match but the "â" of "â€"/"â‚" (found with `in`): a text
with none of them needs no repair, and one scan by a plain character class costs less than a third of
the two scans it replaces (`_SUSPECT`'s alternation makes the regex engine test every position)."""


def _normalise(text: str) -> str:
    """Character-level repairs only (no whitespace folding): C1, mojibake, controls, NFC."""
    if text.isascii():
        return text if _REPAIRABLE.search(text) is None else _CONTROL.sub("", text)
    if _REPAIRABLE.search(text) is None and "\u00e2\u20ac" not in text and "\u00e2\u201a" not in text:
        return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)
    if _SUSPECT.search(text):
        text = _fix_mojibake(_c1_to_cp1252(text))
    if _CONTROL.search(text):
        text = _CONTROL.sub("", text)
        if not text.isascii() and _SUSPECT.search(text):  # "Â\x1f¯": a dropped control can join a mojibake pair
            text = _fix_mojibake(text)
    if text.isascii():
        return text
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "body", "center", "dd", "details", "dialog", "dir", "div",
    "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
    "header", "hgroup", "hr", "html", "legend", "li", "main", "menu", "nav", "ol", "p", "pre", "section",
    "summary", "table", "tbody", "thead", "tfoot", "tr", "ul", "caption", "option",
})
_SKIP_TAGS = frozenset({"script", "style", "template", "applet", "head", "noscript", "svg", "math", "button",
                        "select", "textarea", "object", "iframe"})
_CELL_TAGS = frozenset({"td", "th"})
_HTML_PARSER = etree.HTMLParser(remove_comments=True, remove_pis=True, no_network=True, recover=True,
                                default_doctype=False, collect_ids=False, compact=True)
_KNOWN_TAGS = _BLOCK_TAGS | _SKIP_TAGS | _CELL_TAGS | {
    "a", "abbr", "acronym", "b", "big", "br", "cite", "code", "del", "dfn", "em", "font", "i", "img", "ins",
    "kbd", "mark", "q", "s", "samp", "small", "span", "strike", "strong", "sub", "sup", "time", "tt", "u",
    "var", "wbr", "video", "audio", "source", "picture", "col", "colgroup", "map", "area", "label", "input",
    "title", "meta", "link", "base",
}
_HTML_TAG = re.compile(r"</?([A-Za-z][A-Za-z0-9]*)\b[^<>]*>")
_CLOSE_TAG = re.compile(r"</[A-Za-z][A-Za-z0-9]*\s*>|<br\s*/?>|<p\b|<img\b", re.I)
_ENTITY = re.compile(r"&(#\d{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def looks_like_html(text: str) -> bool:
    """Guess whether an RSS field declared as plain text is really HTML (RSS titles often are)."""
    if "<" not in text and "&" not in text:
        return False
    tags = _HTML_TAG.findall(text)
    if tags:
        return all(tag.lower() in _KNOWN_TAGS for tag in tags) and bool(_CLOSE_TAG.search(text) or _ENTITY.search(text))
    return any(e.startswith("#") or e in name2codepoint for e in _ENTITY.findall(text))


def html_to_text(markup: str | None) -> str:
    """Plain text of an HTML fragment: tags stripped, entities decoded, scripts dropped, whitespace
    folded, block elements as paragraphs separated by blank lines, `<br>` as a line break."""
    if not markup or not markup.strip():
        return ""
    if "<" not in markup and "&" not in markup:
        return clean_text(markup, multiline=False)
    text = _html_fragment_text(markup)
    if "<" in text and _CLOSE_TAG.search(text) and looks_like_html(text):  # double-escaped (&amp;lt;p&amp;gt;)
        text = _html_fragment_text(text)
    return text


def _html_fragment_text(markup: str) -> str:
    try:
        root = etree.fromstring(markup, _HTML_PARSER)
    except (etree.ParserError, ValueError):
        root = None
    if root is None:
        return clean_text(html.unescape(markup), multiline=False)
    return element_text(root)


def element_text(root: etree._Element) -> str:
    """Plain text of an (X)HTML element tree; see `html_to_text`."""
    paragraphs: list[str] = []
    words: list[str] = []  # the paragraph's text, "\x00" for a line break: libxml2 text never holds one

    def end_paragraph() -> None:
        block = "".join(words)
        words.clear()
        if "\x00" in block:
            block = "\n".join(line for line in (" ".join(part.split()) for part in block.split("\x00")) if line)
        else:
            block = " ".join(block.split())
        if block:
            paragraphs.append(block)

    skipping = 0
    for event, el in etree.iterwalk(root, events=("start", "end")):
        tag = el.tag
        if not isinstance(tag, str):  # comment or processing instruction
            if event == "end" and not skipping and el.tail:
                words.append(el.tail)
            continue
        if "}" in tag:
            tag = tag.rpartition("}")[2]
        tag = tag.lower()
        if event == "start":
            if skipping or tag in _SKIP_TAGS:
                skipping += 1
                continue
            if tag in _BLOCK_TAGS:
                if words:
                    end_paragraph()
            elif tag == "br":
                words.append("\x00")
            elif tag in _CELL_TAGS:
                words.append(" ")
            if el.text:
                words.append(el.text)
        else:
            if skipping:
                skipping -= 1
                if skipping:
                    continue
            elif tag in _BLOCK_TAGS and words:
                end_paragraph()
            if el.tail and el is not root:
                words.append(el.tail)
    if words:
        end_paragraph()
    text = "\n\n".join(paragraphs)
    normal = _normalise(text)
    # A repair (a control character dropped, mojibake fixed) can empty a line or join spaces: fold again.
    return normal if normal == text else clean_text(normal)


def plain_text(text: str | None) -> str:
    """A field declared as plain text: paragraphs kept, whitespace folded."""
    return clean_text(text)


def field_text(raw: str | None, is_html: bool) -> str:
    return html_to_text(raw) if is_html else plain_text(raw)


def title_text(raw: str | None, is_html: bool | None = None) -> str:
    """Titles are one line; RSS titles (`is_html=None`) are HTML only when they look like it."""
    if not raw:
        return ""
    if is_html is None:
        is_html = looks_like_html(raw)
    return " ".join((html_to_text(raw) if is_html else clean_text(raw)).split())


# ==================================================================================================
# Dates

_FR_MONTHS = {
    "janvier": 1, "janv": 1, "jan": 1, "fevrier": 2, "fevr": 2, "fev": 2, "feb": 2, "mars": 3, "mar": 3,
    "avril": 4, "avr": 4, "apr": 4, "mai": 5, "may": 5, "juin": 6, "jun": 6, "juillet": 7, "juil": 7, "jul": 7,
    "aout": 8, "aou": 8, "aug": 8, "septembre": 9, "sept": 9, "sep": 9, "octobre": 10, "oct": 10,
    "novembre": 11, "nov": 11, "decembre": 12, "dec": 12,
    "january": 1, "february": 2, "march": 3, "april": 4, "june": 6, "july": 7, "august": 8, "september": 9,
    "october": 10, "november": 11, "december": 12,
}
_WEEKDAYS = (r"lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche|lun|mar|mer|jeu|ven|sam|dim|"
             r"monday|tuesday|wednesday|thursday|friday|saturday|sunday|mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun")
_TZ_NAMES = {"z": 0, "ut": 0, "utc": 0, "gmt": 0, "cet": 60, "cest": 120, "wet": 0, "west": 60,
             "est": -300, "edt": -240, "cst": -360, "cdt": -300, "mst": -420, "mdt": -360, "pst": -480,
             "pdt": -420, "bst": 60}
_ISO = re.compile(r"^\d{4}-?\d{2}-?\d{2}(?:[T ]\d{2}(?::?\d{2}){0,2}(?:[.,]\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)?$", re.I)
_WORDY = re.compile(
    r"^(?:(?:" + _WEEKDAYS + r")\.?,?\s+)?(?:le\s+)?"
    r"(?P<day>\d{1,2})(?:er|re)?\.?\s*(?:[-/ ]\s*)?(?P<month>[a-z]+)\.?,?\s*(?:[-/ ]\s*)?(?P<year>\d{4}|\d{2})"
    r"(?:,?\s*(?:a\s+|-\s*)?(?P<hour>\d{1,2})\s*(?:[:h]\s*(?P<minute>\d{2})?)(?:\s*[:m]\s*(?P<second>\d{2})s?)?)?"
    r"\s*(?P<tz>z|[a-z]{1,5}|(?:gmt|utc)?\s*[+-]\d{1,2}(?::?\d{2})?)?$"
)
_MONTH_FIRST = re.compile(
    r"^(?:(?:" + _WEEKDAYS + r")\.?,?\s+)?(?P<month>[a-z]+)\.?\s+(?P<day>\d{1,2}),?\s+(?P<year>\d{4})"
    r"(?:,?\s+(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?)?\s*(?P<tz>z|[a-z]{1,5}|[+-]\d{2}:?\d{2})?$"
)
_NUMERIC = re.compile(
    r"^(?P<day>\d{1,2})[/.](?P<month>\d{1,2})[/.](?P<year>\d{4})"
    r"(?:[\s,]+(?:a\s+)?(?P<hour>\d{1,2})\s*[:h]\s*(?P<minute>\d{2})(?::(?P<second>\d{2}))?)?$"
)


def parse_date(text: str | None) -> datetime | None:
    """Read a feed or page date; timezone-aware UTC, or None when it cannot be read.

    RFC 822, ISO 8601/W3C-DTF, and the French forms feedparser leaves unparsed (`mar., 13 sept. 2022
    16:41:30 +0000`, `13 septembre 2022`, `lundi 3 février 2025 10:00`, `1er mars 2024`, `13/09/2022`).
    A time without a timezone is Paris time: this is a French press watch.
    """
    if not text:
        return None
    text = " ".join(str(text).split())[:100]
    if not text:
        return None
    try:
        if _ISO.match(text):
            return _aware(datetime.fromisoformat(text.replace(" Z", "Z").upper().replace("Z", "+00:00")))
    except ValueError:
        pass
    parts = parsedate_tz(text) if text[:1].isalpha() or text[:1].isdigit() else None
    if parts is not None and 1 <= parts[1] <= 12 and parts[0] > 0:
        try:
            moment = datetime(*parts[:6])  # type: ignore[misc]
            if parts[9] is None:
                return _aware(moment)
            return _aware(moment.replace(tzinfo=timezone(timedelta(seconds=parts[9]))))
        except (ValueError, OverflowError):
            pass
    return _parse_wordy(text)


def _parse_wordy(text: str) -> datetime | None:
    folded = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    folded = folded.replace(" à ", " a ")
    m = _WORDY.match(folded) or _MONTH_FIRST.match(folded) or _NUMERIC.match(folded)
    if not m:
        return None
    groups = m.groupdict()
    month_text = groups["month"]
    month = int(month_text) if month_text.isdigit() else _FR_MONTHS.get(month_text) or _FR_MONTHS.get(month_text[:4])
    if not month:
        month = _FR_MONTHS.get(month_text[:3])
    if not month:
        return None
    year = int(groups["year"])
    if year < 100:
        year += 2000 if year < 70 else 1900
    try:
        moment = datetime(year, month, int(groups["day"]), int(groups.get("hour") or 0),
                          int(groups.get("minute") or 0), int(groups.get("second") or 0))
    except (ValueError, TypeError):
        return None
    offset = _tz_offset(groups.get("tz"))
    if offset is False:
        return None
    if offset is not None:
        moment = moment.replace(tzinfo=timezone(timedelta(minutes=offset)))
    return _aware(moment)


def _tz_offset(tz: str | None) -> int | None | bool:
    """Minutes east of UTC; None when absent; False when it is a word that is not a timezone."""
    if not tz:
        return None
    tz = tz.strip().replace("gmt", "").replace("utc", "").strip() or "z"
    if tz in _TZ_NAMES:
        return _TZ_NAMES[tz]
    m = re.fullmatch(r"([+-])(\d{1,2}):?(\d{2})?", tz)
    if not m:
        return False
    minutes = int(m.group(2)) * 60 + int(m.group(3) or 0)
    return minutes if m.group(1) == "+" else -minutes


def _aware(moment: datetime) -> datetime | None:
    if not 1900 <= moment.year <= 2200:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=PARIS)
    return moment.astimezone(timezone.utc).replace(microsecond=0)  # the archive keeps seconds


# ==================================================================================================
# URLs and small helpers


_PLAIN_ABSOLUTE = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]*)?(?:/[A-Za-z0-9/:@!$&'()*+,=%._~-]*)?")
"""An absolute http(s) URL that `urljoin` would return as it is and `urlsplit` accept (no query,
fragment or `;` parameters, which they may rebuild): most links in feeds, spared both (~10 us each)."""


def absolute_url(href: str | None, base: str | None) -> str | None:
    """`href` resolved against `base`, only if the result is an http(s) URL with a host."""
    if not href:
        return None
    href = href.strip().replace(" ", "%20")  # browsers encode the spaces some CMSs leave in links
    if _PLAIN_ABSOLUTE.fullmatch(href):
        return href
    return _resolved_url(href, base)


def _resolved_url(href: str, base: str | None) -> str | None:
    try:
        url = urljoin(base or "", href) if base else href
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc or any(c in url for c in "\n\t<>\""):
        return None
    return url


def language_tag(value: str | None) -> str | None:
    """The primary language subtag, lower-case (`fr-FR` -> `fr`), as trafilatura reports it too."""
    if not value:
        return None
    primary = value.strip().replace("_", "-").split("-")[0].lower()
    return primary if re.fullmatch(r"[a-z]{2,3}", primary) else None


def _newest(entries: Iterable[Entry]) -> datetime | None:
    return max((e.published for e in entries if e.published), default=None)


_CONTROL_XML = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]|\xef\xbf[\xbe\xbf]")
"""What XML forbids even as references, in UTF-8: C0 controls but tab and newlines, U+FFFE and U+FFFF."""
_C0_BYTES = bytes(range(0x09)) + b"\x0b\x0c" + bytes(range(0x0e, 0x20))
_XML_DECL = re.compile(rb"^\s*<\?xml[^>]*\?>")


def _utf8_xml(text: str) -> bytes:
    """The decoded document as UTF-8 bytes whose XML declaration says so (parsers re-read the declaration)."""
    data = text.lstrip("\ufeff").lstrip().encode("utf-8", errors="surrogatepass")
    # Looked for in the bytes: `bytes.translate` and `in` scan ten times faster than a regex over the text.
    if len(data.translate(None, _C0_BYTES)) != len(data) or b"\xef\xbf\xbe" in data or b"\xef\xbf\xbf" in data:
        data = _CONTROL_XML.sub(b"", data)
    m = _XML_DECL.match(data)
    return b'<?xml version="1.0" encoding="utf-8"?>' + (data[m.end():] if m else data)


# ==================================================================================================
# Feeds

NS_ATOM = "http://www.w3.org/2005/Atom"
NS_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NS_RSS10 = "http://purl.org/rss/1.0/"
NS_RSS090 = "http://my.netscape.com/rdf/simple/0.9/"
NS_DC = "http://purl.org/dc/elements/1.1/"
NS_DCTERMS = "http://purl.org/dc/terms/"
NS_CONTENT = "http://purl.org/rss/1.0/modules/content/"
NS_XML = "http://www.w3.org/XML/1998/namespace"
XML_LANG = f"{{{NS_XML}}}lang"

_XML_OPTIONS = {"resolve_entities": False, "no_network": True, "huge_tree": False, "load_dtd": False,
                "dtd_validation": False, "remove_comments": True, "remove_pis": True, "collect_ids": False}
_XML_PARSER = etree.XMLParser(**_XML_OPTIONS)
_PULL_CHUNK = 64 * 1024


def _pull(parser: etree.XMLPullParser, data: bytes) -> Iterator[etree._Element | None]:
    """Feed `data` to `parser` a chunk at a time: None after each chunk, then the root once it is complete.

    Between chunks the caller reads and drops what the parser has built, so 10 MB made of 100,000 tiny
    elements never becomes a 100 MB tree that glibc then keeps. Syntax errors are raised, but lxml's feed
    parser words them unreliably (a later or stale message), so callers re-parse a malformed document
    with `_XML_PARSER`: the verdict and its message stay libxml2's own.
    """
    for start in range(0, len(data), _PULL_CHUNK):
        parser.feed(data[start:start + _PULL_CHUNK])
        yield None
    yield parser.close()


_DATE_KEYS = {  # local name -> which of feedparser's three date slots it fills
    "pubDate": "published", "issued": "published", "published": "published", "updated": "updated",
    "modified": "updated", "date": "updated", "created": "created",
}
_HTML_TYPES = {"html", "xhtml", "text/html", "application/xhtml+xml"}


def parse_feed(source_id: str, content: bytes, url: str, charset: str | None = None) -> Parsed:
    """RSS 0.9x/1.0/2.0 or Atom to entries: lxml fast path, feedparser when the fast path declines."""
    text = decode_document(content, charset, "xml")
    _refuse_non_feed(source_id, url, text)
    data = _utf8_xml(text)
    warnings: list[str] = []
    parsed = _fast_feed(source_id, data, url, warnings)
    if parsed is not None:
        return parsed
    return _feedparser_feed(source_id, data, url, warnings)


def parse_feed_feedparser(source_id: str, content: bytes, url: str, charset: str | None = None) -> Parsed:
    """The fallback path alone (exposed so tests can check both paths agree)."""
    text = decode_document(content, charset, "xml")
    _refuse_non_feed(source_id, url, text)
    return _feedparser_feed(source_id, _utf8_xml(text), url, [])


_HTML_START = re.compile(r"(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*|<!doctype[^>]*>\s*)*<html[\s>]", re.S)


def _refuse_non_feed(source_id: str, url: str, text: str) -> None:
    head = text.lstrip("\ufeff \t\r\n")[:2048]
    lower = head.lower()
    if not head:
        raise ParseError(source_id, url, "not a feed: the document is empty",
                         "check the URL in a browser; the server may be failing")
    if _HTML_START.match(lower):
        found = _discover_feed(text, url)
        hint = (f"the page links its feed at {found}: use that URL" if found else
                "check the URL; if the site has no feed, make it an html source with a link_selector")
        raise ParseError(source_id, url, "not a feed: the server sent an HTML page", hint)
    if lower.startswith(("{", "[")):
        raise ParseError(source_id, url, "not a feed: the server sent JSON",
                         "JSON Feed is not supported; look for an RSS or Atom version of the feed")
    if "<urlset" in lower or "<sitemapindex" in lower:
        raise ParseError(source_id, url, "not a feed: this is a sitemap", "set `type: sitemap` for this source")
    if not lower.startswith("<"):
        raise ParseError(source_id, url, "not a feed: the document is not XML", "check the URL in a browser")


def _discover_feed(text: str, url: str) -> str | None:
    for m in re.finditer(r"<link\b[^>]*>", text[:200_000], re.I):
        tag = m.group()
        if re.search(r"""type\s*=\s*["']?application/(rss|atom)\+xml""", tag, re.I):
            href = re.search(r"""href\s*=\s*["']([^"']+)["']""", tag, re.I)
            found = absolute_url(html.unescape(href.group(1)), url) if href else None
            if found:
                return found
    return None


_DOCTYPE = re.compile(rb"<!DOCTYPE[^>\[]*(\[)?[^>]*>", re.I)


def doctype_start(data: bytes) -> int:
    """Where the document's DOCTYPE declaration starts, or -1: the prolog (XML declaration, comments,
    processing instructions) is read through whatever its length. A fixed window let a DOCTYPE placed
    after a long comment slip past the entity checks (tests/test_hostile.py, padded prolog)."""
    i, size = (3 if data.startswith(b"\xef\xbb\xbf") else 0), len(data)
    while i < size:
        if data[i] in b" \t\r\n":
            i += 1
        elif data.startswith(b"<!--", i):
            end = data.find(b"-->", i + 4)
            if end < 0:
                return -1
            i = end + 3
        elif data.startswith(b"<?", i):
            end = data.find(b"?>", i + 2)
            if end < 0:
                return -1
            i = end + 2
        else:
            return i if data[i:i + 9].upper() == b"<!DOCTYPE" else -1
    return -1


def _fast_feed(source_id: str, data: bytes, url: str, warnings: list[str]) -> Parsed | None:
    """The lxml path; None means "let feedparser handle it" (it is never a verdict on the feed)."""
    start = doctype_start(data)
    doctype = _DOCTYPE.match(data, start) if start >= 0 else None
    if doctype is not None:
        if doctype.group(1):
            return None  # an internal subset declares entities: feedparser keeps only the safe ones
        data = data[:doctype.start()] + data[doctype.end():]  # an external DTD that is never loaded anyway
    try:
        root, dropped = _feed_tree(data, url)
    except etree.XMLSyntaxError as e:
        if "Entity" not in str(e) or "not defined" not in str(e):
            return None
        repaired = _numeric_entities(data)
        try:
            root, dropped = _feed_tree(repaired, url)
        except etree.XMLSyntaxError:
            return None
        warnings.append("HTML entities such as &eacute; are not valid XML; they were converted")
    if root.getroottree().docinfo.internalDTD is not None:
        return None  # entity declarations: feedparser keeps only the safe ones
    tag = root.tag
    if tag == "rss":
        channel = root.find("channel")
        if channel is None:
            return None
        entry_tag = "item"
        items = channel.findall(entry_tag)
        if not items and root.find(".//item") is not None:
            return None
        ns = ""
        to_entry = _rss_entry
    elif tag == f"{{{NS_RDF}}}RDF":
        for ns in (NS_RSS10, NS_RSS090):
            channel = root.find(f"{{{ns}}}channel")
            if channel is not None:
                break
        else:
            return None
        entry_tag = f"{{{ns}}}item"
        items = root.findall(entry_tag)
        ns = f"{{{ns}}}"
        to_entry = _rss_entry
    elif tag == f"{{{NS_ATOM}}}feed":
        channel = root
        entry_tag = _ATOM_ENTRY
        items = root.findall(entry_tag)
        ns = f"{{{NS_ATOM}}}"
        to_entry = _atom_entry
    else:
        return None
    title_el = channel.find(f"{ns}title")
    if title_el is None and ns != f"{{{NS_ATOM}}}":
        title_el = channel.find(f"{{{NS_DC}}}title")
    if to_entry is _atom_entry:
        feed_title = _atom_text(title_el, title=True) if title_el is not None else ""
    else:
        feed_title = title_text(_inner(title_el)) if title_el is not None else ""
    feed_lang = _feed_language(root, channel, ns)
    warnings.extend(_cap_warning(len(items) + dropped.get(entry_tag, 0)))
    entries = _kept_entries((to_entry(source_id, item, ns, feed_lang) for item in items[:MAX_ENTRIES]), warnings)
    return Parsed(feed_title or None, tuple(entries), (), tuple(warnings), _newest(entries))


_ATOM_ENTRY = f"{{{NS_ATOM}}}entry"
_RDF_ITEMS = frozenset({f"{{{NS_RSS10}}}item", f"{{{NS_RSS090}}}item"})


def _feed_tree(data: bytes, url: str) -> tuple[etree._Element, dict[str, int]]:
    """The feed's tree, without the entries past MAX_ENTRIES that `_fast_feed` would only count.

    Returns the tree and, per entry tag, how many entries were dropped. A syntax error is always
    `_XML_PARSER`'s (see `_pull`), so the entity repair and the fallback decide exactly as before.
    """
    try:
        return _capped_feed_tree(data, url)
    except etree.XMLSyntaxError:
        return etree.fromstring(data, _XML_PARSER, base_url=url), {}


def _capped_feed_tree(data: bytes, url: str) -> tuple[etree._Element, dict[str, int]]:
    """Parse incrementally, emptying and removing each entry of the feed's own entry list past the cap.

    Only the entries `_fast_feed` reads from are candidates (RSS: items of the first <channel>; RDF and
    Atom: the root's item/entry children), so the entries it reads and the tree around them are the ones
    a full parse gives; the whole document is still parsed, so a malformed tail still falls back.
    """
    parser = etree.XMLPullParser(("end",), tag=["item", *_RDF_ITEMS, _ATOM_ENTRY], base_url=url, **_XML_OPTIONS)
    root = channel = document = None
    counted: dict[str, int] = {}
    dropped: dict[str, int] = {}
    emptied: etree._Element | None = None
    for document in _pull(parser, data):
        for _, el in parser.read_events():
            parent = el.getparent()
            if root is None:
                root = el.getroottree().getroot()
            if root.tag == "rss":
                if channel is None and parent is not None and parent.tag == "channel" and parent.getparent() is root:
                    channel = root.find("channel")  # the first one: the one `_fast_feed` reads
                candidate = el.tag == "item" and channel is not None and parent is channel
            elif root.tag == f"{{{NS_RDF}}}RDF":
                candidate = el.tag in _RDF_ITEMS and parent is root
            else:
                candidate = root.tag == f"{{{NS_ATOM}}}feed" and el.tag == _ATOM_ENTRY and parent is root
            if not candidate:
                continue
            counted[el.tag] = counted.get(el.tag, 0) + 1
            if counted[el.tag] <= MAX_ENTRIES:
                continue
            dropped[el.tag] = dropped.get(el.tag, 0) + 1
            el.clear()
            if emptied is not None:  # the previous one: the element just ended may still be the parser's last
                parent.remove(emptied)
            emptied = el
    if emptied is not None:
        emptied.getparent().remove(emptied)
    assert document is not None
    return document, dropped


def _kept_entries(candidates: Iterable[Entry | None], warnings: list[str]) -> list[Entry]:
    """The entries both feed paths keep: those with an http(s) link; the others are counted in a warning."""
    entries: list[Entry] = []
    skipped = 0
    for entry in candidates:
        if entry is None:
            skipped += 1
        else:
            entries.append(entry)
    if skipped:
        warnings.append(f"{skipped} entr{'y' if skipped == 1 else 'ies'} without an http(s) link skipped")
    return entries


def _cap_warning(count: int) -> list[str]:
    if count > MAX_ENTRIES:
        return [f"only the first {MAX_ENTRIES} of {count} entries were read"]
    return []


def _numeric_entities(data: bytes) -> bytes:
    """Replace HTML named entities (undefined in XML) by character references."""
    def repl(m: re.Match[bytes]) -> bytes:
        name = m.group(1).decode("ascii")
        if name in ("amp", "lt", "gt", "quot", "apos") or name not in name2codepoint:
            return m.group()
        return b"&#%d;" % name2codepoint[name]

    return re.sub(rb"&([A-Za-z][A-Za-z0-9]{1,31});", repl, data)


def _inner(el: etree._Element | None) -> str:
    """The content of an element as a string: its text, or its markup when it has child elements."""
    if el is None:
        return ""
    if len(el) == 0:
        return el.text or ""
    parts = [html.escape(el.text or "", quote=False)]
    for child in el:
        parts.append(etree.tostring(child, encoding="unicode", with_tail=True))
    return "".join(parts)


def _lang_of(el: etree._Element) -> str | None:
    while el is not None:
        value = el.get(XML_LANG)
        if value:
            return value
        el = el.getparent()
    return None


def _feed_language(root: etree._Element, channel: etree._Element, ns: str) -> str | None:
    for path in (f"{ns}language", f"{{{NS_DC}}}language"):
        el = channel.find(path)
        if el is not None and el.text and el.text.strip():
            return language_tag(el.text)
    return language_tag(_lang_of(channel))


def _local(tag: str) -> tuple[str, str]:
    if tag[0] == "{":
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return "", tag


def _rss_entry(source_id: str, item: etree._Element, ns: str, feed_lang: str | None) -> Entry | None:
    own_ns = ns[1:-1] if ns else ""
    title = link = guid = summary = content = author = None
    guid_is_link = False
    dates: dict[str, str] = {}
    lang = None
    for child in item:
        tag = child.tag
        if not isinstance(tag, str):
            continue
        cns, name = _local(tag)
        if cns == own_ns or (cns == "" and own_ns == NS_RSS10):
            if name == "title":
                if not title:
                    title = _inner(child).strip() or None
            elif name == "link":
                link = (child.text or "").strip()
            elif name == "guid":
                guid = (child.text or "").strip() or None
                guid_is_link = (child.get("isPermaLink") or child.get("ispermalink") or "true").strip() == "true"
            elif name == "description":
                if summary is None:
                    summary = _inner(child)
            elif name == "author":
                author = author or _rss_author(child.text)
            elif name in ("pubDate", "issued"):
                dates["published"] = child.text or ""
        elif cns == NS_DC:
            if name == "title":
                if not title:
                    title = _inner(child).strip() or None
            elif name == "description":
                if summary is None:
                    summary = _inner(child)
            elif name == "creator":
                author = author or clean_text(child.text, multiline=False) or None
            elif name == "date":
                dates["updated"] = child.text or ""
            elif name == "language" and child.text:
                lang = child.text
        elif cns == NS_DCTERMS and name in _DATE_KEYS:
            dates[_DATE_KEYS[name]] = child.text or ""
        elif cns == NS_CONTENT and name == "encoded":
            if content is None:
                content = _inner(child)
        elif cns == NS_ATOM:
            if name in ("published", "updated"):
                dates[name] = child.text or ""
            elif name == "link" and child.get("href"):
                rel = child.get("rel") or "alternate"
                ctype = child.get("type") or "text/html"
                if rel == "alternate" and ctype in ("text/html", "application/xhtml+xml"):
                    link = child.get("href")
    if ns == f"{{{NS_RSS10}}}" or ns == f"{{{NS_RSS090}}}":
        about = item.get(f"{{{NS_RDF}}}about")
        if about and not guid:
            guid = about
    base = item.base
    url = absolute_url(link, base) if link else None
    if url is None and guid and guid_is_link:
        url = absolute_url(guid, base)
    if guid and guid_is_link:
        guid = absolute_url(guid, base) or guid
    if url is None:
        return None
    return Entry(
        source_id=source_id,
        url=url,
        guid=guid,
        title=title_text(title),
        summary=html_to_text(summary),
        content=html_to_text(content),
        author=author,
        published=_pick_date(dates),
        lang=language_tag(lang or _lang_of(item)) or feed_lang,
    )


def _rss_author(text: str | None) -> str | None:
    """RSS `<author>` is "email (Name)": keep the name when there is one."""
    text = clean_text(text, multiline=False)
    m = re.fullmatch(r"\S+@\S+\s*\((.+)\)", text)
    return (m.group(1).strip() if m else text) or None


def _pick_date(dates: dict[str, str]) -> datetime | None:
    for key in ("published", "updated", "created"):
        moment = parse_date(dates.get(key))
        if moment is not None:
            return moment
    return None


def _atom_text(el: etree._Element, title: bool = False) -> str:
    ctype = (el.get("type") or "text").strip().lower()
    if ctype in ("xhtml", "application/xhtml+xml"):
        text = element_text(el)
    elif ctype in ("html", "text/html"):
        text = html_to_text(_inner(el))
    elif ctype in ("text", "text/plain"):
        text = plain_text(_inner(el))
    else:
        return ""
    return " ".join(text.split()) if title else text


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def _atom_entry(source_id: str, entry: etree._Element, ns: str, feed_lang: str | None) -> Entry | None:
    title = summary = content = author = guid = link = None
    title_el = None
    dates: dict[str, str] = {}
    for child in entry:
        tag = child.tag
        if not isinstance(tag, str):
            continue
        cns, name = _local(tag)
        if cns == NS_ATOM:
            if name == "title":
                if title_el is None and (child.text or len(child)):
                    title_el = child
            elif name == "link" and child.get("href"):
                rel = (child.get("rel") or "alternate").strip()
                ctype = (child.get("type") or "text/html").strip().lower()
                if rel == "alternate" and ctype in ("text/html", "application/xhtml+xml"):
                    link = child.get("href")
            elif name == "id":
                guid = (child.text or "").strip() or None
            elif name == "summary":
                if summary is None:
                    summary = _atom_text(child)
            elif name == "content":
                if content is None and not child.get("src"):
                    content = _atom_text(child)
            elif name == "author":
                if author is None:
                    name_el = child.find(f"{{{NS_ATOM}}}name")
                    author = clean_text(name_el.text if name_el is not None else None, multiline=False) or None
            elif name in _DATE_KEYS:
                dates[_DATE_KEYS[name]] = child.text or ""
        elif cns == NS_DC:
            if name == "creator" and author is None:
                author = clean_text(child.text, multiline=False) or None
            elif name == "date":
                dates["updated"] = child.text or ""
        elif cns == NS_DCTERMS and name in _DATE_KEYS:
            dates[_DATE_KEYS[name]] = child.text or ""
    if title_el is not None:
        title = _atom_text(title_el, title=True)
    base = entry.base
    url = absolute_url(link, base) if link else None
    if guid and not _SCHEME.match(guid):
        guid = absolute_url(guid, base) or guid  # a relative id, as feedparser resolves it
    if url is None and guid:
        url = absolute_url(guid, base)
    if url is None:
        return None
    return Entry(
        source_id=source_id,
        url=url,
        guid=guid,
        title=title or "",
        summary=summary or "",
        content=content or "",
        author=author,
        published=_pick_date(dates),
        lang=language_tag(_lang_of(entry)) or feed_lang,
    )


_ENTITY_DECL = re.compile(rb'<!ENTITY\s+([\w.-]+)\s+"([^"]*)"\s*>')
_SAFE_ENTITY_VALUE = re.compile(rb"&#\w+;|[^&]*")


def defuse_doctype(data: bytes) -> bytes:
    """The document with only the entity declarations feedparser calls safe (one character reference,
    or text without references), its DOCTYPE alone on a line.

    feedparser drops the other declarations only when the DOCTYPE starts a line: after
    `<?xml ...?><!DOCTYPE rss [...]>` on one line, expat expanded a billion laughs up to its own
    amplification limit (hundreds of thousands of callbacks, seconds of CPU, for a 1 KB feed).
    """
    start = doctype_start(data)
    bracket = data.find(b"[", start) if start >= 0 else -1
    close = data.find(b">", start) if start >= 0 else -1
    if bracket < 0 or close < bracket:
        return data  # no internal subset: nothing is declared
    end = data.find(b"]", bracket)
    close = data.find(b">", end) if end >= 0 else -1
    if close < 0:
        return data
    name = data[start + 9:bracket].split()
    safe = [m.group(0) for m in _ENTITY_DECL.finditer(data, bracket, end) if _SAFE_ENTITY_VALUE.fullmatch(m.group(2))]
    doctype = (b"\n<!DOCTYPE " + (name[0] if name else b"rss") + b" [\n" + b"\n".join(safe) + b"\n]>\n"
               if safe else b"\n")
    return data[:start] + doctype + data[close + 1:]


def _feedparser_feed(source_id: str, data: bytes, url: str, warnings: list[str]) -> Parsed:
    import feedparser

    data = defuse_doctype(data)
    # Always a stream: feedparser reads a bytes/str argument as a file name or URL if it looks like one.
    result = feedparser.parse(io.BytesIO(data), response_headers={
        "content-type": "application/xml; charset=utf-8", "content-location": url,
    }, resolve_relative_uris=False, sanitize_html=False)  # we keep text only
    version = result.get("version") or ""
    entries_raw = result.get("entries") or []
    if result.get("bozo"):
        problem = result.get("bozo_exception")
        message = getattr(problem, "getMessage", lambda: str(problem))()
        if not entries_raw and not version:
            raise ParseError(source_id, url, f"not a feed: cannot read it as RSS or Atom ({message})",
                             "open the URL in a browser: the server may send an error page or a broken file")
        warnings.append(f"recovered from malformed XML: {message}")
    elif not version and not entries_raw:
        raise ParseError(source_id, url, "not a feed: no RSS or Atom element found",
                         "check the URL; it may point to another kind of XML document")
    feed = result.get("feed") or {}
    feed_lang = language_tag(dict.get(feed, "language"))
    warnings.extend(_cap_warning(len(entries_raw)))
    entries = _kept_entries((_from_feedparser(source_id, raw, url, feed_lang) for raw in entries_raw[:MAX_ENTRIES]),
                            warnings)
    title = dict.get(feed, "title")
    detail = dict.get(feed, "title_detail") or {}
    feed_title = title_text(title, detail.get("type") in _HTML_TYPES) if title else ""
    return Parsed(feed_title or None, tuple(entries), (), tuple(warnings), _newest(entries))


def _from_feedparser(source_id: str, raw: dict, base: str, feed_lang: str | None) -> Entry | None:
    # Plain dict access: FeedParserDict's aliases (updated -> published...) would blur the fields.
    url = absolute_url(dict.get(raw, "link"), base)
    if url is None:
        return None
    title_detail = dict.get(raw, "title_detail") or {}
    title = dict.get(raw, "title")
    summary = ""
    summary_detail = dict.get(raw, "summary_detail")
    if summary_detail is not None:  # from a description/summary element, not copied from the content
        summary = field_text(dict.get(raw, "summary"), summary_detail.get("type") in _HTML_TYPES)
    content = ""
    for item in dict.get(raw, "content") or ():
        if item.get("src"):
            continue
        ctype = item.get("type") or "text/plain"
        if ctype in _HTML_TYPES or ctype == "text/plain":
            content = field_text(item.get("value"), ctype in _HTML_TYPES)
            break
    published = None
    for key in ("published", "updated", "created"):
        published = parse_date(dict.get(raw, key)) or _struct_time(dict.get(raw, f"{key}_parsed"))
        if published is not None:
            break
    lang = None
    for detail in (title_detail, summary_detail or {}):
        lang = lang or detail.get("language")
    return Entry(
        source_id=source_id,
        url=url,
        guid=(dict.get(raw, "id") or "").strip() or None,
        title=title_text(title, title_detail.get("type") in _HTML_TYPES) if title else "",
        summary=summary,
        content=content,
        author=_rss_author(dict.get(raw, "author")),  # feedparser's author_detail mangles some emails
        published=published,
        lang=language_tag(lang) or feed_lang,
    )


def _struct_time(value: object) -> datetime | None:
    if not value:
        return None
    try:
        return datetime(*value[:6], tzinfo=timezone.utc)  # type: ignore[index,misc]
    except (TypeError, ValueError):
        return None


# ==================================================================================================
# HTML listing pages


def parse_listing(source_id: str, content: bytes, url: str, selector: str, charset: str | None = None) -> Parsed:
    """Article links of a listing page: the elements `selector` matches (or the first link inside them)."""
    from bs4 import BeautifulSoup
    from soupsieve import SelectorSyntaxError

    text = decode_document(content, charset, "html")
    if not text.strip():
        raise ParseError(source_id, url, "empty page", "check the URL in a browser; the server may be failing")
    soup = BeautifulSoup(text, "lxml")
    base = url
    base_tag = soup.find("base", href=True)
    if base_tag is not None:
        base = absolute_url(str(base_tag["href"]), url) or url
    try:
        matched = soup.select(selector)
    except SelectorSyntaxError as e:
        raise ParseError(source_id, url, f"invalid link_selector {selector!r}: {e}",
                         "fix link_selector in sources.yaml") from e
    if not matched:
        raise ParseError(source_id, url, f"the link_selector {selector!r} matches nothing on the page",
                         "the site layout may have changed: open the page and update link_selector")
    warnings = list(_cap_warning(len(matched)))
    entries: list[Entry] = []
    seen: set[str] = set()
    for el in matched:
        link = el if el.name == "a" and el.has_attr("href") else el.find("a", href=True)
        if link is None or str(link["href"]).strip().startswith("#"):
            continue  # no link, or an anchor within the listing itself
        href = absolute_url(str(link["href"]), base)
        if href is None:
            continue
        key = href.split("#", 1)[0]
        if key in seen:
            continue
        seen.add(key)
        title = " ".join(link.get_text(" ", strip=True).split())
        if not title:
            title = str(link.get("title") or "") or " ".join(el.get_text(" ", strip=True).split())
            if not title:
                img = link.find("img", alt=True)
                title = str(img["alt"]) if img is not None else ""
        entries.append(Entry(source_id=source_id, url=key, title=clean_text(title, multiline=False)))
        if len(entries) >= MAX_ENTRIES:
            break
    if not entries:
        raise ParseError(source_id, url, f"the link_selector {selector!r} matches no http(s) link",
                         "point the selector at the article links (e.g. 'h3 a') or at elements containing them")
    title_tag = soup.find("title")
    page_title = clean_text(title_tag.get_text(), multiline=False) if title_tag is not None else ""
    lang = language_tag(str(soup.html.get("lang") or "")) if soup.html is not None else None
    if lang:
        entries = [Entry(source_id=e.source_id, url=e.url, title=e.title, lang=lang) for e in entries]
    return Parsed(page_title or None, tuple(entries), (), tuple(warnings), None)


# ==================================================================================================
# Sitemaps

NS_NEWS = "http://www.google.com/schemas/sitemap-news/0.9"


def parse_sitemap(source_id: str, content: bytes, url: str) -> Parsed:
    """urlset, sitemapindex (children to fetch next), Google News sitemaps, gzip bodies, text sitemaps.

    Entity declarations are refused outright: a sitemap has no use for them, and they are how billion
    laughs and external-entity (local file) attacks arrive. Well-formed XML is read incrementally
    (`_read_sitemap`), so a 100,000-URL sitemap costs the entries kept, not a full tree.
    """
    content = _gunzip(source_id, url, content)
    head = content[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head:
        raise ParseError(source_id, url, "empty sitemap", "check the URL in a browser; the server may be failing")
    if not head.startswith(b"<"):
        return _text_sitemap(source_id, content, url)
    start = doctype_start(content)
    subset_end = content.find(b"]>", start) if start >= 0 else -1
    doctype = content[start:subset_end if subset_end >= 0 else len(content)] if start >= 0 else b""
    if re.search(rb"<!ENTITY", content[:65536], re.I) or re.search(rb"<!ENTITY", doctype, re.I):
        raise ParseError(source_id, url, "refused: the sitemap declares XML entities",
                         "a genuine sitemap never does; check that the URL is right and the site not compromised")
    try:
        return _read_sitemap(source_id, url, _pull_sitemap(content, url))
    except etree.XMLSyntaxError:
        pass  # malformed: the full parse below words the error as libxml2 does (see `_pull`)
    try:
        root = etree.fromstring(content, _XML_PARSER, base_url=url)
    except etree.XMLSyntaxError as e:
        lower = head.lower()
        if lower.startswith((b"<!doctype html", b"<html")):
            raise ParseError(source_id, url, "not a sitemap: the server sent an HTML page",
                             "check the URL (sites list their sitemaps in /robots.txt)") from e
        raise ParseError(source_id, url, f"not a sitemap: malformed XML ({e})",
                         "open the URL in a browser; the file may be truncated") from e
    return _read_sitemap(source_id, url, _walk_sitemap(root))


_SITEMAP_UNITS = {"urlset": "url", "sitemapindex": "loc"}
"""What a sitemap is read by: each <url> of a urlset, each <loc> of an index."""


def _read_sitemap(source_id: str, url: str, nodes: Iterator[etree._Element]) -> Parsed:
    """A sitemap from its root then its units (`_SITEMAP_UNITS`) in document order.

    Same result as walking the full tree: duplicates and links that are not http(s) do not count, and
    past MAX_ENTRIES the newest entries are kept (ties: the earlier), in document order. A bounded heap
    holds them: beyond the cap, a URL costs only its place in the de-duplication set.
    """
    root = next(nodes)
    name = _local(root.tag)[1] if isinstance(root.tag, str) else ""
    if name == "sitemapindex":
        children: list[str] = []
        seen: set[str] = set()
        for loc in nodes:
            child = absolute_url((loc.text or "").strip(), url)
            if child and child not in seen:
                seen.add(child)
                if len(children) < MAX_CHILDREN:
                    children.append(child)
        warnings = [f"only the first {MAX_CHILDREN} of {len(seen)} child sitemaps are followed"] \
            if len(seen) > MAX_CHILDREN else []
        return Parsed(None, (), tuple(children), tuple(warnings), None)
    if name != "urlset":
        if name.lower() == "html":
            raise ParseError(source_id, url, "not a sitemap: the server sent an HTML page",
                             "check the URL (sites list their sitemaps in /robots.txt)")
        if name in ("rss", "feed", "RDF"):
            raise ParseError(source_id, url, "not a sitemap: this is a feed", "set `type: feed` for this source")
        raise ParseError(source_id, url, f"not a sitemap: the root element is <{name}>",
                         "a sitemap starts with <urlset> or <sitemapindex>")
    newest: list[tuple[datetime, int, _SitemapUrl]] = []  # min-heap of (date, -position, url): the oldest on top
    seen = set()
    count = 0
    for node in nodes:
        found = _sitemap_url(node, url)
        if found is None or found.url in seen:
            continue
        seen.add(found.url)
        item = (found.published or _EPOCH, -count, found)
        count += 1
        if len(newest) < MAX_ENTRIES:
            heapq.heappush(newest, item)
        else:
            heapq.heappushpop(newest, item)
    # Sitemaps often list the oldest pages first: keep the newest, in document order.
    entries = [found.entry(source_id) for _, _, found in sorted(newest, key=lambda item: -item[1])]
    return Parsed(None, tuple(entries), (), tuple(_cap_warning(count)), _newest(entries))


def _walk_sitemap(root: etree._Element) -> Iterator[etree._Element]:
    """`_read_sitemap`'s nodes from a complete tree."""
    yield root
    unit = _SITEMAP_UNITS.get(_local(root.tag)[1] if isinstance(root.tag, str) else "")
    if unit:
        yield from root.iter(f"{{*}}{unit}")


def _pull_sitemap(content: bytes, url: str) -> Iterator[etree._Element]:
    """`_read_sitemap`'s nodes while the sitemap is parsed, each finished part dropped once read.

    Another root is yielded only once the document is complete: a syntax error comes first, as with a
    full parse.
    """
    roots = [f"{{*}}{root_name}" for root_name in _SITEMAP_UNITS]
    parser = etree.XMLPullParser(("start",), tag=roots, base_url=url, **_XML_OPTIONS)
    root = unit = None
    for document in _pull(parser, content):
        for _, el in parser.read_events():
            if unit is None and el.getparent() is None:
                root, unit = el, _SITEMAP_UNITS[_local(el.tag)[1]]
                yield root
        if root is not None and unit is not None:
            yield from _finished_units(root, unit, final=document is not None)
        elif document is not None:
            yield document


def _finished_units(root: etree._Element, unit: str, final: bool) -> Iterator[etree._Element]:
    """The `unit` elements in what the parser has finished under `root`, in document order; each finished
    part is deleted once read.

    Along the path of open elements from the root, every child but the last is finished (the parser has
    moved past it); the last one is looked into, unless it is a unit, read whole once finished. A part
    read here leaves nothing behind, so `part.iter()` later yields exactly what a full tree walk would.
    """
    node = root
    while True:
        finished = len(node) if final else len(node) - 1
        if finished > 0:
            for part in node[:finished]:
                yield from part.iter(f"{{*}}{unit}")
            del node[:finished]
        if final or not len(node):
            return
        node = node[0]
        if not isinstance(node.tag, str) or _local(node.tag)[1] == unit:
            return


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class _SitemapUrl(NamedTuple):
    """One <url> of a sitemap, before it becomes an Entry: only the ones kept ever do."""

    url: str
    published: datetime | None
    title: str | None
    lang: str | None

    def entry(self, source_id: str) -> Entry:
        return Entry(source_id=source_id, url=self.url, title=clean_text(self.title, multiline=False),
                     published=self.published, lang=language_tag(self.lang))


def _sitemap_url(node: etree._Element, base: str) -> _SitemapUrl | None:
    loc = lastmod = title = news_date = lang = None
    for el in node.iter():
        tag = el.tag
        if not isinstance(tag, str):
            continue
        ns, name = _local(tag)
        if name == "loc" and loc is None and ns != NS_NEWS and el.getparent() is node:
            loc = el.text
        elif name == "lastmod" and el.getparent() is node:
            lastmod = el.text
        elif ns == NS_NEWS:
            if name == "title":
                title = el.text
            elif name == "publication_date":
                news_date = el.text
            elif name == "language":
                lang = el.text
    url = absolute_url((loc or "").strip(), base)
    if url is None:
        return None
    return _SitemapUrl(url, parse_date(news_date) or parse_date(lastmod), title, lang)


def _text_sitemap(source_id: str, content: bytes, url: str) -> Parsed:
    entries: list[Entry] = []
    seen: set[str] = set()
    text = decode_document(content, "utf-8", "xml")
    for line in text.splitlines():
        found = absolute_url(line.strip(), None)
        if found and found not in seen:
            seen.add(found)
            entries.append(Entry(source_id=source_id, url=found))
    if not entries:
        raise ParseError(source_id, url, "not a sitemap: neither XML nor a list of URLs",
                         "check the URL in a browser")
    warnings = _cap_warning(len(entries))
    return Parsed(None, tuple(entries[:MAX_ENTRIES]), (), tuple(warnings), None)


def _gunzip(source_id: str, url: str, content: bytes) -> bytes:
    """A `.xml.gz` body inflated, refused past MAX_SITEMAP_BYTES (a small file can inflate to gigabytes)."""
    if not content.startswith(b"\x1f\x8b"):
        return content
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(content, MAX_SITEMAP_BYTES + 1)
    except zlib.error as e:
        raise ParseError(source_id, url, f"corrupt gzip sitemap ({e})", "the file may be truncated") from e
    if len(out) > MAX_SITEMAP_BYTES or inflater.unconsumed_tail:
        raise ParseError(source_id, url, f"sitemap larger than {MAX_SITEMAP_BYTES:,} bytes once uncompressed",
                         "use the site's smaller sitemaps (listed in its sitemap index or /robots.txt)")
    return out


# ==================================================================================================
# Dispatch


def parse_document(source_id: str, source_type: str, content: bytes, url: str, charset: str | None = None,
                   link_selector: str | None = None) -> Parsed:
    """Parse one fetched document according to its source's type (a top-level function, so picklable)."""
    if source_type == "feed":
        return parse_feed(source_id, content, url, charset)
    if source_type == "sitemap":
        return parse_sitemap(source_id, content, url)
    if source_type == "html":
        if not link_selector:
            raise ParseError(source_id, url, "an html source needs a link_selector", 'e.g. link_selector: "h3 a"')
        return parse_listing(source_id, content, url, link_selector, charset)
    raise ParseError(source_id, url, f"unknown source type {source_type!r}", "use feed, html or sitemap")


__all__ = [
    "MAX_ENTRIES", "Parsed", "absolute_url", "clean_text", "decode_document", "declared_encoding", "defuse_doctype",
    "element_text", "html_to_text", "language_tag", "looks_like_html", "parse_date", "parse_document",
    "parse_feed", "parse_feed_feedparser", "parse_listing", "parse_sitemap", "plain_text", "title_text",
]
