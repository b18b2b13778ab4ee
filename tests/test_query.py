"""The normaliser, the query parser and its compilation to FTS5, checked against a real SQLite index."""

from __future__ import annotations

import pytest

from veille.errors import QueryError
from veille.query import And, Near, Not, Or, Term, fold, normalize_tokens, parse_phrase, parse_query, stem, to_fts
from veille.store import Store

from .test_tag import add_articles

# --------------------------------------------------------------------------------------------------
# Normaliser


def test_fold_is_accent_case_and_ligature_insensitive():
    assert fold("Numérique NUMÉRIQUE numerique") == ["numerique"] * 3
    assert fold("Œuvre cœur Æsthète") == ["oeuvre", "coeur", "aesthete"]
    assert fold("l’inclusion l'inclusion") == ["l", "inclusion", "l", "inclusion"]
    assert fold("smart-city 10€ «ville» ☀️ élu·es") == ["smart", "city", "10", "ville", "elu", "es"]


def test_tokens_point_back_into_the_original_text():
    text = "Les Œuvres de l’État — « données publiques » 🚀 CNIL"
    tokens = normalize_tokens(text)
    assert [text[t.start:t.end] for t in tokens] == ["Les", "Œuvres", "de", "l", "État", "données", "publiques", "CNIL"]
    assert [t.stem for t in tokens] == ["les", "oeuvre", "de", "l", "etat", "donnee", "publique", "cnil"]
    assert [t.caps for t in tokens] == [False, False, False, False, False, False, False, True]


def test_tokens_of_decomposed_text_keep_their_offsets():
    text = "Le re\u0301seau de Ne\u0301vers"  # NFD: combining accents
    tokens = normalize_tokens(text)
    assert [text[t.start:t.end] for t in tokens] == ["Le", "re\u0301seau", "de", "Ne\u0301vers"]
    assert [t.text for t in tokens] == ["le", "reseau", "de", "nevers"]


@pytest.mark.parametrize("word, expected", [
    ("reseaux", "reseau"), ("reseau", "reseau"), ("territoriaux", "territorial"), ("donnees", "donnee"),
    ("jeux", "jeu"), ("elus", "elu"), ("eaux", "eau"), ("prix", "prix"), ("plus", "plus"), ("process", "process"),
    ("bus", "bus"), ("aux", "aux"), ("cours", "cours"),
])
def test_stem_folds_regular_plurals_only(word, expected):
    assert stem(word) == expected


def test_phrase_drops_a_leading_elided_article_and_reads_prefixes_and_capitals():
    words = parse_phrase("l'inclusion numéri*")
    assert [(w.text, w.prefix, w.caps) for w in words] == [("inclusion", False, False), ("numeri", True, False)]
    assert [(w.text, w.caps) for w in parse_phrase("RIP THD")] == [("rip", True), ("thd", True)]
    assert [w.text for w in parse_phrase("réseau d’initiative publique")] == ["reseau", "d", "initiative", "publique"]


# --------------------------------------------------------------------------------------------------
# Parser


def _words(node):
    return " ".join(w.text for w in node.words)


def test_precedence_or_is_lowest_and_and_is_implicit():
    node = parse_query('fibre "très haut débit" OR THD')
    assert isinstance(node, Or)
    left, right = node.children
    assert isinstance(left, And) and [_words(c) for c in left.children] == ["fibre", "tres haut debit"]
    assert isinstance(right, Term) and right.words[0].caps


def test_not_groups_title_and_near():
    node = parse_query('(cybersécurité OR rançongiciel) NOT "jeu vidéo" title:(mairie OR commune) fibre NEAR/3 département')
    assert isinstance(node, And)
    group, negation, title_group, near = node.children
    assert isinstance(group, Or) and isinstance(negation, Not) and _words(negation.child) == "jeu video"
    assert isinstance(title_group, Or) and all(t.title for t in title_group.children)
    assert isinstance(near, Near) and near.distance == 3 and _words(near.right) == "departement"


def test_near_without_distance_defaults_to_ten_and_title_applies_to_both_sides():
    node = parse_query("title:fibre NEAR commune")
    assert isinstance(node, Near) and node.distance == 10 and node.left.title and node.right.title


def test_curly_and_french_quotes_make_phrases():
    for query in ("“smart city”", "« smart city »", '"smart city"'):
        node = parse_query(query)
        assert isinstance(node, Term) and _words(node) == "smart city"


@pytest.mark.parametrize("query, position, words", [
    ('fibre "très haut débit', 6, "unclosed quote"),
    ("fibre)", 5, "unmatched ')'"),
    ("(fibre OR THD", 0, "missing ')'"),
    ("", 0, "empty query"),
    ("fibre OR", 6, "OR needs"),
    ("OR fibre", 0, "OR needs a word"),
    ("NOT fibre", 0, "only NOT"),
    ("fibre OR NOT cuivre", 9, "NOT cannot be an alternative of OR"),
    ("a NEAR/2 b NEAR/2 c", 11, "exactly two"),
    ("(a OR b) NEAR/2 c", 0, "two words or phrases"),
    ("fibre OU cuivre", 6, "use OR instead of OU"),
    ("résumé:fibre", 0, "unknown field"),
    ("fibre *optique", 6, "'*' must end a word"),
    ("fibre -cuivre", 6, "NOT cuivre"),
    ("()", 0, "empty parentheses"),
    ("n*", 0, "at least 2 letters"),
    ("fibre near/3 cuivre", 6, "NEAR/n in capitals"),
])
def test_syntax_errors_say_where_and_why(query, position, words):
    with pytest.raises(QueryError) as info:
        parse_query(query)
    assert info.value.position == position
    assert words in info.value.message
    assert str(info.value).splitlines()[-1].index("^") - 2 == position  # the caret points at it


# --------------------------------------------------------------------------------------------------
# FTS5 compilation against a real index


@pytest.fixture
def fts_store(store: Store) -> Store:
    add_articles(store, [
        ("Les données publiques de la Drôme", "", "Portail ouvert."),
        ("Une donnée publique oubliée", "", ""),
        ("Sommet", "La fibre optique arrive au cœur du département", "Le très haut débit pour tous."),
        ("Cuivre", "", "La fibre arrive. Puis après bien des retards le département est raccordé."),
        ("Mise en œuvre du plan", "", "Les territoriaux et la numérisation des archives."),
        ("Jeu vidéo et cybersécurité", "", "Un jeu vidéo sur la cybersécurité."),
        ("Cybersécurité des mairies", "", "Une cyberattaque a visé la commune."),
    ])
    return store


def _titles(store: Store, query: str, candidates: bool = False) -> set[str]:
    return {r["title"] for r in store.fts_articles(to_fts(parse_query(query), candidates))}


def test_fts_plurals_accents_and_ligatures(fts_store):
    assert _titles(fts_store, "donnée publique") == {"Les données publiques de la Drôme", "Une donnée publique oubliée"}
    assert _titles(fts_store, '"DONNEES PUBLIQUES"') == _titles(fts_store, "donnée publique")
    assert _titles(fts_store, "coeur") == {"Sommet"}
    assert _titles(fts_store, "oeuvre") == {"Mise en œuvre du plan"}
    assert _titles(fts_store, "territorial numéri*") == {"Mise en œuvre du plan"}


def test_fts_phrases_title_not_and_near(fts_store):
    assert _titles(fts_store, '"fibre optique"') == {"Sommet"}
    assert _titles(fts_store, "title:cybersécurité") == {"Jeu vidéo et cybersécurité", "Cybersécurité des mairies"}
    assert _titles(fts_store, 'cybersécurité NOT "jeu vidéo"') == {"Cybersécurité des mairies"}
    assert _titles(fts_store, 'cybersécurité NOT "jeu vidéo"', candidates=True) == {
        "Jeu vidéo et cybersécurité", "Cybersécurité des mairies"}
    assert _titles(fts_store, "fibre NEAR/4 département") == set()  # five words between them in "Sommet"
    assert _titles(fts_store, "fibre NEAR/5 département") == {"Sommet"}
    assert _titles(fts_store, "fibre NEAR/7 département") == {"Sommet", "Cuivre"}
    assert _titles(fts_store, "(fibre OR cyberattaque) NOT cuivre") == {"Sommet", "Cybersécurité des mairies"}


def test_fts_index_follows_inserts_updates_and_deletes(fts_store):
    (article_id,) = [r["id"] for r in fts_store.fts_articles(to_fts(parse_query("title:cuivre")))]
    with fts_store.transaction():
        fts_store.conn.execute("UPDATE articles SET title = ? WHERE id = ?", ("Laiton", article_id))
    assert _titles(fts_store, "title:cuivre") == set()
    assert _titles(fts_store, "title:laiton") == {"Laiton"}
    with fts_store.transaction():
        fts_store.conn.execute("DELETE FROM articles WHERE id = ?", (article_id,))
    assert _titles(fts_store, "laiton OR raccordé") == set()
    fts_store.fts_check()
    fts_store.fts_rebuild()
    assert _titles(fts_store, "title:sommet") == {"Sommet"}


def test_an_index_out_of_step_is_detected_and_rebuilt(fts_store):
    from veille.errors import StoreError

    with fts_store.transaction():  # a write that bypasses the triggers (e.g. a restore by hand)
        fts_store.conn.execute("DROP TRIGGER articles_fts_update")
        fts_store.conn.execute("UPDATE articles SET title = 'Laiton' WHERE title = 'Cuivre'")
    with pytest.raises(StoreError, match="out of step"):
        fts_store.fts_check()
    fts_store.fts_rebuild()
    fts_store.fts_check()
    assert _titles(fts_store, "title:laiton") == {"Laiton"}


def test_migration_fills_the_index_of_an_existing_archive(tmp_path):
    from veille.store.schema import MIGRATIONS

    from . import archive_data

    before = next(n for n, _name, sql in MIGRATIONS if "articles_fts" in sql) - 1
    archive_data.build_old(tmp_path / "old.db", before)
    upgraded = Store.open(tmp_path / "old.db")
    try:
        assert upgraded.schema_version == len(MIGRATIONS)
        assert _titles(upgraded, "cybersécurité hôpitaux") == {
            "Cyberattaque : l'hôpital de Brest paralysé par un rançongiciel"}
        upgraded.fts_check()
    finally:
        upgraded.close()


def test_query_error_message_is_never_a_raw_sqlite_error():
    with pytest.raises(QueryError) as info:
        parse_query('"unclosed')
    assert "fts5" not in str(info.value).lower() and "sqlite" not in str(info.value).lower()
