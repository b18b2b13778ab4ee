"""The weekly digest: ISO weeks in Paris, French dates, summaries within excerpt policies, sections,
stories, ranking, caps, the archive folder, and hostile feed content."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from veille.digest import (
    build_digest,
    clean_text,
    cut_on_word,
    digest_view,
    effective_policy,
    french_date,
    french_range,
    iso_week,
    licence_allows_reuse,
    member_digest,
    previous_week,
    resolve_week,
    safe_url,
    split_sentences,
    summarize,
    week_bounds,
    write_digest,
)
from veille.types import Source

from .digestdata import BASE, SOURCES, TOPICS, WEEK, Doc, add_members, populate

UTC = timezone.utc


@pytest.fixture
def dsettings(settings, tmp_path):
    return settings.replace(digests_dir=str(tmp_path / "digests"), public_url=f"{BASE}/veille")


@pytest.fixture
def week(store):
    populate(store)
    return store


# -- weeks and dates --------------------------------------------------------------------------------


def test_iso_week_is_read_in_paris_time():
    assert iso_week(datetime(2026, 11, 29, 22, 30, tzinfo=UTC)) == "2026-W48"  # Sunday 23:30 in Paris
    assert iso_week(datetime(2026, 11, 29, 23, 30, tzinfo=UTC)) == "2026-W49"  # Monday 00:30 in Paris
    assert iso_week(datetime(2027, 1, 1, 12, tzinfo=UTC)) == "2026-W53"
    with pytest.raises(ValueError):
        iso_week(datetime(2026, 11, 24))


def test_week_bounds_follow_daylight_saving_time():
    assert week_bounds("2026-W48") == (datetime(2026, 11, 22, 23, tzinfo=UTC), datetime(2026, 11, 29, 23, tzinfo=UTC))
    # summer time starts on Sunday 29 March 2026: the week ends at 22:00 UTC
    assert week_bounds("2026-W13") == (datetime(2026, 3, 22, 23, tzinfo=UTC), datetime(2026, 3, 29, 22, tzinfo=UTC))


@pytest.mark.parametrize("bad", ["2026-48", "2026-W5", "2027-W53", "2026-W00", "semaine 48", ""])
def test_invalid_weeks_are_refused_with_the_expected_form(bad):
    with pytest.raises(ValueError, match="2026-W48|has no week"):
        resolve_week(bad) if bad else week_bounds(bad)


def test_previous_week_is_the_last_complete_week_on_monday_morning():
    monday_0730_paris = datetime(2026, 11, 30, 6, 30, tzinfo=UTC)
    assert previous_week(monday_0730_paris) == "2026-W48"
    assert resolve_week("previous", monday_0730_paris) == "2026-W48"
    assert resolve_week(None, monday_0730_paris) == "2026-W49"
    assert resolve_week("2026-W07") == "2026-W07"


def test_french_dates_do_not_depend_on_the_locale():
    assert french_date(date(2026, 11, 24)) == "mardi 24 novembre 2026"
    assert french_date(date(2026, 12, 1)) == "mardi 1er décembre 2026"
    assert french_date(datetime(2026, 11, 29, 23, 30, tzinfo=UTC)) == "lundi 30 novembre 2026"
    assert french_range(date(2026, 11, 23), date(2026, 11, 29)) == "23–29 novembre 2026"
    assert french_range(date(2026, 11, 30), date(2026, 12, 6)) == "30 novembre – 6 décembre 2026"
    assert french_range(date(2026, 12, 28), date(2027, 1, 3)) == "28 décembre 2026 – 3 janvier 2027"


# -- untrusted text ---------------------------------------------------------------------------------


def test_clean_text_removes_markup_controls_and_bidi_overrides():
    hostile = ("<script>alert(1)</script>Budget <b>vert</b>\u202e gnp.exe\u202c <img src=x onerror=alert(2)>"
               "\r\nBcc: victime@example.org &amp; co")
    cleaned = clean_text(hostile)
    assert cleaned == "Budget vert gnp.exe Bcc: victime@example.org & co"
    assert clean_text("taux &lt; 5 % et R&amp;D") == "taux < 5 % et R&D"


def test_double_escaped_markup_cannot_come_back():
    assert "<script" not in clean_text("Titre &amp;lt;script&amp;gt;alert(1)&amp;lt;/script&amp;gt;")


@pytest.mark.parametrize("url, ok", [
    ("https://www.lagazettedescommunes.com/article/1", True),
    ("http://127.0.0.1:9/a?b=1&c=2", True),
    ("javascript:alert(1)", False),
    ("JaVaScRiPt:alert(1)", False),
    ("data:text/html;base64,PHNjcmlwdD4=", False),
    ("//evil.example/x", False),
    ('https://a.fr/x" onmouseover="alert(1)', False),
    ("https://a.fr/\u202ecod.exe", False),
    ("", False),
])
def test_only_plain_http_links_pass(url, ok):
    assert (safe_url(url) == url) is ok


# -- summaries --------------------------------------------------------------------------------------


def test_sentences_respect_french_abbreviations():
    text = "M. Dupont, maire de Saint-Vallier, présente le budget. Mme Roux vote contre, etc. et s'abstient. Fin."
    assert split_sentences(text) == [
        "M. Dupont, maire de Saint-Vallier, présente le budget.", "Mme Roux vote contre, etc. et s'abstient.", "Fin."]


def test_summary_keeps_one_to_three_whole_sentences_within_300_characters():
    lead = ("La communauté de communes du Pays de Lunel lance un schéma directeur du numérique responsable. "
            "Le projet, doté de 1,2 million d'euros, mutualise les serveurs des quatorze communes. "
            "Les élus visent une baisse de 30 % de la consommation électrique d'ici 2028. "
            "Une quatrième phrase ne doit jamais apparaître.")
    summary = summarize(lead, "", "short")
    assert summary.endswith("d'ici 2028.")
    assert "quatrième" not in summary and len(summary) <= 300


def test_summary_cuts_a_long_sentence_on_a_word():
    sentence = "Le conseil " + " ".join(["communautaire délibère longuement"] * 20) + "."
    summary = summarize(sentence, "", "short")
    assert len(summary) <= 300 and summary.endswith("…")
    assert summary[:-1].split()[-1] in {"communautaire", "délibère", "longuement"}


def test_summary_drops_publisher_boilerplate():
    summary = summarize(
        "Crédit photo : Mairie de Tulle\n\nLa ville de Tulle ouvre un tiers-lieu numérique place Gambetta. "
        "Lire la suite",
        "", "short")
    assert summary == "La ville de Tulle ouvre un tiers-lieu numérique place Gambetta."
    assert summarize("Cet article est réservé aux abonnés. Abonnez-vous pour lire la suite.", "", "short") == ""
    assert summarize("Partager sur Facebook", "Le Grand Vallon chiffre le coût de la crise à 2 millions d'euros.",
                     "short") == "Le Grand Vallon chiffre le coût de la crise à 2 millions d'euros."


def test_a_truncated_description_gives_way_to_the_text():
    text = ("Le département de la Manche équipe ses collèges de cinq cents tablettes. "
            "Les enseignants ont été formés pendant l'été.")
    summary = summarize("Le département de la Manche équipe ses collèges de cinq [...]", text, "short")
    assert summary == text


def test_a_legitimate_sentence_mentioning_a_publication_date_is_kept():
    lead = "Le décret publié le 3 mars fixe les règles de l'hébergement des données de santé."
    assert summarize(lead, "", "short") == lead


def test_excerpt_policies_and_licences():
    assert summarize("Une phrase assez longue pour un résumé de test.", "", "none") == ""
    assert licence_allows_reuse("Licence Ouverte 2.0") and licence_allows_reuse("CC BY-SA 4.0")
    assert not licence_allows_reuse("© tous droits réservés") and not licence_allows_reuse(None)
    full = Source(id="a", name="A", type="feed", url=f"{BASE}/a", excerpt="full", licence="Licence Ouverte")
    closed = Source(id="b", name="B", type="feed", url=f"{BASE}/b", excerpt="full", licence="Tous droits réservés")
    assert effective_policy(full) == "full" and effective_policy(closed) == "short" and effective_policy(None) == "short"
    sentence = "Les communes du bassin mutualisent leurs serveurs dans un centre de données géré par le département."
    long_lead = " ".join([sentence] * 4)
    assert summarize(long_lead, "", "full") == " ".join([sentence] * 3)  # 3 sentences, beyond 300 characters
    assert summarize(long_lead, "", "short") == " ".join([sentence] * 2)


def test_cut_on_word_never_splits_a_word():
    assert cut_on_word("La métropole publie ses données ouvertes", 20) == "La métropole…"


# -- the digest -------------------------------------------------------------------------------------


def test_sections_follow_topic_order_with_counts_and_change(week, dsettings):
    digest = build_digest(week, WEEK, dsettings, SOURCES)
    assert [s.topic.id for s in digest.sections] == [t for t, _ in TOPICS]
    counts = {s.topic.id: (s.count, s.previous, s.change_text) for s in digest.sections}
    assert counts["cyber"] == (4, 1, "+3 par rapport à la semaine précédente")
    assert counts["donnees"] == (2, 2, "stable par rapport à la semaine précédente")
    assert digest.article_count == 8
    assert digest.range_fr == "23–29 novembre 2026"


def test_a_story_covered_by_three_sources_is_shown_once_a_la_une(week, dsettings):
    digest = build_digest(week, WEEK, dsettings, SOURCES)
    assert len(digest.headlines) == 1
    story = digest.headlines[0]
    assert [s.name for s in story.sources] == ["La Gazette des communes", "Le Courrier des maires", "Acteurs publics"]
    assert story.url == f"{BASE}/gazette/cyber-gazette"  # the best-scored article leads
    assert story.date_fr == "mardi 24 novembre 2026"
    cyber = next(s for s in digest.sections if s.topic.id == "cyber")
    assert [i.key for i in cyber.items].count(story.key) == 1
    assert len(cyber.items) == 2  # 4 articles, 2 stories
    view = digest_view(digest, None)
    assert view.sections[0].entries[0].compact  # already shown above: not repeated in full


def test_week_boundaries_in_paris(week, dsettings):
    digest = build_digest(week, WEEK, dsettings, SOURCES)
    titles = {i.title for s in digest.sections for i in s.items + s.cut}
    assert "Conseillers numériques : la Creuse pérennise douze postes" in titles  # Sunday 21:00 Paris
    assert "France services : 200 nouveaux espaces en 2027" not in titles  # Monday 00:30 Paris
    assert "Une commune de l'Aude visée par une attaque par hameçonnage" not in titles  # week 47


def test_ranking_score_then_sources_then_recency(store, dsettings):
    t = datetime(2026, 11, 24, 8, tzinfo=UTC)
    docs = [
        Doc("old-strong", "gazette", "Score élevé, ancien", "Un résumé.", "", t, {"cyber": (9, ("a",))}),
        Doc("recent-weak", "gazette", "Score faible, récent", "Un résumé.", "", t.replace(day=28), {"cyber": (3, ("b",))}),
        Doc("tie-old", "gazette", "Égalité, plus ancien", "Un résumé.", "", t.replace(day=25), {"cyber": (5, ("c",))}),
        Doc("tie-new", "gazette", "Égalité, plus récent", "Un résumé.", "", t.replace(day=26), {"cyber": (5, ("c",))}),
        Doc("tie-two", "gazette", "Égalité, deux sources", "Un résumé.", "", t.replace(day=23), {"cyber": (5, ("c",))}, 77),
        Doc("tie-two-b", "courrier", "Égalité, deux sources (bis)", "Un résumé.", "", t.replace(day=23),
            {"cyber": (5, ("c",))}, 77),
    ]
    populate(store, docs)
    digest = build_digest(store, WEEK, dsettings.replace(section_cap=3), SOURCES)
    cyber = digest.sections[0]
    assert [i.title for i in cyber.items] == ["Score élevé, ancien", "Égalité, deux sources", "Égalité, plus récent"]
    assert [i.title for i in cyber.cut] == ["Égalité, plus ancien", "Score faible, récent"]


def test_excerpt_none_gives_headline_and_link_only(store, dsettings):
    t = datetime(2026, 11, 24, 8, tzinfo=UTC)
    populate(store, [Doc("ap", "acteurs", "La DINUM publie sa feuille de route", "Un long chapô que l'éditeur "
                         "ne veut pas voir repris dans une lettre d'information.", "", t, {"donnees": (4, ("DINUM",))})])
    item = build_digest(store, WEEK, dsettings, SOURCES).sections[1].items[0]
    assert item.summary == "" and item.url == f"{BASE}/acteurs/ap"


def test_members_get_only_the_topics_they_follow(week, dsettings):
    members = add_members(week)
    digest = build_digest(week, WEEK, dsettings, SOURCES)
    bruno = member_digest(digest, members["bruno"])
    assert [s.topic.id for s in bruno.sections] == ["cyber"]
    assert bruno.article_count == 4
    assert bruno.subject == "Veille territoires numériques — semaine 48 (23–29 novembre 2026) : 4 articles"
    chloe = member_digest(digest, members["chloe"])
    assert [s.topic.id for s in chloe.sections] == ["donnees", "inclusion"]
    assert chloe.headlines == ()  # the cyber story is not hers
    cnil = next(e for e in chloe.sections[0].entries if "CNIL" in e.item.title)
    assert [t.id for t in cnil.topics] == ["donnees"] and cnil.keywords == ("CNIL",)
    assert member_digest(digest, members["damien"]) is None  # nothing this week: no email
    assert member_digest(digest, members["alice"]).article_count == 8


def test_write_digest_writes_the_archive_folder(week, dsettings):
    digest = build_digest(week, WEEK, dsettings.replace(section_cap=1), SOURCES)
    folder = write_digest(digest, dsettings.digests_dir, trends_html='<img src="trends.png" alt="Tendances">')
    assert folder.name == WEEK
    page = (folder / "index.html").read_text()
    assert "<h2 class=\"section-title\">Inclusion numérique</h2>" in page
    assert 'id="cyber"' in page and "Tendances" in page
    # the cut story is listed by title and link only, its summary stays out
    assert "La CNIL publie un guide de cybersécurité pour les petites communes" in page
    assert "sauvegardes hors ligne" not in page
    data = json.loads((folder / "digest.json").read_text())
    assert data["week"] == WEEK and data["articles"] == 8
    cyber = data["sections"][0]
    assert cyber["topic"] == "cyber" and cyber["count"] == 4 and cyber["previous"] == 1
    assert cyber["items"][0]["sources"][1]["name"] == "Le Courrier des maires"
    assert cyber["cut"][0]["title"].startswith("La CNIL")
    md = (folder / "digest.md").read_text()
    assert md.startswith("# Veille territoires numériques — semaine 48 (23–29 novembre 2026)")
    assert f"[Blog d'Etalab](<{BASE}/etalab/deliberations-open-data>)" in md


def test_hostile_feed_content_reaches_no_output(week, dsettings):
    digest = build_digest(week, WEEK, dsettings, SOURCES)
    folder = write_digest(digest, dsettings.digests_dir)
    item = next(i for s in digest.sections for i in s.items if "Budget" in i.title)
    assert item.url is None and item.title == "Budget numérique Bcc: victime@example.org"
    assert item.summary == "Le budget numérique augmente de 12 % cette année."
    for name in ("index.html", "digest.md", "digest.json"):
        text = (folder / name).read_text()
        for bad in ("<script", "javascript:", "onclick", "onerror", "pixel.gif", "<img", "\u202e", "\r"):
            assert bad not in text, (name, bad)


def test_archive_pages_are_publishable_and_the_outbox_is_private(week, dsettings, tmp_path):
    """index.html is meant for the web server (0644); the outbox holds addresses and unsubscribe tokens (0600)."""
    import stat

    from veille.mail import deliver_week

    add_members(week)
    report = deliver_week(week, WEEK, dsettings, SOURCES, send=False)
    folder = Path(report.folder)
    assert stat.S_IMODE((folder / "index.html").stat().st_mode) == 0o644
    emails = list((folder / "outbox").glob("*.eml"))
    assert emails and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in emails)
