"""Parse stage: feeds (fast path and feedparser agree), encodings, dates, listings, sitemaps, limits."""

from __future__ import annotations

import gzip
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings, strategies as st
from lxml import etree

from veille import parse
from veille.errors import ParseError
from veille.parse import (
    MAX_ENTRIES, Parsed, clean_text, decode_document, html_to_text, parse_date, parse_document, parse_feed,
    parse_feed_feedparser, parse_listing, parse_sitemap,
)

FIXTURES = Path(__file__).parent / "fixtures"
FEEDS = FIXTURES / "feeds"
PAGES = FIXTURES / "pages"
OWN_FEEDS = sorted(p for p in FEEDS.glob("*.xml") if not p.name.startswith("sitemap"))
FEED_URL = "https://www.territoires-numerique.example/feed/"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def fold(text: str) -> str:
    return " ".join(text.split())


def assert_same_entries(fast: Parsed, slow: Parsed, name: str) -> None:
    assert len(fast.entries) == len(slow.entries), name
    assert fast.title == slow.title, name
    for a, b in zip(fast.entries, slow.entries):
        where = f"{name}: {a.url}"
        assert a.url == b.url, where
        assert a.guid == b.guid, where
        assert a.title == b.title, where
        assert a.published == b.published, where
        assert fold(a.summary) == fold(b.summary), where
        assert fold(a.content) == fold(b.content), where
        assert a.lang == b.lang, where


# --------------------------------------------------------------------------------------------------
# Fast path == feedparser


def test_both_paths_agree_on_shared_feeds(shared_data: Path) -> None:
    files = sorted((shared_data / "feeds").glob("*.xml"))
    assert len(files) >= 7
    for path in files:
        content = path.read_bytes()
        fast = parse_feed("shared", content, "https://feeds.example.org/feed.xml")
        slow = parse_feed_feedparser("shared", content, "https://feeds.example.org/feed.xml")
        assert fast.entries, path.name
        assert_same_entries(fast, slow, path.name)


@pytest.mark.parametrize("path", OWN_FEEDS, ids=lambda p: p.name)
def test_both_paths_agree_on_own_fixtures(path: Path) -> None:
    fast = parse_feed("own", path.read_bytes(), FEED_URL)
    slow = parse_feed_feedparser("own", path.read_bytes(), FEED_URL)
    assert fast.entries
    assert_same_entries(fast, slow, path.name)


def test_well_formed_feeds_take_the_fast_path(monkeypatch: pytest.MonkeyPatch, shared_data: Path) -> None:
    def refuse(*args: object) -> Parsed:
        raise AssertionError("feedparser fallback used for a well-formed feed")

    monkeypatch.setattr(parse, "_feedparser_feed", refuse)
    for path in [*sorted((shared_data / "feeds").glob("*.xml")), FEEDS / "rss2_territoires.xml",
                 FEEDS / "atom_collectivites.xml", FEEDS / "rss1_rdf.xml", FEEDS / "rss_html_entities.xml",
                 FEEDS / "rss091_doctype.xml"]:
        assert parse_feed("fast", path.read_bytes(), FEED_URL).entries, path.name


def test_commitstrip_french_dates_are_read(shared_data: Path) -> None:
    parsed = parse_feed("commitstrip", (shared_data / "feeds" / "commitstrip.rss.xml").read_bytes(),
                        "https://www.commitstrip.com/fr/feed/")
    assert [e.published for e in parsed.entries][0] == utc(2022, 9, 13, 16, 41, 30)
    assert all(e.published is not None for e in parsed.entries)
    assert parsed.entries[0].title == "C’est l’histoire d’une conf-call Teams"


# --------------------------------------------------------------------------------------------------
# Fields


def test_rss2_fields() -> None:
    parsed = parse_feed("tn", (FEEDS / "rss2_territoires.xml").read_bytes(), FEED_URL)
    assert parsed.title == "Territoires & Numérique — le fil d’actualité"
    assert parsed.warnings == ("1 entry without an http(s) link skipped",)
    first, second, third, fourth = parsed.entries
    assert first.url.endswith("/guichet-numerique-val-oise-nord/?utm_source=rss&utm_medium=rss")
    assert first.guid == "https://www.territoires-numerique.example/?p=4812"
    assert first.author == "Claire Dumoulin"
    assert first.lang == "fr"
    assert first.published == utc(2025, 2, 3, 9, 0)
    assert first.summary == ("Les 27 communes mutualisent leurs démarches en ligne : état civil, urbanisme et "
                             "inscriptions scolaires.")
    assert "trackView" not in first.content
    assert first.content.split("\n\n")[1] == (
        "Le nouveau guichet regroupe l’état civil, les autorisations d’urbanisme et les inscriptions scolaires."
        "\nIl est accessible depuis chaque site communal.")
    assert "Deux conseillers numériques itinérants\n\nDes permanences en mairie" in first.content
    # relative link resolved against the feed URL; &#146; (a Windows-1252 quote) read as ’
    assert second.url == "https://www.territoires-numerique.example/2025/01/28/cybersecurite-region-formation/"
    assert second.title == "Cybersécurité : la Région forme 300 agents & élus"
    assert second.summary.startswith("Après l’attaque par rançongiciel d’un syndicat")
    assert second.summary.endswith("plan de formation obligatoire.")
    assert second.published == utc(2025, 1, 28, 8, 15)
    # permalink guid used as link; HTML in a CDATA title stripped
    assert third.url == third.guid == "https://www.territoires-numerique.example/2025/01/15/open-data-budgets/"
    assert third.title == "Données ouvertes : Rennes Métropole publie ses budgets"
    assert third.summary == ("Les budgets primitifs depuis 2015 sont disponibles au format CSV.\n\n"
                             "Un tableau de bord accompagne la publication.")
    # "email (Name)" author; a French date without time is midnight in Paris
    assert fourth.author == "Marc Lebrun"
    assert fourth.published == utc(2025, 1, 9, 23, 0)
    assert parsed.last_modified == utc(2025, 2, 3, 9, 0)


def test_atom_fields() -> None:
    parsed = parse_feed("mairie", (FEEDS / "atom_collectivites.xml").read_bytes(),
                        "https://blog.mairie-saint-aubin.example/actualites/atom.xml")
    assert parsed.title == "Mairie de Saint-Aubin — actualités"
    first, second, third = parsed.entries
    assert first.url == "https://blog.mairie-saint-aubin.example/actualites/2025/02/schema-directeur-numerique.html"
    assert first.published == utc(2025, 2, 4, 15, 20)  # published wins over updated
    assert first.author == "Service communication"
    assert first.summary == ("Le conseil a voté à l’unanimité le schéma 2025-2030.\n\n"
                             "Il prévoit la dématérialisation des marchés publics.")
    assert first.content.endswith("la dématérialisation des marchés publics et l’ouverture des données.")
    # entry-level xml:base and xml:lang; xhtml title and content
    assert second.url == "https://blog.mairie-saint-aubin.example/archives/brezhoneg.html"
    assert second.title == "Pennad e brezhoneg : lec’hienn nevez"
    assert second.content == "Al lec’hienn a zo bet troet e brezhoneg.\n\nTrugarez d’an holl."
    assert second.lang == "br"
    # no alternate link: the id is the link; a text title keeps its angle brackets
    assert third.url == third.guid
    assert third.title == "Travaux <rue des Écoles> : déviation"
    assert third.lang == "fr"


def test_rss1_fields() -> None:
    parsed = parse_feed("cher", (FEEDS / "rss1_rdf.xml").read_bytes(), "https://www.departement-du-cher.example/rss")
    assert [e.guid for e in parsed.entries] == [
        "https://www.departement-du-cher.example/actu/colleges-connectes",
        "https://www.departement-du-cher.example/actu/france-services",
    ]
    assert parsed.entries[0].author == "Direction de l'éducation"
    assert parsed.entries[1].published == utc(2024, 10, 20, 22, 0)
    assert all(e.lang == "fr" for e in parsed.entries)


def test_malformed_feed_falls_back_to_feedparser_with_a_warning() -> None:
    parsed = parse_feed("interco", (FEEDS / "rss_malformed.xml").read_bytes(), FEED_URL)
    assert [e.title for e in parsed.entries] == [
        'Appel à projets "Villages du futur" & tiers-lieux', "Budget participatif : 1,2 M€ pour les quartiers"]
    assert parsed.entries[0].summary == "Les candidatures sont ouvertes jusqu'au 15 mars."
    assert any(w.startswith("recovered from malformed XML") for w in parsed.warnings)


def test_undefined_html_entities_are_repaired_on_the_fast_path() -> None:
    parsed = parse_feed("56", (FEEDS / "rss_html_entities.xml").read_bytes(), FEED_URL)
    entry = parsed.entries[0]
    assert entry.title == "Clés USB chiffrées pour les secrétaires de mairie"
    assert entry.summary == "Un kit de sécurité est distribué aux 250 communes adhérentes & aux EPCI."
    assert entry.published == utc(2025, 2, 3, 9, 0)
    assert parsed.warnings == ("HTML entities such as &eacute; are not valid XML; they were converted",)


@pytest.mark.parametrize("lead", ["", "\ufeff", " \n\t"])
def test_characters_xml_forbids_are_dropped_on_the_fast_path(monkeypatch: pytest.MonkeyPatch, lead: str) -> None:
    """C0 controls, U+FFFE and U+FFFF are invalid even as references: a feed carrying them is read on
    the fast path with those characters dropped, as feedparser reads it (its declaration is replaced)."""
    feed = (f'{lead}<?xml version="1.0" encoding="windows-1252"?><rss version="2.0"><channel>'
            "<title>Mairie\x0b de Quimper</title><item><title>Fibre\x1f optique : \ufffeles travaux\uffff</title>"
            "<link>https://www.quimper.example/fibre</link><description>D\x08ébut des travaux à Ergué\x00.</description>"
            "</item></channel></rss>").encode("utf-8")
    monkeypatch.setattr(parse, "_feedparser_feed", lambda *a: pytest.fail("the fast path declined"))
    parsed = parse_feed("quimper", feed, FEED_URL)
    assert parsed.title == "Mairie de Quimper"
    assert [(e.title, e.summary) for e in parsed.entries] == [("Fibre optique : les travaux", "Début des travaux à Ergué.")]
    monkeypatch.undo()
    assert_same_entries(parsed, parse_feed_feedparser("quimper", feed, FEED_URL), lead)


# --------------------------------------------------------------------------------------------------
# Encodings

TITLE = "Élus et agents : l’œuvre commune de la dématérialisation"
SUMMARY = "Les cœurs de métier évoluent : « télé-procédures » et coût maîtrisé, 15 € par agent."


@pytest.mark.parametrize("name", ["rss_cp1252.xml", "rss_cp1252_declared_utf8.xml",
                                  "rss_utf8_declared_latin1.xml", "rss_utf16.xml"])
def test_encodings_and_misdeclarations(name: str) -> None:
    parsed = parse_feed("agglo", (FEEDS / name).read_bytes(), FEED_URL)
    assert parsed.title == "Agglo du Pays d’Aubagne — numérique"
    assert parsed.entries[0].title == TITLE
    assert parsed.entries[0].summary == SUMMARY


@pytest.mark.parametrize(("name", "charset"), [
    ("rss_cp1252.xml", "utf-8"),               # Windows-1252 bytes served as UTF-8
    ("rss_utf8_declared_latin1.xml", "iso-8859-1"),  # UTF-8 bytes served as Latin-1
    ("rss_cp1252.xml", "windows-1252"),
    ("rss_cp1252.xml", "no-such-charset"),     # unknown HTTP charset: the declaration decides
])
def test_http_charset_over_a_real_server(http_server, name: str, charset: str) -> None:
    url = http_server.serve("/flux.xml", (FEEDS / name).read_bytes(),
                            content_type=f"application/rss+xml; charset={charset}")
    response = httpx.get(url)
    parsed = parse_feed("agglo", response.content, url, response.charset_encoding)
    assert parsed.entries[0].title == TITLE
    assert parsed.entries[0].summary == SUMMARY


def test_decode_document_rules() -> None:
    text = "Réunion à la mairie : l’œuvre"
    assert decode_document(codecs_bom("utf-8") + text.encode(), "windows-1252") == text  # BOM first
    mixed = "Réunion ".encode() + "à l’œuvre".encode("cp1252")  # UTF-8 with stray Windows-1252 bytes
    assert decode_document(mixed) == "Réunion à l’œuvre"
    html = b'<html><head><meta charset="windows-1252"></head><body>' + text.encode("cp1252") + b"</body></html>"
    assert text in decode_document(html, None, "html")
    assert decode_document(b"caf\xe9", "iso-8859-15") == "café"
    assert decode_document(b"\x92", "iso-8859-1") == "’"  # Latin-1 is read as its Windows-1252 superset


def codecs_bom(name: str) -> bytes:
    import codecs

    return {"utf-8": codecs.BOM_UTF8}[name]


def test_clean_text_repairs_mojibake_and_keeps_real_accents() -> None:
    assert clean_text("Les Ã©lus et lâ€™Å“uvre communeÂ\xa0: rÃ©union") == "Les élus et l’œuvre commune : réunion"
    legit = "DÉCLARÉ : Ça, c’est l’été « à Dijon » — Øresund, São Paulo, Åsa"
    assert clean_text(legit) == legit
    assert clean_text("a\x00b\u200bc\x07 d\u00ade") == "abc de"
    assert clean_text("e\u0301lu") == "élu"  # NFC
    assert clean_text("  un\n\n\n deux  \n trois ") == "un\n\ndeux\ntrois"


def test_html_to_text() -> None:
    markup = ("<p>Premier&nbsp;paragraphe <b>gras</b></p><script>alert(1)</script><style>p{}</style>"
              "<ul><li>un</li><li>deux</li></ul>texte<br>ligne<table><tr><td>a</td><td>b</td></tr></table>")
    assert html_to_text(markup) == "Premier paragraphe gras\n\nun\n\ndeux\n\ntexte\nligne\n\na b"
    assert html_to_text("&lt;p&gt;échappé deux fois&lt;/p&gt;") == "échappé deux fois"
    assert html_to_text("Tarif &lt; 5 € &amp; plus") == "Tarif < 5 € & plus"
    assert html_to_text("") == html_to_text(None) == ""


# --------------------------------------------------------------------------------------------------
# Dates


@pytest.mark.parametrize(("text", "expected"), [
    ("Tue, 13 Sep 2022 14:41:30 +0000", utc(2022, 9, 13, 14, 41, 30)),
    ("Tue, 13 Sep 2022 14:41:30 GMT", utc(2022, 9, 13, 14, 41, 30)),
    ("Tue, 13 Sep 2022 10:41:30 EDT", utc(2022, 9, 13, 14, 41, 30)),
    ("13 Sep 2022 16:41 +0200", utc(2022, 9, 13, 14, 41)),
    ("2022-09-13T16:41:30+02:00", utc(2022, 9, 13, 14, 41, 30)),
    ("2022-09-13T14:41:30Z", utc(2022, 9, 13, 14, 41, 30)),
    ("2022-09-13T14:41:30.123Z", utc(2022, 9, 13, 14, 41, 30)),
    ("2022-09-13 16:41:30", utc(2022, 9, 13, 14, 41, 30)),      # naive: Paris summer time
    ("2025-01-15 10:00", utc(2025, 1, 15, 9, 0)),               # naive: Paris winter time
    ("2022-09-13", utc(2022, 9, 12, 22, 0)),
    ("mar., 13 sept. 2022 16:41:30 +0000", utc(2022, 9, 13, 16, 41, 30)),
    ("13 septembre 2022", utc(2022, 9, 12, 22, 0)),
    ("lundi 3 février 2025 10:00", utc(2025, 2, 3, 9, 0)),
    ("1er mars 2024", utc(2024, 2, 29, 23, 0)),
    ("Le 5 août 2024 à 14h30", utc(2024, 8, 5, 12, 30)),
    ("jeu. 12 déc. 2024 08:05:00 +0100", utc(2024, 12, 12, 7, 5)),
    ("13/09/2022 16h41", utc(2022, 9, 13, 14, 41)),
    ("31 DÉCEMBRE 2024 23:59 UTC", utc(2024, 12, 31, 23, 59)),
    ("September 13, 2022", utc(2022, 9, 12, 22, 0)),
])
def test_parse_date(text: str, expected: datetime) -> None:
    result = parse_date(text)
    assert result == expected
    assert result.tzinfo is timezone.utc


@pytest.mark.parametrize("text", [None, "", "   ", "demain", "32 janvier 2024", "hier à 10h", "2024-13-45",
                                  "13 brumaire an II", "Tue, 99 Foo 2022"])
def test_unreadable_dates_are_none(text: str | None) -> None:
    assert parse_date(text) is None


def test_parse_date_agrees_with_feedparser_on_standard_formats() -> None:
    from feedparser.datetimes import _parse_date

    samples = ["Sun, 08 Mar 2020 10:32:07 GMT", "Wed, 26 Feb 2025 18:45:21 +0100", "2021-03-11T10:40:00+01:00",
               "2022-09-17T09:31:00Z", "Fri, 19 Mar 2021 13:18:13 GMT", "2003-12-13T18:30:02.25+01:00",
               "Thu, 01 Jan 2004 19:48:21 -0500", "2019-12-14T11:30:00+01:00"]
    for text in samples:
        theirs = _parse_date(text)
        assert parse_date(text) == datetime(*theirs[:6], tzinfo=timezone.utc), text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_parse_date_never_raises(text: str) -> None:
    result = parse_date(text)
    assert result is None or result.tzinfo is timezone.utc


# --------------------------------------------------------------------------------------------------
# Not feeds, safety, limits


def test_html_page_instead_of_a_feed_names_the_real_feed() -> None:
    page = (b'<!DOCTYPE html><html><head><link rel="alternate" type="application/rss+xml" href="/actualites/rss">'
            b"</head><body>Accueil</body></html>")
    with pytest.raises(ParseError) as info:
        parse_feed("mairie", page, "https://www.mairie.example/actualites/")
    assert "server sent an HTML page" in str(info.value)
    assert info.value.hint == "the page links its feed at https://www.mairie.example/actualites/rss: use that URL"
    assert "https://www.mairie.example/actualites/" in str(info.value)


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty"),
    (b"   \n", "empty"),
    (b'{"version": "https://jsonfeed.org/version/1.1"}', "JSON"),
    ((FEEDS / "sitemap_urlset.xml").read_bytes(), "sitemap"),
    (b"<?xml version='1.0'?><catalogue><livre/></catalogue>", "no RSS or Atom"),
    (b"Service temporairement indisponible", "not XML"),
])
def test_not_a_feed(content: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message) as info:
        parse_feed("x", content, FEED_URL)
    assert info.value.hint


def test_feedparser_is_never_handed_a_file_name(tmp_path: Path) -> None:
    secret = tmp_path / "secret.xml"
    secret.write_bytes((FEEDS / "rss2_territoires.xml").read_bytes())
    with pytest.raises(ParseError):
        parse._feedparser_feed("x", str(secret).encode(), FEED_URL, [])


def test_feed_entities_are_never_expanded_nor_read_from_disk(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("MOT-DE-PASSE-SECRET")
    lol = "".join(f'<!ENTITY l{i + 1} "{"&l%d;" % i * 10}">' for i in range(8))
    doc = (f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY l0 "lol">{lol}'
           f'<!ENTITY xxe SYSTEM "file://{secret}">]><rss version="2.0"><channel><title>t</title>'
           f"<item><title>&l8; &xxe;</title><link>https://www.mairie.example/a</link></item></channel></rss>")
    parsed = parse_feed("x", doc.encode(), FEED_URL)
    assert [e.url for e in parsed.entries] == ["https://www.mairie.example/a"]
    text = repr(parsed)
    assert "MOT-DE-PASSE-SECRET" not in text
    assert text.count("lol") < 100
    assert "MOT-DE-PASSE-SECRET" not in parse_feed_feedparser("x", doc.encode(), FEED_URL).entries[0].title


def _big_feed(items: int, malformed: bool = False) -> bytes:
    body = "".join(f"<item><title>Article {i}</title><link>https://www.mairie.example/a/{i}</link></item>"
                   for i in range(items))
    broken = "<title>Mairie & co</title>" if malformed else "<title>Mairie</title>"
    return f'<?xml version="1.0"?><rss version="2.0"><channel>{broken}{body}</channel></rss>'.encode()


@pytest.mark.parametrize("malformed", [False, True], ids=["fast", "feedparser"])
def test_entries_per_document_are_capped(malformed: bool) -> None:
    parsed = parse_feed("big", _big_feed(MAX_ENTRIES + 500, malformed), FEED_URL)
    assert len(parsed.entries) == MAX_ENTRIES
    assert parsed.entries[-1].title == f"Article {MAX_ENTRIES - 1}"  # the first ones, in document order
    assert f"only the first {MAX_ENTRIES} of {MAX_ENTRIES + 500} entries were read" in parsed.warnings


@pytest.mark.parametrize("kind", ["atom", "rdf"])
def test_entries_past_the_cap_are_counted_in_every_format(kind: str) -> None:
    """The fast path drops entries past the cap while parsing; the count and the entries stay feedparser's."""
    total = MAX_ENTRIES + 300
    if kind == "atom":
        body = "".join(f'<entry><title>Article {i}</title><link href="/a/{i}"/><id>urn:mairie:{i}</id>'
                       f"<updated>2025-03-01T10:00:00Z</updated></entry>" for i in range(total))
        doc = f'<feed xmlns="http://www.w3.org/2005/Atom"><title>Mairie</title>{body}</feed>'
    else:
        body = "".join(f"<item><title>Article {i}</title><link>https://www.mairie.example/a/{i}</link></item>"
                       for i in range(total))
        doc = (f'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/">'
               f"<channel><title>Mairie</title></channel>{body}</rdf:RDF>")
    fast = parse_feed("big", doc.encode(), FEED_URL)
    assert f"only the first {MAX_ENTRIES} of {total} entries were read" in fast.warnings
    assert [e.title for e in fast.entries] == [f"Article {i}" for i in range(MAX_ENTRIES)]
    assert_same_entries(fast, parse_feed_feedparser("big", doc.encode(), FEED_URL), kind)


# --------------------------------------------------------------------------------------------------
# Listing pages


def test_listing_links() -> None:
    parsed = parse_listing("ccml", (PAGES / "listing_actualites.html").read_bytes(),
                           "https://www.cc-monts-lyonnais.example/fr/actualites/", "article.card h3")
    assert parsed.title == "Actualités — Communauté de communes des Monts du Lyonnais"
    assert [(e.url, e.title) for e in parsed.entries] == [
        ("https://www.cc-monts-lyonnais.example/fr/actualites/tiers-lieu-numerique-inauguration.html",
         "Le tiers-lieu numérique de Chazelles est inauguré"),
        ("https://www.cc-monts-lyonnais.example/fr/actualites/collecte-dechets-application.html?utm_source=site",
         "Collecte des déchets : une application pour les horaires"),
        ("https://www.cc-monts-lyonnais.example/fr/actualites/visio-conseil-communautaire.html",
         "Conseil communautaire en visioconférence"),
    ]
    assert all(e.lang == "fr" and e.source_id == "ccml" for e in parsed.entries)


def test_listing_selector_on_links_directly() -> None:
    parsed = parse_listing("ccml", (PAGES / "listing_actualites.html").read_bytes(),
                           "https://www.cc-monts-lyonnais.example/fr/actualites/", "nav a")
    assert [e.url for e in parsed.entries] == ["https://www.cc-monts-lyonnais.example/",
                                              "https://www.cc-monts-lyonnais.example/fr/actualites/"]


@pytest.mark.parametrize(("selector", "message"), [
    (".does-not-exist a", "matches nothing"),
    ("article.card h3 >>> a", "invalid link_selector"),
    ("footer", "matches no http"),
])
def test_listing_selector_problems(selector: str, message: str) -> None:
    page = (PAGES / "listing_actualites.html").read_bytes().replace(b'href="mentions-legales.html"', b'href="#"')
    with pytest.raises(ParseError, match=message) as info:
        parse_listing("ccml", page, "https://www.cc-monts-lyonnais.example/fr/", selector)
    assert info.value.hint


# --------------------------------------------------------------------------------------------------
# Sitemaps


def test_google_news_sitemap() -> None:
    parsed = parse_sitemap("gazette", (FEEDS / "sitemap_news.xml").read_bytes(),
                           "https://www.gazette-territoriale.example/sitemap-news.xml")
    assert [(e.url.rsplit("/", 1)[1], e.title, e.published, e.lang) for e in parsed.entries] == [
        ("budget-numerique-des-departements", "Budget numérique des départements : +12 % en 2025",
         utc(2025, 2, 5, 8, 30), "fr"),
        ("identite-numerique-mairies", "L’identité numérique arrive dans les mairies", utc(2025, 2, 3, 23, 0), "fr"),
    ]
    assert parsed.last_modified == utc(2025, 2, 5, 8, 30)


def test_sitemap_index_lists_children() -> None:
    parsed = parse_sitemap("region", (FEEDS / "sitemap_index.xml").read_bytes(),
                           "https://www.region-occitanie-numerique.example/sitemap.xml")
    assert parsed.entries == ()
    assert parsed.children == (
        "https://www.region-occitanie-numerique.example/sitemap-actualites-2025.xml",
        "https://www.region-occitanie-numerique.example/sitemap-actualites-2024.xml.gz",
    )


def test_gzip_sitemap_and_lastmod() -> None:
    parsed = parse_sitemap("lunel", gzip.compress((FEEDS / "sitemap_urlset.xml").read_bytes()),
                           "https://www.ville-de-lunel.example/sitemap.xml.gz")
    assert [e.published for e in parsed.entries] == [utc(2025, 2, 2, 23, 0), utc(2025, 1, 29, 8, 0), None]


def test_text_sitemap() -> None:
    parsed = parse_sitemap("lunel", b"https://www.ville-de-lunel.example/a\n\nhttps://www.ville-de-lunel.example/b\n"
                           b"ftp://x\n", "https://www.ville-de-lunel.example/sitemap.txt")
    assert [e.url for e in parsed.entries] == ["https://www.ville-de-lunel.example/a",
                                               "https://www.ville-de-lunel.example/b"]


def test_big_sitemap_keeps_the_newest_entries() -> None:
    day = datetime(2015, 1, 1).toordinal()
    urls = "".join(f"<url><loc>https://www.ville.example/a/{i}</loc>"
                   f"<lastmod>{datetime.fromordinal(day + i):%Y-%m-%d}</lastmod></url>" for i in range(3000))
    parsed = parse_sitemap("ville", f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>'
                           .encode(), "https://www.ville.example/sitemap.xml")
    assert len(parsed.entries) == MAX_ENTRIES
    assert parsed.entries[-1].url == "https://www.ville.example/a/2999"
    assert [int(e.url.rsplit("/", 1)[1]) for e in parsed.entries] == list(range(2000, 3000))
    assert parsed.warnings


def test_incremental_sitemap_reading_matches_the_full_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a sitemap as it is parsed (each <url> dropped once read) keeps what a full tree walk keeps:
    duplicates, nested and wrapped <url>s, same-day ties past the cap, the index's first children."""
    rows = []
    for i in range(MAX_ENTRIES + 400):
        day = f"2025-{1 + i % 12:02d}-{1 + i % 3:02d}"
        rows.append(f"<url><loc>https://www.ville.example/a/{i % 1300}</loc><lastmod>{day}</lastmod></url>")
        if i % 97 == 0:
            rows.append(f"<url><loc>https://www.ville.example/b/{i}</loc><url><loc>https://www.ville.example/c/{i}"
                        f"</loc><lastmod>2025-12-31</lastmod></url></url><divers><url><loc>/d/{i}</loc></url></divers>")
    urlset = f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{"".join(rows)}</urlset>'.encode()
    locs = "".join(f"<sitemap><loc>https://www.ville.example/s{i % 1100}.xml</loc></sitemap>" for i in range(1500))
    index = f"<sitemapindex><loc>https://www.ville.example/a.xml<loc>/b.xml</loc></loc>{locs}</sitemapindex>".encode()
    url = "https://www.ville.example/sitemap.xml"
    streamed = [parse_sitemap("ville", doc, url) for doc in (urlset, index)]

    def unreadable(content: bytes, url: str):
        raise etree.XMLSyntaxError("forced", 0, 0, 0)

    monkeypatch.setattr(parse, "_pull_sitemap", unreadable)  # the full parse and tree walk the fallback uses
    assert [parse_sitemap("ville", doc, url) for doc in (urlset, index)] == streamed
    assert len(streamed[0].entries) == MAX_ENTRIES and len(streamed[1].children) == 1000
    assert streamed[0].warnings and streamed[1].warnings


def test_big_sitemap_ties_keep_the_earlier_entries() -> None:
    urls = "".join(f"<url><loc>https://www.ville.example/a/{i}</loc><lastmod>2025-01-0{1 + i % 2}</lastmod></url>"
                   for i in range(1500))
    parsed = parse_sitemap("ville", f"<urlset>{urls}</urlset>".encode(), "https://www.ville.example/sitemap.xml")
    kept = [int(e.url.rsplit("/", 1)[1]) for e in parsed.entries]
    assert kept == sorted(set(range(1, 1500, 2)) | set(range(0, 500, 2)))  # 750 newest, then the first 250 others


def test_sitemap_refuses_entities(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("MOT-DE-PASSE-SECRET")
    xxe = (f'<?xml version="1.0"?><!DOCTYPE urlset [<!ENTITY x SYSTEM "file://{secret}">]>'
           '<urlset><url><loc>https://www.ville.example/&x;</loc></url></urlset>').encode()
    lol = "".join(f'<!ENTITY l{i + 1} "{"&l%d;" % i * 10}">' for i in range(9))
    laughs = (f'<?xml version="1.0"?><!DOCTYPE urlset [<!ENTITY l0 "lol">{lol}]>'
              "<urlset><url><loc>https://www.ville.example/&l9;</loc></url></urlset>").encode()
    for doc in (xxe, laughs, gzip.compress(xxe)):
        with pytest.raises(ParseError, match="declares XML entities") as info:
            parse_sitemap("ville", doc, "https://www.ville.example/sitemap.xml")
        assert "MOT-DE-PASSE-SECRET" not in str(info.value)


def test_gzip_bomb_is_cut() -> None:
    bomb = gzip.compress(b"<urlset>" + b" " * (parse.MAX_SITEMAP_BYTES + 10) + b"</urlset>", compresslevel=9)
    with pytest.raises(ParseError, match=f"larger than {parse.MAX_SITEMAP_BYTES:,} bytes"):
        parse_sitemap("ville", bomb, "https://www.ville.example/sitemap.xml.gz")


@pytest.mark.parametrize(("content", "message"), [
    (b"<!DOCTYPE html><html><body>Plan du site</body></html>", "HTML page"),
    ((FEEDS / "rss1_rdf.xml").read_bytes(), "this is a feed"),
    (b"<?xml version='1.0'?><urlset><url><loc>https://x.example/a</loc>", "malformed"),
    (b"", "empty sitemap"),
])
def test_not_a_sitemap(content: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_sitemap("ville", content, "https://www.ville.example/sitemap.xml")


# --------------------------------------------------------------------------------------------------
# Dispatch


def test_parse_document_dispatch_and_runs_in_a_process_pool() -> None:
    jobs = [
        ("tn", "feed", (FEEDS / "rss2_territoires.xml").read_bytes(), FEED_URL, None, None),
        ("ccml", "html", (PAGES / "listing_actualites.html").read_bytes(),
         "https://www.cc-monts-lyonnais.example/fr/actualites/", "utf-8", "article.card h3"),
        ("gazette", "sitemap", (FEEDS / "sitemap_news.xml").read_bytes(),
         "https://www.gazette-territoriale.example/sitemap.xml", None, None),
    ]
    local = [parse_document(*job) for job in jobs]
    with ProcessPoolExecutor(max_workers=1) as pool:
        remote = list(pool.map(parse_document, *zip(*jobs)))
    assert remote == local
    assert [len(p.entries) for p in local] == [4, 3, 2]


def test_parse_document_refuses_unknown_types() -> None:
    with pytest.raises(ParseError, match="unknown source type"):
        parse_document("x", "podcast", b"<rss/>", FEED_URL)
    with pytest.raises(ParseError, match="needs a link_selector"):
        parse_document("x", "html", b"<html/>", FEED_URL)
