"""`veille demo`: the bundled corpus, the loopback server, and the whole demo run end to end."""

from __future__ import annotations

import email
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from email import policy
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from veille import dedupe
from veille.cli import main
from veille.config import load_sources
from veille.demo import (
    PARIS, LoopbackServer, Resource, build_corpus, default_topics_path, french_rfc822, render_site, run_demo,
    sources_yaml,
)
from veille.digest import iso_week, shift_week
from veille.errors import ConfigError
from veille.parse import parse_date
from veille.store import Store, parse_iso
from veille.tag import load_topics

NOW = datetime(2026, 11, 25, 15, 30, tzinfo=timezone.utc)  # a Wednesday


def words(text: str) -> str:
    """Text with whitespace folded: the pipeline folds non-breaking spaces, which is fine."""
    return " ".join(text.split())


def port_is_closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


# --------------------------------------------------------------------------------------------------
# The corpus


def test_corpus_has_the_promised_shape():
    corpus = build_corpus(NOW)
    assert len(corpus.articles) >= 150
    assert len({a.title for a in corpus.articles}) == len(corpus.articles)
    assert len({a.path for a in corpus.articles}) == len(corpus.articles)
    working = [s for s in corpus.sites if s.format != "broken"]
    assert len(working) >= 8
    assert {s.format for s in working} >= {"rss2", "rss2-fr-dates", "rss1", "atom", "listing", "news-sitemap"}
    assert {s.source_type for s in corpus.sites} == {"feed", "html", "sitemap"}
    assert all(corpus.of_site(s.id) for s in working)
    assert [s.id for s in corpus.broken_sites] == ["fil-communes"]
    licensed = [s for s in corpus.sites if s.source.get("excerpt") == "full"]
    assert licensed and all("Licence Ouverte" in s.source["licence"] for s in licensed)
    paywalled = [a for a in corpus.articles if a.paywalled]
    assert paywalled and all(corpus.site(a.site_id).feed_content for a in paywalled)
    pairs = corpus.syndicated_pairs
    assert 2 <= len(pairs) <= 3
    for original, copy in pairs:
        assert original.site_id != copy.site_id and original.title != copy.title
        assert copy.paragraphs[: len(original.paragraphs)] == original.paragraphs
    assert len(corpus.members) == 3


def test_corpus_is_deterministic_and_only_dates_follow_now():
    a, b = build_corpus(NOW), build_corpus(NOW)
    assert a.articles == b.articles
    later = build_corpus(NOW + timedelta(days=30))
    assert [x.title for x in later.articles] == [x.title for x in a.articles]
    assert all(y.published > x.published for x, y in zip(a.articles, later.articles))


@pytest.mark.parametrize("now", [
    NOW,
    datetime(2026, 11, 23, 0, 5, tzinfo=PARIS),   # Monday, five minutes into the week
    datetime(2026, 11, 29, 23, 55, tzinfo=PARIS),  # Sunday night
    datetime(2027, 3, 29, 9, 0, tzinfo=PARIS),    # the Monday after the switch to summer time
])
def test_articles_span_three_weeks_and_every_theme_is_in_the_current_one(now):
    corpus = build_corpus(now)
    first, current = corpus.weeks[0], corpus.weeks[-1]
    local = current.astimezone(PARIS)
    assert local.weekday() == 0 and (local.hour, local.minute) == (0, 0) and current <= now
    assert first == local - timedelta(weeks=2)
    assert all(first <= a.published <= now for a in corpus.articles)
    themes = {a.theme for a in corpus.articles}
    this_week = {a.theme for a in corpus.articles if a.published >= current}
    assert this_week == themes and len(themes) >= 15
    per_week = Counter(iso_week(a.published) for a in corpus.articles)
    assert sorted(per_week) == [shift_week(iso_week(now), -k) for k in (2, 1, 0)]
    assert min(per_week.values()) >= 45


def test_corpus_text_follows_french_typography():
    corpus = build_corpus(NOW)
    texts = [t for a in corpus.articles for t in (a.title, a.lead, *a.paragraphs)]
    assert not [t for t in texts if "'" in t]
    assert sum("’" in t for t in texts) > 100
    quoted = [t for t in texts if "«" in t]
    assert quoted and all("«\u00a0" in t and "\u00a0»" in t for t in quoted)
    assert not [t for t in texts if re.search(r"\w :", t) or re.search(r"\d %", t)]
    assert not [t for t in texts if "{" in t or "}" in t]


def test_different_stories_never_look_like_near_duplicates():
    corpus = build_corpus(NOW)
    copies = {(o.id, c.id) for o, c in corpus.syndicated_pairs}
    hashes = {a.id: dedupe.simhash("\n\n".join((a.lead, *a.paragraphs))) for a in corpus.articles}
    close = [(x, y) for x, y in itertools.combinations(sorted(hashes), 2)
             if dedupe.hamming(hashes[x], hashes[y]) <= dedupe.NEAR_DUPLICATE_BITS]
    assert sorted(close) == sorted(copies)


def test_rendered_sources_parse_as_the_declared_types(tmp_path):
    corpus = build_corpus(NOW)
    base = "http://127.0.0.1:8765"
    routes = render_site(corpus, base)
    (tmp_path / "sources.yaml").write_text(sources_yaml(corpus, base), encoding="utf-8")
    sources = {s.id: s for s in load_sources(tmp_path / "sources.yaml")}
    assert set(sources) == {s.id for s in corpus.sites}
    assert all(s.allow_private and s.url.startswith(base) for s in sources.values())
    assert sources["observatoire-numerique"].excerpt == "full" and sources["echo-mairies"].link_selector
    assert routes["/fil/rss"].status == 500
    feed = routes[corpus.site("quotidien-ouest").feed].body.decode()
    dates = re.findall(r"<pubDate>(.*?)</pubDate>", feed)
    assert dates and all(re.match(r"(lun|mar|mer|jeu|ven|sam|dim)\., \d\d ", d) for d in dates)
    newest = corpus.of_site("quotidien-ouest")[0]
    assert dates[0] == french_rfc822(newest.published) and parse_date(dates[0]) == newest.published
    teaser = next(a for a in corpus.articles if a.paywalled)
    page = routes[teaser.path].body.decode()
    assert "réservé aux abonnés" in page and teaser.paragraphs[0] not in page
    tribune = routes[corpus.site("tribune-elus").feed].body.decode()
    assert teaser.paragraphs[0] in tribune


# --------------------------------------------------------------------------------------------------
# The loopback server


def test_loopback_server_speaks_enough_http():
    server = LoopbackServer()
    server.routes["/feed.xml"] = Resource("<rss>" + "é" * 3000 + "</rss>", "application/rss+xml",
                                          last_modified=NOW, compress=True)
    server.routes["/boom"] = Resource("panne", status=500)
    with server:
        port = server.port
        with httpx.Client(base_url=server.base) as client:
            first = client.get("/feed.xml?utm_source=x")
            assert first.status_code == 200 and first.headers["content-encoding"] == "gzip"
            assert first.text.count("é") == 3000 and first.headers["last-modified"].endswith("GMT")
            etag = first.headers["etag"]
            again = client.get("/feed.xml", headers={"If-None-Match": f'W/"other", {etag}'})
            assert again.status_code == 304 and again.content == b""
            since = client.get("/feed.xml", headers={"If-Modified-Since": first.headers["last-modified"]})
            assert since.status_code == 304
            plain = client.get("/feed.xml", headers={"Accept-Encoding": "identity"})
            assert "content-encoding" not in plain.headers and plain.text == first.text
            assert client.head("/feed.xml").content == b""
            assert client.get("/boom").status_code == 500 and client.get("/nope").status_code == 404
            assert client.post("/feed.xml").status_code == 405
        with socket.create_connection(("127.0.0.1", port)) as raw:  # a kept-alive connection...
            raw.sendall(b"GET /feed.xml HTTP/1.1\r\nHost: x\r\n\r\n")
            assert raw.recv(100).startswith(b"HTTP/1.1 200")
            server.stop()                                            # ...is closed by stop()
            raw.settimeout(5)
            while raw.recv(65536):
                pass
    assert port_is_closed(port)
    assert not [t for t in threading.enumerate() if t.name == "veille-demo-http"]


def test_loopback_server_refuses_other_interfaces():
    with pytest.raises(Exception, match="loopback"):
        LoopbackServer(host="0.0.0.0")


# --------------------------------------------------------------------------------------------------
# The demo, end to end


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo") / "demo"
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("VEILLE_"):
                mp.delenv(name)
        seen: dict = {}

        def while_serving(result):
            with httpx.Client() as client:
                feed = client.get(result.base_url + "/lettre/rss.xml")
                seen["feed"] = feed.status_code
                seen["again"] = client.get(result.base_url + "/lettre/rss.xml",
                                           headers={"If-None-Match": feed.headers["etag"]}).status_code

        result = run_demo(folder, serve=while_serving)
    return result, seen


@pytest.fixture
def demo(demo_run):
    return demo_run[0]


@pytest.fixture
def archive(demo):
    store = Store.open(demo.db, readonly=True)
    yield store
    store.close()


def test_demo_digest_has_an_article_for_every_topic(demo):
    topics = [t.id for t in load_topics(default_topics_path())]
    assert len(topics) >= 15
    data = json.loads((demo.digest_dir / "digest.json").read_text(encoding="utf-8"))
    assert data["week"] == demo.week and demo.digest_dir.name == demo.week
    sections = {s["topic"]: s for s in data["sections"]}
    assert [s["topic"] for s in data["sections"]] == topics
    empty = [t for t in topics if not sections[t]["items"]]
    assert empty == []
    assert all(n > 0 for _, _, n in demo.topic_counts)
    page = demo.index_html.read_text(encoding="utf-8")
    assert all(sections[t]["label"].replace("'", "&#39;") in page for t in topics)


def test_demo_reports_the_broken_feed_and_fetches_everything_else(demo):
    status = {r.source_id: r for r in demo.pass_result.sources}
    broken = status.pop("fil-communes")
    assert broken.status == "failed" and broken.reason == "server_error" and broken.hint
    assert [r.source_id for r in demo.failed] == ["fil-communes"]
    assert all(r.status == "ok" and r.new > 0 for r in status.values())
    expected = Counter(a.site_id for a in demo.corpus.articles)
    assert {k: r.new for k, r in status.items()} == dict(expected)
    assert demo.articles == len(demo.corpus.articles)


def test_demo_keeps_the_feed_text_of_the_paywalled_article(demo, archive):
    by_path = {a.path: a for a in demo.corpus.articles}
    rows = archive.query("SELECT url, text, text_source FROM articles WHERE source_id = 'tribune-elus'")
    assert len(rows) == len(demo.corpus.of_site("tribune-elus"))
    for row in rows:
        article = by_path[row["url"].removeprefix(demo.base_url)]
        if article.paywalled:
            assert row["text_source"] == "feed"
            assert words(article.paragraphs[0]) in words(row["text"]) and "réservé aux abonnés" not in row["text"]
        else:
            assert row["text_source"] == "page"


def test_demo_clusters_the_syndicated_copies_and_nothing_else(demo, archive):
    clusters = {r["url"].removeprefix(demo.base_url): r["cluster_id"]
                for r in archive.query("SELECT url, cluster_id FROM articles")}
    pairs = demo.corpus.syndicated_pairs
    assert all(clusters[o.path] == clusters[c.path] for o, c in pairs)
    shared = [c for c, n in Counter(clusters.values()).items() if n > 1]
    assert sorted(shared) == sorted(clusters[o.path] for o, _ in pairs)
    assert demo.clusters == len(pairs)


def test_demo_dates_survive_the_pipeline(demo, archive):
    stored = {r["url"].removeprefix(demo.base_url): (r["published_at"], r["date_is_fallback"])
              for r in archive.query("SELECT url, published_at, date_is_fallback FROM articles")}
    for article in demo.corpus.articles:
        published, fallback = stored[article.path]
        assert not fallback and parse_iso(published) == article.published, article.path


def test_demo_writes_one_email_per_member_with_their_topics(demo):
    assert len(demo.emails) == 3 and len(demo.delivery.written) == 3
    labels = {t.id: t.label for t in load_topics(default_topics_path())}
    for member in demo.corpus.members:
        path = next(p for p in demo.emails if p.name.startswith(member.email))
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        assert member.email in message["To"] and "semaine" in message["Subject"]
        text = message.get_body(("plain",)).get_content()
        assert demo.base_url in text
        headings = {line for line in text.splitlines() if line.isupper()}
        followed = member.topics or tuple(labels)
        for topic_id, label in labels.items():
            assert (label.upper() in headings) == (topic_id in followed), (member.email, label)


def test_demo_serves_while_asked_then_leaves_nothing_listening(demo, demo_run):
    assert demo_run[1] == {"feed": 200, "again": 304}
    port = int(demo.base_url.rsplit(":", 1)[1])
    assert port_is_closed(port)
    assert not [t for t in threading.enumerate() if t.name == "veille-demo-http"]


def test_cli_demo_prints_what_to_open_and_a_rerun_resets_the_folder(tmp_path):
    folder = tmp_path / "essai"
    runner = CliRunner()
    first = runner.invoke(main, ["demo", "--dir", str(folder)])
    assert first.exit_code == 0, first.output
    assert "fil-communes\tfailed\t0\tserver_error" in first.stdout
    index = re.search(r"the week's page\s+(\S+)", first.stdout).group(1)
    assert Path(index).is_file() and Path(index).parent.parent == folder / "digests"
    assert len(list(Path(index).parent.glob("outbox/*.eml"))) == 3
    (folder / "digests" / "stale.txt").write_text("from an earlier run")
    second = runner.invoke(main, ["demo", "--dir", str(folder)])
    assert second.exit_code == 0, second.output
    assert not (folder / "digests" / "stale.txt").exists()
    with Store.open(folder / "demo.db", readonly=True) as store:
        assert store.article_count() == len(build_corpus().articles)


def test_cli_demo_never_touches_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "notes.txt").write_text("mes notes")
    result = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "not made by `veille demo`" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    with pytest.raises(ConfigError):
        run_demo(tmp_path)


def test_cli_demo_uses_the_topics_given_and_ignores_a_stray_digests_dir(tmp_path, monkeypatch):
    topics = tmp_path / "mes-thematiques.yaml"
    topics.write_text("topics:\n  fibre:\n    label: Fibre\n    keywords: [fibre optique, très haut débit]\n",
                      encoding="utf-8")
    monkeypatch.setenv("VEILLE_DIGESTS_DIR", str(tmp_path / "production-digests"))
    result = CliRunner().invoke(main, ["--topics", str(topics), "demo", "--dir", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "topics.yaml").read_text(encoding="utf-8") == topics.read_text(encoding="utf-8")
    assert re.search(r"^fibre\tFibre\t[1-9]", result.stdout, re.M)
    assert not (tmp_path / "production-digests").exists()
    assert list((tmp_path / "d" / "digests").glob("*/index.html"))


@pytest.mark.slow
def test_keep_serving_process_stops_cleanly_on_ctrl_c(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEILLE_")}
    proc = subprocess.Popen([sys.executable, "-m", "veille.cli", "demo", "--dir", str(tmp_path / "d"),
                             "--keep-serving"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)
    try:
        base = None
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            match = re.search(r"Demo sources online at (http://127\.0\.0\.1:\d+)/", line)
            if match:
                base = match.group(1)
                break
        assert base, "the demo never said it was serving"
        assert httpx.get(base + "/observatoire/atom.xml").status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert port_is_closed(int(base.rsplit(":", 1)[1]))
