"""Weekly counts per topic (ISO weeks, Europe/Paris), the views behind them, and the trend charts."""

from __future__ import annotations

import sqlite3
import struct
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from veille.cli import main
from veille.errors import VeilleError
from veille.search import (
    CHART_TOPICS, WeeklyCounts, digest_trends_html, render_chart, trend_chart, weekly_counts, write_trends,
)
from veille.store import Store, iso
from veille.store import paris_week as store_paris_week
from veille.store.schema import MIGRATIONS

from . import archive_data

PARIS = ZoneInfo("Europe/Paris")


def paris_week(moment: datetime) -> str:
    year, week, _ = moment.astimezone(PARIS).isocalendar()
    return f"{year}-W{week:02d}"


archive, ro = archive_data.archive, archive_data.ro  # fixtures, shared (an import would read as unused)


# -- the Europe/Paris week arithmetic in SQL -------------------------------------------------------


def _article_weeks_sql() -> str:
    sql = next(sql for _n, name, sql in MIGRATIONS if name == "archive views")
    start = sql.index("CREATE VIEW article_weeks")
    return sql[start:sql.index(";", start)]


@pytest.fixture(scope="module")
def week_db():
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE articles (id INTEGER PRIMARY KEY, published_at TEXT NOT NULL)")
    conn.execute(_article_weeks_sql())
    yield conn
    conn.close()


def _sql_week(conn: sqlite3.Connection, moment: datetime) -> tuple[str, str, str]:
    conn.execute("DELETE FROM articles")
    conn.execute("INSERT INTO articles (id, published_at) VALUES (1, ?)", (iso(moment),))
    return conn.execute("SELECT published_local, week_start, week FROM article_weeks").fetchone()


@pytest.mark.parametrize("utc, local, week", [
    ("2026-03-29T00:59:59Z", "2026-03-29 01:59:59", "2026-W13"),   # last second of winter time
    ("2026-03-29T01:00:00Z", "2026-03-29 03:00:00", "2026-W13"),   # first second of summer time
    ("2026-03-29T22:30:00Z", "2026-03-30 00:30:00", "2026-W14"),   # Sunday evening UTC is Monday in Paris
    ("2026-10-25T00:59:59Z", "2026-10-25 02:59:59", "2026-W43"),
    ("2026-10-25T01:00:00Z", "2026-10-25 02:00:00", "2026-W43"),   # back to winter time
    ("2026-10-25T22:30:00Z", "2026-10-25 23:30:00", "2026-W43"),
    ("2026-10-25T23:30:00Z", "2026-10-26 00:30:00", "2026-W44"),
    ("2026-12-31T23:30:00Z", "2027-01-01 00:30:00", "2026-W53"),   # 2026 has 53 ISO weeks
    ("2027-01-03T23:30:00Z", "2027-01-04 00:30:00", "2027-W01"),
])
def test_article_weeks_at_dst_and_year_edges(week_db, utc, local, week):
    moment = datetime.fromisoformat(utc.replace("Z", "+00:00"))
    assert _sql_week(week_db, moment)[0] == local
    assert _sql_week(week_db, moment)[2] == week == paris_week(moment)


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1996, 1, 1), max_value=datetime(2099, 12, 31)))
def test_article_weeks_agrees_with_zoneinfo(week_db, naive):
    moment = naive.replace(microsecond=0, tzinfo=timezone.utc)
    local = moment.astimezone(PARIS)
    monday = (local.date() - timedelta(days=local.weekday())).isoformat()
    assert _sql_week(week_db, moment) == (local.strftime("%Y-%m-%d %H:%M:%S"), monday, paris_week(moment))


@settings(max_examples=400, deadline=None)
@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2199, 12, 31)))
def test_python_week_is_the_views_week(week_db, naive):
    """`articles.week` is written by Python: it must be the view's week for any date, zone rule included."""
    moment = naive.replace(tzinfo=timezone.utc)
    assert store_paris_week(moment) == _sql_week(week_db, moment)[2]


@pytest.mark.parametrize("utc", ["2026-03-29T00:59:59Z", "2026-03-29T01:00:00Z", "2026-10-25T22:59:59.999Z",
                                 "2026-10-25T23:00:00Z", "1985-09-29T22:30:00Z", "2100-03-28T22:59:59Z"])
def test_python_week_at_the_edges(week_db, utc):
    moment = datetime.fromisoformat(utc.replace("Z", "+00:00"))
    assert store_paris_week(moment) == _sql_week(week_db, moment)[2]


# -- weekly counts -----------------------------------------------------------------------------------


def _expected_counts(topic_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _key, _source, days, *_rest, topics in archive_data.ARTICLES:
        if topic_id in topics:
            week = paris_week(archive_data.END - timedelta(days=days))
            counts[week] = counts.get(week, 0) + 1
    return counts


def test_weekly_counts_fill_every_week_of_the_window(ro):
    counts = weekly_counts(ro, weeks=6, end_week="2026-W48")
    assert counts.weeks == ("2026-W43", "2026-W44", "2026-W45", "2026-W46", "2026-W47", "2026-W48")
    assert list(counts.series) == [t for t, _ in archive_data.TOPICS]  # digest order
    for topic_id, values in counts.series.items():
        expected = _expected_counts(topic_id)
        assert values == tuple(expected.get(w, 0) for w in counts.weeks), topic_id
    assert counts.series["open-data"][-1] == 2
    assert counts.week_starts[0].isoformat() == "2026-10-19"
    assert counts.labels["cybersecurite"] == "Cybersécurité"


def test_weekly_counts_for_chosen_topics_and_unknown_topic(ro):
    counts = weekly_counts(ro, ["smart-city", "open-data"], weeks=2, end_week="2026-W47")
    assert list(counts.series) == ["smart-city", "open-data"]
    assert counts.weeks == ("2026-W46", "2026-W47")
    assert counts.series["smart-city"] == (0, 1)
    with pytest.raises(VeilleError, match="unknown topic nope"):
        weekly_counts(ro, ["nope"], weeks=4)


def test_topic_weekly_counts_view_matches_library(ro):
    rows = ro.query("SELECT topic_id, week, week_start, articles FROM topic_weekly_counts WHERE topic_id = ?",
                    ("cybersecurite",))
    assert {r["week"]: r["articles"] for r in rows} == _expected_counts("cybersecurite")
    for r in rows:
        assert datetime.fromisoformat(r["week_start"]).date().isocalendar()[1] == int(r["week"][-2:])


def test_counts_follow_tagging_changes(tmp_path):
    """topic_article_weeks is kept in sync by triggers: untag, retag, redate, delete."""
    path = tmp_path / "veille.db"
    ids = archive_data.build(path)
    store = Store.open(path)

    def week_counts(topic: str) -> dict[str, int]:
        weeks = [r[0] for r in store.query("SELECT DISTINCT week FROM topic_article_weeks")] + ["2025-W02"]
        return {w: n for t, w, n in store.weekly_topic_counts([topic], weeks) if n}

    def consistent() -> None:
        mirror = store.query("SELECT topic_id, week, published_at, article_id FROM topic_article_weeks "
                             "ORDER BY 1, 2, 3, 4")
        truth = store.query("SELECT t.topic_id, w.week, w.published_at, w.article_id FROM article_topics t "
                            "JOIN article_weeks w ON w.article_id = t.article_id ORDER BY 1, 2, 3, 4")
        assert [tuple(r) for r in mirror] == [tuple(r) for r in truth]
        weeks = store.query("SELECT a.week, w.week FROM articles a JOIN article_weeks w ON w.article_id = a.id")
        assert weeks and all(stored == computed for stored, computed in weeks)

    consistent()
    before = week_counts("open-data")
    with store.transaction() as conn:
        conn.execute("DELETE FROM article_topics WHERE article_id = ? AND topic_id = 'open-data'",
                     (ids["rgpd-maires"],))
    consistent()
    assert sum(week_counts("open-data").values()) == sum(before.values()) - 1
    with store.transaction() as conn:
        conn.execute("UPDATE article_topics SET topic_id = 'smart-city' WHERE article_id = ?", (ids["angers-capteurs"],))
        conn.execute("INSERT OR REPLACE INTO article_topics (article_id, topic_id, score, hits, rule_hash, tagged_at) "
                     "VALUES (?, 'cybersecurite', 5, '[]', 'h', '2026-11-26T10:00:00Z')", (ids["hopital-brest"],))
        conn.execute("INSERT INTO article_topics (article_id, topic_id, score, hits, rule_hash, tagged_at) "
                     "VALUES (?, 'rip-thd', 1, '[]', 'h', '2026-11-26T10:00:00Z')", (ids["tripartite"],))
        conn.execute("UPDATE articles SET published_at = '2025-01-05T23:30:00Z' WHERE id = ?", (ids["fibre-finistere"],))
    consistent()
    assert week_counts("rip-thd")["2025-W02"] == 1  # Sunday 23:30 UTC in winter is Monday in Paris
    with store.transaction() as conn:
        conn.execute("DELETE FROM articles WHERE id = ?", (ids["hopital-brest"],))
    consistent()
    store.close()


def test_migration_fills_counts_of_an_existing_archive(tmp_path):
    """A database tagged before the archive migration gets its counts when it is migrated."""
    path = tmp_path / "veille.db"
    number = next(n for n, name, _sql in MIGRATIONS if name == "archive views")
    archive_data.build_old(path, number - 1)
    store = Store.open(path, migrate=False)
    assert store.schema_version == number - 1
    assert number in store.migrate()
    total = store.scalar("SELECT count(*) FROM article_topics")
    assert total and store.scalar("SELECT count(*) FROM topic_article_weeks") == total
    store.close()


def test_week_column_migration_fills_existing_articles(tmp_path):
    """Articles stored before `articles.week` existed get it, and later tags copy it."""
    path = tmp_path / "veille.db"
    number = next(n for n, name, _sql in MIGRATIONS if name == "article week column")
    ids = archive_data.build_old(path, number - 1)
    store = Store.open(path, migrate=False)
    assert "week" not in {r[1] for r in store.query("PRAGMA table_info(articles)")}
    assert number in store.migrate()
    rows = store.query("SELECT a.week, w.week FROM articles a JOIN article_weeks w ON w.article_id = a.id")
    assert len(rows) == len(ids) and all(stored == computed and stored for stored, computed in rows)
    with store.transaction() as conn:
        conn.execute("DELETE FROM article_topics WHERE article_id = ?", (ids["fibre-finistere"],))
        conn.execute("INSERT INTO article_topics (article_id, topic_id, score, hits, rule_hash, tagged_at) "
                     "VALUES (?, 'cybersecurite', 1, '[]', 'h', '2026-11-26T10:00:00Z')", (ids["fibre-finistere"],))
    assert store.query("SELECT t.week FROM topic_article_weeks t WHERE t.article_id = ?",
                       (ids["fibre-finistere"],))[0][0] == store.scalar(
        "SELECT week FROM article_weeks WHERE article_id = ?", (ids["fibre-finistere"],))
    store.close()


# -- charts -----------------------------------------------------------------------------------------


def test_svg_chart_has_french_labels_and_is_stable(ro):
    svg = trend_chart(ro, weeks=12, end_week="2026-W48", fmt="svg")
    assert isinstance(svg, str) and svg.startswith("<svg")
    for text in ("Articles par semaine", "Semaine", "Articles", "Cybersécurité", "Open data", "S48", "nov."):
        assert text in svg, text
    assert trend_chart(ro, weeks=12, end_week="2026-W48", fmt="svg") == svg  # reproducible for the digest page


def test_png_chart_is_a_real_png(ro, tmp_path):
    out = write_trends(ro, tmp_path / "tendances.png", ["open-data", "cybersecurite"], weeks=26, end_week="2026-W48")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 800 and height >= 400


def test_many_topics_keep_the_most_frequent():
    weeks = tuple(f"2026-W{w:02d}" for w in range(37, 49))
    series = {f"t{i}": tuple([i] * len(weeks)) for i in range(12)}
    labels = {f"t{i}": f"Thématique numéro {i}" for i in range(12)}
    svg = render_chart(WeeklyCounts(weeks, series, labels), fmt="svg")
    shown = [i for i in range(12) if f"Thématique numéro {i}<" in svg or f"Thématique numéro {i} " in svg]
    assert "Thématique numéro 11" in svg and "Thématique numéro 0" not in svg
    assert f"Les {CHART_TOPICS} thématiques les plus citées sur 12" in svg
    assert len(shown) <= CHART_TOPICS


def test_write_trends_rejects_unknown_format(ro, tmp_path):
    with pytest.raises(VeilleError, match=r"\.png or \.svg"):
        write_trends(ro, tmp_path / "chart.pdf")


def test_trends_cli(archive, tmp_path):
    runner = CliRunner()
    out = tmp_path / "t.svg"
    result = runner.invoke(main, ["--db", str(archive), "trends", "--topic", "open-data", "--topic", "smart-city",
                                  "--weeks", "8", "--end-week", "2026-W48", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Smart city et territoire intelligent" in out.read_text(encoding="utf-8")
    bad = runner.invoke(main, ["--db", str(archive), "trends", "--out", str(tmp_path / "t.txt")])
    assert bad.exit_code == 2 and ".png or .svg" in bad.output
    unknown = runner.invoke(main, ["--db", str(archive), "trends", "--topic", "inconnu", "--out", str(out)])
    assert unknown.exit_code == 1 and "unknown topic inconnu" in unknown.output
    week = runner.invoke(main, ["--db", str(archive), "trends", "--end-week", "2026-48", "--out", str(out)])
    assert week.exit_code == 2 and "2026-W48" in week.output


def test_digest_archive_page_shows_the_12_week_chart(ro, tmp_path, settings):
    """How the digest plugs it: write_digest(digest, folder, trends_html=digest_trends_html(store, week))."""
    from veille.digest import build_digest, write_digest

    html = digest_trends_html(ro, "2026-W48")
    assert html.startswith('<figure class="trend-chart"') and 'width="100%"' in html
    assert 'aria-label="Articles par semaine et par thématique, 12 dernières semaines' in html
    assert 'height="' not in html.split(">", 2)[1]  # responsive: the viewBox gives the ratio
    digest = build_digest(ro, "2026-W48", settings, archive_data.SOURCES)
    folder = write_digest(digest, tmp_path, trends_html=html)
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert '<figure class="trend-chart"' in page and "<svg" in page


def test_trends_cli_defaults_to_26_weeks(archive, ro, tmp_path):
    """Without --weeks the chart covers 26 weeks: 2026-W23 (Monday 1 June) to 2026-W48 (Sunday 29 November)."""
    counts = weekly_counts(ro, end_week="2026-W48")
    assert len(counts.weeks) == 26
    assert (counts.weeks[0], counts.weeks[-1]) == ("2026-W23", "2026-W48")
    assert counts.week_starts[0].isoformat() == "2026-06-01"

    out = tmp_path / "defaut.svg"
    result = CliRunner().invoke(main, ["--db", str(archive), "trends", "--end-week", "2026-W48", "--out", str(out)])
    assert result.exit_code == 0, result.output
    svg = out.read_text(encoding="utf-8")
    assert svg == trend_chart(ro, weeks=26, end_week="2026-W48", fmt="svg")
    assert svg != trend_chart(ro, weeks=25, end_week="2026-W48", fmt="svg")
    assert svg != trend_chart(ro, weeks=27, end_week="2026-W48", fmt="svg")
    assert "du 1er juin 2026 au 29 nov. 2026" in svg  # the period under the title
