"""Extract stage: page text and metadata, and the merge of an entry with its page into an Article."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from veille import dedupe
from veille.errors import ExtractError
from veille.extract import build_article, build_articles, extract_page, lead
from veille.types import Entry, Extracted

PAGES = Path(__file__).parent / "fixtures" / "pages"
ARTICLE_URL = "https://www.echo-du-val.example/val-de-brenne/cyberattaque-mairie-12345.html?utm_source=rss&xtor=RSS-3"
FETCHED = datetime(2025, 2, 5, 12, 0, tzinfo=timezone.utc)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def mairie() -> Extracted:
    return extract_page((PAGES / "article_mairie.html").read_bytes(), ARTICLE_URL)


# --------------------------------------------------------------------------------------------------
# extract_page


def test_article_text_without_boilerplate(mairie: Extracted) -> None:
    paragraphs = mairie.text.split("\n\n")
    assert paragraphs[0].startswith("Les services municipaux de Val-de-Brenne fonctionnent au ralenti")
    assert "Des sauvegardes intactes" in paragraphs
    assert paragraphs[-1].endswith("aucune pénalité de retard ne sera appliquée.")
    for noise in ("cookies", "Tout accepter", "S’abonner", "Encore une commune", "Mentions légales",
                  "Partager", "Newsletter", "À lire aussi", "dataLayer"):
        assert noise not in mairie.text, noise


def test_article_metadata(mairie: Extracted) -> None:
    assert mairie.title == "Val-de-Brenne : la mairie victime d’une cyberattaque"
    assert mairie.author == "Nadia Ferreira"
    assert mairie.date == utc(2025, 2, 3, 6, 45)  # the day from trafilatura, the time from the meta tag
    assert mairie.lang == "fr"
    assert mairie.description == "Les services municipaux fonctionnent au ralenti après une attaque par rançongiciel."
    assert mairie.canonical_url == "https://www.echo-du-val.example/val-de-brenne/cyberattaque-mairie-12345.html"
    assert mairie.sitename == "L’Écho du Val"
    assert mairie.url == ARTICLE_URL


@pytest.mark.parametrize("charset", ["utf-8", "iso-8859-1", None])
def test_page_encoding_over_a_real_server(http_server, charset: str | None) -> None:
    """Windows-1252 bytes with a <meta> saying so, whatever (or whether) the HTTP header says."""
    content_type = "text/html" + (f"; charset={charset}" if charset else "")
    url = http_server.serve("/culture/expo.html", (PAGES / "article_cp1252.html").read_bytes(),
                            content_type=content_type)
    response = httpx.get(url)
    extracted = extract_page(response.content, str(response.url), response.charset_encoding)
    assert extracted.title == "Œuvres d’art numériques à la médiathèque"
    assert "l’évolution du cœur de ville" in extracted.text
    assert "exposition d’œuvres numériques" in extracted.text
    assert extracted.date is None  # htmldate's January 1st from "Mairie — 2025" is not trusted


def test_paywall_page_keeps_metadata() -> None:
    extracted = extract_page((PAGES / "article_paywall.html").read_bytes(),
                             "https://www.courrier-communes.example/fibre/maires-regulateur-778.html")
    assert extracted.description == "Les élus dénoncent les malfaçons sur le réseau public de fibre optique."
    assert len(extracted.text) < 300
    assert extracted.canonical_url == "https://www.courrier-communes.example/"


@pytest.mark.parametrize(("content", "message"), [
    (b"%PDF-1.7\n...", "PDF"),
    (b"\x89PNG\r\n\x1a\n....", "PNG"),
    (b"", "empty page"),
    (b"   \n\t", "empty page"),
])
def test_not_a_page(content: bytes, message: str) -> None:
    with pytest.raises(ExtractError, match=message) as info:
        extract_page(content, "https://www.mairie.example/deliberation.pdf")
    assert "https://www.mairie.example/deliberation.pdf" in str(info.value)
    assert info.value.hint


def test_extract_page_runs_in_a_process_pool(mairie: Extracted) -> None:
    with ProcessPoolExecutor(max_workers=1) as pool:
        remote = pool.submit(extract_page, (PAGES / "article_mairie.html").read_bytes(), ARTICLE_URL).result()
    assert remote == mairie


def test_extraction_quality_on_the_developer_set(shared_data: Path) -> None:
    """Pooled segment F1 on trafilatura-fr: trafilatura's defaults score 0.943; do not do worse."""
    tp = fn = fp = 0
    for html in sorted((shared_data / "articles" / "trafilatura-fr").glob("*.html")):
        truth = json.loads(html.with_suffix(".json").read_text(encoding="utf-8"))
        text = " ".join(extract_page(html.read_bytes(), truth["url"]).text.split())
        tp += sum(" ".join(s.split()) in text for s in truth["with"])
        fn += sum(" ".join(s.split()) not in text for s in truth["with"])
        fp += sum(" ".join(s.split()) in text for s in truth["without"])
    f1 = 2 * tp / (2 * tp + fn + fp)
    assert f1 >= 0.943


# --------------------------------------------------------------------------------------------------
# build_article


def entry(**kwargs: object) -> Entry:
    base = dict(source_id="echo", url=ARTICLE_URL, guid="echo-12345",
                title="Cyberattaque à la mairie de Val-de-Brenne", summary="Les services tournent au ralenti.",
                published=utc(2025, 2, 3, 7, 0), lang=None)
    return Entry(**{**base, **kwargs})  # type: ignore[arg-type]


def test_entry_carries_its_canonical_url() -> None:
    """Worked out where the entry is made (a worker), kept through pickling, redone by `replace`."""
    import pickle
    from dataclasses import replace

    made = entry(url="HTTP://127.0.0.1:80/actu/fibre?utm_source=rss&page=2")
    assert made.canonical_url == dedupe.canonical_url(made.url) == "http://127.0.0.1/actu/fibre?page=2"
    assert pickle.loads(pickle.dumps(made)).canonical_url == made.canonical_url
    assert replace(made, url="http://127.0.0.1/actu/autre").canonical_url == "http://127.0.0.1/actu/autre"
    assert build_article(made, None, utc(2025, 2, 4, 7, 0)).canonical_url == made.canonical_url


def test_page_text_wins_when_longer(mairie: Extracted) -> None:
    article = build_article(entry(), mairie, FETCHED)
    assert article.text_source == "page"
    assert article.text == mairie.text
    assert article.title == "Cyberattaque à la mairie de Val-de-Brenne"  # the feed's title wins
    assert article.summary == "Les services tournent au ralenti."
    assert article.published_at == utc(2025, 2, 3, 7, 0)
    assert article.date_is_fallback is False
    assert article.lang == "fr"
    assert article.author == "Nadia Ferreira"
    assert article.guid == "echo-12345"
    assert article.simhash == dedupe.simhash(mairie.text) != 0
    assert article.fetched_at == FETCHED


def test_build_articles_is_build_article_of_each(mairie: Extracted) -> None:
    """The batch a worker builds (SimHashes computed together) equals building one article at a time."""
    final = "https://www.echo-du-val.example/val-de-brenne/cyberattaque-mairie-12345.html"
    items = [(entry(), mairie, final), (entry(content="", summary="Résumé du flux."), None, None),
             (entry(guid="echo-2", content=mairie.text.replace("rançongiciel", "logiciel")), None, None),
             (entry(title="", content=""), mairie, None)]
    batch = build_articles(items, FETCHED)
    assert batch == [build_article(e, x, FETCHED, u) for e, x, u in items]
    assert [a.simhash != 0 for a in batch] == [True, False, True, True]
    assert build_articles([], FETCHED) == []


def test_urls_and_canonical(mairie: Extracted) -> None:
    final = "https://www.echo-du-val.example/val-de-brenne/cyberattaque-mairie-12345.html?utm_source=rss#top"
    article = build_article(entry(url="https://feeds.echo-du-val.example/~r/une/~3/abc"), mairie, FETCHED, final)
    assert article.canonical_url == "https://www.echo-du-val.example/val-de-brenne/cyberattaque-mairie-12345.html"
    assert article.url == "https://feeds.echo-du-val.example/~r/une/~3/abc"  # the link as published
    assert article.urls[0] == article.canonical_url
    assert "https://feeds.echo-du-val.example/~r/une/~3/abc" in article.urls
    assert final in article.urls
    assert len(article.urls) == len(set(article.urls))


def test_feed_text_wins_over_a_paywall_teaser() -> None:
    teaser = extract_page((PAGES / "article_paywall.html").read_bytes(),
                          "https://www.courrier-communes.example/fibre/maires-regulateur-778.html")
    full = ("Câbles arrachés, armoires de rue laissées ouvertes, abonnés débranchés par erreur : les maires de "
            "plusieurs communes rurales du Lot-et-Brenne ont écrit au régulateur des télécommunications pour "
            "dénoncer les malfaçons qui se multiplient sur le réseau de fibre optique.\n\nIls réclament des "
            "sanctions contre les opérateurs commerciaux et leurs sous-traitants.")
    item = entry(url="https://www.courrier-communes.example/fibre/maires-regulateur-778.html", summary="",
                 content=full, title="")
    article = build_article(item, teaser, FETCHED)
    assert article.text_source == "feed"
    assert article.text == full
    assert article.title == "Fibre : les maires du Lot-et-Brenne saisissent le régulateur"
    assert article.summary == "Les élus dénoncent les malfaçons sur le réseau public de fibre optique."
    # a canonical pointing at the home page would merge every article of the site: ignored
    assert article.canonical_url == "https://www.courrier-communes.example/fibre/maires-regulateur-778.html"


def test_failed_extraction_keeps_the_feed() -> None:
    article = build_article(entry(content="", summary="Résumé du flux."), None, FETCHED)
    assert article.text_source == "feed"
    assert article.text == article.summary == "Résumé du flux."
    assert article.simhash == 0  # too short to cluster


def test_title_line_is_not_repeated_in_the_text() -> None:
    extracted = Extracted(url=ARTICLE_URL, title="Le titre de la page",
                          text="Le titre de la page\n\nPremier paragraphe du texte.\n\nSecond paragraphe.")
    article = build_article(entry(title="Le titre de la page", summary=""), extracted, FETCHED)
    assert article.text == "Premier paragraphe du texte.\n\nSecond paragraphe."
    assert article.summary == "Premier paragraphe du texte."


@pytest.mark.parametrize(("published", "page_date", "expected", "fallback"), [
    (utc(2025, 2, 1, 8), utc(2025, 1, 31, 8), utc(2025, 2, 1, 8), False),   # the feed's date wins
    (None, utc(2025, 1, 31, 8), utc(2025, 1, 31, 8), False),                # else the page's
    (None, None, FETCHED, True),                                            # else the fetch time
    (FETCHED + timedelta(days=30), utc(2025, 1, 31, 8), utc(2025, 1, 31, 8), False),  # future: not trusted
    (FETCHED + timedelta(days=30), None, FETCHED, True),
    (FETCHED + timedelta(hours=3), None, FETCHED + timedelta(hours=3), False),  # clock skew is tolerated
])
def test_publication_date(published, page_date, expected, fallback) -> None:
    extracted = Extracted(url=ARTICLE_URL, date=page_date, text="")
    article = build_article(entry(published=published), extracted, FETCHED)
    assert article.published_at == expected
    assert article.date_is_fallback is fallback


def test_summary_fallbacks() -> None:
    text = ("La commune a voté son budget. Il progresse de 4 % par rapport à l’an dernier. "
            "Les investissements numériques doublent.\n\nSecond paragraphe.")
    described = Extracted(url=ARTICLE_URL, description="Description de la page.", text=text)
    assert build_article(entry(summary=""), described, FETCHED).summary == "Description de la page."
    bare = Extracted(url=ARTICLE_URL, text=text)
    assert build_article(entry(summary=""), bare, FETCHED).summary == text.split("\n\n")[0]


def test_strings_are_cleaned() -> None:
    item = entry(title="Re\u0301union\x07 du  conseil\n municipal", author=" Jean\x00 Dupont ",
                 summary="Ordre du jour\u200b : budget.")
    article = build_article(item, None, FETCHED)
    assert article.title == "Réunion du conseil municipal"
    assert article.author == "Jean Dupont"
    assert article.summary == "Ordre du jour : budget."


def test_lead() -> None:
    text = "Première phrase. Deuxième phrase un peu plus longue. Troisième phrase.\n\nAutre paragraphe."
    assert lead(text, 40) == "Première phrase."
    assert lead(text, 60) == "Première phrase. Deuxième phrase un peu plus longue."
    assert lead(text) == "Première phrase. Deuxième phrase un peu plus longue. Troisième phrase."
    long_sentence = "mot " * 200
    cut = lead(long_sentence, 50)
    assert cut.endswith("…") and len(cut) <= 51
    assert lead("") == ""


def test_a_short_page_text_does_not_replace_the_feed() -> None:
    cookie_wall = Extracted(url=ARTICLE_URL, text="Nous utilisons des cookies pour mesurer l’audience. Accepter ?")
    article = build_article(entry(summary="Le conseil communautaire a adopté hier soir son budget."), cookie_wall,
                            FETCHED)
    assert article.text_source == "feed"
    alone = build_article(entry(summary=""), cookie_wall, FETCHED)  # nothing better: keep what there is
    assert alone.text_source == "page"


@pytest.mark.parametrize(("canonical", "page", "kept"), [
    ("https://www.ville.example/", "https://www.ville.example/actu/budget", False),
    ("https://www.ville.example/?p=812", "https://www.ville.example/actu/budget", True),
    ("https://www.ville.example/actu/budget-2025", "https://www.ville.example/actu/budget?amp=1", True),
    ("https://www.ville.example/", "https://www.ville.example/", True),
    ("https://presse.example/agence/budget", "https://www.ville.example/actu/budget", True),
])
def test_canonical_plausibility(canonical: str, page: str, kept: bool) -> None:
    extracted = Extracted(url=page, canonical_url=canonical, text="")
    article = build_article(entry(url=page), extracted, FETCHED)
    assert article.canonical_url == dedupe.canonical_url(canonical if kept else page)


def test_xhtml_page_with_an_xml_declaration() -> None:
    body = "".join(f"<p>Le conseil municipal de Saint-Étienne a adopté la délibération n° {i} sur la "
                   "transmission électronique des actes au contrôle de légalité.</p>" for i in range(6))
    page = ('<?xml version="1.0" encoding="iso-8859-1"?>\n<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="fr">'
            f"<head><title>Délibérations</title></head><body><div id='contenu'><h1>Délibérations</h1>{body}</div>"
            "</body></html>")
    extracted = extract_page(page.encode("latin-1"), "https://www.saint-etienne.example/deliberations")
    assert extracted.lang == "fr"
    assert "délibération n° 5 sur la transmission électronique" in extracted.text
