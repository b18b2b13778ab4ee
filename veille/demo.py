"""`veille demo`: an offline press watch in a minute, from a corpus bundled with the package.

Why it exists: a newcomer (the association's IT person, a staff member, an analyst) should see the whole
product -- fetch, extraction, near-duplicates, topics, digests, a failing source -- before configuring
anything. Everything is served by a loopback HTTP server started here and stopped in a `finally`.

The corpus is generated, deterministically (seeded), from a hand-written French bank in
`veille/demo_data/` (themes.yaml, places.yaml, sites.yaml, templates/). Only the dates move: articles
spread over the three ISO weeks (Europe/Paris) ending with the current one, so the current week's
digest always has content. The same HTTP server, `LoopbackServer`, also serves the ingestion
benchmark's corpus (bench/server.py).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import html
import random
import re
import threading
import time
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from itertools import combinations
from math import comb
from pathlib import Path
from typing import Any, Callable, Sequence
import yaml

from . import dedupe
from .digest import PARIS, french_datetime, iso_week, shift_week, week_bounds
from .errors import ConfigError, VeilleError

SEED = 2026
DISTINCT_BITS = dedupe.NEAR_DUPLICATE_BITS + 4
"""Different demo stories stay this far apart in SimHash, so only the syndicated copies cluster."""
MARKER = ".veille-demo"
"""File that marks a folder as the demo's own, so a rerun may reset it and never touches anything else."""

__all__ = [
    "ArticleWriter", "Corpus", "DemoArticle", "DemoMember", "DemoResult", "DemoSite", "LoopbackServer", "Resource",
    "SiteRenderer", "build_corpus", "default_topics_path", "render_site", "run_demo", "sources_yaml",
]


# --------------------------------------------------------------------------------------------------
# The bank


DATA = Path(__file__).resolve().parent / "demo_data"


def _load(name: str) -> Any:
    return yaml.safe_load((DATA / name).read_text(encoding="utf-8"))


def default_topics_path() -> Path:
    """The default topics.yaml shipped with the package (demo_data/topics.yaml links to the repo's file)."""
    path = DATA / "topics.yaml"
    if not path.is_file():
        raise ConfigError(str(path), None, None, "the default topics file is missing from the package",
                          "reinstall veille, or pass --topics to the demo")
    return path


_NBSP, _NNBSP = "\u00a0", "\u202f"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-ZÀ-ÖØ-Þ«])")


def typography(text: str) -> str:
    """French typography: curly apostrophes, non-breaking spaces inside « » and before ; : ? ! %."""
    text = text.replace("'", "’")
    text = re.sub(r"«\s*", "«" + _NBSP, text)
    text = re.sub(r"\s*»", _NBSP + "»", text)
    text = re.sub(r"\s+([;?!])", _NNBSP + r"\1", text)
    text = re.sub(r"(?<=\S)\s+:(?=\s|$)", _NBSP + ":", text)
    text = re.sub(r"(?<=\d)\s+%", _NBSP + "%", text)
    return text


def _thousands(n: int) -> str:
    return f"{n:,}".replace(",", _NNBSP)


def slugify(text: str, limit: int = 70) -> str:
    ascii_text = unicodedata.normalize("NFKD", text.replace("’", "-")).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:limit].rstrip("-")


class ArticleWriter:
    """Writes invented French articles from the bank; the demo and the ingestion benchmark both use it."""

    def __init__(self, seed: int = SEED, year: int | None = None) -> None:
        self.rng = random.Random(seed)
        bank = _load("themes.yaml")
        self.themes: dict[str, dict[str, Any]] = bank["themes"]
        self.closings: list[str] = bank["closings"]
        places = _load("places.yaml")
        self.places = places
        self.year = year or datetime.now(PARIS).year
        self._used: dict[tuple[str, int], list[set[int]]] = {}
        self._asides: dict[tuple[str, int], int] = {}
        self._sentence_pool: dict[str, list[str]] = {}

    def person(self) -> tuple[str, int]:
        """An invented name and its grammatical gender (0 masculine, 1 feminine) for agreeing roles."""
        gender = self.rng.randrange(2)
        first = self.rng.choice(self.places["prenoms"]["mf"[gender]])
        return f"{first} {self.rng.choice(self.places['noms'])}", gender

    def _money(self, lo: int, hi: int) -> str:
        amount = self.rng.randrange(lo, hi)
        if amount >= 1_000_000:
            millions = f"{amount / 1_000_000:.1f}".replace(".", ",")
            return f"{millions} million{'s' if amount >= 2_000_000 else ''} d’euros"
        return f"{_thousands(round(amount, -3) if amount >= 100_000 else round(amount, -2))} euros"

    def values(self) -> dict[str, str]:
        """One set of invented names and figures for an article."""
        rng, places = self.rng, self.places
        commune = rng.choice(places["communes"])
        de = "d’" if unicodedata.normalize("NFKD", commune[0])[0] in "AEIOUY" else "de "
        epci = rng.choice(places["epcis"])
        dep = rng.choice(places["departements"])
        elu, elu_g = self.person()
        agent, agent_g = self.person()
        maire, _ = self.person()
        return {
            "commune": commune, "de_commune": de + commune, "a_commune": "à " + commune,
            "epci": epci, "Epci": epci[0].upper() + epci[1:],
            "dep": dep["nom"], "dans_dep": dep["dans"], "du_dep": dep["du"],
            "elu": elu, "elu_role": rng.choice(places["roles"]["elu"])[elu_g],
            "agent": agent, "agent_role": rng.choice(places["roles"]["agent"])[agent_g],
            "maire": maire, "prestataire": rng.choice(places["prestataires"]),
            "n": str(rng.randint(3, 12)), "nn": str(rng.randint(15, 95)), "nnn": str(rng.randint(120, 900)),
            "habitants": _thousands(rng.randrange(1200, 48000, 100)),
            "montant": self._money(80_000, 4_800_000), "montant_petit": self._money(8_000, 60_000),
            "pct": f"{rng.randint(12, 68)} %", "annee": str(self.year + 1), "mois": rng.choice(places["mois"]),
        }

    def _pick(self, theme: str, count: int) -> list[int]:
        """Paragraph indexes for the next article of `theme`, overlapping as little as possible with the
        previous ones: two articles on one theme must not look like the same story to dedupe."""
        size = len(self.themes[theme]["paragraphs"])
        used = self._used.setdefault((theme, count), [])
        if len(used) >= comb(size, count):
            used.clear()
        taken = {frozenset(u) for u in used}
        candidates = [c for c in combinations(range(size), count) if frozenset(c) not in taken]
        best = min(candidates, key=lambda c: (max((len(set(c) & u) for u in used), default=0),
                                              sum(len(set(c) & u) for u in used), self.rng.random()))
        used.append(set(best))
        picked = list(best)
        self.rng.shuffle(picked)
        return picked

    def _aside(self, theme: str) -> str:
        """A paragraph of a related theme, the least used so far, so asides do not repeat either."""
        others = self.themes[theme].get("related") or [t for t in self.themes if t != theme]
        pool = [(t, i) for t in others for i in range(len(self.themes[t]["paragraphs"]))]
        fewest = min(self._asides.get(k, 0) for k in pool)
        key = self.rng.choice([k for k in pool if self._asides.get(k, 0) == fewest])
        self._asides[key] = self._asides.get(key, 0) + 1
        return self.themes[key[0]]["paragraphs"][key[1]]

    def _sentences(self, theme: str) -> list[str]:
        cached = self._sentence_pool.get(theme)
        if cached is None:
            cached = [s for p in self.themes[theme]["paragraphs"] for s in _SENTENCE_END.split(p) if s]
            self._sentence_pool[theme] = cached
        return cached

    def write_mixed(self, theme: str, values: dict[str, str] | None = None) -> tuple[str, str, list[str]]:
        """An article recombined sentence by sentence, a few from its theme and more from all the others:
        incoherent to read, but tens of thousands of them stay as different from each other as real
        articles are, which the near-duplicate index needs (the ingestion benchmark's corpus)."""
        bank = self.themes[theme]
        values = values or self.values()
        own = self.rng.sample(self._sentences(theme), 4)
        others = [t for t in self.themes if t != theme]
        borrowed = [self.rng.choice(self._sentences(self.rng.choice(others))) for _ in range(self.rng.randint(5, 7))]
        sentences = own + borrowed
        self.rng.shuffle(sentences)
        body, i = [], 0
        while i < len(sentences):
            size = self.rng.randint(2, 3)
            body.append(" ".join(sentences[i:i + size]))
            i += size
        body.append(self.rng.choice(self.closings))
        story = self.rng.choice(bank["stories"])
        return self._fill(story["title"], values), self._fill(story["lead"], values), \
            [self._fill(p, values) for p in body]

    @staticmethod
    def _fill(text: str, values: dict[str, str]) -> str:
        text = typography(text.format_map(values))
        return text[0].upper() + text[1:]

    def write(self, theme: str, values: dict[str, str] | None = None, paragraphs: int = 3,
              aside: int = 1) -> tuple[str, str, list[str]]:
        """(title, lead, paragraphs) for one article of `theme`: one of its stories (headline and lead).

        The body is `paragraphs` paragraphs of the theme, `aside` paragraphs of other themes (articles
        touch several topics, as real ones do) and a neutral closing.
        """
        bank = self.themes[theme]
        values = values or self.values()
        story = self.rng.choice(bank["stories"])
        body = [bank["paragraphs"][i] for i in self._pick(theme, paragraphs)]
        for _ in range(aside):
            body.insert(self.rng.randrange(1, len(body) + 1), self._aside(theme))
        body.append(self.rng.choice(self.closings))
        return self._fill(story["title"], values), self._fill(story["lead"], values), \
            [self._fill(p, values) for p in body]


# --------------------------------------------------------------------------------------------------
# The corpus


@dataclass(frozen=True)
class DemoSite:
    """One invented publisher of the demo and how it publishes."""

    id: str
    name: str
    tagline: str
    format: str
    feed: str
    articles: str
    share: int
    color: str = "#333333"
    nav: tuple[str, ...] = ()
    author: str | None = None
    feed_content: bool = False
    guid_is_link: bool = False
    rights: str | None = None
    paywall_every: int = 0
    syndicated_to: str | None = None
    syndicated: int = 0
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def source_type(self) -> str:
        return {"listing": "html", "news-sitemap": "sitemap"}.get(self.format, "feed")


@dataclass(frozen=True)
class DemoArticle:
    id: int
    site_id: str
    theme: str
    title: str
    lead: str
    paragraphs: tuple[str, ...]
    author: str
    published: datetime
    """Timezone-aware UTC."""
    path: str
    paywalled: bool = False
    copy_of: int | None = None
    """For a syndicated near-duplicate: the id of the agency dispatch it republishes."""


@dataclass(frozen=True)
class DemoMember:
    email: str
    name: str
    organisation: str
    topics: tuple[str, ...]


@dataclass(frozen=True)
class Corpus:
    now: datetime
    weeks: tuple[datetime, ...]
    """Start (Monday 00:00 Europe/Paris, as UTC) of each of the three weeks, oldest first."""
    sites: tuple[DemoSite, ...]
    articles: tuple[DemoArticle, ...]
    members: tuple[DemoMember, ...]

    def site(self, site_id: str) -> DemoSite:
        return next(s for s in self.sites if s.id == site_id)

    def of_site(self, site_id: str) -> list[DemoArticle]:
        return sorted((a for a in self.articles if a.site_id == site_id), key=lambda a: a.published, reverse=True)

    @property
    def broken_sites(self) -> list[DemoSite]:
        return [s for s in self.sites if s.format == "broken"]

    @property
    def syndicated_pairs(self) -> list[tuple[DemoArticle, DemoArticle]]:
        by_id = {a.id: a for a in self.articles}
        return [(by_id[a.copy_of], a) for a in self.articles if a.copy_of is not None]


def build_corpus(now: datetime | None = None, seed: int = SEED, per_theme_week: int = 3) -> Corpus:
    """The demo's articles: `per_theme_week` (sometimes one more) per theme and week, over three weeks.

    Deterministic for a given seed: only the dates depend on `now`.
    """
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(microsecond=0)
    config = _load("sites.yaml")
    sites = tuple(DemoSite(**{**s, "nav": tuple(s.get("nav", ())), "source": dict(s.get("source", {}))})
                  for s in config["sites"])
    members = tuple(DemoMember(m["email"], m["name"], m["organisation"], tuple(m.get("topics") or ()))
                    for m in config["members"])
    writer = ArticleWriter(seed, year=now.astimezone(PARIS).year)
    rng = writer.rng
    weeks = tuple(week_bounds(shift_week(iso_week(now), -k))[0] for k in (2, 1, 0))
    current = weeks[-1]
    publishing = [s for s in sites if s.share > 0]
    weights = [s.share for s in publishing]
    authors = [writer.person()[0] for _ in range(24)]

    articles: list[DemoArticle] = []
    used_paths: set[str] = set()
    used_titles: set[str] = set()
    fingerprints: list[int] = []
    for start in weeks:
        span = min(timedelta(days=7), now - timedelta(minutes=1) - start)
        for theme in writer.themes:
            count = per_theme_week + (1 if rng.random() < 0.25 else 0)
            chosen: list[DemoSite] = []
            while len(chosen) < count:
                site = rng.choices(publishing, weights)[0]
                if site not in chosen:
                    chosen.append(site)
            for site in chosen:
                for _attempt in range(50):
                    title, lead, paragraphs = writer.write(theme)
                    fingerprint = dedupe.simhash("\n\n".join([lead, *paragraphs]))
                    if title not in used_titles and all(
                            dedupe.hamming(fingerprint, other) > DISTINCT_BITS for other in fingerprints):
                        break
                used_titles.add(title)
                fingerprints.append(fingerprint)
                published = _publication_time(rng, start, span)
                path = _article_path(site, title, published, len(articles) + 1, used_paths)
                articles.append(DemoArticle(
                    id=len(articles) + 1, site_id=site.id, theme=theme, title=title, lead=lead,
                    paragraphs=tuple(paragraphs), author=site.author or rng.choice(authors),
                    published=published, path=path,
                ))
    articles = _syndicate(articles, sites, current, now, writer, used_paths)
    articles = _paywall(articles, sites)
    return Corpus(now=now, weeks=weeks, sites=sites, articles=tuple(articles), members=members)


def _publication_time(rng: random.Random, start: datetime, span: timedelta) -> datetime:
    """A moment in [start, start + span), preferably in office hours when the span allows it."""
    fraction = rng.random()
    moment = start + span * fraction
    if moment.astimezone(PARIS).hour < 7 and span > timedelta(days=1):
        shifted = moment + timedelta(hours=8)
        if shifted < start + span:
            moment = shifted
    return moment.replace(microsecond=0)


def _article_path(site: DemoSite, title: str, published: datetime, n: int, used: set[str]) -> str:
    local = published.astimezone(PARIS)
    slug = slugify(title)
    path = site.articles.format(yyyy=f"{local:%Y}", mm=f"{local:%m}", dd=f"{local:%d}", slug=slug, n=n)
    while path in used:
        slug += "-bis"
        path = site.articles.format(yyyy=f"{local:%Y}", mm=f"{local:%m}", dd=f"{local:%d}", slug=slug, n=n)
    used.add(path)
    return path


def _syndicate(articles: list[DemoArticle], sites: Sequence[DemoSite], current: datetime, now: datetime,
               writer: ArticleWriter, used_paths: set[str]) -> list[DemoArticle]:
    """Republish a few agency dispatches of the current week elsewhere: new headline and byline, same text."""
    result = list(articles)
    for site in sites:
        if not site.syndicated_to or not site.syndicated:
            continue
        target = next(s for s in sites if s.id == site.syndicated_to)
        mine = [a for a in articles if a.site_id == site.id]
        recent = [a for a in mine if a.published >= current] or mine
        picked: dict[str, DemoArticle] = {}
        for a in recent:
            picked.setdefault(a.theme, a)
        for original in list(picked.values())[: site.syndicated]:
            headline = rewrite_headline(original.title, writer.themes[original.theme]["rubrique"])
            published = min(original.published + timedelta(hours=2), now - timedelta(minutes=1))
            published = max(published, original.published)
            edited = _credited(original, site)
            result.append(DemoArticle(
                id=len(result) + 1, site_id=target.id, theme=original.theme, title=headline, lead=original.lead,
                paragraphs=edited, author=f"La rédaction, avec {site.name}", published=published,
                path=_article_path(target, headline, published, len(result) + 1, used_paths), copy_of=original.id,
            ))
    return result


def rewrite_headline(title: str, kicker: str) -> str:
    """How a second title re-heads the same dispatch: drop the kicker before « : », or add one."""
    if " :" in title or "\u00a0:" in title:
        rest = re.split(r"\s:\s", title, maxsplit=1)[-1]
        return rest[0].upper() + rest[1:]
    first = title.split(" ", 1)[0]
    if first in ("La", "Le", "Les", "Un", "Une", "Des", "À") or first.startswith("L’"):
        title = title[0].lower() + title[1:]
    return typography(f"{kicker} : {title}")


def _credited(original: DemoArticle, agency: DemoSite) -> tuple[str, ...]:
    """The dispatch's paragraphs with an agency credit line, if it keeps the copy a clear near-duplicate."""
    initials = "".join(w[0] for w in agency.name.split() if w[0].isupper())
    before = dedupe.simhash("\n\n".join([original.lead, *original.paragraphs]))
    for credit in (f"Avec {agency.name}.", f"(Avec {initials})"):
        edited = (*original.paragraphs, credit)
        if dedupe.hamming(before, dedupe.simhash("\n\n".join([original.lead, *edited]))) \
                <= dedupe.NEAR_DUPLICATE_BITS // 2:
            return edited
    return original.paragraphs


def _paywall(articles: list[DemoArticle], sites: Sequence[DemoSite]) -> list[DemoArticle]:
    """Every n-th article of a paywalled site shows only a teaser on its page (its feed has the text)."""
    every = {s.id: s.paywall_every for s in sites if s.paywall_every}
    result = list(articles)
    for site_id, n in every.items():
        mine = sorted((a for a in result if a.site_id == site_id), key=lambda a: a.published, reverse=True)
        for index, a in enumerate(mine):
            if index % n == 0:
                result[a.id - 1] = replace(a, paywalled=True)
    return result


# --------------------------------------------------------------------------------------------------
# Rendering the sites

_MONTHS_SHORT = ["janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.", "nov.", "déc."]
_DAYS_SHORT = ["lun.", "mar.", "mer.", "jeu.", "ven.", "sam.", "dim."]


def french_rfc822(moment: datetime) -> str:
    """A pubDate as French CMSs localise it, e.g. `mar., 24 nov. 2026 08:30:00 +0100`."""
    local = moment.astimezone(PARIS)
    return (f"{_DAYS_SHORT[local.weekday()]}, {local.day:02d} {_MONTHS_SHORT[local.month - 1]} {local.year} "
            f"{local:%H:%M:%S %z}")


class Resource:
    """A response body with its validators, precomputed once so serving costs almost nothing."""

    __slots__ = ("body", "content_type", "status", "etag", "last_modified", "headers", "gzipped")

    def __init__(self, body: bytes | str, content_type: str = "text/html; charset=utf-8", status: int = 200,
                 last_modified: datetime | None = None, headers: dict[str, str] | None = None,
                 compress: bool = False) -> None:
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.content_type = content_type
        self.status = status
        self.etag = '"' + hashlib.blake2b(self.body, digest_size=8).hexdigest() + '"' if status == 200 else None
        self.last_modified = format_datetime(last_modified, usegmt=True) if last_modified else None
        self.headers = headers or {}
        self.gzipped = gzip.compress(self.body, 6, mtime=0) if compress and len(self.body) > 1024 else None


def _templates() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    return Environment(loader=FileSystemLoader(DATA / "templates"), autoescape=True,
                       undefined=StrictUndefined, keep_trailing_newline=True)


def _view(a: DemoArticle, base: str) -> dict[str, Any]:
    everything = (a.lead, *a.paragraphs)
    return {
        "title": a.title, "lead": a.lead, "paragraphs": a.paragraphs, "author": a.author,
        "url": base + a.path, "path": a.path, "guid": f"urn:demo:{a.site_id}:{a.id}",
        "published_iso": a.published.astimezone(PARIS).isoformat(), "published_fr": french_datetime(a.published),
        "pubdate": format_datetime(a.published.astimezone(PARIS)), "all_paragraphs": everything,
        "content_html": "".join(f"<p>{html.escape(p, quote=False)}</p>" for p in everything),
    }


def site_context(site: DemoSite, base: str) -> dict[str, Any]:
    return {"id": site.id, "name": site.name, "tagline": site.tagline, "color": site.color, "nav": site.nav,
            "home": base + site.feed.rsplit("/", 1)[0] + "/", "feed_url": base + site.feed,
            "feed_content": site.feed_content, "guid_is_link": site.guid_is_link, "rights": site.rights}


_FEED_TEMPLATES = {
    "rss2": ("rss2.xml", "application/rss+xml; charset=utf-8"),
    "rss2-fr-dates": ("rss2.xml", "application/rss+xml; charset=utf-8"),
    "rss1": ("rss1.xml", "application/rdf+xml; charset=utf-8"),
    "atom": ("atom.xml", "application/atom+xml; charset=utf-8"),
    "listing": ("listing.html", "text/html; charset=utf-8"),
    "news-sitemap": ("news-sitemap.xml", "application/xml; charset=utf-8"),
    "broken": ("error.html", "text/html; charset=utf-8"),
}


class SiteRenderer:
    """Renders a demo site's feed (or listing, or sitemap) and article pages from the templates."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.env = _templates()
        self.rubriques = {k: v["rubrique"] for k, v in _load("themes.yaml")["themes"].items()}

    def views(self, site: DemoSite, articles: Sequence[DemoArticle]) -> list[dict[str, Any]]:
        views = []
        for a in articles:
            view = _view(a, self.base)
            view["rubrique"] = self.rubriques.get(a.theme, "Actualités")
            if site.format == "rss2-fr-dates":
                view["pubdate"] = french_rfc822(a.published)
            views.append(view)
        return views

    def feed(self, site: DemoSite, articles: Sequence[DemoArticle], built: datetime) -> tuple[str, str]:
        """(body, content type) of the site's feed, newest article first."""
        template, ctype = _FEED_TEMPLATES[site.format]
        last = max((a.published for a in articles), default=built)
        body = self.env.get_template(template).render(
            site=site_context(site, self.base), articles=self.views(site, articles),
            built=format_datetime(last.astimezone(PARIS)), updated=last.astimezone(PARIS).isoformat(),
            year=built.astimezone(PARIS).year)
        return body, ctype

    def page(self, site: DemoSite, article: DemoArticle, related: Sequence[DemoArticle] = (),
             chrome: dict[str, str] | None = None) -> str:
        """The article's page; `chrome` adds raw HTML to the head, header, aside and footer (the benchmark
        pads pages to the weight of real news sites with it)."""
        return self.env.get_template("article.html").render(
            site=site_context(site, self.base), a=self.views(site, [article])[0],
            related=self.views(site, related), paywalled=article.paywalled,
            year=article.published.astimezone(PARIS).year,
            chrome={"head": "", "header": "", "aside": "", "footer": "", **(chrome or {})})


def render_site(corpus: Corpus, base: str) -> dict[str, Resource]:
    """Every URL of the demo's publishers (feeds, listing, sitemap, pages, robots.txt) for a server at `base`."""
    renderer = SiteRenderer(base)
    routes: dict[str, Resource] = {
        "/robots.txt": Resource("User-agent: *\nDisallow: /connexion\nDisallow: /abonnement\n",
                                "text/plain; charset=utf-8"),
    }
    index = ["<!DOCTYPE html><html lang='fr'><head><meta charset='utf-8'><title>veille demo</title></head><body>",
             "<h1>Sources de démonstration de veille</h1><ul>"]
    for site in corpus.sites:
        mine = corpus.of_site(site.id)
        index.append(f"<li><a href='{html.escape(site.feed)}'>{html.escape(site.name)}</a> ({site.format})</li>")
        body, ctype = renderer.feed(site, mine, corpus.now)
        if site.format == "broken":
            routes[site.feed] = Resource(body, ctype, status=500)
            continue
        last_modified = max((a.published for a in mine), default=corpus.now)
        routes[site.feed] = Resource(body, ctype, last_modified=last_modified, compress=True)
        for i, a in enumerate(mine):
            related = [b for b in mine if b is not a][:3]
            routes[a.path] = Resource(renderer.page(site, a, related), last_modified=a.published, compress=True)
    index.append("</ul></body></html>")
    routes["/"] = Resource("".join(index))
    return routes


def _q(value: str) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def sources_yaml(corpus: Corpus, base: str) -> str:
    """The demo's sources.yaml, pointing at the loopback server."""
    lines = [
        "# Sources of `veille demo`: invented publishers served on 127.0.0.1 while the demo runs",
        "# (`veille demo --keep-serving` keeps them up). allow_private lets veille fetch the loopback address.",
        "defaults:", "  interval: 1h", "  allow_private: true", "sources:",
    ]
    for site in corpus.sites:
        lines += [f"  - id: {site.id}", f"    name: {_q(site.name)}", f"    type: {site.source_type}",
                  f"    url: {base}{site.feed}"]
        for key, value in site.source.items():
            lines.append(f"    {key}: {_q(value) if isinstance(value, str) else str(value).lower()}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# The loopback HTTP server


class _HttpProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1 for GET and HEAD: keep-alive, conditional GET, gzip. Nothing else is needed here."""

    def __init__(self, server: "LoopbackServer") -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server._transports.add(transport)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._transports.discard(self.transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None and not self.transport.is_closing():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 65536:
                    self.transport.close()
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
            lines = head.split(b"\r\n")
            try:
                method, target, version = lines[0].split(b" ", 2)
            except ValueError:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                self.transport.close()
                return
            headers: dict[bytes, bytes] = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            keep_alive = version == b"HTTP/1.1" and headers.get(b"connection", b"").lower() != b"close"
            self.transport.write(self.server._respond(method, target, headers, keep_alive))
            if not keep_alive:
                self.transport.close()


class LoopbackServer:
    """A fast HTTP/1.1 server on 127.0.0.1 for the demo and the benchmarks.

    `resolve(path)` maps a request path (query string removed) to a `Resource`, or None for 404;
    by default it looks paths up in `routes`. Run it in a background thread (`start`/`stop`, or as a
    context manager) or in the foreground of its own process (`serve_forever`).
    """

    def __init__(self, resolve: Callable[[str], Resource | None] | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        if not host.startswith("127."):
            raise VeilleError(f"the demo server only listens on loopback, not on {host}")
        self.host, self.port = host, port
        self.routes: dict[str, Resource] = {}
        self._resolve = resolve
        self.hits = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._transports: set[asyncio.Transport] = set()

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _respond(self, method: bytes, target: bytes, headers: dict[bytes, bytes], keep_alive: bool) -> bytes:
        self.hits += 1
        path = target.split(b"?", 1)[0].decode("utf-8", "replace")
        resource = self._resolve(path) if self._resolve else self.routes.get(path)
        connection = b"" if keep_alive else b"Connection: close\r\n"
        if method not in (b"GET", b"HEAD"):
            return b"HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\n" + connection + b"\r\n"
        if resource is None:
            return (b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 9\r\n"
                    + connection + b"\r\nnot found")
        validators = b""
        if resource.etag:
            validators += b"ETag: " + resource.etag.encode() + b"\r\n"
        if resource.last_modified:
            validators += b"Last-Modified: " + resource.last_modified.encode() + b"\r\n"
        if resource.status == 200 and _not_modified(resource, headers):
            return b"HTTP/1.1 304 Not Modified\r\n" + validators + connection + b"\r\n"
        body = resource.body
        encoding = b""
        if resource.gzipped is not None and b"gzip" in headers.get(b"accept-encoding", b""):
            body, encoding = resource.gzipped, b"Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n"
        extra = "".join(f"{k}: {v}\r\n" for k, v in resource.headers.items()).encode("latin-1")
        head = (f"HTTP/1.1 {resource.status} {_REASON.get(resource.status, 'OK')}\r\n"
                f"Content-Type: {resource.content_type}\r\nContent-Length: {len(body)}\r\n").encode("latin-1")
        return head + encoding + validators + extra + connection + b"\r\n" + (b"" if method == b"HEAD" else body)

    async def _open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(lambda: _HttpProtocol(self), self.host, self.port,
                                                      reuse_address=True, backlog=2048)
        self.port = self._server.sockets[0].getsockname()[1]

    def _close_all(self) -> None:
        if self._server is not None:
            self._server.close()
        for transport in list(self._transports):
            transport.close()

    # -- in a background thread ----------------------------------------------------------------------

    def start(self) -> "LoopbackServer":
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._open())
            except BaseException as e:  # noqa: BLE001 - reported to the starting thread
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                self._close_all()
                if self._server is not None:
                    loop.run_until_complete(self._server.wait_closed())
                loop.run_until_complete(asyncio.sleep(0))
                loop.close()

        self._thread = threading.Thread(target=run, name="veille-demo-http", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise VeilleError(f"cannot start the demo HTTP server on {self.host}:{self.port}: {failure[0]}") \
                from failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> "LoopbackServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- in the foreground ---------------------------------------------------------------------------

    def serve_forever(self, ready: Callable[["LoopbackServer"], None] | None = None) -> None:
        """Serve until the process is interrupted (bench/server.py runs this in its own process)."""

        async def main() -> None:
            await self._open()
            if ready:
                ready(self)
            try:
                await asyncio.Event().wait()
            finally:
                self._close_all()

        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            pass


_REASON = {200: "OK", 304: "Not Modified", 404: "Not Found", 410: "Gone", 500: "Internal Server Error",
           503: "Service Unavailable"}


def _not_modified(resource: Resource, headers: dict[bytes, bytes]) -> bool:
    tags = headers.get(b"if-none-match")
    if tags is not None:
        wanted = {t.strip().removeprefix(b"W/") for t in tags.split(b",")}
        return b"*" in wanted or (resource.etag or "").encode() in wanted
    since = headers.get(b"if-modified-since")
    return bool(since and resource.last_modified and since.decode("latin-1") == resource.last_modified)


# --------------------------------------------------------------------------------------------------
# Running the demo


@dataclass(frozen=True)
class DemoResult:
    """What `veille demo` did and where to look."""

    directory: Path
    db: Path
    sources: Path
    topics: Path
    config: Path
    base_url: str
    week: str
    corpus: Corpus
    pass_result: Any
    """veille.types.PassResult of the fetch."""
    digest_dir: Path
    emails: tuple[Path, ...]
    delivery: Any
    topic_counts: tuple[tuple[str, str, int], ...]
    """(topic id, label, articles this week) in digest order."""
    articles: int
    clusters: int
    """Stories of the week told by more than one article (syndicated near-duplicates)."""
    elapsed: float

    @property
    def index_html(self) -> Path:
        return self.digest_dir / "index.html"

    @property
    def failed(self) -> list[Any]:
        return list(self.pass_result.failed)


def prepare_directory(directory: Path) -> Path:
    """Create the demo folder, or reset one a previous demo made; never touch a folder it did not make."""
    directory = directory.resolve()
    if directory.exists() and not directory.is_dir():
        raise ConfigError(str(directory), None, None, "is a file, not a folder", "pass another --dir")
    if directory.is_dir() and any(directory.iterdir()) and not (directory / MARKER).exists():
        raise ConfigError(str(directory), None, None, "is not empty and was not made by `veille demo`",
                          "pass --dir with a new or empty folder; the demo never overwrites your files")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("Folder made by `veille demo`: a rerun resets it.\n", encoding="utf-8")
    for name in ("demo.db", "demo.db-wal", "demo.db-shm"):
        (directory / name).unlink(missing_ok=True)
    digests = directory / "digests"
    if digests.is_dir():
        import shutil

        shutil.rmtree(digests)
    return directory


def _write_config(directory: Path, corpus: Corpus, base: str, topics: Path | None) -> tuple[Path, Path, Path]:
    sources = directory / "sources.yaml"
    sources.write_text(sources_yaml(corpus, base), encoding="utf-8")
    topics_path = directory / "topics.yaml"
    topics_path.write_text((topics or default_topics_path()).read_text(encoding="utf-8"), encoding="utf-8")
    config = directory / "veille.yaml"
    config.write_text(
        "# Settings of `veille demo`. The sources are on 127.0.0.1 and are ours, so the politeness delay\n"
        "# between two requests to the same host is off and loopback addresses are allowed.\n"
        "allow_private: true\n"
        "politeness_delay: 0\n"
        "per_host_concurrency: 8\n"
        f"digests_dir: {_q(str(directory / 'digests'))}\n"
        "organisation: \"Association des territoires numériques (démonstration)\"\n"
        "mail_from: veille@territoires-numeriques.example\n",
        encoding="utf-8",
    )
    return sources, topics_path, config


def run_demo(directory: str | Path = "demo", *, now: datetime | None = None, topics: Path | None = None,
             serve: Callable[[DemoResult], None] | None = None,
             progress: Callable[[str], None] | None = None) -> DemoResult:
    """Serve the corpus on 127.0.0.1, fetch it, tag it, build the week's digest and write the outbox.

    `serve` is called with the result while the server still runs (`--keep-serving` waits there);
    the server is stopped afterwards whatever happens.
    """
    from .config import load_settings
    from .core import Watch
    from . import digest as digests
    from .mail import deliver_week

    t0 = time.monotonic()
    say = progress or (lambda message: None)
    directory = prepare_directory(Path(directory))
    corpus = build_corpus(now)
    server = LoopbackServer()
    server.start()
    try:
        server.routes.update(render_site(corpus, server.base))
        say(f"serving {len(corpus.sites)} demo sources and {len(corpus.articles)} articles on {server.base}")
        sources_path, topics_path, config_path = _write_config(directory, corpus, server.base, topics)
        # The environment may override veille.yaml (VEILLE_*): the demo's own choices must hold regardless.
        settings = load_settings(config_path).replace(allow_private=True, politeness_delay=0.0,
                                                      digests_dir=str(directory / "digests"))
        db = directory / "demo.db"
        with Watch(db=db, sources=sources_path, topics=topics_path, config=config_path, settings=settings) as watch:
            say("fetching, extracting, deduplicating and tagging...")
            result = watch.fetch()
            topic_ids = {t.id for t in watch.load_topics()}
            for m in corpus.members:
                followed = [t for t in m.topics if t in topic_ids]
                watch.store.upsert_member(m.email, m.name, m.organisation, followed or None)
            week = digests.iso_week(corpus.now)
            say(f"building the digest of {week} and writing the outbox...")
            sources = watch.load_sources()
            delivery = deliver_week(watch.store, week, settings, sources, send=False)
            digest_dir = Path(delivery.folder)
            digest = digests.build_digest(watch.store, week, settings, sources)
            counts = tuple((s.topic.id, s.topic.label, s.count) for s in digest.sections)
            stories = {i.key: i for s in digest.sections for i in (*s.items, *s.cut)}
            clusters = sum(1 for i in stories.values() if len(i.article_ids) > 1)
            articles = watch.store.article_count()
        emails = tuple(sorted((digest_dir / "outbox").glob("*.eml")))
        outcome = DemoResult(
            directory=directory, db=db, sources=sources_path, topics=topics_path, config=config_path,
            base_url=server.base, week=week, corpus=corpus, pass_result=result, digest_dir=digest_dir,
            emails=emails, delivery=delivery, topic_counts=counts, articles=articles, clusters=clusters,
            elapsed=time.monotonic() - t0,
        )
        if serve:
            serve(outcome)
        return outcome
    finally:
        server.stop()
