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
