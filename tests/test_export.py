"""`veille export`: CSV (plain and Excel), JSON, JSON Lines, parquet; filters; read-only."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from veille.cli import main
from veille.errors import StoreError, VeilleError
from veille.search import export
from veille.store import Store
from veille.store.archive import EXPORT_COLUMNS

from . import archive_data


archive, ro = archive_data.archive, archive_data.ro  # fixtures, shared (an import would read as unused)


def _read_csv(path: Path, **kwargs) -> list[dict[str, str]]:
    with open(path, encoding=kwargs.pop("encoding", "utf-8"), newline="") as f:
        return list(csv.DictReader(f, **kwargs))


def test_csv_has_every_article_oldest_first(ro, tmp_path):
    out = tmp_path / "articles.csv"
    assert export(ro, out, "csv") == len(archive_data.ARTICLES)
    raw = out.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    assert raw.splitlines()[0].decode() == ",".join(EXPORT_COLUMNS)
    rows = _read_csv(out)
    assert [r["published_at"] for r in rows] == sorted(r["published_at"] for r in rows)
    brest = next(r for r in rows if "Brest" in r["title"])
    assert brest["title"] == "Cyberattaque : l'hôpital de Brest paralysé par un rançongiciel"
    assert brest["source_name"] == "Ouest-France"
    assert brest["topics"] == "cybersecurite" and brest["topic_labels"] == "Cybersécurité"
    assert "L'ANSSI est sur place" in brest["text"]
    assert brest["week"] == "2026-W48"
    rennes = [r for r in rows if r["title"].startswith("Rennes")]
    assert len(rennes) == 2 and rennes[0]["cluster_id"] == rennes[1]["cluster_id"]
    assert {r["cluster_size"] for r in rennes} == {"2"}
    tripartite = next(r for r in rows if "tripartite" in r["title"])
    assert tripartite["topics"] == ""


def test_excel_csv_has_bom_and_semicolons(ro, tmp_path):
    out = tmp_path / "excel.csv"
    export(ro, out, "csv", excel=True, with_text=False)
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = _read_csv(out, encoding="utf-8-sig", delimiter=";")
    assert list(rows[0]) == list(EXPORT_COLUMNS[:-2])
    assert any(r["title"].startswith("Smart city : Angers") for r in rows)


def test_json_and_jsonl(ro, tmp_path):
    export(ro, tmp_path / "a.json", "json", topics=["open-data"])
    data = json.loads((tmp_path / "a.json").read_text(encoding="utf-8"))
    assert isinstance(data, list) and len(data) == 4
    assert all(d["topics"] == ["open-data"] for d in data)
    assert data[0]["topic_labels"] == ["Open data"]
    assert "é" in (tmp_path / "a.json").read_text(encoding="utf-8")  # not \u00e9 escapes
    count = export(ro, tmp_path / "a.jsonl", "jsonl", sources=["localtis"])
    lines = (tmp_path / "a.jsonl").read_text(encoding="utf-8").splitlines()
    assert count == len(lines) == 4
    assert {json.loads(line)["source_id"] for line in lines} == {"localtis"}


def test_empty_json_export_is_valid(ro, tmp_path):
    assert export(ro, tmp_path / "none.json", "json", since="2030-01-01") == 0
    assert json.loads((tmp_path / "none.json").read_text()) == []


def test_parquet_round_trip(ro, tmp_path):
    import pyarrow.parquet as pq
    out = tmp_path / "a.parquet"
    assert export(ro, out, "parquet") == len(archive_data.ARTICLES)
    table = pq.read_table(out)
    assert table.num_rows == len(archive_data.ARTICLES)
    assert table.column_names == list(EXPORT_COLUMNS)
    assert str(table.schema.field("published_at").type) in ("timestamp[s, tz=UTC]", "timestamp[ms, tz=UTC]")
    records = table.to_pylist()
    assert any(r["topics"] == ["cybersecurite"] for r in records)


def test_parquet_without_pyarrow_says_what_to_install(ro, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(VeilleError, match=r"pip install 'veille\[analyst\]'"):
        export(ro, tmp_path / "a.parquet", "parquet")
    assert not list(tmp_path.iterdir())  # no partial file left


def test_date_filters_are_paris_days(ro, tmp_path):
    end = archive_data.END
    day = (end - timedelta(days=9)).date().isoformat()  # the Angers article's day
    export(ro, tmp_path / "day.csv", "csv", since=day, until=day)
    assert [r["title"][:12] for r in _read_csv(tmp_path / "day.csv")] == ["Smart city :"]
    export(ro, tmp_path / "week.csv", "csv", since="2026-W48", until="2026-W48")
    assert len(_read_csv(tmp_path / "week.csv")) == 4
    with pytest.raises(ValueError, match="not a date"):
        export(ro, tmp_path / "bad.csv", "csv", since="hier")


def test_unknown_topic_is_reported_and_writes_nothing(ro, tmp_path):
    with pytest.raises(VeilleError, match="unknown topic intelligence-artificielle"):
        export(ro, tmp_path / "x.csv", "csv", topics=["intelligence-artificielle"])
    assert not (tmp_path / "x.csv").exists()


def test_export_cli(archive, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cyber.csv"
    result = runner.invoke(main, ["--db", str(archive), "export", "--topic", "cybersecurite", "--since",
                                  "2026-10-01", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 articles written" in result.output
    assert len(_read_csv(out)) == 3
    bad_date = runner.invoke(main, ["--db", str(archive), "export", "--since", "31/12/2026", "--out", str(out)])
    assert bad_date.exit_code == 2 and "not a date" in bad_date.output
    missing = runner.invoke(main, ["--db", str(tmp_path / "absent.db"), "export", "--out", str(out)])
    assert missing.exit_code == 1 and "not found" in missing.output


def test_export_reads_while_the_scheduler_writes(archive, tmp_path):
    """WAL: a writer holding its transaction does not block the read-only export, which sees committed data."""
    writer = sqlite3.connect(archive, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE articles SET title = 'pas encore commité' WHERE id = 1")
    try:
        store = Store.open(archive, readonly=True)
        count = export(store, tmp_path / "live.csv", "csv")
        store.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert count == len(archive_data.ARTICLES)
    assert "pas encore commité" not in (tmp_path / "live.csv").read_text(encoding="utf-8")


def test_read_only_store_cannot_write(archive):
    store = Store.open(archive, readonly=True)
    with pytest.raises(StoreError, match="readonly"):
        store.execute("DELETE FROM articles")
    with pytest.raises(sqlite3.OperationalError):
        store.conn.execute("INSERT INTO topics (id, label, position, rule_hash, rule_json, updated_at) "
                           "VALUES ('x', 'x', 0, 'x', '{}', 'x')")
    store.close()
    check = Store.open(archive, readonly=True)
    assert check.scalar("SELECT count(*) FROM articles") == len(archive_data.ARTICLES)
    check.close()


def test_csv_output_is_rfc4180(ro, tmp_path):
    """Commas, quotes and paragraph breaks inside fields survive a round trip through a standard reader."""
    out = tmp_path / "a.csv"
    export(ro, out, "csv")
    raw = out.read_bytes()
    assert raw.endswith(b"\r\n")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    assert len(rows) == len(archive_data.ARTICLES) + 1
    assert all(len(r) == len(EXPORT_COLUMNS) for r in rows)
    brest = next(r for r in rows if "Brest" in r[5])
    assert "\n\nLes équipes" in brest[-1] and '"papier"' in brest[-1]


def test_when_forms_are_paris_time():
    from veille.search import parse_when

    assert parse_when("2026-11-24") == "2026-11-23T23:00:00Z"
    assert parse_when("2026-11-24", end=True) == "2026-11-24T23:00:00Z"
    assert parse_when("2026-07-14") == "2026-07-13T22:00:00Z"  # summer time
    assert parse_when("2026-W48") == "2026-11-22T23:00:00Z"
    assert parse_when("2026-W48", end=True) == "2026-11-29T23:00:00Z"
    assert parse_when("2026-12", end=True) == "2026-12-31T23:00:00Z"
    assert parse_when("2026-11-24T08:30") == "2026-11-24T07:30:00Z"
    assert parse_when("2026-11-24T08:30:00Z") == "2026-11-24T08:30:00Z"
    for bad in ("2026-13", "2026-W60", "24/11/2026", "demain"):
        with pytest.raises(ValueError):
            parse_when(bad)


def test_csv_is_what_the_csv_module_writes(ro, tmp_path):
    """The hand-written CSV writer (for speed) produces exactly csv.writer's output, plain and Excel."""
    from veille.search import _csv_line
    from veille.store.archive import ArticleFilter

    tricky = [("a,b", 'dit "oui"', None, 3, "ligne\nsuivante", "retour\r", "", " espace ", "é;è")]
    for excel in (False, True):
        out = tmp_path / f"{excel}.csv"
        export(ro, out, "csv", excel=excel)
        expected = io.StringIO()
        writer = csv.writer(expected, delimiter=";" if excel else ",")
        writer.writerow(EXPORT_COLUMNS)
        for batch in ro.export_batches(ArticleFilter()):
            writer.writerows(batch)
        assert out.read_bytes() == (("\ufeff" if excel else "") + expected.getvalue()).encode("utf-8")
        for row in tricky + [("",), (None,)]:
            reference = io.StringIO()
            csv.writer(reference, delimiter=";" if excel else ",").writerow(row)
            assert _csv_line(row, ";" if excel else ",") == reference.getvalue(), row


def _published(key: str) -> str:
    days = next(d for k, _source, d, *_rest in archive_data.ARTICLES if k == key)
    return (archive_data.END - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_export_cli_json_with_until(archive, tmp_path):
    """--until takes the whole Paris day: 2026-11-02 keeps 10:00 UTC that day, not the next day's article."""
    out = tmp_path / "old.json"
    result = CliRunner().invoke(main, ["--db", str(archive), "export", "--format", "json", "--until", "2026-11-02",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text(encoding="utf-8"))
    expected = [k for k, *_rest in sorted(archive_data.ARTICLES, key=lambda a: -a[2])
                if _published(k) < "2026-11-02T23:00:00Z"]
    assert len(expected) == 3  # cyber-communes (2 Nov), dijon-hyperviseur, open-data-departement
    assert [d["published_at"] for d in data] == [_published(k) for k in expected]  # oldest first
    assert [d["title"][:20] for d in data] == [
        "Le département de la", "Dijon, pionnière de ", "Les petites communes"]
    assert _published("jeu-video") == "2026-11-03T10:00:00Z"  # the first article left out
    assert data[-1]["topics"] == ["cybersecurite"] and data[-1]["topic_labels"] == ["Cybersécurité"]
    assert list(data[0]) == list(EXPORT_COLUMNS)
    assert "3 articles written" in result.output


def test_export_cli_parquet(archive, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "articles.parquet"
    result = CliRunner().invoke(main, ["--db", str(archive), "export", "--format", "parquet", "--no-text",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{len(archive_data.ARTICLES)} articles written" in result.output
    table = pq.read_table(out)
    assert table.column_names == list(EXPORT_COLUMNS[:-2])  # --no-text: no summary, no text
    assert str(table.schema.field("article_id").type) == "int64"
    assert str(table.schema.field("topics").type) == "list<element: string>"
    records = table.to_pylist()
    assert len(records) == len(archive_data.ARTICLES)
    stamps = [r["published_at"].strftime("%Y-%m-%dT%H:%M:%SZ") for r in records]
    assert stamps == sorted(_published(k) for k, *_rest in archive_data.ARTICLES)
    brest = next(r for r in records if r["title"].startswith("Cyberattaque"))
    assert brest["source_id"] == "ouest" and brest["topics"] == ["cybersecurite"] and brest["week"] == "2026-W48"
    assert next(r for r in records if "tripartite" in r["title"])["topics"] == []

    filtered = tmp_path / "w48.parquet"
    result = CliRunner().invoke(main, ["--db", str(archive), "export", "--format", "parquet", "--topic", "open-data",
                                       "--until", "2026-W47", "--out", str(filtered)])
    assert result.exit_code == 0, result.output
    rows = pq.read_table(filtered).to_pylist()
    assert [r["title"][:25] for r in rows] == ["Le département de la Giro", "Donnée publique et protec"]
    assert all(r["week"] <= "2026-W47" and "open-data" in r["topics"] for r in rows)
    assert not list(tmp_path.glob("*.partial"))
