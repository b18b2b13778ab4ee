"""The documented schema, ready queries and `veille archive serve` (a real Datasette on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from veille.cli import main
from veille.search import CANNED_QUERIES, datasette_metadata, schema_docs, update_schema_doc, veille_match
from veille.store import Store

from . import archive_data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("datasette") / "veille.db"
    archive_data.build(path)
    store = Store.open(path)
    store.upsert_member("claire.martin@mairie-exemple.fr", "Claire Martin", "Mairie de Quimper", ["open-data"])
    store.close()
    return path


# -- the schema is documented --------------------------------------------------------------------------


def test_every_table_view_and_column_is_described(archive):
    docs = schema_docs()
    with Store.open(archive, readonly=True) as store:
        objects = store.schema_objects()
    assert {"articles_overview", "articles_with_topics", "topic_weekly_counts", "source_health", "stories",
            "article_weeks", "articles_fts"} <= set(objects)
    undocumented = [f"{name}.{column}" for name, (_kind, columns) in objects.items() for column in columns
                    if not (docs.get(name) and docs[name].columns.get(column))]
    assert undocumented == []
    assert [name for name in objects if not docs[name].description] == []
    assert not any(name.startswith("articles_fts_") for name in objects)  # FTS shadow tables left out


def test_docs_schema_md_matches_the_code(tmp_path):
    doc = ROOT / "docs" / "schema.md"
    copy = tmp_path / "schema.md"
    copy.write_text(doc.read_text(encoding="utf-8"), encoding="utf-8")
    changed = update_schema_doc(copy)
    assert not changed, "docs/schema.md is out of date: run `veille archive schema --update docs/schema.md`"
    text = doc.read_text(encoding="utf-8")
    for query in CANNED_QUERIES:
        assert query.sql in text
    assert len(CANNED_QUERIES) >= 12


def test_update_schema_doc_rewrites_only_the_generated_blocks(tmp_path):
    doc = tmp_path / "schema.md"
    doc.write_text("# Intro\n\n<!-- queries:start -->\nSTALE BLOCK\n<!-- queries:end -->\n\nmiddle\n\n"
                   "<!-- reference:start -->\n<!-- reference:end -->\nend\n", encoding="utf-8")
    assert update_schema_doc(doc)
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Intro\n") and "\nmiddle\n" in text and text.endswith("end\n")
    assert "STALE BLOCK" not in text and "#### `articles_overview`" in text and "(`co_occurring_topics`)" in text
    assert not update_schema_doc(doc)


def test_schema_cli_prints_the_reference(archive):
    result = CliRunner().invoke(main, ["--db", str(archive), "archive", "schema"])
    assert result.exit_code == 0
    assert "#### `source_health`" in result.output and "| `days_since_new` |" in result.output


# -- ready queries -------------------------------------------------------------------------------------

PARAMS = {"query": "donnée publique", "since_week": "2026-W40", "topic": "cybersecurite", "cluster_id": None,
          "since": "2026-10-01", "until": "2026-12-01", "article_id": None}


def test_canned_queries_run_and_answer(archive):
    with Store.open(archive, readonly=True) as store:
        store.conn.create_function("veille_match", 1, veille_match, deterministic=True)
        cluster = store.scalar("SELECT cluster_id FROM stories WHERE sources = 2")
        brest = store.scalar("SELECT id FROM articles WHERE title LIKE 'Cyberattaque%'")
        params = {**PARAMS, "cluster_id": cluster, "article_id": brest}
        answers = {}
        for query in CANNED_QUERIES:
            wanted = {name: params[name] for name in params if f":{name}" in query.sql}
            answers[query.name] = [dict(r) for r in store.query(query.sql, wanted)]
    assert {r["title"][:6] for r in answers["search"]} == {"Rennes", "Donnée"}
    assert [r["source"] for r in answers["story_sources"]] == ["La Gazette des communes", "Ouest-France"]
    top = answers["top_sources_per_topic"]
    assert top[0] == {"source": "Ouest-France", "articles": 2, "last_published_at": top[0]["last_published_at"]}
    pairs = answers["co_occurring_topics"]
    assert pairs == []  # no fixture article has two topics
    weekly = {(r["week"], r["topic_id"]): r["articles"] for r in answers["articles_per_topic_per_week"]}
    assert weekly[("2026-W48", "open-data")] == 2
    assert answers["most_covered_stories"][0]["sources"] == 2
    assert [r["keyword"] for r in answers["why_tagged"]] == ["cybersecurite"]
    assert [r["title"][:9] for r in answers["articles_without_topic"]] == ["Accord tr"]
    assert {r["state"] for r in answers["sources_needing_attention"]} <= {"failing", "disabled", "ok"}


def test_metadata_describes_and_configures(archive):
    with Store.open(archive, readonly=True) as store:
        meta = datasette_metadata(store, "veille")
    tables = meta["databases"]["veille"]["tables"]
    assert tables["articles"]["fts_table"] == "articles_fts" and tables["articles"]["fts_pk"] == "id"
    assert tables["articles_with_topics"]["facets"] == ["source_name", "topic_id"]
    assert tables["articles"]["columns"]["published_at"].startswith("UTC")
    assert tables["members"]["hidden"] is True
    assert "top_sources_per_topic" in meta["databases"]["veille"]["queries"]


# -- a real Datasette -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(base: str, path: str, **params: str) -> dict | list:
    """The JSON Datasette answers, also with an error status (its errors are JSON too)."""
    url = f"{base}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        if e.code >= 500:
            raise
        return json.loads(e.read())


@pytest.fixture(scope="module")
def server(archive):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEILLE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "veille.cli", "--db", str(archive), "archive", "serve", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                _get(base, "/-/versions.json")
                break
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    pytest.fail(f"veille archive serve did not start:\n{process.communicate()[0]}")
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_serve_lists_articles_read_only(server, archive):
    databases = _get(server, "/-/databases.json")
    assert [d["name"] for d in databases] == ["veille"]
    rows = _get(server, "/veille/articles.json", _shape="array", _col="title", _size="100")
    assert len(rows) == len(archive_data.ARTICLES)
    assert rows[0]["title"].startswith("Rennes")  # newest first (sort_desc published_at)
    refused = _get(server, "/veille.json", sql="DELETE FROM articles")
    assert refused["ok"] is False
    with Store.open(archive, readonly=True) as store:
        assert store.article_count() == len(archive_data.ARTICLES)


def test_serve_canned_query_search_box_and_facets(server):
    found = _get(server, "/veille/search.json", query="donnée publique", _shape="array")
    assert len(found) == 3 and all("onnée" in r["title"] for r in found)
    searched = _get(server, "/veille/articles.json", _search="réseaux d'initiative publique", _shape="array",
                    _col="title")
    assert [r["title"] for r in searched] == ["Le très haut débit arrive dans les communes rurales du Finistère"]
    bad = _get(server, "/veille/search.json", query="fibre AND")
    assert bad["ok"] is False and "position 7" in bad["error"]
    faceted = _get(server, "/veille/articles_with_topics.json", _facet="topic_id", _size="0")
    counts = {r["value"]: r["count"] for r in faceted["facet_results"]["topic_id"]["results"]}
    assert counts["open-data"] == 4 and counts["cybersecurite"] == 3
    assert "source_name" in faceted["facet_results"]
    top = _get(server, "/veille/top_sources_per_topic.json", topic="open-data", _shape="array")
    assert (top[0]["source"], top[0]["articles"]) == ("La Gazette des communes", 2)


def test_serve_describes_tables_and_hides_personal_data(server):
    meta = _get(server, "/-/metadata.json")
    assert "UTC" in meta["databases"]["veille"]["tables"]["articles"]["columns"]["published_at"]
    members = _get(server, "/veille.json", sql="SELECT email, name, unsubscribe_token, organisation FROM members",
                   _shape="array")
    assert members == [{"email": None, "name": None, "unsubscribe_token": None,
                        "organisation": "Mairie de Quimper"}]


# -- the source_health view ----------------------------------------------------------------------------


def test_source_health_states_and_counts(tmp_path):
    """Failures recorded as the pipeline records them (`Store.record_failure`) show in the view's state."""
    from datetime import datetime, timedelta, timezone

    from veille.store.articles import FetchLog
    from veille.types import Source

    path = tmp_path / "veille.db"
    archive_data.build(path)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    store = Store.open(path)
    try:
        for minutes in (30, 10):  # two timeouts in a row: failing, still enabled
            store.record_failure(
                FetchLog("localtis", "http://127.0.0.1:9/localtis.xml", now - timedelta(minutes=minutes), 10_000,
                         reason="timeout", error="timed out after 10 s"),
                next_attempt_at=now + timedelta(hours=1))
        gone = "410 Gone at http://127.0.0.1:9/ouest.xml: the publisher removed this feed"
        store.record_failure(  # what the pipeline does on a 410: one failure that disables the source
            FetchLog("ouest", "http://127.0.0.1:9/ouest.xml", now - timedelta(minutes=5), 80, status=410,
                     reason="gone", error="410 Gone"),
            next_attempt_at=None, disable=gone)
        store.sync_sources([Source(id="mairie-brest", name="Mairie de Brest", type="html",
                                   url="http://127.0.0.1:9/brest/actualites")])  # never fetched yet
    finally:
        store.close()

    with Store.open(path, readonly=True) as store:
        rows = {r["source_id"]: dict(r) for r in store.query("SELECT * FROM source_health")}
    assert set(rows) == {"gazette", "localtis", "ouest", "mairie-brest"}
    assert {s: r["state"] for s, r in rows.items()} == {
        "gazette": "ok", "localtis": "failing", "ouest": "disabled", "mairie-brest": "new"}

    failing = rows["localtis"]
    assert failing["consecutive_failures"] == 2
    assert failing["last_reason"] == "timeout" and failing["last_error"] == "timed out after 10 s"
    assert failing["failing_since"] == (now - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert failing["disabled_reason"] is None
    assert failing["failures_7d"] == 2
    disabled = rows["ouest"]  # disabled wins over failing
    assert disabled["consecutive_failures"] == 1 and disabled["disabled_reason"] == gone
    assert disabled["failures_7d"] == 1
    ok = rows["gazette"]
    assert ok["consecutive_failures"] == 0 and ok["last_reason"] is None and ok["failures_7d"] == 0
    assert ok["name"] == "La Gazette des communes"

    recent = now - timedelta(days=30)
    for source_id in ("gazette", "localtis", "ouest"):
        published = [archive_data.END - timedelta(days=days)
                     for _key, source, days, *_rest in archive_data.ARTICLES if source == source_id]
        assert rows[source_id]["articles"] == len(published), source_id
        assert rows[source_id]["articles_30d"] == sum(p >= recent for p in published), source_id
    assert sum(rows[s]["articles"] for s in rows) == len(archive_data.ARTICLES)
    assert rows["mairie-brest"]["articles"] == 0 and rows["mairie-brest"]["articles_30d"] == 0
    assert rows["mairie-brest"]["last_attempt_at"] is None and rows["mairie-brest"]["fetches_7d"] == 0


# -- Datasette missing ---------------------------------------------------------------------------------


def _without_datasette(monkeypatch) -> None:
    """As if the `analyst` extra were not installed: `import datasette...` raises ImportError."""
    for name in [m for m in sys.modules if m == "datasette" or m.startswith("datasette.")]:
        monkeypatch.delitem(sys.modules, name)
    for name in ("datasette", "datasette.app", "datasette.plugins"):
        monkeypatch.setitem(sys.modules, name, None)


def test_serve_without_datasette_says_what_to_install(monkeypatch, tmp_path):
    from veille.errors import VeilleError
    from veille.search import serve

    _without_datasette(monkeypatch)
    # A database that does not exist: should the import wrongly succeed, serve() fails on it at once
    # (with another message) instead of starting a server that never returns.
    absent = tmp_path / "absent.db"
    with pytest.raises(VeilleError, match=r"needs Datasette: pip install 'veille\[analyst\]'") as info:
        serve(absent, port=_free_port())
    assert isinstance(info.value.__cause__, ImportError)
    assert not absent.exists()

    result = CliRunner().invoke(main, ["--db", str(absent), "archive", "serve", "--port", str(_free_port())])
    assert result.exit_code == 1, result.output
    assert "error: `veille archive serve` needs Datasette: pip install 'veille[analyst]'" in result.output
    assert "Traceback" not in result.output
