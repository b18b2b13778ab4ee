"""`veille search`: topic-rule syntax over the FTS index, exact matching, ranking, snippets, read-only."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veille.cli import main
from veille.errors import QueryError, StoreError, VeilleError
from veille.search import Highlighter, Marked, _window, search
from veille.store import Store
from veille.store.articles import FetchLog
from veille.types import Article

from . import archive_data


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    path = tmp_path_factory.mktemp("search") / "veille.db"
    ids = archive_data.build(path)
    return path, ids


@pytest.fixture
def ro(archive):
    store = Store.open(archive[0], readonly=True)
    yield store
    store.close()


@pytest.fixture
def ids(archive) -> dict[str, int]:
    return archive[1]


def keys(result, ids: dict[str, int]) -> list[str]:
    by_id = {v: k for k, v in ids.items()}
    return [by_id[h.id] for h in result.hits]


# -- what matches -----------------------------------------------------------------------------------


def test_plurals_and_accents_behave_as_in_topics(ro, ids):
    found = set(keys(search(ro, "donnée publique"), ids))
    assert found == {"rennes-open-data", "rennes-open-data-bis", "rgpd-maires"}
    assert set(keys(search(ro, "DONNEES publiques"), ids)) == set()  # capitals-only words need capitals
    assert set(keys(search(ro, "cybersecurite"), ids)) == {"hopital-brest", "jeu-video", "cyber-communes"}


def test_phrase_needs_its_words_in_order(ro, ids):
    assert keys(search(ro, "\"réseau d'initiative publique\""), ids) == ["fibre-finistere"]
    assert keys(search(ro, '"publique réseau"'), ids) == []
    assert set(keys(search(ro, '"smart city"'), ids)) == {"angers-capteurs", "dijon-hyperviseur"}


def test_boolean_operators_prefix_title_and_near(ro, ids):
    assert set(keys(search(ro, 'cybersécurité NOT "jeu vidéo"'), ids)) == {"hopital-brest", "cyber-communes"}
    assert set(keys(search(ro, "(rançongiciel OR hameçonnage) collectivités"), ids)) == set()
    assert set(keys(search(ro, "rançongiciel OR hameçonnage"), ids)) == {"hopital-brest", "cyber-communes",
                                                                          "jeu-video"}
    assert set(keys(search(ro, "cyber*"), ids)) == {"hopital-brest", "jeu-video", "cyber-communes"}
    assert keys(search(ro, "title:rançongiciel"), ids) == ["hopital-brest"]
    assert keys(search(ro, "rançongiciel NEAR/6 serveurs"), ids) == ["hopital-brest"]
    assert keys(search(ro, "rançongiciel NEAR/3 serveurs"), ids) == []


def test_whole_words_only(ro, ids):
    assert keys(search(ro, "tripartite"), ids) == ["tripartite"]
    assert keys(search(ro, "RIP"), ids) == []
    assert keys(search(ro, "tri*"), ids) == ["tripartite"]


def test_the_topic_matcher_confirms_what_the_index_selects(ro, ids):
    """The index is accent- and case-folded: `ANSSI` selects the lower-case URL too, the matcher drops it."""
    result = search(ro, "ANSSI")
    assert keys(result, ids) == ["hopital-brest"]
    assert result.total >= 1


def test_ranking_puts_title_matches_first(ro, ids):
    result = search(ro, "rançongiciel")
    assert keys(result, ids)[0] == "hopital-brest"
    assert "cyber-communes" in keys(result, ids)
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)


def test_filters(ro, ids):
    assert set(keys(search(ro, "cybersécurité", topics=["cybersecurite"], sources=["ouest"]), ids)) == \
        {"hopital-brest", "jeu-video"}
    day = (archive_data.END - timedelta(days=24)).date().isoformat()
    assert keys(search(ro, "cybersécurité", since=day, until=day), ids) == ["cyber-communes"]
    assert keys(search(ro, "données", since="2026-W48"), ids) != []
    assert set(keys(search(ro, "données", until="2026-W46"), ids)) == {"rgpd-maires", "open-data-departement"}
    with pytest.raises(VeilleError, match="unknown topic ia"):
        search(ro, "données", topics=["ia"])
    with pytest.raises(VeilleError, match="unknown source lemonde"):
        search(ro, "données", sources=["lemonde"])


def test_limit_and_total(ro):
    result = search(ro, "cybersécurité OR données", limit=2)
    assert len(result.hits) == 2
    assert result.total >= 6


# -- highlighting -----------------------------------------------------------------------------------


def test_snippets_highlight_the_original_words(ro, ids):
    hit = next(h for h in search(ro, "donnée publique").hits if h.id == ids["rennes-open-data"])
    assert [hit.title.text[s:e] for s, e in hit.title.spans] == ["données", "publiques"]
    assert hit.title.marked() == "Rennes ouvre ses **données** **publiques** sur un nouveau portail"
    assert {hit.snippet.text[s:e] for s, e in hit.snippet.spans} >= {"données"}
    hit = search(ro, '"réseau d\'initiative publique"').hits[0]
    assert hit.snippet.marked().count("**réseau d'initiative publique**") == 1  # the summary


def test_snippet_comes_from_the_text_when_the_summary_does_not_match(ro, ids):
    hit = search(ro, "title:rançongiciel OR serveurs").hits[0]
    assert hit.id == ids["hopital-brest"]
    assert "**serveurs**" in hit.snippet.marked()
    assert "\n" not in hit.snippet.text
    words = [hit.snippet.text[s:e] for s, e in hit.snippet.spans]
    assert words == ["serveurs"]  # title: terms are not highlighted in the body


def test_window_cuts_between_words_and_keeps_spans_aligned():
    text = " ".join(f"mot{i}" for i in range(200)) + " fibre optique " + " ".join(f"fin{i}" for i in range(100))
    start = text.index("fibre")
    marked = _window(text, [(start, start + 5)], 120)
    assert len(marked.text) <= 125
    assert marked.text.startswith("… ") and marked.text.endswith(" …")
    assert [marked.text[s:e] for s, e in marked.spans] == ["fibre"]
    assert all(not w or w.startswith(("mot", "fin", "fibre", "optique", "…")) for w in marked.text.split(" "))


def test_highlighter_respects_capitals_and_phrases():
    from veille.query import parse_query

    h = Highlighter(parse_query('THD "fibre optique"'))
    marked = h.mark("Le THD et la fibre optique ; le thd, la fibre seule, l'optique.", "body")
    assert [marked.text[s:e] for s, e in marked.spans] == ["THD", "fibre optique"]
    assert Marked("abc", ((0, 1),)).segments() == [("a", True), ("bc", False)]


# -- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("query, position", [
    ("fibre AND", 6),
    ('"smart city', 0),
    ("(fibre OR thd", 0),
    ("fibre OU thd", 6),
    ("NOT fibre", 0),
    ("auteur:dupont", 0),
])
def test_syntax_errors_say_where(ro, query, position):
    with pytest.raises(QueryError) as info:
        search(ro, query)
    assert info.value.position == position
    assert "fts5" not in str(info.value).lower() and "sqlite" not in str(info.value).lower()


def test_cli_syntax_error_exit_2_with_pointer(archive):
    result = CliRunner().invoke(main, ["--db", str(archive[0]), "search", "fibre AND"])
    assert result.exit_code == 2
    assert "position 7" in result.output and "fibre AND\n" in result.output and "^" in result.output
    assert "fts5" not in result.output.lower()


# -- output formats ---------------------------------------------------------------------------------


def test_cli_json(archive):
    result = CliRunner().invoke(main, ["--db", str(archive[0]), "search", "donnée", "publique", "--format", "json",
                                       "--limit", "2"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["query"] == "donnée publique" and data["total"] == 3
    first = data["results"][0]
    assert set(first) == {"id", "published_at", "source_id", "source", "title", "url", "topics", "score",
                          "title_highlighted", "snippet", "cluster_id"}
    assert "**données**" in first["title_highlighted"] and first["topics"] == ["open-data"]
    assert first["published_at"].endswith("Z")


def test_cli_csv_and_table(archive):
    runner = CliRunner()
    result = runner.invoke(main, ["--db", str(archive[0]), "search", "cybersécurité", "--format", "csv",
                                  "--source", "gazette"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [r["title"] for r in rows] == ["Les petites communes face aux cyberattaques"]
    assert "**cybersécurité**" in rows[0]["snippet"]
    table = runner.invoke(main, ["--db", str(archive[0]), "search", "smart", "city", "--topic", "smart-city"])
    assert table.exit_code == 0, table.output
    assert "Angers" in table.output and "Dijon" in table.output
    unknown = runner.invoke(main, ["--db", str(archive[0]), "search", "x", "--topic", "nope"])
    assert unknown.exit_code == 1 and "unknown topic nope" in unknown.output


# -- index kept in sync, read-only --------------------------------------------------------------------


def test_index_follows_updates_and_deletions(tmp_path):
    path = tmp_path / "veille.db"
    ids = archive_data.build(path)
    store = Store.open(path)
    key, source, days, title, summary, text, _topics = archive_data.ARTICLES[4]
    published = archive_data.END - timedelta(days=days)
    url = f"http://127.0.0.1:9/{source}/{key}.html"
    changed = Article(source_id=source, url=url, canonical_url=url, title=title, summary=summary,
                      text=text.replace("hyperviseur urbain", "jumeau numérique"), text_source="page",
                      published_at=published, fetched_at=archive_data.END, guid=key, urls=(url,))
    log = FetchLog(source_id=source, url="http://127.0.0.1:9/x.xml", started_at=archive_data.END, duration_ms=1)
    assert store.save_source_batch(source, [changed], log, []).updated_ids == (ids[key],)
    assert [h.id for h in search(store, "jumeaux numériques").hits] == [ids[key]]
    assert search(store, "hyperviseur").hits == ()
    with store.transaction() as conn:
        conn.execute("DELETE FROM articles WHERE id = ?", (ids["hopital-brest"],))
    assert ids["hopital-brest"] not in [h.id for h in search(store, "rançongiciel").hits]
    store.close()


def test_search_runs_while_the_scheduler_writes(archive, ids):
    """WAL: a writer in the middle of its transaction neither blocks the search nor shows through."""
    writer = sqlite3.connect(archive[0], isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE articles SET title = 'Fibre optique : titre pas encore commité' WHERE id = ?",
                   (ids["tripartite"],))
    try:
        store = Store.open(archive[0], readonly=True)
        assert keys(search(store, "commité"), ids) == []
        assert keys(search(store, "tripartite"), ids) == ["tripartite"]
        with pytest.raises(StoreError):
            store.execute("UPDATE articles SET title = 'x'")
        store.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_search_sees_one_snapshot_while_the_scheduler_commits(tmp_path):
    path = tmp_path / "veille.db"
    archive_data.build(path)
    writer = Store.open(path)
    reader = Store.open(path, readonly=True)
    url = "http://127.0.0.1:9/gazette/nouvelle.html"
    article = Article(source_id="gazette", url=url, canonical_url=url, title="Cybersécurité : un nouvel article",
                      text="La cybersécurité des communes.", text_source="page", published_at=archive_data.END,
                      fetched_at=archive_data.END, guid="nouvelle", urls=(url,))
    log = FetchLog(source_id="gazette", url="http://127.0.0.1:9/x.xml", started_at=archive_data.END, duration_ms=1)
    with reader.read_snapshot():
        before = len(search(reader, "cybersécurité").hits)
        writer.save_source_batch("gazette", [article], log, [])  # commits while the reader holds its snapshot
        assert len(search(reader, "cybersécurité").hits) == before
    assert len(search(reader, "cybersécurité").hits) == before + 1
    reader.close()
    writer.close()


_PIECES = ["fibre", "Données", "publiques", "RIP", "l'inclusion", "numéri*", "cyber*", '"', "(", ")", "OR", "NOT",
           "AND", "NEAR/3", "title:", "«", "»", "œuvre", "-", "*", ":", "x", "12", "é", "’"]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(_PIECES), min_size=1, max_size=8), st.booleans())
def test_any_query_gives_results_or_a_query_error(ro, pieces, spaced):
    """Never a raw SQLite/FTS5 error, whatever an analyst types (sharing `ro` is fine: it is read-only)."""
    query = (" " if spaced else "").join(pieces)
    try:
        result = search(ro, query)
    except QueryError as e:
        assert 0 <= e.position <= len(query)
    else:
        assert len(result.hits) <= result.total


# -- dates at the command line ----------------------------------------------------------------------


def _cli_keys(archive, *args: str) -> list[str]:
    """Keys of the articles `veille search ... --format json` returns (best first)."""
    path, ids = archive
    result = CliRunner().invoke(main, ["--db", str(path), "search", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    by_id = {v: k for k, v in ids.items()}
    return [by_id[r["id"]] for r in json.loads(result.output)["results"]]


def test_cli_since_and_until_in_every_date_form(archive):
    # "cybersécurité" finds three articles: hopital-brest (24 Nov 10:00 UTC), jeu-video (3 Nov 10:00 UTC)
    # and cyber-communes (2 Nov 10:00 UTC).
    every = {"hopital-brest", "jeu-video", "cyber-communes"}
    assert set(_cli_keys(archive, "cybersécurité")) == every
    # a day (Paris): --since from its midnight, --until through its end
    assert set(_cli_keys(archive, "cybersécurité", "--since", "2026-11-03")) == {"hopital-brest", "jeu-video"}
    assert _cli_keys(archive, "cybersécurité", "--until", "2026-11-02") == ["cyber-communes"]
    assert _cli_keys(archive, "cybersécurité", "--since", "2026-11-03", "--until", "2026-11-03") == ["jeu-video"]
    # an ISO week: 2026-W45 is Monday 2 to Sunday 8 November
    assert set(_cli_keys(archive, "cybersécurité", "--since", "2026-W45", "--until", "2026-W45")) == \
        {"jeu-video", "cyber-communes"}
    assert _cli_keys(archive, "cybersécurité", "--since", "2026-W46") == ["hopital-brest"]
    # a month
    assert set(_cli_keys(archive, "cybersécurité", "--since", "2026-11", "--until", "2026-11")) == every
    assert _cli_keys(archive, "cybersécurité", "--until", "2026-10") == []
    assert set(_cli_keys(archive, "smart", "city", "--until", "2026-10")) == {"dijon-hyperviseur"}
    # an ISO datetime, naive = Paris time (UTC+1 in November); --since is inclusive to the second
    assert "jeu-video" in _cli_keys(archive, "cybersécurité", "--since", "2026-11-03T11:00")
    assert "jeu-video" not in _cli_keys(archive, "cybersécurité", "--since", "2026-11-03T11:00:01")
    assert _cli_keys(archive, "cybersécurité", "--since", "2026-11-03T10:00:00Z",
                     "--until", "2026-11-03T10:00:01Z") == ["jeu-video"]


@pytest.mark.parametrize("option, value, why", [
    ("--since", "31/12/2026", "is not a date"),
    ("--until", "hier", "is not a date"),
    ("--since", "2026-13", "no month 13"),
    ("--until", "2026-W60", "2026 has no week 60"),
])
def test_cli_malformed_date_is_a_usage_error(archive, option, value, why):
    result = CliRunner().invoke(main, ["--db", str(archive[0]), "search", "données", option, value])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output and why in result.output
    if why == "is not a date":
        assert "2026-11-24, 2026-W48, 2026-11 or 2026-11-24T08:30" in result.output  # the accepted forms
    assert "Traceback" not in result.output and "results" not in result.output
