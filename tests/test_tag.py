"""The topic engine: matching guarantees, scoring, topics.yaml validation, tags kept in step with rules."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from veille.errors import ConfigError
from veille.store import Store
from veille.store.articles import FetchLog
from veille.tag import (
    Tagger, Topic, load_topics, preview, retag, suggest, sync_topics, tag_articles, tag_pending,
)
from veille.types import Article, Hit, Source, TopicMatch

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 24, 8, 30, tzinfo=timezone.utc)
_URLS = itertools.count(1)


def add_articles(store: Store, items, source_id: str = "gazette") -> list[int]:
    """Store (title, summary, text[, published_at]) articles through the ingestion API; returns their ids."""
    store.sync_sources([Source(id=source_id, name="La Gazette", type="feed", url="http://127.0.0.1/feed.xml")])
    articles = []
    for index, item in enumerate(items):
        title, summary, text = item[:3]
        published = item[3] if len(item) > 3 else NOW - timedelta(days=index)
        url = f"http://127.0.0.1/articles/{next(_URLS)}"
        articles.append(Article(source_id=source_id, url=url, canonical_url=url, title=title, text=text,
                                text_source="feed", published_at=published, fetched_at=published, summary=summary))
    log = FetchLog(source_id=source_id, url="http://127.0.0.1/feed.xml", started_at=NOW, duration_ms=5)
    return list(store.save_source_batch(source_id, articles, log, []).new_ids)


def kw(topic_id: str, *keywords: str, **rule) -> Topic:
    return Topic(topic_id, topic_id.title(), tuple(keywords), **rule)


def matched(tagger: Tagger, title: str = "", summary: str = "", text: str = "") -> dict[str, int]:
    return {m.topic_id: m.score for m in tagger.match(title, summary, text)}


def hits_of(tagger: Tagger, title: str = "", summary: str = "", text: str = "") -> list:
    return [h for m in tagger.match(title, summary, text) for h in m.hits]


# --------------------------------------------------------------------------------------------------
# Matching guarantees


def test_case_accents_and_ligatures_do_not_matter():
    t = Tagger([kw("num", "numérique"), kw("oeuvre", "mise en oeuvre"), kw("coeur", "cœur de ville")])
    assert matched(t, text="Le NUMERIQUE partout") == {"num": 1}
    assert matched(t, text="la Numerique") == {"num": 1}
    assert matched(t, text="La mise en œuvre du plan") == {"oeuvre": 1}
    assert matched(t, text="Action Coeur de Ville") == {"coeur": 1}
    assert matched(t, text="Les numéros utiles") == {}


def test_apostrophes_and_elided_articles():
    t = Tagger([kw("incl", "inclusion numérique"), kw("rip", "réseau d'initiative publique"),
                kw("elided", "l'open data")])
    assert matched(t, text="Le défi de l'inclusion numérique") == {"incl": 1}
    assert matched(t, text="Le défi de l’inclusion numérique") == {"incl": 1}
    assert matched(t, text="un plan d’inclusion numérique") == {"incl": 1}
    assert matched(t, text="Les réseaux d’initiative publique (RIP)") == {"rip": 1}
    assert matched(t, text="portail d'open data") == {"elided": 1}
    assert matched(t, text="inclusion sociale et numérique") == {}


def test_whole_words_only_and_phrases_in_order():
    t = Tagger([kw("rip", "RIP"), kw("ent", "ENT"), kw("velo", "vélo"), kw("smart", "smart city")])
    assert matched(t, text="Un accord tripartite signé au gouvernement") == {}
    assert matched(t, text="Le développement des vélodromes") == {}
    assert matched(t, text="Les vélos en libre-service") == {"velo": 1}
    assert matched(t, text="La smart-city de Dijon") == {"smart": 1}
    assert matched(t, text="La Smart City de Dijon") == {"smart": 1}
    assert matched(t, text="city smart") == {}
    assert matched(t, text="smart grid city") == {}


def test_regular_french_plurals_both_ways():
    t = Tagger([kw("res", "réseau"), kw("terr", "territorial"), kw("don", "donnée publique"),
                kw("dons", "données personnelles")])
    assert matched(t, text="les réseaux") == {"res": 1}
    assert matched(t, text="les agents territoriaux") == {"terr": 1}
    assert matched(t, text="ouvrir les données publiques") == {"don": 1}
    assert matched(t, text="une donnée personnelle") == {"dons": 1}
    assert matched(t, text="les territoires") == {}


def test_plural_folding_does_not_merge_unrelated_words():
    t = Tagger([kw("prix", "prix"), kw("plu", "PLU")])
    assert matched(t, text="Il a pris la parole") == {}
    assert matched(t, text="Plus de moyens. PLUS DE MOYENS") == {}
    assert matched(t, text="La révision du PLU") == {"plu": 1}


def test_all_capitals_keywords_match_only_in_capitals():
    t = Tagger([kw("rip", "RIP"), kw("thd", "THD"), kw("arcep", "Arcep")])
    assert matched(t, text="Les RIP de 1ère génération") == {"rip": 1}
    assert matched(t, text="Trois RIPs mutualisés") == {"rip": 1}
    assert matched(t, text="rip, Rip, r.i.p.") == {}
    assert matched(t, text="le thd") == {}
    assert matched(t, text="L'ARCEP et l'arcep") == {"arcep": 1}


def test_trailing_star_matches_words_starting_so():
    t = Tagger([kw("num", "numéri*"), kw("phrase", "numéri* territorial")])
    assert matched(t, text="la numérisation") == {"num": 1}
    assert matched(t, text="Numériques") == {"num": 1}
    assert matched(t, text="une énumération") == {}
    assert matched(t, text="le numérique territorial") == {"num": 1, "phrase": 1}


def test_score_weights_fields_and_counts_each_keyword_once_per_field():
    t = Tagger([kw("rip", "fibre optique", "très haut débit")])
    assert matched(t, title="La fibre optique") == {"rip": 3}
    assert matched(t, summary="La fibre optique") == {"rip": 2}
    assert matched(t, text="La fibre optique. " * 20) == {"rip": 1}
    assert matched(t, text="La fibre optique et le très haut débit") == {"rip": 2}
    assert matched(t, "Fibre optique", "fibre optique", "très haut débit et fibre optique") == {"rip": 7}


def test_a_summary_that_is_also_the_text_counts_for_both_fields(monkeypatch):
    """Feeds without content give their summary as the text: one scan serves both, with both weights."""
    t = Tagger([kw("rip", "fibre optique", "prise raccordable"),
                Topic("q", "Q", query='"fibre optique" NEAR/4 communes')])
    summary = "La fibre optique arrive dans les communes : 1 200 prises raccordables."
    scans = []
    real_scan = Tagger._scan
    monkeypatch.setattr(Tagger, "_scan", lambda self, *args: scans.append(args[0]) or real_scan(self, *args))
    once = t.match("Réseau", summary, summary)
    assert scans == ["title", "summary"]
    twice = t.match("Réseau", summary, summary + " ")  # a different text: scanned on its own
    assert scans[2:] == ["title", "summary", "body"]
    assert once == [TopicMatch(m.topic_id, m.score, tuple(Hit(h.keyword, h.field, h.text.rstrip()) for h in m.hits))
                    for m in twice]
    assert {(m.topic_id, m.score) for m in once} == {("rip", 6), ("q", 3)}
    assert [h.field for h in once[0].hits] == ["summary", "summary", "body", "body"]


def test_min_score_require_and_exclude():
    t = Tagger([
        kw("strict", "fibre optique", "très haut débit", min_score=2),
        kw("req", "fibre", require=("département", "région")),
        kw("smart", "smart city", exclude=("smart city mag",)),
    ])
    assert matched(t, text="La fibre optique") == {}
    assert "strict" in matched(t, title="La fibre optique")
    assert "req" not in matched(t, text="La fibre arrive")
    assert "req" in matched(t, text="La fibre arrive dans le département")
    assert matched(t, text="La smart city avance") == {"smart": 1}
    assert matched(t, text="La smart city avance, selon Smart City Mag") == {}


def test_query_rules():
    cyber = Topic("cyber", "Cyber", query='(cybersécurité OR rançongiciel OR ransomware) NOT "jeu vidéo"')
    near = Topic("near", "Near", query="fibre NEAR/3 département")
    title = Topic("title", "Title", query="title:mairie cyberattaque")
    t = Tagger([cyber, near, title])
    assert matched(t, text="Un rançongiciel chiffre les serveurs") == {"cyber": 1}
    assert matched(t, title="Cybersécurité", text="et ransomware") == {"cyber": 4}
    assert matched(t, text="Le jeu vidéo parle de cybersécurité") == {}
    assert matched(t, text="La fibre arrive dans le département") == {"near": 1}
    assert matched(t, text="La fibre arrive enfin, avec retard et à grand frais, dans le département") == {}
    assert matched(t, title="La mairie", text="une cyberattaque") == {"title": 4}
    assert matched(t, text="La mairie subit une cyberattaque") == {}


def test_hits_explain_with_the_matched_words_in_context():
    t = Tagger([kw("res", "réseau d'initiative publique", "THD")])
    text = ("Le conseil départemental a voté mardi une rallonge budgétaire pour ses réseaux d’initiative publique "
            "afin que le THD arrive dans les hameaux les plus isolés du plateau avant la fin de l'année prochaine.")
    (match,) = t.match("Le THD", "", text)
    assert match.score == 3 + 1 + 1
    assert [(h.keyword, h.field) for h in match.hits] == [
        ("THD", "title"), ("réseau d'initiative publique", "body"), ("THD", "body")]
    body_hit = match.hits[1]
    assert "réseaux d’initiative publique" in body_hit.text
    assert body_hit.text.startswith("… ") and body_hit.text.endswith(" …")
    assert len(body_hit.text) < len("réseaux d’initiative publique") + 2 * 40 + 10
    (marked,) = [m for _, marks in t.match_marked("", "", text) for m in marks if m.hit.keyword == "THD"]
    assert marked.hit.text[marked.start:marked.end] == "THD"


def test_rows_are_the_stored_form_of_the_matches():
    """`Tagger.rows` (what the pipeline's workers send) is `tag_rows` of `match`, hits JSON included."""
    from veille.tag import tag_rows

    t = Tagger(load_topics(ROOT / "topics.yaml"))
    texts = [("Cyberattaque : la mairie paralysée", "Un rançongiciel chiffre les serveurs de la commune.",
              "L'ANSSI et le CERT-FR accompagnent la collectivité ; la fibre optique du réseau d'initiative "
              "publique n'est pas touchée.\nLes données ouvertes restent en ligne sur data.gouv.fr."),
             ("Conseil municipal", "", "Rien sur le numérique ici, sinon l'inclusion numérique des seniors.")]
    for title, summary, text in texts:
        rows = t.rows(title, summary, text)
        assert rows and rows == tag_rows(t, t.match(title, summary, text))
        for topic_id, _score, hits, rule_hash in rows:
            assert rule_hash == t.topic_hashes[topic_id]
            assert {h["field"] for h in json.loads(hits)} <= {"title", "summary", "body"}
    assert t.rows("", "", "") == ()


@pytest.mark.parametrize("keyword, text, expected", [
    ("co*", "Une écoute attentive au cœur du quartier", "Une écoute attentive au [cœur] du quartier"),
    ("cœur de ville", "Le projet Action Cœur  de\nVille avance", "Le projet Action [Cœur de Ville] avance"),
    ("IA générative", "l'ia générative puis l'IA génératives", "l'ia générative puis l'[IA génératives]"),
    ("fibre optique", "La ﬁbre optique arrive ; la fibre optique aussi",  # ﬁ: one character, two letters
     "La [ﬁbre optique] arrive ; la fibre optique aussi"),
    ("data", "la database puis open data", "la database puis open [data]"),
    ("logiciel libre", "des logiciels  libres", "des [logiciels libres]"),
    ("conseil municipal", "le conseil conseil municipal", "le conseil [conseil municipal]"),
    ("IA IA", "ia IA IA", "ia [IA IA]"),  # the one in capitals starts inside the first candidate
])
def test_a_hit_marks_the_first_occurrence_of_the_keyword(keyword, text, expected):
    (match,) = Tagger([kw("k", keyword)]).match_marked("", "", text)
    (marked,) = match[1]
    shown, start, end = marked.hit.text, marked.start, marked.end
    assert f"{shown[:start]}[{shown[start:end]}]{shown[end:]}" == expected


def test_tagger_survives_pickling_and_forgetting_what_it_learnt():
    import pickle

    t = Tagger([kw("num", "numéri*", "cyber*"), kw("cyber", "cybersécurité")])
    text = "La cybersécurité et la numérisation des communes"
    before = t.match("", "", text)
    assert [m.topic_id for m in before] == ["num", "cyber"] and before[0].score == 2
    clone = pickle.loads(pickle.dumps(t))
    t._forget()
    assert t.match("", "", text) == clone.match("", "", text) == before


def test_prepare_compiles_every_phrase_and_changes_no_result():
    topics = load_topics(ROOT / "topics.yaml")
    lazy, ready = Tagger(topics), Tagger(topics)
    ready.prepare()
    phrases = [aid for aid, simple in enumerate(ready._simple) if not simple]
    assert phrases and set(ready._patterns[False]) == set(phrases) and not lazy._patterns[False]
    for title, summary, text in ARCHIVE:
        assert ready.rows(title, summary, text) == lazy.rows(title, summary, text)


def test_topics_come_out_in_file_order():
    t = Tagger([kw("b", "vélo"), kw("a", "fibre")])
    assert [m.topic_id for m in t.match("", "", "fibre et vélo")] == ["b", "a"]


def test_seed_article_gets_the_expected_topics_and_nothing_absurd(shared_data):
    text = (shared_data / "seed" / "ecoter-siivim-2019.txt").read_text(encoding="utf-8")
    tagger = Tagger(load_topics(ROOT / "topics.yaml"))
    got = matched(tagger, "4 préceptes à retenir pour bâtir une ville médiane intelligente", "", text)
    assert {"smart-city", "inclusion-numerique", "dematerialisation", "mutualisation", "open-data"} <= got.keys()
    for unrelated in ("sante", "education", "cybersecurite", "rip-tres-haut-debit", "finances-locales",
                      "ressources-humaines", "commande-publique", "mobilites", "intelligence-artificielle"):
        assert unrelated not in got


# --------------------------------------------------------------------------------------------------
# topics.yaml


def test_default_topics_file_covers_the_association_fields():
    topics = load_topics(ROOT / "topics.yaml")
    assert len(topics) >= 15
    from veille.query import parse_query, terms

    for topic in topics:
        count = len(terms(parse_query(topic.query))) if topic.query else len(topic.keywords)
        assert count >= 6, topic.id
    assert [t.id for t in topics][:2] == ["smart-city", "inclusion-numerique"]


def test_issue_example_loads():
    topics = load_topics("topics.yaml", text="""
topics:
  smart-city:
    label: Smart city et territoire intelligent
    keywords: [smart city, ville intelligente, villes intelligentes, territoire intelligent, "numéri* territorial"]
    require: []            # optional: at least one of these must also occur
    exclude: [smart city mag]
    min_score: 1           # optional, default 1
  rip:
    label: Réseaux d'initiative publique
    keywords: [RIP, réseau d'initiative publique, très haut débit, THD, fibre optique]
  cyber:
    label: Cybersécurité
    query: '(cybersécurité OR cyberattaque OR rançongiciel OR ransomware) NOT "jeu vidéo"'
""")
    assert [t.id for t in topics] == ["smart-city", "rip", "cyber"]
    assert topics[0].exclude == ("smart city mag",) and topics[0].line == 3
    assert topics[2].query.startswith("(cybersécurité")


@pytest.mark.parametrize("body, line, key, words", [
    ("topics:\n  a:\n    label: A\n    keyword: [x]\n", 4, "topics.a.keyword", "did you mean 'keywords'"),
    ("topics:\n  a:\n    label: A\n    keywords: [x]\n  a:\n    label: B\n    keywords: [y]\n", 5, "a", "duplicate"),
    ("topics:\n  a:\n    label: A\n    keywords: []\n", 4, "topics.a.keywords", "at least one keyword"),
    ("topics:\n  a:\n    label: A\n    query: 'fibre OR'\n", 4, "topics.a.query", "character 7"),
    ("topics:\n  a:\n    label: A\n    keywords: [x]\n    query: y\n", 5, "topics.a.query", "either keywords or query"),
    ("topics:\n  a:\n    keywords: [x]\n", 3, "topics.a.label", "missing label"),
    ("topics:\n  Smart City:\n    label: A\n    keywords: [x]\n", 2, "topics.Smart City", "not a valid topic id"),
    ("topics:\n  a:\n    label: A\n    keywords:\n      - fibre\n      - '*optique'\n", 6, "topics.a.keywords[1]",
     "must end a word"),
    ("topics:\n  a:\n    label: A\n    keywords: [x]\n    min_score: 0\n", 5, "topics.a.min_score", "from 1 to 100"),
    ("topics:\n  a:\n    label: A\n    query: fibre\n    exclude: [x]\n", 5, "topics.a.exclude", "cannot be used"),
    ("topics: []\n", 1, "topics", "one block per topic id"),
])
def test_validation_errors_name_file_line_and_key(body, line, key, words):
    with pytest.raises(ConfigError) as info:
        load_topics("topics.yaml", text=body)
    error = info.value
    assert (error.line, error.key) == (line, key)
    assert words in str(error)
    assert str(error).startswith(f"topics.yaml:{line}:")


def test_rule_hash_ignores_label_and_keyword_order_but_not_the_rule():
    a = kw("a", "fibre", "THD")
    assert a.rule_hash == Topic("a", "Autre libellé", ("THD", "fibre")).rule_hash
    assert a.rule_hash != kw("a", "fibre", "THD", min_score=2).rule_hash
    assert a.rule_hash != kw("a", "fibre", "thd").rule_hash


# --------------------------------------------------------------------------------------------------
# Archive: tagging, versions, re-tagging


ARCHIVE = [
    ("Fibre optique : le Cantal achève son réseau d'initiative publique", "",
     "Le département a raccordé 40 000 prises. Les opérateurs commerciaux arrivent sur le RIP."),
    ("Le très haut débit dans les zones rurales", "Les prises raccordables progressent.",
     "Les prises raccordables se multiplient dans les communes rurales."),
    ("Cyberattaque : la mairie de Lurcy paralysée", "Un rançongiciel a chiffré les serveurs.",
     "La commune a porté plainte ; l'ANSSI accompagne les agents."),
    ("Un jeu vidéo sur la cybersécurité", "", "Les élèves découvrent les rançongiciels en jouant."),
    ("Budget primitif : la DGF en baisse", "", "Les finances locales des communes rurales se tendent."),
    ("Inclusion numérique : 12 conseillers recrutés", "",
     "Les conseillers numériques accompagnent les habitants éloignés du numérique. Les prises de rendez-vous "
     "se font en mairie."),
    ("Accord tripartite pour la cantine", "", "Rien à voir avec le réseau."),
    ("Mise en œuvre du schéma", "", "Le cœur du réseau d’initiative publique est en fibre optique jusqu'à l'abonné."),
]


def test_tag_articles_stores_scores_hits_and_rule_versions(store):
    topics = [kw("rip", "fibre optique", "réseau d'initiative publique", "RIP", "très haut débit"),
              Topic("cyber", "Cyber", query='(cyberattaque OR rançongiciel) NOT "jeu vidéo"')]
    ids = add_articles(store, ARCHIVE)
    assert sync_topics(store, topics) == ["rip", "cyber"]
    tagger = Tagger(topics)
    assert tag_articles(store, tagger, ids) == 4
    tags = store.article_tags(ids[0])
    assert [t["topic_id"] for t in tags] == ["rip"]
    assert tags[0]["score"] == 3 + 3 + 1  # two keywords in the title, RIP in the body
    hits = json.loads(tags[0]["hits"])
    assert {"keyword": "RIP", "field": "body", "text": hits[-1]["text"]} == hits[-1]
    assert "RIP" in hits[-1]["text"]
    assert tags[0]["rule_hash"] == topics[0].rule_hash
    assert store.article_tags(ids[3]) == []  # the jeu vidéo is excluded
    assert store.untagged_article_ids() == []
    assert tag_pending(store, tagger) == 0


def test_an_updated_article_loses_a_topic_it_no_longer_deserves(store):
    topics = [kw("rip", "fibre optique"), kw("cyber", "cyberattaque")]
    (article_id,) = add_articles(store, [("La fibre optique", "", "et une cyberattaque")])
    sync_topics(store, topics)
    tagger = Tagger(topics)
    tag_articles(store, tagger, [article_id])
    assert {t["topic_id"] for t in store.article_tags(article_id)} == {"rip", "cyber"}
    with store.transaction():
        store.conn.execute("UPDATE articles SET text = 'rien' WHERE id = ?", (article_id,))
    tag_articles(store, tagger, [article_id])
    assert {t["topic_id"] for t in store.article_tags(article_id)} == {"rip"}


def test_untagged_articles_are_found_and_tagged(store):
    topics = [kw("rip", "fibre optique")]
    ids = add_articles(store, ARCHIVE[:2])
    sync_topics(store, topics)
    assert store.untagged_article_ids() == ids
    assert tag_pending(store, Tagger(topics)) == 1
    assert store.untagged_article_ids() == []


def _tags(store: Store, topic_id: str) -> dict[int, tuple]:
    rows = store.conn.execute("SELECT article_id, score, rule_hash, tagged_at FROM article_topics WHERE topic_id = ?",
                              (topic_id,)).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_retag_touches_only_changed_topics_and_keeps_history(store):
    v1 = [kw("rip", "fibre optique"), kw("cyber", "cyberattaque", "rançongiciel")]
    ids = add_articles(store, ARCHIVE)
    assert sync_topics(store, v1) == ["rip", "cyber"]
    first = retag(store, v1)
    assert [t.topic_id for t in first.topics] == ["rip", "cyber"]
    assert store.untagged_article_ids() == []  # every topic went over the whole archive
    assert sync_topics(store, v1) == []
    assert retag(store, v1).topics == ()
    store.conn.execute("UPDATE article_topics SET tagged_at = '2000-01-01T00:00:00Z' WHERE topic_id = 'cyber'")
    cyber_before = _tags(store, "cyber")

    v2 = [kw("rip", "fibre optique", "très haut débit"), v1[1]]
    assert sync_topics(store, v2) == ["rip"]
    result = retag(store, v2)
    (rip,) = result.topics
    assert (rip.topic_id, rip.gained, rip.lost) == ("rip", 1, 0)
    assert rip.candidates >= rip.tagged == 3
    assert _tags(store, "cyber") == cyber_before
    assert {r[1] for r in _tags(store, "rip").values()} == {v2[0].rule_hash}
    assert {v["rule_hash"] for v in store.topic_versions("rip")} == {v1[0].rule_hash, v2[0].rule_hash}
    assert ids[1] in _tags(store, "rip")


def test_retag_agrees_with_tagging_every_article(store):
    """The full-text candidates are a superset: re-tagging gives what a full scan gives."""
    topics = load_topics(ROOT / "topics.yaml") + [
        kw("oe", "mise en oeuvre", "coeur"), kw("plural", "prise raccordable", "commune rurale"),
        kw("prefix", "numéri*", "cyber*"), Topic("q", "Q", query='title:(fibre OR cyberattaque) OR "jeu vidéo" NEAR/3 élèves'),
    ]
    ids = add_articles(store, ARCHIVE)
    sync_topics(store, topics)
    retag(store, topics)
    by_retag = {(r[0], r[1], r[2]) for r in store.conn.execute("SELECT article_id, topic_id, score FROM article_topics")}
    tagger = Tagger(topics)
    by_scan = {(row["id"], m.topic_id, m.score) for row in store.article_texts(ids)
               for m in tagger.match(row["title"], row["summary"], row["text"])}
    assert by_retag == by_scan
    assert {t for _, t, _ in by_scan} >= {"oe", "plural", "prefix", "q", "rip-tres-haut-debit", "cybersecurite"}


def test_removed_topic_is_retired_with_its_tags_and_comes_back_retagged(store):
    topics = [kw("rip", "fibre optique"), kw("cyber", "cyberattaque")]
    add_articles(store, ARCHIVE)
    sync_topics(store, topics)
    retag(store, topics)
    assert _tags(store, "cyber")
    assert sync_topics(store, topics[:1]) == []
    assert _tags(store, "cyber") == {} and not store.topic_states()["cyber"].active
    assert sync_topics(store, topics) == ["cyber"]
    retag(store, topics)
    assert _tags(store, "cyber")


def test_label_and_order_changes_do_not_retag(store):
    topics = [kw("rip", "fibre optique"), kw("cyber", "cyberattaque")]
    add_articles(store, ARCHIVE)
    sync_topics(store, topics)
    retag(store, topics)
    renamed = [Topic("cyber", "Cybersécurité", ("cyberattaque",)), topics[0]]
    assert sync_topics(store, renamed) == []
    states = store.topic_states()
    assert (states["cyber"].label, states["cyber"].position, states["rip"].position) == ("Cybersécurité", 0, 1)


def test_retag_of_an_empty_archive_records_the_rules_and_the_first_articles_get_tagged(store):
    topics = [kw("rip", "fibre optique"), kw("cyber", "cyberattaque")]
    assert sync_topics(store, topics) == ["rip", "cyber"]
    result = retag(store, topics)
    assert [(t.topic_id, t.candidates, t.tagged) for t in result.topics] == [("rip", 0, 0), ("cyber", 0, 0)]
    assert sync_topics(store, topics) == []  # rule versions recorded: nothing left to re-tag
    ids = add_articles(store, ARCHIVE)
    assert tag_pending(store, Tagger(topics)) >= 2
    assert _tags(store, "rip") and set(_tags(store, "rip")) <= set(ids)
    changed = [kw("rip", "fibre optique", "très haut débit"), topics[1]]
    assert sync_topics(store, changed) == ["rip"]
    (rip,) = retag(store, changed).topics
    assert rip.gained == 1  # with articles stored, a changed rule goes over them again


def test_retag_of_a_given_topic_is_forced(store):
    topics = [kw("rip", "fibre optique")]
    add_articles(store, ARCHIVE)
    sync_topics(store, topics)
    retag(store, topics)
    (again,) = retag(store, topics, ["rip"]).topics
    assert (again.gained, again.lost, again.tagged) == (0, 0, 2)


# --------------------------------------------------------------------------------------------------
# Preview and suggestions


def test_preview_counts_weeks_and_compares_a_draft_with_the_current_rule(store):
    current = kw("rip", "fibre optique")
    add_articles(store, [(t, s, x, NOW - timedelta(days=3 + 7 * i)) for i, (t, s, x) in enumerate(ARCHIVE)])
    sync_topics(store, [current])
    retag(store, [current])
    same = preview(store, current, weeks=12, now=NOW)
    assert (same.total, same.gained, same.lost) == (2, 0, 0)
    assert len(same.per_week) in (12, 13) and sum(n for _, n in same.per_week) == 2
    draft = kw("rip", "très haut débit", "réseau d'initiative publique", exclude=("cœur",))
    result = preview(store, draft, weeks=12, draft=True, now=NOW)
    assert (result.total, result.gained, result.lost) == (2, 1, 1)
    assert [s.title for s in result.gained_samples] == ["Le très haut débit dans les zones rurales"]
    assert [s.title for s in result.lost_samples] == ["Mise en œuvre du schéma"]
    assert [s.title for s in result.samples] == ["Fibre optique : le Cantal achève son réseau d'initiative publique",
                                                 "Le très haut débit dans les zones rurales"]
    hit = result.samples[0].hits[0]
    assert hit.hit.field == "title" and hit.hit.text[hit.start:hit.end] == "réseau d'initiative publique"
    short = preview(store, draft, weeks=1, now=NOW)
    assert short.total < result.total


@pytest.mark.parametrize("draft", [
    kw("rip", "fibre optique", "RIP", "réseau d'initiative publique"),
    kw("rip", "très haut débit", "prise raccordable", min_score=2),
    kw("rip", "numéri*", "cœur", "commune rurale", require=("réseau", "conseiller")),
    kw("rip", "fibre", "réseau", exclude=("tripartite", "ANSSI")),
    kw("rip", "mise en oeuvre", "prises de rendez-vous", "RSA"),
])
def test_preview_from_the_index_agrees_with_the_matcher(store, draft):
    add_articles(store, [(t, s, x, NOW - timedelta(days=1 + 5 * i)) for i, (t, s, x) in enumerate(ARCHIVE)])
    current = kw("rip", "fibre optique")
    sync_topics(store, [current])
    retag(store, [current])
    fast = preview(store, draft, weeks=8, now=NOW)
    slow = preview(store, draft, weeks=8, now=NOW, use_index=False)
    assert (fast.total, fast.per_week, fast.gained, fast.lost) == (slow.total, slow.per_week, slow.gained, slow.lost)
    assert [(s.article_id, s.score) for s in fast.samples] == [(s.article_id, s.score) for s in slow.samples]
    assert fast.total > 0


def test_suggest_finds_frequent_words_that_are_not_keywords(store):
    rip = kw("rip", "très haut débit", "fibre optique")
    other = [("Le conseil municipal vote le budget", "", f"Séance numéro {i} du conseil municipal.") for i in range(12)]
    inside = [(f"Très haut débit : étape {i}", "Les prises raccordables progressent dans la vallée.",
               "Les prises raccordables et l'opérateur d'infrastructure.") for i in range(8)]
    add_articles(store, other + inside)
    sync_topics(store, [rip])
    retag(store, [rip])
    found = suggest(store, "rip", topic=rip)
    texts = [s.text for s in found]
    assert "prises raccordables" in texts
    assert not any(t in ("très", "haut débit", "très haut", "fibre optique") for t in texts)
    top = found[texts.index("prises raccordables")]
    assert top.in_topic == 8 and top.elsewhere == 0 and top.ratio >= 3
