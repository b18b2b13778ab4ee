"""Archive stage: what analysts do with the archive (search, exports, trend charts, Datasette).

Everything here reads a `Store` opened read-only, so it runs while the scheduler writes (WAL) and
cannot change anything. SQL lives in `veille.store.archive`; the query syntax, the normaliser and the
FTS index come from `veille.query` (the same rules as topics), so `donnée publique` finds
`données publiques` in a search as in a topic.

Descriptions of tables and columns have one home: the SQL comments of the migrations in
`veille.store.schema` (plus `EXTRA_DESCRIPTIONS` for columns of shipped migrations that lack one).
Datasette's metadata and docs/schema.md are both derived from them.
"""

from __future__ import annotations

import html
import io
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal, Sequence

from .digest import PARIS, current_week, parse_week, shift_week, week_bounds, week_days
from .errors import QueryError, VeilleError
from .store.archive import EXPORT_COLUMNS, ArticleFilter

if TYPE_CHECKING:
    from .store import Store

# --------------------------------------------------------------------------------------------------
# Dates given on the command line


def parse_when(value: str | datetime | date | None, *, end: bool = False) -> str | None:
    """A --since/--until value as the archive's UTC text; `end=True` gives the exclusive upper bound.

    Accepts `2026-11-24` (a day in Europe/Paris: --until includes the whole day), `2026-W48` (an ISO
    week: --since from its Monday, --until through its Sunday), `2026-11` (a month) or a full ISO
    datetime (naive means Paris time).
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=PARIS)
        return _utc_text(moment)
    if isinstance(value, date):
        day = value + timedelta(days=1) if end else value
        return _utc_text(datetime.combine(day, time.min, PARIS))
    text = value.strip()
    if re.fullmatch(r"\d{4}-W\d{2}", text):
        start, stop = week_bounds(text)
        return _utc_text(stop if end else start)
    if m := re.fullmatch(r"(\d{4})-(\d{2})", text):
        year, month = int(m.group(1)), int(m.group(2))
        if not 1 <= month <= 12:
            raise ValueError(f"{value!r}: no month {month}")
        if end:
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return _utc_text(datetime(year, month, 1, tzinfo=PARIS))
    try:
        if len(text) == 10:
            return parse_when(date.fromisoformat(text), end=end)
        return parse_when(datetime.fromisoformat(text.replace("Z", "+00:00")), end=end)
    except ValueError:
        raise ValueError(f"{value!r} is not a date: write 2026-11-24, 2026-W48, 2026-11 or "
                         "2026-11-24T08:30") from None


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def article_filter(store: "Store", *, topics: Iterable[str] = (), sources: Iterable[str] = (),
                   since: str | datetime | date | None = None,
                   until: str | datetime | date | None = None) -> ArticleFilter:
    """Validate filters against the archive: an unknown topic or source id is a mistake worth saying."""
    topics, sources = tuple(dict.fromkeys(topics)), tuple(dict.fromkeys(sources))
    if topics:
        known_topics = store.topic_labels(topics)
        missing = [t for t in topics if t not in known_topics]
        if missing:
            known = ", ".join(store.topic_labels()) or "none yet"
            raise VeilleError(f"unknown topic {', '.join(missing)} in {store.path} (known topics: {known})")
    if sources:
        known_sources = store.known_source_ids(sources)
        missing = [s for s in sources if s not in known_sources]
        if missing:
            raise VeilleError(f"unknown source {', '.join(missing)} in {store.path} "
                              "(see `veille status` for source ids)")
    return ArticleFilter(topics, sources, parse_when(since), parse_when(until, end=True))


# --------------------------------------------------------------------------------------------------
# Search

BM25_WEIGHTS = (10.0, 4.0, 1.0)
"""bm25 weights of title, summary and text: a word in the title says more about the article."""


@dataclass(frozen=True)
class Marked:
    """Text with highlighted spans, kept as offsets so each output format marks them its own way."""

    text: str
    spans: tuple[tuple[int, int], ...] = ()

    def marked(self, before: str = "**", after: str = "**") -> str:
        out, last = [], 0
        for start, end in self.spans:
            out += [self.text[last:start], before, self.text[start:end], after]
            last = end
        out.append(self.text[last:])
        return "".join(out)

    def segments(self) -> list[tuple[str, bool]]:
        """(text, highlighted) pieces in order, for renderers such as rich."""
        out, last = [], 0
        for start, end in self.spans:
            if start > last:
                out.append((self.text[last:start], False))
            out.append((self.text[start:end], True))
            last = end
        if last < len(self.text):
            out.append((self.text[last:], False))
        return out


@dataclass(frozen=True)
class SearchHit:
    id: int
    title: Marked
    snippet: Marked
    """Summary or text around the first match, matched words highlighted."""
    url: str
    source_id: str
    source_name: str
    published_at: datetime
    topics: tuple[str, ...]
    cluster_id: int
    score: float
    """Relevance: minus bm25 (title x10, summary x4, text x1), higher is better."""


@dataclass(frozen=True)
class SearchResult:
    query: str
    total: int
    """Articles the full-text index selects; exact matching may drop a few of them (see `search`)."""
    hits: tuple[SearchHit, ...]


def search(store: "Store", query: str, *, topics: Iterable[str] = (), sources: Iterable[str] = (),
           since: str | datetime | date | None = None, until: str | datetime | date | None = None,
           limit: int = 20, count: bool = True) -> SearchResult:
    """The `limit` best articles for `query` (topic rule syntax), by bm25, with highlighted snippets.

    The FTS5 index selects and ranks candidates; each is then checked by the topic matcher
    (`veille.tag.Tagger`), so a result matches exactly as a topic with `query:` would (capitals-only
    words, plurals, NEAR distances). `total` counts what the index selected (`count=False` skips that
    second pass: total is then the number of hits). Raises `QueryError` (with the position) on a
    syntax error and `VeilleError` on an unknown topic or source id.
    """
    from .query import parse_query, to_fts
    from .tag import Tagger, Topic

    node = parse_query(query)
    match = to_fts(node)
    matcher = Tagger([Topic(id="search", label="search", query=query)])
    where = article_filter(store, topics=topics, sources=sources, since=since, until=until)
    highlighter = Highlighter(node)
    with store.read_snapshot():
        hits, total = _search_pages(store, match, where, matcher, highlighter, max(1, limit), count)
    return SearchResult(query, total, tuple(hits))


def _search_pages(store: "Store", match: str, where: ArticleFilter, matcher: Any, highlighter: "Highlighter",
                  limit: int, count: bool) -> tuple[list[SearchHit], int]:
    page = max(limit + 10, limit * 2)
    hits: list[SearchHit] = []
    offset = 0
    for _ in range(SEARCH_PAGES):
        ranked = store.search_ranked(match, where, page, offset, BM25_WEIGHTS)
        rows = store.articles_by_id([article_id for article_id, _ in ranked])
        for article_id, rank in ranked:
            row = rows[article_id]
            if not matcher.match(row["title"], row["summary"], row["text"]):
                continue
            hits.append(SearchHit(
                id=article_id,
                title=highlighter.mark(row["title"], "title"),
                snippet=highlighter.snippet(row["summary"], row["text"]),
                url=row["url"], source_id=row["source_id"], source_name=row["source_name"],
                published_at=datetime.fromisoformat(row["published_at"].replace("Z", "+00:00")),
                topics=tuple(filter(None, (row["topics"] or "").split(";"))), cluster_id=row["cluster_id"],
                score=round(-rank, 4),
            ))
            if len(hits) == limit:
                break
        if len(hits) == limit or len(ranked) < page:
            break
        offset += page
    if not count:
        total = len(hits)
    elif offset == 0 and len(ranked) < page:
        total = len(ranked)  # the index selected no more than this: no need to count again
    else:
        total = store.search_count(match, where)
    return hits, max(total, len(hits))


SEARCH_PAGES = 5
"""Pages of candidates checked before giving up filling `limit` (the index rarely over-selects)."""


class Highlighter:
    """Marks, in the ORIGINAL text, the words and phrases of a query, with the topic normaliser.

    Positive terms only (not those under NOT); `title:` terms only in titles. It highlights; deciding
    whether an article matches is the topic matcher's job.
    """

    def __init__(self, node: Any) -> None:
        from .query import Near, surface_forms, terms

        self.phrases: list[tuple[tuple[Any, ...], bool, frozenset[str]]] = []
        for item in terms(node):
            for term in (item.left, item.right) if isinstance(item, Near) else (item,):
                first = term.words[0]
                forms = frozenset() if first.prefix else frozenset(surface_forms(first.text) or [first.text])
                self.phrases.append((term.words, term.title, forms))

    def _word_spans(self, folded: Any, field: str) -> list[tuple[int, int]]:
        """(first, last) word indexes of every occurrence of a query phrase in `folded`."""
        words = folded.words
        found = []
        for phrase, title_only, forms in self.phrases:
            if title_only and field != "title":
                continue
            first, size = phrase[0], len(phrase)
            for i in (_positions(words, forms) if forms else
                      [i for i, w in enumerate(words) if w.startswith(first.text)]):
                if i + size > len(words):
                    continue
                if all(phrase[k].matches(words[i + k]) for k in range(1, size)) and \
                        all(folded.caps(i + k) for k, w in enumerate(phrase) if w.caps):
                    found.append((i, i + size - 1))
        return _merge(found)

    def spans(self, text: str, field: str) -> list[tuple[int, int]]:
        """Character spans of the matches in `text`."""
        from .query import FoldedText

        folded = FoldedText(text)
        return _merge([folded.span(a, b) for a, b in self._word_spans(folded, field)])

    def mark(self, text: str, field: str) -> Marked:
        return Marked(text, tuple(self.spans(text, field)))

    def snippet(self, summary: str, text: str, width: int = 240) -> Marked:
        """About `width` characters around the matches, from the summary when it has one, else the text."""
        for field, body in (("summary", summary), ("body", text)):
            body = " ".join((body or "").split())  # paragraph breaks do not belong in a one-line snippet
            spans = self.spans(body, field) if body else []
            if spans:
                return _window(body, spans, width)
        return _window(" ".join((summary or text or "").split()), [], width)


def _positions(words: list[str], forms: frozenset[str]) -> list[int]:
    """Indexes of `words` equal to one of `forms`, found by list.index (a scan in C, not in Python)."""
    found = []
    for form in forms:
        i = -1
        while True:
            try:
                i = words.index(form, i + 1)
            except ValueError:
                break
            found.append(i)
    return sorted(found)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(end, out[-1][1]))
        else:
            out.append((start, end))
    return out


def _window(text: str, spans: list[tuple[int, int]], width: int) -> Marked:
    """Cut `text` to about `width` characters around its densest group of spans, between words."""
    if len(text) <= width:
        return Marked(text, tuple(spans))
    start = 0
    if spans:
        best, best_count = spans[0][0], 0
        for i, (first, _) in enumerate(spans):
            inside = sum(1 for _s, e in spans[i:] if e <= first + width * 2 // 3)
            if inside > best_count:
                best, best_count = first, inside
        start = max(0, best - width // 3)
    end = min(len(text), start + width)
    if start > 0:
        space = text.find(" ", start)
        start = space + 1 if 0 <= space < start + 30 else start
    if end < len(text):
        space = text.rfind(" ", start, end)
        end = space if space > start + width // 2 else end
    prefix = "… " if start > 0 else ""
    suffix = " …" if end < len(text) else ""
    shift = len(prefix) - start
    kept = tuple((s + shift, e + shift) for s, e in spans if s >= start and e <= end)
    return Marked(prefix + text[start:end] + suffix, kept)


# --------------------------------------------------------------------------------------------------
# Weekly counts and trend charts


@dataclass(frozen=True)
class WeeklyCounts:
    weeks: tuple[str, ...]
    """ISO weeks (Europe/Paris), oldest first, every week of the window (zeros included)."""
    series: dict[str, tuple[int, ...]]
    """topic id -> articles per week, in digest order."""
    labels: dict[str, str]

    @property
    def week_starts(self) -> tuple[date, ...]:
        return tuple(week_days(w)[0] for w in self.weeks)


def weekly_counts(store: "Store", topics: Sequence[str] = (), weeks: int = 26,
                  end_week: str | None = None) -> WeeklyCounts:
    """Articles per topic and ISO week over the `weeks` weeks ending with `end_week` (default: this week)."""
    if weeks < 1:
        raise ValueError("weeks must be at least 1")
    end_week = end_week or current_week()
    parse_week(end_week)
    labels = store.topic_labels(topics)
    missing = [t for t in topics if t not in labels]
    if missing:
        raise VeilleError(f"unknown topic {', '.join(missing)} in {store.path} "
                          f"(known topics: {', '.join(store.topic_labels()) or 'none yet'})")
    if topics:
        labels = {t: labels[t] for t in dict.fromkeys(topics)}
    window = tuple(shift_week(end_week, -k) for k in range(weeks - 1, -1, -1))
    index = {w: i for i, w in enumerate(window)}
    counts = {t: [0] * weeks for t in labels}
    for topic_id, week, n in store.weekly_topic_counts(tuple(labels), window):
        counts[topic_id][index[week]] = n
    return WeeklyCounts(window, {t: tuple(v) for t, v in counts.items()}, labels)


CHART_TOPICS = 8
"""A chart with more lines than this is unreadable: without --topic, the most frequent topics are kept."""

_MONTHS_SHORT = ("janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.", "nov.", "déc.")
_PALETTE = ("#1f5fa8", "#d9480f", "#2b8a3e", "#c2255c", "#6741d9", "#e8a400", "#0c8599", "#5c5f66",
            "#a61e4d", "#364fc7", "#5c940d", "#862e9c")


def trend_chart(store: "Store", topics: Sequence[str] = (), weeks: int = 12, end_week: str | None = None,
                fmt: Literal["svg", "png"] = "svg", title: str | None = None) -> str | bytes:
    """A report-ready chart of articles per week and topic: SVG text (embeddable in HTML) or PNG bytes.

    Used by `veille trends` and by the weekly digest's archive page (the last 12 weeks).
    """
    counts = weekly_counts(store, topics, weeks, end_week)
    return render_chart(counts, fmt=fmt, title=title, explicit=bool(topics))


def render_chart(counts: WeeklyCounts, fmt: Literal["svg", "png"] = "svg", title: str | None = None,
                 explicit: bool = False) -> str | bytes:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    series = dict(counts.series)
    subtitle = ""
    if not explicit and len(series) > CHART_TOPICS:
        kept = sorted(series, key=lambda t: -sum(series[t]))[:CHART_TOPICS]
        subtitle = f"Les {CHART_TOPICS} thématiques les plus citées sur {len(series)}"
        series = {t: series[t] for t in counts.series if t in kept}
    first, last = week_days(counts.weeks[0])[0], week_days(counts.weeks[-1])[1]
    period = f"du {_short_date(first)} {first.year} au {_short_date(last)} {last.year}"

    with matplotlib.rc_context({"svg.hashsalt": "veille", "svg.fonttype": "path", "font.size": 10}):
        rows = -(-len(series) // 3) if series else 0
        fig = Figure(figsize=(10, 5.0 + 0.28 * rows), dpi=110)
        ax = fig.subplots()
        x = list(range(len(counts.weeks)))
        for i, (topic_id, values) in enumerate(series.items()):
            ax.plot(x, values, label=counts.labels.get(topic_id, topic_id), color=_PALETTE[i % len(_PALETTE)],
                    linewidth=2, marker="o" if len(x) <= 30 else None, markersize=3.5)
        ax.set_title(title or "Articles par semaine", loc="left", fontsize=14, fontweight="bold", pad=22)
        ax.text(0, 1.02, " — ".join(filter(None, [period, subtitle])), transform=ax.transAxes, fontsize=9,
                color="#555555")
        ax.set_xlabel("Semaine")
        ax.set_ylabel("Articles")
        step = max(1, -(-len(x) // 13))
        ticks = x[::-1][::step][::-1]
        ax.set_xticks(ticks)
        ax.set_xticklabels([_week_tick(counts.weeks[i]) for i in ticks], fontsize=8)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        top = max((max(v) for v in series.values()), default=0)
        ax.set_ylim(0, max(1, top * 1.08))
        ax.set_xlim(-0.5, len(x) - 0.5)
        ax.grid(axis="y", color="#dddddd", linewidth=0.8)
        ax.spines[["top", "right"]].set_visible(False)
        if series:
            # under the plot: it never hides a line, and long French labels have room
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=min(3, len(series)), frameon=False,
                      fontsize=9)
        else:
            ax.text(0.5, 0.5, "Aucune thématique", transform=ax.transAxes, ha="center", color="#777777")
        fig.tight_layout()
        buffer = io.BytesIO()
        if fmt == "svg":
            fig.savefig(buffer, format="svg", metadata={"Date": None})
            svg = buffer.getvalue().decode("utf-8")
            return svg[svg.index("<svg"):]
        if fmt == "png":
            fig.savefig(buffer, format="png", metadata={"Software": None})
            return buffer.getvalue()
    raise ValueError(f"unknown chart format {fmt!r}: use svg or png")


def digest_trends_html(store: "Store", week: str, weeks: int = 12) -> str | None:
    """The trend chart for a digest's archive page (`write_digest(..., trends_html=...)`): an inline,
    responsive SVG in a <figure> with a French caption; None when the archive has no topic yet.
    """
    counts = weekly_counts(store, (), weeks, week)
    if not counts.series:
        return None
    svg = render_chart(counts, fmt="svg")
    assert isinstance(svg, str)
    label = f"Articles par semaine et par thématique, {weeks} dernières semaines jusqu'à la semaine {week}"
    head, rest = svg.split(">", 1)
    head = re.sub(r'\s(width|height)="[^"]*"', "", head)
    svg = f'{head} width="100%" role="img" aria-label="{html.escape(label)}">{rest}'
    return (f'<figure class="trend-chart" style="margin:0">{svg}'
            f'<figcaption style="font-size:13px;color:#555">{html.escape(label)}</figcaption></figure>')


def _short_date(day: date) -> str:
    return f"{day.day} {_MONTHS_SHORT[day.month - 1]}" if day.day != 1 else f"1er {_MONTHS_SHORT[day.month - 1]}"


def _week_tick(week: str) -> str:
    monday = week_days(week)[0]
    return f"S{int(week[-2:])}\n{_short_date(monday)}"


def write_trends(store: "Store", out: str | Path, topics: Sequence[str] = (), weeks: int = 26,
                 end_week: str | None = None) -> Path:
    """Write the chart to `out`; the format comes from the suffix (.png or .svg)."""
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise VeilleError(f"{out}: the chart format comes from the file name; end it with .png or .svg")
    chart = trend_chart(store, topics, weeks, end_week, fmt=fmt)  # type: ignore[arg-type]
    _write_atomic(out, chart.encode("utf-8") if isinstance(chart, str) else chart)
    return out


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)


# --------------------------------------------------------------------------------------------------
# Exports

ExportFormat = Literal["csv", "json", "jsonl", "parquet"]
EXPORT_FORMATS = ("csv", "json", "jsonl", "parquet")


def export(store: "Store", out: str | Path, fmt: ExportFormat = "csv", *, topics: Iterable[str] = (),
           since: str | datetime | date | None = None, until: str | datetime | date | None = None,
           sources: Iterable[str] = (), with_text: bool = True, excel: bool = False) -> int:
    """Write the articles (one row each, oldest first) to `out`; returns the number of rows.

    Streamed from the cursor to a `.partial` file renamed at the end, so memory stays flat and a
    failed export leaves no half file. csv: UTF-8, header, RFC 4180 (`excel=True`: BOM and `;`, what
    a French Excel opens directly); json: one array, one object per line; jsonl: JSON Lines; parquet:
    needs pyarrow (`pip install 'veille[analyst]'`).
    """
    if fmt not in EXPORT_FORMATS:
        raise VeilleError(f"unknown export format {fmt!r}: use {', '.join(EXPORT_FORMATS)}")
    where = article_filter(store, topics=topics, sources=sources, since=since, until=until)
    columns = EXPORT_COLUMNS if with_text else EXPORT_COLUMNS[:-2]
    batches = store.export_batches(where, with_text)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        if fmt == "parquet":
            count = _write_parquet(partial, columns, batches)
        else:
            with open(partial, "w", encoding="utf-8-sig" if excel and fmt == "csv" else "utf-8",
                      newline="") as f:
                count = {"csv": _write_csv, "json": _write_json, "jsonl": _write_jsonl}[fmt](
                    f, columns, batches, excel)
        partial.replace(out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return count


def _write_csv(f: Any, columns: Sequence[str], batches: Iterable[list[tuple]], excel: bool) -> int:
    """RFC 4180 with minimal quoting, byte for byte what `csv.writer` writes (a test checks it).

    Written by hand because `csv.writer` walks every character in Python-level C code: five times
    slower on full texts (100,000 articles, 140 MB) than `str.replace` and `in`, which scan in bulk.
    """
    sep = ";" if excel else ","
    count = 0
    f.write(_csv_line(columns, sep))
    for batch in batches:
        f.write("".join([_csv_line(row, sep) for row in batch]))
        count += len(batch)
    return count


def _csv_line(row: Sequence[Any], sep: str) -> str:
    out = []
    for value in row:
        if value is None:
            out.append("")
        elif value.__class__ is str:
            quote = sep in value or '"' in value or "\n" in value or "\r" in value
            out.append('"' + value.replace('"', '""') + '"' if quote else value)
        else:
            out.append(str(value))
    if len(out) == 1 and out[0] == "":
        return '""\r\n'  # as csv.writer: a lone empty field must not read as a blank line
    return sep.join(out) + "\r\n"


def _write_json(f: Any, columns: Sequence[str], batches: Iterable[list[tuple]], excel: bool) -> int:
    count = 0
    f.write("[")
    for batch in batches:
        for row in batch:
            f.write(",\n" if count else "\n")
            f.write(json.dumps(_record(columns, row), ensure_ascii=False))
            count += 1
    f.write("\n]\n")
    return count


def _write_jsonl(f: Any, columns: Sequence[str], batches: Iterable[list[tuple]], excel: bool) -> int:
    count = 0
    for batch in batches:
        f.write("".join(json.dumps(_record(columns, row), ensure_ascii=False) + "\n" for row in batch))
        count += len(batch)
    return count


def _record(columns: Sequence[str], row: tuple) -> dict[str, Any]:
    record = dict(zip(columns, row))
    for key in ("topics", "topic_labels"):
        record[key] = record[key].split("; ") if record[key] else []
    return record


_PARQUET_TYPES = {"article_id": "int64", "cluster_id": "int64", "cluster_size": "int64"}


def _write_parquet(path: Path, columns: Sequence[str], batches: Iterable[list[tuple]]) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise VeilleError("parquet export needs pyarrow: pip install 'veille[analyst]' "
                          "(or export as csv or json)") from e
    fields = []
    for name in columns:
        if name == "published_at":
            fields.append(pa.field(name, pa.timestamp("s", tz="UTC")))
        elif name in ("topics", "topic_labels"):
            fields.append(pa.field(name, pa.list_(pa.string())))
        else:
            fields.append(pa.field(name, getattr(pa, _PARQUET_TYPES.get(name, "string"))()))
    schema = pa.schema(fields)
    count = 0

    def grouped() -> Iterable[list[tuple]]:
        """Row groups of ~20,000 rows: 1,000-row groups would make the file slow to read."""
        pending: list[tuple] = []
        for batch in batches:
            pending.extend(batch)
            if len(pending) >= 20_000:
                yield pending
                pending = []
        if pending:
            yield pending

    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for batch in grouped():
            arrays = []
            for i, name in enumerate(columns):
                values = [row[i] for row in batch]
                if name == "published_at":
                    values = [datetime.fromisoformat(v.replace("Z", "+00:00")) for v in values]
                elif name in ("topics", "topic_labels"):
                    values = [v.split("; ") if v else [] for v in values]
                arrays.append(pa.array(values, type=schema.field(name).type))
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            count += len(batch)
    return count


# --------------------------------------------------------------------------------------------------
# Schema descriptions (from the migrations' SQL comments)


@dataclass(frozen=True)
class ObjectDoc:
    name: str
    kind: str
    """table or view"""
    description: str
    columns: dict[str, str]


EXTRA_TABLE_DESCRIPTIONS: dict[str, str] = {
    "articles": "One row per article, whatever the number of URLs it was seen under; text is plain.",
    "members": "Members of the association who receive the weekly digest.",
    "member_topics": "Topics a member follows when all_topics = 0.",
}

EXTRA_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "sources": {
        "type": "feed (RSS/Atom), html (listing page) or sitemap",
        "disabled_reason": "why it is disabled (sources.yaml, 410 Gone...), NULL when enabled",
        "last_attempt_at": "last fetch attempt (UTC)",
        "consecutive_failures": "failed attempts in a row, 0 when healthy",
        "created_at": "first seen in sources.yaml (UTC)",
        "updated_at": "last change of this row (UTC)",
    },
    "clusters": {
        "id": "story id; articles.cluster_id points here",
        "created_at": "when its first article was stored (UTC)",
    },
    "articles": {
        "id": "article id, stable",
        "title": "title of the article",
        "source_id": "sources.id of the source that published it",
        "author": "author when the page or feed names one",
        "text_source": "page: extracted from the article page; feed: taken from the feed",
        "lang": "language code when known (fr, en...)",
        "cluster_id": "story: near-duplicate articles share it (clusters.id)",
    },
    "article_urls": {
        "url": "one URL the article was seen under",
        "article_id": "articles.id",
    },
    "fetch_log": {
        "id": "attempt id",
        "source_id": "sources.id",
        "url": "URL fetched",
        "started_at": "start of the attempt (UTC)",
        "duration_ms": "duration of the attempt in milliseconds",
        "bytes": "bytes received",
        "new_count": "new articles stored by this attempt",
        "updated_count": "articles whose text changed",
    },
    "http_cache": {
        "url": "URL fetched",
        "etag": "ETag the server gave",
        "last_modified": "Last-Modified the server gave",
        "updated_at": "when the validators were stored (UTC)",
    },
    "topics": {
        "id": "slug from topics.yaml",
        "label": "label shown in digests",
        "position": "order in topics.yaml = order of the digest's sections",
        "updated_at": "last change of this row (UTC)",
    },
    "topic_versions": {
        "topic_id": "topics.id",
        "rule_hash": "sha256 of the normalised rule",
        "rule_json": "the rule as JSON",
        "created_at": "when this version was first seen (UTC)",
    },
    "article_topics": {
        "article_id": "articles.id",
        "topic_id": "topics.id",
        "score": "title 3, summary 2, body 1 for each keyword found",
        "hits": "JSON list of {keyword, field, text}: why the article has the topic",
        "tagged_at": "when it was tagged (UTC)",
    },
    "articles_fts": {
        "title": "articles.title, as indexed (search it with MATCH; rowid = articles.id)",
        "summary": "articles.summary, as indexed",
        "text": "articles.text, as indexed",
    },
    "article_tagging": {
        "article_id": "articles.id",
        "topic_id": "topics.id, or '*' for the whole topic set that last tagged the article",
        "rule_hash": "rule version the article was last checked against",
    },
    "members": {
        "id": "member id",
        "email": "email address (personal data: hidden from Datasette)",
        "name": "name (personal data: hidden from Datasette)",
        "organisation": "local authority or body the member belongs to",
        "active": "0 once unsubscribed",
        "unsubscribe_token": "secret of the one-click unsubscribe link (hidden from Datasette)",
        "created_at": "subscription time (UTC)",
        "updated_at": "last change (UTC)",
    },
    "member_topics": {
        "member_id": "members.id",
        "topic_id": "topics.id the member follows (used when all_topics = 0)",
    },
    "digests": {
        "built_at": "when the digest was built (UTC)",
        "articles": "articles in the digest",
    },
    "deliveries": {
        "week": "ISO week of the digest",
        "member_id": "members.id",
        "status": "pending, sending, sent, written (outbox file), failed (retryable), bounced, empty",
        "message_id": "Message-ID of the email",
        "attempts": "SMTP attempts",
        "error": "last error",
        "articles": "articles in this member's email",
        "updated_at": "last change (UTC)",
    },
    "scheduler_jobs": {
        "last_status": "ok, error, missed or interrupted",
        "last_run_at": "start of the last run (UTC)",
        "last_error": "message of the last failure",
        "last_duration_ms": "duration of the last run in milliseconds",
        "updated_at": "last change (UTC)",
    },
}
"""Descriptions of columns whose migration shipped without a comment (migrations are never edited)."""

HIDDEN_FROM_DATASETTE = {"members": ("email", "name", "unsubscribe_token")}
"""Personal data and secrets that `veille archive serve` reads as NULL whatever the SQL."""

_CREATE = re.compile(r"CREATE\s+(?:VIRTUAL\s+)?(TABLE|VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?[\"`\[]?(\w+)", re.I)
_ALTER = re.compile(r"ALTER\s+TABLE\s+(\w+)\s+ADD\s+(?:COLUMN\s+)?(\w+)", re.I)
_DROP = re.compile(r"DROP\s+(TABLE|VIEW)\s+(?:IF\s+EXISTS\s+)?(\w+)", re.I)
_NOT_COLUMNS = {"primary", "unique", "check", "foreign", "constraint", "create", "select", "from", "join"}


def schema_docs() -> dict[str, ObjectDoc]:
    """Tables and views with their descriptions, read from the migrations' comments (later wins)."""
    from .store import _split_sql
    from .store.schema import MIGRATIONS

    docs: dict[str, ObjectDoc] = {}
    for _number, _name, sql in MIGRATIONS:
        for statement in _split_sql(sql):
            lines = statement.splitlines()
            lead = []
            while lines and lines[0].lstrip().startswith("--"):
                lead.append(lines.pop(0).lstrip()[2:].strip())
            code = "\n".join(lines)
            if m := _DROP.match(code):
                docs.pop(m.group(2), None)
                continue
            if m := _ALTER.match(code):
                comment = _trailing_comment(code.splitlines()[0]) or " ".join(lead)
                if m.group(1) in docs and comment:
                    docs[m.group(1)].columns[m.group(2)] = comment
                continue
            m = _CREATE.match(code)
            if not m:
                continue
            kind, name = m.group(1).lower(), m.group(2)
            columns: dict[str, str] = {}
            for line in lines[1:]:
                comment = _trailing_comment(line)
                if not comment:
                    continue
                body = line[: _comment_start(line)].strip()
                if kind == "table":
                    first = re.match(r"[\"`\[]?(\w+)", body)
                    column = first.group(1) if first else None
                else:
                    last = re.search(r"(\w+)\W*$", body)
                    column = last.group(1) if last else None
                if column and column.lower() not in _NOT_COLUMNS:
                    columns.setdefault(column, comment)
            docs[name] = ObjectDoc(name, kind, " ".join(lead), columns)
    for table, text in EXTRA_TABLE_DESCRIPTIONS.items():
        if table in docs and not docs[table].description:
            docs[table] = ObjectDoc(table, docs[table].kind, text, docs[table].columns)
    for table, extra in EXTRA_DESCRIPTIONS.items():
        if table in docs:
            for column, text in extra.items():
                docs[table].columns.setdefault(column, text)
    return docs


def _comment_start(line: str) -> int:
    """Index of the first `--` that is not inside a quoted SQL string, or len(line)."""
    quoted = False
    for i, char in enumerate(line):
        if char == "'":
            quoted = not quoted
        elif not quoted and line.startswith("--", i):
            return i
    return len(line)


def _trailing_comment(line: str) -> str:
    return line[_comment_start(line) + 2:].strip() if _comment_start(line) < len(line) else ""


# --------------------------------------------------------------------------------------------------
# Ready queries (Datasette canned queries, also printed in docs/schema.md)


@dataclass(frozen=True)
class CannedQuery:
    name: str
    title: str
    description: str
    sql: str


CANNED_QUERIES: tuple[CannedQuery, ...] = (
    CannedQuery(
        "search", "Full-text search",
        "Same syntax as `veille search` and topic rules: phrases in quotes, OR, NOT, parentheses, prefix*, "
        "title:, NEAR/n; accents and plurals folded. Only in `veille archive serve` (veille_match() is "
        "registered there).",
        """SELECT a.id, a.published_at, s.name AS source, a.title, a.url
FROM articles_fts f
JOIN articles a ON a.id = f.rowid
JOIN sources s ON s.id = a.source_id
WHERE articles_fts MATCH veille_match(:query)
ORDER BY bm25(articles_fts, 10.0, 4.0, 1.0)
LIMIT 100"""),
    CannedQuery(
        "articles_per_topic_per_week", "Articles per topic per week",
        "Weekly counts (ISO weeks, Europe/Paris) of every topic since a week such as 2026-W01.",
        """SELECT week, topic_id, topic_label, articles
FROM topic_weekly_counts
WHERE week >= :since_week
ORDER BY week, topic_id"""),
    CannedQuery(
        "top_sources_per_topic", "Top sources of a topic",
        "Which sources write most about a topic, and when they last did.",
        """SELECT s.name AS source, count(*) AS articles, max(a.published_at) AS last_published_at
FROM article_topics t
JOIN articles a ON a.id = t.article_id
JOIN sources s ON s.id = a.source_id
WHERE t.topic_id = :topic
GROUP BY a.source_id
ORDER BY articles DESC
LIMIT 20"""),
    CannedQuery(
        "co_occurring_topics", "Topics that co-occur",
        "Pairs of topics given to the same articles, most frequent first.",
        """SELECT x.topic_id AS topic, y.topic_id AS other_topic, count(*) AS articles
FROM article_topics x
JOIN article_topics y ON y.article_id = x.article_id AND y.topic_id > x.topic_id
GROUP BY x.topic_id, y.topic_id
ORDER BY articles DESC
LIMIT 50"""),
    CannedQuery(
        "story_sources", "A story's sources",
        "Every article of a story (a cluster of near-duplicates), in order of publication.",
        """SELECT a.published_at, s.name AS source, a.title, a.url
FROM articles a
JOIN sources s ON s.id = a.source_id
WHERE a.cluster_id = :cluster_id
ORDER BY a.published_at, a.id"""),
    CannedQuery(
        "most_covered_stories", "Most covered stories",
        "Stories carried by the most sources since a date (YYYY-MM-DD).",
        """SELECT cluster_id, title, sources, articles, first_published_at
FROM stories
WHERE last_published_at >= :since
ORDER BY sources DESC, articles DESC
LIMIT 30"""),
    CannedQuery(
        "topic_articles", "Articles of a topic in a period",
        "Articles of one topic published in [since, until) (dates YYYY-MM-DD, UTC), best score first.",
        """SELECT published_at, source_name, title, score, url
FROM articles_with_topics
WHERE topic_id = :topic AND published_at >= :since AND published_at < :until
ORDER BY score DESC, published_at DESC"""),
    CannedQuery(
        "why_tagged", "Why an article has its topics",
        "Score and matched keywords (with context) of every topic of one article.",
        """SELECT t.topic_id, t.score, h.value ->> 'keyword' AS keyword, h.value ->> 'field' AS field,
       h.value ->> 'text' AS context
FROM article_topics t, json_each(t.hits) h
WHERE t.article_id = :article_id
ORDER BY t.score DESC"""),
    CannedQuery(
        "articles_without_topic", "Recent articles without any topic",
        "What the topics miss: recent articles no rule tagged, newest first.",
        """SELECT a.published_at, s.name AS source, a.title, a.url
FROM articles a
JOIN sources s ON s.id = a.source_id
WHERE a.published_at >= :since
  AND NOT EXISTS (SELECT 1 FROM article_topics t WHERE t.article_id = a.id)
ORDER BY a.published_at DESC
LIMIT 200"""),
    CannedQuery(
        "topic_growth", "Topics growing or shrinking",
        "Articles of each topic over the last 12 weeks against the 12 weeks before.",
        """SELECT t.id AS topic, t.label,
       sum(c.published_at >= strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-84 days')) AS last_12_weeks,
       sum(c.published_at < strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-84 days')) AS previous_12_weeks
FROM topics t
LEFT JOIN topic_article_weeks c ON c.topic_id = t.id
  AND c.published_at >= strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-168 days')
WHERE t.active = 1
GROUP BY t.id
ORDER BY last_12_weeks - previous_12_weeks DESC"""),
    CannedQuery(
        "articles_per_source_per_month", "Articles per source per month",
        "Monthly volume of every source (months in UTC).",
        """SELECT substr(a.published_at, 1, 7) AS month, s.name AS source, count(*) AS articles
FROM articles a
JOIN sources s ON s.id = a.source_id
GROUP BY month, a.source_id
ORDER BY month DESC, articles DESC"""),
    CannedQuery(
        "sources_needing_attention", "Sources needing attention",
        "Failing or disabled sources, and those silent for more than 14 days.",
        """SELECT source_id, name, state, consecutive_failures, last_reason, last_error, days_since_new
FROM source_health
WHERE state IN ('failing', 'disabled') OR days_since_new > 14
ORDER BY state, consecutive_failures DESC"""),
    CannedQuery(
        "deliveries_per_week", "Digest deliveries per week",
        "How each week's digest was delivered, by status.",
        """SELECT week, status, count(*) AS members, sum(articles) AS articles
FROM deliveries
GROUP BY week, status
ORDER BY week DESC, status"""),
)


# --------------------------------------------------------------------------------------------------
# Datasette

FACETS = {"articles": ["source_id"], "articles_with_topics": ["source_name", "topic_id"],
          "articles_overview": ["source_name"], "source_health": ["state"], "topic_weekly_counts": ["topic_id"]}


def datasette_metadata(store: "Store", database: str) -> dict[str, Any]:
    """Datasette metadata: descriptions from the schema comments, canned queries, FTS and facets."""
    docs = schema_docs()
    objects = store.schema_objects()
    tables: dict[str, Any] = {}
    for name in objects:
        doc = docs.get(name)
        entry: dict[str, Any] = {}
        if doc and doc.description:
            entry["description"] = doc.description
        if doc and doc.columns:
            entry["columns"] = {c: d for c, d in doc.columns.items() if c in objects[name][1]}
        if name in FACETS:
            entry["facets"] = FACETS[name]
        if name == "articles":
            entry.update(fts_table="articles_fts", fts_pk="id", sort_desc="published_at")
        elif name in ("articles_with_topics", "articles_overview"):
            entry.update(fts_table="articles_fts", fts_pk="article_id")
        if name in HIDDEN_FROM_DATASETTE or name in ("http_cache", "article_urls"):
            entry["hidden"] = True
        tables[name] = entry
    return {
        "title": "veille: press archive",
        "description": "Articles collected by veille for the association, their topics, stories and sources. "
                       "Read-only. Search uses the topic rule syntax; see docs/schema.md.",
        "databases": {
            database: {
                "tables": tables,
                "queries": {q.name: {"sql": q.sql, "title": q.title, "description": q.description}
                            for q in CANNED_QUERIES},
            }
        },
    }


def veille_match(text: str) -> str:
    """The FTS5 MATCH expression of a query in veille syntax (SQL function for Datasette).

    SQLite replaces a Python function's exception by "user-defined function raised exception", so a
    syntax error is returned as an FTS5 column filter on a column named after the error instead: FTS5
    then fails with "no such column: query error at position 7: ...", which Datasette shows as is.
    """
    from .query import parse_query, to_fts

    try:
        return to_fts(parse_query(text or ""))
    except QueryError as e:
        message = f"query error at position {e.position + 1}: {e.message}".replace('"', "'")
        return f'"{message}" : x'


def serve(db: str | Path, port: int = 8001, host: str = "127.0.0.1") -> None:
    """Run Datasette on the archive, read-only, until interrupted."""
    try:
        import uvicorn
        from datasette.app import Datasette
        from datasette.plugins import pm
    except ImportError as e:
        raise VeilleError("`veille archive serve` needs Datasette: pip install 'veille[analyst]'") from e
    from .store import Store

    db = Path(db).resolve()
    with Store.open(db, readonly=True) as store:
        metadata = datasette_metadata(store, db.stem)
    from . import datasette_plugin

    if not pm.is_registered(datasette_plugin):
        pm.register(datasette_plugin, name="veille")
    ds = Datasette(
        [str(db)], metadata=metadata, cors=False,
        settings={"sql_time_limit_ms": 5000, "facet_time_limit_ms": 2000, "suggest_facets": False,
                  "allow_download": False, "default_page_size": 50, "max_returned_rows": 5000},
    )
    import asyncio

    asyncio.run(ds.invoke_startup())
    uvicorn.run(ds.app(), host=host, port=port, log_level="warning", lifespan="on")


# --------------------------------------------------------------------------------------------------
# docs/schema.md reference section


def schema_markdown(store: "Store") -> str:
    """The reference part of docs/schema.md: every table and view of `store` with its columns."""
    docs = schema_docs()
    objects = store.schema_objects()
    out: list[str] = []
    for kind, heading in (("table", "Tables"), ("view", "Views")):
        out.append(f"### {heading}\n")
        for name, (object_kind, columns) in objects.items():
            if object_kind != kind:
                continue
            doc = docs.get(name)
            out.append(f"#### `{name}`\n")
            if doc and doc.description:
                out.append(f"{doc.description}\n")
            out.append("| column | meaning |\n| --- | --- |")
            for column in columns:
                text = (doc.columns.get(column, "") if doc else "").replace("|", "\\|")
                out.append(f"| `{column}` | {text} |")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def update_schema_doc(path: str | Path) -> bool:
    """Rewrite the generated blocks of docs/schema.md from the code; True if the file changed.

    The blocks sit between `<!-- queries:start/end -->` and `<!-- reference:start/end -->` markers; the
    prose around them is left alone. The reference comes from a freshly migrated temporary database.
    """
    import tempfile

    from .store import Store

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as folder:
        with Store.open(Path(folder) / "schema.db") as store:
            blocks = {"queries": canned_markdown(), "reference": schema_markdown(store)}
    new = text
    for name, block in blocks.items():
        start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
        if start not in new or end not in new:
            raise VeilleError(f"{path}: markers {start.strip()} ... {end} not found; add them where the "
                              f"{name} belong")
        head, rest = new.split(start, 1)
        new = head + start + block + end + rest.split(end, 1)[1]
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def canned_markdown() -> str:
    """The ready-queries part of docs/schema.md."""
    out = []
    for q in CANNED_QUERIES:
        out.append(f"### {q.title} (`{q.name}`)\n\n{q.description}\n\n```sql\n{q.sql}\n```\n")
    return "\n".join(out)


__all__ = [
    "search", "SearchResult", "SearchHit", "Marked", "Highlighter", "weekly_counts", "WeeklyCounts",
    "trend_chart", "render_chart", "write_trends", "digest_trends_html", "export", "EXPORT_FORMATS", "parse_when", "article_filter",
    "schema_docs", "datasette_metadata", "serve", "CANNED_QUERIES", "schema_markdown", "canned_markdown",
    "update_schema_doc",
]
